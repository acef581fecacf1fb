//! Holes found by attacking pipe as an outsider would, each kept as the attack that found it:
//! every test failed before its fix and shows the attack refused next to the legitimate path.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::docker::{
    ComposeProject, Docker, ImageCleanup, ProjectImages, Registry, unique_name, write_web_compose,
};
use crate::support::http::get;
use crate::support::{TestEnv, WorkRepo, free_port, git};

/// A pull request of one project whose Dockerfile gives its build steps the compose labels
/// of another project's service: while a step of its build ran, that step's container was, to
/// compose and to pipe's rollout, a container of the other project's service, and the other
/// project's deploy in the same tick failed (docker-compose v1 stops on a container without a
/// `container-number` label). Such a Dockerfile is now refused before its build.
#[test]
fn a_pull_request_image_posing_as_another_projects_service_cannot_break_its_deploy() {
    label_attack(
        "LABEL com.docker.compose.project={victim} com.docker.compose.service=web com.docker.compose.oneoff=False",
    );
}

/// The attack: a pull request of another project on the same host whose Dockerfile writes
/// `label` (`{victim}` stands for the victim's compose project) and then takes its time in a
/// build step, built in the same tick as the victim's deploy; the victim must answer with its
/// new version.
pub(crate) fn label_attack(label: &str) {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let victim = unique_name("v").replace("pipe-test-", "");
    let attacker = unique_name("a").replace("pipe-test-", "");
    let (_iv, _ia) = (ProjectImages { project: victim.clone() }, ProjectImages { project: attacker.clone() });
    // Dropped before the images: its containers go first.
    let _cv = ComposeProject { name: victim.clone() };

    // The victim: a trusted branch deployed in place with compose.
    let repo = WorkRepo::new(env.path(), "victim");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write("www/index.html", "version 1\n");
    repo.write(".pipe.toml", &format!("image = \"pipe-test/{victim}\"\ntest = \"true\"\n"));
    repo.commit_to("dev", "version 1");
    let port = free_port();
    let file = env.path().join("deploy").join("docker-compose.yml");
    write_web_compose(&file, port);

    // The attacker: a pull request of another project on the same host.
    let hostile = WorkRepo::new(env.path(), "hostile");
    hostile.write("Dockerfile", &format!("FROM {}\n", docker.base_image));
    hostile.write(".pipe.toml", "test = \"true\"\n");
    hostile.commit_to("main", "main");

    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[project.{victim}]
repo = "{vurl}"
branches = ["dev"]

[[project.{victim}.deploy]]
branches = ["dev"]
compose = {{ file = "{file}", project = "{victim}", services = ["web"] }}

[project.{attacker}]
repo = "{aurl}"
image = "pipe-test/{attacker}"
branches = ["main"]
pull_requests = true
"#,
        ws = env.path().join("work").display(),
        vurl = repo.url(),
        aurl = hostile.url(),
        file = file.display(),
    ));

    // A first tick: both projects built, the victim's version 1 deployed.
    env.pipe(&["run"]).code(0);

    // The pull request's Dockerfile claims the victim's compose project and service, then
    // takes its time in a build step (the untrusted ref builds with the legacy builder, whose
    // step containers carry the labels set so far); the victim pushes version 2.
    hostile.write(
        "Dockerfile",
        &format!("FROM {}\n{}\nRUN sleep 40\n", docker.base_image, label.replace("{victim}", &victim)),
    );
    git(&hostile.work, &["add", "--all"]);
    git(&hostile.work, &["commit", "--quiet", "-m", "a pull request"]);
    git(&hostile.work, &["push", "--quiet", "--force", "origin", "HEAD:refs/pull/1/head"]);
    repo.write("www/index.html", "version 2\n");
    repo.commit_to("dev", "version 2");

    // Both projects in one tick, as the timer runs them (projects in parallel).
    let run = env.command(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start pipe run");
    let output = run.wait_with_output().expect("pipe run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Some((200, body)) = get(&format!("http://127.0.0.1:{port}/")) {
            answer = Some(body.trim().to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = env.pipe(&["logs", &victim, "dev"]).stdout.clone();
    assert_eq!(
        answer.as_deref(),
        Some("version 2"),
        "the victim's deploy, run while another project's pull request built, never answered\nstderr:\n{stderr}\nvictim's log:\n{log}"
    );
}

/// A project whose pipeline entry names no image takes the name from its repository's
/// `.pipe.toml`. Naming another project's image is refused only when a tag of it is on this
/// engine already: on a host that has not built the other project yet (a new CI host, after
/// `pipe prune`, a project added today), the repository's build takes the other project's
/// image name and pushes over its tags in the registry its deploy hosts pull from.
#[test]
fn a_repository_cannot_push_over_the_image_another_project_holds_on_a_fresh_host() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "pw-attack-image");
    let mut env = TestEnv::new();
    env.env("REG_PW", "pw-attack-image");
    let owner = unique_name("o").replace("pipe-test-", "");
    let taker = unique_name("t").replace("pipe-test-", "");
    let (_io, _it) = (ProjectImages { project: owner.clone() }, ProjectImages { project: taker.clone() });
    let held = format!("team/{owner}");

    let owner_repo = WorkRepo::new(env.path(), "owner");
    owner_repo.write("Dockerfile", &format!("FROM {}\nRUN echo owner > /who\n", docker.base_image));
    owner_repo.commit_to("main", "the owner's service");
    let taker_repo = WorkRepo::new(env.path(), "taker");
    taker_repo.write("Dockerfile", &format!("FROM {}\nRUN echo taker > /who\n", docker.base_image));
    taker_repo.write(".pipe.toml", &format!("image = \"{held}\"\ntest = \"true\"\n"));
    taker_repo.commit_to("main", "names the owner's image");

    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[registry.local]
url = "{reg}"
username = "ci"
password_env = "REG_PW"

[project.{owner}]
repo = "{ourl}"
image = "{held}"
branches = ["main"]

[[project.{owner}.deploy]]
branches = ["main"]
push = ["local"]

[project.{taker}]
repo = "{turl}"
branches = ["main"]

[[project.{taker}.deploy]]
branches = ["main"]
push = ["local"]
"#,
        ws = env.path().join("work").display(),
        reg = reg.host(),
        ourl = owner_repo.url(),
        turl = taker_repo.url(),
    ));
    let _guard = ImageCleanup { names: vec![held.clone()] };

    // The taker's tick comes first (the owner builds on another host, or later today).
    let run = env.pipe(&["run", &taker]);
    let stderr = run.stderr.clone();
    let local = std::process::Command::new("docker")
        .args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}", &held])
        .output()
        .unwrap();
    let path = held.as_str();
    assert!(
        reg.tags(path).is_empty(),
        "project `{taker}`'s repository pushed over `{held}`, the image the pipeline file gives `{owner}`: tags {:?}\nlocal: {}\nstderr:\n{stderr}",
        reg.tags(path),
        String::from_utf8_lossy(&local.stdout)
    );
    assert!(
        stderr.contains(&format!("project `{owner}` holds it")) && stderr.contains(".pipe.toml"),
        "the refusal names neither the file nor the holder\nstderr:\n{stderr}"
    );
}

