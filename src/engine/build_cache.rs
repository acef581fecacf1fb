//! A warm build cache on a fresh workspace or a fresh host: what a trusted build reuses of the
//! images earlier builds pushed, fetched before it runs, and what it leaves in the image it
//! pushes for the next one. An untrusted ref reads and writes none of it.
//!
//! The sources, in order: the ref's own image in the first registry its branch pushes to
//! (`REGISTRY/IMAGE:<ref tag>`), then the default branch's (`REGISTRY/IMAGE:latest`, in the
//! first registry the default branch pushes to). BuildKit reads the cache metadata its inline
//! export wrote into those images straight from the registry (`--cache-from`, no pull; a source
//! that is missing or unreachable is a warning in the log, and the build goes on). The legacy
//! builder needs them in the engine: each is pulled in turn until one comes (bounded by
//! [`PULL_LIMIT`]; a failure is a cold build, said in the log, never a failed one), and named
//! with the ref's local images (`IMAGE:<ref tag>`, `IMAGE:latest`) that exist. Given
//! `--cache-from`, the legacy builder reuses only layers of those images; with none of them,
//! the build runs `--no-cache` rather than from the engine's whole layer cache, which untrusted
//! builds fill too. `cache = false` drops the registry (no login, pull, `--cache-from` of it or
//! inline export), never that rule. Cache mounts (`RUN --mount=type=cache`) are BuildKit's, kept per engine:
//! pipe leaves them to the Dockerfile, and empties them around an untrusted ref's BuildKit build
//! ([`Guard`]), the one place an untrusted ref could read or write what a trusted build mounts.
//! Such a build holds `buildkit-mounts.lock` beside the state exclusively, and every trusted
//! BuildKit build holds it shared, so no untrusted build runs while a trusted one has a mount
//! (pipe builds projects in parallel, and people run `pipe build` beside the timer).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Job;
use crate::config::{Config, Project};
use crate::docker::client::{self, Docker};
use crate::docker::{self, Builder, CacheUse};
use crate::error::StateError;
use crate::exec;
use crate::output::Output;

/// The longest a cache source's pull (or login) may take before the build goes on without it.
const PULL_LIMIT: Duration = Duration::from_secs(300);

/// Whether the project reuses earlier builds beyond the engine's own cache (`cache`, on by
/// default).
pub(crate) fn enabled(project: &Project) -> bool {
    project.cache.unwrap_or(true)
}

/// Where a trusted ref's build looks for earlier images: `(registry name, REGISTRY/IMAGE:TAG)` in
/// order, and the local names of the same images.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Sources {
    pub remote: Vec<(String, String)>,
    pub local: Vec<String>,
}

/// The cache sources of a trusted ref's build of `image` (see the module docs): none for an
/// untrusted ref or an image under the untrusted namespace, no registry's with `cache = false`.
pub(crate) fn sources(
    config: &Config,
    project: &Project,
    refname: &str,
    default_branch: &str,
    image: &str,
    ref_tag: &str,
) -> Sources {
    if !crate::trust::trusted(project, refname) || docker::in_untrusted_namespace(image) {
        return Sources::default();
    }
    let mut out = Sources::default();
    let default_ref = format!("refs/heads/{default_branch}");
    let own = super::push::registries_for(config, project, refname).into_iter().next();
    let default = super::push::registries_for(config, project, &default_ref).into_iter().next();
    for (found, tag) in [(own, ref_tag), (default, "latest")] {
        if let Some((name, registry)) = found.filter(|_| enabled(project)) {
            let reference = format!("{}/{image}:{tag}", registry.url);
            if !out.remote.iter().any(|(_, r)| *r == reference) {
                out.remote.push((name.to_string(), reference));
            }
        }
        let local = format!("{image}:{tag}");
        if !out.local.contains(&local) {
            out.local.push(local);
        }
    }
    out
}

/// What a build got of the cache, the cleanup an untrusted BuildKit build needs after it, and
/// the cache mounts' lock a BuildKit build holds while it runs.
pub(crate) struct Guard {
    pub cache: CacheUse,
    purge: Option<(Output, Docker)>,
    _mounts: Option<std::fs::File>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some((out, docker)) = &self.purge {
            purge_cache_mounts(out, docker);
        }
    }
}

