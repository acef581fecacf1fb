//! `pipe serve` hooks deploy through the same zero-downtime rollout as `pipe run`'s compose
//! targets (`targets::rollout`): the receiving host's real nginx, continuous HTTP load through
//! it, and every answer checked for which release gave it. Zero failed requests across
//! releases; a release failing its health check or its release command never answers, and the
//! run's document shows the health check's answer (secrets masked); a rollback by hand through
//! the hook is marked; a `pipe run` target and a hook record the same timeline.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Docker, ProjectImages, unique_name};
use crate::support::load::{Load, only};
use crate::support::nginx::{self, NGINX, NginxGuard};
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, free_port};

const HOST: &str = "web.hook.test";
const TOKEN: &str = "hook-token-5551212";
const APP_SECRET: &str = "app-secret-8675309";
const BEARER: (&str, &str) = ("Authorization", "Bearer hook-token-5551212");

/// How a release behaves.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Good,
    /// Its health check answers 503 with a body naming the app's secret.
    Unhealthy,
    /// Healthy, but its release command fails.
    FailingRelease,
}

/// The compose file of a hook's app: busybox httpd on 8080, no published port, restarted by
/// the engine, with the hook's secret in its environment.
pub fn compose_file(dir: &Path, service: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            "version: \"2.4\"\nservices:\n  {service}:\n    image: ${{PIPE_IMAGE}}:${{PIPE_TAG}}\n    init: true\n    \
             restart: unless-stopped\n    environment:\n      APP_SECRET: ${{APP_SECRET}}\n    \
             command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        ),
    )
    .unwrap();
    file
}

/// Builds `image:tag` answering `body` on `/` from `base`, labelled for `ProjectImages` of
/// `project`; `docker` runs the docker CLI (of the main engine, or a simulated host's).
pub fn build_release(docker: &dyn Fn(&[&str]) -> String, base: &str, dir: &Path, release: [&str; 4], kind: Kind) {
    let [project, image, tag, body] = release;
    let ctx = dir.join(format!("build-{tag}"));
    let www = ctx.join("www");
    std::fs::create_dir_all(www.join("cgi-bin")).unwrap();
    std::fs::write(www.join("index.html"), format!("{body}\n")).unwrap();
    let health = if kind == Kind::Unhealthy {
        "#!/bin/sh\nprintf 'Status: 503 Service Unavailable\\r\\nContent-Type: text/plain\\r\\n\\r\\ndb down: cannot log in with %s\\n' \"$APP_SECRET\"\n"
    } else {
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n"
    };
    let script = www.join("cgi-bin/health");
    std::fs::write(&script, health).unwrap();
    std::process::Command::new("chmod").arg("755").arg(&script).status().unwrap();
    if kind != Kind::FailingRelease {
        std::fs::write(www.join("migrate-ok"), "yes\n").unwrap();
    }
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {base}\nCOPY www /www\n")).unwrap();
    let label = format!("pipe.project={project}");
    let tagged = format!("{image}:{tag}");
    docker(&["build", "--quiet", "--label", &label, "-t", &tagged, &ctx.display().to_string()]);
}

/// A receiving host: an nginx pipe configures and a `pipe serve` whose hook `web` deploys the
/// compose project behind it.
struct Host {
    // Field order is drop order: the server, nginx, then containers, then images.
    server: Serve,
    _nginx: NginxGuard,
    _compose: Vec<ComposeProject>,
    _images: ProjectImages,
    env: TestEnv,
    docker: Docker,
    project: String,
    image: String,
    front: u16,
}

