//! `POST /forge/PROJECT`: the forges' push and pull-request webhooks as a hint to poll now;
//! `POST /forge/FORGE`: an organization's webhook (organization discovery), a hint to list the
//! organization and poll every project now.
//!
//! The request is authenticated with the project's `webhook_secret` (GitLab's token from the
//! head, before any body byte is read; GitHub's and Gitea's HMAC over at most `MAX_BODY`
//! bytes), its delivery id is remembered so a captured request cannot be replayed, and a push
//! or pull-request event starts `pipe run PROJECT` as a child with the receiver's own
//! `--config` and `--state`. The body is never read for what to build: the run polls as usual.
//! One run per project at a time; events that arrive meanwhile set one pending run (coalesced),
//! and a run that finds the state lock held (the timer's tick) is retried until it gets it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::shared::Shared;
use crate::config::{Config, ForgeKind, SecretRef};
use crate::error::{Usage, code};
use crate::exec::{self, Cmd};
use crate::forge::hook_secret;
use crate::forge::webhook::{self, Action};
use crate::secret::{self, Secret};
use crate::server::{Admit, Request, Response};

/// The largest webhook body read (GitHub caps payloads at 25 MB, but a push of a few commits
/// is a few KB; larger ones are refused with 413 and polling catches up).
pub(crate) const MAX_BODY: u64 = 1024 * 1024;
/// How long delivery ids are remembered.
const REMEMBER: i64 = 7 * 24 * 3600;
/// A triggered run's limit.
const RUN_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How long to wait before asking again for a lock another run holds.
const LOCKED_RETRY: Duration = Duration::from_secs(2);

/// The projects whose forge webhooks this receiver accepts, and how it starts their runs.
pub(crate) struct ForgeHooks {
    projects: BTreeMap<String, Arc<ForgeProject>>,
    exe: PathBuf,
    config: PathBuf,
    state: PathBuf,
    dir: PathBuf,
    dummy: Secret,
    /// What a signed delivery may send, for every name alike (known or not).
    max_body: u64,
}

struct ForgeProject {
    name: String,
    /// An organization's webhook (`/forge/FORGE`): its runs tick over every project, so a
    /// repository that just appeared is discovered and built.
    all: bool,
    kind: ForgeKind,
    secret: Secret,
    trigger: Mutex<Trigger>,
    wake: Condvar,
}

impl ForgeProject {
    fn new(name: &str, all: bool, kind: ForgeKind, secret: Secret) -> ForgeProject {
        ForgeProject {
            name: name.to_string(),
            all,
            kind,
            secret,
            trigger: Mutex::new(Trigger::default()),
            wake: Condvar::new(),
        }
    }
}

/// At most one run going and one waiting.
#[derive(Default)]
struct Trigger {
    pending: bool,
    running: bool,
}

impl ForgeHooks {
    /// The projects with a forge and a webhook secret; their secrets are read now.
    pub(crate) fn new(config: &Config, state: &Path, dir: PathBuf, body_limit: u64) -> anyhow::Result<ForgeHooks> {
        let mut projects = BTreeMap::new();
        for (name, project) in &config.projects {
            let Some(forge) = project.forge.as_ref().and_then(|f| config.forges.get(f)) else { continue };
            // A discovered project's secret is derived for it alone (`forge::hook_secret`).
            let Some(secret) = hook_secret::resolve(config, name, project).map_err(|e| Usage(format!("{e:#}")))? else {
                continue;
            };
            projects.insert(name.clone(), Arc::new(ForgeProject::new(name, false, forge.kind, secret)));
        }
        for (name, forge) in &config.forges {
            let Some(discover) = &forge.discover else { continue };
            let Some(reference) = SecretRef::from_pair(&discover.webhook_secret_env, &discover.webhook_secret_file)
            else {
                continue;
            };
            if projects.contains_key(name) {
                return Err(Usage(format!(
                    "`/forge/{name}` would be both project `{name}`'s webhook and forge `{name}`'s organization webhook\nhint: rename the forge"
                ))
                .into());
            }
            let secret = secret::resolve(&reference, &format!("forge.{name}.discover.webhook_secret"))
                .map_err(|e| Usage(format!("{e:#}")))?;
            projects.insert(name.clone(), Arc::new(ForgeProject::new(name, true, forge.kind, secret)));
        }
        let exe = std::env::current_exe().context("cannot find pipe's own executable to start runs")?;
        Ok(ForgeHooks {
            projects,
            exe,
            config: config.path.clone(),
            state: state.to_path_buf(),
            dir,
            dummy: secret::random(),
            max_body: MAX_BODY.min(body_limit),
        })
    }

