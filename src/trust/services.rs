//! Test services from an allow-list. A repository's compose file is never run as written: it
//! is parsed here (YAML, with line numbers), every key is checked against the few a test
//! service needs, anything else is refused with `file:line:column` and the key's name, and
//! compose runs on a JSON file pipe writes itself, with pipe's confinement added to every
//! service and no interpolation of any environment.

use std::path::Path;

use serde_json::{Map, Value, json};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::docker::Confinement;
use crate::error::Diagnostic;

/// Top-level keys a test-services file may have.
const TOP_KEYS: &[&str] = &["version", "services"];

/// Keys a test service may have. Everything else (volumes, privileged, cap_add, devices,
/// network_mode, pid, ipc, build, env_file, extends, secrets, configs, security_opt, sysctls,
/// ports, ulimits, …) is refused: an allow-list, so a key compose learns tomorrow is refused too.
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "healthcheck",
    "tmpfs",
    "working_dir",
    "user",
    "depends_on",
    "labels",
    "hostname",
    "expose",
    "init",
    "read_only",
    "stop_signal",
    "stop_grace_period",
];

const HEALTHCHECK_KEYS: &[&str] = &["test", "interval", "timeout", "retries", "start_period", "disable"];

/// A YAML node with where it starts.
#[derive(Debug, Clone)]
enum Node {
    Scalar { value: String, plain: bool, at: Marker },
    Seq { items: Vec<Node>, at: Marker },
    Map { entries: Vec<(Node, Node)>, at: Marker },
}

impl Node {
    fn at(&self) -> Marker {
        match self {
            Node::Scalar { at, .. } | Node::Seq { at, .. } | Node::Map { at, .. } => *at,
        }
    }
}

/// Builds the node tree from parser events; aliases, tags and extra documents are refused.
struct Builder {
    stack: Vec<(Node, Option<Node>)>,
    documents: Vec<Node>,
    refused: Vec<(Marker, String)>,
    /// Where the stream ended: the location of "nothing here".
    end: Option<Marker>,
}

impl Builder {
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some((Node::Seq { items, .. }, _)) => items.push(node),
            Some((Node::Map { entries, .. }, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
            Some((Node::Scalar { .. }, _)) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, at: Marker) {
        match event {
            Event::Alias(_) => {
                self.refused.push((at, "YAML aliases (`*name`) are not allowed in test services".into()))
            }
            Event::Scalar(value, style, _, tag) => {
                if tag.is_some() {
                    self.refused.push((at, "YAML tags (`!…`) are not allowed in test services".into()));
                }
                self.push(Node::Scalar { value, plain: style == TScalarStyle::Plain, at });
            }
            Event::SequenceStart(_, ref tag) | Event::MappingStart(_, ref tag) if tag.is_some() => {
                self.refused.push((at, "YAML tags (`!…`) are not allowed in test services".into()));
                let node = if matches!(event, Event::SequenceStart(..)) {
                    Node::Seq { items: Vec::new(), at }
                } else {
                    Node::Map { entries: Vec::new(), at }
                };
                self.stack.push((node, None));
            }
            Event::SequenceStart(..) => self.stack.push((Node::Seq { items: Vec::new(), at }, None)),
            Event::MappingStart(..) => self.stack.push((Node::Map { entries: Vec::new(), at }, None)),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.push(node);
                }
            }
            Event::StreamEnd => self.end = Some(at),
            _ => {}
        }
    }
}

/// A test-services file accepted by the allow-list.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    /// Service names, in file order.
    pub names: Vec<String>,
    /// Image of each service, in the same order.
    pub images: Vec<String>,
    /// The services as compose will see them (before confinement is added).
    services: Map<String, Value>,
}

struct Check<'a> {
    path: &'a Path,
    diagnostics: Vec<Diagnostic>,
}