/// Fetches what this build reuses and writes what it found to the run's `log`: the
/// `--cache-from` images (pulled first for the legacy builder), BuildKit's inline export, or
/// `--no-cache`. An untrusted ref's BuildKit build gets the engine's cache mounts emptied now
/// and when the returned guard drops.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    job: &Job<'_>,
    docker: &Docker,
    builder: Builder,
    image: &str,
    ref_tag: &str,
    default_branch: &str,
    log: &Path,
    deadline: Instant,
) -> anyhow::Result<Guard> {
    let out = &job.out;
    let trusted = job.trusted();
    let mounts = if builder == Builder::Legacy { None } else { Some(lock_mounts(job, !trusted, deadline)?) };
    if !trusted {
        let purge = mounts.is_some().then(|| {
            purge_cache_mounts(out, docker);
            (*out, docker.clone())
        });
        note(log, "build cache: none for an untrusted ref (it reads and writes no cache a trusted build uses)")?;
        return Ok(Guard { cache: CacheUse::default(), purge, _mounts: mounts });
    }
    let found = sources(job.config, job.project, &job.refname, default_branch, image, ref_tag);
    let left = || deadline.saturating_duration_since(Instant::now()).min(PULL_LIMIT).max(Duration::from_secs(1));
    let mut logged_in: Vec<String> = Vec::new();
    let mut remote = Vec::new();
    for (reg_name, reference) in &found.remote {
        if !logged_in.contains(reg_name) {
            let Some(registry) = job.config.registries.get(reg_name) else { continue };
            super::ensure_private_dir(&crate::state::docker_config_dir(job.state_path))?;
            if let Err(err) = super::push::log_in(out, docker, reg_name, registry, left()) {
                crate::signals::check()?;
                note(log, &format!("build cache: cannot log in to registry `{reg_name}`, not reading it: {err:#}"))?;
                continue;
            }
            logged_in.push(reg_name.clone());
        }
        remote.push(reference.clone());
    }
    if builder != Builder::Legacy {
        let cache = CacheUse { from: remote, inline: enabled(job.project), no_cache: false };
        note(log, &format!("build cache: BuildKit, {}", describe(&cache)))?;
        return Ok(Guard { cache, purge: None, _mounts: mounts });
    }
    let mut from = Vec::new();
    for reference in &remote {
        let pull = docker.cmd().args(["pull", reference.as_str()]);
        let finished = exec::logged(out, &pull, log, client::LOG_CAP, left(), &mut |_| {})?;
        finished.check_interrupted()?;
        if finished.success() {
            from.push(reference.clone());
            break;
        }
        let line = crate::output::tail_lines(&finished.tail, 1);
        note(log, &format!("build cache: {reference} not pulled ({}): {}", finished.describe(), line.trim()))?;
    }
    for local in &found.local {
        let inspect = docker.cmd().args(["image", "inspect", "--format", "{{.Id}}", local.as_str()]);
        if exec::capture(out, &inspect, Duration::from_secs(30)).is_ok() {
            from.push(local.clone());
        }
    }
    let cache = CacheUse { no_cache: from.is_empty(), from, inline: false };
    note(log, &format!("build cache: the legacy builder, {}", describe(&cache)))?;
    if cache.no_cache {
        out.detail(format!("{}: no earlier trusted image of {image} to reuse: a cold build", job.name));
    }
    Ok(Guard { cache, purge: None, _mounts: None })
}

