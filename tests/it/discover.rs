//! Organization discovery against the strict forge stand-ins (`support/forge_api.py`, which
//! serves each forge's documented listing with pagination, `ETag` and rate-limit headers) and
//! repositories that are real git remotes behind a smart-HTTP server on 127.0.0.1. Five
//! repositories: one with a `.pipe.toml`, one with `.jenkins-env` beside a `Dockerfile`, one
//! with neither, one archived, one fork; the organization's pages hold two repositories each.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::serve::Serve;
use crate::support::{GitHttpServer, TestEnv, WorkRepo, hmac_hex};

const ORG_WEBHOOK_SECRET: &str = "org-whsec-2718";

/// An organization on one forge, its repositories and the pipeline file that discovers it.
struct Org {
    env: TestEnv,
    api: ForgeApi,
    git: GitHttpServer,
    /// Every request the git server answered, `METHOD PATH` per line.
    log: PathBuf,
    root: PathBuf,
    prefix: String,
    base: String,
    listed: Vec<Value>,
    repos: Vec<(String, WorkRepo)>,
    _images: Vec<ProjectImages>,
}

impl Org {
    fn new(kind: &str, base: &str) -> Org {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN).env("ORG_WEBHOOK_SECRET", ORG_WEBHOOK_SECRET);
        let root = env.path().join("org");
        std::fs::create_dir_all(&root).unwrap();
        let log = env.path().join("git-http.log");
        let git = GitHttpServer::start_logged(&root, None, Some(&log));
        let api = ForgeApi::start(&env, kind, None);
        let prefix = unique_name("disc").replace("pipe-test-", "");
        let api_base = format!("http://127.0.0.1:{}{base}", api.port);
        let org = Org {
            env,
            api,
            git,
            log,
            root,
            prefix,
            base: api_base,
            listed: Vec::new(),
            repos: Vec::new(),
            _images: Vec::new(),
        };
        org.config(kind);
        org
    }

    fn config(&self, kind: &str) {
        self.env.config(&format!(
            r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "{kind}"
api = "{api}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"
git = "http://127.0.0.1:{git}"
include = ["{prefix}-*"]
webhook_secret_env = "ORG_WEBHOOK_SECRET"

[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"
"#,
            ws = self.env.path().join("work").display(),
            api = self.base,
            prefix = self.prefix,
            git = self.git.port,
        ));
    }

    /// The project name of the repository called `short` here.
    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// A repository on the git server with `files` on `main`, listed with `flags`.
    fn repo(&mut self, short: &str, files: &[(&str, &str)], flags: Value) {
        let name = self.name(short);
        let repo = WorkRepo::new(&self.root, &name);
        for (path, text) in files {
            repo.write(path, text);
        }
        repo.commit_to("main", "first");
        let mut entry = json!({
            "name": name,
            "clone_url": self.git.url(&format!("{name}.git")),
            "default_branch": "main",
            "pushed_at": "2026-11-01T00:00:00Z",
        });
        for (k, v) in flags.as_object().unwrap() {
            entry[k] = v.clone();
        }
        self.listed.push(entry);
        self.repos.push((short.to_string(), repo));
        self._images.push(ProjectImages { project: name });
    }

    /// The five repositories of the issue, listed.
    fn five(&mut self, base_image: &str) {
        let dockerfile = format!("FROM {base_image}\nCOPY www /www\n");
        let www = ("www/index.html", "hello\n");
        self.repo(
            "app",
            &[(".pipe.toml", "test = \"test -f /www/index.html\"\n"), ("Dockerfile", &dockerfile), www],
            json!({}),
        );
        self.repo("legacy", &[(".jenkins-env", "imagename=\"legacy\"\n"), ("Dockerfile", &dockerfile), www], json!({}));
        self.repo("docs", &[("README.md", "no pipeline here\n"), ("Dockerfile", &dockerfile), www], json!({}));
        self.repo("old", &[(".pipe.toml", "\n"), ("Dockerfile", &dockerfile), www], json!({"archived": true}));
        self.repo("forked", &[(".pipe.toml", "\n"), ("Dockerfile", &dockerfile), www], json!({"fork": true}));
        self.publish();
    }

    /// What the forge lists from now on; two repositories a page.
    fn publish(&self) {
        self.api.set_org(&json!({"org": "acme", "max_per_page": 2, "repos": self.listed}));
    }

    fn git_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn clear_git_log(&self) {
        let _ = std::fs::remove_file(&self.log);
    }

    /// The projects `pipe status --json` has refs of.
    fn projects_in_state(&self) -> Vec<String> {
        let status = self.env.pipe(&["status", "--json"]).code(0).json();
        let mut projects: Vec<String> =
            status["refs"].as_array().unwrap().iter().map(|r| r["project"].as_str().unwrap().to_string()).collect();
        projects.dedup();
        projects
    }

    /// `(project, ref, result)` of each ref `pipe run --json` ran.
    fn run(&self) -> Vec<(String, String)> {
        let run = self.env.pipe(&["run", "--json"]);
        run.code(0);
        let mut results: Vec<(String, String)> = run.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["project"].as_str().unwrap().to_string(), r["result"].as_str().unwrap().to_string()))
            .collect();
        results.sort();
        results
    }
}

