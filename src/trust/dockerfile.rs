//! What an untrusted Dockerfile may not label: the legacy builder gives every step container
//! the labels its instructions set so far, so `LABEL com.docker.compose.project=OTHER
//! com.docker.compose.service=web` followed by a long `RUN` makes, while the build runs, a
//! container compose (and anything that finds containers by those labels) takes for one of
//! another project's service. Such a Dockerfile is refused before the build (pure: no IO).

/// Label prefixes that make a container part of a compose project or swarm stack.
const CLAIMED: [&str; 2] = ["com.docker.compose.", "com.docker.stack."];

/// The first `LABEL` (or `ONBUILD LABEL`) of `text` that sets, or may set through a variable,
/// a key under `com.docker.compose.` or `com.docker.stack.`: its line and the key as written.
pub(crate) fn claimed_label(text: &str) -> Option<(usize, String)> {
    let escape = escape_char(text);
    let mut logical = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if logical.is_empty() {
            start = i + 1;
            // An empty or comment line inside a continued instruction is skipped by the
            // builder, which goes on with the instruction on the next line.
        } else if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let trimmed = line.trim_end();
        match trimmed.strip_suffix(escape) {
            Some(head) => logical.push_str(head),
            None => {
                logical.push_str(trimmed);
                if let Some(key) = instruction_claims(&logical, escape) {
                    return Some((start, key));
                }
                logical.clear();
            }
        }
    }
    instruction_claims(&logical, escape).map(|key| (start, key))
}

/// The escape character a `# escape=` parser directive sets (`\` by default).
fn escape_char(text: &str) -> char {
    for line in text.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else { break };
        if let Some((name, value)) = directive.split_once('=')
            && name.trim().eq_ignore_ascii_case("escape")
            && let Some(c) = value.trim().chars().next()
        {
            return c;
        }
    }
    '\\'
}

/// A key of a `LABEL` instruction that claims a compose or stack label, or is made of a
/// variable (whose value could). Keys are compared as the builder reads them: without their
/// quotes and escape characters (`com\.docker\.compose\.project` is that key).
fn instruction_claims(instruction: &str, escape: char) -> Option<String> {
    let mut words = instruction.split_whitespace();
    let mut first = words.next()?;
    if first.eq_ignore_ascii_case("onbuild") {
        first = words.next()?;
    }
    if !first.eq_ignore_ascii_case("label") {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    // The old form `LABEL key value` names one key, the first word; the new one `k=v …`.
    let keys = rest.iter().enumerate().filter_map(|(i, w)| match w.split_once('=') {
        Some((key, _)) => Some(key),
        None => (i == 0).then_some(*w),
    });
    for key in keys {
        let bare = unquoted(key, escape);
        if bare.contains('$') || CLAIMED.iter().any(|p| bare.starts_with(p)) {
            return Some(key.to_string());
        }
    }
    // A key in quotes with spaces, or any other form: the text itself.
    let text = unquoted(&rest.join(" "), escape);
    CLAIMED.iter().any(|p| text.contains(p)).then(|| rest.join(" "))
}

/// `text` lowercased without quotes and escape characters.
fn unquoted(text: &str, escape: char) -> String {
    text.chars().filter(|&c| c != '"' && c != '\'' && c != escape).collect::<String>().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_stack_labels_are_found_however_written() {
        let claims = |text: &str| claimed_label(text).map(|(line, _)| line);
        assert_eq!(claims("FROM x\nLABEL com.docker.compose.project=v com.docker.compose.service=web\n"), Some(2));
        assert_eq!(claims("FROM x\nlabel \"com.docker.compose.service\"=web\n"), Some(2));
        assert_eq!(claims("FROM x\nLABEL a=b \\\n  com.docker.stack.namespace=v\nRUN true\n"), Some(2));
        assert_eq!(claims("FROM x\nLABEL com.docker.com\\\npose.project=v\n"), Some(2));
        assert_eq!(claims("# escape=`\nFROM x\nLABEL a=b `\n com.docker.compose.project=v\n"), Some(3));
        assert_eq!(claims("FROM x\nARG K=com.docker.compose.project\nLABEL ${K}=v\n"), Some(3));
        assert_eq!(claims("FROM x\nONBUILD LABEL com.docker.compose.project=v\n"), Some(2));
        assert_eq!(claims("FROM x\nLABEL COM.DOCKER.COMPOSE.PROJECT v\n"), Some(2));
        // Escaped keys, as the builder unescapes them, and continuations past empty lines.
        assert_eq!(claims("FROM x\nLABEL com\\.docker\\.compose\\.project=v\n"), Some(2));
        assert_eq!(claims("# escape=`\nFROM x\nLABEL com`.docker`.stack`.namespace=v\n"), Some(3));
        assert_eq!(claims("FROM x\nLABEL a=b \\\n\n   \ncom.docker.compose.project=v\nRUN true\n"), Some(2));
        assert_eq!(claims("FROM x\nLABEL a=b \\\n# note\n\n  c=\"x y\" com.docker.compose.service=web\n"), Some(2));
        // Legitimate labels, values with variables and mentions elsewhere pass.
        assert_eq!(claims("FROM x\nLABEL org.opencontainers.image.version=$VERSION maintainer=\"a b\"\n"), None);
        assert_eq!(claims("FROM x\nRUN echo com.docker.compose.project\nLABEL a=\"com.docker\"\n"), None);
    }
}
