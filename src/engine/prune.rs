//! Retention: the run logs and images pipe no longer needs.
//!
//! What goes: the history and logs of refs the remote no longer has; run logs beyond
//! `keep_logs` and log files no history points at; images (every local tag) of deleted
//! branches and closed pull requests; a live ref's images beyond its `keep_images` newest.
//! What never goes: an image whose commit any deploy target of the project has run in its
//! kept history (the running one and every rollback candidate), the image of a ref's current
//! head or last stage, and anything docker refuses to remove because a container uses it
//! (`docker image rm` without `--force`). Only images labelled `pipe.project=NAME` are touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Project};
use crate::docker::client::Docker;
use crate::output::Output;
use crate::refs;
use crate::state::{self, ProjectState};

/// Images kept per ref when a project sets no `keep_images`.
const DEFAULT_KEEP_IMAGES: u32 = 5;

/// `docker image ls` / `inspect` take seconds at worst; a hung engine must not hang the timer.
const DOCKER_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Serialize)]
pub(crate) struct PruneReport {
    version: u32,
    dry_run: bool,
    pub removed_images: Vec<ImageAction>,
    pub kept_deployed: Vec<ImageAction>,
    pub removed_files: Vec<PathBuf>,
    /// Compose projects of pull-request previews removed (their pull request is gone).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_previews: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ImageAction {
    pub project: String,
    #[serde(rename = "ref")]
    refname: String,
    commit: String,
    pub id: String,
    pub tags: Vec<String>,
    pub reason: String,
}

/// The parts of `docker image inspect` prune reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    id: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    config: Option<InspectedConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedConfig {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// One image of a project, as prune sees it.
#[derive(Debug, Clone)]
struct Image {
    id: String,
    tags: Vec<String>,
    refname: String,
    commit: String,
    created: String,
}

/// Prunes the named projects (all when empty); a dry run only reports.
pub(crate) fn prune(
    out: Output,
    config: &Config,
    state_path: &Path,
    st: &state::State,
    only: &[String],
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    let docker = Docker::new(None);
    let mut report = PruneReport { version: 1, dry_run, ..Default::default() };
    for (name, project) in &config.projects {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let Some(known) = st.project.get(name).filter(|p| p.indexed) else {
            report.warnings.push(format!("{name}: never polled, so which refs are gone is unknown; skipped"));
            continue;
        };
        let scope = Scope { out, config, state_path, name, project, known, dry_run };
        // Previews first: their containers hold their images.
        let removed = super::previews::sweep(&out, config, state_path, st, &[name.as_str()], false, dry_run)?;
        report.removed_previews.extend(removed.into_iter().map(|p| p.compose_project));
        prune_logs(&scope, &mut report)?;
        prune_images(&scope, &docker, &mut report)?;
    }
    if only.is_empty() {
        // Previews of projects no longer configured at all.
        let orphaned = super::previews::orphaned(config, state_path);
        let names: Vec<&str> = orphaned.iter().map(String::as_str).collect();
        let removed = super::previews::sweep(&out, config, state_path, st, &names, false, dry_run)?;
        report.removed_previews.extend(removed.into_iter().map(|p| p.compose_project));
    }
    Ok(report)
}

/// One project being pruned, and what is known about it.
struct Scope<'a> {
    out: Output,
    config: &'a Config,
    state_path: &'a Path,
    name: &'a str,
    project: &'a Project,
    known: &'a ProjectState,
    dry_run: bool,
}

