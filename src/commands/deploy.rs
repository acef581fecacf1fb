//! `pipe deploy`: run the deploy targets configured for a branch (compose, swarm, command,
//! webhook), check health, roll back automatically when the check fails, and keep a short
//! history per target so `--commit` can roll back by hand.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use super::Context;
use super::stage::{self, Job};
use crate::cli::DeployArgs;
use crate::config::{Deploy, SecretRef, Stage, WebhookTarget};
use crate::docker;
use crate::engine::docker::{self as engine, Docker};
use crate::error::StageFailed;
use crate::error::code;
use crate::exec::{self, Cmd};
use crate::refs;
use crate::secret;
use crate::state::{self, DeployRecord, Run, StageRun, State};

pub fn run(cx: &Context, args: &DeployArgs) -> anyhow::Result<u8> {
    let loaded = stage::load(cx, &args.project, "deploy", args.dry_run)?;
    let job = loaded.job(cx, &args.project, args.reference.as_deref());
    deploy(&job, &loaded.state, args.target.as_deref(), args.commit.as_deref(), args.dry_run)?;
    Ok(code::OK)
}

/// What gets deployed: an image of one commit.
#[derive(Debug, Clone)]
pub struct Release {
    pub commit: String,
    /// Local image repository (as built).
    pub image: String,
    pub tags: Vec<String>,
    pub digest: Option<String>,
    pub run: Option<u64>,
}

/// The deploy entries of the job's branch that have a target, optionally only the named one.
pub fn targets<'a>(job: &'a Job<'_>, only: Option<&str>) -> Vec<&'a Deploy> {
    let Some(branch) = job.refname.strip_prefix("refs/heads/") else { return Vec::new() };
    job.project
        .deploy
        .iter()
        .map(|d| d.get_ref())
        .filter(|d| d.matcher.is_match(branch))
        .filter(|d| d.compose.is_some() || d.swarm.is_some() || d.command.is_some() || d.webhook.is_some())
        .filter(|d| only.is_none_or(|name| d.display_name() == name))
        .collect()
}

/// Deploys the ref's latest tested (and pushed) image, or `commit`'s image (rollback), to every
/// matching target. A failed deploy is recorded and returned as [`StageFailed`].
pub fn deploy(
    job: &Job<'_>,
    st: &Mutex<State>,
    only: Option<&str>,
    commit: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let cx = job.cx;
    let targets = targets(job, only);
    if targets.is_empty() {
        if let Some(name) = only {
            return Err(crate::error::Usage(format!(
                "no deploy target `{name}` for {} {}",
                job.name,
                refs::display(&job.refname)
            ))
            .into());
        }
        cx.out.info(format!("{}: no deploy target for {}; nothing to deploy", job.name, refs::display(&job.refname)));
        return Ok(());
    }
    let mut files = job.files()?;
    let release = release(job, &files.history, &targets, commit)?;
    let docker = job.docker();
    let log = match release.run.and_then(|n| files.history.runs.iter().find(|r| r.number == n)) {
        Some(run) => run.log.clone(),
        None => {
            let dir = &files.logs;
            std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
            dir.join("deploy.log")
        }
    };
    let started = crate::clock::now();
    let clock = Instant::now();
    let mut failures = Vec::new();
    for target in &targets {
        let outcome = deploy_target(job, &docker, target, &release, &log, dry_run);
        if dry_run {
            outcome?;
            continue;
        }
        if let Err(err) = outcome {
            if err.is::<crate::error::ToolUnavailable>() || err.is::<crate::error::Interrupted>() {
                return Err(err);
            }
            failures.push(format!("{:#}", err));
        }
    }
    if dry_run {
        return Ok(());
    }
    if let Some(number) = release.run {
        let result = if failures.is_empty() { "passed" } else { "failed" };
        let record = StageRun::new("deploy", result, started, clock.elapsed(), None);
        job.record(st, &mut files, number, record)?;
    }
    if !failures.is_empty() {
        return Err(StageFailed(failures.join("\n")).into());
    }
    Ok(())
}

