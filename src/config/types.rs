//! The serde types of `pipeline.toml`, and what the rest of pipe asks of a loaded file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::targets::{CommandTarget, ComposeTarget, Deploy, Health, SwarmTarget};
use super::{Patterns, Seconds};
use crate::error::Usage;

/// The whole, validated pipeline file.
#[derive(Debug)]
pub(crate) struct Config {
    pub path: PathBuf,
    pub settings: Settings,
    pub notify: Notify,
    pub registries: BTreeMap<String, Registry>,
    pub projects: BTreeMap<String, Project>,
    pub serve: Serve,
    pub ingress: Ingress,
    /// `[forge.NAME]`: where commit statuses go and whose webhooks `pipe serve` accepts.
    pub forges: BTreeMap<String, Forge>,
}

/// `[forge.NAME]`: a GitHub, Gitea/Forgejo or GitLab instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forge {
    pub kind: ForgeKind,
    /// The API base: `https://api.github.com` (GitHub Enterprise: `https://HOST/api/v3`),
    /// `https://HOST/api/v1` (Gitea, Forgejo), `https://HOST/api/v4` (GitLab) [default: GitHub's].
    pub api: Option<String>,
    /// API token allowed to set commit statuses.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Link of each status (`target_url`): `{project}`, `{ref}`, `{commit}` and `{context}`
    /// are replaced. Without it statuses carry no link.
    pub target_url: Option<String>,
    /// `[forge.NAME.discover]`: the organization whose repositories become projects.
    #[serde(skip)]
    pub discover: Option<super::Discover>,
}

/// The forge software behind a `[forge.NAME]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ForgeKind {
    Github,
    #[serde(alias = "forgejo")]
    Gitea,
    Gitlab,
}

impl ForgeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitea => "gitea",
            ForgeKind::Gitlab => "gitlab",
        }
    }
}

impl Forge {
    /// The API base without a trailing slash.
    pub(crate) fn api_base(&self) -> &str {
        self.api.as_deref().unwrap_or("https://api.github.com").trim_end_matches('/')
    }
}

/// `[ingress]`: the nginx front `pipe generate nginx` writes for the deploy targets' services.
/// A missing key takes its value from [`Ingress::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Ingress {
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
    /// Directory where pipe writes one `upstream` file per switched service; setting it makes
    /// compose deploys behind the ingress zero-downtime (start beside, check, switch, drain).
    pub upstreams: Option<PathBuf>,
    /// The nginx pipe checks (`-t`), reloads (`-s reload`) and, when none runs, starts.
    pub nginx: Vec<String>,
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
            upstreams: None,
            nginx: vec!["nginx".into()],
        }
    }
}

/// `[serve]`: the deploy receiver on this host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Serve {
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
    /// `[serve.page]`: the read-only status page and badges (off unless enabled).
    #[serde(default)]
    pub page: Option<Page>,
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
            page: None,
            hooks: BTreeMap::new(),
        }
    }
}

/// `[serve.page]`: the read-only status page and badges served by `pipe serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// Serve the page at all.
    #[serde(default)]
    pub enabled: bool,
    /// A token pages require (bearer, or the password of basic auth); none: pages are open.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Badges answer without the token (default true).
    #[serde(default = "yes")]
    pub public_badges: bool,
    /// The page's address as others reach it, for absolute links (e.g. `https://ci.example.com`).
    pub public_url: Option<String>,
}

fn yes() -> bool {
    true
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
pub(crate) struct Hook {
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
pub(crate) struct Settings {
    /// Cache repositories and build checkouts live here.
    #[serde(default = "default_workspace")]
    pub workspace: PathBuf,
    /// Run logs kept per project and ref.
    #[serde(default = "default_keep_logs")]
    pub keep_logs: u32,
    /// Disk for one project's run logs, in MiB: beyond it its oldest logs are emptied.
    #[serde(default = "default_project_logs_mib")]
    pub project_logs_mib: u64,
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
    /// Where `pipe run` writes its metrics for node_exporter's textfile collector (a `.prom`
    /// file in the collector's `--collector.textfile.directory`); unset: no metrics written.
    #[serde(default)]
    pub metrics_textfile: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            workspace: default_workspace(),
            keep_logs: default_keep_logs(),
            project_logs_mib: default_project_logs_mib(),
            parallel: default_parallel(),
            max_builds: default_max_builds(),
            default_branches: default_branches(),
            timeouts: Timeouts::default(),
            metrics_textfile: None,
        }
    }
}

