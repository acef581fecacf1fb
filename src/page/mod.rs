//! The read-only status page and badges `pipe serve` shows when `[serve.page]` is enabled.
//!
//! Every answer is built from the state files alone (`state.toml`, the ref histories, the deploy
//! histories, the run logs), read without the lock: saves are atomic renames, so a read sees a
//! whole file, and one that fails to parse mid-replacement is read again once. `state.toml` is
//! parsed once per version ([`cache`]); a page reads only the histories of the refs it shows.
//! A run's log is streamed from its file a bounded piece at a time ([`log::stream_html`]), never
//! held whole. Pages are HTML from maud templates (every value escaped), with a strict
//! Content-Security-Policy and no JavaScript; each has a JSON twin (`.json` or `?format=json`)
//! in the schemas of `pipe status --json` and `pipe logs --json`.

mod badge;
mod cache;
mod html;
mod overview;

pub(crate) use html::{ref_url, run_url};

/// The page's public URL when the page is served and has one: where links from commit statuses
/// and notifications point.
pub(crate) fn public_url(config: &crate::config::Config) -> Option<&str> {
    config.serve.page.as_ref().filter(|p| p.enabled).and_then(|p| p.public_url.as_deref())
}
pub(crate) mod log;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{self, SecretRef};
use crate::error::Usage;
use crate::model::{DeployResult, Outcome};
use crate::report::{self, LogsReport, RefStatus, StatusReport};
use crate::secret::{self, Secret};
use crate::server::{Request, Response};
use crate::state::{self, History};
use overview::{Overview, RowRun, Target};

/// Refs one overview page lists.
pub(crate) const PER_PAGE: usize = 100;

/// Page and badge answers built at once (each holds one page of rows and the histories it
/// shows), so a burst of public badge requests cannot take every handler; beyond it `503` with
/// `Retry-After`.
pub(crate) const RENDERS: usize = 4;

/// Logs streamed at once (each holds a file, about 150 KiB of buffers and a handler thread
/// while the client reads); beyond it `503` with `Retry-After`.
pub(crate) const STREAMS: usize = 16;

/// How long one log may take to reach its client.
const STREAM_TIME: Duration = Duration::from_secs(600);

const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const CSS: &str = include_str!("style.css");

