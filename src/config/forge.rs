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
