//! The trust boundary, attacked from a branch or a pull request: a repository shapes its own
//! image, test container and test services, inside limits, and never reaches the host, pipe's
//! secrets or another project. Every attack runs against the real engine, compose and git; each
//! checks the refusal names the file and key (or the attack is contained), a canary directory
//! on the host is unchanged byte for byte, no planted secret is in any output, log, history or
//! Slack message, and the next legitimate commit on the same branch builds and tests.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, symlink};
use std::path::{Path, PathBuf};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::http::HttpSink;
use crate::support::{GitHttpServer, Run, TestEnv, WorkRepo, git};

const REG_PASSWORD: &str = "planted-registry-password-4711";
const GIT_TOKEN: &str = "planted-git-token-0815";
const SLACK_PATH: &str = "/services/T0/B0/planted-slack-path-2718";
const DB_PASSWORD: &str = "planted-db-password-3141";
const NPM_TOKEN: &str = "planted-npm-token-1618";

/// Files on the host a repository must never change: contents, mode and mtime snapshotted.
struct Canary {
    dir: PathBuf,
    before: BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)>,
}

impl Canary {
    fn new(parent: &Path) -> Canary {
        let dir = parent.join("host-canary");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "root:x:0:0:canary\n").unwrap();
        std::fs::write(dir.join("secret.txt"), "host-only canary secret\n").unwrap();
        std::fs::set_permissions(dir.join("secret.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut canary = Canary { dir, before: BTreeMap::new() };
        canary.before = canary.snapshot();
        canary
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32, i64, i64)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            let meta = std::fs::symlink_metadata(&dir).unwrap();
            out.insert(dir.clone(), (Vec::new(), meta.mode(), meta.mtime(), meta.mtime_nsec()));
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    out.insert(path, (bytes, meta.mode(), meta.mtime(), meta.mtime_nsec()));
                }
            }
        }
        out
    }

    fn assert_unchanged(&self) {
        assert!(self.snapshot() == self.before, "the host canary `{}` changed", self.dir.display());
    }
}

/// A project holding every kind of secret pipe has, a Slack sink, and a repository an
/// attacker pushes to.
struct Target {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    canary: Canary,
    slack: HttpSink,
    base: String,
    runs: Vec<Run>,
    _images: ProjectImages,
}

fn target(docker: &Docker) -> Target {
    let mut env = TestEnv::new();
    let project = unique_name("t").replace("pipe-test-", "").replace('_', "-");
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    let canary = Canary::new(env.path());
    let slack = HttpSink::start(200);
    env.env("REG_PASSWORD", REG_PASSWORD)
        .env("GIT_TOKEN", GIT_TOKEN)
        .env("PIPE_SLACK_WEBHOOK", &slack.url(SLACK_PATH))
        .env("DB_PASSWORD", DB_PASSWORD)
        .env("NPM_TOKEN", NPM_TOKEN);
    let t = Target {
        env,
        repo,
        _images: ProjectImages { project: project.clone() },
        project,
        image,
        canary,
        slack,
        base: docker.base_image.clone(),
        runs: Vec::new(),
    };
    t.legitimate("true");
    t.configure("");
    t
}

impl Target {
    fn configure(&self, extra_project: &str) {
        self.env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

[notify.slack]
webhook_url_env = "PIPE_SLACK_WEBHOOK"
on = ["failure", "recovery"]

[registry.local]
url = "127.0.0.1:1"
username = "ci"
password_env = "REG_PASSWORD"

[project.{p}]
repo = "{url}"
branches = ["**"]
pull_requests = true
{extra_project}
"#,
            ws = self.env.path().join("work").display(),
            p = self.project,
            url = self.repo.url(),
        ));
    }

    /// A normal repository: a Dockerfile from the base image and a test command.
    fn legitimate(&self, test: &str) {
        let _ = std::fs::remove_file(self.repo.work.join(".env"));
        for gone in ["ctx", "Dockerfile.link", "svc.yml", ".gitmodules", "lib"] {
            let path = self.repo.work.join(gone);
            let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        }
        self.repo
            .write("Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\n", self.base))
            .write("app.txt", "legitimate\n")
            .write(".pipe.toml", &format!("image = \"{}\"\ntest = {test:?}\n", self.image));
    }

    fn pipe(&mut self, args: &[&str]) -> &Run {
        let run = self.env.pipe(args);
        self.runs.push(run);
        self.runs.last().unwrap()
    }

    /// Commits the attack to `dev` and runs the pipeline on it: it must fail (exit 1) and say
    /// why with `expected` in its output.
    fn refused(&mut self, message: &str, expected: &[&str]) {
        self.repo.commit_to("dev", message);
        let project = self.project.clone();
        let run = self.pipe(&["run", &project]);
        run.code(1);
        let log = self.pipe(&["logs", &project, "dev"]).stdout.clone();
        for needle in expected {
            assert!(log.contains(needle), "the log of `{message}` lacks {needle:?}:\n{log}");
        }
        self.canary.assert_unchanged();
    }

    /// Commits `message` to `dev`, runs the pipeline on it, which must pass, and returns the
    /// run's log.
    fn passes_on_dev(&mut self, message: &str) -> String {
        self.repo.commit_to("dev", message);
        let project = self.project.clone();
        self.pipe(&["run", &project]).code(0);
        self.pipe(&["logs", &project, "dev"]).code(0).stdout.clone()
    }

    /// The next legitimate commit on `dev` builds and tests normally.
    fn recovers(&mut self) {
        self.legitimate("grep -q legitimate /app.txt");
        self.repo.commit_to("dev", "legitimate");
        let project = self.project.clone();
        self.pipe(&["run", &project]).code(0);
        self.canary.assert_unchanged();
    }

    /// No planted secret in any output, any file beside the state (pipe's own docker login
    /// store aside), the workspace's test-services files, or any Slack message.
    fn assert_no_secret_anywhere(&self) {
        let secrets = [REG_PASSWORD, GIT_TOKEN, "planted-slack-path-2718", DB_PASSWORD, NPM_TOKEN];
        for run in &self.runs {
            for secret in secrets {
                assert!(
                    !run.stdout.contains(secret) && !run.stderr.contains(secret),
                    "`{secret}` printed by `pipe {}`:\n{}\n{}",
                    run.args,
                    run.stdout,
                    run.stderr
                );
            }
        }
        let state_dir = self.env.state_path().parent().unwrap().to_path_buf();
        let mut stack = vec![state_dir.clone(), self.env.path().join("work").join(&self.project).join("test-services")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                if path == state_dir.join("docker") {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                    for secret in secrets {
                        assert!(!text.contains(secret), "`{secret}` written to `{}`", path.display());
                    }
                }
            }
        }
        for request in self.slack.requests.lock().unwrap().iter() {
            let body = String::from_utf8_lossy(&request.body);
            for secret in secrets {
                assert!(!body.contains(secret), "`{secret}` sent to Slack: {body}");
            }
        }
    }
}

