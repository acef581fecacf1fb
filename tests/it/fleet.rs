//! Deploys that span hosts. Each host is simulated on this machine (`support::hosts`): a network
//! namespace with its own Docker engine, reached over a veth pair.
//!
//! `PIPE_REQUIRE_DOCKER=1 PIPE_TEST_BASE_IMAGE=pipe-busybox:latest cargo test --test it fleet::`

use std::time::Duration;

use crate::support::docker::Docker;
use crate::support::hosts::{self, Host};

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
