//! A name belongs to whoever holds it first: repositories listed by the forge stand-in
//! (`support/forge_api.py`), each a real git remote behind a smart-HTTP server, try to take a
//! written-out project's name and image repository, a serve hook's compose project and the
//! organization webhook's path — exactly and with case and punctuation changed — and one
//! another's. They stay out and are reported while the holders keep being built; and each
//! discovered project's webhook takes only its own derived secret.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::forge_api::{ForgeApi, TOKEN};
use crate::support::serve::Serve;
use crate::support::{GitHttpServer, TestEnv, WorkRepo, hmac_hex, hub_signature};

const ORG_SECRET: &str = "org-whsec-5151";

struct Org {
    env: TestEnv,
    api: ForgeApi,
    git: GitHttpServer,
    root: PathBuf,
    prefix: String,
    listed: Vec<Value>,
    repos: Vec<(String, WorkRepo)>,
    _images: Vec<ProjectImages>,
}

impl Org {
    fn new() -> Org {
        let mut env = TestEnv::new();
        env.env("FORGE_TOKEN", TOKEN).env("ORG_WEBHOOK_SECRET", ORG_SECRET).env("HOOK_TOKEN", "hook-token-1");
        let root = env.path().join("org");
        std::fs::create_dir_all(&root).unwrap();
        let git = GitHttpServer::start(&root, None);
        let api = ForgeApi::start(&env, "github", None);
        let prefix = unique_name("names").replace("pipe-test-", "");
        Org { env, api, git, root, prefix, listed: Vec::new(), repos: Vec::new(), _images: Vec::new() }
    }

    /// A repository called `repo` on the forge, carrying a `.pipe.toml`, listed.
    fn repo(&mut self, repo: &str, base_image: &str) -> &WorkRepo {
        let work = WorkRepo::new(&self.root, repo);
        work.write(".pipe.toml", "test = \"true\"\n").write("Dockerfile", &format!("FROM {base_image}\n"));
        work.commit_to("main", "first");
        self.listed.push(json!({
            "name": repo,
            "clone_url": self.git.url(&format!("{repo}.git")),
            "default_branch": "main",
            "pushed_at": "2026-11-01T00:00:00Z",
        }));
        self.repos.push((repo.to_string(), work));
        self._images.push(ProjectImages { project: repo.to_ascii_lowercase().replace('.', "-") });
        &self.repos.last().unwrap().1
    }

    fn publish(&self) {
        self.api.set_org(&json!({"org": "acme", "repos": self.listed}));
    }