fn services_file(t: &Target, service_lines: &str) {
    t.repo.write("svc.yml", &format!("version: \"2.4\"\nservices:\n  db:\n    image: {}\n{service_lines}", t.base));
    t.repo.write(".pipe.toml", &format!("image = \"{}\"\ntest = \"true\"\ntest_services = \"svc.yml\"\n", t.image));
}

#[test]
fn test_services_that_reach_the_host_are_refused_by_file_line_and_key() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    let canary = t.canary.dir.display().to_string();
    // The issue's attack first (root on the host through a mount), then ten more ways a
    // compose file reaches the host, each its own commit on the same branch.
    let attacks = [
        (
            format!(
                "    volumes:\n      - {canary}:/host\n    command: [\"sh\", \"-c\", \"echo pwned > /host/secret.txt\"]\n"
            ),
            "volumes",
        ),
        ("    privileged: true\n".to_string(), "privileged"),
        ("    cap_add: [SYS_ADMIN]\n".to_string(), "cap_add"),
        ("    devices: [\"/dev/mem:/dev/mem\"]\n".to_string(), "devices"),
        ("    network_mode: host\n".to_string(), "network_mode"),
        ("    pid: host\n".to_string(), "pid"),
        ("    build: { context: / }\n".to_string(), "build"),
        ("    env_file: /proc/self/environ\n".to_string(), "env_file"),
        (format!("    extends: {{ file: {canary}/evil.yml, service: x }}\n"), "extends"),
        ("    security_opt: [\"seccomp:unconfined\"]\n".to_string(), "security_opt"),
        ("    ports: [\"0.0.0.0:2375:2375\"]\n".to_string(), "ports"),
    ];
    for (lines, key) in &attacks {
        services_file(&t, lines);
        t.refused(&format!("attack: {key}"), &[&format!("svc.yml:5:5: `{key}` is not allowed in test service `db`")]);
    }
    t.repo.write(
        "svc.yml",
        &format!(
            "services:\n  db:\n    image: {}\nvolumes:\n  data:\n    driver_opts: {{ device: {canary} }}\n",
            t.base
        ),
    );
    t.refused("attack: a top-level volume", &["svc.yml:4:1: `volumes` is not allowed in a test-services file"]);
    t.recovers();
    t.assert_no_secret_anywhere();
}

#[test]
fn compose_never_sees_pipes_environment_nor_the_repositorys_dotenv() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    services_file(&t, "    environment:\n      LEAK: ${REG_PASSWORD}\n");
    t.refused("attack: interpolation", &["svc.yml:6:13: `services.db.environment.LEAK`: interpolation"]);
    services_file(&t, "    environment:\n      - GIT_TOKEN\n");
    t.refused("attack: pass-through", &["svc.yml:6:9: `services.db.environment`: `GIT_TOKEN` has no value"]);
    services_file(&t, "    command: [\"sh\", \"-c\", \"echo $PIPE_SLACK_WEBHOOK\"]\n");
    t.refused("attack: bare $NAME", &["interpolation"]);
    // A `.env` beside the repository's compose file is where compose looks for its own settings
    // (COMPOSE_FILE, DOCKER_HOST, …): pipe's compose file is elsewhere, so it is never read.
    services_file(
        &t,
        "    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/etc\"]\n    environment:\n      ONLY: literal\n",
    );
    t.repo.write(".env", &format!("DOCKER_HOST=tcp://127.0.0.1:1\nCOMPOSE_FILE={}/evil.yml\n", t.canary.dir.display()));
    t.repo.write(
        ".pipe.toml",
        &format!(
            "image = \"{}\"\ntest = \"sleep 1; wget -q -O- http://db/passwd | grep -q root && env && echo reached-db\"\ntest_services = \"svc.yml\"\n",
            t.image
        ),
    );
    let log = t.passes_on_dev("services with a .env");
    assert!(log.contains("reached-db"), "{log}");
    t.canary.assert_unchanged();
    t.recovers();
    t.assert_no_secret_anywhere();
}