    /// The largest body read before a delivery's signature is checked; 0 without forge webhooks.
    pub(crate) fn max_body(&self) -> u64 {
        if self.projects.is_empty() { 0 } else { self.max_body }
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.projects.keys()
    }

    /// Starts one worker per project.
    pub(crate) fn workers(self: &Arc<Self>, shared: &Arc<Shared>) -> Vec<std::thread::JoinHandle<()>> {
        self.projects
            .values()
            .map(|p| {
                let (forge, shared, p) = (self.clone(), shared.clone(), p.clone());
                std::thread::spawn(move || worker(&forge, &shared, &p))
            })
            .collect()
    }

    pub(crate) fn wake_all(&self) {
        for p in self.projects.values() {
            p.wake.notify_all();
        }
    }
}

/// Decides from the head, the same way for every name, known or not: a GitLab token is
/// checked now (against a secret nobody knows when the name is not a GitLab project), a
/// signature is read up to the same size whatever the name, anything else is `401`. Nothing
/// about the project (its forge, whether it exists, which event headers it expects) is looked
/// at before the request is authenticated.
pub(crate) fn admit(forge: &ForgeHooks, rx: &Shared, head: &Request, name: &str) -> Admit {
    let started = Instant::now();
    let answer = |status: u16, response: Response| {
        log(rx, name, status, head, "-", started);
        Admit::Answer(response)
    };
    if head.method != "POST" {
        let mut r = Response::empty(405);
        r.headers.push(("Allow".into(), "POST".into()));
        return answer(405, r);
    }
    let gitlab = forge.projects.get(name).filter(|p| p.kind == ForgeKind::Gitlab);
    if let Some(token) = head.header("X-Gitlab-Token") {
        let secret = gitlab.map_or(&forge.dummy, |p| &p.secret);
        if !webhook::token_matches(secret, token) || gitlab.is_none() {
            return answer(403, Response::empty(403));
        }
        return Admit::Trusted(forge.max_body);
    }
    if signed_by(head).is_some() {
        return Admit::Body(forge.max_body);
    }
    answer(401, Response::empty(401))
}

/// The first signature header a request carries, and the form it is in.
fn signed_by(req: &Request) -> Option<(ForgeKind, &str)> {
    [ForgeKind::Github, ForgeKind::Gitea]
        .into_iter()
        .find_map(|kind| webhook::signature_headers(kind).iter().find_map(|h| req.header(h)).map(|v| (kind, v)))
}

/// Checks the signature and the delivery, then queues a run for push and pull-request events.
pub(crate) fn handle(forge: &ForgeHooks, rx: &Shared, req: &Request, name: &str, peer: IpAddr) -> Response {
    let started = Instant::now();
    let (status, response, note) = decide(forge, rx, req, name, peer);
    log(rx, name, status, req, &note, started);
    response
}

/// Whether the request is the project's: its GitLab token (checked from the head already), or
/// one HMAC over the body whatever the name, against a secret nobody knows when the name is
/// unknown or signs the other way, for the same work as a known project.
fn authentic(forge: &ForgeHooks, req: &Request, p: Option<&ForgeProject>) -> bool {
    if let Some(token) = req.header("X-Gitlab-Token") {
        return p.is_some_and(|p| p.kind == ForgeKind::Gitlab && webhook::token_matches(&p.secret, token));
    }
    let Some((form, given)) = signed_by(req) else { return false };
    let own = p.filter(|p| p.kind == form);
    let valid = webhook::signature_matches(form, own.map_or(&forge.dummy, |p| &p.secret), &req.body, given);
    valid && own.is_some()
}

