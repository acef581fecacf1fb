//! Fault injection with real processes: pipe killed mid-save, a full disk, the Docker engine
//! going away mid-run, a registry that is down or refuses credentials, a rewritten remote
//! history, ten runs at once, a second signal, a gigabyte of build output, planted secrets.
//! Each case checks that nothing is lost, the message is clear, the exit code is the
//! documented one, and the next run recovers.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, ProjectImages, Registry, unique_name};
use crate::support::http::HttpSink;
use crate::support::{BareRepo, Run, TestEnv, WorkRepo, git};

/// A project whose repo holds a Dockerfile and a `.pipe.toml`.
struct Proj {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    _images: ProjectImages,
}

fn proj(docker: &Docker, dockerfile_tail: &str, test: &str) -> Proj {
    let env = TestEnv::new();
    let project = unique_name("f").replace("pipe-test-", "");
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\n{dockerfile_tail}", docker.base_image))
        .write("app.txt", "v1\n")
        .write(
            ".pipe.toml",
            &format!(
                r#"image = "{image}"
test = {test:?}
"#
            ),
        );
    Proj { _images: ProjectImages { project: project.clone() }, env, repo, project, image }
}

impl Proj {
    fn config(&self, project_extra: &str, extra: &str) {
        self.env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

{extra}
[project.{p}]
repo = "{url}"
branches = ["main", "dev"]
{project_extra}
"#,
            ws = self.env.path().join("work").display(),
            p = self.project,
            url = self.repo.url(),
        ));
    }
}

/// A `pipe run --json` that took its one ref through `stage` and passed.
fn passed(run: &Run, stage: &str) {
    run.code(0);
    let doc = run.json();
    assert_eq!(
        (doc["results"][0]["stage"].as_str(), doc["results"][0]["result"].as_str()),
        (Some(stage), Some("passed")),
        "{doc}"
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
        }
    }
    out
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect()
}

