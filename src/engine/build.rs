//! The build stage: fetch one commit into the project's workspace, check it out clean, and
//! `docker build` it with OCI labels.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::plan::{self, Plan};
use super::{Job, RefFiles};
use crate::config::{ArgValue, NetworkPolicy, Submodules};
use crate::docker::client::{self as client, Docker};
use crate::docker::{self, BuildSpec, Builder, Needs};
use crate::error::{RemoteUnavailable, StageFailed, ToolUnavailable};
use crate::exec::{self, Cmd, Finished};
use crate::model::{Outcome, Stage};
use crate::output::Output;
use crate::secret::{self, Secret};
use crate::state::{Run, StageRun};
use crate::trust::isolation::{self, Isolated, NetworkSpec};
use crate::trust::redact::{self, Redactor};
use crate::{git, refs};

/// Builds `commit` (else the ref's remote tip) and records the run; returns the run number.
/// A failed build is recorded, then returned as [`StageFailed`]. So is a failure before the
/// image build (credentials, fetch, checkout, an invalid `.pipe.toml`) of a named commit (the
/// polled head, in a tick), with its message as the run's log, so the commit is never dropped
/// silently; a signal stops it with nothing recorded.
pub(crate) fn build(
    job: &Job<'_>,
    files: &mut RefFiles,
    default_branch: &str,
    commit: Option<&str>,
) -> anyhow::Result<u64> {
    let (out, name, refname) = (&job.out, job.name, job.refname.as_str());
    // An untrusted ref builds with no registry login: its Dockerfile cannot pull with pipe's
    // credentials.
    let docker = if job.trusted() { job.docker() } else { job.untrusted_docker()? };
    let deadline = Instant::now() + job.timeout(Stage::Build);
    let prepared = match prepare(job, default_branch, commit, deadline) {
        Ok(prepared) => prepared,
        Err(err) => {
            // git gives up a fetch at a signal or the deadline with a plain error.
            crate::signals::check()?;
            let unanswered = err.is::<ToolUnavailable>() || err.is::<RemoteUnavailable>();
            let Some(commit) = commit.filter(|_| !unanswered) else { return Err(err) };
            let outcome = if Instant::now() >= deadline { Outcome::TimedOut } else { Outcome::Failed };
            return record_early_failure(job, files, commit, outcome, err);
        }
    };
    let Prepared { sha, subject, author, plan, tags, labels, services, secrets, builder } = prepared;
    let number = files.history.next_run;
    files.history.next_run += 1;
    let log = files.new_log(number)?;
    if let Some(project_logs) = log.parent().and_then(Path::parent) {
        super::enforce_log_budget(out, project_logs, job.config.settings.project_logs_mib.saturating_mul(1 << 20));
    }
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
        test_secrets: plan.test_secrets.iter().map(|(k, _)| k.clone()).collect(),
        test_services: services,
        subject: Some(subject),
        author: Some(author),
        images: Vec::new(),
    });
    let started = crate::clock::now();
    let timeout = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    // The build's network lives as long as this stage: its rules and bridge are removed when
    // `network` drops, whatever the build's end.
    let network = build_network(job)?;
    let cache =
        super::build_cache::prepare(job, &docker, builder, &plan.image, &tags[0], default_branch, &log, deadline)?;
    let refs = BuildRefs {
        plan: &plan,
        tags: &tags,
        labels: &labels,
        secrets: &secrets,
        network: network.as_ref().map(BuildNetworkUse::name),
        cache: &cache.cache,
    };
    if !plan.images.is_empty() {
        let mut one = |plan: &Plan, left| {
            let refs = BuildRefs { plan, ..refs };
            docker_build(out, &docker, builder, &refs, &log, left, false)
        };
        let plan = (&plan, tags.as_slice());
        return super::images::build(job, files, number, &docker, plan, default_branch, deadline, &mut one);
    }
    let (mut finished, mut image_id) = docker_build(out, &docker, builder, &refs, &log, timeout, false)?;
    if !finished.success() && lost_cache_layer(&finished.tail) {
        // An image removed while this build used one of its layers as cache (a prune, another
        // build's cleanup): the engine's own race, not the commit's failure. Built again once.
        out.warn(format!("{name}: the engine lost a cached layer during the build; building again"));
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        (finished, image_id) = docker_build(out, &docker, builder, &refs, &log, left, false)?;
    }
    if client::engine_gone(&docker, out, &finished) {
        return Err(client::engine_unavailable(&docker, &finished.tail));
    }
    if let Some(run) = files.run_mut(number) {
        run.image_id = image_id.clone();
    }
    let record = StageRun::new(Stage::Build, finished.outcome(), started, finished.duration, finished.code);
    job.record(files, number, record)?;
    finished.check_interrupted()?;
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
    out.info(format!(
        "{name}: built {} ({}) from {} in {:.1}s",
        tags.iter().map(|t| format!("{}:{t}", plan.image)).collect::<Vec<_>>().join(", "),
        image_id.as_deref().unwrap_or("?"),
        docker::commit_tag(&sha),
        finished.duration.as_secs_f64()
    ));
    Ok(number)
}

