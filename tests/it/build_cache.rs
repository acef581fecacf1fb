//! A warm build cache on a fresh workspace and a fresh host, and never one an untrusted ref
//! wrote. The builder is the one the suite's pass gives: the legacy builder through the 28.x CLI
//! first on `PATH`, BuildKit with `PIPE_TEST_DOCKER=/usr/bin/docker` (Debian's 20.10 CLI).
//! Each project's dependency step names the project: BuildKit answers a `RUN` line from any
//! earlier build of it, whatever the context.

use std::process::Command;

use crate::support::docker::{Docker, ProjectImages, Registry, unique_name};
use crate::support::engine::FreshEngine;
use crate::support::{TestEnv, WorkRepo};

const REG_PASSWORD: &str = "reg-pass-build-cache-2718";

/// Held by the tests whose untrusted BuildKit builds empty the engine's cache mounts, and by the
/// one that counts on a mount between builds: one engine, and each test has a state (and so a
/// mounts lock) of its own.
static ENGINE_MOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Fixture {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    reg: Registry,
    buildkit: bool,
    _images: ProjectImages,
}

/// The pipeline file: `main` and `dev` trusted and pushed, `evil` untrusted (no network, so
/// that under BuildKit it builds with BuildKit too).
fn pipeline(f: &Fixture, workspace: &std::path::Path, extra: &str) -> String {
    format!(
        r#"[pipe]
workspace = "{ws}"

[registry.local]
url = "{host}"
username = "ci"
password_env = "REG_PASSWORD"

[project.{p}]
repo = "{url}"
branches = ["main", "dev", "evil"]
trusted_branches = ["main", "dev"]
image = "{image}"
build_network = {{ untrusted = "none" }}
{extra}
[[project.{p}.deploy]]
branches = ["main", "dev"]
push = ["local"]
command = {{ argv = ["true"] }}
"#,
        ws = workspace.display(),
        host = f.reg.host(),
        p = f.project,
        url = f.repo.url(),
        image = f.image,
    )
}

fn fixture(docker: &Docker) -> Fixture {
    let mut env = TestEnv::new();
    env.env("REG_PASSWORD", REG_PASSWORD);
    let reg = Registry::start("ci", REG_PASSWORD);
    let project = unique_name("cache").replace("pipe-test-", "").replace('_', "-");
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    // The dependency step: a new random id each time it runs, the same when it is reused.
    repo.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN echo {project} dependencies && cat /proc/sys/kernel/random/uuid > /dep\nCOPY app.txt /app.txt\n",
            docker.base_image
        ),
    )
    .write("app.txt", "v1\n");
    let buildkit = std::env::var_os("PIPE_TEST_DOCKER").is_some_and(|d| !d.is_empty());
    let f = Fixture { env, repo, project: project.clone(), image, reg, buildkit, _images: ProjectImages { project } };
    f.env.config(&pipeline(&f, &f.env.path().join("ws"), ""));
    f
}

fn cat_in(image: &str, path: &str) -> String {
    let out = Command::new("docker").args(["run", "--rm", image, "cat", path]).output().unwrap();
    assert!(out.status.success(), "cat {path} in {image}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the build log says the dependency step was answered from the cache.
fn dependency_step_cached(log: &str, project: &str, buildkit: bool) -> bool {
    let step = format!("RUN echo {project} dependencies");
    let lines: Vec<&str> = log.lines().collect();
    let Some(at) = lines.iter().position(|l| l.contains(&step) && (l.starts_with("Step ") || l.starts_with('#')))
    else {
        return false;
    };
    if buildkit {
        // `#5 [2/3] RUN …` then `#5 CACHED`.
        let id = lines[at].split_whitespace().next().unwrap_or("#");
        lines[at + 1..].iter().any(|l| *l == format!("{id} CACHED"))
    } else {
        lines.get(at + 1).is_some_and(|l| l.contains("Using cache"))
    }
}

#[test]
fn a_one_line_change_on_a_fresh_workspace_reuses_the_dependency_layer() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker);
    let p = f.project.clone();
    f.repo.commit_to("main", "first");
    f.env.pipe(&["run", &p]).code(0);
    let latest = format!("{}:latest", f.image);
    let first = cat_in(&latest, "/dep");
    assert!(f.reg.tags(&f.image).contains(&"latest".to_string()), "{:?}", f.reg.tags(&f.image));

    // A one-line change, checked out into a workspace pipe never used.
    f.repo.write("app.txt", "v2\n");
    f.repo.commit_to("main", "one line");
    f.env.config(&pipeline(&f, &f.env.path().join("another-ws"), ""));
    f.env.pipe(&["run", &p]).code(0);
    assert_eq!(cat_in(&latest, "/app.txt"), "v2");
    assert_eq!(cat_in(&latest, "/dep"), first, "the dependency step ran again");
    let log = f.env.pipe(&["logs", &p, "main"]).stdout.clone();
    assert!(dependency_step_cached(&log, &p, f.buildkit), "{log}");
    let source = format!("--cache-from {}/{latest}", f.reg.host());
    assert!(log.contains(&source), "{log}");
    assert_eq!(log.contains("--build-arg BUILDKIT_INLINE_CACHE=1"), f.buildkit, "{log}");
}

