//! `[forge.NAME]`: a forge's API, token and status links, and `[forge.NAME.discover]`: which
//! repositories of an organization become projects (the template itself is `discover.rs`'s).

use std::path::PathBuf;

use serde::Deserialize;

use super::duration::Seconds;
use super::patterns::Patterns;

/// `[forge.NAME]`: a GitHub, Gitea/Forgejo or GitLab instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forge {
    pub kind: ForgeKind,
    /// The API base: `https://api.github.com` (GitHub Enterprise: `https://HOST/api/v3`),
    /// `https://HOST/api/v1` (Gitea, Forgejo), `https://HOST/api/v4` (GitLab) [default: GitHub's].
    pub api: Option<String>,
    /// API token allowed to set commit statuses.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Link of each status (`target_url`): `{project}`, `{ref}`, `{commit}` and `{context}`
    /// are replaced. Without it statuses carry no link.
    pub target_url: Option<String>,
    /// `[forge.NAME.discover]`: the organization whose repositories become projects.
    #[serde(skip)]
    pub discover: Option<Discover>,
}

/// The forge software behind a `[forge.NAME]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ForgeKind {
    Github,
    #[serde(alias = "forgejo")]
    Gitea,
    Gitlab,
}

impl ForgeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitea => "gitea",
            ForgeKind::Gitlab => "gitlab",
        }
    }
}

impl Forge {
    /// The API base without a trailing slash.
    pub(crate) fn api_base(&self) -> &str {
        self.api.as_deref().unwrap_or("https://api.github.com").trim_end_matches('/')
    }
}

/// `[forge.NAME.discover]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Discover {
    /// GitHub or Gitea/Forgejo organization; GitLab group id or full path.
    pub org: String,
    /// Repository-name patterns a repository must match (`*` any run of characters).
    #[serde(default = "everything")]
    pub include: Vec<String>,
    /// Repository-name patterns that keep a repository out, even when included.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Forks become projects too.
    #[serde(default)]
    pub forks: bool,
    /// Archived repositories become projects too.
    #[serde(default)]
    pub archived: bool,
    /// Which clone URL of the listing a project polls when the template sets no `repo`.
    #[serde(default)]
    pub clone: CloneVia,
    /// The forge's git origin (`scheme://host[:port]`): a clone URL of the listing is used only
    /// there [default: the API's origin; `https://github.com` for `api.github.com`].
    #[serde(default, deserialize_with = "an_origin")]
    pub git: Option<String>,
    /// The port of the forge's ssh clone URLs, on the git origin's host [default: 22].
    #[serde(default = "ssh_default")]
    pub ssh_port: u16,
    /// Secret of the organization's webhook (`repository` and push events): `pipe serve`
    /// answers it at `/forge/FORGE` with a tick over every project.
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<std::path::PathBuf>,
    /// How often the whole organization is listed again (archives, removals, renames,
    /// repositories moved in without a push); between, a tick asks for the first page only on
    /// forges that list the most recently pushed first (GitHub, GitLab) [default: 1h].
    #[serde(default = "hourly", deserialize_with = "relisting")]
    pub relist: std::time::Duration,
    /// `[forge.NAME.discover.project]`: the project every discovered repository becomes, as
    /// written (strings still hold `{name}` and `{repo}`).
    #[serde(skip)]
    pub template: toml::Table,
    #[serde(skip)]
    pub included: Patterns,
    #[serde(skip)]
    pub excluded: Patterns,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

/// The shortest and longest `relist`: a relisting costs up to 100 requests against the forge's
/// quota, and an archived or removed repository must not stay a project for longer than a day.
pub(crate) const RELIST_BOUNDS: (u64, u64) = (60, 24 * 3600);

fn hourly() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

fn relisting<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let Seconds(every) = Seconds::deserialize(d)?;
    let (least, most) = RELIST_BOUNDS;
    if !(least..=most).contains(&every.as_secs()) {
        return Err(serde::de::Error::custom(format!("`relist` must be between 1m and 24h, not {}s", every.as_secs())));
    }
    Ok(every)
}

fn ssh_default() -> u16 {
    22
}

