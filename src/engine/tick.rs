//! The tick: which refs have work, and each ref's pass through build → test → push → deploy,
//! each stage gated by the one before; projects in parallel, refs of one project in turn.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::poll::PollReport;
use super::statuses::{DeployStatuses, StageStatus, ended, took};
use super::{Job, deploy, previews, push};
use crate::config::{Config, Project};
use crate::error::{Interrupted, RemoteUnavailable, StageFailed, StateError, ToolUnavailable};
use crate::forge::{Reporter, State as ForgeState, Target};
use crate::model::{Outcome, Stage, Verdict};
use crate::notify::{EventKind, Notice};
use crate::output::Output;
use crate::refs;
use crate::state::{self, State};

/// What one tick did: the poll's report, the work it found, and each ref's result.
pub(crate) struct Tick {
    pub poll: PollReport,
    /// The refs taken this tick (all that a dry run would run).
    pub work: Vec<Work>,
    pub results: Vec<RefResult>,
    /// Refs with work left for a later tick (beyond `pipe.max_builds`).
    pub deferred: usize,
}

/// The timer's tick: takes the lock (unless the caller holds it already: `lock`), polls
/// (saving only what changed), runs the work, notifies. A dry run polls and lists the work
/// without saving or running anything. An interruption is returned as the error once the
/// results so far are settled and notified.
pub(crate) fn tick(
    out: Output,
    config: &Config,
    state_path: &Path,
    projects: &[(&str, &Project)],
    retry: bool,
    dry_run: bool,
    lock: Option<state::StateLock>,
) -> anyhow::Result<Tick> {
    let _lock = match lock {
        Some(lock) => lock,
        None => state::lock(state_path, "run")?,
    };
    let mut st = state::load(state_path)?;
    let polled = super::poll::poll(&out, config, projects, &mut st);
    if polled.state_changed && !dry_run {
        state::save(state_path, &st)?;
    }
    if !dry_run {
        // Previews of closed or idle pull requests go before any new work takes their place.
        // Every project: one whose target stopped running previews still has some to remove.
        // And those of projects no longer configured at all.
        let orphaned = previews::orphaned(config, state_path);
        let mut names: Vec<&str> = projects.iter().map(|(n, _)| *n).collect();
        names.extend(orphaned.iter().map(String::as_str));
        if let Err(err) = previews::sweep(&out, config, state_path, &st, &names, true, false) {
            if err.is::<Interrupted>() || err.is::<StateError>() {
                return Err(err);
            }
            out.warn(format!("previews were not swept: {err:#}"));
        }
    }
    let with_work = |name: &str, refname: &str| {
        st.project.get(name).and_then(|p| p.refs.get(refname)).is_some_and(|r| has_work(r, retry))
    };
    let authors = super::authors::of_pull_requests(&out, config, projects, &st, &with_work);
    let (work, deferred) = work_list(config, projects, &st, retry, &authors);
    if dry_run {
        return Ok(Tick { poll: polled.report, work, results: Vec::new(), deferred });
    }
    let st = Mutex::new(st);
    // Statuses an earlier tick could not deliver go first, in order.
    let reporter = Reporter::open(out, config, state_path);
    reporter.flush();
    let ran = run_all(out, config, state_path, projects, &work, &st, &reporter);
    // Each ref settled its own summary: a tick that ran nothing writes nothing.
    let notices: Vec<Notice> = ran.results.iter().flat_map(|(r, w)| notices_for(config, r, w, state_path)).collect();
    crate::notify::send(&out, config, &notices);
    if let Some(err) = ran.interrupted {
        return Err(err);
    }
    let results = ran.results.into_iter().map(|(r, _)| r).collect();
    Ok(Tick { poll: polled.report, work, results, deferred })
}

/// One ref's pass through the stages.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RefResult {
    pub project: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub commit: String,
    /// The last stage that ran.
    pub stage: Stage,
    pub result: Verdict,
    pub seconds: f64,
    pub deployed: bool,
    /// From the commit being detected to its release taking traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<state::Timeline>,
    /// Where the pull request's preview answers, when this run deployed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    /// Per target that spans hosts: where each host ended in this run's deploy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fleets: Vec<crate::report::FleetStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The ref's history could not be read or written: the run exits 5, the ref stays pending.
    #[serde(skip)]
    pub state_error: bool,
    /// The run this tick recorded for the ref, whose page a notification links to.
    #[serde(skip)]
    pub run: Option<u64>,
}

