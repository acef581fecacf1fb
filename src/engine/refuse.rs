//! What the build stage and `--here` refuse before `docker build`, from repository content
//! (`images`): an image repository a repository file chose that another project or hook holds,
//! compared as pushes write them (`held_elsewhere`), a tag of it this build or its push would
//! write that is another's (`foreign_tags`); and an untrusted Dockerfile's compose or stack
//! labels (`compose_labels`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::Job;
use super::discover;
use super::plan::Plan;
use crate::config::{Config, Project};
use crate::docker::client::Docker;
use crate::error::StageFailed;
use crate::output::Output;
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

/// The build whose images [`images`] checks: CI's build of a project's ref, or `--here`'s of
/// the checkout around the current directory (no pipeline file: nothing pushes, nobody else
/// holds a name).
pub(crate) struct Builds<'a> {
    pub config: Option<&'a Config>,
    pub name: &'a str,
    pub project: Option<&'a Project>,
    /// `--here`'s repository (its `origin`): it knows no pipeline project, so an image pipe
    /// built from the same repository (its `org.opencontainers.image.source` label, compared
    /// by [`same_repository`]) is its own too.
    pub source: Option<&'a str>,
}

/// What CI's build and `--here` refuse before `docker build`, for every image of `plan`: an
/// image the repository's file named that another project or hook holds ([`held_elsewhere`]),
/// and a tag it would write, on this engine or under any registry its pushes tag it for, that
/// is another's ([`foreign_tags`]). An untrusted build (under pipe's own name) is checked for
/// the second only.
pub(crate) fn images(
    out: &Output,
    docker: &Docker,
    build: &Builds<'_>,
    plan: &Plan,
    tags: &[String],
    trusted: bool,
) -> anyhow::Result<()> {
    let images = || plan.images.iter().map(|i| &i.image).chain([&plan.image]);
    if let (Some(file), Some(config), true) = (plan.image_from_repo, build.config, trusted) {
        for image in images() {
            held_elsewhere(config, build, file, image)?;
        }
    }
    if plan.image_from_repo.is_none() && trusted {
        return Ok(());
    }
    // The second line: a tag this build or its push would write that names an image pipe did
    // not build for this project (a base image, or one built before the pipeline file changed).
    let registries = match (build.config, build.project) {
        (Some(config), Some(project)) if trusted => discover::registries_of(config, project),
        _ => Vec::new(),
    };
    for image in images() {
        foreign_tags(out, docker, build, &discover::written_as(image, &registries), tags)?;
    }
    Ok(())
}

/// Refuses to build when the repository's `file` named an image repository another project
/// or a serve hook of the pipeline file holds, comparing every name the build and its pushes
/// write with every name the others' do (as discovery compares names: folded): its build
/// would push over that project's image, or choose what that hook deploys, on any host,
/// whether or not a tag of it is on this engine.
fn held_elsewhere(config: &Config, build: &Builds<'_>, file: &str, image: &str) -> anyhow::Result<()> {
    let Some((holder, what)) = discover::image_holder(config, build.name, build.project, image) else {
        return Ok(());
    };
    Err(StageFailed(format!(
        "refusing to build {image}: the repository's `{file}` names it, and {holder} holds it ({what})\nhint: name \
         the image under [project.{}] in the pipeline file",
        build.name
    ))
    .into())
}

/// Refuses to build when the repository named the image and one of its tags, under any of
/// `names` (the image on this engine and as each push tags it), already names an image pipe
/// did not build for this project (another project's, or a base image such as `node:20`, or
/// one another team pushed to the registry this project pushes to): a branch could otherwise
/// replace what other builds start `FROM`.
fn foreign_tags(
    out: &Output,
    docker: &Docker,
    build: &Builds<'_>,
    names: &[String],
    tags: &[String],
) -> anyhow::Result<()> {
    let name = build.name;
    // One call for every tag; a tag that does not exist yet is only missing from the output.
    let refs: Vec<String> = names.iter().flat_map(|image| tags.iter().map(move |t| format!("{image}:{t}"))).collect();
    let format = "{{range .RepoTags}}{{.}} {{end}}|{{index .Config.Labels \"pipe.project\"}}|{{index .Config.Labels \"org.opencontainers.image.source\"}}";
    let inspect = docker.cmd().args(["image", "inspect", "--format", format]).args(&refs);
    let (listed, _missing) = exec::capture_even_failed(out, &inspect, Duration::from_secs(30))?;
    for line in listed.lines() {
        let mut fields = line.rsplitn(3, '|');
        let (Some(source), Some(owner), Some(listed_names)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let owner = owner.trim();
        let built = !owner.is_empty() && owner != "<no value>";
        if owner == name || (built && build.source.is_some_and(|s| same_repository(s, source.trim()))) {
            continue;
        }
        let Some(reference) = refs.iter().find(|r| listed_names.split_whitespace().any(|n| n == r.as_str())) else {
            continue;
        };
        let whose =
            if built { format!("project `{owner}`'s image") } else { "an image pipe did not build".to_string() };
        return Err(StageFailed(format!(
            "refusing to build {reference}: the repository names the image, and that tag is {whose}\nhint: name the image under [project.{name}] in the pipeline file"
        ))
        .into());
    }
    Ok(())
}

/// Whether two clone URLs name one repository: scheme, user, port, a trailing `/` or `.git`
/// and the host's case set aside (`git@host:team/app.git`, `https://host/team/app` and
/// `ssh://git@host:22/team/app` are one; `/srv/app.git` and `file:///srv/app.git` too).
fn same_repository(a: &str, b: &str) -> bool {
    fn key(url: &str) -> Option<String> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").map_or((None, url), |(s, r)| (Some(s), r));
        let (host, path) = match scheme {
            Some("file") => ("", rest),
            Some(_) => rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p)),
            // `host:path`, as scp writes it, or a local path.
            None => match url.split_once(':') {
                Some((h, p)) if !h.contains('/') => (h, p),
                _ => ("", url),
            },
        };
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
        (!path.is_empty()).then(|| format!("{}/{path}", host.to_ascii_lowercase()))
    }
    key(a).is_some_and(|a| Some(a) == key(b))
}

#[cfg(test)]
mod tests {
    use super::same_repository;

    #[test]
    fn one_repository_is_recognised_whatever_url_names_it() {
        for (a, b) in [
            ("git@git.example:team/app.git", "https://git.example/team/app"),
            ("ssh://git@Git.Example:22/team/app.git/", "https://***@git.example/team/app.git"),
            ("/srv/git/app.git", "file:///srv/git/app.git"),
        ] {
            assert!(same_repository(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("https://git.example/team/app", "https://git.example/team/app2"),
            ("https://git.example/team/app", "https://other.example/team/app"),
            ("/srv/git/app.git", "/srv/git/other.git"),
            ("", ""),
            ("<no value>", "https://git.example/team/app"),
        ] {
            assert!(!same_repository(a, b), "{a} {b}");
        }
    }
}
