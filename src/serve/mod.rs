//! The deploy receiver behind `pipe serve`: routing, authentication, the replay window, the
//! per-hook queues and workers, the persisted run table and the journal of log lines.
//!
//! `POST /hooks/NAME` runs the hook's target once its credentials check out: a bearer token
//! (checked from the head, before any body byte is read) or `X-Hub-Signature-256` over at most
//! the hook's `max_body` bytes. Signed bodies must name the hook, carry a `delivery` id and a
//! `sent_at` time inside the replay window of the receiver's clock; ids are kept on disk. See
//! `queue` for who runs when, `runs` for what is kept and for how long.

mod auth;
mod commit;
mod forge;
mod host;
mod journal;
mod queue;
mod replay;
mod runs;
mod shared;
mod superseded;

use std::collections::BTreeMap;
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::config::{SecretRef, Serve};
use crate::error::Usage;
use crate::output::Output;
use crate::secret::{self, Secret};
use crate::server::{self, Admit, Limits, Request, Response, Service};
use auth::{Auth, Credentials, Stale};
use journal::Journal;
use queue::{HookRuntime, Slot};
use replay::Deliveries;
use runs::{RunInfo, Runs};
use shared::{DEFAULT_MAX_BODY, Shared};

pub(crate) use forge::ForgeHooks;

/// Runs kept per hook when `serve.keep_runs` is not set.
pub(crate) const DEFAULT_KEEP_RUNS: usize = 1000;

const MIB: usize = 1024 * 1024;
/// How long a stopping receiver waits for the requests it is still answering.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The connection limits `pipe serve` runs with, for requests whose body, before their
/// credentials are checked, may be up to `preauth` bytes: anonymous requests may hold 6 MiB of
/// bodies (2 MiB from one address) and are handled on at most half the CPUs' worth of handler
/// threads (at least one), in turn; the other 2 MiB and the other handlers are kept for
/// requests authenticated from the head or sent from an address that authenticated in the
/// last ten minutes. Answers to anonymous requests are written outside that share, in places
/// of their own (32, 4 to one address), so a client that reads slowly holds no handler place.
pub(crate) fn limits(preauth: u64) -> Limits {
    let preauth = usize::try_from(preauth).unwrap_or(usize::MAX / 8);
    let per_client = (2 * MIB).max(preauth);
    let untrusted = (6 * MIB).max(3 * per_client);
    // Signatures checked for anonymous clients use at most half the CPUs: the rest is left to
    // authenticated requests however many fake-signed bodies arrive.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let anonymous_handlers = (cpus / 2).clamp(1, 32);
    Limits {
        head_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        connections: 1024,
        per_client: 256,
        head_memory: 4 * MIB,
        body_memory: untrusted + per_client,
        untrusted_body_memory: untrusted,
        untrusted_body_per_client: per_client,
        handlers: 128,
        untrusted_handlers: anonymous_handlers,
        untrusted_handlers_per_client: anonymous_handlers,
        // Anonymous answers being written (a log streamed to a slow reader) hold a thread each:
        // with the anonymous handlers at most 64 of the 128, the rest stays for trusted requests.
        untrusted_answers: 32,
        untrusted_answers_per_client: 4,
        answer_timeout: Duration::from_secs(600),
    }
}

/// The receiver: what the server's I/O thread and handler threads call into.
pub(crate) struct Receiver {
    hooks: BTreeMap<String, Arc<HookRuntime>>,
    shared: Arc<Shared>,
    window: i64,
    /// What a signature-bearing request may send before its signature is checked: the largest
    /// `max_body` of any hook, the same for every name, known or not.
    preauth: u64,
    /// Checked against for unknown hooks and missing credential kinds: equal work for all.
    dummy_token: Secret,
    dummy_secret: Secret,
    /// `POST /forge/PROJECT`: the forges' webhooks.
    forge: Arc<ForgeHooks>,
    /// The status page and badges, when `[serve.page]` enables them.
    page: Option<crate::page::Page>,
    /// The names and addresses this receiver answers to: a fleet's body runs only on the host
    /// it names.
    own: host::OwnNames,
}

