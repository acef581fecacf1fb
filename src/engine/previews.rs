//! Pull-request previews: each open pull request's tested image runs as a compose project of
//! its own (`<project>-pr-<N>`) beside a target marked `previews = true`, reachable through the
//! ingress at a name of its own, and is torn down (containers, networks, volumes, images, the
//! ingress's name) when the pull request closes, idles past the target's TTL, or makes room
//! under `max_previews`.
//!
//! The pipeline file decides how a preview runs, never the pull request: compose renders the
//! target's own compose file (`compose config`), and pipe writes the file the preview runs
//! from. For an untrusted pull request compose renders it with pipe's deploy variables only
//! (no secret of pipe's environment can be interpolated), each service keeps only the test
//! services' allow-list plus named volumes of its own, and gets the test containers'
//! confinement; for every preview, ports, fixed names and other networks are dropped, so it
//! sits alone on its own network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

use super::{Job, RefFiles, isolation};
use crate::config::{Config, Deploy, Project};
use crate::docker::Confinement;
use crate::docker::client::{self as client, Docker};
use crate::error::{Interrupted, StateError, ToolUnavailable};
use crate::exec;
use crate::model::{Outcome, Stage};
use crate::output::Output;
use crate::refs;
use crate::state::{self, Preview, Previews, StageRun, State};
use crate::targets::Compose;
use crate::targets::beside::{self, Beside};
use crate::targets::ingress::{Nginx, Site};

/// Previews of a target that has no TTL of its own are removed after a week without a commit.
const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_MAX: usize = 10;
/// Keys of a service dropped from every preview, trusted or not: its own network, names and
/// ports, nothing built.
const DROPPED_ALWAYS: &[&str] =
    &["ports", "container_name", "networks", "network_mode", "links", "external_links", "build", "profiles"];

/// The deploy entries of a project that run previews.
pub(crate) fn targets(project: &Project) -> Vec<&Deploy> {
    project.deploy.iter().map(|d| d.get_ref()).filter(|d| d.previews && d.compose.is_some()).collect()
}

/// The compose project of pull request `number`'s preview of `target`.
pub(crate) fn compose_project(name: &str, target: &Deploy, number: u64) -> String {
    let base = target.compose.as_ref().and_then(|c| c.project.as_deref()).unwrap_or(name);
    format!("{base}-pr-{number}")
}

/// The preview's address through the ingress: its first service's host name, with the port
/// nginx listens on unless it is 80.
pub(crate) fn url(config: &Config, name: &str, target: &Deploy, number: u64) -> String {
    let service = target.ingress.keys().next().map_or("", String::as_str);
    let template = crate::config::preview_host_template(target);
    let host = crate::config::preview_host(template, number, name, service, &config.ingress.domain);
    let port = config.ingress.listen.rsplit(':').next().unwrap_or("80");
    if port == "80" { format!("http://{host}/") } else { format!("http://{host}:{port}/") }
}

/// What one preview target did for a pull request: its context name and where it answers.
pub(crate) struct Deployed {
    pub target: String,
    pub outcome: anyhow::Result<String>,
}