/// Picks the image to deploy. Without `commit`: the ref's latest built run, which must have
/// passed (or skipped) its tests and, for targets that push, been pushed. With `commit`: that
/// commit's run in the ref's history, else any deploy record of these targets (rollback).
fn release(
    job: &Job<'_>,
    history: &state::History,
    targets: &[&Deploy],
    commit: Option<&str>,
) -> anyhow::Result<Release> {
    let from_run = |run: &Run| Release {
        commit: run.commit.clone(),
        image: run.image.clone(),
        tags: run.tags.clone(),
        digest: run.digests.values().next().cloned(),
        run: Some(run.number),
    };
    if let Some(sha) = commit {
        if let Some(run) = stage::latest_built(history, Some(sha)) {
            return Ok(from_run(run));
        }
        for target in targets {
            let deploys = state::load_deploys(&state::deploys_path(job.state_path, job.name, target.display_name()))?;
            if let Some(d) = deploys.deploys.iter().rev().find(|d| d.commit.starts_with(sha)) {
                let image = local_image(job, target, &d.image);
                return Ok(Release {
                    commit: d.commit.clone(),
                    image,
                    tags: vec![d.tag.clone()],
                    digest: None,
                    run: None,
                });
            }
        }
        bail!(
            "no image of commit `{sha}` is known for {} {}: it was never built or deployed here",
            job.name,
            refs::display(&job.refname)
        );
    }
    let Some(run) = stage::latest_built(history, None) else {
        bail!(
            "no image was built for {} {} yet\nhint: run `pipe build` and `pipe test` first",
            job.name,
            refs::display(&job.refname)
        );
    };
    let tested = run.stage("test").map(|s| s.result.as_str());
    if !matches!(tested, Some("passed") | Some("skipped")) {
        return Err(StageFailed(format!(
            "refusing to deploy {}:{}: its tests {}",
            run.image,
            docker::commit_tag(&run.commit),
            tested.map_or("have not run".to_string(), |r| format!("ended `{r}`"))
        ))
        .into());
    }
    let pushes = targets.iter().any(|t| !t.push.is_empty());
    if pushes && run.stage("push").is_none_or(|s| s.result != "passed") {
        return Err(StageFailed(format!(
            "refusing to deploy {}:{}: it was not pushed",
            run.image,
            docker::commit_tag(&run.commit)
        ))
        .into());
    }
    Ok(from_run(run))
}

/// The repository part of a deployed image name without the registry prefix.
fn local_image(job: &Job<'_>, target: &Deploy, deployed: &str) -> String {
    for reg in &target.push {
        if let Some(registry) = job.config.registries.get(reg.get_ref())
            && let Some(rest) = deployed.strip_prefix(&format!("{}/", registry.url))
        {
            return rest.to_string();
        }
    }
    deployed.to_string()
}

/// The image repository a target runs: the first registry it pushes to, else the local name.
fn deployed_image(job: &Job<'_>, target: &Deploy, release: &Release) -> String {
    target
        .push
        .first()
        .and_then(|reg| job.config.registries.get(reg.get_ref()))
        .map_or_else(|| release.image.clone(), |r| format!("{}/{}", r.url, release.image))
}

