//! Each hook's queue and worker: a hook never runs twice at once; while it runs, one request
//! may wait, and a newer one supersedes the waiting one. The worker runs the hook's target
//! through `targets` and `exec`, all of it (health check included) within the hook's `timeout`.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::shared::Shared;
use crate::config::Hook;
use crate::docker::client::{self as client, Docker};
use crate::output::Output;
use crate::secret::Secret;
use crate::targets::{self, Kinds};
use crate::trust::redact;

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
}

/// The queue with the condition its worker sleeps on.
#[derive(Default)]
pub(crate) struct Slot {
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
}

/// Runs a hook's queued requests one at a time until the server stops.
pub(crate) fn worker(rx: &Shared, h: &HookRuntime) {
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
                queue = h
                    .slot
                    .wake
                    .wait_timeout(queue, Duration::from_millis(200))
                    .map(|(q, _)| q)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        };
        let id = match next {
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
        let outcome = execute(&rx.out, h, run.env, &rx.runs.new_log(&h.name, &id));
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

/// The compose project a hook deploys to when its `compose` names none: the hook's name with
/// `-serve`, so a `pipe run` deploy target of the same name on this host keeps its own.
pub(crate) fn default_project(hook: &str) -> String {
    format!("{hook}-serve")
}

/// Runs the hook's commands and health check; `Err((status, exit code, message))`.
fn execute(
    out: &Output,
    h: &HookRuntime,
    env: Vec<(String, String)>,
    log: &std::path::Path,
) -> Result<(), (&'static str, Option<i32>, String)> {
    let failed = |e: anyhow::Error| ("failed", None, format!("{e:#}"));
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed(e.into()))?;
    }
    let docker = Docker::new(None);
    let kinds =
        Kinds { compose: h.hook.compose.as_ref(), swarm: h.hook.swarm.as_ref(), command: h.hook.command.as_ref() };
    let pulls = env.iter().any(|(k, v)| {
        k == "PIPE_IMAGE" && v.split('/').next().is_some_and(|host| host.contains(['.', ':']) || host == "localhost")
    });
    let project = default_project(&h.name);
    // The hook's own variables, read afresh for every run (a rotated secret is picked up, a
    // failed command asked again by the next request); none of pipe's other variables.
    let (own, redactor) =
        targets::resolve_env(out, &h.hook.env, &format!("serve.hooks.{}.env", h.name), false).map_err(failed)?;
    let env = env.into_iter().chain(own).collect();
    let commands = targets::target_commands(out, &docker, kinds, &project, pulls, env).map_err(failed)?;
    let timeout = h.hook.timeout.map_or(Duration::from_secs(600), |t| t.0);
    let deadline = Instant::now() + timeout;
    let since = crate::clock::precise();
    let timed_out = || ("failed", None, format!("timed out after {}s", timeout.as_secs()));
    for cmd in commands {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let finished = redact::logged(out, &cmd, log, client::LOG_CAP, left, &redactor, &mut |_| {}).map_err(failed)?;
        if finished.interrupted {
            return Err(("interrupted", finished.code, "the server was stopped while the hook ran".into()));
        }
        if !finished.success() {
            return Err(("failed", finished.code, format!("`{cmd}`: {}", finished.describe())));
        }
    }
    if let Some(swarm) = &h.hook.swarm {
        targets::wait_for_stack(out, &docker, &swarm.stack, since, deadline).map_err(failed)?;
    }
    if let Some(health) = &h.hook.health {
        // The hook's timeout covers the health check too.
        if deadline <= Instant::now() {
            return Err(timed_out());
        }
        targets::check_health(out, &docker, health, deadline).map_err(|e| {
            if crate::signals::received().is_some() {
                ("interrupted", None, "the server was stopped while the hook ran".into())
            } else {
                failed(e)
            }
        })?;
    }
    Ok(())
}
