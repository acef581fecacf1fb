//! `pipeline.toml`: serde types, strict loading and validation. Reads files, never the network.
//!
//! Loading parses the document once, then deserializes every section and every project on its
//! own, so that `pipe check` can report every problem at once, each with `file:line:column`.

use crate::error::Diagnostic;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::error::{ConfigError, Usage, line_column};

/// Where the pipeline file is looked for when neither `-c` nor `PIPE_CONFIG` names one.
pub const DEFAULT_PATHS: [&str; 2] = ["pipeline.toml", "/etc/pipe/pipeline.toml"];

/// Keys that would hold a secret inline; each has `_env` and `_file` forms instead.
const INLINE_SECRET_KEYS: [&str; 5] = ["password", "secret", "token", "webhook_url", "ssh_key_passphrase"];

/// The whole, validated pipeline file.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub settings: Settings,
    pub notify: Notify,
    pub registries: BTreeMap<String, Registry>,
    pub projects: BTreeMap<String, Project>,
    pub serve: Serve,
    pub ingress: Ingress,
}

/// `[ingress]`: the nginx front `pipe generate nginx` writes for the deploy targets' services.
/// A missing key takes its value from [`Ingress::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ingress {
    /// `<service>.DOMAIN` reaches the service of that name.
    pub domain: String,
    /// nginx `listen` value: a port or `address:port`.
    pub listen: String,
    /// nginx `client_max_body_size`, e.g. `10m`.
    pub body_size: String,
    /// How long nginx waits on a service's response (`proxy_read_timeout`, `proxy_send_timeout`).
    pub timeout: Seconds,
    /// DNS server nginx asks for service names: Docker's embedded one when nginx runs in a
    /// container on the services' network.
    pub resolver: String,
    /// Host nginx connects to instead of the service name (nginx on the host, ports published).
    pub upstream: Option<String>,
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress {
            domain: "localhost".into(),
            listen: "80".into(),
            body_size: "10m".into(),
            timeout: Seconds(Duration::from_secs(60)),
            resolver: "127.0.0.11".into(),
            upstream: None,
        }
    }
}

/// `[serve]`: the deploy receiver on this host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// Address to listen on; anything but loopback must be written out explicitly.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit: u64,
    /// How old a signed request may be (its `sent_at`), and how long delivery ids are remembered.
    pub replay_window: Option<Seconds>,
    /// Runs kept per hook (status documents and logs, pruned together; default 1000).
    pub keep_runs: Option<usize>,
    /// `[serve.hooks.NAME]`, validated and filled in by the loader.
    #[serde(skip)]
    pub hooks: BTreeMap<String, Hook>,
}

impl Default for Serve {
    fn default() -> Self {
        Serve {
            listen: default_listen(),
            body_limit: default_body_limit(),
            replay_window: None,
            keep_runs: None,
            hooks: BTreeMap::new(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9010".into()
}
fn default_body_limit() -> u64 {
    1024 * 1024
}

/// `[serve.hooks.NAME]`: what one authenticated POST runs on this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Bearer token (`Authorization: Bearer …`).
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// HMAC-SHA256 secret for `X-Hub-Signature-256` over the raw body.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Image repositories this hook may deploy (`*` within a path segment, `**` across).
    #[serde(default)]
    pub images: Vec<String>,
    /// Accept docker-puller's URL forms (`/?token=…&hook=…`, `/TOKEN/HOOK`) for migration.
    #[serde(default)]
    pub docker_puller: bool,
    pub compose: Option<ComposeTarget>,
    pub swarm: Option<SwarmTarget>,
    pub command: Option<CommandTarget>,
    pub health: Option<Health>,
    pub timeout: Option<Seconds>,
    /// Largest request body this hook reads, in bytes (default 64 KiB, at most `serve.body_limit`).
    pub max_body: Option<u64>,
    /// Services `pipe generate nginx` routes to, each with the port nginx connects to.
    #[serde(default)]
    pub ingress: BTreeMap<String, u16>,
    #[serde(skip)]
    pub allowed: Patterns,
}

/// `[pipe]`: settings for the whole pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Cache repositories and build checkouts live here.
    #[serde(default = "default_workspace")]
    pub workspace: PathBuf,
    /// Run logs kept per project and ref.
    #[serde(default = "default_keep_logs")]
    pub keep_logs: u32,
    /// Projects polled (and later built) at the same time.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Builds started by one `pipe run`, so a newly indexed project cannot start a build storm.
    #[serde(default = "default_max_builds")]
    pub max_builds: usize,
    /// Branches whose image is tagged `latest` when a project names no `default_branch`.
    #[serde(default = "default_branches")]
    pub default_branches: Vec<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            workspace: default_workspace(),
            keep_logs: default_keep_logs(),
            parallel: default_parallel(),
            max_builds: default_max_builds(),
            default_branches: default_branches(),
            timeouts: Timeouts::default(),
        }
    }
}

fn default_workspace() -> PathBuf {
    PathBuf::from("/var/lib/pipe/work")
}
fn default_keep_logs() -> u32 {
    20
}
fn default_parallel() -> usize {
    4
}
fn default_max_builds() -> usize {
    4
}
fn default_branches() -> Vec<String> {
    vec!["main".into(), "master".into()]
}

