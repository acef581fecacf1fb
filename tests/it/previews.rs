//! Pull-request previews through the real nginx ingress, from real git refs on a real engine:
//! each open pull request answers at its own name with its own content, a push redeploys only
//! its preview, a closed one leaves nothing behind (containers, network, volumes, images, the
//! name), idle ones expire, `max_previews` makes room oldest-idle first, and an untrusted pull
//! request's preview gets no secret, no host path and no route to the main deployment.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::http::HttpSink;
use crate::support::nginx::{self, NGINX, NginxGuard};
use crate::support::serve::Serve;
use crate::support::{TestEnv, WorkRepo, free_port, git};

pub(crate) const DOMAIN: &str = "pv.test";

/// Removes every container, network and volume of the project and of its previews on drop.
pub(crate) struct Leftovers(pub(crate) String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for (kind, remove) in
            [("ps --all", "rm --force --volumes"), ("network ls", "network rm"), ("volume ls", "volume rm")]
        {
            let ids = matching(kind, &self.0);
            if !ids.is_empty() {
                let _ = Command::new("docker").args(remove.split(' ')).args(&ids).output();
            }
        }
    }
}

/// Ids of containers (`ps --all`), networks or volumes whose compose project is `project` or
/// one of its previews (`project-pr-N`).
fn matching(kind: &str, project: &str) -> Vec<String> {
    // Volumes have a name where the others have an id.
    let id = if kind.starts_with("volume") { "{{.Name}}" } else { "{{.ID}}" };
    let out = Command::new("docker")
        .args(kind.split(' '))
        .args(["--format", &format!("{id} {{{{.Label \"com.docker.compose.project\"}}}}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, p)| *p == project || p.starts_with(&format!("{project}-pr-")))
        .map(|(id, _)| id.to_string())
        .collect()
}

/// Ids of one compose project's containers, networks or volumes.
pub(crate) fn of_project(kind: &str, project: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(kind.split(' '))
        .args(["--quiet", "--filter", &format!("label=com.docker.compose.project={project}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

pub(crate) struct Stack {
    // Field order is drop order: nginx, then containers, networks and volumes, then images.
    _nginx: NginxGuard,
    _leftovers: Leftovers,
    _images: ProjectImages,
    pub(crate) env: TestEnv,
    pub(crate) repo: WorkRepo,
    pub(crate) project: String,
    pub(crate) front: u16,
    pub(crate) host_dir: std::path::PathBuf,
}

/// The app: busybox httpd on 8080 serving `www/`, CGI scripts included; its compose file gives
/// it a secret from pipe's environment, a named volume and a host directory.
pub(crate) fn stack(docker: &Docker, target_extra: &str, trust: bool) -> Option<Stack> {
    stack_with(docker, target_extra, trust, "", "")
}

/// [`stack`] with `sections` added to the pipeline file and `project_extra` to the project.
pub(crate) fn stack_with(
    docker: &Docker,
    target_extra: &str,
    trust: bool,
    sections: &str,
    project_extra: &str,
) -> Option<Stack> {
    if !nginx::available() {
        return None;
    }
    let mut env = TestEnv::new();
    env.env("APP_SECRET", "s3cr3t-of-main");
    let project = unique_name("pv").replace("pipe-test-", "");
    let repo = WorkRepo::new(env.path(), "app");
    let host_dir = env.path().join("host-only");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("key"), "host-file-content\n").unwrap();
    let dir = env.path().join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  web:\n    image: ${{PIPE_IMAGE}}:${{PIPE_TAG}}\n    init: true\n    \
             command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    environment:\n      \
             APP_SECRET: ${{APP_SECRET}}\n    volumes:\n      - data:/data\n      - {}:/host:ro\n\
             volumes:\n  data: {{}}\n",
            host_dir.display()
        ),
    )
    .unwrap();
    let ngx = env.path().join("nginx");
    std::fs::create_dir_all(&ngx).unwrap();
    let front = free_port();
    let d = ngx.display();
    std::fs::write(ngx.join("nginx.conf"), nginx::conf(&ngx, &format!("{d}/pipe.conf"))).unwrap();
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n{sections}\n\n[ingress]\ndomain = \"{DOMAIN}\"\nlisten = \"127.0.0.1:{front}\"\n\
         upstreams = \"{d}/upstreams\"\nnginx = [\"{NGINX}\", \"-c\", \"{d}/nginx.conf\", \"-e\", \"{d}/error.log\"]\n\n\
         [project.{project}]\nrepo = \"{url}\"\nbranches = [\"main\"]\npull_requests = true\n\
         trust_pull_requests = {trust}\nlimits = {{ memory = \"256m\", pids = 128, cpus = 0.5 }}\n{project_extra}\n\n\
         [[project.{project}.deploy]]\nname = \"devhost\"\nbranches = [\"main\"]\n\
         compose = {{ file = \"{file}\", project = \"{project}\", services = [\"web\"] }}\n\
         env = {{ APP_SECRET = {{ env = \"APP_SECRET\" }} }}\n\
         ingress = {{ web = 8080 }}\nhealth = {{ url = \"http://web.{DOMAIN}/index.html\", timeout = \"20s\" }}\n\
         drain = \"1s\"\npreviews = true\n{target_extra}\n",
        ws = env.path().join("work").display(),
        url = repo.url(),
        file = dir.join("docker-compose.yml").display(),
    ));
    let generated = env.pipe(&["generate", "nginx"]);
    generated.code(0).stdout_has("include ");
    std::fs::write(ngx.join("pipe.conf"), &generated.stdout).unwrap();
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{project}\"\ntest = \"true\"\n"));
    Some(Stack {
        _nginx: NginxGuard(ngx.join("nginx.pid")),
        _leftovers: Leftovers(project.clone()),
        _images: ProjectImages { project: project.clone() },
        env,
        repo,
        project,
        front,
        host_dir,
    })
}