fn host(docker: Docker, extra_config: &str, compose: Vec<ComposeProject>) -> Option<Host> {
    if !nginx::available() {
        return None;
    }
    let mut env = TestEnv::new();
    let project = unique_name("sr").replace("pipe-test-", "");
    let image = format!("pipe-test/{project}");
    let file = compose_file(&env.path().join("deploy"), "web");
    let ngx = env.path().join("nginx");
    std::fs::create_dir_all(&ngx).unwrap();
    let front = free_port();
    let d = ngx.display();
    std::fs::write(ngx.join("nginx.conf"), nginx::conf(&ngx, &format!("{d}/pipe.conf"))).unwrap();
    env.env("HOOK_TOKEN", TOKEN).env("APP_SECRET", APP_SECRET);
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[ingress]\ndomain = \"hook.test\"\nlisten = \"127.0.0.1:{front}\"\n\
         upstreams = \"{d}/upstreams\"\nnginx = [\"{NGINX}\", \"-c\", \"{d}/nginx.conf\", \"-e\", \"{d}/error.log\"]\n\n\
         [serve.hooks.web]\ntoken_env = \"HOOK_TOKEN\"\nimages = [\"{image}\"]\n\
         compose = {{ file = \"{file}\", project = \"{project}\", services = [\"web\"] }}\n\
         ingress = {{ web = 8080 }}\nhealth = {{ url = \"http://{HOST}/cgi-bin/health\", timeout = \"6s\" }}\n\
         drain = \"1s\"\nrelease = {{ argv = [\"test\", \"-f\", \"/www/migrate-ok\"] }}\n\
         env = {{ APP_SECRET = {{ env = \"APP_SECRET\" }} }}\ntimeout = \"2m\"\n{extra_config}",
        ws = env.path().join("work").display(),
        file = file.display(),
    ));
    let generated = env.pipe(&["generate", "nginx"]);
    generated.code(0).stdout_has("web pipe-web;");
    std::fs::write(ngx.join("pipe.conf"), &generated.stdout).unwrap();
    // nginx takes its port before anything else can (pipe would start it at the first switch).
    let conf = ngx.join("nginx.conf");
    let started = std::process::Command::new(NGINX).arg("-c").arg(&conf).arg("-e").arg(ngx.join("error.log")).status();
    assert!(started.unwrap().success(), "nginx did not start");
    let mut guards = compose;
    guards.push(ComposeProject { name: project.clone() });
    let server = Serve::start(&env);
    Some(Host {
        server,
        _nginx: NginxGuard(ngx.join("nginx.pid")),
        _compose: guards,
        _images: ProjectImages { project: project.clone() },
        env,
        docker,
        project,
        image,
        front,
    })
}

impl Host {
    fn release(&self, tag: &str, body: &str, kind: Kind) {
        let docker = |args: &[&str]| self.docker.ok(args);
        build_release(&docker, &self.docker.base_image, self.env.path(), [&self.project, &self.image, tag, body], kind);
    }

