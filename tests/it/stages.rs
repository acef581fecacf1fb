//! `pipe build`, `pipe test`, `pipe push` and `pipe logs` against the real Docker engine, a
//! real git remote and Debian's docker-registry with htpasswd auth on 127.0.0.1.

use std::process::Command;

use crate::support::docker::{Docker, ImageGuard, ProjectImages, Registry, unique_name};
use crate::support::{GitHttpServer, TestEnv, WorkRepo, git};

/// A project whose image is built from the local busybox base.
struct Fixture {
    env: TestEnv,
    repo: WorkRepo,
    project: String,
    image: String,
    _images: ProjectImages,
}

fn fixture(docker: &Docker, test: &str) -> Fixture {
    let env = TestEnv::new();
    let project = unique_name("p").replace("pipe-test-", "").replace('_', "-");
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write(
        "Dockerfile",
        &format!(
            r#"FROM {}
COPY app.txt /app.txt
RUN echo step-ran
CMD ["cat", "/app.txt"]
"#,
            docker.base_image
        ),
    )
    .write("app.txt", "hello v1\n")
    .write(
        ".pipe.toml",
        &format!(
            r#"image = "{image}"
test = {test:?}
"#
        ),
    );
    Fixture { _images: ProjectImages { project: project.clone() }, env, repo, project, image }
}

fn config(f: &Fixture, extra_project: &str, extra: &str) -> String {
    format!(
        r#"[pipe]
workspace = "{ws}"

{extra}
[project.{p}]
repo = "{url}"
branches = ["**"]
{extra_project}
"#,
        ws = f.env.path().join("work").display(),
        p = f.project,
        url = f.repo.url(),
    )
}

fn registry_config(reg: &Registry, f: &Fixture, password_env: &str) -> String {
    let registry = format!(
        r#"[registry.local]
url = "{}"
username = "{}"
password_env = "{password_env}"
"#,
        reg.host(),
        reg.user
    );
    config(
        f,
        r#"[[project.P.deploy]]
branches = ["main"]
push = ["local"]
"#
        .replace("P", &f.project)
        .as_str(),
        &registry,
    )
}

fn inspect(image: &str, format: &str) -> String {
    let out = Command::new("docker").args(["image", "inspect", "--format", format, image]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn build_test_push_a_commit_to_a_real_registry() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "reg-pass-271828");
    let mut f = fixture(&docker, "grep -q 'hello v1' /app.txt && echo tests-ok");
    let sha = f.repo.commit_to("main", "first");
    f.env.config(&registry_config(&reg, &f, "REG_PASSWORD"));
    f.env.env("REG_PASSWORD", "reg-pass-271828");
    let env = &f.env;

    env.pipe(&["poll"]).code(0);
    let dry = env.pipe(&["build", &f.project, "--dry-run"]);
    dry.code(0).stdout_has("git fetch");
    env.pipe(&["build", &f.project]).code(0).stderr_has(&format!(
        "built {}:latest, {}:{}",
        f.image,
        f.image,
        &sha[..12]
    ));

    let local = format!("{}:{}", f.image, &sha[..12]);
    assert_eq!(inspect(&local, "{{index .Config.Labels \"org.opencontainers.image.revision\"}}"), sha);
    assert_eq!(inspect(&local, "{{index .Config.Labels \"org.opencontainers.image.source\"}}"), f.repo.url());
    assert!(inspect(&local, "{{index .Config.Labels \"org.opencontainers.image.created\"}}").starts_with("20"));
    assert_eq!(inspect(&format!("{}:latest", f.image), "{{.Id}}"), inspect(&local, "{{.Id}}"));

    env.pipe(&["push", &f.project]).code(1).stderr_has("tests have not run");
    env.pipe(&["test", &f.project]).code(0).stderr_has("passed");
    let push_dry = env.pipe(&["push", &f.project, "--dry-run"]);
    push_dry.code(0).stdout_has("--password-stdin").stdout_has(&format!("push {}/{}:latest", reg.host(), f.image));
    assert!(!push_dry.stdout.contains("reg-pass-271828"));
    assert!(reg.tags(&f.image).is_empty(), "a dry run pushes nothing");
    let push = env.pipe(&["push", &f.project, "-vv"]);
    push.code(0);
    assert!(!push.stderr.contains("reg-pass-271828") && !push.stdout.contains("reg-pass-271828"), "{}", push.stderr);

    assert_eq!(reg.tags(&f.image), vec![sha[..12].to_string(), "latest".to_string()]);
    let digest = reg.digest(&f.image, "latest").expect("manifest digest");
    let history = std::fs::read_to_string(
        env.state_path().with_file_name("refs").join(&f.project).join("refs-heads-main-f921bd05.toml"),
    )
    .unwrap();
    assert!(history.contains(&format!("local = \"{digest}\"")), "recorded digest {digest} in\n{history}");
    // For the status page: the commit's subject and author's name, from the build's checkout.
    assert!(history.contains("\nsubject = \"first\"\n") && history.contains("\nauthor = \"pipe test\"\n"), "{history}");

    let status = env.pipe(&["status", "--json"]).json();
    assert_eq!(status["refs"][0]["stage"], "push");
    assert_eq!(status["refs"][0]["result"], "passed");
    let logs = env.pipe(&["logs", &f.project, "main"]);
    logs.code(0).stdout_has("step-ran").stdout_has("tests-ok");
    let logs = env.pipe(&["logs", &f.project, "main", "--json"]).json();
    assert_eq!(logs["run"], 1);
    assert_eq!(logs["stages"].as_array().unwrap().len(), 3);
    assert_eq!(logs["digests"]["local"], digest.as_str());
    assert_eq!(logs["image_id"], inspect(&local, "{{.Id}}").as_str());
    assert_eq!(logs["tags"][0], "latest");
    let state_dir = env.state_path().parent().unwrap().to_path_buf();
    let docker_config = std::fs::read_to_string(state_dir.join("docker").join("config.json")).unwrap();
    assert!(docker_config.contains(&reg.host()), "login went to pipe's own DOCKER_CONFIG");
}

