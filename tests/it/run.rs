//! `pipe run`, `pipe deploy`: the whole loop against a real engine, a real registry, a real
//! compose project answering on 127.0.0.1, and real HTTP peers for Slack and webhooks.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snapbox::str;

use crate::support::docker::{ComposeProject, Docker, ProjectImages, Registry, Stack, unique_name, write_web_compose};
use crate::support::http::{HttpSink, get};
use crate::support::{TestEnv, WorkRepo, free_port};

struct App {
    _compose: ComposeProject,
    compose_file: std::path::PathBuf,
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    port: u16,
    _images: ProjectImages,
}

fn app(docker: &Docker) -> App {
    let env = TestEnv::new();
    let project = unique_name("r").replace("pipe-test-", "");
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    let port = free_port();
    let file = env.path().join("deploy").join("docker-compose.yml");
    write_web_compose(&file, port);
    App {
        _compose: ComposeProject { name: project.clone() },
        compose_file: file,
        _images: ProjectImages { project: project.clone() },
        env,
        repo,
        project,
        image,
        port,
    }
}

impl App {
    fn version(&self, n: u32, test: &str, healthy: bool) -> String {
        self.repo.write("www/index.html", &format!("version {n}\n"));
        let health = self.repo.work.join("www/health");
        if healthy {
            self.repo.write("www/health", "ok\n");
        } else if health.exists() {
            std::fs::remove_file(health).unwrap();
        }
        self.repo.write(
            ".pipe.toml",
            &format!(
                r#"image = "{}"
test = {test:?}
"#,
                self.image
            ),
        );
        self.repo.commit_to("dev", &format!("version {n}"))
    }

    /// A pipeline file with just this project: no registry, no deploy target.
    fn plain_config(&self, pipe_extra: &str, branches: &str) -> String {
        format!(
            r#"[pipe]
workspace = "{ws}"
{pipe_extra}
[project.{p}]
repo = "{url}"
branches = [{branches}]
"#,
            ws = self.env.path().join("work").display(),
            p = self.project,
            url = self.repo.url(),
        )
    }

    /// [`App::plain_config`] on `dev` with one deploy entry for `dev` holding `deploy`.
    fn deploy_config(&self, pipe_extra: &str, deploy: &str) -> String {
        let plain = self.plain_config(pipe_extra, "\"dev\"");
        format!("{plain}\n[[project.{}.deploy]]\nbranches = [\"dev\"]\n{deploy}\n", self.project)
    }

