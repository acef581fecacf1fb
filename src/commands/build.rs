//! `pipe build`: fetch one commit into the project's workspace, check it out clean, and
//! `docker build` it with OCI labels. `--here` builds the working tree a developer stands in.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::Context;
use super::stage::{self, Job, Plan};
use crate::cli::BuildArgs;
use crate::config::Stage;
use crate::docker::{self, BuildSpec, Builder};
use crate::engine::docker::{self as engine, Docker};
use crate::error::StageFailed;
use crate::error::code;
use crate::exec::{self, Cmd, Finished};
use crate::state::{Run, StageRun, State};
use crate::{git, refs};

pub fn run(cx: &Context, args: &BuildArgs) -> anyhow::Result<u8> {
    if args.here {
        stage::here_takes_no_project(&args.project)?;
        let built = build_here(cx, args.dry_run)?;
        if let Some(built) = built {
            println!("{}", built.reference);
        }
        return Ok(code::OK);
    }
    let name = args.project.as_deref().expect("clap requires PROJECT without --here");
    let loaded = stage::load(cx, name, "build", args.dry_run)?;
    let job = loaded.job(cx, name, args.reference.as_deref());
    if args.dry_run {
        let workdir = stage::workspace_dir(job.config, name);
        println!(
            "git fetch {} +{}:refs/pipe/fetched (no tags) into {}",
            git::redact_url(&job.project.repo),
            job.refname,
            workdir.display()
        );
        println!("git checkout --force {} && git clean -ffdx", args.commit.as_deref().unwrap_or("refs/pipe/fetched"));
        println!(
            "{} build … (tags, labels and build args resolved after checkout)",
            job.docker().program.to_string_lossy()
        );
        return Ok(code::OK);
    }
    // Like "build now": the ref's current tip on the remote, unless a commit is named.
    build(&job, &loaded.state, args.commit.as_deref())?;
    Ok(code::OK)
}

/// Builds `commit` (else the ref's remote tip) and records the run; returns the run number.
/// A failed build is recorded, then returned as [`StageFailed`].
pub fn build(job: &Job<'_>, st: &Mutex<State>, commit: Option<&str>) -> anyhow::Result<u64> {
    let (cx, name, project) = (job.cx, job.name, job.project);
    let refname = job.refname.as_str();
    let docker = job.docker();
    let builder = docker.builder();
    let deadline = Instant::now() + job.config.timeout(Some(project), Stage::Build);
    let auth = stage::git_auth(name, project)?;
    let workdir = stage::workspace_dir(job.config, name);
    cx.out.info(format!("{name}: fetching {} from `{}`", refs::display(refname), git::redact_url(&project.repo)));
    let checked_out = git::checkout(&project.repo, &auth, refname, commit, &workdir, deadline)
        .with_context(|| format!("project `{name}`: cannot check out `{refname}`"))?;
    let sha = checked_out.sha.clone();
    let plan = stage::plan(name, Some(project), &workdir)?;
    let default_branch = {
        let st = st.lock().unwrap_or_else(|e| e.into_inner());
        stage::default_branch(job.config, name, project, &st)
    };
    let tags = vec![docker::ref_tag(refname, Some(&default_branch)), docker::commit_tag(&sha).to_string()];
    let labels = labels(&sha, checked_out.time, &git::redact_url(&project.repo), name, refname);

    let mut files = job.files()?;
    let number = files.history.next_run;
    files.history.next_run += 1;
    let log = stage::new_log(&files, number)?;
    files.history.runs.push(Run {
        number,
        commit: sha.clone(),
        started: crate::clock::now(),
        image: plan.image.clone(),
        tags: tags.clone(),
        image_id: None,
        log: log.clone(),
        stages: Vec::new(),
        digests: Default::default(),
        test: plan.test.clone(),
        test_env: plan.test_env.iter().cloned().collect(),
        test_services: plan.test_services.clone(),
    });
    let started = crate::clock::now();
    let timeout = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    let (finished, image_id) = docker_build(cx, &docker, builder, &plan, &tags, &labels, &log, timeout, false)?;
    if engine::engine_gone(&docker, &cx.out, &finished) {
        return Err(engine::engine_unavailable(&docker, &finished.tail));
    }
    if let Some(run) = files.history.runs.iter_mut().find(|r| r.number == number) {
        run.image_id = image_id.clone();
    }
    let record = StageRun::new("build", outcome(&finished), started, finished.duration, finished.code);
    job.record(st, &mut files, number, record)?;
    stage::interrupted(&finished)?;
    if !finished.success() {
        return Err(StageFailed(format!(
            "build of {name} {} ({}) failed: {}\nlog: {}\n{}",
            refs::display(refname),
            docker::commit_tag(&sha),
            finished.describe(),
            log.display(),
            crate::output::tail_lines(&finished.tail, 15)
        ))
        .into());
    }
    cx.out.info(format!(
        "{name}: built {} ({}) from {} in {:.1}s",
        tags.iter().map(|t| format!("{}:{t}", plan.image)).collect::<Vec<_>>().join(", "),
        image_id.as_deref().unwrap_or("?"),
        docker::commit_tag(&sha),
        finished.duration.as_secs_f64()
    ));
    Ok(number)
}

