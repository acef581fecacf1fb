//! SSH remotes against a real OpenSSH server on 127.0.0.1: an unknown host key is refused with
//! the command that fixes it, a known one lists and fetches with the configured key (a real
//! build of what came over SSH), and a key the server does not accept fails quickly and clearly.

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::{Sshd, TestEnv, WorkRepo};

fn config(env: &TestEnv, project: &str, url: &str, key: &std::path::Path) -> String {
    format!(
        r#"[pipe]
workspace = "{ws}"

[project.{project}]
repo = "{url}"
branches = ["main"]

[project.{project}.auth]
ssh_key = "{key}"
"#,
        ws = env.path().join("work").display(),
        key = key.display(),
    )
}

#[test]
fn ssh_remotes_check_the_host_key_then_list_and_fetch_with_the_configured_key() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let project = unique_name("ssh").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\n", docker.base_image));
    repo.write("app.txt", "fetched over ssh\n");
    repo.write(
        ".pipe.toml",
        &format!(
            r#"image = "pipe-test/{project}"
test = "grep -q ssh /app.txt"
"#
        ),
    );
    let head = repo.commit_to("main", "first");
    let url = sshd.url(&repo.bare);
    env.config(&config(&env, &project, &url, &sshd.key));

    // HOME is the test's directory: no known_hosts yet. libgit2 refuses the unknown server.
    let refused = env.pipe(&["poll"]);
    refused
        .code(1)
        .stderr_has("unknown remote ssh hostkey")
        .stderr_has(&format!("ssh-keyscan -p {} 127.0.0.1 >>", sshd.port));
    assert!(!env.read_state_opt().contains(&head), "nothing was recorded from an unverified server");

    let ssh_dir = env.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    std::fs::write(ssh_dir.join("known_hosts"), sshd.known_hosts_line()).unwrap();
    let poll = env.pipe(&["poll", "--json"]);
    poll.code(0);
    assert_eq!(poll.json()["changes"][0]["to"], head.as_str());
    let run = env.pipe(&["run", "--json"]);
    run.code(0);
    assert_eq!(run.json()["results"][0]["result"], "passed", "{}", run.stderr);
    assert_eq!(env.pipe(&["logs", &project, "main", "--json"]).json()["commit"], head.as_str());

    // A key the server does not accept: a bounded, clear failure, and the key never printed.
    let stranger = env.path().join("stranger");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(keygen.success());
    env.config(&config(&env, &project, &url, &stranger));
    let started = std::time::Instant::now();
    let denied = env.pipe(&["poll"]);
    denied.code(1).stderr_has("cannot connect to");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let private = std::fs::read_to_string(&stranger).unwrap();
    let secret_line = private.lines().nth(1).unwrap();
    assert!(!denied.stderr.contains(secret_line));
}
