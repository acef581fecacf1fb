//! Probing a listed repository's default branch for a `.pipe.toml` (or `.jenkins-env` beside a
//! `Dockerfile`), through git with the project's own URL and credentials.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::config::{Config, Discover, Project};
use crate::git;
use crate::model::Stage;
use crate::output::Output;
use crate::state::{Discovered, Repo};

use super::decide::{Candidacy, candidacy, screen};

/// Probes started per tick at most, whatever the listing holds; the rest wait for later ticks.
pub(crate) const MAX_PROBES: usize = 32;

/// Whether a listed repository moved since its last probe (or was never probed).
fn moved(repo: &Repo) -> bool {
    !(repo.probed.as_deref() == Some(repo.marker.as_str()) && repo.carries.is_some())
}

/// The candidates waiting for the probe of their last push, never tried since it moved: a
/// tick with some reads the listing to probe them; one whose probe failed waits for a tick
/// that reads the listing anyway.
pub(crate) fn unprobed(config: &Config, forge: &str, discover: &Discover, cache: &Discovered) -> usize {
    let waits = |(n, r): &(&String, &Repo)| {
        moved(r) && r.probe_failed_at.is_none() && screen(config, forge, discover, n, r).is_ok()
    };
    cache.repo.iter().filter(waits).count()
}

/// Probes, in parallel, the default branch of each candidate whose listing marker moved since
/// its last probe (or that was never probed), and records what it carries: at most
/// [`MAX_PROBES`] a tick, those never tried since they moved first (the most recently pushed
/// first), then those whose last probe failed longest ago, so entries that always fail cannot
/// keep a new repository waiting.
pub(crate) fn probe(out: &Output, config: &Config, forge: &str, discover: &Discover, cache: &mut Discovered) {
    let mut waiting: Vec<(&String, Option<i64>, &str)> = cache
        .repo
        .iter()
        .filter(|(_, r)| moved(r))
        .filter(|(n, r)| screen(config, forge, discover, n, r).is_ok())
        .map(|(n, r)| (n, r.probe_failed_at, r.marker.as_str()))
        .collect();
    waiting.sort_by(|a, b| (a.1, std::cmp::Reverse(a.2)).cmp(&(b.1, std::cmp::Reverse(b.2))));
    let mut todo = Vec::new();
    let mut later = 0;
    for (repo_name, _, _) in waiting {
        if todo.len() == MAX_PROBES {
            later += 1;
            continue;
        }
        if let Candidacy::Eligible(name, project) =
            candidacy(config, forge, discover, repo_name, &cache.repo[repo_name])
        {
            todo.push((repo_name.clone(), name, project));
        }
    }
    if later > 0 {
        out.detail(format!("forge `{forge}`: {later} repositories wait for a probe (at most {MAX_PROBES} a tick)"));
    }
    if todo.is_empty() {
        return;
    }
    git::set_timeouts(config.timeout(None, Stage::Poll));
    let results = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..config.settings.parallel.clamp(1, todo.len()) {
            scope.spawn(|| {
                while let Some((repo_name, name, project)) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if crate::signals::received().is_some() {
                        return;
                    }
                    let branch = &cache.repo[repo_name].default_branch;
                    let result = probe_one(config, name, project, branch);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push((repo_name.clone(), result));
                }
            });
        }
    });
    let mut failed = 0;
    for (repo_name, result) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        let repo = cache.repo.get_mut(&repo_name).expect("probed repositories are listed");
        match result {
            Ok(probed) => {
                let files = &probed.root_files;
                let has = |f: &str| files.iter().any(|n| n == f);
                let carries = if has(".pipe.toml") {
                    "pipe-toml"
                } else if has(".jenkins-env") && has("Dockerfile") {
                    "jenkins-env"
                } else {
                    "none"
                };
                repo.carries = Some(carries.into());
                repo.commit = Some(probed.commit);
                repo.probed = Some(repo.marker.clone());
                repo.probe_failed_at = None;
            }
            Err(e) => {
                repo.probe_failed_at = Some(crate::clock::now().as_second());
                // Tried again next tick; a few by name so an unreachable host cannot flood the journal.
                failed += 1;
                if failed <= 5 {
                    out.warn(format!("forge `{forge}`: cannot probe `{repo_name}`: {e:#}"));
                }
            }
        }
    }
    if failed > 5 {
        out.warn(format!("forge `{forge}`: {} more repositories could not be probed", failed - 5));
    }
}

fn probe_one(config: &Config, name: &str, project: &Project, branch: &str) -> anyhow::Result<git::Probed> {
    let auth = crate::engine::git_auth(name, project)?;
    let deadline = Instant::now() + config.timeout(Some(project), Stage::Poll) * 4;
    git::root_files(&project.repo, &auth, &format!("refs/heads/{branch}"), &probe_dir(config, name), deadline)
}

/// Where a repository is probed: beside the projects' workspaces, under a name no project
/// can have (project names never start with `.`), one per process (`pipe check` probes
/// while a tick may).
fn probe_dir(config: &Config, name: &str) -> PathBuf {
    config.settings.workspace.join(format!(".discover-{name}-{}", std::process::id()))
}