/// `[pipe.timeouts]` and `[project.NAME.timeouts]`: the longest each stage may take.
/// A project's value wins over the pipeline's, which wins over the built-in default.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to and listing one remote [default: 30s].
    pub poll: Option<Seconds>,
    /// `docker build` [default: 30m].
    pub build: Option<Seconds>,
    /// The test command [default: 30m].
    pub test: Option<Seconds>,
    /// Logging in and pushing to every registry [default: 10m].
    pub push: Option<Seconds>,
    /// One deploy target, health check included [default: 10m].
    pub deploy: Option<Seconds>,
}

/// The stages that have a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Poll,
    Build,
    Test,
    Push,
    Deploy,
}

impl Timeouts {
    fn get(&self, stage: Stage) -> Option<Seconds> {
        match stage {
            Stage::Poll => self.poll,
            Stage::Build => self.build,
            Stage::Test => self.test,
            Stage::Push => self.push,
            Stage::Deploy => self.deploy,
        }
    }
}

impl Config {
    /// Run logs kept per ref of a project: the project's `keep_logs`, else the pipeline's.
    pub fn keep_logs(&self, project: &Project) -> usize {
        project.keep_logs.unwrap_or(self.settings.keep_logs) as usize
    }

    /// The timeout for a stage of a project: the project's, else the pipeline's, else the default.
    pub fn timeout(&self, project: Option<&Project>, stage: Stage) -> Duration {
        let default = match stage {
            Stage::Poll => 30,
            Stage::Build | Stage::Test => 1800,
            Stage::Push | Stage::Deploy => 600,
        };
        project
            .and_then(|p| p.timeouts.and_then(|t| t.get(stage)))
            .or(self.settings.timeouts.get(stage))
            .map_or(Duration::from_secs(default), |s| s.0)
    }
}

/// A duration written as `"90s"`, `"10m"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(Seconds).map_err(serde::de::Error::custom)
    }
}

/// Parses `"90s"`, `"10m"`, `"1h30m"`, `"2h"`: whole numbers, each followed by `h`, `m` or `s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = || format!("invalid duration `{text}`, expected e.g. \"90s\", \"10m\" or \"1h30m\"");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.trim().chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(expected()),
        };
        let n: u64 = digits.parse().map_err(|_| expected())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(expected)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(expected());
    }
    Ok(Duration::from_secs(total))
}

/// `[notify]`: where results are reported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub slack: Option<SlackNotify>,
    pub webhook: Option<WebhookNotify>,
}

/// `[notify.slack]`: a Slack incoming webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackNotify {
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<PathBuf>,
    #[serde(default = "default_events")]
    pub on: Vec<Event>,
}

/// `[notify.webhook]`: a generic JSON webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookNotify {
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    #[serde(default = "default_events")]
    pub on: Vec<Event>,
}

fn default_events() -> Vec<Event> {
    vec![Event::Failure, Event::Recovery]
}

/// When a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Failure,
    Recovery,
    Success,
    Deploy,
}

/// `[registry.NAME]`: a registry images are pushed to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Host (and optional port and path prefix) images are tagged with, e.g. `registry.example.com/team`.
    pub url: String,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Log in to AWS ECR with `aws ecr get-login-password` on every push.
    pub ecr: Option<Ecr>,
}

/// `ecr = { region = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ecr {
    pub region: String,
    /// AWS CLI profile, for a production account separate from the CI host's.
    pub profile: Option<String>,
}

/// `[project.NAME]`: one repository and what happens to its branches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Git URL: `https://`, `ssh://`, `git@host:path`, `git://` or `file://`.
    pub repo: String,
    /// Branch name patterns; `*` stays within one path segment, `**` crosses them.
    pub branches: Vec<Spanned<String>>,
    /// Also track pull/merge request heads.
    #[serde(default)]
    pub pull_requests: bool,
    /// Branch tagged `latest` [default: the first of `pipe.default_branches` the remote has].
    pub default_branch: Option<String>,
    /// Image repository name; else `.pipe.toml`, else `.jenkins-env` in the repo.
    pub image: Option<String>,
    pub dockerfile: Option<String>,
    pub context: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Test command run with `sh -c` inside the built image.
    pub test: Option<String>,
    #[serde(default)]
    pub test_env: BTreeMap<String, String>,
    /// Compose file of services the tests need, relative to the repo.
    pub test_services: Option<String>,
    /// Images kept per project beyond those a deploy target runs or can roll back to.
    pub keep_images: Option<u32>,
    /// Run logs kept per ref [default: `pipe.keep_logs`].
    pub keep_logs: Option<u32>,
    pub timeouts: Option<Timeouts>,
    pub auth: Option<GitAuth>,
    #[serde(default)]
    pub deploy: Vec<Spanned<Deploy>>,
    /// Compiled from `branches` during validation.
    #[serde(skip)]
    pub tracked: Patterns,
}

/// `auth = { … }`: credentials for the project's git remote.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitAuth {
    /// User name for HTTPS tokens and SSH [default: `git` for SSH, `x-access-token` for HTTPS].
    pub username: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// SSH private key tried after the SSH agent.
    pub ssh_key: Option<PathBuf>,
    pub ssh_key_passphrase_env: Option<String>,
}

