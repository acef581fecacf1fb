//! Commit statuses of the stages: `pending` when a stage starts, its result when it ends, the
//! same contexts (`pipe/build`, `pipe/test`, `pipe/push`, `pipe/deploy/<target>`) whether
//! `pipe run` ran the stage or a person did (`pipe build|test|push|deploy`).

use std::time::Instant;

use super::{Job, RefFiles};
use crate::error::{Interrupted, RemoteUnavailable, ToolUnavailable};
use crate::forge::{Reporter, State as ForgeState, Target};
use crate::model::DeployResult;
use crate::state;

/// A stage's commit status: `pending` when it starts, its result when it ends.
pub(crate) struct StageStatus<'r, 't> {
    reporter: &'r Reporter<'r>,
    target: Option<&'t Target<'t>>,
    context: &'static str,
    started: Instant,
}

impl<'r, 't> StageStatus<'r, 't> {
    pub(crate) fn start(reporter: &'r Reporter<'r>, target: Option<&'t Target<'t>>, context: &'static str) -> Self {
        let what = match context {
            "pipe/build" => "building",
            "pipe/test" => "testing",
            _ => "pushing",
        };
        reporter.report(target, context, ForgeState::Pending, what);
        StageStatus { reporter, target, context, started: Instant::now() }
    }

    /// Reports how the stage ended and hands its result on; `command` is the test command.
    pub(crate) fn end<T>(self, outcome: anyhow::Result<T>, command: Option<&str>) -> anyhow::Result<T> {
        let (state, description) = ended(&outcome, self.started, command);
        self.reporter.report(self.target, self.context, state, &description);
        outcome
    }

    pub(crate) fn end_with(self, state: ForgeState, description: &str) {
        self.reporter.report(self.target, self.context, state, description);
    }
}

/// A stage's state and description: the duration, and for a failure the first line of the
/// error and the failing command.
pub(crate) fn ended<T>(outcome: &anyhow::Result<T>, started: Instant, command: Option<&str>) -> (ForgeState, String) {
    let took = took(started);
    match outcome {
        Ok(_) => (ForgeState::Success, format!("passed in {took}")),
        Err(err) if err.is::<Interrupted>() => (ForgeState::Error, format!("interrupted after {took}")),
        Err(err) if err.is::<ToolUnavailable>() || err.is::<RemoteUnavailable>() => {
            (ForgeState::Error, format!("unavailable after {took}: {}", first_line(err)))
        }
        Err(err) => {
            let shown = command.map(|c| format!(" `{c}`")).unwrap_or_default();
            (ForgeState::Failure, format!("failed after {took}:{shown} {}", first_line(err)))
        }
    }
}

/// A stage's duration as a status shows it: tenths under ten seconds, whole seconds beyond.
pub(crate) fn took(started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    if secs < 10.0 { format!("{secs:.1}s") } else { format!("{}s", secs.round()) }
}

fn first_line(err: &anyhow::Error) -> String {
    format!("{err:#}").lines().next().unwrap_or("").to_string()
}

/// A target's deploy status from its deploy history: `success` only when this commit's release
/// took traffic and passed its health check, `failure` when it failed or was rolled back.
pub(crate) fn deploy_status<T>(
    job: &Job<'_>,
    target: &str,
    commit: &str,
    deployed: &anyhow::Result<T>,
    started: Instant,
) -> (ForgeState, String) {
    let (fallback, description) = ended(deployed, started, None);
    if fallback == ForgeState::Error {
        return (fallback, description);
    }
    let took = took(started);
    let history = state::load_deploys(&state::deploys_path(job.state_path, job.name, target));
    let last = history.ok().and_then(|h| h.deploys.into_iter().rev().find(|d| d.commit == commit));
    // A fleet's status says where each host ended, the failing host's answer first in mind.
    let hosts = last.as_ref().and_then(|d| d.hosts_summary()).map(|s| format!(" ({s})")).unwrap_or_default();
    let (state, description) = match last.map(|d| d.result) {
        Some(DeployResult::Succeeded) => (ForgeState::Success, format!("deployed and healthy in {took}")),
        Some(DeployResult::RolledBack) => {
            (ForgeState::Failure, format!("rolled back after {took}: the release failed"))
        }
        Some(DeployResult::Failed) => (ForgeState::Failure, format!("failed after {took}")),
        None if deployed.is_ok() => (ForgeState::Success, format!("deployed in {took}")),
        None => (ForgeState::Failure, description),
    };
    (state, format!("{description}{hosts}"))
}

