//! The state file: located as documented, never silently reset, one mutating process at a time.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{BareRepo, SilentServer, TestEnv};

fn one_repo(env: &TestEnv) -> BareRepo {
    let repo = BareRepo::new(env.path(), "app");
    repo.set("refs/heads/main");
    env.config(&format!(
        r#"[project.app]
repo = "{}"
branches = ["main"]
"#,
        repo.url()
    ));
    repo
}

#[test]
fn corrupt_state_is_an_error_naming_file_and_line_and_is_left_alone() {
    let env = TestEnv::new();
    one_repo(&env);
    std::fs::create_dir_all(env.state_path().parent().unwrap()).unwrap();
    let corrupt = r#"schema = 1

[project.app.refs]
"refs/heads/main" = { head = "abc", since = 
"#;
    std::fs::write(env.state_path(), corrupt).unwrap();

    let run = env.pipe(&["poll"]);
    run.code(5)
        .stderr_has(&format!("error: state file `{}`: corrupt at line 4", env.state_path().display()))
        .stderr_has("hint: fix or move the state file aside by hand");
    assert_eq!(env.read_state(), corrupt, "a corrupt state is never overwritten");
    env.pipe(&["status"]).code(5).stderr_has("corrupt at line 4");
}

#[test]
fn state_from_a_newer_pipe_is_refused() {
    let env = TestEnv::new();
    one_repo(&env);
    std::fs::create_dir_all(env.state_path().parent().unwrap()).unwrap();
    std::fs::write(env.state_path(), "schema = 9\n").unwrap();
    env.pipe(&["poll"]).code(5).stderr_has("has schema 9 but this pipe reads schema 1");
}

#[test]
fn state_that_cannot_be_saved_is_exit_5_with_the_reason() {
    let env = TestEnv::new();
    one_repo(&env);
    let blocker = env.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let state = blocker.join("state.toml");
    let run = env.pipe(&["poll", "--state", state.to_str().unwrap()]);
    run.code(5).stderr_has(&format!("state file `{}`", state.display()));
}

#[test]
fn saves_are_atomic_and_leave_no_temp_files() {
    let env = TestEnv::new();
    let repo = one_repo(&env);
    for _ in 0..5 {
        repo.set("refs/heads/main");
        env.pipe(&["poll"]).code(0);
    }
    let mut names: Vec<_> = std::fs::read_dir(env.state_path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["state.toml", "state.toml.lock"]);
    assert!(env.read_state().starts_with("# pipe state"));
}

#[test]
fn systemd_state_directory_is_the_default_location() {
    let env = TestEnv::new();
    one_repo(&env);
    let dir = env.path().join("systemd-state");
    let mut cmd = env.command(&["poll"]);
    cmd.env_remove("PIPE_STATE").env("STATE_DIRECTORY", &dir);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("state.toml").exists());
}

/// Starts `pipe poll` against a remote that never answers, and waits until it holds the lock.
fn start_lock_holder(env: &TestEnv, silent: &SilentServer) -> std::process::Child {
    env.config(&format!(
        r#"[pipe.timeouts]
poll = "20s"

[project.slow]
repo = "git://127.0.0.1:{}/slow.git"
branches = ["main"]
"#,
        silent.port
    ));
    let mut child = env.command(&["poll"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let lock = support_lock_path(env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("pid")) && silent.connections() > 0 {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the first poll never took the lock");
}

fn support_lock_path(env: &TestEnv) -> std::path::PathBuf {
    env.state_path().with_file_name("state.toml.lock")
}

#[test]
fn a_second_mutating_run_exits_at_once_with_the_lock_code() {
    let env = TestEnv::new();
    let silent = SilentServer::start();
    let mut first = start_lock_holder(&env, &silent);
    let holder_pid = first.id();

    let started = Instant::now();
    let second = env.pipe(&["poll"]);
    second
        .code(3)
        .stderr_has("another pipe process holds the lock")
        .stderr_has(&format!("pid {holder_pid} running `pipe poll`"));
    assert!(started.elapsed() < Duration::from_secs(5), "the second run waited for the lock");

    // Readers and dry runs take no lock. (The holder read its config already; point this one at a
    // local repo so these runs are quick.)
    one_repo(&env);
    env.pipe(&["status"]).code(0);
    env.pipe(&["poll", "--dry-run"]).code(0);

    first.kill().unwrap();
    first.wait().unwrap();
    env.pipe(&["poll"]).code(0).stdout_has("app");
}