/// xorshift: reproducible "random" moments without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn sigkill_at_random_moments_during_saves_leaves_the_old_or_the_new_state() {
    let env = TestEnv::new();
    let remote = BareRepo::new(env.path(), "many");
    let first = remote.set("refs/heads/main");
    // 600 branches make each save a ~75 KB write, a wide window to be killed in.
    let mut batch = String::new();
    for i in 0..600 {
        batch.push_str(&format!("update refs/heads/b{i:04} {first}\n"));
    }
    let mut update = Command::new("git")
        .args(["update-ref", "--stdin"])
        .current_dir(&remote.path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    update.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
    assert!(update.wait().unwrap().success());
    let second = remote.commit();
    env.config(&format!(
        r#"[project.many]
repo = "{}"
branches = ["**"]
"#,
        remote.url()
    ));
    env.pipe(&["poll"]).code(0);
    let state_dir = env.state_path().parent().unwrap().to_path_buf();

    let head_of = |env: &TestEnv| -> (usize, String) {
        let status = env.pipe(&["status", "--json"]);
        status.code(0);
        let doc = status.json();
        let refs = doc["refs"].as_array().unwrap();
        let moved = refs.iter().find(|r| r["ref"] == "refs/heads/b0000").unwrap();
        (refs.len(), moved["head"].as_str().unwrap().to_string())
    };
    // How long one save-carrying poll takes here, so kills land before, during and after it.
    let mut took = Vec::new();
    for sha in [&second, &first, &second, &first] {
        std::fs::write(remote.path.join("refs/heads/b0000"), format!("{sha}\n")).unwrap();
        let started = Instant::now();
        env.pipe(&["poll"]).code(0);
        took.push(started.elapsed());
    }
    took.sort();
    let window = took[1].as_micros() as u64 * 12 / 10;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut killed, mut finished) = (0, 0);
    let mut current = first.clone();
    for i in 0..200 {
        let next = if i % 2 == 0 { &second } else { &first };
        std::fs::write(remote.path.join("refs/heads/b0000"), format!("{next}\n")).unwrap();
        let before = current.clone();
        let mut child = env.command(&["poll"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(window)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.code() == Some(0) {
            finished += 1
        } else {
            killed += 1
        }
        let (count, head) = head_of(&env);
        assert_eq!(count, 601, "iteration {i}: every ref is still there");
        assert!(head == before || head == *next, "iteration {i}: the state is the old or the new one, got {head}");
        current = head;
    }
    assert!(
        killed >= 10 && finished >= 10,
        "kills landed before, during and after saves: {killed} killed, {finished} finished"
    );
    env.pipe(&["poll"]).code(0);
    assert_eq!(temp_files(&state_dir), Vec::<PathBuf>::new(), "the next run clears temp files of killed saves");
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "mounting a tmpfs needs root");
            eprintln!("skipped: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system, leaving about `leave` bytes; returns the filler to delete later.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        drop(file);
        let len = std::fs::metadata(&filler).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
        f.set_len(len.saturating_sub(leave)).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_the_old_state_and_says_so_and_the_next_run_recovers() {
    let Some(docker) = Docker::require() else { return };
    let p = proj(&docker, "RUN yes 'build output line' | head -c 300000\n", "true");
    let Some(disk) = Tmpfs::mount(&p.env.path().join("small"), "1m") else { return };
    let state = disk.0.join("state.toml");
    p.env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[project.{p}]
repo = "{url}"
branches = ["**"]
"#,
        ws = p.env.path().join("work").display(),
        p = p.project,
        url = p.repo.url(),
    ));
    let pipe = |args: &[&str]| {
        let mut cmd = p.env.command(args);
        cmd.env("PIPE_STATE", &state);
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for i in 0..40 {
        p.repo.commit_to(&format!("branch-{i:02}"), "b");
    }
    p.repo.commit_to("main", "main");
    assert_eq!(pipe(&["poll"]).0, Some(0));
    let saved = std::fs::read(&state).unwrap();

    // The disk fills; a branch moves; the save fails, and says why, and the old state stays.
    let filler = disk.fill(0);
    let moved = p.repo.commit_to("branch-00", "moved");
    let (code, stderr) = pipe(&["poll"]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("the previous state is intact") && stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains(&state.display().to_string()), "the message names the file: {stderr}");
    assert_eq!(std::fs::read(&state).unwrap(), saved, "the old state is intact, byte for byte");
    assert_eq!(temp_files(&disk.0), Vec::<PathBuf>::new(), "no half-written temp file is left");

    // Room for the state but not for the build's log: the build stops with a clear error and
    // records nothing, so the next run builds it again.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(pipe(&["poll"]).0, Some(0));
    assert!(String::from_utf8_lossy(&std::fs::read(&state).unwrap()).contains(&moved));
    let saved = std::fs::read(&state).unwrap();
    let filler = disk.fill(64 * 1024);
    let (code, stderr) = pipe(&["build", &p.project, "main"]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(std::fs::read(&state).unwrap(), saved, "the state is intact");

    std::fs::remove_file(&filler).unwrap();
    let (code, stderr) = pipe(&["build", &p.project, "main"]);
    assert_eq!(code, Some(0), "with room again the build succeeds: {stderr}");
}

/// The Docker engine's socket, relayed through a socket the test can take away: pipe's docker
/// CLI talks to the real engine until [`EngineRelay::cut`], then finds nothing there, exactly
/// as when the daemon stops. The shared engine itself keeps running for the other tests.
struct EngineRelay {
    path: PathBuf,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
}

impl EngineRelay {
    fn start(path: &Path) -> EngineRelay {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (stop, held) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else { continue };
                let mut held = held.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(engine.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), engine.try_clone().unwrap()), (engine, client)]
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        EngineRelay { path: path.to_path_buf(), cut, conns }
    }

    /// The engine goes away: the socket disappears and every open connection drops.
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for EngineRelay {
    fn drop(&mut self) {
        self.cut();
    }
}

#[test]
fn the_engine_unreachable_at_the_start_or_gone_mid_build_is_exit_4_and_the_next_run_recovers() {
    let Some(docker) = Docker::require() else { return };
    let mut p = proj(&docker, "RUN sleep 4\n", "true");
    p.repo.commit_to("main", "first");
    p.config("", "");
    let socket = p.env.path().join("engine.sock");
    p.env.env("DOCKER_HOST", &format!("unix://{}", socket.display()));

    let run = p.env.pipe(&["run"]);
    run.code(4).stderr_has("the Docker engine does not answer");
    assert_eq!(p.env.pipe(&["status", "--json"]).json()["refs"][0]["stage"], "poll", "nothing recorded");

    let relay = EngineRelay::start(&socket);
    let child = p.env.command(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Fetch and context upload take well under the build's 4 s step; cut the engine mid-step.
    std::thread::sleep(Duration::from_millis(2500));
    relay.cut();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("does not answer"), "{stderr}");
    let status = p.env.pipe(&["status", "--json"]).json();
    assert_eq!(status["refs"][0]["stage"], "poll", "a build the engine dropped is not recorded: {status}");

    let _relay = EngineRelay::start(&socket);
    passed(&p.env.pipe(&["run", "--json"]), "test");
}

#[test]
fn a_registry_that_is_down_or_refuses_credentials_fails_clearly_without_printing_the_password() {
    let Some(docker) = Docker::require() else { return };
    let password = "reg-pw-Zq81mVx";
    let mut reg = Registry::start("ci", password);
    let mut p = proj(&docker, "", "true");
    p.repo.commit_to("main", "first");
    let registry = format!(
        r#"[registry.local]
url = "{}"
username = "ci"
password_env = "REG_PW"
"#,
        reg.host()
    );
    p.config(
        &format!(
            r#"[[project.{}.deploy]]
branches = ["main"]
push = ["local"]
"#,
            p.project
        ),
        &registry,
    );
    p.env.env("REG_PW", password);

    // Down: exit 4, nothing recorded, the ref stays pending; the next run pushes.
    reg.stop();
    let run = p.env.pipe(&["run"]);
    run.code(4).stderr_has(&format!("registry `local` (`{}`) does not answer", reg.host()));
    assert!(!run.stderr.contains(password) && !run.stdout.contains(password));
    reg.start_again();
    passed(&p.env.pipe(&["run", "--json"]), "push");
    assert!(reg.tags(&p.image).contains(&"latest".to_string()));

    // Refused: a wrong password is a failure (exit 1) naming the registry, never the password.
    let wrong = "wrong-pw-Kd02pLs";
    p.env.env("REG_PW", wrong);
    let second = p.repo.commit_to("main", "second");
    let run = p.env.pipe(&["run"]);
    run.code(1).stderr_has("push to registry `local` failed").stderr_has("401 Unauthorized");
    for secret in [password, wrong] {
        assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret), "{secret} printed");
        let logs = p.env.pipe(&["logs", &p.project, "main"]);
        assert!(!logs.stdout.contains(secret), "{secret} in the run log");
    }
    assert!(!reg.tags(&p.image).contains(&second[..12].to_string()));
    p.env.env("REG_PW", password);
    passed(&p.env.pipe(&["run", "--retry", "--json"]), "push");
    assert!(reg.tags(&p.image).contains(&second[..12].to_string()));
}

