//! The Debian package: `scripts/package.sh` builds it from this checkout (the binary under
//! test), lintian finds nothing, and `dpkg` installs, upgrades, removes and purges it on this
//! machine as Debian users expect. The machine is left as the test found it: the package is
//! purged and the user and groups it made are removed, on failure too.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::TestEnv;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run `{program}`: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "`{program} {}` failed:\n{}", args.join(" "), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exists(kind: &str, name: &str) -> bool {
    run("getent", &[kind, name]).status.success()
}

fn installed() -> bool {
    let out = run("dpkg-query", &["-W", "-f", "${db:Status-Status}", "pipe"]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != "not-installed"
}

/// Puts the machine back: purges the package, removes what the test's install made.
struct Cleanup {
    made_user: bool,
    made_group: bool,
    made_docker_group: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if installed() {
            let _ = run("dpkg", &["--purge", "pipe"]);
        }
        if self.made_user && exists("passwd", "pipe") {
            let _ = run("userdel", &["pipe"]);
        }
        if self.made_group && exists("group", "pipe") {
            let _ = run("groupdel", &["pipe"]);
        }
        if self.made_docker_group && exists("group", "docker") {
            let _ = run("groupdel", &["docker"]);
        }
    }
}

fn tools_missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    ["dpkg-deb", "dpkg-shlibdeps", "strip", "lintian", "systemd-analyze", "setpriv"]
        .iter()
        .find(|t| !run("sh", &["-c", &format!("command -v {t}")]).status.success())
        .map(|t| format!("`{t}` is missing (scripts/test-deps.sh installs it)"))
}

fn package(env: &TestEnv, version: &str) -> PathBuf {
    let out = env.path().join("debs");
    let stdout = ok(
        &format!("{ROOT}/scripts/package.sh"),
        &[
            "--bin",
            env!("CARGO_BIN_EXE_pipe"),
            "--out",
            &out.display().to_string(),
            "--version",
            version,
            "--compression",
            "gzip",
        ],
    );
    PathBuf::from(stdout.trim())
}

