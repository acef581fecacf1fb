//! A deploy target's own environment: its `env` read (literals, secrets by reference), the few
//! variables of pipe's own its commands keep, and what `pipe check` says of a compose or stack
//! file that asks for a variable the target does not give.

use std::collections::BTreeMap;

use toml::Spanned;

use crate::config::{ArgValue, Config, SecretRef};
use crate::exec::Cmd;
use crate::output::Output;
use crate::secret;
use crate::trust::redact::Redactor;

/// The only variables of pipe's own environment a deploy target's or hook's commands see,
/// besides the `PIPE_*` variables and the target's own `env`: what the docker CLI, compose and a
/// host command need to find programs, the engine and registry logins (`DOCKER_CONFIG`, else
/// `HOME/.docker`), none of them a secret. Everything else of pipe's environment (the
/// `*_env` secrets of other targets, the registry passwords, tokens) stays out.
pub(crate) const HOST_ENV: [&str; 11] = [
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
];

/// A deploy target's or hook's own `env`, read now: the variables and the secret values among
/// them (for masking its commands' output).
pub(crate) fn resolve_env(
    out: &Output,
    values: &BTreeMap<String, Spanned<ArgValue>>,
    what: &str,
    cached: bool,
) -> anyhow::Result<(Vec<(String, String)>, Redactor)> {
    let mut vars = Vec::new();
    let mut secrets = Vec::new();
    for (key, value) in values {
        let Some(reference) = value.get_ref().secret() else {
            if let ArgValue::Literal(v) = value.get_ref() {
                vars.push((key.clone(), v.clone()));
            }
            continue;
        };
        let what = format!("{what}.{key}");
        let secret = match &reference {
            SecretRef::Command { argv, timeout } if !cached => secret::from_command(out, argv, *timeout, &what, false)?,
            _ => secret::resolve_logged(out, &reference, &what)?,
        };
        vars.push((key.clone(), secret.reveal().to_string()));
        secrets.push(secret);
    }
    Ok((vars, Redactor::new(secrets.iter())))
}

/// A target's command with exactly `env` and the [`HOST_ENV`] variables.
pub(crate) fn confined(cmd: Cmd, env: &[(String, String)]) -> Cmd {
    env.iter().fold(cmd.env_clear_but(&HOST_ENV), |cmd, (k, v)| cmd.env(k, v))
}

/// What `pipe check` says of compose and stack files that interpolate a variable their target's
/// (or hook's) `env` does not give: compose sees it empty, since pipe's own environment no
/// longer reaches a deploy. A variable the `.env` beside the file sets is compose's to give.
pub(crate) fn interpolation_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let deploys = config.projects.iter().flat_map(|(project, p)| {
        p.deploy.iter().map(move |d| {
            let d = d.get_ref();
            let file = d.compose.as_ref().map(|c| &c.file).or(d.swarm.as_ref().map(|s| &s.file));
            (format!("project `{project}` target `{}`", d.display_name()), file, &d.env)
        })
    });
    let hooks = config.serve.hooks.iter().map(|(name, h)| {
        let file = h.compose.as_ref().map(|c| &c.file).or(h.swarm.as_ref().map(|s| &s.file));
        (format!("hook `{name}`"), file, &h.env)
    });
    for (owner, file, env) in deploys.chain(hooks) {
        let Some(file) = file else { continue };
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let dotenv = file.parent().map(|d| d.join(".env")).and_then(|p| std::fs::read_to_string(p).ok());
        let set_by_dotenv = |name: &str| {
            dotenv.as_deref().is_some_and(|t| {
                t.lines().any(|l| l.trim_start().split_once('=').is_some_and(|(k, _)| k.trim() == name))
            })
        };
        let mut missing: Vec<String> = interpolated(&text)
            .into_iter()
            .filter(|n| !n.starts_with("PIPE_") && !env.contains_key(n) && !HOST_ENV.contains(&n.as_str()))
            .filter(|n| !set_by_dotenv(n))
            .collect();
        missing.dedup();
        if let Some(first) = missing.first() {
            let names = missing.iter().map(|n| format!("`${{{n}}}`")).collect::<Vec<_>>().join(", ");
            warnings.push(format!(
                "{owner}: `{}` interpolates {names}, which its `env` does not give: compose sees them empty (a deploy gets only its target's `env`, not pipe's environment)\nhint: `env = {{ {first} = {{ env = \"{first}\" }} }}` passes one on from pipe's environment",
                file.display()
            ));
        }
    }
    warnings
}

/// The names a compose file interpolates (`${NAME}`, `${NAME:-x}`, `$NAME`), sorted; `$$` is a
/// literal dollar.
fn interpolated(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        let start = if bytes.get(i + 1) == Some(&b'{') { i + 2 } else { i + 1 };
        let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
        if end > start && !bytes[start].is_ascii_digit() {
            names.push(text[start..end].to_string());
        }
        i = end.max(i + 1);
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_names_are_found_and_escapes_are_not() {
        let text = "image: ${PIPE_IMAGE}:${PIPE_TAG}\nenvironment:\n  A: ${APP_SECRET:-x}\n  B: $DB_URL\n  C: $$NOT\n  D: ${9x}\n";
        assert_eq!(interpolated(text), ["APP_SECRET", "DB_URL", "PIPE_IMAGE", "PIPE_TAG"]);
    }
}
