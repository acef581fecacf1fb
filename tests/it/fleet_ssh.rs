//! A compose target that spans hosts reached over SSH (the hosts run Docker, nginx and sshd, no
//! pipe). Each host is simulated (`support::hosts`): a network namespace with its own engine and
//! nginx, and an `sshd` of the test's (its own host key, one authorized client key), started in
//! a mount namespace of its own where `/mnt` is the host's directory, so every host has its
//! engine's socket at `/mnt/docker.sock` and its nginx under `/mnt/nginx`, as real hosts share
//! one layout.
//!
//! `PIPE_REQUIRE_DOCKER=1 PIPE_TEST_BASE_IMAGE=pipe-busybox:latest cargo test --test it fleet_ssh::`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, unique_name};
use crate::support::fleet_bench;
use crate::support::hosts::{self, Host};
use crate::support::{TestEnv, WorkRepo};

const FRONT_PORT: u16 = 80;
const APP_HOST: &str = "web.fleet.test";
/// The target's secret: compose gets it here, ssh never does.
const SECRET: &str = "s3cr3t-over-ssh-4242";

/// Hosts with sshd, and the CI side's pipe with a compose target naming them over SSH.
struct SshFleet {
    // Field order is drop order: the hosts (their sshd, nginx, engines, namespaces) first.
    hosts: Vec<Host>,
    sshd: Vec<u32>,
    _images: crate::support::docker::ProjectImages,
    env: TestEnv,
    repo: WorkRepo,
    image: String,
    /// The client's key and the test's known_hosts.
    keys: PathBuf,
    extra: String,
}

impl SshFleet {
    fn start(docker: &Docker, n: usize, extra: &str) -> SshFleet {
        SshFleet::start_with(docker, n, extra, false)
    }