fn passed(names: &[String]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = names.iter().map(|n| (n.clone(), "passed".to_string())).collect();
    v.sort();
    v
}

#[test]
fn the_repositories_with_a_pipe_file_become_projects_and_are_built() {
    let Some(docker) = Docker::require() else { return };
    let mut org = Org::new("github", "");
    org.five(&docker.base_image);
    let (app, legacy) = (org.name("app"), org.name("legacy"));

    assert_eq!(org.run(), passed(&[app.clone(), legacy.clone()]));
    for name in [&app, &legacy] {
        let image = docker.ok(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"pipe.project\"}}",
            &format!("pipe-test/{name}:latest"),
        ]);
        assert_eq!(image.trim(), name.as_str());
    }
    assert_eq!(org.projects_in_state(), [app.clone(), legacy.clone()]);
    // Three pages of two, each answered as documented; the commit statuses went to the forge too.
    let listings = org.api.listings();
    assert_eq!(listings.len(), 3, "{listings:#?}");
    assert!(listings.iter().all(|r| r["status"] == 200), "{listings:#?}");
    assert!(org.api.requests().iter().all(|r| r["error"].is_null()), "{:#?}", org.api.requests());
    assert!(
        org.api
            .requests()
            .iter()
            .any(|r| r["path"].as_str().unwrap().starts_with(&format!("/repos/acme/{app}/statuses/")))
    );

    let check = org.env.pipe(&["check", "--json"]).code(0).json();
    let decisions: Vec<(String, String)> = check["discovery"][0]["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["repo"].as_str().unwrap().to_string(), r["decision"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> =
        [("app", "project"), ("docs", "no-pipe-file"), ("forked", "fork"), ("legacy", "project"), ("old", "archived")]
            .iter()
            .map(|(r, d)| (org.name(r), d.to_string()))
            .collect();
    assert_eq!(decisions, expected);
    assert_eq!(check["discovered"], 2);
    org.env.pipe(&["status"]).code(0).stdout_has("DISCOVERED");
}

