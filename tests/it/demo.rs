//! The newcomer's demo command (`scripts/demo.sh`), run for real: it deploys the bundled
//! project and prints where it answers, a second run rebuilds nothing, and a commit to the demo
//! repo followed by the same command is deployed. Ports, directories and names are per test.

use std::path::Path;
use std::process::Command;

use crate::support::docker::{ComposeProject, Docker, ProjectImages, unique_name};
use crate::support::http::get;
use crate::support::{free_port, git};

struct Demo {
    dir: tempfile::TempDir,
    port: u16,
    registry_port: u16,
    project: String,
}

impl Demo {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh"));
        cmd.args(args)
            .env("PIPE_DEMO_DIR", self.dir.path())
            .env("PIPE_DEMO_PORT", self.port.to_string())
            .env("PIPE_DEMO_REGISTRY_PORT", self.registry_port.to_string())
            .env("PIPE_DEMO_PROJECT", &self.project)
            .env("PIPE_BIN", env!("CARGO_BIN_EXE_pipe"))
            .env_remove("PIPE_CONFIG")
            .env_remove("PIPE_STATE");
        cmd
    }

    /// Runs the demo; returns (stdout, stderr) after checking it succeeded.
    fn run(&self) -> (String, String) {
        let out = self.command(&[]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "scripts/demo.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        (stdout, stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).output();
    }
}

#[test]
fn the_demo_deploys_prints_its_url_rebuilds_nothing_unchanged_and_deploys_a_new_commit() {
    let Some(_docker) = Docker::require() else { return };
    let project = unique_name("demo").replace("pipe-test-", "");
    // Images after the compose project: locals drop in reverse, so its containers go first and
    // the images are no longer in use when they are removed.
    let _images = ProjectImages { project: project.clone() };
    let _compose = ComposeProject { name: project.clone() };
    let demo = Demo { dir: tempfile::tempdir().unwrap(), port: free_port(), registry_port: free_port(), project };
    let url = format!("http://127.0.0.1:{}/", demo.port);

    let (stdout, stderr) = demo.run();
    assert!(stdout.contains(&format!("The demo app answers at {url}")), "{stdout}");
    for step in ["[setup] Docker engine answers", "starting Debian's docker-registry", "creating the demo project"] {
        assert!(stderr.contains(step), "the demo says what it sets up: {step}\n{stderr}");
    }
    assert!(stderr.contains("pushed 127.0.0.1:"), "pushed to the local registry:\n{stderr}");
    let (code, body) = get(&url).expect("the demo app answers");
    assert_eq!(code, 200);
    assert!(body.contains("Hello from the pipe demo"), "{body}");

    let (_, again) = demo.run();
    assert!(again.contains("nothing to do"), "a second run rebuilds nothing:\n{again}");
    assert!(!again.contains("built ") && !again.contains("starting Debian's docker-registry"), "{again}");

    let work = demo.dir.path().join("app");
    std::fs::write(work.join("www/index.html"), "<h1>Changed by the test</h1>\n").unwrap();
    git(&work, &["commit", "--quiet", "-am", "change"]);
    git(&work, &["push", "--quiet"]);
    let (_, changed) = demo.run();
    assert!(changed.contains("deployed "), "{changed}");
    assert_eq!(get(&url).map(|(_, b)| b), Some("<h1>Changed by the test</h1>\n".into()));

    // Stopped (or after a reboot), the same command brings the last deploy back.
    let stop = demo.command(&["stop"]).output().unwrap();
    assert!(stop.status.success());
    assert!(get(&url).is_none(), "stopped");
    let (_, restarted) = demo.run();
    assert!(restarted.contains("redeploying its last image"), "{restarted}");
    assert_eq!(get(&url).map(|(_, b)| b), Some("<h1>Changed by the test</h1>\n".into()));
}
