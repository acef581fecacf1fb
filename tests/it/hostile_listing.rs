//! A listing is untrusted data of bounded cost: the forge stand-in (`support/forge_api.py`,
//! still refusing any request its documentation does not describe) lists a million
//! repositories, made lazily page by page — at the documented 100 a page, over pipe's page
//! cap, and at 12,500 a page whatever was asked, within it. Pipe stops at its bounds, keeps
//! none of it, says so in `pipe check` and `pipe status`, keeps the project it had (a real git
//! remote, built by the real engine) and does not ask again for an hour; within the bounds it
//! starts at most 32 probes a tick. A tick that finds nothing moved in a listing kept at the
//! bound asks for its first page once and probes nothing; a repository created or given a
//! `.pipe.toml` in it is still built on the next tick.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::{GitHttpServer, TestEnv, WorkRepo};

struct Org {
    env: TestEnv,
    api: ForgeApi,
    git: GitHttpServer,
    log: PathBuf,
    app: String,
    repo: WorkRepo,
    _images: ProjectImages,
}

impl Org {
    fn new(base_image: &str) -> Org {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN);
        let root = env.path().join("org");
        std::fs::create_dir_all(&root).unwrap();
        let log = env.path().join("git-http.log");
        let git = GitHttpServer::start_logged(&root, None, Some(&log));
        let api = ForgeApi::start(&env, "github", None);
        let app = unique_name("list").replace("pipe-test-", "");
        let repo = WorkRepo::new(&root, &app);
        repo.write(".pipe.toml", "test = \"true\"\n").write("Dockerfile", &format!("FROM {base_image}\n"));
        repo.commit_to("main", "first");
        let _images = ProjectImages { project: app.clone() };
        let org = Org { env, api, git, log, app, repo, _images };
        org.configure("");
        org
    }

    /// The pipeline file, with `discover` lines added.
    fn configure(&self, discover: &str) {
        self.env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "github"
api = "http://127.0.0.1:{port}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"
git = "http://127.0.0.1:{git}"
{discover}
[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"
"#,
            ws = self.env.path().join("work").display(),
            port = self.api.port,
            git = self.git.port,
        ));
    }

    fn app_entry(&self) -> Value {
        json!({"name": self.app, "clone_url": self.git.url(&format!("{}.git", self.app)), "default_branch": "main",
               "pushed_at": "2026-11-01T00:00:00Z"})
    }

    /// The organization lists the project's repository, then `count` more, `per_page` a page
    /// (`None`: the size pipe asks for).
    fn list(&self, count: usize, per_page: Option<usize>) {
        let mut org = json!({"org": "acme", "repos": [self.app_entry()],
            "generate": {"count": count, "prefix": "gen", "clone_base": self.git.url("")}});
        if let Some(n) = per_page {
            org["hostile_per_page"] = json!(n);
        }
        self.api.set_org(&org);
    }

    fn cache(&self) -> PathBuf {
        self.env.state_path().parent().unwrap().join("discover/acme.toml")
    }

    /// Builds the project's repository once and returns the listing requests so far.
    fn first_run(&self) -> usize {
        self.api.set_org(&json!({"org": "acme", "repos": [self.app_entry()]}));
        let run = self.env.pipe(&["run", "--json"]);
        run.code(0);
        assert_eq!(run.json()["results"][0]["project"], self.app.as_str(), "{}", run.stdout);
        assert_eq!(run.json()["results"][0]["result"], "passed", "{}", run.stdout);
        self.api.listings().len()
    }

    /// After the hostile listing: the project it had is still there, said so, and built.
    fn keeps_its_project(&self, listed: usize) {
        let status = self.env.pipe(&["status", "--json"]);
        status.code(0).stderr_has("the last listing of `acme` failed: over pipe's bound");
        let doc = status.json();
        assert_eq!(doc["discovery"][0]["projects"], json!([self.app]), "{doc:#}");
        self.env.pipe(&["check"]).code(0).stdout_has("listing failed: over pipe's bound").stdout_has(&self.app);
        self.repo.write("v2", "2\n");
        let commit = self.repo.commit_to("main", "second");
        let run = self.env.pipe(&["run", "--json"]);
        run.code(0);
        let results = run.json()["results"].clone();
        assert_eq!(results.as_array().unwrap().len(), 1, "{results:#}");
        assert_eq!(
            (results[0]["commit"].as_str(), results[0]["result"].as_str()),
            (Some(commit.as_str()), Some("passed"))
        );
        assert_eq!(self.api.listings().len(), listed, "the organization is not listed again within the hour");
        assert!(self.api.requests().iter().all(|r| r["error"].is_null()), "every request as documented");
    }
}

