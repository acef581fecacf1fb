//! Zero-downtime deploys through the real nginx ingress, under continuous HTTP load: every
//! response is checked for which release answered. Zero failed requests, and zero answers from
//! a release that failed its checks, across consecutive deploys, a release that never gets
//! healthy, a failing release command, a rollback by hand, a slow-booting app, and a `pipe run`
//! killed with SIGTERM mid-deploy.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Docker, ProjectImages, unique_name};
use crate::support::load::{Load, only};
use crate::support::nginx::{self, NGINX, NginxGuard};
use crate::support::{TestEnv, WorkRepo, free_port};

const HOST: &str = "web.zdd.test";

/// The app, its compose file, and an nginx on the host that pipe configures, starts and reloads.
struct Stack {
    // Field order is drop order: nginx, then containers and networks, then images.
    _nginx: NginxGuard,
    _compose: ComposeProject,
    _images: ProjectImages,
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    front: u16,
}

fn stack(docker: &Docker, target_extra: &str) -> Option<Stack> {
    if !nginx::available() {
        return None;
    }
    let env = TestEnv::new();
    let project = unique_name("zd").replace("pipe-test-", "");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    let dir = env.path().join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    // No published port: nginx reaches each container at its own address, so two releases of
    // the service can run side by side. `boot` makes an app slow to start.
    std::fs::write(
        dir.join("docker-compose.yml"),
        "version: \"2.4\"\nservices:\n  web:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    init: true\n    \
         command: [\"sh\", \"-c\", \"sleep $$(cat /www/boot); exec httpd -f -p 8080 -h /www\"]\n",
    )
    .unwrap();
    let ngx = env.path().join("nginx");
    std::fs::create_dir_all(&ngx).unwrap();
    let front = free_port();
    let d = ngx.display();
    std::fs::write(ngx.join("nginx.conf"), nginx::conf(&ngx, &format!("{d}/pipe.conf"))).unwrap();
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[ingress]\ndomain = \"zdd.test\"\nlisten = \"127.0.0.1:{front}\"\n\
         upstreams = \"{d}/upstreams\"\nnginx = [\"{NGINX}\", \"-c\", \"{d}/nginx.conf\", \"-e\", \"{d}/error.log\"]\n\n\
         [project.{project}]\nrepo = \"{url}\"\nbranches = [\"dev\"]\n\n[[project.{project}.deploy]]\nname = \"devhost\"\n\
         branches = [\"dev\"]\ncompose = {{ file = \"{file}\", project = \"{project}\", services = [\"web\"] }}\n\
         ingress = {{ web = 8080 }}\nhealth = {{ url = \"http://{HOST}/health\", timeout = \"15s\" }}\ndrain = \"1s\"\n{target_extra}\n",
        ws = env.path().join("work").display(),
        url = repo.url(),
        file = dir.join("docker-compose.yml").display(),
    ));
    let generated = env.pipe(&["generate", "nginx"]);
    generated.code(0).stdout_has("include ").stdout_has("web pipe-web;");
    // nginx on the host, every service switched: no Docker DNS server named (pipe runs `nginx -t`).
    assert!(!generated.stdout.contains("resolver") && !generated.stdout.contains("Docker"), "{}", generated.stdout);
    std::fs::write(ngx.join("pipe.conf"), &generated.stdout).unwrap();
    Some(Stack {
        _nginx: NginxGuard(ngx.join("nginx.pid")),
        _compose: ComposeProject { name: project.clone() },
        _images: ProjectImages { project: project.clone() },
        env,
        repo,
        project,
        front,
    })
}

/// How a release behaves.
#[derive(Clone, Copy)]
enum Kind {
    Good,
    /// Never healthy: no `/health`.
    Unhealthy,
    /// Healthy, but its release command fails.
    FailingRelease,
}

