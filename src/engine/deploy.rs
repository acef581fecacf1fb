//! The deploy stage: run the deploy targets configured for a branch (compose, swarm, command,
//! webhook), check health, roll back automatically when the check fails, and keep a short
//! history per target so `--commit` can roll back by hand.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use super::{Job, RefFiles, fleet};
use crate::config::Deploy;
use crate::docker;
use crate::docker::client::{self as client, Docker};
use crate::error::{Interrupted, StageFailed, StateError, ToolUnavailable, Usage};
use crate::exec::Cmd;
use crate::model::{DeployResult, Outcome, Stage};
use crate::refs;
use crate::state::{self, DeployRecord, Run, StageRun, Timeline};
use crate::targets::beside::{self, Beside};
use crate::targets::ingress::Nginx;
use crate::targets::{self, Compose, Kinds, swarm, webhook};
use crate::trust::redact::{self, Redactor};

/// What gets deployed: an image of one commit.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub commit: String,
    /// Local image repository (as built).
    pub image: String,
    pub tags: Vec<String>,
    pub digest: Option<String>,
    pub run: Option<u64>,
    /// The run's stage records (built, tested, pushed), for the deploy timeline.
    pub stages: Vec<StageRun>,
    /// When the ref's head was first seen at this commit.
    pub detected: Option<jiff::Timestamp>,
    /// Asked for by `--commit` and not the ref's newest build: an earlier image put back.
    pub rollback: bool,
}

/// The deploy entries of the job's branch that have a target, optionally only the named one.
pub(crate) fn targets<'a>(job: &'a Job<'_>, only: Option<&str>) -> Vec<&'a Deploy> {
    let Some(branch) = job.refname.strip_prefix("refs/heads/") else { return Vec::new() };
    // An untrusted branch never deploys, as a pull request never does.
    if !job.trusted() {
        return Vec::new();
    }
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
/// matching target. A failed deploy is recorded and returned as [`StageFailed`]. Returns the
/// timeline of the last target deployed.
pub(crate) fn deploy(
    job: &Job<'_>,
    files: &mut RefFiles,
    only: Option<&str>,
    commit: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<Option<Timeline>> {
    let targets = targets(job, only);
    if targets.is_empty() {
        if let Some(name) = only {
            let shown = refs::display(&job.refname);
            return Err(Usage(format!("no deploy target `{name}` for {} {shown}", job.name)).into());
        }
        job.out.info(format!("{}: no deploy target for {}; nothing to deploy", job.name, refs::display(&job.refname)));
        return Ok(None);
    }
    let mut release = release(job, &files.history, &targets, commit)?;
    if !dry_run {
        // Read-only: the poll that saw this head saved it before any stage ran.
        release.detected = state::load(job.state_path).ok().and_then(|st| {
            let r = st.project.get(job.name)?.refs.get(&job.refname)?;
            (r.head == release.commit).then_some(r.since)
        });
    }
    let docker = job.docker();
    let log = match release.run.and_then(|n| files.run(n)) {
        Some(run) => run.log.clone(),
        None => {
            super::ensure_dir(&files.logs)?;
            files.logs.join("deploy.log")
        }
    };
    let started = crate::clock::now();
    let clock = Instant::now();
    let mut failures = Vec::new();
    let mut timeline = None;
    for target in &targets {
        // The target's own variables, read before anything of it runs: a secret that cannot be
        // had fails this target with nothing deployed. A dry run reads none (no password
        // manager is asked) and shows no environment.
        let own = if dry_run {
            Ok(Default::default())
        } else {
            let what = format!("project.{}.deploy.{}.env", job.name, target.display_name());
            targets::resolve_env(&job.out, &target.env, &what, true)
        };
        let own = match own {
            Ok(own) => own,
            Err(err) if passes_through(&err) => return Err(err),
            Err(err) => {
                failures.push(format!("deploy to `{}` not started: {err:#}", target.display_name()));
                continue;
            }
        };
        let rollout = Rollout::new(job, &docker, target, &release, log.clone(), own);
        if dry_run {
            rollout.print_plan()?;
            continue;
        }
        match rollout.run() {
            Ok(t) => timeline = Some(t),
            Err(err) if passes_through(&err) => return Err(err),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    if dry_run {
        return Ok(None);
    }
    if let Some(number) = release.run {
        let result = if failures.is_empty() { Outcome::Passed } else { Outcome::Failed };
        job.record(files, number, StageRun::new(Stage::Deploy, result, started, clock.elapsed(), None))?;
    }
    if !failures.is_empty() {
        return Err(StageFailed(failures.join("\n")).into());
    }
    Ok(timeline)
}

/// Picks the image to deploy. Without `commit`: the ref's latest built run, which must have
/// passed the gates (tests, and the push for targets that push). With `commit`: that commit's
/// run in the ref's history, else any deploy record of these targets (rollback).
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
        stages: run.stages.clone(),
        detected: None,
        rollback: false,
    };
    if let Some(sha) = commit {
        let newest = super::latest_built(history, None).map(|run| run.commit.as_str());
        if let Some(run) = super::latest_built(history, Some(sha)) {
            return Ok(Release { rollback: newest != Some(run.commit.as_str()), ..from_run(run) });
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
                    stages: Vec::new(),
                    detected: None,
                    rollback: newest != Some(d.commit.as_str()),
                });
            }
        }
        bail!(
            "no image of commit `{sha}` is known for {} {}: it was never built or deployed here",
            job.name,
            refs::display(&job.refname)
        );
    }
    let Some(run) = super::latest_built(history, None) else {
        bail!(
            "no image was built for {} {} yet\nhint: run `pipe build` and `pipe test` first",
            job.name,
            refs::display(&job.refname)
        );
    };
    let pushes = targets.iter().any(|t| !t.push.is_empty());
    if let Some(why) = super::gate::refuse_deploy(run, pushes) {
        let image = format!("{}:{}", run.image, docker::commit_tag(&run.commit));
        return Err(StageFailed(format!("refusing to deploy {image}: {why}")).into());
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

/// One release going to one target: the commands it runs, the health check that judges it, the
/// rollback when that fails, and the target's deploy history.
struct Rollout<'a> {
    job: &'a Job<'a>,
    docker: &'a Docker,
    target: &'a Deploy,
    release: &'a Release,
    /// The image repository the target runs: the first registry it pushes to, else local.
    image: String,
    tag: String,
    log: PathBuf,
    timeout: Duration,
    /// Set by a zero-downtime apply: when the release was ready and took traffic.
    switched: Cell<Option<beside::Switched>>,
    /// The target's own `env`, read, and the secrets among it to mask.
    own: Vec<(String, String)>,
    redactor: Redactor,
}

