//! `pipe serve` under attack and across restarts: slow and unauthenticated clients, replays
//! after a restart and with a skewed clock, signatures moved to another hook, run accounting,
//! requests refused while being read, strict request heads. Real processes on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::TestEnv;
use crate::support::serve::Serve;

const SECRET: &str = "sec-27182818";
const TOKEN: &str = "tok-16180339";

/// A hook request signed with the hooks' secret.
fn signed(server: &Serve, hook: &str, body: &str) -> (u16, serde_json::Value) {
    let sig = crate::support::hub_signature(SECRET, body.as_bytes());
    server.json("POST", &format!("/hooks/{hook}"), &[("X-Hub-Signature-256", &sig)], body.as_bytes())
}

fn run_status(server: &Serve, hook: &str, id: &str) -> (u16, serde_json::Value) {
    server.json("GET", &format!("/hooks/{hook}/runs/{id}"), &[("Authorization", &format!("Bearer {TOKEN}"))], b"")
}

fn wait_ended(server: &Serve, hook: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, doc) = run_status(server, hook, id);
        assert_eq!(status, 200, "{doc}");
        if !matches!(doc["status"].as_str(), Some("queued" | "running")) {
            return doc;
        }
        assert!(Instant::now() < deadline, "run {id} never ended: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the server, which must exit 0, and returns what it logged.
fn stop(server: Serve) -> String {
    let (code, log) = server.stop();
    assert_eq!(code, Some(0), "{log}");
    log
}

fn read_response(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Two signed hooks sharing a secret and token (`a`, `b`), each running `script`.
fn setup(env: &mut TestEnv, script: &str, serve_extra: &str) {
    env.env("SECRET", SECRET).env("TOKEN", TOKEN);
    let mut config = format!("[serve]\n{serve_extra}\n");
    for hook in ["a", "b"] {
        config.push_str(&format!(
            "[serve.hooks.{hook}]\nsecret_env = \"SECRET\"\ntoken_env = \"TOKEN\"\ncommand = {{ shell = {script:?} }}\n\n"
        ));
    }
    env.config(&config);
}

fn body(hook: &str, delivery: &str, sent_at: i64) -> String {
    format!(r#"{{"hook": "{hook}", "delivery": "{delivery}", "sent_at": {sent_at}}}"#)
}

#[test]
fn a_captured_request_is_refused_after_a_restart() {
    // Regression: delivery ids lived only in memory, so a replay after a restart was accepted.
    let mut env = TestEnv::new();
    setup(&mut env, "true", "");
    let captured = body("a", "d-restart", now());
    let server = Serve::start(&env);
    assert_eq!(signed(&server, "a", &captured).0, 202);
    assert_eq!(signed(&server, "a", &captured).0, 409);
    stop(server);
    let server = Serve::start(&env);
    let (status, doc) = signed(&server, "a", &captured);
    assert_eq!(status, 409, "replayed after a restart: {doc}");
    assert_eq!(doc["error"], "this delivery was already received");
}

#[test]
fn sent_at_is_judged_on_the_receivers_clock_both_ways() {
    // Regression: `sent_at = now + 9` with a 10 s window was replayable at +11.5 s, and a huge
    // `sent_at` overflowed.
    let mut env = TestEnv::new();
    setup(&mut env, "true", "replay_window = \"10s\"");
    let server = Serve::start(&env);
    for (sent, status) in [(now() + 60, 409), (now() - 60, 409), (i64::MIN, 409), (i64::MAX, 409)] {
        assert_eq!(signed(&server, "a", &body("a", &format!("d-{sent}"), sent)).0, status, "sent_at {sent}");
    }
    let ahead = body("a", "d-ahead", now() + 9);
    assert_eq!(signed(&server, "a", &ahead).0, 202);
    // Kept until receive time + window after the later of the two clocks: still refused once the
    // receiver's window after receipt has passed.
    std::thread::sleep(Duration::from_millis(11_500));
    assert_eq!(signed(&server, "a", &ahead).0, 409, "replayed at +11.5 s");
    let log = stop(server);
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_signature_for_one_hook_is_refused_by_another() {
    let mut env = TestEnv::new();
    setup(&mut env, "true", "");
    let server = Serve::start(&env);
    let (status, doc) = signed(&server, "b", &body("a", "d-moved", now()));
    assert_eq!(status, 403, "a body signed for `a` sent to `b`: {doc}");
    let (status, doc) = signed(&server, "b", r#"{"delivery": "d-unnamed", "sent_at": 0}"#);
    assert_eq!(status, 400, "a signed body must name its hook: {doc}");
    assert_eq!(signed(&server, "a", &body("a", "d-own", now())).0, 202);
}

#[test]
fn every_accepted_run_is_retrievable_after_a_restart() {
    // Regression: only 500 runs were kept in memory; 1,500 of 2,000 accepted runs became 404.
    let mut env = TestEnv::new();
    setup(&mut env, "true", "");
    let server = Serve::start(&env);
    let bearer = format!("Bearer {TOKEN}");
    let ids: Vec<String> = (0..600)
        .map(|i| {
            let hook = if i % 2 == 0 { "a" } else { "b" };
            let (status, doc) = server.json("POST", &format!("/hooks/{hook}"), &[("Authorization", &bearer)], b"");
            assert_eq!(status, 202, "{doc}");
            doc["id"].as_str().unwrap().to_string()
        })
        .collect();
    wait_ended(&server, "a", &ids[598]);
    wait_ended(&server, "b", &ids[599]);
    stop(server);
    let server = Serve::start(&env);
    for (i, id) in ids.iter().enumerate() {
        let hook = if i % 2 == 0 { "a" } else { "b" };
        let (status, doc) = run_status(&server, hook, id);
        assert_eq!(status, 200, "run {i} after a restart: {doc}");
        assert!(matches!(doc["status"].as_str(), Some("succeeded" | "superseded")), "run {i}: {doc}");
    }
}

#[test]
fn requests_refused_while_being_read_each_leave_a_log_line() {
    let mut env = TestEnv::new();
    setup(&mut env, "true", "");
    let server = Serve::start(&env);
    let sig = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"BLAH\r\n\r\n".to_vec(), 400, "- - 400"),
        (
            format!("POST /hooks/a HTTP/1.1\r\n{sig}Content-Length: 999999\r\n\r\n").into_bytes(),
            413,
            "POST /hooks/a 413",
        ),
        (format!("POST /hooks/a HTTP/1.1\r\n{sig}Transfer-Encoding: chunked\r\n\r\n").into_bytes(), 411, "- - 411"),
        (format!("POST /hooks/a HTTP/1.1\r\nX: {}\r\n\r\n", "x".repeat(17_000)).into_bytes(), 431, "- - 431"),
        (b"POST /hooks/a HTTP/1.1\r\n".to_vec(), 408, "- - 408"),
    ];
    for (bytes, status, _) in &cases {
        assert_eq!(server.raw(bytes).status, *status, "{:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(60)]));
    }
    // 257 connections from one address: the oldest is shed with 503.
    let mut first = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let _more: Vec<TcpStream> = (0..256).map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap()).collect();
    assert_eq!(read_response(&mut first).0, 503);
    let log = stop(server);
    for (_, status, line) in &cases {
        assert_eq!(log.matches(&format!(" {status} hook=")).count(), 1, "one line for {status}: {log}");
        assert!(log.contains(line), "{line}: {log}");
    }
    assert!(log.contains("- - 503"), "{log}");
}

#[test]
fn request_heads_follow_rfc_9112_strictly() {
    let mut env = TestEnv::new();
    setup(&mut env, "true", "");
    let server = Serve::start(&env);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    for raw in [
        format!("POST /hooks/a HTTP/1.1\r\n{auth}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"),
        format!("POST /hooks/a HTTP/1.1\n{auth}Content-Length: 0\n\n"),
        format!("POST /hooks/a HTTP/1.1\r\n{auth}Content-Length: +2\r\n\r\n{{}}"),
        format!("POST /hooks/a HTTP/1.99\r\n{auth}Content-Length: 0\r\n\r\n"),
    ] {
        assert_eq!(server.raw(raw.as_bytes()).status, 400, "{raw:?}");
    }
    let ok = format!("POST /hooks/a HTTP/1.1\r\n{auth}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}");
    assert_eq!(server.raw(ok.as_bytes()).status, 202, "equal duplicates are one length");
}

#[test]
fn bodies_are_not_read_before_credentials_and_body_values_are_checked() {
    let mut env = TestEnv::new();
    setup(&mut env, "true", "");
    let server = Serve::start(&env);
    let mib = vec![b'x'; 1024 * 1024];
    let started = Instant::now();
    assert_eq!(server.json("POST", "/hooks/a", &[], &mib).0, 401);
    assert_eq!(server.json("POST", "/hooks/nope", &[], &mib).0, 401);
    assert_eq!(server.json("POST", "/hooks/a", &[("Authorization", "Bearer wrong")], &mib).0, 403);
    let fake = format!("sha256={}", "0".repeat(64));
    assert_eq!(server.json("POST", "/hooks/a", &[("X-Hub-Signature-256", &fake)], &mib).0, 413, "64 KiB by default");
    assert!(started.elapsed() < Duration::from_secs(3));
    let bearer = format!("Bearer {TOKEN}");
    for bad in [r#"{"ref": "refs/heads/a\nb"}"#, r#"{"ref": "refs/heads/x..y"}"#, r#"{"project": "Bad Name;rm"}"#] {
        let (status, doc) = server.json("POST", "/hooks/a", &[("Authorization", &bearer)], bad.as_bytes());
        assert_eq!(status, 422, "{bad}: {doc}");
    }
    assert!(!server.log().contains(TOKEN) && !server.log().contains(SECRET));
}

#[test]
fn signed_requests_are_served_while_hundreds_of_slow_clients_hold_connections() {
    // Regression: 300 connections trickling a byte every 2 s made every signed request fail.
    let mut env = TestEnv::new();
    let out = env.path().join("ran");
    setup(&mut env, &format!("echo ran >> {}", out.display()), "");
    let server = Serve::start(&env);
    let port = server.port;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let slowloris = std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = Vec::new();
        let mut opened = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            while conns.len() < 300 {
                if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = c.set_nonblocking(true);
                    let _ = c.write_all(b"POST /hooks/a HTTP/1.1\r\n");
                    conns.push(c);
                    opened += 1;
                }
            }
            // One byte each every 2 s; a connection the server closed is replaced.
            conns.retain_mut(|c| c.write_all(b"X").is_ok() && c.peek(&mut [0u8; 1]).is_err());
            std::thread::sleep(Duration::from_millis(2000));
        }
        opened
    });
    std::thread::sleep(Duration::from_secs(1));
    let mut slowest = Duration::ZERO;
    for i in 0..100 {
        let started = Instant::now();
        let (status, doc) = signed(&server, "a", &body("a", &format!("d-load-{i}"), now()));
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 202, "signed request {i} ({status}): {doc}");
        std::thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = slowloris.join().unwrap();
    let peak = server.peak_rss_kb();
    eprintln!("100 signed requests beside {opened} slow connections: slowest answer {slowest:?}, peak RSS {peak} KiB");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(peak < 32 * 1024, "peak RSS {peak} KiB");
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = server.log();
        let ended = log.matches("hook=a succeeded").count() + log.matches("superseded by").count();
        if ended >= 100 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(log.matches("POST /hooks/a 202").count(), 100);
    assert_eq!(
        log.matches("hook=a succeeded").count() + log.matches("superseded by").count(),
        100,
        "every 202 ran or was superseded"
    );
}