/// An organization of 9,999 kept repositories (one below pipe's bound), in a steady state: the
/// project's repository; `docs`, a repository without a pipe file; 40 whose probes never
/// answer (no such repository on the git server), listed as pushed long ago; and 9,957
/// generated ones the template excludes (kept in the listing, never probed).
struct Large {
    org: Org,
    docs: WorkRepo,
    entries: Vec<Value>,
}

impl Large {
    fn new(base_image: &str) -> Large {
        let org = Org::new(base_image);
        org.first_run();
        org.configure("exclude = [\"gen-*\"]\n");
        let docs_name = format!("{}-docs", org.app);
        let docs = WorkRepo::new(&org.env.path().join("org"), &docs_name);
        docs.write("README.md", "no pipeline here\n");
        docs.commit_to("main", "first");
        let mut entries = vec![
            org.app_entry(),
            json!({"name": docs_name, "clone_url": org.git.url(&format!("{docs_name}.git")), "default_branch": "main",
                   "pushed_at": "2026-10-01T00:00:00Z"}),
        ];
        for i in 0..40 {
            entries.push(json!({"name": format!("dead-{i}"), "clone_url": org.git.url(&format!("dead-{i}.git")),
                                "default_branch": "main", "pushed_at": "2025-06-01T00:00:00Z"}));
        }
        let large = Large { org, docs, entries };
        large.publish();
        // The first tick lists all 100 pages and probes 32 of the 40 dead entries; the second
        // probes the last 8: every candidate has been tried.
        let before = large.org.api.listings().len();
        large.org.env.pipe(&["poll"]).code(0);
        assert_eq!(large.org.api.listings().len() - before, 100, "the whole listing: 100 pages of 100");
        large.org.env.pipe(&["poll"]).code(0);
        assert_eq!(large.org.api.listings().len() - before, 101, "then the first page alone");
        let cache = std::fs::read_to_string(large.org.cache()).unwrap();
        assert!(cache.contains("gen-9956 = ") && cache.contains("dead-39 = "), "9,999 kept");
        large
    }

    fn publish(&self) {
        self.org.api.set_org(&json!({"org": "acme", "repos": self.entries,
            "generate": {"count": 9_957, "prefix": "gen", "clone_base": self.org.git.url("")}}));
    }
}

/// Repositories of the organization the git server was asked about in `log`, each once.
fn asked(log: &str, prefix: &str) -> usize {
    let mut names: Vec<&str> =
        log.lines().filter_map(|l| l.split_once(&format!("/{prefix}-"))?.1.split(".git").next()).collect();
    names.sort();
    names.dedup();
    names.len()
}

/// Peak RSS in KiB of `pipe ARGS`, by GNU time.
fn peak_rss_kb(env: &TestEnv, args: &[&str]) -> u64 {
    let cmd = env.command(args);
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed.args(["-f", "RSS=%M"]).arg(cmd.get_program()).args(cmd.get_args()).env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let run = timed.output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    stderr.lines().find_map(|l| l.strip_prefix("RSS=")).unwrap().trim().parse().unwrap()
}

/// The generated repositories the git server was asked about, each once.
fn probed(log: &str) -> usize {
    let mut names: Vec<&str> = log.split("/gen-").skip(1).filter_map(|rest| rest.split(".git").next()).collect();
    names.sort();
    names.dedup();
    names.len()
}