impl Stack {
    /// Commits a release answering `body` on `/index.html` to `refname` (a pull request's head
    /// is also made open: its merge ref is advertised).
    pub(crate) fn release(&self, refname: &str, body: &str) -> String {
        self.repo.write("www/index.html", &format!("{body}\n"));
        git(&self.repo.work, &["add", "--all"]);
        git(&self.repo.work, &["commit", "--quiet", "--allow-empty", "-m", body]);
        git(&self.repo.work, &["push", "--quiet", "--force", "origin", &format!("HEAD:{refname}")]);
        if let Some(head) = refname.strip_suffix("/head") {
            git(&self.repo.work, &["push", "--quiet", "--force", "origin", &format!("HEAD:{head}/merge")]);
        }
        git(&self.repo.work, &["rev-parse", "HEAD"])
    }

    /// Closes pull request `n`: its merge ref goes, as when GitHub closes or merges it.
    pub(crate) fn close(&self, n: u32) {
        git(&self.repo.work, &["push", "--quiet", "origin", &format!(":refs/pull/{n}/merge")]);
    }

    pub(crate) fn host(&self, n: u32) -> String {
        format!("pr-{n}.{}.{DOMAIN}", self.project)
    }

    pub(crate) fn get(&self, host: &str, path: &str) -> Result<String, String> {
        nginx::request(self.front, host, path)
    }

