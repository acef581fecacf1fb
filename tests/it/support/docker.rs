//! Real-Docker helpers: availability (skip or fail), unique names, cleanup in Drop.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The docker CLI, known to reach an engine.
pub struct Docker {
    pub base_image: String,
}

impl Docker {
    /// `Some` when an engine answers; `None` (test skipped) on a machine without one, unless
    /// `PIPE_REQUIRE_DOCKER=1`, which turns its absence into a failure.
    pub fn require() -> Option<Docker> {
        let base_image = std::env::var("PIPE_TEST_BASE_IMAGE").unwrap_or_else(|_| "pipe-busybox:latest".into());
        let required = std::env::var("PIPE_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
        let answers = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !answers {
            assert!(!required, "PIPE_REQUIRE_DOCKER=1 but no Docker engine answers; run scripts/test-deps.sh");
            eprintln!("skipped: no Docker engine answers (scripts/test-deps.sh starts one)");
            return None;
        }
        let has_base = Command::new("docker")
            .args(["image", "inspect", &base_image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(has_base, "base image `{base_image}` is missing; scripts/test-deps.sh builds it");
        Some(Docker { base_image })
    }

    /// Runs docker and returns stdout; panics with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = Command::new("docker").args(args).stdin(Stdio::null()).output().expect("run docker");
        assert!(out.status.success(), "docker {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (up to a minute) until a running container matches the `docker ps` filter.
    pub fn wait_for_running(&self, filter: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.ok(&["ps", "--quiet", "--filter", filter]).trim().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no running container matches `{filter}`");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// An image name removed (with its containers) when the guard drops.
    pub fn image(&self, name: &str) -> ImageGuard {
        ImageGuard { name: format!("pipe-test/{name}:latest") }
    }
}

/// Removes its image on drop, even when the test panicked.
pub struct ImageGuard {
    pub name: String,
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "--force", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A name unique to this test process and call: `pipe-test-<label>-<pid>-<n>`.
pub fn unique_name(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("pipe-test-{label}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Removes every image carrying `pipe.project=<project>` (every tag, local and registry) on drop.
pub struct ProjectImages {
    pub project: String,
}

impl Drop for ProjectImages {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["image", "ls", "--quiet", "--filter", &format!("label=pipe.project={}", self.project)])
            .output();
        if let Ok(out) = out {
            let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            ids.sort();
            ids.dedup();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["image", "rm", "--force"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Debian's `docker-registry` on 127.0.0.1 with htpasswd auth; killed on drop.
pub struct Registry {
    child: std::process::Child,
    pub port: u16,
    pub user: String,
    pub password: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd =
            Command::new("htpasswd").args(["-Bbn", user, password]).output().expect("htpasswd (apache2-utils)");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        for _ in 0..5 {
            let port = super::free_port();
            let config = format!(
                r#"version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {root}/data
http:
  addr: 127.0.0.1:{port}
auth:
  htpasswd:
    realm: pipe-test
    path: {root}/htpasswd
"#,
                root = dir.path().display()
            );
            std::fs::write(dir.path().join("config.yml"), config).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry { child, port, user: user.into(), password: password.into(), _dir: dir };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its configuration file (storage, address, htpasswd): another `docker-registry` serving it
    /// answers with the same images.
    pub fn config_file(&self) -> std::path::PathBuf {
        self._dir.path().join("config.yml")
    }

    /// GET on the registry API with the test credentials: (status, headers, body).
    pub fn get(&self, path: &str, accept: Option<&str>) -> (u16, String, String) {
        let mut args = vec!["-s".to_string(), "-i".into(), "-u".into(), format!("{}:{}", self.user, self.password)];
        if let Some(a) = accept {
            args.push("-H".into());
            args.push(format!("Accept: {a}"));
        }
        args.push(format!("http://{}{path}", self.host()));
        let out = Command::new("curl").args(&args).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    /// The tags of a repository, empty when it does not exist.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let (status, _, body) = self.get(&format!("/v2/{repo}/tags/list"), None);
        if status != 200 {
            return Vec::new();
        }
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut tags: Vec<String> = doc["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// The manifest digest the registry reports for a tag.
    pub fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        let (status, head, _) = self
            .get(&format!("/v2/{repo}/manifests/{tag}"), Some("application/vnd.docker.distribution.manifest.v2+json"));
        (status == 200).then_some(())?;
        head.lines()
            .find_map(|l| {
                l.strip_prefix("Docker-Content-Digest: ").or_else(|| l.strip_prefix("docker-content-digest: "))
            })
            .map(|d| d.trim().to_string())
    }
}

impl Registry {
    /// Stops the registry: its port refuses connections until [`Registry::start_again`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same registry (same port, same data) again.
    pub fn start_again(&mut self) {
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self._dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "docker-registry did not start again");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `file` (and its directory): a compose file of one service `web` running the deployed
/// image's busybox httpd over `/www`, published on 127.0.0.1:`port`.
pub fn write_web_compose(file: &std::path::Path, port: u16) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let text = format!(
        "version: \"2.4\"\nservices:\n  web:\n    image: ${{PIPE_IMAGE}}:${{PIPE_TAG}}\n    init: true\n    \
         command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    ports: [\"127.0.0.1:{port}:8080\"]\n"
    );
    std::fs::write(file, text).unwrap();
}

/// Removes a compose project's containers and networks by label on drop. Works even when the
/// compose file is already gone (a test's temp dir drops first).
pub struct ComposeProject {
    pub name: String,
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let label = format!("label=com.docker.compose.project={}", self.name);
        for (list, remove) in [
            (["ps", "--all", "--quiet"], ["rm", "--force", "--volumes"]),
            (["network", "ls", "--quiet"], ["network", "rm", ""]),
        ] {
            let Ok(out) = Command::new("docker").args(list).args(["--filter", &label]).output() else { continue };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
            if ids.is_empty() {
                continue;
            }
            let remove: Vec<&str> = remove.iter().copied().filter(|a| !a.is_empty()).collect();
            let _ =
                Command::new("docker").args(&remove).args(&ids).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
}

/// Removes a container by name on drop.
pub struct Container {
    pub name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "--force", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A swarm stack, removed on drop, waiting for its containers to go (so the test's images can).
pub struct Stack(pub String);

impl Stack {
    /// The image the stack's `web` service runs, as the swarm has it.
    pub fn web_image(&self, docker: &Docker) -> String {
        docker.ok(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            &format!("{}_web", self.0),
        ])
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ =
            Command::new("docker").args(["stack", "rm", &self.0]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let label = format!("label=com.docker.stack.namespace={}", self.0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let left = Command::new("docker").args(["ps", "--all", "--quiet", "--filter", &label]).output();
            if left.map(|o| o.stdout.is_empty()).unwrap_or(true) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// Removes every local tag of each image repository in `names` on drop, and the digests a push
/// left of it.
pub struct ImageCleanup {
    pub names: Vec<String>,
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let out = std::process::Command::new("docker")
                .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", name])
                .output();
            if let Ok(out) = out {
                for tag in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = std::process::Command::new("docker")
                        .args(["image", "rm", "--force", tag])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
            // What a push leaves: the repository's digests, without a tag.
            let out = std::process::Command::new("docker")
                .args(["image", "ls", "--digests", "--format", "{{.Repository}}@{{.Digest}}", name])
                .output();
            if let Ok(out) = out {
                for reference in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.ends_with("<none>")) {
                    let _ = std::process::Command::new("docker")
                        .args(["image", "rm", "--force", reference])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
    }
}
