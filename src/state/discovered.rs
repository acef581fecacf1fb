//! What organization discovery remembers per forge, in `discover/FORGE.toml` beside the state:
//! each listing page's `ETag` (so an unchanged page costs one `304`), the first page's entries
//! and `ETag` in the head (a tick where nothing moved reads nothing else), the repositories listed, what probing each one's default branch found, the projects discovery
//! made, the ones it made before and no longer does (kept until `pipe prune`), and whether the
//! forge asked to be left alone.
//!
//! Written only by the tick that holds the state lock; one compact line per repository, so an
//! organization of 500 repositories reads in a few milliseconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::disk::{SCHEMA, inline, state_dir, toml_key, write_atomic};

/// One forge's discovery cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovered {
    pub schema: u32,
    /// The organization listed; a cache of another organization is started afresh.
    pub org: String,
    /// When a complete listing last brought a change (a page answered `200`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_at: Option<jiff::Timestamp>,
    /// Unix second before which the forge's API is not asked (its rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<i64>,
    /// Unix second before which the organization is not listed again: its last listing went
    /// over pipe's bounds (entries, bytes or pages), and the known projects stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_bound_until: Option<i64>,
    /// Why the last listing did not complete (the known projects stay as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix second the last listing of every page completed: the next is due `relist` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relisted_at: Option<i64>,
    /// A digest of the pipeline file discovery decided under: another one lists anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// The first page's `ETag` (forges that list the most recently pushed first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_etag: Option<String>,
    /// Listed repositories waiting for the probe of their last push (never tried since it
    /// moved): a tick with some reads the listing to probe them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unprobed: usize,
    /// The projects the last discovery made, by name.
    #[serde(default)]
    pub projects: Vec<String>,
    /// The listing's entries of the repositories discovery made projects of, by name: every
    /// command but the listing makes the projects from these alone, and they hold their names
    /// before any newcomer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub made: BTreeMap<String, Repo>,
    /// The first page's entries as listed (GitHub, GitLab: the most recently pushed, at most
    /// 100): a first page that lists the same moved nothing, whatever its `ETag`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub first: BTreeMap<String, Repo>,
    /// Listed repositories kept out because a name their project would hold is another's:
    /// the repository and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept_out: BTreeMap<String, String>,
    /// The listing's pages in order.
    #[serde(default, rename = "page", skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<Page>,
    /// Projects discovery made once and no longer makes, with why: not polled, their state
    /// kept until `pipe prune` removes it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gone: BTreeMap<String, String>,
    /// Every repository listed, by its name on the forge.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repo: BTreeMap<String, Repo>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One page of the listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The repositories this page listed, by name.
    #[serde(default)]
    pub repos: Vec<String>,
}

/// One listed repository and what its default branch carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// `owner/name` (GitLab: the full path).
    pub full_name: String,
    pub clone_url: String,
    pub default_branch: String,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub fork: bool,
    /// The listing's last-push time (GitHub `pushed_at`, Gitea `updated_at`, GitLab
    /// `last_activity_at`): when it moves, the default branch is probed again.
    #[serde(default)]
    pub marker: String,
    /// The marker the last probe saw; equal to `marker` means the probe below is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed: Option<String>,
    /// The default branch's commit the last probe read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `pipe-toml`, `jenkins-env` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carries: Option<String>,
    /// Unix second of the last probe that failed: probes never tried, then the longest-failed,
    /// go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_failed_at: Option<i64>,
}

/// `discover/FORGE.toml` beside the state.
pub fn discovered_path(state: &Path, forge: &str) -> PathBuf {
    state_dir(state).join("discover").join(format!("{forge}.toml"))
}

/// Reads a forge's discovery cache; a missing file is an empty cache, a corrupt one a
/// `StateError` naming the file and line.
pub fn load_discovered(path: &Path) -> anyhow::Result<Discovered> {
    Ok(super::history::read_versioned(path)?.unwrap_or(Discovered { schema: SCHEMA, ..Discovered::default() }))
}

/// Reads a forge's discovery cache without its listing (`[[page]]`, `[repo]`): the head, the
/// projects made and the repositories they were made of, read a line at a time up to where
/// the listing starts. What `pipe status`, `pipe build` and every other command that does not
/// list spend on it grows with the projects discovery made, not with what the forge listed.
/// The head's copy of the first page is left out too: only a tick compares with it.
pub fn load_discovered_head(path: &Path) -> anyhow::Result<Discovered> {
    read_head(path, false)
}

/// [`load_discovered_head`] with the head's copy of the first page (at most 100 entries): what
/// a tick's first look at the listing compares with.
pub fn load_discovered_look(path: &Path) -> anyhow::Result<Discovered> {
    read_head(path, true)
}

fn read_head(path: &Path, with_first: bool) -> anyhow::Result<Discovered> {
    use std::io::BufRead as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Discovered { schema: SCHEMA, ..Discovered::default() });
        }
        Err(err) => return Err(super::disk::state_error(path, format!("cannot be read: {err}"))),
    };
    let mut text = String::new();
    let mut skipping = false;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|err| super::disk::state_error(path, format!("cannot be read: {err}")))?;
        if skipping {
            skipping = line != "]";
            continue;
        }
        match line.as_str() {
            LISTING_PAGE | LISTING_REPOS => break,
            FIRST_PAGE if !with_first => break,
            // Files written before the head came first keep their pages at the top.
            "page = [" => skipping = true,
            _ => {
                text.push_str(&line);
                text.push('\n');
            }
        }
    }
    super::history::parse_versioned(path, &text)
}