/// `[[project.NAME.deploy]]`: what happens after a branch's image is tested.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Name for `pipe deploy --target` [default: the target kind, e.g. `compose`].
    pub name: Option<String>,
    pub branches: Vec<Spanned<String>>,
    /// Registries (names of `[registry.*]`) the image is pushed to first.
    #[serde(default)]
    pub push: Vec<Spanned<String>>,
    pub compose: Option<ComposeTarget>,
    pub swarm: Option<SwarmTarget>,
    pub command: Option<CommandTarget>,
    pub webhook: Option<WebhookTarget>,
    pub health: Option<Health>,
    pub timeout: Option<Seconds>,
    /// Services `pipe generate nginx` routes to, each with the port nginx connects to.
    #[serde(default)]
    pub ingress: BTreeMap<String, u16>,
    #[serde(skip)]
    pub matcher: Patterns,
}

/// `compose = { file = "…", services = […] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeTarget {
    pub file: PathBuf,
    /// Compose project name [default: the pipe project's name].
    pub project: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
}

/// `swarm = { file = "…", stack = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmTarget {
    pub file: PathBuf,
    pub stack: String,
}

/// `command = { argv = […] }` or, explicitly, `command = { shell = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTarget {
    pub argv: Option<Vec<String>>,
    pub shell: Option<String>,
}

/// `webhook = { url = "…", secret_env = "…" }`: a remote `pipe serve` or docker-puller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    pub url: String,
    /// HMAC-SHA256 secret for `X-Hub-Signature-256`.
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Bearer token (or docker-puller's token with `docker_puller = true`).
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Talk docker-puller's protocol (token and hook in the query) for migration.
    #[serde(default)]
    pub docker_puller: bool,
    /// docker-puller's hook name [default: the project's name].
    pub hook: Option<String>,
}

/// `health = { url = "…" }` or `health = { container = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub url: Option<String>,
    pub container: Option<String>,
    pub timeout: Option<Seconds>,
}

/// Compiled branch patterns: `*` stays within one `/` segment, `**` crosses them.
#[derive(Debug, Default, Clone)]
pub struct Patterns {
    set: GlobSet,
}

impl Patterns {
    /// Compiles patterns; the error names the first invalid one.
    pub fn compile<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Patterns, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(compile_branch_glob(pattern)?);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Patterns { set })
    }

    pub fn is_match(&self, branch: &str) -> bool {
        self.set.is_match(branch)
    }

    /// Image repository patterns: `*` within a `/` segment, `**` across.
    pub fn compile_images<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Patterns, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("invalid image pattern `{pattern}`: {}", e.kind()))?;
            builder.add(glob);
        }
        Ok(Patterns { set: builder.build().map_err(|e| e.to_string())? })
    }
}

fn compile_branch_glob(pattern: &str) -> Result<globset::Glob, String> {
    if pattern.is_empty() {
        return Err("empty branch pattern".into());
    }
    if pattern.starts_with("refs/") {
        return Err(format!("invalid branch pattern `{pattern}`: write branch names without `refs/heads/`"));
    }
    if let Some(bad) = pattern.chars().find(|c| c.is_whitespace() || "~^:\\".contains(*c) || c.is_control()) {
        return Err(format!(
            "invalid branch pattern `{pattern}`: `{}` cannot appear in a git branch name",
            bad.escape_default()
        ));
    }
    if pattern.contains("..") || pattern.starts_with('/') || pattern.ends_with('/') || pattern.contains("//") {
        return Err(format!("invalid branch pattern `{pattern}`: not a valid git branch name"));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map_err(|e| format!("invalid branch pattern `{pattern}`: {}", e.kind()))
}

impl Project {
    /// Does this project follow the branch `name` (without `refs/heads/`)?
    pub fn tracks_branch(&self, name: &str) -> bool {
        self.tracked.is_match(name)
    }
}

impl Deploy {
    /// The kind of target this entry configures.
    pub fn kind(&self) -> &'static str {
        if self.compose.is_some() {
            "compose"
        } else if self.swarm.is_some() {
            "swarm"
        } else if self.command.is_some() {
            "command"
        } else {
            "webhook"
        }
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.kind())
    }
}

/// A secret given by indirection: the name of an environment variable, or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// The `*_env` / `*_file` pair of a config table as one reference, if either is set.
    pub fn from_pair(env: &Option<String>, file: &Option<PathBuf>) -> Option<SecretRef> {
        match (env, file) {
            (Some(var), _) => Some(SecretRef::Env(var.clone())),
            (None, Some(path)) => Some(SecretRef::File(path.clone())),
            (None, None) => None,
        }
    }
}

impl Config {
    /// Every secret the file refers to, with the key that names it, for `pipe check`.
    pub fn secret_refs(&self) -> Vec<(String, SecretRef)> {
        let mut out = Vec::new();
        let mut add = |what: String, env: &Option<String>, file: &Option<PathBuf>| {
            if let Some(secret) = SecretRef::from_pair(env, file) {
                out.push((what, secret));
            }
        };
        if let Some(slack) = &self.notify.slack {
            add("notify.slack.webhook_url".into(), &slack.webhook_url_env, &slack.webhook_url_file);
        }
        if let Some(hook) = &self.notify.webhook {
            add("notify.webhook.url".into(), &hook.url_env, &hook.url_file);
        }
        for (name, reg) in &self.registries {
            add(format!("registry.{name}.password"), &reg.password_env, &reg.password_file);
        }
        for (name, hook) in &self.serve.hooks {
            add(format!("serve.hooks.{name}.token"), &hook.token_env, &hook.token_file);
            add(format!("serve.hooks.{name}.secret"), &hook.secret_env, &hook.secret_file);
        }
        for (name, project) in &self.projects {
            if let Some(auth) = &project.auth {
                add(format!("project.{name}.auth.token"), &auth.token_env, &auth.token_file);
                add(format!("project.{name}.auth.ssh_key"), &None, &auth.ssh_key);
            }
            for deploy in &project.deploy {
                if let Some(hook) = &deploy.get_ref().webhook {
                    let target = deploy.get_ref().display_name();
                    add(format!("project.{name}.deploy.{target}.secret"), &hook.secret_env, &hook.secret_file);
                    add(format!("project.{name}.deploy.{target}.token"), &hook.token_env, &hook.token_file);
                }
            }
        }
        out
    }

