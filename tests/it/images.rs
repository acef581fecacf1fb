//! A project of several images (the seed's Project1: an API from `./project1`, a frontend from
//! `./project1-front`): each image built only when a file under its paths changed since the
//! last commit of the ref for which it was built and passed its tests, the others given the
//! commit's tags, with the real engine, real git and a forge stand-in.

mod release;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::docker::{ComposeProject, Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::http::HttpSink;
use crate::support::nginx::{self, NGINX, NginxGuard};
use crate::support::{TestEnv, WorkRepo, free_port, git};

/// The fixture: Project1's two images from two subdirectories, and docs beside them.
pub(crate) struct Project1 {
    pub(crate) env: TestEnv,
    pub(crate) repo: WorkRepo,
    pub(crate) project: String,
    _images: ProjectImages,
}

impl Project1 {
    pub(crate) fn new(docker: &Docker) -> Project1 {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN);
        let project = unique_name("img").replace("pipe-test-", "");
        let repo = WorkRepo::new(env.path(), "project1");
        // No RUN step: what changes an image is the files it copies, never a cached step.
        repo.write("project1/Dockerfile", &format!("FROM {}\nCOPY . /app\n", docker.base_image));
        repo.write("project1/index.html", "api 1\n");
        repo.write("project1/health", "ok\n");
        repo.write("project1/status", "ok\n");
        repo.write("project1-front/Dockerfile", &format!("FROM {}\nCOPY . /www\n", docker.base_image));
        repo.write("project1-front/index.html", "front 1\n");
        repo.write("project1-front/health", "ok\n");
        repo.write("docs/README.md", "docs 1\n");
        Project1 { _images: ProjectImages { project: project.clone() }, env, repo, project }
    }

    /// Writes the pipeline file: `head` before the project, `tail` inside it after its images.
    pub(crate) fn configure(&self, head: &str, branches: &str, tail: &str) {
        self.env.config(&format!(
            r#"[pipe]
workspace = "{ws}"
{head}
[project.{p}]
repo = "{url}"
branches = {branches}
{tail}
[project.{p}.images.api]
image = "pipe-test/{p}-api"
context = "project1"
test = "grep -qx ok /app/status"

[project.{p}.images.front]
image = "pipe-test/{p}-front"
context = "project1-front"
paths = ["project1-front", "shared/**/*.css"]
test = "test -s /www/index.html"
"#,
            ws = self.env.path().join("work").display(),
            p = self.project,
            url = self.repo.url(),
        ));
    }

    pub(crate) fn image(&self, which: &str, tag: &str) -> String {
        format!("pipe-test/{}-{which}:{tag}", self.project)
    }

    /// The image id behind `image`, or `None` when the engine has no such image.
    pub(crate) fn id(&self, docker: &Docker, which: &str, tag: &str) -> Option<String> {
        let out = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &self.image(which, tag)])
            .output()
            .unwrap();
        let _ = docker;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The newest run of `branch` in its history: (commit, per image: (name, built, from)).
    pub(crate) fn last_run(&self, branch: &str) -> (String, Vec<(String, bool, String)>) {
        self.last_run_of(&format!("refs/heads/{branch}"))
    }

    /// [`Project1::last_run`] of any ref (`refs/pull/5/head`).
    pub(crate) fn last_run_of(&self, refname: &str) -> (String, Vec<(String, bool, String)>) {
        let branch = refname;
        let dir = self.env.state_path().parent().unwrap().join("refs").join(&self.project);
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                text.contains(&format!("ref = \"{branch}\""))
            })
            .unwrap_or_else(|| panic!("no history of {branch} in {}", dir.display()));
        let history: toml::Value = toml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let run = history["run"].as_array().unwrap().last().unwrap();
        let images = run["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let s = |k: &str| i[k].as_str().unwrap().to_string();
                (s("name"), i["built"].as_bool().unwrap(), s("from"))
            })
            .collect();
        (run["commit"].as_str().unwrap().to_string(), images)
    }

    pub(crate) fn commit(&self, branch: &str, files: &[(&str, &str)]) -> String {
        for (path, text) in files {
            self.repo.write(path, text);
        }
        self.repo.commit_to(branch, &format!("change {files:?}"))
    }
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..12]
}