#[test]
fn a_failed_test_pushes_nothing_unless_forced() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("ci", "pw-1");
    let mut f = fixture(&docker, "echo failing-on-purpose; exit 3");
    f.repo.commit_to("main", "first");
    f.env.config(&registry_config(&reg, &f, "REG_PASSWORD"));
    f.env.env("REG_PASSWORD", "pw-1");
    let env = &f.env;
    env.pipe(&["build", &f.project]).code(0);
    env.pipe(&["test", &f.project]).code(1).stderr_has("exit status: 3").stderr_has("failing-on-purpose");
    env.pipe(&["push", &f.project]).code(1).stderr_has("refusing to push").stderr_has("ended `failed`");
    assert!(reg.tags(&f.image).is_empty(), "nothing reached the registry");
    assert_eq!(env.pipe(&["status", "--json"]).json()["refs"][0]["result"], "failed");
    env.pipe(&["push", &f.project, "--force"]).code(0);
    assert_eq!(reg.tags(&f.image).len(), 2);
}

#[test]
fn a_build_that_times_out_is_stopped_and_recorded() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker, "true");
    // The project name makes the steps unique, so no earlier run's build cache hides their output.
    let dockerfile = format!(
        r#"FROM {}
ARG GREETING
RUN echo "greeting=$GREETING in {}"
RUN sleep 60
"#,
        docker.base_image, f.project
    );
    f.repo.write("Dockerfile", &dockerfile);
    f.repo.commit_to("main", "slow build");
    f.env.config(&config(&f, "build_args = { GREETING = \"from-config\" }\ntimeouts = { build = \"4s\" }", ""));
    let started = std::time::Instant::now();
    f.env.pipe(&["build", &f.project]).code(1).stderr_has("timed out after 4s");
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
    f.env.pipe(&["logs", &f.project, "main"]).code(0).stdout_has("greeting=from-config");
    assert_eq!(f.env.pipe(&["status", "--json"]).json()["refs"][0]["result"], "timed_out");
}

#[test]
fn a_test_that_times_out_leaves_no_container() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker, "sleep 60");
    f.repo.commit_to("main", "first");
    f.env.config(&config(&f, "timeouts = { test = \"3s\" }", ""));
    f.env.pipe(&["build", &f.project]).code(0);
    let started = std::time::Instant::now();
    f.env.pipe(&["test", &f.project]).code(1).stderr_has("timed out after 3s");
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
    let left = docker.ok(&["ps", "--all", "--quiet", "--filter", &format!("label=pipe.run={}-main-1", f.project)]);
    assert_eq!(left.trim(), "", "the timed-out test container is gone");
    assert_eq!(f.env.pipe(&["status", "--json"]).json()["refs"][0]["result"], "timed_out");
}