    /// The named projects, or all of them when `names` is empty; an unknown name is a usage error.
    pub fn select<'a>(&'a self, names: &[String]) -> anyhow::Result<Vec<(&'a str, &'a Project)>> {
        if names.is_empty() {
            return Ok(self.projects.iter().map(|(k, v)| (k.as_str(), v)).collect());
        }
        names
            .iter()
            .map(|name| {
                self.projects.get_key_value(name.as_str()).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
                    let known: Vec<_> = self.projects.keys().map(|k| format!("`{k}`")).collect();
                    Usage(format!(
                        "no project `{name}` in `{}` (projects: {})",
                        self.path.display(),
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ))
                    .into()
                })
            })
            .collect()
    }
}

/// `.pipe.toml` at a repository's root: how to build and test it, and nothing that runs on the
/// host. Every key is optional; the operator's pipeline file wins where both set one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoFile {
    pub image: Option<String>,
    pub dockerfile: Option<String>,
    pub context: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    pub test: Option<String>,
    #[serde(default)]
    pub test_env: BTreeMap<String, String>,
    pub test_services: Option<String>,
}

/// Keys a repository might try to set that only the operator may: they run on the host.
const HOST_SIDE_KEYS: [&str; 6] = ["deploy", "hooks", "command", "commands", "notify", "registry"];

/// Parses `.pipe.toml` text; errors carry `path:line:column`.
pub fn parse_repo_file(path: &Path, text: &str) -> Result<RepoFile, Vec<Diagnostic>> {
    let mut cx = Cx { path, text, diagnostics: Vec::new() };
    let mut doc = cx.document()?;
    let entries = std::mem::take(&mut doc);
    for (key, value) in entries {
        let name: &str = key.get_ref().as_ref();
        if HOST_SIDE_KEYS.contains(&name) {
            cx.error(
                Some(key.span()),
                format!("a repository's `.pipe.toml` cannot define `{name}`: what runs on the host comes only from the operator's pipeline file"),
            );
        } else {
            doc.insert(key, value);
        }
    }
    let span = 0..text.len();
    let file = cx.de::<RepoFile>(Spanned::new(span, DeValue::Table(doc)));
    match (file, cx.diagnostics.is_empty()) {
        (Some(file), true) => Ok(file),
        _ => Err(cx.diagnostics),
    }
}

/// The image name in a Jenkins-era `.jenkins-env` (`imagename="…"`, quotes optional).
pub fn parse_jenkins_env(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim().strip_prefix("export ").unwrap_or(line.trim());
        let value = line.strip_prefix("imagename=")?.trim();
        let value = value.trim_matches('"').trim_matches('\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Finds the pipeline file: the explicit path, else the first default that exists.
pub fn locate(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
        Usage(
            "no pipeline file: looked for `./pipeline.toml` and `/etc/pipe/pipeline.toml`\n\
                 hint: pass `-c FILE` or set `PIPE_CONFIG`; `pipeline.example.toml` is a starting point"
                .into(),
        )
        .into()
    })
}

/// Reads and validates the pipeline file; every problem found is in the error.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read pipeline file `{}`", path.display()))
        .map_err(|e| anyhow::Error::new(Usage(format!("{e:#}"))))?;
    parse(path, &text).map_err(|diagnostics| ConfigError { diagnostics }.into())
}

