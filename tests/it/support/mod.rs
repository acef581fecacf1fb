//! Test harness shared by the integration tests: a temp dir per test, the real `pipe` binary
//! run with a clean environment, real git repositories, and a real git daemon on 127.0.0.1.

pub mod docker;
pub mod engine;
pub mod fleet_bench;
pub mod forge_api;
pub mod hosts;
pub mod http;
pub mod load;
pub mod nginx;
pub mod serve;
pub mod swarm;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One test's sandbox: a temp dir holding the pipeline file, the state and any repos.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new().prefix("pipe-test-").tempdir().expect("temp dir");
        TestEnv { dir, env: Vec::new() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("pipeline.toml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.path().join("state").join("state.toml")
    }

    /// Writes `pipeline.toml`.
    pub fn config(&self, text: &str) -> &Self {
        std::fs::write(self.config_path(), text).expect("write pipeline.toml");
        self
    }

    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A `pipe` command with a clean environment pointed at this sandbox.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipe"));
        cmd.args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("PIPE_CONFIG", self.config_path())
            .env("PIPE_STATE", self.state_path())
            .stdin(Stdio::null());
        // The suite's second pass runs the build scenarios on another docker CLI (BuildKit):
        // `PIPE_TEST_DOCKER`; a test that sets `PIPE_DOCKER` itself still wins.
        if let Some(docker) = std::env::var_os("PIPE_TEST_DOCKER").filter(|d| !d.is_empty()) {
            cmd.env("PIPE_DOCKER", docker);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `pipe ARGS` to completion.
    pub fn pipe(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().expect("run pipe");
        Run::from(output, args, self.path())
    }

    pub fn read_state(&self) -> String {
        std::fs::read_to_string(self.state_path()).expect("read state")
    }

    /// The state file's text, or "" when none was written.
    pub fn read_state_opt(&self) -> String {
        std::fs::read_to_string(self.state_path()).unwrap_or_default()
    }
}

/// A finished `pipe` process.
pub struct Run {
    pub args: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The sandbox it ran in, shown as `[ROOT]` in snapshots.
    root: PathBuf,
}

impl Run {
    fn from(output: Output, args: &[&str], root: &Path) -> Run {
        Run {
            args: args.join(" "),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            root: root.to_path_buf(),
        }
    }

    /// Asserts the exit code, printing everything on mismatch.
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "`pipe {}` exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr of `pipe {}` lacks {needle:?}\n--- stderr\n{}",
            self.args,
            self.stderr
        );
        self
    }

    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout of `pipe {}` lacks {needle:?}\n--- stdout\n{}",
            self.args,
            self.stdout
        );
        self
    }

    /// Asserts the whole of stdout against a snapshot; see [`Run::stderr_eq`].
    #[track_caller]
    pub fn stdout_eq(&self, expected: impl snapbox::IntoData, redact: &[(&'static str, &str)]) -> &Self {
        self.snapshot(&self.stdout, expected, redact);
        self
    }

    /// Asserts the whole of stderr against a snapshot (snapbox): `[..]` matches the rest of a
    /// line, `...` whole lines, the sandbox's path reads `[ROOT]`, and each `(placeholder,
    /// value)` of `redact` (`[PROJECT]`, `[HEAD]`) reads as its placeholder.
    /// `SNAPSHOTS=overwrite cargo test` rewrites a snapshot that no longer matches.
    #[track_caller]
    pub fn stderr_eq(&self, expected: impl snapbox::IntoData, redact: &[(&'static str, &str)]) -> &Self {
        self.snapshot(&self.stderr, expected, redact);
        self
    }

    #[track_caller]
    fn snapshot(&self, actual: &str, expected: impl snapbox::IntoData, redact: &[(&'static str, &str)]) {
        let mut redactions = snapbox::Redactions::new();
        redactions.insert("[ROOT]", self.root.clone()).unwrap();
        for (placeholder, value) in redact {
            redactions.insert(placeholder, value.to_string()).unwrap();
        }
        snapbox::Assert::new()
            .action_env(snapbox::assert::DEFAULT_ACTION_ENV)
            .redact_with(redactions)
            .eq(actual.to_string(), expected);
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs git with a fixed identity; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "pipe test")
        .env("GIT_AUTHOR_EMAIL", "test@pipe.invalid")
        .env("GIT_COMMITTER_NAME", "pipe test")
        .env("GIT_COMMITTER_EMAIL", "test@pipe.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository whose refs the test moves directly (commits made with commit-tree).
pub struct BareRepo {
    pub path: PathBuf,
    counter: std::cell::Cell<u32>,
}

impl BareRepo {
    pub fn new(parent: &Path, name: &str) -> BareRepo {
        let path = parent.join(format!("{name}.git"));
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "--bare", "--quiet", "--initial-branch=main"]);
        BareRepo { path, counter: std::cell::Cell::new(0) }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// A new commit (empty tree, unique message), not yet on any ref.
    pub fn commit(&self) -> String {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let tree = git(&self.path, &["hash-object", "-t", "tree", "-w", "--stdin"]);
        let tree = if tree.is_empty() { "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_string() } else { tree };
        git(&self.path, &["commit-tree", &tree, "-m", &format!("commit {n}")])
    }

    /// Points `refname` at a new commit and returns it.
    pub fn set(&self, refname: &str) -> String {
        let sha = self.commit();
        git(&self.path, &["update-ref", refname, &sha]);
        sha
    }

    pub fn delete(&self, refname: &str) {
        git(&self.path, &["update-ref", "-d", refname]);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `git daemon` serving a directory over git:// on 127.0.0.1; killed on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        for _ in 0..5 {
            let port = free_port();
            // git-daemon itself, not `git daemon`: `git` would run it as a child of its own, which
            // killing `git` on drop would leave behind.
            let exec_path = git(base, &["--exec-path"]);
            let child = Command::new(Path::new(&exec_path).join("git-daemon"))
                .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1", "--informative-errors"])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("git daemon (is git installed?)");
            let mut daemon = GitDaemon { child, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return daemon;
                }
                if let Ok(Some(_)) = daemon.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = daemon.child.kill();
        }
        panic!("git daemon did not start");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers.
pub struct SilentServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (s, h) = (stop.clone(), held.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => h.lock().unwrap().push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SilentServer { port, stop, held }
    }

    pub fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A smart-HTTP git server (`git http-backend` behind Python) on 127.0.0.1; killed on drop.
pub struct GitHttpServer {
    child: Child,
    pub port: u16,
    redirect: PathBuf,
}

impl GitHttpServer {
    /// Serves the repositories under `root`; with `credential` (`user:password`), requires it.
    pub fn start(root: &Path, credential: Option<&str>) -> GitHttpServer {
        Self::start_logged(root, credential, None)
    }

    /// [`GitHttpServer::start`], appending each request's method and path to `log`.
    pub fn start_logged(root: &Path, credential: Option<&str>, log: Option<&Path>) -> GitHttpServer {
        let port_file = root.join(format!(".http-port-{}", free_port()));
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/git_http_server.py")).arg(root).arg(&port_file);
        if let Some(c) = credential {
            cmd.arg(c);
        }
        if let Some(log) = log {
            cmd.env("GIT_HTTP_LOG", log);
        }
        let redirect = PathBuf::from(format!("{}.redirect", port_file.display()));
        cmd.env("GIT_HTTP_REDIRECT", &redirect);
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                return GitHttpServer { child, port: port.trim().parse().unwrap(), redirect };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the git HTTP server did not start");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }

    /// From now on, requests of `method` (`*`: any) that pass the credential check are answered
    /// 307 to `origin` + their path; `None` stops redirecting.
    pub fn redirect(&self, to: Option<(&str, &str)>) {
        match to {
            Some((method, origin)) => std::fs::write(&self.redirect, format!("{method} {origin}")).unwrap(),
            None => {
                let _ = std::fs::remove_file(&self.redirect);
            }
        }
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A working checkout with files, committed and pushed to a bare repo beside it.
pub struct WorkRepo {
    pub work: PathBuf,
    pub bare: PathBuf,
}

impl WorkRepo {
    pub fn new(parent: &Path, name: &str) -> WorkRepo {
        let work = parent.join(format!("{name}-work"));
        let bare = parent.join(format!("{name}.git"));
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "--quiet", "--initial-branch=main"]);
        git(parent, &["init", "--quiet", "--bare", "--initial-branch=main", bare.to_str().unwrap()]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        WorkRepo { work, bare }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    pub fn write(&self, path: &str, text: &str) -> &Self {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Commits everything and pushes HEAD to `branch`; returns the commit id.
    pub fn commit_to(&self, branch: &str, message: &str) -> String {
        git(&self.work, &["add", "--all"]);
        git(&self.work, &["commit", "--quiet", "--allow-empty", "-m", message]);
        git(&self.work, &["push", "--quiet", "--force", "origin", &format!("HEAD:refs/heads/{branch}")]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// OpenSSH's sshd on 127.0.0.1 with its own host key, accepting one client key; killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// The client key it accepts.
    pub key: PathBuf,
    host_key: String,
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// `None` (test skipped) without sshd, unless `PIPE_REQUIRE_DOCKER=1` makes that a failure.
    pub fn start() -> Option<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "sshd is missing (apt-get install openssh-server)");
            eprintln!("skipped: sshd is not installed");
            return None;
        }
        // Privilege separation wants this directory; only root can make it.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let keygen = |name: &str| {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.path().join(name))
                .status()
                .expect("ssh-keygen");
            assert!(status.success());
        };
        keygen("host");
        keygen("client");
        std::fs::copy(dir.path().join("client.pub"), dir.path().join("authorized_keys")).unwrap();
        let host_key = std::fs::read_to_string(dir.path().join("host.pub")).unwrap();
        let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    r#"Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host
AuthorizedKeysFile {d}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile none
"#,
                    d = dir.path().display()
                ),
            )
            .unwrap();
            let mut child = Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let key = dir.path().join("client");
                    return Some(Sshd { child, port, key, host_key, _dir: dir });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("sshd did not start (it needs root for /run/sshd)");
    }

    /// `ssh://USER@127.0.0.1:PORT/ABSOLUTE/PATH` for a repository on this machine.
    pub fn url(&self, repo: &Path) -> String {
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        format!("ssh://{}@127.0.0.1:{}{}", user.trim(), self.port, repo.display())
    }

    /// The `known_hosts` line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HMAC-SHA256 of `data` in hex, by openssl: an implementation independent of pipe's.
pub fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// `sha256=<hex>`, as GitHub and `pipe deploy` sign a webhook body.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}