#[test]
fn test_services_run_on_a_private_network_and_are_removed() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker, "wget -q -O- http://db/passwd | grep -q root && echo reached-db");
    let marker = unique_name("svc");
    f.repo.write(
        "services.yml",
        &format!(
            r#"version: "2.4"
services:
  db:
    image: {}
    command: ["httpd", "-f", "-p", "80", "-h", "/etc"]
    labels:
      pipe.testcase: {marker}
"#,
            docker.base_image
        ),
    );
    f.repo.write(
        ".pipe.toml",
        &format!(
            r#"image = "{}"
test = "sleep 1; wget -q -O- http://db/passwd | grep -q root && echo reached-db"
test_services = "services.yml"
"#,
            f.image
        ),
    );
    f.repo.commit_to("main", "with services");
    f.env.config(&config(&f, "", ""));
    f.env.pipe(&["build", &f.project]).code(0);
    f.env.pipe(&["test", &f.project]).code(0);
    f.env.pipe(&["logs", &f.project, "main"]).code(0).stdout_has("reached-db");
    let left = docker.ok(&["ps", "--all", "--quiet", "--filter", &format!("label=pipe.testcase={marker}")]);
    assert_eq!(left.trim(), "", "test services are removed after the test");
}

#[test]
fn hostile_branch_names_get_distinct_valid_tags_and_run_nothing() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker, "true");
    f.repo.commit_to("main", "first");
    let long = "l".repeat(250);
    let branches = ["x$(touch${IFS}pwned)", "Feature/Ünïcode", "feat/a", "feat-a", long.as_str()];
    for b in branches {
        f.repo.commit_to(b, b);
    }
    f.env.config(&config(&f, "", ""));
    f.env.pipe(&["poll"]).code(0);
    let mut tags = Vec::new();
    for b in branches {
        f.env.pipe(&["build", &f.project, b]).code(0);
        let history = f.env.pipe(&["logs", &f.project, b, "--json"]).json();
        assert_eq!(history["ref"], format!("refs/heads/{b}"));
        let listed = docker.ok(&["image", "ls", "--format", "{{.Tag}}", &f.image]);
        tags = listed.lines().map(str::to_string).collect();
    }
    for tag in &tags {
        assert!(tag.len() <= 128 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)), "{tag}");
    }
    let moving: Vec<_> = tags.iter().filter(|t| t.len() != 12).collect();
    assert_eq!(moving.len(), branches.len(), "one distinct moving tag per branch: {tags:?}");
    assert!(tags.contains(&"feat-a".to_string()));
    for dir in [f.env.path().to_path_buf(), f.env.path().join("work").join(&f.project).join("src")] {
        assert!(!dir.join("pwned").exists(), "a branch name was executed in {}", dir.display());
    }
}

#[test]
fn the_image_name_comes_from_jenkins_env_and_its_absence_is_clear() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker, "true");
    f.repo.write(".pipe.toml", "test = \"true\"\n");
    f.repo.write(".jenkins-env", &format!("imagename=\"{}\"\n", f.image));
    f.repo.commit_to("main", "jenkins style");
    f.env.config(&config(&f, "", ""));
    f.env.pipe(&["build", &f.project]).code(0).stderr_has(&format!("built {}:latest", f.image));

    std::fs::remove_file(f.repo.work.join(".jenkins-env")).unwrap();
    f.repo.commit_to("main", "no image name");
    f.env
        .pipe(&["build", &f.project])
        .code(1)
        .stderr_has(&format!("project `{}` names no image", f.project))
        .stderr_has("hint:");
}

