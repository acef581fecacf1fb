//! The command surface: help text, committed generated files, honest "not implemented" answers.

use crate::support::TestEnv;

#[test]
fn help_lists_every_command_and_the_global_flags() {
    let env = TestEnv::new();
    let run = env.pipe(&["--help"]);
    run.code(0);
    snapbox::assert_data_eq!(run.stdout.as_str(), snapbox::file!["snapshots/help.txt"]);
}

#[test]
fn prune_of_an_unknown_project_is_a_usage_error() {
    let env = TestEnv::new();
    env.config(
        r#"[project.app]
repo = "file:///nowhere"
branches = ["main"]
"#,
    );
    let run = env.pipe(&["prune", "nope"]);
    run.code(2).stderr_has("nope");
    assert_eq!(run.stdout, "", "no pretend output");
}

#[test]
fn usage_errors_exit_2() {
    let env = TestEnv::new();
    env.pipe(&["frobnicate"]).code(2);
    env.pipe(&["build"]).code(2).stderr_has("<PROJECT>");
    env.pipe(&["poll", "-q", "-v"]).code(2).stderr_has("cannot be used with");
}

#[test]
fn committed_completions_are_fresh() {
    let env = TestEnv::new();
    for (shell, file) in [("bash", "pipe.bash"), ("zsh", "_pipe"), ("fish", "pipe.fish")] {
        let run = env.pipe(&["generate", "completions", shell]);
        run.code(0);
        let committed = std::fs::read_to_string(format!("{}/completions/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(run.stdout == committed, "completions/{file} is stale: run scripts/generate.sh");
    }
}

#[test]
fn committed_man_pages_are_fresh() {
    let env = TestEnv::new();
    let out = env.path().join("man");
    env.pipe(&["generate", "man", out.to_str().unwrap()]).code(0);
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let names = |dir: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&out), names(&committed), "man/ has a different set of pages: run scripts/generate.sh");
    for name in names(&out) {
        let fresh = std::fs::read(out.join(&name)).unwrap();
        let old = std::fs::read(committed.join(&name)).unwrap();
        assert!(fresh == old, "man/{} is stale: run scripts/generate.sh", name.to_string_lossy());
    }
    let poll = std::fs::read_to_string(out.join("pipe-poll.1")).unwrap();
    assert!(poll.contains("\\-\\-state"), "subcommand pages list the global flags");
}

#[test]
fn generate_nginx_without_any_ingress_warns_that_every_name_gets_404() {
    let env = TestEnv::new();
    env.config(
        r#"[project.app]
repo = "file:///nowhere"
branches = ["main"]
"#,
    );
    let run = env.pipe(&["generate", "nginx"]);
    run.code(0)
        .stderr_has("has an `ingress` table: every name will get 404")
        .stdout_has("map $pipe_service $pipe_port");
}
