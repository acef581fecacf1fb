//! Swarm targets on a real multi-node swarm: three simulated hosts (`support::hosts`) joined into
//! one swarm (`support::swarm`), the real `pipe` deploying a stack through the manager's engine
//! (the target's `env` names it in `DOCKER_HOST`) with an image every node pulls from the test's
//! registry with the credentials the deploy forwards.
//!
//! `PIPE_REQUIRE_DOCKER=1 PIPE_TEST_BASE_IMAGE=pipe-busybox:latest cargo test --test it swarm_nodes::`

use std::collections::BTreeMap;

use crate::support::docker::{Docker, ProjectImages, Registry, unique_name};
use crate::support::hosts::{self, Host};
use crate::support::swarm::Swarm;
use crate::support::{TestEnv, WorkRepo};

const REG_PASSWORD: &str = "swarm-nodes-reg-pw-7731";

/// One container of the service on one node, as that node's engine reports it.
#[derive(Debug)]
struct Task {
    image: String,
    started: jiff::Timestamp,
    /// `None` while it runs.
    finished: Option<jiff::Timestamp>,
}

/// Every container of `service` on `host`'s engine, running or not, oldest first.
fn tasks(host: &Host, service: &str) -> Vec<Task> {
    let ids =
        host.docker(&["ps", "--all", "--quiet", "--filter", &format!("label=com.docker.swarm.service.name={service}")]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args =
        vec!["inspect", "--format", "{{.Config.Image}}|{{.State.StartedAt}}|{{.State.FinishedAt}}|{{.State.Running}}"];
    args.extend(ids);
    let mut tasks: Vec<Task> = host
        .docker(&args)
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split('|').collect();
            let running = parts[3] == "true";
            Task {
                image: parts[0].to_string(),
                started: parts[1].parse().unwrap(),
                finished: (!running).then(|| parts[2].parse().unwrap()),
            }
        })
        .collect();
    tasks.sort_by_key(|t| t.started);
    tasks
}

/// A release is told apart by its immutable tag in the image the task runs (`REPO:TAG@DIGEST`).
fn of(task: &Task, sha: &str) -> bool {
    task.image.contains(&format!(":{}@", &sha[..12])) || task.image.ends_with(&format!(":{}", &sha[..12]))
}

