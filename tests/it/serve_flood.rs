//! `pipe serve` flooded by anonymous clients on every endpoint at once — connections, slow
//! heads, declared body lengths, slow signature-bearing bodies, from one address and from a
//! hundred (loopback has 127.0.0.0/8) — while signed and token-bearing requests are measured
//! throughout. Real processes on real sockets.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, hmac_hex};

pub(crate) const SECRET: &str = "sec-27182818";
pub(crate) const TOKEN: &str = "tok-16180339";
pub(crate) const APP_SECRET: &str = "whsec-31415926";
pub(crate) const LAB_SECRET: &str = "gl-secret-2718";
pub(crate) const ORG_SECRET: &str = "org-secret-1414";
pub(crate) const PAGE_TOKEN: &str = "page-tok-1732";

/// A receiver with every endpoint: hook `a` (signed or token, `max_body` 200 KiB), hook `b`
/// (default limits), GitHub project `app`, GitLab project `lab`, the organization webhook of
/// forge `origin`, and the status page behind a token (badges too).
pub(crate) fn every_endpoint(env: &mut TestEnv) {
    env.env("SECRET", SECRET)
        .env("TOKEN", TOKEN)
        .env("APP_SECRET", APP_SECRET)
        .env("LAB_SECRET", LAB_SECRET)
        .env("ORG_SECRET", ORG_SECRET)
        .env("PAGE_TOKEN", PAGE_TOKEN)
        .env("FORGE_TOKEN", "forge-token");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("README", "no image here\n");
    repo.commit_to("main", "one");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.origin]
kind = "github"
api = "http://127.0.0.1:9"
token_env = "FORGE_TOKEN"

[forge.origin.discover]
org = "acme"
include = ["nothing-*"]
webhook_secret_env = "ORG_SECRET"

[forge.origin.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"

[forge.lab]
kind = "gitlab"
api = "http://127.0.0.1:9/api/v4"
token_env = "FORGE_TOKEN"

[project.app]
repo = "{url}"
branches = ["main"]
forge = "origin"
forge_repo = "acme/app"
webhook_secret_env = "APP_SECRET"

[project.lab]
repo = "{url}"
branches = ["main"]
forge = "lab"
forge_repo = "42"
webhook_secret_env = "LAB_SECRET"

[serve.page]
enabled = true
token_env = "PAGE_TOKEN"
public_badges = false

[serve.hooks.a]
secret_env = "SECRET"
token_env = "TOKEN"
max_body = 204800
command = {{ shell = "true" }}

[serve.hooks.b]
secret_env = "SECRET"
token_env = "TOKEN"
command = {{ shell = "true" }}
"#,
        ws = env.path().join("work").display(),
        url = repo.url(),
    ));
}

/// A TCP connection to `port` from `source` (any address of 127.0.0.0/8), non-blocking when
/// asked; `None` when the connection failed.
pub(crate) fn connect_from(source: Ipv4Addr, port: u16, nonblocking: bool) -> Option<TcpStream> {
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in values; on success its
    // descriptor is handed to the TcpStream that owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return None;
        }
        let remote = sockaddr(Ipv4Addr::LOCALHOST, port);
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return None;
        }
        stream.set_nonblocking(nonblocking).ok()?;
        Some(stream)
    }
}

/// One request from `source`, read to the end: the status and how long the answer took.
pub(crate) fn send_from(source: Ipv4Addr, port: u16, bytes: &[u8]) -> (u16, String, Duration) {
    let started = Instant::now();
    let Some(mut stream) = connect_from(source, port, false) else { return (0, String::new(), started.elapsed()) };
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = stream.write_all(bytes);
    let answer = crate::support::http::read_answer(&mut stream);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text, took)
}