    /// `n` hosts; `extra` goes into the target's `ssh` table. `by_hand`: fresh hosts for a
    /// deploy by hand, each with the compose file at `/mnt/app/docker-compose.yml` (the app
    /// publishing its port on the host's 127.0.0.1:8080) and nginx proxying to that port.
    fn start_with(docker: &Docker, n: usize, extra: &str, by_hand: bool) -> SshFleet {
        let mut env = TestEnv::new();
        env.env("APP_SECRET", SECRET);
        let project = unique_name("fs").replace("pipe-test-", "");
        let image = format!("pipe-test/{project}");
        let repo = WorkRepo::new(env.path(), "app");
        repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
        repo.write(".pipe.toml", &format!("image = \"{image}\"\ntest = \"true\"\n"));
        let keys = env.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        keygen(&keys.join("client"));
        let mut hosts: Vec<Host> = (1..=n).map(|i| Host::start(&format!("host{i}"), &[])).collect();
        let mut sshd = Vec::new();
        for host in &mut hosts {
            host.load_image(&docker.base_image);
            // The label the app compares with its image's `bad-on`, in a volume of the host's.
            host.docker(&["volume", "create", "hostlabel"]);
            host.docker(&[
                "run",
                "--rm",
                "-v",
                "hostlabel:/l",
                &docker.base_image,
                "sh",
                "-c",
                &format!("echo {} > /l/name", host.label),
            ]);
            if by_hand {
                let app = host.dir.join("app");
                std::fs::create_dir_all(&app).unwrap();
                std::fs::write(app.join("docker-compose.yml"), compose_file("    ports: [\"127.0.0.1:8080:8080\"]\n"))
                    .unwrap();
                host.nginx(&format!(
                    "    server {{\n        listen {ip}:{FRONT_PORT};\n        location / {{ proxy_pass http://127.0.0.1:8080; }}\n    }}",
                    ip = host.ip
                ));
            } else {
                start_nginx(host);
            }
            sshd.push(start_sshd(host, &keys.join("client.pub")));
        }
        let known: String = hosts.iter().map(known_hosts_line).collect();
        std::fs::write(keys.join("known_hosts"), known).unwrap();
        let app = env.path().join("deploy");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("docker-compose.yml"), compose_file("")).unwrap();
        let fleet = SshFleet {
            hosts,
            sshd,
            _images: crate::support::docker::ProjectImages { project },
            env,
            repo,
            image,
            keys,
            extra: extra.to_string(),
        };
        fleet.write_config(&fleet.extra);
        fleet
    }

    /// The pipeline file, `extra` added to the target's `ssh` table.
    fn write_config(&self, extra: &str) {
        self.env.config(&self.config(extra));
    }

    /// The pipeline file with target `prod` on every host, `extra` added to its `ssh` table.
    fn config(&self, extra: &str) -> String {
        format!(
            "[pipe]\nworkspace = \"{ws}\"\n\n[project.{project}]\nrepo = \"{url}\"\nbranches = [\"main\"]\n\n{target}",
            ws = self.env.path().join("work").display(),
            project = self.project(),
            url = self.repo.url(),
            target = self.target("prod", &self.hosts, extra),
        )
    }

    /// A compose target over SSH named `name` on `hosts`, `extra` added to its `ssh` table.
    fn target(&self, name: &str, hosts: &[Host], extra: &str) -> String {
        let list: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", spec(h))).collect();
        let k = self.keys.display();
        format!(
            "[[project.{project}.deploy]]\nname = \"{name}\"\nbranches = [\"main\"]\ntimeout = \"120s\"\n\
             compose = {{ file = \"{file}\", services = [\"web\"] }}\ningress = {{ web = 8080 }}\ndrain = \"1s\"\n\
             health = {{ url = \"http://{APP_HOST}/health\", timeout = \"8s\" }}\n\
             env = {{ APP_SECRET = {{ env = \"APP_SECRET\" }} }}\n\
             ssh = {{ hosts = [{hosts}], upstreams = \"/mnt/nginx/upstreams\", \
             nginx = [\"/usr/sbin/nginx\", \"-p\", \"/mnt/nginx\", \"-c\", \"/mnt/nginx/nginx.conf\"], \
             docker_socket = \"/mnt/docker.sock\", known_hosts = \"{k}/known_hosts\", identity = \"{k}/client\"{extra} }}\n",
            project = self.project(),
            file = self.env.path().join("deploy").join("docker-compose.yml").display(),
            hosts = list.join(", "),
        )
    }

    fn project(&self) -> String {
        self.image.trim_start_matches("pipe-test/").to_string()
    }

    /// Commits a release whose page says `name`, failing its health check on the host labelled
    /// `bad_on`; builds and tests it here and copies its image into every host's engine.
    fn release(&self, name: &str, bad_on: Option<&str>) -> String {
        hosts::release_everywhere(&self.env, &self.repo, &self.image, &self.hosts, name, bad_on)
    }

    fn deploy(&self, extra: &[&str]) -> crate::support::Run {
        let mut args = vec!["deploy", "--verbose"];
        let project = self.project();
        args.extend([project.as_str(), "main"]);
        args.extend_from_slice(extra);
        let run = self.env.pipe(&args);
        // Shown when the test fails.
        eprintln!("$ pipe {}\n{}", run.args, run.stderr);
        run
    }

    fn serving(&self) -> Vec<Result<String, String>> {
        self.hosts.iter().map(|h| h.get(FRONT_PORT, APP_HOST, "/")).collect()
    }

    /// Each host's upstream file and nginx error log's tail, for a failure's message.
    fn diagnose(&self) -> String {
        let mut text = String::new();
        for h in &self.hosts {
            let ngx = h.dir.join("nginx");
            let upstream = std::fs::read_to_string(ngx.join("upstreams").join("web.conf")).unwrap_or_default();
            let log = std::fs::read_to_string(ngx.join("error.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let ps = h.docker(&["ps", "--all", "--format", "{{.ID}} {{.Status}} {{.Names}}"]);
            text.push_str(&format!("{}:\n{upstream}\n{}\n{ps}\n", h.label, tail.join("\n")));
        }
        text
    }

    fn history(&self) -> toml::Value {
        let path = self.env.path().join("state").join("deploys").join(self.project()).join("prod.toml");
        toml::from_str(&std::fs::read_to_string(path).expect("the target's deploy history")).unwrap()
    }
}

/// The app's compose file, `ports` added to its service: it fails its health check on the host
/// whose label (in the host's volume `hostlabel`) its image names in `/www/bad-on`.
fn compose_file(ports: &str) -> String {
    format!(
        "version: \"2.4\"\nservices:\n  web:\n    image: ${{PIPE_IMAGE}}:${{PIPE_TAG}}\n    init: true\n{ports}    \
         environment:\n      APP_SECRET: ${{APP_SECRET}}\n    volumes: [\"hostlabel:/label:ro\"]\n    \
         command: [\"sh\", \"-c\", \"if [ \\\"$$(cat /www/bad-on 2>/dev/null)\\\" = \\\"$$(cat /label/name)\\\" ]; then rm -f /www/health; fi; exec httpd -f -p 8080 -h /www\"]\n\
         volumes:\n  hostlabel:\n    external: true\n"
    )
}

fn spec(host: &Host) -> String {
    format!("ssh://root@{}", host.ip)
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

fn known_hosts_line(host: &Host) -> String {
    let key = std::fs::read_to_string(host.dir.join("ssh").join("host.pub")).unwrap();
    format!("{} {}\n", host.ip, key.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}

/// The host's nginx, in front of the upstream files pipe writes over SSH (`/mnt/nginx/upstreams`
/// on the host: this directory).
fn start_nginx(host: &mut Host) {
    let ngx = host.dir.join("nginx");
    std::fs::create_dir_all(ngx.join("upstreams")).unwrap();
    let config = host.dir.join("generate.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\ndomain = \"fleet.test\"\nlisten = \"{}:{FRONT_PORT}\"\nupstreams = \"{}/upstreams\"\n\n\
             [project.app]\nrepo = \"https://example.com/app.git\"\nbranches = [\"main\"]\n\n\
             [[project.app.deploy]]\nbranches = [\"main\"]\ncompose = {{ file = \"/srv/app/docker-compose.yml\" }}\n\
             ingress = {{ web = 8080 }}\n",
            host.ip,
            ngx.display()
        ),
    )
    .unwrap();
    let generated = Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["generate", "nginx"])
        .env("PIPE_CONFIG", &config)
        .env("PIPE_STATE", host.dir.join("state.toml"))
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    std::fs::write(ngx.join("pipe.conf"), &generated.stdout).unwrap();
    host.nginx(&format!("    include {}/pipe.conf;", ngx.display()));
}

/// sshd in the host's namespace on its address, port 22, with a host key the test made and the
/// client's key authorized; in a mount namespace of its own where the host's directory is
/// `/mnt`. Returns its pid once it listens.
fn start_sshd(host: &mut Host, client: &Path) -> u32 {
    let d = host.dir.join("ssh");
    std::fs::create_dir_all(&d).unwrap();
    keygen(&d.join("host"));
    std::fs::copy(client, d.join("authorized_keys")).unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let config = d.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port 22\nListenAddress {ip}\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nAllowTcpForwarding yes\nAllowStreamLocalForwarding yes\nMaxSessions 50\n\
             MaxStartups 50\nLogLevel ERROR\n",
            ip = host.ip,
            d = d.display()
        ),
    )
    .unwrap();
    run_sshd(host)
}

