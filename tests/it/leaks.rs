//! What must not leave.
//!
//! A credential pipe adds to a request never reaches another origin, whatever a server answers:
//! each forge's commit statuses and organization listing with its real credential spelling,
//! Slack and generic notifications, a deploy webhook and its health check, git listing and
//! fetching over HTTP. Each runs against a peer that answers a redirect to another loopback
//! port, the canary, which must receive nothing; then the same path without the redirect works.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::http::Request;
use crate::support::{GitHttpServer, TestEnv, WorkRepo};

/// How a [`Peer`] answers.
#[derive(Clone)]
enum Answer {
    /// This status with the body `{}`.
    Status(u16),
    /// This 3xx to the origin given, plus the request's own path.
    Redirect(u16, String),
}

/// A recording HTTP/1.1 peer on 127.0.0.1, one connection at a time.
struct Peer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
}

impl Peer {
    fn start(answer: Answer) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, how, stopped) = (requests.clone(), answer.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Some(request) = read_request(&stream) else { continue };
                let path = request.path.clone();
                seen.lock().unwrap().push(request);
                let reply = match how.lock().unwrap().clone() {
                    Answer::Status(code) => format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                    ),
                    Answer::Redirect(code, origin) => format!(
                        "HTTP/1.1 {code} X\r\nLocation: {origin}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                };
                let mut stream = stream;
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Peer { port, requests, answer, stop }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn taken(&self) -> Vec<Request> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_request(stream: &std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0; len];
    let _ = reader.read_exact(&mut body);
    Some(Request { method, path, headers, body })
}

/// The canary received nothing at all: no request, so no header, userinfo or secret path.
fn assert_untouched(canary: &Peer, what: &str) {
    let got = canary.taken();
    let shown: Vec<_> = got.iter().map(|r| (&r.method, &r.path, &r.headers)).collect();
    assert!(got.is_empty(), "{what}: the other origin received {shown:?}");
}

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    use std::io::Write as _;
    let mut child =
        Command::new("base64").args(["-w", "0"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("base64");
    child.stdin.take().unwrap().write_all(format!("{user}:{password}").as_bytes()).unwrap();
    format!("Basic {}", String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).trim())
}

/// A project whose image builds from the base image and whose test passes.
struct App {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    _images: ProjectImages,
}

impl App {
    fn new(docker: &Docker, parent: Option<&Path>) -> App {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN);
        let project = unique_name("lk").replace("pipe-test-", "");
        let repo = WorkRepo::new(parent.unwrap_or(env.path()), "app");
        let image = format!("pipe-test/{project}");
        repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
        repo.write(".pipe.toml", &format!("image = {image:?}\ntest = \"true\"\n"));
        App { _images: ProjectImages { project: project.clone() }, env, repo, project, image }
    }

    fn commit(&self, n: u32) -> String {
        self.repo.write("www/index.html", &format!("version {n}\n"));
        self.repo.commit_to("main", &format!("version {n}"))
    }

    /// The pipeline file: `top` tables, then the project from `repo` with `extra` keys.
    fn config(&self, top: &str, repo: &str, extra: &str) {
        self.env.config(&format!(
            "[pipe]\nworkspace = \"{ws}\"\n\n{top}\n\n[project.{p}]\nrepo = \"{repo}\"\nbranches = [\"main\"]\n{extra}\n",
            ws = self.env.path().join("work").display(),
            p = self.project,
        ));
    }
}

const FORGES: [(&str, &str, &str, &str); 3] = [
    ("github", "", "acme/app", "/repos/acme/app/statuses/"),
    ("gitea", "/api/v1", "acme/app", "/api/v1/repos/acme/app/statuses/"),
    ("gitlab", "/api/v4", "group/app", "/api/v4/projects/group%2Fapp/statuses/"),
];

