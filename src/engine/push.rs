//! The push stage: tag the tested image for each registry its branch deploys through, log in
//! (password on stdin, ECR by `aws ecr get-login-password`), push, and record the digest.
//! A dry run prints the very commands the push runs.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::{Job, RefFiles};
use crate::config::{Config, Project, Registry, SecretRef};
use crate::docker;
use crate::docker::client::{self as client, Docker};
use crate::error::{Interrupted, RemoteUnavailable, StageFailed, StateError, ToolUnavailable, Usage};
use crate::exec::{self, Cmd};
use crate::model::{Outcome, Stage};
use crate::output::Output;
use crate::refs;
use crate::secret;
use crate::state::{self, Run, StageRun};

/// Pushes the ref's latest built image to its branch's registries and records the digests.
/// Refuses an image whose tests neither passed nor were skipped, unless `force`.
pub(crate) fn push(job: &Job<'_>, files: &mut RefFiles, force: bool, dry_run: bool) -> anyhow::Result<()> {
    let (out, name) = (&job.out, job.name);
    let refname = job.refname.as_str();
    let registries = registries_for(job.config, job.project, refname);
    if registries.is_empty() {
        out.info(format!("{name}: no deploy entry pushes {}; nothing to push", refs::display(refname)));
        return Ok(());
    }
    let Some(run) = super::latest_built(&files.history, None).cloned() else {
        return Err(Usage(format!("no image was built for {name} {} yet", refs::display(refname))).into());
    };
    if let Some(why) = super::gate::refuse_push(&run)
        && !force
    {
        return Err(StageFailed(format!(
            "refusing to push {}:{}: {why}\nhint: run `pipe test {name} {}`, or pass --force",
            run.image,
            docker::commit_tag(&run.commit),
            refs::display(refname)
        ))
        .into());
    }
    let docker = job.docker();
    if dry_run {
        for (reg_name, registry) in &registries {
            let plan = PushPlan::new(&docker, reg_name, registry, &run);
            for cmd in plan.login.commands().into_iter().chain(plan.steps.iter().flat_map(|(_, tag, push)| [tag, push]))
            {
                crate::output::println(cmd)?;
            }
        }
        return Ok(());
    }
    create_private_dir(&state::docker_config_dir(job.state_path))?;
    let deadline = Instant::now() + job.timeout(Stage::Push);
    let started = crate::clock::now();
    let clock = Instant::now();
    let mut failure = None;
    for (reg_name, registry) in &registries {
        let plan = PushPlan::new(&docker, reg_name, registry, &run);
        match plan.run(out, &docker, &run, deadline) {
            Ok(digest) => {
                out.info(format!("{name}: pushed {}/{} ({digest})", registry.url, run.image));
                if let Some(r) = files.run_mut(run.number) {
                    r.digests.insert(reg_name.to_string(), digest);
                }
            }
            Err(err) => {
                let err = unreachable_registry(client::classify(&docker, err), reg_name, registry);
                if err.is::<Interrupted>() {
                    let record = StageRun::new(Stage::Push, Outcome::Interrupted, started, clock.elapsed(), None);
                    job.record(files, run.number, record)?;
                    return Err(err);
                }
                if err.is::<ToolUnavailable>() || err.is::<RemoteUnavailable>() || err.is::<StateError>() {
                    return Err(err);
                }
                failure = Some(err.context(format!("push to registry `{reg_name}` failed")));
                break;
            }
        }
    }
    let result = if failure.is_some() { Outcome::Failed } else { Outcome::Passed };
    job.record(files, run.number, StageRun::new(Stage::Push, result, started, clock.elapsed(), None))?;
    match failure {
        Some(err) => Err(anyhow::Error::new(StageFailed(format!("{err:#}")))),
        None => Ok(()),
    }
}

/// A push or login that failed because the registry could not be reached becomes
/// [`RemoteUnavailable`]: recorded as nothing, retried by the next run. A registry that
/// answered and refused (bad credentials, denied) stays a failure.
fn unreachable_registry(err: anyhow::Error, reg_name: &str, registry: &Registry) -> anyhow::Error {
    let text = format!("{err:#}");
    match RemoteUnavailable::unreachable(&text) {
        Some(line) => {
            RemoteUnavailable { what: format!("registry `{reg_name}` (`{}`)", registry.url), reason: line.to_string() }
                .into()
        }
        None => err,
    }
}

/// The registries named by the `push` lists of deploy entries that match the ref's branch.
pub(crate) fn registries_for<'a>(
    config: &'a Config,
    project: &'a Project,
    refname: &str,
) -> Vec<(&'a str, &'a Registry)> {
    let Some(branch) = refname.strip_prefix("refs/heads/") else { return Vec::new() };
    // An untrusted branch never pushes, as a pull request never does.
    if !crate::trust::trusted(project, refname) {
        return Vec::new();
    }
    let mut out: Vec<(&str, &Registry)> = Vec::new();
    for deploy in &project.deploy {
        let deploy = deploy.get_ref();
        if !deploy.matcher.is_match(branch) {
            continue;
        }
        for reg in &deploy.push {
            let reg = reg.get_ref().as_str();
            if let Some((k, v)) = config.registries.get_key_value(reg)
                && !out.iter().any(|(n, _)| *n == k.as_str())
            {
                out.push((k.as_str(), v));
            }
        }
    }
    out
}

