//! The status page and badges of `pipe serve` (`[serve.page]`), over real HTTP on 127.0.0.1 and
//! rendered by headless Chromium: what a person sees, that nothing from a repository or a log
//! runs as markup, who may read what, and 10,000 refs.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipe::model::{DeployResult, Outcome, Stage};
use pipe::state::{self, DeployHistory, DeployRecord, History, RefState, Run, StageRecord, StageRun};

use crate::support::serve::Serve;
use crate::support::{BareRepo, TestEnv};

const XSS_BRANCH: &str = "refs/heads/<img/src=x/onerror=alert(1)>";
const TOKEN: &str = "page-token-s3cret";
/// The subject and author of dev's commit as its build's checkout gave them: markup, as a
/// repository may write.
const SUBJECT: &str = "Fix <b>login</b> & logout";
const AUTHOR: &str = "Zoë <img src=x onerror=alert(2)>";

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

/// A project `app` polled from a bare repo with `main`, `dev` and a branch whose name is
/// markup; then, written with pipe's own state writers, a failed test on `dev` (its log holds a
/// script and escape codes), a passed deploy on `main` and the `web` target's deploy history.
/// Returns the commits of `main` and `dev`.
fn seeded(env: &TestEnv, page: &str) -> (String, String) {
    let repo = BareRepo::new(env.path(), "app");
    let main = repo.set("refs/heads/main");
    let dev = repo.set("refs/heads/dev");
    repo.set(XSS_BRANCH);
    env.config(&format!(
        "[project.app]\nrepo = \"{}\"\nbranches = [\"**\"]\n\n[serve.page]\nenabled = true\n{page}\n",
        repo.url()
    ));
    env.pipe(&["poll"]).code(0);
    let path = env.state_path();
    let mut st = state::load(&path).unwrap();
    let refs = &mut st.project.get_mut("app").unwrap().refs;
    assert!(refs.contains_key(XSS_BRANCH), "poll took the branch named as markup: {:?}", refs.keys());
    let record = |stage, result, commit: &str| {
        Some(StageRecord { stage, result, commit: commit.into(), at: ts("2026-11-26T10:01:00Z") })
    };
    refs.get_mut("refs/heads/dev").unwrap().last = record(Stage::Test, Outcome::Failed, &dev);
    refs.get_mut("refs/heads/main").unwrap().last = record(Stage::Deploy, Outcome::Passed, &main);
    for r in refs.values_mut() {
        r.pending = false;
    }
    state::save(&path, &st).unwrap();

    let logs = state::logs_dir(&path, "app", "refs/heads/dev");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("1.log");
    std::fs::write(
        &log,
        "Step 1/2 : FROM busybox\n\u{1b}[31mFAIL\u{1b}[0m test_home\n<script>document.title='pwned'</script>\n",
    )
    .unwrap();
    let stage = |stage, result, seconds, exit_code| StageRun {
        stage,
        result,
        started: ts("2026-11-26T10:00:00Z"),
        seconds,
        exit_code,
        ended: None,
    };
    let mut history = History {
        schema: state::SCHEMA,
        refname: "refs/heads/dev".into(),
        next_run: 2,
        tested: Default::default(),
        runs: vec![Run {
            number: 1,
            commit: dev.clone(),
            started: ts("2026-11-26T10:00:00Z"),
            image: "app".into(),
            tags: vec!["dev".into()],
            image_id: None,
            log,
            stages: vec![
                stage(Stage::Build, Outcome::Passed, 3.2, None),
                stage(Stage::Test, Outcome::Failed, 1.5, Some(1)),
            ],
            digests: Default::default(),
            test: None,
            test_env: Default::default(),
            test_secrets: Vec::new(),
            test_services: None,
            subject: Some(SUBJECT.into()),
            author: Some(AUTHOR.into()),
            images: Vec::new(),
        }],
    };
    state::save_history(&state::history_path(&path, "app", "refs/heads/dev"), &mut history, 20).unwrap();

    let deploy = |commit: &str, at, result| DeployRecord {
        commit: commit.into(),
        image: "registry.local/app".into(),
        tag: commit[..12].into(),
        refname: "refs/heads/main".into(),
        at: ts(at),
        result,
        timeline: None,
        rollback: false,
        images: Default::default(),
        hosts: Vec::new(),
    };
    let mut deploys = DeployHistory {
        schema: state::SCHEMA,
        deploys: vec![
            deploy(&main, "2026-11-26T09:00:00Z", DeployResult::Succeeded),
            deploy(&dev, "2026-11-26T09:10:00Z", DeployResult::Succeeded),
            // `pipe deploy --commit MAIN`: main's image put back by hand.
            DeployRecord { rollback: true, ..deploy(&main, "2026-11-26T09:20:00Z", DeployResult::Succeeded) },
            deploy(&dev, "2026-11-26T09:30:00Z", DeployResult::RolledBack),
        ],
    };
    state::save_deploys(&state::deploys_path(&path, "app", "web"), &mut deploys).unwrap();
    (main, dev)
}