#[test]
fn a_million_repositories_over_the_page_cap_are_not_kept_and_the_known_project_keeps_being_built() {
    let Some(docker) = Docker::require() else { return };
    let org = Org::new(&docker.base_image);
    let before = org.first_run();
    let cache_before = std::fs::read_to_string(org.cache()).unwrap();

    org.list(1_000_000, None);
    let rss = peak_rss_kb(&org.env, &["poll"]);
    let listings = org.api.listings();
    assert_eq!(listings.len() - before, 100, "the page cap: 100 pages of the documented 100");
    assert!(listings.iter().all(|r| r["status"] == 200 || r["status"] == 304), "{:?}", listings.last());
    eprintln!("`pipe poll` over a hostile listing: peak RSS {rss} KiB");
    assert!(rss < 100 * 1024, "`pipe poll` peaked at {rss} KiB");
    let cache = std::fs::read_to_string(org.cache()).unwrap();
    assert!(!cache.contains("gen-"), "nothing of the listing over the bound is kept");
    assert!(cache.len() < cache_before.len() + 512, "{} bytes before, {} after", cache_before.len(), cache.len());
    org.keeps_its_project(listings.len());
}

#[test]
fn a_million_repositories_within_the_page_cap_stop_at_the_entry_bound_on_the_first_page() {
    let Some(docker) = Docker::require() else { return };
    let org = Org::new(&docker.base_image);
    let before = org.first_run();

    // 80 pages of 12,500 (under the cap of 100 pages), against the 100 a page pipe asked for.
    org.list(1_000_000, Some(12_500));
    let rss = peak_rss_kb(&org.env, &["poll"]);
    assert_eq!(org.api.listings().len() - before, 1, "one page holds more than the 10,000 entries kept");
    eprintln!("`pipe poll` over a hostile listing: peak RSS {rss} KiB");
    assert!(rss < 100 * 1024, "`pipe poll` peaked at {rss} KiB");
    assert!(!std::fs::read_to_string(org.cache()).unwrap().contains("gen-"));
    org.keeps_its_project(org.api.listings().len());
}

#[test]
fn within_the_bounds_a_listing_is_kept_and_probed_at_most_32_repositories_a_tick() {
    let Some(docker) = Docker::require() else { return };
    let org = Org::new(&docker.base_image);
    let before = org.first_run();
    let _ = std::fs::remove_file(&org.log);

    org.list(5_000, None);
    org.env.pipe(&["poll"]).code(0);
    assert_eq!(org.api.listings().len() - before, 51, "51 pages of 100");
    let probes = probed;
    let log = std::fs::read_to_string(&org.log).unwrap_or_default();
    eprintln!("probes in the first tick: {}", probes(&log));
    assert!((1..=32).contains(&probes(&log)), "{} probes in one tick:\n{log}", probes(&log));
    let _ = std::fs::remove_file(&org.log);
    org.env.pipe(&["poll"]).code(0);
    let log = std::fs::read_to_string(&org.log).unwrap_or_default();
    assert!((1..=32).contains(&probes(&log)), "{} probes in the second tick", probes(&log));
    // Kept (none carries a pipe file, none became a project); `pipe status` reads none of it.
    let cache = std::fs::read_to_string(org.cache()).unwrap();
    assert!(cache.contains("gen-4999"));
    let doc = org.env.pipe(&["status", "--json"]).code(0).json();
    assert_eq!(doc["discovery"][0]["projects"], json!([org.app]), "{doc:#}");
    assert!(doc["discovery"][0].get("error").is_none(), "{doc:#}");
}

