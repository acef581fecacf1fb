//! Deploys that span hosts. Each host is simulated on this machine (`support::hosts`): a network
//! namespace with its own Docker engine, reached over a veth pair.
//!
//! `PIPE_REQUIRE_DOCKER=1 PIPE_TEST_BASE_IMAGE=pipe-busybox:latest cargo test --test it fleet::`

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::docker::{Docker, unique_name};
use crate::support::fleet_bench::{self, TimedLoad};
use crate::support::hosts::{self, Host};
use crate::support::{TestEnv, WorkRepo};

/// The harness itself: two hosts, each runs a container of its own engine that publishes a port
/// on the host's address; the main namespace reaches each one over its veth and gets that host's
/// answer. Dropping the hosts leaves no namespace, veth, daemon or directory behind.
#[test]
fn hosts_run_containers_reached_over_their_veths() {
    let Some(docker) = Docker::require() else { return };
    if !hosts::available() {
        return;
    }
    let mut left = Vec::new();
    {
        let a = Host::start("host1", &[]);
        let b = Host::start("host2", &[]);
        assert_ne!(a.ip, b.ip);
        for h in [&a, &b] {
            h.load_image(&docker.base_image);
            h.docker(&[
                "run",
                "--detach",
                "--name",
                "web",
                "--publish",
                "8080:8080",
                &docker.base_image,
                "sh",
                "-c",
                &format!("mkdir -p /www && echo {} > /www/index.html && exec httpd -f -p 8080 -h /www", h.label),
            ]);
        }
        for h in [&a, &b] {
            h.wait_port(8080, Duration::from_secs(20));
            let mut answer = h.get(8080, "x", "/");
            for _ in 0..50 {
                if answer.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                answer = h.get(8080, "x", "/");
            }
            assert_eq!(answer.as_deref(), Ok(h.label.as_str()), "{} over {}", h.label, h.ip);
            // The host's engine is its own: the main engine has no such container.
            assert!(!docker.ok(&["ps", "--all", "--format", "{{.Names}}"]).lines().any(|n| n == "web"));
        }
        // nginx in a host's namespace, in front of that host's container; a process spawned there
        // listens on the host's address only.
        let mut a = a;
        a.nginx("    server {\n        listen 8081;\n        location / { proxy_pass http://127.0.0.1:8080; }\n    }");
        a.wait_port(8081, Duration::from_secs(10));
        assert_eq!(a.get(8081, "x", "/").as_deref(), Ok("host1"));
        let mut httpd = a.command("busybox");
        httpd.args(["httpd", "-f", "-p", &format!("{}:8090", a.ip), "-h"]).arg(&a.dir);
        a.spawn(httpd);
        a.wait_port(8090, Duration::from_secs(10));
        assert!(a.run("cat", &["/proc/net/tcp"]).contains(":1F9A"), "8090 listens inside the namespace");
        // Stopping and starting the engine: the container stops with it and is still there.
        a.stop_engine();
        assert!(!a.engine_answers());
        a.start_engine();
        assert!(a.docker(&["ps", "--all", "--format", "{{.Names}}"]).contains("web"));
        for h in [&a, &b] {
            left.push((h.netns.clone(), h.dir.clone(), h.veth()));
        }
    }
    for (netns, dir, veth) in left {
        assert_eq!(hosts::leftovers(&netns, &dir), Vec::<String>::new());
        let links = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!("{veth}@")), "veth {veth} left");
    }
}

/// Whether the hosts' hooks deploy through the zero-downtime rollout: each hook gets `ingress`
/// and its host's `[ingress]` switches the host's nginx (start beside, check, switch), and the
/// load must see 0 failed requests. `false` runs the same scenarios with hooks that run compose
/// `up` in place behind a published port (an outage per host per deploy, counted, not refused);
/// every other assertion (which release each host serves, the report) holds either way.
const ZERO_DOWNTIME_HOOKS: bool = true;

const HOOK_SECRET: &str = "fleet-hook-secret-5150";
const SERVE_PORT: u16 = 9010;
const FRONT_PORT: u16 = 80;