/// Parses pipeline text; `path` is only used in diagnostics.
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let mut cx = Cx { path, text, diagnostics: Vec::new() };
    let doc = cx.document()?;

    let mut settings = None;
    let mut notify = None;
    let mut serve: Option<Serve> = None;
    let mut ingress = None;
    let mut hooks = BTreeMap::new();
    let mut registries = BTreeMap::new();
    let mut projects = BTreeMap::new();
    for (key, value) in doc {
        let span = key.span();
        match key.get_ref().as_ref() {
            "pipe" => settings = cx.de::<Settings>(value),
            "notify" => notify = cx.de::<Notify>(value),
            "ingress" => ingress = cx.de::<Ingress>(value),
            "serve" => {
                let span = value.span();
                let DeValue::Table(mut table) = value.into_inner() else {
                    cx.error(Some(span), "`serve` must be a table".into());
                    continue;
                };
                let hook_tables = table.remove("hooks");
                serve = cx.de::<Serve>(Spanned::new(span, DeValue::Table(table)));
                if let Some(hook_tables) = hook_tables {
                    for (name, value) in cx.named_tables(hook_tables, "hook") {
                        let span = value.span();
                        if let Some(hook) = cx.de::<Hook>(value) {
                            hooks.insert(name, (span, hook));
                        }
                    }
                }
            }
            "registry" => {
                for (name, value) in cx.named_tables(value, "registry") {
                    if let Some(reg) = cx.de::<Registry>(value) {
                        registries.insert(name, reg);
                    }
                }
            }
            "project" => {
                for (name, value) in cx.named_tables(value, "project") {
                    if let Some(project) = cx.de::<Project>(value) {
                        projects.insert(name, project);
                    }
                }
            }
            other => cx.error(
                Some(span),
                format!("unknown section `{other}`, expected one of `pipe`, `notify`, `registry`, `project`, `serve`, `ingress`"),
            ),
        }
    }
    let mut config = Config {
        path: path.to_path_buf(),
        settings: settings.unwrap_or_default(),
        notify: notify.unwrap_or_default(),
        registries,
        projects,
        serve: serve.unwrap_or_default(),
        ingress: ingress.unwrap_or_default(),
    };
    validate(&mut cx, &mut config);
    for (name, (span, mut hook)) in hooks {
        validate_hook(&mut cx, &name, span, &mut hook);
        config.serve.hooks.insert(name, hook);
    }
    validate_ingress(&mut cx, &config.ingress);
    if cx.diagnostics.is_empty() { Ok(config) } else { Err(cx.diagnostics) }
}

/// `[ingress]` values end up in nginx directives: each must be one plain token of its kind.
fn validate_ingress(cx: &mut Cx<'_>, ingress: &Ingress) {
    let host_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    let listen_chars = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || ".:[]-".contains(c));
    let size = |s: &str| {
        let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
        !digits.is_empty() && s.len() - digits.len() <= 1 && digits.chars().all(|c| c.is_ascii_digit())
    };
    let checks = [
        ("domain", host_chars(&ingress.domain), "a domain like `devel.example.com`"),
        ("listen", listen_chars(&ingress.listen), "a port or `address:port`"),
        ("body_size", size(&ingress.body_size), "a size like `10m`"),
        ("resolver", listen_chars(&ingress.resolver), "an address like `127.0.0.11`"),
        ("upstream", ingress.upstream.as_deref().is_none_or(host_chars), "a host like `127.0.0.1`"),
    ];
    for (key, ok, expected) in checks {
        if !ok {
            cx.error(None, format!("`ingress.{key}` must be {expected}"));
        }
    }
}

/// Service names become host names (`<service>.DOMAIN`) and nginx map keys.
fn validate_ingress_services(cx: &mut Cx<'_>, owner: &str, span: &Range<usize>, services: &BTreeMap<String, u16>) {
    for (service, port) in services {
        let label = !service.is_empty()
            && service.len() <= 63
            && service.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !service.starts_with('-')
            && !service.ends_with('-');
        if !label {
            cx.error(
                Some(span.clone()),
                format!("{owner}: ingress service `{service}` must be a DNS label: lowercase letters, digits and `-`"),
            );
        }
        if *port == 0 {
            cx.error(Some(span.clone()), format!("{owner}: ingress service `{service}` needs a port from 1 to 65535"));
        }
    }
}

/// Parsing context: the text diagnostics point into, and the diagnostics so far.
struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Cx<'a> {
    /// Parses the text, reporting every syntax error, and refuses inline secrets.
    fn document(&mut self) -> Result<DeTable<'a>, Vec<Diagnostic>> {
        let (doc, syntax_errors) = DeTable::parse_recoverable(self.text);
        for err in syntax_errors {
            self.error(err.span(), err.message().to_string());
        }
        if !self.diagnostics.is_empty() {
            return Err(std::mem::take(&mut self.diagnostics));
        }
        let mut doc = doc.into_inner();
        reject_inline_secrets(self, &mut doc);
        Ok(doc)
    }

    fn error(&mut self, span: Option<Range<usize>>, message: String) {
        let (line, column) = span.map(|s| line_column(self.text, s.start)).unwrap_or((1, 1));
        self.diagnostics.push(Diagnostic { path: self.path.to_path_buf(), line, column, message });
    }

    fn de<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>) -> Option<T> {
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(err) => {
                self.error(err.span().or(Some(span)), err.message().to_string());
                None
            }
        }
    }

    /// Splits `[section.NAME]` tables, validating each NAME.
    fn named_tables<'i>(&mut self, value: Spanned<DeValue<'i>>, section: &str) -> Vec<(String, Spanned<DeValue<'i>>)> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.error(Some(span), format!("`{section}` must be a table of named tables, e.g. `[{section}.NAME]`"));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, value) in table {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            if let Err(why) = validate_name(&name) {
                self.error(Some(name_span), format!("invalid {section} name `{name}`: {why}"));
                continue;
            }
            out.push((name, value));
        }
        out
    }
}

/// Names become file names, container names and compose project names.
pub(crate) fn validate_name(name: &str) -> Result<(), &'static str> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let starts_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 63 || !valid_chars || !starts_ok {
        return Err("expected 1 to 63 lowercase letters, digits, `-` or `_`, starting with a letter or digit");
    }
    Ok(())
}

