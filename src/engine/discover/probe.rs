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
use crate::state::Discovered;

use super::decide::{Candidacy, candidacy};

/// Probes, in parallel, the default branch of each candidate whose listing marker moved since
/// its last probe (or that was never probed), and records what it carries.
pub(crate) fn probe(out: &Output, config: &Config, forge: &str, discover: &Discover, cache: &mut Discovered) {
    let mut todo = Vec::new();
    for (repo_name, repo) in &cache.repo {
        if repo.probed.as_deref() == Some(repo.marker.as_str()) && repo.carries.is_some() {
            continue;
        }
        let Candidacy::Eligible(name, project) = candidacy(config, forge, discover, repo_name, repo) else {
            continue;
        };
        todo.push((repo_name.clone(), name, project));
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
            }
            Err(e) => {
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