#[test]
fn a_stack_rolls_start_first_across_three_nodes_and_a_swarm_rollback_is_reported_rolled_back() {
    let Some(docker) = Docker::require() else { return };
    if !hosts::available() {
        return;
    }
    let registry = Registry::start("ci", REG_PASSWORD);
    let swarm = Swarm::start(3, &registry);
    let mut env = TestEnv::new();
    let project = unique_name("sn").replace("pipe-test-", "");
    let _images = ProjectImages { project: project.clone() };
    let image = format!("pipe-test/{project}");
    let repo = WorkRepo::new(env.path(), "app");
    repo.write("Dockerfile", &format!("FROM {}\nCOPY www /www\n", docker.base_image));
    repo.write(".pipe.toml", &format!("image = \"{image}\"\ntest = \"true\"\n"));
    let stack_file = env.path().join("stack.yml");
    // One task per node (global), healthy once `/www/health` exists; the update order and failure
    // action are pipe's override's.
    std::fs::write(
        &stack_file,
        r#"version: "3.8"
services:
  web:
    image: ${PIPE_IMAGE}:${PIPE_TAG}
    init: true
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    healthcheck:
      test: ["CMD", "test", "-f", "/www/health"]
      interval: 1s
      timeout: 1s
      retries: 2
    deploy:
      mode: global
      update_config:
        monitor: 4s
"#,
    )
    .unwrap();
    env.env("REG_PW", REG_PASSWORD);
    env.config(&format!(
        "[pipe]\nworkspace = \"{ws}\"\n\n[registry.local]\nurl = \"{reg}\"\nusername = \"ci\"\npassword_env = \"REG_PW\"\n\n\
         [project.{project}]\nrepo = \"{url}\"\nbranches = [\"main\"]\n\n[[project.{project}.deploy]]\nname = \"nodes\"\n\
         branches = [\"main\"]\npush = [\"local\"]\nswarm = {{ file = \"{file}\", stack = \"{project}\" }}\n\
         env = {{ DOCKER_HOST = \"{manager}\" }}\ntimeout = \"120s\"\n",
        ws = env.path().join("work").display(),
        reg = registry.host(),
        url = repo.url(),
        file = stack_file.display(),
        manager = swarm.manager().docker_host(),
    ));
    let release = |name: &str, healthy: bool| {
        repo.write("www/index.html", &format!("{name}\n"));
        let health = repo.work.join("www").join("health");
        if healthy {
            std::fs::write(&health, "ok\n").unwrap();
        } else {
            let _ = std::fs::remove_file(&health);
        }
        repo.commit_to("main", name)
    };
    let service = format!("{project}_web");
    let manager = swarm.manager();

    // The first release: a task on every node, pulled from the registry with the deploy's
    // credentials (no node has logged in).
    let v1 = release("one", true);
    let run = env.pipe(&["run"]);
    run.code(0);
    // The manager pinned the tag to the registry's digest: every node runs that one image.
    let digest = registry.digest(&image, &v1[..12]).expect("the pushed tag's digest");
    for host in &swarm.hosts {
        let running: Vec<Task> = tasks(host, &service).into_iter().filter(|t| t.finished.is_none()).collect();
        assert!(running.len() == 1 && of(&running[0], &v1), "{}: {running:?}\n{}", host.label, run.stderr);
        assert!(running[0].image.ends_with(&format!("@{digest}")), "{}: {running:?} is not {digest}", host.label);
    }

    // The next two: each rolled node by node, start-first on every node.
    let mut previous = v1;
    for name in ["two", "three"] {
        let next = release(name, true);
        let run = env.pipe(&["run"]);
        run.code(0);
        let update = manager.docker(&["service", "inspect", "--format", "{{.UpdateStatus.State}}", &service]);
        assert_eq!(update.trim(), "completed", "{}", run.stderr);
        rolled_start_first(&swarm, &service, &previous, &next);
        previous = next;
    }
    let good = previous;
    let serving = |host: &Host| {
        let running: Vec<Task> = tasks(host, &service).into_iter().filter(|t| t.finished.is_none()).collect();
        assert!(running.len() == 1 && of(&running[0], &good), "{}: {running:?}", host.label);
        running[0].started
    };
    let before: Vec<jiff::Timestamp> = swarm.hosts.iter().map(serving).collect();

    // The last never becomes healthy: the swarm rolls itself back, and pipe says so in the
    // swarm's words, naming the task that failed, its node and its error.
    let bad = release("four", false);
    let run = env.pipe(&["run"]);
    eprintln!("{}", run.stderr.lines().filter(|l| l.contains("error:")).collect::<Vec<_>>().join("\n"));
    run.code(1)
        .stderr_has(&format!("the swarm rolled back the update of `{service}` (rollback_completed)"))
        .stderr_has("update rolled back due to failure or early termination of task")
        .stderr_has("unhealthy container")
        .stderr_has(&format!("rolled back to {}/{image}:{}", registry.host(), &good[..12]));
    let tried: Vec<&Host> = swarm.hosts.iter().filter(|h| tasks(h, &service).iter().any(|t| of(t, &bad))).collect();
    assert!(!tried.is_empty(), "no node ran the failing release");
    assert!(
        tried.iter().any(|h| run.stderr.contains(&format!("({})", h.ip))),
        "the report names a node that ran it ({:?}):\n{}",
        tried.iter().map(|h| h.ip).collect::<Vec<_>>(),
        run.stderr
    );
    // Start-first: the failing task never became healthy, so no node's old task was stopped;
    // pipe's redeploy of the previous release after the swarm's rollback changed no task.
    let after: Vec<jiff::Timestamp> = swarm.hosts.iter().map(serving).collect();
    assert_eq!(before, after, "a node's running task was replaced");
    let history = env.path().join("state").join("deploys").join(&project).join("nodes.toml");
    let history: toml::Value = toml::from_str(&std::fs::read_to_string(history).unwrap()).unwrap();
    let deploys = history["deploy"].as_array().unwrap();
    let failed = deploys.iter().find(|d| d["tag"].as_str() == Some(&bad[..12])).expect("the failed deploy's record");
    assert_eq!(failed["result"].as_str(), Some("rolled_back"), "{history}");
    assert!(
        !deploys.iter().any(|d| d["tag"].as_str() == Some(&bad[..12]) && d["result"].as_str() == Some("succeeded"))
    );
    let status = env.pipe(&["status", "--json"]).json();
    assert_eq!(status["refs"][0]["result"], "failed", "{status}");

    // Nothing of the swarm is left: its firewall rules, namespaces, veths, directories.
    let tag = swarm.rule_tag();
    let left: Vec<_> = swarm.hosts.iter().map(|h| (h.netns.clone(), h.dir.clone(), h.veth())).collect();
    drop(swarm);
    let rules = std::process::Command::new("iptables").args(["-S", "DOCKER-USER"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains(&tag), "firewall rules left");
    let links = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
    for (netns, dir, veth) in left {
        assert_eq!(hosts::leftovers(&netns, &dir), Vec::<String>::new());
        assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!("{veth}@")), "veth {veth} left");
    }
}

/// The update from `old` to `new` went node by node, start-first: on every node the new task's
/// container started before the swarm saw it running (healthy) and the old one stopped only
/// after that; the next node's new container started only once the one before was running.
fn rolled_start_first(swarm: &Swarm, service: &str, old: &str, new: &str) {
    let manager = swarm.manager();
    let ids = manager.docker(&["service", "ps", service, "--quiet", "--filter", "desired-state=running"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let mut args = vec!["inspect", "--type", "task", "--format", "{{.NodeID}}|{{json .Status.Timestamp}}"];
    args.extend(ids);
    let running: BTreeMap<String, jiff::Timestamp> = manager
        .docker(&args)
        .lines()
        .map(|l| {
            let (node, at) = l.split_once('|').unwrap();
            (node.to_string(), at.trim_matches('"').parse().unwrap())
        })
        .collect();
    let mut timeline = Vec::new();
    for (host, node) in swarm.hosts.iter().zip(swarm.node_ids()) {
        let all = tasks(host, service);
        let fresh: Vec<&Task> = all.iter().filter(|t| of(t, new)).collect();
        let stale: Vec<&Task> = all.iter().filter(|t| of(t, old)).collect();
        assert!(fresh.len() == 1 && fresh[0].finished.is_none(), "{}: {all:?}", host.label);
        assert!(stale.len() == 1, "{}: {all:?}", host.label);
        let stopped = stale[0].finished.unwrap_or_else(|| panic!("{}: the old task still runs: {all:?}", host.label));
        let ran = *running.get(&node).unwrap_or_else(|| panic!("{}: no running task: {running:?}", host.label));
        assert!(
            fresh[0].started <= ran && ran <= stopped,
            "{}: not start-first: {all:?}, running at {ran}",
            host.label
        );
        timeline.push((fresh[0].started, ran, stopped, host.label.clone()));
    }
    timeline.sort();
    eprintln!("{service} {} → {}: (new started, new running, old stopped, node) {timeline:?}", &old[..12], &new[..12]);
    for pair in timeline.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two nodes were updated at once: {timeline:?}");
    }
}