/// Deploys the pull request's latest tested image as its preview on every preview target of
/// the project. Errors of one target are that target's outcome; an interruption, an engine
/// that does not answer or an unreadable state file is returned as the error.
pub(crate) fn deploy(job: &Job<'_>, files: &mut RefFiles) -> anyhow::Result<Vec<Deployed>> {
    let Some(number) = refs::pull_number(&job.refname) else { return Ok(Vec::new()) };
    let targets = targets(job.project);
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let Some(run) = super::latest_built(&files.history, None) else { return Err(super::not_built(job)) };
    if let Some(why) = super::gate::refuse_deploy(run, false) {
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
        let outcome = deploy_one(job, target, number, run, &log, &mut previews, &path);
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

fn deploy_one(
    job: &Job<'_>,
    target: &Deploy,
    number: u64,
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
        while previews.previews.iter().filter(|p| same(p)).count() >= max {
            let Some(oldest) = previews.previews.iter().filter(|p| same(p)).min_by_key(|p| p.updated).cloned() else {
                break;
            };
            out.info(format!(
                "{name}: removing the preview of {} on `{}` (the oldest idle one, since {}): `max_previews` is {max}",
                refs::display(&oldest.refname),
                oldest.target,
                oldest.updated
            ));
            teardown(out, config, job.state_path, name, &oldest)?;
            previews.previews.retain(|p| !(same(p) && p.number == oldest.number));
        }
    }
    let docker = if trusted { job.docker() } else { job.untrusted_docker()? };
    let tag = super::run_tag(run).to_string();
    let mut env = vec![
        ("PIPE_IMAGE".to_string(), run.image.clone()),
        ("PIPE_TAG".into(), tag.clone()),
        ("PIPE_COMMIT".into(), run.commit.clone()),
        ("PIPE_BRANCH".into(), refs::display(&job.refname).to_string()),
        ("PIPE_PROJECT".into(), name.to_string()),
        ("PIPE_REF_TAG".into(), run.tags.first().cloned().unwrap_or_default()),
        ("PIPE_PREVIEW_URL".into(), url.clone()),
    ];
    // Pulls for other services use the chosen client's logins: none for an untrusted one.
    if let Some(dir) = &docker.config_dir {
        env.push(("DOCKER_CONFIG".into(), dir.display().to_string()));
    }
    let dir = preview_dir(job.state_path, &project);
    super::ensure_private_dir(&dir)?;
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
    let (document, dropped) = reshape(&rendered, confinement.as_ref(), &project, network.as_deref())?;
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
    };
    let timeout = target.timeout.map_or_else(|| job.timeout(Stage::Deploy), |t| t.0);
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
    }
    result.map_err(|e| {
        e.context(format!("preview of {} on `{}` failed", refs::display(&job.refname), target.display_name()))
    })?;
    out.info(format!("{name}: preview of {} answers at {url}", refs::display(&job.refname)));
    Ok(url)
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

fn isolated_network_name(project: &str) -> String {
    format!("{project}_isolated")
}

/// pipe's own directory of a preview: the compose file it runs from, nothing of the repository.
fn preview_dir(state_path: &Path, compose_project: &str) -> PathBuf {
    state::state_dir(state_path).join("previews").join(compose_project)
}

/// The target's compose file as compose resolves it for the preview's project: with pipe's
/// deploy variables, and for an untrusted pull request (`untrusted`: pipe's directory of the
/// preview) nothing else of pipe's environment, nor of the `.env` file compose would read
/// beside the target's file: an empty one of pipe's own stands in for it.
fn render(
    out: &Output,
    program: &[std::ffi::OsString],
    project: &str,
    file: &Path,
    env: &[(String, String)],
    clean: Option<PathBuf>,
) -> anyhow::Result<String> {
    let compose =
        Compose::own(program.to_vec(), project.to_string(), file.to_path_buf(), env.to_vec(), Vec::new(), clean);
    let cmd = compose.cmd(&["config"], &[] as &[&str]);
    exec::capture(out, &cmd, Duration::from_secs(60))
        .with_context(|| format!("failed to read the compose file `{}` for a preview", file.display()))
}