/// Takes the cache mounts' lock: shared for a trusted BuildKit build, exclusive for an
/// untrusted one; waits for it until the build's deadline.
fn lock_mounts(job: &Job<'_>, exclusive: bool, deadline: Instant) -> anyhow::Result<std::fs::File> {
    let path = crate::state::state_dir(job.state_path).join("buildkit-mounts.lock");
    super::ensure_dir(path.parent().unwrap_or(Path::new(".")))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StateError::log(&path, e))?;
    let mut told = false;
    loop {
        let tried = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match tried {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(StateError::log(&path, e)),
        }
        crate::signals::check()?;
        if Instant::now() >= deadline {
            let other = if exclusive { "a trusted" } else { "an untrusted" };
            return Err(crate::error::StageFailed(format!(
                "{}: the build's deadline passed while {other} BuildKit build held the engine's cache mounts",
                job.name
            ))
            .into());
        }
        if !told {
            let other = if exclusive { "trusted BuildKit builds" } else { "an untrusted BuildKit build" };
            job.out.info(format!("{}: waiting for {other} to finish (the engine's cache mounts)", job.name));
            told = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One line of what a build reuses, for the log and `--dry-run`.
fn describe(cache: &CacheUse) -> String {
    let mut parts = Vec::new();
    if cache.from.is_empty() {
        parts.push("no earlier image to reuse".to_string());
    } else {
        parts.push(format!("reusing {}", cache.from.join(", ")));
    }
    if cache.no_cache {
        parts.push("--no-cache (never the engine's layers of untrusted builds)".into());
    }
    if cache.inline {
        parts.push("writing its cache into the image (BUILDKIT_INLINE_CACHE=1)".into());
    }
    parts.join("; ")
}

/// What `pipe build --dry-run` says of the cache: the exact flags for BuildKit, and for the
/// legacy builder the pulls and the flags they lead to.
pub(crate) fn dry_run(job: &Job<'_>, builder: Builder, default_branch: &str) -> Vec<String> {
    let trusted = job.trusted();
    if !trusted {
        return vec!["build cache: none (an untrusted ref reads and writes no cache a trusted build uses)".into()];
    }
    let image = job.project.image.clone().unwrap_or_else(|| "<image>".into());
    let default = Some(default_branch);
    let tag = docker::ref_tag(&job.refname, default);
    let found = sources(job.config, job.project, &job.refname, default_branch, &image, &tag);
    let remote: Vec<String> = found.remote.into_iter().map(|(_, r)| r).collect();
    let shown = |cache: &CacheUse| {
        let args: Vec<String> =
            docker::cache_args(builder, cache).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        if args.is_empty() { "none".to_string() } else { args.join(" ") }
    };
    if builder != Builder::Legacy {
        let cache = CacheUse { from: remote, inline: enabled(job.project), no_cache: false };
        return vec![format!("build cache flags: {}", shown(&cache))];
    }
    let mut lines: Vec<String> =
        remote.iter().map(|r| format!("docker pull {r} (a cache source; on failure, the next one)")).collect();
    let all = CacheUse { from: remote.into_iter().chain(found.local).collect(), ..CacheUse::default() };
    lines.push(format!("build cache flags: {} (the pulled or present ones; --no-cache when none is)", shown(&all)));
    lines
}

/// Empties the engine's BuildKit cache mounts (`docker builder prune --filter
/// type=exec.cachemount`): around an untrusted ref's BuildKit build, so it neither reads what a
/// trusted build left in one nor leaves anything a trusted build mounts.
fn purge_cache_mounts(out: &Output, docker: &Docker) {
    let prune = docker.cmd().args(["builder", "prune", "--force", "--filter", "type=exec.cachemount"]);
    let prune = prune.env("DOCKER_BUILDKIT", "1");
    if let Err(err) = exec::capture(out, &prune, Duration::from_secs(120)) {
        out.warn(format!("cannot empty the engine's build cache mounts: {err:#}"));
    }
}

fn note(log: &Path, line: &str) -> anyhow::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| StateError::log(log, e))?;
    writeln!(file, "{line}").map_err(|e| StateError::log(log, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::load(&path).unwrap()
    }

    const PIPELINE: &str = r#"
[registry.prod]
url = "reg.example.com"

[project.app]
repo = "file:///srv/app.git"
branches = ["main", "dev", "evil"]
trusted_branches = ["main", "dev"]
pull_requests = true
image = "team/app"

[[project.app.deploy]]
branches = ["main", "dev"]
push = ["prod"]
command = { argv = ["true"] }
"#;

    #[test]
    fn a_trusted_branch_reads_its_own_image_then_the_default_branchs() {
        let config = config(PIPELINE);
        let project = &config.projects["app"];
        let found = sources(&config, project, "refs/heads/dev", "main", "team/app", "dev");
        assert_eq!(
            found.remote,
            [
                ("prod".to_string(), "reg.example.com/team/app:dev".to_string()),
                ("prod".into(), "reg.example.com/team/app:latest".into())
            ]
        );
        assert_eq!(found.local, ["team/app:dev", "team/app:latest"]);
        let main = sources(&config, project, "refs/heads/main", "main", "team/app", "latest");
        assert_eq!(main.remote, [("prod".to_string(), "reg.example.com/team/app:latest".to_string())]);
        assert_eq!(main.local, ["team/app:latest"]);
    }

    #[test]
    fn untrusted_refs_and_untrusted_images_are_never_a_source() {
        let config = config(PIPELINE);
        let project = &config.projects["app"];
        for (refname, tag) in [("refs/heads/evil", "evil"), ("refs/pull/5/head", "pr-5")] {
            assert_eq!(sources(&config, project, refname, "main", "pipe-untrusted/app", tag), Sources::default());
            assert_eq!(sources(&config, project, refname, "main", "team/app", tag), Sources::default());
        }
        assert_eq!(
            sources(&config, project, "refs/heads/dev", "main", "pipe-untrusted/app", "dev"),
            Sources::default()
        );
        // `cache = false`: no registry, and still only the ref's own trusted images.
        let off = self::config(&PIPELINE.replace("image = \"team/app\"", "image = \"team/app\"\ncache = false"));
        let found = sources(&off, &off.projects["app"], "refs/heads/dev", "main", "team/app", "dev");
        assert_eq!(found, Sources { remote: vec![], local: vec!["team/app:dev".into(), "team/app:latest".into()] });
    }
}