#[test]
fn a_fresh_engine_reads_the_cache_the_registry_holds() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker);
    let p = f.project.clone();
    let sha = f.repo.commit_to("main", "first");
    f.env.pipe(&["run", &p]).code(0);
    let first = cat_in(&format!("{}:{}", f.image, &sha[..12]), "/dep");
    f.repo.write("app.txt", "v2\n");
    let sha = f.repo.commit_to("main", "one line");

    // A fresh host: an engine of its own, with its own state and workspace (no registry login).
    let build_on = |engine: &FreshEngine, extra: &str| -> (String, String) {
        let config = engine.dir().join("pipeline.toml");
        std::fs::write(&config, pipeline(&f, &engine.dir().join("ws"), extra)).unwrap();
        let state = engine.dir().join("state").join("state.toml");
        let run = |args: &[&str]| {
            let out = f
                .env
                .command(args)
                .env("DOCKER_HOST", engine.host())
                .env("PIPE_CONFIG", &config)
                .env("PIPE_STATE", &state)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "pipe {args:?} on the fresh engine:\n{stderr}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["build", &p, "main"]);
        let log = run(&["logs", &p, "main"]);
        let image = format!("{}:{}", f.image, &sha[..12]);
        (engine.ok(&["run", "--rm", &image, "cat", "/dep"]).trim().to_string(), log)
    };

    // Without the registry's cache, the fresh engine runs the dependency step again.
    let cold_engine = FreshEngine::start(&docker.base_image, &f.reg);
    let (cold, log) = build_on(&cold_engine, "cache = false\n");
    drop(cold_engine);
    assert_ne!(cold, first, "{log}");
    assert!(!dependency_step_cached(&log, &p, f.buildkit), "{log}");
    assert!(!log.contains("--cache-from"), "{log}");

    // With it (the default), the step comes from the image `main` pushed.
    let engine = FreshEngine::start(&docker.base_image, &f.reg);
    let (warm, log) = build_on(&engine, "");
    assert_eq!(warm, first, "{log}");
    assert!(dependency_step_cached(&log, &p, f.buildkit), "{log}");
    assert!(log.contains(&format!("--cache-from {}/{}:latest", f.reg.host(), f.image)), "{log}");
}

