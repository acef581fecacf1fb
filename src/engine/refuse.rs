//! What the build stage refuses before `docker build`, from repository content: an image
//! repository a repository file chose that another project or hook holds (`held_elsewhere`),
//! a tag of it on this engine that is another's (`foreign_tags`), and an untrusted
//! Dockerfile's compose or stack labels (`compose_labels`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::Job;
use crate::docker::client::Docker;
use crate::error::StageFailed;
use crate::{exec, refs};

/// Refuses an untrusted ref's Dockerfile that sets a `com.docker.compose.*` or
/// `com.docker.stack.*` label (`trust::dockerfile`): its build step containers would carry it,
/// and compose would take them for containers of another project's service while it builds.
/// The Dockerfile is read as every repository file is (`trust::paths`).
pub(super) fn compose_labels(job: &Job<'_>, workdir: &Path, dockerfile: &Path) -> anyhow::Result<()> {
    let root = workdir.canonicalize().with_context(|| format!("failed to resolve `{}`", workdir.display()))?;
    let Some(relative) = dockerfile.strip_prefix(&root).ok().and_then(Path::to_str) else { return Ok(()) };
    let Some(text) = crate::trust::paths::read_repo_file(workdir, relative)
        .map_err(|e| e.context(format!("project `{}`: cannot read `{relative}`", job.name)))?
    else {
        return Ok(());
    };
    let Some((line, key)) = crate::trust::dockerfile::claimed_label(&text) else { return Ok(()) };
    Err(StageFailed(format!(
        "refusing to build {}: `{relative}` line {line} sets the label `{key}`, which makes a container part of a \
         compose project or swarm stack, and {} is {}: its Dockerfile may not set it",
        refs::display(&job.refname),
        refs::display(&job.refname),
        crate::trust::untrusted_why(&job.refname)
    ))
    .into())
}

/// Refuses to build when the repository's `file` named an image repository another project
/// or a serve hook of the pipeline file holds (as discovery compares names: folded): its
/// build would push over that project's image, or choose what that hook deploys, on any host,
/// whether or not a tag of it is on this engine.
pub(super) fn held_elsewhere(job: &Job<'_>, file: &str, image: &str) -> anyhow::Result<()> {
    let Some((holder, what)) = super::discover::image_holder(job.config, job.name, image) else { return Ok(()) };
    Err(StageFailed(format!(
        "refusing to build {image}: the repository's `{file}` names it, and {holder} holds it ({what})\nhint: name \
         the image under [project.{}] in the pipeline file",
        job.name
    ))
    .into())
}

/// Refuses to build when the repository named the image and one of its tags already names an
/// image pipe did not build for this project (another project's, or a base image such as
/// `node:20`): a branch could otherwise replace what other builds start `FROM`.
pub(super) fn foreign_tags(job: &Job<'_>, docker: &Docker, image: &str, tags: &[String]) -> anyhow::Result<()> {
    // One call for every tag; a tag that does not exist yet is only missing from the output.
    let refs: Vec<String> = tags.iter().map(|t| format!("{image}:{t}")).collect();
    let format = "{{range .RepoTags}}{{.}} {{end}}|{{index .Config.Labels \"pipe.project\"}}";
    let inspect = docker.cmd().args(["image", "inspect", "--format", format]).args(&refs);
    let (listed, _missing) = exec::capture_even_failed(&job.out, &inspect, Duration::from_secs(30))?;
    for line in listed.lines() {
        let Some((names, owner)) = line.rsplit_once('|') else { continue };
        let owner = owner.trim();
        if owner == job.name {
            continue;
        }
        let Some(reference) = refs.iter().find(|r| names.split_whitespace().any(|n| n == r.as_str())) else {
            continue;
        };
        let whose = if owner.is_empty() || owner == "<no value>" {
            "an image pipe did not build".to_string()
        } else {
            format!("project `{owner}`'s image")
        };
        return Err(StageFailed(format!(
            "refusing to build {reference}: the repository names the image, and that tag is {whose}\nhint: name the image under [project.{}] in the pipeline file",
            job.name
        ))
        .into());
    }
    Ok(())
}
