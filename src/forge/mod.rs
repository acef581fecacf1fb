//! The forge: commit statuses on GitHub, Gitea/Forgejo and GitLab, and the outbox that keeps
//! the ones a forge did not take until the next tick.
//!
//! A stage start or end becomes an [`OutboxStatus`] in pipe's words (`pending`, `success`,
//! `failure`, `error`); [`call`] turns it into the forge's documented request (pure, unit
//! tested); the [`Reporter`] sends in order, keeps what fails in `forge/outbox.toml` beside
//! the state, and honours the forges' rate-limit headers by deferring, never by failing a run.

pub(crate) mod discover;
mod elements;
pub(crate) mod hook_secret;
pub(crate) mod pulls;
pub(crate) mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::config::{Config, Forge, ForgeKind, Project, SecretRef};
use crate::output::Output;
use crate::secret::{self, Secret};
use crate::state::{self, Outbox, OutboxStatus};

/// GitHub refuses descriptions over 140 characters; the others get the same.
pub(crate) const MAX_DESCRIPTION: usize = 140;
/// Statuses kept waiting at most; beyond it the oldest are dropped with a warning.
pub(crate) const MAX_OUTBOX: usize = 2000;
/// How long one status request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A status as pipe decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Pending,
    Success,
    Failure,
    /// Interrupted, or the engine or a remote did not answer.
    Error,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// The forge's word for a state. GitHub and Gitea share theirs; GitLab has `running` for a
/// stage under way (its `pending` means queued) and `failed` for both failure and error.
pub(crate) fn wire_state(kind: ForgeKind, state: &str) -> &'static str {
    match (kind, state) {
        (ForgeKind::Gitlab, "pending") => "running",
        (ForgeKind::Gitlab, "success") => "success",
        (ForgeKind::Gitlab, _) => "failed",
        (_, "pending") => "pending",
        (_, "success") => "success",
        (_, "failure") => "failure",
        _ => "error",
    }
}

/// One HTTP request to a forge, without the token (added by [`auth_header`] when sent).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: serde_json::Value,
}

/// The documented status request of each forge:
/// - GitHub: `POST {api}/repos/{owner}/{repo}/statuses/{sha}` with `state`, `target_url`,
///   `description`, `context` (docs.github.com/en/rest/commits/statuses).
/// - Gitea/Forgejo: `POST {api}/repos/{owner}/{repo}/statuses/{sha}`, same fields
///   (gitea.com/api/swagger, `CreateStatusOption`).
/// - GitLab: `POST {api}/projects/{id}/statuses/{sha}` with `state`, `name`, `target_url`,
///   `description` (docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit).
pub(crate) fn call(forge: &Forge, status: &OutboxStatus) -> Call {
    let api = forge.api_base();
    let state = wire_state(forge.kind, &status.state);
    let mut body = match forge.kind {
        ForgeKind::Gitlab => json!({"state": state, "name": status.context, "description": status.description}),
        _ => json!({"state": state, "context": status.context, "description": status.description}),
    };
    if let Some(url) = &status.target_url {
        body["target_url"] = json!(url);
    }
    let (url, headers) = match forge.kind {
        ForgeKind::Github => (
            format!("{api}/repos/{}/statuses/{}", status.repo, status.commit),
            vec![("Accept", "application/vnd.github+json".into()), ("X-GitHub-Api-Version", "2022-11-28".into())],
        ),
        ForgeKind::Gitea => (
            format!("{api}/repos/{}/statuses/{}", status.repo, status.commit),
            vec![("Accept", "application/json".into())],
        ),
        ForgeKind::Gitlab => (
            format!("{api}/projects/{}/statuses/{}", encode_path(&status.repo), status.commit),
            vec![("Accept", "application/json".into())],
        ),
    };
    Call { url, headers, body }
}

/// The token's header: `Authorization: Bearer` (GitHub), `Authorization: token` (Gitea),
/// `PRIVATE-TOKEN` (GitLab).
pub(crate) fn auth_header(kind: ForgeKind, token: &Secret) -> (&'static str, String) {
    match kind {
        ForgeKind::Github => ("Authorization", format!("Bearer {}", token.reveal())),
        ForgeKind::Gitea => ("Authorization", format!("token {}", token.reveal())),
        ForgeKind::Gitlab => ("PRIVATE-TOKEN", token.reveal().to_string()),
    }
}