/// Removes keys that would hold a secret inline, with a diagnostic that names the fix.
fn reject_inline_secrets(cx: &mut Cx<'_>, table: &mut DeTable<'_>) {
    let entries = std::mem::take(table);
    *table = entries
        .into_iter()
        .filter_map(|(key, mut value)| {
            let name: &str = key.get_ref().as_ref();
            if INLINE_SECRET_KEYS.contains(&name) {
                cx.error(
                    Some(key.span()),
                    format!(
                        "secrets are never written inline: use `{name}_env = \"VARIABLE\"` or `{name}_file = \"/path\"`"
                    ),
                );
                return None;
            }
            match value.get_mut() {
                DeValue::Table(inner) => reject_inline_secrets(cx, inner),
                DeValue::Array(items) => {
                    for item in items.iter_mut() {
                        if let DeValue::Table(inner) = item.get_mut() {
                            reject_inline_secrets(cx, inner);
                        }
                    }
                }
                _ => {}
            }
            Some((key, value))
        })
        .collect();
}

/// Cross-field rules serde cannot express.
fn validate(cx: &mut Cx<'_>, config: &mut Config) {
    for (name, reg) in &config.registries {
        let has_password = reg.password_env.is_some() || reg.password_file.is_some();
        if reg.password_env.is_some() && reg.password_file.is_some() {
            cx.error(None, format!("registry `{name}`: set one of `password_env` and `password_file`, not both"));
        }
        if reg.ecr.is_some() && has_password {
            cx.error(None, format!("registry `{name}`: `ecr` logs in by itself; drop `password_env`/`password_file`"));
        }
        if has_password && reg.username.is_none() {
            cx.error(None, format!("registry `{name}`: `username` is required with a password"));
        }
        if reg.url.is_empty() || reg.url.contains("://") {
            cx.error(
                None,
                format!("registry `{name}`: `url` is a registry host like `registry.example.com[:port][/prefix]`, without a scheme"),
            );
        }
    }
    for (which, env, file) in notify_pairs(&config.notify) {
        if env == file {
            cx.error(
                None,
                format!("`notify.{which}`: set exactly one of `{}_env` and `{}_file`", url_key(which), url_key(which)),
            );
        }
    }
    if config.settings.parallel == 0 {
        cx.error(None, "`pipe.parallel` must be at least 1".into());
    }
    let registries: Vec<String> = config.registries.keys().cloned().collect();
    for (name, project) in &mut config.projects {
        validate_project(cx, name, project, &registries);
    }
}

fn notify_pairs(notify: &Notify) -> Vec<(&'static str, bool, bool)> {
    let mut out = Vec::new();
    if let Some(s) = &notify.slack {
        out.push(("slack", s.webhook_url_env.is_some(), s.webhook_url_file.is_some()));
    }
    if let Some(w) = &notify.webhook {
        out.push(("webhook", w.url_env.is_some(), w.url_file.is_some()));
    }
    out
}

fn url_key(which: &str) -> &'static str {
    if which == "slack" { "webhook_url" } else { "url" }
}

fn validate_project(cx: &mut Cx<'_>, name: &str, project: &mut Project, registries: &[String]) {
    if project.repo.trim().is_empty() {
        cx.error(None, format!("project `{name}`: `repo` is empty"));
    }
    if project.branches.is_empty() {
        cx.error(None, format!("project `{name}`: `branches` is empty; list at least one branch or pattern"));
    }
    project.tracked = compile_spanned(cx, &project.branches);
    if let Some(auth) = &project.auth
        && auth.token_env.is_some()
        && auth.token_file.is_some()
    {
        cx.error(None, format!("project `{name}`: `auth`: set one of `token_env` and `token_file`, not both"));
    }
    let mut target_names = BTreeMap::new();
    for deploy in &mut project.deploy {
        let span = deploy.span();
        let deploy = deploy.get_mut();
        let kinds =
            [deploy.compose.is_some(), deploy.swarm.is_some(), deploy.command.is_some(), deploy.webhook.is_some()];
        let count = kinds.iter().filter(|k| **k).count();
        if count == 0 && deploy.push.is_empty() {
            cx.error(
                Some(span.clone()),
                format!(
                    "project `{name}`: a deploy entry needs `push` or one of `compose`, `swarm`, `command`, `webhook`"
                ),
            );
        }
        if count > 1 {
            cx.error(
                Some(span.clone()),
                format!("project `{name}`: a deploy entry has one target kind; split `compose`, `swarm`, `command` and `webhook` into separate `[[project.{name}.deploy]]` entries"),
            );
        }
        if let Some(cmd) = &deploy.command
            && cmd.argv.is_some() == cmd.shell.is_some()
        {
            cx.error(
                Some(span.clone()),
                format!("project `{name}`: `command` takes exactly one of `argv` (preferred) and `shell`"),
            );
        }
        if let Some(cmd) = &deploy.command
            && cmd.argv.as_ref().is_some_and(|a| a.is_empty())
        {
            cx.error(Some(span.clone()), format!("project `{name}`: `command.argv` is empty"));
        }
        if let Some(health) = &deploy.health
            && health.url.is_some() == health.container.is_some()
        {
            cx.error(
                Some(span.clone()),
                format!("project `{name}`: `health` takes exactly one of `url` and `container`"),
            );
        }
        if let Some(hook) = &deploy.webhook {
            if hook.secret_env.is_some() && hook.secret_file.is_some() {
                cx.error(
                    Some(span.clone()),
                    format!("project `{name}`: `webhook`: set one of `secret_env` and `secret_file`, not both"),
                );
            }
            if hook.token_env.is_some() && hook.token_file.is_some() {
                cx.error(
                    Some(span.clone()),
                    format!("project `{name}`: `webhook`: set one of `token_env` and `token_file`, not both"),
                );
            }
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                cx.error(
                    Some(span.clone()),
                    format!("project `{name}`: `webhook.url` must start with `http://` or `https://`"),
                );
            }
        }
        if deploy.branches.is_empty() {
            cx.error(Some(span.clone()), format!("project `{name}`: a deploy entry needs `branches`"));
        }
        if deploy.webhook.is_some() && !deploy.ingress.is_empty() {
            cx.error(
                Some(span.clone()),
                format!(
                    "project `{name}`: `ingress` on a webhook target belongs in the receiving host's `[serve.hooks.*]`"
                ),
            );
        }
        validate_ingress_services(cx, &format!("project `{name}`"), &span, &deploy.ingress);
        deploy.matcher = compile_spanned(cx, &deploy.branches);
        for registry in &deploy.push {
            if !registries.iter().any(|r| r == registry.get_ref()) {
                let known = if registries.is_empty() { "none are defined".to_string() } else { registries.join(", ") };
                cx.error(
                    Some(registry.span()),
                    format!("unknown registry `{}` (registries: {known})", registry.get_ref()),
                );
            }
        }
        let target = deploy.display_name().to_string();
        if count == 1 && target_names.insert(target.clone(), ()).is_some() {
            cx.error(
                Some(span),
                format!("project `{name}`: two deploy targets are named `{target}`; give each a distinct `name`"),
            );
        }
    }
}

