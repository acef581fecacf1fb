//! The read-only status page and badges `pipe serve` shows when `[serve.page]` is enabled.
//!
//! Every answer is built from the state files alone (`state.toml`, the ref histories, the deploy
//! histories, the run logs), read without the lock: saves are atomic renames, so a read sees a
//! whole file, and one that fails to parse mid-replacement is read again once. Logs are read a
//! bounded window at a time ([`log::window`]). Pages are HTML from maud templates (every value
//! escaped), with a strict Content-Security-Policy and no JavaScript; each has a JSON twin
//! (`.json` or `?format=json`) in the schemas of `pipe status --json` and `pipe logs --json`.

mod badge;
mod html;

pub(crate) use html::ref_url;

/// The page's public URL when the page is served and has one: where links from commit statuses
/// and notifications point.
pub(crate) fn public_url(config: &crate::config::Config) -> Option<&str> {
    config.serve.page.as_ref().filter(|p| p.enabled).and_then(|p| p.public_url.as_deref())
}
pub(crate) mod log;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::config::{self, SecretRef};
use crate::error::Usage;
use crate::model::{DeployResult, Outcome};
use crate::report::{self, LogsReport, RefStatus, StatusReport};
use crate::secret::{self, Secret};
use crate::server::{Request, Response};
use crate::state::{self, DeployRecord, History, State};

/// Refs one overview page lists.
pub(crate) const PER_PAGE: usize = 100;

/// Page and badge answers built at once. Each parses `state.toml` (about 40 ms and 50 MB at
/// 10,000 refs), so a burst of public badge requests must not take every handler's memory;
/// beyond it `503` with `Retry-After`.
pub(crate) const RENDERS: usize = 4;

const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const CSS: &str = include_str!("style.css");

/// The page's settings and where it reads.
pub(crate) struct Page {
    state: PathBuf,
    token: Option<Secret>,
    public_badges: bool,
    base: String,
    rendering: std::sync::atomic::AtomicUsize,
}

/// One deploy target as the overview shows it.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub project: String,
    pub target: String,
    /// The newest succeeded deploy: what the target runs now.
    pub current: Option<DeployRecord>,
    /// Newest first.
    pub deploys: Vec<DeployRecord>,
}

/// The overview: one page of refs, the filter that chose them, the deploy targets.
pub(crate) struct Overview {
    pub report: StatusReport,
    pub durations: Vec<Option<f64>>,
    pub total: usize,
    pub page: usize,
    pub pages: usize,
    pub query: String,
    pub result: String,
    pub targets: Vec<Target>,
}

impl Page {
    /// `None` when the page is not enabled.
    pub(crate) fn new(cfg: Option<&config::Page>, state: PathBuf) -> anyhow::Result<Option<Page>> {
        let Some(cfg) = cfg.filter(|c| c.enabled) else { return Ok(None) };
        let token = SecretRef::from_pair(&cfg.token_env, &cfg.token_file)
            .map(|s| secret::resolve(&s, "serve.page.token"))
            .transpose()
            .map_err(|e| Usage(format!("{e:#}")))?;
        let base = cfg.public_url.as_deref().unwrap_or("").trim_end_matches('/').to_string();
        Ok(Some(Page { state, token, public_badges: cfg.public_badges, base, rendering: Default::default() }))
    }

    /// Whether a request is the page's: a GET under `/status` or `/badge/`.
    pub(crate) fn owns(path: &str) -> bool {
        path == "/status" || path.starts_with("/status/") || path.starts_with("/status.") || path.starts_with("/badge/")
    }

    /// Answers a page or badge request; `None` when the path is not the page's.
    pub(crate) fn handle(&self, req: &Request) -> Option<Response> {
        if !Page::owns(&req.path) {
            return None;
        }
        if req.method != "GET" {
            let mut r = Response::empty(405);
            r.headers.push(("Allow".into(), "GET".into()));
            return Some(r);
        }
        let badge = req.path.starts_with("/badge/");
        let public = badge && self.public_badges;
        if !public && !self.authorized(req) {
            let mut r = Response::empty(401);
            r.headers.push(("WWW-Authenticate".into(), "Basic realm=\"pipe\", charset=\"UTF-8\"".into()));
            return Some(r);
        }
        let Some(_slot) = Slot::take(&self.rendering) else {
            let mut r = Response::empty(503);
            r.headers.push(("Retry-After".into(), "1".into()));
            return Some(r);
        };
        Some(if badge { self.badge(req) } else { self.page(req) })
    }