/// The network a build's `RUN` steps get.
enum BuildNetworkUse {
    None,
    Isolated(Isolated),
}

impl BuildNetworkUse {
    fn name(&self) -> &str {
        match self {
            BuildNetworkUse::None => "none",
            BuildNetworkUse::Isolated(n) => &n.name,
        }
    }
}

/// The builder of this ref's build, or the refusal, before anything is fetched: a secret
/// build arg only on a builder that mounts it for one step (never into the image), an
/// isolated build only where pipe can give its network (never run wider).
pub(crate) fn choose_builder(job: &Job<'_>) -> anyhow::Result<Builder> {
    let trusted = job.trusted();
    let secret = if trusted {
        job.project.build_args.iter().find(|(_, v)| matches!(v.get_ref(), ArgValue::Secret(_))).map(|(k, _)| k.as_str())
    } else {
        None
    };
    let isolated = job.project.build_network(trusted) == NetworkPolicy::Isolated;
    // The client that will run the build: an untrusted ref's has no plugins of pipe's config.
    let docker = if trusted { job.docker() } else { job.untrusted_docker()? };
    let builders = docker.builders(&job.out);
    let refused = |what: &str, why: String, hint: String| -> anyhow::Error {
        let shown = refs::display(&job.refname);
        StageFailed(format!("project `{}`: cannot build {shown}{what}: {why}\nhint: {hint}", job.name)).into()
    };
    let builder = builders.choose(Needs { secret, network: isolated }).map_err(|why| match secret {
        // No builder gives both: BuildKit mounts secrets but cannot join pipe's network.
        Some(key) if isolated => refused(
            "",
            format!("the secret build arg `{key}` needs BuildKit, which cannot join the isolated network"),
            format!(
                "set `build_network = {{ trusted = \"default\" }}` or `\"none\"` under [project.{}], or give \
                 the build no secret",
                job.name
            ),
        ),
        Some(key) => refused(
            "",
            why,
            format!(
                "install docker's buildx plugin, or use a docker CLI with BuildKit built in (before 23, such as \
                 Debian 12's `docker.io`), and read the secret in the Dockerfile from a mount, \
                 `RUN --mount=type=secret,id={key} …` (the file `/run/secrets/{key}`), not from `ARG {key}`"
            ),
        ),
        None => refused(" on an isolated network", why, network_hint(job)),
    })?;
    if isolated && let Some(why) = isolation::unenforceable() {
        return Err(refused(" on an isolated network", why, network_hint(job)));
    }
    Ok(builder)
}

fn network_hint(job: &Job<'_>) -> String {
    let who = if job.trusted() { "trusted" } else { "untrusted" };
    format!(
        "run pipe as root or with CAP_NET_ADMIN (the packaged units do), with iptables, or set \
         `build_network = {{ {who} = \"none\" }}` (no network) or `\"default\"` (its RUN steps reach the host \
         and the LAN) under [project.{}]",
        job.name
    )
}

