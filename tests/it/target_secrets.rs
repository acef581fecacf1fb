//! Each deploy target gets only its own secrets, from where teams keep them. Three targets
//! (compose, command, swarm) with different secrets look for each other's from inside their
//! containers, commands and services; builds,
//! tests and `pipe serve` hooks look too; a secret command that fails, hangs or prints nothing
//! stops what needed it, naming the key and the command; real secrets stores (AWS Secrets
//! Manager through Debian's `awscli` against a local moto server, `pass` and `gopass` with a GPG
//! key made here) hand their values over, each command run once per `pipe run`. Real engine,
//! real compose, BuildKit through Debian's 20.10 CLI where a build takes a secret.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Docker, ProjectImages, Stack, unique_name};
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, free_port};

const ALPHA: &str = "planted-alpha-secret-4711";
const BETA_FILE: &str = "planted-beta-file-1618";
const BETA_CMD: &str = "planted-beta-command-2718";
const SHARED: &str = "planted-shared-command-3141";
const GAMMA: &str = "planted-gamma-swarm-1414";
const PIPE_ENV: &str = "planted-pipe-env-token-0815";

/// The docker CLI with BuildKit built in (Debian's 20.10), for builds given a secret.
const BUILDKIT_DOCKER: &str = "/usr/bin/docker";

/// A project whose image prints its build environment into the image and whose test prints
/// its own, with a repository to commit to.
struct App {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    _images: ProjectImages,
}

fn app(docker: &Docker, dockerfile_extra: &str, test: &str) -> App {
    let env = TestEnv::new();
    let project = unique_name("ts").replace("pipe-test-", "").replace('_', "-");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nRUN env > /build-env\n{dockerfile_extra}", docker.base_image));
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{project}\"\ntest = {test:?}\n"));
    App { env, repo, _images: ProjectImages { project: project.clone() }, project }
}

/// A script that appends a line to `calls` each time it runs and prints `value`.
fn counting_script(dir: &Path, name: &str, value: &str) -> (PathBuf, PathBuf) {
    let script = dir.join(name);
    let calls = dir.join(format!("{name}.calls"));
    std::fs::write(&script, format!("#!/bin/sh\necho run >> '{}'\necho '{value}'\n", calls.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, calls)
}

/// Every file under `dir`, as text (lossy), with its path.
fn all_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

fn assert_nowhere(values: &[&str], texts: &[(PathBuf, String)]) {
    for (path, text) in texts {
        for value in values {
            assert!(!text.contains(value), "`{value}` is in {}:\n{text}", path.display());
        }
    }
}

/// The variable names of an `env` listing.
fn names(listing: &str) -> Vec<String> {
    let mut names: Vec<String> =
        listing.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string())).collect();
    names.sort();
    names
}

