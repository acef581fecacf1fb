//! The previews of pull requests that run now, one file per project beside the state
//! (`previews/PROJECT.toml`): what `pipe run` tears down when a pull request closes or idles,
//! and what `pipe status` and the status page link to.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::disk::{SCHEMA, state_dir, state_error, write_atomic};
use super::history::{Versioned, read_versioned};

/// The running previews of one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Previews {
    pub schema: u32,
    #[serde(default, rename = "preview")]
    pub previews: Vec<Preview>,
}

/// One pull request's preview on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preview {
    /// The deploy target (`display_name`) it is a preview of.
    pub target: String,
    /// The pull request's number.
    pub number: u64,
    #[serde(rename = "ref")]
    pub refname: String,
    /// The compose project it runs as: `<project>-pr-<N>`.
    pub compose_project: String,
    /// Its services behind the ingress, each with a name of its own there.
    pub services: Vec<String>,
    /// The commit it runs, and that commit's image as deployed.
    pub commit: String,
    pub image: String,
    /// Where it answers through the ingress.
    pub url: String,
    /// Ran with the target's environment and without confinement (`trust_pull_requests`).
    pub trusted: bool,
    /// First deployed; last deployed (a new commit), which the idle TTL counts from.
    pub created: Timestamp,
    pub updated: Timestamp,
    /// Who opened the pull request (`forge:login`), when its forge named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

impl Versioned for Previews {
    fn schema(&self) -> u32 {
        self.schema
    }
}

/// Where a project's previews are recorded: `previews/PROJECT.toml` beside the state.
pub fn previews_path(state: &Path, project: &str) -> PathBuf {
    state_dir(state).join("previews").join(format!("{project}.toml"))
}

/// Reads a project's previews; a missing file is none.
pub fn load_previews(path: &Path) -> anyhow::Result<Previews> {
    Ok(read_versioned(path)?.unwrap_or(Previews { schema: SCHEMA, previews: Vec::new() }))
}

/// Saves a project's previews atomically (the file is removed when none is left).
pub fn save_previews(path: &Path, previews: &Previews) -> anyhow::Result<()> {
    if previews.previews.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(state_error(path, format!("cannot be removed: {e}"))),
        };
    }
    let text = toml::to_string(previews).map_err(|e| state_error(path, format!("cannot be rendered: {e}")))?;
    write_atomic(path, &text)
}