impl Check<'_> {
    fn error(&mut self, at: Marker, message: String) {
        self.diagnostics.push(Diagnostic {
            path: self.path.to_path_buf(),
            line: at.line(),
            column: at.col() + 1,
            message,
        });
    }

    /// A string scalar with `${…}` and `$NAME` refused; a lone `$` becomes compose's `$$`.
    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        let Node::Scalar { value, .. } = node else {
            self.error(node.at(), format!("`{what}` must be a string"));
            return None;
        };
        let bytes = value.as_bytes();
        let mut out = String::with_capacity(value.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' {
                match bytes.get(i + 1) {
                    Some(b'$') => {
                        out.push_str("$$");
                        i += 2;
                        continue;
                    }
                    Some(c) if *c == b'{' || *c == b'_' || c.is_ascii_alphabetic() => {
                        self.error(
                            node.at(),
                            format!("`{what}`: interpolation (`${{…}}`, `$NAME`) is not allowed in test services; write the value, or `$$` for a literal `$`"),
                        );
                        return None;
                    }
                    _ => {
                        out.push_str("$$");
                        i += 1;
                        continue;
                    }
                }
            }
            let ch = value[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8().max(1);
        }
        Some(out)
    }

    fn scalar(&mut self, node: &Node, what: &str) -> Option<Value> {
        let Node::Scalar { value, plain, .. } = node else {
            self.error(node.at(), format!("`{what}` must be a single value"));
            return None;
        };
        if *plain {
            if let Ok(n) = value.parse::<i64>() {
                return Some(json!(n));
            }
            if let Ok(b) = value.parse::<bool>() {
                return Some(json!(b));
            }
            if value.is_empty() || value == "~" || value == "null" {
                self.error(node.at(), format!("`{what}` needs a value"));
                return None;
            }
        }
        self.string(node, what).map(Value::String)
    }

    fn strings(&mut self, node: &Node, what: &str) -> Option<Value> {
        match node {
            Node::Seq { items, .. } => {
                let list: Option<Vec<Value>> =
                    items.iter().map(|i| self.scalar(i, what).map(|v| json!(scalar_text(&v)))).collect();
                list.map(Value::Array)
            }
            _ => self.string(node, what).map(Value::String),
        }
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<Value> {
        match node {
            Node::Scalar { value, plain: true, .. } if value == "true" || value == "false" => {
                Some(json!(value == "true"))
            }
            _ => {
                self.error(node.at(), format!("`{what}` must be `true` or `false`"));
                None
            }
        }
    }

    fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<(String, &'n Node, Marker)>> {
        let Node::Map { entries, .. } = node else {
            self.error(node.at(), format!("`{what}` must be a mapping"));
            return None;
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            let Node::Scalar { value: name, .. } = key else {
                self.error(key.at(), format!("`{what}`: keys must be plain names"));
                continue;
            };
            if out.iter().any(|(k, _, _): &(String, &Node, Marker)| k == name) {
                self.error(key.at(), format!("`{what}`: `{name}` is given twice"));
                continue;
            }
            out.push((name.clone(), value, key.at()));
        }
        Some(out)
    }

    /// `environment` and `labels`: a mapping of literal values, or a list of `KEY=value`. A
    /// key without a value would be taken from the environment compose runs in: refused.
    fn pairs(&mut self, node: &Node, what: &str, env: bool) -> Option<Value> {
        let mut out = Map::new();
        let valid_key = |k: &str| {
            !k.is_empty()
                && if env {
                    k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !k.as_bytes()[0].is_ascii_digit()
                } else {
                    k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
                        && !k.starts_with("com.docker.")
                }
        };
        let mut add = |cx: &mut Self, key: String, value: String, at: Marker| {
            if !valid_key(&key) {
                cx.error(at, format!("`{what}`: `{key}` is not a valid name here"));
            } else {
                out.insert(key, Value::String(value));
            }
        };
        match node {
            Node::Seq { items, .. } => {
                for item in items {
                    let text = self.string(item, what)?;
                    match text.split_once('=') {
                        Some((k, v)) => add(self, k.to_string(), v.to_string(), item.at()),
                        None => self.error(
                            item.at(),
                            format!("`{what}`: `{text}` has no value; a value taken from the host's environment is not allowed, write `{text}=…`"),
                        ),
                    }
                }
            }
            _ => {
                for (key, value, at) in self.map(node, what)? {
                    match value {
                        Node::Scalar { value: v, plain: true, .. } if v.is_empty() || v == "~" || v == "null" => self.error(
                            value.at(),
                            format!("`{what}.{key}` has no value; a value taken from the host's environment is not allowed"),
                        ),
                        _ => {
                            let text = self.scalar(value, &format!("{what}.{key}")).map(|v| scalar_text(&v));
                            if let Some(text) = text {
                                add(self, key, text, at);
                            }
                        }
                    }
                }
            }
        }
        Some(Value::Object(out))
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses and checks a test-services file; `path` names it in diagnostics.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Services, Vec<Diagnostic>> {
    let mut cx = Check { path, diagnostics: Vec::new() };
    let mut builder = Builder { stack: Vec::new(), documents: Vec::new(), refused: Vec::new(), end: None };
    let mut parser = Parser::new_from_str(text);
    if let Err(err) = parser.load(&mut builder, true) {
        cx.error(*err.marker(), format!("invalid YAML: {}", err.info()));
        return Err(cx.diagnostics);
    }
    for (at, message) in std::mem::take(&mut builder.refused) {
        cx.error(at, message);
    }
    if builder.documents.len() != 1 {
        if let Some(at) = builder.documents.get(1).map(Node::at).or(builder.end) {
            cx.error(at, "a test-services file is one YAML document".into());
        }
        return Err(cx.diagnostics);
    }
    let root = builder.documents.remove(0);
    let mut names = Vec::new();
    let mut images = Vec::new();
    let mut services = Map::new();
    let Some(top) = cx.map(&root, "the test-services file") else { return Err(cx.diagnostics) };
    let mut service_nodes = None;
    for (key, value, at) in top {
        match key.as_str() {
            "version" => {
                let ok = matches!(value, Node::Scalar { value, .. } if value.starts_with('2') || value.starts_with('3'));
                if !ok {
                    cx.error(value.at(), "`version` must be a compose file format 2.x or 3.x".into());
                }
            }
            "services" => service_nodes = Some(value),
            other => cx.error(
                at,
                format!("`{other}` is not allowed in a test-services file (allowed: {}); pipe gives the services their own network and no volumes", TOP_KEYS.join(", ")),
            ),
        }
    }
    let Some(service_nodes) = service_nodes else {
        cx.error(root.at(), "a test-services file needs `services`".into());
        return Err(cx.diagnostics);
    };
    let entries = cx.map(service_nodes, "services").unwrap_or_default();
    let declared: Vec<String> = entries.iter().map(|(k, _, _)| k.clone()).collect();
    for (name, node, at) in entries {
        let valid = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            cx.error(at, format!("service name `{name}` must be letters, digits, `_`, `.` or `-`"));
            continue;
        }
        let Some(keys) = cx.map(node, &format!("services.{name}")) else { continue };
        let mut service = Map::new();
        for (key, value, at) in keys {
            let what = format!("services.{name}.{key}");
            let converted = match key.as_str() {
                "image" => cx.string(value, &what).map(Value::String),
                "command" | "entrypoint" | "tmpfs" => cx.strings(value, &what),
                "environment" => cx.pairs(value, &what, true),
                "labels" => cx.pairs(value, &what, false),
                "working_dir" | "user" | "hostname" | "stop_signal" | "stop_grace_period" => {
                    cx.scalar(value, &what).map(|v| json!(scalar_text(&v)))
                }
                "init" | "read_only" => cx.bool(value, &what),
                "expose" => match value {
                    Node::Seq { items, .. } => items
                        .iter()
                        .map(|i| cx.scalar(i, &what).map(|v| json!(scalar_text(&v))))
                        .collect::<Option<Vec<_>>>()
                        .map(Value::Array),
                    _ => {
                        cx.error(value.at(), format!("`{what}` must be a list of ports"));
                        None
                    }
                },
                "healthcheck" => healthcheck(&mut cx, value, &what),
                "depends_on" => depends_on(&mut cx, value, &what, &declared),
                other => {
                    cx.error(
                        at,
                        format!(
                            "`{other}` is not allowed in test service `{name}`: a test service may set only {}",
                            SERVICE_KEYS.join(", ")
                        ),
                    );
                    None
                }
            };
            if let Some(v) = converted {
                service.insert(key, v);
            }
        }
        if key_absent(&service, "image") {
            cx.error(
                node.at(),
                format!("test service `{name}` needs an `image` (services are never built from the repository)"),
            );
        }
        let mounts: Vec<String> = match service.get("tmpfs") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        for mount in mounts.iter().filter(|m| !m.starts_with('/')) {
            cx.error(
                node.at(),
                format!("`services.{name}.tmpfs`: `{mount}` must be an absolute path inside the container"),
            );
        }
        names.push(name.clone());
        images.push(service.get("image").and_then(Value::as_str).unwrap_or_default().to_string());
        services.insert(name, Value::Object(service));
    }
    if cx.diagnostics.is_empty() { Ok(Services { names, images, services }) } else { Err(cx.diagnostics) }
}

fn key_absent(map: &Map<String, Value>, key: &str) -> bool {
    !map.contains_key(key)
}

fn healthcheck(cx: &mut Check<'_>, node: &Node, what: &str) -> Option<Value> {
    let mut out = Map::new();
    for (key, value, at) in cx.map(node, what)? {
        let inner = format!("{what}.{key}");
        let v = match key.as_str() {
            "test" => cx.strings(value, &inner),
            "interval" | "timeout" | "start_period" => cx.string(value, &inner).map(Value::String),
            "retries" => cx.scalar(value, &inner),
            "disable" => cx.bool(value, &inner),
            other => {
                cx.error(
                    at,
                    format!("`{other}` is not allowed in `{what}` (allowed: {})", HEALTHCHECK_KEYS.join(", ")),
                );
                None
            }
        };
        if let Some(v) = v {
            out.insert(key, v);
        }
    }
    Some(Value::Object(out))
}

fn depends_on(cx: &mut Check<'_>, node: &Node, what: &str, declared: &[String]) -> Option<Value> {
    let check_name = |cx: &mut Check<'_>, name: &str, at: Marker| {
        if !declared.iter().any(|d| d == name) {
            cx.error(at, format!("`{what}`: `{name}` is not a service in this file"));
        }
    };
    match node {
        Node::Seq { items, .. } => {
            let mut out = Vec::new();
            for item in items {
                let name = cx.string(item, what)?;
                check_name(cx, &name, item.at());
                out.push(json!(name));
            }
            Some(Value::Array(out))
        }
        _ => {
            let mut out = Map::new();
            for (name, value, at) in cx.map(node, what)? {
                check_name(cx, &name, at);
                let mut condition = Map::new();
                for (key, v, at) in cx.map(value, &format!("{what}.{name}"))? {
                    let text = cx.string(v, &format!("{what}.{name}.{key}"));
                    match (key.as_str(), text.as_deref()) {
                        ("condition", Some(c @ ("service_started" | "service_healthy"))) => {
                            condition.insert(key, json!(c));
                        }
                        _ => cx.error(
                            at,
                            format!("`{what}.{name}` takes only `condition: service_started` or `service_healthy`"),
                        ),
                    }
                }
                out.insert(name, Value::Object(condition));
            }
            Some(Value::Object(out))
        }
    }
}