impl Stack {
    /// Commits a release answering `body` on `/`.
    fn release(&self, body: &str, kind: Kind, boot_seconds: u32) -> String {
        self.repo.write("www/index.html", &format!("{body}\n"));
        self.repo.write("www/boot", &format!("{boot_seconds}\n"));
        let health = self.repo.work.join("www/health");
        let migrate = self.repo.work.join("www/migrate-ok");
        let _ = std::fs::remove_file(&health);
        let _ = std::fs::remove_file(&migrate);
        if !matches!(kind, Kind::Unhealthy) {
            self.repo.write("www/health", "ok\n");
        }
        if !matches!(kind, Kind::FailingRelease) {
            self.repo.write("www/migrate-ok", "yes\n");
        }
        self.repo.write(".pipe.toml", &format!("image = \"pipe-test/{}\"\ntest = \"true\"\n", self.project));
        self.repo.commit_to("dev", body)
    }

    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "--all", "--format", "{{.Names}}", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.project))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    fn get(&self) -> Result<String, String> {
        nginx::request(self.front, HOST, "/")
    }

    /// Waits until the ingress answers 200.
    fn answering(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.get() {
                Ok(body) => return body,
                Err(e) => assert!(Instant::now() < deadline, "the ingress never answered: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn deploys_wanted() -> u32 {
    std::env::var("PIPE_ZDD_DEPLOYS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

#[test]
fn consecutive_deploys_under_load_fail_no_request_and_record_their_timeline() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "") else { return };
    s.release("release 0", Kind::Good, 0);
    s.env.pipe(&["run"]).code(0).stdout_has("deploy  passed");
    assert_eq!(s.answering(), "release 0");
    assert!(s.env.path().join("nginx/nginx.pid").exists(), "pipe started the ingress nginx");

    let load = Load::start("127.0.0.1", s.front, HOST);
    let mut allowed = vec!["release 0".to_string()];
    for n in 1..=deploys_wanted() {
        let body = format!("release {n}");
        let commit = s.release(&body, Kind::Good, 0);
        let run = s.env.pipe(&["run", "--json"]);
        run.code(0);
        let doc = run.json();
        let result = &doc["results"][0];
        assert_eq!(result["commit"], commit.as_str());
        let timeline = &result["timeline"];
        for moment in ["detected", "built", "tested", "healthy", "traffic"] {
            assert!(timeline[moment].is_string(), "timeline lacks `{moment}`: {doc}");
        }
        allowed.push(body.clone());
        assert_eq!(s.get().as_deref(), Ok(body.as_str()));
    }
    let tally = load.finish();
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    only(&tally, &allowed);
    assert_eq!(s.containers().len(), 1, "the old releases were removed: {:?}", s.containers());

    let history =
        std::fs::read_to_string(s.env.state_path().with_file_name("deploys").join(&s.project).join("devhost.toml"))
            .unwrap();
    assert!(history.contains("[deploy.timeline]") && history.contains("traffic = "), "{history}");
    s.env.pipe(&["status"]).code(0).stdout_has("COMMIT TO TRAFFIC");
    let status = s.env.pipe(&["status", "--json"]);
    assert!(status.json()["refs"][0]["commit_to_traffic_seconds"].is_number(), "{}", status.stdout);
}

#[test]
fn bad_releases_never_answer_and_a_rollback_by_hand_switches_without_failures() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "release = { argv = [\"test\", \"-f\", \"/www/migrate-ok\"] }") else { return };
    let first = s.release("good 1", Kind::Good, 0);
    s.env.pipe(&["run"]).code(0);
    assert_eq!(s.answering(), "good 1");
    let load = Load::start("127.0.0.1", s.front, HOST);

    s.release("bad unhealthy", Kind::Unhealthy, 0);
    let run = s.env.pipe(&["run"]);
    run.code(1).stderr_has("the old release kept serving");
    assert_eq!(s.containers().len(), 1, "the unhealthy release's container was removed: {:?}", s.containers());
    s.env.pipe(&["run"]).code(0).stderr_has("nothing to do");

    s.release("bad migration", Kind::FailingRelease, 0);
    s.env.pipe(&["run"]).code(1).stderr_has("the release command failed");
    assert_eq!(s.containers().len(), 1, "{:?}", s.containers());
    let log = s.env.pipe(&["logs", &s.project, "dev"]);
    log.code(0).stdout_has("test -f /www/migrate-ok");

    s.release("good 2", Kind::Good, 0);
    s.env.pipe(&["run"]).code(0);
    assert_eq!(s.get().as_deref(), Ok("good 2"));

    s.env.pipe(&["deploy", &s.project, "dev", "--commit", &first]).code(0);
    assert_eq!(s.get().as_deref(), Ok("good 1"));

    let tally = load.finish();
    only(&tally, &["good 1", "good 2"]);
    assert_eq!(s.containers().len(), 1, "{:?}", s.containers());
}

