//! Remotes that are not on our side: an endless ref advertisement (over smart HTTP and over the
//! git protocol) is cut off at the documented cap with a clear error, in bounded memory; ref
//! names git would not accept, or that would mislead a terminal or read as an option, are
//! skipped with an escaped warning and never stored, over every transport.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use crate::support::{BareRepo, GitDaemon, GitHttpServer, TestEnv};

const ONE_GB: u64 = 1 << 30;

/// A pkt-line.
fn pkt(payload: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    out
}

/// Writes `start` then ordinary-looking ref lines until `limit` bytes went out or the client
/// hung up; returns the bytes written.
fn stream_refs(out: &mut impl Write, start: &[u8], limit: u64) -> u64 {
    let mut sent = 0u64;
    if out.write_all(start).is_err() {
        return 0;
    }
    let mut batch = Vec::with_capacity(1 << 16);
    let mut n = 0u64;
    while sent < limit {
        batch.clear();
        while batch.len() < (1 << 16) - 128 {
            n += 1;
            batch.extend(pkt(&format!("{:040x} refs/heads/branch-{n}\n", n)));
        }
        if out.write_all(&batch).is_err() {
            break;
        }
        sent += batch.len() as u64;
    }
    sent
}

/// A hostile server on 127.0.0.1: answers every connection with an endless (1 GB) ref
/// advertisement, as smart HTTP or as a git daemon. Returns the port and how many bytes the
/// client took before hanging up (filled in when the connection ends).
fn hostile_server(http: bool) -> (u16, std::sync::mpsc::Receiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let start = if http {
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    let mut start = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nConnection: close\r\n\r\n".to_vec();
                    start.extend(pkt("# service=git-upload-pack\n"));
                    start.extend(b"0000");
                    start
                } else {
                    let mut len = [0u8; 4];
                    let _ = reader.read_exact(&mut len);
                    let len = usize::from_str_radix(std::str::from_utf8(&len).unwrap_or("0"), 16).unwrap_or(4);
                    let mut request = vec![0; len.saturating_sub(4)];
                    let _ = reader.read_exact(&mut request);
                    Vec::new()
                };
                let first = pkt(&format!("{:040x} HEAD\0multi_ack side-band-64k\n", 1));
                let mut begin = start;
                begin.extend(first);
                let _ = tx.send(stream_refs(&mut stream, &begin, ONE_GB));
            });
        }
    });
    (port, rx)
}

/// Runs `pipe ARGS` under GNU time and returns (exit code, stderr, peak RSS in KiB). Not
/// wait4(2)'s rusage: a child spawned from this (large, multi-test) process starts with the
/// parent's address space until it execs, and the kernel keeps that high-water mark.
fn run_measured(env: &TestEnv, args: &[&str]) -> (i32, String, i64) {
    let pipe = env.command(args);
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("peak-rss-kib %M").arg(pipe.get_program()).args(pipe.get_args());
    cmd.env_clear();
    for (key, value) in pipe.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    if let Some(dir) = pipe.get_current_dir() {
        cmd.current_dir(dir);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("GNU time (package `time`) runs pipe");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (rest, last) = stderr.trim_end().rsplit_once('\n').unwrap_or(("", stderr.trim_end()));
    let peak = last.strip_prefix("peak-rss-kib ").and_then(|k| k.trim().parse().ok()).expect("time's peak RSS line");
    (out.status.code().unwrap_or(-1), rest.to_string(), peak)
}

#[test]
fn an_endless_ref_advertisement_is_cut_off_at_the_cap_in_bounded_memory() {
    for http in [true, false] {
        let env = TestEnv::new();
        let (port, sent) = hostile_server(http);
        let url =
            if http { format!("http://127.0.0.1:{port}/evil.git") } else { format!("git://127.0.0.1:{port}/evil.git") };
        env.config(&format!("[project.evil]\nrepo = \"{url}\"\nbranches = [\"**\"]\n"));
        let started = std::time::Instant::now();
        let (code, stderr, peak_kib) = run_measured(&env, &["poll"]);
        let elapsed = started.elapsed();
        let took = sent.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        assert_eq!(code, 1, "a remote that cannot be polled is exit 1\n{stderr}");
        assert!(stderr.contains("pipe stops reading there"), "{stderr}");
        assert!(stderr.contains(&format!("`{url}`")), "the error names the remote: {stderr}");
        assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB over {url}");
        assert!(took < 64 << 20, "pipe read {took} bytes");
        assert!(env.read_state_opt().is_empty(), "nothing was recorded");
        eprintln!("{url}: peak RSS {} MB, {took} bytes read, {elapsed:?}", peak_kib / 1024);
    }
}

/// Names git accepts but pipe must not (a leading dash reads as an option), and names git
/// itself refuses, written straight into a real bare repository's ref store.
fn plant_bad_refs(repo: &BareRepo, sha: &str) -> Vec<&'static str> {
    let bad = ["-rf", "ok/--upload-pack=evil", "\x1b[31mred\x1b[0m", "cr\rlf", "tab\tx", "rtl\u{202e}txt"];
    for name in bad {
        let path = repo.path.join("refs/heads").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{sha}\n")).unwrap();
    }
    bad.to_vec()
}

