//! Each hook's queue and worker: a hook never runs twice at once; while it runs, one request
//! may wait, and a newer one supersedes the waiting one. The worker runs the hook's target
//! through `targets` and `exec`, all of it (health check included) within the hook's `timeout`.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::auth::Requested;
use super::runs::DeployReport;
use super::shared::Shared;
use crate::config::Hook;
use crate::docker::client::Docker;
use crate::error::Interrupted;
use crate::model::DeployResult;
use crate::output::Output;
use crate::secret::Secret;
use crate::targets::ingress::Nginx;
use crate::targets::rollout::{CommandFailed, Place, Rollout, Shipment, Target};
use crate::targets::{self, Kinds, beside};

/// A configured hook as the receiver runs it: its credentials, body limit and queue.
pub(crate) struct HookRuntime {
    pub name: String,
    pub hook: Hook,
    pub token: Option<Secret>,
    pub secret: Option<Secret>,
    pub max_body: u64,
    pub slot: Slot,
}

/// One hook's queue: at most one running and one waiting.
#[derive(Default)]
pub(crate) struct Queue {
    pub waiting: Option<String>,
    pub running: Option<String>,
    /// Whether the worker sleeps on `wake`: a request wakes it only then (a wake-up is a
    /// system call, paid before the request's answer).
    pub idle: bool,
}

/// The queue with the condition its worker sleeps on.
#[derive(Default)]
pub(crate) struct Slot {
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
}

/// Runs a hook's queued requests one at a time until the server stops.
pub(crate) fn worker(rx: &Shared, h: &HookRuntime) {
    // Guarded at start, then every `GUARD_EVERY` between runs.
    let mut guarded: Option<Instant> = None;
    let mut trouble = None;
    loop {
        let next = {
            let mut queue = h.slot.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if crate::signals::received().is_some() {
                    break Err(queue.waiting.take());
                }
                if let Some(id) = queue.waiting.take() {
                    queue.running = Some(id.clone());
                    break Ok(id);
                }
                if switched(&h.hook) && guarded.is_none_or(|at| at.elapsed() >= GUARD_EVERY) {
                    break Ok(String::new());
                }
                queue.idle = true;
                queue = h
                    .slot
                    .wake
                    .wait_timeout(queue, Duration::from_millis(200))
                    .map(|(q, _)| q)
                    .unwrap_or_else(|e| e.into_inner().0);
                queue.idle = false;
            }
        };
        let id = match next {
            Ok(id) if id.is_empty() => {
                guard(rx, h, &mut trouble);
                guarded = Some(Instant::now());
                continue;
            }
            Ok(id) => id,
            Err(waiting) => {
                if let Some(waiting) = waiting {
                    rx.journal.line(format!("run {waiting} hook={} cancelled", h.name));
                    crate::metrics::serve::run_ended(&h.name, "cancelled");
                    rx.runs.update(&waiting, |r| r.status = "cancelled".into());
                }
                return;
            }
        };
        let Some(run) = rx.runs.get_live(&id) else { continue };
        rx.runs.update(&id, |r| r.status = "running".into());
        let started = Instant::now();
        let log = rx.runs.new_log(&h.name, &id);
        let requested = super::auth::Requested { env: run.env, images: run.images };
        let (outcome, report) = execute(&rx.out, h, requested, &log, rx.runs.history_path(&h.name));
        let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let status = match &outcome {
            Ok(()) => "succeeded",
            Err((status, _, _)) => status,
        };
        rx.journal.line(format!("run {id} hook={} {status} in {seconds:.1}s", h.name));
        crate::metrics::serve::run_ended(&h.name, status);
        h.slot.queue.lock().unwrap_or_else(|e| e.into_inner()).running = None;
        rx.runs.update(&id, |r| {
            r.seconds = Some(seconds);
            r.deploy = report;
            match outcome {
                Ok(()) => r.status = "succeeded".into(),
                Err((status, code, error)) => {
                    r.status = status.into();
                    r.exit_code = code;
                    r.error = Some(error);
                }
            }
        });
    }
}

/// How often a hook behind a switched ingress has its upstream files checked between runs.
const GUARD_EVERY: Duration = Duration::from_secs(2);