/// `passed`, `failed`, `timed_out` or `interrupted`.
pub fn outcome(finished: &Finished) -> &'static str {
    if finished.interrupted {
        "interrupted"
    } else if finished.timed_out {
        "timed_out"
    } else if finished.success() {
        "passed"
    } else {
        "failed"
    }
}

/// The OCI labels of every image pipe builds. `created` is the commit's time, not the wall
/// clock, so rebuilding a commit hits the build cache and yields the same image (the
/// reproducible-builds convention); every label is stable for a given commit and ref.
pub fn labels(
    sha: &str,
    created: jiff::Timestamp,
    source: &str,
    project: &str,
    refname: &str,
) -> Vec<(String, String)> {
    vec![
        ("org.opencontainers.image.revision".into(), sha.into()),
        ("org.opencontainers.image.source".into(), source.into()),
        ("org.opencontainers.image.created".into(), created.to_string()),
        ("pipe.project".into(), project.into()),
        ("pipe.ref".into(), refname.into()),
    ]
}

/// Runs `docker build` with output in `log` (and, with `echo`, on stderr); returns how it ended
/// and the image id from `--iidfile`.
#[allow(clippy::too_many_arguments)]
pub fn docker_build(
    cx: &Context,
    docker: &Docker,
    builder: Builder,
    plan: &Plan,
    tags: &[String],
    labels: &[(String, String)],
    log: &Path,
    timeout: Duration,
    echo: bool,
) -> anyhow::Result<(Finished, Option<String>)> {
    let iid = tempfile::Builder::new().prefix("pipe-iid-").tempfile().context("failed to create a temporary file")?;
    let refs: Vec<String> = tags.iter().map(|t| format!("{}:{t}", plan.image)).collect();
    let spec = BuildSpec {
        dockerfile: &plan.dockerfile,
        context: &plan.context,
        tags: &refs,
        labels,
        build_args: &plan.build_args,
        iidfile: iid.path(),
    };
    let mut cmd = docker.cmd().args(docker::build_args(builder, &spec));
    if builder == Builder::Legacy {
        cmd = cmd.env("DOCKER_BUILDKIT", "0");
    }
    let spinner = cx.out.spinner(&format!("building {}", refs[0]));
    let out = cx.out;
    let finished = exec::logged(&cx.out, &cmd, log, engine::LOG_CAP, timeout, &mut |line| {
        if echo {
            eprintln!("{line}");
        } else if let Some(step) = docker::build_step(line) {
            spinner.set(step);
            out.detail(step);
        }
    })?;
    spinner.finish();
    let image_id = std::fs::read_to_string(iid.path()).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    Ok((finished, image_id))
}

/// What `--here` built.
pub struct HereBuild {
    pub reference: String,
    pub plan: Plan,
    pub branch: String,
}

/// Builds the working tree of the checkout around the current directory, uncommitted changes
/// included, with the image name, tags, labels and build args CI would use for its branch.
pub fn build_here(cx: &Context, dry_run: bool) -> anyhow::Result<Option<HereBuild>> {
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
    let plan = stage::plan(&name, None, &workdir)?;
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
    let reference = format!("{}:{}", plan.image, tags[1]);
    if dry_run {
        let spec_refs: Vec<String> = tags.iter().map(|t| format!("{}:{t}", plan.image)).collect();
        let spec = BuildSpec {
            dockerfile: &plan.dockerfile,
            context: &plan.context,
            tags: &spec_refs,
            labels: &labels,
            build_args: &plan.build_args,
            iidfile: Path::new("<iidfile>"),
        };
        println!("{}", Cmd::new(docker.program.clone()).args(docker::build_args(Builder::Legacy, &spec)));
        return Ok(None);
    }
    let builder = docker.builder();
    let log = std::env::temp_dir().join(format!("pipe-here-{}.log", docker::branch_tag(&name)));
    let _ = std::fs::remove_file(&log);
    cx.out.info(format!(
        "building {} from `{}`{}",
        reference,
        workdir.display(),
        if dirty { " (uncommitted changes included)" } else { "" }
    ));
    let (finished, _) =
        docker_build(cx, &docker, builder, &plan, &tags, &labels, &log, Duration::from_secs(3600), !cx.out.quiet)?;
    if engine::engine_gone(&docker, &cx.out, &finished) {
        return Err(engine::engine_unavailable(&docker, &finished.tail));
    }
    if !finished.success() {
        return Err(StageFailed(format!("build failed: {}\nlog: {}", finished.describe(), log.display())).into());
    }
    Ok(Some(HereBuild { reference, plan, branch }))
}
