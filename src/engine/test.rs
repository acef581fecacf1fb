//! The test stage: run the project's test command inside the image built for a commit, with a
//! unique container name and label, confined (no capabilities, no new privileges, no host
//! path, bounded memory, PIDs and CPU, a network of its own), optional test services from the
//! allow-list on that network, a timeout, and no container left behind however it ends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::{Job, RefFiles};
use crate::docker::client::{self as client, Docker};
use crate::docker::{self, Confinement, RunSpec};
use crate::error::StageFailed;
use crate::exec::{self, Cmd, Finished};
use crate::model::{Outcome, Stage};
use crate::output::Output;
use crate::refs;
use crate::secret::{self, Secret};
use crate::state::{Run, StageRun};
use crate::trust::isolation::{self, Isolated, NetworkSpec};
use crate::trust::redact::{self, Redactor};
use crate::trust::services::Services;

/// One test container's settings.
pub(crate) struct TestJob<'a> {
    pub label: String,
    pub image: String,
    pub command: &'a str,
    pub env: Vec<(String, String)>,
    /// Secret variables: names on the command line, values in the docker CLI's environment
    /// (`None` in a dry run, which only prints the names).
    pub secrets: Vec<(String, Option<Secret>)>,
    pub services: Option<Services>,
    pub confinement: Confinement,
    /// The docker config compose runs with: one holding no registry login.
    pub compose_config: PathBuf,
    pub timeout: Duration,
    pub log: PathBuf,
    pub echo: bool,
}

/// Tests the ref's latest built image (or run `run_number`'s) and records the result; a
/// failure is recorded, then returned as [`StageFailed`].
pub(crate) fn test(job: &Job<'_>, files: &mut RefFiles, run_number: Option<u64>) -> anyhow::Result<()> {
    let (out, name) = (&job.out, job.name);
    let run = match run_number {
        Some(n) => files.run(n).cloned(),
        None => super::latest_built(&files.history, None).cloned(),
    };
    let Some(run) = run else { return Err(super::not_built(job)) };
    if !run.images.is_empty() {
        let mut one = |one: &Run, command: &str| {
            let (test_job, docker) = plan(job, one, command, true)?;
            run_job(out, &docker, &test_job)
        };
        return super::images::test(job, files, &run, &mut one);
    }
    let image = super::run_image(&run);
    let Some(command) = run.test.clone() else {
        let skipped = StageRun::new(Stage::Test, Outcome::Skipped, crate::clock::now(), Duration::ZERO, None);
        job.record(files, run.number, skipped)?;
        out.info(format!("{name}: no test command for {image}; recorded as skipped"));
        return Ok(());
    };
    let (test_job, docker) = plan(job, &run, &command, true)?;
    let started = crate::clock::now();
    let finished = run_job(out, &docker, &test_job)?;
    let record = StageRun::new(Stage::Test, finished.outcome(), started, finished.duration, finished.code);
    job.record(files, run.number, record)?;
    finished.check_interrupted()?;
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

/// The test container (and services) of `run` as the test stage runs it, and the docker client
/// it runs with (no registry login for an untrusted ref). Without `resolve`, secret variables are
/// named but not read, for a dry run.
pub(crate) fn plan<'a>(
    job: &Job<'_>,
    run: &Run,
    command: &'a str,
    resolve: bool,
) -> anyhow::Result<(TestJob<'a>, Docker)> {
    let name = job.name;
    let trusted = job.trusted();
    let mut secrets = Vec::new();
    for key in run.test_secrets.iter().filter(|_| trusted) {
        let Some(reference) = job.project.test_env.get(key).and_then(|v| v.get_ref().secret()) else { continue };
        let value = if resolve {
            Some(secret::resolve_logged(&job.out, &reference, &format!("project.{name}.test_env.{key}"))?)
        } else {
            None
        };
        secrets.push((key.clone(), value));
    }
    let services = match &run.test_services {
        Some(path) => Some(load_services(path)?),
        None => None,
    };
    let confinement = job.project.limits.confinement();
    let nologin = job.untrusted_docker()?;
    let test_job = TestJob {
        label: format!("{name}-{}-{}", docker::branch_tag(refs::display(&job.refname)), run.number),
        image: super::run_image(run),
        command,
        env: run.test_env.clone().into_iter().collect(),
        secrets,
        services,
        confinement,
        compose_config: nologin.config_dir.clone().unwrap_or_default(),
        timeout: job.timeout(Stage::Test),
        log: run.log.clone(),
        echo: false,
    };
    let docker = if trusted { job.docker() } else { nologin };
    Ok((test_job, docker))
}

/// Reads the test services the build stage accepted and stored.
pub(crate) fn load_services(path: &Path) -> anyhow::Result<Services> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read stored test services `{}`", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("invalid stored test services `{}`", path.display()))?;
    Services::from_stored(&value).ok_or_else(|| anyhow::anyhow!("invalid stored test services `{}`", path.display()))
}