#[test]
fn ref_names_that_are_not_valid_are_skipped_with_an_escaped_warning_and_never_stored() {
    let env = TestEnv::new();
    let served = env.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let repo = BareRepo::new(&served, "app");
    let main = repo.set("refs/heads/main");
    let bad = plant_bad_refs(&repo, &main);
    let daemon = GitDaemon::start(&served);
    let http = GitHttpServer::start(&served, None);
    // A name that climbs out of refs/, only possible in packed-refs (git's own servers refuse
    // to serve such a repository at all, so only the local reader meets it).
    let climb = BareRepo::new(env.path(), "climb");
    let climb_main = climb.set("refs/heads/main");
    std::fs::write(climb.path.join("packed-refs"), format!("{climb_main} refs/heads/../../config\n")).unwrap();
    let urls = [("local", repo.url()), ("daemon", daemon.url("app.git")), ("http", http.url("app.git"))];
    let config: String = urls
        .iter()
        .chain([&("climb", climb.url())])
        .map(|(name, url)| format!("[project.{name}]\nrepo = \"{url}\"\nbranches = [\"**\"]\n\n"))
        .collect();
    env.config(&config);

    let run = env.pipe(&["poll", "--json"]);
    run.code(0);
    let doc = run.json();
    let stored = env.read_state();
    for (name, _) in &urls {
        let refs: Vec<&str> = doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["project"] == *name)
            .map(|c| c["ref"].as_str().unwrap())
            .collect();
        assert_eq!(refs, ["refs/heads/main"], "{name} tracked only the valid branch");
        // Git's servers themselves drop names git refuses; a dash-led name they advertise.
        run.stderr_has(&format!("{name}: skipped ref \"refs/heads/-rf\": not a valid git ref name"));
        run.stderr_has(&format!("{name}: skipped ref \"refs/heads/ok/--upload-pack=evil\""));
    }
    // file:// reads the ref store itself, so it sees every planted name: each is shown escaped.
    run.stderr_has("local: skipped ref \"refs/heads/\\u{1b}[31mred\\u{1b}[0m\"");
    run.stderr_has("local: skipped ref \"refs/heads/cr\\rlf\"");
    run.stderr_has("local: skipped ref \"refs/heads/rtl\\u{202e}txt\"");
    for raw in ['\x1b', '\r', '\u{202e}'] {
        assert!(!run.stderr.contains(raw), "raw {raw:?} reached the terminal:\n{}", run.stderr);
    }
    for name in bad {
        assert!(!stored.contains(name) && !stored.contains(&format!("{name:?}").replace('"', "")), "{name:?} stored");
    }
    run.stderr_has("climb: skipped ref \"refs/heads/../../config\"");
    assert!(!stored.contains("../"), "the climbing name was not stored");
    assert!(stored.contains(&main));
}