/// (image, built by this run, the commit its build comes from) for the API and the frontend.
pub(crate) fn images(api: (bool, &str), front: (bool, &str)) -> Vec<(String, bool, String)> {
    vec![("api".into(), api.0, api.1.into()), ("front".into(), front.0, front.1.into())]
}

#[test]
fn each_commit_builds_exactly_the_images_whose_paths_changed_and_retags_the_others() {
    let Some(docker) = Docker::require() else { return };
    let mut p1 = Project1::new(&docker);
    let api = ForgeApi::start(&p1.env, "github", None);
    let sink = HttpSink::start(200);
    p1.env.env("NOTIFY_URL", &sink.url("/events"));
    let forge = format!(
        "[forge.origin]\nkind = \"github\"\napi = \"http://127.0.0.1:{}\"\ntoken_env = \"FORGE_TOKEN\"\n\
         [notify.webhook]\nurl_env = \"NOTIFY_URL\"\non = [\"success\"]\n",
        api.port
    );
    p1.configure(&forge, "[\"main\", \"feature/*\"]", "forge = \"origin\"\nforge_repo = \"acme/project1\"\n");

    // The first commit: nothing to compare with, so both are built, and say why.
    let c1 = p1.commit("main", &[]);
    p1.env.pipe(&["run"]).code(0).stderr_has("building api: no tested build of it to compare with");
    assert_eq!(p1.last_run("main"), (c1.clone(), images((true, &c1), (true, &c1))));
    let (api1, front1) = (p1.id(&docker, "api", short(&c1)).unwrap(), p1.id(&docker, "front", short(&c1)).unwrap());
    assert_eq!(p1.id(&docker, "api", "latest").as_ref(), Some(&api1));

    // Only the API: the frontend gets the commit's tags on its tested image.
    let c2 = p1.commit("main", &[("project1/index.html", "api 2\n")]);
    p1.env.pipe(&["run"]).code(0).stderr_has("building api: `project1/index.html` changed since");
    assert_eq!(p1.last_run("main"), (c2.clone(), images((true, &c2), (false, &c1))));
    let api2 = p1.id(&docker, "api", short(&c2)).unwrap();
    assert_ne!(api2, api1);
    assert_eq!(p1.id(&docker, "front", short(&c2)), Some(front1.clone()), "retagged, not rebuilt");

    // Only docs: nothing is built, every image is retagged, and the forge hears why.
    let before = api.statuses("context").len();
    let c3 = p1.commit("main", &[("docs/README.md", "docs 2\n")]);
    p1.env.pipe(&["run"]).code(0).stderr_has("changes none of the images' paths: nothing built");
    assert_eq!(p1.last_run("main"), (c3.clone(), images((false, &c2), (false, &c1))));
    assert_eq!(p1.id(&docker, "api", short(&c3)), Some(api2.clone()));
    assert_eq!(p1.id(&docker, "front", short(&c3)), Some(front1.clone()));
    let said: Vec<String> = api.requests()[before..]
        .iter()
        .filter(|r| r["method"] == "POST" && r["body"]["state"] == "success")
        .map(|r| format!("{}: {}", r["body"]["context"].as_str().unwrap(), r["body"]["description"].as_str().unwrap()))
        .collect();
    let since = format!("unchanged since {}, {}", short(&c2), short(&c1));
    assert_eq!(said, [format!("pipe/build: {since}"), format!("pipe/test: {since}")]);
    let status = p1.env.pipe(&["status", "--json"]);
    let row = &status.json()["refs"][0];
    assert_eq!(row["images"][0]["name"], "api");
    assert_eq!(row["images"][0]["built"], false);
    assert_eq!(row["images"][0]["from"], c2);
    p1.env.pipe(&["status"]).code(0).stdout_has(&format!("api={} front={}", short(&c2), short(&c1)));
    let notice = sink.taken().last().unwrap().json();
    assert_eq!(notice["commit"], c3.as_str());
    assert_eq!(notice["images"], serde_json::json!([format!("api {}", short(&c2)), format!("front {}", short(&c1))]));

    // Both, with the API's tests failing: the API is not recorded as tested, the frontend is
    // never tested (the API's failure ends the stage), so neither counts as a tested build.
    let c4 = p1.commit("main", &[("project1/status", "broken\n"), ("project1-front/index.html", "front 4\n")]);
    p1.env.pipe(&["run"]).code(1);
    assert_eq!(p1.last_run("main"), (c4.clone(), images((true, &c4), (true, &c4))));
    // The fix touches only the API, putting it back as it was at c2: the API's files equal
    // those of its tested build at c2, so that image is reused; the frontend's change at c4 is
    // still compared with c1, so the failed commit in between does not hide it.
    let c5 = p1.commit("main", &[("project1/status", "ok\n")]);
    let run = p1.env.pipe(&["run"]);
    run.code(0).stderr_has(&format!("building front: `project1-front/index.html` changed since {}", short(&c1)));
    run.stderr_has(&format!("api unchanged since {}", short(&c2)));
    assert_eq!(p1.last_run("main"), (c5.clone(), images((false, &c2), (true, &c5))));

    // A new branch touching only the frontend: the API comes from main's tested build.
    git(&p1.repo.work, &["checkout", "--quiet", "-b", "feature/x"]);
    let f1 = p1.commit("feature/x", &[("project1-front/index.html", "front x\n")]);
    p1.env.pipe(&["run"]).code(0).stderr_has(&format!("api unchanged since `main`'s {}", short(&c2)));
    assert_eq!(p1.last_run("feature/x"), (f1.clone(), images((false, &c2), (true, &f1))));
    assert_eq!(p1.id(&docker, "api", short(&f1)), Some(api2.clone()), "main's tested API image, retagged");

    // A force push replacing the branch with an API change: the branch's own frontend build is
    // not an ancestor any more, so the frontend is compared with main's (the merge base's line).
    git(&p1.repo.work, &["reset", "--quiet", "--hard", &c5]);
    let f2 = p1.commit("feature/x", &[("project1/index.html", "api x\n")]);
    p1.env.pipe(&["run"]).code(0).stderr_has(&format!("front unchanged since `main`'s {}", short(&c5)));
    assert_eq!(p1.last_run("feature/x"), (f2.clone(), images((true, &f2), (false, &c5))));

    // Its merge into main (a merge commit): compared with main's tested builds, only the API.
    git(&p1.repo.work, &["checkout", "--quiet", "main"]);
    git(&p1.repo.work, &["merge", "--quiet", "--no-ff", "-m", "merge feature/x", "feature/x"]);
    git(&p1.repo.work, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
    let m = git(&p1.repo.work, &["rev-parse", "HEAD"]);
    p1.env.pipe(&["run"]).code(0);
    assert_eq!(p1.last_run("main"), (m.clone(), images((true, &m), (false, &c5))));

    // Only the frontend, with a Dockerfile that does not build: the build fails (the API is
    // retagged first); the fix touches only the Dockerfile, and the frontend's change made in
    // the failed commit is still found, compared with its last tested build at c5.
    let dockerfile = std::fs::read_to_string(p1.repo.work.join("project1-front/Dockerfile")).unwrap();
    let broken = format!("{dockerfile}COPY no-such-file /x\n");
    let c6 = p1.commit("main", &[("project1-front/index.html", "front 6\n"), ("project1-front/Dockerfile", &broken)]);
    p1.env.pipe(&["run"]).code(1).stderr_has("image `front`");
    assert_eq!(p1.last_run("main"), (c6.clone(), images((false, &m), (true, &c6))));
    assert_eq!(p1.id(&docker, "front", short(&c6)), None, "no image for the failed build");
    let c7 = p1.commit("main", &[("project1-front/Dockerfile", &dockerfile)]);
    let run = p1.env.pipe(&["run"]);
    run.code(0).stderr_has(&format!("building front: `project1-front/index.html` changed since {}", short(&c5)));
    assert_eq!(p1.last_run("main"), (c7.clone(), images((false, &m), (true, &c7))));
}

/// GETs through the ingress to both routed services, alternating, until stopped: each answer
/// tallied as `host: body`, a failure as `host: FAILED …`.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<BTreeMap<String, usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, hosts: [&'static str; 2]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, t) = (stop.clone(), tally.clone());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(600);
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let host = hosts[n % 2];
                n += 1;
                let key = match nginx::request(port, host, "/") {
                    Ok(body) => format!("{host}: {body}"),
                    Err(e) => format!("{host}: FAILED {e}"),
                };
                *t.lock().unwrap().entry(key).or_default() += 1;
                std::thread::sleep(Duration::from_millis(8));
            }
        });
        Load { stop, tally, thread: Some(thread) }
    }

    fn finish(mut self) -> BTreeMap<String, usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let tally = self.tally.lock().unwrap().clone();
        eprintln!("load: {tally:?}");
        tally
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const FRONT: &str = "front.p1.test";
const API: &str = "api.p1.test";

