//! Swarm stacks updated without downtime: unless the stack file says otherwise, every service
//! gets `update_config: {order: start-first, failure_action: rollback}` (and a start-first
//! `rollback_config`) from an override file passed to `docker stack deploy` after the stack file.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::SwarmTarget;
use crate::docker::client::Docker;
use crate::exec::{self, Cmd};
use crate::output::Output;

/// What the stack file says about its services' updates (from `docker stack config`).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StackShape {
    pub version: String,
    /// Service name, whether it sets `update_config.order`, whether it sets `failure_action`.
    pub services: Vec<(String, bool, bool)>,
}

/// Reads `docker stack config`'s normalised output (two-space indentation, one key a line).
pub(crate) fn parse_stack_config(text: &str) -> StackShape {
    let mut shape = StackShape::default();
    let mut in_services = false;
    let mut in_update = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let key = line.trim().trim_end_matches(':');
        match indent {
            0 => {
                in_services = line == "services:";
                if let Some(v) = line.strip_prefix("version:") {
                    shape.version = v.trim().trim_matches('"').to_string();
                }
            }
            2 if in_services && line.ends_with(':') => {
                shape.services.push((key.to_string(), false, false));
                in_update = false;
            }
            6 if in_services => in_update = key == "update_config",
            8 if in_services && in_update => {
                if let Some(last) = shape.services.last_mut() {
                    last.1 |= key.starts_with("order:");
                    last.2 |= key.starts_with("failure_action:");
                }
            }
            _ => {}
        }
    }
    shape
}

/// What a stack file says about its services' updates, from the file as written.
pub(crate) fn shape_from_yaml(text: &str) -> anyhow::Result<StackShape> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let root = docs.into_iter().next().unwrap_or(Yaml::Null);
    let version = match &root["version"] {
        Yaml::String(v) => v.clone(),
        Yaml::Real(v) => v.clone(),
        Yaml::Integer(v) => v.to_string(),
        _ => String::new(),
    };
    let mut services = Vec::new();
    if let Yaml::Hash(map) = &root["services"] {
        for (name, service) in map {
            let Some(name) = name.as_str() else { continue };
            let update = &service["deploy"]["update_config"];
            services.push((name.to_string(), !update["order"].is_badvalue(), !update["failure_action"].is_badvalue()));
        }
    }
    Ok(StackShape { version, services })
}

/// The override adding start-first updates with automatic rollback where the stack file is
/// silent; `None` when nothing is missing, or the file's version is older than 3.4 (which
/// cannot say `order`).
pub(crate) fn render_override(shape: &StackShape) -> Option<String> {
    let (major, minor) = shape.version.split_once('.').unwrap_or((&shape.version, "0"));
    let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().unwrap_or(0));
    if (major, minor) < (3, 4) {
        return None;
    }
    let rollback_config = (major, minor) >= (3, 7);
    let mut out =
        format!("# Written by pipe before `docker stack deploy`.\nversion: \"{}\"\nservices:\n", shape.version);
    let mut any = false;
    for (service, has_order, has_failure) in &shape.services {
        if *has_order && *has_failure {
            continue;
        }
        any = true;
        let _ = writeln!(out, "  {service}:\n    deploy:\n      update_config:");
        if !has_order {
            out.push_str("        order: start-first\n");
        }
        if !has_failure {
            out.push_str("        failure_action: rollback\n");
        }
        if rollback_config && !has_order {
            out.push_str("      rollback_config:\n        order: start-first\n");
        }
    }
    any.then_some(out)
}

/// `docker stack deploy --compose-file FILE [--compose-file OVERRIDE] --with-registry-auth STACK`.
pub(crate) fn deploy_cmd(docker: &Docker, swarm: &SwarmTarget, extra: Option<&Path>, env: &[(String, String)]) -> Cmd {
    let mut cmd = docker.cmd().args([
        "stack".into(),
        "deploy".into(),
        "--compose-file".into(),
        swarm.file.clone().into_os_string(),
    ]);
    if let Some(path) = extra {
        cmd = cmd.args([OsString::from("--compose-file"), path.into()]);
    }
    cmd = cmd.args(["--with-registry-auth", swarm.stack.as_str()]);
    super::env::confined(cmd, env)
}

