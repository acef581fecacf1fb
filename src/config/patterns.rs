//! Branch and image-repository glob patterns: `*` within one `/` segment, `**` across them.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Compiled branch patterns: `*` stays within one `/` segment, `**` crosses them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Patterns {
    set: GlobSet,
}

impl Patterns {
    /// Compiles patterns; the error names the first invalid one.
    pub(crate) fn compile<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Patterns, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(compile_branch_glob(pattern)?);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Patterns { set })
    }

    /// Patterns compiled elsewhere (repository names, whose `*` has no separator to stop at).
    pub(crate) fn from_set(set: GlobSet) -> Patterns {
        Patterns { set }
    }

    pub(crate) fn is_match(&self, branch: &str) -> bool {
        self.set.is_match(branch)
    }

    /// Image repository patterns: `*` within a `/` segment, `**` across.
    pub(crate) fn compile_images<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Patterns, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("invalid image pattern `{pattern}`: {}", e.kind()))?;
            builder.add(glob);
        }
        Ok(Patterns { set: builder.build().map_err(|e| e.to_string())? })
    }
}

pub(super) fn compile_branch_glob(pattern: &str) -> Result<globset::Glob, String> {
    if pattern.is_empty() {
        return Err("empty branch pattern".into());
    }
    if pattern.starts_with("refs/") {
        return Err(format!("invalid branch pattern `{pattern}`: write branch names without `refs/heads/`"));
    }
    if let Some(bad) = pattern.chars().find(|c| c.is_whitespace() || "~^:\\".contains(*c) || c.is_control()) {
        return Err(format!(
            "invalid branch pattern `{pattern}`: `{}` cannot appear in a git branch name",
            bad.escape_default()
        ));
    }
    if pattern.contains("..") || pattern.starts_with('/') || pattern.ends_with('/') || pattern.contains("//") {
        return Err(format!("invalid branch pattern `{pattern}`: not a valid git branch name"));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map_err(|e| format!("invalid branch pattern `{pattern}`: {}", e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_star_stays_in_one_segment() {
        let p = Patterns::compile(["feature/*", "release/**", "main"]).unwrap();
        assert!(p.is_match("feature/x"));
        assert!(!p.is_match("feature/x/y"));
        assert!(p.is_match("release/1/2"));
        assert!(p.is_match("main"));
        assert!(!p.is_match("mainline"));
    }
}