/// Headless Chromium's rendered DOM of `url`, or `None` when Chromium is not installed (a
/// failure instead under `PIPE_REQUIRE_CHROMIUM`, which scripts/test.sh sets).
fn chromium(args: &[&str], url: &str) -> Option<String> {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--timeout=10000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stderr(Stdio::null());
    let out = match cmd.output() {
        Ok(out) => out,
        Err(_) if std::env::var_os("PIPE_REQUIRE_CHROMIUM").is_none() => {
            eprintln!("chromium is not installed (scripts/test-deps.sh installs it): skipped");
            return None;
        }
        Err(e) => panic!("chromium: {e}"),
    };
    assert!(out.status.success(), "chromium failed on {url}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn screenshot(url: &str, file: &Path) -> Option<PathBuf> {
    chromium(&[&format!("--screenshot={}", file.display()), "--window-size=1200,900"], url)?;
    assert!(file.exists(), "no screenshot at {}", file.display());
    println!("screenshot of {url}: {}", file.display());
    Some(file.to_path_buf())
}

/// The `<tr>` of the overview that holds `refname`, as Chromium rendered it.
fn row<'a>(dom: &'a str, refname: &str) -> &'a str {
    let start = dom.find(&format!("data-ref=\"{refname}\"")).unwrap_or_else(|| panic!("no row for {refname}"));
    let start = dom[..start].rfind("<tr").unwrap();
    &dom[start..start + dom[start..].find("</tr>").unwrap()]
}

#[test]
fn chromium_shows_the_failing_ref_red_with_its_stage_and_the_deployed_commit() {
    let env = TestEnv::new();
    let (main, _dev) = seeded(&env, "");
    let server = Serve::start(&env);
    let Some(dom) = chromium(&["--dump-dom"], &server.url("/status")) else { return };

    let dev = row(&dom, "refs/heads/dev");
    assert!(dev.contains("class=\"r-failed\""), "dev's row is marked failed: {dev}");
    assert!(dev.contains("<td class=\"stage\">test</td>"), "dev's row names the failing stage: {dev}");
    assert!(dev.contains("4.7s"), "dev's row shows its run's duration: {dev}");
    assert!(row(&dom, "refs/heads/main").contains("class=\"r-passed\""));

    let web = &dom[dom.find("data-target=\"web\"").expect("the web target is shown")..];
    let current = &web[web.find("class=\"current\"").unwrap()..];
    assert!(current[..300].contains(&main[..12]), "web runs main's commit {main}: {}", &current[..300]);
    assert!(web.contains("rolled_back") && web.contains("rollback"), "the rollback is marked");

    // The colour is the stylesheet's, which the CSP admits ('self'): red for a failure.
    let css = server.get("/status/style.css", &[]).2;
    assert!(css.contains("tr.r-failed"), "{css}");
    screenshot(&server.url("/status"), &env.path().join("overview.png"));
}

/// The overview promised each ref's commit with its subject and author from the build's
/// checkout, and showed neither.
#[test]
fn the_overview_shows_the_commit_subject_and_author_as_text() {
    let env = TestEnv::new();
    seeded(&env, "");
    let server = Serve::start(&env);
    let (status, _, html) = server.get("/status", &[]);
    assert_eq!(status, 200);
    let dev = row(&html, "refs/heads/dev");
    assert!(dev.contains("<span class=\"subject\">Fix &lt;b&gt;login&lt;/b&gt; &amp; logout</span>"), "{dev}");
    assert!(dev.contains("<span class=\"author\">by Zoë &lt;img src=x onerror=alert(2)&gt;</span>"), "{dev}");
    let main = row(&html, "refs/heads/main");
    assert!(!main.contains("subject") && !main.contains("author"), "main has no recorded run: {main}");

    let Some(dom) = chromium(&["--dump-dom"], &server.url("/status")) else { return };
    let dev = row(&dom, "refs/heads/dev");
    assert!(dev.contains("Fix &lt;b&gt;login&lt;/b&gt; &amp; logout") && !dev.contains("<b>"), "{dev}");
    assert!(dev.contains("by Zoë &lt;img") && !dom.contains("<img"), "the author is text: {dev}");
}

