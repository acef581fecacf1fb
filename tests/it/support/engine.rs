//! A fresh Docker engine: a second `dockerd` with its own data root, exec root and socket, in a
//! network namespace of its own (never the shared daemon, never restarted), with nothing in it
//! but the base image. The test registry answers inside that namespace on the same address as
//! outside (a second `docker-registry` over the same storage), so one pipeline file names it for
//! both engines. Stopped and removed on drop, even when the test panicked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::docker::{Registry, unique_name};

pub struct FreshEngine {
    netns: String,
    dockerd: Child,
    registry: Child,
    dir: tempfile::TempDir,
}

impl FreshEngine {
    /// Starts the engine with `base_image` loaded from the shared one, and `registry` reachable.
    pub fn start(base_image: &str, registry: &Registry) -> FreshEngine {
        // A netns name is a file name under /var/run/netns; keep it short and unique.
        let netns = unique_name("fe").replace("pipe-test-", "pipefe-");
        let ok = Command::new("ip").args(["netns", "add", &netns]).status().expect("ip netns add");
        assert!(ok.success(), "ip netns add {netns}");
        let dir = tempfile::Builder::new().prefix("pipe-fe-").tempdir().expect("temp dir");
        let netns_path = format!("--net=/var/run/netns/{netns}");
        let in_ns = |program: &str| {
            let mut cmd = Command::new("nsenter");
            cmd.arg(&netns_path).arg(program);
            cmd
        };
        let lo = in_ns("ip").args(["link", "set", "lo", "up"]).status().expect("nsenter ip");
        assert!(lo.success());
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let dockerd = in_ns("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.path().join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let registry_child = in_ns("docker-registry")
            .arg("serve")
            .arg(registry.config_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let mut engine = FreshEngine { netns, dockerd, registry: registry_child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.docker().args(["version"]).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success()
        {
            assert!(
                Instant::now() < deadline && engine.dockerd.try_wait().unwrap().is_none(),
                "the fresh dockerd did not start:\n{}",
                std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The base image, as a fresh host would get it: saved from the shared engine, loaded here.
        let mut save = Command::new("docker").args(["save", base_image]).stdout(Stdio::piped()).spawn().unwrap();
        let saved = save.stdout.take().unwrap();
        let loaded = engine.docker().arg("load").stdin(saved).stdout(Stdio::null()).status().unwrap();
        assert!(save.wait().unwrap().success() && loaded.success(), "docker save | docker load into the fresh engine");
        engine
    }

    /// `DOCKER_HOST` of this engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// The docker CLI pointed at this engine.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(self.host());
        cmd
    }

    /// Runs docker against this engine and returns stdout; panics with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker().args(args).stdin(Stdio::null()).output().expect("docker");
        assert!(out.status.success(), "docker {args:?} on the fresh engine: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for FreshEngine {
    fn drop(&mut self) {
        let _ = self.registry.kill();
        let _ = self.registry.wait();
        // SIGTERM: dockerd stops its containerd and unmounts its layers.
        let _ = Command::new("kill").arg(self.dockerd.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.dockerd.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.dockerd.kill();
        let _ = self.dockerd.wait();
        // Whatever is still mounted under its directory (a killed daemon's layers).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.path().to_string_lossy().into_owned();
            let mut points: Vec<&str> =
                mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|p| p.starts_with(&root)).collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for point in points {
                let _ = Command::new("umount").args(["-l", point]).stderr(Stdio::null()).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}