/// A compose hook whose services the ingress switches: its upstream files are guarded.
fn switched(hook: &Hook) -> bool {
    hook.compose.is_some() && !hook.ingress.is_empty() && hook.host_ingress.upstreams.is_some()
}

/// Checks the hook's upstream files against the engine (`targets::guard`): the ingress routes
/// to the release this hook switched to, or fails closed. Changes go to the journal, and a
/// failure to check once until it changes.
fn guard(rx: &Shared, h: &HookRuntime, trouble: &mut Option<String>) {
    let log = rx.runs.history_path(&h.name).with_file_name("ingress.log");
    let Some(nginx) = Nginx::new(&h.hook.host_ingress, &log) else { return };
    let docker = Docker::new(None);
    let services: Vec<&str> = h.hook.ingress.keys().map(String::as_str).collect();
    let quiet = Output::new(true, 0);
    match targets::guard(&quiet, &docker, &nginx, &services) {
        Ok(changed) => {
            *trouble = None;
            for line in changed {
                rx.journal.line(format!("hook={} {line}", h.name));
            }
        }
        Err(e) if e.is::<Interrupted>() => {}
        Err(e) => {
            let said = format!(
                "hook={} cannot check the ingress: {}",
                h.name,
                crate::output::tail_lines(&format!("{e:#}"), 1)
            );
            if trouble.as_ref() != Some(&said) {
                rx.journal.line(said.clone());
                *trouble = Some(said);
            }
        }
    }
}

