//! `pipe test`: run the project's test command inside the image built for a commit, with a
//! unique container name and label, optional test services on a private network, a timeout,
//! and no container left behind however it ends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::Context;
use super::build::{build_here, outcome};
use super::stage::{self, Job};
use crate::cli::TestArgs;
use crate::config::Stage;
use crate::docker::{self, RunSpec};
use crate::engine::docker::{self as engine, Docker};
use crate::error::StageFailed;
use crate::error::code;
use crate::exec::{self, Cmd, Finished};
use crate::refs;
use crate::state::{StageRun, State};

/// One test container's settings.
pub struct TestJob<'a> {
    pub label: String,
    pub image: String,
    pub command: &'a str,
    pub env: Vec<(String, String)>,
    pub services: Option<PathBuf>,
    pub timeout: Duration,
    pub log: PathBuf,
    pub echo: bool,
}

pub fn run(cx: &Context, args: &TestArgs) -> anyhow::Result<u8> {
    if args.here {
        stage::here_takes_no_project(&args.project)?;
        let Some(built) = build_here(cx, args.dry_run)? else { return Ok(code::OK) };
        let Some(command) = built.plan.test.clone() else {
            cx.out.info("no test command: set `test` in .pipe.toml");
            return Ok(code::OK);
        };
        let job = TestJob {
            label: format!("here-{}", std::process::id()),
            image: built.reference.clone(),
            command: &command,
            env: built.plan.test_env.clone(),
            services: built.plan.test_services.clone(),
            timeout: Duration::from_secs(3600),
            log: std::env::temp_dir().join(format!("pipe-here-test-{}.log", std::process::id())),
            echo: !cx.out.quiet,
        };
        let finished = run_job(cx, &Docker::new(None), &job)?;
        if !finished.success() {
            return Err(StageFailed(format!("tests of {} failed: {}", built.reference, finished.describe())).into());
        }
        cx.out.info(format!("tests of {} passed on branch {}", built.reference, built.branch));
        return Ok(code::OK);
    }
    let name = args.project.as_deref().expect("clap requires PROJECT without --here");
    let loaded = stage::load(cx, name, "test", args.dry_run)?;
    let job = loaded.job(cx, name, args.reference.as_deref());
    if args.dry_run {
        let files = job.files()?;
        let run = stage::latest_built(&files.history, None).ok_or_else(|| not_built(&job))?;
        let image = format!("{}:{}", run.image, docker::commit_tag(&run.commit));
        let env: Vec<(String, String)> = run.test_env.clone().into_iter().collect();
        let command = run.test.clone().unwrap_or_else(|| "<no test command: skipped>".into());
        let spec = RunSpec {
            name: "pipe-test-<unique>",
            labels: &[],
            env: &env,
            network: None,
            image: &image,
            command: &command,
        };
        println!("{}", job.docker().cmd().args(docker::run_args(&spec)));
        return Ok(code::OK);
    }
    test(&job, &loaded.state, None)?;
    Ok(code::OK)
}

fn not_built(job: &Job<'_>) -> anyhow::Error {
    let shown = refs::display(&job.refname);
    crate::error::Usage(format!(
        "no image was built for {} {shown} yet\nhint: run `pipe build {} {shown}` first",
        job.name, job.name
    ))
    .into()
}

/// Tests the ref's latest built image (or run `run_number`'s) and records the result; a
/// failure is recorded, then returned as [`StageFailed`].
pub fn test(job: &Job<'_>, st: &Mutex<State>, run_number: Option<u64>) -> anyhow::Result<()> {
    let (cx, name) = (job.cx, job.name);
    let mut files = job.files()?;
    let run = match run_number {
        Some(n) => files.history.runs.iter().find(|r| r.number == n).cloned(),
        None => stage::latest_built(&files.history, None).cloned(),
    };
    let Some(run) = run else { return Err(not_built(job)) };
    let image = format!("{}:{}", run.image, docker::commit_tag(&run.commit));
    let Some(command) = run.test.clone() else {
        let skipped = StageRun::new("test", "skipped", crate::clock::now(), Duration::ZERO, None);
        job.record(st, &mut files, run.number, skipped)?;
        cx.out.info(format!("{name}: no test command for {image}; recorded as skipped"));
        return Ok(());
    };
    let test_job = TestJob {
        label: format!("{name}-{}-{}", docker::branch_tag(refs::display(&job.refname)), run.number),
        image: image.clone(),
        command: &command,
        env: run.test_env.clone().into_iter().collect(),
        services: run.test_services.clone(),
        timeout: job.config.timeout(Some(job.project), Stage::Test),
        log: run.log.clone(),
        echo: false,
    };
    let docker = job.docker();
    let started = crate::clock::now();
    let finished = run_job(cx, &docker, &test_job)?;
    let record = StageRun::new("test", outcome(&finished), started, finished.duration, finished.code);
    job.record(st, &mut files, run.number, record)?;
    stage::interrupted(&finished)?;
    if !finished.success() {
        return Err(StageFailed(format!(
            "tests of {image} failed: {}\nlog: {}\n{}",
            finished.describe(),
            test_job.log.display(),
            crate::output::tail_lines(&finished.tail, 15)
        ))
        .into());
    }
    cx.out.info(format!("{name}: tests of {image} passed in {:.1}s", finished.duration.as_secs_f64()));
    Ok(())
}