#[test]
fn a_no_op_tick_over_9999_kept_repositories_asks_for_the_first_page_once_and_probes_nothing() {
    let Some(docker) = Docker::require() else { return };
    let large = Large::new(&docker.base_image);
    let org = &large.org;
    let whole = {
        // What listing all of it costs, for comparison: the pipeline file changed.
        org.configure("exclude = [\"gen-*\", \"nothing-*\"]\n");
        let before = org.api.listings().len();
        let rss = peak_rss_kb(&org.env, &["poll"]);
        assert_eq!(org.api.listings().len() - before, 100, "a changed pipeline file lists the organization whole");
        rss
    };
    for tick in 0..2 {
        let cache = std::fs::read(org.cache()).unwrap();
        let before = org.api.listings().len();
        let _ = std::fs::remove_file(&org.log);
        let rss = peak_rss_kb(&org.env, &["poll"]);
        let listings = org.api.listings();
        assert_eq!(listings.len() - before, 1, "tick {tick}: one request, whatever the listing holds");
        let first = &listings[before];
        assert_eq!(first["status"], 304, "{first}");
        assert!(first["path"].as_str().unwrap().contains("sort=pushed&direction=desc"), "{first}");
        assert!(first["if_none_match"].as_str().is_some_and(|e| e.starts_with("W/\"")), "{first}");
        let log = std::fs::read_to_string(&org.log).unwrap_or_default();
        assert_eq!((asked(&log, "dead"), asked(&log, "gen")), (0, 0), "tick {tick} probed:\n{log}");
        assert!(!log.contains(&format!("{}-docs", org.app)), "tick {tick} probed docs:\n{log}");
        assert_eq!(std::fs::read(org.cache()).unwrap(), cache, "tick {tick} rewrote the cache");
        eprintln!("no-op tick over 9,999 kept: peak RSS {rss} KiB; listing it whole: {whole} KiB");
        assert!(rss < whole, "the no-op tick peaked at {rss} KiB, listing the whole organization at {whole} KiB");
    }
    assert!(org.api.requests().iter().all(|r| r["error"].is_null()), "every request as documented");
}

#[test]
fn a_repository_created_or_given_a_pipe_file_in_9999_kept_repositories_is_built_on_the_next_tick() {
    let Some(docker) = Docker::require() else { return };
    let mut large = Large::new(&docker.base_image);
    let dockerfile = format!("FROM {}\n", docker.base_image);
    // A new repository, pushed now, and a `.pipe.toml` pushed to `docs`.
    let fresh = format!("{}-fresh", large.org.app);
    let repo = WorkRepo::new(&large.org.env.path().join("org"), &fresh);
    repo.write(".pipe.toml", "test = \"true\"\n").write("Dockerfile", &dockerfile);
    repo.commit_to("main", "first");
    let _fresh_images = ProjectImages { project: fresh.clone() };
    let docs = format!("{}-docs", large.org.app);
    let _docs_images = ProjectImages { project: docs.clone() };
    large.docs.write(".pipe.toml", "test = \"true\"\n").write("Dockerfile", &dockerfile);
    large.docs.commit_to("main", "a pipeline");
    large.entries[1]["pushed_at"] = json!("2026-12-02T00:00:00Z");
    large.entries.push(json!({"name": fresh, "clone_url": large.org.git.url(&format!("{fresh}.git")),
                              "default_branch": "main", "pushed_at": "2026-12-01T00:00:00Z"}));
    large.publish();

    let before = large.org.api.listings().len();
    let run = large.org.env.pipe(&["run", "--json"]);
    run.code(0);
    let mut built: Vec<(String, String)> = run.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["project"].as_str().unwrap().to_string(), r["result"].as_str().unwrap().to_string()))
        .collect();
    built.sort();
    assert_eq!(built, [(docs.clone(), "passed".to_string()), (fresh.clone(), "passed".to_string())], "{}", run.stdout);
    let listings = large.org.api.listings();
    assert_eq!(
        listings.len() - before,
        1,
        "the first page holds both pushes and older ones: {:#?}",
        &listings[before..]
    );
    assert_eq!(listings[before]["status"], 200);

    // Nothing new since: one `304`, nothing built.
    let before = large.org.api.listings().len();
    let run = large.org.env.pipe(&["run", "--json"]);
    run.code(0);
    assert_eq!(run.json()["results"], json!([]), "{}", run.stdout);
    assert_eq!(large.org.api.listings().len() - before, 1);
    assert_eq!(large.org.api.listings()[before]["status"], 304);
    let doc = large.org.env.pipe(&["status", "--json"]).code(0).json();
    let mut projects: Vec<String> =
        doc["discovery"][0]["projects"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    projects.sort();
    let mut expected = vec![large.org.app.clone(), docs, fresh];
    expected.sort();
    assert_eq!(projects, expected, "{doc:#}");
}
