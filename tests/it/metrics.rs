//! Metrics, checked by Prometheus' own tools: `pipe run`'s textfile and `pipe serve`'s
//! `/metrics` pass `promtool check metrics`; Debian's node_exporter (textfile collector) and
//! Prometheus, started here on 127.0.0.1, scrape both, and a query through Prometheus' HTTP
//! API shows a failing project's counter rising; the example alert rules pass `promtool check
//! rules` and their own `promtool test rules`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, free_port, http};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "metrics-test-token";

/// `None` (skipped) without the tool, unless `PIPE_REQUIRE_DOCKER=1` makes that a failure.
fn tool(name: &str) -> Option<String> {
    let found = ["/usr/bin", "/usr/sbin", "/bin"].iter().map(|d| format!("{d}/{name}")).find(|p| Path::new(p).exists());
    if found.is_none() {
        assert!(
            std::env::var("PIPE_REQUIRE_DOCKER").is_err(),
            "`{name}` is missing (scripts/test-deps.sh installs it)"
        );
        eprintln!("skipped: `{name}` is not installed");
    }
    found
}

/// `promtool check metrics` on `text`: no complaint at all (its lints included).
fn promtool_accepts(promtool: &str, what: &str, text: &str) {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics on {what}:\n{said}\n---\n{text}");
}

/// A project whose every commit fails its build before docker runs (an invalid `.pipe.toml`),
/// with the textfile configured.
fn failing_project(env: &TestEnv) -> (WorkRepo, std::path::PathBuf) {
    let repo = WorkRepo::new(env.path(), "broken");
    repo.write(".pipe.toml", "image = \"pipe-test/broken\"\nnot_a_key = 1\n");
    repo.commit_to("main", "first");
    let textdir = env.path().join("textfile");
    std::fs::create_dir_all(&textdir).unwrap();
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\nmetrics_textfile = \"{tf}\"\n\n[project.broken]\nrepo = \"{url}\"\nbranches = [\"main\"]\n\n\
         [serve.page]\nenabled = true\ntoken_env = \"PIPE_PAGE_TOKEN\"\n",
        ws = env.path().join("work").display(),
        tf = textdir.join("pipe.prom").display(),
        url = repo.url(),
    ));
    (repo, textdir)
}

#[test]
fn the_textfile_counts_runs_ticks_and_locked_ticks_and_passes_promtool() {
    let Some(promtool) = tool("promtool") else { return };
    let mut env = TestEnv::new();
    env.env("PIPE_PAGE_TOKEN", TOKEN);
    let (repo, textdir) = failing_project(&env);
    let textfile = textdir.join("pipe.prom");

    env.pipe(&["run"]).code(1);
    let text = std::fs::read_to_string(&textfile).unwrap();
    promtool_accepts(&promtool, "the textfile", &text);
    for line in [
        "pipe_ticks_total{result=\"failed\"} 1\n",
        "pipe_runs_total{project=\"broken\",ref_kind=\"branch\",result=\"failed\"} 1\n",
        "pipe_stage_duration_seconds_count{project=\"broken\",stage=\"build\",result=\"failed\"} 1\n",
        "pipe_queue_wait_seconds_count{project=\"broken\"} 1\n",
        "pipe_deferred_refs 0\n",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(text.contains("pipe_project_last_failure_timestamp_seconds{project=\"broken\"} "), "{text}");
    assert!(text.contains("pipe_tick_last_success_timestamp_seconds "), "{text}");

    // A tick with nothing new counts as a tick, and only the textfile and the store are left
    // beside what was there (no temporary file).
    env.pipe(&["run"]).code(0);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(text.contains("pipe_ticks_total{result=\"ok\"} 1\n"), "{text}");
    let names: Vec<String> =
        std::fs::read_dir(&textdir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["pipe.prom"]);

    // A tick that finds the lock held is counted too.
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.state_path().with_extension("toml.lock"))
        .unwrap();
    lock.lock().unwrap();
    env.pipe(&["run"]).code(3);
    drop(lock);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(text.contains("pipe_ticks_total{result=\"locked\"} 1\n"), "{text}");

    // The next failing commit adds to the counter kept between processes.
    repo.write("again.txt", "2\n");
    repo.commit_to("main", "second");
    env.pipe(&["run"]).code(1);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(text.contains("pipe_runs_total{project=\"broken\",ref_kind=\"branch\",result=\"failed\"} 2\n"), "{text}");
    promtool_accepts(&promtool, "the textfile", &text);

    // Without the key nothing is written at all.
    let quiet = TestEnv::new();
    quiet.config("[project.x]\nrepo = \"file:///nonexistent.git\"\nbranches = [\"main\"]\n");
    quiet.pipe(&["run"]);
    assert!(!quiet.state_path().with_file_name("metrics.json").exists());
}