/// The compose document a preview runs: from compose's rendering of the target's file, without
/// ports, fixed names or other networks; for an untrusted pull request (`confinement`) only the
/// allow-listed keys and named volumes of its own, confined. Returns what was left out.
fn reshape(
    rendered: &str,
    confinement: Option<&Confinement>,
    project: &str,
    network: Option<&str>,
) -> anyhow::Result<(Value, Vec<String>)> {
    let docs = YamlLoader::load_from_str(rendered).map_err(|e| anyhow!("compose printed invalid YAML: {e}"))?;
    let root = docs.first().map(to_json).unwrap_or(Value::Null);
    let mut dropped = Vec::new();
    let declared: Vec<String> = root
        .get("volumes")
        .and_then(Value::as_object)
        .map(|v| {
            v.iter()
                .filter(|(_, spec)| spec.get("external").is_none_or(|e| e == &json!(false)))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut services = Map::new();
    let given = root.get("services").and_then(Value::as_object).cloned().unwrap_or_default();
    for (service_name, service) in given {
        let Value::Object(service) = service else { continue };
        let mut kept = Map::new();
        for (key, value) in service {
            if DROPPED_ALWAYS.contains(&key.as_str()) {
                continue;
            }
            if key == "volumes" {
                let volumes = own_volumes(&value, &declared, confinement.is_some(), &service_name, &mut dropped);
                if !volumes.is_empty() {
                    kept.insert(key, Value::Array(volumes));
                }
                continue;
            }
            if confinement.is_some() && !super::services::SERVICE_KEYS.contains(&key.as_str()) {
                dropped.push(format!("service `{service_name}`: `{key}` is not given to an untrusted pull request"));
                continue;
            }
            kept.insert(key, value);
        }
        if let Some(confinement) = confinement {
            super::services::confine(&mut kept, confinement);
        }
        let labels = kept.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("pipe.preview".into(), json!(project));
        }
        services.insert(service_name, Value::Object(kept));
    }
    // Everything of the preview carries its label: teardown removes only what has it.
    let volumes: Map<String, Value> =
        declared.iter().map(|v| (v.clone(), json!({ "labels": { "pipe.preview": project } }))).collect();
    let network = match network {
        Some(name) => json!({ "external": { "name": name } }),
        None => json!({ "labels": { "pipe.preview": project } }),
    };
    let document = json!({
        "version": "2.4",
        "services": services,
        "volumes": volumes,
        "networks": { "default": network },
    });
    Ok((document, dropped))
}

/// A service's volumes that belong to the preview alone: named volumes the file declares
/// (not external: the preview's project prefixes them) and anonymous ones; host paths only
/// for a trusted pull request.
fn own_volumes(
    value: &Value,
    declared: &[String],
    untrusted: bool,
    service: &str,
    dropped: &mut Vec<String>,
) -> Vec<Value> {
    let mut kept = Vec::new();
    for volume in value.as_array().into_iter().flatten() {
        let source = match volume {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() == 1 { None } else { Some(parts[0].to_string()) }
            }
            Value::Object(o) => o.get("source").and_then(Value::as_str).map(str::to_string),
            _ => continue,
        };
        let kind = volume.get("type").and_then(Value::as_str);
        let host = source.as_deref().is_some_and(|s| s.starts_with('/') || s.starts_with('.') || s.starts_with('~'))
            || kind == Some("bind");
        let ok = match &source {
            None => kind.is_none_or(|k| k == "volume" || k == "tmpfs"),
            Some(s) if host => !untrusted && !s.is_empty(),
            Some(s) => declared.contains(s),
        };
        if ok {
            kept.push(volume.clone());
        } else {
            let shown = source.unwrap_or_default();
            let why = if host { "a host path is not mounted" } else { "a volume the preview does not own" };
            dropped.push(format!("service `{service}`: `{shown}` left out ({why})"));
        }
    }
    kept
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(r) => r.parse::<f64>().map(|f| json!(f)).unwrap_or_else(|_| json!(r)),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(hash) => Value::Object(
            hash.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        Yaml::Real(r) => r.clone(),
                        _ => String::new(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Removes a preview: its containers, networks and volumes (by compose's project label), its
/// images, its name in the ingress, and pipe's directory of it.
pub(crate) fn teardown(
    out: &Output,
    config: &Config,
    state_path: &Path,
    name: &str,
    preview: &Preview,
) -> anyhow::Result<()> {
    stop(out, config, state_path, preview)?;
    let docker = Docker::new(Some(state::docker_config_dir(state_path)));
    let images = preview_images(state_path, name, preview)?;
    if !images.is_empty() {
        // Never forced: an image something else still uses stays, with a warning.
        if let Err(err) =
            exec::capture(out, &docker.cmd().args(["image", "rm"]).args(&images), Duration::from_secs(120))
        {
            out.warn(format!("{name}: some images of the preview `{}` were kept: {err:#}", preview.compose_project));
        }
    }
    out.info(format!(
        "{name}: removed the preview of {} (`{}`)",
        refs::display(&preview.refname),
        preview.compose_project
    ));
    Ok(())
}

/// Everything of a preview but its images: containers, networks, volumes, its firewall rules,
/// its name in the ingress, and pipe's directory of it.
fn stop(out: &Output, config: &Config, state_path: &Path, preview: &Preview) -> anyhow::Result<()> {
    let docker = Docker::new(Some(state::docker_config_dir(state_path)));
    // Only what carries the preview's own label: never another deployment's containers,
    // networks or volumes, even one whose compose project has the preview's name.
    let label = format!("label=pipe.preview={}", preview.compose_project);
    for (list, remove) in [
        (vec!["ps", "--all", "--quiet", "--filter"], vec!["rm", "--force", "--volumes"]),
        (vec!["network", "ls", "--quiet", "--filter"], vec!["network", "rm"]),
        (vec!["volume", "ls", "--quiet", "--filter"], vec!["volume", "rm", "--force"]),
    ] {
        let ids = exec::capture(out, &docker.cmd().args(&list).arg(&label), Duration::from_secs(60))
            .map_err(|e| client::classify(&docker, e))?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            exec::capture(out, &docker.cmd().args(&remove).args(&ids), Duration::from_secs(120))
                .map_err(|e| client::classify(&docker, e))
                .with_context(|| format!("failed to remove the preview `{}`", preview.compose_project))?;
        }
    }
    if !preview.trusted && isolation::unenforceable().is_none() {
        let network = isolated_network_name(&preview.compose_project);
        isolation::remove_firewall(out, &isolation::bridge_name(&network));
    }
    let log = state::state_dir(state_path).join("previews").join("ingress.log");
    if let Some(mut nginx) = Nginx::new(&config.ingress, &log) {
        nginx.site = Some(Site { prefix: preview.compose_project.clone(), hosts: BTreeMap::new() });
        let services: Vec<&str> = preview.services.iter().map(String::as_str).collect();
        nginx.forget(out, &services)?;
    }
    let dir = preview_dir(state_path, &preview.compose_project);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        out.warn(format!("could not remove `{}`: {e}", dir.display()));
    }
    Ok(())
}

/// Every local tag of the pull request's images: its runs' commit tags and moving tags, except
/// those of a commit another ref of the project is at or a deploy target ran (a pull request
/// opened from a branch's head shares that branch's image).
fn preview_images(state_path: &Path, name: &str, preview: &Preview) -> anyhow::Result<Vec<String>> {
    let st = state::load(state_path)?;
    let mut others: Vec<String> = st
        .project
        .get(name)
        .map(|p| {
            p.refs
                .iter()
                .filter(|(refname, _)| **refname != preview.refname)
                .flat_map(|(_, r)| [Some(r.head.clone()), r.last.as_ref().map(|l| l.commit.clone())])
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    let [_, _, deploys] = state::project_dirs(state_path, name);
    for entry in std::fs::read_dir(deploys).into_iter().flatten().flatten() {
        if let Ok(history) = state::load_deploys(&entry.path()) {
            others.extend(history.deploys.into_iter().map(|d| d.commit));
        }
    }
    let mut images = Vec::new();
    let path = state::history_path(state_path, name, &preview.refname);
    let history = state::load_history(&path, &preview.refname)?;
    for run in history.runs.iter().filter(|r| !others.contains(&r.commit)) {
        images.push(super::run_image(run));
        images.extend(run.tags.iter().map(|t| format!("{}:{t}", run.image)));
    }
    if !preview.commit.is_empty() && !others.contains(&preview.commit) {
        images.push(preview.image.clone());
    }
    images.sort();
    images.dedup();
    Ok(images)
}

/// Why a preview should go now, if it should: its pull request closed or is gone, its target
/// no longer runs previews, or (with `ttl`) it idled past the target's TTL.
fn reason(
    config: &Config,
    st: &State,
    name: &str,
    preview: &Preview,
    now: jiff::Timestamp,
    ttl: bool,
) -> Option<String> {
    let Some(project) = config.projects.get(name) else {
        return Some("its project is no longer in the pipeline file nor discovered".into());
    };
    let r = st.project.get(name).and_then(|p| p.refs.get(&preview.refname));
    match r {
        None => return Some("the pull request is gone".into()),
        Some(r) if r.closed => return Some("the pull request was closed or merged".into()),
        Some(_) => {}
    }
    let Some(target) = targets(project).into_iter().find(|t| t.display_name() == preview.target) else {
        return Some(format!("`{}` no longer runs previews", preview.target));
    };
    let limit = target.preview_ttl.map_or(DEFAULT_TTL, |t| t.0);
    let idle = now.duration_since(preview.updated).unsigned_abs();
    (ttl && idle > limit).then(|| format!("it had no new commit for {}s (`preview_ttl`)", idle.as_secs()))
}

/// Projects that still have previews recorded but are no longer configured (removed from the
/// pipeline file, or no longer discovered): their previews are swept like any other's.
pub(crate) fn orphaned(config: &Config, state_path: &Path) -> Vec<String> {
    let dir = state::state_dir(state_path).join("previews");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
        .filter(|name| !config.projects.contains_key(name) && crate::config::validate_name(name).is_ok())
        .collect();
    names.sort();
    names
}

/// Tears down the previews that should go (see [`reason`]); with `ttl = false` (`pipe prune`),
/// only those whose pull request is gone. Returns the previews removed. A project without a
/// previews file costs one `stat`.
pub(crate) fn sweep(
    out: &Output,
    config: &Config,
    state_path: &Path,
    st: &State,
    projects: &[&str],
    ttl: bool,
    dry_run: bool,
) -> anyhow::Result<Vec<Preview>> {
    let mut removed = Vec::new();
    let now = crate::clock::now();
    for name in projects {
        let path = state::previews_path(state_path, name);
        if !path.exists() {
            continue;
        }
        let mut previews = state::load_previews(&path)?;
        let mut kept = Vec::new();
        let before = removed.len();
        for preview in std::mem::take(&mut previews.previews) {
            let Some(why) = reason(config, st, name, &preview, now, ttl) else {
                kept.push(preview);
                continue;
            };
            let verb = if dry_run { "would remove" } else { "removing" };
            out.info(format!(
                "{name}: {verb} the preview of {} (`{}`): {why}",
                refs::display(&preview.refname),
                preview.compose_project
            ));
            if dry_run {
                kept.push(preview);
                continue;
            }
            match teardown(out, config, state_path, name, &preview) {
                Ok(()) => removed.push(preview),
                Err(err) => {
                    out.warn(format!("{name}: the preview `{}` was not removed: {err:#}", preview.compose_project));
                    kept.push(preview);
                }
            }
        }
        // A tick that removes nothing writes nothing.
        previews.previews = kept;
        if removed.len() > before {
            state::save_previews(&path, &previews)?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "services:\n  web:\n    image: x:y\n    privileged: true\n    cap_add: [SYS_ADMIN]\n    \
        ports:\n    - target: 8080\n    environment:\n      A: b\n    networks:\n      default: null\n      other: null\n    \
        volumes:\n    - data:/data:rw\n    - /etc:/host:ro\n    - ext:/ext:rw\n    - /anon\n\
        version: '2.4'\nvolumes:\n  data: {}\n  ext:\n    external: true\n    name: ext\n\
        networks:\n  other:\n    external: true\n    name: other\n";

    #[test]
    fn an_untrusted_preview_keeps_only_what_is_its_own_and_is_confined() {
        let confinement = Confinement { memory: "256m".into(), pids: 100, cpus: 0.5, egress: false };
        let (doc, dropped) = reshape(RENDERED, Some(&confinement), "app-pr-3", Some("app-pr-3_isolated")).unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["image"], "x:y");
        assert_eq!(web["environment"]["A"], "b");
        assert!(web.get("privileged").is_none() && web.get("cap_add").is_none(), "{web}");
        assert!(web.get("ports").is_none() && web.get("networks").is_none(), "{web}");
        assert_eq!(web["volumes"], json!(["data:/data:rw", "/anon"]));
        assert_eq!(web["cap_drop"], json!(["ALL"]));
        assert_eq!(web["security_opt"], json!(["no-new-privileges:true"]));
        assert_eq!(web["mem_limit"], "256m");
        assert_eq!(web["pids_limit"], 100);
        assert_eq!(web["labels"]["pipe.preview"], "app-pr-3");
        assert_eq!(doc["volumes"], json!({"data": {"labels": {"pipe.preview": "app-pr-3"}}}));
        assert_eq!(doc["networks"], json!({"default": {"external": {"name": "app-pr-3_isolated"}}}));
        let dropped = dropped.join("\n");
        for word in ["privileged", "cap_add", "/etc", "ext"] {
            assert!(dropped.contains(word), "{dropped}");
        }
    }

    #[test]
    fn a_trusted_preview_keeps_its_keys_but_not_ports_or_other_networks() {
        let (doc, _) = reshape(RENDERED, None, "app-pr-3", None).unwrap();
        assert_eq!(doc["networks"], json!({"default": {"labels": {"pipe.preview": "app-pr-3"}}}));
        let web = &doc["services"]["web"];
        assert_eq!(web["privileged"], true);
        assert!(web.get("ports").is_none() && web.get("networks").is_none(), "{web}");
        assert!(web.get("cap_drop").is_none());
        assert_eq!(web["volumes"], json!(["data:/data:rw", "/etc:/host:ro", "/anon"]));
    }
}
