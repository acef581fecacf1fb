//! The serde types of `pipeline.toml`, and what the rest of pipe asks of a loaded file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::Seconds;
use super::patterns::Patterns;
use super::targets::{CommandTarget, ComposeTarget, Health, ReleaseCommand, SwarmTarget};
use crate::error::Usage;
use crate::model::Stage;

use super::forge::Forge;
use super::project::{Project, Timeouts};
use super::values::{ArgValue, SecretRef};

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
    /// What this host is called in a fleet's `hosts` when that is neither its host name nor an
    /// address of its interfaces (a DNS name, an address behind NAT): a fleet's body names the
    /// host it was sent to, and the receiver runs only those that name it.
    #[serde(default)]
    pub names: Vec<String>,
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
            names: Vec::new(),
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
    /// The hook's own environment, as a deploy target's `env`.
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<ArgValue>>,
    pub health: Option<Health>,
    pub timeout: Option<Seconds>,
    /// Largest request body this hook reads, in bytes (default 64 KiB, at most `serve.body_limit`).
    pub max_body: Option<u64>,
    /// Services `pipe generate nginx` routes to, each with the port nginx connects to. With
    /// `[ingress] upstreams`, a compose hook deploys them without downtime (start beside,
    /// check, release command, switch, drain), as a `pipe run` compose target does.
    #[serde(default)]
    pub ingress: BTreeMap<String, u16>,
    /// How long the old release keeps its containers after the switch [default: 5s].
    pub drain: Option<Seconds>,
    /// Run once in the new image before the switch (migrations); failing aborts the deploy.
    pub release: Option<ReleaseCommand>,
    #[serde(skip)]
    pub allowed: Patterns,
    /// This host's `[ingress]`, which a hook with `ingress` services is switched through.
    #[serde(skip)]
    pub host_ingress: Ingress,
}

impl Hook {
    /// The compose project hook `name` deploys to when its `compose` names none: the hook's
    /// name with `-serve`, so a `pipe run` deploy target of the same name on this host keeps
    /// its own. The receiver deploys there and discovery counts the hook as holding it.
    pub(crate) fn default_project(name: &str) -> String {
        format!("{name}-serve")
    }
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
    /// Pull-request builds of one author a `pipe run` starts at most (the author from the forge).
    #[serde(default = "default_max_builds_per_author")]
    pub max_builds_per_author: usize,
    /// Previews of one author's pull requests a preview target runs at most.
    #[serde(default = "default_max_previews_per_author")]
    pub max_previews_per_author: usize,
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
            max_builds_per_author: default_max_builds_per_author(),
            max_previews_per_author: default_max_previews_per_author(),
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
fn default_max_builds_per_author() -> usize {
    2
}
fn default_max_previews_per_author() -> usize {
    3
}
fn default_branches() -> Vec<String> {
    vec!["main".into(), "master".into()]
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

impl Config {
    /// Every secret the file refers to, with the key that names it, for `pipe check`.
    pub(crate) fn secret_refs(&self) -> Vec<(String, SecretRef)> {
        let mut out = Vec::new();
        // Table values (`{ env }`, `{ file }`, `{ command }`), kept apart while `add` holds `out`.
        let mut extra = Vec::new();
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
                    if let Some(secret) = value.get_ref().secret() {
                        extra.push((format!("project.{name}.{table}.{key}"), secret));
                    }
                }
            }
            if let Some(auth) = &project.auth {
                add(format!("project.{name}.auth.token"), &auth.token_env, &auth.token_file);
                add(format!("project.{name}.auth.ssh_key"), &None, &auth.ssh_key);
            }
            for deploy in &project.deploy {
                let target = deploy.get_ref().display_name();
                if let Some(hook) = &deploy.get_ref().webhook {
                    add(format!("project.{name}.deploy.{target}.secret"), &hook.secret_env, &hook.secret_file);
                    add(format!("project.{name}.deploy.{target}.token"), &hook.token_env, &hook.token_file);
                }
                for (key, value) in &deploy.get_ref().env {
                    if let Some(secret) = value.get_ref().secret() {
                        extra.push((format!("project.{name}.deploy.{target}.env.{key}"), secret));
                    }
                }
            }
        }
        for (name, hook) in &self.serve.hooks {
            for (key, value) in &hook.env {
                if let Some(secret) = value.get_ref().secret() {
                    extra.push((format!("serve.hooks.{name}.env.{key}"), secret));
                }
            }
        }
        out.extend(extra);
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
