//! One release going to one target, the one implementation `pipe deploy`/`pipe run`
//! (`engine::deploy`) and `pipe serve`'s hooks (`serve::queue`) share: apply (the
//! zero-downtime rollout of `beside` behind a switched ingress, else the target's commands),
//! the health check, the automatic rollback to the target's previous successful release from
//! its deploy history, the history itself, and the deploy's timeline. The callers differ only
//! in where the release comes from and what `PIPE_*` variables it exports.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use super::answer::HealthAnswer;
use super::beside::{self, Beside};
use super::ingress::Nginx;
use super::ssh::Link;
use super::{Compose, Kinds, swarm, webhook};
use crate::config::{Health, Ingress, ReleaseCommand, WebhookTarget};
use crate::docker::client::{self as client, Docker};
use crate::error::{Interrupted, StateError, ToolUnavailable};
use crate::exec::Cmd;
use crate::model::{DeployResult, Outcome, Stage};
use crate::output::Output;
use crate::state::{self, DeployRecord, StageRun, Timeline};
use crate::trust::redact::{self, Redactor};

/// What a target is, whoever configured it (a deploy entry or a `[serve.hooks.NAME]`).
pub(crate) struct Target<'a> {
    /// The target's name in messages and its history (a hook's name on the receiving host).
    pub name: &'a str,
    pub kinds: Kinds<'a>,
    pub webhook: Option<&'a WebhookTarget>,
    /// Services behind the ingress and the port nginx connects to in each container.
    pub ingress: &'a BTreeMap<String, u16>,
    pub health: Option<&'a Health>,
    pub release: Option<&'a ReleaseCommand>,
    pub drain: Duration,
    /// The image comes from a registry: pull it first.
    pub pull: bool,
    pub timeout: Duration,
}

/// Where the target runs and what its rollout writes.
pub(crate) struct Place<'a> {
    pub out: &'a Output,
    pub docker: &'a Docker,
    /// The host's `[ingress]`: a compose target with `ingress` services is switched through
    /// it when `upstreams` is set.
    pub ingress: &'a Ingress,
    /// How messages name the deploy's owner (the project, or `hook NAME`).
    pub owner: &'a str,
    /// The project a webhook's body names and the compose project when the target names none.
    pub project: &'a str,
    pub compose_project: &'a str,
    pub refname: &'a str,
    /// The target's deploy history (`deploys/PROJECT/TARGET.toml`, `serve/HOOK/deploys.toml`).
    pub history: PathBuf,
    pub log: PathBuf,
    /// Where a swarm target's override file is written.
    pub swarm_dir: PathBuf,
    /// The host over SSH this place is (its engine is `docker`'s `host`, its nginx `ingress`'s,
    /// reached through this link); `None`: this host.
    pub remote: Option<&'a Link>,
}

/// The release as the target runs it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shipment {
    pub commit: String,
    /// The image repository as the target runs it (with the registry when it pulls).
    pub image: String,
    pub tag: String,
    pub digest: Option<String>,
    /// The run's stage records (built, tested, pushed), for the timeline.
    pub stages: Vec<StageRun>,
    /// When the ref's head was first seen at this commit.
    pub detected: Option<jiff::Timestamp>,
    /// An earlier release put back (by hand, or by the automatic rollback).
    pub rollback: bool,
    /// A release of several images: image name → repository (local, as built), each with `tag`.
    pub images: BTreeMap<String, String>,
    /// Where the target runs `images` from: `REGISTRY/` when it pulls them, else nothing (on a
    /// receiving host the body's repositories are whole already).
    pub pulled_from: String,
    /// The digest of each of `images` pushed where the target pulls it from, by image name.
    pub digests: BTreeMap<String, String>,
}

impl Shipment {
    /// `images` as a webhook's body carries them: each as the target runs it, with the tag.
    pub(crate) fn release_images(&self) -> Vec<webhook::ReleaseImage> {
        self.images
            .iter()
            .map(|(name, repo)| webhook::ReleaseImage {
                name: name.clone(),
                image: format!("{}{repo}", self.pulled_from),
                tag: self.tag.clone(),
                digest: self.digests.get(name).cloned(),
            })
            .collect()
    }

    /// `PIPE_IMAGE_<IMAGE>` and `PIPE_TAG_<IMAGE>` for each image of a release of several (the
    /// name upper-cased, `-` as `_`), as every deploy exports them.
    pub(crate) fn image_env(&self) -> Vec<(String, String)> {
        self.release_images()
            .into_iter()
            .flat_map(|i| {
                let name = crate::config::image_env_name(&i.name);
                [(format!("PIPE_IMAGE_{name}"), i.image), (format!("PIPE_TAG_{name}"), i.tag)]
            })
            .collect()
    }
}