#[test]
fn a_repository_added_later_is_built_on_the_next_tick_which_the_organization_webhook_starts() {
    let Some(docker) = Docker::require() else { return };
    let mut org = Org::new("gitea", "/api/v1");
    org.five(&docker.base_image);
    assert_eq!(org.run().len(), 2);
    assert_eq!(org.run(), Vec::new(), "nothing new, nothing built");

    let dockerfile = format!("FROM {}\nCOPY www /www\n", docker.base_image);
    org.repo(
        "later",
        &[(".pipe.toml", "test = \"true\"\n"), ("Dockerfile", &dockerfile), ("www/index.html", "later\n")],
        json!({"pushed_at": "2026-11-02T00:00:00Z"}),
    );
    org.publish();
    // Gitea's organization webhook says a repository was created: `pipe serve` starts the tick.
    let later = org.name("later");
    let serve = Serve::start(&org.env);
    let body = json!({"action": "created", "repository": {"name": later, "full_name": format!("acme/{later}")}});
    let body = body.to_string().into_bytes();
    let signature = hmac_hex(ORG_WEBHOOK_SECRET, &body);
    let headers =
        [("X-Gitea-Event", "repository"), ("X-Gitea-Delivery", "d-repo-1"), ("X-Gitea-Signature", &signature)];
    assert_eq!(serve.post("/forge/acme", &headers, &body).0, 202, "{}", serve.log());
    let wrong = hmac_hex("not-the-secret", &body);
    let forged = [("X-Gitea-Event", "repository"), ("X-Gitea-Delivery", "d-repo-2"), ("X-Gitea-Signature", &wrong)];
    assert_eq!(serve.post("/forge/acme", &forged, &body).0, 403);
    serve.wait_for("forge project=acme run ended", 1, std::time::Duration::from_secs(120));
    assert!(serve.has("forge project=acme run ended: exit status: 0"), "{}", serve.log());

    let status = org.env.pipe(&["status", "--json"]).code(0).json();
    let built: Vec<&Value> =
        status["refs"].as_array().unwrap().iter().filter(|r| r["project"] == later.as_str()).collect();
    assert_eq!(built.len(), 1, "{status:#}");
    assert_eq!(built[0]["result"], "passed", "{status:#}");
    docker.ok(&["image", "inspect", &format!("pipe-test/{later}:latest")]);
    assert_eq!(org.run(), Vec::new(), "built once, not again");
}

#[test]
fn an_unchanged_listing_is_answered_from_the_cache_with_one_304_for_the_first_page_or_one_per_page() {
    // GitHub and GitLab list the most recently pushed first: their first page alone says that
    // nothing moved. Gitea/Forgejo take no order: every page is asked for.
    for (kind, base, asked) in [("github", "", 1), ("gitea", "/api/v1", 3), ("gitlab", "/api/v4", 1)] {
        let mut org = Org::new(kind, base);
        org.five("pipe-busybox:latest");
        org.env.pipe(&["poll"]).code(0);
        let first = org.api.listings();
        assert_eq!(first.len(), 3, "{kind}: {first:#?}");
        assert!(first.iter().all(|r| r["status"] == 200 && r["if_none_match"].is_null()), "{kind}: {first:#?}");
        org.clear_git_log();
        let cache = org.env.state_path().parent().unwrap().join("discover/acme.toml");
        let written = std::fs::read(&cache).unwrap();

        org.env.pipe(&["poll"]).code(0).stderr_has("no changes");
        assert_eq!(std::fs::read(&cache).unwrap(), written, "{kind}: a no-op tick rewrote the discovery cache");
        let second = &org.api.listings()[3..];
        assert_eq!(second.len(), asked, "{kind}: conditional requests: {second:#?}");
        assert_eq!(second[0]["path"], first[0]["path"], "{kind}");
        for r in second {
            assert_eq!(r["status"], 304, "{kind}: {r}");
            assert!(r["if_none_match"].as_str().is_some_and(|e| e.starts_with("W/\"")), "{kind}: {r}");
        }
        // Nothing moved, so nothing was probed again: the git server saw only the two polls.
        let log = org.git_log();
        assert!(!log.contains("POST"), "{kind}: {log}");
        for short in ["app", "legacy"] {
            assert!(log.contains(&format!("GET /{}.git/info/refs", org.name(short))), "{kind}: {log}");
        }
        assert_eq!(log.lines().count(), 2, "{kind}: {log}");
    }
}