/// A fleet: hosts that each run the app under compose, nginx in front of it and `pipe serve`
/// with a hook that deploys it; and the CI side's pipe with a webhook target naming them all.
struct Fleet {
    // Field order is drop order: the hosts (their processes, engines, namespaces) first.
    hosts: Vec<Host>,
    serves: Vec<u32>,
    _images: crate::support::docker::ProjectImages,
    env: TestEnv,
    repo: WorkRepo,
    image: String,
}

impl Fleet {
    /// [`Fleet::start_with`] hooks as [`ZERO_DOWNTIME_HOOKS`] says.
    fn start(docker: &Docker, n: usize, target: &str) -> Fleet {
        Fleet::start_with(docker, n, target, ZERO_DOWNTIME_HOOKS)
    }

    /// `n` hosts; `target` is the extra keys of the webhook target (`batch = 2`, …); `zero_downtime`:
    /// the hooks switch each host's nginx (else compose `up` in place behind a published port).
    fn start_with(docker: &Docker, n: usize, target: &str, zero_downtime: bool) -> Fleet {
        let mut env = TestEnv::new();
        let project = unique_name("fl").replace("pipe-test-", "");
        let image = format!("pipe-test/{project}");
        let repo = WorkRepo::new(env.path(), "app");
        repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
        repo.write(".pipe.toml", &format!("image = \"{image}\"\ntest = \"true\"\n"));
        let mut hosts: Vec<Host> = (1..=n).map(|i| Host::start(&format!("host{i}"), &[])).collect();
        let mut serves = Vec::new();
        for host in &mut hosts {
            serves.push(start_host(host, &project, zero_downtime));
        }
        env.env("HOOK_SECRET", HOOK_SECRET);
        let list: Vec<String> = hosts.iter().map(|h| format!("\"{}\"", h.ip)).collect();
        env.config(&format!(
            "[pipe]\nworkspace = \"{ws}\"\n\n[project.{project}]\nrepo = \"{url}\"\nbranches = [\"main\"]\n\n\
             [[project.{project}.deploy]]\nname = \"prod\"\nbranches = [\"main\"]\ntimeout = \"120s\"\n\
             webhook = {{ url = \"http://{{host}}:{SERVE_PORT}/hooks/app\", secret_env = \"HOOK_SECRET\", hosts = [{hosts}]{target} }}\n",
            ws = env.path().join("work").display(),
            url = repo.url(),
            hosts = list.join(", "),
        ));
        Fleet { hosts, serves, _images: crate::support::docker::ProjectImages { project }, env, repo, image }
    }

    /// Commits a release whose page says `name`; `bad_on` names the host label whose health
    /// check this release fails (its `/health` is removed there at start). Builds and tests it
    /// on the CI side and copies its image into every host's engine. Returns its commit.
    fn release(&self, name: &str, bad_on: Option<&str>) -> String {
        hosts::release_everywhere(&self.env, &self.repo, &self.image, &self.hosts, name, bad_on)
    }

    fn project(&self) -> String {
        self.image.trim_start_matches("pipe-test/").to_string()
    }

    /// What each host's nginx serves now.
    fn serving(&self) -> Vec<Result<String, String>> {
        self.hosts.iter().map(|h| h.get(FRONT_PORT, APP_HOST, "/")).collect()
    }

    /// The target's deploy history, parsed.
    fn history(&self) -> toml::Value {
        let path = self.env.path().join("state").join("deploys").join(self.project()).join("prod.toml");
        let text = std::fs::read_to_string(&path)
            .or_else(|_| {
                // The layout is the state's: find the file by name.
                let out = std::process::Command::new("find")
                    .args([self.env.path().join("state").to_str().unwrap(), "-name", "prod.toml"])
                    .output()
                    .unwrap();
                let found = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string();
                std::fs::read_to_string(found)
            })
            .expect("the target's deploy history");
        toml::from_str(&text).unwrap()
    }
}

/// The name the hosts' nginx routes to the app (the ingress's `web.DOMAIN`).
const APP_HOST: &str = "web.fleet.test";

