//! `pipe serve`: the deploy receiver, over real HTTP on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Docker, ProjectImages, unique_name, write_web_compose};
use crate::support::http::get;
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, free_port};

/// Polls a hook's run until its status is one of `done`.
fn wait_run(server: &Serve, hook: &str, id: &str, auth: (&str, &str), done: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, doc) = server.json("GET", &format!("/hooks/{hook}/runs/{id}"), &[auth], b"");
        assert_eq!(status, 200, "{doc}");
        if done.contains(&doc["status"].as_str().unwrap()) {
            return doc;
        }
        assert!(Instant::now() < deadline, "run {id} never finished: {doc}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_response(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let text = String::from_utf8_lossy(&crate::support::http::read_answer(stream)).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A server with a token hook and a signed hook, each appending a line to a file.
fn command_hooks(env: &mut TestEnv, script: &str) -> std::path::PathBuf {
    let out = env.path().join("hook-output");
    env.env("TOKEN", "tok-8675309").env("SECRET", "sec-1123581321");
    let script = script.replace("OUT", &out.display().to_string());
    env.config(&format!(
        r#"[serve.hooks.tok]
token_env = "TOKEN"
command = {{ argv = ["/bin/sh", "-c", {script:?}] }}

[serve.hooks.sig]
secret_env = "SECRET"
command = {{ argv = ["/bin/sh", "-c", {script:?}] }}
"#
    ));
    out
}

const BEARER: (&str, &str) = ("Authorization", "Bearer tok-8675309");

#[test]
fn authenticated_requests_run_the_hook_and_everything_else_is_refused() {
    let mut env = TestEnv::new();
    let out = command_hooks(&mut env, "echo \"ran $PIPE_HOOK $PIPE_COMMIT\" >> OUT");
    let server = Serve::start(&env);

    assert_eq!(server.json("GET", "/healthz", &[], b"").0, 200);
    let (status, doc) = server.json("POST", "/hooks/tok", &[BEARER], br#"{"commit": "abc123"}"#);
    assert_eq!(status, 202, "{doc}");
    let run = wait_run(&server, "tok", doc["id"].as_str().unwrap(), BEARER, &["succeeded", "failed"]);
    assert_eq!(run["status"], "succeeded", "{run}");

    let body = format!(r#"{{"hook": "sig", "commit": "def456", "delivery": "d-1", "sent_at": {}}}"#, now());
    let sig = crate::support::hub_signature("sec-1123581321", body.as_bytes());
    let (status, doc) = server.json("POST", "/hooks/sig", &[("X-Hub-Signature-256", &sig)], body.as_bytes());
    assert_eq!(status, 202, "{doc}");
    let id = doc["id"].as_str().unwrap().to_string();
    let path_sig = crate::support::hub_signature("sec-1123581321", format!("/hooks/sig/runs/{id}").as_bytes());
    wait_run(&server, "sig", &id, ("X-Hub-Signature-256", &path_sig), &["succeeded"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran tok abc123\nran sig def456\n");

    let (replayed, doc) = server.json("POST", "/hooks/sig", &[("X-Hub-Signature-256", &sig)], body.as_bytes());
    assert_eq!(replayed, 409, "a replayed signed request is refused: {doc}");
    let stale = format!(r#"{{"hook": "sig", "delivery": "d-2", "sent_at": {}}}"#, now() - 3600);
    let (status, _) = server.json(
        "POST",
        "/hooks/sig",
        &[("X-Hub-Signature-256", &crate::support::hub_signature("sec-1123581321", stale.as_bytes()))],
        stale.as_bytes(),
    );
    assert_eq!(status, 409, "a signed request outside the replay window is refused");

    let tampered = body.replace("def456", "bad000");
    assert_eq!(server.json("POST", "/hooks/sig", &[("X-Hub-Signature-256", &sig)], tampered.as_bytes()).0, 403);
    assert_eq!(server.json("POST", "/hooks/tok", &[("Authorization", "Bearer wrong")], b"").0, 403);
    assert_eq!(server.json("POST", "/hooks/tok", &[], b"").0, 401);
    assert_eq!(server.json("POST", "/hooks/nope", &[BEARER], b"").0, 403, "an unknown hook answers like a wrong token");
    assert_eq!(server.json("POST", "/hooks/nope", &[], b"").0, 401, "and like a missing one");
    assert_eq!(server.json("GET", "/hooks/tok", &[BEARER], b"").0, 405, "only POST triggers");
    assert_eq!(
        server.json("POST", "/?token=tok-8675309&hook=tok", &[], b"").0,
        403,
        "docker-puller forms need opting in"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2, "nothing else ran");

    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "SIGTERM stops the server cleanly: {log}");
    assert!(log.contains("POST /hooks/tok 202"), "{log}");
    for secret in ["tok-8675309", "sec-1123581321"] {
        assert!(!log.contains(secret), "a secret reached the log: {log}");
    }
}

#[test]
fn a_ten_megabyte_body_is_refused_without_being_read() {
    let mut env = TestEnv::new();
    command_hooks(&mut env, "true");
    let server = Serve::start(&env);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /hooks/tok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-8675309\r\nContent-Length: 10485760\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&[b'x'; 4096]).unwrap();
    let started = Instant::now();
    let (status, _) = read_response(&mut stream);
    assert_eq!(status, 413);
    assert!(started.elapsed() < Duration::from_secs(5), "answered before the body was sent");
}

#[test]
fn an_idle_connection_does_not_block_a_deploy() {
    let mut env = TestEnv::new();
    command_hooks(&mut env, "true");
    let server = Serve::start(&env);
    let _idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(b"POST /hooks/tok HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let (status, doc) = server.json("POST", "/hooks/tok", &[BEARER], b"");
    assert_eq!(status, 202);
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_run(&server, "tok", doc["id"].as_str().unwrap(), BEARER, &["succeeded"]);
}

#[test]
fn one_hook_never_runs_twice_at_once_and_every_request_has_a_fate() {
    let mut env = TestEnv::new();
    let out = command_hooks(&mut env, "echo \"start $PIPE_COMMIT\" >> OUT; sleep 1; echo \"end $PIPE_COMMIT\" >> OUT");
    let server = Serve::start(&env);
    let ids: Vec<String> = ["aaa", "bbb", "ccc"]
        .iter()
        .map(|c| {
            let (status, doc) =
                server.json("POST", "/hooks/tok", &[BEARER], format!(r#"{{"commit": "{c}"}}"#).as_bytes());
            assert_eq!(status, 202);
            std::thread::sleep(Duration::from_millis(150));
            doc["id"].as_str().unwrap().to_string()
        })
        .collect();
    let fates: Vec<String> = ids
        .iter()
        .map(|id| {
            wait_run(&server, "tok", id, BEARER, &["succeeded", "failed", "superseded"])["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(fates, ["succeeded", "superseded", "succeeded"], "the waiting request was superseded by the newer one");
    let superseded = server.json("GET", &format!("/hooks/tok/runs/{}", ids[1]), &[BEARER], b"").1;
    assert_eq!(superseded["superseded_by"], ids[2].as_str());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "start aaa\nend aaa\nstart ccc\nend ccc\n",
        "runs never overlap"
    );
}

#[test]
fn a_failing_hook_reports_failed_with_its_exit_code() {
    let mut env = TestEnv::new();
    command_hooks(&mut env, "echo about-to-fail; exit 3");
    let server = Serve::start(&env);
    let (_, doc) = server.json("POST", "/hooks/tok", &[BEARER], b"");
    let run = wait_run(&server, "tok", doc["id"].as_str().unwrap(), BEARER, &["succeeded", "failed"]);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 3);
    assert!(run["log_tail"].as_str().unwrap().contains("about-to-fail"), "{run}");

    let (status, waited) = server.json("POST", "/hooks/tok?wait=30", &[BEARER], b"");
    assert_eq!(status, 200, "`?wait=` answers when the run has ended: {waited}");
    assert_eq!(waited["status"], "failed");
    assert_eq!(waited["exit_code"], 3);
}

#[test]
fn pipe_run_deploys_through_pipe_serve_to_a_real_compose_project() {
    let Some(docker) = Docker::require() else { return };
    let mut env = TestEnv::new();
    let project = unique_name("s").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "served through a hook\n");
    repo.write(".pipe.toml", "test = \"test -f /www/index.html\"\n");
    let sha = repo.commit_to("main", "first");
    let (app_port, serve_port) = (free_port(), free_port());
    let compose = env.path().join("prod").join("docker-compose.yml");
    write_web_compose(&compose, app_port);
    let _down = ComposeProject { name: project.clone() };
    env.env("HOOK_SECRET", "shared-secret-1414");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[serve.hooks.{p}]
secret_env = "HOOK_SECRET"
images = ["pipe-test/*"]
compose = {{ file = "{file}", project = "{p}" }}
health = {{ url = "http://127.0.0.1:{app_port}/", timeout = "5s" }}

# The image is the operator's to name: a serve hook on this host deploys it, so the
# repository's own file may not choose it.
[project.{p}]
repo = "{url}"
branches = ["main"]
image = "{image}"

[[project.{p}.deploy]]
branches = ["main"]
webhook = {{ url = "http://127.0.0.1:{serve_port}/hooks/{p}", secret_env = "HOOK_SECRET" }}
"#,
        ws = env.path().join("work").display(),
        p = project,
        file = compose.display(),
        url = repo.url(),
    ));
    let server = Serve::start_on(&env, serve_port).expect("pipe serve listens");
    env.pipe(&["run"]).code(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, body)) = get(&format!("http://127.0.0.1:{app_port}/")) {
            assert_eq!(body.trim(), "served through a hook");
            break;
        }
        assert!(Instant::now() < deadline, "the hook's compose deploy never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let running = docker.ok(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--format",
        "{{.Image}}",
    ]);
    assert_eq!(running.trim(), format!("{image}:{}", &sha[..12]));

    // A release that fails the receiver's health check fails `pipe run` too: pipe follows the
    // run's status instead of trusting the 202.
    std::fs::remove_file(repo.work.join("www/index.html")).unwrap();
    repo.write("www/other.html", "no index\n");
    repo.write(
        ".pipe.toml",
        &format!(
            r#"image = "{image}"
test = "true"
"#
        ),
    );
    repo.commit_to("main", "breaks the health check");
    env.pipe(&["run"]).code(1).stderr_has("the receiver's run ended `failed`").stderr_has("health check");
    let (code, log) = server.stop();
    assert_eq!(code, Some(0));
    // The sender waits on its POST (`?wait=`): a quick run is answered with its end, and the
    // receiver's journal is not filled with status polls.
    assert!(log.contains(&format!("POST /hooks/{project} 200")), "{log}");
    assert!(!log.contains("GET /hooks/"), "{log}");
}

/// One generated request: raw bytes, either mostly well-formed or pure noise.
fn arb_request() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let method = proptest::sample::select(vec!["POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "POS", ""]);
    let path = prop_oneof![
        proptest::sample::select(vec![
            "/hooks/tok",
            "/hooks/sig",
            "/hooks/nope",
            "/hooks/tok/runs/abc",
            "/hooks/",
            "/",
            "/?token=x&hook=tok",
            "/tok-8675309x/tok",
            "/healthz",
            "//hooks//tok",
            "/hooks/tok?wait=1",
            "/hooks/../hooks/tok",
            "*",
        ])
        .prop_map(str::to_string),
        "/[ -~]{0,40}",
    ];
    let header = prop_oneof![
        "Bearer [ -~]{0,30}".prop_map(|t| format!("Authorization: {t}")),
        "sha256=[0-9a-f]{0,64}".prop_map(|s| format!("X-Hub-Signature-256: {s}")),
        "[0-9]{1,12}".prop_map(|n| format!("Content-Length: {n}")),
        Just("Transfer-Encoding: chunked".to_string()),
        "[A-Za-z-]{1,12}: [ -~]{0,30}",
        "[ -~]{0,40}",
    ];
    let well_formed =
        (method, path, proptest::collection::vec(header, 0..6), proptest::collection::vec(any::<u8>(), 0..512))
            .prop_map(|(m, p, headers, body)| {
                let mut raw = format!("{m} {p} HTTP/1.1\r\n");
                for h in headers {
                    raw.push_str(&h);
                    raw.push_str("\r\n");
                }
                raw.push_str("\r\n");
                let mut bytes = raw.into_bytes();
                bytes.extend(body);
                bytes
            });
    prop_oneof![4 => well_formed, 1 => proptest::collection::vec(any::<u8>(), 0..2048)]
}

#[test]
fn generated_requests_never_run_a_hook_crash_the_receiver_or_leak_a_token() {
    use proptest::test_runner::{Config, TestRunner};
    let mut env = TestEnv::new();
    let out = command_hooks(&mut env, "echo ran >> OUT");
    let server = Serve::start(&env);
    let allowed = [0u16, 200, 400, 401, 403, 404, 405, 408, 409, 411, 413, 422, 431];
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    runner
        .run(&arb_request(), |bytes| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            let _ = stream.write_all(&bytes);
            // The client is done: a body shorter than its Content-Length ends here, not at a timeout.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let (status, _) = read_response(&mut stream);
            proptest::prop_assert!(
                allowed.contains(&status),
                "status {status} for {:?}",
                String::from_utf8_lossy(&bytes)
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(server.json("GET", "/healthz", &[], b"").0, 200, "still serving");
    assert!(!out.exists(), "no generated request ran a hook");
    let (_, log) = server.stop();
    assert!(!log.contains("panicked"), "{log}");
    for secret in ["tok-8675309", "sec-1123581321"] {
        assert!(!log.contains(secret), "{secret} logged");
    }
}

#[test]
fn a_stderr_nobody_reads_never_stalls_the_receiver() {
    // Regression: request log lines were written to stderr on the request's thread, so a full
    // pipe (or a stalled journal) stopped every request. Now lines are dropped and counted.
    let mut env = TestEnv::new();
    command_hooks(&mut env, "true");
    let server = Serve::start_unread(&env);
    // ~80 bytes a line: 3,000 requests write far more than a pipe holds (64 KiB).
    for i in 0..3000 {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = [0u8; 12];
        let got = stream.read_exact(&mut answer);
        assert!(got.is_ok() && &answer == b"HTTP/1.1 200", "request {i} was not answered");
    }
    let (code, log) = server.stop();
    assert_eq!(code, Some(0));
    assert!(log.contains("log line(s) dropped: stderr did not keep up"), "{}", &log[log.len().saturating_sub(500)..]);
}

/// A request waiting for its run (`?wait=`) when the receiver is stopped is answered before
/// the process exits: a stopping receiver waits for the requests it is answering.
#[test]
fn a_request_waiting_for_its_run_is_answered_when_the_receiver_stops() {
    let mut env = TestEnv::new();
    let out = command_hooks(&mut env, "echo started >> OUT; sleep 30");
    let server = Serve::start(&env);
    let port = server.port;
    let waiting = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = "POST /hooks/tok?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-8675309\r\n\
                    Content-Length: 0\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        crate::support::http::read_answer(&mut stream)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&out).is_ok_and(|t| t.contains("started")) {
        assert!(Instant::now() < deadline, "the hook never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, log) = server.stop();
    let answer = String::from_utf8_lossy(&waiting.join().unwrap()).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 202") || answer.starts_with("HTTP/1.1 200"),
        "the waiting request was answered before the receiver exited: {answer:?}\n{log}"
    );
    assert_eq!(code, Some(0), "{log}");
}

/// A request whose wait (`?wait=1`) ends before its run does is answered `202` with where the
/// run stands then, not `queued`.
#[test]
fn a_request_that_waited_in_vain_says_its_run_is_running() {
    let mut env = TestEnv::new();
    command_hooks(&mut env, "sleep 30");
    let server = Serve::start(&env);
    let (status, doc) = server.json("POST", "/hooks/tok?wait=1", &[BEARER], b"");
    assert_eq!((status, doc["status"].as_str()), (202, Some("running")), "{doc}");
    let (status, doc) = server.json("POST", "/hooks/tok", &[BEARER], b"");
    assert_eq!((status, doc["status"].as_str()), (202, Some("queued")), "without a wait: {doc}");
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
}