#[test]
fn compose_command_and_swarm_targets_each_see_only_their_own_secrets_and_no_build_or_test_sees_any() {
    let Some(docker) = Docker::require() else { return };
    // The default docker CLI: `docker stack config` (the swarm target) is not in Debian's 20.10,
    // so this build takes no secret (BuildKit's are covered below and in `image_line`).
    let mut a = app(&docker, "", "env");
    let dir = a.env.path().to_path_buf();
    let beta_file = dir.join("beta.secret");
    std::fs::write(&beta_file, format!("{BETA_FILE}\n")).unwrap();
    let (beta_script, beta_calls) = counting_script(&dir, "beta-secret", BETA_CMD);
    let (shared_script, shared_calls) = counting_script(&dir, "shared-secret", SHARED);
    a.env.env("ALPHA_SRC", ALPHA).env("GAMMA_SRC", GAMMA).env("UNRELATED_TOKEN", PIPE_ENV);
    let compose = dir.join("deploy/docker-compose.yml");
    std::fs::create_dir_all(compose.parent().unwrap()).unwrap();
    // Everything compose could interpolate, asked for by name: only the target's own arrives.
    std::fs::write(
        &compose,
        "services:\n  probe:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    init: true\n    command: [\"sleep\", \"600\"]\n    \
         environment:\n      ALPHA_SECRET: ${ALPHA_SECRET:-}\n      BETA_SECRET: ${BETA_SECRET:-}\n      \
         BETA_CMD: ${BETA_CMD:-}\n      ALPHA_SRC: ${ALPHA_SRC:-}\n      UNRELATED: ${UNRELATED_TOKEN:-}\n      \
         MODE: ${MODE:-}\n      SHARED: ${SHARED:-}\n      GAMMA_SECRET: ${GAMMA_SECRET:-}\n",
    )
    .unwrap();
    // Gamma is a swarm stack asking for the same names.
    let stack_file = dir.join("deploy/stack.yml");
    std::fs::write(
        &stack_file,
        "version: \"3.8\"\nservices:\n  probe:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    command: [\"sleep\", \"600\"]\n    \
         environment:\n      GAMMA_SECRET: ${GAMMA_SECRET:-}\n      ALPHA_SECRET: ${ALPHA_SECRET:-}\n      \
         BETA_SECRET: ${BETA_SECRET:-}\n      ALPHA_SRC: ${ALPHA_SRC:-}\n      UNRELATED: ${UNRELATED_TOKEN:-}\n",
    )
    .unwrap();
    let compose_project = format!("{}-alpha", a.project);
    let _cleanup = ComposeProject { name: compose_project.clone() };
    let beta_env = dir.join("beta.env");
    let swarm = docker.ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
    assert_eq!(swarm.trim(), "active", "scripts/test-deps.sh initialises a single-node swarm");
    let stack = Stack(format!("{}-gamma", a.project));
    a.env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[project.{p}]
repo = "{url}"
branches = ["main"]
build_args = {{ MODE = "build" }}
test_env = {{ SHARED = {{ command = ["{shared}"] }} }}

[[project.{p}.deploy]]
name = "alpha"
branches = ["main"]
compose = {{ file = "{compose}", project = "{compose_project}" }}
env = {{ ALPHA_SECRET = {{ env = "ALPHA_SRC" }}, MODE = "alpha", SHARED = {{ command = ["{shared}"] }} }}

[[project.{p}.deploy]]
name = "beta"
branches = ["main"]
command = {{ argv = ["sh", "-c", "env > {beta_env}; echo beta=$BETA_SECRET/$BETA_CMD"] }}
env = {{ BETA_SECRET = {{ file = "{beta_file}" }}, BETA_CMD = {{ command = ["{beta}"] }}, SHARED = {{ command = ["{shared}"] }} }}

[[project.{p}.deploy]]
name = "gamma"
branches = ["main"]
swarm = {{ file = "{stack_file}", stack = "{stack}" }}
env = {{ GAMMA_SECRET = {{ env = "GAMMA_SRC" }} }}
timeout = "90s"
"#,
        ws = dir.join("work").display(),
        p = a.project,
        url = a.repo.url(),
        shared = shared_script.display(),
        compose = compose.display(),
        beta_file = beta_file.display(),
        beta = beta_script.display(),
        beta_env = beta_env.display(),
        stack_file = stack_file.display(),
        stack = stack.0,
    ));
    // The probe asks for what alpha's `env` does not give: compose will see those empty.
    a.env.pipe(&["check"]).code(0).stderr_has(&format!(
        "project `{}` target `alpha`: `{}` interpolates `${{ALPHA_SRC}}`, `${{BETA_CMD}}`, `${{BETA_SECRET}}`, `${{GAMMA_SECRET}}`, `${{UNRELATED_TOKEN}}`, which its `env` does not give",
        a.project,
        compose.display()
    ));
    a.repo.commit_to("main", "one");
    let run = a.env.pipe(&["run"]);
    run.code(0);

    // Alpha's container: its own secret and literal, nothing of beta's, nothing of pipe's.
    let container =
        docker.ok(&["ps", "--quiet", "--filter", &format!("label=com.docker.compose.project={compose_project}")]);
    let container = container.lines().next().expect("alpha's container runs").to_string();
    let inside = docker.ok(&["exec", &container, "env"]);
    for (key, value) in [("ALPHA_SECRET", ALPHA), ("MODE", "alpha"), ("SHARED", SHARED)] {
        assert!(inside.contains(&format!("{key}={value}\n")), "alpha lacks {key}:\n{inside}");
    }
    for key in ["BETA_SECRET", "BETA_CMD", "ALPHA_SRC", "UNRELATED", "GAMMA_SECRET"] {
        assert!(inside.contains(&format!("{key}=\n")), "alpha got {key}:\n{inside}");
    }
    assert_nowhere(&[BETA_FILE, BETA_CMD, PIPE_ENV, GAMMA], &[(PathBuf::from("alpha's container"), inside)]);

    // Gamma's service: its own secret only.
    let spec = docker.ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Env}}",
        &format!("{}_probe", stack.0),
    ]);
    assert!(spec.contains(&format!("GAMMA_SECRET={GAMMA}")), "{spec}");
    for key in ["ALPHA_SECRET", "BETA_SECRET", "ALPHA_SRC", "UNRELATED"] {
        assert!(spec.contains(&format!("\"{key}=\"")), "gamma got {key}: {spec}");
    }

    // Beta's command: exactly its own variables, the PIPE_* ones and the host's few.
    let seen = std::fs::read_to_string(&beta_env).unwrap();
    assert!(
        seen.contains(&format!("BETA_SECRET={BETA_FILE}\n")) && seen.contains(&format!("BETA_CMD={BETA_CMD}\n")),
        "{seen}"
    );
    assert_nowhere(&[ALPHA, PIPE_ENV, GAMMA], &[(beta_env.clone(), seen.clone())]);
    let allowed = ["BETA_CMD", "BETA_SECRET", "DOCKER_CONFIG", "HOME", "PATH", "PWD", "SHARED", "SHLVL", "_"];
    for name in names(&seen) {
        assert!(name.starts_with("PIPE_") || allowed.contains(&name.as_str()), "beta's command got `{name}`:\n{seen}");
    }

    // Neither the build nor the test saw a target's secret (the shared one is the test's own).
    let image = format!("pipe-test/{}:latest", a.project);
    let build_env = docker.ok(&["run", "--rm", "--entrypoint", "cat", &image, "/build-env"]);
    assert_nowhere(&[ALPHA, BETA_FILE, BETA_CMD, PIPE_ENV, SHARED, GAMMA], &[(PathBuf::from("/build-env"), build_env)]);
    let logs = a.env.pipe(&["logs", &a.project, "main"]);
    assert!(logs.stdout.contains("SHARED=***"), "the test got the shared secret, masked:\n{}", logs.stdout);
    assert!(logs.stdout.contains("beta=***/***"), "beta's output is masked:\n{}", logs.stdout);
    // Masked in every log, history and state file, and in what pipe printed.
    let mut texts = all_files(&dir.join("state"));
    texts.push((PathBuf::from("stdout"), run.stdout.clone() + &logs.stdout));
    texts.push((PathBuf::from("stderr"), run.stderr.clone() + &logs.stderr));
    assert_nowhere(&[ALPHA, BETA_FILE, BETA_CMD, SHARED, PIPE_ENV, GAMMA], &texts);

    // Each secret command ran once in that run, however many stages and targets used it.
    assert_eq!(std::fs::read_to_string(&shared_calls).unwrap().lines().count(), 1, "test, alpha, beta");
    assert_eq!(std::fs::read_to_string(&beta_calls).unwrap().lines().count(), 1);
}