impl Services {
    /// The accepted services as pipe keeps them between build and test, beside the checkout
    /// in pipe's own directory (no confinement yet: that is the pipeline file's, at test time).
    pub(crate) fn to_stored(&self) -> Value {
        json!({ "names": self.names, "images": self.images, "services": self.services })
    }

    /// Reads back what [`Services::to_stored`] wrote.
    pub(crate) fn from_stored(value: &Value) -> Option<Services> {
        let strings = |key: &str| -> Option<Vec<String>> {
            value.get(key)?.as_array()?.iter().map(|v| v.as_str().map(String::from)).collect()
        };
        Some(Services {
            names: strings("names")?,
            images: strings("images")?,
            services: value.get("services")?.as_object()?.clone(),
        })
    }

    /// The compose file pipe runs (JSON, which is YAML): the accepted keys, plus on every
    /// service the confinement (no capabilities, no new privileges, memory, PIDs and CPU
    /// limits) and `label`, on `network`: the test's own, which pipe created (internal unless
    /// `egress`, firewalled where the host can) before compose starts anything.
    pub(crate) fn compose_json(&self, confinement: &Confinement, label: &str, network: &str) -> Value {
        let mut services = Map::new();
        for (name, service) in &self.services {
            let mut service = service.as_object().cloned().unwrap_or_default();
            confine(&mut service, confinement);
            let labels = service.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert("pipe.run".into(), json!(label));
            }
            services.insert(name.clone(), Value::Object(service));
        }
        json!({
            "version": "2.4",
            "services": services,
            "networks": { "default": { "external": { "name": network } } },
        })
    }
}

