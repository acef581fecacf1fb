//! Holes found by the fifth round of attacking `pipe serve` as an outsider would (a holder of
//! one hook's credentials against the other hooks).

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use crate::serve_flood::{connect_from, post_bytes, send_from};
use crate::support::TestEnv;
use crate::support::serve::Serve;

/// The README: holders of one hook's credentials must not keep the other hooks' deploys out.
/// A body whose token checked out is a trusted share of the body budget, and trusted readers
/// were never shed: whoever held the token of one hook (`staging` here) declared 64 KiB bodies
/// on 130 connections from one address (under the 256-connection cap) and sent a byte now and
/// then, and the `production` hook's own valid token request with its JSON body was answered
/// `503` (its body had no room and no anonymous reader could be shed for it). Now a trusted
/// body short of room sheds the oldest trusted reader of the address holding the most, when
/// that is more than its own address holds.
#[test]
fn one_hooks_token_holder_cannot_take_the_body_budget_from_another_hook() {
    let mut env = TestEnv::new();
    env.env("STAGING_TOKEN", "staging-token").env("PROD_TOKEN", "prod-token");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[serve.hooks.staging]
token_env = "STAGING_TOKEN"
command = {{ argv = ["true"] }}

[serve.hooks.production]
token_env = "PROD_TOKEN"
command = {{ argv = ["true"] }}
"#,
        ws = env.path().join("work").display()
    ));
    let server = Serve::start(&env);
    let release = post_bytes(
        "/hooks/production",
        &[("Authorization", "Bearer prod-token"), ("Content-Type", "application/json")],
        br#"{"ref": "refs/heads/main"}"#,
    );
    let (status, answer, _) = send_from(Ipv4Addr::new(127, 0, 0, 21), server.port, &release);
    assert_eq!(status, 202, "the legitimate path: {answer}");

    // The attack: staging's token, 64 KiB bodies declared, one byte sent.
    let head = format!(
        "POST /hooks/staging HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer staging-token\r\nContent-Length: {}\r\n\r\n{{",
        64 * 1024
    );
    let attacker = Ipv4Addr::new(127, 0, 0, 9);
    let flood: Vec<TcpStream> = (0..130)
        .filter_map(|_| {
            let mut s = connect_from(attacker, server.port, false)?;
            s.write_all(head.as_bytes()).ok()?;
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (status, answer, took) = send_from(Ipv4Addr::new(127, 0, 0, 22), server.port, &release);
    drop(flood);
    assert_eq!(
        status,
        202,
        "production's own token request during staging's slow bodies: {status} after {took:?}: {}",
        answer.lines().next().unwrap_or("")
    );
}
