//! The compose document a preview runs: the target's own compose file rendered by compose,
//! then cut to what a preview may have (its own network and volumes; for an untrusted pull
//! request the test services' allow-list, confined).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

use crate::docker::Confinement;
use crate::exec;
use crate::output::Output;
use crate::targets::Compose;
use crate::trust::{services, writes};

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

/// What confining a service of an untrusted preview needs of its image: the paths its
/// `VOLUME`s declare (Docker would give each an anonymous volume on the host's disk) and the
/// user it runs as.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ImageFacts {
    pub volumes: Vec<String>,
    pub user: String,
}

impl ImageFacts {
    /// From `docker image inspect --format '{{json .Config}}'`.
    pub(crate) fn parse(text: &str) -> anyhow::Result<ImageFacts> {
        let config: Value = serde_json::from_str(text.trim()).context("`docker image inspect` printed invalid JSON")?;
        Ok(ImageFacts {
            volumes: config
                .get("Volumes")
                .and_then(Value::as_object)
                .map(|v| v.keys().cloned().collect())
                .unwrap_or_default(),
            user: config.get("User").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    }
}

/// The compose document a preview runs: from compose's rendering of the target's file, without
/// ports, fixed names or other networks; for an untrusted pull request (`confinement`) only the
/// services it starts (`runs`, with what they depend on; all when empty), each with the
/// allow-listed keys and named volumes of its own, confined, and writing only to tmpfs
/// ([`writes::bound_writes`], its image's `VOLUME`s included: `image` tells them). Returns
/// what was left out.
pub(crate) fn reshape(
    rendered: &str,
    confinement: Option<&Confinement>,
    project: &str,
    network: Option<&str>,
    runs: &[String],
    image: &mut dyn FnMut(&str) -> anyhow::Result<ImageFacts>,
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
    // An untrusted preview's file holds only what it starts: every service in it is confined
    // with what its image declares, and no other image is looked at (or pulled).
    let started = confinement.and_then(|_| started(&given, runs));
    let bytes = confinement.map(writes::tmpfs_bytes).unwrap_or_default();
    for (service_name, service) in given {
        let Value::Object(service) = service else { continue };
        if started.as_ref().is_some_and(|s| !s.contains(&service_name)) {
            continue;
        }
        let mut kept = Map::new();
        let mut unnamed = Unnamed::default();
        for (key, value) in service {
            if DROPPED_ALWAYS.contains(&key.as_str()) {
                continue;
            }
            if key == "volumes" {
                let volumes =
                    own_volumes(&value, &declared, confinement.is_some(), &service_name, &mut dropped, &mut unnamed);
                if !volumes.is_empty() {
                    kept.insert(key, Value::Array(volumes));
                }
                continue;
            }
            if confinement.is_some() && !services::SERVICE_KEYS.contains(&key.as_str()) {
                dropped.push(format!("service `{service_name}`: `{key}` is not given to an untrusted pull request"));
                continue;
            }
            kept.insert(key, value);
        }
        if let Some(confinement) = confinement {
            services::confine(&mut kept, confinement);
            if !unnamed.tmpfs.is_empty() {
                let mut tmpfs = match kept.remove("tmpfs") {
                    Some(Value::Array(a)) => a,
                    Some(other) => vec![other],
                    None => Vec::new(),
                };
                tmpfs.extend(unnamed.tmpfs.into_iter().map(Value::String));
                kept.insert("tmpfs".into(), Value::Array(tmpfs));
            }
            let facts = match kept.get("image").and_then(Value::as_str) {
                Some(name) => image(name)?,
                None => ImageFacts::default(),
            };
            let mut volumes = unnamed.volumes;
            volumes.extend(facts.volumes);
            writes::bound_writes(&mut kept, &volumes, &facts.user, bytes);
        }
        let labels = kept.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("pipe.preview".into(), json!(project));
        }
        services.insert(service_name, Value::Object(kept));
    }
    // Everything of the preview carries its label: teardown removes only what has it. The
    // named volumes of an untrusted preview share one tmpfs bound: what a container wrote to
    // one stays in memory while another container has it mounted (a redeploy's new container,
    // another service), charged to no container's limit then, so their sum is what is bounded.
    let shared = (bytes / declared.len().max(1) as u64) / 4096 * 4096;
    let volumes: Map<String, Value> = declared
        .iter()
        .map(|v| {
            let mut spec = json!({ "labels": { "pipe.preview": project } });
            if confinement.is_some() {
                spec = tmpfs_volume(project, v, shared.max(4096));
            }
            (v.clone(), spec)
        })
        .collect();
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

/// A named volume of an untrusted preview: a tmpfs of at most `bytes` (the local driver mounts
/// it on the host while a container uses it; the pages are charged to the container that
/// writes them). Named for its size, since compose refuses to use a volume of that name made
/// with other options (an earlier size, or a disk volume of an earlier pipe): a new size is a
/// new, empty volume.
fn tmpfs_volume(project: &str, volume: &str, bytes: u64) -> Value {
    let size = writes::size_text(bytes);
    // compose's own name for the project's volumes, `<project>_<volume>`, spelled as compose does.
    let prefix: String =
        project.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    json!({
        "name": format!("{prefix}_{volume}_tmpfs-{size}"),
        "driver": "local",
        "driver_opts": { "type": "tmpfs", "device": "tmpfs", "o": format!("size={size},nodev,nosuid") },
        "labels": { "pipe.preview": project },
    })
}

/// The services an untrusted preview starts: `runs` (the target's and its ingress's) and what
/// they depend on; `None` (all of them) when `runs` is empty.
fn started(services: &Map<String, Value>, runs: &[String]) -> Option<BTreeSet<String>> {
    if runs.is_empty() {
        return None;
    }
    let mut seen = BTreeSet::new();
    let mut todo = runs.to_vec();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        match services.get(&name).and_then(|s| s.get("depends_on")) {
            Some(Value::Array(names)) => todo.extend(names.iter().filter_map(Value::as_str).map(String::from)),
            Some(Value::Object(names)) => todo.extend(names.keys().cloned()),
            _ => {}
        }
    }
    Some(seen)
}

/// An untrusted preview's volumes that have no name, each a tmpfs: anonymous volumes (`PATH`
/// or `PATH:ro`) and the file's own tmpfs mounts (`PATH` or `PATH:size=N`).
#[derive(Debug, Default)]
struct Unnamed {
    volumes: Vec<String>,
    tmpfs: Vec<String>,
}

/// A service's volumes that belong to the preview alone: named volumes the file declares
/// (not external: the preview's project prefixes them) and anonymous ones; host paths only
/// for a trusted pull request. For an untrusted one, volumes without a name are not kept but
/// go to `unnamed`.
fn own_volumes(
    value: &Value,
    declared: &[String],
    untrusted: bool,
    service: &str,
    dropped: &mut Vec<String>,
    unnamed: &mut Unnamed,
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
        if ok && untrusted && source.is_none() {
            match volume {
                Value::String(path) => unnamed.volumes.push(path.clone()),
                _ => {
                    let target = volume.get("target").and_then(Value::as_str).unwrap_or_default().to_string();
                    let read_only = volume.get("read_only") == Some(&json!(true));
                    if kind == Some("tmpfs") {
                        let size = volume.pointer("/tmpfs/size").map(|s| match s {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        });
                        let mut options: Vec<String> = size.into_iter().map(|s| format!("size={s}")).collect();
                        if read_only {
                            options.push("ro".into());
                        }
                        let entry = if options.is_empty() { target } else { format!("{target}:{}", options.join(",")) };
                        unnamed.tmpfs.push(entry);
                    } else {
                        unnamed.volumes.push(if read_only { format!("{target}:ro") } else { target });
                    }
                }
            }
        } else if ok {
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

    fn no_image(_: &str) -> anyhow::Result<ImageFacts> {
        Ok(ImageFacts::default())
    }

    #[test]
    fn an_untrusted_preview_keeps_only_what_is_its_own_and_is_confined() {
        let confinement = Confinement { memory: "256m".into(), pids: 100, cpus: 0.5, egress: false };
        let (doc, dropped) =
            reshape(RENDERED, Some(&confinement), "app-pr-3", Some("app-pr-3_isolated"), &[], &mut no_image).unwrap();
        let web = &doc["services"]["web"];
        assert_eq!(web["image"], "x:y");
        assert_eq!(web["environment"]["A"], "b");
        assert!(web.get("privileged").is_none() && web.get("cap_add").is_none(), "{web}");
        assert!(web.get("ports").is_none() && web.get("networks").is_none(), "{web}");
        assert_eq!(web["volumes"], json!(["data:/data:rw"]));
        assert_eq!(web["cap_drop"], json!(["ALL"]));
        assert_eq!(web["security_opt"], json!(["no-new-privileges:true"]));
        assert_eq!(web["mem_limit"], "256m");
        assert_eq!(web["pids_limit"], 100);
        assert_eq!(web["labels"]["pipe.preview"], "app-pr-3");
        assert_eq!(doc["networks"], json!({"default": {"external": {"name": "app-pr-3_isolated"}}}));
        let dropped = dropped.join("\n");
        for word in ["privileged", "cap_add", "/etc", "ext"] {
            assert!(dropped.contains(word), "{dropped}");
        }
    }

    /// The hole this closes: an untrusted preview wrote without bound to the host's disk
    /// through its volumes and its container's writable layer.
    #[test]
    fn an_untrusted_preview_writes_only_to_tmpfs_of_half_its_memory_limit() {
        let confinement = Confinement { memory: "256m".into(), pids: 100, cpus: 0.5, egress: false };
        let (doc, _) =
            reshape(RENDERED, Some(&confinement), "App-pr-3", Some("app-pr-3_isolated"), &[], &mut no_image).unwrap();
        // Named volumes: tmpfs, named for their size (compose refuses other options under one name).
        assert_eq!(
            doc["volumes"],
            json!({"data": {
                "name": "app-pr-3_data_tmpfs-128m",
                "driver": "local",
                "driver_opts": {"type": "tmpfs", "device": "tmpfs", "o": "size=128m,nodev,nosuid"},
                "labels": {"pipe.preview": "App-pr-3"},
            }})
        );
        // The anonymous volume and the usual writable paths: tmpfs, on a read-only root.
        let web = &doc["services"]["web"];
        assert_eq!(web["read_only"], true);
        assert_eq!(
            web["tmpfs"],
            json!(["/anon:size=128m,exec", "/tmp:size=128m,exec", "/run:size=128m,exec", "/var/tmp:size=128m,exec"])
        );
    }

    /// What a container wrote to a named volume stays in memory while another container has it
    /// mounted, charged to no container's limit: the named volumes share one bound.
    #[test]
    fn an_untrusted_previews_named_volumes_share_half_its_memory_limit() {
        let confinement = Confinement { memory: "256m".into(), pids: 100, cpus: 0.5, egress: false };
        let rendered = "services:\n  web:\n    image: x:y\n    volumes:\n    - a:/a\n    - b:/b\n    - c:/c\n\
            volumes:\n  a: {}\n  b: {}\n  c: {}\n";
        let (doc, _) = reshape(rendered, Some(&confinement), "app-pr-3", None, &[], &mut no_image).unwrap();
        let sizes: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|v| {
                let o = doc["volumes"][v]["driver_opts"]["o"].as_str().unwrap();
                let size = o.strip_prefix("size=").unwrap().split(',').next().unwrap();
                crate::config::parse_memory(size).unwrap()
            })
            .collect();
        assert!(sizes.iter().all(|&b| b == sizes[0] && b > 0 && b % 4096 == 0), "{sizes:?}");
        assert!(sizes.iter().sum::<u64>() <= 128 << 20, "{sizes:?}");
        assert!(sizes.iter().sum::<u64>() > (128 << 20) - 3 * 4096, "{sizes:?}");
    }

    #[test]
    fn an_untrusted_preview_covers_its_images_volumes_and_its_own_tmpfs() {
        let rendered = "services:\n  web:\n    image: pr:1\n    tmpfs: /cache\n    depends_on:\n      db:\n        \
            condition: service_started\n    volumes:\n    - type: volume\n      target: /uploads\n    \
            - type: tmpfs\n      target: /scratch\n      tmpfs:\n        size: 1048576\n    - type: volume\n      \
            source: data\n      target: /srv/data\n  db:\n    image: db:16\n    user: '70'\n  unused:\n    \
            image: private.example/never:1\nversion: '2.4'\nvolumes:\n  data: {}\n";
        let confinement = Confinement { memory: "1g".into(), pids: 100, cpus: 0.5, egress: false };
        let mut asked = Vec::new();
        let mut image = |name: &str| {
            asked.push(name.to_string());
            Ok(match name {
                "pr:1" => {
                    ImageFacts { volumes: vec!["/srv/data".into(), "/var/lib/app/".into()], user: "1000:1000".into() }
                }
                _ => ImageFacts { volumes: vec!["/var/lib/db".into()], user: "postgres".into() },
            })
        };
        let (doc, _) = reshape(rendered, Some(&confinement), "app-pr-3", None, &["web".into()], &mut image).unwrap();
        assert_eq!(asked, ["db:16", "pr:1"], "only the images of what starts are looked at");
        assert!(doc["services"].get("unused").is_none(), "{doc}");
        let web = &doc["services"]["web"];
        assert_eq!(web["volumes"], json!([{"type": "volume", "source": "data", "target": "/srv/data"}]));
        assert_eq!(
            web["tmpfs"],
            json!([
                "/cache:size=512m",
                "/scratch:size=1048576",
                "/uploads:size=512m,exec,uid=1000,gid=1000",
                "/var/lib/app:size=512m,exec,uid=1000,gid=1000",
                "/tmp:size=512m,exec",
                "/run:size=512m,exec",
                "/var/tmp:size=512m,exec",
            ])
        );
        let db = &doc["services"]["db"];
        assert_eq!(db["tmpfs"][0], "/var/lib/db:size=512m,exec,uid=70");
        assert_eq!(db["read_only"], true);
    }

    #[test]
    fn image_facts_are_read_from_the_images_configuration() {
        let facts = ImageFacts::parse("{\"User\":\"1000\",\"Volumes\":{\"/data\":{}},\"Cmd\":[\"sh\"]}\n").unwrap();
        assert_eq!(facts, ImageFacts { volumes: vec!["/data".into()], user: "1000".into() });
        assert_eq!(ImageFacts::parse("{\"User\":\"\",\"Volumes\":null}").unwrap(), ImageFacts::default());
        assert!(ImageFacts::parse("no").is_err());
    }

    #[test]
    fn a_trusted_preview_keeps_its_keys_but_not_ports_or_other_networks() {
        let mut image = |_: &str| -> anyhow::Result<ImageFacts> { panic!("a trusted preview's images are not read") };
        let (doc, _) = reshape(RENDERED, None, "app-pr-3", None, &["web".into()], &mut image).unwrap();
        assert_eq!(doc["networks"], json!({"default": {"labels": {"pipe.preview": "app-pr-3"}}}));
        assert_eq!(doc["volumes"], json!({"data": {"labels": {"pipe.preview": "app-pr-3"}}}));
        let web = &doc["services"]["web"];
        assert_eq!(web["privileged"], true);
        assert!(web.get("ports").is_none() && web.get("networks").is_none(), "{web}");
        assert!(web.get("cap_drop").is_none() && web.get("read_only").is_none() && web.get("tmpfs").is_none());
        assert_eq!(web["volumes"], json!(["data:/data:rw", "/etc:/host:ro", "/anon"]));
    }
}
