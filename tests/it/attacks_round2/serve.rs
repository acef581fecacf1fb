//! The receiver's capacity for signed requests: anonymous readers and captured tokens.

use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo};

/// A `pipe serve` that shows the status page without a token (`[serve.page]` with no
/// `token_env`: "the pages are open to whoever reaches them") and receives signed webhooks.
/// Unauthenticated requests are handled on a share of the handlers (half the CPUs, at least
/// one), and a streamed run log keeps its handler's place until the last byte is written: one
/// anonymous client that asks for a long log and reads it a little at a time (never 10 s
/// without reading) holds the whole anonymous share for up to ten minutes, renewable. A signed
/// request from an address that has not authenticated in the last ten minutes (the CI host
/// after a quiet spell, a forge's delivery) is anonymous until its signature is checked: it
/// waits its turn and is answered `503` after 10 s, and the sender's retries meet the same.
///
/// Fixed: the anonymous place is given back once the answer is made, before it is written; an
/// anonymous answer is written in a place of its own (a few per address, a bound in all).
#[test]
fn a_slow_reader_of_an_open_log_cannot_keep_signed_webhooks_out() {
    use crate::serve_flood::{connect_from, post_bytes, send_from};
    use pipe::model::{Outcome, Stage};
    use pipe::state::{self, History, Run, StageRecord, StageRun};
    use std::io::{Read as _, Write as _};
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let mut env = TestEnv::new();
    env.env("HOOK_SECRET", "hook-secret-slow-log");
    let repo = crate::support::BareRepo::new(env.path(), "app");
    let main = repo.set("refs/heads/main");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[project.app]
repo = "{}"
branches = ["main"]

[serve.page]
enabled = true

[serve.hooks.deploy]
secret_env = "HOOK_SECRET"
command = {{ argv = ["true"] }}
"#,
        repo.url(),
        ws = env.path().join("work").display()
    ));
    env.pipe(&["poll"]).code(0);
    // A failed run on main with a long log, written with pipe's own state writers.
    let path = env.state_path();
    let at: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
    let mut st = state::load(&path).unwrap();
    let r = st.project.get_mut("app").unwrap().refs.get_mut("refs/heads/main").unwrap();
    r.last = Some(StageRecord { stage: Stage::Test, result: Outcome::Failed, commit: main.clone(), at });
    r.pending = false;
    state::save(&path, &st).unwrap();
    let logs = state::logs_dir(&path, "app", "refs/heads/main");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("1.log");
    let line = "test output: the same line, over and over, as a failing test prints it\n";
    std::fs::write(&log, line.repeat(16 * 1024 * 1024 / line.len())).unwrap();
    let stage = |stage, result| StageRun { stage, result, started: at, seconds: 1.0, exit_code: None, ended: None };
    let mut history = History {
        schema: state::SCHEMA,
        refname: "refs/heads/main".into(),
        next_run: 2,
        tested: Default::default(),
        runs: vec![Run {
            number: 1,
            commit: main.clone(),
            started: at,
            image: "app".into(),
            tags: vec!["latest".into()],
            image_id: None,
            log,
            stages: vec![stage(Stage::Build, Outcome::Passed), stage(Stage::Test, Outcome::Failed)],
            digests: Default::default(),
            test: None,
            test_env: Default::default(),
            test_secrets: Vec::new(),
            test_services: None,
            subject: None,
            author: None,
            images: Vec::new(),
        }],
    };
    state::save_history(&state::history_path(&path, "app", "refs/heads/main"), &mut history, 20).unwrap();
    let server = Serve::start(&env);
    let signed = |delivery: &str| {
        let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let body = format!(r#"{{"hook": "deploy", "delivery": "{delivery}", "sent_at": {sent_at}}}"#);
        let sig = crate::support::hub_signature("hook-secret-slow-log", body.as_bytes());
        post_bytes("/hooks/deploy", &[("X-Hub-Signature-256", &sig)], body.as_bytes())
    };

    // The legitimate path: a signed request from an address never seen is answered at once.
    let (status, answer, took) = send_from(Ipv4Addr::new(127, 0, 0, 21), server.port, &signed("before-1"));
    assert!(status == 202 && took < Duration::from_secs(2), "{status} after {took:?}: {answer}");

    // The attack: one client asks for the log and reads 16 KiB every 2 s.
    let mut reader = connect_from(Ipv4Addr::new(127, 0, 0, 9), server.port, false).expect("connect");
    reader.write_all(b"GET /status/run?project=app&ref=main HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let slow = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        while !stopping.load(Ordering::Relaxed) {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        total
    });
    std::thread::sleep(Duration::from_secs(2));

    // The CI host's signed release, from an address that has not authenticated lately.
    let started = Instant::now();
    let (status, answer, took) = send_from(Ipv4Addr::new(127, 0, 0, 22), server.port, &signed("during-1"));
    stop.store(true, Ordering::Relaxed);
    let read = slow.join().unwrap();
    eprintln!("a signed webhook during the slow read: {status} after {took:?} (the reader had read {read} bytes)");
    assert!(
        status == 202 && took < Duration::from_secs(5),
        "a signed webhook was answered {status} after {:?} while one anonymous client read a log slowly ({read} bytes \
         read): {}",
        started.elapsed(),
        answer.lines().next().unwrap_or("")
    );
}

