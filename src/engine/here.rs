//! The developer's build of the working tree (`pipe build --here`, `pipe test --here`): every
//! image of the checkout around the current directory, uncommitted changes included, with the
//! names, tags, labels and build args CI would use for its branch; never pushed or deployed.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use super::build::{BuildRefs, docker_build, labels};
use super::plan::{self, Plan};
use crate::docker::client::{self as client, Docker};
use crate::docker::{self, Needs};
use crate::error::StageFailed;
use crate::git;
use crate::output::Output;

/// What `--here` built.
pub(crate) struct HereBuild {
    /// Each image built, in the order CI builds them: one for a project of one image.
    pub images: Vec<HereImage>,
    pub plan: Plan,
    pub branch: String,
}

/// One image `--here` built.
pub(crate) struct HereImage {
    /// `IMAGE:TAG` of the working tree's build (the commit's tag, `-dirty` with changes).
    pub reference: String,
    /// The image's own test command.
    pub test: Option<String>,
}

/// What each image builds from: the plan itself for a project of one image, else each image's
/// own name, Dockerfile, context and test over the project's build args, as CI builds them.
fn units(plan: &Plan) -> Vec<(Option<String>, Plan)> {
    if plan.images.is_empty() {
        return vec![(None, plan.clone())];
    }
    plan.images
        .iter()
        .map(|i| {
            let one = Plan {
                image: i.image.clone(),
                dockerfile: i.dockerfile.clone(),
                context: i.context.clone(),
                test: i.test.clone(),
                images: Vec::new(),
                ..plan.clone()
            };
            (Some(i.name.clone()), one)
        })
        .collect()
}

/// Builds every image of the working tree of the checkout around the current directory,
/// uncommitted changes included, with the image names, tags, labels and build args CI would
/// use for its branch; stops at the first that fails.
pub(crate) fn build_here(out: &Output, dry_run: bool) -> anyhow::Result<Option<HereBuild>> {
    let cwd = std::env::current_dir().context("failed to read the current directory")?;
    let repo = git2::Repository::discover(&cwd).map_err(|_| {
        anyhow!("`{}` is not inside a git checkout; `--here` builds the checkout you stand in", cwd.display())
    })?;
    let workdir = repo.workdir().ok_or_else(|| anyhow!("`{}` is a bare repository", cwd.display()))?.to_path_buf();
    let head = repo.head().context("the checkout has no commit yet")?;
    let branch = head.shorthand().unwrap_or("HEAD").to_string();
    let head_commit = head.peel_to_commit().context("HEAD is not a commit")?;
    let sha = head_commit.id().to_string();
    let created = git::commit_time(&head_commit);
    let mut status = git2::StatusOptions::new();
    status.include_untracked(true).include_ignored(false);
    let dirty = repo.statuses(Some(&mut status)).map(|s| !s.is_empty()).unwrap_or(true);
    let name = workdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "here".into());
    let plan = plan::plan(&name, None, &workdir, true)?;
    let defaults = crate::config::Settings::default().default_branches;
    let refname = format!("refs/heads/{branch}");
    let default = defaults.iter().find(|b| **b == branch).cloned();
    let mut commit_tag = docker::commit_tag(&sha).to_string();
    if dirty {
        commit_tag.push_str("-dirty");
    }
    let tags = vec![docker::ref_tag(&refname, default.as_deref()), commit_tag];
    let source = repo
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(git::redact_url))
        .unwrap_or_else(|| workdir.display().to_string());
    let labels = labels(&sha, created, &source, &name, &refname);
    let docker = Docker::new(None);
    // No secrets, no network of pipe's: BuildKit where the host has it, as CI would build.
    let builder = docker.builders(out).choose(Needs::default()).map_err(StageFailed)?;
    let cache = docker::CacheUse::default();
    if !dry_run {
        // What CI's build of this branch refuses, `--here` refuses too: it tags the same names.
        let builds = super::refuse::Builds { config: None, name: &name, project: None, source: Some(&source) };
        super::refuse::images(out, &docker, &builds, &plan, &tags, true)?;
    }
    let units = units(&plan);
    let mut images = Vec::new();
    for (image_name, one) in &units {
        let build = BuildRefs { plan: one, tags: &tags, labels: &labels, secrets: &[], network: None, cache: &cache };
        if dry_run {
            crate::output::println(build.command(&docker, builder, Path::new("<iidfile>")))?;
            continue;
        }
        let reference = format!("{}:{}", one.image, tags[1]);
        let which = image_name.as_deref().map_or_else(String::new, |n| format!("-{}", docker::branch_tag(n)));
        let log = std::env::temp_dir().join(format!("pipe-here-{}{which}.log", docker::branch_tag(&name)));
        let _ = std::fs::remove_file(&log);
        let what = image_name.as_deref().map_or_else(String::new, |n| format!("image `{n}`: "));
        out.info(format!(
            "building {what}{reference} from `{}`{}",
            workdir.display(),
            if dirty { " (uncommitted changes included)" } else { "" }
        ));
        let (finished, _) = docker_build(out, &docker, builder, &build, &log, Duration::from_secs(3600), !out.quiet)?;
        if client::engine_gone(&docker, out, &finished) {
            return Err(client::engine_unavailable(&docker, &finished.tail));
        }
        if !finished.success() {
            return Err(
                StageFailed(format!("build {what}failed: {}\nlog: {}", finished.describe(), log.display())).into()
            );
        }
        images.push(HereImage { reference, test: one.test.clone() });
    }
    if dry_run {
        return Ok(None);
    }
    Ok(Some(HereBuild { images, plan, branch }))
}