#[test]
fn an_untrusted_ref_never_writes_a_cache_a_trusted_build_reads() {
    let Some(docker) = Docker::require() else { return };
    let _mounts = ENGINE_MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let f = fixture(&docker);
    let p = f.project.clone();
    let base = &docker.base_image;
    let planted = "planted-by-an-untrusted-build";
    let untrusted = format!("pipe-untrusted/{p}");
    if f.buildkit {
        // BuildKit keeps cache mounts per engine, keyed only by the id a Dockerfile names.
        let trusted = |round: u32| {
            format!(
                "FROM {base}\nRUN --mount=type=cache,id={p}-deps,target=/deps echo {p} round {round}; (cat /deps/pkg 2>/dev/null || echo clean) > /out; echo trusted-{p} > /deps/pkg\nCOPY app.txt /app.txt\n"
            )
        };
        f.repo.write("Dockerfile", &trusted(1));
        f.repo.commit_to("main", "fills its cache mount");
        f.env.pipe(&["run", &p]).code(0);
        f.repo.write(
            "Dockerfile",
            &format!(
                "FROM {base}\nRUN --mount=type=cache,id={p}-deps,target=/deps (cat /deps/pkg 2>/dev/null || echo nothing) > /seen; echo {planted} > /deps/pkg\n"
            ),
        );
        f.repo.commit_to("evil", "reads and plants the cache mount");
        f.env.pipe(&["run", &p]).code(0);
        // It neither saw the trusted build's mount...
        assert_eq!(cat_in(&format!("{untrusted}:evil"), "/seen"), "nothing");
        f.repo.write("Dockerfile", &trusted(2));
        f.repo.commit_to("main", "reads its cache mount again");
    } else {
        // The legacy builder keys a step on its command and parent, not on the network it ran
        // on: the untrusted ref runs the trusted step with none, and gets another result.
        f.repo.write(
            "Dockerfile",
            &format!(
                "FROM {base}\nRUN echo {p} deps; if test -e /sys/class/net/eth0; then echo clean; else echo {planted}; fi > /out\nCOPY app.txt /app.txt\n"
            ),
        );
        f.repo.commit_to("evil", "runs the trusted step without a network");
        f.env.pipe(&["run", &p]).code(0);
        assert_eq!(cat_in(&format!("{untrusted}:evil"), "/out"), planted, "the untrusted build planted nothing");
        f.repo.commit_to("main", "the same step, trusted");
    }
    f.env.pipe(&["run", &p]).code(0);
    // ...nor did the trusted build get what it planted.
    assert_eq!(cat_in(&format!("{}:latest", f.image), "/out"), "clean");
    let log = f.env.pipe(&["logs", &p, "main"]).stdout.clone();
    assert!(!log.contains(&format!("--cache-from {untrusted}")), "{log}");
    // Nothing of the untrusted ref reached the registry: no tag, no image, no inline cache.
    assert!(f.reg.tags(&untrusted).is_empty());
    assert!(!f.reg.tags(&f.image).contains(&"evil".to_string()), "{:?}", f.reg.tags(&f.image));
    let evil_log = f.env.pipe(&["logs", &p, "evil"]).stdout.clone();
    assert!(!evil_log.contains("--cache-from") && !evil_log.contains("BUILDKIT_INLINE_CACHE"), "{evil_log}");
}