/// Docker's log of a confined service on the host: at most this many files of this size, so a
/// service that prints without end cannot fill the host's disk.
const LOG_MAX_SIZE: &str = "10m";
const LOG_MAX_FILES: &str = "3";

/// The confinement of a service in a compose file pipe writes (test services, previews of
/// untrusted pull requests): no capabilities, no new privileges, memory, PIDs and CPU limits,
/// and a bounded log on the host.
pub(crate) fn confine(service: &mut Map<String, Value>, confinement: &Confinement) {
    service.insert(
        "logging".into(),
        json!({ "driver": "json-file", "options": { "max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILES } }),
    );
    service.insert("cap_drop".into(), json!(["ALL"]));
    service.insert("security_opt".into(), json!(["no-new-privileges:true"]));
    service.insert("mem_limit".into(), json!(confinement.memory));
    service.insert("memswap_limit".into(), json!(confinement.memory));
    service.insert("pids_limit".into(), json!(confinement.pids));
    service.insert("cpus".into(), json!(confinement.cpus));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("svc.yml"), text) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_plain_test_service_is_accepted_and_confined() {
        let text = "version: \"2.4\"\nservices:\n  db:\n    image: postgres:16\n    command: [\"postgres\", \"-c\", \"fsync=off\"]\n    environment:\n      POSTGRES_PASSWORD: test\n      PORT: 5432\n    healthcheck:\n      test: [\"CMD\", \"pg_isready\"]\n      interval: 1s\n      retries: 30\n    tmpfs: /var/lib/postgresql/data\n  app:\n    image: busybox\n    depends_on:\n      db:\n        condition: service_healthy\n    labels:\n      team: x\n    environment:\n      - PRICE=$$5\n";
        let services = parse(Path::new("svc.yml"), text).unwrap();
        assert_eq!(services.names, ["db", "app"]);
        let confinement = Confinement { memory: "1g".into(), pids: 512, cpus: 2.0, egress: false };
        let doc = services.compose_json(&confinement, "p-main-1", "pipetest1");
        let db = &doc["services"]["db"];
        assert_eq!(db["environment"]["PORT"], "5432");
        assert_eq!(db["cap_drop"], json!(["ALL"]));
        assert_eq!(db["security_opt"], json!(["no-new-privileges:true"]));
        assert_eq!(db["mem_limit"], "1g");
        assert_eq!(db["pids_limit"], 512);
        assert_eq!(db["logging"]["options"]["max-size"], "10m");
        assert_eq!(doc["services"]["app"]["environment"]["PRICE"], "$$5");
        assert_eq!(doc["services"]["app"]["labels"]["pipe.run"], "p-main-1");
        assert_eq!(doc["networks"]["default"]["external"]["name"], "pipetest1");
        assert_eq!(doc["version"], "2.4");
    }

    #[test]
    fn host_reaching_keys_are_refused_with_file_line_and_key() {
        let cases = [
            ("volumes:\n      - /:/host", "volumes", 5),
            ("privileged: true", "privileged", 5),
            ("cap_add: [SYS_ADMIN]", "cap_add", 5),
            ("devices: [\"/dev/sda:/dev/sda\"]", "devices", 5),
            ("network_mode: host", "network_mode", 5),
            ("pid: host", "pid", 5),
            ("ipc: host", "ipc", 5),
            ("build: .", "build", 5),
            ("env_file: /etc/pipe/pipe.env", "env_file", 5),
            ("extends: { file: /etc/x.yml, service: a }", "extends", 5),
            ("secrets: [s]", "secrets", 5),
            ("security_opt: [\"apparmor:unconfined\"]", "security_opt", 5),
            ("sysctls: { net.ipv4.ip_forward: 1 }", "sysctls", 5),
            ("ports: [\"0.0.0.0:80:80\"]", "ports", 5),
            ("userns_mode: host", "userns_mode", 5),
            ("cgroup_parent: /", "cgroup_parent", 5),
            ("volumes_from: [other]", "volumes_from", 5),
            ("ulimits: { nofile: 1048576 }", "ulimits", 5),
        ];
        for (line, key, at) in cases {
            let text = format!("version: \"2.4\"\nservices:\n  db:\n    image: busybox\n    {line}\n");
            let errs = errors(&text);
            assert_eq!(errs.len(), 1, "{key}: {errs:?}");
            assert!(errs[0].starts_with(&format!("svc.yml:{at}:5: `{key}` is not allowed")), "{key}: {errs:?}");
        }
        let top = errors("services:\n  db:\n    image: busybox\nvolumes:\n  data: {}\n");
        assert!(top[0].starts_with("svc.yml:4:1: `volumes` is not allowed"), "{top:?}");
    }

    #[test]
    fn interpolation_and_host_environment_are_refused() {
        let errs =
            errors("services:\n  db:\n    image: busybox\n    environment:\n      LEAK: ${PIPE_SLACK_WEBHOOK}\n");
        assert!(errs[0].starts_with("svc.yml:5:13: `services.db.environment.LEAK`: interpolation"), "{errs:?}");
        let errs = errors("services:\n  db:\n    image: busybox\n    command: echo $HOME\n");
        assert!(errs[0].contains("interpolation"), "{errs:?}");
        let errs = errors("services:\n  db:\n    image: busybox\n    environment:\n      - GIT_TOKEN\n");
        assert!(errs[0].contains("has no value"), "{errs:?}");
        let errs = errors("services:\n  db:\n    image: busybox\n    environment:\n      GIT_TOKEN:\n");
        assert!(errs[0].contains("has no value"), "{errs:?}");
        let errs = errors("services:\n  ${X}:\n    image: busybox\n");
        assert!(!errs.is_empty());
    }

    #[test]
    fn yaml_tricks_are_refused() {
        let alias = errors("x-base: &b\n  privileged: true\nservices:\n  db:\n    <<: *b\n    image: busybox\n");
        assert!(alias.iter().any(|e| e.contains("aliases")), "{alias:?}");
        assert!(alias.iter().any(|e| e.contains("`x-base` is not allowed")), "{alias:?}");
        let tag = errors("services:\n  db:\n    image: !!binary aGk=\n");
        assert!(tag.iter().any(|e| e.contains("tags")), "{tag:?}");
        let two = errors("services: {}\n---\nservices: {}\n");
        assert!(two.iter().any(|e| e.contains("one YAML document")), "{two:?}");
        let dup = errors("services:\n  db:\n    image: busybox\n    image: other\n");
        assert!(dup.iter().any(|e| e.contains("given twice")), "{dup:?}");
        assert!(errors("services:\n  db:\n    command: x\n").iter().any(|e| e.contains("needs an `image`")));
        assert!(errors("services: [").iter().any(|e| e.contains("invalid YAML")));
        let label =
            errors("services:\n  db:\n    image: busybox\n    labels:\n      com.docker.compose.project: other\n");
        assert!(label.iter().any(|e| e.contains("not a valid name")), "{label:?}");
        let dep = errors("services:\n  db:\n    image: busybox\n    depends_on: [ghost]\n");
        assert!(dep.iter().any(|e| e.contains("`ghost` is not a service")), "{dep:?}");
    }

    proptest::proptest! {
        #[test]
        fn prop_arbitrary_text_never_panics_and_errors_are_located(text in "\\PC{0,300}") {
            if let Err(diagnostics) = parse(Path::new("svc.yml"), &text) {
                for d in diagnostics {
                    proptest::prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
                }
            }
        }
    }
}
