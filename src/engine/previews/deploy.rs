//! Deploying a pull request's preview on each of its project's preview targets, through the
//! same zero-downtime rollout as a target's (`targets::beside`) under an ingress site of its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use super::document::{ImageFacts, render, reshape};
use super::names::{DEFAULT_MAX, compose_project, isolated_network_name, preview_dir, targets, url};
use super::teardown::{stop, teardown};
use crate::config::Deploy;
use crate::docker::client::{self as client, Docker};
use crate::engine::{Job, RefFiles};
use crate::error::{Interrupted, StateError, ToolUnavailable};
use crate::exec;
use crate::model::{Outcome, Stage};
use crate::output::Output;
use crate::refs;
use crate::state::{self, Preview, Previews, StageRun};
use crate::targets::Compose;
use crate::targets::beside::{self, Beside};
use crate::targets::ingress::{Nginx, Site};
use crate::trust::isolation;

/// What one preview target did for a pull request: its context name and where it answers.
pub(crate) struct Deployed {
    pub target: String,
    pub outcome: anyhow::Result<String>,
}

/// Deploys the pull request's latest tested image as its preview on every preview target of
/// the project. Errors of one target are that target's outcome; an interruption, an engine
/// that does not answer or an unreadable state file is returned as the error.
///
/// `author` (`forge:login`, from `engine::authors`) is who opened the pull request: a new
/// preview of an author at `pipe.max_previews_per_author` takes the place of that author's own
/// oldest preview, and at `max_previews` that of the author holding the most, never another's
/// while its own are more.
pub(crate) fn deploy(job: &Job<'_>, files: &mut RefFiles, author: Option<&str>) -> anyhow::Result<Vec<Deployed>> {
    let Some(number) = refs::pull_number(&job.refname) else { return Ok(Vec::new()) };
    let targets = targets(job.project);
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let Some(run) = crate::engine::latest_built(&files.history, None) else {
        return Err(crate::engine::not_built(job));
    };
    if let Some(why) = crate::engine::gate::refuse_deploy(run, false) {
        bail!("refusing to deploy the preview of {}: {why}", refs::display(&job.refname));
    }
    let log = match files.run(run.number) {
        Some(run) => run.log.clone(),
        None => files.logs.join("deploy.log"),
    };
    let path = state::previews_path(job.state_path, job.name);
    let mut previews = state::load_previews(&path)?;
    let mut done = Vec::new();
    let (started, clock, number_run) = (crate::clock::now(), Instant::now(), run.number);
    let run = run.clone();
    let run = &run;
    for target in targets {
        let outcome = deploy_one(job, target, number, author, run, &log, &mut previews, &path);
        // Whatever happened, the file says what runs now.
        state::save_previews(&path, &previews)?;
        // Not the preview's failure: a signal, an engine that does not answer (the ref stays
        // pending for the next tick), state that cannot be read or written.
        if let Err(err) = &outcome
            && (err.is::<Interrupted>() || err.is::<ToolUnavailable>() || err.is::<StateError>())
        {
            return Err(outcome.unwrap_err());
        }
        done.push(Deployed { target: target.display_name().to_string(), outcome });
    }
    let result = if done.iter().all(|d| d.outcome.is_ok()) { Outcome::Passed } else { Outcome::Failed };
    job.record(files, number_run, StageRun::new(Stage::Deploy, result, started, clock.elapsed(), None))?;
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
fn deploy_one(
    job: &Job<'_>,
    target: &Deploy,
    number: u64,
    author: Option<&str>,
    run: &state::Run,
    log: &Path,
    previews: &mut Previews,
    path: &Path,
) -> anyhow::Result<String> {
    let (out, name, config) = (&job.out, job.name, job.config);
    let trusted = job.trusted();
    let project = compose_project(name, target, number);
    let url = url(config, name, target, number);
    let max = target.max_previews.unwrap_or(DEFAULT_MAX);
    let same = |p: &Preview| p.target == target.display_name();
    // A preview whose trust changed (the pipeline file's `trust_pull_requests`) starts over:
    // its network and confinement are not the ones it runs with.
    if let Some(old) = previews.previews.iter().find(|p| same(p) && p.number == number && p.trusted != trusted).cloned()
    {
        out.info(format!(
            "{name}: removing the preview of {} to redeploy it {}",
            refs::display(&old.refname),
            if trusted { "trusted" } else { "untrusted" }
        ));
        // Not its images: the one about to be deployed is among them.
        stop(out, config, job.state_path, &old)?;
        previews.previews.retain(|p| !(same(p) && p.number == number));
        state::save_previews(path, previews)?;
    }
    if !previews.previews.iter().any(|p| same(p) && p.number == number) {
        let per_author = config.settings.max_previews_per_author.max(1);
        loop {
            let running: Vec<&Preview> = previews.previews.iter().filter(|p| same(p)).collect();
            let own = running.iter().filter(|p| author.is_some() && p.author.as_deref() == author).count();
            let why = if own >= per_author {
                format!("`max_previews_per_author` is {per_author}")
            } else if running.len() >= max {
                format!("`max_previews` is {max}")
            } else {
                break;
            };
            let Some(oldest) = evictee(&running, author, per_author).cloned() else { break };
            out.info(format!(
                "{name}: removing the preview of {} on `{}` (the oldest idle one of {}, since {}): {why}",
                refs::display(&oldest.refname),
                oldest.target,
                oldest.author.as_deref().map_or_else(|| "an unknown author".to_string(), |a| format!("`{a}`")),
                oldest.updated
            ));
            teardown(out, config, job.state_path, name, &oldest)?;
            previews.previews.retain(|p| !(same(p) && p.number == oldest.number));
        }
    }
    let docker = if trusted { job.docker() } else { job.untrusted_docker()? };
    let tag = crate::engine::run_tag(run).to_string();
    let mut env = vec![
        ("PIPE_IMAGE".to_string(), run.image.clone()),
        ("PIPE_TAG".into(), tag.clone()),
        ("PIPE_COMMIT".into(), run.commit.clone()),
        ("PIPE_BRANCH".into(), refs::display(&job.refname).to_string()),
        ("PIPE_PROJECT".into(), name.to_string()),
        ("PIPE_REF_TAG".into(), run.tags.first().cloned().unwrap_or_default()),
        ("PIPE_PREVIEW_URL".into(), url.clone()),
    ];
    // A trusted preview gets the target's literal variables, never its secrets (nor anything
    // else of pipe's environment): those are the target's alone.
    if trusted {
        env.extend(target.env.iter().filter_map(|(k, v)| match v.get_ref() {
            crate::config::ArgValue::Literal(v) => Some((k.clone(), v.clone())),
            crate::config::ArgValue::Secret(_) => None,
        }));
    }
    // Pulls for other services use the chosen client's logins: none for an untrusted one.
    if let Some(dir) = &docker.config_dir {
        env.push(("DOCKER_CONFIG".into(), dir.display().to_string()));
    }
    let dir = preview_dir(job.state_path, &project);
    crate::engine::ensure_private_dir(&dir)?;
    let file = dir.join("compose.json");
    let compose_target = target.compose.as_ref().ok_or_else(|| anyhow!("previews need a compose target"))?;
    let program = docker.compose(out)?;
    // An untrusted pull request's compose runs get an empty `--env-file` of pipe's own.
    let clean = if trusted {
        None
    } else {
        let empty = dir.join("empty.env");
        std::fs::write(&empty, "").with_context(|| format!("failed to write `{}`", empty.display()))?;
        Some(empty)
    };
    let rendered = render(out, &program, &project, &compose_target.file, &env, clean.clone())?;
    let confinement = (!trusted).then(|| job.project.limits.confinement());
    // An untrusted preview's network is made by pipe, its bridge named and firewalled like the
    // networks of untrusted builds and tests (neither the host nor the LAN) before anything of
    // the preview starts: a bridge that exists is never taken for a stale one by a sweep.
    let what = format!("{name}: the preview of {}", refs::display(&job.refname));
    let network = if trusted { None } else { Some(isolated_network(out, &docker, &project, &what)?) };
    let timeout = target.timeout.map_or_else(|| job.timeout(Stage::Deploy), |t| t.0);
    // What the rollout starts: the target's services and its ingress's, with what they need.
    let runs: Vec<String> = target.ingress.keys().chain(&compose_target.services).cloned().collect();
    let mut image = |name: &str| image_facts(out, &docker, name, timeout);
    let (document, dropped) =
        reshape(&rendered, confinement.as_ref(), &project, network.as_deref(), &runs, &mut image)?;
    for what in &dropped {
        out.warn(format!("{name}: preview of {}: {what}", refs::display(&job.refname)));
    }
    std::fs::write(&file, serde_json::to_vec_pretty(&document)?)
        .with_context(|| format!("failed to write `{}`", file.display()))?;
    let compose = Compose::own(program, project.clone(), file, env, compose_target.services.clone(), clean);
    let hosts = target
        .ingress
        .keys()
        .map(|service| {
            let template = crate::config::preview_host_template(target);
            (service.clone(), crate::config::preview_host(template, number, name, service, &config.ingress.domain))
        })
        .collect();
    let mut nginx = Nginx::new(&config.ingress, log).ok_or_else(|| anyhow!("previews need `[ingress] upstreams`"))?;
    nginx.site = Some(Site { prefix: project.clone(), hosts });
    let beside = Beside {
        out,
        docker: &docker,
        compose: &compose,
        services: &target.ingress,
        health: target.health.as_ref(),
        release: target.release.as_ref(),
        drain: target.drain.map_or(beside::DEFAULT_DRAIN, |d| d.0),
        nginx: &nginx,
        pull: false,
        log,
        note: format!("preview of {name} {} at {}:{tag}", refs::display(&job.refname), run.image),
        answer: Default::default(),
        pin: false,
        tunnel: None,
    };
    out.info(format!(
        "{name}: deploying the preview of {} ({}:{tag}) as `{project}`",
        refs::display(&job.refname),
        run.image
    ));
    let now = crate::clock::now();
    if !previews.previews.iter().any(|p| same(p) && p.number == number) {
        // Recorded before anything starts (with no commit yet), so that whatever a failed or
        // killed first deploy leaves is removed when the pull request closes.
        previews.previews.push(Preview {
            target: target.display_name().to_string(),
            number,
            refname: job.refname.clone(),
            compose_project: project.clone(),
            services: target.ingress.keys().cloned().collect(),
            commit: String::new(),
            image: String::new(),
            url: url.clone(),
            trusted,
            created: now,
            updated: now,
            author: author.map(str::to_string),
        });
        state::save_previews(path, previews)?;
    }
    let result = beside.run(Instant::now() + timeout);
    if result.is_ok()
        && let Some(p) = previews.previews.iter_mut().find(|p| same(p) && p.number == number)
    {
        p.commit = run.commit.clone();
        p.image = format!("{}:{tag}", run.image);
        p.url = url.clone();
        p.services = target.ingress.keys().cloned().collect();
        p.trusted = trusted;
        p.updated = now;
        p.author = author.map(str::to_string);
    }
    result.map_err(|e| {
        e.context(format!("preview of {} on `{}` failed", refs::display(&job.refname), target.display_name()))
    })?;
    out.info(format!("{name}: preview of {} answers at {url}", refs::display(&job.refname)));
    Ok(url)
}

/// Which running preview makes room for a new one of `author`: the author's own oldest when
/// it holds `per_author` already; otherwise the oldest of whoever holds the most (previews of
/// no known author counted as one), so a contributor with many pull requests gives way first.
fn evictee<'a>(running: &[&'a Preview], author: Option<&str>, per_author: usize) -> Option<&'a Preview> {
    let own: Vec<&'a Preview> = running.iter().copied().filter(|p| p.author.as_deref() == author).collect();
    if author.is_some() && own.len() >= per_author {
        return own.into_iter().min_by_key(|p| p.updated);
    }
    let mut held: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for p in running {
        *held.entry(p.author.as_deref()).or_default() += 1;
    }
    let most = held.values().copied().max()?;
    running.iter().copied().filter(|p| held[&p.author.as_deref()] == most).min_by_key(|p| p.updated)
}