impl Receiver {
    /// Resolves the hooks' secrets and opens the run table and delivery ids under `dir`; `port`
    /// is the one it listens on.
    pub(crate) fn new(
        serve: &Serve,
        forge: ForgeHooks,
        dir: PathBuf,
        out: Output,
        port: Option<u16>,
    ) -> anyhow::Result<Receiver> {
        let mut hooks = BTreeMap::new();
        for (name, hook) in &serve.hooks {
            let resolve = |env: &Option<String>, file: &Option<PathBuf>, what: &str| {
                SecretRef::from_pair(env, file)
                    .map(|s| secret::resolve(&s, &format!("serve.hooks.{name}.{what}")))
                    .transpose()
                    .map_err(|e| Usage(format!("{e:#}")))
            };
            let runtime = HookRuntime {
                name: name.clone(),
                hook: hook.clone(),
                token: resolve(&hook.token_env, &hook.token_file, "token")?,
                secret: resolve(&hook.secret_env, &hook.secret_file, "secret")?,
                max_body: hook.max_body.unwrap_or(DEFAULT_MAX_BODY).min(serve.body_limit),
                slot: Slot::default(),
            };
            hooks.insert(name.clone(), Arc::new(runtime));
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
        let now = crate::clock::now().as_second();
        let window = serve.replay_window.map_or(300, |w| w.0.as_secs() as i64);
        let names: Vec<String> = hooks.keys().cloned().collect();
        let shared = Shared {
            runs: Runs::open(dir.clone(), serve.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS), &names)?,
            deliveries: Deliveries::open(dir.join("deliveries"), now, window)?,
            journal: Journal::start(out),
            out,
            senders: Default::default(),
        };
        let preauth = hooks.values().map(|h| h.max_body).max().unwrap_or(DEFAULT_MAX_BODY);
        Ok(Receiver {
            hooks,
            shared: Arc::new(shared),
            window,
            preauth,
            dummy_token: secret::random(),
            dummy_secret: secret::random(),
            forge: Arc::new(forge),
            page: None,
            own: host::OwnNames::gather(&serve.names, port),
        })
    }

    /// Serves the status page and badges beside the hooks.
    pub(crate) fn with_page(mut self, page: Option<crate::page::Page>) -> Receiver {
        self.page = page;
        self
    }

    /// Serves until SIGTERM or SIGINT, then cancels waiting runs, stops running hooks, waits
    /// for the workers and, up to [`STOP_WAIT`], for the requests being handled.
    pub(crate) fn run(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let mut workers: Vec<_> = self
            .hooks
            .values()
            .map(|h| {
                let (shared, h) = (self.shared.clone(), h.clone());
                std::thread::spawn(move || queue::worker(&shared, &h))
            })
            .collect();
        workers.extend(self.forge.workers(&self.shared));
        let forge: Vec<String> = self.forge.names().cloned().collect();
        self.shared.out.info(format!(
            "listening on {} (hooks: {}{})",
            listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            self.hooks.keys().cloned().collect::<Vec<_>>().join(", "),
            if forge.is_empty() { String::new() } else { format!("; forge webhooks: {}", forge.join(", ")) }
        ));
        // Bodies of 128 KiB and more get pages of their own, given back when the request is
        // done: glibc's default threshold rises after the first such free, and then a flood's
        // bodies stay in the heap at its peak long after the flood.
        // SAFETY: mallopt only tunes glibc's allocator; it is called before any request.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
        let limits = limits(self.preauth.max(self.forge.max_body()));
        let in_flight = server::serve(listener, limits, self.clone(), || crate::signals::received().is_some())
            .context("the server stopped")?;
        self.shared
            .journal
            .line("stopping: no new requests; waiting runs are cancelled, a running hook is stopped".into());
        for h in self.hooks.values() {
            h.slot.wake.notify_all();
        }
        self.forge.wake_all();
        for w in workers {
            let _ = w.join();
        }
        // Requests already read are answered (and a run they superseded gets its line) before
        // the last chores are done; a client reading an answer slowly is not waited for long.
        if !in_flight.wait(STOP_WAIT) {
            self.shared
                .journal
                .line(format!("stopped with requests still being answered after {}s", STOP_WAIT.as_secs()));
        }
        self.shared.runs.flush();
        self.shared.journal.flush();
        Ok(())
    }

    /// A hook's credentials, dummies standing in for what it (or an unknown hook) lacks.
    fn credentials<'a>(&'a self, hook: Option<&'a HookRuntime>) -> Credentials<'a> {
        Credentials {
            token: Some(hook.and_then(|h| h.token.as_ref()).unwrap_or(&self.dummy_token)),
            secret: Some(hook.and_then(|h| h.secret.as_ref()).unwrap_or(&self.dummy_secret)),
        }
    }

