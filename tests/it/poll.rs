//! `pipe poll` against real git remotes: bare repos over file:// and a git daemon on 127.0.0.1.

use std::time::{Duration, Instant};

use snapbox::str;

use crate::support::{BareRepo, GitDaemon, GitHttpServer, Run, SilentServer, TestEnv, free_port};

fn project(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"[project.{name}]
repo = "{url}"
branches = ["main", "dev", "feature/*"]
{extra}
"#
    )
}

fn changes(run: &Run) -> Vec<(String, String, String)> {
    let doc = run.json();
    assert_eq!(doc["version"], 1);
    doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["project"].as_str().unwrap().to_string(),
                c["ref"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn branches_created_moved_and_deleted_are_reported_once() {
    let env = TestEnv::new();
    let repo = BareRepo::new(env.path(), "app");
    let main1 = repo.set("refs/heads/main");
    let dev1 = repo.set("refs/heads/dev");
    repo.set("refs/heads/feature/login");
    repo.set("refs/heads/feature/ui/deep");
    repo.set("refs/heads/unrelated");
    repo.set("refs/tags/v1");
    env.config(&project("app", &repo.url(), ""));

    let run = env.pipe(&["poll", "--json"]);
    run.code(0);
    let mut got = changes(&run);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("app".into(), "refs/heads/dev".into(), "new".into()),
            ("app".into(), "refs/heads/feature/login".into(), "new".into()),
            ("app".into(), "refs/heads/main".into(), "new".into()),
        ]
    );
    let doc = run.json();
    let main = doc["changes"].as_array().unwrap().iter().find(|c| c["ref"] == "refs/heads/main").unwrap();
    assert_eq!(main["kind"], "branch");
    assert_eq!(main["to"], main1.as_str());
    assert!(main["from"].is_null());
    assert!(env.read_state().contains(&main1), "the head is recorded");

    env.pipe(&["poll", "--json"]).code(0);
    assert_eq!(changes(&env.pipe(&["poll", "--json"])), vec![], "nothing changed, nothing reported");

    let main2 = repo.set("refs/heads/main");
    repo.delete("refs/heads/dev");
    let run = env.pipe(&["poll", "--json"]);
    run.code(0).stdout_eq(
        str![[r#"
{
  "version": 1,
  "changes": [
    {
      "project": "app",
      "ref": "refs/heads/main",
      "kind": "branch",
      "change": "updated",
      "from": "[MAIN_ONE]",
      "to": "[MAIN_TWO]"
    },
    {
      "project": "app",
      "ref": "refs/heads/dev",
      "kind": "branch",
      "change": "deleted",
      "from": "[DEV]",
      "to": null
    }
  ],
  "errors": []
}

"#]],
        &[("[MAIN_ONE]", &main1), ("[MAIN_TWO]", &main2), ("[DEV]", &dev1)],
    );
    assert!(!env.read_state().contains("refs/heads/dev"), "a deleted branch leaves the state");
}

#[test]
fn human_output_is_a_table_and_status_shows_pending_refs() {
    let env = TestEnv::new();
    let repo = BareRepo::new(env.path(), "web");
    let head = repo.set("refs/heads/main");
    env.config(&project("web", &repo.url(), ""));

    // `[HEAD_SHORT]` is as wide as the 12-digit commit it stands for: the columns stay aligned.
    let redact = [("[HEAD]", head.as_str()), ("[HEAD_SHORT]", &head[..12])];
    let run = env.pipe(&["poll"]);
    run.code(0).stdout_eq(
        str![[r#"
PROJECT  REF   CHANGE  COMMIT
web      main  new     [HEAD_SHORT]

"#]],
        &redact,
    );
    assert!(!run.stdout.contains('\x1b') && !run.stderr.contains('\x1b'), "no escape codes off a terminal");

    let run = env.pipe(&["poll"]);
    run.code(0);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.ends_with("no changes\n"), "{}", run.stderr);
    assert!(run.stderr.starts_with("20"), "timestamped lines off a terminal: {}", run.stderr);

    env.pipe(&["status"]).code(0).stdout_eq(
        str![[r#"
PROJECT  REF   COMMIT        STAGE  RESULT   AGE
web      main  [HEAD_SHORT]  poll   pending  [..]

"#]],
        &redact,
    );
    env.pipe(&["status", "--json"]).code(0).stdout_eq(
        str![[r#"
{
  "version": 1,
  "refs": [
    {
      "project": "web",
      "ref": "refs/heads/main",
      "kind": "branch",
      "head": "[HEAD]",
      "commit": "[HEAD]",
      "stage": "poll",
      "result": "pending",
      "at": "[..]",
      "age_seconds": [..]
    }
  ]
}

"#]],
        &redact,
    );
}

#[test]
fn dry_run_reports_but_records_nothing() {
    let env = TestEnv::new();
    let repo = BareRepo::new(env.path(), "app");
    repo.set("refs/heads/main");
    env.config(&project("app", &repo.url(), ""));
    let run = env.pipe(&["poll", "--dry-run", "--json"]);
    run.code(0);
    assert_eq!(changes(&run).len(), 1);
    assert!(!env.state_path().exists(), "dry run wrote the state");
}

#[test]
fn git_daemon_remote_is_listed_over_git_protocol() {
    let env = TestEnv::new();
    let served = env.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let repo = BareRepo::new(&served, "svc");
    let head = repo.set("refs/heads/dev");
    let daemon = GitDaemon::start(&served);
    env.config(&project("svc", &daemon.url("svc.git"), ""));
    let run = env.pipe(&["poll", "--json"]);
    run.code(0);
    assert_eq!(changes(&run), vec![("svc".into(), "refs/heads/dev".into(), "new".into())]);
    assert_eq!(run.json()["changes"][0]["to"], head.as_str());
}

#[test]
fn pull_requests_first_poll_builds_only_open_ones() {
    let env = TestEnv::new();
    let repo = BareRepo::new(env.path(), "app");
    repo.set("refs/heads/main");
    for n in 1..=30 {
        repo.set(&format!("refs/pull/{n}/head"));
    }
    repo.set("refs/pull/31/head");
    repo.set("refs/pull/31/merge");
    repo.set("refs/merge-requests/4/head");
    env.config(&project("app", &repo.url(), "pull_requests = true"));

    let run = env.pipe(&["poll", "--json"]);
    run.code(0).stderr_has("recorded 31 existing pull request head(s)");
    let mut got = changes(&run);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("app".into(), "refs/heads/main".into(), "new".into()),
            ("app".into(), "refs/pull/31/head".into(), "new".into()),
        ],
        "closed pull requests are a baseline, not work"
    );
    assert_eq!(run.json()["changes"][1]["kind"], "pull_request");

    repo.set("refs/pull/7/head");
    repo.set("refs/pull/32/head");
    let mut got = changes(&env.pipe(&["poll", "--json"]));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("app".into(), "refs/pull/32/head".into(), "new".into()),
            ("app".into(), "refs/pull/7/head".into(), "updated".into()),
        ],
        "after the first poll, new and moved pull requests are work"
    );
}

#[test]
fn silent_remote_times_out_and_others_are_still_polled() {
    let env = TestEnv::new();
    let silent = SilentServer::start();
    let good = BareRepo::new(env.path(), "good");
    good.set("refs/heads/main");
    let config = format!(
        r#"[pipe.timeouts]
poll = "2s"

{}
{}"#,
        project("dead", &format!("git://127.0.0.1:{}/dead.git", silent.port), ""),
        project("good", &good.url(), "")
    );
    env.config(&config);
    let started = Instant::now();
    let run = env.pipe(&["poll", "--json"]);
    let took = started.elapsed();
    run.code(1).stderr_has("error: dead:");
    assert!(took < Duration::from_secs(20), "a dead remote must not hang the poll ({took:?})");
    assert!(silent.connections() >= 1, "the remote was really contacted");
    let doc = run.json();
    assert_eq!(doc["errors"][0]["project"], "dead");
    assert!(doc["errors"][0]["message"].as_str().unwrap().contains("127.0.0.1"), "{doc}");
    assert_eq!(changes(&run), vec![("good".into(), "refs/heads/main".into(), "new".into())]);
    assert!(env.read_state().contains("[project.good.refs]"), "{}", env.read_state());
}

#[test]
fn refused_remote_is_an_error_for_that_project_only() {
    let env = TestEnv::new();
    let good = BareRepo::new(env.path(), "good");
    good.set("refs/heads/main");
    let port = free_port();
    env.config(&format!(
        "{}\n{}",
        project("gone", &format!("git://127.0.0.1:{port}/x.git"), ""),
        project("good", &good.url(), "")
    ));
    let run = env.pipe(&["poll", "--json"]);
    run.code(1);
    let doc = run.json();
    assert_eq!(doc["errors"].as_array().unwrap().len(), 1);
    assert_eq!(doc["errors"][0]["project"], "gone");
    assert_eq!(changes(&run).len(), 1);
}

/// A password in a remote's URL is a secret written inline: refused where it stands, never shown.
#[test]
fn a_password_in_a_remote_url_is_refused_and_never_shown() {
    let env = TestEnv::new();
    let port = free_port();
    env.config(&project("p", &format!("http://ci:hunter2@127.0.0.1:{port}/x.git"), ""));
    let run = env.pipe(&["poll", "--json", "-v"]);
    run.code(2)
        .stderr_has("pipeline.toml:")
        .stderr_has("a password is never written inline, not even in a URL (`http://ci:***@127.0.0.1")
        .stderr_has("token_env");
    assert!(!run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"), "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn unknown_project_is_a_usage_error() {
    let env = TestEnv::new();
    let repo = BareRepo::new(env.path(), "a");
    env.config(&project("a", &repo.url(), ""));
    env.pipe(&["poll", "nope"]).code(2).stderr_has("no project `nope`").stderr_has("`a`");
}

#[test]
fn many_repos_are_polled_in_parallel() {
    let env = TestEnv::new();
    let mut config = String::from(
        r#"[pipe]
parallel = 4

"#,
    );
    for i in 0..12 {
        let repo = BareRepo::new(env.path(), &format!("r{i}"));
        repo.set("refs/heads/main");
        config.push_str(&project(&format!("r{i}"), &repo.url(), ""));
    }
    env.config(&config);
    let run = env.pipe(&["poll", "--json"]);
    run.code(0);
    assert_eq!(changes(&run).len(), 12);
    let projects: Vec<_> = changes(&run).into_iter().map(|c| c.0).collect();
    let mut sorted = projects.clone();
    sorted.sort();
    assert_eq!(projects, sorted, "output order is stable whatever finished first");
}

#[test]
fn smart_http_remote_is_listed_with_a_token_that_never_prints() {
    let mut env = TestEnv::new();
    let served = env.path().join("http");
    std::fs::create_dir_all(&served).unwrap();
    let repo = BareRepo::new(&served, "web");
    let head = repo.set("refs/heads/main");
    repo.set("refs/tags/v1");
    let server = GitHttpServer::start(&served, Some("ci:tok-3141592653"));
    let remote = format!(
        r#"[project.web]
repo = "{}"
branches = ["main"]
"#,
        server.url("web.git")
    );

    env.config(&remote);
    env.pipe(&["poll", "--json"]).code(1).stderr_has("refused the credentials (HTTP 401)");

    env.config(&format!("{remote}auth = {{ username = \"ci\", token_env = \"WEB_TOKEN\" }}\n"));
    env.pipe(&["poll", "--json"]).code(1).stderr_has("environment variable `WEB_TOKEN`");

    env.env("WEB_TOKEN", "tok-3141592653");
    let run = env.pipe(&["poll", "--json", "-vv"]);
    run.code(0);
    assert_eq!(changes(&run), vec![("web".into(), "refs/heads/main".into(), "new".into())]);
    assert_eq!(run.json()["changes"][0]["to"], head.as_str());
    assert!(!run.stdout.contains("tok-3141592653") && !run.stderr.contains("tok-3141592653"));
    assert!(!env.read_state().contains("tok-3141592653"));
}