fn prune_logs(scope: &Scope<'_>, report: &mut PruneReport) -> anyhow::Result<()> {
    let Scope { out, config, state_path, name, project, known, dry_run } = *scope;
    let [refs_dir, logs_dir, _] = state::project_dirs(state_path, name);
    let mut referenced = BTreeSet::new();
    for path in files_in(&refs_dir)? {
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let mut history = state::load_history(&path, "")?;
        let live = known.refs.contains_key(&history.refname);
        if !live {
            out.detail(format!("{name}: {} is gone from the remote", refs::display(&history.refname)));
            report.removed_files.push(path.clone());
            report.removed_files.extend(history.runs.iter().map(|r| r.log.clone()));
            if !dry_run {
                for run in &history.runs {
                    remove_file(&run.log)?;
                }
                remove_file(&path)?;
            }
            continue;
        }
        let keep = config.keep_logs(project).max(1);
        if history.runs.len() > keep {
            let old = &history.runs[..history.runs.len() - keep];
            report.removed_files.extend(old.iter().map(|r| r.log.clone()));
            if !dry_run {
                state::save_history(&path, &mut history, keep)?;
            }
        }
        let kept = &history.runs[history.runs.len().saturating_sub(keep)..];
        referenced.extend(kept.iter().map(|r| r.log.clone()));
    }
    // Log files no kept run points at: a ref deleted above, or a run whose record never landed.
    // `deploy.log` of a live ref is kept: it logs rollbacks to commits older than its history.
    for dir in files_in(&logs_dir)? {
        let dir_is_live = known.refs.keys().any(|r| state::logs_dir(state_path, name, r) == dir);
        for log in files_in(&dir)? {
            let rollback_log = dir_is_live && log.file_name().is_some_and(|n| n == "deploy.log");
            if !rollback_log && !referenced.contains(&log) && !report.removed_files.contains(&log) {
                report.removed_files.push(log.clone());
                if !dry_run {
                    remove_file(&log)?;
                }
            }
        }
        if !dry_run {
            // Only succeeds once the directory is empty, which is exactly when it should go.
            let _ = std::fs::remove_dir(&dir);
        }
    }
    Ok(())
}

fn prune_images(scope: &Scope<'_>, docker: &Docker, report: &mut PruneReport) -> anyhow::Result<()> {
    let Scope { out, state_path, name, project, known, dry_run, .. } = *scope;
    let images = project_images(&out, docker, name)?;
    let deployed = deployed_commits(state_path, name)?;
    let keep = project.keep_images.unwrap_or(DEFAULT_KEEP_IMAGES).max(1) as usize;
    let mut by_ref: BTreeMap<&str, Vec<&Image>> = BTreeMap::new();
    for image in &images {
        by_ref.entry(&image.refname).or_default().push(image);
    }
    for (refname, mut list) in by_ref {
        // Newest commit first: `created` is the commit time, an RFC 3339 timestamp to the
        // second; commits of one second are ordered by the ref's runs (the later run is newer).
        let history = state::load_history(&state::history_path(state_path, name, refname), refname)?;
        let run_of = |commit: &str| history.runs.iter().rev().find(|r| r.commit == commit).map_or(0, |r| r.number);
        list.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| run_of(&b.commit).cmp(&run_of(&a.commit)))
                .then_with(|| a.id.cmp(&b.id))
        });
        let live = known.refs.get(refname);
        let current: BTreeSet<&str> = live
            .map(|r| [Some(r.head.as_str()), r.last.as_ref().map(|l| l.commit.as_str())])
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        for (rank, image) in list.into_iter().enumerate() {
            let action = |reason: String| ImageAction {
                project: name.to_string(),
                refname: refname.to_string(),
                commit: image.commit.clone(),
                id: image.id.clone(),
                tags: image.tags.clone(),
                reason,
            };
            if deployed.contains(&image.commit) {
                report.kept_deployed.push(action("a deploy target runs it or can roll back to it".into()));
                continue;
            }
            let reason = match live {
                None => format!("{} is gone from the remote", refs::display(refname)),
                Some(r) if r.closed => format!("{} is closed", refs::display(refname)),
                Some(_) if current.contains(image.commit.as_str()) => continue,
                Some(_) if rank >= keep => format!("beyond keep_images = {keep} for {}", refs::display(refname)),
                Some(_) => continue,
            };
            if remove_image(&out, docker, image, dry_run, report) {
                report.removed_images.push(action(reason));
            }
        }
    }
    Ok(())
}