#[test]
fn dry_run_prints_the_cache_flags_of_each_builder() {
    let Some(docker) = Docker::require() else { return };
    let mut f = fixture(&docker);
    let p = f.project.clone();
    f.repo.commit_to("main", "first");
    f.repo.commit_to("dev", "first");
    let host = f.reg.host();
    let redact = [("[PROJECT]", p.as_str()), ("[REGISTRY]", host.as_str())];
    f.env.env("PIPE_DOCKER", "/usr/bin/docker");
    f.env.pipe(&["build", &p, "dev", "--dry-run"]).code(0).stdout_eq(
        snapbox::str![[r#"
git fetch file://[ROOT]/app.git +refs/heads/dev:refs/pipe/fetched (no tags) into [ROOT]/ws/[PROJECT]/src
git checkout --force refs/pipe/fetched && git clean -ffdx
/usr/bin/docker build … (tags, labels and build args resolved after checkout; build network: default)
build cache flags: --cache-from [REGISTRY]/pipe-test/[PROJECT]:dev --cache-from [REGISTRY]/pipe-test/[PROJECT]:latest --build-arg BUILDKIT_INLINE_CACHE=1

"#]],
        &redact,
    );
    f.env.env("PIPE_DOCKER", "docker").env("PIPE_BUILDER", "legacy");
    f.env.pipe(&["build", &p, "dev", "--dry-run"]).code(0).stdout_eq(
        snapbox::str![[r#"
git fetch file://[ROOT]/app.git +refs/heads/dev:refs/pipe/fetched (no tags) into [ROOT]/ws/[PROJECT]/src
git checkout --force refs/pipe/fetched && git clean -ffdx
docker build … (tags, labels and build args resolved after checkout; build network: default)
docker pull [REGISTRY]/pipe-test/[PROJECT]:dev (a cache source; on failure, the next one)
docker pull [REGISTRY]/pipe-test/[PROJECT]:latest (a cache source; on failure, the next one)
build cache flags: --cache-from [REGISTRY]/pipe-test/[PROJECT]:dev --cache-from [REGISTRY]/pipe-test/[PROJECT]:latest --cache-from pipe-test/[PROJECT]:dev --cache-from pipe-test/[PROJECT]:latest (the pulled or present ones; --no-cache when none is)

"#]],
        &redact,
    );
    f.env
        .pipe(&["build", &p, "evil", "--dry-run"])
        .code(0)
        .stdout_has("build cache: none (an untrusted ref reads and writes no cache a trusted build uses)");
    // `cache = false`: no registry, BuildKit writes no cache into the image.
    f.env.config(&pipeline(&f, &f.env.path().join("ws"), "cache = false\n"));
    f.env.env("PIPE_DOCKER", "/usr/bin/docker").env("PIPE_BUILDER", "");
    f.env.pipe(&["build", &p, "dev", "--dry-run"]).code(0).stdout_has("build cache flags: none\n");
}

#[test]
fn cache_is_validated_and_check_warns_when_there_is_no_registry_to_read() {
    let env = TestEnv::new();
    env.config("[project.app]\nrepo = \"file:///srv/app.git\"\nbranches = [\"main\"]\ncache = \"yes\"\n");
    env.pipe(&["check"]).code(2).stderr_has(&format!("{}:4:", env.config_path().display())).stderr_has("bool");
    env.config("[project.app]\nrepo = \"file:///srv/app.git\"\nbranches = [\"main\"]\ncache = true\n");
    env.pipe(&["check"])
        .code(0)
        .stderr_has("project `app` has `cache = true`, but none of its deploy entries pushes to a registry");
    // The default says nothing: most projects without a registry never asked for it.
    env.config("[project.app]\nrepo = \"file:///srv/app.git\"\nbranches = [\"main\"]\n");
    let run = env.pipe(&["check"]);
    assert!(!run.code(0).stderr.contains("cache"), "{}", run.stderr);
}

#[test]
fn a_trusted_buildkit_build_waits_while_an_untrusted_one_holds_the_cache_mounts() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker);
    let p = f.project.clone();
    f.repo.commit_to("dev", "first");
    // BuildKit waits for the lock until the build's deadline; the legacy builder never asks.
    let timeout = if f.buildkit { "timeouts = { build = \"8s\" }\n" } else { "" };
    f.env.config(&pipeline(&f, &f.env.path().join("ws"), timeout));
    // What an untrusted BuildKit build holds from before it empties the mounts until after.
    let dir = f.env.state_path().parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("buildkit-mounts.lock")).unwrap();
    lock.try_lock().unwrap();
    let run = f.env.pipe(&["build", &p, "dev"]);
    if f.buildkit {
        run.code(1)
            .stderr_has("waiting for an untrusted BuildKit build to finish")
            .stderr_has("the build's deadline passed while an untrusted BuildKit build held the engine's cache mounts");
    } else {
        // The legacy builder has no cache mounts: nothing to wait for.
        run.code(0);
    }
    drop(lock);
    f.env.pipe(&["build", &p, "dev"]).code(0);
}

#[test]
fn cache_mounts_stay_between_trusted_buildkit_builds() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker);
    if !f.buildkit {
        return; // `RUN --mount` is BuildKit's alone; the BuildKit pass runs this.
    }
    let _mounts = ENGINE_MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let p = f.project.clone();
    let dockerfile = |round: u32| {
        format!(
            "FROM {}\nRUN --mount=type=cache,id={p}-count,target=/m echo {p} round {round}; (cat /m/count 2>/dev/null || echo none) > /before; echo {round} > /m/count\n",
            docker.base_image
        )
    };
    for round in 1..=2 {
        f.repo.write("Dockerfile", &dockerfile(round));
        f.repo.commit_to("main", "counts");
        f.env.pipe(&["build", &p, "main"]).code(0);
    }
    assert_eq!(cat_in(&format!("{}:latest", f.image), "/before"), "1", "the second build lost the first's mount");
}
