//! The switched ingress survives what happens behind pipe's back, on a simulated receiving host
//! (`support::hosts`: a network namespace with its own dockerd, nginx and `pipe serve`), under
//! continuous load from outside through the host's nginx: the engine restarted (its containers
//! stop with it; the release comes back by its restart policy at its fixed address while other
//! containers start on its networks), then the release container removed by hand and another
//! container started at its very address. Every answer is the release pipe switched to or a
//! failure — never another container.
//!
//! `PIPE_REQUIRE_DOCKER=1 PIPE_TEST_BASE_IMAGE=pipe-busybox:latest cargo test --test it serve_engine_restart::`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::serve_rollout::{Kind, build_release, compose_file};
use crate::support::TestEnv;
use crate::support::docker::{Docker, unique_name};
use crate::support::hosts::{self, Host};
use crate::support::load::Load;
use crate::support::nginx;

const HOST: &str = "web.hook.test";
const TOKEN: &str = "restart-token-31337";
const SERVE_PORT: u16 = 9010;
const FRONT: u16 = 8080;

/// One request to the host's `pipe serve`: the status and the JSON body.
fn call(host: &Host, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect_timeout(&(host.ip, SERVE_PORT).into(), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = text.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok());
    (status, json.unwrap_or(serde_json::Value::Null))
}

