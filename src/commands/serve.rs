//! `pipe serve`: the authenticated deploy receiver for the receiving host.
//!
//! `POST /hooks/NAME` runs the hook's target once its credentials check out: a bearer token
//! compared in constant time, or `X-Hub-Signature-256` (HMAC-SHA256 of the raw body) verified
//! before the body is parsed. Signed bodies must carry a `delivery` id and a `sent_at` time
//! inside the replay window. Missing credentials are `401`, wrong ones `403`, and an unknown
//! hook answers exactly like a known one, so names cannot be probed.
//!
//! Queueing: a hook never runs twice at once. While it runs, one request may wait; a newer
//! request supersedes the waiting one (whose status becomes `superseded`). Every `202` ends as
//! `succeeded`, `failed`, `superseded`, `cancelled` (the server stopped before it ran) or
//! `interrupted` (SIGTERM arrived while it ran: the child gets SIGTERM, then SIGKILL after 5 s).
//!
//! `POST /hooks/NAME?wait=SECONDS` holds the answer until the run ends (then `200` with its
//! status) or the time is up (then the usual `202`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use super::Context;
use crate::cli::ServeArgs;
use crate::config::{Hook, SecretRef};
use crate::engine::docker::{self as engine, Docker};
use crate::targets::{self, Kinds};

use crate::error::{Usage, code};
use crate::exec;
use crate::secret::{self, Secret};
use crate::server::{self, Limits, Request, Response};

/// Runs remembered for the status endpoint.
const KEEP_RUNS: usize = 500;

/// What `GET /hooks/NAME/runs/ID` reports.
#[derive(Debug, Clone, Serialize)]
struct RunInfo {
    id: String,
    hook: String,
    /// `queued`, `running`, `succeeded`, `failed`, `superseded`, `cancelled`, `interrupted`.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    superseded_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip)]
    env: Vec<(String, String)>,
    #[serde(skip)]
    log: PathBuf,
}

/// One hook's queue: at most one running and one waiting.
#[derive(Default)]
struct Queue {
    waiting: Option<String>,
    running: Option<String>,
}