    fn answers(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((200, body)) = get(&format!("http://127.0.0.1:{}/", self.port)) {
                return Some(body.trim().to_string());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn commits_on_dev_are_built_tested_pushed_deployed_notified_and_rolled_back() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "pw-run-1");
    let slack = HttpSink::start(200);
    let mut a = app(&docker);
    a.env.env("REG_PW", "pw-run-1").env("SLACK_URL", &slack.url("/services/T000/B000/SECRETPART"));
    a.env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[notify.slack]
webhook_url_env = "SLACK_URL"

[registry.local]
url = "{reg}"
username = "ci"
password_env = "REG_PW"

[project.{p}]
repo = "{url}"
branches = ["dev"]

[[project.{p}.deploy]]
name = "devhost"
branches = ["dev"]
push = ["local"]
compose = {{ file = "{file}", project = "{p}", services = ["web"] }}
health = {{ url = "http://127.0.0.1:{port}/health", timeout = "8s" }}
"#,
        ws = a.env.path().join("work").display(),
        reg = reg.host(),
        p = a.project,
        url = a.repo.url(),
        file = a.compose_file.display(),
        port = a.port,
    ));
    let good = "grep -q version /www/index.html";

    let v1 = a.version(1, good, true);
    let run = a.env.pipe(&["run"]);
    run.code(0).stdout_eq(
        str![[r#"
PROJECT[..]REF  COMMIT        STAGE   RESULT  TIME
[PROJECT][..]dev  [V_ONE]  deploy  passed  [..]

"#]],
        &[("[PROJECT]", &a.project), ("[V_ONE]", &v1[..12])],
    );
    assert_eq!(a.answers().as_deref(), Some("version 1"));

    let v2 = a.version(2, good, true);
    let run = a.env.pipe(&["run", "--json"]);
    run.code(0).stdout_eq(
        str![[r#"
{
  "version": 1,
  "changes": [
    {
      "project": "[PROJECT]",
      "ref": "refs/heads/dev",
      "kind": "branch",
      "change": "updated",
      "from": "[V_ONE]",
      "to": "[V_TWO]"
    }
  ],
  "errors": [],
  "results": [
    {
      "project": "[PROJECT]",
      "ref": "refs/heads/dev",
      "commit": "[V_TWO]",
      "stage": "deploy",
      "result": "passed",
      "seconds": [..],
      "deployed": true,
      "timeline": {
        "detected": "[..]",
        "built": "[..]",
        "tested": "[..]",
        "pushed": "[..]",
        "healthy": "[..]",
        "traffic": "[..]"
      }
    }
  ],
  "deferred": 0
}

"#]],
        &[("[PROJECT]", &a.project), ("[V_ONE]", &v1), ("[V_TWO]", &v2)],
    );
    assert_eq!(a.answers().as_deref(), Some("version 2"));
    assert!(slack.taken().is_empty(), "successes are not notified by default");

    let v3 = a.version(3, "echo broken-on-purpose; exit 1", true);
    a.env.pipe(&["run"]).code(1).stderr_has("broken-on-purpose");
    assert_eq!(a.answers().as_deref(), Some("version 2"), "the previous version still answers");
    assert!(!reg.tags(&a.image).contains(&v3[..12].to_string()), "a failed commit is not pushed");
    let messages = slack.taken();
    assert_eq!(messages.len(), 1, "exactly one failure message");
    let m = messages[0].json();
    assert_eq!(m["attachments"][0]["color"], "danger");
    assert!(m["text"].as_str().unwrap().contains("dev failed at test"), "{m}");
    assert!(m.to_string().contains("broken-on-purpose"), "the last log lines are attached: {m}");
    assert!(!m.to_string().contains("SECRETPART") && !m.to_string().contains("pw-run-1"));

    a.env.pipe(&["run"]).code(0);
    assert!(slack.taken().is_empty(), "a failed commit is not rebuilt or re-notified on every tick");

    a.version(4, good, true);
    a.env.pipe(&["run"]).code(0);
    assert_eq!(a.answers().as_deref(), Some("version 4"));
    let messages = slack.taken();
    assert_eq!(messages.len(), 1, "exactly one recovery message");
    assert!(messages[0].json()["text"].as_str().unwrap().contains("recovered"));

    a.version(5, good, false);
    let run = a.env.pipe(&["run"]);
    run.code(1).stderr_has("rolled back to");
    assert_eq!(a.answers().as_deref(), Some("version 4"), "the health check failed and version 4 was redeployed");
    assert_eq!(slack.taken().len(), 1, "the failed deploy is notified");
}

/// Regression: the demo's timeline read `tested +1.3s, pushed +1.2s` and `detected` had whole
/// seconds: each stage's end was its start cut to the second plus its duration. Every instant
/// is now read from one clock, to the millisecond, when it happens.
#[test]
fn the_deploy_timeline_of_a_real_run_is_in_order_and_to_the_millisecond() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "pw-timeline-1");
    let mut a = app(&docker);
    a.env.env("REG_PW", "pw-timeline-1");
    let registry =
        format!("[registry.local]\nurl = \"{}\"\nusername = \"ci\"\npassword_env = \"REG_PW\"\n", reg.host());
    a.env.config(&a.deploy_config(
        &registry,
        &format!(
            "push = [\"local\"]\ncompose = {{ file = \"{}\", project = \"{}\", services = [\"web\"] }}\n\
             health = {{ url = \"http://127.0.0.1:{}/health\", timeout = \"8s\" }}",
            a.compose_file.display(),
            a.project,
            a.port
        ),
    ));
    a.version(1, "true", true);
    // To the millisecond, as pipe reads its clock: nothing pipe measures can come before it.
    let before = jiff::Timestamp::from_millisecond(jiff::Timestamp::now().as_millisecond()).unwrap();
    let run = a.env.pipe(&["run", "--json"]);
    let after = jiff::Timestamp::now();
    run.code(0);
    let doc = run.json();
    let timeline = &doc["results"][0]["timeline"];
    let mut previous = ("the run's start", before);
    for moment in ["detected", "built", "tested", "pushed", "healthy", "traffic"] {
        let text = timeline[moment].as_str().unwrap_or_else(|| panic!("no `{moment}` in {timeline}"));
        let at: jiff::Timestamp = text.parse().unwrap();
        // A whole-second reading would fall before the run's start most of the time.
        assert!(previous.1 <= at, "{moment} ({text}) is before {} ({}): {timeline}", previous.0, previous.1);
        previous = (moment, at);
    }
    assert!(previous.1 <= after, "traffic after the run ended: {timeline}");

    // The line people read: `detected` in tenths like the offsets, and no offset going back.
    let line = run.stderr.lines().find(|l| l.contains("timeline of")).expect("a timeline line");
    let parts: Vec<&str> = line.split_once(": detected ").expect("detected first").1.split(", ").collect();
    let detected = parts[0];
    assert!(
        detected.len() == 10 && detected.as_bytes()[8] == b'.' && detected[9..].bytes().all(|b| b.is_ascii_digit()),
        "`detected` in tenths: {line}"
    );
    let offsets: Vec<f64> = parts[1..]
        .iter()
        .map(|p| {
            let offset = p.rsplit_once(" +").and_then(|(_, o)| o.strip_suffix('s')).expect("`+N.Ns`");
            assert_eq!(offset.split_once('.').map(|(_, f)| f.len()), Some(1), "tenths: {line}");
            offset.parse().unwrap()
        })
        .collect();
    assert_eq!(offsets.len(), 5, "built, tested, pushed, healthy, took traffic: {line}");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "in order: {line}");
}