#[test]
fn a_sigterm_mid_deploy_of_a_slow_booting_app_keeps_the_old_release_serving_and_the_next_run_converges() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "") else { return };
    s.release("slow 1", Kind::Good, 5);
    s.env.pipe(&["run"]).code(0);
    assert_eq!(s.answering(), "slow 1");
    let load = Load::start("127.0.0.1", s.front, HOST);

    s.release("slow 2", Kind::Good, 5);
    let mut child = s.env.command(&["run"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.containers().len() < 2 {
        assert!(Instant::now() < deadline, "the new release never started beside the old one");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new container is booting (5 s): stop pipe in the middle of the rollout.
    std::thread::sleep(Duration::from_secs(1));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_eq!(s.get().as_deref(), Ok("slow 1"));

    // The next run deploys the interrupted commit, with a 5 s boot, and leaves one container.
    s.env.pipe(&["run"]).code(0);
    assert_eq!(s.get().as_deref(), Ok("slow 2"));
    let tally = load.finish();
    only(&tally, &["slow 1", "slow 2"]);
    assert_eq!(s.containers().len(), 1, "{:?}", s.containers());
}

/// Removes a swarm stack on drop.
struct SwarmStack(String);

impl Drop for SwarmStack {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["stack", "rm", &self.0]).output();
        // `stack rm` returns before the network is gone; wait so nothing is left behind.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = Command::new("docker")
                .args(["network", "ls", "--quiet", "--filter", &format!("label=com.docker.stack.namespace={}", self.0)])
                .output()
                .unwrap();
            if out.stdout.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
fn swarm_services_update_start_first_and_roll_back_unless_the_stack_file_says_otherwise() {
    let Some(docker) = Docker::require() else { return };
    let swarm = Command::new("docker").args(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output().unwrap();
    if String::from_utf8_lossy(&swarm.stdout).trim() != "active" {
        assert!(
            std::env::var("PIPE_REQUIRE_DOCKER").is_err(),
            "no swarm: scripts/test-deps.sh runs `docker swarm init`"
        );
        return;
    }
    let env = TestEnv::new();
    let project = unique_name("zs").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    let _stack = SwarmStack(project.clone());
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "swarm\n");
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{project}\"\ntest = \"true\"\n"));
    repo.commit_to("dev", "swarm");
    let file = env.path().join("stack.yml");
    std::fs::write(
        &file,
        "version: \"3.8\"\nservices:\n  web:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n  \
         worker:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    command: [\"sleep\", \"3600\"]\n    deploy:\n      update_config:\n        order: stop-first\n",
    )
    .unwrap();
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[project.{project}]\nrepo = \"{url}\"\nbranches = [\"dev\"]\n\n[[project.{project}.deploy]]\n\
         branches = [\"dev\"]\nswarm = {{ file = \"{file}\", stack = \"{project}\" }}\ntimeout = \"2m\"\n",
        ws = env.path().join("work").display(),
        url = repo.url(),
        file = file.display(),
    ));
    env.pipe(&["run"]).code(0).stdout_has("deploy  passed");
    let spec = |service: &str| {
        docker.ok(&["service", "inspect", "--format", "{{json .Spec.UpdateConfig}}", &format!("{project}_{service}")])
    };
    let web = spec("web");
    assert!(web.contains("\"Order\":\"start-first\"") && web.contains("\"FailureAction\":\"rollback\""), "{web}");
    let worker = spec("worker");
    assert!(
        worker.contains("\"Order\":\"stop-first\"") && worker.contains("\"FailureAction\":\"rollback\""),
        "{worker}"
    );
}

