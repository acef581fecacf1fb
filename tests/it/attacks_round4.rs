//! Holes found by the fourth round of attacking pipe as an outsider would. Each test is the
//! attack that found its hole, beside the legitimate path; a test still ignored
//! (`open hole: …`) is a hole not closed yet.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Docker, ProjectImages, unique_name, write_web_compose};
use crate::support::http::get;
use crate::support::{TestEnv, WorkRepo, free_port, git};

/// The README: an untrusted ref's "Dockerfile may not `LABEL` a `com.docker.compose.*` or
/// `com.docker.stack.*` key (nor a key made of a variable)", since the legacy builder's step
/// containers would carry it and pass for containers of another project's service while the
/// build runs. The check (`trust::dockerfile::claimed_label`) strips quotes from a key but not
/// the builder's escapes: the builder expands a `LABEL` key as a shell word, so
/// `com\.docker\.compose\.project` is `com.docker.compose.project` to it, while the check sees
/// a key that starts with `com\.` and a text that never contains `com.docker.compose.`. The
/// first round's attack, with its keys written so, breaks the other project's deploy again.
#[test]
#[ignore = "open hole: LABEL com\\.docker\\.compose\\.project=… passes the Dockerfile check; the builder unescapes it"]
fn a_pull_request_label_key_written_with_escapes_cannot_pose_as_another_projects_service() {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let victim = unique_name("v").replace("pipe-test-", "");
    let attacker = unique_name("a").replace("pipe-test-", "");
    let (_iv, _ia) = (ProjectImages { project: victim.clone() }, ProjectImages { project: attacker.clone() });
    // Dropped before the images: its containers go first.
    let _cv = ComposeProject { name: victim.clone() };

    // The victim: a trusted branch deployed in place with compose.
    let repo = WorkRepo::new(env.path(), "victim");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "version 1\n");
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{victim}\"\ntest = \"true\"\n"));
    repo.commit_to("dev", "version 1");
    let port = free_port();
    let file = env.path().join("deploy").join("docker-compose.yml");
    write_web_compose(&file, port);

    // The attacker: a pull request of another project on the same host.
    let hostile = WorkRepo::new(env.path(), "hostile");
    hostile.write("Dockerfile", &format!("FROM {}\n", docker.base_image));
    hostile.write(".pipe.toml", "test = \"true\"\n");
    hostile.commit_to("main", "main");

    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[project.{victim}]
repo = "{vurl}"
branches = ["dev"]

[[project.{victim}.deploy]]
branches = ["dev"]
compose = {{ file = "{file}", project = "{victim}", services = ["web"] }}

[project.{attacker}]
repo = "{aurl}"
image = "pipe-test/{attacker}"
branches = ["main"]
pull_requests = true
"#,
        ws = env.path().join("work").display(),
        vurl = repo.url(),
        aurl = hostile.url(),
        file = file.display(),
    ));

    // A first tick: both projects built, the victim's version 1 deployed.
    env.pipe(&["run"]).code(0);

    // The pull request's Dockerfile claims the victim's compose project and service, then
    // takes its time in a build step (the untrusted ref builds with the legacy builder, whose
    // step containers carry the labels set so far); the victim pushes version 2.
    hostile.write(
        "Dockerfile",
        &format!(
            "FROM {}\nLABEL com\\.docker\\.compose\\.project={victim} com\\.docker\\.compose\\.service=web com\\.docker\\.compose\\.oneoff=False\nRUN sleep 40\n",
            docker.base_image
        ),
    );
    git(&hostile.work, &["add", "--all"]);
    git(&hostile.work, &["commit", "--quiet", "-m", "a pull request"]);
    git(&hostile.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/1/head"]);
    repo.write("www/index.html", "version 2\n");
    repo.commit_to("dev", "version 2");

    // Both projects in one tick, as the timer runs them (projects in parallel).
    let run = env.command(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start pipe run");
    let output = run.wait_with_output().expect("pipe run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Some((200, body)) = get(&format!("http://127.0.0.1:{port}/")) {
            answer = Some(body.trim().to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = env.pipe(&["logs", &victim, "dev"]).stdout.clone();
    assert_eq!(
        answer.as_deref(),
        Some("version 2"),
        "the victim's deploy, run while another project's pull request built, never answered\nstderr:\n{stderr}\nvictim's log:\n{log}"
    );
}