/// Regression: a rollback by hand (`pipe deploy --commit`) was listed without the mark an
/// automatic rollback gets.
#[test]
fn a_rollback_by_hand_is_marked_in_the_targets_last_deploys() {
    let env = TestEnv::new();
    seeded(&env, "");
    let server = Serve::start(&env);
    let (status, _, html) = server.get("/status", &[]);
    assert_eq!(status, 200);
    let deploy_row = |at: &str| {
        let start = html.find(&format!("<td>2026-11-26 {at}</td>")).unwrap_or_else(|| panic!("no deploy at {at}"));
        &html[start..start + html[start..].find("</tr>").unwrap()]
    };
    let by_hand = deploy_row("09:20:00");
    assert!(by_hand.contains("r-succeeded") && by_hand.contains("↩ rollback"), "{by_hand}");
    let automatic = deploy_row("09:30:00");
    assert!(automatic.contains("r-rolled_back") && automatic.contains("↩ rollback"), "{automatic}");
    for plain in ["09:00:00", "09:10:00"] {
        assert!(!deploy_row(plain).contains("rollback"), "{}", deploy_row(plain));
    }
    let doc: serde_json::Value = serde_json::from_str(&server.get("/status.json", &[]).2).unwrap();
    let rollbacks: Vec<bool> = doc["targets"][0]["deploys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rollback"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(rollbacks, [false, true, false, false], "newest first, in the JSON twin too");
}

#[test]
fn markup_in_a_branch_name_or_a_log_line_is_shown_as_text_and_never_runs() {
    let env = TestEnv::new();
    seeded(&env, "");
    let server = Serve::start(&env);
    let Some(dom) = chromium(&["--dump-dom"], &server.url("/status")) else { return };
    assert!(dom.contains("&lt;img/src=x/onerror=alert(1)&gt;"), "the branch name is text in the DOM");
    assert!(!dom.contains("<img"), "no image element was created from the branch name");

    let run = server.url("/status/run?project=app&ref=dev");
    let dom = chromium(&["--dump-dom"], &run).unwrap();
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"), "the log line is text: {dom}");
    assert!(!dom.contains("<script"), "no script element in the rendered page");
    assert!(!dom.contains("pwned</title>"), "the title was not changed by a script");
    assert!(dom.contains("FAIL test_home") && !dom.contains("[31m"), "escape codes are stripped");
    assert!(dom.contains("<td class=\"stage\">test</td>"), "the run page lists the failed stage");
    screenshot(&run, &env.path().join("run.png"));

    let (status, headers, _) = server.get("/status/run?project=app&ref=dev", &[]);
    assert_eq!(status, 200);
    let csp = header(&headers, "content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'; style-src 'self'"), "{csp}");
}