/// A GitLab project path as one URL segment (`group/project` → `group%2Fproject`).
fn encode_path(repo: &str) -> String {
    repo.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

/// A link template with each `{key}` replaced by its value percent-encoded as one URL
/// component (every byte but ASCII letters, digits and `-._~`), in one pass: a value can
/// neither add a path segment (`/`, `../`, `%2F` stays `%252F`), a query or a fragment, nor
/// put another `{key}` into the link.
pub(crate) fn link_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let key = &after[..close];
            values.iter().find(|(k, _)| *k == key).map(|(_, v)| (close, v))
        });
        match value {
            Some((close, value)) => {
                out.push_str(&encode_component(value));
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A value as one URL component: every byte but ASCII letters, digits and `-._~` as `%XX`.
pub(crate) fn encode_component(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A description on one line, at most [`MAX_DESCRIPTION`] characters (an ellipsis marks a cut).
pub(crate) fn bounded(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_DESCRIPTION {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_DESCRIPTION - 1).collect();
    cut.push('…');
    cut
}

/// When a forge may be asked again, from an answer's status and headers (`Retry-After`,
/// GitHub's and Gitea's `X-RateLimit-Remaining`/`-Reset`, GitLab's `RateLimit-*`); `None`
/// when it may be asked now. A rate-limited answer without a usable header waits a minute.
pub(crate) fn defer_until(status: u16, header: &dyn Fn(&str) -> Option<String>, now: i64) -> Option<i64> {
    let number = |name: &str| header(name).and_then(|v| v.trim().parse::<i64>().ok());
    let remaining = number("x-ratelimit-remaining").or_else(|| number("ratelimit-remaining"));
    let reset = number("x-ratelimit-reset").or_else(|| number("ratelimit-reset")).filter(|r| *r > now);
    if let Some(after) = number("retry-after") {
        return Some(now + after.clamp(1, 3600));
    }
    let limited = status == 429 || (status == 403 && remaining == Some(0));
    if remaining == Some(0) || limited {
        return Some(reset.map_or(now + 60, |r| r.min(now + 3600)).max(now + 1));
    }
    None
}

/// The commit statuses of one project, or nothing when it names no forge.
#[derive(Clone)]
pub(crate) struct Target<'a> {
    forge_name: &'a str,
    forge: &'a Forge,
    repo: &'a str,
    project: &'a str,
    refname: &'a str,
    commit: &'a str,
    /// The status page's public URL, the default link when the forge names no `target_url`.
    page: Option<&'a str>,
    /// The run the statuses are of, once its build recorded it: the link is then its page.
    run: Option<u64>,
}

impl Target<'_> {
    /// The same statuses, linking to the page of run `run` (the ref's page without one).
    pub(crate) fn with_run(&self, run: Option<u64>) -> Self {
        Target { run, ..self.clone() }
    }

    fn status(&self, context: &str, state: State, description: &str) -> OutboxStatus {
        let target_url = self.forge.target_url.as_ref().map(|t| {
            link_template(
                t,
                &[("project", self.project), ("ref", self.refname), ("commit", self.commit), ("context", context)],
            )
        });
        let target_url = target_url.or_else(|| {
            self.page.map(|p| match self.run {
                Some(run) => crate::page::run_url(p, self.project, self.refname, run),
                None => crate::page::ref_url(p, self.project, self.refname),
            })
        });
        OutboxStatus {
            forge: self.forge_name.to_string(),
            repo: self.repo.to_string(),
            commit: self.commit.to_string(),
            context: context.to_string(),
            state: state.as_str().to_string(),
            description: bounded(description),
            target_url,
            attempts: 0,
        }
    }
}

/// Sends statuses in order and keeps those not delivered in the outbox.
pub(crate) struct Reporter<'a> {
    out: Output,
    config: &'a Config,
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` when the outbox could not be read: statuses are not sent this tick, and the file
    /// is left as it is for a person to look at.
    outbox: Option<Outbox>,
    /// What the outbox file holds now (empty when there is none).
    saved: Outbox,
    /// Forges that failed this tick: later statuses wait for the next tick.
    down: BTreeSet<String>,
    tokens: BTreeMap<String, Option<Secret>>,
}

impl<'a> Reporter<'a> {
    /// Opens the outbox beside the state (while the state lock is held).
    pub(crate) fn open(out: Output, config: &'a Config, state_path: &Path) -> Reporter<'a> {
        let path = state::outbox_path(state_path);
        let outbox = if config.forges.is_empty() && !path.exists() {
            Some(Outbox { schema: state::SCHEMA, ..Outbox::default() })
        } else {
            match state::load_outbox(&path) {
                Ok(o) => Some(o),
                Err(e) => {
                    out.warn(format!("commit statuses are not sent: {e:#}"));
                    None
                }
            }
        };
        let saved = outbox.clone().unwrap_or_default();
        Reporter {
            out,
            config,
            path,
            inner: Mutex::new(Inner { outbox, saved, down: BTreeSet::new(), tokens: BTreeMap::new() }),
        }
    }

    /// The statuses of one commit of a project, `None` when the project names no forge.
    pub(crate) fn target<'t>(
        &'t self,
        name: &'t str,
        project: &'t Project,
        refname: &'t str,
        commit: &'t str,
    ) -> Option<Target<'t>> {
        let forge_name = project.forge.as_deref()?;
        let forge = self.config.forges.get(forge_name)?;
        let repo = project.forge_repo.as_deref()?;
        let page = crate::page::public_url(self.config);
        Some(Target { forge_name, forge, repo, project: name, refname, commit, page, run: None })
    }

    /// Queues a status and sends what can be sent.
    pub(crate) fn report(&self, target: Option<&Target<'_>>, context: &str, state: State, description: &str) {
        self.report_link(target, context, state, description, None);
    }

    /// [`Reporter::report`] with its own `target_url` (a preview's address).
    pub(crate) fn report_link(
        &self,
        target: Option<&Target<'_>>,
        context: &str,
        state: State,
        description: &str,
        link: Option<&str>,
    ) {
        let Some(target) = target else { return };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(outbox) = inner.outbox.as_mut() else { return };
        let mut status = target.status(context, state, description);
        if let Some(link) = link {
            status.target_url = Some(link.to_string());
        }
        outbox.statuses.push(status);
        if outbox.statuses.len() > MAX_OUTBOX {
            let dropped = outbox.statuses.len() - MAX_OUTBOX;
            outbox.statuses.drain(..dropped);
            self.out.warn(format!("forge outbox full: {dropped} oldest commit status(es) dropped"));
        }
        self.deliver(&mut inner);
    }

    /// Sends what waits in the outbox (the tick's start: statuses of earlier ticks).
    pub(crate) fn flush(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.deliver(&mut inner);
    }

    fn deliver(&self, inner: &mut Inner) {
        let now = crate::clock::now().as_second();
        let Inner { outbox, saved, down, tokens } = inner;
        let Some(outbox) = outbox.as_mut() else { return };
        outbox.deferred.retain(|_, until| *until > now);
        let mut kept = Vec::new();
        for mut status in std::mem::take(&mut outbox.statuses) {
            let forge_name = status.forge.clone();
            let blocked = down.contains(&forge_name) || outbox.deferred.contains_key(&forge_name);
            let Some(forge) = self.config.forges.get(&forge_name) else {
                self.out.warn(format!("commit status for `[forge.{forge_name}]` dropped: no such forge any more"));
                continue;
            };
            if blocked {
                kept.push(status);
                continue;
            }
            let token = tokens.entry(forge_name.clone()).or_insert_with(|| {
                let reference = SecretRef::from_pair(&forge.token_env, &forge.token_file)?;
                match secret::resolve(&reference, &format!("forge.{forge_name}.token")) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.out.warn(format!("commit statuses wait: {e:#}"));
                        None
                    }
                }
            });
            let Some(token) = token.clone() else {
                down.insert(forge_name);
                kept.push(status);
                continue;
            };
            match send(forge, &token, &status, now) {
                Sent::Delivered(defer) => {
                    if let Some(until) = defer {
                        outbox.deferred.insert(forge_name, until);
                    }
                }
                Sent::Refused(code) => self.out.warn(format!(
                    "forge `{forge_name}` refused the status {} of {} ({code}); it is dropped",
                    status.context,
                    crate::output::short(&status.commit)
                )),
                Sent::Later { why, defer } => {
                    self.out.warn(format!("forge `{forge_name}`: commit statuses wait for the next tick: {why}"));
                    match defer {
                        Some(until) => {
                            outbox.deferred.insert(forge_name.clone(), until);
                        }
                        None => {
                            down.insert(forge_name);
                        }
                    }
                    status.attempts += 1;
                    kept.push(status);
                }
            }
        }
        outbox.statuses = kept;
        let same = |a: &Outbox, b: &Outbox| a.statuses == b.statuses && a.deferred == b.deferred;
        if same(outbox, saved) {
            return;
        }
        match state::save_outbox(&self.path, outbox) {
            Ok(()) => *saved = outbox.clone(),
            Err(e) => self.out.warn(format!("{e:#}")),
        }
    }
}

enum Sent {
    /// Taken; later statuses wait until the time given, if the forge said so.
    Delivered(Option<i64>),
    /// The forge refused this request for good (a 4xx that is neither a limit nor auth).
    Refused(u16),
    /// Not taken now: kept, the forge waits until the time given or the next tick.
    Later { why: String, defer: Option<i64> },
}

fn send(forge: &Forge, token: &Secret, status: &OutboxStatus, now: i64) -> Sent {
    let client = match client() {
        Ok(c) => c,
        Err(why) => return Sent::Later { why, defer: None },
    };
    let call = call(forge, status);
    let (auth_name, auth_value) = auth_header(forge.kind, token);
    let mut request = client
        .post(&call.url)
        .header(auth_name, auth_value)
        .header("Content-Type", "application/json")
        .body(call.body.to_string());
    for (k, v) in &call.headers {
        request = request.header(*k, v);
    }
    let response = match request.send() {
        Ok(r) => r,
        Err(e) => return Sent::Later { why: secret::http_cause(&e), defer: None },
    };
    let code = response.status().as_u16();
    let redirect = crate::http::unfollowed(&response);
    let headers = response.headers().clone();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let defer = defer_until(code, &header, now);
    match code {
        200..=299 => Sent::Delivered(defer),
        300..=399 => Sent::Later { why: format!("the forge {}", redirect.unwrap_or_default()), defer: None },
        429 => Sent::Later { why: format!("rate limited ({code})"), defer },
        403 if defer.is_some() => Sent::Later { why: format!("rate limited ({code})"), defer },
        401 | 403 | 404 => {
            Sent::Later { why: format!("the forge answered {code}: check the token and `forge_repo`"), defer: None }
        }
        400..=499 => Sent::Refused(code),
        _ => Sent::Later { why: format!("the forge answered {code}"), defer },
    }
}

/// The process's one client for forge requests (built on first use).
fn client() -> Result<&'static reqwest::blocking::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::blocking::Client, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            crate::http::builder(crate::http::Redirects::SameOrigin)
                .timeout(TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {}", secret::http_cause(&e)))
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_in_a_link_template_stays_in_its_component() {
        let t = "https://ci.example.com/p/{project}/r/{ref}?c={commit}#{context}";
        let link = |refname: &str| {
            super::link_template(
                t,
                &[("project", "app"), ("ref", refname), ("commit", "0a1b"), ("context", "pipe/test")],
            )
        };
        assert_eq!(link("refs/heads/main"), "https://ci.example.com/p/app/r/refs%2Fheads%2Fmain?c=0a1b#pipe%2Ftest");
        for (hostile, encoded) in [
            ("refs/heads/../../admin", "refs%2Fheads%2F..%2F..%2Fadmin"),
            ("refs/heads/x?admin=1#y", "refs%2Fheads%2Fx%3Fadmin%3D1%23y"),
            ("refs/heads/%2F..%2Fadmin", "refs%2Fheads%2F%252F..%252Fadmin"),
            ("refs/heads/a b", "refs%2Fheads%2Fa%20b"),
            ("refs/heads/é", "refs%2Fheads%2F%C3%A9"),
            ("refs/heads/{commit}", "refs%2Fheads%2F%7Bcommit%7D"),
        ] {
            let got = link(hostile);
            assert_eq!(got, format!("https://ci.example.com/p/app/r/{encoded}?c=0a1b#pipe%2Ftest"), "{hostile}");
        }
        assert_eq!(super::link_template("x/{unknown}/{ref", &[("ref", "r")]), "x/{unknown}/{ref");
    }

    use super::*;

    fn forge(kind: ForgeKind, api: Option<&str>) -> Forge {
        Forge {
            kind,
            api: api.map(str::to_string),
            token_env: Some("T".into()),
            token_file: None,
            target_url: None,
            discover: None,
        }
    }

    fn status(repo: &str, state: &str) -> OutboxStatus {
        OutboxStatus {
            forge: "f".into(),
            repo: repo.into(),
            commit: "0123abcd".into(),
            context: "pipe/test".into(),
            state: state.into(),
            description: "failed after 3s".into(),
            target_url: Some("https://ci.example.com/p/0123abcd".into()),
            attempts: 0,
        }
    }

    #[test]
    fn each_forge_gets_its_documented_request() {
        let gh = call(&forge(ForgeKind::Github, None), &status("o/r", "failure"));
        assert_eq!(gh.url, "https://api.github.com/repos/o/r/statuses/0123abcd");
        assert_eq!(
            gh.body,
            json!({"state": "failure", "context": "pipe/test", "description": "failed after 3s", "target_url": "https://ci.example.com/p/0123abcd"})
        );
        assert!(gh.headers.contains(&("X-GitHub-Api-Version", "2022-11-28".into())));
        let ghe = call(&forge(ForgeKind::Github, Some("https://ghe.example.com/api/v3/")), &status("o/r", "error"));
        assert_eq!(ghe.url, "https://ghe.example.com/api/v3/repos/o/r/statuses/0123abcd");
        let gitea = call(&forge(ForgeKind::Gitea, Some("https://git.example.com/api/v1")), &status("o/r", "pending"));
        assert_eq!(gitea.url, "https://git.example.com/api/v1/repos/o/r/statuses/0123abcd");
        assert_eq!(gitea.body["state"], "pending");
        let gl = call(&forge(ForgeKind::Gitlab, Some("https://gitlab.com/api/v4")), &status("group/sub/p", "failure"));
        assert_eq!(gl.url, "https://gitlab.com/api/v4/projects/group%2Fsub%2Fp/statuses/0123abcd");
        assert_eq!(gl.body["state"], "failed");
        assert_eq!(gl.body["name"], "pipe/test");
        assert!(gl.body.get("context").is_none());
        let token = crate::secret::random();
        assert_eq!(auth_header(ForgeKind::Gitlab, &token).0, "PRIVATE-TOKEN");
        assert!(auth_header(ForgeKind::Gitea, &token).1.starts_with("token "));
        assert!(auth_header(ForgeKind::Github, &token).1.starts_with("Bearer "));
    }

    #[test]
    fn gitlab_states_are_gitlabs_words() {
        let words: Vec<_> =
            ["pending", "success", "failure", "error"].iter().map(|s| wire_state(ForgeKind::Gitlab, s)).collect();
        assert_eq!(words, ["running", "success", "failed", "failed"]);
    }

    #[test]
    fn descriptions_are_one_bounded_line() {
        let long = format!("failed: {}\nsecond line", "x".repeat(300));
        let text = bounded(&long);
        assert_eq!(text.chars().count(), MAX_DESCRIPTION);
        assert!(!text.contains('\n'));
        assert_eq!(bounded("é ".repeat(200).as_str()).chars().count(), MAX_DESCRIPTION, "cut on characters");
    }

    #[test]
    fn rate_limits_defer() {
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(defer_until(201, &h(&[("x-ratelimit-remaining", "10")]), 100), None);
        assert_eq!(
            defer_until(201, &h(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "500")]), 100),
            Some(500)
        );
        assert_eq!(defer_until(403, &h(&[("x-ratelimit-remaining", "0")]), 100), Some(160));
        assert_eq!(defer_until(429, &h(&[("retry-after", "30")]), 100), Some(130));
        assert_eq!(defer_until(429, &h(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "200")]), 100), Some(200));
        assert_eq!(defer_until(403, &h(&[]), 100), None, "a plain 403 is not a limit");
    }
}
