//! `pipe run`: the timer's command. Poll, then for each ref with a new head build → test →
//! push → deploy its newest commit, each stage gated by the one before; projects in parallel,
//! refs of one project in turn; notify; print a summary.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use super::Context;
use super::poll::{self, PollError};
use super::stage::Job;
use super::{build, deploy, push, test};
use crate::cli::RunArgs;
use crate::config::{Config, Project};
use crate::error::Interrupted;
use crate::error::StageFailed;
use crate::error::ToolUnavailable;
use crate::error::code;
use crate::notify::{self, EventKind, Notice};
use crate::refs::{self, Change};
use crate::state::{self, State};
use crate::{docker, output};

/// One ref's pass through the stages.
#[derive(Debug, Clone, Serialize)]
pub struct RefResult {
    pub project: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub commit: String,
    /// The last stage that ran.
    pub stage: String,
    /// `passed`, `failed`, `timed_out`, `interrupted` or `unavailable`.
    pub result: String,
    pub seconds: f64,
    pub deployed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
struct RunReport<'a> {
    version: u32,
    changes: &'a [Change],
    errors: &'a [PollError],
    results: &'a [RefResult],
    /// Refs with work left for a later run (beyond `pipe.max_builds`).
    deferred: usize,
}

/// A ref waiting for the stages.
#[derive(Debug, Clone)]
struct Work {
    project: String,
    refname: String,
    head: String,
    since: jiff::Timestamp,
    previous: Option<String>,
}

