//! The stages' work for a project of several images: build only the images whose paths
//! changed ([`super::changes`]), give the others the commit's tags on their tested image, test
//! what was built, and the per-image view of a run that push and deploy go through.

use std::time::{Duration, Instant};

use super::changes::{self, Bases, Decision};
use super::plan::Plan;
use super::{Job, RefFiles};
use crate::docker;
use crate::docker::client::{self as client, Docker};
use crate::error::StageFailed;
use crate::exec::{self, Finished};
use crate::model::{Outcome, Stage};
use crate::refs;
use crate::state::{self, ImageRun, Run, StageRun, Tested};

/// How one image is built: `docker build` of the plan given (see `build::build`), with how it
/// ended and the image id.
pub(crate) type BuildOne<'a> = dyn FnMut(&Plan, Duration) -> anyhow::Result<(Finished, Option<String>)> + 'a;

/// How one image is tested: its test container for the run as that image's ([`view`]).
pub(crate) type TestOne<'a> = dyn FnMut(&Run, &str) -> anyhow::Result<Finished> + 'a;

/// Builds the changed images of run `number` (through `build_one`) and retags the others;
/// records the build stage (passed only when every image has the commit's tags).
/// `plan.images` is not empty.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    job: &Job<'_>,
    files: &mut RefFiles,
    number: u64,
    docker: &Docker,
    (plan, tags): (&Plan, &[String]),
    default_branch: &str,
    deadline: Instant,
    build_one: &mut BuildOne<'_>,
) -> anyhow::Result<u64> {
    let (out, name) = (&job.out, job.name);
    let run = files.run(number).cloned().ok_or_else(|| anyhow::anyhow!("run {number} vanished from the history"))?;
    let sha = run.commit.clone();
    let decisions = decide(job, files, &sha, plan, default_branch);
    let started = crate::clock::now();
    let clock = Instant::now();
    let mut images = Vec::new();
    let mut failed = None;
    for (image, decision) in plan.images.iter().zip(decisions) {
        let mut entry = ImageRun {
            name: image.name.clone(),
            image: image.image.clone(),
            tags: tags.to_vec(),
            built: false,
            from: sha.clone(),
            why: String::new(),
            recipe: image.recipe.clone(),
            image_id: None,
            test: image.test.clone(),
            tested: None,
            digests: Default::default(),
        };
        let why = match decision {
            Decision::Reuse { from, why } => match retag(job, docker, &from.image, &image.image, tags) {
                Ok(()) => {
                    out.info(format!(
                        "{name}: {} {why}: tagged {} for {}",
                        image.name,
                        from.image,
                        docker::commit_tag(&sha)
                    ));
                    (entry.from, entry.why) = (from.commit, why);
                    images.push(entry);
                    continue;
                }
                Err(err) => format!("{why}, but its image could not be tagged ({err:#}): built"),
            },
            Decision::Build { why } => why,
        };
        out.info(format!("{name}: building {}: {why}", image.name));
        let one = Plan {
            image: image.image.clone(),
            dockerfile: image.dockerfile.clone(),
            context: image.context.clone(),
            ..plan.clone()
        };
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let (finished, image_id) = build_one(&one, left)?;
        if client::engine_gone(docker, out, &finished) {
            return Err(client::engine_unavailable(docker, &finished.tail));
        }
        (entry.built, entry.why, entry.image_id) = (true, why, image_id);
        images.push(entry);
        if !finished.success() {
            failed = Some((image.name.clone(), finished));
            break;
        }
    }
    let outcome = failed.as_ref().map_or(Outcome::Passed, |(_, f)| f.outcome());
    if let Some(r) = files.run_mut(number) {
        r.image_id = images.first().and_then(|i| i.image_id.clone());
        r.images = images;
    }
    let code = failed.as_ref().and_then(|(_, f)| f.code);
    job.record(files, number, StageRun::new(Stage::Build, outcome, started, clock.elapsed(), code))?;
    if let Some((image, finished)) = failed {
        finished.check_interrupted()?;
        return Err(StageFailed(format!(
            "build of {name} {} ({}) failed: image `{image}`: {}\nlog: {}\n{}",
            refs::display(&job.refname),
            docker::commit_tag(&sha),
            finished.describe(),
            run.log.display(),
            crate::output::tail_lines(&finished.tail, 15)
        ))
        .into());
    }
    if let Some(since) = files.run(number).and_then(unchanged_since) {
        out.info(format!(
            "{name}: {} changes none of the images' paths: nothing built, unchanged since {since}",
            docker::commit_tag(&sha)
        ));
    }
    Ok(number)
}

