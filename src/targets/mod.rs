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
use crate::trust::redact::Redactor;

pub(crate) mod answer;
pub(crate) mod beside;
mod guard;
pub(crate) use guard::guard;
mod env;
pub(crate) mod ingress;
pub(crate) mod pinned;
mod reloaded;
pub(crate) mod rollout;
pub(crate) mod ssh;
pub(crate) mod swarm;
pub(crate) mod webhook;

pub(crate) use env::{confined, interpolation_warnings, resolve_env};

/// The local target kinds a deploy entry or a `pipe serve` hook can run.
#[derive(Clone, Copy)]
pub(crate) struct Kinds<'a> {
    pub compose: Option<&'a ComposeTarget>,
    pub swarm: Option<&'a SwarmTarget>,
    pub command: Option<&'a CommandTarget>,
}

/// The commands of a compose, swarm or command target, each run with `env` (the `PIPE_*`
/// variables and the target's own) and `HOST_ENV` (`env.rs`) alone; `pull` first pulls the compose
/// services (the image comes from a registry).
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
        cmds.push(confined(Cmd::from_argv(&argv), &env));
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
            // Hosts over SSH switch their own nginx (`ssh.upstreams`), checked by validation.
            if deploy.compose.is_none() || deploy.ssh.is_some() {
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
    for (name, hook) in &config.serve.hooks {
        if hook.compose.is_none() {
            continue;
        }
        let fix = match (hook.ingress.is_empty(), config.ingress.upstreams.is_none()) {
            (false, false) => continue,
            (true, true) => {
                "route its services through this host's ingress: `ingress = { SERVICE = PORT }` on the hook and `upstreams = \"/etc/nginx/pipe\"` in `[ingress]`"
            }
            (true, false) => {
                "route its services through this host's ingress: `ingress = { SERVICE = PORT }` on the hook"
            }
            (false, true) => "let pipe switch this host's ingress: `upstreams = \"/etc/nginx/pipe\"` in `[ingress]`",
        };
        warnings.push(format!(
            "hook `{name}`: every deploy is an outage (compose stops the old container before the new one answers)\nhint: {fix}, then `pipe generate nginx` again"
        ));
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
    /// The secrets among `env`, masked in what its commands print.
    pub redactor: Redactor,
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
            redactor: Redactor::default(),
        })
    }

    /// The same project, masking these secrets in what its commands print.
    pub(crate) fn masking(mut self, redactor: Redactor) -> Compose {
        self.redactor = redactor;
        self
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
        Compose { program, project, file, dir, env, services, clean, redactor: Redactor::default() }
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
        let cmd = Cmd::from_argv(&argv).dir(self.dir.clone());
        if self.clean.is_some() {
            let cmd = cmd.env_clear_but(&ENGINE_ENV).env("LANG", "C.UTF-8");
            return self.env.iter().fold(cmd, |cmd, (k, v)| cmd.env(k, v));
        }
        confined(cmd, &self.env)
    }
}

/// Waits until every service of the stack runs all its replicas and no update of this deploy
/// (one that started at `since` or later) is still going. A swarm that rolled an update back
/// itself (`failure_action: rollback`) has converged on the old release: that is this deploy's
/// failure, with the swarm's own words, never a success. Asked of the engine the stack was
/// deployed to: the docker CLI runs in the target's environment `env` (its `DOCKER_HOST` may
/// name a swarm manager elsewhere).
pub(crate) fn wait_for_stack(
    out: &Output,
    docker: &Docker,
    stack: &str,
    env: &[(String, String)],
    since: jiff::Timestamp,
    deadline: Instant,
) -> anyhow::Result<()> {
    let cmd = docker.cmd().args(["stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}"]);
    let cmd = confined(cmd, env);
    let mut last = String::new();
    // Why the swarm rolls an update back is said only while it does (`rollback_started`); once
    // done its message is `rollback completed`.
    let mut causes: Vec<(String, String)> = Vec::new();
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
        let names: Vec<&str> = last.lines().filter_map(|l| l.split_whitespace().next()).collect();
        let updates = if names.is_empty() { Vec::new() } else { update_states(out, docker, &names, env, since)? };
        if let Some(update) = updates.iter().find(|u| u.state.starts_with("rollback") || u.state == "paused") {
            let cause = causes.iter().find(|(service, _)| *service == update.service).map(|(_, m)| m.clone());
            if update.state == "rollback_started" {
                if cause.is_none() && !update.message.is_empty() {
                    causes.push((update.service.clone(), update.message.clone()));
                }
            } else {
                // The swarm's reason, the failed task's node and error, then how the update ended.
                let mut said: Vec<String> = cause.into_iter().collect();
                let task = said.iter().chain([&update.message]).find_map(|m| swarm::failed_task(m)).map(str::to_string);
                said.extend(task.and_then(|id| swarm::task_failure(out, docker, env, &id)));
                said.push(if update.message.is_empty() { "no message".into() } else { update.message.clone() });
                bail!(
                    "the swarm {} the update of `{}` ({}): {}",
                    if update.state == "paused" { "paused" } else { "rolled back" },
                    update.service,
                    update.state,
                    said.join("; ")
                );
            }
        } else if converged && updates.iter().all(|u| u.state != "updating") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("stack `{stack}` did not converge in time:\n{}", last.trim())
}