/// Removes the images of a project that is no longer discovered (its state is being
/// forgotten): every image labelled with it, without `--force`, so one a container still runs
/// stays, with a warning.
pub(crate) fn forgotten_images(out: Output, name: &str, dry_run: bool, report: &mut PruneReport) -> anyhow::Result<()> {
    let docker = Docker::new(None);
    for image in project_images(&out, &docker, name)? {
        if !remove_image(&out, &docker, &image, dry_run, report) {
            continue;
        }
        report.removed_images.push(ImageAction {
            project: name.to_string(),
            refname: image.refname.clone(),
            commit: image.commit.clone(),
            id: image.id.clone(),
            tags: image.tags.clone(),
            reason: "its project is no longer discovered".into(),
        });
    }
    Ok(())
}

/// Every image labelled with the project, with the ref and commit it was built from.
fn project_images(out: &Output, docker: &Docker, name: &str) -> anyhow::Result<Vec<Image>> {
    let list = docker
        .cmd()
        .args(["image", "ls", "--quiet", "--no-trunc", "--filter"])
        .arg(format!("label=pipe.project={name}"));
    let listed = crate::exec::capture(out, &list, DOCKER_QUERY_TIMEOUT)
        .map_err(|e| crate::docker::client::classify(docker, e))?;
    let ids: BTreeSet<&str> = listed.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let inspect = docker.cmd().args(["image", "inspect"]).args(ids);
    let json = crate::exec::capture(out, &inspect, DOCKER_QUERY_TIMEOUT)
        .map_err(|e| crate::docker::client::classify(docker, e))?;
    let inspected: Vec<Inspected> =
        serde_json::from_str(&json).context("failed to parse `docker image inspect` output")?;
    Ok(inspected
        .into_iter()
        .filter_map(|i| {
            let labels = i.config.and_then(|c| c.labels).unwrap_or_default();
            Some(Image {
                id: i.id,
                tags: i.repo_tags.unwrap_or_default(),
                refname: labels.get("pipe.ref")?.clone(),
                commit: labels.get("org.opencontainers.image.revision").cloned().unwrap_or_default(),
                created: labels.get("org.opencontainers.image.created").cloned().unwrap_or_default(),
            })
        })
        .collect())
}

/// Commits any deploy target of the project has run, within its kept deploy history.
fn deployed_commits(state_path: &Path, name: &str) -> anyhow::Result<BTreeSet<String>> {
    let [_, _, deploys_dir] = state::project_dirs(state_path, name);
    let mut commits = BTreeSet::new();
    for path in files_in(&deploys_dir)? {
        if path.extension().is_some_and(|e| e == "toml") {
            commits.extend(state::load_deploys(&path)?.deploys.into_iter().map(|d| d.commit));
        }
    }
    Ok(commits)
}

/// Removes every tag of the image, never with `--force`: docker keeps an image a container uses.
/// Whether it is gone (or would be, in a dry run).
fn remove_image(out: &Output, docker: &Docker, image: &Image, dry_run: bool, report: &mut PruneReport) -> bool {
    let names = if image.tags.is_empty() { vec![image.id.clone()] } else { image.tags.clone() };
    let cmd = docker.cmd().args(["image", "rm"]).args(&names);
    if dry_run {
        out.info(format!("would run: {cmd}"));
        return true;
    }
    match crate::exec::capture(out, &cmd, DOCKER_QUERY_TIMEOUT) {
        Ok(_) => true,
        Err(err) => {
            report.warnings.push(format!("{err:#}"));
            false
        }
    }
}

fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("failed to list `{}`", dir.display())),
    };
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.with_context(|| format!("failed to list `{}`", dir.display()))?.path());
    }
    paths.sort();
    Ok(paths)
}

fn remove_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("failed to remove `{}`", path.display()))
        }
        _ => Ok(()),
    }
}