fn deploy_target(
    job: &Job<'_>,
    docker: &Docker,
    target: &Deploy,
    release: &Release,
    log: &Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let cx = job.cx;
    let name = target.display_name();
    let image = deployed_image(job, target, release);
    let tag = docker::commit_tag(&release.commit).to_string();
    let timeout = target.timeout.map_or_else(|| job.config.timeout(Some(job.project), Stage::Deploy), |t| t.0);
    let path = state::deploys_path(job.state_path, job.name, name);
    let mut history = state::load_deploys(&path)?;
    if dry_run {
        for cmd in commands(job, docker, target, &image, &tag, release)? {
            println!("{cmd}");
        }
        if let Some(hook) = &target.webhook {
            println!("POST {} (body: project, ref, commit, image, digest; {})", shown_url(job, hook), auth_note(hook));
        }
        return Ok(());
    }
    cx.out.info(format!("{}: deploying {image}:{tag} to `{name}`", job.name));
    let spinner = cx.out.spinner(&format!("deploying {image}:{tag} to {name}"));
    let applied = apply(job, docker, target, &image, &tag, release, log, timeout);
    // A webhook that was refused changed nothing on the far side: there is nothing to roll back.
    let may_roll_back = applied.is_ok() || target.webhook.is_none();
    let result = applied.and_then(|()| {
        spinner.set(&format!("checking health of {name}"));
        match &target.health {
            Some(health) => crate::targets::check_health(&cx.out, docker, health),
            None => Ok(()),
        }
    });
    spinner.finish();
    let mut record = DeployRecord {
        commit: release.commit.clone(),
        image: image.clone(),
        tag: tag.clone(),
        refname: job.refname.clone(),
        at: crate::clock::now(),
        result: "succeeded".into(),
    };
    let Err(err) = result else {
        history.deploys.push(record);
        state::save_deploys(&path, &mut history)?;
        cx.out.info(format!("{}: deployed {image}:{tag} to `{name}`", job.name));
        return Ok(());
    };
    if err.is::<crate::error::Interrupted>() || err.is::<crate::error::ToolUnavailable>() {
        return Err(err);
    }
    record.result = "failed".into();
    let previous = history
        .deploys
        .iter()
        .rev()
        .find(|d| d.result == "succeeded" && d.commit != release.commit)
        .filter(|_| may_roll_back)
        .cloned();
    let Some(previous) = previous else {
        history.deploys.push(record);
        state::save_deploys(&path, &mut history)?;
        let why = if may_roll_back { ", and there is no earlier deploy to roll back to" } else { "" };
        return Err(err.context(format!("deploy of {image}:{tag} to `{name}` failed{why}")));
    };
    cx.out.error(format!(
        "{}: deploy of {image}:{tag} to `{name}` failed: {err:#}; rolling back to {}:{}",
        job.name, previous.image, previous.tag
    ));
    let back = Release {
        commit: previous.commit.clone(),
        image: local_image(job, target, &previous.image),
        tags: vec![previous.tag.clone()],
        digest: None,
        run: None,
    };
    let rolled = apply(job, docker, target, &previous.image, &previous.tag, &back, log, timeout)
        .and_then(|()| target.health.as_ref().map_or(Ok(()), |h| crate::targets::check_health(&cx.out, docker, h)));
    record.result = if rolled.is_ok() { "rolled_back" } else { "failed" }.into();
    history.deploys.push(record);
    if rolled.is_ok() {
        history.deploys.push(DeployRecord { at: crate::clock::now(), result: "succeeded".into(), ..previous.clone() });
    }
    state::save_deploys(&path, &mut history)?;
    match rolled {
        Ok(()) => Err(err.context(format!(
            "deploy of {image}:{tag} to `{name}` failed; rolled back to {}:{}, which is running again",
            previous.image, previous.tag
        ))),
        Err(back_err) => Err(err.context(format!(
            "deploy of {image}:{tag} to `{name}` failed, and rolling back to {}:{} failed too: {back_err:#}",
            previous.image, previous.tag
        ))),
    }
}

/// The environment every deploy exports, for compose files and commands to interpolate.
fn deploy_env(job: &Job<'_>, image: &str, tag: &str, release: &Release) -> Vec<(String, String)> {
    let branch = job.refname.strip_prefix("refs/heads/").unwrap_or(&job.refname);
    vec![
        ("PIPE_IMAGE".into(), image.into()),
        ("PIPE_TAG".into(), tag.into()),
        ("PIPE_COMMIT".into(), release.commit.clone()),
        ("PIPE_BRANCH".into(), branch.into()),
        ("PIPE_PROJECT".into(), job.name.into()),
        ("PIPE_REF_TAG".into(), release.tags.first().cloned().unwrap_or_default()),
    ]
}