#[test]
fn an_archived_repository_off_the_first_page_stops_being_a_project_at_the_next_relisting() {
    let Some(docker) = Docker::require() else { return };
    let mut org = Org::new("github", "");
    org.five(&docker.base_image);
    let dockerfile = format!("FROM {}\nCOPY www /www\n", docker.base_image);
    // Pushed before the others: listed last, on the third page.
    org.repo(
        "late",
        &[(".pipe.toml", "test = \"true\"\n"), ("Dockerfile", &dockerfile), ("www/index.html", "late\n")],
        json!({"pushed_at": "2026-10-01T00:00:00Z"}),
    );
    org.publish();
    let late = org.name("late");
    assert_eq!(org.run(), passed(&[org.name("app"), org.name("legacy"), late.clone()]));
    let projects = |org: &Org| org.env.pipe(&["status", "--json"]).code(0).json()["discovery"][0]["projects"].clone();
    assert!(projects(&org).as_array().unwrap().contains(&json!(late)));

    org.listed.last_mut().unwrap()["archived"] = json!(true);
    org.publish();
    // Archiving is no push: the first page is as it was, and until the relisting (hourly by
    // default) the repository stays a project.
    let before = org.api.listings().len();
    org.env.pipe(&["poll"]).code(0);
    assert_eq!(org.api.listings().len() - before, 1);
    assert!(projects(&org).as_array().unwrap().contains(&json!(late)));

    // An hour later (the cache says the last relisting was then), the organization is listed whole.
    let cache = org.env.state_path().parent().unwrap().join("discover/acme.toml");
    let text = std::fs::read_to_string(&cache).unwrap();
    let at: i64 = text.lines().find_map(|l| l.strip_prefix("relisted_at = ")).unwrap().parse().unwrap();
    std::fs::write(&cache, text.replace(&format!("relisted_at = {at}"), &format!("relisted_at = {}", at - 3600)))
        .unwrap();
    let before = org.api.listings().len();
    org.env.pipe(&["poll"]).code(0).stderr_has(&format!("`{late}` is no longer a discovered project (archived)"));
    assert_eq!(org.api.listings().len() - before, 3, "the whole listing: three pages of two");
    assert!(!projects(&org).as_array().unwrap().contains(&json!(late)));
    assert!(org.api.requests().iter().all(|r| r["error"].is_null()), "every request as documented");
}

#[test]
fn the_archived_repository_is_never_polled() {
    let mut org = Org::new("gitlab", "/api/v4");
    org.five("pipe-busybox:latest");
    org.env.pipe(&["poll"]).code(0);
    org.env.pipe(&["poll"]).code(0);
    let log = org.git_log();
    assert!(log.contains(&format!("/{}.git/", org.name("app"))), "{log}");
    assert!(!log.contains(&format!("/{}.git/", org.name("old"))), "the archived repository was asked: {log}");
    assert!(!log.contains(&format!("/{}.git/", org.name("forked"))), "the fork was asked: {log}");
    assert_eq!(org.projects_in_state(), [org.name("app"), org.name("legacy")]);
    let listings = org.api.listings();
    assert!(
        listings.iter().all(|r| r["path"].as_str().unwrap().starts_with("/api/v4/groups/acme/projects?")),
        "{listings:#?}"
    );
}

#[test]
fn a_repository_removed_from_the_listing_stops_being_polled_and_prune_removes_its_state() {
    let Some(docker) = Docker::require() else { return };
    let mut org = Org::new("github", "");
    org.five(&docker.base_image);
    let legacy = org.name("legacy");
    assert_eq!(org.run().len(), 2);
    assert_eq!(org.projects_in_state(), [org.name("app"), legacy.clone()]);
    let images_of =
        |name: &str| docker.ok(&["image", "ls", "--quiet", "--filter", &format!("label=pipe.project={name}")]);
    assert!(!images_of(&legacy).trim().is_empty(), "built");

    org.listed.retain(|r| r["name"] != legacy.as_str());
    org.publish();
    org.clear_git_log();
    org.env
        .pipe(&["poll"])
        .code(0)
        .stderr_has(&format!("`{legacy}` is no longer a discovered project (no longer listed)"));
    org.env.pipe(&["poll"]).code(0);
    let log = org.git_log();
    assert!(log.contains(&format!("/{}.git/", org.name("app"))), "{log}");
    assert!(!log.contains(&format!("/{legacy}.git/")), "the removed repository was polled: {log}");

    // Its state stays, marked, until prune says what it removes and removes it.
    let status = org.env.pipe(&["status", "--json"]).code(0).json();
    assert_eq!(status["discovery"][0]["gone"][&legacy], "no longer listed");
    assert!(org.projects_in_state().contains(&legacy));
    org.env
        .pipe(&["prune", "--dry-run"])
        .code(0)
        .stderr_has(&format!("{legacy}: would remove the state of this project"))
        .stderr_has(&format!("{legacy}: would remove image pipe-test/{legacy}"));
    assert!(org.projects_in_state().contains(&legacy));
    assert!(!images_of(&legacy).trim().is_empty(), "a dry run removes nothing");
    org.env
        .pipe(&["prune"])
        .code(0)
        .stderr_has(&format!(
            "{legacy}: removed the state of this project, no longer discovered on forge `acme` (no longer listed): 1 ref(s)"
        ))
        .stderr_has("its project is no longer discovered");
    assert_eq!(org.projects_in_state(), [org.name("app")]);
    assert_eq!(images_of(&legacy).trim(), "", "its images are gone");
    assert!(!images_of(&org.name("app")).trim().is_empty(), "the other project's images stay");
    let status = org.env.pipe(&["status", "--json"]).code(0).json();
    assert!(status["discovery"][0].get("gone").is_none(), "{status:#}");
}

