//! What must not leave.
//!
//! A credential pipe adds to a request never reaches another origin, whatever a server answers:
//! each forge's commit statuses and organization listing with its real credential spelling,
//! Slack and generic notifications, a deploy webhook and its health check, git listing and
//! fetching over HTTP. Each runs against a peer that answers a redirect to another loopback
//! port, the canary, which must receive nothing; then the same path without the redirect works.
//!
//! An internal network reaches its own containers and nothing else: no resolver, no gateway, no
//! host address, by UDP or TCP, while the test container still reaches its sibling service by
//! name. DNS servers started for the test are the canaries there.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::http::{Request, read_request};
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

/// Each forge as the stand-in plays it: its kind there, `kind` in the pipeline file, the API
/// base's path, the repository and where its statuses go.
const FORGES: [(&str, &str, &str, &str, &str); 4] = [
    ("github", "github", "", "acme/app", "/repos/acme/app/statuses/"),
    ("github-enterprise", "github", "/api/v3", "acme/app", "/api/v3/repos/acme/app/statuses/"),
    ("gitea", "gitea", "/api/v1", "acme/app", "/api/v1/repos/acme/app/statuses/"),
    ("gitlab", "gitlab", "/api/v4", "group/app", "/api/v4/projects/group%2Fapp/statuses/"),
];