/// The `PIPE_*` variables of a shipment, as the caller exports them.
pub(crate) type Exports<'a> = &'a dyn Fn(&Shipment) -> Vec<(String, String)>;

/// One release going to one target.
pub(crate) struct Rollout<'a> {
    place: &'a Place<'a>,
    target: &'a Target<'a>,
    shipment: &'a Shipment,
    exports: Exports<'a>,
    /// The target's own `env`, read, and the secrets to mask.
    own: Vec<(String, String)>,
    redactor: Redactor,
    switched: Cell<Option<beside::Switched>>,
    answer: RefCell<Option<HealthAnswer>>,
    rolled_back_to: RefCell<Option<String>>,
}

impl<'a> Rollout<'a> {
    pub(crate) fn new(
        place: &'a Place<'a>,
        target: &'a Target<'a>,
        shipment: &'a Shipment,
        exports: Exports<'a>,
        (own, redactor): (Vec<(String, String)>, Redactor),
    ) -> Rollout<'a> {
        Rollout {
            place,
            target,
            shipment,
            exports,
            own,
            redactor,
            switched: Cell::new(None),
            answer: RefCell::new(None),
            rolled_back_to: RefCell::new(None),
        }
    }

    /// The health check's last answer when the deploy failed it.
    pub(crate) fn answer(&self) -> Option<HealthAnswer> {
        self.answer.borrow().clone()
    }

    /// `IMAGE:TAG` the automatic rollback put back, when it did.
    pub(crate) fn rolled_back_to(&self) -> Option<String> {
        self.rolled_back_to.borrow().clone()
    }

    /// A compose target whose services sit behind an ingress pipe switches: started beside
    /// the old release, checked, switched, drained.
    pub(crate) fn zero_downtime(&self) -> bool {
        self.target.kinds.compose.is_some() && !self.target.ingress.is_empty() && self.place.ingress.upstreams.is_some()
    }

    /// Hands the zero-downtime rollout of `shipment` on this target to `f`.
    fn beside<T>(&self, shipment: &Shipment, f: impl FnOnce(&Beside<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let (t, p) = (self.target, self.place);
        let Some(compose) = t.kinds.compose else { bail!("zero-downtime deploys need a compose target") };
        let mut env = self.env(shipment);
        if let Some(dir) = &p.docker.config_dir {
            env.push(("DOCKER_CONFIG".into(), dir.display().to_string()));
        }
        if let Some(host) = &p.docker.host {
            env.push(("DOCKER_HOST".into(), host.clone()));
            env.push(("DOCKER_CONTEXT".into(), String::new()));
        }
        let compose = Compose::new(p.out, p.docker, compose, p.compose_project, env)?.masking(self.redactor.clone());
        let nginx = Nginx::new(p.ingress, &p.log).ok_or_else(|| anyhow!("no `[ingress] upstreams`"))?.over(p.remote);
        let beside = Beside {
            out: p.out,
            docker: p.docker,
            compose: &compose,
            services: t.ingress,
            health: t.health,
            release: t.release,
            drain: t.drain,
            nginx: &nginx,
            pull: t.pull,
            log: &p.log,
            note: format!("{} {}:{} (commit {})", p.owner, shipment.image, shipment.tag, shipment.commit),
            answer: RefCell::new(None),
            pin: true,
            tunnel: p.remote,
        };
        let result = f(&beside);
        if let Some(answer) = beside.answer.take() {
            *self.answer.borrow_mut() = Some(answer);
        }
        result
    }

    /// The deploy's moments: the commit's stages from its run, readiness and the switch.
    fn timeline(&self, done: jiff::Timestamp) -> Timeline {
        let ended = |stage: Stage| {
            let s = self.shipment.stages.iter().rev().find(|s| s.stage == stage && s.result == Outcome::Passed)?;
            // Records older than `ended` only have a start to the second and a duration.
            s.ended.or_else(|| s.started.checked_add(jiff::SignedDuration::from_secs_f64(s.seconds)).ok())
        };
        let switched = self.switched.get();
        Timeline {
            detected: self.shipment.detected,
            built: ended(Stage::Build),
            tested: ended(Stage::Test),
            pushed: ended(Stage::Push),
            healthy: Some(switched.map_or(done, |s| s.healthy)),
            traffic: Some(switched.map_or(done, |s| s.switched)),
        }
    }

    /// What the target's commands run with: the `PIPE_*` variables, then its own `env`.
    fn env(&self, shipment: &Shipment) -> Vec<(String, String)> {
        let mut env = (self.exports)(shipment);
        env.extend(self.own.iter().cloned());
        env
    }

    /// The process commands of this shipment on this target (none for a webhook), in order.
    fn commands(&self, shipment: &Shipment) -> anyhow::Result<Vec<Cmd>> {
        let (t, p) = (self.target, self.place);
        let env = self.env(shipment);
        let Some(stack) = t.kinds.swarm else {
            return super::target_commands(p.out, p.docker, t.kinds, p.compose_project, t.pull, env);
        };
        // Start-first updates with automatic rollback, unless the stack file says otherwise.
        let extra = swarm::write_override(p.out, p.docker, stack, &env, &p.swarm_dir)?;
        Ok(vec![swarm::deploy_cmd(p.docker, stack, extra.as_deref(), &env)])
    }

    /// What a dry run prints.
    pub(crate) fn print_plan(&self) -> anyhow::Result<()> {
        if self.zero_downtime() {
            for cmd in self.beside(self.shipment, |b| Ok(b.commands()))? {
                crate::output::println(cmd)?;
            }
            return Ok(());
        }
        for cmd in self.commands(self.shipment)? {
            crate::output::println(cmd)?;
        }
        if let Some(hook) = self.target.webhook {
            for line in webhook::plan(hook, self.place.project, !self.shipment.images.is_empty()) {
                crate::output::println(line)?;
            }
        }
        Ok(())
    }

    /// Deploys, checks health, rolls back on failure, and records the target's history.
    pub(crate) fn run(&self) -> anyhow::Result<Timeline> {
        let (out, owner, name) = (self.place.out, self.place.owner, self.target.name);
        let (image, tag) = (&self.shipment.image, &self.shipment.tag);
        let path = &self.place.history;
        let mut history = state::load_deploys(path)?;
        out.info(format!("{owner}: deploying {image}:{tag} to `{name}`"));
        let spinner = out.spinner(&format!("deploying {image}:{tag} to {name}"));
        let deadline = Instant::now() + self.target.timeout;
        let applied = self.apply(self.shipment, deadline);
        // A webhook that was refused changed nothing on the far side: nothing to roll back.
        let may_roll_back = applied.is_ok() || self.target.webhook.is_none();
        let result = applied.and_then(|()| {
            spinner.set(&format!("checking health of {name}"));
            self.check(deadline)
        });
        spinner.finish();
        let mut record = DeployRecord {
            commit: self.shipment.commit.clone(),
            image: image.clone(),
            tag: tag.clone(),
            refname: self.place.refname.to_string(),
            at: crate::clock::precise(),
            result: DeployResult::Succeeded,
            timeline: None,
            rollback: self.shipment.rollback,
            images: self.shipment.images.clone(),
            hosts: Vec::new(),
        };
        let Err(err) = result else {
            let timeline = self.timeline(record.at);
            record.timeline = Some(timeline.clone());
            history.deploys.push(record);
            state::save_deploys(path, &mut history)?;
            out.info(format!("{owner}: deployed {image}:{tag} to `{name}`"));
            out.info(format!("{owner}: timeline of {tag} on `{name}`: {}", timeline.describe()));
            return Ok(timeline);
        };
        if passes_through(&err) {
            return Err(err);
        }
        record.result = DeployResult::Failed;
        if self.zero_downtime() {
            // Nothing was switched: the old release is the one serving; no rollback to run.
            history.deploys.push(record);
            state::save_deploys(path, &mut history)?;
            return Err(err.context(format!("deploy of {image}:{tag} to `{name}` failed")));
        }
        let previous = history
            .deploys
            .iter()
            .rev()
            .find(|d| d.result == DeployResult::Succeeded && (&d.image, &d.tag) != (image, tag))
            .filter(|_| may_roll_back)
            .cloned();
        let Some(previous) = previous else {
            history.deploys.push(record);
            state::save_deploys(path, &mut history)?;
            let why = if may_roll_back { ", and there is no earlier deploy to roll back to" } else { "" };
            return Err(err.context(format!("deploy of {image}:{tag} to `{name}` failed{why}")));
        };
        let (back_image, back_tag) = (&previous.image, &previous.tag);
        out.error(format!(
            "{owner}: deploy of {image}:{tag} to `{name}` failed: {err:#}; rolling back to {back_image}:{back_tag}"
        ));
        let back = Shipment {
            commit: previous.commit.clone(),
            image: back_image.clone(),
            tag: back_tag.clone(),
            rollback: true,
            images: previous.images.clone(),
            // The same target: its images come from where this release's would have.
            pulled_from: self.shipment.pulled_from.clone(),
            ..Shipment::default()
        };
        let deadline = Instant::now() + self.target.timeout;
        let rolled = self.apply(&back, deadline).and_then(|()| self.check(deadline));
        if rolled.as_ref().is_err_and(passes_through) {
            history.deploys.push(record);
            state::save_deploys(path, &mut history)?;
            return rolled.map(|()| Timeline::default());
        }
        record.result = if rolled.is_ok() { DeployResult::RolledBack } else { DeployResult::Failed };
        history.deploys.push(record);
        if rolled.is_ok() {
            *self.rolled_back_to.borrow_mut() = Some(format!("{back_image}:{back_tag}"));
            history.deploys.push(DeployRecord {
                at: crate::clock::precise(),
                result: DeployResult::Succeeded,
                timeline: None,
                rollback: true,
                ..previous.clone()
            });
        }
        state::save_deploys(path, &mut history)?;
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
    fn apply(&self, shipment: &Shipment, deadline: Instant) -> anyhow::Result<()> {
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let (out, docker) = (self.place.out, self.place.docker);
        if self.zero_downtime() {
            let switched = self.beside(shipment, |b| b.run(deadline))?;
            self.switched.set(Some(switched));
            return Ok(());
        }
        // A swarm's update of this deploy starts after this instant; one before it is another's.
        // Read on the manager's clock: it may be another machine's, ahead of or behind ours.
        let since = match self.target.kinds.swarm {
            Some(_) => swarm::engine_now(out, docker, &self.env(shipment)),
            None => None,
        };
        let since = since.unwrap_or_else(crate::clock::precise);
        for cmd in self.commands(shipment)? {
            let log = &self.place.log;
            let finished = redact::logged(out, &cmd, log, client::LOG_CAP, left(), &self.redactor, &mut |_| {})?;
            finished.check_interrupted()?;
            if !finished.success() {
                // Only a docker or compose command can say the engine went away; a deploy
                // script that failed on a host without an engine is the deploy's failure.
                let gone = if docker.runs(&cmd) {
                    // Asked of the engine the command used: the one the target's `env` names
                    // (a swarm manager elsewhere) when it names one.
                    let env = self.env(shipment);
                    let named = |key: &str| env.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v);
                    match (named("DOCKER_HOST"), named("DOCKER_CONTEXT")) {
                        (Some(host), _) => client::engine_gone(&docker.on(host.clone()), out, &finished),
                        (None, Some(_)) => client::engine_down(&finished.tail),
                        (None, None) => client::engine_gone(docker, out, &finished),
                    }
                } else {
                    client::engine_down(&finished.tail)
                };
                if gone {
                    return Err(client::engine_unavailable(docker, &finished.tail));
                }
                let tail = crate::output::tail_lines(&finished.tail, 10);
                let message = format!("`{cmd}` failed: {}\n{tail}", finished.describe());
                return Err(CommandFailed { code: finished.code, message }.into());
            }
        }
        if let Some(swarm) = self.target.kinds.swarm {
            super::wait_for_stack(out, docker, &swarm.stack, &self.env(shipment), since, deadline)?;
        }
        if let Some(hook) = self.target.webhook {
            let images = shipment.release_images();
            let delivery = webhook::Delivery {
                project: self.place.project,
                refname: self.place.refname,
                commit: &shipment.commit,
                image: &shipment.image,
                tag: &shipment.tag,
                digest: shipment.digest.as_deref(),
                images: &images,
                host: None,
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
        let Some(health) = self.target.health else { return Ok(()) };
        let (out, docker) = (self.place.out, self.place.docker);
        let mut last = None;
        let checked = super::check_health(out, docker, health, deadline, &self.redactor, &mut last);
        if checked.is_err() && last.is_some() {
            *self.answer.borrow_mut() = last;
        }
        checked
    }
}

/// A target's command failed, with its exit code (`None`: killed by a signal), for reports
/// that carry it (a hook run's `exit_code`).
#[derive(Debug)]
pub(crate) struct CommandFailed {
    pub code: Option<i32>,
    message: String,
}

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandFailed {}

/// Errors that are not the deploy's failure: a signal, an engine that does not answer, state
/// that cannot be read or written. Nothing is rolled back for them; they end the deploy.
pub(crate) fn passes_through(err: &anyhow::Error) -> bool {
    err.is::<Interrupted>() || err.is::<ToolUnavailable>() || err.is::<StateError>()
}
