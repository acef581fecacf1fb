//! The deploy stage: run the deploy targets configured for a branch (compose, swarm, command,
//! webhook), check health, roll back automatically when the check fails, and keep a short
//! history per target so `--commit` can roll back by hand.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::bail;

use super::{Job, RefFiles, fleet, fleet_ssh};
use crate::config::Deploy;
use crate::docker;
use crate::error::{StageFailed, Usage};
use crate::model::{Outcome, Stage};
use crate::refs;
use crate::state::{self, Run, StageRun, Timeline};
use crate::targets::beside;
use crate::targets::rollout::{Place, Rollout, Shipment, Target, passes_through};
use crate::targets::{self, Kinds};

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
    /// A release of several images: image name → local repository, all with the commit's tag.
    pub images: BTreeMap<String, String>,
    /// The digests of each of `images` by image name, then by registry (where it was pushed).
    pub digests: BTreeMap<String, BTreeMap<String, String>>,
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
        // Hosts over SSH switch their own nginx: its directory and command are the target's.
        let ssh_ingress = target.ssh.as_ref().map(|ssh| crate::config::Ingress {
            upstreams: Some(ssh.upstreams.clone()),
            nginx: ssh.nginx.clone(),
            ..job.config.ingress.clone()
        });
        let place = Place {
            out: &job.out,
            docker: &docker,
            ingress: ssh_ingress.as_ref().unwrap_or(&job.config.ingress),
            owner: job.name,
            project: job.name,
            compose_project: job.name,
            refname: &job.refname,
            history: state::deploys_path(job.state_path, job.name, target.display_name()),
            log: log.clone(),
            swarm_dir: job.config.settings.workspace.join("swarm"),
            remote: None,
        };
        let shape = target_of(job, target);
        let shipped = shipment(job, target, &release);
        let exports = |s: &Shipment| deploy_env(job, s, &release);
        let rollout = Rollout::new(&place, &shape, &shipped, &exports, own.clone());
        if dry_run {
            for host in target.ssh.iter().flat_map(|s| &s.hosts) {
                crate::output::println(format!(
                    "# on {host}: docker and compose through an ssh tunnel to its engine, nginx there through ssh"
                ))?;
            }
            rollout.print_plan()?;
            continue;
        }
        // A target that spans hosts: each host runs this rollout (its own receiver's, or this
        // one against its engine over SSH); the fleet orders them.
        let ran = if let Some(ssh) = &target.ssh {
            let name = target.display_name();
            let history = state::deploys_path(job.state_path, job.name, name);
            let histories = history.with_extension("hosts");
            let workspace = &job.config.settings.workspace;
            let fleet = fleet_ssh::SshFleet::new(
                job.out,
                ssh,
                &shape,
                &job.config.ingress,
                docker.clone(),
                (job.name, job.name),
                (histories, log.clone(), workspace.join("swarm"), workspace.join("ssh")),
                &exports,
                own,
            );
            fleet::rollout(job, name, &fleet, &shipped)
        } else if let Some(hook) = target.webhook.as_ref().filter(|h| h.is_fleet()) {
            let timeout = target.timeout.map_or_else(|| job.timeout(Stage::Deploy), |t| t.0);
            let receivers = fleet::Receivers { hook, project: job.name, timeout };
            fleet::rollout(job, target.display_name(), &receivers, &shipped)
        } else {
            rollout.run()
        };
        match ran {
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
        images: run.images.iter().map(|i| (i.name.clone(), i.image.clone())).collect(),
        digests: run.images.iter().map(|i| (i.name.clone(), i.digests.clone())).collect(),
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
                    images: d.images.clone(),
                    digests: BTreeMap::new(),
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

/// The shared rollout's view of a deploy entry.
fn target_of<'a>(job: &Job<'_>, target: &'a Deploy) -> Target<'a> {
    Target {
        name: target.display_name(),
        kinds: Kinds {
            compose: target.compose.as_ref(),
            swarm: target.swarm.as_ref(),
            command: target.command.as_ref(),
        },
        webhook: target.webhook.as_ref(),
        ingress: &target.ingress,
        health: target.health.as_ref(),
        release: target.release.as_ref(),
        drain: target.drain.map_or(beside::DEFAULT_DRAIN, |d| d.0),
        pull: !target.push.is_empty(),
        timeout: target.timeout.map_or_else(|| job.timeout(Stage::Deploy), |t| t.0),
    }
}

/// The release as `target` runs it: the image under the first registry it pushes to, else local,
/// tagged with the commit's immutable tag.
fn shipment(job: &Job<'_>, target: &Deploy, release: &Release) -> Shipment {
    let from = pulled_from(job, target);
    let image = format!("{from}{}", release.image);
    // Each image's digest in the registry the target pulls from (none for local images).
    let registry = target.push.first().map(|r| r.get_ref().as_str());
    let digests = release
        .digests
        .iter()
        .filter_map(|(name, by_registry)| Some((name.clone(), by_registry.get(registry?)?.clone())))
        .collect();
    Shipment {
        commit: release.commit.clone(),
        image,
        tag: docker::commit_tag(&release.commit).to_string(),
        digest: release.digest.clone(),
        stages: release.stages.clone(),
        detected: release.detected,
        rollback: release.rollback,
        images: release.images.clone(),
        pulled_from: from,
        digests,
    }
}

/// Where `target` runs images from: `REGISTRY/` of the first registry it pushes to, else nothing
/// (local images).
fn pulled_from(job: &Job<'_>, target: &Deploy) -> String {
    target
        .push
        .first()
        .and_then(|reg| job.config.registries.get(reg.get_ref()))
        .map_or_else(String::new, |r| format!("{}/", r.url))
}

/// The environment every deploy exports, for compose files and commands to interpolate. The
/// moving tag is the release's (for an automatic rollback, the immutable tag put back).
fn deploy_env(job: &Job<'_>, shipment: &Shipment, release: &Release) -> Vec<(String, String)> {
    let branch = job.refname.strip_prefix("refs/heads/").unwrap_or(&job.refname);
    let ref_tag = if shipment.commit == release.commit {
        release.tags.first().cloned().unwrap_or_default()
    } else {
        shipment.tag.clone()
    };
    let mut env: Vec<(String, String)> = vec![
        ("PIPE_IMAGE".into(), shipment.image.clone()),
        ("PIPE_TAG".into(), shipment.tag.clone()),
        ("PIPE_COMMIT".into(), shipment.commit.clone()),
        ("PIPE_BRANCH".into(), branch.into()),
        ("PIPE_PROJECT".into(), job.name.into()),
        ("PIPE_REF_TAG".into(), ref_tag),
    ];
    // Each image of a release of several, from where the target runs images, all with the tag.
    env.extend(shipment.image_env());
    env
}