    /// One log line per request: never the query string or a docker-puller path (tokens).
    fn log(&self, req: Option<&Request>, status: u16, hook: Option<&str>, run: Option<&str>, started: Instant) {
        if let Some(r) = req {
            crate::metrics::serve::request(&r.method, &r.path, status);
        }
        let (method, path) = match req {
            Some(r) if r.path.starts_with("/hooks/") || r.path == "/healthz" || crate::page::Page::owns(&r.path) => {
                (r.method.as_str(), r.path.as_str())
            }
            Some(r) => (r.method.as_str(), "/***"),
            None => ("-", "-"),
        };
        self.shared.journal.line(format!(
            "{method} {path} {status} hook={} run={} {:.1}ms",
            hook.unwrap_or("-"),
            run.unwrap_or("-"),
            started.elapsed().as_secs_f64() * 1000.0
        ));
    }

    /// docker-puller's URL forms: `(token, hook)`, `None` when the path is not one.
    fn puller_form(req: &Request) -> Option<(Option<String>, Option<String>)> {
        if req.path == "/" {
            return Some((req.query_param("token"), req.query_param("hook")));
        }
        match req.path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
            [token, name] => Some((Some(token.to_string()), Some(name.to_string()))),
            _ => None,
        }
    }

    /// A docker-puller request's hook, when the hook opted in and the token is its own.
    fn puller_hook(&self, token: Option<String>, name: Option<String>) -> Result<&Arc<HookRuntime>, u16> {
        let token = token.filter(|t| !t.is_empty()).ok_or(401u16)?;
        let hook = name.and_then(|n| self.hooks.get(&n)).filter(|h| h.hook.docker_puller);
        let expected = hook.and_then(|h| h.token.as_ref()).unwrap_or(&self.dummy_token);
        let valid = secret::same(expected.reveal().as_bytes(), token.as_bytes());
        hook.filter(|_| valid).ok_or(403)
    }

    fn route(
        &self,
        req: &Request,
        peer: IpAddr,
        authenticated: &dyn Fn(),
    ) -> (Response, Option<String>, Option<String>) {
        if req.path == "/metrics" {
            return (crate::metrics::serve::respond(self.page.as_ref(), req), None, None);
        }
        if let Some(response) = self.page.as_ref().and_then(|p| p.handle(req)) {
            return (response, None, None);
        }
        if req.path == "/healthz" {
            return (Response::json(200, json!({"status": "ok"})), None, None);
        }
        if let Some(rest) = req.path.strip_prefix("/hooks/") {
            if let Some((name, id)) = rest.split_once("/runs/") {
                if req.method != "GET" {
                    return (not_allowed("GET"), None, None);
                }
                return (self.status(req, name, id, peer), Some(name.to_string()), Some(id.to_string()));
            }
            if req.method != "POST" {
                return (not_allowed("POST"), None, None);
            }
            let hook = self.hooks.get(rest);
            return match (hook, auth::authenticate(&self.credentials(hook.map(|h| &**h)), req, &req.body)) {
                (_, Auth::Missing) => (Response::empty(401), None, None),
                (None, _) | (_, Auth::Wrong) => (Response::empty(403), None, None),
                (Some(h), auth) => {
                    // Every name read up to the same size; the hook's own limit applies now.
                    if req.body.len() as u64 > h.max_body {
                        return (Response::empty(413), Some(h.name.clone()), None);
                    }
                    self.accept(h, req, auth == Auth::Signature, peer, authenticated)
                }
            };
        }
        if req.method == "POST" {
            let Some((token, name)) = Self::puller_form(req) else { return (Response::empty(404), None, None) };
            return match self.puller_hook(token, name) {
                Ok(h) => self.accept(h, req, false, peer, authenticated),
                Err(status) => (Response::empty(status), None, None),
            };
        }
        (Response::empty(404), None, None)
    }

    /// Queues an authenticated request; signed bodies are checked for hook and replay first.
    /// Its sender counts as one that authenticated lately (the share of the receiver kept for
    /// them, [`Senders`](shared::Senders)) once its token checked out, or once its signed body
    /// proved fresh: a captured body sent again, stale or seen, buys its sender nothing.
    fn accept(
        &self,
        h: &HookRuntime,
        req: &Request,
        signed: bool,
        peer: IpAddr,
        authenticated: &dyn Fn(),
    ) -> (Response, Option<String>, Option<String>) {
        let trust = || {
            self.shared.senders.authenticated(peer);
            authenticated();
        };
        if !signed {
            trust();
        }
        let name = Some(h.name.clone());
        let refuse = |status: u16, why: String| (Response::json(status, json!({"error": why})), name.clone(), None);
        let body: serde_json::Value = if req.body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => return refuse(400, "the body is not JSON".into()),
            }
        };
        let now = crate::clock::now().as_second();
        let delivery = if signed {
            match auth::signed_fields(&body, &h.name, now, self.window) {
                Ok(fields) => Some(fields),
                Err(Stale::Replay(why)) => return refuse(409, why.into()),
                Err(Stale::Malformed(why)) => return refuse(400, why.into()),
                Err(Stale::OtherHook) => return refuse(403, "the signed body names another hook".into()),
            }
        } else {
            None
        };
        // A fleet's body names the host it was sent to: the same bytes run on no other.
        match body.get("host") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(host)) if self.own.answers_to(host) => {}
            Some(serde_json::Value::String(host)) => {
                let why = format!(
                    "the body was sent to host `{host}`, not to this one ({}); if this host is `{host}`, add it to `[serve] names`",
                    self.own.describe()
                );
                return refuse(403, why);
            }
            Some(_) => return refuse(400, "`host` must be a string".into()),
        }
        let auth::Requested { env, images } = match auth::release_env(&h.name, &h.hook, &body) {
            Ok(requested) => requested,
            Err(why) => return refuse(422, why),
        };
        if let Some((delivery, expires)) = delivery {
            // Ids are the hook's own: another hook's credential cannot take this hook's next id.
            // An id as earlier versions recorded it (bare) is still refused until it expires.
            let part = format!("hook:{}", h.name);
            let recorded = if self.shared.deliveries.seen(delivery, now) {
                Ok(false)
            } else {
                self.shared.deliveries.record(&part, &format!("{part}:{delivery}"), expires, now)
            };
            match recorded {
                Ok(true) => trust(),
                Ok(false) => return refuse(409, "this delivery was already received".into()),
                Err(e) => {
                    self.shared.journal.line(format!("cannot record a delivery id: {e:#}"));
                    return refuse(503, "the receiver cannot record the delivery".into());
                }
            }
        }
        let id = secret::random_id();
        let image = env.iter().find(|(k, _)| k == "PIPE_IMAGE").map(|(_, v)| v.clone());
        let tag = env.iter().find(|(k, _)| k == "PIPE_TAG").map(|(_, v)| v.clone());
        let info = RunInfo {
            id: id.clone(),
            hook: h.name.clone(),
            status: "queued".into(),
            received_at: now,
            exit_code: None,
            seconds: None,
            image: image.map(|i| format!("{i}:{}", tag.unwrap_or_default())),
            superseded_by: None,
            error: None,
            deploy: Default::default(),
            env,
            images,
        };
        let (mut superseded, mut idle) = (None, false);
        let inserted = self.shared.runs.insert(info, |supersede| {
            let mut queue = h.slot.queue.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = queue.waiting.replace(id.clone()) {
                supersede(&old, &id);
                superseded = Some(old);
            }
            idle = queue.idle;
        });
        if let Err(e) = inserted {
            self.shared.journal.line(format!("cannot record a run: {e:#}"));
            return refuse(503, "the receiver cannot record the run".into());
        }
        if let Some(old) = &superseded {
            self.shared.journal.line(format!("run {old} hook={} superseded by {id}", h.name));
            crate::metrics::serve::run_ended(&h.name, "superseded");
        }
        if idle {
            h.slot.wake.notify_all();
        }
        let status_url = format!("/hooks/{}/runs/{id}", h.name);
        let wait = req.query_param("wait").and_then(|w| w.parse::<u64>().ok()).map(|w| Duration::from_secs(w.min(600)));
        if let Some(wait) = wait
            && let Some(run) = self.shared.runs.wait_for_end(&id, wait)
        {
            let mut doc = serde_json::to_value(&run).unwrap_or_default();
            doc["status_url"] = json!(status_url);
            return (Response::json(200, doc), name, Some(id));
        }
        // A request that waited in vain says where its run stands now (`running`, or `superseded`
        // by a newer request meanwhile); one that did not wait, `queued`.
        let status =
            wait.and_then(|_| self.shared.runs.get(&h.name, &id)).map_or_else(|| "queued".into(), |r| r.status);
        let mut doc = json!({"id": id, "hook": h.name, "status": status, "status_url": status_url});
        if let Some(old) = superseded {
            doc["superseded"] = json!(old);
        }
        (Response::json(202, doc), name, Some(id))
    }

    fn status(&self, req: &Request, name: &str, id: &str, peer: IpAddr) -> Response {
        let hook = self.hooks.get(name);
        match auth::authenticate(&self.credentials(hook.map(|h| &**h)), req, req.path.as_bytes()) {
            Auth::Missing => return Response::empty(401),
            Auth::Wrong => return Response::empty(403),
            _ if hook.is_none() => return Response::empty(403),
            // A poll signed over its path alone can be sent again at any time: it reads the
            // run, and its sender is not trusted for it.
            Auth::Signature => {}
            Auth::Token => self.shared.senders.authenticated(peer),
        }
        let Some(run) = self.shared.runs.get(name, id) else {
            return Response::json(404, json!({"error": "no such run"}));
        };
        let mut doc = serde_json::to_value(&run).unwrap_or_default();
        let log = self.shared.runs.log_path(name, &run.id);
        let tail = std::fs::read_to_string(log).map(|t| crate::output::tail_lines(&t, 20)).unwrap_or_default();
        doc["log_tail"] = json!(tail);
        Response::json(200, doc)
    }

    /// Answers from the head alone, logging the answer.
    fn answer(&self, head: &Request, response: Response, started: Instant) -> Admit {
        self.log(Some(head), response.status, None, None, started);
        Admit::Answer(response)
    }
}