fn run_spec<'a>(job: &'a TestJob<'_>, container: &'a str, network: Option<&'a str>) -> RunSpec<'a> {
    RunSpec { name: container, labels: &[], env: &job.env, network, image: &job.image, command: job.command }
}

/// Runs one test container (with its services) and removes everything it started.
pub fn run_job(cx: &Context, docker: &Docker, job: &TestJob<'_>) -> anyhow::Result<Finished> {
    let unique = unique_suffix();
    let container = format!("pipe-test-{}-{unique}", docker::branch_tag(&job.label));
    let labels = vec![("pipe.run".to_string(), job.label.clone())];
    let services = match &job.services {
        Some(file) => Some(Services::up(cx, docker, file, &job.log, &unique)?),
        None => None,
    };
    let network = services.as_ref().map(|s| s.network.clone());
    let spec = RunSpec { labels: &labels, ..run_spec(job, &container, network.as_deref()) };
    let cmd = docker.cmd().args(docker::run_args(&spec));
    let spinner = cx.out.spinner(&format!("testing {}", job.image));
    let echo = job.echo;
    let result = exec::logged(&cx.out, &cmd, &job.log, engine::LOG_CAP, job.timeout, &mut |line| {
        if echo {
            eprintln!("{line}");
        }
    });
    spinner.finish();
    // `--rm` removes a container whose CLI saw it exit. A CLI stopped at the timeout or by a
    // signal may leave it running: remove it by name.
    let clean_exit = result.as_ref().is_ok_and(|f| f.code.is_some() && !f.timed_out && !f.interrupted);
    if !clean_exit {
        let rm = docker.cmd().args(["rm", "--force", "--volumes", &container]);
        let _ = exec::capture(&cx.out, &rm, Duration::from_secs(60));
    }
    if let Some(services) = services {
        services.down(cx);
    }
    let finished = result?;
    if engine::engine_gone(docker, &cx.out, &finished) {
        return Err(engine::engine_unavailable(docker, &finished.tail));
    }
    Ok(finished)
}

/// Test services brought up from a compose file, on their own network; removed by `down`.
struct Services {
    compose: Vec<OsString>,
    file: PathBuf,
    project: String,
    network: String,
}

impl Services {
    fn up(cx: &Context, docker: &Docker, file: &Path, log: &Path, unique: &str) -> anyhow::Result<Services> {
        let compose = docker.compose(&cx.out)?;
        let project = format!("pipetest{unique}");
        let services = Services { compose, file: file.to_path_buf(), network: format!("{project}_default"), project };
        let cmd = services.cmd().args(["up", "--detach"]);
        let finished = exec::logged(&cx.out, &cmd, log, engine::LOG_CAP, Duration::from_secs(600), &mut |_| {})?;
        if !finished.success() {
            services.down(cx);
            anyhow::bail!(
                "test services from `{}` did not start: {}\n{}",
                file.display(),
                finished.describe(),
                finished.tail
            );
        }
        Ok(services)
    }

    fn cmd(&self) -> Cmd {
        let dir = self.file.parent().unwrap_or(Path::new(".")).to_path_buf();
        Cmd::from_argv(&self.compose)
            .args([
                "--project-name".into(),
                self.project.clone().into(),
                "--file".into(),
                self.file.clone().into_os_string(),
            ])
            .dir(dir)
    }

    fn down(&self, cx: &Context) {
        let cmd = self.cmd().args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        if let Err(err) = exec::capture(&cx.out, &cmd, Duration::from_secs(120)) {
            cx.out.warn(format!("could not remove test services `{}`: {err:#}", self.project));
        }
    }
}

/// Lowercase letters and digits unique to this process and moment.
fn unique_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}{:08x}", std::process::id(), nanos)
}
