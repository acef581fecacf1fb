//! The forge: commit statuses against strict stand-ins of GitHub's, Gitea's and GitLab's status
//! APIs (tests/it/support/forge_api.py, which refuses anything their documentation does not
//! describe), and the forges' push webhooks starting a run through `pipe serve`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::{TestEnv, WorkRepo, free_port};

const TOKEN: &str = "forge-token-7f3a";

/// One forge's status API on 127.0.0.1; killed on drop.
struct ForgeApi {
    child: Child,
    port: u16,
    record: PathBuf,
}

impl ForgeApi {
    fn start(env: &TestEnv, kind: &str, port: Option<u16>) -> ForgeApi {
        let record = env.path().join(format!("forge-{kind}.jsonl"));
        let port_file = env.path().join(format!("forge-{kind}-{}.port", free_port()));
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/forge_api.py"))
            .args([kind, TOKEN])
            .arg(&record)
            .arg(&port_file);
        if let Some(port) = port {
            cmd.arg(port.to_string());
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                return ForgeApi { child, port: port.trim().parse().unwrap(), record };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the {kind} stand-in did not start");
    }

    /// Every request so far, as the stand-in judged it.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `(context, state)` of each status, after asserting the stand-in accepted every request.
    fn statuses(&self, name_key: &str) -> Vec<(String, String)> {
        let requests = self.requests();
        for r in &requests {
            assert_eq!(r["status"], 201, "the forge stand-in refused a request: {r}");
        }
        requests
            .iter()
            .map(|r| {
                (r["body"][name_key].as_str().unwrap().to_string(), r["body"]["state"].as_str().unwrap().to_string())
            })
            .collect()
    }
}

impl Drop for ForgeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project whose image builds from the base image; its `.pipe.toml` names the test command.
struct App {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    _images: ProjectImages,
}

fn app(docker: &Docker) -> App {
    let mut env = TestEnv::new();
    env.env("FORGE_TOKEN", TOKEN);
    let project = unique_name("f").replace("pipe-test-", "");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    App {
        image: format!("pipe-test/{project}"),
        _images: ProjectImages { project: project.clone() },
        env,
        repo,
        project,
    }
}

impl App {
    fn commit(&self, n: u32, test: &str) -> String {
        self.repo.write("www/index.html", &format!("version {n}\n"));
        self.repo.write(".pipe.toml", &format!("image = {:?}\ntest = {test:?}\n", self.image));
        self.repo.commit_to("main", &format!("version {n}"))
    }