#[test]
fn a_release_of_several_images_switches_together_under_load_and_a_failed_check_keeps_the_whole_old_one() {
    let Some(docker) = Docker::require() else { return };
    if !nginx::available() {
        return;
    }
    let p1 = Project1::new(&docker);
    let _compose = ComposeProject { name: p1.project.clone() };
    let dir = p1.env.path().join("deploy");
    let ngx = p1.env.path().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&ngx).unwrap();
    let _nginx = NginxGuard(ngx.join("nginx.pid"));
    // The database: a stand-in from the base image (nothing can be pulled here), not routed.
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  api:\n    image: ${{PIPE_IMAGE_API}}:${{PIPE_TAG_API}}\n    init: true\n    \
             command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/app\"]\n  front:\n    \
             image: ${{PIPE_IMAGE_FRONT}}:${{PIPE_TAG_FRONT}}\n    init: true\n    \
             command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n  db:\n    image: {base}\n    init: true\n    \
             command: [\"sleep\", \"100000\"]\n",
            base = docker.base_image
        ),
    )
    .unwrap();
    let port = free_port();
    let d = ngx.display();
    std::fs::write(ngx.join("nginx.conf"), nginx::conf(&ngx, &format!("{d}/pipe.conf"))).unwrap();
    let head = format!(
        "[ingress]\ndomain = \"p1.test\"\nlisten = \"127.0.0.1:{port}\"\nupstreams = \"{d}/upstreams\"\n\
         nginx = [\"{NGINX}\", \"-c\", \"{d}/nginx.conf\", \"-e\", \"{d}/error.log\"]\n"
    );
    let deploy = format!(
        "[[project.{p}.deploy]]\nname = \"devhost\"\nbranches = [\"main\"]\n\
         compose = {{ file = \"{file}\", project = \"{p}\", services = [\"api\", \"front\", \"db\"] }}\n\
         ingress = {{ api = 8080, front = 8080 }}\nhealth = {{ url = \"http://{FRONT}/health\", timeout = \"10s\" }}\n\
         drain = \"1s\"\n",
        p = p1.project,
        file = dir.join("docker-compose.yml").display(),
    );
    // The deploy entry is a table array after the images: written at the end of the file.
    p1.configure(&head, "[\"main\"]", "");
    let text = std::fs::read_to_string(p1.env.config_path()).unwrap();
    p1.env.config(&format!("{text}\n{deploy}"));
    let generated = p1.env.pipe(&["generate", "nginx"]);
    generated.code(0);
    std::fs::write(ngx.join("pipe.conf"), &generated.stdout).unwrap();

    let c1 = p1.commit("main", &[]);
    p1.env.pipe(&["run"]).code(0);
    assert_eq!(nginx::request(port, FRONT, "/").as_deref(), Ok("front 1"));
    assert_eq!(nginx::request(port, API, "/").as_deref(), Ok("api 1"));
    let load = Load::start(port, [FRONT, API]);

    // Only the API: its new image and the frontend's retagged one, each at the commit's tag.
    let c2 = p1.commit("main", &[("project1/index.html", "api 2\n")]);
    p1.env.pipe(&["run"]).code(0);
    assert_eq!(nginx::request(port, API, "/").as_deref(), Ok("api 2"));
    assert_eq!(nginx::request(port, FRONT, "/").as_deref(), Ok("front 1"));
    let running = |service: &str| {
        let label = format!("label=com.docker.compose.service={service}");
        let project = format!("label=com.docker.compose.project={}", p1.project);
        let out = docker.ok(&["ps", "--filter", &label, "--filter", &project, "--format", "{{.Image}}"]);
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(running("api"), [p1.image("api", short(&c2))]);
    assert_eq!(running("front"), [p1.image("front", short(&c2))], "the frontend runs the commit's tag");

    // A release whose API fails its check: neither service switches.
    p1.commit("main", &[("project1/index.html", "api broken\n"), ("project1-front/index.html", "front 3\n")]);
    std::fs::remove_file(p1.repo.work.join("project1/health")).unwrap();
    let c3 = p1.commit("main", &[]);
    p1.env.pipe(&["run"]).code(1).stderr_has("the old release kept serving");
    assert_eq!(nginx::request(port, API, "/").as_deref(), Ok("api 2"));
    assert_eq!(nginx::request(port, FRONT, "/").as_deref(), Ok("front 1"), "the frontend stayed with its API");
    assert_eq!(running("front"), [p1.image("front", short(&c2))]);

    // The fix: both switch together.
    p1.commit("main", &[("project1/index.html", "api 4\n"), ("project1/health", "ok\n")]);
    p1.env.pipe(&["run"]).code(0);
    assert_eq!(nginx::request(port, API, "/").as_deref(), Ok("api 4"));
    assert_eq!(nginx::request(port, FRONT, "/").as_deref(), Ok("front 3"));
    let tally = load.finish();
    let allowed = [
        format!("{FRONT}: front 1"),
        format!("{FRONT}: front 3"),
        format!("{API}: api 1"),
        format!("{API}: api 2"),
        format!("{API}: api 4"),
    ];
    let bad: Vec<_> = tally.iter().filter(|(k, _)| !allowed.contains(k)).collect();
    assert!(bad.is_empty(), "failed requests or answers from a release that failed its check: {bad:?}");
    assert!(tally.values().sum::<usize>() > 200, "{tally:?}");

    // The deploy history keeps the release as one commit with its images.
    let history =
        std::fs::read_to_string(p1.env.state_path().with_file_name("deploys").join(&p1.project).join("devhost.toml"))
            .unwrap();
    assert!(history.contains(&format!("api = \"pipe-test/{}-api\"", p1.project)), "{history}");
    let _ = (c1, c3);
}