#[test]
fn a_serve_hook_runs_with_its_own_secrets_and_never_another_hooks() {
    let mut env = TestEnv::new();
    let dir = env.path().to_path_buf();
    let (script, _) = counting_script(&dir, "b-secret", BETA_CMD);
    env.env("TOKEN", "tok-31337").env("HOOK_A_SRC", ALPHA).env("UNRELATED_TOKEN", PIPE_ENV);
    let out = |hook: &str| dir.join(format!("{hook}.env"));
    env.config(&format!(
        r#"[serve.hooks.a]
token_env = "TOKEN"
command = {{ argv = ["sh", "-c", "env > {a}; echo a=$A_SECRET"] }}
env = {{ A_SECRET = {{ env = "HOOK_A_SRC" }} }}

[serve.hooks.b]
token_env = "TOKEN"
command = {{ argv = ["sh", "-c", "env > {b}; echo b=$B_SECRET"] }}
env = {{ B_SECRET = {{ command = ["{script}"] }}, MODE = "b" }}
"#,
        a = out("a").display(),
        b = out("b").display(),
        script = script.display(),
    ));
    let server = Serve::start(&env);
    for hook in ["a", "b"] {
        let (status, doc) =
            server.json("POST", &format!("/hooks/{hook}?wait=30"), &[("Authorization", "Bearer tok-31337")], b"{}");
        assert_eq!((status, doc["status"].as_str()), (200, Some("succeeded")), "{doc}");
        let id = doc["id"].as_str().unwrap();
        let log = std::fs::read_to_string(dir.join(format!("state/serve/{hook}/{id}.log"))).unwrap();
        assert!(log.contains(&format!("{hook}=***")), "the run's log masks the hook's secret: {log}");
    }
    let (a, b) = (std::fs::read_to_string(out("a")).unwrap(), std::fs::read_to_string(out("b")).unwrap());
    assert!(a.contains(&format!("A_SECRET={ALPHA}\n")), "{a}");
    assert!(b.contains(&format!("B_SECRET={BETA_CMD}\n")) && b.contains("MODE=b\n"), "{b}");
    assert_nowhere(&[BETA_CMD, PIPE_ENV, "tok-31337"], &[(out("a"), a)]);
    assert_nowhere(&[ALPHA, PIPE_ENV, "tok-31337"], &[(out("b"), b)]);
    let (_, log) = server.stop();
    let mut texts = all_files(&dir.join("state"));
    texts.push((PathBuf::from("serve's stderr"), log));
    assert_nowhere(&[ALPHA, BETA_CMD], &texts);
}