/// A serve hook whose `compose` names no project deploys to the compose project `HOOK-serve`
/// (`config::Hook::default_project`), but discovery counts it as holding `HOOK`: a repository
/// named `HOOK-serve` becomes a project whose compose target (the template's `project =
/// "{name}"`, or none) is the hook's own compose project, so its deploy replaces the containers
/// the hook runs on this host, and the hook's next deploy replaces the repository's.
#[test]
fn a_listed_repository_cannot_take_the_compose_project_a_serve_hook_deploys_to() {
    use crate::support::GitHttpServer;
    use crate::support::forge_api::{ForgeApi, TOKEN};
    use serde_json::json;

    let mut env = TestEnv::new();
    env.env("FORGE_TOKEN", TOKEN).env("HOOK_TOKEN", "hook-token-attack");
    let root = env.path().join("org");
    std::fs::create_dir_all(&root).unwrap();
    let git_server = GitHttpServer::start(&root, None);
    let api = ForgeApi::start(&env, "github", None);
    let p = unique_name("hk").replace("pipe-test-", "");
    let hook = format!("{p}-shop");
    let repo_name = format!("{hook}-serve");
    let work = WorkRepo::new(&root, &repo_name);
    work.write(".pipe.toml", "test = \"true\"\n").write("Dockerfile", "FROM pipe-busybox:latest\n");
    work.commit_to("main", "first");
    api.set_org(&json!({"org": "acme", "repos": [{
        "name": repo_name,
        "clone_url": git_server.url(&format!("{repo_name}.git")),
        "default_branch": "main",
        "pushed_at": "2026-11-01T00:00:00Z",
    }]}));
    let compose = env.path().join("compose.yml");
    std::fs::write(&compose, "services:\n  web:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n").unwrap();
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "github"
api = "http://127.0.0.1:{port}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"
git = "http://127.0.0.1:{git}"

[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"

[[forge.acme.discover.project.deploy]]
branches = ["main"]
compose = {{ file = "{file}", project = "{{name}}" }}

[serve.hooks.{hook}]
token_env = "HOOK_TOKEN"
images = ["pipe-test/{hook}"]
compose = {{ file = "{file}" }}
"#,
        ws = env.path().join("work").display(),
        port = api.port,
        git = git_server.port,
        file = compose.display(),
    ));
    let check = env.pipe(&["check", "--json"]).json();
    let repos = check["discovery"][0]["repos"].clone();
    let decision = repos
        .as_array()
        .and_then(|a| a.iter().find(|r| r["repo"] == repo_name.as_str()))
        .unwrap_or_else(|| panic!("{repo_name} not listed: {check:#}"))
        .clone();
    assert_eq!(
        decision["decision"], "name-taken",
        "`{repo_name}` became a project whose compose project is the one serve hook `{hook}` deploys to (`{hook}-serve`): {decision:#}"
    );
}

