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
