//! Deploy targets: the commands a compose, swarm or command target runs, and how a deploy is
//! judged done (a swarm stack converged, a health URL or container healthy).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::config::{CommandTarget, ComposeTarget, Health, SwarmTarget};
use crate::docker::client::Docker;
use crate::exec::{self, Cmd};
use crate::output::Output;

pub(crate) mod beside;
pub(crate) mod ingress;
pub(crate) mod swarm;
pub(crate) mod webhook;

/// The local target kinds a deploy entry or a `pipe serve` hook can run.
#[derive(Clone, Copy)]
pub(crate) struct Kinds<'a> {
    pub compose: Option<&'a ComposeTarget>,
    pub swarm: Option<&'a SwarmTarget>,
    pub command: Option<&'a CommandTarget>,
}

/// The commands of a compose, swarm or command target with `env` exported; `pull` first pulls
/// the compose services (the image comes from a registry).
pub(crate) fn target_commands(
    out: &Output,
    docker: &Docker,
    kinds: Kinds<'_>,
    default_project: &str,
    pull: bool,
    mut env: Vec<(String, String)>,
) -> anyhow::Result<Vec<Cmd>> {
    if let Some(dir) = &docker.config_dir {
        // compose pulls with pipe's registry logins, like the docker CLI.
        env.push(("DOCKER_CONFIG".into(), dir.display().to_string()));
    }
    let with_env = |mut cmd: Cmd| {
        for (k, v) in &env {
            cmd = cmd.env(k, v);
        }
        cmd
    };
    let mut cmds = Vec::new();
    if let Some(compose) = kinds.compose {
        let compose = Compose::new(out, docker, compose, default_project, env.clone())?;
        if pull {
            cmds.push(compose.cmd(&["pull"], &compose.services));
        }
        cmds.push(compose.cmd(&["up", "--detach", "--no-build", "--remove-orphans"], &compose.services));
    }
    if let Some(target) = kinds.swarm {
        cmds.push(swarm::deploy_cmd(docker, target, None, &env));
    }
    if let Some(command) = kinds.command {
        let argv: Vec<OsString> = match (&command.argv, &command.shell) {
            (Some(argv), _) => argv.iter().map(OsString::from).collect(),
            (None, Some(shell)) => vec!["sh".into(), "-c".into(), shell.into()],
            (None, None) => Vec::new(),
        };
        cmds.push(with_env(Cmd::from_argv(&argv)));
    }
    Ok(cmds)
}

/// What `pipe check` says about deploys that cannot be zero-downtime: a compose target not
/// switched through the ingress stops its old container before the new one answers.
pub(crate) fn outage_warnings(config: &crate::config::Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for (project, p) in &config.projects {
        for deploy in &p.deploy {
            let deploy = deploy.get_ref();
            if deploy.compose.is_none() {
                continue;
            }
            let name = deploy.display_name();
            let fix = match (deploy.ingress.is_empty(), config.ingress.upstreams.is_none()) {
                (false, false) => continue,
                (true, true) => {
                    "route its services through the ingress: `ingress = { SERVICE = PORT }` on the target and `upstreams = \"/etc/nginx/pipe\"` in `[ingress]`"
                }
                (true, false) => "route its services through the ingress: `ingress = { SERVICE = PORT }` on the target",
                (false, true) => "let pipe switch the ingress: `upstreams = \"/etc/nginx/pipe\"` in `[ingress]`",
            };
            warnings.push(format!(
                "project `{project}` target `{name}`: every deploy is an outage (compose stops the old container before the new one answers)\nhint: {fix}, then `pipe generate nginx` again"
            ));
        }
    }
    warnings
}

/// A compose project as pipe runs it: the compose program, project name, file, the file's
/// directory to run in, and the deploy's environment.
pub(crate) struct Compose {
    program: Vec<OsString>,
    pub project: String,
    file: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    pub services: Vec<String>,
    /// Only `env` and the engine's variables reach compose, none of pipe's own, and this empty
    /// file is its `--env-file` (a preview of an untrusted pull request).
    clean: Option<PathBuf>,
}