/// Compose names a project's volumes `PROJECT_VOLUME`. Discovery compared project and compose
/// project names whole, so a repository named `shop_db` is admitted beside the written-out
/// project `shop`, though the volume `data` of its compose project is `shop_db_data`, the very
/// volume `shop`'s `db_data` is. The repository's code (its branches are trusted by default)
/// then runs with the other project's database mounted.
#[test]
fn a_listed_repository_cannot_mount_another_projects_volume() {
    use crate::support::GitHttpServer;
    use crate::support::forge_api::{ForgeApi, TOKEN};
    use serde_json::json;

    let Some(docker) = Docker::require() else { return };
    let mut env = TestEnv::new();
    env.env("FORGE_TOKEN", TOKEN);
    let root = env.path().join("org");
    std::fs::create_dir_all(&root).unwrap();
    let git_server = GitHttpServer::start(&root, None);
    let api = ForgeApi::start(&env, "github", None);
    let shop = unique_name("vo").replace("pipe-test-", "");
    let taker = format!("{shop}_db");
    let volume = format!("{shop}_db_data");
    let (_iv, _it) = (ProjectImages { project: shop.clone() }, ProjectImages { project: taker.clone() });
    struct Volume(String);
    impl Drop for Volume {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "--force", &self.0])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _volume = Volume(volume.clone());
    // Dropped before the volume: its containers go first.
    let (_cv, _ct) = (ComposeProject { name: shop.clone() }, ComposeProject { name: taker.clone() });

    // The written-out project: its database keeps a secret in the volume `db_data`.
    let shop_repo = WorkRepo::new(env.path(), "shop");
    shop_repo.write("Dockerfile", &format!("FROM {}\n", docker.base_image));
    shop_repo.write(".pipe.toml", "test = \"true\"\n");
    shop_repo.commit_to("main", "the shop");
    let shop_compose = env.path().join("shop.yml");
    std::fs::write(
        &shop_compose,
        "version: \"2.4\"\nservices:\n  db:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    \
         command: [\"sh\", \"-c\", \"echo shop-db-secret > /data/secret; sleep 600\"]\n    \
         volumes: [\"db_data:/data\"]\nvolumes:\n  db_data: {}\n",
    )
    .unwrap();

    // The organization's template: each discovered service keeps its data in `data`.
    let work = WorkRepo::new(&root, &taker);
    work.write(".pipe.toml", "test = \"true\"\n")
        .write("Dockerfile", &format!("FROM {}\nCMD [\"sleep\", \"600\"]\n", docker.base_image));
    work.commit_to("main", "first");
    api.set_org(&json!({"org": "acme", "repos": [{
        "name": taker,
        "clone_url": git_server.url(&format!("{taker}.git")),
        "default_branch": "main",
        "pushed_at": "2026-11-01T00:00:00Z",
    }]}));
    let template_compose = env.path().join("service.yml");
    std::fs::write(
        &template_compose,
        "version: \"2.4\"\nservices:\n  app:\n    image: ${PIPE_IMAGE}:${PIPE_TAG}\n    \
         volumes: [\"data:/data\"]\nvolumes:\n  data: {}\n",
    )
    .unwrap();
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "github"
api = "http://127.0.0.1:{port}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"
git = "http://127.0.0.1:{git}"