    fn decisions(&self) -> Vec<(String, String, String)> {
        let check = self.env.pipe(&["check", "--json"]).code(0).json();
        check["discovery"][0]["repos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["repo"].as_str().unwrap().to_string(),
                    r["decision"].as_str().unwrap().to_string(),
                    r["detail"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

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

#[test]
fn a_listed_repository_never_takes_a_name_another_holds_and_the_holders_keep_being_built() {
    let Some(docker) = Docker::require() else { return };
    let mut org = Org::new();
    let p = org.prefix.clone();
    let base = docker.base_image.clone();
    // The holders: a written-out project, its image repository under another project, and a
    // serve hook's compose project.
    let web = org.repo(&format!("{p}-web"), &base).url();
    let store = org.repo(&format!("{p}-store"), &base).url();
    org.listed.clear();
    let hook_compose = org.env.path().join("hook-compose.yml");
    std::fs::write(&hook_compose, "services: {}\n").unwrap();
    org.env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "github"
api = "http://127.0.0.1:{port}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"
git = "http://127.0.0.1:{git}"
webhook_secret_env = "ORG_WEBHOOK_SECRET"

[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"

[[forge.acme.discover.project.deploy]]
branches = ["release"]
compose = {{ file = "{hook}" }}

[project.{p}-web]
repo = "{web}"
branches = ["main"]
image = "pipe-test/{p}-web"

[project.{p}-store]
repo = "{store}"
branches = ["main"]
image = "pipe-test/{p}-catalog"

[serve.hooks.{p}-deploy]
token_env = "HOOK_TOKEN"
images = ["pipe-test/{p}-shop", "pipe-test/{p}-api-*"]
compose = {{ file = "{hook}", project = "{p}-shop" }}
"#,
        ws = org.env.path().join("work").display(),
        port = org.api.port,
        git = org.git.port,
        hook = hook_compose.display(),
    ));
    // The newcomers: each would hold a name someone holds, exactly or folded.
    let attackers = [
        format!("{p}-WEB_"),    // project `…-web_`: the written-out project's name, folded
        format!("{p}.Catalog"), // image `pipe-test/…-catalog`: the other project's image
        format!("{p}_SHOP"),    // compose project `…_shop`: the serve hook's
        "Acme_".to_string(),    // project `acme_`: `/forge/acme`, the organization's webhook
        format!("{p}-Twin.x"),  // two newcomers folding alike: both stay out
        format!("{p}-twin_x"),
        format!("{p}-api-v2"), // image `pipe-test/…-api-v2`: one the serve hook deploys
    ];
    for name in &attackers {
        org.repo(name, &base);
    }
    let good = format!("{p}-good");
    org.repo(&good, &base);
    org.publish();

    let decisions = org.decisions();
    let of = |repo: &str| {
        decisions.iter().find(|d| d.0 == repo).cloned().unwrap_or_else(|| panic!("{repo}: {decisions:#?}"))
    };
    for name in &attackers {
        assert_eq!(of(name).1, "name-taken", "{decisions:#?}");
    }
    assert!(of(&attackers[0]).2.contains(&format!("held by project `{p}-web`")), "{decisions:#?}");
    assert!(of(&attackers[1]).2.contains(&format!("image repository `pipe-test/{p}-catalog`")), "{decisions:#?}");
    assert!(of(&attackers[1]).2.contains(&format!("held by project `{p}-store`")), "{decisions:#?}");
    assert!(of(&attackers[2]).2.contains(&format!("held by serve hook `{p}-deploy`")), "{decisions:#?}");
    assert!(of("Acme_").2.contains("held by forge `acme`"), "{decisions:#?}");
    assert!(of(&attackers[4]).2.contains("another new repository"), "{decisions:#?}");
    assert!(of(&attackers[6]).2.contains(&format!("serve hook `{p}-deploy` deploys")), "{decisions:#?}");
    assert_eq!(of(&good).1, "project");

    // The holders and the one honest newcomer are built; no newcomer is.
    let expected = |extra: &[&str]| {
        let mut v: Vec<(String, String)> = [format!("{p}-good"), format!("{p}-store"), format!("{p}-web")]
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .map(|n| (n, "passed".to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(org.run(), expected(&[]));
    let status = org.env.pipe(&["status", "--json"]).code(0).json();
    assert_eq!(status["discovery"][0]["projects"], json!([good]), "{status:#}");
    assert!(status["discovery"][0]["kept_out"][&attackers[0]].as_str().is_some(), "{status:#}");
    org.env.pipe(&["status"]).code(0).stderr_has(&format!("`{}` is kept out", attackers[0]));

    // Once discovered, `…-good` holds its name: a newcomer spelling it otherwise stays out,
    // and `…-good` keeps being built.
    org.repo(&format!("{p}-GOOD"), &base);
    org.publish();
    let repo = &org.repos.iter().find(|(n, _)| *n == good).unwrap().1;
    repo.write("v2", "2\n");
    repo.commit_to("main", "second");
    assert_eq!(org.run(), vec![(good.clone(), "passed".to_string())]);
    let decisions = org.decisions();
    let late = decisions.iter().find(|d| d.0 == format!("{p}-GOOD")).unwrap();
    assert_eq!(late.1, "name-taken", "{decisions:#?}");
    assert!(late.2.contains(&format!("held by project `{good}`")), "{decisions:#?}");
    assert_eq!(decisions.iter().find(|d| d.0 == good).unwrap().1, "project");
}

#[test]
fn each_discovered_project_takes_only_its_own_webhook_secret() {
    let mut org = Org::new();
    let p = org.prefix.clone();
    let (one, two) = (format!("{p}-one"), format!("{p}-two"));
    org.repo(&one, "pipe-busybox:latest");
    org.repo(&two, "pipe-busybox:latest");
    org.publish();
    org.env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "github"
api = "http://127.0.0.1:{port}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"
git = "http://127.0.0.1:{git}"
webhook_secret_env = "ORG_WEBHOOK_SECRET"

[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"
"#,
        ws = org.env.path().join("work").display(),
        port = org.api.port,
        git = org.git.port,
    ));
    org.env.pipe(&["poll"]).code(0);

    // What the operator hands the admin of `one`: printed by a command `generate webhook` shows.
    let setup = org.env.pipe(&["generate", "webhook", &one]);
    setup.code(0).stdout_has(&format!("HMAC-SHA256 of `{one}` keyed with the value of $ORG_WEBHOOK_SECRET"));
    let command =
        setup.stdout.lines().find_map(|l| l.strip_prefix("#   ")).expect("the derivation command").to_string();
    let printed =
        std::process::Command::new("sh").args(["-c", &command]).env("ORG_WEBHOOK_SECRET", ORG_SECRET).output().unwrap();
    let secret_one = String::from_utf8(printed.stdout).unwrap().trim().to_string();
    assert_eq!(secret_one, hmac_hex(ORG_SECRET, one.as_bytes()));
    let secret_two = hmac_hex(ORG_SECRET, two.as_bytes());

    let serve = Serve::start(&org.env);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let post = |path: &str, secret: &str, delivery: &str| {
        let signature = hub_signature(secret, body);
        let headers =
            [("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", delivery), ("X-Hub-Signature-256", signature.as_str())];
        serve.post(path, &headers, body).0
    };
    // The admin of `one` knows `one`'s secret: it signs `one`'s webhooks, not `two`'s.
    assert_eq!(post(&format!("/forge/{one}"), &secret_one, "d-1"), 200, "{}", serve.log());
    assert_eq!(post(&format!("/forge/{two}"), &secret_one, "d-2"), 403);
    assert_eq!(post(&format!("/forge/{two}"), &secret_two, "d-3"), 200);
    // The organization's secret itself signs no repository's webhook.
    assert_eq!(post(&format!("/forge/{one}"), ORG_SECRET, "d-4"), 403);
    assert_eq!(post("/forge/acme", ORG_SECRET, "d-5"), 200, "the organization's webhook takes it");
}