/// The variables compose needs from pipe's environment to reach the engine.
pub(crate) const ENGINE_ENV: [&str; 4] = ["PATH", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"];

impl Compose {
    pub(crate) fn new(
        out: &Output,
        docker: &Docker,
        target: &ComposeTarget,
        default_project: &str,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Compose> {
        Ok(Compose {
            program: docker.compose(out)?,
            project: target.project.clone().unwrap_or_else(|| default_project.to_string()),
            file: target.file.clone(),
            dir: target.file.parent().unwrap_or(Path::new("/")).to_path_buf(),
            env,
            services: target.services.clone(),
            clean: None,
        })
    }

    /// A compose project on a file pipe wrote, run in that file's directory; with `clean` (an
    /// empty file of pipe's), in an environment of `env` and the engine's variables only, with
    /// that file instead of a `.env` beside the compose file.
    pub(crate) fn own(
        program: Vec<OsString>,
        project: String,
        file: PathBuf,
        env: Vec<(String, String)>,
        services: Vec<String>,
        clean: Option<PathBuf>,
    ) -> Compose {
        let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        Compose { program, project, file, dir, env, services, clean }
    }

    /// `compose --project-name P --file F VERB… SERVICES…` in the file's directory.
    pub(crate) fn cmd<S: AsRef<str>>(&self, verb: &[&str], services: &[S]) -> Cmd {
        let mut argv: Vec<OsString> = self.program.clone();
        argv.extend(["--project-name".into(), self.project.clone().into(), "--file".into(), self.file.clone().into()]);
        if let Some(empty) = &self.clean {
            // Compose reads a `.env` beside the (first) file for interpolation unless told
            // otherwise: the target's `.env` is for its branches, not for untrusted code.
            argv.extend(["--env-file".into(), empty.clone().into()]);
        }
        argv.extend(verb.iter().map(OsString::from));
        argv.extend(services.iter().map(|s| OsString::from(s.as_ref())));
        let mut cmd = Cmd::from_argv(&argv).dir(self.dir.clone());
        if self.clean.is_some() {
            cmd = cmd.env_clear().env("LANG", "C.UTF-8");
            for key in ENGINE_ENV {
                if let Some(value) = std::env::var_os(key) {
                    cmd = cmd.env(key, value);
                }
            }
        }
        for (k, v) in &self.env {
            cmd = cmd.env(k, v);
        }
        cmd
    }
}

/// Waits until every service of the stack runs all its replicas.
pub(crate) fn wait_for_stack(out: &Output, docker: &Docker, stack: &str, deadline: Instant) -> anyhow::Result<()> {
    let cmd = docker.cmd().args(["stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}"]);
    let mut last = String::new();
    while Instant::now() < deadline {
        crate::signals::check()?;
        last = exec::capture(out, &cmd, Duration::from_secs(30))?;
        let converged = !last.trim().is_empty()
            && last.lines().all(|line| {
                let replicas = line.split_whitespace().nth(1).unwrap_or("");
                let (have, want) = replicas.split_once('/').unwrap_or(("0", "1"));
                let want = want.split_whitespace().next().unwrap_or(want);
                have == want && want != "0"
            });
        if converged {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("stack `{stack}` did not converge in time:\n{}", last.trim())
}

/// Polls an HTTP URL until it answers 2xx, or a container until it is healthy (or running, when
/// it has no health check), within the check's own timeout and the deploy's `deadline`.
pub(crate) fn check_health(out: &Output, docker: &Docker, health: &Health, deadline: Instant) -> anyhow::Result<()> {
    let start = Instant::now();
    let deadline = deadline.min(start + health.timeout.map_or(Duration::from_secs(60), |t| t.0));
    let timeout = deadline.saturating_duration_since(start);
    let mut last;
    if let Some(url) = &health.url {
        let client = crate::http::builder(crate::http::Redirects::SameOrigin)
            .timeout(Duration::from_secs(5))
            .build()
            .context("failed to set up an HTTP client")?;
        // At least one probe, even when the deploy used up its time.
        loop {
            crate::signals::check()?;
            match client.get(url).send() {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    last = crate::http::unfollowed(&resp).unwrap_or_else(|| format!("HTTP {}", resp.status().as_u16()))
                }
                Err(e) => last = crate::secret::http_cause(&e),
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let shown = crate::git::redact_url(url);
        bail!("health check `{shown}` did not answer 2xx within {}s (last: {last})", timeout.as_secs());
    }
    if let Some(container) = &health.container {
        let format = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}";
        let cmd = docker.cmd().args(["inspect", "--format", format, container]);
        loop {
            crate::signals::check()?;
            match exec::capture(out, &cmd, Duration::from_secs(30)) {
                Ok(status) => {
                    last = status.trim().to_string();
                    match last.as_str() {
                        "healthy" | "running" => return Ok(()),
                        "unhealthy" | "exited" | "dead" => bail!("container `{container}` is {last}"),
                        _ => {}
                    }
                }
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("container `{container}` was not healthy within {}s (last: {last})", timeout.as_secs());
    }
    Ok(())
}