/// One host's side: the app's compose file, its nginx in front, and `pipe serve` with a hook
/// that deploys it; returns `pipe serve`'s pid. With [`ZERO_DOWNTIME_HOOKS`] the hook has an
/// `ingress` and the host's `[ingress]` switches its nginx (start beside, check, switch); without,
/// nginx proxies to the port the app publishes and the hook's compose `up` replaces it in place.
fn start_host(host: &mut Host, project: &str, zero_downtime: bool) -> u32 {
    let dir = host.dir.join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let ports = if zero_downtime { "" } else { "    ports: [\"127.0.0.1:8080:8080\"]\n" };
    // The app fails its health check on the host its image names in `/www/bad-on`.
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  web:\n    image: ${{PIPE_IMAGE}}:${{PIPE_TAG}}\n    init: true\n{ports}    \
             environment:\n      HOSTLABEL: ${{HOSTLABEL}}\n    \
             command: [\"sh\", \"-c\", \"if [ \\\"$$(cat /www/bad-on 2>/dev/null)\\\" = \\\"$$HOSTLABEL\\\" ]; then rm -f /www/health; fi; exec httpd -f -p 8080 -h /www\"]\n"
        ),
    )
    .unwrap();
    let ws = host.dir.join("serve");
    std::fs::create_dir_all(&ws).unwrap();
    let config = ws.join("pipeline.toml");
    let ngx = host.dir.join("nginx");
    let (ingress, hook_ingress, health) = if zero_downtime {
        let d = ngx.display();
        (
            format!(
                "[ingress]\ndomain = \"fleet.test\"\nlisten = \"{ip}:{FRONT_PORT}\"\nupstreams = \"{d}/upstreams\"\n\
                 nginx = [\"/usr/sbin/nginx\", \"-p\", \"{d}\", \"-c\", \"{d}/nginx.conf\"]\n\n",
                ip = host.ip
            ),
            "ingress = { web = 8080 }\ndrain = \"1s\"\n",
            format!("http://{APP_HOST}/health"),
        )
    } else {
        (String::new(), "", "http://127.0.0.1:8080/health".to_string())
    };
    std::fs::write(
        &config,
        format!(
            "[pipe]\nworkspace = \"{w}\"\n\n{ingress}[serve.hooks.app]\nsecret_env = \"HOOK_SECRET\"\nimages = [\"pipe-test/*\"]\n\
             compose = {{ file = \"{file}\", project = \"{project}\", services = [\"web\"] }}\n{hook_ingress}\
             env = {{ HOSTLABEL = \"{label}\" }}\nhealth = {{ url = \"{health}\", timeout = \"8s\" }}\n\
             timeout = \"90s\"\n",
            w = ws.join("work").display(),
            file = dir.join("docker-compose.yml").display(),
            label = host.label,
        ),
    )
    .unwrap();
    if zero_downtime {
        std::fs::create_dir_all(&ngx).unwrap();
        let generated = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args(["generate", "nginx"])
            .env("PIPE_CONFIG", &config)
            .env("PIPE_STATE", ws.join("state").join("state.toml"))
            .output()
            .unwrap();
        assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
        std::fs::write(ngx.join("pipe.conf"), &generated.stdout).unwrap();
        host.nginx(&format!("    include {}/pipe.conf;", ngx.display()));
    } else {
        host.nginx(&format!(
            "    server {{\n        listen {ip}:{FRONT_PORT};\n        location / {{ proxy_pass http://127.0.0.1:8080; }}\n    }}",
            ip = host.ip
        ));
    }
    start_host_serve(host, project)
}

/// `pipe serve` in the host's namespace, on its address, with its engine; returns its pid once
/// it listens.
fn start_host_serve(host: &mut Host, _project: &str) -> u32 {
    let ws = host.dir.join("serve");
    let config = ws.join("pipeline.toml");
    let mut serve = host.command(env!("CARGO_BIN_EXE_pipe"));
    serve
        .args(["serve", "--listen", &format!("{}:{SERVE_PORT}", host.ip)])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &ws)
        .env("PIPE_CONFIG", &config)
        .env("PIPE_STATE", ws.join("state").join("state.toml"))
        .env("DOCKER_HOST", host.docker_host())
        .env("HOOK_SECRET", HOOK_SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.join("serve.log")).unwrap());
    let pid = host.spawn(serve);
    host.wait_port(SERVE_PORT, Duration::from_secs(20));
    pid
}

