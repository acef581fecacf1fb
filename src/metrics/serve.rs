//! What `pipe serve` counts while it runs (requests, runs, refused connections), kept in memory
//! (a restart is a counter reset, as for any exporter), and its `GET /metrics` answer behind
//! the status page's access rules.

use std::sync::{LazyLock, Mutex};

use super::store::Store;
use super::{CONTENT_TYPE, Family, labels};
use crate::server::{Request, Response};

const REQUESTS: Family = Family::counter(
    "pipe_serve_requests_total",
    "Requests answered by pipe serve, by endpoint (hook, hook_status, forge, docker_puller, healthz, metrics, status_page, badge, other) and status code.",
);
const RUNS: Family = Family::counter(
    "pipe_serve_runs_total",
    "Hook runs of pipe serve that ended, by hook and status (succeeded, failed, superseded, cancelled, interrupted).",
);
const REJECTED: Family = Family::counter(
    "pipe_serve_rejected_connections_total",
    "Connections pipe serve refused while reading them, by reason: timeout (no complete head or body in time), overload (a connection or body-memory bound), invalid (a malformed or refused head).",
);
const STARTED: Family = Family::gauge("pipe_serve_start_time_seconds", "When this pipe serve process started.");

const FAMILIES: &[Family] = &[REQUESTS, RUNS, REJECTED, STARTED];

static COUNTS: LazyLock<Mutex<Store>> = LazyLock::new(|| {
    let mut store = Store::default();
    store.set(&STARTED, String::new(), crate::clock::now().as_second() as f64);
    Mutex::new(store)
});

fn with(f: impl FnOnce(&mut Store)) {
    f(&mut COUNTS.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Which endpoint a request was for: a fixed word, never the path (a hook name, a token in a
/// docker-puller URL or any path a client makes up would make series without bound).
pub(crate) fn endpoint(method: &str, path: &str) -> &'static str {
    if path == "/healthz" {
        "healthz"
    } else if path == "/metrics" {
        "metrics"
    } else if let Some(rest) = path.strip_prefix("/hooks/") {
        if rest.contains("/runs/") { "hook_status" } else { "hook" }
    } else if path.starts_with("/forge/") {
        "forge"
    } else if path.starts_with("/badge/") {
        "badge"
    } else if crate::page::Page::owns(path) {
        "status_page"
    } else if method == "POST" && (path == "/" || path.trim_matches('/').split('/').count() == 2) {
        "docker_puller"
    } else {
        "other"
    }
}

/// Counts one answered request.
pub(crate) fn request(method: &str, path: &str, status: u16) {
    let key = labels(&[("endpoint", endpoint(method, path)), ("status", &status.to_string())]);
    with(|s| s.add(&REQUESTS, key, 1.0));
}

/// Counts one hook run that ended with `status`.
pub(crate) fn run_ended(hook: &str, status: &str) {
    with(|s| s.add(&RUNS, labels(&[("hook", hook), ("status", status)]), 1.0));
}

/// Counts one connection the server refused while reading it, answered `status`.
pub(crate) fn rejected(status: u16) {
    let reason = match status {
        408 => "timeout",
        503 => "overload",
        _ => "invalid",
    };
    with(|s| s.add(&REJECTED, labels(&[("reason", reason)]), 1.0));
}

/// The text format of everything counted so far.
pub(crate) fn render() -> String {
    COUNTS.lock().unwrap_or_else(|e| e.into_inner()).render(FAMILIES)
}

/// `GET /metrics`: only where the status page is served, and with its token when it has one
/// (`401` without); `404` when the page is off.
pub(crate) fn respond(page: Option<&crate::page::Page>, req: &Request) -> Response {
    let Some(page) = page else { return Response::empty(404) };
    if req.method != "GET" {
        let mut r = Response::empty(405);
        r.headers.push(("Allow".into(), "GET".into()));
        return r;
    }
    if !page.authorized(req) {
        let mut r = Response::empty(401);
        r.headers.push(("WWW-Authenticate".into(), "Basic realm=\"pipe\", charset=\"UTF-8\"".into()));
        return r;
    }
    let mut r = Response::text(200, render());
    r.headers.push(("Content-Type".into(), CONTENT_TYPE.into()));
    r.headers.push(("Cache-Control".into(), "no-store".into()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_fixed_words() {
        assert_eq!(endpoint("POST", "/hooks/project1"), "hook");
        assert_eq!(endpoint("GET", "/hooks/project1/runs/abc"), "hook_status");
        assert_eq!(endpoint("POST", "/forge/p"), "forge");
        assert_eq!(endpoint("POST", "/sekrit-token/project1"), "docker_puller");
        assert_eq!(endpoint("POST", "/"), "docker_puller");
        assert_eq!(endpoint("GET", "/status.json"), "status_page");
        assert_eq!(endpoint("GET", "/badge/p/dev.svg"), "badge");
        assert_eq!(endpoint("GET", "/metrics"), "metrics");
        assert_eq!(endpoint("GET", "/etc/passwd/x/y"), "other");
    }

    #[test]
    fn counted_requests_and_runs_render() {
        request("POST", "/hooks/unit-test-hook", 202);
        run_ended("unit-test-hook", "succeeded");
        rejected(408);
        let text = render();
        assert!(text.contains("# TYPE pipe_serve_requests_total counter\n"));
        assert!(text.contains("pipe_serve_runs_total{hook=\"unit-test-hook\",status=\"succeeded\"}"));
        assert!(text.contains("pipe_serve_rejected_connections_total{reason=\"timeout\"}"));
        assert!(text.contains("pipe_serve_start_time_seconds "));
    }
}
