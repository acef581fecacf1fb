//! Holes found by the third round of attacking pipe as an outsider would, starting from the
//! receiver's persistent connections. Each test is the attack that found its hole, beside the
//! legitimate path; a test still ignored (`open hole: …`) is a hole not closed yet.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use crate::serve_flood::{connect_from, post_bytes, send_from};
use crate::support::TestEnv;
use crate::support::serve::Serve;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A signed release to the hook `deploy`, as `pipe deploy` sends it, `sent_at` given.
fn signed_release(secret: &str, delivery: &str, sent_at: i64) -> Vec<u8> {
    let body = format!(r#"{{"hook": "deploy", "delivery": "{delivery}", "sent_at": {sent_at}}}"#);
    let sig = crate::support::hub_signature(secret, body.as_bytes());
    post_bytes("/hooks/deploy", &[("X-Hub-Signature-256", &sig), ("Content-Type", "application/json")], body.as_bytes())
}

/// A `pipe serve` with one signed hook that runs `true`.
fn signed_hook_env(secret: &str) -> TestEnv {
    let mut env = TestEnv::new();
    env.env("HOOK_SECRET", secret);
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[serve.hooks.deploy]
secret_env = "HOOK_SECRET"
command = {{ argv = ["true"] }}
"#,
        ws = env.path().join("work").display()
    ));
    env
}

/// Opens `n` connections from `source`, each sending a fake-signed head that declares a 64 KiB
/// body (the largest `max_body`) and one byte of it, then nothing: slow bodies, held open.
fn slow_signed_bodies(source: Ipv4Addr, port: u16, n: usize) -> Vec<TcpStream> {
    let head = format!(
        "POST /hooks/deploy HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {}\r\n\r\n{{",
        "0".repeat(64),
        64 * 1024
    );
    (0..n)
        .filter_map(|_| {
            let mut s = connect_from(source, port, false)?;
            s.write_all(head.as_bytes()).ok()?;
            Some(s)
        })
        .collect()
}

/// `request` sent from 127.0.0.`from` while `attacker` holds 140 slow fake-signed bodies open:
/// its status, answer and how long it took. The flood is ended before this returns.
fn during_flood(port: u16, attacker: Ipv4Addr, from: u8, request: &[u8]) -> (u16, String, Duration) {
    let flood = slow_signed_bodies(attacker, port, 140);
    std::thread::sleep(Duration::from_millis(500));
    let answer = send_from(Ipv4Addr::new(127, 0, 0, from), port, request);
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    answer
}

/// The README bounds what anonymous clients can take: "Nothing anonymous can take what an
/// authenticated request needs": anonymous bodies hold at most 6 MiB (2 MiB from one address)
/// and are shed for a signed request that needs room; "the rest of the budget … and the other
/// handlers are only for requests whose token checked out from the head and for addresses that
/// sent an authenticated request in the last ten minutes". And a captured signed request
/// "replayed with other headers … is still `409`", signatures being what to prefer "where
/// requests cross a network you do not trust".
///
/// But the receiver counts an address as a sender that authenticated as soon as a signature
/// checks out, before the body's `sent_at` and `delivery` are judged
/// (`serve::Receiver::route` calls `senders.authenticated(peer)` before `accept`'s replay
/// checks; `serve::forge::decide` likewise before its replay check). So whoever captured any
/// signed delivery, even one hours old, replays it once (answered `409`, nothing runs) and
/// their address is trusted for ten minutes, renewable at will: their fake-signed slow bodies
/// are then trusted shares that are never shed, and 128 of them hold the whole body budget.
/// Every signed release from the CI host (from an address that has not authenticated lately)
/// is answered `503` for as long as the attacker keeps the flood going; a token request with a
/// body is too.
///
/// Fixed: a signed request trusts its sender only once its body proved fresh (and a forge
/// delivery only when it starts a run and was not seen), a token request once its token
/// checked out.
#[test]
fn a_replayed_stale_delivery_does_not_make_its_sender_trusted() {
    const SECRET: &str = "hook-secret-replay-trust";
    let env = signed_hook_env(SECRET);
    let server = Serve::start(&env);
    let attacker = Ipv4Addr::new(127, 0, 0, 9);

    // The legitimate path, under the same flood from an anonymous attacker: anonymous slow
    // bodies are bounded per address and shed, and a signed release is answered at once.
    let (status, answer, took) = during_flood(server.port, attacker, 21, &signed_release(SECRET, "ci-1", now()));
    assert!(status == 202 && took < Duration::from_secs(3), "before: {status} after {took:?}: {answer}");

    // The attack: a delivery captured an hour ago (its signature still checks out) is replayed
    // once; it is refused, as the README says.
    let stale = signed_release(SECRET, "captured-an-hour-ago", now() - 3600);
    let (status, answer, _) = send_from(attacker, server.port, &stale);
    assert_eq!(status, 409, "a stale delivery is refused: {answer}");

    // Then the same flood from the same address.
    let (status, answer, took) = during_flood(server.port, attacker, 22, &signed_release(SECRET, "ci-2", now()));
    eprintln!("a signed release during the flood, after the replay: {status} after {took:?}");
    assert!(
        status == 202 && took < Duration::from_secs(3),
        "after replaying one stale delivery (409), the attacker's slow bodies kept a signed release out: {status} after \
         {took:?}: {}",
        answer.lines().next().unwrap_or("")
    );
}