/// Writes the override for `swarm` into `dir` when the stack file leaves something unsaid, and
/// returns its path.
pub(crate) fn write_override(
    out: &Output,
    docker: &Docker,
    swarm: &SwarmTarget,
    env: &[(String, String)],
    dir: &Path,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    let mut cmd = docker.cmd().args([
        "stack".into(),
        "config".into(),
        "--compose-file".into(),
        swarm.file.clone().into_os_string(),
    ]);
    // Rendered in the environment the stack is deployed with, which it interpolates.
    cmd = super::env::confined(cmd, env);
    let shape = match exec::capture(out, &cmd, Duration::from_secs(30)) {
        Ok(text) => parse_stack_config(&text),
        // A CLI before 24 (Debian 12's 20.10) has no `docker stack config`: the stack file is
        // read as written, which says the same of versions, services and their updates.
        Err(err) if format!("{err:#}").contains("unknown flag") || format!("{err:#}").contains("unknown command") => {
            let text = std::fs::read_to_string(&swarm.file)
                .with_context(|| format!("failed to read the stack file `{}`", swarm.file.display()))?;
            shape_from_yaml(&text)
                .with_context(|| format!("the stack file `{}` is not valid YAML", swarm.file.display()))?
        }
        Err(err) => return Err(err),
    };
    let Some(text) = render_override(&shape) else {
        let old = shape.version.split_once('.').is_some_and(|(a, b)| a == "3" && b.parse().is_ok_and(|m: u32| m < 4));
        if old {
            out.warn(format!(
                "stack file `{}` is version {}, too old to ask for start-first updates: its deploys stop the old task first\nhint: write `version: \"3.7\"` or later",
                swarm.file.display(),
                shape.version
            ));
        }
        return Ok(None);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create directory `{}`", dir.display()))?;
    let path = dir.join(format!("{}.override.yml", swarm.stack));
    std::fs::write(&path, text).with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(Some(path))
}

/// The engine's own clock (`docker info`'s `SystemTime`), which dates a swarm's updates: a
/// manager on another machine may be seconds off pipe's. `None` when it does not answer.
pub(crate) fn engine_now(out: &Output, docker: &Docker, env: &[(String, String)]) -> Option<jiff::Timestamp> {
    let cmd = super::env::confined(docker.cmd().args(["info", "--format", "{{json .SystemTime}}"]), env);
    let text = exec::capture(out, &cmd, Duration::from_secs(30)).ok()?;
    text.trim().trim_matches('"').parse().ok()
}

/// The task a swarm's update message blames (`update rolled back due to failure or early
/// termination of task ID`, `update paused due to …`).
pub(crate) fn failed_task(message: &str) -> Option<&str> {
    let (_, rest) = message.rsplit_once(" of task ")?;
    let id = rest.split_whitespace().next()?;
    id.bytes().all(|b| b.is_ascii_alphanumeric()).then_some(id)
}

/// What the swarm says of a failed task: the node it ran on (its hostname and address) and its
/// error (`task: non-zero exit (143): dockerexec: unhealthy container`); `None` when the manager
/// no longer knows it.
pub(crate) fn task_failure(out: &Output, docker: &Docker, env: &[(String, String)], task: &str) -> Option<String> {
    let inspect = |kind: &str, format: &str, id: &str| {
        let cmd = docker.cmd().args(["inspect", "--type", kind, "--format", format, id]);
        exec::capture(out, &super::env::confined(cmd, env), Duration::from_secs(30)).ok().map(|s| s.trim().to_string())
    };
    let found = inspect("task", "{{.NodeID}}\t{{.Status.State}}: {{.Status.Err}}", task)?;
    let (node, error) = found.split_once('\t')?;
    let node =
        inspect("node", "{{.Description.Hostname}} ({{.Status.Addr}})", node).unwrap_or_else(|| node.to_string());
    Some(format!("task {task} on node {node}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "version: \"3.8\"\nservices:\n  web:\n    command:\n      - httpd\n    deploy:\n      replicas: 1\n    image: x\n  worker:\n    deploy:\n      update_config:\n        order: stop-first\n    image: x\nnetworks: {}\n";

    #[test]
    fn the_task_an_update_message_blames_is_read() {
        let said = "update rolled back due to failure or early termination of task ubszvup68xpkg2ha6udf6ycme";
        assert_eq!(failed_task(said), Some("ubszvup68xpkg2ha6udf6ycme"));
        assert_eq!(failed_task("update paused due to failure or early termination of task abc123"), Some("abc123"));
        assert_eq!(failed_task("rollback completed"), None);
        assert_eq!(failed_task("of task --format"), None);
    }

    #[test]
    fn services_and_what_they_say_about_updates_are_read() {
        let shape = parse_stack_config(CONFIG);
        assert_eq!(shape.version, "3.8");
        assert_eq!(shape.services, [("web".to_string(), false, false), ("worker".to_string(), true, false)]);
    }

    #[test]
    fn a_stack_file_as_written_says_the_same_as_stack_config() {
        let file = "version: '3.8'\nservices:\n  web:\n    image: x\n    deploy:\n      replicas: 1\n  worker:\n    image: x\n    deploy:\n      update_config:\n        order: stop-first\n";
        assert_eq!(shape_from_yaml(file).unwrap(), parse_stack_config(CONFIG));
        assert_eq!(shape_from_yaml("version: 3.8\nservices: {}\n").unwrap().version, "3.8");
    }

    #[test]
    fn the_override_adds_only_what_the_stack_file_leaves_unsaid() {
        let text = render_override(&parse_stack_config(CONFIG)).unwrap();
        assert!(text.starts_with("# Written by pipe"), "{text}");
        assert!(text.contains("  web:\n    deploy:\n      update_config:\n        order: start-first\n        failure_action: rollback\n      rollback_config:\n        order: start-first\n"), "{text}");
        assert!(
            text.ends_with("  worker:\n    deploy:\n      update_config:\n        failure_action: rollback\n"),
            "{text}"
        );
        assert!(!text.contains("stop-first"), "{text}");
        let old = StackShape { version: "3.3".into(), services: vec![("web".into(), false, false)] };
        assert_eq!(render_override(&old), None);
    }
}