fn an_origin<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    match Origin::of(&url) {
        Some(o)
            if matches!(o.scheme.as_str(), "http" | "https")
                && !url.contains('@')
                && url.trim_end_matches('/') == written(&url) =>
        {
            Ok(Some(url))
        }
        _ => Err(serde::de::Error::custom(format!("`git` must be an origin, `https://HOST[:PORT]`, not `{url}`"))),
    }
}

/// `url` up to the end of its authority.
fn written(url: &str) -> &str {
    let Some((scheme, rest)) = url.split_once("://") else { return url };
    &url[..scheme.len() + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len())]
}

/// Where a URL goes: scheme, host (lowercase) and port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of `scheme://[user@]host[:port][/…]`, or of git's `[user@]host:path` (ssh);
    /// `None` when it is neither or names no host, or a port that is not a number.
    pub(crate) fn of(url: &str) -> Option<Origin> {
        let (scheme, authority) = match url.split_once("://") {
            Some((scheme, rest)) => {
                (scheme.to_ascii_lowercase(), &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())])
            }
            None => ("ssh".to_string(), url.split_once(':').map(|(h, _)| h).filter(|h| !h.contains('/'))?),
        };
        let default = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            "ssh" => 22,
            _ => return None,
        };
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            (h, if after.is_empty() { None } else { Some(after.strip_prefix(':')?) })
        } else {
            authority.split_once(':').map_or((authority, None), |(h, p)| (h, Some(p)))
        };
        let port = match port {
            None => default,
            Some(p) => p.parse().ok().filter(|p| *p != 0)?,
        };
        (!host.is_empty()).then(|| Origin { scheme, host: host.to_ascii_lowercase(), port })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// `clone = "https"` (default) or `"ssh"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CloneVia {
    #[default]
    Https,
    Ssh,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const FILE: &str = "[forge.gh]\nkind = \"github\"\ntoken_env = \"T\"\n\n[forge.gh.discover]\norg = \"acme\"\nrelist = \"RELIST\"\n\n[forge.gh.discover.project]\nbranches = [\"main\"]\nimage = \"r/{name}\"\n";

    #[test]
    fn an_origin_is_scheme_host_and_port_with_the_schemes_default() {
        use super::Origin;
        let o = |u: &str| Origin::of(u).map(|o| o.to_string());
        assert_eq!(o("https://GitHub.com/a/b.git").as_deref(), Some("https://github.com:443"));
        assert_eq!(o("https://github.com:443/a").as_deref(), Some("https://github.com:443"));
        assert_eq!(o("http://127.0.0.1:8080/a.git").as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(o("http://[::1]:81/a").as_deref(), Some("http://[::1]:81"));
        assert_eq!(o("git@github.com:a/b.git").as_deref(), Some("ssh://github.com:22"));
        assert_eq!(o("ssh://git@gl.example:2222/a/b.git").as_deref(), Some("ssh://gl.example:2222"));
        for bad in ["ftp://x/a", "https://x:/a", "https://x:99999/a", "https:///a", "/local/path", "x"] {
            assert_eq!(o(bad), None, "{bad}");
        }
    }

    #[test]
    fn relist_is_an_hour_unless_set_and_refused_out_of_its_bounds_at_its_line() {
        let parse = |text: &str| super::super::parse(Path::new("pipeline.toml"), text);
        let default = parse(&FILE.replace("relist = \"RELIST\"\n", "")).unwrap();
        assert_eq!(default.forges["gh"].discover.as_ref().unwrap().relist.as_secs(), 3600);
        let set = parse(&FILE.replace("RELIST", "15m")).unwrap();
        assert_eq!(set.forges["gh"].discover.as_ref().unwrap().relist.as_secs(), 900);
        for bad in ["30s", "25h", "often"] {
            let errors = parse(&FILE.replace("RELIST", bad)).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad}: {errors:#?}");
            assert_eq!(errors[0].line, 7, "{bad}: {errors:#?}");
            assert!(
                errors[0].message.contains("relist") || errors[0].message.contains("duration"),
                "{}",
                errors[0].message
            );
        }
    }
}