/// The process commands a target runs (none for a webhook), in order.
fn commands(
    job: &Job<'_>,
    docker: &Docker,
    target: &Deploy,
    image: &str,
    tag: &str,
    release: &Release,
) -> anyhow::Result<Vec<Cmd>> {
    let kinds = crate::targets::Kinds {
        compose: target.compose.as_ref(),
        swarm: target.swarm.as_ref(),
        command: target.command.as_ref(),
    };
    crate::targets::target_commands(
        &job.cx.out,
        docker,
        kinds,
        job.name,
        !target.push.is_empty(),
        deploy_env(job, image, tag, release),
    )
}

#[allow(clippy::too_many_arguments)]
fn apply(
    job: &Job<'_>,
    docker: &Docker,
    target: &Deploy,
    image: &str,
    tag: &str,
    release: &Release,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    for cmd in commands(job, docker, target, image, tag, release)? {
        let finished = exec::logged(&job.cx.out, &cmd, log, engine::LOG_CAP, left(), &mut |_| {})?;
        stage::interrupted(&finished)?;
        if !finished.success() {
            if engine::engine_down(&finished.tail) {
                return Err(engine::engine_unavailable(docker, &finished.tail));
            }
            bail!("`{cmd}` failed: {}\n{}", finished.describe(), crate::output::tail_lines(&finished.tail, 10));
        }
    }
    if let Some(swarm) = &target.swarm {
        crate::targets::wait_for_stack(&job.cx.out, docker, &swarm.stack, deadline)?;
    }
    if let Some(hook) = &target.webhook {
        post_webhook(job, hook, image, tag, release, left())?;
    }
    Ok(())
}

/// The webhook URL as shown to people: docker-puller's token is never displayed.
fn shown_url(job: &Job<'_>, hook: &WebhookTarget) -> String {
    if hook.docker_puller {
        format!("{}?token=***&hook={}", hook.url, hook.hook.as_deref().unwrap_or(job.name))
    } else {
        crate::git::redact_url(&hook.url)
    }
}

fn auth_note(hook: &WebhookTarget) -> &'static str {
    match (
        hook.secret_env.is_some() || hook.secret_file.is_some(),
        hook.token_env.is_some() || hook.token_file.is_some(),
    ) {
        (true, true) => "signed X-Hub-Signature-256 and a bearer token, both redacted",
        (true, false) => "signed X-Hub-Signature-256, secret redacted",
        (false, true) => "bearer token, redacted",
        (false, false) => "unauthenticated",
    }
}