/// A deploy's statuses, one per target: `pending` for each when the deploy starts, then each
/// target's own result from its deploy history.
pub(crate) struct DeployStatuses<'r, 't> {
    reporter: &'r Reporter<'r>,
    target: Option<&'t Target<'t>>,
    targets: Vec<String>,
    started: Instant,
}

impl<'r, 't> DeployStatuses<'r, 't> {
    pub(crate) fn start(reporter: &'r Reporter<'r>, target: Option<&'t Target<'t>>, targets: Vec<String>) -> Self {
        for name in &targets {
            reporter.report(target, &format!("pipe/deploy/{name}"), ForgeState::Pending, "deploying");
        }
        DeployStatuses { reporter, target, targets, started: Instant::now() }
    }

    pub(crate) fn end<T>(self, job: &Job<'_>, commit: &str, deployed: &anyhow::Result<T>) {
        for name in &self.targets {
            let (state, description) = deploy_status(job, name, commit, deployed, self.started);
            self.reporter.report(self.target, &format!("pipe/deploy/{name}"), state, &description);
        }
    }
}

/// Runs a stage a person asked for (`pipe build|test|push|deploy PROJECT REF`) and gives the
/// forge the same statuses `pipe run` would. `commit` is the commit the stage works on when it
/// is known before it starts (test, push, deploy); a build learns its commit from the fetch, so
/// its forge sees only the end. Statuses waiting from earlier runs are sent first.
pub(crate) fn by_hand<T>(
    job: &Job<'_>,
    files: &mut RefFiles,
    context: &'static str,
    commit: Option<&str>,
    stage: impl FnOnce(&mut RefFiles) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if job.project.forge.is_none() {
        return stage(files);
    }
    let reporter = Reporter::open(job.out, job.config, job.state_path);
    reporter.flush();
    let Some(commit) = commit.map(str::to_string) else {
        let before = files.history.next_run;
        let started = Instant::now();
        let outcome = stage(files);
        let recorded =
            files.history.runs.iter().rev().find(|r| r.number >= before).map(|r| (r.commit.clone(), r.number));
        if let Some((commit, run)) = recorded {
            let target = reporter.target(job.name, job.project, &job.refname, &commit).map(|t| t.with_run(Some(run)));
            let (state, description) = ended(&outcome, started, None);
            reporter.report(target.as_ref(), context, state, &description);
        }
        return outcome;
    };
    let run = run_of(files, &commit);
    let target = reporter.target(job.name, job.project, &job.refname, &commit).map(|t| t.with_run(run));
    let status = StageStatus::start(&reporter, target.as_ref(), context);
    let command = if context == "pipe/test" { job.project.test.as_deref() } else { None };
    status.end(stage(files), command)
}

/// A deploy a person asked for (`pipe deploy`, a rollback with `--commit` too): each target
/// deployed (`only`, or every target of the ref) gets its status for `commit`.
pub(crate) fn deploy_by_hand<T>(
    job: &Job<'_>,
    files: &mut RefFiles,
    only: Option<&str>,
    commit: Option<&str>,
    deploy: impl FnOnce(&mut RefFiles) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let Some(commit) = commit.filter(|_| job.project.forge.is_some()) else { return deploy(files) };
    let reporter = Reporter::open(job.out, job.config, job.state_path);
    reporter.flush();
    let run = run_of(files, commit);
    let target = reporter.target(job.name, job.project, &job.refname, commit).map(|t| t.with_run(run));
    let names = super::deploy::targets(job, only).iter().map(|t| t.display_name().to_string()).collect();
    let statuses = DeployStatuses::start(&reporter, target.as_ref(), names);
    let deployed = deploy(files);
    statuses.end(job, commit, &deployed);
    deployed
}

/// The newest run of `commit` in the ref's history, whose page the statuses link to.
fn run_of(files: &RefFiles, commit: &str) -> Option<u64> {
    files.history.runs.iter().rev().find(|r| r.commit == commit).map(|r| r.number)
}