    /// POSTs `tag` to the hook and waits for the run's end: its status document.
    fn deploy(&self, tag: &str) -> serde_json::Value {
        let body = serde_json::json!({"image": self.image, "tag": tag, "commit": "0123abcd"}).to_string();
        let (status, doc) = self.server.json("POST", "/hooks/web?wait=50", &[BEARER], body.as_bytes());
        assert!(status == 200 || status == 202, "{status} {doc}");
        let id = doc["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut doc = doc;
        while matches!(doc["status"].as_str(), Some("queued" | "running")) {
            assert!(Instant::now() < deadline, "run {id} never ended: {doc}");
            std::thread::sleep(Duration::from_millis(200));
            doc = self.server.json("GET", &format!("/hooks/web/runs/{id}"), &[BEARER], b"").1;
        }
        doc
    }

    fn get(&self) -> Result<String, String> {
        crate::support::load::request("127.0.0.1", self.front, HOST, "/")
    }

    /// Waits until the ingress answers 200 (nginx's first reload takes a moment).
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

    fn containers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        self.docker
            .ok(&["ps", "--all", "--format", "{{.Names}}", "--filter", &label])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn succeeded(doc: &serde_json::Value) {
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["rollout"], "zero-downtime", "{doc}");
    for moment in ["healthy", "traffic"] {
        assert!(doc["timeline"][moment].is_string(), "timeline lacks `{moment}`: {doc}");
    }
}

#[test]
fn a_hook_behind_the_ingress_deploys_release_after_release_under_load_with_no_failed_request() {
    let Some(docker) = Docker::require() else { return };
    let Some(h) = host(docker, "", Vec::new()) else { return };
    h.release("r0", "release 0", Kind::Good);
    succeeded(&h.deploy("r0"));
    assert_eq!(h.answering(), "release 0");

    let load = Load::start("127.0.0.1", h.front, HOST);
    let mut allowed = vec!["release 0".to_string()];
    let mut marks = Vec::new();
    for n in 1..=3 {
        let (tag, body) = (format!("r{n}"), format!("release {n}"));
        h.release(&tag, &body, Kind::Good);
        marks.push((format!("deploy {n}"), load.elapsed()));
        let doc = h.deploy(&tag);
        marks.push((format!("deployed {n}: {}", doc["timeline"]), load.elapsed()));
        succeeded(&doc);
        assert!(doc.get("rollback").is_none(), "a new release is no rollback: {doc}");
        allowed.push(body.clone());
        assert_eq!(h.get().as_deref(), Ok(body.as_str()));
    }
    eprintln!("marks: {marks:?}\nseen: {:?}", load.first_seen());
    let ingress: Vec<String> = h.server.log().lines().filter(|l| l.contains("ingress")).map(str::to_string).collect();
    eprintln!("the receiver on the ingress: {ingress:?}");
    let tally = load.finish();
    only(&tally, &allowed.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(h.containers().len(), 1, "the old releases were removed: {:?}", h.containers());
    let history = std::fs::read_to_string(h.env.state_path().with_file_name("serve").join("web/deploys.toml")).unwrap();
    assert_eq!(history.matches("[deploy.timeline]").count(), 4, "{history}");
}

#[test]
fn a_failing_release_never_takes_traffic_its_document_shows_the_health_answer_and_a_rollback_by_hand_is_marked() {
    let Some(docker) = Docker::require() else { return };
    let Some(h) = host(docker, "", Vec::new()) else { return };
    h.release("good1", "good 1", Kind::Good);
    h.release("good2", "good 2", Kind::Good);
    h.release("sick", "sick", Kind::Unhealthy);
    h.release("nomigrate", "no migration", Kind::FailingRelease);
    succeeded(&h.deploy("good1"));
    assert_eq!(h.answering(), "good 1");
    let load = Load::start("127.0.0.1", h.front, HOST);
    succeeded(&h.deploy("good2"));

    let doc = h.deploy("sick");
    assert_eq!(doc["status"], "failed", "{doc}");
    let health = &doc["health"];
    assert_eq!(health["status"], 503, "the health check's last answer: {doc}");
    let excerpt = health["body"].as_str().unwrap_or_default();
    assert!(excerpt.starts_with("db down: cannot log in with ***"), "{doc}");
    assert!(!doc.to_string().contains(APP_SECRET) && !doc.to_string().contains(TOKEN), "a secret in {doc}");
    assert!(doc["error"].as_str().unwrap().contains("the old release kept serving"), "{doc}");
    assert!(doc.get("timeline").is_none(), "a release that never switched has no timeline: {doc}");
    assert_eq!(h.get().as_deref(), Ok("good 2"));

    let doc = h.deploy("nomigrate");
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("the release command failed"), "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("test -f /www/migrate-ok"), "{doc}");
    assert_eq!(h.get().as_deref(), Ok("good 2"));

    // A rollback by hand: the tag of an earlier successful deploy, through the same path.
    let doc = h.deploy("good1");
    succeeded(&doc);
    assert_eq!(doc["rollback"], true, "{doc}");
    assert_eq!(h.get().as_deref(), Ok("good 1"));

    let tally = load.finish();
    only(&tally, &["good 1", "good 2"]);
    assert_eq!(h.containers().len(), 1, "{:?}", h.containers());
    let log = h.server.log();
    assert!(!log.contains(APP_SECRET) && !log.contains(TOKEN), "a secret reached the server's log");
}

#[test]
fn a_pipe_run_compose_target_and_a_serve_hook_record_the_same_timeline() {
    let Some(docker) = Docker::require() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ci = unique_name("ci").replace("pipe-test-", "");
    let file = compose_file(&dir.path().join("ci"), "app");
    let repo = WorkRepo::new(dir.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "from ci\n");
    repo.write("www/cgi-bin/health", "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n");
    std::process::Command::new("chmod").arg("755").arg(repo.work.join("www/cgi-bin/health")).status().unwrap();
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{ci}\"\ntest = \"true\"\n"));
    repo.commit_to("dev", "ci");
    let project = format!(
        "[project.{ci}]\nrepo = \"{url}\"\nbranches = [\"dev\"]\n\n[[project.{ci}.deploy]]\nname = \"devhost\"\n\
         branches = [\"dev\"]\ncompose = {{ file = \"{file}\", project = \"{ci}\", services = [\"app\"] }}\n\
         ingress = {{ app = 8080 }}\nhealth = {{ url = \"http://app.hook.test/cgi-bin/health\" }}\ndrain = \"1s\"\n\
         env = {{ APP_SECRET = {{ env = \"APP_SECRET\" }} }}\n",
        url = repo.url(),
        file = file.display(),
    );
    let guards = vec![ComposeProject { name: ci.clone() }];
    let _ci_images = ProjectImages { project: ci.clone() };
    let Some(h) = host(docker, &format!("\n{project}"), guards) else { return };
    let run = h.env.pipe(&["run", "--json"]);
    run.code(0);
    let ci_timeline = run.json()["results"][0]["timeline"].clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    while crate::support::load::request("127.0.0.1", h.front, "app.hook.test", "/").as_deref() != Ok("from ci") {
        assert!(Instant::now() < deadline, "the CI target never answered through the ingress");
        std::thread::sleep(Duration::from_millis(100));
    }

