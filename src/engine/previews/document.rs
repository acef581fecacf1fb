//! The compose document a preview runs: the target's own compose file rendered by compose,
//! then cut to what a preview may have (its own network and volumes; for an untrusted pull
//! request the test services' allow-list, confined).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

use crate::docker::Confinement;
use crate::exec;
use crate::output::Output;
use crate::targets::Compose;

/// Keys of a service dropped from every preview, trusted or not: its own network, names and
/// ports, nothing built.
const DROPPED_ALWAYS: &[&str] =
    &["ports", "container_name", "networks", "network_mode", "links", "external_links", "build", "profiles"];

/// The target's compose file as compose resolves it for the preview's project: with pipe's
/// deploy variables, and for an untrusted pull request (`untrusted`: pipe's directory of the
/// preview) nothing else of pipe's environment, nor of the `.env` file compose would read
/// beside the target's file: an empty one of pipe's own stands in for it.
pub(crate) fn render(
    out: &Output,
    program: &[std::ffi::OsString],
    project: &str,
    file: &Path,
    env: &[(String, String)],
    clean: Option<PathBuf>,
) -> anyhow::Result<String> {
    let compose =
        Compose::own(program.to_vec(), project.to_string(), file.to_path_buf(), env.to_vec(), Vec::new(), clean);
    let cmd = compose.cmd(&["config"], &[] as &[&str]);
    exec::capture(out, &cmd, Duration::from_secs(60))
        .with_context(|| format!("failed to read the compose file `{}` for a preview", file.display()))
}

