//! Output on a terminal and off one. Under a pseudo-terminal (util-linux `script`), a build
//! shows a spinner, lines carry no timestamp and are never garbled by the spinner, and colour
//! follows `NO_COLOR`; through a pipe, every line is timestamped and no escape code appears.

use std::process::{Command, Stdio};

use crate::support::docker::{Docker, ProjectImages, unique_name};
use crate::support::{TestEnv, WorkRepo};

/// Runs `pipe ARGS` under a pseudo-terminal; returns everything the terminal received.
fn under_pty(env: &TestEnv, args: &[&str], extra_env: &[(&str, &str)]) -> String {
    let base = env.command(args);
    let line = std::iter::once(env!("CARGO_BIN_EXE_pipe")).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["--quiet", "--return", "--flush", "--command", &line, "/dev/null"])
        .current_dir(env.path())
        .env_clear()
        .envs(base.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("script (util-linux) runs pipe under a pseudo-terminal");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text with ANSI escape sequences removed, split into the lines a person would see
/// (carriage returns and erase-line sequences start a line over).
fn visible_lines(raw: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    let mut seq = String::new();
                    for c in chars.by_ref() {
                        seq.push(c);
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                    // Erase line: what was drawn on it is gone.
                    if seq.ends_with('K') {
                        current.clear();
                    }
                }
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' => current.clear(),
            '\n' => lines.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

fn timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && line[..20].ends_with('Z')
}

#[test]
fn a_terminal_gets_a_spinner_and_clean_lines_a_pipe_gets_timestamps_and_no_escapes() {
    let Some(docker) = Docker::require() else { return };
    let env = TestEnv::new();
    let project = unique_name("tty").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    let repo = WorkRepo::new(env.path(), "app");
    // A build step long enough for the spinner to draw several frames.
    repo.write("Dockerfile", &format!("FROM {}\nRUN sleep 1.5 && echo slow step done\n", docker.base_image));
    repo.write(
        ".pipe.toml",
        &format!(
            r#"image = "pipe-test/{project}"
test = "true"
"#
        ),
    );
    repo.commit_to("main", "app");
    env.config(&format!(
        r#"[pipe]
workspace = "{}"

[project.{project}]
repo = "{}"
branches = ["main"]
"#,
        env.path().join("work").display(),
        repo.url()
    ));

    let tty = under_pty(&env, &["build", &project, "main"], &[]);
    assert!(tty.contains("building pipe-test/"), "a spinner names the image being built:\n{tty:?}");
    assert!(tty.contains("\x1b["), "the spinner draws with terminal escapes:\n{tty:?}");
    let lines = visible_lines(&tty);
    let built = lines.iter().find(|l| l.contains(": built ")).unwrap_or_else(|| panic!("no `built` line:\n{lines:#?}"));
    assert!(
        built.starts_with(&format!("{project}: built ")),
        "the line is whole, not mixed with the spinner: {built:?}"
    );
    assert!(lines.iter().all(|l| !timestamped(l)), "no timestamps on a terminal:\n{lines:#?}");

    // The same command through a pipe, as journald or cron sees it (a cache hit this time).
    let piped = env.pipe(&["build", &project, "main"]);
    piped.code(0);
    assert!(!piped.stderr.contains('\x1b'), "no escape codes off a terminal:\n{:?}", piped.stderr);
    assert!(piped.stderr.contains(": built "), "{}", piped.stderr);
    for line in piped.stderr.lines().filter(|l| !l.is_empty()) {
        assert!(timestamped(line), "every line off a terminal is timestamped: {line:?}");
    }
    let quiet = env.pipe(&["-q", "build", &project, "main"]);
    quiet.code(0);
    assert_eq!(quiet.stderr, "", "-q prints only errors and warnings");
    let verbose = env.pipe(&["-v", "build", &project, "main"]);
    verbose.code(0).stderr_has("$ docker");
}

#[test]
fn colour_on_a_terminal_follows_no_color() {
    let env = TestEnv::new();
    let secret = env.path().join("registry-password");
    std::fs::write(&secret, "not-printed").unwrap();
    // World-readable secret file: `pipe check` warns.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    env.config(&format!(
        r#"[registry.local]
url = "127.0.0.1:5000"
username = "ci"
password_file = "{}"
"#,
        secret.display()
    ));
    let coloured = under_pty(&env, &["check"], &[]);
    assert!(coloured.contains("\x1b[33mwarning: \x1b[0m"), "{coloured:?}");
    let plain = under_pty(&env, &["check"], &[("NO_COLOR", "1")]);
    assert!(plain.contains("warning: ") && !plain.contains("\x1b[33m"), "{plain:?}");
    assert!(!plain.contains("not-printed") && !coloured.contains("not-printed"));
    let piped = env.pipe(&["check"]);
    assert!(piped.stderr.contains("warning: ") && !piped.stderr.contains('\x1b'), "{}", piped.stderr);
}

/// Regression: `pipe status --json | head -1` panicked ("failed printing to stdout: Broken
/// pipe") with a backtrace. A reader that closes the pipe early now ends the output quietly,
/// and the command exits with its own code.
#[test]
fn a_reader_closing_stdout_early_ends_the_output_quietly() {
    use pipe::state::{self, History, RefState, Run};
    use std::io::BufRead;

    let env = TestEnv::new();
    env.config("[project.epipe]\nrepo = \"/nonexistent/epipe.git\"\nbranches = [\"**\"]\n");
    let path = env.state_path();
    let mut st = state::State::default();
    let project = st.project.entry("epipe".into()).or_default();
    project.indexed = true;
    // 3,000 refs and a 1 MiB log: every output below is far more than a pipe holds (64 KiB), so
    // pipe meets the closed pipe whenever the reader closes it.
    for i in 0..3000 {
        let since = jiff::Timestamp::from_second(1_790_000_000 + i).unwrap();
        let r = RefState { head: format!("{i:040x}"), since, pending: true, last: None, closed: false };
        project.refs.insert(format!("refs/heads/branch-{i:04}"), r);
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    state::save(&path, &st).unwrap();
    let refname = "refs/heads/branch-0000";
    let logs = state::logs_dir(&path, "epipe", refname);
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("1.log");
    std::fs::write(&log, "a line of the build's log\n".repeat(40_000)).unwrap();
    let mut history = History {
        schema: state::SCHEMA,
        refname: refname.into(),
        next_run: 2,
        tested: Default::default(),
        runs: vec![Run {
            number: 1,
            commit: format!("{:040x}", 0),
            started: jiff::Timestamp::from_second(1_790_000_000).unwrap(),
            image: "epipe".into(),
            tags: vec!["branch-0000".into()],
            image_id: None,
            log,
            stages: Vec::new(),
            digests: Default::default(),
            test: None,
            test_env: Default::default(),
            test_secrets: Vec::new(),
            test_services: None,
            subject: None,
            author: None,
            images: Vec::new(),
        }],
    };
    state::save_history(&state::history_path(&path, "epipe", refname), &mut history, 20).unwrap();

    for args in [
        &["status", "--json"][..],
        &["status"],
        &["logs", "epipe", "branch-0000"],
        &["logs", "--json", "epipe", "branch-0000"],
    ] {
        let mut child = env.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = String::new();
        // One line, then the read end is closed (the reader dropped), as `head -1` does.
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!first.is_empty(), "`pipe {args:?}` printed nothing: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "`pipe {args:?}`:\n{stderr}");
        assert_eq!(out.status.code(), Some(0), "`pipe {args:?}` ends with its own code:\n{stderr}");
    }
}