/// POSTs `image:tag` to the hook and waits for the run's end.
fn deploy(host: &Host, image: &str, tag: &str) -> serde_json::Value {
    let body = serde_json::json!({"image": image, "tag": tag}).to_string();
    let (status, mut doc) = call(host, "POST", "/hooks/web?wait=50", &body);
    assert!(status == 200 || status == 202, "{status} {doc}");
    let id = doc["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(180);
    while matches!(doc["status"].as_str(), Some("queued" | "running")) {
        assert!(Instant::now() < deadline, "run {id} never ended: {doc}");
        std::thread::sleep(Duration::from_millis(300));
        doc = call(host, "GET", &format!("/hooks/web/runs/{id}"), "").1;
    }
    assert_eq!(doc["status"], "succeeded", "{doc}");
    doc
}

/// Waits (up to `limit`) until `f` holds.
fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn after_an_engine_restart_or_a_container_removed_by_hand_the_ingress_never_routes_to_another_container() {
    let Some(docker) = Docker::require() else { return };
    if !hosts::available() || !nginx::available() {
        return;
    }
    let mut host = Host::start("receiver", &[]);
    host.load_image(&docker.base_image);
    let mut env = TestEnv::new();
    let project = unique_name("er").replace("pipe-test-", "");
    let image = format!("pipe-test/{project}");
    let file = compose_file(&env.path().join("deploy"), "web");
    let run = |args: &[&str]| host.docker(args);
    for (tag, body) in [("r1", "release 1"), ("r2", "release 2")] {
        build_release(&run, &docker.base_image, env.path(), [&project, &image, tag, body], Kind::Good);
    }
    // Another project's container, answering `stranger`.
    let ctx = env.path().join("stranger");
    std::fs::create_dir_all(ctx.join("www")).unwrap();
    std::fs::write(ctx.join("www/index.html"), "stranger\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {}\nCOPY www /www\n", docker.base_image)).unwrap();
    host.docker(&["build", "--quiet", "-t", "pipe-test/stranger:1", &ctx.display().to_string()]);

    let ngx = host.dir.join("nginx");
    let upstreams = env.path().join("upstreams");
    std::fs::create_dir_all(&upstreams).unwrap();
    env.env("HOOK_TOKEN", TOKEN).env("APP_SECRET", "s").env("DOCKER_HOST", &host.docker_host());
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[ingress]\ndomain = \"hook.test\"\nlisten = \"{ip}:{FRONT}\"\n\
         upstreams = \"{up}\"\nnginx = [\"/usr/sbin/nginx\", \"-p\", \"{n}\", \"-c\", \"{n}/nginx.conf\"]\n\n\
         [serve.hooks.web]\ntoken_env = \"HOOK_TOKEN\"\nimages = [\"{image}\"]\n\
         compose = {{ file = \"{file}\", project = \"{project}\", services = [\"web\"] }}\n\
         ingress = {{ web = 8080 }}\nhealth = {{ url = \"http://{HOST}/cgi-bin/health\", timeout = \"20s\" }}\n\
         drain = \"1s\"\nenv = {{ APP_SECRET = {{ env = \"APP_SECRET\" }} }}\ntimeout = \"3m\"\n",
        ws = env.path().join("work").display(),
        ip = host.ip,
        up = upstreams.display(),
        n = ngx.display(),
        file = file.display(),
    ));
    let generated = env.pipe(&["generate", "nginx"]);
    generated.code(0).stdout_has("web pipe-web;");
    std::fs::write(env.path().join("pipe.conf"), &generated.stdout).unwrap();
    host.nginx(&format!("    include {};", env.path().join("pipe.conf").display()));

    // `pipe serve` in the host's namespace (it checks containers at their addresses there).
    let inner = env.command(&["serve", "--listen", &format!("{}:{SERVE_PORT}", host.ip)]);
    let mut serve = host.command(inner.get_program());
    serve.args(inner.get_args()).env_clear().current_dir(env.path());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            serve.env(k, v);
        }
    }
    let serve_log = env.path().join("serve.log");
    serve.stdout(Stdio::null()).stderr(std::fs::File::create(&serve_log).unwrap());
    host.spawn(serve);
    host.wait_port(SERVE_PORT, Duration::from_secs(30));

    let doc = deploy(&host, &image, "r1");
    assert_eq!(doc["rollout"], "zero-downtime", "{doc}");
    until(Duration::from_secs(15), "release 1 never answered", || {
        host.get(FRONT, HOST, "/").as_deref() == Ok("release 1")
    });
    let upstream = std::fs::read_to_string(upstreams.join("web.conf")).unwrap();
    let recorded = upstream.lines().find_map(|l| l.strip_prefix("# pipe-release ")).expect("the release is recorded");
    let (container, addr) = recorded.split_once(' ').unwrap();
    let pinned = addr.rsplit_once(':').unwrap().0.to_string();
    let network = format!("pipe-ingress-{project}");
    assert_eq!(address_on(&host, &network, container), pinned);

    // nginx's workers from before the first switch are gone.
    std::thread::sleep(Duration::from_secs(1));
    let load = Load::start(&host.ip.to_string(), FRONT, HOST);
    std::thread::sleep(Duration::from_secs(1));

    // 1. The engine restarts under load. Its containers stop with it; the release comes back by
    // its restart policy. Other containers start on both of its networks as soon as it answers.
    let mut marks = vec![("engine stopped", load.elapsed())];
    host.stop_engine();
    std::thread::sleep(Duration::from_secs(1));
    host.start_engine();
    marks.push(("engine started", load.elapsed()));
    let stranger = |n: usize, net: &str, ip: Option<&str>| {
        let name = format!("stranger-{n}");
        let mut args = vec!["run", "--detach", "--name", &name, "--network", net];
        if let Some(ip) = ip {
            args.extend(["--ip", ip]);
        }
        args.extend(["pipe-test/stranger:1", "httpd", "-f", "-p", "8080", "-h", "/www"]);
        host.docker(&args);
    };
    let default = format!("{project}_default");
    for n in 0..3 {
        stranger(n, &default, None);
        stranger(10 + n, &network, None);
    }
    marks.push(("strangers started", load.elapsed()));
    until(Duration::from_secs(60), "release 1 never answered again after the engine restart", || {
        host.get(FRONT, HOST, "/").as_deref() == Ok("release 1")
    });
    assert_eq!(address_on(&host, &network, container), pinned, "the release came back at its fixed address");
    let after_restart = load.tally();

    // 2. The release removed by hand; once the guard failed closed, a container takes its very
    // address. nginx answers 502, never that container.
    // An answer the release is giving when it is killed is cut short: a failed request (the
    // load checks each body against its length), not another container's answer.
    marks.push(("release answers again", load.elapsed()));
    host.docker(&["rm", "--force", container]);
    marks.push(("release removed", load.elapsed()));
    // The guard logs once nginx was told to reload. A connection nginx began towards the
    // address before that may still be retrying its SYN until `proxy_connect_timeout` (5 s):
    // the other container takes the address after that.
    until(Duration::from_secs(10), "the ingress never failed closed", || {
        std::fs::read_to_string(&serve_log).unwrap().contains("ingress `web` failed closed")
    });
    std::thread::sleep(Duration::from_secs(6));
    assert!(std::fs::read_to_string(upstreams.join("web.conf")).unwrap().contains("pipe failed closed: container"));
    marks.push(("failed closed", load.elapsed()));
    stranger(20, &network, Some(&pinned));
    marks.push(("stranger at the address", load.elapsed()));
    std::thread::sleep(Duration::from_secs(3));
    let answer = host.get(FRONT, HOST, "/");
    assert!(answer.as_ref().is_err_and(|e| e.starts_with("HTTP 502")), "{answer:?}");

    // 3. The next deploy switches to a new release at another fixed address.
    deploy(&host, &image, "r2");
    until(Duration::from_secs(15), "release 2 never answered", || {
        host.get(FRONT, HOST, "/").as_deref() == Ok("release 2")
    });
    std::thread::sleep(Duration::from_secs(1));
    marks.push(("release 2 answers", load.elapsed()));
    let first = load.first_seen();
    let tally = load.finish();
    eprintln!("marks: {marks:?}\nfirst seen: {first:?}");
    let errors = std::fs::read_to_string(ngx.join("error.log")).unwrap_or_default();
    eprintln!(
        "serve log:\n{}\nnginx errors:\n{}",
        std::fs::read_to_string(&serve_log).unwrap(),
        errors.lines().filter(|l| !l.contains("no live upstreams")).collect::<Vec<_>>().join("\n")
    );
    let total: usize = tally.values().sum();
    let failed: usize = tally.iter().filter(|(k, _)| k.starts_with("FAILED")).map(|(_, n)| n).sum();
    let failed_by_restart: usize = after_restart.iter().filter(|(k, _)| k.starts_with("FAILED")).map(|(_, n)| n).sum();
    eprintln!(
        "engine restart and removal under load: {total} requests, {failed_by_restart} failed up to the release answering again after the restart, {failed} failed in all; {tally:?}"
    );
    let strangers: Vec<_> = tally.keys().filter(|k| !k.starts_with("FAILED") && !k.starts_with("release ")).collect();
    assert!(strangers.is_empty(), "another container answered through the ingress: {strangers:?} in {tally:?}");
    let log = std::fs::read_to_string(&serve_log).unwrap();
    assert!(log.contains("ingress `web` failed closed (nginx answers 502): container"), "{log}");
    assert!(!log.contains(TOKEN), "the token reached the log");
}

/// The container's address on `network`.
fn address_on(host: &Host, network: &str, id: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    host.docker(&["inspect", "--format", &format, id]).trim().to_string()
}