/// POSTs the release to a `pipe serve` hook (HMAC-signed) or a docker-puller; retries connect
/// errors and 5xx with backoff (1 s, 2 s), fails on any other non-2xx.
fn post_webhook(
    job: &Job<'_>,
    hook: &WebhookTarget,
    image: &str,
    tag: &str,
    release: &Release,
    timeout: Duration,
) -> anyhow::Result<()> {
    // `delivery` and `sent_at` are covered by the signature: a receiver refuses a replay.
    // `hook` (the URL's last path segment) binds the signature to the hook it is sent to.
    let body = serde_json::json!({
        "hook": hook.url.split(['?', '#']).next().unwrap_or("").trim_end_matches('/').rsplit('/').next().unwrap_or(""),
        "project": job.name,
        "ref": job.refname,
        "commit": release.commit,
        "image": image,
        "tag": tag,
        "digest": release.digest,
        "delivery": secret::random_id(),
        "sent_at": crate::clock::now().as_second(),
    })
    .to_string();
    let secret = SecretRef::from_pair(&hook.secret_env, &hook.secret_file)
        .map(|s| secret::resolve(&s, &format!("project.{}.deploy.webhook.secret", job.name)))
        .transpose()?;
    let token = SecretRef::from_pair(&hook.token_env, &hook.token_file)
        .map(|s| secret::resolve(&s, &format!("project.{}.deploy.webhook.token", job.name)))
        .transpose()?;
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout.min(Duration::from_secs(60)))
        .build()
        .context("failed to set up an HTTP client")?;
    let shown = shown_url(job, hook);
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
        }
        crate::signals::check()?;
        let mut request = if hook.docker_puller {
            let hook_name = hook.hook.clone().unwrap_or_else(|| job.name.to_string());
            let token = token.as_ref().map(|t| t.reveal().to_string()).unwrap_or_default();
            client.post(&hook.url).query(&[("token", token.as_str()), ("hook", hook_name.as_str())])
        } else {
            client.post(&hook.url)
        };
        request = request
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("pipe/", env!("CARGO_PKG_VERSION")));
        if let Some(secret) = &secret {
            request =
                request.header("X-Hub-Signature-256", crate::secret::sign(secret.reveal().as_bytes(), body.as_bytes()));
        }
        if let (Some(token), false) = (&token, hook.docker_puller) {
            request = request.bearer_auth(token.reveal());
        }
        match request.body(body.clone()).send() {
            Ok(resp) if resp.status().is_success() => {
                let answer: serde_json::Value = resp.json_value();
                return match answer["status_url"].as_str().filter(|_| !hook.docker_puller) {
                    Some(status_url) => follow_run(hook, &client, status_url, secret.as_ref(), token.as_ref(), timeout),
                    None => Ok(()),
                };
            }
            Ok(resp) if resp.status().is_server_error() => last = format!("HTTP {}", resp.status().as_u16()),
            Ok(resp) => bail!("webhook `{shown}` answered HTTP {}", resp.status().as_u16()),
            Err(e) if e.is_connect() || e.is_timeout() => last = crate::secret::http_cause(&e),
            Err(e) => return Err(anyhow!("webhook `{shown}` failed: {}", crate::secret::http_cause(&e))),
        }
    }
    Err(anyhow!("webhook `{shown}` failed after 3 attempts: {last}"))
}

/// Reads a response body as JSON, or `null`.
trait JsonValue {
    fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::blocking::Response {
    fn json_value(self) -> serde_json::Value {
        self.bytes().ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null)
    }
}

/// A `pipe serve` hook answers `202` with a `status_url`: follow it until the run ends, so the
/// deploy is reported as it really went on the far side.
fn follow_run(
    hook: &WebhookTarget,
    client: &reqwest::blocking::Client,
    status_url: &str,
    secret: Option<&secret::Secret>,
    token: Option<&secret::Secret>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(&hook.url)
        .and_then(|base| base.join(status_url))
        .context("invalid status URL from the receiver")?;
    let deadline = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        crate::signals::check()?;
        let mut request = client.get(url.clone());
        if let Some(secret) = secret {
            request = request
                .header("X-Hub-Signature-256", crate::secret::sign(secret.reveal().as_bytes(), url.path().as_bytes()));
        }
        if let Some(token) = token {
            request = request.bearer_auth(token.reveal());
        }
        if let Ok(resp) = request.send()
            && resp.status().is_success()
        {
            last = resp.json_value();
            match last["status"].as_str().unwrap_or("") {
                "succeeded" => return Ok(()),
                "queued" | "running" | "" => {}
                other => {
                    let detail = last["error"].as_str().unwrap_or("");
                    let tail = last["log_tail"].as_str().unwrap_or("");
                    bail!("the receiver's run ended `{other}`: {detail}\n{tail}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("the receiver's run did not finish in time (last status: {})", last["status"].as_str().unwrap_or("unknown"));
}