#[test]
fn each_forges_status_token_stays_on_the_forges_origin() {
    let Some(docker) = Docker::require() else { return };
    let canary = Peer::start(Answer::Status(201));
    for (kind, base, repo, path) in FORGES {
        let a = App::new(&docker, None);
        let api = ForgeApi::start(&a.env, kind, None);
        a.config(
            &format!(
                "[forge.origin]\nkind = \"{kind}\"\napi = \"http://127.0.0.1:{}{base}\"\ntoken_env = \"FORGE_TOKEN\"",
                api.port
            ),
            &a.repo.url(),
            &format!("forge = \"origin\"\nforge_repo = \"{repo}\""),
        );
        // The forge answers every status it accepts (its token spelled as documented) with a
        // 307 to another origin, which would take the request again, headers and all.
        api.redirect(Some((307, &canary.origin(), ("/statuses/", "/statuses/"))));
        let sha = a.commit(1);
        let run = a.env.pipe(&["run"]);
        assert_untouched(&canary, kind);
        run.code(0).stderr_has("redirecting to another origin, `http://127.0.0.1:");
        let requests = api.requests();
        assert!(!requests.is_empty(), "{kind}: no status was sent");
        for r in &requests {
            assert_eq!(r["error"], "redirected", "{kind}: the forge did not accept the request as documented: {r}");
        }

        // The legitimate path: without the redirect, the statuses kept are delivered.
        api.redirect(None);
        a.env.pipe(&["run"]).code(0);
        let delivered: Vec<_> = api.requests().into_iter().filter(|r| r["status"] == 201).collect();
        assert!(delivered.iter().any(|r| r["body"]["state"] == "success"), "{kind}: {delivered:?}");
        assert!(delivered.iter().all(|r| r["path"] == format!("{path}{sha}")), "{kind}: {delivered:?}");

        if kind == "github" {
            // A renamed repository: GitHub answers 307 to the new name on its own origin; that
            // redirect is followed, token and all, and the status lands.
            api.redirect(Some((307, "", ("/repos/acme/app/", "/repos/acme/renamed/"))));
            let sha = a.commit(2);
            a.env.pipe(&["run"]).code(0);
            let landed: Vec<_> = api
                .requests()
                .into_iter()
                .filter(|r| r["status"] == 201 && r["path"] == format!("/repos/acme/renamed/statuses/{sha}"))
                .collect();
            assert_eq!(landed.len(), 4, "{:?}", api.requests());
        }
        assert_untouched(&canary, kind);
    }
}

#[test]
fn each_forges_listing_token_stays_on_the_forges_origin() {
    let canary = Peer::start(Answer::Status(200));
    for (kind, base, _, _) in FORGES {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN);
        let api = ForgeApi::start(&env, kind, None);
        api.set_org(&serde_json::json!({"org": "acme", "repos": []}));
        env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "{kind}"
api = "http://127.0.0.1:{port}{base}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"

[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"
"#,
            ws = env.path().join("work").display(),
            port = api.port,
        ));
        api.redirect(Some((302, &canary.origin(), ("/", "/"))));
        let run = env.pipe(&["poll"]);
        assert_untouched(&canary, kind);
        run.stderr_has("a redirect: not followed");
        let listings = api.listings();
        assert!(!listings.is_empty(), "{kind}: nothing was listed");
        for r in &listings {
            assert_eq!(r["error"], "redirected", "{kind}: the forge did not accept the listing as documented: {r}");
        }

        api.redirect(None);
        let run = env.pipe(&["poll"]);
        run.code(0);
        assert!(!run.stderr.contains("redirect"), "{kind}: {}", run.stderr);
        assert!(api.listings().iter().any(|r| r["status"] == 200), "{kind}: {:?}", api.listings());
        assert_untouched(&canary, kind);
    }
}