impl<'a> Rollout<'a> {
    fn new(
        job: &'a Job<'a>,
        docker: &'a Docker,
        target: &'a Deploy,
        release: &'a Release,
        log: PathBuf,
        (own, redactor): (Vec<(String, String)>, Redactor),
    ) -> Rollout<'a> {
        let image = target
            .push
            .first()
            .and_then(|reg| job.config.registries.get(reg.get_ref()))
            .map_or_else(|| release.image.clone(), |r| format!("{}/{}", r.url, release.image));
        let tag = docker::commit_tag(&release.commit).to_string();
        let timeout = target.timeout.map_or_else(|| job.timeout(Stage::Deploy), |t| t.0);
        Rollout { job, docker, target, release, image, tag, log, timeout, switched: Cell::new(None), own, redactor }
    }

    /// A compose target whose services sit behind an ingress pipe switches: started beside
    /// the old release, checked, switched, drained.
    fn zero_downtime(&self) -> bool {
        self.target.compose.is_some() && !self.target.ingress.is_empty() && self.job.config.ingress.upstreams.is_some()
    }

    /// Hands the zero-downtime rollout of `release` on this target to `f`.
    fn beside<T>(
        &self,
        image: &str,
        tag: &str,
        release: &Release,
        f: impl FnOnce(&Beside<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (t, out) = (self.target, &self.job.out);
        let Some(compose) = &t.compose else { bail!("zero-downtime deploys need a compose target") };
        let mut env = self.env(image, tag, release);
        if let Some(dir) = &self.docker.config_dir {
            env.push(("DOCKER_CONFIG".into(), dir.display().to_string()));
        }
        let compose = Compose::new(out, self.docker, compose, self.job.name, env)?.masking(self.redactor.clone());
        let nginx =
            Nginx::new(&self.job.config.ingress, &self.log).ok_or_else(|| anyhow!("no `[ingress] upstreams`"))?;
        let beside = Beside {
            out,
            docker: self.docker,
            compose: &compose,
            services: &t.ingress,
            health: t.health.as_ref(),
            release: t.release.as_ref(),
            drain: t.drain.map_or(beside::DEFAULT_DRAIN, |d| d.0),
            nginx: &nginx,
            pull: !t.push.is_empty(),
            log: &self.log,
            note: format!("{} {image}:{tag} (commit {})", self.job.name, release.commit),
        };
        f(&beside)
    }

    /// The deploy's moments: the commit's stages from its run, readiness and the switch.
    fn timeline(&self, done: jiff::Timestamp) -> Timeline {
        let ended = |stage: Stage| {
            let s = self.release.stages.iter().rev().find(|s| s.stage == stage && s.result == Outcome::Passed)?;
            // Records older than `ended` only have a start to the second and a duration.
            s.ended.or_else(|| s.started.checked_add(jiff::SignedDuration::from_secs_f64(s.seconds)).ok())
        };
        let switched = self.switched.get();
        Timeline {
            detected: self.release.detected,
            built: ended(Stage::Build),
            tested: ended(Stage::Test),
            pushed: ended(Stage::Push),
            healthy: Some(switched.map_or(done, |s| s.healthy)),
            traffic: Some(switched.map_or(done, |s| s.switched)),
        }
    }

    fn name(&self) -> &str {
        self.target.display_name()
    }

    /// What the target's commands run with: the `PIPE_*` variables, then its own `env`.
    fn env(&self, image: &str, tag: &str, release: &Release) -> Vec<(String, String)> {
        let mut env = deploy_env(self.job, image, tag, release);
        env.extend(self.own.iter().cloned());
        env
    }

    /// The process commands of this release on this target (none for a webhook), in order.
    fn commands(&self, image: &str, tag: &str, release: &Release) -> anyhow::Result<Vec<Cmd>> {
        let t = self.target;
        let kinds = Kinds { compose: t.compose.as_ref(), swarm: t.swarm.as_ref(), command: t.command.as_ref() };
        let env = self.env(image, tag, release);
        let Some(stack) = kinds.swarm else {
            return targets::target_commands(&self.job.out, self.docker, kinds, self.job.name, !t.push.is_empty(), env);
        };
        // Start-first updates with automatic rollback, unless the stack file says otherwise.
        let dir = self.job.config.settings.workspace.join("swarm");
        let extra = swarm::write_override(&self.job.out, self.docker, stack, &env, &dir)?;
        Ok(vec![swarm::deploy_cmd(self.docker, stack, extra.as_deref(), &env)])
    }

    fn print_plan(&self) -> anyhow::Result<()> {
        if self.zero_downtime() {
            let cmds = self.beside(&self.image, &self.tag, self.release, |b| Ok(b.commands()))?;
            for cmd in cmds {
                crate::output::println(cmd)?;
            }
            return Ok(());
        }
        for cmd in self.commands(&self.image, &self.tag, self.release)? {
            crate::output::println(cmd)?;
        }
        if let Some(hook) = &self.target.webhook {
            for line in webhook::plan(hook, self.job.name) {
                crate::output::println(line)?;
            }
        }
        Ok(())
    }

    /// Deploys, checks health, rolls back on failure, and records the target's history.
    fn run(&self) -> anyhow::Result<Timeline> {
        let (out, project, name) = (&self.job.out, self.job.name, self.name());
        let (image, tag) = (&self.image, &self.tag);
        if let Some(hook) = self.target.webhook.as_ref().filter(|h| h.is_fleet()) {
            let release = fleet::FleetRelease {
                commit: &self.release.commit,
                image,
                tag,
                digest: self.release.digest.as_deref(),
                rollback: self.release.rollback,
                stages: &self.release.stages,
                detected: self.release.detected,
            };
            return fleet::rollout(self.job, self.target, hook, &release, self.timeout);
        }
        let path = state::deploys_path(self.job.state_path, project, name);
        let mut history = state::load_deploys(&path)?;
        out.info(format!("{project}: deploying {image}:{tag} to `{name}`"));
        let spinner = out.spinner(&format!("deploying {image}:{tag} to {name}"));
        let deadline = Instant::now() + self.timeout;
        let applied = self.apply(image, tag, self.release, deadline);
        // A webhook that was refused changed nothing on the far side: nothing to roll back.
        let may_roll_back = applied.is_ok() || self.target.webhook.is_none();
        let result = applied.and_then(|()| {
            spinner.set(&format!("checking health of {name}"));
            self.check(deadline)
        });
        spinner.finish();
        let mut record = DeployRecord {
            commit: self.release.commit.clone(),
            image: image.clone(),
            tag: tag.clone(),
            refname: self.job.refname.clone(),
            at: crate::clock::precise(),
            result: DeployResult::Succeeded,
            timeline: None,
            rollback: self.release.rollback,
            hosts: Vec::new(),
        };
        let Err(err) = result else {
            let timeline = self.timeline(record.at);
            record.timeline = Some(timeline.clone());
            history.deploys.push(record);
            state::save_deploys(&path, &mut history)?;
            out.info(format!("{project}: deployed {image}:{tag} to `{name}`"));
            out.info(format!("{project}: timeline of {tag} on `{name}`: {}", timeline.describe()));
            return Ok(timeline);
        };
        if passes_through(&err) {
            return Err(err);
        }
        record.result = DeployResult::Failed;
        if self.zero_downtime() {
            // Nothing was switched: the old release is the one serving; no rollback to run.
            history.deploys.push(record);
            state::save_deploys(&path, &mut history)?;
            return Err(err.context(format!("deploy of {image}:{tag} to `{name}` failed")));
        }
        let previous = history
            .deploys
            .iter()
            .rev()
            .find(|d| d.result == DeployResult::Succeeded && d.commit != self.release.commit)
            .filter(|_| may_roll_back)
            .cloned();
        let Some(previous) = previous else {
            history.deploys.push(record);
            state::save_deploys(&path, &mut history)?;
            let why = if may_roll_back { ", and there is no earlier deploy to roll back to" } else { "" };
            return Err(err.context(format!("deploy of {image}:{tag} to `{name}` failed{why}")));
        };
        let (back_image, back_tag) = (&previous.image, &previous.tag);
        out.error(format!(
            "{project}: deploy of {image}:{tag} to `{name}` failed: {err:#}; rolling back to {back_image}:{back_tag}"
        ));
        let back = Release {
            commit: previous.commit.clone(),
            image: local_image(self.job, self.target, back_image),
            tags: vec![back_tag.clone()],
            digest: None,
            run: None,
            stages: Vec::new(),
            detected: None,
            rollback: true,
        };
        let deadline = Instant::now() + self.timeout;
        let rolled = self.apply(back_image, back_tag, &back, deadline).and_then(|()| self.check(deadline));
        if rolled.as_ref().is_err_and(passes_through) {
            history.deploys.push(record);
            state::save_deploys(&path, &mut history)?;
            return rolled.map(|()| Timeline::default());
        }
        record.result = if rolled.is_ok() { DeployResult::RolledBack } else { DeployResult::Failed };
        history.deploys.push(record);
        if rolled.is_ok() {
            history.deploys.push(DeployRecord {
                at: crate::clock::precise(),
                result: DeployResult::Succeeded,
                timeline: None,
                rollback: true,
                ..previous.clone()
            });
        }
        state::save_deploys(&path, &mut history)?;
        match rolled {
            Ok(()) => Err(err.context(format!(
                "deploy of {image}:{tag} to `{name}` failed; rolled back to {back_image}:{back_tag}, which is running again"
            ))),
            Err(back_err) => Err(err.context(format!(
                "deploy of {image}:{tag} to `{name}` failed, and rolling back to {back_image}:{back_tag} failed too: {back_err:#}"
            ))),
        }
    }

    /// Runs the target's commands (and waits for a swarm stack, or posts the webhook) within
    /// `deadline`.
    fn apply(&self, image: &str, tag: &str, release: &Release, deadline: Instant) -> anyhow::Result<()> {
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let out = &self.job.out;
        if self.zero_downtime() {
            let switched = self.beside(image, tag, release, |b| b.run(deadline))?;
            self.switched.set(Some(switched));
            return Ok(());
        }
        // A swarm's update of this deploy starts after this instant; one before it is another's.
        let since = crate::clock::precise();
        for cmd in self.commands(image, tag, release)? {
            let finished = redact::logged(out, &cmd, &self.log, client::LOG_CAP, left(), &self.redactor, &mut |_| {})?;
            finished.check_interrupted()?;
            if !finished.success() {
                // Only a docker or compose command can say the engine went away; a deploy
                // script that failed on a host without an engine is the deploy's failure.
                let gone = if self.docker.runs(&cmd) {
                    client::engine_gone(self.docker, out, &finished)
                } else {
                    client::engine_down(&finished.tail)
                };
                if gone {
                    return Err(client::engine_unavailable(self.docker, &finished.tail));
                }
                let tail = crate::output::tail_lines(&finished.tail, 10);
                return Err(anyhow!("`{cmd}` failed: {}\n{tail}", finished.describe()));
            }
        }
        if let Some(swarm) = &self.target.swarm {
            targets::wait_for_stack(out, self.docker, &swarm.stack, since, deadline)?;
        }
        if let Some(hook) = &self.target.webhook {
            let delivery = webhook::Delivery {
                project: self.job.name,
                refname: &self.job.refname,
                commit: &release.commit,
                image,
                tag,
                digest: release.digest.as_deref(),
            };
            webhook::post(hook, &delivery, left())?;
        }
        Ok(())
    }

    /// The target's health check, bounded by the deploy's own deadline too.
    fn check(&self, deadline: Instant) -> anyhow::Result<()> {
        if self.zero_downtime() {
            // Checked against the new containers themselves, before the switch.
            return Ok(());
        }
        match &self.target.health {
            Some(health) => targets::check_health(&self.job.out, self.docker, health, deadline),
            None => Ok(()),
        }
    }
}

/// Errors that are not the deploy's failure: a signal, an engine that does not answer, state
/// that cannot be read or written. Nothing is rolled back for them; they end the command.
fn passes_through(err: &anyhow::Error) -> bool {
    err.is::<Interrupted>() || err.is::<ToolUnavailable>() || err.is::<StateError>()
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
