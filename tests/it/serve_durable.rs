//! `pipe serve` killed outright during a flood of signed requests: every request answered `202`
//! has its status document after a restart, including the one still waiting (whose document is
//! only in `serve/accepted` when the process dies). Real processes on 127.0.0.1.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::TestEnv;
use crate::support::serve::Serve;

const SECRET: &str = "sec-31415926";

/// One signed request on its own connection: the status and the run id answered, `None` when
/// the connection failed or closed without an answer.
fn post_signed(port: u16, delivery: &str) -> Option<(u16, String)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let body = format!(r#"{{"hook": "a", "delivery": "{delivery}", "sent_at": {now}}}"#);
    let sig = crate::support::hub_signature(SECRET, body.as_bytes());
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "POST /hooks/a HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let answer = crate::support::http::read_answer(&mut stream);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let doc: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()?;
    Some((status, doc["id"].as_str().unwrap_or_default().to_string()))
}

/// The process listening on `port` as `pipe serve` (the harness keeps its child to itself).
fn pid_of(port: u16) -> i32 {
    let listen = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.contains(&b"serve".as_slice()) && args.contains(&listen.as_bytes())
        })
        .expect("the pipe serve process")
}

#[test]
fn every_request_answered_202_has_its_status_document_after_a_sigkill_during_a_flood() {
    let mut env = TestEnv::new();
    env.env("SECRET", SECRET);
    env.config("[serve.hooks.a]\nsecret_env = \"SECRET\"\ncommand = { shell = \"sleep 2\" }\n");
    let server = Serve::start(&env);
    let port = server.port;
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match post_signed(port, &format!("flood-{c}-{i}")) {
                        Some((202, id)) => accepted.lock().unwrap().push(id),
                        Some((status, id)) => panic!("answered {status} ({id}) before the kill"),
                        // The kill: connections refused or cut.
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the flood got {} answers in 60 s", accepted.lock().unwrap().len());
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = pid_of(port);
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_millis(300)
        && std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    drop(server);
    let ids = accepted.lock().unwrap().clone();
    let docs = env.path().join("state").join("serve").join("a");
    // Runs superseded while they waited have no document until the restart writes them.
    let mut missing: std::collections::HashSet<&String> =
        ids.iter().filter(|id| !docs.join(format!("{id}.json")).exists()).collect();
    // A power cut can also lose a document that was written but never synced (only
    // `serve/accepted` is): when the kill left none missing, the newest accepted run's document
    // goes, so the restart's rebuilding from `serve/accepted` is what this test proves either way.
    if missing.is_empty()
        && let Some(last) = ids.last()
    {
        std::fs::remove_file(docs.join(format!("{last}.json"))).unwrap();
        missing.insert(last);
    }

    let server = Serve::start(&env);
    let mut found = 0;
    let (mut never_ran, mut superseded) = (0, 0);
    for id in &ids {
        let text = std::fs::read_to_string(docs.join(format!("{id}.json")))
            .unwrap_or_else(|e| panic!("run {id} was answered 202 but has no status document: {e}"));
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["id"], id.as_str(), "{text}");
        assert!(
            matches!(doc["status"].as_str(), Some("succeeded" | "superseded" | "cancelled" | "interrupted")),
            "{text}"
        );
        found += 1;
        // Every document the restart had to write from `serve/accepted` says the run never ran.
        if missing.contains(&id) {
            assert!(matches!(doc["status"].as_str(), Some("superseded" | "cancelled")), "{text}");
            never_ran += 1;
            superseded += usize::from(doc["status"] == "superseded");
        }
    }
    eprintln!(
        "{} requests answered 202 before SIGKILL; {found} status documents after the restart ({never_ran} written at the restart from serve/accepted, each of a run that never ran; {superseded} of them superseded, as serve/superseded said)",
        ids.len()
    );
    assert_eq!(found, ids.len());
    // The flood goes to one hook: runs that waited were superseded, and a SIGKILL leaves the
    // lines the receiver appended for them.
    assert!(superseded > 0, "no run came back superseded");
    drop(server);
}