/// Starts the host's sshd as configured; its pid once it listens.
fn run_sshd(host: &mut Host) -> u32 {
    let d = host.dir.join("ssh");
    let config = d.join("sshd_config");
    let script =
        format!("mount --bind {} /mnt && exec /usr/sbin/sshd -D -e -f {}", host.dir.display(), config.display());
    let mut cmd = host.command("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("sshd.log")).unwrap());
    let pid = host.spawn(cmd);
    host.wait_port(22, Duration::from_secs(20));
    pid
}

/// Requests through every host's nginx, up to ~60 a second each (bounded: 5 minutes), until
/// stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Result<String, String>>>>,
    started: Instant,
}

impl Load {
    fn start(hosts: &[Host]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = hosts
            .iter()
            .map(|h| {
                let (ip, stop) = (h.ip.to_string(), stop.clone());
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    let until = Instant::now() + Duration::from_secs(300);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        let t = Instant::now();
                        answers.push(crate::support::load::request(&ip, FRONT_PORT, APP_HOST, "/"));
                        std::thread::sleep(Duration::from_millis(16).saturating_sub(t.elapsed()));
                    }
                    answers
                })
            })
            .collect();
        Load { stop, threads, started: Instant::now() }
    }

    /// Stops; per host, the answers by release and the failures. Asserts ≥ 100 requests/s in all.
    fn finish(self) -> Vec<(BTreeMap<String, usize>, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        let results: Vec<_> = self
            .threads
            .into_iter()
            .map(|t| {
                let mut by = BTreeMap::new();
                let mut failed = Vec::new();
                for a in t.join().unwrap() {
                    match a {
                        Ok(body) => *by.entry(body).or_insert(0) += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (by, failed)
            })
            .collect();
        let total: usize = results.iter().map(|(by, f)| by.values().sum::<usize>() + f.len()).sum();
        eprintln!("load: {total} requests in {seconds:.0}s: {results:?}");
        assert!(total as f64 / seconds >= 100.0, "the load held 100 requests/s: {total} in {seconds:.0}s");
        results
    }
}

/// How many ssh master connections of pipe's run: each forwards a Docker socket under `sockets`.
fn masters(sockets: &Path) -> usize {
    let out =
        Command::new("pgrep").args(["-f", "--", &format!("^ssh .* -M -f -N .* -L {}/", sockets.display())]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().count()).unwrap_or(0)
}

/// Drops the fleet; nothing of its hosts is left, and no ssh connection of pipe's.
fn assert_nothing_left(fleet: SshFleet) {
    let left: Vec<(String, PathBuf)> = fleet.hosts.iter().map(|h| (h.netns.clone(), h.dir.clone())).collect();
    let sockets = fleet.env.path().join("work").join("ssh");
    let masters = Command::new("pgrep").args(["-f", "--", &sockets.display().to_string()]).output().unwrap();
    assert!(masters.stdout.is_empty(), "an ssh connection of pipe's is still open");
    let dirs: Vec<_> = std::fs::read_dir(&sockets).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(dirs.is_empty(), "pipe left its sockets: {dirs:?}");
    drop(fleet);
    for (netns, dir) in left {
        assert_eq!(hosts::leftovers(&netns, &dir), Vec::<String>::new());
    }
}

fn available() -> Option<Docker> {
    let docker = Docker::require()?;
    if !hosts::available() || !crate::support::nginx::available() {
        return None;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(std::env::var("PIPE_REQUIRE_DOCKER").is_err(), "sshd is missing (apt-get install openssh-server)");
        return None;
    }
    Some(docker)
}

/// Three hosts over SSH, releases in a row under load through every host's nginx, two hosts a
/// batch: each reaches every host with no failed request; a release that fails its health check
/// on host 3 puts every host back on the previous one, and the report names host 3 and its
/// health check's answer; a rollback by hand goes to every host. The target's secret never
/// reaches ssh's argv or the output.
#[test]
fn releases_reach_every_host_over_ssh_and_a_failure_on_one_rolls_every_host_back() {
    let Some(docker) = available() else { return };
    let fleet = SshFleet::start(&docker, 3, ", batch = 2");
    let secret = SECRET;
    let v1 = fleet.release("v1", None);
    fleet.deploy(&[]).code(0).stderr_has("3 hosts, 2 at a time");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v1")), "{:?}\n{}", fleet.serving(), fleet.diagnose());
    let load = Load::start(&fleet.hosts);
    fleet.release("v2", None);
    let run = fleet.deploy(&[]);
    run.code(0).stderr_has("on 3 of 3 hosts");
    assert!(!run.stderr.contains(secret), "the secret reached the output");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v2")), "{:?}", fleet.serving());

    // Host 3 fails its health check: every host serves v2 again.
    fleet.release("v3", Some("host3"));
    let host3 = spec(&fleet.hosts[2]);
    let run = fleet.deploy(&[]);
    run.code(1)
        .stderr_has(&format!("failed on host `{host3}` (3/3)"))
        .stderr_has("HTTP 404")
        .stderr_has("every host runs it again");
    assert!(!run.stderr.contains(secret), "the secret reached the output");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v2")), "every host on v2: {:?}", fleet.serving());
    let history = fleet.history();
    let deploys = history["deploy"].as_array().unwrap();
    let failed = &deploys[deploys.len() - 2];
    assert_eq!(failed["result"].as_str(), Some("rolled_back"), "{history}");
    let hosts = hosts::host_entries(failed);
    assert_eq!((hosts[2].0.as_str(), hosts[2].1.as_str()), (host3.as_str(), "failed"), "{hosts:?}");
    assert!(hosts[2].2.contains("HTTP 404"), "host 3's health answer kept: {hosts:?}");
    assert!(hosts[..2].iter().all(|h| h.1 == "rolled_back"), "{hosts:?}");
    let doc = fleet.env.pipe(&["status", "--json"]).code(0).json();
    let fleets = &doc["refs"][0]["fleets"][0];
    assert_eq!(fleets["result"], "rolled_back", "{doc}");
    let summary = fleets["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("{host3} failed: health check's last answer: ")), "{doc}");
    assert!(summary.contains("answered HTTP 404"), "{doc}");
    fleet.env.pipe(&["status"]).code(0).stdout_has("2 rolled_back, 1 failed");

    // A rollback by hand, to every host.
    let doc = fleet.deploy(&["--commit", &v1[..12], "--json"]).code(0).json();
    assert_eq!(doc["targets"][0]["rollback"], true, "{doc}");
    let hosts = doc["targets"][0]["host"].as_array().unwrap();
    assert!(hosts.len() == 3 && hosts.iter().all(|h| h["result"] == "deployed"), "{doc}");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v1")), "{:?}", fleet.serving());
    let results = load.finish();
    let failures: usize = results.iter().map(|(_, f)| f.len()).sum();
    assert_eq!(failures, 0, "no request failed on any host: {results:?}");
    assert!(!results[2].0.contains_key("v3"), "v3 answered on host 3, where it failed its check");
    // The secret went to compose here, never to ssh: not in the run's log either.
    let logs = Command::new("grep").args(["-rl", secret]).arg(fleet.env.path().join("state")).output().unwrap();
    assert!(logs.stdout.is_empty(), "the secret is in {}", String::from_utf8_lossy(&logs.stdout));
    assert_nothing_left(fleet);
}

/// A host that cannot be reached fails the deploy before any host switches, naming it; with
/// `skip_unreachable` the others get the release. A host whose key is not in known_hosts is
/// refused before anything runs anywhere, with the fix, even with `skip_unreachable`. A deploy
/// stopped by SIGTERM once connected closes its ssh connections.
#[test]
fn an_unreachable_host_or_an_unknown_host_key_stops_the_deploy_before_any_switch() {
    let Some(docker) = available() else { return };
    let mut fleet = SshFleet::start(&docker, 2, "");
    fleet.release("v1", None);
    // A dry run names each host and connects to none.
    let dry = fleet.deploy(&["--dry-run"]);
    dry.code(0).stdout_has(&format!("# on {}: ", spec(&fleet.hosts[1]))).stdout_has("--scale web=2 web");
    assert!(!dry.stderr.contains(" -M -f -N "), "a dry run connected: {}", dry.stderr);
    assert!(fleet.serving().iter().all(|s| s.is_err()), "a dry run deployed: {:?}", fleet.serving());
    fleet.deploy(&[]).code(0);
    fleet.release("v2", None);
    let host2 = spec(&fleet.hosts[1]);
    let pid = fleet.sshd[1];
    fleet.hosts[1].kill(pid);
    fleet
        .deploy(&[])
        .code(1)
        .stderr_has(&format!("host `{host2}` (2/2) cannot be reached"))
        .stderr_has("no host was switched")
        .stderr_has("skip_unreachable = true");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v1")), "{:?}", fleet.serving());
    fleet.write_config(", skip_unreachable = true");
    fleet.deploy(&[]).code(0).stderr_has("skipped").stderr_has("on 1 of 2 hosts");
    let serving = fleet.serving();
    assert_eq!((serving[0].as_deref(), serving[1].as_deref()), (Ok("v2"), Ok("v1")), "{serving:?}");

    // Host 2 back; a deploy stopped by SIGTERM once it is connected leaves no ssh connection.
    fleet.sshd[1] = start_sshd_again(&mut fleet, 1);
    fleet.write_config("");
    fleet.release("v3", None);
    let sockets = fleet.env.path().join("work").join("ssh");
    let mut deploy = fleet.env.command(&["deploy", &fleet.project(), "main"]).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while masters(&sockets) < 2 {
        assert!(Instant::now() < deadline, "the deploy never connected to both hosts");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(deploy.id() as i32, libc::SIGTERM) };
    let status = deploy.wait().unwrap();
    assert_eq!(status.code(), Some(143), "the deploy was stopped by SIGTERM");
    assert_eq!(masters(&sockets), 0, "an ssh connection outlived the stopped deploy");

    // Host 1's key unknown: refused with the fix, nothing switched anywhere, even where
    // unreachable hosts may be skipped.
    fleet.write_config(", skip_unreachable = true");
    let known = std::fs::read_to_string(fleet.keys.join("known_hosts")).unwrap();
    std::fs::write(fleet.keys.join("known_hosts"), known.lines().nth(1).unwrap().to_string() + "\n").unwrap();
    let before = fleet.serving();
    fleet.release("v4", None);
    let host1 = spec(&fleet.hosts[0]);
    let ip1 = fleet.hosts[0].ip.to_string();
    fleet
        .deploy(&[])
        .code(1)
        .stderr_has(&format!("host `{host1}` (1/2) refused: its host key is not known"))
        .stderr_has(&format!("1 of 2 hosts refused for their host keys: `{host1}` (its host key is not known"))
        .stderr_has(&format!("ssh-keyscan -t ed25519 {ip1} >>"))
        .stderr_has("no host was switched");
    assert_eq!(fleet.serving(), before, "nothing switched anywhere");
    let history = fleet.history();
    let hosts = hosts::host_entries(history["deploy"].as_array().unwrap().last().unwrap());
    assert_eq!(hosts[0].1, "unreachable", "{hosts:?}");
    assert!(hosts[0].2.contains("host key is not known"), "{hosts:?}");
    assert_nothing_left(fleet);
}

/// sshd of host `i` again, with its host key and configuration as before.
fn start_sshd_again(fleet: &mut SshFleet, i: usize) -> u32 {
    run_sshd(&mut fleet.hosts[i])
}

/// An `ssh` table's keys are checked where they are written: a host that is not
/// `ssh://[USER@]HOST[:PORT]` (an option smuggled as a host included), a host named twice, a
/// batch of 0, a relative path, and a target that could not deploy over SSH (no ingress, no
/// health URL), each at its line.
#[test]
fn check_locates_every_mistake_in_an_ssh_targets_keys() {
    let env = TestEnv::new();
    env.config(
        "[project.a]\nrepo = \"https://example.com/a.git\"\nbranches = [\"main\"]\n\n\
         [[project.a.deploy]]\nbranches = [\"main\"]\ncompose = { file = \"/srv/a/docker-compose.yml\" }\n\
         ssh = { hosts = [\"ssh://-oProxyCommand=x\", \"ssh://deploy@10.0.0.5\", \"ssh://deploy@10.0.0.5\"], batch = 0, upstreams = \"etc/nginx\" }\n",
    );
    let file = env.config_path().display().to_string();
    env.pipe(&["check"])
        .code(2)
        .stderr_has(&format!("{file}:8:"))
        .stderr_has("`ssh.hosts` entry `ssh://-oProxyCommand=x` is not `ssh://[USER@]HOST[:PORT]`")
        .stderr_has("`ssh.hosts` names `ssh://deploy@10.0.0.5` twice")
        .stderr_has("`ssh.batch` is 0")
        .stderr_has("`ssh.upstreams` must be an absolute path")
        .stderr_has("add `ingress = { SERVICE = PORT }`")
        .stderr_has("`ssh` hosts need `health = { url = ");
    // A good target passes, and `pipe check` names no outage for it.
    env.config(
        "[project.a]\nrepo = \"https://example.com/a.git\"\nbranches = [\"main\"]\n\n\
         [[project.a.deploy]]\nbranches = [\"main\"]\ncompose = { file = \"/srv/a/docker-compose.yml\" }\n\
         ingress = { web = 8080 }\nhealth = { url = \"http://web.example.com/health\" }\n\
         ssh = { hosts = [\"ssh://deploy@10.0.0.5\", \"ssh://web2.example.com:2222\"], batch = 1, upstreams = \"/etc/nginx/pipe\" }\n",
    );
    let run = env.pipe(&["check"]);
    run.code(0);
    assert!(!run.stderr.contains("outage"), "{}", run.stderr);
}

/// The benchmark `bench/fleet.sh ssh` runs (ignored by the suite): four hosts over SSH, one
/// release at a time under load (`fleet_bench`), deployed to one host alone, to all four one
/// host a batch, to all four at once, then a release that fails on host 3; and on four fresh
/// hosts, by hand, as an operator would without pipe: `ssh HOST docker-compose -p P -f FILE up
/// -d` with the compose file on the host, one host after another. Writes its figures as JSON to
/// `PIPE_FLEET_BENCH_OUT`.
#[test]
#[ignore = "a benchmark: bench/fleet.sh ssh runs it"]
fn bench_ssh_fleet_rollout() {
    let Some(docker) = available() else { return };
    let Ok(out) = std::env::var("PIPE_FLEET_BENCH_OUT") else { panic!("set PIPE_FLEET_BENCH_OUT") };
    let rounds: usize = std::env::var("PIPE_FLEET_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let front = (FRONT_PORT, APP_HOST);
    let mut figures = serde_json::Map::new();
    let mut n = 0;
    {
        let fleet = SshFleet::start(&docker, 4, "");
        let one_host = fleet.target("one", &fleet.hosts[..1], "");
        let configs =
            (format!("{}\n{one_host}", fleet.config("")), format!("{}\n{one_host}", fleet.config(", batch = 1")));
        let release = |name: &str, bad_on: Option<&str>| drop(fleet.release(name, bad_on));
        let bench = fleet_bench::PipeFleet::new(&fleet.hosts, &fleet.env, fleet.project(), configs, &release);
        fleet_bench::pipe_ways(&bench, front, rounds, &mut n, &mut figures);
    }
    let fleet = SshFleet::start_with(&docker, 4, "", true);
    let by_hand = |sha: &str| {
        for host in &fleet.hosts {
            compose_up_over_ssh(&fleet, host, sha);
        }
    };
    by_hand(&fleet.release("b0", None));
    let samples = (0..rounds)
        .map(|_| {
            n += 1;
            let release = format!("b{n}");
            let sha = fleet.release(&release, None);
            fleet_bench::measure(&fleet.hosts, front, "compose_by_hand", &release, 4, || by_hand(&sha))
        })
        .collect();
    figures.insert("compose_by_hand".into(), serde_json::Value::Array(samples));
    std::fs::write(out, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
}

/// The hand-rolled deploy of one host: `ssh HOST docker-compose -p P -f FILE up -d` on the
/// compose file placed on the host, the release named on the command line. `DOCKER_HOST` names
/// the simulated host's engine socket (`/mnt/docker.sock`), which on a real host would be the
/// default one.
fn compose_up_over_ssh(fleet: &SshFleet, host: &Host, sha: &str) {
    let k = &fleet.keys;
    let status = Command::new("ssh")
        .arg("-i")
        .arg(k.join("client"))
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", k.join("known_hosts").display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", &format!("root@{}", host.ip)])
        .args(["env", "DOCKER_HOST=unix:///mnt/docker.sock"])
        .arg(format!("PIPE_IMAGE={}", fleet.image))
        .arg(format!("PIPE_TAG={}", &sha[..12]))
        .arg(format!("APP_SECRET={SECRET}"))
        .args(["docker-compose", "-p", &fleet.project(), "-f", "/mnt/app/docker-compose.yml", "up", "-d"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}: {}", host.label, String::from_utf8_lossy(&status.stderr));
}