#[test]
fn symlinks_out_of_the_checkout_are_refused_and_repository_files_are_bounded() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    symlink(&t.canary.dir, t.repo.work.join("ctx")).unwrap();
    t.repo.write(".pipe.toml", &format!("image = \"{}\"\ncontext = \"ctx\"\n", t.image));
    t.refused(
        "attack: context out of the checkout",
        &["`context = \"ctx\"` is a symlink that leads out of the repository"],
    );
    t.legitimate("true");
    symlink(t.canary.dir.join("secret.txt"), t.repo.work.join("Dockerfile.link")).unwrap();
    t.repo.write(".pipe.toml", &format!("image = \"{}\"\ndockerfile = \"Dockerfile.link\"\n", t.image));
    t.refused("attack: a Dockerfile on the host", &["`dockerfile = \"Dockerfile.link\"` is a symlink that leads out"]);
    t.legitimate("true");
    std::fs::remove_file(t.repo.work.join(".pipe.toml")).unwrap();
    symlink("/dev/zero", t.repo.work.join(".pipe.toml")).unwrap();
    t.repo.write(".jenkins-env", &format!("imagename=\"{}\"\n", t.image));
    let started = std::time::Instant::now();
    t.refused("attack: .pipe.toml -> /dev/zero", &["cannot read `.pipe.toml`", "leads out of the repository"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "an unbounded read");
    std::fs::remove_file(t.repo.work.join(".pipe.toml")).unwrap();
    std::fs::remove_file(t.repo.work.join(".jenkins-env")).unwrap();
    t.repo.write(".pipe.toml", &format!("image = \"{}\"\n# {}\n", t.image, "x".repeat(1024 * 1024)));
    t.refused("attack: a 1 MiB .pipe.toml", &["repository files are read up to 1048576 bytes"]);
    // The docker CLI reads `.dockerignore` on the host: a link to a host file (or an endless
    // one) is refused before the build.
    t.legitimate("true");
    symlink("/dev/zero", t.repo.work.join(".dockerignore")).unwrap();
    t.refused("attack: .dockerignore -> /dev/zero", &["cannot read `./.dockerignore`", "leads out of the repository"]);
    std::fs::remove_file(t.repo.work.join(".dockerignore")).unwrap();
    symlink(t.canary.dir.join("secret.txt"), t.repo.work.join("Dockerfile.dockerignore")).unwrap();
    t.refused("attack: Dockerfile.dockerignore -> a host file", &["cannot read `Dockerfile.dockerignore`"]);
    std::fs::remove_file(t.repo.work.join("Dockerfile.dockerignore")).unwrap();
    t.recovers();
    t.assert_no_secret_anywhere();
}

#[test]
fn submodules_on_the_host_or_another_server_are_refused_and_get_no_token() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    // The project is served over HTTP with a token; a submodule elsewhere must not get it.
    let served = t.repo.bare.parent().unwrap().to_path_buf();
    let server = GitHttpServer::start(&served, Some(&format!("ci:{GIT_TOKEN}")));
    let project_url = server.url("app.git");
    let other = HttpSink::start(401);
    let host_repo = WorkRepo::new(&t.canary.dir, "private");
    host_repo.write("secret.txt", "host repository\n");
    host_repo.commit_to("main", "private");
    t.canary.before = t.canary.snapshot();
    let config = |extra: &str| format!("auth = {{ username = \"ci\", token_env = \"GIT_TOKEN\" }}\n{extra}");
    let write_config = |t: &Target, extra: &str| {
        let text = std::fs::read_to_string(t.env.config_path()).unwrap();
        let text = text.replace(&t.repo.url(), &project_url);
        let text = match text.find("pull_requests = true\n") {
            Some(_) => text.replacen("pull_requests = true\n", &format!("pull_requests = true\n{}", config(extra)), 1),
            None => text,
        };
        t.env.config(&text);
    };
    write_config(&t, "");
    // A real gitlink: a nested repository committed as `lib`, its URL in `.gitmodules`.
    let lib = t.repo.work.join("lib");
    let gitlink = |t: &Target, url: &str| {
        std::fs::create_dir_all(&lib).unwrap();
        if !lib.join(".git").exists() {
            git(&lib, &["init", "--quiet", "--initial-branch=main"]);
            std::fs::write(lib.join("x"), "x\n").unwrap();
            git(&lib, &["add", "x"]);
            git(&lib, &["commit", "--quiet", "-m", "lib"]);
        }
        t.repo.write(".gitmodules", &format!("[submodule \"lib\"]\n\tpath = lib\n\turl = {url}\n"));
    };
    for (url, expected) in [
        (host_repo.url(), "is refused: a local path or `file://` URL, and the project is not local"),
        (host_repo.bare.display().to_string(), "is refused: a local path"),
        (other.url("/x.git"), "is refused: not on the project's own host and scheme"),
    ] {
        gitlink(&t, &url);
        t.refused(&format!("attack: submodule {url}"), &["submodule `lib`", expected]);
    }
    assert!(other.taken().is_empty(), "the other server was contacted");
    // Allowed explicitly, the other server is asked, but never with the project's token.
    t.configure("");
    write_config(&t, &format!("submodules = {{ allow = [\"{}\"] }}", other.url("/*")));
    gitlink(&t, &other.url("/x.git"));
    t.refused("allowed submodule elsewhere", &["submodule `lib`"]);
    let asked = other.taken();
    assert!(!asked.is_empty(), "the allowed server was never asked");
    for request in asked {
        let auth = request.header("authorization").unwrap_or("");
        assert!(auth.is_empty(), "credentials sent to another host: {auth}");
    }
    std::fs::remove_dir_all(&lib).unwrap();
    t.recovers();
    t.assert_no_secret_anywhere();
}

