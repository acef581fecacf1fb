//! `pipe push`: tag the tested image for each registry its branch deploys through, log in
//! (password on stdin, ECR by `aws ecr get-login-password`), push, and record the digest.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::Context;
use super::stage::{self, Job};
use crate::cli::PushArgs;
use crate::config::{Config, Project, Registry, SecretRef, Stage};
use crate::docker;
use crate::engine::docker::{self as engine, Docker};
use crate::error::StageFailed;
use crate::error::{RemoteUnavailable, Usage, code};
use crate::exec::{self, Cmd};
use crate::refs;
use crate::secret;
use crate::state::{self, StageRun, State};

pub fn run(cx: &Context, args: &PushArgs) -> anyhow::Result<u8> {
    let loaded = stage::load(cx, &args.project, "push", args.dry_run)?;
    let job = loaded.job(cx, &args.project, args.reference.as_deref());
    push(&job, &loaded.state, args.force, args.dry_run)?;
    Ok(code::OK)
}

/// Pushes the ref's latest built image to its branch's registries and records the digests.
/// Refuses an image whose tests neither passed nor were skipped, unless `force`.
pub fn push(job: &Job<'_>, st: &Mutex<State>, force: bool, dry_run: bool) -> anyhow::Result<()> {
    let (cx, name) = (job.cx, job.name);
    let refname = job.refname.as_str();
    let registries = registries_for(job.config, job.project, refname);
    if registries.is_empty() {
        cx.out.info(format!("{name}: no deploy entry pushes {}; nothing to push", refs::display(refname)));
        return Ok(());
    }
    let mut files = job.files()?;
    let Some(run) = stage::latest_built(&files.history, None).cloned() else {
        return Err(Usage(format!("no image was built for {name} {} yet", refs::display(refname))).into());
    };
    let tested = run.stage("test").map(|s| s.result.as_str());
    if !matches!(tested, Some("passed") | Some("skipped")) && !force {
        return Err(StageFailed(format!(
            "refusing to push {}:{}: its tests {}\nhint: run `pipe test {name} {}`, or pass --force",
            run.image,
            docker::commit_tag(&run.commit),
            match tested {
                Some(result) => format!("ended `{result}`"),
                None => "have not run".into(),
            },
            refs::display(refname)
        ))
        .into());
    }
    let docker = job.docker();
    let local = format!("{}:{}", run.image, docker::commit_tag(&run.commit));
    if dry_run {
        for (reg_name, registry) in &registries {
            print_plan(&docker, reg_name, registry, &run.image, &run.tags, &local);
        }
        return Ok(());
    }
    create_private_dir(&state::docker_config_dir(job.state_path))?;
    let deadline = Instant::now() + job.config.timeout(Some(job.project), Stage::Push);
    let started = crate::clock::now();
    let clock = Instant::now();
    let mut failure = None;
    for (reg_name, registry) in &registries {
        match push_one(cx, &docker, reg_name, registry, &run.image, &run.tags, &local, &run.log, deadline) {
            Ok(digest) => {
                cx.out.info(format!("{name}: pushed {}/{} ({digest})", registry.url, run.image));
                if let Some(r) = files.history.runs.iter_mut().find(|r| r.number == run.number) {
                    r.digests.insert(reg_name.to_string(), digest);
                }
            }
            Err(err) => {
                let err = unreachable_registry(engine::classify(&docker, err), reg_name, registry);
                if err.is::<crate::error::ToolUnavailable>()
                    || err.is::<RemoteUnavailable>()
                    || err.is::<crate::error::Interrupted>()
                {
                    if err.is::<crate::error::Interrupted>() {
                        let record = StageRun::new("push", "interrupted", started, clock.elapsed(), None);
                        job.record(st, &mut files, run.number, record)?;
                    }
                    return Err(err);
                }
                failure = Some(err.context(format!("push to registry `{reg_name}` failed")));
                break;
            }
        }
    }
    let result = if failure.is_some() { "failed" } else { "passed" };
    let record = StageRun::new("push", result, started, clock.elapsed(), None);
    job.record(st, &mut files, run.number, record)?;
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
pub fn registries_for<'a>(config: &'a Config, project: &'a Project, refname: &str) -> Vec<(&'a str, &'a Registry)> {
    let Some(branch) = refname.strip_prefix("refs/heads/") else { return Vec::new() };
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

fn print_plan(docker: &Docker, reg_name: &str, registry: &Registry, image: &str, tags: &[String], local: &str) {
    let program = docker.program.to_string_lossy();
    if let Some(ecr) = &registry.ecr {
        println!(
            "aws ecr get-login-password --region {} | {program} login --username AWS --password-stdin {}",
            ecr.region, registry.url
        );
    } else if let Some(user) = &registry.username {
        println!(
            "{program} login --username {user} --password-stdin {}   # password from `registry.{reg_name}` (redacted)",
            registry.url
        );
    }
    for tag in tags {
        println!("{program} tag {local} {}/{image}:{tag}", registry.url);
        println!("{program} push {}/{image}:{tag}", registry.url);
    }
}

#[allow(clippy::too_many_arguments)]
fn push_one(
    cx: &Context,
    docker: &Docker,
    reg_name: &str,
    registry: &Registry,
    image: &str,
    tags: &[String],
    local: &str,
    log: &std::path::Path,
    deadline: Instant,
) -> anyhow::Result<String> {
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    login(cx, docker, reg_name, registry, left())?;
    let mut digest = None;
    for tag in tags {
        let remote = format!("{}/{image}:{tag}", registry.url);
        exec::capture(&cx.out, &docker.cmd().args(["tag", local, &remote]), left())?;
        let push = docker.cmd().args(["push", &remote]);
        let mut output = String::new();
        let spinner = cx.out.spinner(&format!("pushing {remote}"));
        let finished = exec::logged(&cx.out, &push, log, engine::LOG_CAP, left(), &mut |line| {
            output.push_str(line);
            output.push('\n');
            spinner.set(&format!("pushing {remote}: {line}"));
        });
        spinner.finish();
        let finished = finished?;
        stage::interrupted(&finished)?;
        if engine::engine_gone(docker, &cx.out, &finished) {
            return Err(engine::engine_unavailable(docker, &finished.tail));
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

fn login(cx: &Context, docker: &Docker, reg_name: &str, registry: &Registry, timeout: Duration) -> anyhow::Result<()> {
    let (user, password) = if let Some(ecr) = &registry.ecr {
        let aws = std::env::var_os("PIPE_AWS").filter(|p| !p.is_empty()).unwrap_or_else(|| "aws".into());
        let mut cmd = Cmd::new(aws).args(["ecr", "get-login-password", "--region", &ecr.region]);
        if let Some(profile) = &ecr.profile {
            cmd = cmd.args(["--profile", profile]);
        }
        let password = exec::capture(&cx.out, &cmd, timeout).context("failed to get an ECR login password")?;
        ("AWS".to_string(), password.trim().to_string())
    } else if let Some(secret_ref) = SecretRef::from_pair(&registry.password_env, &registry.password_file) {
        let password = secret::resolve(&secret_ref, &format!("registry.{reg_name}.password"))?;
        (registry.username.clone().unwrap_or_default(), password.reveal().to_string())
    } else {
        return Ok(());
    };
    let cmd = docker
        .cmd()
        .args(["login", "--username", &user, "--password-stdin", &registry.url])
        .stdin(password.into_bytes());
    exec::capture(&cx.out, &cmd, timeout).with_context(|| format!("`docker login` to `{}` failed", registry.url))?;
    Ok(())
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to restrict `{}`", dir.display()))
}