#[test]
fn check_names_the_outage_of_a_compose_target_outside_the_ingress_and_the_fix() {
    let env = TestEnv::new();
    env.config(
        "[project.app]\nrepo = \"file:///nowhere\"\nbranches = [\"dev\"]\n\n[[project.app.deploy]]\nname = \"devhost\"\n\
         branches = [\"dev\"]\ncompose = { file = \"/srv/app/docker-compose.yml\" }\n",
    );
    env.pipe(&["check"]).code(0).stderr_has("project `app` target `devhost`: every deploy is an outage").stderr_has(
        "hint: route its services through the ingress: `ingress = { SERVICE = PORT }` on the target and `upstreams =",
    );
    env.config(
        "[ingress]\nupstreams = \"/etc/nginx/pipe\"\n\n[project.app]\nrepo = \"file:///nowhere\"\nbranches = [\"dev\"]\n\n\
         [[project.app.deploy]]\nbranches = [\"dev\"]\ncompose = { file = \"/srv/app/docker-compose.yml\" }\ningress = { web = 8080 }\n\
         release = { argv = [\"bin/migrate\"] }\ndrain = \"3s\"\n",
    );
    let run = env.pipe(&["check"]);
    run.code(0);
    assert!(!run.stderr.contains("outage"), "{}", run.stderr);
}

/// A container that only carries the compose labels of the target's service (as a build step's
/// container gets them from an image's `LABEL`s) is never taken for one of its containers: a
/// deploy neither switches the ingress to it, attaches it to pipe's network, nor removes it.
#[test]
fn a_stranger_with_the_services_labels_is_never_switched_to_attached_or_removed() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "") else { return };
    s.release("good 1", Kind::Good, 0);
    s.env.pipe(&["run"]).code(0);
    assert_eq!(s.answering(), "good 1");
    let stranger = format!("{}-stranger", s.project);
    let labels = [
        format!("com.docker.compose.project={}", s.project),
        "com.docker.compose.service=web".to_string(),
        "com.docker.compose.oneoff=False".to_string(),
        "com.docker.compose.container-number=7".to_string(),
    ];
    let mut run = vec!["run", "--detach", "--name", stranger.as_str()];
    for l in &labels {
        run.extend(["--label", l.as_str()]);
    }
    let app =
        "mkdir -p /www && echo stranger > /www/index.html && echo ok > /www/health && exec httpd -f -p 8080 -h /www";
    run.extend([docker.base_image.as_str(), "sh", "-c", app]);
    docker.ok(&run);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "--force", &self.0]).output();
        }
    }
    let _gone = Gone(stranger.clone());

    s.release("good 2", Kind::Good, 0);
    let deploy = s.env.pipe(&["run"]);
    let state = docker.ok(&["inspect", "--format", "{{.State.Running}} {{json .NetworkSettings.Networks}}", &stranger]);
    assert!(state.starts_with("true "), "the stranger was stopped or removed: {state}\n{}", deploy.stderr);
    assert!(!state.contains("pipe-ingress-"), "the stranger joined pipe's network: {state}\n{}", deploy.stderr);
    let answer = s.answering();
    assert_ne!(answer, "stranger", "the ingress was switched to the stranger\n{}", deploy.stderr);
    assert_eq!(deploy.code, 0, "the deploy failed:\n{}", deploy.stderr);
    assert_eq!(answer, "good 2");
}