#[test]
fn serve_answers_metrics_behind_the_page_token_and_passes_promtool() {
    let Some(promtool) = tool("promtool") else { return };
    let mut env = TestEnv::new();
    env.env("PIPE_PAGE_TOKEN", TOKEN);
    failing_project(&env);
    let serve = Serve::start(&env);
    assert_eq!(serve.request("GET", "/healthz", &[], b"").status, 200);
    assert_eq!(serve.request("POST", "/hooks/nope", &[], b"").status, 401);
    let anonymous = serve.request("GET", "/metrics", &[], b"");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let wrong = serve.request("GET", "/metrics", &[("Authorization", "Bearer wrong")], b"");
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let answer = serve.request("GET", "/metrics", &[("Authorization", &bearer)], b"");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let content_type = answer.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str());
    assert_eq!(content_type, Some("text/plain; version=0.0.4; charset=utf-8"));
    promtool_accepts(&promtool, "pipe serve's /metrics", &answer.body);
    for line in [
        "pipe_serve_requests_total{endpoint=\"healthz\",status=\"200\"} 1\n",
        "pipe_serve_requests_total{endpoint=\"hook\",status=\"401\"} 1\n",
        "pipe_serve_requests_total{endpoint=\"metrics\",status=\"401\"} 2\n",
        "# TYPE pipe_serve_runs_total counter\n",
        "# TYPE pipe_serve_rejected_connections_total counter\n",
    ] {
        assert!(answer.body.contains(line), "{line} missing from:\n{}", answer.body);
    }

    // Without the page there is no /metrics.
    let bare = TestEnv::new();
    bare.config("[serve.hooks.h]\ntoken_env = \"T\"\ncommand = { argv = [\"true\"] }\n");
    let mut bare = bare;
    bare.env("T", "t");
    let serve = Serve::start(&bare);
    assert_eq!(serve.request("GET", "/metrics", &[], b"").status, 404);
}

#[test]
fn alert_rules_pass_promtool_check_and_their_tests() {
    let Some(promtool) = tool("promtool") else { return };
    let dir = format!("{ROOT}/monitoring");
    for args in [&["check", "rules", "pipe-alerts.yml"][..], &["test", "rules", "pipe-alerts.test.yml"][..]] {
        let out = Command::new(&promtool).args(args).current_dir(&dir).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.contains("SUCCESS"), "promtool {}:\n{said}", args.join(" "));
    }
}

/// A process started by the test, killed (and reaped) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(program: &str, args: &[String], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    Daemon(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}")),
    )
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The value of a one-series instant query through Prometheus' HTTP API.
fn query(prometheus: u16, promql: &str) -> Option<String> {
    let encoded: String = percent_encode(promql);
    let (status, body) = http::get(&format!("http://127.0.0.1:{prometheus}/api/v1/query?query={encoded}"))?;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then_some(())?;
    doc["data"]["result"][0]["value"][1].as_str().map(str::to_string)
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn prometheus_scrapes_node_exporter_and_serve_and_sees_a_failing_project_rise() {
    let (Some(prometheus), Some(exporter), Some(_)) =
        (tool("prometheus"), tool("prometheus-node-exporter"), tool("promtool"))
    else {
        return;
    };
    let mut env = TestEnv::new();
    env.env("PIPE_PAGE_TOKEN", TOKEN);
    let (repo, textdir) = failing_project(&env);
    env.pipe(&["run"]).code(1);
    let serve = Serve::start(&env);

    let node_port = free_port();
    let _node = start(
        &exporter,
        &[
            format!("--web.listen-address=127.0.0.1:{node_port}"),
            "--collector.disable-defaults".into(),
            "--collector.textfile".into(),
            format!("--collector.textfile.directory={}", textdir.display()),
        ],
        &env.path().join("node_exporter.log"),
    );
    let prom_port = free_port();
    let config = env.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {ROOT}/monitoring/pipe-alerts.yml\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n\
             \x20 - job_name: pipe-serve\n    authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            serve.port
        ),
    )
    .unwrap();
    let _prometheus = start(
        &prometheus,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", env.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &env.path().join("prometheus.log"),
    );
    let log = |name: &str| std::fs::read_to_string(env.path().join(name)).unwrap_or_default();
    let failed = "pipe_runs_total{job=\"node\",project=\"broken\",result=\"failed\"}";
    let first = wait_until(&format!("{failed} == 1\n{}", log("prometheus.log")), Duration::from_secs(60), || {
        query(prom_port, failed).filter(|v| v == "1")
    });
    assert_eq!(first, "1");
    let up = wait_until("pipe serve scraped", Duration::from_secs(30), || {
        query(prom_port, "up{job=\"pipe-serve\"}").filter(|v| v == "1")
    });
    assert_eq!(up, "1", "{}", log("prometheus.log"));
    // A scrape is counted once answered: the second one shows the first.
    wait_until("pipe serve's own scrapes counted", Duration::from_secs(30), || {
        query(prom_port, "pipe_serve_requests_total{job=\"pipe-serve\",endpoint=\"metrics\",status=\"200\"}")
    });

    // The next failing commit: the counter rises, as Prometheus sees it.
    repo.write("again.txt", "2\n");
    repo.commit_to("main", "second");
    env.pipe(&["run"]).code(1);
    let second = wait_until(&format!("{failed} == 2"), Duration::from_secs(30), || {
        query(prom_port, failed).filter(|v| v == "2")
    });
    assert_eq!(second, "2");
    let risen = query(prom_port, &format!("max_over_time({failed}[5m]) - min_over_time({failed}[5m])"));
    assert_eq!(risen.as_deref(), Some("1"), "the counter rose by one over the window");
}