/// What each image needs; when the commit cannot be compared at all, every image is built.
fn decide(job: &Job<'_>, files: &RefFiles, sha: &str, plan: &Plan, default_branch: &str) -> Vec<Decision> {
    let default_ref = format!("refs/heads/{default_branch}");
    let default = if job.refname == default_ref {
        None
    } else {
        match state::load_history(&state::history_path(job.state_path, job.name, &default_ref), &default_ref) {
            Ok(history) => Some(history.tested),
            Err(err) => {
                job.out.warn(format!("{}: `{default_branch}`'s history cannot be read: {err:#}", job.name));
                None
            }
        }
    };
    let bases = Bases { own: &files.history.tested, default: default.as_ref().map(|t| (default_branch, t)) };
    let workdir = super::workspace_dir(job.config, job.name);
    changes::decide(&workdir, sha, &plan.images, &bases).unwrap_or_else(|err| {
        let why = format!("cannot compare with earlier builds: {err:#}");
        plan.images.iter().map(|_| Decision::Build { why: why.clone() }).collect()
    })
}

/// Gives `image:TAG` for each of `tags` to the earlier build `from`.
fn retag(job: &Job<'_>, docker: &Docker, from: &str, image: &str, tags: &[String]) -> anyhow::Result<()> {
    for tag in tags {
        let cmd = docker.cmd().args(["tag", from, &format!("{image}:{tag}")]);
        exec::capture(&job.out, &cmd, Duration::from_secs(60))?;
    }
    Ok(())
}

/// For a run of several images none of which it built: the commits their images come from.
pub(crate) fn unchanged_since(run: &Run) -> Option<String> {
    if run.images.is_empty() || run.images.iter().any(|i| i.built) {
        return None;
    }
    let mut froms: Vec<&str> = run.images.iter().map(|i| docker::commit_tag(&i.from)).collect();
    froms.dedup();
    Some(froms.join(", "))
}

/// The run as one image's: its name, tags and test in place of the run's first image's.
pub(crate) fn view(run: &Run, image: &ImageRun) -> Run {
    Run {
        image: image.image.clone(),
        tags: image.tags.clone(),
        image_id: image.image_id.clone(),
        test: image.test.clone(),
        digests: image.digests.clone(),
        images: Vec::new(),
        ..run.clone()
    }
}

/// Tests every image the run built (the others passed theirs at the commit they come from),
/// records each image's result and the test stage, and, for each image that passed, its build
/// as the one the ref's next commits are compared with.
pub(crate) fn test(job: &Job<'_>, files: &mut RefFiles, run: &Run, test_one: &mut TestOne<'_>) -> anyhow::Result<()> {
    let (out, name) = (&job.out, job.name);
    let started = crate::clock::now();
    let clock = Instant::now();
    let mut failed = None;
    let mut ran = false;
    let mut results = Vec::new();
    for image in run.images.iter().filter(|i| i.built) {
        let one = view(run, image);
        let Some(command) = one.test.clone() else {
            results.push((image.name.clone(), Outcome::Skipped));
            continue;
        };
        ran = true;
        let finished = test_one(&one, &command)?;
        results.push((image.name.clone(), finished.outcome()));
        if !finished.success() {
            failed = Some((image, finished));
            break;
        }
        out.info(format!(
            "{name}: tests of {} passed in {:.1}s",
            super::run_image(&one),
            finished.duration.as_secs_f64()
        ));
    }
    let tag = super::run_tag(run).to_string();
    for (image, result) in &results {
        if let Some(entry) = files.run_mut(run.number).and_then(|r| r.images.iter_mut().find(|i| &i.name == image)) {
            entry.tested = Some(*result);
            if result.clears() {
                let reference = format!("{}:{tag}", entry.image);
                let tested = Tested { commit: run.commit.clone(), image: reference, recipe: entry.recipe.clone() };
                files.history.tested.insert(image.clone(), tested);
            }
        }
    }
    let outcome = match &failed {
        Some((_, f)) => f.outcome(),
        None if ran => Outcome::Passed,
        None => Outcome::Skipped,
    };
    let code = failed.as_ref().and_then(|(_, f)| f.code);
    job.record(files, run.number, StageRun::new(Stage::Test, outcome, started, clock.elapsed(), code))?;
    if let Some((image, finished)) = failed {
        finished.check_interrupted()?;
        return Err(StageFailed(format!(
            "tests of {}:{tag} failed: {}\nlog: {}\n{}",
            image.image,
            finished.describe(),
            run.log.display(),
            crate::output::tail_lines(&finished.tail, 15)
        ))
        .into());
    }
    if !ran {
        out.info(format!("{name}: no image built by this run has a test command; recorded as skipped"));
    }
    Ok(())
}