/// The load's verdict: requests counted, every host answered, and no failure once hooks are
/// zero-downtime. Returns the total count.
fn judge(results: &[(BTreeMap<String, usize>, Vec<String>)], seconds: f64) -> usize {
    let total: usize = results.iter().map(|(by, failed)| by.values().sum::<usize>() + failed.len()).sum();
    let failed: usize = results.iter().map(|(_, f)| f.len()).sum();
    let per_host: Vec<String> = results
        .iter()
        .enumerate()
        .map(|(i, (by, f))| {
            format!(
                "host{}: {by:?}, {} failed{}",
                i + 1,
                f.len(),
                f.first().map_or(String::new(), |e| format!(" ({e}…)"))
            )
        })
        .collect();
    eprintln!("load: {total} requests in {seconds:.0}s, {failed} failed; {}", per_host.join("; "));
    assert!(total as f64 / seconds >= 90.0, "the load stayed near 100 requests/s: {total} in {seconds:.0}s");
    if ZERO_DOWNTIME_HOOKS {
        assert_eq!(failed, 0, "no request failed on any host: {per_host:?}");
    }
    total
}

/// Drops the fleet and checks that none of its hosts left anything: namespace, veth, daemon
/// directory (with its containers' state), slot.
fn assert_nothing_left(fleet: Fleet) {
    let left: Vec<(String, std::path::PathBuf, String)> =
        fleet.hosts.iter().map(|h| (h.netns.clone(), h.dir.clone(), h.veth())).collect();
    drop(fleet);
    let links = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    for (netns, dir, veth) in left {
        assert_eq!(hosts::leftovers(&netns, &dir), Vec::<String>::new());
        assert!(!links.contains(&format!("{veth}@")), "veth {veth} left");
        let daemons = std::process::Command::new("pgrep")
            .args(["-f", "--", &format!("--data-root={}/", dir.display())])
            .output()
            .unwrap();
        assert!(daemons.stdout.is_empty(), "a dockerd of {} is still running", dir.display());
    }
}

