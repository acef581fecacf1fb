//! `pipe poll`: list every remote's heads in parallel, compare with the state, record changes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use serde::Serialize;

use super::Context;
use crate::cli::PollArgs;
use crate::config::{Config, Project, Stage};
use crate::error::code;
use crate::refs::{self, Change, ChangeKind};
use crate::{git, output, state};

/// A project whose remote could not be listed.
#[derive(Debug, Serialize)]
pub struct PollError {
    pub project: String,
    pub message: String,
}

/// What one poll found across the selected projects.
#[derive(Debug, Default, Serialize)]
pub struct PollReport {
    pub version: u32,
    pub changes: Vec<Change>,
    pub errors: Vec<PollError>,
}

pub fn run(cx: &Context, args: &PollArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    let projects = config.select(&args.projects)?;
    let state_path = cx.state_path()?;
    let _lock = if args.dry_run { None } else { Some(state::lock(&state_path, "poll")?) };
    let mut st = state::load(&state_path)?;

    let report = poll(cx, &config, &projects, &mut st);
    if !args.dry_run && report.state_changed {
        state::save(&state_path, &st)?;
    }
    let report = report.report;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("failed to render JSON")?);
    } else {
        print_table(cx, &report);
    }
    Ok(if report.errors.is_empty() { code::OK } else { code::FAILED })
}

/// The report plus whether the in-memory state now differs from the file.
pub struct Polled {
    pub report: PollReport,
    pub state_changed: bool,
}

/// Polls the projects and applies what changed to `st` (the caller decides whether to save).
pub fn poll(cx: &Context, config: &Config, projects: &[(&str, &Project)], st: &mut state::State) -> Polled {
    let listed = list_all(cx, config, projects);
    let now = crate::clock::now();
    let mut report = PollReport { version: 1, ..Default::default() };
    let mut state_changed = false;
    for ((name, project), result) in projects.iter().zip(listed) {
        let advertised = match result {
            Ok(advertised) => advertised,
            Err(err) => {
                let message = format!("{err:#}");
                cx.out.error(format!("{name}: {message}"));
                report.errors.push(PollError { project: name.to_string(), message });
                continue;
            }
        };
        let tracked = refs::tracked(project, &advertised);
        warn_rejected(cx, name, &tracked.rejected);
        let previous = st.project.get(*name);
        let diff = refs::diff(name, previous, &tracked);
        if !diff.baseline.is_empty() {
            cx.out.info(format!(
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
fn warn_rejected(cx: &Context, project: &str, rejected: &[String]) {
    const SHOWN: usize = 5;
    for refname in rejected.iter().take(SHOWN) {
        cx.out.warn(format!("{project}: skipped ref {}: not a valid git ref name", refs::escaped(refname)));
    }
    if rejected.len() > SHOWN {
        cx.out.warn(format!("{project}: skipped {} more refs with invalid names", rejected.len() - SHOWN));
    }
}

/// A remote's advertised refs as (full ref name, commit id), or why they could not be listed.
type Listing = anyhow::Result<Vec<(String, String)>>;

/// Lists every project's remote, at most `pipe.parallel` at a time, each bounded by its timeout.
fn list_all(
    cx: &Context,
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
                    cx.out.detail(format!("{name}: listing `{}`", git::redact_url(&project.repo)));
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
    let auth = super::stage::git_auth(name, project)?;
    git::list_remote(&project.repo, &auth, config.timeout(Some(project), Stage::Poll))
}

fn print_table(cx: &Context, report: &PollReport) {
    if report.changes.is_empty() {
        if report.errors.is_empty() {
            cx.out.info("no changes");
        }
        return;
    }
    let rows: Vec<Vec<String>> = report
        .changes
        .iter()
        .map(|c| {
            let commits = match (c.change, &c.from, &c.to) {
                (ChangeKind::Updated, Some(from), Some(to)) => {
                    format!("{} -> {}", short(from), short(to))
                }
                (_, _, Some(to)) => short(to).to_string(),
                (_, Some(from), None) => format!("(was {})", short(from)),
                _ => String::new(),
            };
            let change = match c.change {
                ChangeKind::New => "new",
                ChangeKind::Updated => "updated",
                ChangeKind::Deleted => "deleted",
            };
            vec![c.project.clone(), refs::display(&c.refname).to_string(), change.to_string(), commits]
        })
        .collect();
    print!("{}", output::table(&["PROJECT", "REF", "CHANGE", "COMMIT"], &rows));
}

/// The short commit id shown to people.
pub fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}