impl TestJob<'_> {
    /// The container's name and labels for one run (`unique` per run).
    fn names(&self, unique: &str) -> (String, Vec<(String, String)>) {
        let container = format!("pipe-test-{}-{unique}", docker::branch_tag(&self.label));
        // The image's own `com.docker.compose.project` label would let a repository pass its
        // test container off as another project's (a deploy counting it as one of its
        // containers): the run's label takes its place.
        let labels = vec![
            ("pipe.run".to_string(), self.label.clone()),
            ("com.docker.compose.project".to_string(), container.clone()),
        ];
        (container, labels)
    }

    /// Whether the test gets a network of its own (test services, or `limits.egress`); else it
    /// runs with `--network none`, its own loopback only.
    fn networked(&self) -> bool {
        self.services.is_some() || self.confinement.egress
    }

    /// What a dry run prints: the container's `docker run` as the stage runs it, with the test's
    /// network named as it would be.
    pub(crate) fn dry_run(&self, docker: &Docker) -> Cmd {
        let unique = "UNIQUE";
        let (container, labels) = self.names(unique);
        let network = if self.networked() { network_name(unique) } else { "none".into() };
        self.command(docker, &container, &labels, Some(&network))
    }

    /// The `docker run` of this job's container: what runs, and what a dry run prints (secret
    /// variables by name only; their values are added to the environment of the command).
    pub(crate) fn command(
        &self,
        docker: &Docker,
        container: &str,
        labels: &[(String, String)],
        network: Option<&str>,
    ) -> Cmd {
        let names: Vec<String> = self.secrets.iter().map(|(k, _)| k.clone()).collect();
        let spec = RunSpec {
            name: container,
            labels,
            env: &self.env,
            secret_env: &names,
            confinement: &self.confinement,
            network,
            image: &self.image,
            command: self.command,
        };
        let mut cmd = docker.cmd().args(docker::run_args(&spec));
        for (key, value) in &self.secrets {
            if let Some(value) = value {
                cmd = cmd.env(key, value.reveal());
            }
        }
        cmd
    }
}

/// The network of one test: `pipetest` and the run's unique suffix.
fn network_name(unique: &str) -> String {
    format!("pipetest{unique}")
}

/// Runs one test container (with its services) and removes everything it started.
pub(crate) fn run_job(out: &Output, docker: &Docker, job: &TestJob<'_>) -> anyhow::Result<Finished> {
    let unique = super::unique_suffix();
    let (container, labels) = job.names(&unique);
    // A networked test gets a bridge of its own, created (and firewalled) before anything of the
    // repository's starts on it: internal without `egress`, and refused the host and the LAN
    // where this host can enforce it.
    let network = if job.networked() {
        let name = network_name(&unique);
        let why = isolation::unenforceable();
        if let Some(why) = &why {
            out.detail(format!("the test network `{name}` reaches the host: {why}"));
        }
        let spec =
            NetworkSpec { name: &name, internal: !job.confinement.egress, purpose: "test", firewall: why.is_none() };
        Some(Isolated::create(*out, docker, &spec)?)
    } else {
        None
    };
    let network_name = network.as_ref().map_or("none", |n| n.name.as_str());
    let services = match &job.services {
        Some(services) => Some(ServicesUp::up(out, docker, job, services, &unique, network_name)?),
        None => None,
    };
    let cmd = job.command(docker, &container, &labels, Some(network_name));
    let redactor = Redactor::new(job.secrets.iter().filter_map(|(_, s)| s.as_ref()));
    let spinner = out.spinner(&format!("testing {}", job.image));
    let echo = job.echo;
    let result = redact::logged(out, &cmd, &job.log, client::LOG_CAP, job.timeout, &redactor, &mut |line| {
        if echo {
            crate::output::echo(line);
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
    // The network (and its rules) go once nothing is attached to it.
    drop(network);
    let finished = result?;
    if client::engine_gone(docker, out, &finished) {
        return Err(client::engine_unavailable(docker, &finished.tail));
    }
    Ok(finished)
}

/// Test services brought up by compose from the file pipe wrote, on their own network;
/// removed by `down`.
struct ServicesUp {
    compose: Vec<OsString>,
    /// pipe's own directory holding the compose file: nothing of the repository's is in it
    /// (no `.env` for compose to read).
    dir: tempfile::TempDir,
    project: String,
    config: PathBuf,
}

impl ServicesUp {
    fn up(
        out: &Output,
        docker: &Docker,
        job: &TestJob<'_>,
        services: &Services,
        unique: &str,
        network: &str,
    ) -> anyhow::Result<ServicesUp> {
        let compose = docker.compose(out)?;
        let project = format!("pipetest{unique}");
        let dir = tempfile::Builder::new()
            .prefix("pipe-services-")
            .tempdir()
            .context("failed to create a temporary directory")?;
        let file = dir.path().join("compose.json");
        let document = services.compose_json(&job.confinement, &job.label, network);
        std::fs::write(&file, serde_json::to_vec_pretty(&document)?)
            .with_context(|| format!("failed to write `{}`", file.display()))?;
        let up = ServicesUp { compose, dir, project, config: job.compose_config.clone() };
        let cmd = up.cmd().args(["up", "--detach", "--no-build"]);
        let finished = exec::logged(out, &cmd, &job.log, client::LOG_CAP, Duration::from_secs(600), &mut |_| {})?;
        if !finished.success() {
            up.down(out);
            anyhow::bail!("test services did not start: {}\n{}", finished.describe(), finished.tail);
        }
        Ok(up)
    }

    /// compose with an environment of pipe's choosing only: no variable of pipe's own (the
    /// registry password, the Slack URL, a git token) can be interpolated or inherited.
    fn cmd(&self) -> Cmd {
        let mut cmd = Cmd::from_argv(&self.compose).env_clear();
        for key in ["PATH", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"] {
            if let Some(value) = std::env::var_os(key) {
                cmd = cmd.env(key, value);
            }
        }
        cmd.env("DOCKER_CONFIG", &self.config)
            .env("LANG", "C.UTF-8")
            .args([
                "--project-name".into(),
                OsString::from(&self.project),
                "--project-directory".into(),
                self.dir.path().as_os_str().to_owned(),
                "--file".into(),
                self.dir.path().join("compose.json").into_os_string(),
            ])
            .dir(self.dir.path())
    }

    fn down(&self, out: &Output) {
        let cmd = self.cmd().args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        if let Err(err) = exec::capture(out, &cmd, Duration::from_secs(120)) {
            out.warn(format!("could not remove test services `{}`: {err:#}", self.project));
        }
    }
}
