//! Process groups: a command's process group is its lifetime. A timeout or a signal stops the
//! whole group; once the command itself exited, pipe stops waiting for output its leftovers
//! hold and stops them too; only a process that left the group (`setsid`) outlives it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo};

/// A `sleep` whose argument no other process has: `pgrep -f` finds exactly it.
fn marker() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}.{:06}", 300 + std::process::id() % 100, nanos % 1_000_000)
}

fn running(pattern: &str) -> bool {
    Command::new("pgrep").args(["-f", pattern]).stdout(Stdio::null()).status().unwrap().success()
}

/// Waits up to `within` for no process to match.
fn gone(pattern: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while running(pattern) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn kill_all(pattern: &str) {
    let _ = Command::new("pkill").args(["-f", pattern]).status();
}

#[test]
fn a_deploy_that_leaves_processes_behind_ends_on_its_own_exit_and_only_setsid_escapes() {
    // Regression: a deploy command that started `nohup … &` held the lock until the daemon
    // closed its output (91 s) and was reported failed.
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let project = unique_name("pg").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\n", docker.base_image));
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{project}\"\ntest = \"true\"\n"));
    repo.commit_to("main", "first");
    let (nohup, escaped, attached) = (marker(), format!("{}1", marker()), format!("{}2", marker()));
    let script = format!(
        "nohup sleep {nohup} >/dev/null 2>&1 & setsid sleep {escaped} >/dev/null 2>&1 </dev/null & sleep {attached} & echo deployed"
    );
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[project.{project}]\nrepo = \"{url}\"\nbranches = [\"main\"]\n\n\
         [[project.{project}.deploy]]\nbranches = [\"main\"]\ncommand = {{ shell = {script:?} }}\n",
        ws = env.path().join("work").display(),
        url = repo.url(),
    ));
    env.pipe(&["build", &project, "main"]).code(0);
    env.pipe(&["test", &project, "main"]).code(0);
    let started = Instant::now();
    env.pipe(&["deploy", &project, "main"]).code(0);
    let took = started.elapsed();
    let survived = running(&format!("sleep {escaped}"));
    kill_all(&format!("sleep {escaped}"));
    assert!(took < Duration::from_secs(8), "pipe waited for the processes the deploy left behind: {took:?}");
    assert!(gone(&format!("sleep {nohup}"), Duration::from_secs(1)), "a `nohup … &` child stays in the group");
    assert!(gone(&format!("sleep {attached}"), Duration::from_secs(1)), "a `&` child holding the output is stopped");
    assert!(survived, "a process that left the group with setsid keeps running");
}

/// A hook request with the hooks' token.
fn post(server: &Serve, path: &str) -> (u16, serde_json::Value) {
    server.json("POST", path, &[("Authorization", "Bearer tok-31337")], b"")
}

fn hooks(env: &mut TestEnv, hooks: &[(&str, &str)]) {
    env.env("TOKEN", "tok-31337");
    let mut config = String::new();
    for (name, script) in hooks {
        config.push_str(&format!(
            "[serve.hooks.{name}]\ntoken_env = \"TOKEN\"\ntimeout = \"3s\"\ncommand = {{ shell = {script:?} }}\n\n"
        ));
    }
    env.config(&config);
}

#[test]
fn a_hook_is_stopped_at_its_timeout_with_everything_it_started() {
    // Regression: `timeout = "3s"` on `sleep 60; echo done` ended after 60 s, and a hook that
    // forked stayed `running` until its child exited.
    let (slow, forked) = (marker(), format!("{}3", marker()));
    let mut env = TestEnv::new();
    hooks(
        &mut env,
        &[("slow", &format!("sleep {slow}; echo done")), ("forks", &format!("sleep {forked} & echo forked"))],
    );
    let server = Serve::start(&env);

    let started = Instant::now();
    let (status, run) = post(&server, "/hooks/slow?wait=30");
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("timed out after 3s"), "{run}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(gone(&format!("sleep {slow}"), Duration::from_secs(1)), "the hook's sleep was stopped with it");

    let started = Instant::now();
    let (status, run) = post(&server, "/hooks/forks?wait=30");
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "the hook's own exit status decides: {run}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(gone(&format!("sleep {forked}"), Duration::from_secs(1)), "the forked sleep was stopped");
}

#[test]
fn sigterm_stops_the_server_and_every_process_of_a_running_hook_within_the_grace_period() {
    // Regression: after SIGTERM the server lived until the hook's grandchild exited.
    let (plain, stubborn) = (marker(), format!("{}4", marker()));
    let mut env = TestEnv::new();
    hooks(&mut env, &[("plain", &format!("sleep {plain}")), ("stubborn", &format!("trap '' TERM; sleep {stubborn}"))]);
    env.config(&std::fs::read_to_string(env.config_path()).unwrap().replace("timeout = \"3s\"", "timeout = \"10m\""));
    let server = Serve::start(&env);
    let (a, first) = post(&server, "/hooks/plain");
    let (b, second) = post(&server, "/hooks/stubborn");
    assert_eq!((a, b), (202, 202));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(running(&format!("sleep {plain}")) && running(&format!("sleep {stubborn}"))) {
        assert!(Instant::now() < deadline, "the hooks never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let (code, log) = server.stop();
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{log}");
    // SIGTERM, then SIGKILL after 5 s for the one that ignores it.
    assert!(took < Duration::from_secs(8), "the server took {took:?} to stop: {log}");
    assert!(!running(&format!("sleep {plain}")), "no process of a stopped hook remains");
    assert!(!running(&format!("sleep {stubborn}")), "not even one that ignores SIGTERM");
    assert!(log.contains(&format!("run {} hook=plain interrupted", first["id"].as_str().unwrap())), "{log}");
    assert!(log.contains(&format!("run {} hook=stubborn interrupted", second["id"].as_str().unwrap())), "{log}");
}