struct HookRuntime {
    name: String,
    hook: Hook,
    token: Option<Secret>,
    secret: Option<Secret>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

struct Hub {
    hooks: BTreeMap<String, Arc<HookRuntime>>,
    runs: Mutex<(HashMap<String, RunInfo>, VecDeque<String>)>,
    /// Signalled whenever a run reaches its end, for `?wait=`.
    ended: Condvar,
    deliveries: Mutex<HashMap<String, i64>>,
    window: i64,
    logs: PathBuf,
    cx: Context,
    journal: Journal,
}

/// What the journal thread is asked to do.
enum JournalMsg {
    Line(String),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The receiver's log lines, written to stderr by one thread. A request never waits for
/// stderr: when it does not keep up (a stalled journal, an unread pipe), lines are dropped and
/// counted, and the count is logged as soon as it does.
struct Journal {
    tx: std::sync::mpsc::SyncSender<JournalMsg>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Journal {
    fn start(out: crate::output::Output) -> Journal {
        let (tx, rx) = std::sync::mpsc::sync_channel::<JournalMsg>(1024);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = dropped.clone();
        std::thread::spawn(move || {
            for msg in rx {
                let lost = counted.swap(0, std::sync::atomic::Ordering::Relaxed);
                if lost > 0 {
                    out.warn(format!("{lost} log line(s) dropped: stderr did not keep up"));
                }
                match msg {
                    JournalMsg::Line(line) => out.info(line),
                    JournalMsg::Flush(done) => drop(done.send(())),
                }
            }
        });
        Journal { tx, dropped }
    }

    fn line(&self, text: String) {
        if self.tx.try_send(JournalMsg::Line(text)).is_err() {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits (briefly) until every line queued so far is written: called once, at shutdown.
    fn flush(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let mut msg = JournalMsg::Flush(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

pub fn run(cx: &Context, args: &ServeArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    if config.serve.hooks.is_empty() {
        return Err(Usage(format!(
            "`{}` defines no `[serve.hooks.NAME]`; `pipe serve` has nothing to run",
            config.path.display()
        ))
        .into());
    }
    let listen = args.listen.clone().unwrap_or_else(|| config.serve.listen.clone());
    let logs = crate::state::locate(cx.global.state.as_deref())?
        .parent()
        .map(|p| p.join("serve"))
        .unwrap_or_else(|| PathBuf::from("serve"));
    let mut hooks = BTreeMap::new();
    for (name, hook) in &config.serve.hooks {
        let resolve = |env: &Option<String>, file: &Option<PathBuf>, what: &str| {
            SecretRef::from_pair(env, file)
                .map(|s| secret::resolve(&s, &format!("serve.hooks.{name}.{what}")))
                .transpose()
        };
        let token = resolve(&hook.token_env, &hook.token_file, "token").map_err(|e| Usage(format!("{e:#}")))?;
        let secret = resolve(&hook.secret_env, &hook.secret_file, "secret").map_err(|e| Usage(format!("{e:#}")))?;
        let runtime = HookRuntime {
            name: name.clone(),
            hook: hook.clone(),
            token,
            secret,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        };
        hooks.insert(name.clone(), Arc::new(runtime));
    }
    let listener = std::net::TcpListener::bind(&listen).with_context(|| format!("cannot listen on `{listen}`"))?;
    let hub = Arc::new(Hub {
        hooks,
        runs: Mutex::new((HashMap::new(), VecDeque::new())),
        ended: Condvar::new(),
        deliveries: Mutex::new(HashMap::new()),
        window: config.serve.replay_window.map_or(300, |w| w.0.as_secs() as i64),
        logs,
        cx: Context { global: cx.global.clone(), out: cx.out },
        journal: Journal::start(cx.out),
    });
    let workers: Vec<_> = hub
        .hooks
        .values()
        .map(|h| {
            let (hub, h) = (hub.clone(), h.clone());
            std::thread::spawn(move || worker(&hub, &h))
        })
        .collect();
    cx.out.info(format!(
        "listening on {} (hooks: {})",
        listener.local_addr().map(|a| a.to_string()).unwrap_or(listen),
        hub.hooks.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    let limits = Limits {
        body: config.serve.body_limit,
        head_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        connections: 256,
    };
    let handler_hub = hub.clone();
    server::serve(listener, limits, move |req| handler_hub.handle(req), || crate::signals::received().is_some())
        .context("the server stopped")?;
    hub.journal.line("stopping: no new requests; waiting runs are cancelled, a running hook is stopped".into());
    for h in hub.hooks.values() {
        h.wake.notify_all();
    }
    for w in workers {
        let _ = w.join();
    }
    hub.journal.flush();
    Ok(code::OK)
}

/// How a request authenticated.
#[derive(PartialEq)]
enum Auth {
    Missing,
    Wrong,
    Token,
    Signature,
}

impl Hub {
    fn handle(&self, req: &Request) -> Response {
        let started = Instant::now();
        let (response, hook, run) = self.route(req);
        // Never the query string or a docker-puller path: they carry tokens.
        let shown = if req.path.starts_with("/hooks/") || req.path == "/healthz" { req.path.as_str() } else { "/***" };
        self.journal.line(format!(
            "{} {shown} {} hook={} run={} {:.1}ms",
            req.method,
            response.status,
            hook.as_deref().unwrap_or("-"),
            run.as_deref().unwrap_or("-"),
            started.elapsed().as_secs_f64() * 1000.0
        ));
        response
    }

    fn route(&self, req: &Request) -> (Response, Option<String>, Option<String>) {
        if req.path == "/healthz" {
            return (Response::json(200, json!({"status": "ok"})), None, None);
        }
        if let Some(rest) = req.path.strip_prefix("/hooks/") {
            if let Some((name, id)) = rest.split_once("/runs/") {
                if req.method != "GET" {
                    return (not_allowed("GET"), None, None);
                }
                return (self.status(req, name, id), Some(name.to_string()), Some(id.to_string()));
            }
            if req.method != "POST" {
                return (not_allowed("POST"), None, None);
            }
            let hook = self.hooks.get(rest);
            let auth = match hook {
                Some(h) => authenticate(h, req, &req.body),
                None => unknown_hook_auth(req),
            };
            return match (hook, auth) {
                (_, Auth::Missing) => (Response::empty(401), None, None),
                (None, _) | (_, Auth::Wrong) => (Response::empty(403), None, None),
                (Some(h), auth) => self.accept(h, req, auth == Auth::Signature),
            };
        }
        // docker-puller's forms, only for hooks that opt in.
        if req.method == "POST" {
            let (token, name) = if req.path == "/" {
                (req.query_param("token"), req.query_param("hook"))
            } else {
                let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
                match parts.as_slice() {
                    [token, name] => (Some(token.to_string()), Some(name.to_string())),
                    _ => return (Response::empty(404), None, None),
                }
            };
            let Some(token) = token.filter(|t| !t.is_empty()) else { return (Response::empty(401), None, None) };
            let hook = name.and_then(|n| self.hooks.get(&n)).filter(|h| h.hook.docker_puller);
            let valid = hook.is_some_and(|h| {
                h.token.as_ref().is_some_and(|t| secret::same(t.reveal().as_bytes(), token.as_bytes()))
            });
            return match (hook, valid) {
                (Some(h), true) => self.accept(h, req, false),
                _ => (Response::empty(403), None, None),
            };
        }
        (Response::empty(404), None, None)
    }

    /// Queues an authenticated request; signed bodies are checked for replay first.
    fn accept(&self, h: &HookRuntime, req: &Request, signed: bool) -> (Response, Option<String>, Option<String>) {
        let name = Some(h.name.clone());
        let body: serde_json::Value = if req.body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => return (Response::json(400, json!({"error": "the body is not JSON"})), name, None),
            }
        };
        if signed && let Err(why) = self.fresh(&body) {
            return (Response::json(409, json!({"error": why})), name, None);
        }
        let env = match release_env(h, &body) {
            Ok(env) => env,
            Err(why) => return (Response::json(422, json!({"error": why})), name, None),
        };
        let id = secret::random_id();
        let image = env.iter().find(|(k, _)| k == "PIPE_IMAGE").map(|(_, v)| v.clone());
        let tag = env.iter().find(|(k, _)| k == "PIPE_TAG").map(|(_, v)| v.clone());
        let info = RunInfo {
            id: id.clone(),
            hook: h.name.clone(),
            status: "queued".into(),
            exit_code: None,
            seconds: None,
            image: image.map(|i| format!("{i}:{}", tag.unwrap_or_default())),
            superseded_by: None,
            error: None,
            env,
            log: self.logs.join(&h.name).join(format!("{id}.log")),
        };
        let mut superseded = None;
        {
            let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            let mut queue = h.queue.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = queue.waiting.replace(id.clone()) {
                if let Some(r) = runs.0.get_mut(&old) {
                    r.status = "superseded".into();
                    r.superseded_by = Some(id.clone());
                }
                self.journal.line(format!("run {old} hook={} superseded by {id}", h.name));
                superseded = Some(old);
            }
            runs.0.insert(id.clone(), info);
            runs.1.push_back(id.clone());
            while runs.1.len() > KEEP_RUNS {
                if let Some(oldest) = runs.1.pop_front() {
                    runs.0.remove(&oldest);
                }
            }
        }
        h.wake.notify_all();
        self.ended.notify_all();
        let status_url = format!("/hooks/{}/runs/{id}", h.name);
        let wait = req.query_param("wait").and_then(|w| w.parse::<u64>().ok()).map(|w| Duration::from_secs(w.min(600)));
        if let Some(wait) = wait
            && let Some(run) = self.wait_for_end(&id, wait)
        {
            let mut doc = serde_json::to_value(&run).unwrap_or_default();
            doc["status_url"] = json!(status_url);
            return (Response::json(200, doc), name, Some(id));
        }
        let mut doc = json!({"id": id, "hook": h.name, "status": "queued", "status_url": status_url});
        if let Some(old) = superseded {
            doc["superseded"] = json!(old);
        }
        (Response::json(202, doc), name, Some(id))
    }

    /// Waits up to `wait` for a run to end; `None` if it is still queued or running.
    fn wait_for_end(&self, id: &str, wait: Duration) -> Option<RunInfo> {
        let deadline = Instant::now() + wait;
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let run = runs.0.get(id)?;
            if !matches!(run.status.as_str(), "queued" | "running") {
                return Some(run.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || crate::signals::received().is_some() {
                return None;
            }
            runs = self
                .ended
                .wait_timeout(runs, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// A signed body must carry a fresh `sent_at` and a `delivery` id not seen before.
    fn fresh(&self, body: &serde_json::Value) -> Result<(), &'static str> {
        let now = crate::clock::now().as_second();
        let sent = body["sent_at"].as_i64().ok_or("signed requests carry `sent_at`")?;
        let delivery = body["delivery"]
            .as_str()
            .filter(|d| !d.is_empty() && d.len() <= 128)
            .ok_or("signed requests carry `delivery`")?;
        if (now - sent).abs() > self.window {
            return Err("the request is outside the replay window");
        }
        let mut seen = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, at| now - *at <= self.window);
        if seen.insert(delivery.to_string(), now).is_some() {
            return Err("this delivery was already received");
        }
        Ok(())
    }

    fn status(&self, req: &Request, name: &str, id: &str) -> Response {
        let Some(h) = self.hooks.get(name) else {
            return Response::empty(if unknown_hook_auth(req) == Auth::Missing { 401 } else { 403 });
        };
        match authenticate(h, req, req.path.as_bytes()) {
            Auth::Missing => return Response::empty(401),
            Auth::Wrong => return Response::empty(403),
            _ => {}
        }
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(run) = runs.0.get(id).filter(|r| r.hook == name) else {
            return Response::json(404, json!({"error": "no such run"}));
        };
        let mut doc = serde_json::to_value(run).unwrap_or_default();
        let tail = std::fs::read_to_string(&run.log).map(|t| crate::output::tail_lines(&t, 20)).unwrap_or_default();
        doc["log_tail"] = json!(tail);
        Response::json(200, doc)
    }

    fn set(&self, id: &str, update: impl FnOnce(&mut RunInfo)) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = runs.0.get_mut(id) {
            update(r);
        }
    }
}

fn not_allowed(allow: &str) -> Response {
    let mut r = Response::empty(405);
    r.headers.push(("Allow".into(), allow.into()));
    r
}

/// Credentials offered for a hook that does not exist: judged like a known hook's.
fn unknown_hook_auth(req: &Request) -> Auth {
    if req.header("authorization").is_some() || req.header("x-hub-signature-256").is_some() {
        Auth::Wrong
    } else {
        Auth::Missing
    }
}

/// Checks a bearer token or an HMAC signature over `signed` (the raw body, or the path for GETs).
fn authenticate(h: &HookRuntime, req: &Request, signed: &[u8]) -> Auth {
    let bearer = req.header("authorization").and_then(|v| v.strip_prefix("Bearer "));
    let signature = req.header("x-hub-signature-256");
    if bearer.is_none() && signature.is_none() {
        return Auth::Missing;
    }
    if let (Some(token), Some(given)) = (&h.token, bearer)
        && secret::same(token.reveal().as_bytes(), given.as_bytes())
    {
        return Auth::Token;
    }
    if let (Some(secret), Some(given)) = (&h.secret, signature)
        && secret::verify(secret.reveal().as_bytes(), signed, given)
    {
        return Auth::Signature;
    }
    Auth::Wrong
}

/// The environment for the hook's target from the request body; images are checked against
/// the hook's `images` patterns and tags against Docker's grammar. Nothing reaches a shell.
fn release_env(h: &HookRuntime, body: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let text = |k: &str| body[k].as_str().map(str::to_string);
    let mut env = vec![("PIPE_HOOK".to_string(), h.name.clone())];
    let image = text("image");
    if h.hook.compose.is_some() || h.hook.swarm.is_some() {
        let image = image.clone().ok_or("this hook deploys an image: the body names none")?;
        if !h.hook.allowed.is_match(&image) {
            return Err(format!("image `{image}` is not allowed by this hook"));
        }
        crate::docker::validate_repository(&image)?;
        let tag = text("tag").ok_or("the body names no `tag`")?;
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !valid_tag {
            return Err("invalid `tag`".into());
        }
        env.push(("PIPE_IMAGE".into(), image));
        env.push(("PIPE_TAG".into(), tag));
    }
    if let Some(commit) = text("commit").filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
        env.push(("PIPE_COMMIT".into(), commit));
    }
    if let Some(branch) = text("ref").and_then(|r| r.strip_prefix("refs/heads/").map(str::to_string)) {
        env.push(("PIPE_BRANCH".into(), branch));
    }
    if let Some(project) = text("project") {
        env.push(("PIPE_PROJECT".into(), project));
    }
    Ok(env)
}

/// Runs a hook's queued requests one at a time until the server stops.
fn worker(hub: &Hub, h: &HookRuntime) {
    loop {
        let id = {
            let mut queue = h.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if crate::signals::received().is_some() {
                    if let Some(waiting) = queue.waiting.take() {
                        hub.journal.line(format!("run {waiting} hook={} cancelled", h.name));
                        hub.set(&waiting, |r| r.status = "cancelled".into());
                        hub.ended.notify_all();
                    }
                    return;
                }
                if let Some(id) = queue.waiting.take() {
                    queue.running = Some(id.clone());
                    break id;
                }
                queue = h
                    .wake
                    .wait_timeout(queue, Duration::from_millis(200))
                    .map(|(q, _)| q)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        };
        let (env, log) = {
            let runs = hub.runs.lock().unwrap_or_else(|e| e.into_inner());
            match runs.0.get(&id) {
                Some(r) => (r.env.clone(), r.log.clone()),
                None => continue,
            }
        };
        hub.set(&id, |r| r.status = "running".into());
        let started = Instant::now();
        let outcome = execute(hub, h, env, &log);
        let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let status = match &outcome {
            Ok(()) => "succeeded",
            Err((status, _, _)) => status,
        };
        hub.journal.line(format!("run {id} hook={} {status} in {seconds:.1}s", h.name));
        hub.set(&id, |r| {
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
        h.queue.lock().unwrap_or_else(|e| e.into_inner()).running = None;
        hub.ended.notify_all();
    }
}

/// Runs the hook's commands and health check; `Err((status, exit code, message))`.
fn execute(
    hub: &Hub,
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
    let commands = targets::target_commands(&hub.cx.out, &docker, kinds, &h.name, pulls, env).map_err(failed)?;
    let timeout = h.hook.timeout.map_or(Duration::from_secs(600), |t| t.0);
    let deadline = Instant::now() + timeout;
    for cmd in commands {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let finished = exec::logged(&hub.cx.out, &cmd, log, engine::LOG_CAP, left, &mut |_| {}).map_err(failed)?;
        if finished.interrupted {
            return Err(("interrupted", finished.code, "the server was stopped while the hook ran".into()));
        }
        if !finished.success() {
            return Err(("failed", finished.code, format!("`{cmd}`: {}", finished.describe())));
        }
    }
    if let Some(swarm) = &h.hook.swarm {
        targets::wait_for_stack(&hub.cx.out, &docker, &swarm.stack, deadline).map_err(failed)?;
    }
    if let Some(health) = &h.hook.health {
        targets::check_health(&hub.cx.out, &docker, health, deadline).map_err(failed)?;
    }
    Ok(())
}
