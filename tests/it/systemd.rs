//! The shipped systemd units, as `pipe generate systemd` writes them, pass `systemd-analyze
//! verify` with no warning at all.

use crate::support::TestEnv;

#[test]
fn shipped_units_verify_without_warnings() {
    let Ok(analyze) = which_analyze() else {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "systemd-analyze is missing (apt-get install systemd)");
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let env = TestEnv::new();
    let dir = env.path().join("units");
    // verify checks that ExecStart exists: point the units at the binary under test.
    env.pipe(&["generate", "systemd", &dir.display().to_string(), "--bin", env!("CARGO_BIN_EXE_pipe")]).code(0);
    let mut paths = Vec::new();
    for name in ["pipe.service", "pipe.timer", "pipe-serve.service", "pipe-prune.service", "pipe-prune.timer"] {
        let shipped = std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let path = dir.join(name);
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, shipped.replace("/usr/local/bin/pipe", env!("CARGO_BIN_EXE_pipe")), "{name}");
        paths.push(path);
    }
    // The man pages of `Documentation=` are not installed from a checkout (the package test
    // verifies them installed).
    let out = std::process::Command::new(analyze).args(["verify", "--man=no"]).args(&paths).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{said}");
    assert_eq!(said.trim(), "", "systemd-analyze verify warned:\n{said}");
}

fn which_analyze() -> Result<std::path::PathBuf, ()> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .ok_or(())
}