/// Four hosts, several releases in a row under load: each release reaches every host (two at a
/// time); then a release that fails its health check on host 3 puts every host back on the
/// previous release, and the report names host 3 and its health check's last answer; then a
/// rollback by hand puts every host on the first release. Nothing of the hosts is left after.
#[test]
fn a_release_reaches_every_host_and_a_failure_on_one_rolls_every_host_back() {
    let Some(docker) = Docker::require() else { return };
    if !hosts::available() || !crate::support::nginx::available() {
        return;
    }
    let fleet = Fleet::start(&docker, 4, ", batch = 2");
    let v1 = fleet.release("v1", None);
    fleet.env.pipe(&["deploy", &fleet.project(), "main"]).code(0);
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v1")), "{:?}", fleet.serving());
    // Under load from the first release on: before it, nothing serves.
    let load = TimedLoad::start(&fleet.hosts, FRONT_PORT, APP_HOST);
    let started = Instant::now();
    fleet.release("v2", None);
    let run = fleet.env.pipe(&["deploy", &fleet.project(), "main"]);
    run.code(0).stderr_has("4 hosts, 2 at a time").stderr_has("deployed").stderr_has("on 4 of 4 hosts");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v2")), "{:?}", fleet.serving());

    // Host 3 of 4 fails its health check: every host serves v2 again.
    fleet.release("v3", Some("host3"));
    let host3 = fleet.hosts[2].ip.to_string();
    let run = fleet.env.pipe(&["deploy", &fleet.project(), "main"]);
    run.code(1)
        .stderr_has(&format!("failed on host `{host3}` (3/4)"))
        .stderr_has("HTTP 404")
        .stderr_has("every host runs it again");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v2")), "every host back on v2: {:?}", fleet.serving());
    let history = fleet.history();
    let deploys = history["deploy"].as_array().unwrap();
    let failed = &deploys[deploys.len() - 2];
    assert_eq!(failed["result"].as_str(), Some("rolled_back"), "{history}");
    let hosts = hosts::host_entries(failed);
    assert_eq!(hosts.len(), 4);
    assert_eq!((hosts[2].0.as_str(), hosts[2].1.as_str()), (host3.as_str(), "failed"));
    assert!(hosts[2].2.contains("HTTP 404"), "host 3's health answer kept: {hosts:?}");
    assert!(hosts.iter().enumerate().all(|(i, h)| i == 2 || h.1 == "rolled_back"), "{hosts:?}");
    assert_eq!(deploys.last().unwrap()["result"].as_str(), Some("succeeded"));
    // `pipe status` says it host by host, in its table and its JSON.
    let status = fleet.env.pipe(&["status", "--json"]);
    let doc = status.code(0).json();
    let fleets = &doc["refs"][0]["fleets"][0];
    assert_eq!(fleets["target"], "prod", "{doc}");
    assert_eq!(fleets["result"], "rolled_back", "{doc}");
    assert_eq!(fleets["hosts"][2]["result"], "failed", "{doc}");
    assert!(
        fleets["summary"].as_str().unwrap().contains(&format!("{host3} failed: health check's last answer: HTTP 404")),
        "{doc}"
    );
    fleet.env.pipe(&["status"]).code(0).stdout_has("HOSTS").stdout_has("3 rolled_back, 1 failed");

    // A rollback by hand goes to every host the same way; `--json` says where each host is.
    let run = fleet.env.pipe(&["deploy", &fleet.project(), "main", "--commit", &v1[..12], "--json"]);
    let doc = run.code(0).json();
    assert_eq!(doc["result"], "succeeded", "{doc}");
    assert_eq!(doc["targets"][0]["rollback"], true, "{doc}");
    let hosts = doc["targets"][0]["host"].as_array().unwrap();
    assert_eq!(hosts.len(), 4, "{doc}");
    assert!(hosts.iter().all(|h| h["result"] == "deployed"), "{doc}");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v1")), "{:?}", fleet.serving());
    let seconds = started.elapsed().as_secs_f64();
    let results = load.finish_tallied();
    judge(&results, seconds);
    // Host 3's release failed its check there: behind a switched ingress it never answered on
    // host 3 (the others served it from their switch until the fleet rolled them back).
    if ZERO_DOWNTIME_HOOKS {
        assert!(!results[2].0.contains_key("v3"), "v3 answered on host 3, where it failed its check");
    }
    assert_nothing_left(fleet);
}