/// What confining a service of an untrusted preview needs of `image` ([`ImageFacts`]). An
/// image not on this host is pulled first, as compose would pull it to start the service, with
/// the same client (an untrusted preview's: no registry logins).
fn image_facts(out: &Output, docker: &Docker, image: &str, timeout: Duration) -> anyhow::Result<ImageFacts> {
    let inspect = || docker.cmd().args(["image", "inspect", "--format", "{{json .Config}}", "--", image]);
    let text = match exec::capture(out, &inspect(), Duration::from_secs(60)) {
        Ok(text) => text,
        Err(_) => {
            out.info(format!("pulling `{image}` to read its volumes"));
            exec::capture(out, &docker.cmd().args(["pull", "--", image]), timeout)
                .map_err(|e| client::classify(docker, e))
                .with_context(|| format!("failed to pull `{image}`, an image of the preview"))?;
            exec::capture(out, &inspect(), Duration::from_secs(60))
                .map_err(|e| client::classify(docker, e))
                .with_context(|| format!("failed to inspect `{image}`, an image of the preview"))?
        }
    };
    ImageFacts::parse(&text).with_context(|| format!("failed to read the configuration of `{image}`"))
}

/// The network of an untrusted preview, made once by pipe (labelled as the preview's and as
/// its compose project's, so teardown finds it) with a bridge pipe names, and that bridge's
/// firewall rules in place; or, on a host that cannot enforce them, a warning saying so.
fn isolated_network(out: &Output, docker: &Docker, project: &str, what: &str) -> anyhow::Result<String> {
    let network = isolated_network_name(project);
    let bridge = isolation::bridge_name(&network);
    let inspect = docker.cmd().args(["network", "inspect", "--format", "{{.Id}}", &network]);
    if exec::capture(out, &inspect, Duration::from_secs(30)).is_err() {
        let create = docker.cmd().args([
            "network".to_string(),
            "create".into(),
            "--driver".into(),
            "bridge".into(),
            "--label".into(),
            format!("pipe.preview={project}"),
            "--label".into(),
            format!("com.docker.compose.project={project}"),
            "--opt".into(),
            format!("com.docker.network.bridge.name={bridge}"),
            network.clone(),
        ]);
        exec::capture(out, &create, Duration::from_secs(60))
            .map_err(|e| client::classify(docker, e))
            .with_context(|| format!("failed to create the network `{network}` of the preview `{project}`"))?;
    }
    match isolation::unenforceable() {
        Some(why) => out.warn(format!("{what} can reach services listening on this host and its LAN: {why}")),
        None => isolation::ensure_firewall(out, &bridge)?,
    }
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preview(number: u64, author: Option<&str>, updated: i64) -> Preview {
        let at = jiff::Timestamp::from_second(updated).unwrap();
        Preview {
            target: "dev".into(),
            number,
            refname: format!("refs/pull/{number}/head"),
            compose_project: format!("app-pr-{number}"),
            services: vec!["web".into()],
            commit: String::new(),
            image: String::new(),
            url: String::new(),
            trusted: false,
            created: at,
            updated: at,
            author: author.map(str::to_string),
        }
    }

    #[test]
    fn the_author_holding_the_most_gives_way_and_an_author_at_the_bound_replaces_their_own() {
        let (alice, mallory) = (Some("gh:alice"), Some("gh:mallory"));
        // Alice's preview is the oldest, Mallory holds three.
        let running =
            [preview(9, alice, 10), preview(1, mallory, 20), preview(2, mallory, 30), preview(3, mallory, 40)];
        let refs: Vec<&Preview> = running.iter().collect();
        assert_eq!(evictee(&refs, Some("gh:bob"), 3).map(|p| p.number), Some(1), "not Alice's, though oldest");
        assert_eq!(evictee(&refs, mallory, 3).map(|p| p.number), Some(1), "Mallory's own oldest");
        assert_eq!(evictee(&refs, alice, 1).map(|p| p.number), Some(9), "Alice at her bound replaces her own");
        assert_eq!(evictee(&[], alice, 1).map(|p| p.number), None);
    }
}