[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"

[[forge.acme.discover.project.deploy]]
branches = ["main"]
compose = {{ file = "{template}", project = "{{name}}" }}

[project.{shop}]
repo = "{shop_url}"
image = "pipe-test/{shop}"
branches = ["main"]

[[project.{shop}.deploy]]
branches = ["main"]
compose = {{ file = "{shop_file}", project = "{shop}" }}
"#,
        ws = env.path().join("work").display(),
        port = api.port,
        git = git_server.port,
        template = template_compose.display(),
        shop_url = shop_repo.url(),
        shop_file = shop_compose.display(),
    ));
    env.pipe(&["run", &shop]).code(0);
    let run = env.pipe(&["run"]);
    let mounted = docker.ok(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label=com.docker.compose.project={taker}"),
        "--filter",
        &format!("volume={volume}"),
    ]);
    let read = mounted.lines().next().map(|id| {
        let out = std::process::Command::new("docker").args(["exec", id.trim(), "cat", "/data/secret"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    });
    assert!(
        mounted.trim().is_empty(),
        "the listed repository `{taker}` runs with project `{shop}`'s volume `{volume}` mounted; its container reads {read:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

/// A listed clone URL was checked against the forge API's host only, not its scheme and
/// port. A listing (a hostile or compromised forge answer, a proxy in front of the API) that
/// names `http://FORGE-HOST:OTHER-PORT/…` gets the organization's git token sent there, to a
/// service the forge does not run (another port, plain HTTP): the credential leaves its origin.
#[test]
fn a_listed_clone_url_on_another_port_is_not_handed_the_git_token() {
    use crate::support::GitHttpServer;
    use crate::support::forge_api::{ForgeApi, TOKEN};
    use serde_json::json;

    let mut env = TestEnv::new();
    env.env("FORGE_TOKEN", TOKEN).env("GIT_TOKEN", "git-token-5e1f");
    let root = env.path().join("elsewhere");
    std::fs::create_dir_all(&root).unwrap();
    // Another service on the API's host: it answers only to the organization's git token.
    let elsewhere = GitHttpServer::start(&root, Some("x-access-token:git-token-5e1f"));
    let api = ForgeApi::start(&env, "github", None);
    assert_ne!(elsewhere.port, api.port);
    let name = unique_name("port").replace("pipe-test-", "");
    let work = WorkRepo::new(&root, &name);
    work.write(".pipe.toml", "test = \"true\"\n").write("Dockerfile", "FROM pipe-busybox:latest\n");
    work.commit_to("main", "first");
    api.set_org(&json!({"org": "acme", "repos": [{
        "name": name,
        "clone_url": elsewhere.url(&format!("{name}.git")),
        "default_branch": "main",
        "pushed_at": "2026-11-01T00:00:00Z",
    }]}));
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[forge.acme]
kind = "github"
api = "http://127.0.0.1:{port}"
token_env = "FORGE_TOKEN"

[forge.acme.discover]
org = "acme"

[forge.acme.discover.project]
branches = ["main"]
image = "pipe-test/{{name}}"
auth = {{ token_env = "GIT_TOKEN" }}
"#,
        ws = env.path().join("work").display(),
        port = api.port,
    ));
    let check = env.pipe(&["check", "--json"]).json();
    let decision = check["discovery"][0]["repos"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["repo"] == name.as_str()))
        .map_or(serde_json::Value::Null, |d| d["decision"].clone());
    assert_ne!(
        decision,
        "project",
        "the clone URL {} (the API is on port {}) was probed with the git token: {check:#}",
        elsewhere.url(&format!("{name}.git")),
        api.port
    );
}