/// An HTTP/1.1 POST with a body and these headers, as bytes.
pub(crate) fn post_bytes(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn signed_hook(hook: &str, delivery: &str) -> Vec<u8> {
    let body = format!(r#"{{"hook": "{hook}", "delivery": "{delivery}", "sent_at": {}}}"#, now());
    let sig = format!("sha256={}", hmac_hex(SECRET, body.as_bytes()));
    post_bytes(&format!("/hooks/{hook}"), &[("X-Hub-Signature-256", &sig)], body.as_bytes())
}

fn signed_ping(n: usize) -> Vec<u8> {
    let body = format!(r#"{{"zen": "Keep it logically awesome {n}", "hook_id": {n}}}"#);
    let sig = format!("sha256={}", hmac_hex(APP_SECRET, body.as_bytes()));
    let delivery = format!("ping-{n}");
    let headers = [("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", delivery.as_str()), ("X-Hub-Signature-256", &sig)];
    post_bytes("/forge/app", &headers, body.as_bytes())
}

/// What the flood sends on each connection: a head (all at once), then one byte a second.
struct Attack {
    head: String,
}

fn attacks() -> Vec<Attack> {
    let fake = format!("sha256={}", "0".repeat(64));
    let mut all = Vec::new();
    // Declared lengths from large to the size of a signed request, so that what the large ones
    // leave of a budget the small ones take.
    for length in [1024 * 1024, 204800, 65536, 4096, 512, 100] {
        let post = |path: &str, extra: &str| Attack {
            head: format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n"),
        };
        // The known hole: any signature header reserved a body before it was checked.
        all.push(post("/hooks/a", &format!("X-Hub-Signature-256: {fake}\r\n")));
        all.push(post("/hooks/nope", &format!("X-Hub-Signature-256: {fake}\r\n")));
        all.push(post("/forge/app", &format!("X-GitHub-Event: push\r\nX-Hub-Signature-256: {fake}\r\n")));
        all.push(post("/forge/origin", "X-Gitea-Event: push\r\nX-Gitea-Signature: 00\r\n"));
        all.push(post("/forge/nope", &format!("X-Hub-Signature-256: {fake}\r\n")));
        // A declared length without credentials.
        all.push(post("/hooks/b", ""));
    }
    // The page without its token, slow heads.
    all.push(Attack { head: "GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n".into() });
    all.push(Attack { head: "GET /status.json?q=".into() });
    all.push(Attack { head: "POST /hooks/a HTTP/1.1\r\nX-Pad: ".into() });
    all
}

/// Floods from `sources` until `stop`: keeps `target` connections open, each sent one of the
/// attacks' heads and then a byte a second; a connection the server closed is replaced.
fn flood(port: u16, sources: Vec<Ipv4Addr>, target: usize, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    let attacks = attacks();
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut n = 0usize;
    let mut last_trickle = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // At most 64 new connections a turn: the flood churns, it does not spin.
        for _ in 0..64 {
            if conns.len() >= target {
                break;
            }
            n += 1;
            if let Some(mut c) = connect_from(sources[n % sources.len()], port, true) {
                let _ = c.write(attacks[n % attacks.len()].head.as_bytes());
                conns.push(c);
                opened.fetch_add(1, Ordering::Relaxed);
            }
        }
        let trickle = last_trickle.elapsed() >= Duration::from_secs(1);
        if trickle {
            last_trickle = Instant::now();
        }
        conns.retain_mut(|c| {
            let mut buf = [0u8; 512];
            match c.read(&mut buf) {
                Ok(_) => return false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            !trickle || c.write(b"x").is_ok()
        });
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn signed_requests_are_never_refused_and_answered_promptly_while_every_endpoint_is_flooded() {
    // Regression: any `X-Hub-Signature-256` reserved its hook's body of the shared budget before
    // the signature was checked, so slow fake-signed bodies made every signed request `503`.
    let mut env = TestEnv::new();
    every_endpoint(&mut env);
    let server = Serve::start(&env);
    let port = server.port;
    // A second receiver nobody floods, asked the same requests in turn with the flooded one: on
    // a loaded machine (other tests, the flood's own clients on the same cores) its answers say
    // how slow the machine is. The bound below is 2 s plus five times its slowest answer: on
    // this debug build beside other tests the flooded receiver's slowest answer was 0.7–1.6 s,
    // never a refusal (`bench/serve_bench.py flood all` measures the release build against 1 s).
    let mut control_env = TestEnv::new();
    every_endpoint(&mut control_env);
    let control = Serve::start(&control_env);
    let me = Ipv4Addr::new(127, 0, 0, 1);
    // The legitimate sender authenticates once before the flood, as a CI host does all day.
    for port in [port, control.port] {
        let (status, text, _) = send_from(me, port, &signed_hook("a", "before"));
        assert_eq!(status, 202, "{text}");
    }
    // Each authenticated kind once (a signed hook request, a signed forge delivery, a GitLab
    // delivery, the page with its token): the slowest answer.
    let legit = |port: u16, tag: &str, i: usize| {
        let mut slowest = Duration::ZERO;
        let (status, text, took) = send_from(me, port, &signed_hook("a", &format!("{tag}-{i}")));
        assert_eq!(status, 202, "signed hook request {tag} {i} to {port}: {text}\n{}", server.log());
        slowest = slowest.max(took);
        let (status, text, took) = send_from(me, port, &signed_ping(i + if tag == "quiet" { 0 } else { 1000 }));
        assert_eq!(status, 200, "signed forge delivery {tag} {i}: {text}");
        slowest = slowest.max(took);
        let uuid = format!("{tag}-{i}");
        let gitlab = post_bytes(
            "/forge/lab",
            &[("X-Gitlab-Token", LAB_SECRET), ("X-Gitlab-Event", "Note Hook"), ("X-Gitlab-Event-UUID", &uuid)],
            format!(r#"{{"object_kind": "note", "n": "{uuid}"}}"#).as_bytes(),
        );
        let (status, text, took) = send_from(me, port, &gitlab);
        assert_eq!(status, 204, "GitLab delivery {tag} {i}: {text}");
        slowest = slowest.max(took);
        let page = format!("GET /status.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PAGE_TOKEN}\r\n\r\n");
        let (status, text, took) = send_from(me, port, page.as_bytes());
        assert_eq!(status, 200, "the status page with its token {tag} {i}: {text}");
        slowest.max(took)
    };
    // A signed request from an address that never authenticated before.
    let fresh = |port: u16, tag: &str, k: u8| {
        let (status, text, took) =
            send_from(Ipv4Addr::new(127, 0, 3, k), port, &signed_hook("b", &format!("fresh-{tag}-{k}")));
        assert_eq!(status, 202, "a signed request from a new address {tag}: {text}");
        took
    };
    let mut unflooded = (1..=5).map(|k| fresh(control.port, "quiet", k)).max().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let many: Vec<Ipv4Addr> = (2..=101).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
    let floods: Vec<_> = [(many, 600), (vec![Ipv4Addr::new(127, 0, 2, 1)], 200)]
        .into_iter()
        .map(|(sources, target)| {
            let (stop, opened) = (stop.clone(), opened.clone());
            std::thread::spawn(move || flood(port, sources, target, stop, opened))
        })
        .collect::<Vec<_>>();
    // And whole fake-signed bodies, each read and its signature checked (64 KiB: this is a debug
    // build, whose HMAC is some fifty times slower than a release build's).
    let whole: Vec<_> = (0..1u8)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let fake = format!("sha256={}", "0".repeat(64));
                let bytes = post_bytes("/forge/nope", &[("X-Hub-Signature-256", &fake)], &vec![b'x'; 64 * 1024]);
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    sent += 1;
                    send_from(Ipv4Addr::new(127, 0, 1, 2 + (sent % 100) as u8 + t), port, &bytes);
                    std::thread::sleep(Duration::from_millis(10));
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut anon = server.anon_rss_kb();
    let mut answered = 0;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(20) {
        i += 1;
        slowest = slowest.max(legit(port, "during", i));
        unflooded = unflooded.max(legit(control.port, "during", i));
        answered += 4;
        anon = anon.max(server.anon_rss_kb());
        std::thread::sleep(Duration::from_millis(100));
    }
    // From addresses never seen before, its signed request finds room too, since anonymous
    // readers are shed for it.
    let mut fresh_slowest = Duration::ZERO;
    for k in 10..20 {
        fresh_slowest = fresh_slowest.max(fresh(port, "during", k));
        unflooded = unflooded.max(fresh(control.port, "during", k));
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    let whole: usize = whole.into_iter().map(|w| w.join().unwrap()).sum();
    let opened = opened.load(Ordering::Relaxed);
    let peak = server.peak_rss_kb();
    let log = server.log();
    let shed = log.matches(" 503 ").count() + log.matches(" 408 ").count() + log.matches(" 401 ").count();
    eprintln!(
        "{answered} authenticated requests beside {opened} flood connections ({shed} refused) and {whole} whole \
         fake-signed bodies: slowest {slowest:?}, from new addresses {fresh_slowest:?} (unflooded receiver {unflooded:?}), \
         peak RSS {peak} KiB \
         (a debug binary's own pages included), anonymous RSS at most {anon} KiB"
    );
    assert!(opened > 1000, "the flood ran: {opened} connections");
    assert!(shed > 500, "the flood was refused and shed, not ignored: {shed}");
    let bound = Duration::from_secs(2) + unflooded * 5;
    assert!(slowest < bound, "{slowest:?} (unflooded receiver {unflooded:?})");
    assert!(fresh_slowest < bound, "{fresh_slowest:?} (unflooded receiver {unflooded:?})");
    // What the flood can make the receiver hold is its heap and stacks: bodies within 8 MiB,
    // heads within 4 MiB, handler threads. (A debug binary's own pages are some 22 MiB.)
    assert!(anon < 20 * 1024, "anonymous RSS {anon} KiB");
    assert!(peak < 48 * 1024, "peak RSS {peak} KiB");
}