/// Deliveries of an event that runs nothing a GitLab project's captured token floods the
/// receiver with: none is recorded, so this many proves what any number would.
const IGNORED: usize = 20_000;

/// The live entries one credential's part of the record of seen deliveries holds
/// (`serve::replay::PART_ENTRIES`).
const PART: usize = 100_000;

/// Deliveries that run, sent with the same token once its part is nearly full (as a flood of
/// them leaves it: the record is read back at start): the last one finds the part full.
const RUNS: usize = 11;

/// The README concedes that whoever captures one GitLab delivery holds the project's token and
/// "can send new deliveries", and bounds what that buys: "start `pipe run PROJECT`". But every
/// delivery a receiver takes, of any forge project and of any hook, is remembered in one record
/// of at most 250,000 live entries, a forge's for seven days, and a full record refuses every
/// new delivery with `503` rather than forget one. With one GitLab token, 250,000 distinct
/// bodies of an event that runs nothing (`Note Hook`, answered `204`) fill it in minutes: then
/// for seven days every signed release to every hook of that receiver is refused, and so is
/// every other project's forge webhook.
///
/// Fixed: an event that runs nothing is not recorded (its replay does nothing either), and each
/// hook and forge project has its own part of the record, so the token fills only its project's.
#[test]
fn a_captured_gitlab_token_cannot_keep_every_signed_release_out_for_a_week() {
    use crate::serve_flood::{connect_from, post_bytes, send_from};
    use std::io::{Read as _, Write as _};
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    let mut env = TestEnv::new();
    env.env("HOOK_SECRET", "hook-secret-fill")
        .env("LAB_SECRET", "gitlab-token-fill")
        .env("FORGE_TOKEN", "forge-token-fill");
    let repo = WorkRepo::new(env.path(), "lab");
    repo.write("README", "no image here\n");
    repo.commit_to("main", "one");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.lab]
kind = "gitlab"
api = "http://127.0.0.1:9/api/v4"
token_env = "FORGE_TOKEN"

[project.lab]
repo = "{url}"
branches = ["main"]
forge = "lab"
forge_repo = "42"
webhook_secret_env = "LAB_SECRET"