#[test]
fn a_rewritten_remote_history_is_built_from_the_new_head() {
    let Some(docker) = Docker::require() else { return };
    let p = proj(&docker, "", "grep -q v /app.txt");
    p.repo.commit_to("main", "first");
    p.config("", "");
    p.env.pipe(&["run"]).code(0);
    // Rewrite history: a new root commit force-pushed over main.
    git(&p.repo.work, &["checkout", "--quiet", "--orphan", "rewritten"]);
    p.repo.write("app.txt", "v2 rewritten\n");
    let rewritten = p.repo.commit_to("main", "rewritten history");
    let poll = p.env.pipe(&["poll", "--json"]);
    poll.code(0);
    assert_eq!(poll.json()["changes"][0]["to"], rewritten.as_str());
    passed(&p.env.pipe(&["run", "--json"]), "test");
    let built = p.env.pipe(&["logs", &p.project, "main", "--json"]).json();
    assert_eq!(built["commit"], rewritten.as_str());
    let inside = docker.ok(&["run", "--rm", &format!("{}:{}", p.image, &rewritten[..12]), "cat", "/app.txt"]);
    assert_eq!(inside, "v2 rewritten\n");
}

#[test]
fn ten_runs_at_once_exactly_one_works_and_nine_exit_with_the_lock_code() {
    let Some(docker) = Docker::require() else { return };
    let p = proj(&docker, "RUN sleep 2\n", "true");
    p.repo.commit_to("main", "first");
    p.config("", "");
    let children: Vec<_> = (0..10)
        .map(|_| p.env.command(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let codes: Vec<i32> = outputs.iter().map(|o| o.status.code().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 3).count(), 9, "{codes:?}");
    for out in outputs.iter().filter(|o| o.status.code() == Some(3)) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("another pipe process holds the lock") && stderr.contains("running `pipe run`"),
            "{stderr}"
        );
    }
    let history = p.env.pipe(&["logs", &p.project, "main", "--json"]).json();
    assert_eq!(history["run"], 1, "the commit was built once");
    p.env.pipe(&["run"]).code(0).stderr_has("nothing to do");
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