/// The deploy series come from what a real tick recorded: a healthy deploy, then one that fails
/// its health check and is rolled back.
#[test]
fn a_deploy_and_a_rollback_are_counted_from_a_real_tick() {
    use crate::support::docker::{Docker, ProjectImages, unique_name};
    let Some(docker) = Docker::require() else { return };
    let Some(promtool) = tool("promtool") else { return };
    let env = TestEnv::new();
    let project = unique_name("metrics").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\n", docker.base_image));
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{project}\"\n"));
    let www = env.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let port = free_port();
    let _files = start(
        "python3",
        &[
            "-m".into(),
            "http.server".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--directory".into(),
            www.display().to_string(),
        ],
        &env.path().join("http.log"),
    );
    // The release is healthy unless a `bad-COMMIT` file marks its commit as bad.
    let script = r#"if [ -e "$0/bad-$PIPE_COMMIT" ]; then rm -f "$0/health"; else echo ok > "$0/health"; fi"#;
    let textfile = env.path().join("pipe.prom");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"
metrics_textfile = "{tf}"

[project.{project}]
repo = "{url}"
branches = ["main"]

[[project.{project}.deploy]]
name = "devhost"
branches = ["main"]
command = {{ argv = ["sh", "-c", {script:?}, {dir:?}] }}
health = {{ url = "http://127.0.0.1:{port}/health", timeout = "3s" }}
"#,
        ws = env.path().join("work").display(),
        tf = textfile.display(),
        url = repo.url(),
        dir = www.display().to_string(),
    ));
    repo.write("app.txt", "v1\n");
    repo.commit_to("main", "v1");
    env.pipe(&["run"]).code(0);
    let text = std::fs::read_to_string(&textfile).unwrap();
    promtool_accepts(&promtool, "the textfile after a deploy", &text);
    let p = &project;
    for line in [
        format!("pipe_runs_total{{project=\"{p}\",ref_kind=\"branch\",result=\"passed\"}} 1\n"),
        format!("pipe_runs_total{{project=\"{p}\",ref_kind=\"branch\",result=\"failed\"}} 0\n"),
        format!("pipe_deploys_total{{project=\"{p}\",target=\"devhost\",result=\"succeeded\"}} 1\n"),
        format!("pipe_rollbacks_total{{project=\"{p}\",target=\"devhost\"}} 0\n"),
        format!("pipe_commit_to_traffic_seconds_count{{project=\"{p}\",target=\"devhost\"}} 1\n"),
        format!("pipe_stage_duration_seconds_count{{project=\"{p}\",stage=\"build\",result=\"passed\"}} 1\n"),
        format!("pipe_stage_duration_seconds_count{{project=\"{p}\",stage=\"deploy\",result=\"passed\"}} 1\n"),
    ] {
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!("pipe_deploy_last_success_timestamp_seconds{{project=\"{p}\",target=\"devhost\"}} "))
    );

    repo.write("app.txt", "v2\n");
    let bad = repo.commit_to("main", "v2");
    std::fs::write(www.join(format!("bad-{bad}")), "").unwrap();
    env.pipe(&["run"]).code(1).stderr_has("rolled back to");
    let text = std::fs::read_to_string(&textfile).unwrap();
    promtool_accepts(&promtool, "the textfile after a rollback", &text);
    for line in [
        format!("pipe_runs_total{{project=\"{p}\",ref_kind=\"branch\",result=\"failed\"}} 1\n"),
        format!("pipe_deploys_total{{project=\"{p}\",target=\"devhost\",result=\"rolled_back\"}} 1\n"),
        format!("pipe_rollbacks_total{{project=\"{p}\",target=\"devhost\"}} 1\n"),
        format!("pipe_commit_to_traffic_seconds_count{{project=\"{p}\",target=\"devhost\"}} 1\n"),
    ] {
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!("pipe_deploy_last_failure_timestamp_seconds{{project=\"{p}\",target=\"devhost\"}} "))
    );
}

#[test]
fn a_remote_that_cannot_be_listed_counts_a_poll_error_without_its_credentials() {
    let env = TestEnv::new();
    let textfile = env.path().join("pipe.prom");
    env.config(&format!(
        "[pipe]\nmetrics_textfile = \"{}\"\n\n[project.gone]\nrepo = \"https://sekrit-token@127.0.0.1:1/gone.git\"\nbranches = [\"main\"]\n",
        textfile.display()
    ));
    env.pipe(&["run"]).code(1);
    env.pipe(&["run"]).code(1);
    let text = std::fs::read_to_string(&textfile).unwrap();
    assert!(!text.contains("sekrit"), "{text}");
    let line = text.lines().find(|l| l.starts_with("pipe_poll_errors_total{")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("pipe_poll_errors_total{project=\"gone\",remote=\"https://") && line.ends_with("} 2"),
        "{line}"
    );
    assert!(text.contains("pipe_ticks_total{result=\"failed\"} 2\n"), "{text}");
}