#[test]
fn each_forges_status_token_stays_on_the_forges_origin() {
    let Some(docker) = Docker::require() else { return };
    let canary = Peer::start(Answer::Status(201));
    for (kind, spelled, base, repo, path) in FORGES {
        let a = App::new(&docker, None);
        let api = ForgeApi::start(&a.env, kind, None);
        a.config(
            &format!(
                "[forge.origin]\nkind = \"{spelled}\"\napi = \"http://127.0.0.1:{}{base}\"\ntoken_env = \"FORGE_TOKEN\"",
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
    for (kind, spelled, base, _, _) in FORGES {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN);
        let api = ForgeApi::start(&env, kind, None);
        api.set_org(&serde_json::json!({"org": "acme", "repos": []}));
        env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "{spelled}"
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
health = {{ url = "http://health-token-5150@127.0.0.1:{health}/healthz", timeout = "2s" }}

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
    for secret in ["hook-token-5150", "hook-hmac-5150", "generic-pw-5150", "health-token-5150", "slack-secret-path"] {
        assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret), "`{secret}` printed:\n{}", run.stderr);
    }
    // Each credential went to its own origin, as configured, and no further.
    let probes = health.taken();
    assert!(!probes.is_empty(), "the health check never ran:\n{}", run.stderr);
    assert!(probes.iter().all(|r| r.header("Authorization") == Some(basic("health-token-5150", "").as_str())));
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

// ── An internal network has no way out ────────────────────────────────────────────────────

/// A DNS server that must never be asked (`support/dns_canary.py`), on the host or inside a
/// container's network namespace.
struct DnsCanary {
    child: Child,
    record: PathBuf,
}

impl DnsCanary {
    /// Listens on 0.0.0.0:53; with `netns_of`, inside that process's network namespace.
    fn start(dir: &Path, name: &str, netns_of: Option<&str>) -> DnsCanary {
        let record = dir.join(format!("{name}.queries"));
        let ready = dir.join(format!("{name}.ready"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/dns_canary.py");
        let mut cmd = match netns_of {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", pid, "-n", "python3", script]);
                c
            }
            None => {
                let mut c = Command::new("python3");
                c.arg(script);
                c
            }
        };
        cmd.args(["0.0.0.0", "53"]).arg(&record).arg(&ready);
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("the DNS canary `{name}` did not start (is port 53 taken?)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        DnsCanary { child, record }
    }

    fn queries(&self) -> String {
        std::fs::read_to_string(&self.record).unwrap_or_default()
    }
}

impl Drop for DnsCanary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP service on every host address, counting connections.
struct HostTcp {
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HostTcp {
    fn start() -> HostTcp {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = s.write_all(b"host-answer-5150\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HostTcp { port, connections, stop }
    }
}

impl Drop for HostTcp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A network and a container on it, removed on drop.
struct CanaryBox {
    network: String,
    container: String,
}

impl Drop for CanaryBox {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.container]).output();
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

fn docker_out(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).stdin(Stdio::null()).output().expect("docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host's IPv4 addresses but loopback.
fn host_addresses() -> Vec<String> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .filter(|a| !a.starts_with("127."))
        .map(String::from)
        .collect()
}

/// The test network of the `pipe` process `pid`, once it exists.
fn network_of(pid: u32, deadline: Instant) -> Option<String> {
    while Instant::now() < deadline {
        let names = docker_out(&["network", "ls", "--filter", "label=pipe.network=test", "--format", "{{.Name}}"]);
        for name in names.lines() {
            let inspect = Command::new("docker")
                .args(["network", "inspect", "--format", "{{index .Labels \"pipe.owner\"}}", name])
                .output()
                .unwrap();
            let owner = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
            if owner.split(':').nth(1) == Some(pid.to_string().as_str()) {
                return Some(name.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// `nslookup NAME` from a container of our own on `network`, through Docker's embedded DNS,
/// which forwards to `dns`.
fn embedded_lookup(base: &str, network: &str, dns: &str, name: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", network, "--dns", dns, base, "timeout", "6", "nslookup", name])
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn an_internal_network_reaches_only_its_own_containers_dns_included() {
    let Some(docker) = Docker::require() else { return };
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false);
    if !root {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "the network isolation test needs root (iptables)");
        eprintln!("skipped: isolation needs root");
        return;
    }
    let mut a = App::new(&docker, None);
    let dir = a.env.path().to_path_buf();
    // The resolver pipe lets isolated networks reach: a DNS canary in a container of a network
    // of our own, so a query to it crosses the host's forwarding as one to a real resolver would.
    let name = unique_name("dns");
    let boxed = CanaryBox { network: format!("{name}-net"), container: name.clone() };
    docker_out(&["network", "create", &boxed.network]);
    docker_out(&[
        "run",
        "-d",
        "--name",
        &boxed.container,
        "--network",
        &boxed.network,
        &docker.base_image,
        "sleep",
        "600",
    ]);
    let pid = docker_out(&["inspect", "--format", "{{.State.Pid}}", &boxed.container]);
    let resolver =
        docker_out(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &name]);
    let listed = DnsCanary::start(&dir, "listed-resolver", Some(&pid));
    // Every address of the host, on UDP and TCP 53 and on a TCP port.
    let on_host = DnsCanary::start(&dir, "host", None);
    let tcp = HostTcp::start();
    std::fs::write(dir.join("resolv.conf"), format!("nameserver {resolver}\n")).unwrap();
    a.env.env("PIPE_RESOLV_CONF", dir.join("resolv.conf").to_str().unwrap());

    let mut targets = host_addresses();
    targets.push(resolver.clone());
    targets.push("$gw".into());
    // Inside the test container, beside its service `db`: the sibling by name (the legitimate
    // path), then every way out. `reach''ed`: the word the log shows is not in the command.
    let probe = format!(
        "gw=$(ip route | awk '/default/{{print $3}}'); echo gateway=$gw; \
         echo sibling=$(nc -w 3 db 7000); nslookup db >/dev/null 2>&1 && echo sibling-by-''name; \
         for a in {targets}; do \
           timeout 4 nslookup leak-udp.example $a; \
           echo | nc -w 2 $a 53 && echo reach''ed-tcp53-$a; \
           echo | nc -w 2 $a {port} && echo reach''ed-tcp-$a; \
         done; timeout 6 nslookup leak-embedded.example; sleep 15; true",
        targets = targets.join(" "),
        port = tcp.port,
    );
    a.repo
        .write(
            "svc.yml",
            &format!(
                "version: \"2.4\"\nservices:\n  db:\n    image: {}\n    command: [\"sh\", \"-c\", \"while true; do echo sibling-answer | nc -l -p 7000; done\"]\n",
                docker.base_image
            ),
        )
        .write(".pipe.toml", &format!("image = {:?}\ntest = {probe:?}\ntest_services = \"svc.yml\"\n", a.image));

    for (egress, round) in [(false, 1), (true, 2)] {
        let limits = if egress { "limits = { egress = true }" } else { "" };
        a.config("", &a.repo.url(), limits);
        a.commit(round);
        let mut run = a.env.command(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let network = network_of(run.id(), Instant::now() + Duration::from_secs(120))
            .unwrap_or_else(|| panic!("round {round}: the test network never appeared"));
        // Docker's embedded DNS forwards a lookup from the container's own address: to the
        // listed resolver, and to the gateway (the host).
        std::thread::sleep(Duration::from_secs(2));
        let rules = Command::new("iptables").args(["-w", "-S", "DOCKER-USER"]).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        let via_resolver =
            embedded_lookup(&docker.base_image, &network, &resolver, &format!("embedded-{round}.example"));
        let gateway =
            docker_out(&["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", &network]);
        let via_gateway = embedded_lookup(&docker.base_image, &network, &gateway, &format!("gateway-{round}.example"));
        let status = run.wait().unwrap();
        let mut stderr = String::new();
        run.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(status.success(), "round {round}: `pipe run` failed:\n{stderr}");
        let log = a.env.pipe(&["logs", &a.project, "main"]).stdout.clone();

        // The legitimate path, both rounds.
        assert!(log.contains("sibling=sibling-answer"), "round {round}: the service did not answer by name:\n{log}");
        assert!(log.contains("sibling-by-name"), "round {round}: the service's name did not resolve:\n{log}");
        // The host: no address, gateway included, by UDP or TCP, either round.
        assert!(!log.contains("reached-tcp-"), "round {round}: a TCP connection left the network:\n{log}");
        assert_eq!(tcp.connections.load(Ordering::SeqCst), 0, "round {round}: the host's TCP service was reached");
        assert_eq!(on_host.queries(), "", "round {round}: a DNS query reached the host:\n{log}");
        assert!(!log.contains("203.0.113.7"), "round {round}: a lookup was answered by a canary:\n{log}");
        assert!(!via_gateway.contains("203.0.113.7"), "round {round}: {via_gateway}");

        let asked = listed.queries();
        if !egress {
            // Internal: not even the resolver an isolated network may use.
            assert_eq!(asked, "", "the internal network reached the resolver:\n{log}\n{via_resolver}\n{rules}");
            assert!(!log.contains("reached-tcp53-"), "the internal network reached a DNS port:\n{log}");
        } else {
            // Isolated, as the README says: the listed resolver on port 53 (directly and through
            // Docker's embedded DNS), and nothing else of the host or private ranges.
            assert!(
                asked.contains("udp") && asked.contains("leak-udp.example"),
                "isolated: no direct lookup of {resolver} on {network}: {asked}\n{log}\n{rules}"
            );
            assert!(
                asked.contains(&format!("embedded-{round}.example")),
                "isolated: no forwarded lookup: {asked}\n{via_resolver}\n{rules}"
            );
            // (Docker drops the answers between two of its bridges, so only the queries show.)
            assert!(
                !log.contains(&format!("reached-tcp-{resolver}")),
                "isolated: another port of the resolver:\n{log}"
            );
        }
    }
}