#[test]
fn ecr_login_uses_the_aws_cli_password_on_stdin() {
    let Some(docker) = Docker::require() else { return };
    let reg = Registry::start("AWS", "ecr-token-161803");
    let mut f = fixture(&docker, "true");
    f.repo.commit_to("main", "first");
    let bin = f.env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv_log = f.env.path().join("aws-argv");
    std::fs::write(
        bin.join("aws"),
        format!(
            r#"#!/bin/sh
echo "$@" > {}
echo ecr-token-161803
"#,
            argv_log.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(bin.join("aws")).unwrap().permissions(), 0o755);
    std::fs::set_permissions(bin.join("aws"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let registry = format!(
        r#"[registry.prod]
url = "{}"
ecr = {{ region = "eu-west-1", profile = "production" }}
"#,
        reg.host()
    );
    f.env.config(&config(
        &f,
        &format!(
            r#"[[project.{}.deploy]]
branches = ["main"]
push = ["prod"]
"#,
            f.project
        ),
        &registry,
    ));
    f.env.env("PATH", &format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()));
    let env = &f.env;
    env.pipe(&["build", &f.project]).code(0);
    env.pipe(&["test", &f.project]).code(0);
    let push = env.pipe(&["push", &f.project, "-vv"]);
    push.code(0);
    assert!(!push.stderr.contains("ecr-token-161803"));
    assert_eq!(
        std::fs::read_to_string(&argv_log).unwrap().trim(),
        "ecr get-login-password --region eu-west-1 --profile production"
    );
    assert_eq!(reg.tags(&f.image).len(), 2, "the real login worked");
}

#[test]
fn developers_build_and_test_their_working_tree_as_ci_would() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker, "grep -q uncommitted /app.txt && echo here-tests-ok");
    let sha = f.repo.commit_to("main", "first");
    f.repo.write("app.txt", "uncommitted change\n");
    let mut cmd = f.env.command(&["test", "--here"]);
    cmd.env_remove("PIPE_CONFIG").current_dir(&f.repo.work);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("here-tests-ok") && stderr.contains("uncommitted changes included"), "{stderr}");
    let dirty = format!("{}:{}-dirty", f.image, &sha[..12]);
    // A working-tree build is labelled with the checkout's name, not the test's project.
    let _built = [ImageGuard { name: dirty.clone() }, ImageGuard { name: format!("{}:latest", f.image) }];
    assert_eq!(inspect(&dirty, "{{index .Config.Labels \"org.opencontainers.image.revision\"}}"), sha);
    assert_eq!(
        inspect(&format!("{}:latest", f.image), "{{.Id}}"),
        inspect(&dirty, "{{.Id}}"),
        "main is tagged latest, as in CI"
    );
    assert!(!f.env.state_path().exists(), "--here records nothing");
}

#[test]
fn a_project_on_an_http_remote_with_a_token_is_fetched_and_built() {
    let Some(docker) = Docker::require() else { return };
    let mut f = fixture(&docker, "true");
    let sha = f.repo.commit_to("main", "over http");
    let served = f.repo.bare.parent().unwrap().to_path_buf();
    let server = GitHttpServer::start(&served, Some("ci:http-token-577215"));
    f.env.config(&format!(
        r#"[pipe]
workspace = "{}"

[project.{}]
repo = "{}"
branches = ["main"]
auth = {{ username = "ci", token_env = "GIT_TOKEN" }}
"#,
        f.env.path().join("work").display(),
        f.project,
        server.url("app.git")
    ));
    f.env.env("GIT_TOKEN", "http-token-577215");
    let run = f.env.pipe(&["build", &f.project, "-vv"]);
    run.code(0).stderr_has(&sha[..12]);
    assert!(!run.stderr.contains("http-token-577215"), "{}", run.stderr);
    let history = f.env.pipe(&["logs", &f.project, "main", "--json"]).json();
    assert_eq!(history["commit"], sha.as_str());
}

#[test]
fn an_unreachable_engine_is_exit_4_and_records_nothing() {
    let Some(docker) = Docker::require() else { return };
    let mut f = fixture(&docker, "true");
    f.repo.commit_to("main", "first");
    f.env.config(&config(&f, "", ""));
    f.env.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let run = f.env.pipe(&["build", &f.project]);
    run.code(4).stderr_has("the Docker engine does not answer").stderr_has("hint:");
    assert!(!f.env.state_path().with_file_name("refs").exists(), "no run was recorded: the next tick retries");

    f.env.env("PIPE_DOCKER", "/nonexistent/docker");
    f.env.pipe(&["build", &f.project]).code(4).stderr_has("`/nonexistent/docker` is unavailable: not found");
}

#[test]
fn submodules_are_checked_out_for_the_build() {
    let Some(docker) = Docker::require() else { return };
    let f = fixture(&docker, "grep -q from-the-submodule /lib/sub.txt");
    let sub = WorkRepo::new(f.env.path(), "sub");
    sub.write("sub.txt", "from-the-submodule\n");
    sub.commit_to("main", "sub");
    git(&f.repo.work, &["-c", "protocol.file.allow=always", "submodule", "add", "--quiet", &sub.url(), "lib"]);
    f.repo.write(
        "Dockerfile",
        &format!(
            r#"FROM {}
COPY app.txt /app.txt
COPY lib /lib
"#,
            docker.base_image
        ),
    );
    f.repo.commit_to("main", "with a submodule");
    f.env.config(&config(&f, "", ""));
    f.env.pipe(&["build", &f.project]).code(0);
    f.env.pipe(&["test", &f.project]).code(0);
}