/// The page's settings and where it reads.
pub(crate) struct Page {
    state: PathBuf,
    cache: cache::StateCache,
    token: Option<Secret>,
    public_badges: bool,
    base: String,
    rendering: Arc<AtomicUsize>,
    streaming: Arc<AtomicUsize>,
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
        Ok(Some(Page {
            cache: cache::StateCache::new(state.clone()),
            state,
            token,
            public_badges: cfg.public_badges,
            base,
            rendering: Default::default(),
            streaming: Default::default(),
        }))
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
        let Some(_slot) = Slot::take(&self.rendering, RENDERS) else { return Some(busy()) };
        Some(if badge { self.badge(req) } else { self.page(req) })
    }

    /// Whether the page asks for a token at all.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `path` is served without the token (public badges).
    pub(crate) fn is_public(&self, path: &str) -> bool {
        self.token.is_none() || (path.starts_with("/badge/") && self.public_badges)
    }

    /// The token as `Authorization: Bearer T` or as the password of basic auth (any user).
    pub(crate) fn authorized(&self, req: &Request) -> bool {
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
        let state = match read_retrying(|| self.cache.get()) {
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
                let mut r = Response::text(200, CSS.into());
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

    fn overview(&self, state: &cache::Index, req: &Request) -> Overview {
        let now = crate::clock::now();
        let query = req.query_param("q").unwrap_or_default();
        let result = req.query_param("result").unwrap_or_default();
        // Rows are references into the shared index; only the page's rows become `RefStatus`.
        let mut rows: Vec<(&str, &cache::Row)> = state
            .projects()
            .flat_map(|(name, refs)| refs.iter().map(move |r| (name, r)))
            .filter(|(name, r)| {
                (query.is_empty() || name.contains(&query) || state.refname(r).contains(&query))
                    && (result.is_empty() || r.result() == result)
            })
            .collect();
        // What is red comes first; then by project and ref as the state keeps them.
        rows.sort_by_key(|(_, r)| !r.outcome().is_some_and(Outcome::is_failure));
        let total = rows.len();
        let pages = total.div_ceil(PER_PAGE).max(1);
        let page = req.query_param("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).clamp(1, pages);
        let targets: Vec<Target> = state.projects().flat_map(|(p, _)| self.targets(p)).collect();
        // Commit-to-traffic times from the deploy histories just read, per project on the page.
        let mut traffic = std::collections::BTreeMap::new();
        let mut visible: Vec<RefStatus> = rows[(page - 1) * PER_PAGE..total.min(page * PER_PAGE)]
            .iter()
            .map(|&(project, row)| {
                let times = traffic.entry(project).or_insert_with(|| {
                    report::traffic_times(targets.iter().filter(|t| t.project == project).flat_map(|t| &t.deploys))
                });
                let refname = state.refname(row);
                RefStatus::new(project, refname, &state.ref_state(row), now, times.get(refname).copied())
            })
            .collect();
        drop(rows);
        let mut previews = std::collections::BTreeMap::new();
        for row in visible.iter_mut().filter(|r| r.kind == crate::refs::RefKind::PullRequest) {
            let urls =
                previews.entry(row.project.clone()).or_insert_with(|| report::preview_urls(&self.state, &row.project));
            row.preview_url = urls.get(&row.refname).cloned();
        }
        let runs = visible
            .iter()
            .map(|r| {
                let path = state::history_path(&self.state, &r.project, &r.refname);
                let Ok(history) = state::load_history(&path, &r.refname) else { return RowRun::default() };
                let built = history.runs.iter().rev().find(|run| run.commit == r.commit);
                RowRun {
                    seconds: history.runs.last().map(|run| run.stages.iter().map(|s| s.seconds).sum()),
                    subject: built.and_then(|run| run.subject.clone()),
                    author: built.and_then(|run| run.author.clone()),
                    images: built
                        .map(|run| run.images.iter().map(|i| (i.name.clone(), i.built, i.from.clone())).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        Overview {
            report: StatusReport { version: 1, refs: visible },
            runs,
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
        if json {
            let window = log::window(&run.log, offset, log::CHUNK).unwrap_or(log::Window {
                text: String::new(),
                offset: 0,
                next: 0,
                len: 0,
            });
            let mut doc = serde_json::to_value(LogsReport::new(project, refname, run, window.text)).unwrap_or_default();
            doc["offset"] = json!(window.offset);
            doc["next_offset"] = json!((window.next < window.len).then_some(window.next));
            doc["log_size"] = json!(window.len);
            return json_response(200, doc);
        }
        // The log as the file is when the page is asked for: a log still growing is shown up
        // to that length (the page says so), and one replaced meanwhile is read from this inode.
        let file = std::fs::File::open(&run.log).ok();
        let len = file.as_ref().and_then(|f| f.metadata().ok()).map_or(0, |m| m.len());
        let offset = offset.min(len);
        let Some(slot) = Slot::take(&self.streaming, STREAMS) else { return busy() };
        let page = html::run_page(project, refname, run, offset, len, &|p| self.link(p)).into_string();
        let (head, tail) = page.split_once(html::LOG_MARK).unwrap_or((&page, ""));
        let (head, tail) = (head.to_string(), tail.to_string());
        drop(page);
        let deadline = Instant::now() + STREAM_TIME;
        let mut r = html_text(200, head);
        r.stream = Some(Box::new(move |out: &mut dyn std::io::Write| {
            let _slot = slot;
            if let Some(file) = file {
                log::stream_html(file, offset, len, out, deadline)?;
            }
            out.write_all(tail.as_bytes())
        }));
        r
    }

    fn badge(&self, req: &Request) -> Response {
        let Some(rest) = req.path.strip_prefix("/badge/").and_then(|r| r.strip_suffix(".svg")) else {
            return Response::empty(404);
        };
        let rest = percent_decode_path(rest);
        let Some((project, what)) = rest.split_once('/') else { return Response::empty(404) };
        let state = read_retrying(|| self.cache.get()).unwrap_or_default();
        // Only a project the state knows names a directory: `..` or a slash never reaches a path.
        let known = state.refs(project).is_some();
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
                    (_, Some(DeployResult::Failed)) => DeployResult::Failed.to_string(),
                    _ => "unknown".into(),
                };
                (format!("deploy {target}"), message, colour)
            }
            _ => {
                let last =
                    resolve_ref(&state, project, what).and_then(|r| Some(state.ref_state(state.find(project, &r)?)));
                let (message, colour) = match last.as_ref().map(|r| (r.pending, r.last.as_ref())) {
                    None => ("unknown".to_string(), badge::GREY),
                    Some((true, _)) | Some((false, None)) => ("pending".into(), badge::YELLOW),
                    Some((false, Some(l))) => match l.result {
                        Outcome::Passed | Outcome::Skipped => ("passing".into(), badge::GREEN),
                        Outcome::Failed => (format!("{} failing", l.stage), badge::RED),
                        Outcome::TimedOut => (format!("{} timed out", l.stage), badge::RED),
                        Outcome::Interrupted => (Outcome::Interrupted.to_string(), badge::GREY),
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
            let mut r = Response::text(200, svg);
            r.headers.push(("Content-Type".into(), "image/svg+xml".into()));
            r
        };
        r.headers.push(("Cache-Control".into(), "no-cache, max-age=0".into()));
        r.headers.push(("ETag".into(), etag));
        r.headers.push(("Content-Security-Policy".into(), "default-src 'none'; style-src 'unsafe-inline'".into()));
        r.headers.push(("X-Content-Type-Options".into(), "nosniff".into()));
        r
    }
}

/// One of a bounded number of slots ([`RENDERS`], [`STREAMS`]), given back on drop (a
/// panicking render or a stream cut by its client included).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, bound: usize) -> Option<Slot> {
        if count.fetch_add(1, Ordering::AcqRel) >= bound {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn busy() -> Response {
    let mut r = Response::empty(503);
    r.headers.push(("Retry-After".into(), "1".into()));
    r
}

/// A ref given as its full name (`refs/heads/dev`) or as shown (`dev`, `pull/12`).
fn resolve_ref(state: &cache::Index, project: &str, given: &str) -> Option<String> {
    [given.to_string(), format!("refs/heads/{given}"), format!("refs/{given}/head")]
        .into_iter()
        .find(|r| state.find(project, r).is_some())
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
    html_text(status, body.into_string())
}

fn html_text(status: u16, body: String) -> Response {
    let mut r = Response::text(status, body);
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
        let count = Arc::new(AtomicUsize::new(0));
        let held: Vec<_> = (0..RENDERS).map(|_| Slot::take(&count, RENDERS).unwrap()).collect();
        assert!(Slot::take(&count, RENDERS).is_none());
        drop(held);
        assert!(Slot::take(&count, RENDERS).is_some());
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
