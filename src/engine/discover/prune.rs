//! Forgetting what discovery no longer makes, for `pipe prune`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::Config;
use crate::state::{self};

use super::listing::discovering;

/// A discovery cache and where it goes, saved once the state is.
pub(crate) type CacheToSave = (PathBuf, state::Discovered);

/// A project no longer discovered whose state `pipe prune` removes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Forgotten {
    pub forge: String,
    pub project: String,
    /// Why discovery stopped making it.
    pub why: String,
    /// Refs it had in the state.
    pub refs: usize,
    /// Its histories, logs, deploy histories and workspace, as they were removed.
    pub removed: Vec<PathBuf>,
}

/// Removes what is left of projects discovery no longer makes: their lines in the state,
/// their ref and deploy histories, logs and workspace; then forgets them. A project that came
/// back (or is now written out) is only forgotten as gone. The caller holds the lock and saves
/// `st` when this returns something and it is not a dry run.
pub(crate) fn prune_gone(
    config: &Config,
    state_path: &Path,
    st: &mut state::State,
    dry_run: bool,
) -> anyhow::Result<(Vec<Forgotten>, Vec<CacheToSave>)> {
    let mut forgotten = Vec::new();
    // Saved by the caller after the state: a crash between leaves the projects to forget
    // still named in the caches, so the next prune finishes the job.
    let mut caches = Vec::new();
    for forge in discovering(config) {
        let path = state::discovered_path(state_path, &forge);
        let mut cache = state::load_discovered(&path)?;
        if cache.gone.is_empty() {
            continue;
        }
        for (name, why) in std::mem::take(&mut cache.gone) {
            if config.projects.contains_key(&name) {
                continue;
            }
            let refs = st.project.get(&name).map_or(0, |p| p.refs.len());
            let dirs = state::project_dirs(state_path, &name);
            let workspace = config.settings.workspace.join(&name);
            let removed: Vec<PathBuf> = dirs.into_iter().chain([workspace]).filter(|d| d.exists()).collect();
            if !dry_run {
                for dir in &removed {
                    std::fs::remove_dir_all(dir).with_context(|| format!("failed to remove `{}`", dir.display()))?;
                }
                st.project.remove(&name);
            }
            forgotten.push(Forgotten { forge: forge.clone(), project: name, why, refs, removed });
        }
        if !dry_run {
            caches.push((path, cache));
        }
    }
    Ok((forgotten, caches))
}