#[test]
fn with_the_forge_api_down_the_known_projects_keep_being_polled_and_built() {
    let Some(docker) = Docker::require() else { return };
    let mut org = Org::new("gitea", "/api/v1");
    org.five(&docker.base_image);
    let app = org.name("app");
    assert_eq!(org.run().len(), 2);

    org.api.stop();
    let repo = &org.repos.iter().find(|(s, _)| s == "app").unwrap().1;
    repo.write("www/index.html", "version 2\n");
    let commit = repo.commit_to("main", "second");
    let run = org.env.pipe(&["run", "--json"]);
    run.code(0).stderr_has("forge `acme`: cannot list `acme`");
    let results = run.json()["results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 1, "{results:#}");
    assert_eq!(results[0]["project"], app.as_str());
    assert_eq!(results[0]["commit"], commit.as_str());
    assert_eq!(results[0]["result"], "passed");
    let status = org.env.pipe(&["status", "--json"]).code(0).json();
    assert!(status["discovery"][0]["error"].as_str().is_some(), "{status:#}");
    assert_eq!(status["discovery"][0]["projects"], json!([app, org.name("legacy")]));
}

#[test]
fn a_rate_limited_listing_waits_for_the_reset_the_forge_names_and_known_projects_keep_being_built() {
    let Some(docker) = Docker::require() else { return };
    let mut org = Org::new("github", "");
    org.five(&docker.base_image);
    let app = org.name("app");
    assert_eq!(org.run().len(), 2);
    let asked = org.api.listings().len();

    // GitHub's primary rate limit: 403 with `x-ratelimit-remaining: 0` and the reset time.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Long enough to outlast the build and `pipe status` below on a loaded host.
    let reset = now + 20;
    let limit = json!({"status": 403, "headers": {
        "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
        "x-ratelimit-reset": reset.to_string(), "x-ratelimit-resource": "core"}});
    let limit_file = PathBuf::from(format!("{}.limit", org.api.record.display()));
    std::fs::write(&limit_file, limit.to_string()).unwrap();
    let repo = &org.repos.iter().find(|(s, _)| s == "app").unwrap().1;
    repo.write("www/index.html", "version 2\n");
    let commit = repo.commit_to("main", "second");
    let run = org.env.pipe(&["run", "--json"]);
    run.code(0);
    let results = run.json()["results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 1, "{results:#}");
    assert_eq!(
        (results[0]["project"].as_str(), results[0]["commit"].as_str()),
        (Some(app.as_str()), Some(commit.as_str()))
    );
    assert_eq!(org.api.listings().len(), asked + 1, "one limited answer");
    let status = org.env.pipe(&["status", "--json"]);
    status.code(0).stderr_has("throttled by the forge's rate limit until");
    let doc = status.json();
    assert!(doc["discovery"][0]["throttled_until"].as_str().is_some(), "{doc:#}");
    assert_eq!(doc["discovery"][0]["projects"], json!([app, org.name("legacy")]));

    // Until the reset, discovery asks nothing; after it, the listing is asked again.
    org.run();
    assert_eq!(org.api.listings().len(), asked + 1, "no request before the reset");
    std::fs::remove_file(&limit_file).unwrap();
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() <= reset {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    org.run();
    assert!(org.api.listings().len() > asked + 1, "listed again after the reset");
    let doc = org.env.pipe(&["status", "--json"]).code(0).json();
    assert!(doc["discovery"][0].get("throttled_until").is_none(), "{doc:#}");
}