#[test]
fn a_hostile_server_advertising_control_characters_cannot_reach_the_terminal_or_the_state() {
    let env = TestEnv::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sha = "ab".repeat(20);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
            }
            let mut body = pkt("# service=git-upload-pack\n");
            body.extend(b"0000");
            body.extend(pkt(&format!("{sha} refs/heads/main\0agent=x\n")));
            body.extend(pkt(&format!("{sha} refs/heads/\x1b]0;owned\x07title\n")));
            body.extend(pkt(&format!("{sha} refs/heads/x\r\x1b[2Kfake: all good\n")));
            body.extend(b"0000");
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    env.config(&format!("[project.h]\nrepo = \"http://127.0.0.1:{port}/h.git\"\nbranches = [\"**\"]\n"));
    let run = env.pipe(&["poll"]);
    run.code(0)
        .stderr_has("h: skipped ref \"refs/heads/\\u{1b}]0;owned\\u{7}title\"")
        .stderr_has("h: skipped ref \"refs/heads/x\\r\\u{1b}[2Kfake: all good\"");
    assert!(!run.stderr.contains('\x1b') && !run.stdout.contains('\x1b'));
    let stored = env.read_state();
    assert!(stored.contains("refs/heads/main") && !stored.contains("owned") && !stored.contains("fake"));
}

#[test]
fn branch_names_and_log_lines_reach_slack_escaped_and_mention_nobody() {
    let mut env = TestEnv::new();
    let slack = crate::support::http::HttpSink::start(200);
    let repo = crate::support::WorkRepo::new(env.path(), "app");
    repo.write(".pipe.toml", "image = \"pipe-test/hostile-slack\"\ntest = \"true\"\n");
    // Valid for git, hostile for Slack: markup and a mention in the branch name.
    let branch = "x<!channel>&<@U0BOSS|boss>@here";
    repo.commit_to(branch, "first");
    // A docker that answers the engine probe and fails every build with a hostile log line:
    // the failure (and its log tail) is what Slack is told about.
    let docker = env.path().join("docker");
    std::fs::write(
        &docker,
        "#!/bin/sh\n[ \"$1\" = version ] && { echo 27.0; exit 0; }\necho '<!everyone> @channel build exploded <@U0ADMIN>'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.env("PIPE_DOCKER", docker.to_str().unwrap()).env("SLACK_URL", &slack.url("/services/T/B/X"));
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[notify.slack]\nwebhook_url_env = \"SLACK_URL\"\n\n[project.app]\nrepo = \"{url}\"\nbranches = [\"**\"]\n",
        ws = env.path().join("work").display(),
        url = repo.url(),
    ));
    env.pipe(&["run"]).code(1);
    let messages = slack.taken();
    assert_eq!(messages.len(), 1, "one failure message");
    let body = String::from_utf8(messages[0].body.clone()).unwrap();
    for raw in ["<!channel>", "<!everyone>", "<@U0BOSS", "<@U0ADMIN>", "@here", "@channel"] {
        assert!(!body.contains(raw), "{raw} reached Slack unescaped: {body}");
    }
    let m = messages[0].json();
    assert_eq!(
        m["text"].as_str().unwrap(),
        "app x&lt;!channel&gt;&amp;&lt;@U0BOSS|boss&gt;@\u{200b}here failed at build (".to_string()
            + m["attachments"][0]["fields"][2]["value"].as_str().unwrap()
            + ")"
    );
    let tail = m["attachments"][0]["fields"][5]["value"].as_str().unwrap();
    assert!(tail.contains("&lt;!everyone&gt; @\u{200b}channel build exploded &lt;@U0ADMIN&gt;"), "{tail}");
}