/// The same door, opened by a request the README does not even call a replay: a status poll
/// (`GET /hooks/NAME/runs/ID`) is signed over its path alone, so one that `pipe deploy` sent
/// while following a run can be sent again by whoever captured it, at any time, and it still
/// authenticates (`serve::Receiver::status` calls `senders.authenticated(peer)`). That makes the
/// capturer's address a trusted sender for ten minutes, renewable for ever with the same bytes,
/// and its fake-signed slow bodies then hold the whole body budget: every signed release from
/// the CI host is answered `503`.
///
/// Fixed: a status poll signed over its path reads the run and trusts its sender for nothing;
/// one with the hook's token still does.
#[test]
fn a_captured_status_poll_does_not_make_its_sender_trusted() {
    const SECRET: &str = "hook-secret-status-trust";
    let env = signed_hook_env(SECRET);
    let server = Serve::start(&env);
    let attacker = Ipv4Addr::new(127, 0, 0, 9);

    // The CI host's release and its status poll, as `pipe deploy` sends them.
    let (status, answer, _) =
        send_from(Ipv4Addr::new(127, 0, 0, 21), server.port, &signed_release(SECRET, "ci-1", now()));
    assert_eq!(status, 202, "{answer}");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let status_url =
        serde_json::from_str::<serde_json::Value>(body).unwrap()["status_url"].as_str().unwrap().to_string();
    let poll = format!(
        "GET {status_url} HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: {}\r\n\r\n",
        crate::support::hub_signature(SECRET, status_url.as_bytes())
    );

    // The legitimate path under the anonymous flood: answered at once.
    let (status, answer, took) = during_flood(server.port, attacker, 22, &signed_release(SECRET, "ci-2", now()));
    assert!(status == 202 && took < Duration::from_secs(3), "before: {status} after {took:?}: {answer}");

    // The attack: the captured poll, sent again from the attacker's address, then the flood.
    let (status, _, _) = send_from(attacker, server.port, poll.as_bytes());
    assert_eq!(status, 200, "the captured poll is answered");
    let (status, answer, took) = during_flood(server.port, attacker, 23, &signed_release(SECRET, "ci-3", now()));
    assert!(
        status == 202 && took < Duration::from_secs(3),
        "after resending one captured status poll, the attacker's slow bodies kept a signed release out: {status} after \
         {took:?}: {}",
        answer.lines().next().unwrap_or("")
    );
}

/// The forge's door to the same trust: a captured ping (or any event that runs nothing) is
/// not recorded, so it can be sent again at will, and its signature checks out. Fixed with the
/// hooks': only a forge delivery that starts a run, seen for the first time, trusts its sender.
#[test]
fn a_replayed_forge_ping_does_not_make_its_sender_trusted() {
    use crate::serve_flood::{APP_SECRET, SECRET, every_endpoint};
    let mut env = TestEnv::new();
    every_endpoint(&mut env);
    let server = Serve::start(&env);
    let attacker = Ipv4Addr::new(127, 0, 0, 9);
    let release = |delivery: &str| {
        let body = format!(r#"{{"hook": "a", "delivery": "{delivery}", "sent_at": {}}}"#, now());
        let sig = crate::support::hub_signature(SECRET, body.as_bytes());
        post_bytes("/hooks/a", &[("X-Hub-Signature-256", &sig)], body.as_bytes())
    };
    let flooded = |from: u8, delivery: &str| during_flood(server.port, attacker, from, &release(delivery));
    let (status, answer, took) = flooded(21, "ci-1");
    assert!(status == 202 && took < Duration::from_secs(3), "before: {status} after {took:?}: {answer}");

    // The attack: a ping captured on its way to the receiver, sent again; it is answered.
    let ping = r#"{"zen": "Design for failure.", "hook_id": 7}"#;
    let sig = crate::support::hub_signature(APP_SECRET, ping.as_bytes());
    let headers = [("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "d-captured"), ("X-Hub-Signature-256", &sig)];
    for _ in 0..2 {
        assert_eq!(send_from(attacker, server.port, &post_bytes("/forge/app", &headers, ping.as_bytes())).0, 200);
    }
    let (status, answer, took) = flooded(22, "ci-2");
    assert!(
        status == 202 && took < Duration::from_secs(3),
        "after replaying a captured ping, the attacker's slow bodies kept a signed release out: {status} after {took:?}: {}",
        answer.lines().next().unwrap_or("")
    );
}
