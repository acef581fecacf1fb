//! Which submodule URLs a checkout may fetch, and which get the project's credentials. Pure.
//!
//! By default a submodule must live on the project's own host under the same scheme (a
//! relative URL is resolved against the project's); `file://` and local paths only when the
//! project itself is local. `submodules = { allow = [...] }` adds URL patterns; `submodules =
//! false` refuses every submodule. Credentials go only to the project's own host.

/// The project's submodule policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Policy {
    /// The project's own scheme and host only.
    #[default]
    SameHost,
    /// The project's own host, plus URLs matching these patterns (`*` matches anything).
    Allow(Vec<String>),
    /// No submodule is fetched.
    Off,
}

/// What may happen to one submodule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The URL to fetch (relative URLs resolved).
    pub url: String,
    /// Whether the project's credentials may be offered.
    pub credentials: bool,
}

/// Decides for the submodule URL `url` (as `.gitmodules` wrote it) of the project at `project`.
pub(crate) fn decide(project: &str, url: &str, policy: &Policy) -> Result<Decision, String> {
    if *policy == Policy::Off {
        return Err("submodules are off for this project (`submodules = false`)".into());
    }
    let resolved = resolve(project, url);
    let same = origin(&resolved) == origin(project) && beside(project, &resolved);
    let allowed = same || matches!(policy, Policy::Allow(patterns) if patterns.iter().any(|p| glob(p, &resolved)));
    if !allowed {
        let (scheme, _) = origin(&resolved);
        let why = if scheme == "file" {
            "a local path or `file://` URL, and the project is not local".to_string()
        } else {
            "not on the project's own host and scheme".to_string()
        };
        return Err(format!(
            "submodule URL `{}` is refused: {why}\nhint: list it in the project's `submodules = {{ allow = [\"…\"] }}` in the pipeline file",
            crate::git::auth::redact_url(&resolved)
        ));
    }
    Ok(Decision { url: resolved, credentials: same })
}

/// A local submodule must sit beside the project's own repository (same parent directory):
/// a local project may not pull in any other repository on the host, such as pipe's own
/// workspace checkouts of other projects. Remote URLs are judged by host alone.
fn beside(project: &str, submodule: &str) -> bool {
    match (local_path(project), local_path(submodule)) {
        (Some(project), Some(submodule)) => project.parent().is_some() && project.parent() == submodule.parent(),
        _ => true,
    }
}

/// The lexically normalised path of a `file://` URL or a plain path; `None` for remote URLs.
fn local_path(url: &str) -> Option<std::path::PathBuf> {
    use std::path::{Component, PathBuf};
    let path = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("file") => rest,
        Some(_) => return None,
        None if origin(url).0 == "file" => url,
        None => return None,
    };
    let mut out = PathBuf::new();
    for part in std::path::Path::new(path.trim_end_matches('/')).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// `../lib.git` against `https://host/org/app.git` is `https://host/org/lib.git`, as git does.
pub(crate) fn resolve(project: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = project.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            let cut = base.rfind(['/', ':']).unwrap_or(0);
            // Never climb above the host: `https://host` keeps its authority.
            let floor = match base.find("://") {
                Some(i) => base[i + 3..].find('/').map_or(base.len(), |j| i + 3 + j),
                None => base.find(':').map_or(0, |i| i + 1),
            };
            base.truncate(cut.max(floor));
        } else {
            break;
        }
    }
    let sep = if base.ends_with(':') || base.ends_with('/') { "" } else { "/" };
    format!("{base}{sep}{rest}")
}

/// (scheme, host[:port]) of a git URL; scp-like `user@host:path` is ssh; paths are `file`.
pub(crate) fn origin(url: &str) -> (String, String) {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let scheme = scheme.to_ascii_lowercase();
        let scheme = if scheme == "git+ssh" || scheme == "ssh+git" { "ssh".into() } else { scheme };
        return (scheme, host.to_ascii_lowercase());
    }
    match url.split_once(':') {
        Some((authority, _)) if !authority.contains('/') && !authority.is_empty() => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            ("ssh".into(), host.to_ascii_lowercase())
        }
        _ => ("file".into(), String::new()),
    }
}

/// `*` matches any run of characters (slashes included); everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(parts[0]) else { return false };
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_against_the_project() {
        assert_eq!(resolve("https://h.example/org/app.git", "../lib.git"), "https://h.example/org/lib.git");
        assert_eq!(resolve("git@h.example:org/app.git", "../lib.git"), "git@h.example:org/lib.git");
        assert_eq!(resolve("https://h.example/app.git", "../../../../etc"), "https://h.example/etc");
        assert_eq!(resolve("file:///srv/git/app.git", "../lib.git"), "file:///srv/git/lib.git");
    }

    /// Regression: any local repository passed as "the same origin" for a local project, so a
    /// pull request could build pipe's workspace checkout of another project into its image.
    #[test]
    fn a_local_submodule_must_sit_beside_the_project() {
        let p = Policy::SameHost;
        assert!(decide("file:///srv/git/app.git", "../lib.git", &p).is_ok());
        assert!(decide("file:///srv/git/app.git", "file:///srv/git/lib.git", &p).is_ok());
        assert!(decide("/srv/git/app.git", "/srv/git/lib.git", &p).is_ok());
        assert!(decide("file:///srv/git/app.git", "/var/lib/pipe/work/other/src", &p).is_err());
        assert!(decide("file:///srv/git/app.git", "file:///srv/git/x/../../other/y.git", &p).is_err());
        assert!(decide("file:///srv/git/app.git", "../../etc", &p).is_err());
    }

    #[test]
    fn only_the_projects_own_host_and_scheme_by_default() {
        let p = Policy::SameHost;
        let project = "https://git.example.com/org/app.git";
        assert_eq!(
            decide(project, "../lib.git", &p),
            Ok(Decision { url: "https://git.example.com/org/lib.git".into(), credentials: true })
        );
        for bad in [
            "file:///srv/secret.git",
            "/srv/secret.git",
            "https://evil.example/x.git",
            "http://git.example.com/org/lib.git",
            "ssh://git.example.com/org/lib.git",
            "git@evil.example:x.git",
        ] {
            assert!(decide(project, bad, &p).is_err(), "{bad}");
        }
        assert!(
            decide("file:///srv/app.git", "file:///srv/lib.git", &p).is_ok(),
            "a local project may use local submodules"
        );
        assert!(decide(project, "../lib.git", &Policy::Off).is_err());
    }

    #[test]
    fn allow_lists_add_urls_without_credentials() {
        let p = Policy::Allow(vec!["https://github.com/org/*".into()]);
        let project = "https://git.example.com/org/app.git";
        assert_eq!(decide(project, "https://github.com/org/lib.git", &p).map(|d| d.credentials), Ok(false));
        assert!(decide(project, "https://github.com/other/lib.git", &p).is_err());
        assert!(decide(project, "https://github.com.evil/org/x", &p).is_err());
    }
}
