//! The shipped systemd units pass `systemd-analyze verify` with no warning at all.

#[test]
fn shipped_units_verify_without_warnings() {
    let Ok(analyze) = which_analyze() else {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "systemd-analyze is missing (apt-get install systemd)");
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in ["pipe.service", "pipe.timer", "pipe-serve.service"] {
        let unit = std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // verify checks that ExecStart exists: point it at the binary under test.
        let unit = unit.replace("/usr/local/bin/pipe", env!("CARGO_BIN_EXE_pipe"));
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        paths.push(path);
    }
    let out = std::process::Command::new(analyze).arg("verify").args(&paths).output().unwrap();
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