/// A service's update as the swarm reports it (`UpdateStatus`), for an update started at or
/// after `since`: `updating`, `completed`, `paused`, `rollback_started`, `rollback_paused` or
/// `rollback_completed`.
#[derive(Debug, PartialEq)]
pub(crate) struct UpdateState {
    pub service: String,
    pub state: String,
    pub message: String,
}

fn update_states(
    out: &Output,
    docker: &Docker,
    services: &[&str],
    env: &[(String, String)],
    since: jiff::Timestamp,
) -> anyhow::Result<Vec<UpdateState>> {
    let format = "{{.Spec.Name}}\t{{if .UpdateStatus}}{{.UpdateStatus.State}}\t{{.UpdateStatus.StartedAt}}\t{{.UpdateStatus.Message}}{{end}}";
    let inspect = confined(docker.cmd().args(["service", "inspect", "--format", format]).args(services), env);
    let text = exec::capture(out, &inspect, Duration::from_secs(30))?;
    Ok(parse_update_states(&text, since))
}

/// Parses `docker service inspect` lines of name, state, start and message (tab-separated);
/// updates that started before `since` (an earlier deploy's) are left out.
pub(crate) fn parse_update_states(text: &str, since: jiff::Timestamp) -> Vec<UpdateState> {
    // `since` is the manager's own clock (`swarm::engine_now`), else ours; a second of slack
    // covers the rounding of either.
    let since = since - jiff::SignedDuration::from_secs(1);
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, '\t');
            let service = parts.next()?.trim().to_string();
            let state = parts.next()?.trim().to_string();
            let started = parts.next().unwrap_or("").trim();
            let message = parts.next().unwrap_or("").trim().to_string();
            if state.is_empty() {
                return None;
            }
            // A start that cannot be read counts as this deploy's: never as no update at all.
            let earlier = go_time(started).is_some_and(|t| t < since);
            (!earlier).then_some(UpdateState { service, state, message })
        })
        .collect()
}

/// Go's default time format, `2026-12-07 08:20:01.123456789 +0000 UTC` (any offset).
fn go_time(text: &str) -> Option<jiff::Timestamp> {
    let mut words = text.split_whitespace();
    let (date, time, offset) = (words.next()?, words.next()?, words.next()?);
    let (sign, digits) = offset.split_at(1);
    if !matches!(sign, "+" | "-") || digits.len() != 4 {
        return None;
    }
    format!("{date}T{time}{sign}{}:{}", &digits[..2], &digits[2..]).parse().ok()
}

/// Polls an HTTP URL until it answers 2xx, or a container until it is healthy (or running, when
/// it has no health check), within the check's own timeout and the deploy's `deadline`.
/// `last` gets the check's last answer, its body masked with `redactor`.
pub(crate) fn check_health(
    out: &Output,
    docker: &Docker,
    health: &Health,
    deadline: Instant,
    redactor: &Redactor,
    last_answer: &mut Option<answer::HealthAnswer>,
) -> anyhow::Result<()> {
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
        let shown = crate::git::redact_url(url);
        loop {
            crate::signals::check()?;
            match client.get(url).send() {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    last = crate::http::unfollowed(&resp).unwrap_or_else(|| format!("HTTP {}", resp.status().as_u16()));
                    *last_answer = Some(answer::HealthAnswer::answered(&shown, resp, redactor));
                }
                Err(e) => {
                    last = crate::secret::http_cause(&e);
                    *last_answer = Some(answer::HealthAnswer::failed(&shown, &last, redactor));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
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
                    let said = format!("container {last}");
                    *last_answer =
                        Some(answer::HealthAnswer::failed(&format!("container `{container}`"), &said, redactor));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swarm_update_of_this_deploy_is_read_and_an_earlier_one_is_not() {
        let since: jiff::Timestamp = "2026-12-07T08:20:00Z".parse().unwrap();
        let text = "app_web\trollback_completed\t2026-12-07 08:20:03.5 +0000 UTC\trollback completed\n\
                    app_worker\tcompleted\t2026-12-07 07:00:00 +0000 UTC\tupdate completed\n\
                    app_db\t\n\
                    app_api\tupdating\t<nil>\t\n\
                    app_cron\tcompleted\t2026-12-07 09:20:00.5 +0100 CET\tupdate completed\n";
        let states = parse_update_states(text, since);
        let shown: Vec<(&str, &str)> = states.iter().map(|u| (u.service.as_str(), u.state.as_str())).collect();
        // An unreadable start is this deploy's; +0100 is an hour ahead of UTC (08:20:00.5Z).
        assert_eq!(shown, [("app_web", "rollback_completed"), ("app_api", "updating"), ("app_cron", "completed")]);
        assert_eq!(states[0].message, "rollback completed");
    }
}
