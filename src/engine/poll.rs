//! Polling: list every remote's heads in parallel, compare with the state, apply the changes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::config::{Config, Project};
use crate::model::Stage;
use crate::output::Output;
use crate::refs::{self, Change};
use crate::{git, state};

/// A project whose remote could not be listed.
#[derive(Debug, Serialize)]
pub(crate) struct PollError {
    pub project: String,
    pub message: String,
}

/// What one poll found across the selected projects.
#[derive(Debug, Default, Serialize)]
pub(crate) struct PollReport {
    pub version: u32,
    pub changes: Vec<Change>,
    pub errors: Vec<PollError>,
}

/// The report plus whether the in-memory state now differs from the file.
pub(crate) struct Polled {
    pub report: PollReport,
    pub state_changed: bool,
}

/// Polls the projects and applies what changed to `st` (the caller decides whether to save).
pub(crate) fn poll(out: &Output, config: &Config, projects: &[(&str, &Project)], st: &mut state::State) -> Polled {
    let listed = list_all(out, config, projects);
    // A head's `since` is the deploy timeline's `detected`: measured as its other instants are.
    let now = crate::clock::precise();
    let mut report = PollReport { version: 1, ..Default::default() };
    let mut state_changed = false;
    for ((name, project), result) in projects.iter().zip(listed) {
        let advertised = match result {
            Ok(advertised) => advertised,
            Err(err) => {
                let message = format!("{err:#}");
                out.error(format!("{name}: {message}"));
                report.errors.push(PollError { project: name.to_string(), message });
                continue;
            }
        };
        let tracked = refs::tracked(project, &advertised);
        warn_rejected(out, name, &tracked.rejected);
        let previous = st.project.get(*name);
        let diff = refs::diff(name, previous, &tracked);
        if !diff.baseline.is_empty() {
            out.info(format!(
                "{name}: recorded {} existing pull request head(s) without an open merge ref as a baseline; they are not built unless they move",
                diff.baseline.len()
            ));
        }
        if !diff.is_empty() || previous.is_none_or(|p| !p.indexed) {
            refs::apply(st.project.entry(name.to_string()).or_default(), &diff, &tracked, now);
            state_changed = true;
        }
        report.changes.extend(diff.changes);
    }
    Polled { report, state_changed }
}

/// Names a remote advertised that are not valid ref names: skipped, shown escaped, at most a
/// few by name so a hostile remote cannot flood the journal.
fn warn_rejected(out: &Output, project: &str, rejected: &[String]) {
    const SHOWN: usize = 5;
    for refname in rejected.iter().take(SHOWN) {
        out.warn(format!("{project}: skipped ref {}: not a valid git ref name", refs::escaped(refname)));
    }
    if rejected.len() > SHOWN {
        out.warn(format!("{project}: skipped {} more refs with invalid names", rejected.len() - SHOWN));
    }
}

/// A remote's advertised refs as (full ref name, commit id), or why they could not be listed.
type Listing = anyhow::Result<Vec<(String, String)>>;

/// Lists every project's remote, at most `pipe.parallel` at a time, each bounded by its timeout.
fn list_all(
    out: &Output,
    config: &Config,
    projects: &[(&str, &Project)],
) -> Vec<anyhow::Result<Vec<(String, String)>>> {
    git::set_timeouts(config.timeout(None, Stage::Poll));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Listing>>> = Mutex::new(projects.iter().map(|_| None).collect());
    let workers = config.settings.parallel.clamp(1, projects.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, project)) = projects.get(i) else {
                        break;
                    };
                    out.detail(format!("{name}: listing `{}`", git::redact_url(&project.repo)));
                    let result = list_one(config, name, project);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("not polled"))))
        .collect()
}

fn list_one(config: &Config, name: &str, project: &Project) -> anyhow::Result<Vec<(String, String)>> {
    let auth = super::git_auth(name, project)?;
    git::list_remote(&project.repo, &auth, config.timeout(Some(project), Stage::Poll))
}