#[test]
fn a_badge_renders_in_chromium_and_revalidates_by_etag() {
    let env = TestEnv::new();
    let (main, _) = seeded(&env, "");
    let server = Serve::start(&env);
    let (status, headers, svg) = server.get("/badge/app/dev.svg", &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/svg+xml"));
    assert!(header(&headers, "cache-control").unwrap().contains("no-cache"));
    assert!(svg.contains("test failing") && svg.contains("#e05d44"), "{svg}");
    let etag = header(&headers, "etag").unwrap().to_string();
    assert_eq!(server.get("/badge/app/dev.svg", &[("If-None-Match", &etag)]).0, 304);

    let deploy = server.get("/badge/app/deploy/web.svg", &[]).2;
    assert!(deploy.contains(&main[..7]) && deploy.contains("rolled back"), "{deploy}");

    // A project name that climbs out of deploys/ reads no file: state.toml is not a deploy history.
    let climbing = server.get("/badge/%2E%2E/deploy/state.svg", &[]).2;
    assert!(climbing.contains("unknown") && !climbing.contains("deploy state"), "{climbing}");

    let Some(dom) = chromium(&["--dump-dom"], &server.url("/badge/app/dev.svg")) else { return };
    assert!(dom.contains("<svg") && dom.contains("test failing"), "{dom}");
    screenshot(&server.url("/badge/app/main.svg"), &env.path().join("badge.png"));
}

#[test]
fn with_a_token_pages_answer_401_without_it_and_badges_stay_public() {
    let mut env = TestEnv::new();
    env.env("PIPE_PAGE_TOKEN", TOKEN);
    seeded(&env, "token_env = \"PIPE_PAGE_TOKEN\"");
    let server = Serve::start(&env);
    for path in ["/status", "/status.json", "/status/run?project=app&ref=dev", "/status/ref.json?project=app&ref=dev"] {
        let (status, headers, _) = server.get(path, &[]);
        assert_eq!(status, 401, "{path} without the token");
        assert!(header(&headers, "www-authenticate").unwrap().starts_with("Basic"));
        assert_eq!(server.get(path, &[("Authorization", "Bearer wrong")]).0, 401, "{path} with a wrong token");
        assert_eq!(server.get(path, &[("Authorization", &format!("Bearer {TOKEN}"))]).0, 200, "{path} bearer");
    }
    // Basic auth, any user: what a browser sends after its prompt.
    let basic = format!("Basic {}", base64("viewer:page-token-s3cret"));
    assert_eq!(server.get("/status", &[("Authorization", &basic)]).0, 200);
    assert_eq!(server.get("/badge/app/dev.svg", &[]).0, 200, "badges need no token");
    assert_eq!(server.get("/badge/app/deploy/web.svg", &[]).0, 200);
}

#[test]
fn json_beside_the_pages_speaks_the_schemas_of_status_and_logs() {
    let env = TestEnv::new();
    seeded(&env, "");
    let server = Serve::start(&env);
    let status: serde_json::Value = serde_json::from_str(&server.get("/status.json", &[]).2).unwrap();
    let cli = env.pipe(&["status", "--json"]).json();
    assert_eq!(status["version"], cli["version"]);
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let cli_dev = cli["refs"].as_array().unwrap().iter().find(|r| r["ref"] == "refs/heads/dev").unwrap();
    let page_dev = status["refs"].as_array().unwrap().iter().find(|r| r["ref"] == "refs/heads/dev").unwrap();
    assert_eq!(keys(page_dev), keys(cli_dev));
    assert_eq!(page_dev["result"], "failed");
    assert_eq!(status["targets"][0]["current"]["result"], "succeeded");

    let logs: serde_json::Value =
        serde_json::from_str(&server.get("/status/run?project=app&ref=dev&format=json", &[]).2).unwrap();
    let cli = env.pipe(&["logs", "app", "dev", "--json"]).json();
    for key in ["version", "project", "ref", "run", "commit", "log", "stages", "text"] {
        assert_eq!(logs[key], cli[key], "{key}");
    }
}

#[test]
fn a_long_log_is_paged_by_offset() {
    let env = TestEnv::new();
    seeded(&env, "");
    let log = state::logs_dir(&env.state_path(), "app", "refs/heads/dev").join("1.log");
    let line = "x".repeat(99) + "\n";
    std::fs::write(&log, line.repeat(6000)).unwrap(); // 600 KB: three windows
    let server = Serve::start(&env);
    let mut offset = 0u64;
    let mut total = 0;
    for _ in 0..5 {
        let doc: serde_json::Value =
            serde_json::from_str(&server.get(&format!("/status/run.json?project=app&ref=dev&offset={offset}"), &[]).2)
                .unwrap();
        let text = doc["text"].as_str().unwrap();
        assert!(text.len() <= 256 * 1024 && text.ends_with('\n'), "a window is bounded and ends at a line");
        total += text.len();
        match doc["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    assert_eq!(total, 600_000, "the windows cover the whole log");
}

/// `GET path` as HTTP/1.1 or 1.0: the head and the raw body bytes as sent.
fn raw_get(server: &Serve, path: &str, version: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET {path} {version}\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let bytes = crate::support::http::read_answer(&mut stream);
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head");
    (String::from_utf8(bytes[..end].to_vec()).unwrap(), bytes[end + 4..].to_vec())
}

/// A chunked body decoded strictly (hex sizes, CRLF after each chunk, the last chunk and
/// nothing after it): the body and how many chunks carried it.
fn dechunk(mut bytes: &[u8]) -> (Vec<u8>, usize) {
    let (mut body, mut chunks) = (Vec::new(), 0);
    loop {
        let line = bytes.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&bytes[..line]).unwrap(), 16).expect("a hex size");
        bytes = &bytes[line + 2..];
        if size == 0 {
            assert_eq!(bytes, b"\r\n", "the last chunk ends the body");
            return (body, chunks);
        }
        body.extend_from_slice(&bytes[..size]);
        assert_eq!(&bytes[size..size + 2], b"\r\n");
        bytes = &bytes[size + 2..];
        chunks += 1;
    }
}

#[test]
fn a_sixteen_mib_log_is_streamed_whole_as_one_page_escaped_with_its_markup_as_text() {
    let env = TestEnv::new();
    seeded(&env, "");
    let log = state::logs_dir(&env.state_path(), "app", "refs/heads/dev").join("1.log");
    // Every line numbered (so a lost or repeated piece shows), with markup, a quote, an
    // ampersand, escape codes and a two-byte character that 16 KiB pieces cut in places.
    let line = |i: usize| format!("{i:07} <script>document.title='pwned'</script> \u{1b}[31mred\u{1b}[0m é &amp\n");
    let mut text = String::new();
    let mut lines = 0;
    while text.len() < 16 * 1024 * 1024 {
        text.push_str(&line(lines));
        lines += 1;
    }
    std::fs::write(&log, &text).unwrap();
    let server = Serve::start(&env);

    let (head, body) = raw_get(&server, "/status/run?project=app&ref=dev", "HTTP/1.1");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked") && !head.contains("Content-Length"), "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none'"), "{head}");
    let (page, chunks) = dechunk(&body);
    let page = String::from_utf8(page).expect("the page is UTF-8");
    println!("16 MiB log page: {} bytes in {chunks} chunks", page.len());
    assert!(chunks > 500, "sent in bounded chunks, not at once: {chunks}");
    let start = page.find("<pre class=\"log\">").expect("the log block") + "<pre class=\"log\">".len();
    let end = start + page[start..].find("</pre>").expect("the log block ends");
    let shown = &page[start..end];
    let expected = |i: usize| format!("{i:07} &lt;script&gt;document.title='pwned'&lt;/script&gt; red é &amp;amp\n");
    assert_eq!(shown.len(), (0..lines).map(|i| expected(i).len()).sum::<usize>(), "every byte of the log");
    for (i, got) in shown.split_inclusive('\n').enumerate() {
        assert_eq!(got, expected(i), "line {i}");
    }
    assert!(!page.contains("<script"), "no markup from the log");
    assert!(page.ends_with("</html>"), "the page is closed after the log");
    assert!(page.contains(&format!("log bytes 0–{0} of {0}", text.len())), "the pager names the whole log");

    // HTTP/1.0 knows no chunks: the same page, delimited by the close.
    let (head, body) = raw_get(&server, "/status/run?project=app&ref=dev", "HTTP/1.0");
    assert!(!head.contains("chunked"), "{head}");
    assert_eq!(String::from_utf8(body).unwrap(), page);

    // A jump into the log: from a byte inside the `é` of the line before the last to the end.
    let at = text.len() - line(lines - 1).len() - " &amp\n".len() - 1;
    let (_, body) = raw_get(&server, &format!("/status/run?project=app&ref=dev&offset={at}"), "HTTP/1.1");
    let page = String::from_utf8(dechunk(&body).0).unwrap();
    let start = page.find("<pre class=\"log\">").unwrap() + "<pre class=\"log\">".len();
    let tail = &page[start..start + page[start..].find("</pre>").unwrap()];
    assert_eq!(tail, format!(" &amp;amp\n{}", expected(lines - 1)), "the rest of the character is skipped");
}

#[test]
fn a_state_saved_between_two_requests_is_what_the_second_one_shows() {
    let env = TestEnv::new();
    let (_, dev) = seeded(&env, "");
    let server = Serve::start(&env);
    let result_of = |doc: &serde_json::Value, refname: &str| {
        doc["refs"].as_array().unwrap().iter().find(|r| r["ref"] == refname).map(|r| r["result"].clone())
    };
    let before: serde_json::Value = serde_json::from_str(&server.get("/status.json", &[]).2).unwrap();
    assert_eq!(result_of(&before, "refs/heads/dev"), Some("failed".into()));
    assert!(server.get("/badge/app/dev.svg", &[]).2.contains("test failing"));
    assert_eq!(before, serde_json::from_str::<serde_json::Value>(&server.get("/status.json", &[]).2).unwrap());

    // What `pipe run` does: a whole new file renamed over the old one, while the page runs.
    let path = env.state_path();
    let mut st = state::load(&path).unwrap();
    let refs = &mut st.project.get_mut("app").unwrap().refs;
    let dev_ref = refs.get_mut("refs/heads/dev").unwrap();
    dev_ref.last = Some(StageRecord {
        stage: Stage::Deploy,
        result: Outcome::Passed,
        commit: dev.clone(),
        at: ts("2026-11-26T11:00:00Z"),
    });
    let mut added = dev_ref.clone();
    added.last = None;
    added.pending = true;
    refs.insert("refs/heads/new-work".into(), added);
    state::save(&path, &st).unwrap();

    let after: serde_json::Value = serde_json::from_str(&server.get("/status.json", &[]).2).unwrap();
    assert_eq!(result_of(&after, "refs/heads/dev"), Some("passed".into()), "{after}");
    assert_eq!(result_of(&after, "refs/heads/new-work"), Some("pending".into()), "the new ref is listed");
    let (_, _, html) = server.get("/status", &[]);
    let dev_row = row(&html, "refs/heads/dev");
    assert!(dev_row.contains("class=\"r-passed\"") && dev_row.contains(">deploy<"), "{dev_row}");
    assert!(server.get("/badge/app/dev.svg", &[]).2.contains("passing"), "the badge follows the new state");

    // A file written in place (not renamed) is seen too: its length and mtime changed.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace("\"refs/heads/new-work\"", "\"refs/heads/other-work\"");
    std::fs::write(&path, text).unwrap();
    let edited: serde_json::Value = serde_json::from_str(&server.get("/status.json", &[]).2).unwrap();
    assert_eq!(result_of(&edited, "refs/heads/other-work"), Some("pending".into()), "{edited}");
    assert_eq!(result_of(&edited, "refs/heads/new-work"), None);
}

#[test]
fn ten_thousand_refs_are_paginated_and_filterable() {
    let env = TestEnv::new();
    env.config("[serve.page]\nenabled = true\n");
    let mut st = state::State::default();
    let project = st.project.entry("big".into()).or_default();
    project.indexed = true;
    for i in 0..10_000 {
        let result = if i % 1000 == 7 { Outcome::Failed } else { Outcome::Passed };
        project.refs.insert(
            format!("refs/heads/branch-{i:05}"),
            RefState {
                head: format!("{i:040x}"),
                since: ts("2026-11-26T10:00:00Z"),
                pending: false,
                last: Some(StageRecord {
                    stage: Stage::Test,
                    result,
                    commit: format!("{i:040x}"),
                    at: ts("2026-11-26T10:01:00Z"),
                }),
                closed: false,
            },
        );
    }
    state::save(&env.state_path(), &st).unwrap();
    let server = Serve::start(&env);
    let started = Instant::now();
    let (status, _, html) = server.get("/status", &[]);
    let took = started.elapsed();
    println!("overview of 10,000 refs: {} bytes in {took:?}", html.len());
    assert_eq!(status, 200);
    assert!(html.contains("10000 refs · page 1 of 100"), "paginated");
    assert_eq!(html.matches("<tr class=").count(), 100, "one page of rows");
    assert!(html.contains("data-ref=\"refs/heads/branch-00007\""), "failures come first");
    assert!(took < Duration::from_secs(5), "the overview answers in {took:?}");

    let (_, _, last) = server.get("/status?page=100", &[]);
    assert!(last.contains("page 100 of 100"));
    let (_, _, found) = server.get("/status?q=branch-04321", &[]);
    assert!(found.contains("1 refs · page 1 of 1") && found.contains("branch-04321"));
    let doc: serde_json::Value = serde_json::from_str(&server.get("/status.json?result=failed", &[]).2).unwrap();
    assert_eq!(doc["total"], 10);
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}