fn default_workspace() -> PathBuf {
    PathBuf::from("/var/lib/pipe/work")
}
fn default_keep_logs() -> u32 {
    20
}
fn default_project_logs_mib() -> u64 {
    1024
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
pub(crate) struct Timeouts {
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

use crate::model::Stage;

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
    pub(crate) fn keep_logs(&self, project: &Project) -> usize {
        project.keep_logs.unwrap_or(self.settings.keep_logs) as usize
    }

    /// The timeout for a stage of a project: the project's, else the pipeline's, else the default.
    pub(crate) fn timeout(&self, project: Option<&Project>, stage: Stage) -> Duration {
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

/// `[notify]`: where results are reported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notify {
    pub slack: Option<SlackNotify>,
    pub webhook: Option<WebhookNotify>,
}

/// `[notify.slack]`: a Slack incoming webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlackNotify {
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<PathBuf>,
    #[serde(default = "default_events")]
    pub on: Vec<Event>,
}

/// `[notify.webhook]`: a generic JSON webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookNotify {
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
pub(crate) enum Event {
    Failure,
    Recovery,
    Success,
    Deploy,
}

/// `[registry.NAME]`: a registry images are pushed to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registry {
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
pub(crate) struct Ecr {
    pub region: String,
    /// AWS CLI profile, for a production account separate from the CI host's.
    pub profile: Option<String>,
}

/// `[project.NAME]`: one repository and what happens to its branches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Project {
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
    /// `--build-arg` values: literal, or `{ env = "VAR" }` / `{ file = "/path" }` secrets.
    #[serde(default)]
    pub build_args: BTreeMap<String, Spanned<ArgValue>>,
    /// Test command run with `sh -c` inside the built image.
    pub test: Option<String>,
    /// The test container's environment: literal, or `{ env }` / `{ file }` secrets.
    #[serde(default)]
    pub test_env: BTreeMap<String, Spanned<ArgValue>>,
    /// Compose file of services the tests need, relative to the repo.
    pub test_services: Option<String>,
    /// Confinement of the test container and test services.
    #[serde(default)]
    pub limits: Limits,
    /// Pull-request builds get the project's secrets (they still never push or deploy).
    #[serde(default)]
    pub trust_pull_requests: bool,
    /// Branch patterns trusted with the project's secrets, registry login, pushes and deploys
    /// [default: every tracked branch]; other branches are treated like untrusted pull requests.
    pub trusted_branches: Option<Vec<Spanned<String>>>,
    /// The image build's network: one policy, or `{ trusted, untrusted }`.
    pub build_network: Option<BuildNetwork>,
    /// Which submodule URLs a checkout may fetch [default: the project's own host and scheme].
    pub submodules: Option<Submodules>,
    /// Images kept per project beyond those a deploy target runs or can roll back to.
    pub keep_images: Option<u32>,
    /// Run logs kept per ref [default: `pipe.keep_logs`].
    pub keep_logs: Option<u32>,
    pub timeouts: Option<Timeouts>,
    pub auth: Option<GitAuth>,
    #[serde(default)]
    pub deploy: Vec<Spanned<Deploy>>,
    /// The `[forge.NAME]` this repository lives on: commit statuses and webhooks.
    pub forge: Option<String>,
    /// The repository on the forge: `owner/repo`, or a GitLab project id or `group/project` path.
    pub forge_repo: Option<String>,
    /// Secret of the forge's webhook (HMAC key on GitHub and Gitea, the token on GitLab).
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    /// Compiled from `branches` during validation.
    #[serde(skip)]
    pub tracked: Patterns,
    /// The `[forge.NAME]` whose organization listing made this project (none: written out).
    #[serde(skip)]
    pub discovered: Option<String>,
    /// Compiled from `trusted_branches` during validation.
    #[serde(skip)]
    pub trusted: Option<Patterns>,
}

/// A build arg or test variable in the pipeline file: a literal, or a secret by reference.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "a string, `{ env = \"VARIABLE\" }` or `{ file = \"/path\" }`")]
pub(crate) enum ArgValue {
    Literal(String),
    Secret(SecretArg),
}

/// `{ env = "VAR" }` or `{ file = "/path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretArg {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl ArgValue {
    /// The secret this value refers to, if it is one.
    pub(crate) fn secret(&self) -> Option<SecretRef> {
        match self {
            ArgValue::Literal(_) => None,
            ArgValue::Secret(s) => SecretRef::from_pair(&s.env, &s.file),
        }
    }
}

/// `limits = { memory = "2g", pids = 1024, cpus = 2.0, egress = false }`: how the test
/// container and each test service are confined. Set only in the pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// Memory (and memory+swap) per container: a number with `k`, `m` or `g`.
    pub memory: String,
    /// Processes per container.
    pub pids: u32,
    /// CPUs per container.
    pub cpus: f64,
    /// Let the test network reach beyond itself (e.g. to download packages).
    pub egress: bool,
}

