//! The Docker client as pipe runs it: the CLI and its config directory, builder and compose
//! detection, and the one classification of "the engine does not answer" every stage uses.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::docker::Builders;
use crate::error::{ProcessFailed, ToolUnavailable};
use crate::exec::{Cmd, Finished};
use crate::output::Output;

/// Build logs are capped at this size; the rest of a runaway build's output is dropped.
pub(crate) const LOG_CAP: u64 = 16 * 1024 * 1024;

/// The docker CLI as pipe runs it: `PIPE_DOCKER` (default `docker`), with pipe's own
/// `DOCKER_CONFIG` for CI runs so registry logins never mix with a person's.
#[derive(Clone)]
pub(crate) struct Docker {
    pub program: OsString,
    pub config_dir: Option<PathBuf>,
    /// Another engine than the environment's (`DOCKER_HOST`): a host's, through its SSH tunnel.
    pub host: Option<String>,
}

impl Docker {
    pub(crate) fn new(config_dir: Option<PathBuf>) -> Docker {
        let program = std::env::var_os("PIPE_DOCKER").filter(|p| !p.is_empty()).unwrap_or_else(|| "docker".into());
        Docker { program, config_dir, host: None }
    }

    pub(crate) fn cmd(&self) -> Cmd {
        let cmd = Cmd::new(self.program.clone());
        let cmd = match &self.host {
            Some(host) => cmd.env("DOCKER_HOST", host).env("DOCKER_CONTEXT", ""),
            None => cmd,
        };
        match &self.config_dir {
            Some(dir) => cmd.env("DOCKER_CONFIG", dir),
            None => cmd,
        }
    }

    /// The same CLI talking to the engine at `host` (`unix:///…`).
    pub(crate) fn on(&self, host: String) -> Docker {
        Docker { host: Some(host), ..self.clone() }
    }

    /// Whether `cmd` runs this docker CLI or compose (v1 `docker-compose` or `PIPE_COMPOSE`).
    pub(crate) fn runs(&self, cmd: &Cmd) -> bool {
        let argv = cmd.argv();
        let Some(program) = argv.first() else { return false };
        let name = std::path::Path::new(program).file_name().unwrap_or_default();
        *program == self.program
            || name == "docker-compose"
            || std::env::var_os("PIPE_COMPOSE").is_some_and(|c| !c.is_empty() && c == *program)
    }

    /// The builders this docker CLI has: BuildKit through the buildx plugin (looked for on
    /// disk, no process), BuildKit built into a CLI before 23 (`docker --version`, once per
    /// process), and `PIPE_BUILDER=legacy|buildkit` as the operator's choice.
    pub(crate) fn builders(&self, out: &Output) -> Builders {
        let forced = match std::env::var("PIPE_BUILDER").as_deref() {
            Ok("legacy") => Some(false),
            Ok("buildkit") => Some(true),
            _ => None,
        };
        let user_dir = match &self.config_dir {
            Some(dir) => Some(dir.join("cli-plugins")),
            None => std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
                .map(|d| d.join("cli-plugins")),
        };
        let system = [
            "/usr/local/lib/docker/cli-plugins",
            "/usr/local/libexec/docker/cli-plugins",
            "/usr/lib/docker/cli-plugins",
            "/usr/libexec/docker/cli-plugins",
        ];
        let buildx =
            user_dir.into_iter().chain(system.iter().map(PathBuf::from)).any(|d| d.join("docker-buildx").is_file());
        let builtin = !buildx && self.builtin_buildkit(out);
        Builders { buildx, builtin, forced }
    }

    /// Whether the CLI carries BuildKit itself: every CLI from 18.09 to 20.10 does, and
    /// `DOCKER_BUILDKIT=1` turns it on; from 23 on BuildKit is the buildx plugin alone.
    fn builtin_buildkit(&self, out: &Output) -> bool {
        static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FOUND.get_or_init(|| {
            let version = Cmd::new(self.program.clone()).arg("--version");
            match crate::exec::capture(out, &version, Duration::from_secs(10)) {
                Ok(text) => builtin_buildkit(&text),
                Err(_) => false,
            }
        })
    }