/// Creates the build's network: nothing for the engine's default, `none`, or an isolated
/// bridge of its own with its firewall rules ([`choose_builder`] said it can be made).
fn build_network(job: &Job<'_>) -> anyhow::Result<Option<BuildNetworkUse>> {
    match job.project.build_network(job.trusted()) {
        NetworkPolicy::Default => Ok(None),
        NetworkPolicy::None => Ok(Some(BuildNetworkUse::None)),
        NetworkPolicy::Isolated => {
            let name = format!("pipe-build-{}", super::unique_suffix());
            let spec = NetworkSpec { name: &name, internal: false, purpose: "build", firewall: true };
            Ok(Some(BuildNetworkUse::Isolated(Isolated::create(job.out, &job.docker(), &spec)?)))
        }
    }
}

/// What a build knows once its commit is checked out.
struct Prepared {
    sha: String,
    /// The commit's subject and author's name, for the status page.
    subject: String,
    author: String,
    plan: Plan,
    tags: Vec<String>,
    labels: Vec<(String, String)>,
    /// The accepted test services, stored in pipe's own directory for the test stage.
    services: Option<PathBuf>,
    /// The secret build args, resolved.
    secrets: Vec<(String, Secret)>,
    builder: Builder,
}

fn prepare(job: &Job<'_>, default_branch: &str, commit: Option<&str>, deadline: Instant) -> anyhow::Result<Prepared> {
    let (name, project, refname) = (job.name, job.project, job.refname.as_str());
    let builder = choose_builder(job)?;
    let auth = super::git_auth(name, project)?;
    let workdir = super::workspace_dir(job.config, name);
    let shown = git::redact_url(&project.repo);
    job.out.info(format!("{name}: fetching {} from `{shown}`", refs::display(refname)));
    let checked_out = git::checkout(&project.repo, &auth, refname, commit, &workdir, deadline)
        .with_context(|| format!("project `{name}`: cannot check out `{refname}`"))?;
    if git::has_submodules(&workdir)? {
        fetch_submodules(job, &workdir, deadline)?;
    }
    let sha = checked_out.sha;
    let trusted = job.trusted();
    let mut plan = plan::plan(name, Some(project), &workdir, trusted)?;
    if !trusted {
        // An untrusted ref's image goes under pipe's own name for it, whatever the pipeline
        // file or the repository names: it never creates or moves a name anything trusted
        // resolves (a branch's moving tag, `latest`, a base image a trusted build starts from).
        plan.image = docker::untrusted_image(name);
        for image in &mut plan.images {
            image.image = format!("{}/{}", docker::untrusted_image(name), image.name);
        }
        plan.image = plan.images.first().map_or(plan.image, |i| i.image.clone());
    }
    if !trusted {
        for dockerfile in plan.images.iter().map(|i| &i.dockerfile).chain([&plan.dockerfile]) {
            super::refuse::compose_labels(job, &workdir, dockerfile)?;
        }
    }
    if !trusted && (!project.build_args.is_empty() || !project.test_env.is_empty()) {
        job.out.detail(format!(
            "{name}: {} is {}: no secret build args or test variables",
            refs::display(refname),
            crate::trust::untrusted_why(refname)
        ));
    }
    let services = match &plan.test_services {
        Some((_, services)) => {
            let dir = job.config.settings.workspace.join(name).join("test-services");
            super::ensure_dir(&dir)?;
            let path = dir.join(format!("{sha}.json"));
            let text = serde_json::to_string_pretty(&services.to_stored()).context("failed to encode test services")?;
            std::fs::write(&path, text).with_context(|| format!("failed to write `{}`", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let secrets = plan
        .secret_args
        .iter()
        .map(|(key, r)| {
            Ok((key.clone(), secret::resolve_logged(&job.out, r, &format!("project.{name}.build_args.{key}"))?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Only a build that may be pushed and deployed writes the commit's tag: never an untrusted
    // ref's, nor a pull request's even with `trust_pull_requests` (pull requests never deploy).
    let deployable = trusted && refs::classify(refname) != Some(refs::RefKind::PullRequest);
    let commit_tag = if deployable { docker::commit_tag(&sha).to_string() } else { docker::untrusted_commit_tag(&sha) };
    // Only a trusted ref can be the default branch, tagged `latest`.
    let default_branch = trusted.then_some(default_branch);
    let tags = vec![docker::ref_tag(refname, default_branch), commit_tag];
    let builds = super::refuse::Builds { config: Some(job.config), name, project: Some(project), source: None };
    super::refuse::images(&job.out, &job.docker(), &builds, &plan, &tags, trusted)?;
    let labels = labels(&sha, checked_out.time, &shown, name, refname);
    let (subject, author) = (checked_out.subject, checked_out.author);
    Ok(Prepared { sha, subject, author, plan, tags, labels, services, secrets, builder })
}

/// Which submodule URLs a project's checkouts may fetch.
pub(crate) fn submodule_policy(project: &crate::config::Project) -> git::submodules::Policy {
    match &project.submodules {
        None | Some(Submodules::Enabled(true)) => git::submodules::Policy::SameHost,
        Some(Submodules::Enabled(false)) => git::submodules::Policy::Off,
        Some(Submodules::Allow(a)) => git::submodules::Policy::Allow(a.allow.clone()),
    }
}

/// Fetches the checkout's submodules in a child `pipe internal-submodules`, stopped (with its
/// whole process group) at the build's deadline: a server named by `.gitmodules` that trickles
/// its answer cannot hold the build past its timeout. The child reads the same pipeline file
/// and inherits the environment its secrets come from; nothing secret is in its argv.
fn fetch_submodules(job: &Job<'_>, workdir: &Path, deadline: Instant) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find pipe's own executable")?;
    let cmd = Cmd::new(exe)
        .arg(crate::cli::INTERNAL_SUBMODULES)
        .arg("--config")
        .arg(&job.config.path)
        .arg("--state")
        .arg(job.state_path)
        .args(["--quiet", job.name])
        .arg(workdir);
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    let (_, failed) = exec::capture_even_failed(&job.out, &cmd, left)?;
    let Some(failed) = failed else { return Ok(()) };
    // The child's own error, without its timestamps and `error:` prefix.
    let said: Vec<&str> = failed
        .output_tail
        .lines()
        .map(|l| l.split_once(" error: ").map_or(l, |(_, rest)| rest))
        .map(|l| l.trim_start_matches("error: "))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if Instant::now() >= deadline {
        anyhow::bail!(
            "cannot fetch the submodules of `{}`: still fetching at the build's deadline ({}s)",
            job.refname,
            job.timeout(Stage::Build).as_secs()
        );
    }
    if said.is_empty() {
        return Err(failed.into());
    }
    anyhow::bail!("{}", said.join("\n"))
}

/// Records a build that failed before `docker build` ran: a run of the commit that was asked
/// for (the polled head), its error as the log, the build stage failed (or timed out). The
/// error keeps its chain, so an invalid `.pipe.toml` is still a configuration error (exit 2).
fn record_early_failure(
    job: &Job<'_>,
    files: &mut RefFiles,
    commit: &str,
    outcome: Outcome,
    err: anyhow::Error,
) -> anyhow::Result<u64> {
    let number = files.history.next_run;
    files.history.next_run += 1;
    let log = files.new_log(number)?;
    let message = format!("{err:#}");
    std::fs::write(&log, format!("{message}\n")).map_err(|e| crate::error::StateError::log(&log, e))?;
    let started = crate::clock::now();
    files.history.runs.push(Run {
        number,
        commit: commit.to_string(),
        started,
        image: String::new(),
        tags: Vec::new(),
        image_id: None,
        log,
        stages: Vec::new(),
        digests: Default::default(),
        test: None,
        test_env: Default::default(),
        test_secrets: Default::default(),
        test_services: None,
        subject: None,
        author: None,
        images: Vec::new(),
    });
    job.record(files, number, StageRun::new(Stage::Build, outcome, started, Duration::ZERO, None))?;
    let shown = refs::display(&job.refname);
    Err(err.context(StageFailed(format!("build of {} {shown} failed before the image build", job.name))))
}

/// The legacy builder's words for a cache layer that vanished under it.
fn lost_cache_layer(output: &str) -> bool {
    output.lines().any(|l| {
        (l.contains("failed to get digest") && l.contains("no such file or directory"))
            || l.trim_start().starts_with("No such image: sha256:")
    })
}

/// The OCI labels of every image pipe builds. `created` is the commit's time, not the wall
/// clock, so rebuilding a commit hits the build cache and yields the same image (the
/// reproducible-builds convention); every label is stable for a given commit and ref.
pub(crate) fn labels(
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

/// What one image build names: the plan, its tags and labels, and the secret build args'
/// values (empty for a dry run, which prints only their names).
pub(crate) struct BuildRefs<'a> {
    pub plan: &'a Plan,
    pub tags: &'a [String],
    pub labels: &'a [(String, String)],
    pub secrets: &'a [(String, Secret)],
    /// The network of the `RUN` steps (`none`, or an isolated one); `None`: the engine's default.
    pub network: Option<&'a str>,
    /// The cache flags (`super::build_cache`).
    pub cache: &'a docker::CacheUse,
}

impl BuildRefs<'_> {
    /// The `docker build` command for these refs, writing the image id to `iidfile`: what runs,
    /// and what a dry run prints.
    pub(crate) fn command(&self, docker: &Docker, builder: Builder, iidfile: &Path) -> Cmd {
        let refs: Vec<String> = self.tags.iter().map(|t| format!("{}:{t}", self.plan.image)).collect();
        let spec = BuildSpec {
            dockerfile: &self.plan.dockerfile,
            context: &self.plan.context,
            tags: &refs,
            labels: self.labels,
            build_args: &self.plan.build_args,
            secret_args: &self.plan.secret_args.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            iidfile,
            network: self.network,
            cache: self.cache,
        };
        let mut cmd = docker.cmd().args(docker::build_args(builder, &spec));
        for (key, value) in self.secrets {
            cmd = cmd.env(key, value.reveal());
        }
        cmd.env("DOCKER_BUILDKIT", if builder == Builder::Legacy { "0" } else { "1" })
    }
}

/// Runs `docker build` with output in `log` (and, with `echo`, on stderr); returns how it ended
/// and the image id from `--iidfile`.
pub(crate) fn docker_build(
    out: &Output,
    docker: &Docker,
    builder: Builder,
    build: &BuildRefs<'_>,
    log: &Path,
    timeout: Duration,
    echo: bool,
) -> anyhow::Result<(Finished, Option<String>)> {
    let iid = tempfile::Builder::new().prefix("pipe-iid-").tempfile().context("failed to create a temporary file")?;
    let cmd = build.command(docker, builder, iid.path());
    let spinner = out.spinner(&format!("building {}:{}", build.plan.image, build.tags[0]));
    let redactor = Redactor::new(build.secrets.iter().map(|(_, s)| s));
    let finished = redact::logged(out, &cmd, log, client::LOG_CAP, timeout, &redactor, &mut |line| {
        if echo {
            crate::output::echo(line);
        } else if let Some(step) = docker::build_step(line) {
            spinner.set(step);
            out.detail(step);
        }
    })?;
    spinner.finish();
    let image_id = std::fs::read_to_string(iid.path()).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    Ok((finished, image_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a parallel test's image cleanup pruned a cached layer mid-build, and the
    /// build failed as if the commit were broken.
    #[test]
    fn a_vanished_cache_layer_is_recognised() {
        let tail = "Step 3/7 : LABEL a=b\n ---> Running in 95a0912e2776\nfailed to get digest sha256:9f76: open /var/lib/docker/image/overlay2/imagedb/content/sha256/9f76: no such file or directory";
        assert!(lost_cache_layer(tail));
        assert!(lost_cache_layer("Step 3/9 : RUN echo step-ran\nNo such image: sha256:51d48360cb4a7d2a"));
        assert!(!lost_cache_layer("RUN false\nThe command '/bin/sh -c false' returned a non-zero code: 1"));
    }
}