/// A ref waiting for the stages.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub project: String,
    pub refname: String,
    pub head: String,
    since: jiff::Timestamp,
    /// The ref's last recorded outcome before this run.
    previous: Option<Outcome>,
    /// Who opened it, for a pull request whose project names a forge (`forge:login`).
    pub author: Option<String>,
}

/// Whether a ref has work: its head is pending (new or moved), its last stage was
/// interrupted, or, with `--retry`, its last run failed.
fn has_work(r: &state::RefState, retry: bool) -> bool {
    let last = r.last.as_ref().map(|l| l.result);
    r.pending || last == Some(Outcome::Interrupted) || (retry && last.is_some_and(Outcome::is_failure))
}

/// Refs whose head is pending (new or moved), whose last stage was interrupted, or, with
/// `--retry`, whose last run failed; oldest first, at most `pipe.max_builds` of them, taken
/// round-robin across projects, and at most `pipe.max_builds_per_author` pull requests of one
/// author (`authors`), so one contributor's pull requests cannot take every build of a tick.
/// Returns the work and how many refs were deferred.
fn work_list(
    config: &Config,
    projects: &[(&str, &Project)],
    st: &State,
    retry: bool,
    authors: &BTreeMap<(String, String), String>,
) -> (Vec<Work>, usize) {
    let mut per_project: Vec<Vec<Work>> = Vec::new();
    for (name, _) in projects {
        let Some(project) = st.project.get(*name) else { continue };
        let mut refs: Vec<Work> = project
            .refs
            .iter()
            .filter(|(_, r)| has_work(r, retry))
            .map(|(refname, r)| Work {
                project: name.to_string(),
                refname: refname.clone(),
                head: r.head.clone(),
                since: r.since,
                previous: r.last.as_ref().map(|l| l.result),
                author: authors.get(&(name.to_string(), refname.clone())).cloned(),
            })
            .collect();
        refs.sort_by_key(|w| w.since);
        per_project.push(refs);
    }
    let total: usize = per_project.iter().map(Vec::len).sum();
    let longest = per_project.iter().map(Vec::len).max().unwrap_or(0);
    let max = config.settings.max_builds;
    let per_author = config.settings.max_builds_per_author.max(1);
    let mut by_author: BTreeMap<&str, usize> = BTreeMap::new();
    let mut work = Vec::new();
    'rounds: for round in 0..longest {
        for refs in &per_project {
            if work.len() == max {
                break 'rounds;
            }
            let Some(w) = refs.get(round) else { continue };
            if let Some(author) = &w.author {
                let taken = by_author.entry(author.as_str()).or_default();
                if *taken == per_author {
                    continue;
                }
                *taken += 1;
            }
            work.push(w.clone());
        }
    }
    let deferred = total - work.len();
    (work, deferred)
}

/// What a tick's workers produced: each ref's result with its work item, and the interruption
/// that stopped the run, if any.
struct Ran {
    pub results: Vec<(RefResult, Work)>,
    pub interrupted: Option<anyhow::Error>,
}