/// A host that cannot be reached before the rollout fails the deploy with nothing switched
/// anywhere, naming the host; with `skip_unreachable` the others get the release and the host is
/// reported skipped. A host whose engine stops mid-rollout (once host 1 serves the release)
/// fails its batch and puts the hosts already switched back.
#[test]
fn an_unreachable_host_stops_the_deploy_before_any_switch_and_a_stopped_engine_rolls_back() {
    let Some(docker) = Docker::require() else { return };
    if !hosts::available() || !crate::support::nginx::available() {
        return;
    }
    let mut fleet = Fleet::start(&docker, 3, ", batch = 1");
    fleet.release("v1", None);
    fleet.env.pipe(&["deploy", &fleet.project(), "main"]).code(0);
    fleet.release("v2", None);
    let host2 = fleet.hosts[1].ip.to_string();
    let pid = fleet.serves[1];
    fleet.hosts[1].kill(pid);
    let run = fleet.env.pipe(&["deploy", &fleet.project(), "main"]);
    run.code(1)
        .stderr_has(&format!("host `{host2}` (2/3) cannot be reached"))
        .stderr_has("no host was switched")
        .stderr_has("skip_unreachable = true");
    assert!(fleet.serving().iter().all(|s| s.as_deref() == Ok("v1")), "{:?}", fleet.serving());

    // The operator allows it: the others get v2, host 2 is reported skipped.
    let config = std::fs::read_to_string(fleet.env.config_path()).unwrap();
    fleet.env.config(&config.replace("batch = 1", "batch = 1, skip_unreachable = true"));
    fleet.env.pipe(&["deploy", &fleet.project(), "main"]).code(0).stderr_has("skipped").stderr_has("on 2 of 3 hosts");
    let serving = fleet.serving();
    assert_eq!((serving[0].as_deref(), serving[2].as_deref()), (Ok("v2"), Ok("v2")));
    assert_eq!(serving[1].as_deref(), Ok("v1"), "the skipped host was not touched");
    let history = fleet.history();
    let hosts = hosts::host_entries(history["deploy"].as_array().unwrap().last().unwrap());
    assert_eq!(hosts[1].1, "skipped", "{hosts:?}");

    // Host 2's receiver back, its engine stopped: host 1 switches, host 2 fails, host 1 goes back.
    let serve = start_host_serve_again(&mut fleet, 1);
    fleet.serves[1] = serve;
    fleet.env.config(&config);
    fleet.env.pipe(&["deploy", &fleet.project(), "main", "--commit", &fleet_commit(&fleet, "v1")]).code(0);
    fleet.release("v3", None);
    // Host 2's engine stops mid-rollout: as soon as host 1 (the first batch) serves v3.
    let deploy = fleet.env.command(&["deploy", &fleet.project(), "main"]).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while fleet.hosts[0].get(FRONT_PORT, APP_HOST, "/").as_deref() != Ok("v3") {
        assert!(Instant::now() < deadline, "host 1 never served v3");
        std::thread::sleep(Duration::from_millis(20));
    }
    fleet.hosts[1].stop_engine();
    let output = deploy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("failed on host `{host2}` (2/3)")), "{stderr}");
    let serving = fleet.serving();
    assert_eq!(serving[0].as_deref(), Ok("v1"), "host 1 back on v1: {serving:?}");
    assert_eq!(serving[2].as_deref(), Ok("v1"), "host 3 never switched: {serving:?}");
    let history = fleet.history();
    let deploys = history["deploy"].as_array().unwrap();
    let record = deploys.iter().rev().find(|d| d.get("rollback").and_then(|r| r.as_bool()) != Some(true)).unwrap();
    let hosts = hosts::host_entries(record);
    assert_eq!(hosts[0].1, "rolled_back", "{hosts:?}");
    assert!(hosts[1].1 == "failed" || hosts[1].1 == "rollback_failed", "{hosts:?}");
    assert_eq!(hosts[2].1, "not_started", "{hosts:?}");
    fleet.hosts[1].start_engine();
    assert_nothing_left(fleet);
}

fn start_host_serve_again(fleet: &mut Fleet, i: usize) -> u32 {
    let project = fleet.project();
    start_host_serve(&mut fleet.hosts[i], &project)
}

fn fleet_commit(fleet: &Fleet, message: &str) -> String {
    let out = std::process::Command::new("git")
        .args(["log", "--format=%H %s", "HEAD"])
        .current_dir(&fleet.repo.work)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.ends_with(&format!(" {message}"))).expect("the commit");
    line[..12].to_string()
}

/// A fleet's keys are checked where they are written: `{host}` and `hosts` go together, a host
/// named twice, a batch of 0, docker-puller's protocol, each at its line.
#[test]
fn check_locates_every_mistake_in_a_fleets_keys() {
    let env = TestEnv::new();
    env.config(
        "[project.a]\nrepo = \"https://example.com/a.git\"\nbranches = [\"main\"]\n\n\
         [[project.a.deploy]]\nbranches = [\"main\"]\nwebhook = { url = \"http://10.0.0.1:9010/hooks/a\", hosts = [\"10.0.0.1\", \"10.0.0.1\"], batch = 0 }\n\n\
         [[project.a.deploy]]\nname = \"two\"\nbranches = [\"main\"]\nwebhook = { url = \"http://{host}:9010/hooks/a\", skip_unreachable = true }\n",
    );
    let run = env.pipe(&["check"]);
    let file = env.config_path().display().to_string();
    run.code(2)
        .stderr_has(&format!("{file}:7:"))
        .stderr_has("`webhook.url` needs `{host}` where each of `hosts` goes")
        .stderr_has("`webhook.hosts` names `10.0.0.1` twice")
        .stderr_has("`webhook.batch` is 0")
        .stderr_has(&format!("{file}:12:"))
        .stderr_has("`webhook.url` has `{host}` but the target has no `hosts`")
        .stderr_has("`webhook.skip_unreachable` needs `hosts`");
    // A good fleet passes.
    env.config(
        "[project.a]\nrepo = \"https://example.com/a.git\"\nbranches = [\"main\"]\n\n\
         [[project.a.deploy]]\nbranches = [\"main\"]\nwebhook = { url = \"http://{host}:9010/hooks/a\", secret_env = \"S\", hosts = [\"web1.example.com\", \"10.0.0.2:9011\"], batch = 1, skip_unreachable = true }\n",
    );
    env.pipe(&["check"]).code(0);
}