#[test]
fn a_repository_declares_its_images_in_its_pipe_toml_and_a_docs_commit_builds_none() {
    let Some(docker) = Docker::require() else { return };
    let p1 = Project1::new(&docker);
    p1.env.config(&format!(
        "[pipe]\nworkspace = \"{}\"\n[project.{p}]\nrepo = \"{}\"\nbranches = [\"main\"]\n",
        p1.env.path().join("work").display(),
        p1.repo.url(),
        p = p1.project,
    ));
    let pipe_toml = format!(
        "[images.api]\nimage = \"pipe-test/{p}-api\"\ncontext = \"project1\"\ntest = \"grep -qx ok /app/status\"\n\
         [images.front]\nimage = \"pipe-test/{p}-front\"\ncontext = \"project1-front\"\n",
        p = p1.project
    );
    let c1 = p1.commit("main", &[(".pipe.toml", &pipe_toml)]);
    p1.env.pipe(&["run"]).code(0);
    assert_eq!(p1.last_run("main"), (c1.clone(), images((true, &c1), (true, &c1))));
    let c2 = p1.commit("main", &[("docs/README.md", "docs 2\n")]);
    p1.env.pipe(&["run"]).code(0).stderr_has("nothing built");
    assert_eq!(p1.last_run("main"), (c2.clone(), images((false, &c1), (false, &c1))));
    // Images a `.pipe.toml` declares show in `pipe status PROJECT`.
    p1.env.pipe(&["status", &p1.project]).code(0).stdout_has(&format!("api={} front={}", short(&c1), short(&c1)));
    // New settings for the frontend (its `paths`): its tested build is not reused, the API's is.
    let widened = pipe_toml.replace(
        "context = \"project1-front\"\n",
        "context = \"project1-front\"\npaths = [\"project1-front\", \"docs\"]\n",
    );
    let c4 = p1.commit("main", &[(".pipe.toml", &widened)]);
    p1.env.pipe(&["run"]).code(0).stderr_has(&format!("tested build {} was made with other settings", short(&c1)));
    assert_eq!(p1.last_run("main"), (c4.clone(), images((false, &c1), (true, &c4))));
    // A developer's `pipe test --here` builds every image of the working tree, as CI does, and
    // runs each one's test (the frontend has none).
    p1.repo.write("project1/index.html", "api here\n");
    let mut cmd = p1.env.command(&["test", "--here"]);
    cmd.env_remove("PIPE_CONFIG").current_dir(&p1.repo.work);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dirty = format!("{}-dirty", short(&c4));
    let _here: Vec<_> = ["api", "front"]
        .map(|i| [p1.image(i, &dirty), p1.image(i, "latest")])
        .concat()
        .into_iter()
        .map(|name| crate::support::docker::ImageGuard { name })
        .collect();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("tests of {} passed", p1.image("api", &dirty))), "{stderr}");
    assert!(stderr.contains(&format!("{}: no test command", p1.image("front", &dirty))), "{stderr}");
    assert!(p1.id(&docker, "api", &dirty).is_some() && p1.id(&docker, "front", &dirty).is_some());
    let mut cmd = p1.env.command(&["build", "--here", "--dry-run"]);
    cmd.env_remove("PIPE_CONFIG").current_dir(&p1.repo.work);
    let plan = String::from_utf8_lossy(&cmd.output().unwrap().stdout).to_string();
    assert_eq!(plan.lines().filter(|l| l.contains(" build ")).count(), 2, "{plan}");
    git(&p1.repo.work, &["checkout", "--quiet", "--", "project1/index.html"]);

    // A `.pipe.toml` that declares images beside `image` fails the build at its line.
    let c3 = p1.commit("main", &[(".pipe.toml", &format!("image = \"x\"\n{pipe_toml}"))]);
    p1.env.pipe(&["run"]).code(1).stderr_has(".pipe.toml:1:1: the repository: `image` is set beside `images`");
    let _ = c3;
}