/// Where the listing starts in the file: its pages, then its repositories.
const LISTING_PAGE: &str = "[[page]]";
const LISTING_REPOS: &str = "[repo]";
/// Where the head's copy of the first page starts, the head's last table.
const FIRST_PAGE: &str = "[first]";

/// Every forge's discovery cache beside the state without its listing, by forge name (for
/// `pipe status`, which reads no pipeline file).
pub fn load_all_discovered(state: &Path) -> Vec<(String, anyhow::Result<Discovered>)> {
    let dir = state_dir(state).join("discover");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut found: Vec<(String, anyhow::Result<Discovered>)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".toml")?.to_string();
            (!name.starts_with('.')).then(|| (name.clone(), load_discovered_head(&e.path())))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Writes the cache atomically, one line per repository.
pub fn save_discovered(path: &Path, cache: &Discovered) -> anyhow::Result<()> {
    write_atomic(path, &render(cache))
}

/// The head first, the listing last, so that [`load_discovered_head`] stops where it starts.
fn render(cache: &Discovered) -> String {
    let head = Discovered {
        repo: BTreeMap::new(),
        gone: BTreeMap::new(),
        kept_out: BTreeMap::new(),
        made: BTreeMap::new(),
        first: BTreeMap::new(),
        pages: Vec::new(),
        ..cache.clone()
    };
    let mut out = String::with_capacity(512 + (cache.repo.len() + cache.made.len() + cache.first.len()) * 240);
    out.push_str("# pipe discovery cache: rewritten atomically by pipe\n");
    out.push_str(&toml::to_string(&head).unwrap_or_default());
    let table = |out: &mut String, name: &str, entries: &mut dyn Iterator<Item = (&String, String)>| {
        out.push_str(&format!("\n[{name}]\n"));
        for (key, value) in entries {
            out.push_str(&toml_key(key));
            out.push_str(" = ");
            out.push_str(&value);
            out.push('\n');
        }
    };
    table(&mut out, "gone", &mut cache.gone.iter().map(|(k, v)| (k, inline(v))));
    table(&mut out, "kept_out", &mut cache.kept_out.iter().map(|(k, v)| (k, inline(v))));
    table(&mut out, "made", &mut cache.made.iter().map(|(k, v)| (k, inline(v))));
    // Last in the head: every command but a tick stops reading before it.
    table(&mut out, "first", &mut cache.first.iter().map(|(k, v)| (k, inline(v))));
    out.push_str("\n# the listing: read only when the organization is listed\n");
    for page in &cache.pages {
        out.push_str(LISTING_PAGE);
        out.push('\n');
        out.push_str(&toml::to_string(page).unwrap_or_default());
    }
    out.push('\n');
    out.push_str(LISTING_REPOS);
    out.push('\n');
    for (name, repo) in &cache.repo {
        out.push_str(&toml_key(name));
        out.push_str(" = ");
        out.push_str(&inline(repo));
        out.push('\n');
    }
    out
}

impl super::history::Versioned for Discovered {
    fn schema(&self) -> u32 {
        self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_discovery_cache_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = discovered_path(&dir.path().join("state.toml"), "gh");
        assert_eq!(load_discovered(&path).unwrap().repo.len(), 0);
        let mut cache = Discovered { schema: SCHEMA, org: "example".into(), ..Default::default() };
        cache.throttled_until = Some(1_000);
        cache.projects = vec!["app".into()];
        cache.pages.push(Page {
            url: "https://api.example/orgs/example/repos?page=1".into(),
            etag: Some("W/\"abc\"".into()),
            next: None,
            repos: vec!["App.js".into()],
        });
        cache.gone.insert("old".into(), "removed from the listing".into());
        cache.repo.insert(
            "App.js".into(),
            Repo {
                full_name: "example/App.js".into(),
                clone_url: "https://h/example/App.js.git".into(),
                default_branch: "main".into(),
                marker: "2026-01-01T00:00:00Z".into(),
                carries: Some("pipe-toml".into()),
                ..Default::default()
            },
        );
        cache.made.insert("App.js".into(), cache.repo["App.js"].clone());
        cache.first.insert("App.js".into(), Repo { carries: None, ..cache.repo["App.js"].clone() });
        cache.first_etag = Some("W/\"first\"".into());
        (cache.relisted_at, cache.unprobed, cache.inputs) = (Some(900), 3, Some("abc".into()));
        cache.kept_out.insert("APP_js".into(), "its project name `app-js` is held".into());
        save_discovered(&path, &cache).unwrap();
        assert_eq!(load_discovered(&path).unwrap(), cache);
        let head = load_discovered_head(&path).unwrap();
        assert_eq!(
            head,
            Discovered { pages: Vec::new(), repo: BTreeMap::new(), first: BTreeMap::new(), ..cache.clone() }
        );
        let look = load_discovered_look(&path).unwrap();
        assert_eq!(look, Discovered { pages: Vec::new(), repo: BTreeMap::new(), ..cache.clone() });
    }

    #[test]
    fn the_head_of_a_cache_written_before_the_head_came_first_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gh.toml");
        let old = format!(
            "schema = {SCHEMA}\norg = \"example\"\nprojects = [\"app\"]\npage = [\n  {{ url = \"u\", repos = [\"app\"] }},\n]\n\n[gone]\nold = \"removed\"\n\n[repo]\napp = {{ full_name = \"example/app\", clone_url = \"c\", default_branch = \"main\" }}\n"
        );
        std::fs::write(&path, old).unwrap();
        let head = load_discovered_head(&path).unwrap();
        assert_eq!(head.projects, ["app"]);
        assert_eq!(head.gone["old"], "removed");
        assert!(head.pages.is_empty() && head.repo.is_empty());
        assert_eq!(load_discovered(&path).unwrap().repo.len(), 1);
    }
}