fn validate_hook(cx: &mut Cx<'_>, name: &str, span: Range<usize>, hook: &mut Hook) {
    let token = hook.token_env.is_some() || hook.token_file.is_some();
    let secret = hook.secret_env.is_some() || hook.secret_file.is_some();
    if hook.token_env.is_some() && hook.token_file.is_some() || hook.secret_env.is_some() && hook.secret_file.is_some()
    {
        cx.error(
            Some(span.clone()),
            format!("hook `{name}`: set one of `*_env` and `*_file` for each credential, not both"),
        );
    }
    validate_ingress_services(cx, &format!("hook `{name}`"), &span, &hook.ingress);
    if !token && !secret {
        cx.error(Some(span.clone()), format!("hook `{name}` needs credentials: `secret_env`/`secret_file` (HMAC) or `token_env`/`token_file` (bearer)"));
    }
    if hook.docker_puller && !token {
        cx.error(
            Some(span.clone()),
            format!("hook `{name}`: `docker_puller = true` needs a `token_env` or `token_file`"),
        );
    }
    let kinds = [hook.compose.is_some(), hook.swarm.is_some(), hook.command.is_some()].iter().filter(|k| **k).count();
    if kinds != 1 {
        cx.error(Some(span.clone()), format!("hook `{name}` runs exactly one of `compose`, `swarm`, `command`"));
    }
    if (hook.compose.is_some() || hook.swarm.is_some()) && hook.images.is_empty() {
        cx.error(
            Some(span.clone()),
            format!("hook `{name}` deploys images: list the repositories it may run in `images`, so a leaked secret cannot run an arbitrary image"),
        );
    }
    if let Some(cmd) = &hook.command
        && cmd.argv.is_some() == cmd.shell.is_some()
    {
        cx.error(Some(span.clone()), format!("hook `{name}`: `command` takes exactly one of `argv` and `shell`"));
    }
    match Patterns::compile_images(hook.images.iter().map(String::as_str)) {
        Ok(p) => hook.allowed = p,
        Err(e) => cx.error(Some(span), format!("hook `{name}`: {e}")),
    }
}