/// The compose document a preview runs: from compose's rendering of the target's file, without
/// ports, fixed names or other networks; for an untrusted pull request (`confinement`) only the
/// allow-listed keys and named volumes of its own, confined. Returns what was left out.
pub(crate) fn reshape(
    rendered: &str,
    confinement: Option<&Confinement>,
    project: &str,
    network: Option<&str>,
) -> anyhow::Result<(Value, Vec<String>)> {
    let docs = YamlLoader::load_from_str(rendered).map_err(|e| anyhow!("compose printed invalid YAML: {e}"))?;
    let root = docs.first().map(to_json).unwrap_or(Value::Null);
    let mut dropped = Vec::new();
    let declared: Vec<String> = root
        .get("volumes")
        .and_then(Value::as_object)
        .map(|v| {
            v.iter()
                .filter(|(_, spec)| spec.get("external").is_none_or(|e| e == &json!(false)))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut services = Map::new();
    let given = root.get("services").and_then(Value::as_object).cloned().unwrap_or_default();
    for (service_name, service) in given {
        let Value::Object(service) = service else { continue };
        let mut kept = Map::new();
        for (key, value) in service {
            if DROPPED_ALWAYS.contains(&key.as_str()) {
                continue;
            }
            if key == "volumes" {
                let volumes = own_volumes(&value, &declared, confinement.is_some(), &service_name, &mut dropped);
                if !volumes.is_empty() {
                    kept.insert(key, Value::Array(volumes));
                }
                continue;
            }
            if confinement.is_some() && !crate::trust::services::SERVICE_KEYS.contains(&key.as_str()) {
                dropped.push(format!("service `{service_name}`: `{key}` is not given to an untrusted pull request"));
                continue;
            }
            kept.insert(key, value);
        }
        if let Some(confinement) = confinement {
            crate::trust::services::confine(&mut kept, confinement);
        }
        let labels = kept.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("pipe.preview".into(), json!(project));
        }
        services.insert(service_name, Value::Object(kept));
    }
    // Everything of the preview carries its label: teardown removes only what has it.
    let volumes: Map<String, Value> =
        declared.iter().map(|v| (v.clone(), json!({ "labels": { "pipe.preview": project } }))).collect();
    let network = match network {
        Some(name) => json!({ "external": { "name": name } }),
        None => json!({ "labels": { "pipe.preview": project } }),
    };
    let document = json!({
        "version": "2.4",
        "services": services,
        "volumes": volumes,
        "networks": { "default": network },
    });
    Ok((document, dropped))
}

/// A service's volumes that belong to the preview alone: named volumes the file declares
/// (not external: the preview's project prefixes them) and anonymous ones; host paths only
/// for a trusted pull request.
fn own_volumes(
    value: &Value,
    declared: &[String],
    untrusted: bool,
    service: &str,
    dropped: &mut Vec<String>,
) -> Vec<Value> {
    let mut kept = Vec::new();
    for volume in value.as_array().into_iter().flatten() {
        let source = match volume {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() == 1 { None } else { Some(parts[0].to_string()) }
            }
            Value::Object(o) => o.get("source").and_then(Value::as_str).map(str::to_string),
            _ => continue,
        };
        let kind = volume.get("type").and_then(Value::as_str);
        let host = source.as_deref().is_some_and(|s| s.starts_with('/') || s.starts_with('.') || s.starts_with('~'))
            || kind == Some("bind");
        let ok = match &source {
            None => kind.is_none_or(|k| k == "volume" || k == "tmpfs"),
            Some(s) if host => !untrusted && !s.is_empty(),
            Some(s) => declared.contains(s),
        };
        if ok {
            kept.push(volume.clone());
        } else {
            let shown = source.unwrap_or_default();
            let why = if host { "a host path is not mounted" } else { "a volume the preview does not own" };
            dropped.push(format!("service `{service}`: `{shown}` left out ({why})"));
        }
    }
    kept
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(r) => r.parse::<f64>().map(|f| json!(f)).unwrap_or_else(|_| json!(r)),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(hash) => Value::Object(
            hash.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        Yaml::Real(r) => r.clone(),
                        _ => String::new(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "services:\n  web:\n    image: x:y\n    privileged: true\n    cap_add: [SYS_ADMIN]\n    \
        ports:\n    - target: 8080\n    environment:\n      A: b\n    networks:\n      default: null\n      other: null\n    \
        volumes:\n    - data:/data:rw\n    - /etc:/host:ro\n    - ext:/ext:rw\n    - /anon\n\
        version: '2.4'\nvolumes:\n  data: {}\n  ext:\n    external: true\n    name: ext\n\
        networks:\n  other:\n    external: true\n    name: other\n";

    #[test]
    fn an_untrusted_preview_keeps_only_what_is_its_own_and_is_confined() {
        let confinement = Confinement { memory: "256m".into(), pids: 100, cpus: 0.5, egress: false };
        let (doc, dropped) = reshape(RENDERED, Some(&confinement), "app-pr-3", Some("app-pr-3_isolated")).unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["image"], "x:y");
        assert_eq!(web["environment"]["A"], "b");
        assert!(web.get("privileged").is_none() && web.get("cap_add").is_none(), "{web}");
        assert!(web.get("ports").is_none() && web.get("networks").is_none(), "{web}");
        assert_eq!(web["volumes"], json!(["data:/data:rw", "/anon"]));
        assert_eq!(web["cap_drop"], json!(["ALL"]));
        assert_eq!(web["security_opt"], json!(["no-new-privileges:true"]));
        assert_eq!(web["mem_limit"], "256m");
        assert_eq!(web["pids_limit"], 100);
        assert_eq!(web["labels"]["pipe.preview"], "app-pr-3");
        assert_eq!(doc["volumes"], json!({"data": {"labels": {"pipe.preview": "app-pr-3"}}}));
        assert_eq!(doc["networks"], json!({"default": {"external": {"name": "app-pr-3_isolated"}}}));
        let dropped = dropped.join("\n");
        for word in ["privileged", "cap_add", "/etc", "ext"] {
            assert!(dropped.contains(word), "{dropped}");
        }
    }

    #[test]
    fn a_trusted_preview_keeps_its_keys_but_not_ports_or_other_networks() {
        let (doc, _) = reshape(RENDERED, None, "app-pr-3", None).unwrap();
        assert_eq!(doc["networks"], json!({"default": {"labels": {"pipe.preview": "app-pr-3"}}}));
        let web = &doc["services"]["web"];
        assert_eq!(web["privileged"], true);
        assert!(web.get("ports").is_none() && web.get("networks").is_none(), "{web}");
        assert!(web.get("cap_drop").is_none());
        assert_eq!(web["volumes"], json!(["data:/data:rw", "/etc:/host:ro", "/anon"]));
    }
}