    /// The token as `Authorization: Bearer T` or as the password of basic auth (any user).
    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.token else { return true };
        let given = req.header("authorization").and_then(|h| {
            let (scheme, value) = h.split_once(' ')?;
            match scheme.to_ascii_lowercase().as_str() {
                "bearer" => Some(value.trim().as_bytes().to_vec()),
                "basic" => {
                    let decoded = base64_decode(value.trim())?;
                    let colon = decoded.iter().position(|&b| b == b':')?;
                    Some(decoded[colon + 1..].to_vec())
                }
                _ => None,
            }
        });
        secret::same(token.reveal().as_bytes(), given.as_deref().unwrap_or(b"\0no token")) && given.is_some()
    }

    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn page(&self, req: &Request) -> Response {
        let (path, json) = match req.path.strip_suffix(".json") {
            Some(p) => (p, true),
            None => (req.path.as_str(), req.query_param("format").as_deref() == Some("json")),
        };
        let state = match read_retrying(|| state::load(&self.state)) {
            Ok(s) => s,
            Err(e) => return error_page(503, &format!("{e:#}"), json),
        };
        match path {
            "/status" | "/status/" => {
                let ov = self.overview(&state, req);
                if json {
                    let mut doc = serde_json::to_value(&ov.report).unwrap_or_default();
                    doc["total"] = json!(ov.total);
                    doc["page"] = json!(ov.page);
                    doc["pages"] = json!(ov.pages);
                    doc["targets"] = serde_json::to_value(&ov.targets).unwrap_or_default();
                    return json_response(200, doc);
                }
                html_response(200, html::overview(&ov, &|p| self.link(p)))
            }
            "/status/style.css" => {
                let mut r = Response { status: 200, headers: Vec::new(), body: CSS.into() };
                r.headers.push(("Content-Type".into(), "text/css; charset=utf-8".into()));
                r.headers.push(("Cache-Control".into(), "max-age=300".into()));
                r
            }
            "/status/ref" | "/status/run" => {
                let (Some(project), Some(given)) = (req.query_param("project"), req.query_param("ref")) else {
                    return error_page(400, "`project` and `ref` are required", json);
                };
                let Some(refname) = resolve_ref(&state, &project, &given) else {
                    return error_page(404, "no such project or ref", json);
                };
                let history = match read_retrying(|| {
                    state::load_history(&state::history_path(&self.state, &project, &refname), &refname)
                }) {
                    Ok(h) => h,
                    Err(e) => return error_page(503, &format!("{e:#}"), json),
                };
                if path == "/status/ref" {
                    self.ref_page(&project, &refname, &history, json)
                } else {
                    self.run_page(req, &project, &refname, &history, json)
                }
            }
            _ => error_page(404, "no such page", json),
        }
    }

    fn overview(&self, state: &State, req: &Request) -> Overview {
        let now = crate::clock::now();
        let query = req.query_param("q").unwrap_or_default();
        let result = req.query_param("result").unwrap_or_default();
        let wanted = |row: &RefStatus| {
            (query.is_empty() || row.project.contains(&query) || row.refname.contains(&query))
                && (result.is_empty() || row.result == result)
        };
        let mut rows: Vec<RefStatus> = Vec::new();
        for (name, project) in &state.project {
            for (refname, r) in &project.refs {
                let row = RefStatus::new(name, refname, r, now, None);
                if wanted(&row) {
                    rows.push(row);
                }
            }
        }
        // What is red comes first; then by project and ref as the state keeps them.
        rows.sort_by_key(|r| !matches!(r.result.as_str(), "failed" | "timed_out"));
        let total = rows.len();
        let pages = total.div_ceil(PER_PAGE).max(1);
        let page = req.query_param("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).clamp(1, pages);
        let mut visible: Vec<RefStatus> = rows.into_iter().skip((page - 1) * PER_PAGE).take(PER_PAGE).collect();
        // Deploy histories are read once per project on the page, as `pipe status` does.
        let mut traffic = std::collections::BTreeMap::new();
        for row in &mut visible {
            let times = traffic
                .entry(row.project.clone())
                .or_insert_with(|| report::commit_to_traffic(&self.state, &row.project));
            row.commit_to_traffic_seconds = times.get(&row.refname).copied();
        }
        let mut previews = std::collections::BTreeMap::new();
        for row in visible.iter_mut().filter(|r| r.kind == crate::refs::RefKind::PullRequest) {
            let urls =
                previews.entry(row.project.clone()).or_insert_with(|| report::preview_urls(&self.state, &row.project));
            row.preview_url = urls.get(&row.refname).cloned();
        }
        let durations = visible
            .iter()
            .map(|r| {
                let path = state::history_path(&self.state, &r.project, &r.refname);
                let history = state::load_history(&path, &r.refname).ok()?;
                let run = history.runs.last()?;
                Some(run.stages.iter().map(|s| s.seconds).sum())
            })
            .collect();
        let targets = state.project.keys().flat_map(|p| self.targets(p)).collect();
        Overview {
            report: StatusReport { version: 1, refs: visible },
            durations,
            total,
            page,
            pages,
            query,
            result,
            targets,
        }
    }

    /// A project's deploy targets, from the files under `deploys/PROJECT/`.
    fn targets(&self, project: &str) -> Vec<Target> {
        let Some(dir) = state::deploys_path(&self.state, project, "x").parent().map(Path::to_path_buf) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut targets: Vec<Target> = entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?.strip_suffix(".toml")?.to_string();
                let history = read_retrying(|| state::load_deploys(&path)).ok()?;
                let current = history.deploys.iter().rev().find(|d| d.result == DeployResult::Succeeded).cloned();
                let deploys = history.deploys.into_iter().rev().collect();
                Some(Target { project: project.to_string(), target: name, current, deploys })
            })
            .collect();
        targets.sort_by(|a, b| a.target.cmp(&b.target));
        targets
    }

    fn ref_page(&self, project: &str, refname: &str, history: &History, json: bool) -> Response {
        if json {
            return json_response(200, json!({"version": 1, "project": project, "ref": refname, "runs": history.runs}));
        }
        html_response(200, html::ref_page(project, refname, history, &|p| self.link(p)))
    }

    fn run_page(&self, req: &Request, project: &str, refname: &str, history: &History, json: bool) -> Response {
        let number = req.query_param("run").and_then(|n| n.parse::<u64>().ok());
        let run = match number {
            Some(n) => history.runs.iter().find(|r| r.number == n),
            None => history.runs.last(),
        };
        let Some(run) = run else { return error_page(404, "no such run", json) };
        let offset = req.query_param("offset").and_then(|o| o.parse::<u64>().ok()).unwrap_or(0);
        let window = log::window(&run.log, offset, log::CHUNK).unwrap_or(log::Window {
            text: String::new(),
            offset: 0,
            next: 0,
            len: 0,
        });
        if json {
            let mut doc = serde_json::to_value(LogsReport::new(project, refname, run, window.text)).unwrap_or_default();
            doc["offset"] = json!(window.offset);
            doc["next_offset"] = json!((window.next < window.len).then_some(window.next));
            doc["log_size"] = json!(window.len);
            return json_response(200, doc);
        }
        html_response(200, html::run_page(project, refname, run, &window, &|p| self.link(p)))
    }

    fn badge(&self, req: &Request) -> Response {
        let Some(rest) = req.path.strip_prefix("/badge/").and_then(|r| r.strip_suffix(".svg")) else {
            return Response::empty(404);
        };
        let rest = percent_decode_path(rest);
        let Some((project, what)) = rest.split_once('/') else { return Response::empty(404) };
        let state = read_retrying(|| state::load(&self.state)).unwrap_or_default();
        // Only a project the state knows names a directory: `..` or a slash never reaches a path.
        let known = state.project.contains_key(project);
        let deploy_target =
            what.strip_prefix("deploy/").filter(|_| known).map(|t| (t, state::deploys_path(&self.state, project, t)));
        let (label, message, colour) = match deploy_target {
            Some((target, path)) if path.exists() => {
                let history = read_retrying(|| state::load_deploys(&path)).unwrap_or_default();
                let last = history.deploys.last();
                let current = history.deploys.iter().rev().find(|d| d.result == DeployResult::Succeeded);
                let colour = match last.map(|d| d.result) {
                    Some(DeployResult::Succeeded) => badge::GREEN,
                    Some(DeployResult::RolledBack) => badge::YELLOW,
                    Some(DeployResult::Failed) => badge::RED,
                    None => badge::GREY,
                };
                let message = match (current, last.map(|d| d.result)) {
                    (Some(d), Some(DeployResult::Succeeded)) => crate::output::short(&d.commit)[..7].to_string(),
                    (Some(d), Some(DeployResult::RolledBack)) => {
                        format!("{} (rolled back)", &crate::output::short(&d.commit)[..7])
                    }
                    (_, Some(DeployResult::Failed)) => "failed".into(),
                    _ => "unknown".into(),
                };
                (format!("deploy {target}"), message, colour)
            }
            _ => {
                let last =
                    resolve_ref(&state, project, what).and_then(|r| state.project.get(project)?.refs.get(&r).cloned());
                let (message, colour) = match last.as_ref().map(|r| (r.pending, r.last.as_ref())) {
                    None => ("unknown".to_string(), badge::GREY),
                    Some((true, _)) | Some((false, None)) => ("pending".into(), badge::YELLOW),
                    Some((false, Some(l))) => match l.result {
                        Outcome::Passed | Outcome::Skipped => ("passing".into(), badge::GREEN),
                        Outcome::Failed => (format!("{} failing", l.stage), badge::RED),
                        Outcome::TimedOut => (format!("{} timed out", l.stage), badge::RED),
                        Outcome::Interrupted => ("interrupted".into(), badge::GREY),
                    },
                };
                ("build".to_string(), message, colour)
            }
        };
        let svg = badge::svg(&label, &message, colour);
        let digest = <sha2::Sha256 as sha2::Digest>::digest(svg.as_bytes());
        let etag = format!("\"{}\"", digest[..10].iter().map(|b| format!("{b:02x}")).collect::<String>());
        let mut r = if req.header("if-none-match").is_some_and(|h| h.split(',').any(|t| t.trim() == etag)) {
            Response::empty(304)
        } else {
            Response { status: 200, headers: vec![("Content-Type".into(), "image/svg+xml".into())], body: svg }
        };
        r.headers.push(("Cache-Control".into(), "no-cache, max-age=0".into()));
        r.headers.push(("ETag".into(), etag));
        r.headers.push(("Content-Security-Policy".into(), "default-src 'none'; style-src 'unsafe-inline'".into()));
        r.headers.push(("X-Content-Type-Options".into(), "nosniff".into()));
        r
    }
}