fn compile_spanned(cx: &mut Cx<'_>, patterns: &[Spanned<String>]) -> Patterns {
    for pattern in patterns {
        if let Err(why) = compile_branch_glob(pattern.get_ref()) {
            cx.error(Some(pattern.span()), why);
        }
    }
    Patterns::compile(patterns.iter().map(|p| p.get_ref().as_str())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("p.toml"), text) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn example_file_is_valid() {
        let text = include_str!("../pipeline.example.toml");
        let config = parse(Path::new("pipeline.example.toml"), text)
            .unwrap_or_else(|d| panic!("{}", d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")));
        assert!(config.projects.contains_key("project1"));
        assert!(config.projects.contains_key("project2"));
        assert!(config.notify.slack.is_some());
    }

    #[test]
    fn unknown_key_is_located() {
        let errs = errors("[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\nbranchez = 1\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("p.toml:4:1: unknown field `branchez`"), "{errs:?}");
    }

    #[test]
    fn every_error_is_reported() {
        let text = "[pipe]\nkeep_logs = \"many\"\n\n[project.a]\nrepo = \"x\"\n\n[project.B]\nrepo = \"y\"\nbranches = [\"m\"]\n\n[project.c]\nrepo = \"z\"\nbranches = [\"feature/[\"]\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs.iter().any(|e| e.starts_with("p.toml:2:13:") && e.contains("expected u32")), "{errs:#?}");
        assert!(errs.iter().any(|e| e.contains("missing field `branches`")), "{errs:#?}");
        assert!(errs.iter().any(|e| e.starts_with("p.toml:7:10: invalid project name `B`")), "{errs:#?}");
        assert!(errs.iter().any(|e| e.starts_with("p.toml:13:13: invalid branch pattern `feature/[`")), "{errs:#?}");
    }

    #[test]
    fn inline_secret_is_refused_with_the_fix() {
        let errs = errors("[registry.r]\nurl = \"r.example.com\"\nusername = \"u\"\npassword = \"hunter2\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("use `password_env"), "{errs:?}");
        assert!(!errs[0].contains("hunter2"), "{errs:?}");
    }

    #[test]
    fn unknown_registry_in_push_is_located() {
        let text = "[project.a]\nrepo = \"x\"\nbranches = [\"main\"]\n[[project.a.deploy]]\nbranches = [\"main\"]\npush = [\"prod\"]\n";
        let errs = errors(text);
        assert_eq!(errs, vec!["p.toml:6:9: unknown registry `prod` (registries: none are defined)"]);
    }

    #[test]
    fn repo_file_cannot_define_host_side_commands() {
        let text = "image = \"app\"\n[[deploy]]\ncommand = { argv = [\"rm\", \"-rf\", \"/\"] }\n";
        let errs = parse_repo_file(Path::new(".pipe.toml"), text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].to_string().starts_with(".pipe.toml:2:3: a repository's `.pipe.toml` cannot define `deploy`"),
            "{errs:?}"
        );
        let ok = parse_repo_file(Path::new(".pipe.toml"), "image = \"app\"\ntest = \"make test\"\n").unwrap();
        assert_eq!(ok.image.as_deref(), Some("app"));
        assert!(parse_repo_file(Path::new(".pipe.toml"), "imag = 1\n").is_err());
    }

    #[test]
    fn jenkins_env_names_the_image() {
        assert_eq!(parse_jenkins_env("# x\nimagename=\"team/app\"\nother=1\n").as_deref(), Some("team/app"));
        assert_eq!(parse_jenkins_env("export imagename=app\n").as_deref(), Some("app"));
        assert_eq!(parse_jenkins_env("name=app\n"), None);
    }

    #[test]
    fn branch_star_stays_in_one_segment() {
        let p = Patterns::compile(["feature/*", "release/**", "main"]).unwrap();
        assert!(p.is_match("feature/x"));
        assert!(!p.is_match("feature/x/y"));
        assert!(p.is_match("release/1/2"));
        assert!(p.is_match("main"));
        assert!(!p.is_match("mainline"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
    }

    /// Lines a pipeline file is made of, good and bad, for the fragment property test.
    fn arb_document() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let section = proptest::sample::select(vec![
            "[pipe]",
            "[pipe.timeouts]",
            "[project.a]",
            "[project.B]",
            "[[project.a.deploy]]",
            "[registry.r]",
            "[serve]",
            "[serve.hooks.h]",
            "[ingress]",
            "[notify.slack]",
            "[unknown]",
            "[project.a.auth]",
        ]);
        let key = proptest::sample::select(vec![
            "repo",
            "branches",
            "image",
            "test",
            "push",
            "compose",
            "swarm",
            "command",
            "webhook",
            "url",
            "password",
            "password_env",
            "token_env",
            "secret_env",
            "keep_logs",
            "keep_images",
            "timeout",
            "parallel",
            "domain",
            "listen",
            "ingress",
            "health",
            "name",
            "images",
            "username",
            "body_size",
            "build",
            "workspace",
        ]);
        let value = proptest::sample::select(vec![
            "\"x\"",
            "[\"dev\"]",
            "[\"feature/[\"]",
            "1",
            "-1",
            "0",
            "true",
            "{ file = \"f\" }",
            "{ argv = [] }",
            "{ argv = [\"true\"] }",
            "{ shell = \"x\" }",
            "\"10m\"",
            "\"bad dur\"",
            "[]",
            "\"a b\"",
            "99999999999999999999",
            "{ api = 8080 }",
            "{ API = 0 }",
            "\"http://x\"",
            "{ url = \"u\" }",
            "[\"r\"]",
            "\"127.0.0.1:1\"",
            "\"\"",
            "{",
        ]);
        let line = prop_oneof![
            section.prop_map(str::to_string),
            (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
            "\\PC{0,20}",
        ];
        proptest::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
    }

    // Property tests (`prop_*`): `bench/run.sh` runs them with many more cases.
    proptest::proptest! {
        #[test]
        fn prop_any_document_is_accepted_or_every_error_is_located(text in arb_document()) {
            if let Err(diagnostics) = parse(Path::new("p.toml"), &text) {
                proptest::prop_assert!(!diagnostics.is_empty());
                let lines = text.lines().count().max(1);
                for d in &diagnostics {
                    proptest::prop_assert!(d.line >= 1 && d.line <= lines + 1 && d.column >= 1, "{d} in\n{text}");
                }
            }
        }

        #[test]
        fn prop_arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = parse(Path::new("p.toml"), &text);
        }

        #[test]
        fn prop_repo_files_never_define_host_side_keys(text in arb_document()) {
            if parse_repo_file(Path::new(".pipe.toml"), &text).is_ok() {
                for key in HOST_SIDE_KEYS {
                    proptest::prop_assert!(!text.lines().any(|l| l.trim_start().starts_with(&format!("{key} ="))), "{text}");
                }
            }
        }
    }
}
