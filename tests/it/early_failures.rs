//! A failure before the image build (an invalid `.pipe.toml`, a remote moved away between poll
//! and fetch, a corrupt ref history) is recorded, shown, notified once and retried; never
//! dropped silently.

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::http::HttpSink;
use crate::support::{TestEnv, WorkRepo};

struct Fixture {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    slack: HttpSink,
    _images: ProjectImages,
}

fn fixture(base_image: &str) -> Fixture {
    let mut env = TestEnv::new();
    let project = unique_name("early").replace("pipe-test-", "");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {base_image}\nCOPY app.txt /app.txt\n"));
    repo.write("app.txt", "v1\n");
    let slack = HttpSink::start(200);
    env.env("SLACK_URL", &slack.url("/services/T0/B0/early"));
    env.config(&format!(
        r#"[pipe]
workspace = "{ws}"

[notify.slack]
webhook_url_env = "SLACK_URL"

[project.{project}]
repo = "{url}"
branches = ["main"]
"#,
        ws = env.path().join("work").display(),
        url = repo.url(),
    ));
    Fixture { _images: ProjectImages { project: project.clone() }, env, repo, project, slack }
}

/// Regression: an invalid `.pipe.toml` cleared `pending` and recorded nothing, so the commit
/// vanished from `pipe status`, was never notified and never retried.
#[test]
fn invalid_repo_file_is_recorded_notified_once_and_retried() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker.base_image);
    f.repo.write(".pipe.toml", "image = \"pipe-test/x\"\nnot_a_key = 1\n");
    let bad = f.repo.commit_to("main", "invalid repo file");

    f.env.pipe(&["run"]).code(1).stderr_has("not_a_key");
    let status = f.env.pipe(&["status", "--json"]).json();
    assert_eq!(status["refs"][0]["commit"], bad.as_str());
    assert_eq!(status["refs"][0]["stage"], "build");
    assert_eq!(status["refs"][0]["result"], "failed");
    f.env.pipe(&["logs", &f.project, "main"]).code(0).stdout_has("not_a_key");
    let messages = f.slack.taken();
    assert_eq!(messages.len(), 1, "one failure notification");
    assert!(messages[0].json()["text"].as_str().unwrap().contains("main failed at build"), "{}", messages[0].json());

    f.env.pipe(&["run"]).code(0).stderr_has("nothing to do");
    assert!(f.slack.taken().is_empty(), "not rebuilt or re-notified on the next tick");
    f.env.pipe(&["run", "--retry"]).code(1).stderr_has("not_a_key");
    // By hand it is still a configuration error, with its exit code.
    f.env.pipe(&["build", &f.project, "--commit", &bad]).code(2).stderr_has("not_a_key");

    f.repo.write(".pipe.toml", &format!("image = \"pipe-test/{}\"\ntest = \"grep -q v1 /app.txt\"\n", f.project));
    let good = f.repo.commit_to("main", "fixed");
    f.env.pipe(&["run"]).code(0);
    let status = f.env.pipe(&["status", "--json"]).json();
    assert_eq!(status["refs"][0]["commit"], good.as_str());
    assert_eq!(status["refs"][0]["result"], "passed");
}

/// Regression: a remote that vanished between poll and fetch dropped the polled commit.
#[test]
fn remote_gone_between_poll_and_fetch_is_a_recorded_build_failure() {
    let f = fixture("unused");
    let head = f.repo.commit_to("main", "first");
    f.env.pipe(&["poll"]).code(0);
    let bare = f.repo.url().trim_start_matches("file://").to_string();
    std::fs::rename(&bare, format!("{bare}.moved")).unwrap();

    f.env.pipe(&["run"]).code(1).stderr_has("cannot check out");
    let status = f.env.pipe(&["status", "--json"]).json();
    assert_eq!(status["refs"][0]["commit"], head.as_str());
    assert_eq!(status["refs"][0]["stage"], "build");
    assert_eq!(status["refs"][0]["result"], "failed");
    f.env.pipe(&["logs", &f.project, "main"]).code(0).stdout_has("cannot check out");
    assert_eq!(f.slack.taken().len(), 1, "one failure notification");
}

/// Regression: a corrupt ref history made `pipe run` exit 1 (the README documents 5) and
/// cleared `pending`, so the commit was never tried again once the file was fixed.
#[test]
fn corrupt_ref_history_exits_5_and_keeps_the_commit_pending() {
    let f = fixture("unused");
    f.repo.commit_to("main", "first");
    f.env.pipe(&["poll"]).code(0);
    let refs_dir = f.env.state_path().with_file_name("refs").join(&f.project);
    std::fs::create_dir_all(&refs_dir).unwrap();
    let history = refs_dir.join("refs-heads-main-f921bd05.toml");
    std::fs::write(&history, "schema = 1\nthis is not toml\n").unwrap();

    f.env.pipe(&["run"]).code(5).stderr_has(&history.display().to_string());
    assert!(f.env.read_state().contains("pending = true"), "{}", f.env.read_state());
    f.env.pipe(&["run"]).code(5);
    assert!(f.slack.taken().is_empty(), "a history to fix by hand is not notified on every tick");
}
