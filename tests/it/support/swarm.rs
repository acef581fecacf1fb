//! A real multi-node swarm of simulated hosts (`hosts::Host`): the first host's engine is the
//! manager (`docker swarm init --advertise-addr IP`), the others join it as workers.
//!
//! Host to host traffic goes through the main namespace, which routes between the hosts' veths;
//! Docker sets the main namespace's `FORWARD` policy to `DROP`, so the swarm inserts an `ACCEPT`
//! rule in `DOCKER-USER` (a chain Docker never rewrites) for each ordered pair of its hosts'
//! veths, carrying a comment of its own, and removes exactly those rules on drop. Everything the
//! swarm needs between nodes (TCP 2377, TCP/UDP 7946, UDP 4789 for overlay networks) passes.
//!
//! A registry: the test's registry (`docker::Registry`, on the main namespace's 127.0.0.1) is
//! served again inside each host's namespace on the same address, over the same storage and
//! the same htpasswd file (as `engine::FreshEngine` does), so one image name
//! (`127.0.0.1:PORT/…`) is valid on the CI host and on every node, and every node must pull it
//! with credentials: a worker has them only when the deploy forwards them
//! (`--with-registry-auth`).
//!
//! Drop: the workers leave, then the manager (`--force`), the rules go, then the hosts (their
//! processes, the registries included, engines, namespaces, veths and directories).

use std::process::Command;
use std::time::{Duration, Instant};

use super::docker::Registry;
use super::hosts::Host;

pub struct Swarm {
    /// The manager first.
    pub hosts: Vec<Host>,
    /// The `iptables` arguments after `-I`/`-D` of each rule this swarm inserted.
    rules: Vec<Vec<String>>,
}

impl Swarm {
    /// `n` hosts joined into one swarm (one manager, `n - 1` workers), each serving `registry`
    /// on 127.0.0.1 inside its namespace; returns once every node is `Ready`.
    pub fn start(n: usize, registry: &Registry) -> Swarm {
        assert!(n >= 2, "a multi-node swarm has at least two nodes");
        let hosts: Vec<Host> = std::thread::scope(|s| {
            let started: Vec<_> = (1..=n).map(|i| s.spawn(move || Host::start(&format!("node{i}"), &[]))).collect();
            started.into_iter().map(|t| t.join().expect("a host did not start")).collect()
        });
        let mut swarm = Swarm { hosts, rules: Vec::new() };
        swarm.link();
        for host in &mut swarm.hosts {
            serve_registry(host, registry);
        }
        swarm.form();
        swarm
    }

    /// The manager's engine: where `docker stack deploy` and `docker service` go.
    pub fn manager(&self) -> &Host {
        &self.hosts[0]
    }

    /// The comment on this swarm's firewall rules.
    pub fn rule_tag(&self) -> String {
        format!("pipe-test swarm {}", self.hosts[0].netns)
    }

    /// Lets each host reach every other one through the main namespace.
    fn link(&mut self) {
        let tag = self.rule_tag();
        for a in &self.hosts {
            for b in &self.hosts {
                if a.ip == b.ip {
                    continue;
                }
                let rule: Vec<String> = [
                    "DOCKER-USER",
                    "-i",
                    &a.veth(),
                    "-o",
                    &b.veth(),
                    "-m",
                    "comment",
                    "--comment",
                    &tag,
                    "-j",
                    "ACCEPT",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let out = Command::new("iptables").arg("-I").args(&rule).output().expect("iptables");
                assert!(out.status.success(), "iptables -I {rule:?}: {}", String::from_utf8_lossy(&out.stderr));
                self.rules.push(rule);
            }
        }
        // Proven before the swarm relies on it.
        for a in &self.hosts {
            for b in &self.hosts {
                if a.ip != b.ip {
                    a.run("busybox", &["ping", "-c", "1", "-W", "2", &b.ip.to_string()]);
                }
            }
        }
    }

    /// `docker swarm init` on the first host, `docker swarm join` on the others.
    fn form(&self) {
        let manager = self.manager();
        let ip = manager.ip.to_string();
        manager.docker(&["swarm", "init", "--advertise-addr", &ip, "--listen-addr", &format!("{ip}:2377")]);
        let token = manager.docker(&["swarm", "join-token", "--quiet", "worker"]);
        for worker in &self.hosts[1..] {
            worker.docker(&[
                "swarm",
                "join",
                "--token",
                token.trim(),
                "--advertise-addr",
                &worker.ip.to_string(),
                &format!("{ip}:2377"),
            ]);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = manager.docker(&["node", "ls", "--format", "{{.Status}}"]);
            if nodes.lines().filter(|s| *s == "Ready").count() == self.hosts.len() {
                return;
            }
            assert!(Instant::now() < deadline, "the swarm's nodes are not all ready:\n{nodes}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Each node's id, in the order of `hosts`.
    pub fn node_ids(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.docker(&["info", "--format", "{{.Swarm.NodeID}}"]).trim().to_string()).collect()
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for host in self.hosts.iter().rev() {
            let _ = host.docker_cmd().args(["swarm", "leave", "--force"]).output();
        }
        for rule in &self.rules {
            let _ = Command::new("iptables").arg("-D").args(rule).output();
        }
    }
}

/// `docker-registry serve` on `registry`'s configuration inside `host`'s namespace (so on
/// 127.0.0.1:PORT there), stopped with the host's other processes; waits until it answers.
fn serve_registry(host: &mut Host, registry: &Registry) {
    let mut cmd = host.command("docker-registry");
    cmd.arg("serve").arg(registry.config_file()).stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::null());
    host.spawn(cmd);
    let url = format!("http://127.0.0.1:{}/v2/", registry.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let code = host.command("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).output();
        if code.is_ok_and(|o| o.stdout == b"401") {
            return;
        }
        assert!(Instant::now() < deadline, "{}: the registry does not answer on {url}", host.label);
        std::thread::sleep(Duration::from_millis(100));
    }
}
