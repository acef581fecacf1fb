//! `pipe prune` against a real engine: images of deleted branches and images beyond
//! `keep_images` go, logs beyond `keep_logs` and stray log files go, and an image a deploy
//! target can roll back to stays, proven by rolling back to it afterwards.

use std::process::{Command, Stdio};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::{TestEnv, WorkRepo, git};

fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn config(env: &TestEnv, project: &str, repo: &WorkRepo, keep_logs: u32) -> String {
    format!(
        r#"[pipe]
workspace = "{ws}"

[project.{project}]
repo = "{url}"
branches = ["dev", "feature/*"]
keep_images = 1
keep_logs = {keep_logs}

[[project.{project}.deploy]]
name = "devhost"
branches = ["dev"]
command = {{ argv = ["true"] }}
"#,
        ws = env.path().join("work").display(),
        url = repo.url(),
    )
}

#[test]
fn prune_removes_what_no_ref_or_target_needs_and_keeps_rollback_images() {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let project = unique_name("prune").replace("pipe-test-", "");
    let image = format!("pipe-test/{project}");
    let _images = ProjectImages { project: project.clone() };
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY version /version\n", docker.base_image));
    env.config(&config(&env, &project, &repo, 10));
    let commit = |n: u32, test: &str, branch: &str| {
        repo.write("version", &format!("{n} {project}\n"));
        repo.write(
            ".pipe.toml",
            &format!(
                r#"image = "{image}"
test = {test:?}
"#
            ),
        );
        repo.commit_to(branch, &format!("version {n}"))
    };
    let tag = |sha: &str| format!("{image}:{}", &sha[..12]);

    let v1 = commit(1, "true", "dev");
    env.pipe(&["run"]).code(0).stdout_has("deploy  passed");
    let mut failing = Vec::new();
    for n in 2..=4 {
        failing.push(commit(n, "exit 1", "dev"));
        env.pipe(&["run"]).code(1);
    }
    let feature = commit(5, "true", "feature/gone");
    env.pipe(&["run"]).code(0);
    for sha in [&v1, &feature].into_iter().chain(&failing) {
        assert!(image_exists(&tag(sha)), "{sha} was built");
    }
    git(&repo.work, &["push", "--quiet", "origin", "--delete", "feature/gone"]);
    env.pipe(&["poll"]).code(0).stdout_has("deleted");

    let state_dir = env.state_path().parent().unwrap().to_path_buf();
    let logs_root = state_dir.join("logs").join(&project);
    let dev_dir = std::fs::read_dir(&logs_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains("dev"))
        .expect("dev's log directory");
    let dev_logs = || std::fs::read_dir(&dev_dir).unwrap().count();
    assert_eq!(dev_logs(), 4, "four runs of dev, each with its log");
    let stray = dev_dir.join("999.log");
    std::fs::write(&stray, "a log no run points at").unwrap();

    // keep_images = 1 and keep_logs = 2 from now on.
    env.config(&config(&env, &project, &repo, 2));
    let dry = env.pipe(&["prune", "--dry-run"]);
    dry.code(0)
        .stderr_has(&format!("would run: docker image rm {}", tag(&failing[1])))
        .stderr_has("feature/gone is gone from the remote")
        .stdout_has("would remove 3 image(s)");
    assert!(image_exists(&tag(&failing[1])) && image_exists(&tag(&feature)), "a dry run removes nothing");
    assert!(stray.exists());

    let pruned = env.pipe(&["prune", "--json"]);
    pruned.code(0);
    let doc = pruned.json();
    assert_eq!(doc["version"], 1);
    let removed: Vec<&str> =
        doc["removed_images"].as_array().unwrap().iter().map(|i| i["commit"].as_str().unwrap()).collect();
    assert_eq!(removed.len(), 3, "{doc}");
    for sha in [&failing[0], &failing[1], &feature] {
        assert!(removed.contains(&sha.as_str()), "{sha} removed: {doc}");
        assert!(!image_exists(&tag(sha)), "{sha} is gone from the engine");
    }
    assert!(image_exists(&tag(&failing[2])), "dev's head image stays (its ref still needs it)");
    assert!(image_exists(&tag(&v1)), "the deployed image stays");
    assert_eq!(doc["kept_deployed"][0]["commit"], v1.as_str());
    assert!(!stray.exists(), "a log no run points at is removed");
    assert_eq!(dev_logs(), 2, "keep_logs = 2 leaves two logs of dev");
    let left = |kind: &str| std::fs::read_dir(state_dir.join(kind).join(&project)).unwrap().count();
    assert_eq!((left("refs"), left("logs")), (1, 1), "the deleted branch's history and logs are gone, dev's stay");
    env.pipe(&["logs", &project, "dev"]).code(0);

    // The image kept for rollback really is usable: roll back to it.
    env.pipe(&["deploy", &project, "dev", "--commit", &v1]).code(0);
    // And a second prune finds nothing more to do.
    env.pipe(&["prune"]).code(0).stdout_has("removed 0 image(s) and 0 history and log file(s)");
}