/// A run's end: `Err((status, exit code, message))`, and what its deploy did.
type Ended = (Result<(), (&'static str, Option<i32>, String)>, DeployReport);

/// Runs the hook's target through the rollout `pipe run` uses (`targets::rollout`): behind a
/// switched ingress the zero-downtime path, else its commands; then the health check, the
/// automatic rollback from the hook's deploy history, and the history itself.
fn execute(out: &Output, h: &HookRuntime, requested: Requested, log: &Path, history: PathBuf) -> Ended {
    let Requested { env, images } = requested;
    let mut report = DeployReport::default();
    let failed = |e: anyhow::Error| ("failed", None, format!("{e:#}"));
    if let Some(dir) = log.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return (Err(failed(e.into())), report);
    }
    let docker = Docker::new(None);
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let image = var("PIPE_IMAGE").unwrap_or_default();
    let pulls = image.split('/').next().is_some_and(|host| host.contains(['.', ':']) || host == "localhost")
        && image.contains('/');
    let project = Hook::default_project(&h.name);
    // The hook's own variables, read afresh for every run (a rotated secret is picked up, a
    // failed command asked again by the next request); none of pipe's other variables. The
    // hook's credentials are masked too, in its log and in the health check's answer.
    let own = targets::resolve_env(out, &h.hook.env, &format!("serve.hooks.{}.env", h.name), false)
        .map(|(own, redactor)| (own, redactor.and(h.token.iter().chain(h.secret.iter()))));
    let own = match own {
        Ok(own) => own,
        Err(e) => return (Err(failed(e)), report),
    };
    let hook = &h.hook;
    let target = Target {
        name: &h.name,
        kinds: Kinds { compose: hook.compose.as_ref(), swarm: hook.swarm.as_ref(), command: hook.command.as_ref() },
        webhook: None,
        ingress: &hook.ingress,
        health: hook.health.as_ref(),
        release: hook.release.as_ref(),
        drain: hook.drain.map_or(beside::DEFAULT_DRAIN, |d| d.0),
        pull: pulls,
        timeout: hook.timeout.map_or(Duration::from_secs(600), |t| t.0),
    };
    let refname = var("PIPE_BRANCH").map(|b| format!("refs/heads/{b}")).unwrap_or_default();
    let owner = format!("hook {}", h.name);
    let place = Place {
        out,
        docker: &docker,
        ingress: &hook.host_ingress,
        owner: &owner,
        project: &project,
        compose_project: &project,
        refname: &refname,
        history,
        log: log.to_path_buf(),
        swarm_dir: log.parent().unwrap_or(Path::new(".")).join("swarm"),
        remote: None,
    };
    let tag = var("PIPE_TAG").unwrap_or_default();
    let rollback = match crate::state::load_deploys(&place.history) {
        Ok(history) => by_hand(&history, &image, &tag),
        Err(e) => return (Err(failed(e)), report),
    };
    let shipment = Shipment {
        commit: var("PIPE_COMMIT").unwrap_or_default(),
        image: image.clone(),
        tag: tag.clone(),
        rollback,
        // Recorded in the hook's deploy history: its automatic rollback puts all of them back.
        images,
        ..Shipment::default()
    };
    // The request's variables; for the automatic rollback, the release put back instead (every
    // image of it, when it had several).
    let exports = |s: &Shipment| -> Vec<(String, String)> {
        if (&s.image, &s.tag) == (&image, &tag) {
            return env.clone();
        }
        let release = |k: &str| {
            matches!(k, "PIPE_IMAGE" | "PIPE_TAG" | "PIPE_COMMIT")
                || k.starts_with("PIPE_IMAGE_")
                || k.starts_with("PIPE_TAG_")
        };
        let mut back: Vec<(String, String)> = env.iter().filter(|(k, _)| !release(k)).cloned().collect();
        back.push(("PIPE_IMAGE".into(), s.image.clone()));
        back.push(("PIPE_TAG".into(), s.tag.clone()));
        if !s.commit.is_empty() {
            back.push(("PIPE_COMMIT".into(), s.commit.clone()));
        }
        back.extend(s.image_env());
        back
    };
    let rollout = Rollout::new(&place, &target, &shipment, &exports, own);
    report.rollback = rollback;
    report.rollout = Some(if rollout.zero_downtime() { "zero-downtime" } else { "in-place" }.into());
    let result = rollout.run();
    report.health = rollout.answer();
    report.rolled_back_to = rollout.rolled_back_to();
    let result = match result {
        Ok(timeline) => {
            report.timeline = Some(timeline);
            Ok(())
        }
        Err(e) if e.is::<Interrupted>() || crate::signals::received().is_some() => {
            Err(("interrupted", None, "the server was stopped while the hook ran".into()))
        }
        Err(e) => {
            let code = e.downcast_ref::<CommandFailed>().and_then(|c| c.code);
            Err(("failed", code, format!("{e:#}")))
        }
    };
    (result, report)
}

/// A request for an image the hook ran successfully before, other than the one it runs now:
/// a rollback by hand (or a fleet rolling this host back).
fn by_hand(history: &crate::state::DeployHistory, image: &str, tag: &str) -> bool {
    let mut succeeded = history.deploys.iter().rev().filter(|d| d.result == DeployResult::Succeeded);
    let Some(current) = succeeded.next() else { return false };
    !image.is_empty()
        && (current.image != image || current.tag != tag)
        && succeeded.any(|d| d.image == image && d.tag == tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DeployHistory, DeployRecord};

    fn record(tag: &str, result: DeployResult) -> DeployRecord {
        DeployRecord {
            commit: String::new(),
            image: "example/app".into(),
            tag: tag.into(),
            refname: String::new(),
            at: jiff::Timestamp::UNIX_EPOCH,
            result,
            timeline: None,
            rollback: false,
            images: Default::default(),
            hosts: Vec::new(),
        }
    }

    #[test]
    fn an_image_the_hook_ran_before_other_than_the_current_one_is_a_rollback_by_hand() {
        let mut history = DeployHistory::default();
        assert!(!by_hand(&history, "example/app", "v1"), "nothing ran yet");
        history.deploys.push(record("v1", DeployResult::Succeeded));
        history.deploys.push(record("v2", DeployResult::Succeeded));
        history.deploys.push(record("v3", DeployResult::Failed));
        assert!(by_hand(&history, "example/app", "v1"));
        assert!(!by_hand(&history, "example/app", "v2"), "the release running now is no rollback");
        assert!(!by_hand(&history, "example/app", "v3"), "a release that never succeeded is none");
        assert!(!by_hand(&history, "example/app", "v4"), "a new release is none");
        assert!(!by_hand(&history, "example/other", "v1"), "another repository is none");
    }
}