/// The commands that push one run's image to one registry: the login (the ECR password
/// command first, when the registry is ECR), then `tag` and `push` per tag.
struct PushPlan<'a> {
    reg_name: &'a str,
    registry: &'a Registry,
    login: Login,
    /// (remote reference, `docker tag`, `docker push`) per tag.
    steps: Vec<(String, Cmd, Cmd)>,
}

impl<'a> PushPlan<'a> {
    fn new(docker: &Docker, reg_name: &'a str, registry: &'a Registry, run: &Run) -> PushPlan<'a> {
        let local = format!("{}:{}", run.image, docker::commit_tag(&run.commit));
        let login = Login::new(docker, registry);
        let steps = run
            .tags
            .iter()
            .map(|tag| {
                let remote = format!("{}/{}:{tag}", registry.url, run.image);
                let (tag, push) = (docker.cmd().args(["tag", &local, &remote]), docker.cmd().args(["push", &remote]));
                (remote, tag, push)
            })
            .collect();
        PushPlan { reg_name, registry, login, steps }
    }

    /// Logs in, tags and pushes; returns the digest the registry reported.
    fn run(&self, out: &Output, docker: &Docker, run: &Run, deadline: Instant) -> anyhow::Result<String> {
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        self.log_in(out, left())?;
        let mut digest = None;
        for (remote, tag, push) in &self.steps {
            exec::capture(out, tag, left())?;
            let mut output = String::new();
            let spinner = out.spinner(&format!("pushing {remote}"));
            let finished = exec::logged(out, push, &run.log, client::LOG_CAP, left(), &mut |line| {
                output.push_str(line);
                output.push('\n');
                spinner.set(&format!("pushing {remote}: {line}"));
            });
            spinner.finish();
            let finished = finished?;
            finished.check_interrupted()?;
            if client::engine_gone(docker, out, &finished) {
                return Err(client::engine_unavailable(docker, &finished.tail));
            }
            if !finished.success() {
                return Err(anyhow!(
                    "`{push}` failed: {}\n{}",
                    finished.describe(),
                    crate::output::tail_lines(&finished.tail, 10)
                ));
            }
            digest = docker::push_digest(&output).or(digest);
        }
        digest.ok_or_else(|| anyhow!("pushed, but `docker push` printed no digest"))
    }

    fn log_in(&self, out: &Output, timeout: Duration) -> anyhow::Result<()> {
        log_in_with(&self.login, out, self.reg_name, self.registry, timeout)
    }
}

/// Logs pipe's docker client in to `registry` (nothing to do without credentials): what a push
/// does first, and what a trusted build does before it reads the registry's cache.
pub(crate) fn log_in(
    out: &Output,
    docker: &Docker,
    reg_name: &str,
    registry: &Registry,
    timeout: Duration,
) -> anyhow::Result<()> {
    log_in_with(&Login::new(docker, registry), out, reg_name, registry, timeout)
}

/// Runs the login command with the password on stdin; nothing to do without credentials.
fn log_in_with(
    login: &Login,
    out: &Output,
    reg_name: &str,
    registry: &Registry,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (login, password) = match login {
        Login::None => return Ok(()),
        Login::Ecr { password, login } => {
            let password = exec::capture(out, password, timeout).context("failed to get an ECR login password")?;
            (login, password.trim().to_string())
        }
        Login::Password { secret, login } => {
            let password = secret::resolve(secret, &format!("registry.{reg_name}.password"))?;
            (login, password.reveal().to_string())
        }
    };
    exec::capture(out, &login.clone().stdin(password.into_bytes()), timeout)
        .with_context(|| format!("`docker login` to `{}` failed", registry.url))?;
    Ok(())
}

/// How a registry is logged in to: the `docker login … --password-stdin` command (its password
/// given on stdin only when it runs), and for ECR the command that prints the password.
enum Login {
    None,
    Password { secret: SecretRef, login: Cmd },
    Ecr { password: Cmd, login: Cmd },
}

impl Login {
    fn new(docker: &Docker, registry: &Registry) -> Login {
        let login_as =
            |user: &str| docker.cmd().args(["login", "--username", user, "--password-stdin", registry.url.as_str()]);
        if let Some(ecr) = &registry.ecr {
            let aws = std::env::var_os("PIPE_AWS").filter(|p| !p.is_empty()).unwrap_or_else(|| "aws".into());
            let mut password = Cmd::new(aws).args(["ecr", "get-login-password", "--region", &ecr.region]);
            if let Some(profile) = &ecr.profile {
                password = password.args(["--profile", profile]);
            }
            Login::Ecr { password, login: login_as("AWS") }
        } else if let Some(secret) = SecretRef::from_pair(&registry.password_env, &registry.password_file) {
            Login::Password { secret, login: login_as(registry.username.as_deref().unwrap_or_default()) }
        } else {
            Login::None
        }
    }

    /// The commands a dry run shows, in order; never a password.
    fn commands(&self) -> Vec<&Cmd> {
        match self {
            Login::None => Vec::new(),
            Login::Password { login, .. } => vec![login],
            Login::Ecr { password, login } => vec![password, login],
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to restrict `{}`", dir.display()))
}