/// Runs the work: `pipe.parallel` projects at a time, each project's refs in turn. An
/// unreachable engine or registry stops that project's remaining refs for this tick.
fn run_all(
    out: Output,
    config: &Config,
    state_path: &Path,
    projects: &[(&str, &Project)],
    work: &[Work],
    st: &Mutex<State>,
    reporter: &Reporter<'_>,
) -> Ran {
    let results = Mutex::new(Vec::new());
    let interrupted = Mutex::new(None);
    let by_project: Vec<(&str, &Project, Vec<&Work>)> = projects
        .iter()
        .map(|(name, project)| (*name, *project, work.iter().filter(|w| w.project == *name).collect::<Vec<_>>()))
        .filter(|(_, _, w)| !w.is_empty())
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..config.settings.parallel.clamp(1, by_project.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, project, refs)) = by_project.get(i) else { break };
                    for w in refs {
                        if crate::signals::received().is_some() {
                            return;
                        }
                        let job = Job { out, config, state_path, name, project, refname: w.refname.clone() };
                        match pipeline(&job, st, w, reporter) {
                            Ok(result) => {
                                let stop_project = result.result == Verdict::Unavailable;
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
    Ran { results, interrupted: interrupted.into_inner().unwrap_or_else(|e| e.into_inner()) }
}

/// Runs the stages for one ref, handing its history from stage to stage, and settles the
/// ref's summary once at the end. `Err` only for an interruption (the whole run stops); every
/// other outcome is a result.
fn pipeline(job: &Job<'_>, st: &Mutex<State>, work: &Work, reporter: &Reporter<'_>) -> anyhow::Result<RefResult> {
    let started = Instant::now();
    let mut result = RefResult {
        project: job.name.to_string(),
        refname: job.refname.clone(),
        commit: work.head.clone(),
        stage: Stage::Build,
        result: Verdict::Passed,
        seconds: 0.0,
        deployed: false,
        timeline: None,
        preview_url: None,
        fleets: Vec::new(),
        message: None,
        state_error: false,
        run: None,
    };
    let mut files = None;
    let mut first_new_run = u64::MAX;
    let forge = reporter.target(job.name, job.project, &job.refname, &work.head);
    let outcome = (|| -> anyhow::Result<()> {
        let files = files.insert(job.files()?);
        first_new_run = files.history.next_run;
        let default_branch = {
            let st = st.lock().unwrap_or_else(|e| e.into_inner());
            super::default_branch(job.config, job.name, job.project, &st)
        };
        let stage = StageStatus::start(reporter, forge.as_ref(), "pipe/build");
        let built = super::build::build(job, files, &default_branch, Some(&work.head));
        // A project of several images whose commit touched none of their paths says so.
        let unchanged = built.as_ref().ok().and_then(|n| files.run(*n)).and_then(super::images::unchanged_since);
        let number = match &unchanged {
            Some(since) => {
                stage.end_with(ForgeState::Success, &format!("unchanged since {since}"));
                built?
            }
            None => stage.end(built, None)?,
        };
        // From here on the statuses link to this run's page.
        let forge = forge.as_ref().map(|f| f.with_run(Some(number)));
        result.stage = Stage::Test;
        let stage = StageStatus::start(reporter, forge.as_ref(), "pipe/test");
        let tested = super::test::test(job, files, Some(number));
        if tested.is_ok() && files.last_recorded() == Some(Outcome::Skipped) {
            let why = unchanged.map_or_else(|| "skipped: no test command".into(), |s| format!("unchanged since {s}"));
            stage.end_with(ForgeState::Success, &why);
        } else {
            stage.end(tested, job.project.test.as_deref())?;
        }
        if !push::registries_for(job.config, job.project, &job.refname).is_empty() {
            result.stage = Stage::Push;
            let stage = StageStatus::start(reporter, forge.as_ref(), "pipe/push");
            stage.end(push::push(job, files, false, false), None)?;
        }
        let targets = deploy::targets(job, None);
        if !targets.is_empty() {
            result.stage = Stage::Deploy;
            let names = targets.iter().map(|t| t.display_name().to_string()).collect();
            let statuses = DeployStatuses::start(reporter, forge.as_ref(), names);
            let deployed = deploy::deploy(job, files, None, None, false);
            statuses.end(job, &work.head, &deployed);
            result.fleets = crate::report::fleets(job.state_path, job.name).remove(&job.refname).unwrap_or_default();
            result.timeline = deployed?;
            result.deployed = true;
        }
        // A closed pull request's commit is still built and tested, but gets no preview.
        let open = {
            let st = st.lock().unwrap_or_else(|e| e.into_inner());
            st.project.get(job.name).and_then(|p| p.refs.get(&job.refname)).is_some_and(|r| !r.closed)
        };
        if open && refs::pull_number(&job.refname).is_some() && !previews::targets(job.project).is_empty() {
            result.stage = Stage::Deploy;
            result.preview_url = preview(job, files, reporter, forge.as_ref(), work.author.as_deref())?;
            result.deployed = true;
        }
        Ok(())
    })();
    result.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    result.run = files
        .as_ref()
        .and_then(|f| f.history.runs.last())
        .filter(|r| r.number >= first_new_run && r.commit == work.head)
        .map(|r| r.number);
    let recorded = files.as_ref().and_then(super::RefFiles::last_recorded);
    if let Err(err) = &outcome {
        result.message = Some(format!("{err:#}"));
        result.state_error = err.is::<StateError>();
        result.result = if err.is::<ToolUnavailable>() || err.is::<RemoteUnavailable>() {
            Verdict::Unavailable
        } else if err.is::<StageFailed>() {
            Verdict::of_failure(recorded)
        } else {
            Verdict::Failed
        };
    }
    // An interruption settles what was recorded and stops the run; an unreachable engine or
    // registry leaves the ref pending, so the next tick retries it.
    let done = match &outcome {
        Err(err) if err.is::<Interrupted>() => None,
        _ if result.result == Verdict::Unavailable || result.state_error => None,
        _ => Some(work.head.as_str()),
    };
    let settled = job.settle(st, files.as_mut().and_then(super::RefFiles::take_unsettled), done);
    let outcome = super::conclude(outcome, settled);
    if let Err(err) = outcome {
        if err.is::<Interrupted>() {
            return Err(err);
        }
        // A state that cannot be saved is this ref's failure (exit 5), not the run's end.
        if err.is::<StateError>() && !result.state_error {
            result.state_error = true;
            result.result = Verdict::Failed;
            result.message = Some(format!("{err:#}"));
        }
        job.out.error(format!(
            "{} {}: {}",
            job.name,
            refs::display(&job.refname),
            result.message.as_deref().unwrap_or("")
        ));
    }
    Ok(result)
}

/// Deploys a pull request's previews, each target's commit status (`pipe/deploy/TARGET`)
/// linking to where its preview answers. Returns the first preview's address; a failed
/// preview is the ref's failure.
fn preview(
    job: &Job<'_>,
    files: &mut super::RefFiles,
    reporter: &Reporter<'_>,
    forge: Option<&Target<'_>>,
    author: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    for target in previews::targets(job.project) {
        reporter.report(
            forge,
            &preview_context(job.project, target.display_name()),
            ForgeState::Pending,
            "deploying the preview",
        );
    }
    let deployed = previews::deploy(job, files, author)?;
    let mut first = None;
    let mut failures = Vec::new();
    for d in deployed {
        let context = preview_context(job.project, &d.target);
        match d.outcome {
            Ok(url) => {
                let description = format!("preview deployed in {}", took(started));
                reporter.report_link(forge, &context, ForgeState::Success, &description, Some(&url));
                first.get_or_insert(url);
            }
            Err(err) => {
                let (state, description) = ended(&Err::<(), _>(anyhow::anyhow!("{err:#}")), started, None);
                reporter.report(forge, &context, state, &description);
                failures.push(format!("{err:#}"));
            }
        }
    }
    if !failures.is_empty() {
        return Err(StageFailed(failures.join("\n")).into());
    }
    Ok(first)
}

/// A preview's commit status: `pipe/deploy/preview` (`pipe/deploy/preview/<target>` when the
/// project has several preview targets), never the context of a branch's deploy of the same
/// commit, which a pull request opened from a branch's head shares.
fn preview_context(project: &Project, target: &str) -> String {
    if previews::targets(project).len() > 1 {
        format!("pipe/deploy/preview/{target}")
    } else {
        "pipe/deploy/preview".to_string()
    }
}

/// Failure (once per failing commit), recovery (first success after a failure), success, deploy.
fn notices_for(config: &Config, result: &RefResult, work: &Work, state_path: &Path) -> Vec<Notice> {
    // A history that cannot be read keeps the ref pending and fails every tick until it is
    // fixed by hand: the exit code says so each time, a notification would not stop.
    if result.state_error {
        return Vec::new();
    }
    let images: Vec<String> = crate::report::images(state_path, &result.project, &result.refname, &result.commit)
        .iter()
        .map(|i| format!("{} {}{}", i.name, crate::output::short(&i.from), if i.built { " (built)" } else { "" }))
        .collect();
    let base = |event| Notice {
        event,
        project: result.project.clone(),
        refname: result.refname.clone(),
        commit: result.commit.clone(),
        stage: result.stage,
        result: result.result,
        seconds: result.seconds,
        log_tail: String::new(),
        url: crate::page::public_url(config).map(|p| match result.run {
            Some(run) => crate::page::run_url(p, &result.project, &result.refname, run),
            None => crate::page::ref_url(p, &result.project, &result.refname),
        }),
        preview_url: result.preview_url.clone(),
        images: images.clone(),
    };
    let mut out = Vec::new();
    if result.result.is_failure() {
        let mut n = base(EventKind::Failure);
        n.log_tail = log_tail(state_path, result);
        out.push(n);
    } else if result.result == Verdict::Passed {
        if work.previous.is_some_and(Outcome::is_failure) {
            out.push(base(EventKind::Recovery));
        }
        out.push(base(EventKind::Success));
        if result.deployed {
            out.push(base(EventKind::Deploy));
        }
    }
    out
}

fn log_tail(state_path: &Path, result: &RefResult) -> String {
    let history =
        state::load_history(&state::history_path(state_path, &result.project, &result.refname), &result.refname);
    let text = history
        .ok()
        .and_then(|h| h.runs.last().cloned())
        .and_then(|run| std::fs::read_to_string(run.log).ok())
        .unwrap_or_default();
    crate::output::tail_lines(&text, 10)
}