#[test]
fn rollback_by_hand_redeploys_an_earlier_commit() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    a.env.config(&a.deploy_config(
        "",
        &format!("compose = {{ file = \"{}\", project = \"{}\" }}", a.compose_file.display(), a.project),
    ));
    let v1 = a.version(1, "true", true);
    a.env.pipe(&["run"]).code(0);
    let v2 = a.version(2, "true", true);
    a.env.pipe(&["run"]).code(0);
    assert_eq!(a.answers().as_deref(), Some("version 2"));
    let dry = a.env.pipe(&["deploy", &a.project, "dev", "--commit", &v1[..12], "--dry-run"]);
    dry.code(0).stdout_has("up --detach --no-build --remove-orphans");
    a.env.pipe(&["deploy", &a.project, "dev", "--commit", &v1[..12]]).code(0);
    assert_eq!(a.answers().as_deref(), Some("version 1"));
    // Marked as a rollback in the target's history, as automatic rollbacks are; deploying the
    // newest build again by its commit is not one.
    a.env.pipe(&["deploy", &a.project, "dev", "--commit", &v2[..12]]).code(0);
    let history = pipe::state::deploys_path(&a.env.state_path(), &a.project, "compose");
    let deploys = pipe::state::load_deploys(&history).unwrap().deploys;
    let marks: Vec<(&str, bool)> = deploys.iter().map(|d| (&d.commit[..12], d.rollback)).collect();
    assert_eq!(marks, [(&v1[..12], false), (&v2[..12], false), (&v1[..12], true), (&v2[..12], false)]);
    a.env
        .pipe(&["deploy", &a.project, "dev", "--commit", "deadbeef"])
        .code(1)
        .stderr_has("no image of commit `deadbeef`");
}

#[test]
fn a_webhook_target_posts_a_signed_release() {
    let Some(docker) = Docker::require() else { return };
    let receiver = HttpSink::start(202);
    let mut a = app(&docker);
    a.env.env("HOOK_SECRET", "hmac-secret-662607");
    a.env.config(&a.deploy_config(
        "",
        &format!("webhook = {{ url = \"{}\", secret_env = \"HOOK_SECRET\" }}", receiver.url("/hooks/app")),
    ));
    let sha = a.version(1, "true", true);
    let run = a.env.pipe(&["run", "-vv"]);
    run.code(0);
    assert!(!run.stderr.contains("hmac-secret-662607"));
    let requests = receiver.taken();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    // The sender asks a `pipe serve` receiver to hold its answer until the run ends.
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hooks/app?wait=55"));
    let expected = {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", "hmac-secret-662607", "-r"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl");
        child.stdin.take().unwrap().write_all(&r.body).unwrap();
        let out = child.wait_with_output().unwrap();
        format!("sha256={}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap())
    };
    assert_eq!(r.header("X-Hub-Signature-256"), Some(expected.as_str()), "the signature verifies over the raw body");
    let body = r.json();
    assert_eq!(body["commit"], sha.as_str());
    assert_eq!(body["project"], a.project.as_str());
    assert_eq!(body["ref"], "refs/heads/dev");
    assert_eq!(body["image"], a.image.as_str());

    receiver.set_status(500);
    a.version(2, "true", true);
    let run = a.env.pipe(&["run"]);
    run.code(1).stderr_has("failed after 3 attempts: HTTP 500");
    assert_eq!(receiver.taken().len(), 3, "5xx is retried, boundedly");
}