/// The benchmark `bench/fleet.sh` runs (ignored by the suite): four hosts, one release at a
/// time under load, deployed to one host alone, to all four one host a batch, to all four at
/// once (hooks through the zero-downtime rollout), then a release that fails on host 3; and on
/// four fresh hosts whose app publishes its port, by hand (`docker-compose up -d` against each
/// host's engine, one after another). Writes its figures as JSON to `PIPE_FLEET_BENCH_OUT`.
#[test]
#[ignore = "a benchmark: bench/fleet.sh runs it"]
fn bench_fleet_rollout() {
    let Some(docker) = Docker::require() else { return };
    let Ok(out) = std::env::var("PIPE_FLEET_BENCH_OUT") else { panic!("set PIPE_FLEET_BENCH_OUT") };
    let rounds: usize = std::env::var("PIPE_FLEET_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let mut figures = serde_json::Map::new();
    let mut n = 0;
    {
        let fleet = Fleet::start_with(&docker, 4, "", true);
        let configs = configs(&fleet);
        let release = |name: &str, bad_on: Option<&str>| drop(fleet.release(name, bad_on));
        let bench = fleet_bench::PipeFleet::new(&fleet.hosts, &fleet.env, fleet.project(), configs, &release);
        fleet_bench::pipe_ways(&bench, (FRONT_PORT, APP_HOST), rounds, &mut n, &mut figures);
    }
    let fleet = Fleet::start_with(&docker, 4, "", false);
    let (one, _) = configs(&fleet);
    fleet.env.config(&one);
    fleet.release("b0", None);
    fleet.env.pipe(&["deploy", &fleet.project(), "main", "--target", "prod"]).code(0);
    let samples = (0..rounds).map(|_| measure_by_hand(&fleet, &mut n)).collect();
    figures.insert("compose_by_hand".into(), serde_json::Value::Array(samples));
    std::fs::write(out, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
}

/// The bench's pipeline files: `prod` (every host, all at once) with `one` (host 1 alone), and
/// `prod` one host a batch.
fn configs(fleet: &Fleet) -> (String, String) {
    let all = std::fs::read_to_string(fleet.env.config_path()).unwrap();
    let one = format!(
        "{all}\n[[project.{p}.deploy]]\nname = \"one\"\nbranches = [\"main\"]\ntimeout = \"120s\"\n\
         webhook = {{ url = \"http://{{host}}:{SERVE_PORT}/hooks/app\", secret_env = \"HOOK_SECRET\", hosts = [\"{}\"] }}\n",
        fleet.hosts[0].ip,
        p = fleet.project(),
    );
    let batch1 = one.replacen("\"] }\n", "\"], batch = 1 }\n", 1);
    assert_ne!(batch1, one);
    (one, batch1)
}

/// One release deployed by hand under load (`fleet_bench::measure`): `docker-compose up -d`
/// against each host's engine, one after another.
fn measure_by_hand(fleet: &Fleet, n: &mut usize) -> serde_json::Value {
    *n += 1;
    let project = fleet.project();
    let release = format!("b{n}");
    let sha = fleet.release(&release, None);
    fleet_bench::measure(&fleet.hosts, (FRONT_PORT, APP_HOST), "compose_by_hand", &release, 4, || {
        for host in &fleet.hosts {
            let file = host.dir.join("app").join("docker-compose.yml");
            let status = std::process::Command::new("docker-compose")
                .args(["-p", &project, "-f"])
                .arg(&file)
                .args(["up", "-d"])
                .env("DOCKER_HOST", host.docker_host())
                .env("PIPE_IMAGE", &fleet.image)
                .env("PIPE_TAG", &sha[..12])
                .env("HOSTLABEL", &host.label)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
    })
}