    /// The body of `path` on `host` once it answers 200 (a name that just appeared can still
    /// meet an nginx worker of the previous configuration for a moment after the reload).
    pub(crate) fn fetch(&self, host: &str, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.get(host, path) {
                Ok(body) => return body,
                Err(e) => assert!(Instant::now() < deadline, "{host}{path} never answered: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the ingress answers 404 for `host` (nginx forgot the name).
    pub(crate) fn forgotten(&self, host: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.get(host, "/index.html");
            if got.as_ref().is_err_and(|e| e.starts_with("HTTP 404")) {
                return;
            }
            assert!(Instant::now() < deadline, "{host} should be unknown to the ingress, got {got:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `host` answers `want` on `/index.html`.
    pub(crate) fn answers(&self, host: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.get(host, "/index.html");
            if got.as_deref() == Ok(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{host} should answer {want:?}, got {got:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn run(&self) -> crate::support::Run {
        let run = self.env.pipe(&["run"]);
        assert_eq!(run.code, 0, "pipe run failed:\n{}\n{}", run.stdout, run.stderr);
        run
    }

    pub(crate) fn preview(&self, n: u32) -> String {
        format!("{}-pr-{n}", self.project)
    }

    pub(crate) fn upstream_files(&self) -> Vec<String> {
        let dir = self.env.path().join("nginx/upstreams");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Local tags of the project's images.
    pub(crate) fn image_tags(&self) -> Vec<String> {
        let out = Command::new("docker")
            // The project's image and its untrusted builds' (`pipe-untrusted/PROJECT`) alike.
            .args(["image", "ls", "--format", "{{.Tag}}", "--filter", &format!("label=pipe.project={}", self.project)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    /// The id of the preview's running web container.
    pub(crate) fn container(&self, project: &str) -> String {
        let ids = of_project("ps", project);
        assert_eq!(ids.len(), 1, "one container of `{project}` should run: {ids:?}");
        ids[0].clone()
    }
}

#[test]
fn each_open_pull_request_answers_at_its_own_name_and_a_closed_one_leaves_nothing() {
    let Some(docker) = Docker::require() else { return };
    let sink = HttpSink::start(200);
    let sections = "[notify.webhook]\nurl_env = \"NOTIFY_URL\"\non = [\"deploy\"]\n\n[serve.page]\nenabled = true\n";
    let Some(mut s) = stack_with(&docker, "", false, sections, "") else { return };
    s.env.env("NOTIFY_URL", &format!("http://127.0.0.1:{}/notify", sink.port));
    s.release("refs/heads/main", "main v1");
    let pr1 = s.release("refs/pull/1/head", "preview one");
    git(&s.repo.work, &["reset", "--quiet", "--hard", "HEAD~1"]);
    let pr2 = s.release("refs/pull/2/head", "preview two");
    s.run().stderr_has(&format!("preview of pull/1 answers at http://{}:{}/", s.host(1), s.front));
    s.answers(&format!("web.{DOMAIN}"), "main v1");
    s.answers(&s.host(1), "preview one");
    s.answers(&s.host(2), "preview two");
    assert_eq!(
        s.upstream_files(),
        [format!("{}-web.conf", s.preview(1)), format!("{}-web.conf", s.preview(2)), "web.conf".into()]
    );
    // Each preview has its own network and its own volume.
    for n in [1, 2] {
        assert_eq!(of_project("network ls", &s.preview(n)).len(), 1, "network of pr-{n}");
        let volumes = of_project("volume ls", &s.preview(n));
        assert_eq!(volumes.len(), 1, "volume of pr-{n}: {volumes:?}");
    }
    // Where the link shows: `pipe status`.
    let status = s.env.pipe(&["status", "--json"]);
    let json = status.json();
    let url_of = |refname: &str| {
        json["refs"].as_array().unwrap().iter().find(|r| r["ref"] == refname).map(|r| r["preview_url"].clone())
    };
    assert_eq!(url_of("refs/pull/1/head"), Some(serde_json::json!(format!("http://{}:{}/", s.host(1), s.front))));
    assert_eq!(url_of("refs/heads/main"), Some(serde_json::Value::Null));
    s.env.pipe(&["status"]).code(0).stdout_has("PREVIEW").stdout_has(&format!("http://{}:{}/", s.host(2), s.front));
    // The deploy notification and the status page.
    let url1 = format!("http://{}:{}/", s.host(1), s.front);
    let notices: Vec<serde_json::Value> = sink.requests.lock().unwrap().iter().map(|r| r.json()).collect();
    let notice = notices.iter().find(|n| n["ref"] == "refs/pull/1/head").expect("a deploy notice for pull/1");
    assert_eq!((&notice["event"], &notice["preview_url"]), (&serde_json::json!("deploy"), &serde_json::json!(url1)));
    let main_notice = notices.iter().find(|n| n["ref"] == "refs/heads/main").expect("a deploy notice for main");
    assert!(main_notice.get("preview_url").is_none(), "{main_notice}");
    let page = Serve::start(&s.env);
    let (code, _, html) = page.get("/status", &[]);
    assert_eq!(code, 200);
    assert!(html.contains(&format!("<a class=\"preview\" href=\"{url1}\">preview</a>")), "{html}");
    let (_, _, json) = page.get("/status.json", &[]);
    assert!(json.contains(&format!("\"preview_url\":\"{url1}\"")), "{json}");
    drop(page);

    // A new commit on pull request 1 redeploys only its preview.
    let two_before = s.container(&s.preview(2));
    let main_before = s.container(&s.project);
    git(&s.repo.work, &["checkout", "--quiet", &pr1]);
    let pr1b = s.release("refs/pull/1/head", "preview one, second commit");
    // Requests keep going to the preview while it is redeployed: none fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, port, host) = (stop.clone(), s.front, s.host(1));
        std::thread::spawn(move || {
            let mut answers = std::collections::BTreeMap::<String, usize>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = nginx::request(port, &host, "/index.html").unwrap_or_else(|e| format!("FAILED {e}"));
                *answers.entry(key).or_default() += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    let run = s.env.pipe(&["run", "--json"]);
    s.answers(&s.host(1), "preview one, second commit");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = load.join().unwrap();
    assert!(answers.keys().all(|k| k == "preview one" || k == "preview one, second commit"), "{answers:?}");
    assert!(answers.get("preview one").is_some_and(|n| *n > 5), "the load ran during the deploy: {answers:?}");
    run.code(0).stderr_has("deploying the preview of pull/1");
    assert!(!run.stderr.contains("deploying the preview of pull/2"), "{}", run.stderr);
    let results = run.json()["results"].clone();
    assert_eq!(results.as_array().map(Vec::len), Some(1), "{results}");
    assert_eq!(results[0]["ref"], "refs/pull/1/head");
    assert_eq!(results[0]["preview_url"], url1);
    s.answers(&s.host(1), "preview one, second commit");
    s.answers(&s.host(2), "preview two");
    assert_eq!(s.container(&s.preview(2)), two_before, "pull request 2's preview was not touched");
    assert_eq!(s.container(&s.project), main_before, "the main deployment was not touched");
    assert!(s.image_tags().contains(&pr_tag(&pr1b)));

    // Pull request 2 closes: everything of its preview goes, pull request 1's stays.
    assert!(s.image_tags().contains(&pr_tag(&pr2)), "{:?}", s.image_tags());
    s.close(2);
    s.run().stderr_has("removing the preview of pull/2").stderr_has("closed or merged");
    for kind in ["ps --all", "network ls", "volume ls"] {
        assert_eq!(of_project(kind, &s.preview(2)), Vec::<String>::new(), "{kind} of pr-2 left behind");
    }
    let tags = s.image_tags();
    assert!(!tags.contains(&pr_tag(&pr2)) && !tags.contains(&"pr-2".to_string()), "{tags:?}");
    assert!(!s.upstream_files().contains(&format!("{}-web.conf", s.preview(2))));
    s.forgotten(&s.host(2));
    // A push to the closed pull request is built and tested, and brings no preview back.
    git(&s.repo.work, &["checkout", "--quiet", &pr2]);
    s.repo.write("www/index.html", "after closing\n");
    git(&s.repo.work, &["commit", "--quiet", "--all", "-m", "after closing"]);
    git(&s.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/2/head"]);
    let after = git(&s.repo.work, &["rev-parse", "HEAD"]);
    let run = s.run();
    assert!(s.image_tags().contains(&pr_tag(&after)), "the push was built: {:?}", s.image_tags());
    assert!(!run.stderr.contains("preview of pull/2"), "{}", run.stderr);
    assert_eq!(of_project("ps --all", &s.preview(2)), Vec::<String>::new());
    s.forgotten(&s.host(2));
    s.answers(&s.host(1), "preview one, second commit");
    s.answers(&format!("web.{DOMAIN}"), "main v1");

    // Pull request 1 closes; `pipe prune` (after the poll that saw it) removes its preview.
    s.close(1);
    s.env.pipe(&["poll"]).code(0);
    s.env.pipe(&["prune", "--json"]).code(0).stdout_has(&format!("\"{}\"", s.preview(1)));
    for kind in ["ps --all", "network ls", "volume ls"] {
        assert_eq!(of_project(kind, &s.preview(1)), Vec::<String>::new(), "{kind} of pr-1 left behind");
    }
    assert_eq!(s.upstream_files(), ["web.conf"]);
    assert!(!s.env.path().join("state/previews").join(format!("{}.toml", s.project)).exists());
    s.answers(&format!("web.{DOMAIN}"), "main v1");
}

#[test]
fn idle_previews_expire_and_the_oldest_idle_one_makes_room() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "max_previews = 2\npreview_ttl = \"30s\"", false) else { return };
    s.release("refs/heads/main", "main v1");
    s.release("refs/pull/1/head", "one");
    s.run();
    s.answers(&s.host(1), "one");
    // A second apart, so pull request 1 is the oldest idle one.
    std::thread::sleep(Duration::from_millis(1100));
    s.release("refs/pull/2/head", "two");
    s.run();
    std::thread::sleep(Duration::from_millis(1100));
    s.release("refs/pull/3/head", "three");
    s.run()
        .stderr_has("removing the preview of pull/1")
        .stderr_has("the oldest idle one")
        .stderr_has("`max_previews` is 2");
    s.answers(&s.host(2), "two");
    s.answers(&s.host(3), "three");
    assert_eq!(of_project("ps --all", &s.preview(1)), Vec::<String>::new());
    s.forgotten(&s.host(1));

    // A tick with nothing new leaves the previews file as it was (a no-op tick writes nothing).
    let path = s.env.path().join("state/previews").join(format!("{}.toml", s.project));
    let seen = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before = seen(&path);
    s.run();
    assert_eq!(seen(&path), before, "a tick with nothing new rewrote `{}`", path.display());

    // Nothing new for longer than `preview_ttl`: both go at the next tick.
    let text = std::fs::read_to_string(&path).unwrap();
    let updated: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("updated = "))
        .map(|t| t.trim_matches('"').parse::<jiff::Timestamp>().unwrap().as_second())
        .collect();
    let newest = *updated.iter().max().unwrap();
    let wait = newest + 31 - jiff::Timestamp::now().as_second();
    if wait > 0 {
        std::thread::sleep(Duration::from_secs(wait as u64));
    }
    s.run()
        .stderr_has("removing the preview of pull/2")
        .stderr_has("removing the preview of pull/3")
        .stderr_has("`preview_ttl`");
    for n in [2, 3] {
        assert_eq!(of_project("ps --all", &s.preview(n)), Vec::<String>::new(), "pr-{n} left behind");
    }
    assert_eq!(s.upstream_files(), ["web.conf"]);
    s.answers(&format!("web.{DOMAIN}"), "main v1");
}

/// An untrusted preview's named volume is a tmpfs (nothing of it on the host's disk) that
/// holds its data while a container of the preview runs: a new commit's rollout starts the new
/// container beside the old one, so the data carries over; a restart of the container, with
/// none left using the volume, empties it. Its `/tmp` is the container's own.
#[test]
fn an_untrusted_previews_volume_lives_in_memory_while_a_container_of_the_preview_runs() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", false) else { return };
    s.release("refs/heads/main", "main v1");
    s.release("refs/pull/4/head", "preview v1");
    s.run();
    s.answers(&s.host(4), "preview v1");
    let first = s.container(&s.preview(4));
    docker.ok(&["exec", &first, "sh", "-c", "echo kept > /data/note; echo gone > /tmp/note"]);
    let volumes = of_project("volume ls", &s.preview(4));
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let options = docker.ok(&["volume", "inspect", "--format", "{{json .Options}}", &volumes[0]]);
    assert!(options.contains("\"type\":\"tmpfs\"") && options.contains("size=128m"), "{options}");

    s.release("refs/pull/4/head", "preview v2");
    s.run();
    s.answers(&s.host(4), "preview v2");
    let second = s.container(&s.preview(4));
    assert_ne!(first, second);
    assert_eq!(docker.ok(&["exec", &second, "cat", "/data/note"]), "kept\n", "the volume's data carried over");
    let tmp = Command::new("docker").args(["exec", &second, "cat", "/tmp/note"]).output().unwrap();
    assert!(!tmp.status.success(), "/tmp is the new container's own");

    docker.ok(&["restart", "--time", "1", &second]);
    let after = Command::new("docker").args(["exec", &second, "cat", "/data/note"]).output().unwrap();
    assert!(!after.status.success(), "a restart with no container using the volume empties it");
}

#[test]
fn an_untrusted_preview_gets_no_secret_no_host_path_and_no_route_to_the_main_deployment() {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let api = ForgeApi::start(&env, "github", None);
    let forge = format!(
        "[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"\ntoken_env = \"FORGE_TOKEN\"",
        api.port
    );
    let Some(mut s) = stack_with(&docker, "", false, &forge, "forge = \"origin\"\nforge_repo = \"acme/app\"") else {
        return;
    };
    s.env.env("FORGE_TOKEN", TOKEN);
    // A service of the host's, listening on every address, with a canary only it knows.
    let canary = format!("host-canary-{}", std::process::id());
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (answer, count) = (canary.clone(), reached.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = std::io::Write::write_all(&mut stream, format!("HTTP/1.0 200 OK\r\n\r\n{answer}\n").as_bytes());
        }
    });
    // The target's `.env` beside its compose file, as compose setups keep secrets: for the
    // branches (pipe's environment wins for the main deployment), never for untrusted code.
    std::fs::write(s.env.path().join("deploy/.env"), "APP_SECRET=s3cr3t-from-dotenv\n").unwrap();
    // The main deployment's own CGI shows what the main branch's target is given.
    let cgi = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\n\
               echo \"secret=[$APP_SECRET] host=[$(cat /host/key 2>&1)]\"\n\
               echo \"main=[$(printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $(cat /www/main-ip) 8080 | tail -n 1)]\"\n\
               gw=$(ip route | awk '/default/ {print $3}')\n\
               echo \"hostsvc=[$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $gw $(cat /www/host-port) | tail -n 1)]\"\n";
    s.repo.write("www/cgi-bin/probe", cgi);
    s.repo.write("www/host-port", &format!("{host_port}\n"));
    let probe = s.repo.work.join("www/cgi-bin/probe");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.repo.write("www/main-ip", "127.0.0.1\n");
    s.release("refs/heads/main", "main v1");
    s.run();
    let main_id = s.container(&s.project);
    let main_ip = docker
        .ok(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &main_id])
        .trim()
        .to_string();
    let main = s.fetch(&format!("web.{DOMAIN}"), "/cgi-bin/probe");
    assert!(main.contains("secret=[s3cr3t-of-main]") && main.contains("host=[host-file-content]"), "{main}");
    assert!(main.contains("main=[main v1]"), "the probe itself works: {main}");
    assert!(main.contains(&format!("hostsvc=[{canary}]")), "the main deployment reaches the host: {main}");
    let reached_by_main = reached.load(std::sync::atomic::Ordering::SeqCst);

    // The pull request's code asks for the same things, and for the main deployment's address.
    s.repo.write("www/main-ip", &format!("{main_ip}\n"));
    let commit = s.release("refs/pull/7/head", "untrusted");
    let run = s.run();
    run.stderr_has("a host path is not mounted");
    // The pull request's deploy status links to its preview.
    let url = format!("http://{}:{}/", s.host(7), s.front);
    let statuses: Vec<serde_json::Value> = api
        .requests()
        .into_iter()
        .filter(|r| r["path"] == format!("/repos/acme/app/statuses/{commit}"))
        .map(|r| r["body"].clone())
        .collect();
    let last = statuses.last().unwrap();
    assert_eq!((last["context"].as_str(), last["state"].as_str()), (Some("pipe/deploy/preview"), Some("success")));
    assert_eq!(last["target_url"], url, "{statuses:?}");
    s.answers(&s.host(7), "untrusted");
    let seen = s.fetch(&s.host(7), "/cgi-bin/probe");
    assert!(seen.contains("secret=[]"), "the preview read the main target's secret: {seen}");
    assert!(!seen.contains("dotenv"), "the preview read the target's .env: {seen}");
    let written = s.env.state_path().parent().unwrap().join("previews").join(s.preview(7)).join("compose.json");
    let written = std::fs::read_to_string(written).unwrap();
    assert!(!written.contains("s3cr3t"), "{written}");
    assert!(!seen.contains("host-file-content") && seen.contains("host=[cat: can't open"), "{seen}");
    assert!(!seen.contains("main=[main v1"), "the preview reached the main deployment: {seen}");
    assert!(seen.contains("main=[]"), "{seen}");
    // Nor the host: its bridge is firewalled (a service on the host's 0.0.0.0 is not reached).
    assert!(seen.contains("hostsvc=[]") && !seen.contains(&canary), "the preview reached the host: {seen}");
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), reached_by_main, "no connection from the preview");
    assert!(!seen.contains(&s.host_dir.display().to_string()));

    // And it runs confined, with the project's limits.
    let preview = s.container(&s.preview(7));
    let inspect = docker.ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} \
         {{.HostConfig.NanoCpus}} {{.HostConfig.Privileged}} {{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}",
        &preview,
    ]);
    assert!(inspect.starts_with("[ALL] [no-new-privileges:true] 268435456 128 500000000 false"), "{inspect}");
    assert!(inspect.contains("volume:/data") && !inspect.contains("bind"), "{inspect}");
    // The secret is not in the container's configuration either.
    let envs = docker.ok(&["inspect", "--format", "{{json .Config.Env}}", &preview]);
    assert!(!envs.contains("s3cr3t"), "{envs}");

    // Closing the pull request takes the preview's firewall rules with its network.
    let network = format!("{}_isolated", s.preview(7));
    let bridge = docker.ok(&[
        "network",
        "inspect",
        "--format",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        &network,
    ]);
    let bridge = bridge.trim().to_string();
    assert!(bridge.starts_with("pipe"), "{bridge}");
    let rules = || {
        let listing = Command::new("iptables").args(["-w", "-S"]).output().unwrap();
        String::from_utf8_lossy(&listing.stdout).lines().filter(|l| l.contains(&format!("-i {bridge} "))).count()
    };
    assert!(rules() >= 2, "the preview's bridge is firewalled");
    s.close(7);
    s.run().stderr_has("removing the preview of pull/7");
    assert_eq!(rules(), 0, "no rule of the closed preview's bridge is left");
}

#[test]
fn a_pull_request_the_pipeline_file_trusts_gets_the_targets_paths_but_never_its_secrets() {
    let Some(docker) = Docker::require() else { return };
    let Some(s) = stack(&docker, "", true) else { return };
    s.env.pipe(&["check"]).code(0).stderr_has("its previews run unconfined with the deploy target's host paths");
    let cgi = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"secret=[$APP_SECRET] host=[$(cat /host/key 2>&1)]\"\n";
    s.repo.write("www/cgi-bin/probe", cgi);
    std::fs::set_permissions(s.repo.work.join("www/cgi-bin/probe"), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.release("refs/heads/main", "main v1");
    s.release("refs/pull/8/head", "trusted");
    s.run();
    s.answers(&s.host(8), "trusted");
    let seen = s.fetch(&s.host(8), "/cgi-bin/probe");
    // The target's host paths, but never its secrets: those are the branch deployment's alone.
    assert!(seen.contains("secret=[] host=[host-file-content]"), "{seen}");
    let preview = s.container(&s.preview(8));
    let caps = docker.ok(&["inspect", "--format", "{{.HostConfig.CapDrop}} {{.HostConfig.Memory}}", &preview]);
    assert_eq!(caps.trim(), "[] 0", "not confined: trusted by the pipeline file");

    // The pipeline file stops trusting pull requests: the next commit's preview starts over,
    // confined, on a network of pipe's.
    let config = std::fs::read_to_string(s.env.config_path()).unwrap();
    s.env.config(&config.replace("trust_pull_requests = true", "trust_pull_requests = false"));
    s.release("refs/pull/8/head", "untrusted now");
    s.run().stderr_has("removing the preview of pull/8 to redeploy it untrusted");
    s.answers(&s.host(8), "untrusted now");
    let seen = s.fetch(&s.host(8), "/cgi-bin/probe");
    assert!(seen.contains("secret=[]") && !seen.contains("host-file-content"), "{seen}");
    let preview = s.container(&s.preview(8));
    let caps = docker.ok(&["inspect", "--format", "{{.HostConfig.CapDrop}} {{.HostConfig.Memory}}", &preview]);
    assert_eq!(caps.trim(), "[ALL] 268435456", "confined once untrusted");

    // The project leaves the pipeline file: its preview does not outlive it.
    let config = std::fs::read_to_string(s.env.config_path()).unwrap();
    let kept = &config[..config.find(&format!("[project.{}]", s.project)).unwrap()];
    let other = s.env.path().join("other.git");
    git(s.env.path(), &["init", "--quiet", "--bare", &other.display().to_string()]);
    s.env.config(&format!(
        "{kept}[project.{}-other]\nrepo = \"file://{}\"\nbranches = [\"main\"]\n",
        s.project,
        other.display()
    ));
    s.env.pipe(&["run"]).stderr_has("removing the preview of pull/8").stderr_has("no longer in the pipeline file");
    assert_eq!(of_project("ps --all", &s.preview(8)), Vec::<String>::new(), "the preview was left running");
    s.forgotten(&s.host(8));
}

/// The immutable tag of a pull request's build: never the commit's own, which only a trusted
/// branch's build writes.
fn pr_tag(commit: &str) -> String {
    format!("{}-untrusted", &commit[..12])
}