#[test]
fn a_secret_command_that_fails_hangs_or_prints_nothing_stops_what_needed_it() {
    let Some(docker) = Docker::require() else { return };
    let mut a = app(&docker, "", "true");
    let dir = a.env.path().to_path_buf();
    let marker = dir.join("deployed");
    a.env.env("PIPE_DOCKER", BUILDKIT_DOCKER);
    let config = |reference: &str, build_arg: &str| {
        format!(
            r#"[pipe]
workspace = "{ws}"

[project.{p}]
repo = "{url}"
branches = ["main"]
{build_arg}

[[project.{p}.deploy]]
name = "hosts"
branches = ["main"]
command = {{ argv = ["touch", "{marker}"] }}
env = {{ DB = {reference} }}
"#,
            ws = dir.join("work").display(),
            p = a.project,
            url = a.repo.url(),
            marker = marker.display(),
        )
    };
    let key = format!("`project.{}.deploy.hosts.env.DB`", a.project);
    a.repo.commit_to("main", "one");
    let cases = [
        (
            r#"{ command = ["sh", "-c", "echo vault sealed >&2; echo partial-$((40+2)); exit 3"] }"#,
            "`sh -c 'echo vault sealed >&2; echo partial-$((40+2)); exit 3'` failed (exit status: 3)",
        ),
        (r#"{ command = ["sleep", "60"], timeout = "1s" }"#, "`sleep 60` failed (timed out after 1s)"),
        (r#"{ command = ["true"] }"#, "`true` printed nothing: an empty secret is never used"),
    ];
    for (i, (reference, said)) in cases.iter().enumerate() {
        a.env.config(&config(reference, ""));
        let started = Instant::now();
        // The first case builds and tests the commit; the others redeploy its image.
        let run = if i == 0 { a.env.pipe(&["run"]) } else { a.env.pipe(&["deploy", &a.project, "main"]) };
        run.code(1).stderr_has(&format!("the secret for {key}: {said}")).stderr_has("deploy to `hosts` not started");
        assert!(!run.stderr.contains("partial-42"), "a failed command's stdout is never shown: {}", run.stderr);
        assert_eq!(run.stderr.contains("vault sealed"), i == 0, "its stderr is: {}", run.stderr);
        assert!(!marker.exists(), "the target ran without its secret");
        assert!(started.elapsed() < Duration::from_secs(40), "the secret command was not stopped at its timeout");
    }

    // A build arg whose command fails: nothing is built.
    let failing = r#"build_args = { NPM = { command = ["sh", "-c", "exit 7"] } }"#;
    a.env.config(&config(r#""literal""#, failing));
    a.repo.commit_to("main", "two");
    let run = a.env.pipe(&["run"]);
    run.code(1).stderr_has(&format!(
        "the secret for `project.{}.build_args.NPM`: `sh -c 'exit 7'` failed (exit status: 7)",
        a.project
    ));
    let images = docker.ok(&["image", "ls", "--quiet", "--filter", &format!("label=pipe.project={}", a.project)]);
    let mut ids: Vec<&str> = images.lines().collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "only the first commit's image exists: {images}");
    assert!(!marker.exists());
}

/// A moto server (AWS's APIs, from PyPI) on loopback, stopped on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Option<Moto> {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GPG home with a key without passphrase and a `pass` store encrypted to it; its agent is
/// stopped on drop.
struct Store {
    gnupg: PathBuf,
    store: PathBuf,
}

impl Store {
    fn new(dir: &Path, entries: &[(&str, &str)]) -> Store {
        let gnupg = dir.join("gnupg");
        let store = dir.join("password-store");
        std::fs::create_dir_all(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let s = Store { gnupg, store };
        let key = "pipe test <pipe-test@example.invalid>";
        s.run("gpg", &["--batch", "--passphrase", "", "--quick-gen-key", key, "default", "default", "never"], "");
        s.run("pass", &["init", "pipe-test@example.invalid"], "");
        for (name, value) in entries {
            s.run("pass", &["insert", "--multiline", name], &format!("{value}\n"));
        }
        s
    }

    fn run(&self, program: &str, args: &[&str], stdin: &str) {
        use std::io::Write as _;
        let mut child = Command::new(program)
            .args(args)
            .env("GNUPGHOME", &self.gnupg)
            .env("PASSWORD_STORE_DIR", &self.store)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").args(["--kill", "gpg-agent"]).env("GNUPGHOME", &self.gnupg).status();
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn secrets_come_from_aws_secrets_manager_pass_and_gopass_with_their_real_clients() {
    let Some(docker) = Docker::require() else { return };
    let aws = if Path::new("/usr/bin/aws").exists() { "/usr/bin/aws" } else { "aws" };
    let missing: Vec<&str> = [aws, "moto_server", "gpg", "pass", "gopass"].into_iter().filter(|p| !have(p)).collect();
    if !missing.is_empty() {
        eprintln!("skipped: {} missing (scripts/test-deps.sh installs them)", missing.join(", "));
        return;
    }
    let Some(moto) = Moto::start() else { panic!("moto_server did not start") };
    let mut a = app(
        &docker,
        "RUN --mount=type=secret,id=NPM_TOKEN test \"$(cat /run/secrets/NPM_TOKEN)\" = npm-from-secrets-manager\n",
        "true",
    );
    let dir = a.env.path().to_path_buf();
    let store = Store::new(&dir, &[("ci/db", "db-from-pass"), ("ci/api", "api-from-gopass")]);
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let aws_env =
        [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")];
    let created = Command::new(aws)
        .args(["--endpoint-url", &endpoint, "secretsmanager", "create-secret", "--name", "ci/npm"])
        .args(["--secret-string", "npm-from-secrets-manager"])
        .envs(aws_env)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    for (k, v) in aws_env {
        a.env.env(k, v);
    }
    a.env
        .env("GNUPGHOME", &store.gnupg.display().to_string())
        .env("PASSWORD_STORE_DIR", &store.store.display().to_string())
        .env("PIPE_DOCKER", BUILDKIT_DOCKER);
    let seen = dir.join("seen.env");
    a.env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[project.{p}]
repo = "{url}"
branches = ["main"]
build_args = {{ NPM_TOKEN = {{ command = ["{aws}", "--endpoint-url", "{endpoint}", "secretsmanager", "get-secret-value", "--secret-id", "ci/npm", "--query", "SecretString", "--output", "text"] }} }}

[[project.{p}.deploy]]
name = "hosts"
branches = ["main"]
command = {{ argv = ["sh", "-c", "env > {seen}"] }}
env = {{ DB = {{ command = ["pass", "show", "ci/db"] }}, API = {{ command = ["gopass", "show", "ci/api"], timeout = "20s" }} }}
"#,
        ws = dir.join("work").display(),
        p = a.project,
        url = a.repo.url(),
        seen = seen.display(),
    ));
    a.repo.commit_to("main", "one");
    let run = a.env.pipe(&["run"]);
    run.code(0);
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.contains("DB=db-from-pass\n") && env.contains("API=api-from-gopass\n"), "{env}");
    assert!(
        !env.contains("GNUPGHOME") && !env.contains("AWS_SECRET_ACCESS_KEY"),
        "the stores' settings stay pipe's: {env}"
    );
    let mut texts = all_files(&dir.join("state"));
    texts.push((PathBuf::from("output"), run.stdout.clone() + &run.stderr));
    assert_nowhere(&["npm-from-secrets-manager", "db-from-pass", "api-from-gopass"], &texts);
}