/// One of the [`RENDERS`] slots, given back on drop (a panicking render included).
struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Slot<'a> {
    fn take(count: &'a std::sync::atomic::AtomicUsize) -> Option<Slot<'a>> {
        use std::sync::atomic::Ordering;
        if count.fetch_add(1, Ordering::AcqRel) >= RENDERS {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(count))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A ref given as its full name (`refs/heads/dev`) or as shown (`dev`, `pull/12`).
fn resolve_ref(state: &State, project: &str, given: &str) -> Option<String> {
    let refs = &state.project.get(project)?.refs;
    [given.to_string(), format!("refs/heads/{given}"), format!("refs/{given}/head")]
        .into_iter()
        .find(|r| refs.contains_key(r))
}

/// A state file read again once when it failed: a reader that raced a rename sees the new file.
fn read_retrying<T>(read: impl Fn() -> anyhow::Result<T>) -> anyhow::Result<T> {
    read().or_else(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        read()
    })
}

fn percent_decode_path(text: &str) -> String {
    let req = Request { query: format!("p={}", text.replace('+', "%2B")), ..Default::default() };
    req.query_param("p").unwrap_or_default()
}

fn security_headers(r: &mut Response) {
    r.headers.push(("Content-Security-Policy".into(), CSP.into()));
    r.headers.push(("X-Content-Type-Options".into(), "nosniff".into()));
    r.headers.push(("Referrer-Policy".into(), "no-referrer".into()));
    r.headers.push(("Cache-Control".into(), "no-store".into()));
}

fn html_response(status: u16, body: maud::Markup) -> Response {
    let mut r = Response { status, headers: Vec::new(), body: body.into_string() };
    r.headers.push(("Content-Type".into(), "text/html; charset=utf-8".into()));
    security_headers(&mut r);
    r
}

fn json_response(status: u16, doc: serde_json::Value) -> Response {
    let mut r = Response::json(status, doc);
    security_headers(&mut r);
    r
}

fn error_page(status: u16, message: &str, json: bool) -> Response {
    if json {
        return json_response(status, json!({"error": message}));
    }
    html_response(status, html::error(status, message))
}

/// Standard base64 (with or without padding); `None` when it is not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_beyond_the_bound_are_refused_and_slots_come_back() {
        let count = std::sync::atomic::AtomicUsize::new(0);
        let held: Vec<_> = (0..RENDERS).map(|_| Slot::take(&count).unwrap()).collect();
        assert!(Slot::take(&count).is_none());
        drop(held);
        assert!(Slot::take(&count).is_some());
    }

    #[test]
    fn basic_auth_is_decoded() {
        assert_eq!(base64_decode("dTpzM2NyZXQ=").unwrap(), b"u:s3cret");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn the_xss_branch_of_the_tests_is_a_valid_ref_name() {
        assert!(crate::refs::valid_name("refs/heads/<img/src=x/onerror=alert(1)>"));
    }
}