    h.release("r1", "release 1", Kind::Good);
    let doc = h.deploy("r1");
    succeeded(&doc);
    let keys = |t: &serde_json::Value| t.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    // The receiving host knows the moments it lived through; the CI host also the commit's.
    for key in keys(&doc["timeline"]) {
        assert!(ci_timeline.get(&key).is_some(), "`{key}` is in the hook's timeline only: {doc} / {ci_timeline}");
    }
    assert_eq!(keys(&doc["timeline"]), ["healthy", "traffic"], "{doc}");
    // One rollout: the same steps in both logs.
    let ci_log = h.env.pipe(&["logs", &ci, "dev"]).stdout;
    let id = doc["id"].as_str().unwrap();
    let hook_log =
        std::fs::read_to_string(h.env.state_path().with_file_name("serve").join(format!("web/{id}.log"))).unwrap();
    for step in ["--no-recreate --scale", "-t"] {
        assert!(ci_log.contains(step) && hook_log.contains(step), "`{step}` missing:\n{ci_log}\n---\n{hook_log}");
    }
    let shape = |path: std::path::PathBuf| {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let record = doc["deploy"].as_array().unwrap().last().unwrap().clone();
        let mut keys: Vec<String> = record.as_table().unwrap().keys().cloned().collect();
        keys.retain(|k| k != "ref");
        keys
    };
    let state = h.env.state_path();
    assert_eq!(
        shape(state.with_file_name("deploys").join(&ci).join("devhost.toml")),
        shape(state.with_file_name("serve").join("web/deploys.toml")),
        "one history record shape"
    );
}