#[test]
fn secrets_by_reference_never_show_and_inline_ones_are_warned() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    // A Dockerfile that mounts secrets needs BuildKit for every build, and BuildKit cannot
    // join pipe's isolated network: untrusted refs build with no network.
    t.configure(
        "build_args = { NPM_TOKEN = { env = \"NPM_TOKEN\" }, GREETING = \"hi\" }\ntest_env = { DB_PASSWORD = { env = \"DB_PASSWORD\" }, API_TOKEN = \"inline-looks-secret\" }\nbuild_network = { untrusted = \"none\" }\n",
    );
    t.env
        .pipe(&["check"])
        .code(0)
        .stderr_has("`project.")
        .stderr_has(".test_env.API_TOKEN` looks like a secret written inline");
    t.repo.write(
        "Dockerfile",
        &format!(
            // The project's name keeps the step out of other tests' build cache: BuildKit does
            // not key a cached step on a secret's value.
            "FROM {}\nRUN --mount=type=secret,id=NPM_TOKEN echo \"{} npm=$(cat /run/secrets/NPM_TOKEN 2>/dev/null)\"; cat /run/secrets/NPM_TOKEN 2>/dev/null | wc -c > /npm-len\nCOPY app.txt /app.txt\n",
            t.base, t.project
        ),
    );
    t.repo.write(
        ".pipe.toml",
        &format!(
            "image = \"{}\"\ntest = \"echo db=$DB_PASSWORD; test ${{#DB_PASSWORD}} -eq {} && test $(cat /npm-len) -eq {}\"\n",
            t.image,
            DB_PASSWORD.len(),
            NPM_TOKEN.len()
        ),
    );
    // The project's name in the step keeps BuildKit from answering it from a cache another run
    // (a secret is not part of a step's cache key) filled, which would print nothing to mask.
    t.repo.commit_to("dev", "uses secrets");
    let project = t.project.clone();
    // A secret build arg needs a builder that mounts it: BuildKit, built into Debian's CLI.
    t.env.env("PIPE_DOCKER", "/usr/bin/docker");
    t.pipe(&["run", &project, "-vv"]).code(0);
    let log = t.pipe(&["logs", &project, "dev"]).stdout.clone();
    assert!(
        log.contains("db=***")
            && log.contains("npm=***")
            && log.contains("--env DB_PASSWORD ")
            && log.contains("--secret id=NPM_TOKEN,env=NPM_TOKEN "),
        "{log}"
    );
    t.pipe(&["test", &project, "dev", "--dry-run"]).code(0).stdout_has("--env DB_PASSWORD ");
    // A pull request of the same project gets neither secret.
    let sha = git(&t.repo.work, &["rev-parse", "HEAD"]);
    git(&t.repo.bare, &["update-ref", "refs/pull/7/merge", &sha]);
    t.repo.write(".pipe.toml", &format!("image = \"{}\"\ntest = \"env; test -z \\\"$DB_PASSWORD\\\" && test $(cat /npm-len) -eq 0 && echo pr-has-no-secrets\"\n", t.image));
    git(&t.repo.work, &["add", "--all"]);
    git(&t.repo.work, &["commit", "--quiet", "-m", "a pull request"]);
    git(&t.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/7/head"]);
    t.pipe(&["run", &project]).code(0);
    t.pipe(&["logs", &project, "pull/7"]).code(0).stdout_has("pr-has-no-secrets");
    t.assert_no_secret_anywhere();
}

#[test]
fn the_test_container_is_confined() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    t.configure("limits = { memory = \"256m\", pids = 64, cpus = 1.0 }\n");
    let checks = [
        "grep -q '^CapEff:.*0000000000000000' /proc/self/status",
        "grep -q '^NoNewPrivs:.*1' /proc/self/status",
        "m=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes); test \"$m\" = 268435456",
        "p=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max); test \"$p\" = 64",
        "! wget -q -T 3 -O- http://1.1.1.1/ 2>/dev/null",
        "test -z \"$(grep -E ' /host| /var/run/docker.sock' /proc/mounts)\"",
        "echo confined-ok",
    ];
    t.legitimate(&checks.join(" && "));
    let log = t.passes_on_dev("confinement probe");
    assert!(log.contains("confined-ok") && log.contains("--cap-drop ALL"), "{log}");
    t.canary.assert_unchanged();
    t.assert_no_secret_anywhere();
}

/// Regression: a repository naming its image could retag any image on the host, such as a base
/// image other builds start `FROM` or another project's `latest`, with its own content.
#[test]
fn a_repository_cannot_take_over_an_image_pipe_did_not_build_for_it() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    t.configure("");
    // A base image on the host: what other projects' Dockerfiles start `FROM`.
    let base = unique_name("shared-base");
    docker.ok(&["tag", &docker.base_image, &format!("{base}:latest")]);
    let _base = docker.image(&format!("{base}:latest"));
    let before = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{base}:latest")]);
    t.repo
        .write("Dockerfile", &format!("FROM {}\nRUN echo hijacked > /marker\n", t.base))
        .write(".pipe.toml", &format!("image = \"{base}\"\ntest = \"true\"\n"));
    t.repo.commit_to("main", "take over the shared base image");
    let project = t.project.clone();
    let run = t.pipe(&["run", &project]);
    run.code(1).stderr_has(&format!("refusing to build {base}:latest")).stderr_has("an image pipe did not build");
    let after = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &format!("{base}:latest")]);
    assert_eq!(before, after, "the shared image was replaced");
    t.canary.assert_unchanged();
    t.assert_no_secret_anywhere();

    // The project's own image name goes on working.
    t.legitimate("grep -q legitimate /app.txt");
    t.repo.commit_to("main", "legitimate");
    t.pipe(&["run", &project]).code(0);
}

const HOST_SERVICE_SECRET: &str = "planted-host-service-secret-9265";