impl Default for Limits {
    fn default() -> Self {
        let c = crate::docker::Confinement::default();
        Limits { memory: c.memory, pids: c.pids, cpus: c.cpus, egress: c.egress }
    }
}

impl Limits {
    pub(crate) fn confinement(&self) -> crate::docker::Confinement {
        crate::docker::Confinement {
            memory: self.memory.clone(),
            pids: self.pids,
            cpus: self.cpus,
            egress: self.egress,
        }
    }
}

/// What an image build's `RUN` steps reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NetworkPolicy {
    /// The engine's default bridge: the internet, the host and the LAN.
    Default,
    /// A bridge of its own: the internet, but neither the host nor private ranges.
    Isolated,
    /// No network at all.
    None,
}

impl NetworkPolicy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            NetworkPolicy::Default => "default",
            NetworkPolicy::Isolated => "isolated",
            NetworkPolicy::None => "none",
        }
    }
}

/// `build_network = "isolated"` (every ref) or `{ trusted = "default", untrusted = "isolated" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "`\"default\"`, `\"isolated\"`, `\"none\"` or `{ trusted = \"…\", untrusted = \"…\" }`")]
pub(crate) enum BuildNetwork {
    All(NetworkPolicy),
    Split(BuildNetworkSplit),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildNetworkSplit {
    /// Branches trusted with the project's secrets [default: `default`].
    pub trusted: Option<NetworkPolicy>,
    /// Pull requests and untrusted branches [default: `isolated`].
    pub untrusted: Option<NetworkPolicy>,
}

/// `submodules = false` or `submodules = { allow = ["https://github.com/org/*"] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "`false`, `true` or `{ allow = [\"URL pattern\", …] }`")]
pub(crate) enum Submodules {
    Enabled(bool),
    Allow(SubmoduleAllow),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmoduleAllow {
    /// URL patterns (`*` matches anything) allowed besides the project's own host.
    pub allow: Vec<String>,
}

/// `auth = { … }`: credentials for the project's git remote.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitAuth {
    /// User name for HTTPS tokens and SSH [default: `git` for SSH, `x-access-token` for HTTPS].
    pub username: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// SSH private key tried after the SSH agent.
    pub ssh_key: Option<PathBuf>,
    pub ssh_key_passphrase_env: Option<String>,
}

impl Project {
    /// Does this project follow the branch `name` (without `refs/heads/`)?
    pub(crate) fn tracks_branch(&self, name: &str) -> bool {
        self.tracked.is_match(name)
    }

    /// The network of a trusted (or untrusted) ref's image build: the engine's default for
    /// trusted refs and `isolated` for the others, unless `build_network` says otherwise.
    pub(crate) fn build_network(&self, trusted: bool) -> NetworkPolicy {
        let (t, u) = match &self.build_network {
            None => (None, None),
            Some(BuildNetwork::All(p)) => (Some(*p), Some(*p)),
            Some(BuildNetwork::Split(s)) => (s.trusted, s.untrusted),
        };
        if trusted { t.unwrap_or(NetworkPolicy::Default) } else { u.unwrap_or(NetworkPolicy::Isolated) }
    }
}

/// A secret given by indirection: the name of an environment variable, or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// The `*_env` / `*_file` pair of a config table as one reference, if either is set.
    pub(crate) fn from_pair(env: &Option<String>, file: &Option<PathBuf>) -> Option<SecretRef> {
        match (env, file) {
            (Some(var), _) => Some(SecretRef::Env(var.clone())),
            (None, Some(path)) => Some(SecretRef::File(path.clone())),
            (None, None) => None,
        }
    }
}

impl Config {
    /// Every secret the file refers to, with the key that names it, for `pipe check`.
    pub(crate) fn secret_refs(&self) -> Vec<(String, SecretRef)> {
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
        for (name, forge) in &self.forges {
            add(format!("forge.{name}.token"), &forge.token_env, &forge.token_file);
            if let Some(d) = &forge.discover {
                add(format!("forge.{name}.discover.webhook_secret"), &d.webhook_secret_env, &d.webhook_secret_file);
            }
        }
        for (name, project) in &self.projects {
            add(format!("project.{name}.webhook_secret"), &project.webhook_secret_env, &project.webhook_secret_file);
            for (table, values) in [("build_args", &project.build_args), ("test_env", &project.test_env)] {
                for (key, value) in values {
                    if let ArgValue::Secret(secret) = value.get_ref() {
                        add(format!("project.{name}.{table}.{key}"), &secret.env, &secret.file);
                    }
                }
            }
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
    pub(crate) fn select<'a>(&'a self, names: &[String]) -> anyhow::Result<Vec<(&'a str, &'a Project)>> {
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