#[test]
fn notifications_deploy_webhooks_and_health_checks_never_follow_a_redirect_elsewhere() {
    let Some(docker) = Docker::require() else { return };
    let canary = Peer::start(Answer::Status(200));
    let elsewhere = |status| Answer::Redirect(status, canary.origin());
    let slack = Peer::start(elsewhere(302));
    let generic = Peer::start(elsewhere(308));
    let hook = Peer::start(elsewhere(307));
    let health = Peer::start(elsewhere(301));
    let mut a = App::new(&docker, None);
    a.env
        .env("SLACK_URL", &slack.url("/services/T0/B0/slack-secret-path-5150"))
        .env("GENERIC_URL", &format!("http://notify:generic-pw-5150@127.0.0.1:{}/notify", generic.port))
        .env("HOOK_SECRET", "hook-hmac-5150")
        .env("HOOK_TOKEN", "hook-token-5150");
    let p = a.project.clone();
    a.config(
        "[notify.slack]\nwebhook_url_env = \"SLACK_URL\"\non = [\"failure\", \"deploy\"]\n\n\
         [notify.webhook]\nurl_env = \"GENERIC_URL\"\non = [\"failure\", \"deploy\"]",
        &a.repo.url(),
        &format!(
            r#"
[[project.{p}.deploy]]
name = "local"
branches = ["main"]
command = {{ argv = ["true"] }}
health = {{ url = "http://probe:health-pw-5150@127.0.0.1:{health}/healthz", timeout = "2s" }}

[[project.{p}.deploy]]
name = "remote"
branches = ["main"]
webhook = {{ url = "{hook}", secret_env = "HOOK_SECRET", token_env = "HOOK_TOKEN" }}
"#,
            health = health.port,
            hook = hook.url("/hooks/app"),
        ),
    );
    a.commit(1);
    let run = a.env.pipe(&["run"]);
    assert_untouched(&canary, "a redirect from the notifications, the webhook or the health check");
    run.code(1);
    for secret in ["hook-token-5150", "hook-hmac-5150", "generic-pw-5150", "health-pw-5150", "slack-secret-path"] {
        assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret), "`{secret}` printed:\n{}", run.stderr);
    }
    // Each credential went to its own origin, as configured, and no further.
    let probes = health.taken();
    assert!(!probes.is_empty(), "the health check never ran:\n{}", run.stderr);
    assert!(probes.iter().all(|r| r.header("Authorization") == Some(basic("probe", "health-pw-5150").as_str())));
    let posts = hook.taken();
    assert!(!posts.is_empty(), "the webhook was never posted:\n{}", run.stderr);
    assert_eq!(posts[0].header("Authorization"), Some("Bearer hook-token-5150"));
    assert!(posts[0].header("X-Hub-Signature-256").is_some_and(|s| s.starts_with("sha256=")));
    assert!(slack.taken().iter().any(|r| r.path == "/services/T0/B0/slack-secret-path-5150"), "no Slack notice");
    let notices = generic.taken();
    assert!(!notices.is_empty(), "no generic notice:\n{}", run.stderr);
    assert!(notices.iter().all(|r| r.header("Authorization") == Some(basic("notify", "generic-pw-5150").as_str())));
    run.stderr_has("redirecting to another origin, `http://127.0.0.1:");

    // The legitimate path: the same peers answering, the same configuration deploys and notifies.
    for peer in [&slack, &generic, &health] {
        peer.set(Answer::Status(200));
    }
    hook.set(Answer::Status(202));
    a.commit(2);
    a.env.pipe(&["run"]).code(0);
    assert!(!health.taken().is_empty() && !hook.taken().is_empty());
    assert!(!slack.taken().is_empty() && !generic.taken().is_empty(), "the deploy was not notified");
    assert_untouched(&canary, "the legitimate path");
}

#[test]
fn git_over_http_lists_and_fetches_only_from_its_origin() {
    let Some(docker) = Docker::require() else { return };
    let canary = Peer::start(Answer::Status(200));
    let served = TestEnv::new();
    let mut a = App::new(&docker, Some(served.path()));
    let git = GitHttpServer::start(served.path(), Some("ci:git-token-5150"));
    a.env.env("GIT_TOKEN", "git-token-5150");
    a.config("", &git.url("app.git"), "auth = { username = \"ci\", token_env = \"GIT_TOKEN\" }");
    a.commit(1);
    let p = a.project.clone();

    // Listing: the server takes the credential, then redirects elsewhere.
    git.redirect(Some(("GET", &canary.origin())));
    let run = a.env.pipe(&["poll"]);
    assert_untouched(&canary, "the listing");
    run.stderr_has("redirecting to another origin, `http://127.0.0.1:");
    assert!(!run.stderr.contains("git-token-5150"), "{}", run.stderr);

    // Fetching: listed, then the fetch's requests (libcurl through libgit2) are redirected.
    git.redirect(None);
    a.env.pipe(&["poll"]).code(0);
    for method in ["POST", "GET"] {
        git.redirect(Some((method, &canary.origin())));
        let run = a.env.pipe(&["build", &p, "main"]);
        assert_untouched(&canary, &format!("the fetch, redirected on {method}"));
        assert_ne!(run.code, 0, "the fetch followed a {method} redirect:\n{}", run.stderr);
        let log = a.env.pipe(&["logs", &p, "main"]).stdout.clone();
        let said = format!("{}\n{log}", run.stderr);
        assert!(said.contains("redirect"), "a fetch redirected on {method} is not explained:\n{said}");
        assert!(!said.contains("git-token-5150"), "{said}");
        assert_untouched(&canary, &format!("the fetch, redirected on {method}"));
    }

    git.redirect(None);
    a.env.pipe(&["build", &p, "main"]).code(0);
    assert_untouched(&canary, "the legitimate fetch");
    let _ = &a.image;
}

/// Every reqwest client is built by `src/http.rs`, and every libcurl handle takes its rule.
#[test]
fn every_http_client_is_configured_in_one_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root.clone()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path == root.join("http.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            checked += 1;
            for builds in
                ["Client::builder(", "ClientBuilder::new(", "Client::new(", "redirect::Policy", "follow_location("]
            {
                assert!(
                    !text.contains(builds),
                    "`{}` uses `{builds}`: build clients with `crate::http`",
                    path.display()
                );
            }
            if text.contains("Easy::new") || text.contains("Easy2::new") {
                assert!(
                    text.contains("http::curl_refusing_redirects("),
                    "`{}` makes a libcurl handle without `crate::http::curl_refusing_redirects`",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 50, "only {checked} source files found");
}