fn decide(forge: &ForgeHooks, rx: &Shared, req: &Request, name: &str, peer: IpAddr) -> (u16, Response, String) {
    let refuse = |status: u16| (status, Response::empty(status), "-".to_string());
    let p = forge.projects.get(name).map(|p| &**p);
    if !authentic(forge, req, p) {
        return refuse(403);
    }
    let Some(p) = p else { return refuse(403) };
    let event_header = webhook::event_header(p.kind);
    let Some(event) = req.header(event_header).map(str::to_string) else {
        return (400, Response::json(400, json!({"error": format!("no `{event_header}` header")})), "-".into());
    };
    // The event name is the client's text: logged only when it looks like one.
    let shown = if event.len() <= 64 && event.bytes().all(|b| b.is_ascii_alphanumeric() || b" _.-".contains(&b)) {
        event.replace(' ', "_")
    } else {
        "?".into()
    };
    let Some(delivery) = req.header(webhook::delivery_header(p.kind)).filter(|d| super::replay::valid_id(d)) else {
        let why = format!("no valid `{}` header", webhook::delivery_header(p.kind));
        return (400, Response::json(400, json!({"error": why})), format!("event={shown}"));
    };
    let now = crate::clock::now().as_second();
    let note = |what: &str| format!("event={shown} delivery={delivery} {what}");
    let action = webhook::action(p.kind, &event, &req.body);
    // Only a delivery that starts a run is recorded: a ping or an ignored event does nothing,
    // so its replay does nothing either, and a captured GitLab token cannot fill the project's
    // part of the record with deliveries that cost nothing. The delivery and event headers are
    // not signed: a body that ran counts once, whatever id or event comes with it later, so a
    // captured delivery replayed with a new id or event is refused.
    let key = webhook::replay_key(name, &req.body);
    let fresh = match action {
        Action::Run => rx.deliveries.record(&format!("forge:{name}"), &key, now + REMEMBER, now),
        Action::Ping | Action::Ignore => Ok(!rx.deliveries.seen(&key, now)),
    };
    match fresh {
        // Only a delivery that starts a run is recorded, so only one trusts its sender: a
        // captured ping or ignored event can be sent again, and a seen one buys nothing.
        Ok(true) if action == Action::Run => rx.senders.authenticated(peer),
        Ok(true) => {}
        Ok(false) => {
            return (409, Response::json(409, json!({"error": "this delivery was already received"})), note("replay"));
        }
        Err(e) => {
            rx.journal.line(format!("cannot record a delivery id: {e:#}"));
            return (503, Response::empty(503), note("-"));
        }
    }
    match action {
        Action::Ping => (200, Response::json(200, json!({"project": name, "ping": "ok"})), note("ping")),
        Action::Ignore => (204, Response::empty(204), note("ignored")),
        Action::Run => {
            let mut trigger = p.trigger.lock().unwrap_or_else(|e| e.into_inner());
            let queued = if trigger.pending { "coalesced" } else { "queued" };
            trigger.pending = true;
            p.wake.notify_all();
            (202, Response::json(202, json!({"project": name, "run": queued})), note(&format!("run={queued}")))
        }
    }
}

/// One line per event: never a header value but the event name and delivery id.
fn log(rx: &Shared, name: &str, status: u16, req: &Request, note: &str, started: Instant) {
    crate::metrics::serve::request(&req.method, "/forge/", status);
    let shown = if crate::config::validate_name(name).is_ok() { name } else { "***" };
    rx.journal.line(format!(
        "{} /forge/{shown} {status} {note} {:.1}ms",
        req.method,
        started.elapsed().as_secs_f64() * 1000.0
    ));
}

/// Runs the project's pending runs one at a time until the server stops.
fn worker(forge: &ForgeHooks, rx: &Shared, p: &ForgeProject) {
    loop {
        {
            let mut trigger = p.trigger.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if crate::signals::received().is_some() {
                    return;
                }
                if trigger.pending {
                    trigger.pending = false;
                    trigger.running = true;
                    break;
                }
                trigger = p
                    .wake
                    .wait_timeout(trigger, Duration::from_millis(200))
                    .map(|(t, _)| t)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
        let started = Instant::now();
        rx.journal.line(format!("forge project={} run started", p.name));
        let log = forge.dir.join(format!("{}.log", p.name));
        let ran = std::fs::create_dir_all(&forge.dir)
            .with_context(|| format!("failed to create `{}`", forge.dir.display()))
            .and_then(|()| {
                let _ = std::fs::remove_file(&log);
                let cmd =
                    Cmd::new(&forge.exe).arg("--config").arg(&forge.config).arg("--state").arg(&forge.state).arg("run");
                let cmd = if p.all { cmd } else { cmd.arg(&p.name) };
                exec::logged(&rx.out, &cmd, &log, crate::docker::client::LOG_CAP, RUN_TIMEOUT, &mut |_| {})
            });
        p.trigger.lock().unwrap_or_else(|e| e.into_inner()).running = false;
        let took = started.elapsed().as_secs_f64();
        match ran {
            Ok(f) if f.code == Some(i32::from(code::LOCKED)) => {
                rx.journal.line(format!(
                    "forge project={} another run holds the lock; retrying in {}s",
                    p.name,
                    LOCKED_RETRY.as_secs()
                ));
                p.trigger.lock().unwrap_or_else(|e| e.into_inner()).pending = true;
                std::thread::sleep(LOCKED_RETRY);
            }
            Ok(f) => rx.journal.line(format!(
                "forge project={} run ended: {} in {took:.1}s (log: {})",
                p.name,
                f.describe(),
                log.display()
            )),
            Err(e) => rx.journal.line(format!("forge project={} run could not start: {e:#}", p.name)),
        }
    }
}