    /// The compose command: `PIPE_COMPOSE`, else `docker compose` (v2), else `docker-compose` (v1).
    /// Detected once per process: every test-services and deploy step of a run shares it.
    pub(crate) fn compose(&self, out: &Output) -> anyhow::Result<Vec<OsString>> {
        static DETECTED: std::sync::OnceLock<Option<Vec<OsString>>> = std::sync::OnceLock::new();
        let detected = DETECTED.get_or_init(|| {
            if let Some(program) = std::env::var_os("PIPE_COMPOSE").filter(|p| !p.is_empty()) {
                return Some(vec![program]);
            }
            let v2 = self.cmd().args(["compose", "version"]);
            if crate::exec::capture(out, &v2, Duration::from_secs(20)).is_ok() {
                return Some(vec![self.program.clone(), "compose".into()]);
            }
            crate::exec::available("docker-compose".as_ref()).then(|| vec!["docker-compose".into()])
        });
        detected.clone().ok_or_else(|| {
            ToolUnavailable {
                tool: "docker compose".into(),
                reason: "neither `docker compose` nor `docker-compose` works".into(),
            }
            .into()
        })
    }
}

/// Does docker's output say the engine is unreachable (rather than that the work failed)?
pub(crate) fn engine_down(output: &str) -> bool {
    ["Cannot connect to the Docker daemon", "Is the docker daemon running", "error during connect"]
        .iter()
        .any(|needle| output.contains(needle))
}

/// A docker command failed because the engine went away: its output says so, or the engine no
/// longer answers a `docker version` (a daemon stopping mid-build leaves only `unexpected EOF`).
/// Asked only after a failure, so a passing stage never pays for the probe.
pub(crate) fn engine_gone(docker: &Docker, out: &Output, finished: &Finished) -> bool {
    if finished.success() || finished.interrupted || finished.timed_out {
        return false;
    }
    if engine_down(&finished.tail) {
        return true;
    }
    let probe = docker.cmd().args(["version", "--format", "{{.Server.Version}}"]);
    crate::exec::capture(out, &probe, std::time::Duration::from_secs(10)).is_err()
}

/// The error for an unreachable engine: exit 4, and the caller records nothing, so the next
/// tick retries the stage.
pub(crate) fn engine_unavailable(docker: &Docker, output: &str) -> anyhow::Error {
    let line = output.lines().find(|l| engine_down(l)).or_else(|| output.lines().last()).unwrap_or("no answer");
    let line = line.trim().to_string();
    ToolUnavailable {
        tool: docker.program.to_string_lossy().into_owned(),
        reason: format!("the Docker engine does not answer: {line}"),
    }
    .into()
}

/// Maps a failed docker command whose output says the engine is down to [`engine_unavailable`].
pub(crate) fn classify(docker: &Docker, err: anyhow::Error) -> anyhow::Error {
    let down = err.chain().any(|c| c.downcast_ref::<ProcessFailed>().is_some_and(|p| engine_down(&p.output_tail)));
    if down { engine_unavailable(docker, &format!("{err:#}")) } else { err }
}

/// `Docker version 20.10.24+dfsg1, build 297e128`: a CLI older than 23 has BuildKit built in.
fn builtin_buildkit(version: &str) -> bool {
    let number = version.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit())).unwrap_or("");
    let mut parts = number.split('.').map(|p| p.trim_end_matches(',').parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (18, 9) && major < 23,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cli_before_23_has_buildkit_built_in() {
        assert!(builtin_buildkit("Docker version 20.10.24+dfsg1, build 297e128"));
        assert!(builtin_buildkit("Docker version 18.09.1, build 4c52b90"));
        assert!(!builtin_buildkit("Docker version 28.2.2, build e6534b4"));
        assert!(!builtin_buildkit("Docker version 17.12.0-ce, build c97c6d6"));
        assert!(!builtin_buildkit("podman version 4.3.1"));
    }
}
