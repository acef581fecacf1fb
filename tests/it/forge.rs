//! The forge: commit statuses against strict stand-ins of GitHub's, Gitea's and GitLab's status
//! APIs (tests/it/support/forge_api.py, which refuses anything their documentation does not
//! describe), and the forges' push webhooks starting a run through `pipe serve`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, free_port};
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

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/it/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

const WEBHOOK_SECRET: &str = "whsec-31415926";

/// An app on GitHub's stand-in whose push webhooks `pipe serve` takes, signed with
/// [`WEBHOOK_SECRET`].
fn hooked_app(docker: &Docker) -> (App, ForgeApi) {
    let mut a = app(docker);
    a.env.env("WEBHOOK_SECRET", WEBHOOK_SECRET);
    let api = ForgeApi::start(&a.env, "github", None);
    a.config(
        &format!("[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"", api.port),
        "acme/app",
        "webhook_secret_env = \"WEBHOOK_SECRET\"",
    );
    (a, api)
}

/// A GitHub delivery of `event` with `body`, signed with `secret`.
fn github(serve: &Serve, project: &str, event: &str, delivery: &str, body: &[u8], secret: &str) -> (u16, String) {
    let signature = format!("sha256={}", crate::support::hmac_hex(secret, body));
    serve.post(
        &format!("/forge/{project}"),
        &[("X-GitHub-Event", event), ("X-GitHub-Delivery", delivery), ("X-Hub-Signature-256", &signature)],
        body,
    )
}

#[test]
fn a_signed_github_push_starts_a_run_within_a_second_and_a_wrong_signature_starts_none() {
    let Some(docker) = Docker::require() else { return };
    let (a, api) = hooked_app(&docker);
    let commit = a.commit(1, "true");
    let serve = Serve::start(&a.env);
    let path = format!("/forge/{}", a.project);
    let push = fixture("github-push.json");

    assert_eq!(github(&serve, &a.project, "push", "d-bad", &push, "not-the-secret").0, 403);
    assert_eq!(serve.post(&path, &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-none")], &push).0, 401);
    assert_eq!(github(&serve, "no-such-project", "push", "d-x", &push, WEBHOOK_SECRET).0, 403);
    assert_eq!(github(&serve, &a.project, "ping", "d-ping", &fixture("github-ping.json"), WEBHOOK_SECRET).0, 200);
    assert_eq!(github(&serve, &a.project, "issues", "d-issues", b"{}", WEBHOOK_SECRET).0, 204);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!serve.has("run started"), "no run without a valid push:\n{}", serve.log());
    assert!(!a.env.state_path().exists(), "nothing polled");

    let (status, body) = github(&serve, &a.project, "push", "d-push-1", &push, WEBHOOK_SECRET);
    let sent = Instant::now();
    assert_eq!(status, 202, "{body}");
    let started = serve.wait_for("run started", 1, Duration::from_secs(5));
    assert!(started.saturating_duration_since(sent) < Duration::from_secs(1), "{:?}", started - sent);
    serve.wait_for("run ended", 1, Duration::from_secs(120));
    assert!(std::fs::read_to_string(a.env.state_path()).unwrap().contains(&commit), "the run polled and built");
    assert!(api.statuses("context").contains(&("pipe/test".into(), "success".into())));

    assert_eq!(github(&serve, &a.project, "push", "d-push-1", &push, WEBHOOK_SECRET).0, 409, "a replayed delivery");
    let log = serve.log();
    assert!(!log.contains(WEBHOOK_SECRET) && !log.contains(TOKEN), "{log}");
    for line in ["403 -", "401 -", "200 event=ping", "204 event=issues", "202 event=push delivery=d-push-1 run=queued"]
    {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
}

#[test]
fn fifty_webhooks_during_a_running_build_make_exactly_one_follow_up_run() {
    let Some(docker) = Docker::require() else { return };
    let (a, _api) = hooked_app(&docker);
    a.commit(1, "sleep 4");
    let serve = Serve::start(&a.env);
    let push = fixture("github-push.json");
    assert_eq!(github(&serve, &a.project, "push", "first", &push, WEBHOOK_SECRET).0, 202);
    serve.wait_for("run started", 1, Duration::from_secs(5));
    // Fifty pushes, each its own body (a body counts once, whatever its delivery id).
    let pushed = |i: usize| {
        let mut doc: serde_json::Value = serde_json::from_slice(&push).unwrap();
        doc["after"] = serde_json::json!(format!("{i:040x}"));
        doc.to_string().into_bytes()
    };
    let answers: Vec<(u16, String)> = (0..50)
        .map(|i| github(&serve, &a.project, "push", &format!("during-{i}"), &pushed(i + 1), WEBHOOK_SECRET))
        .collect();
    assert!(!serve.has("run ended"), "the 50 arrived while the first run was building:\n{}", serve.log());
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    assert!(answers[0].1.contains("queued") && answers[1..].iter().all(|(_, b)| b.contains("coalesced")));
    serve.wait_for("run ended", 2, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(serve.count("run started"), 2, "{}", serve.log());
    assert_eq!(serve.count("run ended"), 2, "{}", serve.log());
}

#[test]
fn gitea_signatures_and_gitlab_tokens_are_checked_their_own_way() {
    let mut env = TestEnv::new();
    env.env("FORGE_TOKEN", TOKEN).env("GITEA_HOOK", WEBHOOK_SECRET).env("GITLAB_HOOK", "gl-secret-2718");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("README", "no image here\n");
    repo.commit_to("main", "one");
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.gitea]
kind = "forgejo"
api = "http://127.0.0.1:9/api/v1"
token_env = "FORGE_TOKEN"

[forge.gitlab]
kind = "gitlab"
api = "http://127.0.0.1:9/api/v4"
token_env = "FORGE_TOKEN"

[project.tea]
repo = "{url}"
branches = ["main"]
forge = "gitea"
forge_repo = "acme/app"
webhook_secret_env = "GITEA_HOOK"

[project.lab]
repo = "{url}"
branches = ["main"]
forge = "gitlab"
forge_repo = "42"
webhook_secret_env = "GITLAB_HOOK"
"#,
        ws = env.path().join("work").display(),
        url = repo.url(),
    ));
    let serve = Serve::start(&env);
    let push = fixture("gitea-push.json");
    let hex = crate::support::hmac_hex(WEBHOOK_SECRET, &push);
    let gitea = |signature: &str, delivery: &str| {
        serve.post(
            "/forge/tea",
            &[("X-Gitea-Event", "push"), ("X-Gitea-Delivery", delivery), ("X-Gitea-Signature", signature)],
            &push,
        )
    };
    assert_eq!(gitea(&crate::support::hmac_hex("wrong", &push), "g-1").0, 403);
    assert_eq!(gitea(&format!("sha256={hex}"), "g-2").0, 403, "Gitea's signature is bare hex");
    assert_eq!(gitea(&hex, "g-3").0, 202);
    serve.wait_for("forge project=tea run started", 1, Duration::from_secs(2));

    let body = fixture("gitlab-push.json");
    let gitlab = |token: Option<&str>, uuid: &str| {
        let mut headers = vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Event-UUID", uuid)];
        if let Some(token) = token {
            headers.push(("X-Gitlab-Token", token));
        }
        serve.post("/forge/lab", &headers, &body)
    };
    assert_eq!(gitlab(None, "u-1").0, 401);
    assert_eq!(gitlab(Some("gl-secret-2719"), "u-2").0, 403);
    assert_eq!(gitlab(Some("gl-secret-2718"), "u-3").0, 202);
    serve.wait_for("forge project=lab run started", 1, Duration::from_secs(2));
    assert_eq!(gitlab(Some("gl-secret-2718"), "u-3").0, 409, "the same delivery again");
    // The two runs may meet at the state lock, either one first: the other waits for it and
    // is not lost.
    serve.wait_for("run ended", 2, Duration::from_secs(60));
    assert_eq!(serve.count("run ended"), 2, "{}", serve.log());
    assert!(serve.has("forge project=lab run ended") && serve.has("forge project=tea run ended"), "{}", serve.log());
    assert!(serve.has("202 event=Push_Hook delivery=u-3 run=queued"), "{}", serve.log());
}

#[test]
fn check_locates_every_forge_mistake() {
    let env = TestEnv::new();
    env.config(
        r#"[forge.hub]
kind = "github"
token = "ghp_inline"

[forge.lab]
kind = "gitlab"
api = "https://gitlab.example.com"
token_env = "GL"

[forge.tea]
kind = "bitbucket"

[project.a]
repo = "x"
branches = ["main"]
forge = "nowhere"

[project.b]
repo = "x"
branches = ["main"]
forge = "hub"
forge_repo = "just-a-name"

[project.c]
repo = "x"
branches = ["main"]
forge = "lab"

[project.d]
repo = "x"
branches = ["main"]
webhook_secret_env = "S"
"#,
    );
    env.pipe(&["check"]).code(2).stderr_eq(snapbox::str![[r#"
error: invalid pipeline file (8 errors)
  [ROOT]/pipeline.toml:3:1: secrets are never written inline: use `token_env = "VARIABLE"` or `token_file = "/path"`
  [ROOT]/pipeline.toml:11:8: unknown variant `bitbucket`, expected one of `github`, `forgejo`, `gitea`, `gitlab`
  [ROOT]/pipeline.toml:1:1: forge `hub`: set exactly one of `token_env` and `token_file` (a token that may set commit statuses)
  [ROOT]/pipeline.toml:7:1: forge `lab`: `api` must be the API base URL, like `https://HOST/api/v4`
  [ROOT]/pipeline.toml:16:1: project `a`: no `[forge.nowhere]` (forges: `hub`, `lab`)
  [ROOT]/pipeline.toml:22:1: project `b`: `forge_repo` must be `owner/repo`
  [ROOT]/pipeline.toml:27:1: project `c`: `forge_repo` is required with `forge` (the repository on the forge)
  [ROOT]/pipeline.toml:32:1: project `d`: `webhook_secret_env` needs `forge = "NAME"` of a `[forge.NAME]`

"#]], &[]);
}

#[test]
fn generate_webhook_prints_the_url_the_secret_and_the_events_to_select() {
    let env = TestEnv::new();
    env.config(
        r#"[serve]
listen = "127.0.0.1:9010"

[forge.hub]
kind = "github"
token_env = "GH"

[forge.lab]
kind = "gitlab"
api = "https://gitlab.example.com/api/v4"
token_env = "GL"

[project.web]
repo = "x"
branches = ["main"]
forge = "hub"
forge_repo = "acme/web"
webhook_secret_env = "WEB_HOOK_SECRET"

[project.api]
repo = "x"
branches = ["main"]
forge = "lab"
forge_repo = "acme/api"
webhook_secret_file = "/etc/pipe/api-hook"
"#,
    );
    env.pipe(&["generate", "webhook", "web", "--url", "https://ci.example.com/"]).code(0).stdout_eq(
        snapbox::str![[r#"
# GitHub: acme/web → Settings → Webhooks → Add webhook
Payload URL:   https://ci.example.com/forge/web
Content type:  application/json
Secret:        the value of $WEB_HOOK_SECRET
Events:        Let me select individual events: Pushes, Pull requests
# forge `hub`; pipe polls on each event, so the payload is never trusted

"#]],
        &[],
    );
    env.pipe(&["generate", "webhook", "api"]).code(0).stdout_eq(
        snapbox::str![[r#"
# GitLab: project acme/api → Settings → Webhooks → Add new webhook
URL:           http://127.0.0.1:9010/forge/api
Secret token:  the content of `/etc/pipe/api-hook`
Trigger:       Push events (all branches), Merge request events
# forge `lab`; pipe polls on each event, so the payload is never trusted

"#]],
        &[],
    );
}

#[test]
fn a_rate_limited_forge_is_not_asked_again_before_the_time_it_names() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    let api = ForgeApi::start(&a.env, "github", None);
    a.config(&format!("[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"", api.port), "acme/app", "");
    let limit = api.record.with_extension("jsonl.limit");
    std::fs::write(&limit, r#"{"status": 429, "headers": {"Retry-After": "10"}}"#).unwrap();
    a.commit(1, "true");
    let limited = Instant::now();
    a.env.pipe(&["run"]).code(0).stderr_has("rate limited (429)");
    assert_eq!(api.requests().len(), 1, "the first refusal defers the rest");
    std::fs::remove_file(&limit).unwrap();
    a.env.pipe(&["run"]).code(0);
    assert!(limited.elapsed() < Duration::from_secs(9), "the machine is too slow for this test's timing");
    assert_eq!(api.requests().len(), 1, "not asked again before Retry-After has passed");
    std::thread::sleep(Duration::from_secs(11).saturating_sub(limited.elapsed()));
    a.env.pipe(&["run"]).code(0);
    let delivered: Vec<_> = api.requests()[1..].iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(delivered, [201, 201, 201, 201], "then all four, in order");
    let states: Vec<_> = api.requests()[1..].iter().map(|r| r["body"]["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["pending", "success", "pending", "success"]);
}

#[test]
fn a_webhook_while_the_timers_run_holds_the_lock_runs_once_that_run_ends() {
    let Some(docker) = Docker::require() else { return };
    let (a, api) = hooked_app(&docker);
    a.commit(1, "sleep 3");
    let serve = Serve::start(&a.env);
    // The timer's tick, building and testing while the webhook arrives.
    let mut tick = a.env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.requests().is_empty() {
        assert!(Instant::now() < deadline, "the tick never started its build");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(github(&serve, &a.project, "push", "while-locked", &fixture("github-push.json"), WEBHOOK_SECRET).0, 202);
    serve.wait_for("another run holds the lock", 1, Duration::from_secs(5));
    assert!(tick.wait().unwrap().success());
    serve.wait_for("run ended", 1, Duration::from_secs(30));
    let log = serve.log();
    assert!(log.contains("run ended: exit status: 0"), "the waiting run got the lock and ran: {log}");
    assert_eq!(serve.count("run ended"), 1, "{log}");
}

#[test]
fn a_stage_stopped_by_sigterm_is_an_error_status() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    let api = ForgeApi::start(&a.env, "github", None);
    a.config(&format!("[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"", api.port), "acme/app", "");
    a.commit(1, "sleep 60");
    let mut run = a.env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.requests().len() < 3 {
        assert!(Instant::now() < deadline, "the test stage never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill").args(["-TERM", &run.id().to_string()]).status();
    assert!(!run.wait().unwrap().success());
    let statuses = api.statuses("context");
    assert_eq!(statuses.last().unwrap(), &("pipe/test".to_string(), "error".to_string()), "{statuses:?}");
    let description = api.requests().last().unwrap()["body"]["description"].as_str().unwrap().to_string();
    assert!(description.starts_with("interrupted after"), "{description}");
}

#[test]
fn stages_run_by_hand_give_the_forge_the_statuses_pipe_run_gives() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    let api = ForgeApi::start(&a.env, "github", None);
    a.config(
        &format!("[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"", api.port),
        "acme/app",
        &format!(
            r#"
[[project.{p}.deploy]]
name = "one"
branches = ["main"]
command = {{ argv = ["true"] }}

[[project.{p}.deploy]]
name = "two"
branches = ["main"]
command = {{ argv = ["sh", "-c", "exit 4"] }}
"#,
            p = a.project
        ),
    );
    let commit = a.commit(1, "true");
    a.env.pipe(&["poll"]).code(0);
    // A build learns its commit from the fetch: its forge sees the result only.
    a.env.pipe(&["build", &a.project, "main"]).code(0);
    assert_eq!(api.statuses("context"), pairs(&[("pipe/build", "success")]));
    a.env.pipe(&["test", &a.project, "main"]).code(0);
    assert_eq!(api.statuses("context")[1..].to_vec(), pairs(&[("pipe/test", "pending"), ("pipe/test", "success")]));
    a.env.pipe(&["deploy", &a.project, "main", "--target", "one"]).code(0);
    assert_eq!(
        api.statuses("context")[3..].to_vec(),
        pairs(&[("pipe/deploy/one", "pending"), ("pipe/deploy/one", "success")])
    );
    // Every target of the ref: each gets its own result.
    a.env.pipe(&["deploy", &a.project, "main"]).code(1);
    assert_eq!(
        api.statuses("context")[5..].to_vec(),
        pairs(&[
            ("pipe/deploy/one", "pending"),
            ("pipe/deploy/two", "pending"),
            ("pipe/deploy/one", "success"),
            ("pipe/deploy/two", "failure")
        ])
    );
    let requests = api.requests();
    assert!(requests.iter().all(|r| r["path"] == format!("/repos/acme/app/statuses/{commit}")), "{requests:?}");
    assert!(requests.iter().all(|r| r["error"].is_null()), "{requests:?}");
    // A dry run sends nothing.
    a.env.pipe(&["deploy", &a.project, "main", "--dry-run"]).code(0);
    assert_eq!(api.requests().len(), requests.len());
}

#[test]
fn with_a_public_status_page_statuses_and_slack_link_to_the_runs_page() {
    let Some(docker) = Docker::require() else { return };
    let mut a = app(&docker);
    let api = ForgeApi::start(&a.env, "github", None);
    let slack = crate::support::http::HttpSink::start(200);
    a.env.env("SLACK_URL", &slack.url("/hook"));
    a.env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[notify.slack]
webhook_url_env = "SLACK_URL"
on = ["failure"]

[forge.origin]
kind = "github"
api = "http://127.0.0.1:{port}"
token_env = "FORGE_TOKEN"

[serve.page]
enabled = true
public_url = "https://ci.example.com/"

[project.{p}]
repo = "{url}"
branches = ["main"]
forge = "origin"
forge_repo = "acme/app"
"#,
        ws = a.env.path().join("work").display(),
        port = api.port,
        p = a.project,
        url = a.repo.url(),
    ));
    a.commit(1, "echo boom; exit 3");
    a.env.pipe(&["run"]).code(1);
    // Query values percent-encoded as the page encodes them (`-` included).
    let project = a.project.replace('-', "%2D");
    let ref_page = format!("https://ci.example.com/status/ref?project={project}&ref=refs%2Fheads%2Fmain");
    let run_page = format!("https://ci.example.com/status/run?project={project}&ref=refs%2Fheads%2Fmain&run=1");
    let links: Vec<(String, String)> = api
        .requests()
        .iter()
        .map(|r| {
            (r["body"]["context"].as_str().unwrap().to_string(), r["body"]["target_url"].as_str().unwrap().to_string())
        })
        .collect();
    // The build's pending status comes before its run exists: the ref's page; then the run's.
    assert_eq!(links[0], ("pipe/build".to_string(), ref_page.clone()), "{links:#?}");
    assert_eq!(links.last().unwrap(), &("pipe/test".to_string(), run_page.clone()), "{links:#?}");
    let sent = slack.requests.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "one failure notice");
    assert_eq!(sent[0].json()["attachments"][0]["title_link"], run_page.as_str());
}
