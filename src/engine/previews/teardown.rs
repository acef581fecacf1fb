//! Removing previews: one by one ([`teardown`]) and the sweep of those whose pull request
//! closed or went, whose target stopped running previews, or that idled past their TTL. Only
//! what carries the preview's own label is removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::names::{DEFAULT_TTL, isolated_network_name, preview_dir, targets};
use crate::config::Config;
use crate::docker::client::{self as client, Docker};
use crate::exec;
use crate::output::Output;
use crate::refs;
use crate::state::{self, Preview, State};
use crate::targets::ingress::{Nginx, Site};
use crate::trust::isolation;

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
pub(crate) fn stop(out: &Output, config: &Config, state_path: &Path, preview: &Preview) -> anyhow::Result<()> {
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
        images.push(crate::engine::run_image(run));
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