#[test]
fn check_names_a_hook_without_an_ingress_as_an_outage() {
    let env = TestEnv::new();
    env.config(
        "[serve.hooks.app]\ntoken_env = \"T\"\nimages = [\"example/app\"]\ncompose = { file = \"/srv/app/docker-compose.yml\" }\n",
    );
    env.pipe(&["check"])
        .code(0)
        .stderr_has("hook `app`: every deploy is an outage")
        .stderr_has("hint: route its services through this host's ingress: `ingress = { SERVICE = PORT }` on the hook");
    env.config(
        "[ingress]\nupstreams = \"/etc/nginx/pipe\"\n\n[serve.hooks.app]\ntoken_env = \"T\"\nimages = [\"example/app\"]\n\
         compose = { file = \"/srv/app/docker-compose.yml\" }\ningress = { web = 8080 }\nrelease = { argv = [\"bin/migrate\"] }\n",
    );
    let run = env.pipe(&["check"]);
    run.code(0);
    assert!(!run.stderr.contains("outage"), "{}", run.stderr);
    env.config(
        "[serve.hooks.app]\ntoken_env = \"T\"\ncommand = { argv = [\"true\"] }\nrelease = { argv = [\"bin/migrate\"] }\n",
    );
    env.pipe(&["check"]).code(2).stderr_has("`release` runs before an ingress switch");
}

#[test]
fn a_hook_deployed_in_place_rolls_back_to_its_previous_release_when_the_health_check_fails() {
    let Some(docker) = Docker::require() else { return };
    let mut env = TestEnv::new();
    let project = unique_name("ip").replace("pipe-test-", "");
    let image = format!("pipe-test/{project}");
    let _compose = ComposeProject { name: project.clone() };
    let _images = ProjectImages { project: project.clone() };
    let port = free_port();
    let dir = env.path().join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            "version: \"2.4\"\nservices:\n  web:\n    image: ${{PIPE_IMAGE}}:${{PIPE_TAG}}\n    init: true\n    \
             ports: [\"127.0.0.1:{port}:8080\"]\n    environment:\n      APP_SECRET: ${{APP_SECRET}}\n    \
             command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        ),
    )
    .unwrap();
    env.env("HOOK_TOKEN", TOKEN).env("APP_SECRET", APP_SECRET);
    env.config(&format!(
        "[serve.hooks.web]\ntoken_env = \"HOOK_TOKEN\"\nimages = [\"{image}\"]\n\
         compose = {{ file = \"{file}\", project = \"{project}\", services = [\"web\"] }}\n\
         health = {{ url = \"http://127.0.0.1:{port}/cgi-bin/health\", timeout = \"5s\" }}\n\
         env = {{ APP_SECRET = {{ env = \"APP_SECRET\" }} }}\n",
        file = file.display(),
    ));
    env.pipe(&["check"]).code(0).stderr_has("hook `web`: every deploy is an outage");
    let run = |args: &[&str]| docker.ok(args);
    build_release(&run, &docker.base_image, env.path(), [&project, &image, "r1", "release 1"], Kind::Good);
    build_release(&run, &docker.base_image, env.path(), [&project, &image, "r2", "release 2"], Kind::Unhealthy);
    let server = Serve::start(&env);
    let post = |tag: &str| {
        let body = serde_json::json!({"image": image, "tag": tag}).to_string();
        let (status, doc) = server.json("POST", "/hooks/web?wait=55", &[BEARER], body.as_bytes());
        assert_eq!(status, 200, "{doc}");
        doc
    };
    let doc = post("r1");
    assert_eq!((doc["status"].as_str(), doc["rollout"].as_str()), (Some("succeeded"), Some("in-place")), "{doc}");
    let doc = post("r2");
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["rolled_back_to"], format!("{image}:r1"), "{doc}");
    assert_eq!(doc["health"]["status"], 503, "{doc}");
    assert!(doc["health"]["body"].as_str().unwrap().contains("cannot log in with ***"), "{doc}");
    assert!(!doc.to_string().contains(APP_SECRET), "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("rolled back to"), "{doc}");
    let answer = crate::support::load::request("127.0.0.1", port, "x", "/");
    assert_eq!(answer.as_deref(), Ok("release 1"), "the previous release runs again");
    let history = std::fs::read_to_string(env.state_path().with_file_name("serve").join("web/deploys.toml")).unwrap();
    assert!(history.contains("result = \"rolled_back\"") && history.contains("rollback = true"), "{history}");
}