#[test]
fn sigint_is_exit_130_and_a_second_signal_exits_at_once_leaving_a_usable_state() {
    let Some(docker) = Docker::require() else { return };
    let p = proj(&docker, "", "if [ -f /slow.txt ]; then sleep 60; fi");
    p.repo.write("slow.txt", "slow\n");
    p.repo.write("Dockerfile", &format!("FROM {}\nCOPY app.txt slow.txt /\n", docker.base_image));
    p.repo.commit_to("main", "slow tests");
    p.config("", "");

    let child = p.env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let first = format!("label=pipe.run={}-main-1", p.project);
    docker.wait_for_running(&first);
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted by SIGINT"));
    assert_eq!(docker.ok(&["ps", "--all", "--quiet", "--filter", &first]).trim(), "", "no container is left");
    assert_eq!(p.env.pipe(&["status", "--json"]).json()["refs"][0]["result"], "interrupted");

    // The next run retries the interrupted ref; an impatient operator sends two signals.
    let child = p.env.command(&["run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let second = format!("label=pipe.run={}-main-2", p.project);
    docker.wait_for_running(&second);
    signal(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(50));
    signal(&child, "-TERM");
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(started.elapsed() < Duration::from_secs(3), "a second signal exits at once");
    // Exiting at once leaves the test container to finish by itself; remove it now, best effort
    // (docker may already be removing it: it runs with `--rm`).
    for id in docker.ok(&["ps", "--all", "--quiet", "--filter", &second]).lines() {
        let _ = Command::new("docker").args(["rm", "--force", id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }

    // The state still parses, the lock is free, and the ref is still work for the next run.
    p.env.pipe(&["status", "--json"]).code(0);
    std::fs::remove_file(p.repo.work.join("slow.txt")).unwrap();
    p.repo.write("Dockerfile", &format!("FROM {}\nCOPY app.txt /\n", docker.base_image));
    p.repo.commit_to("main", "fast tests");
    passed(&p.env.pipe(&["run", "--json"]), "test");
}

#[test]
fn a_repo_file_cannot_run_anything_on_the_host() {
    let Some(docker) = Docker::require() else { return };
    let p = proj(&docker, "", "true");
    let marker = p.env.path().join("pwned");
    p.repo.write(
        ".pipe.toml",
        &format!(
            r#"image = "{}"
test = "true"

[[deploy]]
branches = ["main"]
command = {{ argv = ["touch", "{}"] }}
"#,
            p.image,
            marker.display()
        ),
    );
    p.repo.commit_to("main", "hostile");
    p.config("", "");
    let run = p.env.pipe(&["run"]);
    run.code(1).stderr_has(".pipe.toml:4:3").stderr_has("cannot define `deploy`");
    assert!(!marker.exists(), "nothing from the repository ran on the host");
}

#[test]
fn a_gigabyte_of_build_output_keeps_memory_bounded_and_the_log_capped() {
    let Some(docker) = Docker::require() else { return };
    let line = "0123456789abcdef".repeat(6);
    let p = proj(&docker, &format!("RUN yes {line} | head -c 1073741824\n"), "true");
    p.repo.commit_to("main", "loud build");
    p.config("", "");
    let mut child =
        p.env.command(&["build", &p.project, "main"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let mut stderr = String::new();
    let mut pipe_err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe_err.read_to_string(&mut s);
        s
    });
    while child.try_wait().unwrap().is_none() {
        // Only once it is pipe: until it execs, the child shares this (large, multi-test)
        // process's address space and its high-water mark.
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && text.lines().any(|l| l.strip_prefix("Name:").is_some_and(|n| n.trim() == "pipe"))
            && let Some(kb) = text.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak_kb = peak_kb.max(kb.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stderr.push_str(&reader.join().unwrap());
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert!(peak_kb > 0 && peak_kb < 64 * 1024, "pipe's peak RSS stays bounded: {peak_kb} kB");
    eprintln!("1 GiB of build output: pipe's peak RSS {peak_kb} kB");
    let logs = p.env.pipe(&["logs", &p.project, "main", "--json"]).json();
    let log = PathBuf::from(logs["log"].as_str().unwrap());
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size < 17 * 1024 * 1024, "the log is capped at 16 MiB: {size} bytes");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("[pipe: log capped at 16777216 bytes;"), "the log says it was capped");
}

#[test]
fn secrets_planted_in_the_config_never_reach_output_logs_state_errors_or_notifications() {
    let Some(docker) = Docker::require() else { return };
    let (reg_pw, slack_part, hook_secret, wrong_pw) =
        ("regpw-Vb77Qx1", "SLACKPART9h3Ke", "hooksecret-Pq4Lm2", "wrongpw-Tz83Jn");
    let reg = Registry::start("ci", reg_pw);
    let slack = HttpSink::start(200);
    let receiver = HttpSink::start(202);
    let mut p = proj(&docker, "", "grep -q fine /app.txt");
    p.env
        .env("REG_PW", reg_pw)
        .env("SLACK_URL", &slack.url(&format!("/services/T0/B0/{slack_part}")))
        .env("HOOK_SECRET", hook_secret);
    p.config(
        &format!(
            r#"[[project.{p}.deploy]]
name = "prod"
branches = ["main"]
push = ["local"]
webhook = {{ url = "{hook}", secret_env = "HOOK_SECRET" }}
"#,
            p = p.project,
            hook = receiver.url("/hooks/app"),
        ),
        &format!(
            r#"[notify.slack]
webhook_url_env = "SLACK_URL"
on = ["failure", "recovery", "deploy"]

[registry.local]
url = "{}"
username = "ci"
password_env = "REG_PW"
"#,
            reg.host()
        ),
    );
    let mut said = Vec::new();
    let mut record = |run: Run| {
        said.push(format!("{}\n{}", run.stdout, run.stderr));
        run
    };

    record(p.env.pipe(&["check"])).code(0);
    p.repo.write("app.txt", "bad\n");
    p.repo.commit_to("main", "failing");
    record(p.env.pipe(&["run", "--dry-run", "-vv"])).code(0);
    record(p.env.pipe(&["-vv", "run"])).code(1);
    p.repo.write("app.txt", "fine\n");
    p.repo.commit_to("main", "fixed");
    record(p.env.pipe(&["-vv", "run"])).code(0);
    record(p.env.pipe(&["push", &p.project, "main", "--dry-run", "-vv"])).code(0);
    record(p.env.pipe(&["deploy", &p.project, "main", "--dry-run", "-vv"])).code(0);
    record(p.env.pipe(&["logs", &p.project, "main"])).code(0);
    p.env.env("REG_PW", wrong_pw);
    record(p.env.pipe(&["push", &p.project, "main", "-vv"])).code(1);
    receiver.set_status(500);
    record(p.env.pipe(&["deploy", &p.project, "main", "-vv"])).code(1);

    assert_eq!(receiver.taken().len(), 1, "one signed deploy reached the receiver");
    let notifications: Vec<String> =
        slack.taken().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert!(notifications.len() >= 2, "failure, recovery and deploy were notified: {notifications:?}");
    let state_dir = p.env.state_path().parent().unwrap().to_path_buf();
    // docker/ is docker's own credential store (what `docker login` writes, mode 700): the one
    // place a registry password is meant to be kept.
    let files: Vec<(String, String)> = files_under(&state_dir)
        .into_iter()
        .filter(|f| !f.starts_with(state_dir.join("docker")))
        .map(|f| (f.display().to_string(), String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned()))
        .collect();
    assert!(files.iter().any(|(f, _)| f.ends_with(".log")), "run logs were written");
    for secret in [reg_pw, slack_part, hook_secret, wrong_pw] {
        for text in &said {
            assert!(!text.contains(secret), "`{secret}` printed:\n{text}");
        }
        for body in &notifications {
            assert!(!body.contains(secret), "`{secret}` in a notification: {body}");
        }
        for (path, text) in &files {
            assert!(!text.contains(secret), "`{secret}` written to {path}");
        }
    }
}
