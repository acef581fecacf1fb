//! The shipped systemd units pass `systemd-analyze verify` with no warning at all.

#[test]
fn pipe_serve_unit_verifies_without_warnings() {
    let Ok(analyze) = which_analyze() else {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "systemd-analyze is missing (apt-get install systemd)");
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/pipe-serve.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/pipe serve"));
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = unit.replace("/usr/local/bin/pipe", env!("CARGO_BIN_EXE_pipe"));
    let path = dir.path().join("pipe-serve.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new(analyze).arg("verify").arg(&path).output().unwrap();
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