fn not_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() != b"0").unwrap_or(true)
}

/// Whether the engine has `image` (a name with its tag).
fn exists(image: &str) -> bool {
    std::process::Command::new("docker").args(["image", "inspect", image]).output().unwrap().status.success()
}

#[test]
fn a_pull_request_of_several_images_builds_each_under_the_untrusted_rules_and_its_file_cannot_add_an_escape() {
    let Some(docker) = Docker::require() else { return };
    if not_root() {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "the isolated build needs root (iptables)");
        eprintln!("skipped: isolation needs root");
        return;
    }
    let mut p1 = Project1::new(&docker);
    p1.env.env("DB_PASSWORD", "hunter2-kept-from-prs");
    // The images come from the repository's `.pipe.toml`; the pipeline file gives a secret to
    // every image's tests and leaves untrusted builds their default, isolated, network.
    p1.env.config(&format!(
        "[pipe]\nworkspace = \"{}\"\n[project.{p}]\nrepo = \"{}\"\nbranches = [\"main\"]\npull_requests = true\n\
         test_env = {{ DB_PASSWORD = {{ env = \"DB_PASSWORD\" }} }}\n",
        p1.env.path().join("work").display(),
        p1.repo.url(),
        p = p1.project,
    ));
    let p = p1.project.clone();
    let test = "echo secret-len=${#DB_PASSWORD}";
    let pipe_toml = format!(
        "[images.api]\nimage = \"pipe-test/{p}-api\"\ncontext = \"project1\"\ntest = {test:?}\n\
         [images.front]\nimage = \"pipe-test/{p}-front\"\ncontext = \"project1-front\"\ntest = {test:?}\n"
    );
    let c1 = p1.commit("main", &[(".pipe.toml", &pipe_toml)]);
    p1.env.pipe(&["run"]).code(0);
    p1.env.pipe(&["logs", &p, "main"]).code(0).stdout_has(&format!("secret-len={}", "hunter2-kept-from-prs".len()));
    let trusted_api = p1.id(&docker, "api", "latest").unwrap();

    // A pull request touching both images, whose `.pipe.toml` adds a third under a name
    // nothing else uses.
    git(&p1.repo.work, &["checkout", "--quiet", "-b", "pr"]);
    let evil =
        format!("{pipe_toml}[images.evil]\nimage = \"pipe-test/{p}-main\"\ncontext = \"project1\"\ntest = {test:?}\n");
    p1.repo.write("project1/index.html", "api pr\n").write("project1-front/index.html", "front pr\n");
    p1.repo.write(".pipe.toml", &evil);
    git(&p1.repo.work, &["add", "--all"]);
    git(&p1.repo.work, &["commit", "--quiet", "-m", "a pull request"]);
    let pr = git(&p1.repo.work, &["rev-parse", "HEAD"]);
    git(&p1.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/5/head", "HEAD:refs/pull/5/merge"]);
    p1.env.pipe(&["run"]).code(0);
    let (commit, built) = p1.last_run_of("refs/pull/5/head");
    assert_eq!(commit, pr);
    let names: Vec<(&str, bool)> = built.iter().map(|(n, b, _)| (n.as_str(), *b)).collect();
    assert_eq!(names, [("api", true), ("evil", true), ("front", true)], "every image built, none reused");
    // Each under pipe's own name for the project's untrusted builds, with untrusted tags only.
    for name in ["api", "evil", "front"] {
        let untrusted = format!("pipe-untrusted/{p}/{name}");
        assert!(exists(&format!("{untrusted}:pr-5")), "{untrusted}:pr-5");
        assert!(exists(&format!("{untrusted}:{}-untrusted", short(&pr))), "{untrusted}");
        assert!(!exists(&format!("{untrusted}:{}", short(&pr))), "no deployable tag for an untrusted build");
    }
    for trusted in [p1.image("api", "pr-5"), p1.image("front", short(&pr)), format!("pipe-test/{p}-main:pr-5")] {
        assert!(!exists(&trusted), "an untrusted build wrote a trusted name: {trusted}");
    }
    assert!(!exists(&format!("pipe-test/{p}-main:{}-untrusted", short(&pr))));
    assert_eq!(p1.id(&docker, "api", "latest"), Some(trusted_api), "main's image kept its tag");
    // Built on an isolated network of pipe's, tested without the secret.
    let log = p1.env.pipe(&["logs", &p, "pull/5"]).stdout.clone();
    assert_eq!(log.matches("--network pipe-build-").count(), 3, "{log}");
    assert_eq!(log.matches("secret-len=0").count(), 3, "{log}");
    assert!(!log.contains("hunter2"), "{log}");

    // A pull request whose file names an image under the untrusted namespace (another ref's or
    // project's untrusted builds) is refused at its line, before anything is built.
    let claim = format!("{pipe_toml}[images.claim]\nimage = \"pipe-untrusted/{p}/api\"\n");
    p1.repo.write(".pipe.toml", &claim);
    git(&p1.repo.work, &["commit", "--quiet", "-am", "claims the namespace"]);
    git(&p1.repo.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/6/head", "HEAD:refs/pull/6/merge"]);
    p1.env.pipe(&["run"]).code(1).stderr_has("is under `pipe-untrusted/`, where only untrusted refs' builds go");
    assert!(!exists(&format!("pipe-untrusted/{p}/claim:pr-6")) && !exists(&format!("pipe-untrusted/{p}/api:pr-6")));
    let _ = c1;
}