/// Every path the package owns, with its mode and owner: directories 0755, files 0644, the
/// binary 0755, all root's.
fn check_files(version: &str) {
    let listed = ok("dpkg", &["-L", "pipe"]);
    let mut files = Vec::new();
    for path in listed.lines().filter(|l| l.starts_with('/') && *l != "/.") {
        // Followed: with merged /usr, `/lib` is the host's link to `/usr/lib`.
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path} is listed but {e}"));
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path} is not root's");
        let expected = if meta.is_dir() || path == "/usr/bin/pipe" { 0o755 } else { 0o644 };
        assert_eq!(meta.permissions().mode() & 0o7777, expected, "mode of {path}");
        if !meta.is_dir() {
            files.push(path.to_string());
        }
    }
    files.sort();
    let mut expected: Vec<String> = [
        "/usr/bin/pipe",
        "/etc/pipe/pipeline.toml",
        "/lib/systemd/system/pipe.service",
        "/lib/systemd/system/pipe.timer",
        "/lib/systemd/system/pipe-serve.service",
        "/lib/systemd/system/pipe-prune.service",
        "/lib/systemd/system/pipe-prune.timer",
        "/usr/share/bash-completion/completions/pipe",
        "/usr/share/zsh/vendor-completions/_pipe",
        "/usr/share/fish/vendor_completions.d/pipe.fish",
        "/usr/share/doc/pipe/copyright",
        "/usr/share/doc/pipe/changelog.gz",
        "/usr/share/doc/pipe/CHANGELOG.md.gz",
        "/usr/share/lintian/overrides/pipe",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for page in std::fs::read_dir(format!("{ROOT}/man")).unwrap() {
        let name = page.unwrap().file_name().to_string_lossy().into_owned();
        expected.push(format!("/usr/share/man/man1/{name}.gz"));
    }
    expected.sort();
    assert_eq!(files, expected, "the package's files");

    // What the repository holds, installed as it is (the units pointed at /usr/bin/pipe).
    let same = |installed: &str, repo: &str| {
        assert_eq!(
            std::fs::read_to_string(installed).unwrap(),
            std::fs::read_to_string(format!("{ROOT}/{repo}")).unwrap(),
            "{installed}"
        );
    };
    same("/etc/pipe/pipeline.toml", "pipeline.example.toml");
    same("/usr/share/bash-completion/completions/pipe", "completions/pipe.bash");
    same("/usr/share/zsh/vendor-completions/_pipe", "completions/_pipe");
    same("/usr/share/fish/vendor_completions.d/pipe.fish", "completions/pipe.fish");
    for unit in ["pipe.service", "pipe.timer", "pipe-serve.service", "pipe-prune.service", "pipe-prune.timer"] {
        let shipped = std::fs::read_to_string(format!("{ROOT}/systemd/{unit}")).unwrap();
        let installed = std::fs::read_to_string(format!("/lib/systemd/system/{unit}")).unwrap();
        assert_eq!(installed, shipped.replace("/usr/local/bin/pipe", "/usr/bin/pipe"), "{unit}");
    }
    for service in ["pipe.service", "pipe-serve.service", "pipe-prune.service"] {
        let unit = std::fs::read_to_string(format!("/lib/systemd/system/{service}")).unwrap();
        for line in [
            "User=pipe",
            "SupplementaryGroups=docker",
            "AmbientCapabilities=CAP_NET_ADMIN",
            "CapabilityBoundingSet=CAP_NET_ADMIN",
        ] {
            assert!(unit.lines().any(|l| l == line), "{service} lacks {line}");
        }
    }

    // The state directory is the pipe user's; the user is a system user in `docker`.
    let meta = std::fs::metadata("/var/lib/pipe").unwrap();
    let ids = ok("id", &["pipe"]);
    assert!(ids.contains(&format!("uid={}(pipe)", meta.uid())), "{ids}");
    assert!(ids.contains(&format!("gid={}(pipe)", meta.gid())), "{ids}");
    assert!(ids.contains("(docker)"), "pipe is not in the docker group: {ids}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    let passwd = ok("getent", &["passwd", "pipe"]);
    assert!(passwd.trim_end().ends_with(":/var/lib/pipe:/usr/sbin/nologin"), "{passwd}");
    assert!(meta.uid() < 1000, "not a system user: {passwd}");

    assert_eq!(ok("/usr/bin/pipe", &["--version"]).trim(), format!("pipe {}", env!("CARGO_PKG_VERSION")));
    // OpenSSL is linked in (.cargo/config.toml), not a dependency: the control file names the
    // source it came from, so its security updates show that pipe needs rebuilding.
    let depends = ok("dpkg-query", &["-W", "-f", "${Depends}", "pipe"]);
    assert!(!depends.contains("libssl"), "{depends}");
    let built_using = ok("dpkg-query", &["-W", "-f", "${Built-Using}", "pipe"]);
    assert!(built_using.starts_with("openssl (= "), "Built-Using: {built_using}");
    let status = ok("dpkg-query", &["-W", "-f", "${Version} ${db:Status-Abbrev}", "pipe"]);
    assert_eq!(status.trim(), format!("{version} ii"));
}

/// `systemd-analyze verify` of the installed units, man pages of `Documentation=` included:
/// nothing said at all.
fn verify_units() {
    let units: Vec<String> =
        ["pipe.service", "pipe.timer", "pipe-serve.service", "pipe-prune.service", "pipe-prune.timer"]
            .iter()
            .map(|u| format!("/lib/systemd/system/{u}"))
            .collect();
    let mut args = vec!["verify"];
    args.extend(units.iter().map(String::as_str));
    let out = run("systemd-analyze", &args);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{}", text(&out));
    assert_eq!(text(&out).trim(), "", "systemd-analyze verify warned");
}

/// As the units run it (the pipe user, CAP_NET_ADMIN ambient), pipe can firewall isolated
/// networks; without the capability it says it cannot.
fn check_capability(env: &TestEnv) {
    if !run("sh", &["-c", "command -v iptables"]).status.success() {
        return;
    }
    let dir = env.path().join("as-pipe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        dir.join("pipeline.toml"),
        "[project.p]\nrepo = \"file:///nonexistent.git\"\nbranches = [\"main\"]\n",
    )
    .unwrap();
    let check = |caps: &[&str]| {
        let mut args = vec!["--reuid=pipe", "--regid=pipe", "--init-groups"];
        args.extend_from_slice(caps);
        let config = dir.join("pipeline.toml").display().to_string();
        let state = dir.join("state.toml").display().to_string();
        args.extend(["env", "HOME=/var/lib/pipe", "/usr/bin/pipe", "check", "-c", &config, "--state", &state]);
        text(&run("setpriv", &args))
    };
    let with = check(&["--inh-caps=+net_admin", "--ambient-caps=+net_admin"]);
    assert!(!with.contains("cannot add firewall rules") && !with.contains("error:"), "with CAP_NET_ADMIN:\n{with}");
    let without = check(&[]);
    assert!(without.contains("neither as root nor with CAP_NET_ADMIN"), "without it:\n{without}");
    // And the capability is all iptables (nf_tables) needs to read the chain pipe writes to.
    let out = run(
        "setpriv",
        &[
            "--reuid=pipe",
            "--regid=pipe",
            "--init-groups",
            "--inh-caps=+net_admin",
            "--ambient-caps=+net_admin",
            "iptables",
            "-w",
            "-S",
            "INPUT",
        ],
    );
    assert!(out.status.success(), "iptables as pipe with CAP_NET_ADMIN:\n{}", text(&out));
}

#[test]
fn the_package_installs_upgrades_removes_and_purges_as_debian_users_expect() {
    if let Some(why) = tools_missing() {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    assert!(!installed(), "a `pipe` package is installed on this machine: the test will not replace it");
    let _cleanup = Cleanup {
        made_user: !exists("passwd", "pipe"),
        made_group: !exists("group", "pipe"),
        made_docker_group: !exists("group", "docker"),
    };
    let env = TestEnv::new();
    let v1 = format!("{}~test1", env!("CARGO_PKG_VERSION"));
    let v2 = format!("{}~test2", env!("CARGO_PKG_VERSION"));
    let first = package(&env, &v1);

    // Every tag lintian shows, pedantic and info included, counts. The one exception: the
    // override for the spelling lintian finds in the release build's merged strings is unused
    // in this (debug) build.
    let out =
        run("lintian", &["--pedantic", "--display-info", "--fail-on", "error,warning", &first.display().to_string()]);
    let said: Vec<String> = text(&out)
        .lines()
        .filter(|l| !l.contains("running with root privileges"))
        .filter(|l| !l.contains("unused-override spelling-error-in-binary") && !l.contains("1 unused override"))
        .map(str::to_string)
        .collect();
    assert!(out.status.success() && said.is_empty(), "lintian:\n{}", said.join("\n"));

    ok("dpkg", &["-i", &first.display().to_string()]);
    check_files(&v1);
    verify_units();
    check_capability(&env);

    // Upgrade: the operator's pipeline file and the state stay as they are.
    let edited = format!("{}# changed by the operator\n", std::fs::read_to_string("/etc/pipe/pipeline.toml").unwrap());
    std::fs::write("/etc/pipe/pipeline.toml", &edited).unwrap();
    std::fs::write("/var/lib/pipe/state.toml", "schema = 1\n").unwrap();
    let second = package(&env, &v2);
    ok("dpkg", &["-i", &second.display().to_string()]);
    assert_eq!(std::fs::read_to_string("/etc/pipe/pipeline.toml").unwrap(), edited, "the conffile was replaced");
    assert_eq!(std::fs::read_to_string("/var/lib/pipe/state.toml").unwrap(), "schema = 1\n");
    assert_eq!(ok("dpkg-query", &["-W", "-f", "${Version}", "pipe"]), v2);

    // Remove: the program goes, the pipeline file and the state stay.
    ok("dpkg", &["--remove", "pipe"]);
    for gone in ["/usr/bin/pipe", "/lib/systemd/system/pipe.service", "/usr/share/man/man1/pipe.1.gz"] {
        assert!(!Path::new(gone).exists(), "{gone} is still there after remove");
    }
    assert_eq!(std::fs::read_to_string("/etc/pipe/pipeline.toml").unwrap(), edited);
    assert!(Path::new("/var/lib/pipe/state.toml").exists(), "remove took the state");
    assert_eq!(ok("dpkg-query", &["-W", "-f", "${db:Status-Abbrev}", "pipe"]).trim(), "rc");

    // Purge: the pipeline file and the state go; the system user stays, as Debian's do.
    ok("dpkg", &["--purge", "pipe"]);
    assert!(!Path::new("/etc/pipe").exists(), "/etc/pipe is still there after purge");
    assert!(!Path::new("/var/lib/pipe").exists(), "/var/lib/pipe is still there after purge");
    assert!(!installed());
    assert!(exists("passwd", "pipe"));
}