    fn config(&self, forge: &str, repo: &str, extra: &str) {
        self.env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

{forge}
token_env = "FORGE_TOKEN"
target_url = "https://ci.example.com/{{project}}/{{commit}}"

[project.{p}]
repo = "{url}"
branches = ["main"]
forge = "origin"
forge_repo = "{repo}"
{extra}
"#,
            ws = self.env.path().join("work").display(),
            p = self.project,
            url = self.repo.url(),
        ));
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn github_gets_pending_then_the_result_of_each_stage_of_a_passing_and_a_failing_commit() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    let api = ForgeApi::start(&a.env, "github", None);
    a.config(&format!("[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"", api.port), "acme/app", "");
    let good = a.commit(1, "true");
    a.env.pipe(&["run"]).code(0);
    assert_eq!(
        api.statuses("context"),
        pairs(&[
            ("pipe/build", "pending"),
            ("pipe/build", "success"),
            ("pipe/test", "pending"),
            ("pipe/test", "success")
        ])
    );
    let requests = api.requests();
    assert!(requests.iter().all(|r| r["path"] == format!("/repos/acme/app/statuses/{good}")), "{requests:?}");
    assert_eq!(requests[0]["body"]["target_url"], format!("https://ci.example.com/{}/{good}", a.project));

    let bad = a.commit(2, "echo boom; exit 3");
    a.env.pipe(&["run"]).code(1);
    let requests = api.requests();
    let failing: Vec<_> = requests[4..].iter().collect();
    assert!(failing.iter().all(|r| r["path"] == format!("/repos/acme/app/statuses/{bad}")));
    assert_eq!(
        api.statuses("context")[4..].to_vec(),
        pairs(&[
            ("pipe/build", "pending"),
            ("pipe/build", "success"),
            ("pipe/test", "pending"),
            ("pipe/test", "failure")
        ])
    );
    let description = failing[3]["body"]["description"].as_str().unwrap();
    assert!(description.starts_with("failed after "), "{description}");
    assert!(description.contains("exit status: 3"), "{description}");
    assert!(description.chars().count() <= 140);
    let state = std::fs::read_to_string(a.env.state_path()).unwrap();
    assert!(!state.contains(TOKEN));
    assert!(!a.env.state_path().parent().unwrap().join("forge/outbox.toml").exists(), "nothing left to send");
}

#[test]
fn gitlab_and_gitea_statuses_use_their_own_paths_auth_and_state_names() {
    let Some(docker) = Docker::require() else { return };
    for (kind, repo, key, path) in [
        ("gitlab", "group/app", "name", "/api/v4/projects/group%2Fapp/statuses/"),
        ("gitea", "acme/app", "context", "/api/v1/repos/acme/app/statuses/"),
    ] {
        let a = app(&docker);
        let api = ForgeApi::start(&a.env, kind, None);
        let base = format!("http://127.0.0.1:{}{}", api.port, &path[..7]);
        a.config(&format!("[forge.origin]\nkind = \"{kind}\"\napi = \"{base}\""), repo, "");
        let commit = a.commit(1, "exit 1");
        a.env.pipe(&["run"]).code(1);
        let (running, failed) = if kind == "gitlab" { ("running", "failed") } else { ("pending", "failure") };
        assert_eq!(
            api.statuses(key),
            pairs(&[("pipe/build", running), ("pipe/build", "success"), ("pipe/test", running), ("pipe/test", failed)]),
            "{kind}"
        );
        assert!(api.requests().iter().all(|r| r["path"] == format!("{path}{commit}")), "{kind}");
    }
}

#[test]
fn statuses_the_forge_did_not_take_arrive_on_the_next_tick_and_the_run_still_passes() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    let port = free_port();
    a.config(&format!("[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{port}/api/v3\""), "acme/app", "");
    let commit = a.commit(1, "true");
    let run = a.env.pipe(&["run"]);
    run.code(0).stderr_has("commit statuses wait for the next tick");
    assert!(!run.stderr.contains(TOKEN));
    let outbox = a.env.state_path().parent().unwrap().join("forge/outbox.toml");
    let kept = std::fs::read_to_string(&outbox).unwrap();
    assert_eq!(kept.matches("[[status]]").count(), 4, "{kept}");
    assert!(!kept.contains(TOKEN));

    // The GitHub Enterprise base: the stand-in serves GitHub's paths under /api/v3.
    let api = ForgeApi::start(&a.env, "github-enterprise", Some(port));
    a.env.pipe(&["run"]).code(0);
    assert_eq!(
        api.statuses("context"),
        pairs(&[
            ("pipe/build", "pending"),
            ("pipe/build", "success"),
            ("pipe/test", "pending"),
            ("pipe/test", "success")
        ])
    );
    assert!(api.requests().iter().all(|r| r["path"] == format!("/api/v3/repos/acme/app/statuses/{commit}")));
    assert!(!outbox.exists(), "delivered, so the outbox is gone");
}

/// A static file server over `dir` on 127.0.0.1 (Python's http.server); killed on drop.
struct Files(Child, u16);

impl Files {
    fn start(dir: &std::path::Path) -> Files {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Files(child, port)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_deploy_is_success_once_healthy_and_failure_when_rolled_back() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    let api = ForgeApi::start(&a.env, "github", None);
    let www = a.env.path().join("live");
    std::fs::create_dir_all(&www).unwrap();
    let files = Files::start(&www);
    // The release is healthy unless a `bad-COMMIT` file marks its commit as bad.
    let script = r#"if [ -e "$0/bad-$PIPE_COMMIT" ]; then rm -f "$0/health"; else echo ok > "$0/health"; fi"#;
    a.config(
        &format!("[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"", api.port),
        "acme/app",
        &format!(
            r#"
[[project.{p}.deploy]]
name = "devhost"
branches = ["main"]
command = {{ argv = ["sh", "-c", {script:?}, {dir:?}] }}
health = {{ url = "http://127.0.0.1:{port}/health", timeout = "2s" }}
"#,
            p = a.project,
            dir = www.display().to_string(),
            port = files.1,
        ),
    );
    a.commit(1, "true");
    a.env.pipe(&["run"]).code(0);
    let first = api.statuses("context");
    assert_eq!(first[4..].to_vec(), pairs(&[("pipe/deploy/devhost", "pending"), ("pipe/deploy/devhost", "success")]));
    let bad = a.commit(2, "true");
    std::fs::write(www.join(format!("bad-{bad}")), "").unwrap();
    a.env.pipe(&["run"]).code(1);
    let second = api.statuses("context");
    assert_eq!(second[10..].to_vec(), pairs(&[("pipe/deploy/devhost", "pending"), ("pipe/deploy/devhost", "failure")]));
    let description = api.requests()[11]["body"]["description"].as_str().unwrap().to_string();
    assert!(description.starts_with("rolled back"), "{description}");
}