[serve.hooks.deploy]
secret_env = "HOOK_SECRET"
command = {{ argv = ["true"] }}
"#,
        url = repo.url(),
        ws = env.path().join("work").display()
    ));
    // The project's part nearly full, as RUNS - 1 short of PART deliveries that ran leave it:
    // lines `EXPIRES =KEY PART`, the part being the first 8 bytes of SHA-256 of `forge:lab`.
    let deliveries = env.state_path().parent().unwrap().join("serve").join("deliveries");
    std::fs::create_dir_all(deliveries.parent().unwrap()).unwrap();
    let part: String =
        <sha2::Sha256 as sha2::Digest>::digest(b"forge:lab")[..8].iter().map(|b| format!("{b:02x}")).collect();
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 7 * 24 * 3600;
    let prefilled = PART - (RUNS - 1);
    let lines: String = (0..prefilled).map(|i| format!("{expires} ={i:032x} {part}\n")).collect();
    std::fs::write(&deliveries, lines).unwrap();
    let server = Serve::start(&env);
    let port = server.port;
    let release = |delivery: &str| {
        let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let body = format!(r#"{{"hook": "deploy", "delivery": "{delivery}", "sent_at": {sent_at}}}"#);
        let sig = crate::support::hub_signature("hook-secret-fill", body.as_bytes());
        post_bytes("/hooks/deploy", &[("X-Hub-Signature-256", &sig)], body.as_bytes())
    };
    let ci = Ipv4Addr::new(127, 0, 5, 1);
    let (status, text, _) = send_from(ci, port, &release("before"));
    assert_eq!(status, 202, "the CI host's release before the flood: {text}");

    // The record is written ahead with zeros: its entries are the lines that are not zero nor
    // the `window N` line naming the replay window they were recorded under.
    let recorded = || {
        std::fs::read_to_string(&deliveries)
            .map_or(0, |t| t.replace('\0', "").lines().filter(|l| !l.starts_with("window ")).count())
    };
    assert_eq!(recorded(), prefilled + 1, "the release is recorded");

    // The flood: distinct bodies with the captured token, sent from many source addresses (one
    // connection per request wears out a source's ports); counts of answers by status.
    let flood = |event: &'static str, kind: &'static str, count: usize, base: u8| {
        let answers = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new()));
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let answers = answers.clone();
                std::thread::spawn(move || {
                    let mut i = t as usize;
                    while i < count {
                        let source = Ipv4Addr::new(127, base + t, (i / 1600 % 200) as u8, 1 + (i / 8 % 200) as u8);
                        let uuid = format!("{kind}{i}");
                        let bytes = post_bytes(
                            "/forge/lab",
                            &[
                                ("X-Gitlab-Token", "gitlab-token-fill"),
                                ("X-Gitlab-Event", event),
                                ("X-Gitlab-Event-UUID", &uuid),
                            ],
                            format!(r#"{{"object_kind": "{kind}", "n": {i}}}"#).as_bytes(),
                        );
                        let Some(mut stream) = connect_from(source, port, false) else { continue };
                        let _ = stream.write_all(&bytes);
                        let mut answer = [0u8; 12];
                        let status = match stream.read_exact(&mut answer) {
                            Ok(()) => String::from_utf8_lossy(&answer[9..]).into_owned(),
                            Err(_) => "none".into(),
                        };
                        *answers.lock().unwrap().entry(status).or_default() += 1;
                        i += 8;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
    };

    // Events that run nothing are answered 204 and recorded nowhere.
    let ignored = flood("Note Hook", "note", IGNORED, 20);
    assert_eq!(ignored.get("204"), Some(&IGNORED), "{ignored:?}");
    assert_eq!(recorded(), prefilled + 1, "deliveries that ran nothing were recorded");

    // Events that run fill the project's own part, and only that.
    let runs = flood("Push Hook", "push", RUNS, 40);
    let taken = runs.get("202").copied().unwrap_or(0);
    assert_eq!((taken, runs.get("503")), (RUNS - 1, Some(&1)), "{runs:?}");

    // The CI host's next release, after the flood.
    let (status, text, _) = send_from(ci, port, &release("after"));
    assert_eq!(
        status,
        202,
        "after {IGNORED} ignored GitLab deliveries and the project's part filled ({runs:?}) with one captured token, \
         the CI host's signed release was refused: {} ({})",
        text.lines().next().unwrap_or(""),
        server.log().lines().rev().find(|l| l.contains("delivery")).unwrap_or("")
    );
}

/// A signed request that asks to wait for its run (`?wait=`) from an address not seen lately
/// was anonymous until its signature was checked, and kept its anonymous handler's place for
/// the whole wait: as many such requests as the anonymous share has places (one on a two-core
/// receiver) kept every other new address's signed request waiting its turn, and it was
/// answered `503` after 10 s.
///
/// Fixed: a request gives its anonymous place back once its credentials check out.
#[test]
fn signed_requests_waiting_for_their_runs_leave_room_for_another_new_senders_signed_request() {
    use crate::serve_flood::{post_bytes, send_from};
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    let secret = "hook-secret-waiting";
    // Enough waiters to take every anonymous place, each on a hook of its own (a second
    // request to one hook would supersede the first and end its wait).
    let waiters = (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1);
    let mut env = TestEnv::new();
    env.env("HOOK_SECRET", secret);
    let mut config = format!("[pipe]\nworkspace = \"{}\"\n\n", env.path().join("work").display());
    for i in 0..waiters {
        config.push_str(&format!(
            "[serve.hooks.slow{i}]\nsecret_env = \"HOOK_SECRET\"\ncommand = {{ argv = [\"sleep\", \"12\"] }}\n\n"
        ));
    }
    config.push_str("[serve.hooks.deploy]\nsecret_env = \"HOOK_SECRET\"\ncommand = { argv = [\"true\"] }\n");
    env.config(&config);
    let server = Serve::start(&env);
    let signed = |hook: &str, delivery: &str, query: &str| {
        let sent_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let body = format!(r#"{{"hook": "{hook}", "delivery": "{delivery}", "sent_at": {sent_at}}}"#);
        let sig = crate::support::hub_signature(secret, body.as_bytes());
        post_bytes(&format!("/hooks/{hook}{query}"), &[("X-Hub-Signature-256", &sig)], body.as_bytes())
    };
    let port = server.port;
    let waiting: Vec<_> = (0..waiters)
        .map(|i| {
            let request = signed(&format!("slow{i}"), &format!("wait-{i}"), "?wait=30");
            std::thread::spawn(move || send_from(Ipv4Addr::new(127, 0, 0, 41 + i as u8), port, &request))
        })
        .collect();
    for i in 0..waiters {
        server.wait_for(&format!("hook slow{i}: deploying"), 1, Duration::from_secs(10));
    }

    // Another CI host, never seen before, while every waiter waits for its run.
    let started = Instant::now();
    let (status, answer, took) = send_from(Ipv4Addr::new(127, 0, 0, 99), port, &signed("deploy", "other-1", ""));
    eprintln!("a new sender's signed request while {waiters} signed requests wait: {status} after {took:?}");
    assert!(
        status == 202 && took < Duration::from_secs(5),
        "a signed request from a new address was answered {status} after {:?} while {waiters} signed request(s) \
         waited for their runs: {}",
        started.elapsed(),
        answer.lines().next().unwrap_or("")
    );
    // The waiters themselves get their runs' end.
    for w in waiting {
        let (status, answer, _) = w.join().unwrap();
        assert!(status == 200 && answer.contains(r#""status":"succeeded""#), "{status}: {answer}");
    }
}
