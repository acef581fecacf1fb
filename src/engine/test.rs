//! The test stage: run the project's test command inside the image built for a commit, with a
//! unique container name and label, optional test services on a private network, a timeout,
//! and no container left behind however it ends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::build::outcome;
use super::{Job, RefFiles};
use crate::docker::client::{self as client, Docker};
use crate::docker::{self, RunSpec};
use crate::error::StageFailed;
use crate::exec::{self, Cmd, Finished};
use crate::model::{Outcome, Stage};
use crate::output::Output;
use crate::refs;
use crate::state::StageRun;

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

/// Tests the ref's latest built image (or run `run_number`'s) and records the result; a
/// failure is recorded, then returned as [`StageFailed`].
pub fn test(job: &Job<'_>, files: &mut RefFiles, run_number: Option<u64>) -> anyhow::Result<()> {
    let (out, name) = (&job.out, job.name);
    let run = match run_number {
        Some(n) => files.run(n).cloned(),
        None => super::latest_built(&files.history, None).cloned(),
    };
    let Some(run) = run else { return Err(super::not_built(job)) };
    let image = format!("{}:{}", run.image, docker::commit_tag(&run.commit));
    let Some(command) = run.test.clone() else {
        let skipped = StageRun::new(Stage::Test, Outcome::Skipped, crate::clock::now(), Duration::ZERO, None);
        job.record(files, run.number, skipped)?;
        out.info(format!("{name}: no test command for {image}; recorded as skipped"));
        return Ok(());
    };
    let test_job = TestJob {
        label: format!("{name}-{}-{}", docker::branch_tag(refs::display(&job.refname)), run.number),
        image: image.clone(),
        command: &command,
        env: run.test_env.clone().into_iter().collect(),
        services: run.test_services.clone(),
        timeout: job.timeout(Stage::Test),
        log: run.log.clone(),
        echo: false,
    };
    let docker = job.docker();
    let started = crate::clock::now();
    let finished = run_job(out, &docker, &test_job)?;
    let record = StageRun::new(Stage::Test, outcome(&finished), started, finished.duration, finished.code);
    job.record(files, run.number, record)?;
    super::interrupted(&finished)?;
    if !finished.success() {
        return Err(StageFailed(format!(
            "tests of {image} failed: {}\nlog: {}\n{}",
            finished.describe(),
            test_job.log.display(),
            crate::output::tail_lines(&finished.tail, 15)
        ))
        .into());
    }
    out.info(format!("{name}: tests of {image} passed in {:.1}s", finished.duration.as_secs_f64()));
    Ok(())
}

impl TestJob<'_> {
    /// The `docker run` of this job's container: what runs, and what a dry run prints.
    pub fn command(&self, docker: &Docker, container: &str, labels: &[(String, String)], network: Option<&str>) -> Cmd {
        let spec =
            RunSpec { name: container, labels, env: &self.env, network, image: &self.image, command: self.command };
        docker.cmd().args(docker::run_args(&spec))
    }
}

/// Runs one test container (with its services) and removes everything it started.
pub fn run_job(out: &Output, docker: &Docker, job: &TestJob<'_>) -> anyhow::Result<Finished> {
    let unique = unique_suffix();
    let container = format!("pipe-test-{}-{unique}", docker::branch_tag(&job.label));
    let labels = vec![("pipe.run".to_string(), job.label.clone())];
    let services = match &job.services {
        Some(file) => Some(Services::up(out, docker, file, &job.log, &unique)?),
        None => None,
    };
    let network = services.as_ref().map(|s| s.network.clone());
    let cmd = job.command(docker, &container, &labels, network.as_deref());
    let spinner = out.spinner(&format!("testing {}", job.image));
    let echo = job.echo;
    let result = exec::logged(out, &cmd, &job.log, client::LOG_CAP, job.timeout, &mut |line| {
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
        let _ = exec::capture(out, &rm, Duration::from_secs(60));
    }
    if let Some(services) = services {
        services.down(out);
    }
    let finished = result?;
    if client::engine_gone(docker, out, &finished) {
        return Err(client::engine_unavailable(docker, &finished.tail));
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
    fn up(out: &Output, docker: &Docker, file: &Path, log: &Path, unique: &str) -> anyhow::Result<Services> {
        let compose = docker.compose(out)?;
        let project = format!("pipetest{unique}");
        let services = Services { compose, file: file.to_path_buf(), network: format!("{project}_default"), project };
        let cmd = services.cmd().args(["up", "--detach"]);
        let finished = exec::logged(out, &cmd, log, client::LOG_CAP, Duration::from_secs(600), &mut |_| {})?;
        if !finished.success() {
            services.down(out);
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

    fn down(&self, out: &Output) {
        let cmd = self.cmd().args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        if let Err(err) = exec::capture(out, &cmd, Duration::from_secs(120)) {
            out.warn(format!("could not remove test services `{}`: {err:#}", self.project));
        }
    }
}

/// Lowercase letters and digits unique to this process and moment.
fn unique_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}{:08x}", std::process::id(), nanos)
}