/// A service listening on every address of the host (as a `pipe serve` bound to `0.0.0.0`
/// would), answering each connection with a secret and counting them.
struct HostService {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HostService {
    fn start() -> HostService {
        use std::io::Write as _;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, stopped) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(format!("{HOST_SERVICE_SECRET}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        HostService { port, connections, stop }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A shell loop trying every address of the host (its own default gateway included) on the
    /// service's port, printing whatever answers.
    fn probe(&self) -> String {
        let out = std::process::Command::new("ip").args(["-4", "-o", "addr", "show"]).output().unwrap();
        let mut addresses: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter_map(|a| a.split('/').next())
            .filter(|a| !a.starts_with("127."))
            .map(String::from)
            .collect();
        addresses.push("$(ip route | awk '/default/{print $3}')".into());
        format!(
            // `reach''ed`: the word the log shows for a connection is not in the logged command.
            "for a in {}; do echo | nc -w 2 $a {} && echo reach''ed-$a; done; true",
            addresses.join(" "),
            self.port
        )
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Every `pipe isolation` firewall rule naming `bridge`.
fn rules_of(bridge: &str) -> Vec<String> {
    let mut found = Vec::new();
    for chain in ["INPUT", "DOCKER-USER", "FORWARD"] {
        let out = std::process::Command::new("iptables").args(["-w", "-S", chain]).output().unwrap();
        found.extend(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(bridge)).map(String::from));
    }
    found
}

/// The network a build or test ran on, from the run's log (`--network NAME`).
fn networks_in(log: &str, prefix: &str) -> Vec<String> {
    log.split_whitespace()
        .filter(|w| w.starts_with(prefix) && !w.contains("UNIQUE"))
        .map(String::from)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn untrusted_builds_and_test_services_cannot_reach_the_hosts_services() {
    let Some(docker) = Docker::require() else { return };
    if not_root() {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "the network isolation test needs root (iptables)");
        eprintln!("skipped: isolation needs root");
        return;
    }
    let mut t = target(&docker);
    let service = HostService::start();
    let probe = service.probe();
    // A pull request whose build step and whose test container (beside a test service that
    // probes too) try every address of the host.
    t.repo
        .write("Dockerfile", &format!("FROM {}\nRUN {probe}\nCOPY app.txt /app.txt\n", t.base))
        .write(
            "svc.yml",
            &format!(
                "version: \"2.4\"\nservices:\n  db:\n    image: {}\n    command: [\"sh\", \"-c\", {:?}]\n",
                t.base,
                format!("{probe}; sleep 60").replace('$', "$$")
            ),
        )
        .write(
            ".pipe.toml",
            &format!(
                "image = \"{}\"\ntest = {:?}\ntest_services = \"svc.yml\"\n",
                t.image,
                format!("sleep 3; {probe}")
            ),
        );
    git(&t.repo.work, &["add", "--all"]);
    git(&t.repo.work, &["commit", "--quiet", "-m", "a pull request probing the host"]);
    git(&t.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/9/head", "HEAD:refs/pull/9/merge"]);
    let project = t.project.clone();
    t.pipe(&["run", &project, "-vv"]).code(0);
    let log = t.pipe(&["logs", &project, "pull/9"]).stdout.clone();
    assert!(
        !log.contains(HOST_SERVICE_SECRET) && !log.contains("reached-"),
        "the pull request reached the host:\n{log}"
    );
    assert_eq!(service.connections(), 0, "a connection from the pull request reached the host's service:\n{log}");
    assert!(log.contains("--network pipe-build-"), "the build had no network of its own:\n{log}");
    // Nothing of the run's networks or rules is left.
    for network in networks_in(&log, "pipe-build-").into_iter().chain(networks_in(&log, "pipetest")) {
        let bridge = bridge_name(&network);
        let inspect = std::process::Command::new("docker").args(["network", "inspect", &network]).output().unwrap();
        assert!(!inspect.status.success(), "network `{network}` left behind");
        assert!(rules_of(&bridge).is_empty(), "rules of `{bridge}` left behind: {:?}", rules_of(&bridge));
    }
    t.canary.assert_unchanged();
    t.assert_no_secret_anywhere();
    let state_dir = t.env.state_path().parent().unwrap().to_path_buf();
    for entry in walk(&state_dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert!(!text.contains(HOST_SERVICE_SECRET), "the host's secret is in `{}`", entry.display());
    }

    // The same probe on a branch, whose build keeps the engine's default network, does reach the
    // service: the probe works, and the pull request's silence is the isolation's doing. (A
    // step of its own, not the pull request's cached one.)
    t.repo.write("Dockerfile", &format!("FROM {}\nRUN echo branch; {probe}\nCOPY app.txt /app.txt\n", t.base));
    t.repo.commit_to("dev", "a branch probing the host");
    t.pipe(&["build", &project, "dev"]).code(0);
    assert!(service.connections() > 0, "the probe never reached the host's service, even from a branch");
    t.pipe(&["logs", &project, "dev"]).code(0).stdout_has(HOST_SERVICE_SECRET);
}

fn not_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() != b"0").unwrap_or(true)
}

/// `pipe` and 11 hex digits of the network name's SHA-256, as pipe names the bridge.
fn bridge_name(network: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(network.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    format!("pipe{}", &String::from_utf8_lossy(&out.stdout)[..11])
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    files
}

#[test]
fn a_host_that_cannot_isolate_refuses_untrusted_builds_unless_the_policy_says_none() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    t.env.env("PIPE_IPTABLES", "/nonexistent/iptables");
    t.env
        .pipe(&["check"])
        .code(0)
        .stderr_has("this host cannot isolate the image build's network for untrusted refs (`/nonexistent/iptables` is not installed)")
        .stderr_has("test containers with test services or `limits.egress` can reach services listening on this host");
    t.repo.write(
        "Dockerfile",
        // The project's name keeps the step out of the build cache of other runs.
        &format!("FROM {}\nRUN ! ip route | grep -q default && echo build-had-no-ro''ute {}\n", t.base, t.project),
    );
    git(&t.repo.work, &["add", "--all"]);
    git(&t.repo.work, &["commit", "--quiet", "-m", "a pull request"]);
    git(&t.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/4/head", "HEAD:refs/pull/4/merge"]);
    let project = t.project.clone();
    t.pipe(&["run", &project])
        .code(1)
        .stderr_has("cannot build pull/4 on an isolated network: `/nonexistent/iptables` is not installed")
        .stderr_has("build_network = { untrusted = \"none\" }");
    // The operator's choice: no network at all for untrusted builds.
    t.configure("build_network = { untrusted = \"none\" }\n");
    t.pipe(&["run", &project, "--retry"]).code(0);
    let log = t.pipe(&["logs", &project, "pull/4"]).stdout.clone();
    assert!(log.contains("--network none") && log.contains("build-had-no-route"), "{log}");
    t.canary.assert_unchanged();
    t.assert_no_secret_anywhere();
}

#[test]
fn branches_outside_trusted_branches_are_treated_like_pull_requests() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    let marker = t.env.path().join("deployed");
    t.configure(&format!(
        "trusted_branches = [\"main\"]\nbuild_args = {{ NPM_TOKEN = {{ env = \"NPM_TOKEN\" }} }}\ntest_env = {{ DB_PASSWORD = {{ env = \"DB_PASSWORD\" }} }}\n\n\
         [[project.{p}.deploy]]\nbranches = [\"main\", \"dev\"]\ncommand = {{ argv = [\"sh\", \"-c\", \"echo $PIPE_BRANCH >> {m}\"] }}\n",
        p = t.project,
        m = marker.display()
    ));
    t.env.pipe(&["check"]).code(0).stderr_has("the deploy entry for `dev` never pushes or deploys");
    t.repo.write(
        "Dockerfile",
        &format!("FROM {}\nARG NPM_TOKEN\nRUN echo \"npm=$NPM_TOKEN\" > /npm\nCOPY app.txt /app.txt\n", t.base),
    );
    t.repo.write(
        ".pipe.toml",
        &format!(
            "image = \"{}\"\ntest = \"cat /npm; echo db=$DB_PASSWORD; if test -n \\\"$DB_PASSWORD\\\"; then echo has-secr''ets; else echo no-secr''ets; fi\"\n",
            t.image
        ),
    );
    let log = t.passes_on_dev("an untrusted branch");
    let project = t.project.clone();
    assert!(log.contains("no-secrets") && !log.contains("has-secrets"), "{log}");
    assert!(log.contains("--network pipe-build-"), "an untrusted branch builds isolated:\n{log}");
    assert!(!marker.exists(), "an untrusted branch deployed");
    t.assert_no_secret_anywhere();

    // The trusted branch has its secrets and deploys, as before: its secret build arg on
    // BuildKit (Debian's CLI has it built in), which mounts it instead of keeping it.
    t.repo.commit_to("main", "the trusted branch");
    t.env.env("PIPE_DOCKER", "/usr/bin/docker");
    t.pipe(&["run", &project]).code(0);
    let log = t.pipe(&["logs", &project, "main"]).stdout.clone();
    assert!(log.contains("has-secrets") && log.contains("db=***"), "{log}");
    assert!(!log.contains("--network pipe-build-"), "a trusted branch keeps the default build network:\n{log}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "main\n");
    t.canary.assert_unchanged();
}

/// A git daemon that answers every request with a ref advertisement trickled a byte at a time,
/// slower than anything would call dead and never finished; sends `()` when a client hangs up.
fn trickling_git_server() -> (u16, std::sync::mpsc::Receiver<()>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut len = [0u8; 4];
                let _ = stream.read_exact(&mut len);
                let len = usize::from_str_radix(std::str::from_utf8(&len).unwrap_or("0"), 16).unwrap_or(4);
                let mut request = vec![0; len.saturating_sub(4)];
                let _ = stream.read_exact(&mut request);
                let line = format!("{:040x} HEAD\0multi_ack side-band-64k\n", 1);
                let advert = format!("{:04x}{line}", line.len() + 4);
                for byte in advert.bytes().cycle() {
                    if stream.write_all(&[byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                let _ = tx.send(());
            });
        }
    });
    (port, rx)
}

#[test]
fn a_submodule_server_trickling_its_answer_is_stopped_at_the_builds_deadline() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    let (port, hung_up) = trickling_git_server();
    let url = format!("git://127.0.0.1:{port}/lib.git");
    t.configure(&format!(
        "submodules = {{ allow = [\"git://127.0.0.1:{port}/*\"] }}\ntimeouts = {{ build = \"5s\" }}\n"
    ));
    let lib = t.repo.work.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    git(&lib, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(lib.join("x"), "x\n").unwrap();
    git(&lib, &["add", "x"]);
    git(&lib, &["commit", "--quiet", "-m", "lib"]);
    t.repo.write(".gitmodules", &format!("[submodule \"lib\"]\n\tpath = lib\n\turl = {url}\n"));
    t.repo.commit_to("dev", "a submodule on a trickling server");
    let project = t.project.clone();
    let started = std::time::Instant::now();
    t.pipe(&["run", &project]).code(1).stderr_has("still fetching at the build's deadline (5s)");
    assert!(started.elapsed() < std::time::Duration::from_secs(40), "the build outlived its deadline");
    hung_up.recv_timeout(std::time::Duration::from_secs(10)).expect("the submodule fetch still holds the connection");
    assert_eq!(t.env.pipe(&["status", "--json"]).json()["refs"][0]["result"], "timed_out");
    std::fs::remove_dir_all(&lib).unwrap();
    // The recovery is the project's first image: a cold build (no earlier trusted image of its
    // own to reuse), which a loaded machine does not finish in 5 s.
    t.configure(&format!("submodules = {{ allow = [\"git://127.0.0.1:{port}/*\"] }}\n"));
    t.recovers();
    t.canary.assert_unchanged();
    t.assert_no_secret_anywhere();
}

/// `docker run --rm IMAGE cat FILE`.
fn cat_in(image: &str, file: &str) -> String {
    let out = std::process::Command::new("docker").args(["run", "--rm", image, "cat", file]).output().unwrap();
    assert!(out.status.success(), "cannot read {file} in {image}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_pull_request_gets_neither_the_registry_login_nor_the_trusted_image_tag() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    let reg = crate::support::docker::Registry::start("ci", REG_PASSWORD);
    let write_config = |t: &Target| {
        t.configure(&format!(
            "build_args = {{ NPM_TOKEN = {{ env = \"NPM_TOKEN\" }} }}\nbuild_network = {{ untrusted = \"none\" }}\n\n[[project.{p}.deploy]]\nbranches = [\"main\"]\npush = [\"local\"]\ncommand = {{ argv = [\"true\"] }}\n",
            p = t.project
        ));
        let text = std::fs::read_to_string(t.env.config_path()).unwrap().replace("127.0.0.1:1", &reg.host());
        t.env.config(&text);
    };
    write_config(&t);
    // A base image only the registry's login can pull.
    let private = format!("{}/{}-base:1", reg.host(), t.project);
    let login_dir = tempfile::tempdir().unwrap();
    let docker_as_ci = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut child = std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", login_dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "docker {args:?}");
    };
    docker_as_ci(&["login", "--username", "ci", "--password-stdin", &reg.host()], Some(REG_PASSWORD));
    docker.ok(&["tag", &t.base, &private]);
    docker_as_ci(&["push", &private], None);
    docker.ok(&["image", "rm", &private]);
    let _private = docker.image(&private);

    // The trusted branch: its build has the secret build arg, is pushed (pipe logs in) and deployed.
    t.repo.write(
        "Dockerfile",
        &format!(
            "FROM {}\nRUN --mount=type=secret,id=NPM_TOKEN cat /run/secrets/NPM_TOKEN 2>/dev/null | wc -c > /len\nCOPY app.txt /app.txt\n",
            t.base
        ),
    );
    let sha = t.repo.commit_to("main", "trusted");
    // The secret is mounted by BuildKit (built into Debian's CLI); untrusted refs build with it
    // too, with no network (`build_network`), as BuildKit cannot join pipe's isolated one.
    t.env.env("PIPE_DOCKER", "/usr/bin/docker");
    let project = t.project.clone();
    t.pipe(&["run", &project]).code(0);
    let commit_tag = &sha[..12];
    assert_eq!(cat_in(&format!("{}:{commit_tag}", t.image), "/len"), NPM_TOKEN.len().to_string());

    // A pull request of the very same commit builds without the secret, under its own tags:
    // the trusted image keeps its tag.
    git(&t.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/5/head", "HEAD:refs/pull/5/merge"]);
    t.pipe(&["run", &project]).code(0);
    // Under pipe's own name for the project's untrusted builds, never the project's image.
    let untrusted = format!("pipe-untrusted/{}", t.project);
    assert_eq!(cat_in(&format!("{untrusted}:{commit_tag}-untrusted"), "/len"), "0");
    assert_eq!(cat_in(&format!("{untrusted}:pr-5"), "/len"), "0");
    assert_eq!(cat_in(&format!("{}:{commit_tag}", t.image), "/len"), NPM_TOKEN.len().to_string());
    let untrusted_tag = format!("--tag {untrusted}:{commit_tag}-untrusted ");
    t.pipe(&["logs", &project, "pull/5"]).code(0).stdout_has(&untrusted_tag);

    // A pull request starting `FROM` the private image cannot pull it: pipe's login (stored by
    // the push above) is not its to use.
    t.repo.write("Dockerfile", &format!("FROM {private}\nCOPY app.txt /app.txt\n"));
    git(&t.repo.work, &["add", "--all"]);
    git(&t.repo.work, &["commit", "--quiet", "-m", "a pull request from the private image"]);
    git(&t.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/6/head", "HEAD:refs/pull/6/merge"]);
    t.pipe(&["run", &project]).code(1);
    let log = t.pipe(&["logs", &project, "pull/6"]).stdout.clone();
    let refused = log.to_lowercase();
    assert!(refused.contains("no basic auth credentials") || refused.contains("unauthorized"), "{log}");
    // The same Dockerfile on the trusted branch pulls it with pipe's login.
    t.repo.commit_to("main", "the trusted branch from the private image");
    t.pipe(&["run", &project]).code(0);
    t.canary.assert_unchanged();
    t.assert_no_secret_anywhere();
}

#[test]
fn the_fetch_leaves_no_token_in_the_build_context_and_trusting_pull_requests_is_warned() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    let served = t.repo.bare.parent().unwrap().to_path_buf();
    let server = GitHttpServer::start(&served, Some(&format!("ci:{GIT_TOKEN}")));
    t.configure("auth = { username = \"ci\", token_env = \"GIT_TOKEN\" }\ntrust_pull_requests = true\n");
    let text = std::fs::read_to_string(t.env.config_path()).unwrap().replace(&t.repo.url(), &server.url("app.git"));
    t.env.config(&text);
    t.env
        .pipe(&["check"])
        .code(0)
        .stderr_has("has `trust_pull_requests = true`: anyone who can open a pull request can read its secret");
    // The whole checkout, `.git` included, is the build context.
    t.repo.write("Dockerfile", &format!("FROM {}\nCOPY . /ctx\n", t.base)).write(
        ".pipe.toml",
        &format!(
            "image = \"{}\"\ntest = \"test -d /ctx/.git && ! test -e /ctx/.git/FETCH_HEAD && p={}; ! grep -rl $p{} /ctx && echo context-is-cl''ean\"\n",
            t.image,
            &GIT_TOKEN[..12],
            &GIT_TOKEN[12..]
        ),
    );
    let log = t.passes_on_dev("copies its whole checkout");
    let project = t.project.clone();
    assert!(log.contains("context-is-clean"), "{log}");
    let fetch_head = t.env.path().join("work").join(&project).join("src/.git/FETCH_HEAD");
    assert!(!fetch_head.exists(), "`{}` is left in the checkout", fetch_head.display());
    // A trusted pull request still never writes the tag its branch's build deploys.
    let sha = git(&t.repo.work, &["rev-parse", "HEAD"]);
    git(&t.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/8/head", "HEAD:refs/pull/8/merge"]);
    t.pipe(&["build", &project, "pull/8"]).code(0);
    let untrusted_tag = format!("--tag {}:{}-untrusted ", t.image, &sha[..12]);
    t.pipe(&["logs", &project, "pull/8"]).code(0).stdout_has(&untrusted_tag);
    t.assert_no_secret_anywhere();
}

#[test]
fn branches_flooding_their_logs_stay_within_the_projects_log_budget() {
    let Some(docker) = Docker::require() else { return };
    let mut t = target(&docker);
    // Room for one run (two capped commands, 32 MiB) and 1 MiB of older logs.
    let text = std::fs::read_to_string(t.env.config_path()).unwrap();
    t.env.config(&text.replacen("[pipe]\n", "[pipe]\nproject_logs_mib = 33\n", 1));
    t.legitimate("yes flood-line-of-the-test | head -c 700000");
    let project = t.project.clone();
    for branch in ["flood-a", "flood-b", "flood-c"] {
        t.repo.commit_to(branch, branch);
        t.pipe(&["build", &project, branch]).code(0);
        t.pipe(&["test", &project, branch]).code(0);
    }
    t.pipe(&["logs", &project, "flood-a"]).code(0).stdout_has("[log emptied: this project's logs were over");
    t.pipe(&["logs", &project, "flood-c"]).code(0).stdout_has("flood-line-of-the-test");
    let logs = t.env.state_path().parent().unwrap().join("logs").join(&project);
    let total: u64 = walk(&logs).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(total <= (1 << 20) + 2 * 700_000, "the project's logs hold {total} bytes");
    t.canary.assert_unchanged();
}

/// Removes every local tag of an image repository (what `--here` built, which carries the
/// checkout's name, not the test's project label).
struct RepositoryImages(String);

impl Drop for RepositoryImages {
    fn drop(&mut self) {
        let out = std::process::Command::new("docker")
            .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", &self.0])
            .output()
            .unwrap();
        for reference in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = std::process::Command::new("docker").args(["image", "rm", "--force", reference]).output();
        }
    }
}

#[test]
fn a_developers_test_here_is_confined_as_ci_confines_it() {
    let Some(docker) = Docker::require() else { return };
    let t = target(&docker);
    let _images = RepositoryImages(t.image.clone());
    let here = |t: &Target| {
        let mut cmd = t.env.command(&["test", "--here"]);
        cmd.env_remove("PIPE_CONFIG").current_dir(&t.repo.work);
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let checks = [
        "grep -q '^CapEff:.*0000000000000000' /proc/self/status",
        "grep -q '^NoNewPrivs:.*1' /proc/self/status",
        "p=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max); test \"$p\" = 1024",
        "! ip route | grep -q default",
        "echo here-is-conf''ined",
    ];
    t.legitimate(&checks.join(" && "));
    t.repo.commit_to("main", "a developer's checkout");
    let (code, stderr) = here(&t);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("here-is-confined"), "{stderr}");
    // Test services on a developer's machine pass the same allow-list.
    services_file(&t, "    privileged: true\n");
    let (code, stderr) = here(&t);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("svc.yml:5:5: `privileged` is not allowed in test service `db`"), "{stderr}");
    t.canary.assert_unchanged();
}

/// `HOST:PID:START` for a live process, as pipe labels the networks it makes.
fn owner_label(pid: u32) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().to_string();
    format!("{}:{pid}:{start}", host.trim())
}

#[test]
fn networks_and_rules_a_killed_pipe_left_are_swept_and_live_ones_kept() {
    let Some(docker) = Docker::require() else { return };
    if not_root() {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "the network isolation test needs root (iptables)");
        return;
    }
    let mut t = target(&docker);
    t.repo.commit_to("main", "first");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = unique_name("stale-net");
    let live = unique_name("live-net");
    docker.ok(&[
        "network",
        "create",
        "--label",
        "pipe.network=test",
        "--label",
        &format!("pipe.owner={}:{dead_pid}:1", host.trim()),
        &stale,
    ]);
    docker.ok(&[
        "network",
        "create",
        "--label",
        "pipe.network=test",
        "--label",
        &format!("pipe.owner={}", owner_label(std::process::id())),
        &live,
    ]);
    let rule = ["INPUT", "-i", "pipe0000000dead", "-m", "comment", "--comment", "pipe isolation", "-j", "REJECT"];
    let insert = std::process::Command::new("iptables").args(["-w", "-I"]).args(rule).status().unwrap();
    assert!(insert.success());
    // Any isolated network pipe makes sweeps first: a pull request's build.
    git(&t.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/3/head", "HEAD:refs/pull/3/merge"]);
    let project = t.project.clone();
    t.pipe(&["build", &project, "pull/3"]).code(0);
    let exists = |name: &str| {
        std::process::Command::new("docker").args(["network", "inspect", name]).output().unwrap().status.success()
    };
    assert!(!exists(&stale), "the network of a gone pipe is left");
    assert!(exists(&live), "a live process's network was taken");
    docker.ok(&["network", "rm", &live]);
    assert!(rules_of("pipe0000000dead").is_empty(), "a rule of a gone bridge is left");
    t.canary.assert_unchanged();
}

/// A repository's image labels itself as another project's compose container; its running test
/// container must not pass for one (a deploy of that project would count it among its own).
#[test]
fn a_test_container_never_passes_for_another_projects_compose_container() {
    let Some(docker) = Docker::require() else { return };
    let t = target(&docker);
    let victim = format!("{}-victim", t.project);
    t.repo.write(
        "Dockerfile",
        &format!(
            "FROM {}\nLABEL com.docker.compose.project={victim} com.docker.compose.service=web \
             com.docker.compose.oneoff=False\nCOPY app.txt /app.txt\n",
            t.base
        ),
    );
    t.repo.write(".pipe.toml", &format!("image = \"{}\"\ntest = \"sleep 4\"\n", t.image));
    t.repo.commit_to("dev", "labelled as another project's container");
    let mut run = t
        .env
        .command(&["run", &t.project])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ours = format!("label=pipe.run={}-dev-1", t.project);
    let theirs = format!("label=com.docker.compose.project={victim}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen_running = false;
    while run.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        let running = docker.ok(&["ps", "--quiet", "--filter", &ours]);
        if !running.trim().is_empty() {
            seen_running = true;
            let labelled = docker.ok(&["ps", "--all", "--quiet", "--filter", &theirs]);
            assert_eq!(labelled.trim(), "", "the test container passes for project `{victim}`'s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(run.wait().unwrap().success());
    assert!(seen_running, "the test container was never seen running");
}