#[test]
fn two_runs_at_once_the_second_exits_with_the_lock_code() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    a.env.config(&a.plain_config("", "\"dev\""));
    a.version(1, "sleep 20", true);
    let mut first = a.env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let lock = a.env.state_path().with_file_name("state.toml.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("pipe run")) {
        assert!(Instant::now() < deadline, "the first run never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.env.pipe(&["run"]).code(3).stderr_has("another pipe process holds the lock");
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn sigterm_during_a_long_test_stops_cleanly_and_the_next_run_finishes() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    a.env.config(&a.plain_config("", "\"dev\""));
    a.version(1, "if [ -f /www/health ]; then sleep 60; fi", true);
    let child = a.env.command(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let label = format!("label=pipe.run={}-dev-1", a.project);
    docker.wait_for_running(&label);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted by SIGTERM"));
    assert_eq!(docker.ok(&["ps", "--all", "--quiet", "--filter", &label]).trim(), "", "no container is left");
    assert_eq!(a.env.pipe(&["status", "--json"]).json()["refs"][0]["result"], "interrupted");

    a.version(1, "true", true);
    let run = a.env.pipe(&["run"]);
    run.code(0);
    assert_eq!(a.env.pipe(&["status", "--json"]).json()["refs"][0]["result"], "passed");
}

#[test]
fn a_swarm_target_deploys_the_stack_and_waits_for_it() {
    let Some(docker) = Docker::require() else { return };
    let swarm = docker.ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(swarm.trim(), "active", "scripts/test-deps.sh initialises a single-node swarm");
    let a = app(&docker);
    let stack = Stack(a.project.clone());
    let file = a.env.path().join("deploy").join("stack.yml");
    std::fs::write(
        &file,
        r#"version: "3.8"
services:
  web:
    image: ${PIPE_IMAGE}:${PIPE_TAG}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
"#,
    )
    .unwrap();
    a.env.config(&a.deploy_config(
        "",
        &format!("swarm = {{ file = \"{}\", stack = \"{}\" }}\ntimeout = \"90s\"", file.display(), stack.0),
    ));
    let sha = a.version(1, "true", true);
    a.env.pipe(&["run"]).code(0);
    let replicas =
        docker.ok(&["service", "ls", "--filter", &format!("name={}_web", stack.0), "--format", "{{.Replicas}}"]);
    assert_eq!(replicas.trim(), "1/1", "the service converged before pipe returned");
    let image = stack.web_image(&docker);
    assert!(image.trim().starts_with(&format!("{}:{}", a.image, &sha[..12])), "{image}");
}

/// Peers report a swarm that rolled an update back itself as a successful deploy; the swarm's
/// own update status says otherwise.
#[test]
fn a_swarm_that_rolls_an_update_back_itself_is_reported_as_rolled_back_never_as_success() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    let stack = Stack(a.project.clone());
    let file = a.env.path().join("deploy").join("stack.yml");
    std::fs::write(
        &file,
        r#"version: "3.8"
services:
  web:
    image: ${PIPE_IMAGE}:${PIPE_TAG}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    healthcheck:
      test: ["CMD", "test", "-f", "/www/health"]
      interval: 1s
      timeout: 1s
      retries: 2
    deploy:
      update_config:
        monitor: 10s
"#,
    )
    .unwrap();
    a.env.config(&a.deploy_config(
        "",
        &format!("swarm = {{ file = \"{}\", stack = \"{}\" }}\ntimeout = \"120s\"", file.display(), stack.0),
    ));
    let good = a.version(1, "true", true);
    a.env.pipe(&["run"]).code(0);
    // The next release never becomes healthy: the swarm's own `failure_action: rollback` (pipe's
    // override) puts the old one back.
    a.version(2, "true", false);
    let run = a.env.pipe(&["run"]);
    run.code(1).stderr_has("the swarm rolled back the update of").stderr_has("rolled back to");
    let image = stack.web_image(&docker);
    assert!(image.trim().starts_with(&format!("{}:{}", a.image, &good[..12])), "{image}");
    let deploys = a.env.state_path().with_file_name("deploys").join(&a.project);
    let history: String =
        std::fs::read_dir(&deploys).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
    assert!(history.contains("result = \"rolled_back\""), "the deploy is recorded as rolled back: {history}");
    // A deploy that changes nothing after it is not taken for another rollback.
    a.version(3, "true", true);
    a.env.pipe(&["run"]).code(0);
}

#[test]
fn a_container_health_check_rolls_back_an_unhealthy_deploy_and_the_generic_webhook_hears_of_it() {
    let Some(docker) = Docker::require() else { return };
    let sink = HttpSink::start(200);
    let mut a = app(&docker);
    let container = unique_name("health");
    std::fs::write(
        &a.compose_file,
        format!(
            r#"version: "2.4"
services:
  web:
    image: ${{PIPE_IMAGE}}:${{PIPE_TAG}}
    init: true
    container_name: {container}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: ["127.0.0.1:{port}:8080"]
    healthcheck:
      test: ["CMD", "test", "-f", "/www/health"]
      interval: 1s
      timeout: 1s
      retries: 2
"#,
            port = a.port
        ),
    )
    .unwrap();
    a.env.env("NOTIFY_URL", &sink.url("/pipe-events"));
    a.env.config(&a.deploy_config(
        "\n[notify.webhook]\nurl_env = \"NOTIFY_URL\"\non = [\"failure\", \"deploy\"]\n",
        &format!(
            "compose = {{ file = \"{file}\", project = \"{p}\", services = [\"web\"] }}\n\
             health = {{ container = \"{container}\", timeout = \"30s\" }}",
            file = a.compose_file.display(),
            p = a.project,
        ),
    ));

    let v1 = a.version(1, "true", true);
    a.env.pipe(&["run"]).code(0);
    assert_eq!(docker.ok(&["inspect", "--format", "{{.State.Health.Status}}", &container]).trim(), "healthy");
    assert_eq!(a.answers().as_deref(), Some("version 1"));
    let events = sink.taken();
    assert_eq!(events.len(), 1, "one deploy notice");
    let deployed = events[0].json();
    assert_eq!((deployed["version"].as_i64(), deployed["event"].as_str()), (Some(1), Some("deploy")));
    assert_eq!(deployed["commit"], v1.as_str());

    // No /www/health: the container turns unhealthy, the deploy fails and version 1 comes back.
    a.version(2, "true", false);
    let run = a.env.pipe(&["run"]);
    run.code(1).stderr_has(&format!("container `{container}` is unhealthy"));
    assert_eq!(a.answers().as_deref(), Some("version 1"), "rolled back to the healthy image");
    let events = sink.taken();
    assert_eq!(events.len(), 1, "one failure notice: {:?}", events.iter().map(|e| e.json()).collect::<Vec<_>>());
    let failed = events[0].json();
    assert_eq!((failed["event"].as_str(), failed["stage"].as_str()), (Some("failure"), Some("deploy")), "{failed}");
}

#[test]
fn max_builds_defers_the_rest_to_the_next_run() {
    let Some(docker) = Docker::require() else { return };
    let a = app(&docker);
    a.env.config(&a.plain_config("max_builds = 1\n", "\"dev\", \"feat\""));
    a.version(1, "true", true);
    a.repo.commit_to("feat", "feature");
    let first = a.env.pipe(&["run", "--json"]);
    first.code(0);
    let doc = first.json();
    assert_eq!((doc["results"].as_array().unwrap().len(), doc["deferred"].as_u64()), (1, Some(1)), "{doc}");
    let second = a.env.pipe(&["run", "--json"]).json();
    assert_eq!((second["results"].as_array().unwrap().len(), second["deferred"].as_u64()), (1, Some(0)), "{second}");
    assert_ne!(doc["results"][0]["ref"], second["results"][0]["ref"], "the deferred ref is the one built next");
    a.env.pipe(&["run"]).code(0).stderr_has("nothing to do");
}