pub fn run(cx: &Context, args: &RunArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    let projects = config.select(&args.projects)?;
    let state_path = cx.state_path()?;
    let _lock = state::lock(&state_path, "run")?;
    let mut st = state::load(&state_path)?;
    let polled = poll::poll(cx, &config, &projects, &mut st);
    if polled.state_changed && !args.dry_run {
        state::save(&state_path, &st)?;
    }
    let (work, deferred) = work_list(&config, &projects, &st, args.retry);
    if args.dry_run {
        for w in &work {
            println!(
                "{} {}: build {} then test, push, deploy as configured",
                w.project,
                refs::display(&w.refname),
                &w.head[..12.min(w.head.len())]
            );
        }
        return Ok(code::OK);
    }
    let st = Mutex::new(st);
    let results = Mutex::new(Vec::new());
    let interrupted = Mutex::new(None);
    let by_project: Vec<(&str, &Project, Vec<&Work>)> = projects
        .iter()
        .map(|(name, project)| (*name, *project, work.iter().filter(|w| w.project == *name).collect::<Vec<_>>()))
        .filter(|(_, _, w)| !w.is_empty())
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..config.settings.parallel.clamp(1, by_project.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, project, refs)) = by_project.get(i) else { break };
                    for w in refs {
                        if crate::signals::received().is_some() {
                            return;
                        }
                        let job = Job {
                            cx,
                            config: &config,
                            state_path: &state_path,
                            name,
                            project,
                            refname: w.refname.clone(),
                        };
                        match pipeline(&job, &st, w) {
                            Ok(result) => {
                                let stop_project = result.result == "unavailable";
                                results.lock().unwrap_or_else(|e| e.into_inner()).push((result, (*w).clone()));
                                if stop_project {
                                    break;
                                }
                            }
                            Err(err) => {
                                *interrupted.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by(|a, b| (&a.0.project, &a.0.refname).cmp(&(&b.0.project, &b.0.refname)));
    // Every stage and every finished ref saved the state already: a tick that ran nothing
    // writes nothing.
    let notices: Vec<Notice> = results.iter().flat_map(|(r, w)| notices_for(r, w, &state_path)).collect();
    notify::send(&cx.out, &config, &notices);
    if let Some(err) = interrupted.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(err);
    }
    let results: Vec<RefResult> = results.into_iter().map(|(r, _)| r).collect();
    let report = &polled.report;
    if args.json {
        let doc =
            RunReport { version: 1, changes: &report.changes, errors: &report.errors, results: &results, deferred };
        println!("{}", serde_json::to_string_pretty(&doc).context("failed to render JSON")?);
    } else {
        print_summary(cx, &results, deferred);
    }
    let failed =
        !report.errors.is_empty() || results.iter().any(|r| !matches!(r.result.as_str(), "passed" | "unavailable"));
    let unavailable = results.iter().any(|r| r.result == "unavailable");
    Ok(if failed {
        code::FAILED
    } else if unavailable {
        code::UNAVAILABLE
    } else {
        code::OK
    })
}

/// Refs whose head is pending (new or moved), whose last stage was interrupted, or, with
/// `--retry`, whose last run failed; oldest first, at most `pipe.max_builds` of them, taken
/// round-robin across projects. Returns the work and how many refs were deferred.
fn work_list(config: &Config, projects: &[(&str, &Project)], st: &State, retry: bool) -> (Vec<Work>, usize) {
    let mut per_project: Vec<Vec<Work>> = Vec::new();
    for (name, _) in projects {
        let Some(project) = st.project.get(*name) else { continue };
        let mut refs: Vec<Work> = project
            .refs
            .iter()
            .filter(|(_, r)| {
                let last = r.last.as_ref().map(|l| l.result.as_str());
                r.pending
                    || matches!(last, Some("interrupted"))
                    || (retry && matches!(last, Some("failed") | Some("timed_out")))
            })
            .map(|(refname, r)| Work {
                project: name.to_string(),
                refname: refname.clone(),
                head: r.head.clone(),
                since: r.since,
                previous: r.last.as_ref().map(|l| l.result.clone()),
            })
            .collect();
        refs.sort_by_key(|w| w.since);
        per_project.push(refs);
    }
    let total: usize = per_project.iter().map(Vec::len).sum();
    let mut work = Vec::new();
    let mut round = 0;
    while work.len() < config.settings.max_builds && work.len() < total {
        for refs in &per_project {
            if let Some(w) = refs.get(round)
                && work.len() < config.settings.max_builds
            {
                work.push(w.clone());
            }
        }
        round += 1;
    }
    let deferred = total - work.len();
    (work, deferred)
}

/// Runs the stages for one ref. `Err` only for an interruption (the whole run stops); every
/// other outcome is a result.
fn pipeline(job: &Job<'_>, st: &Mutex<State>, work: &Work) -> anyhow::Result<RefResult> {
    let started = Instant::now();
    let mut result = RefResult {
        project: job.name.to_string(),
        refname: job.refname.clone(),
        commit: work.head.clone(),
        stage: "build".into(),
        result: "passed".into(),
        seconds: 0.0,
        deployed: false,
        message: None,
    };
    let outcome = (|| -> anyhow::Result<()> {
        let number = build::build(job, st, Some(&work.head))?;
        result.stage = "test".into();
        test::test(job, st, Some(number))?;
        if !push::registries_for(job.config, job.project, &job.refname).is_empty() {
            result.stage = "push".into();
            push::push(job, st, false, false)?;
        }
        if !deploy::targets(job, None).is_empty() {
            result.stage = "deploy".into();
            deploy::deploy(job, st, None, None, false)?;
            result.deployed = true;
        }
        Ok(())
    })();
    result.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    if let Err(err) = outcome {
        if err.is::<Interrupted>() {
            return Err(err);
        }
        result.message = Some(format!("{err:#}"));
        result.result = if err.is::<ToolUnavailable>() || err.is::<crate::error::RemoteUnavailable>() {
            "unavailable".into()
        } else if err.is::<StageFailed>() {
            let st = st.lock().unwrap_or_else(|e| e.into_inner());
            let last = st.project.get(job.name).and_then(|p| p.refs.get(&job.refname)).and_then(|r| r.last.clone());
            last.map_or_else(|| "failed".to_string(), |l| if l.result == "passed" { "failed".into() } else { l.result })
        } else {
            "failed".into()
        };
        job.cx.out.error(format!(
            "{} {}: {}",
            job.name,
            refs::display(&job.refname),
            result.message.as_deref().unwrap_or("")
        ));
    }
    // An unreachable engine or registry leaves the ref pending, so the next tick retries it.
    if result.result != "unavailable" {
        let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = st.project.get_mut(job.name).and_then(|p| p.refs.get_mut(&job.refname))
            && r.head == work.head
        {
            r.pending = false;
        }
        state::save(job.state_path, &st)?;
    }
    Ok(result)
}

/// Failure (once per failing commit), recovery (first success after a failure), success, deploy.
fn notices_for(result: &RefResult, work: &Work, state_path: &std::path::Path) -> Vec<Notice> {
    let failed = |r: &str| matches!(r, "failed" | "timed_out");
    let base = |event| Notice {
        event,
        project: result.project.clone(),
        refname: result.refname.clone(),
        commit: result.commit.clone(),
        stage: result.stage.clone(),
        result: result.result.clone(),
        seconds: result.seconds,
        log_tail: String::new(),
    };
    let mut out = Vec::new();
    if failed(&result.result) {
        let mut n = base(EventKind::Failure);
        n.log_tail = log_tail(state_path, result);
        out.push(n);
    } else if result.result == "passed" {
        if work.previous.as_deref().is_some_and(failed) {
            out.push(base(EventKind::Recovery));
        }
        out.push(base(EventKind::Success));
        if result.deployed {
            out.push(base(EventKind::Deploy));
        }
    }
    out
}

fn log_tail(state_path: &std::path::Path, result: &RefResult) -> String {
    let history =
        state::load_history(&state::history_path(state_path, &result.project, &result.refname), &result.refname);
    let text = history
        .ok()
        .and_then(|h| h.runs.last().cloned())
        .and_then(|run| std::fs::read_to_string(run.log).ok())
        .unwrap_or_default();
    crate::output::tail_lines(&text, 10)
}

fn print_summary(cx: &Context, results: &[RefResult], deferred: usize) {
    if results.is_empty() {
        cx.out.info(if deferred > 0 {
            format!("nothing run; {deferred} ref(s) deferred")
        } else {
            "nothing to do".into()
        });
        return;
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.project.clone(),
                refs::display(&r.refname).to_string(),
                docker::commit_tag(&r.commit).to_string(),
                r.stage.clone(),
                r.result.clone(),
                format!("{:.1}s", r.seconds),
            ]
        })
        .collect();
    print!("{}", output::table(&["PROJECT", "REF", "COMMIT", "STAGE", "RESULT", "TIME"], &rows));
    if deferred > 0 {
        cx.out.info(format!("{deferred} more ref(s) wait for the next run (pipe.max_builds)"));
    }
}
