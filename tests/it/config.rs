//! The pipeline file: strict loading, every error at once with file:line:column, secret hygiene.

use std::os::unix::fs::PermissionsExt;

use snapbox::str;

use crate::support::TestEnv;

#[test]
fn check_accepts_the_example_file() {
    let env = TestEnv::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/pipeline.example.toml");
    let run = env.pipe(&["check", "-c", example]);
    run.code(0).stderr_has("is valid: 2 project(s), 2 registries, 3 deploy target(s)");
    run.stderr_has("environment variable `PIPE_SLACK_WEBHOOK` is not set here");
}

#[test]
fn check_reports_every_error_with_its_location() {
    let env = TestEnv::new();
    env.config(
        r#"[pipe]
keep_logs = -1

[project.Web]
repo = "x"
branches = ["main"]

[project.api]
repo = "y"
branches = ["feat/[x"]
colour = "blue"

[project.db]
branches = ["main"]
"#,
    );
    let run = env.pipe(&["check"]);
    run.code(2).stderr_eq(str![[r#"
error: invalid pipeline file (4 errors)
  [ROOT]/pipeline.toml:2:13: invalid value: integer `-1`, expected u32
  [ROOT]/pipeline.toml:4:10: invalid project name `Web`: expected 1 to 63 lowercase letters, digits, `-` or `_`, starting with a letter or digit
  [ROOT]/pipeline.toml:11:1: unknown field `colour`, expected one of `repo`, `branches`, `pull_requests`, `default_branch`, `image`, `dockerfile`, `context`, `images`, `build_args`, `test`, `test_env`, `test_services`, `limits`, `trust_pull_requests`, `trusted_branches`, `build_network`, `submodules`, `cache`, `keep_images`, `keep_logs`, `timeouts`, `auth`, `deploy`, `forge`, `forge_repo`, `webhook_secret_env`, `webhook_secret_file`
  [ROOT]/pipeline.toml:13:1: missing field `repo`

"#]], &[]);
}

#[test]
fn syntax_errors_and_duplicate_projects_are_located() {
    let env = TestEnv::new();
    env.config(
        r#"[project.a]
repo = "x"
branches = ["main"]

[project.a]
repo = "y"
"#,
    );
    let run = env.pipe(&["poll"]);
    run.code(2).stderr_has(&format!("{}:5:", env.config_path().display())).stderr_has("duplicate");
    assert!(!env.state_path().exists(), "an invalid config touches no state");

    env.config(
        r#"[project.a
repo = "x"
"#,
    );
    env.pipe(&["check"]).code(2).stderr_has(&format!("{}:1:", env.config_path().display()));
}

#[test]
fn unknown_section_and_missing_file_are_usage_errors() {
    let env = TestEnv::new();
    env.config(
        r#"[projects.a]
repo = "x"
"#,
    );
    env.pipe(&["check"]).code(2).stderr_has(":1:2: unknown section `projects`");
    env.pipe(&["check", "-c", "/nonexistent/pipeline.toml"])
        .code(2)
        .stderr_has("failed to read pipeline file `/nonexistent/pipeline.toml`");
}

#[test]
fn inline_secret_is_refused_and_never_echoed() {
    let env = TestEnv::new();
    env.config(
        r#"[notify.slack]
webhook_url = "https://hooks.slack.invalid/T000/SECRETPART"
"#,
    );
    let run = env.pipe(&["check"]);
    run.code(2).stderr_has("secrets are never written inline: use `webhook_url_env");
    assert!(!run.stderr.contains("SECRETPART"), "{}", run.stderr);
}

#[test]
fn check_warns_about_secret_files_readable_by_others() {
    let env = TestEnv::new();
    let secret = env.path().join("registry-password");
    std::fs::write(&secret, "s3cr3t-value\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.config(&format!(
        r#"[registry.r]
url = "127.0.0.1:5000"
username = "ci"
password_file = "{}"
"#,
        secret.display()
    ));
    let run = env.pipe(&["check"]);
    run.code(0).stderr_has("is readable by others (mode 0644)").stderr_has("hint: chmod 600");
    assert!(!run.stderr.contains("s3cr3t-value"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = env.pipe(&["check"]);
    run.code(0);
    assert!(!run.stderr.contains("readable by others"), "{}", run.stderr);

    std::fs::remove_file(&secret).unwrap();
    env.pipe(&["check"]).code(0).stderr_has("warning: `registry.r.password`: cannot read secret file");
}

#[test]
fn default_config_location_is_the_working_directory() {
    let env = TestEnv::new();
    env.config(
        r#"[project.a]
repo = "file:///nowhere"
branches = ["main"]
"#,
    );
    let mut cmd = env.command(&["check"]);
    cmd.env_remove("PIPE_CONFIG");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let empty = tempfile::tempdir().unwrap();
    let mut cmd = env.command(&["check"]);
    cmd.env_remove("PIPE_CONFIG").current_dir(empty.path());
    let out = cmd.output().unwrap();
    if !std::path::Path::new("/etc/pipe/pipeline.toml").exists() {
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no pipeline file"));
    }
}

#[test]
fn a_hook_named_after_a_file_of_pipe_serve_is_refused() {
    let env = TestEnv::new();
    env.config(
        "[serve.hooks.superseded]\ntoken_env = \"T\"\ncommand = { argv = [\"true\"] }\n\n\
         [serve.hooks.web]\ntoken_env = \"T\"\ncommand = { argv = [\"true\"] }\n",
    );
    env.pipe(&["check"]).code(2).stderr_has(
        "hook `superseded`: the name is taken by `pipe serve`'s own `serve/superseded` beside the state; choose another",
    );
    env.config("[serve.hooks.web]\ntoken_env = \"T\"\ncommand = { argv = [\"true\"] }\n");
    env.pipe(&["check"]).code(0);
}
