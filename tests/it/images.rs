//! A project of several images (the seed's Project1: an API from `./project1`, a frontend from
//! `./project1-front`): each image built only when a file under its paths changed since the
//! last commit of the ref for which it was built and passed its tests, the others given the
//! commit's tags, with the real engine, real git and a forge stand-in.

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::{TestEnv, WorkRepo, git};

/// The fixture: Project1's two images from two subdirectories, and docs beside them.
struct Project1 {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    _images: ProjectImages,
}

impl Project1 {
    fn new(docker: &Docker, extra: &str) -> Project1 {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN);
        let project = unique_name("img").replace("pipe-test-", "");
        let repo = WorkRepo::new(env.path(), "project1");
        // No RUN step: what changes an image is the files it copies, never a cached step.
        repo.write("project1/Dockerfile", &format!("FROM {}\nCOPY . /app\n", docker.base_image));
        repo.write("project1/views.py", "api 1\n");
        repo.write("project1/status", "ok\n");
        repo.write("project1-front/Dockerfile", &format!("FROM {}\nCOPY . /www\n", docker.base_image));
        repo.write("project1-front/index.html", "front 1\n");
        repo.write("docs/README.md", "docs 1\n");
        let p1 = Project1 { _images: ProjectImages { project: project.clone() }, env, repo, project };
        p1.env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

[forge.origin]
kind = "github"
api = "http://127.0.0.1:{{port}}"
token_env = "FORGE_TOKEN"

[project.{p}]
repo = "{url}"
branches = ["main", "feature/*"]
forge = "origin"
forge_repo = "acme/project1"

[project.{p}.images.api]
image = "pipe-test/{p}-api"
context = "project1"
test = "grep -qx ok /app/status"

[project.{p}.images.front]
image = "pipe-test/{p}-front"
context = "project1-front"
paths = ["project1-front", "shared/**/*.css"]
test = "test -s /www/index.html"
{extra}"#,
            ws = p1.env.path().join("work").display(),
            p = p1.project,
            url = p1.repo.url(),
        ));
        p1
    }

    fn image(&self, which: &str, tag: &str) -> String {
        format!("pipe-test/{}-{which}:{tag}", self.project)
    }

    /// The image id behind `image`, or `None` when the engine has no such image.
    fn id(&self, docker: &Docker, which: &str, tag: &str) -> Option<String> {
        let out = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &self.image(which, tag)])
            .output()
            .unwrap();
        let _ = docker;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The newest run of `branch` in its history: (commit, per image: (name, built, from)).
    fn last_run(&self, branch: &str) -> (String, Vec<(String, bool, String)>) {
        let dir = self.env.state_path().parent().unwrap().join("refs").join(&self.project);
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                text.contains(&format!("ref = \"refs/heads/{branch}\""))
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

    fn commit(&self, branch: &str, files: &[(&str, &str)]) -> String {
        for (path, text) in files {
            self.repo.write(path, text);
        }
        self.repo.commit_to(branch, &format!("change {files:?}"))
    }
}

fn short(sha: &str) -> &str {
    &sha[..12]
}

/// (image, built by this run, the commit its build comes from) for the API and the frontend.
fn images(api: (bool, &str), front: (bool, &str)) -> Vec<(String, bool, String)> {
    vec![("api".into(), api.0, api.1.into()), ("front".into(), front.0, front.1.into())]
}

#[test]
fn each_commit_builds_exactly_the_images_whose_paths_changed_and_retags_the_others() {
    let Some(docker) = Docker::require() else { return };
    let p1 = Project1::new(&docker, "");
    let api = ForgeApi::start(&p1.env, "github", None);
    let config = std::fs::read_to_string(p1.env.config_path()).unwrap().replace("{port}", &api.port.to_string());
    p1.env.config(&config);

    // The first commit: nothing to compare with, so both are built, and say why.
    let c1 = p1.commit("main", &[]);
    p1.env.pipe(&["run"]).code(0).stderr_has("building api: no tested build of it to compare with");
    assert_eq!(p1.last_run("main"), (c1.clone(), images((true, &c1), (true, &c1))));
    let (api1, front1) = (p1.id(&docker, "api", short(&c1)).unwrap(), p1.id(&docker, "front", short(&c1)).unwrap());
    assert_eq!(p1.id(&docker, "api", "latest").as_ref(), Some(&api1));

    // Only the API: the frontend gets the commit's tags on its tested image.
    let c2 = p1.commit("main", &[("project1/views.py", "api 2\n")]);
    p1.env.pipe(&["run"]).code(0).stderr_has("building api: `project1/views.py` changed since");
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
    let f2 = p1.commit("feature/x", &[("project1/views.py", "api x\n")]);
    p1.env.pipe(&["run"]).code(0).stderr_has(&format!("front unchanged since `main`'s {}", short(&c5)));
    assert_eq!(p1.last_run("feature/x"), (f2.clone(), images((true, &f2), (false, &c5))));

    // Its merge into main (a merge commit): compared with main's tested builds, only the API.
    git(&p1.repo.work, &["checkout", "--quiet", "main"]);
    git(&p1.repo.work, &["merge", "--quiet", "--no-ff", "-m", "merge feature/x", "feature/x"]);
    git(&p1.repo.work, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
    let m = git(&p1.repo.work, &["rev-parse", "HEAD"]);
    p1.env.pipe(&["run"]).code(0);
    assert_eq!(p1.last_run("main"), (m.clone(), images((true, &m), (false, &c5))));
}