impl Service for Receiver {
    fn admit(&self, head: &Request, peer: IpAddr) -> Admit {
        let started = Instant::now();
        let known = self.shared.senders.known(peer);
        // Not authenticated yet: within the anonymous share, unless the address authenticated lately.
        let anonymous = |limit: u64| if known { Admit::Trusted(limit) } else { Admit::Body(limit) };
        if let Some(name) = head.path.strip_prefix("/forge/") {
            return match forge::admit(&self.forge, &self.shared, head, name) {
                Admit::Body(limit) => anonymous(limit),
                admit => admit,
            };
        }
        if let Some(page) = &self.page
            && (crate::page::Page::owns(&head.path) || head.path == "/metrics")
        {
            if !page.is_public(&head.path) && !page.authorized(head) {
                // Refused from the head: an anonymous page request takes no handler.
                let (response, _, _) = self.route(head, peer, &|| ());
                return self.answer(head, response, started);
            }
            return if page.has_token() && page.authorized(head) { Admit::Trusted(0) } else { anonymous(0) };
        }
        let Some(rest) = head.path.strip_prefix("/hooks/") else {
            if head.method == "POST"
                && let Some((token, name)) = Self::puller_form(head)
            {
                return match self.puller_hook(token, name) {
                    Ok(h) => Admit::Trusted(h.max_body),
                    Err(status) => self.answer(head, Response::empty(status), started),
                };
            }
            return anonymous(0);
        };
        if rest.contains("/runs/") {
            return anonymous(0);
        }
        if head.method != "POST" {
            return self.answer(head, not_allowed("POST"), started);
        }
        let hook = self.hooks.get(rest).map(|h| &**h);
        match auth::token_valid(&self.credentials(hook), head) {
            Some(true) => Admit::Trusted(hook.map_or(DEFAULT_MAX_BODY, |h| h.max_body)),
            // A signature is checked over the body (an unknown hook's against the dummy
            // secret), read up to the same size whatever the name.
            _ if auth::signature(head).is_some() => anonymous(self.preauth),
            Some(false) => self.answer(head, Response::empty(403), started),
            None => self.answer(head, Response::empty(401), started),
        }
    }

    fn handle(&self, req: &Request, peer: IpAddr, authenticated: &dyn Fn()) -> Response {
        if let Some(name) = req.path.strip_prefix("/forge/") {
            return forge::handle(&self.forge, &self.shared, req, name, peer);
        }
        let started = Instant::now();
        let (response, hook, run) = self.route(req, peer, authenticated);
        self.log(Some(req), response.status, hook.as_deref(), run.as_deref(), started);
        response
    }

    fn refused(&self, head: Option<&Request>, _peer: IpAddr, status: u16) {
        crate::metrics::serve::rejected(status);
        self.log(head, status, None, None, Instant::now());
    }

    fn trusted(&self, peer: IpAddr) -> bool {
        self.shared.senders.known(peer)
    }
}

fn not_allowed(allow: &str) -> Response {
    let mut r = Response::empty(405);
    r.headers.push(("Allow".into(), allow.into()));
    r
}
