//! Deploy entries and their targets in `pipeline.toml`: compose, swarm, command and webhook
//! targets, health checks and release commands.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::duration::Seconds;
use super::patterns::Patterns;
use super::values::ArgValue;

/// `[[project.NAME.deploy]]`: what happens after a branch's image is tested.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Deploy {
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
    /// A compose target that spans hosts reached over SSH (hosts with Docker, nginx and sshd,
    /// no pipe): the compose file runs here, against each host's engine through an SSH tunnel.
    pub ssh: Option<SshHosts>,
    /// The target's own environment: literals and secrets by reference. Its compose, swarm or
    /// command runs with these, the `PIPE_*` variables and the host's few (`HOST_ENV`), nothing
    /// else of pipe's environment.
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<ArgValue>>,
    pub health: Option<Health>,
    pub timeout: Option<Seconds>,
    /// Services `pipe generate nginx` routes to, each with the port nginx connects to.
    #[serde(default)]
    pub ingress: BTreeMap<String, u16>,
    /// How long the old release keeps its containers after the switch [default: 5s].
    pub drain: Option<Seconds>,
    /// Run once in the new image before the switch (migrations); failing aborts the deploy.
    pub release: Option<ReleaseCommand>,
    /// Also deploy each open pull request's tested image as a preview of its own.
    #[serde(default)]
    pub previews: bool,
    /// A preview's host name: `{pr}`, `{project}`, `{service}`, `{domain}` are replaced
    /// [default: `pr-{pr}.{project}.{domain}`].
    pub preview_host: Option<String>,
    /// A preview whose pull request got no new commit for this long is removed [default: 168h, 7 days].
    pub preview_ttl: Option<Seconds>,
    /// At most this many previews of the target at once; the oldest idle one goes first
    /// [default: 10].
    pub max_previews: Option<usize>,
    #[serde(skip)]
    pub matcher: Patterns,
}

/// `release = { argv = ["bin/migrate"] }`: a command run in the new release's image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseCommand {
    pub argv: Vec<String>,
}

/// `compose = { file = "…", services = […] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ComposeTarget {
    pub file: PathBuf,
    /// Compose project name [default: the pipe project's name].
    pub project: Option<String>,
    #[serde(default)]
    pub services: Vec<String>,
}

/// `swarm = { file = "…", stack = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwarmTarget {
    pub file: PathBuf,
    pub stack: String,
}

/// `command = { argv = […] }` or, explicitly, `command = { shell = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandTarget {
    pub argv: Option<Vec<String>>,
    pub shell: Option<String>,
}

/// `webhook = { url = "…", secret_env = "…" }`: a remote `pipe serve` or docker-puller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookTarget {
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
    /// A fleet: the hosts this release goes to as one, each put in place of `{host}` in `url`.
    /// Every host must answer before any switches; a host that fails its check puts every
    /// switched host back on the previous release.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// How many hosts of a fleet deploy at once [default: all of them].
    pub batch: Option<usize>,
    /// A fleet host that cannot be reached before the rollout is skipped and reported, instead
    /// of failing the deploy [default: false].
    #[serde(default)]
    pub skip_unreachable: bool,
}

impl WebhookTarget {
    /// A webhook target that spans hosts.
    pub(crate) fn is_fleet(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// How many hosts of the fleet deploy at once.
    pub(crate) fn batch_size(&self) -> usize {
        self.batch.unwrap_or(self.hosts.len()).clamp(1, self.hosts.len().max(1))
    }
}

/// `ssh = { hosts = ["ssh://deploy@10.0.0.5"], upstreams = "/etc/nginx/pipe" }`: the hosts a
/// compose target deploys to over SSH, and where each host's nginx and engine are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SshHosts {
    /// `ssh://[USER@]HOST[:PORT]`, one release to all of them; the system `ssh` connects, with
    /// the operator's own ssh configuration, agent and keys.
    pub hosts: Vec<String>,
    /// How many hosts deploy at once [default: all of them].
    pub batch: Option<usize>,
    /// A host that cannot be reached before the rollout is skipped and reported, instead of
    /// failing the deploy [default: false]. A host whose key is not known is never skipped.
    #[serde(default)]
    pub skip_unreachable: bool,
    /// The directory on each host where pipe writes the upstream files its nginx includes.
    pub upstreams: PathBuf,
    /// The nginx command on each host pipe runs `-t` and `-s reload` with [default: `["nginx"]`].
    #[serde(default = "default_nginx")]
    pub nginx: Vec<String>,
    /// The Docker engine's socket on each host [default: `/var/run/docker.sock`].
    #[serde(default = "default_socket")]
    pub docker_socket: PathBuf,
    /// The known_hosts file that holds the hosts' keys [default: ssh's own, `~/.ssh/known_hosts`].
    pub known_hosts: Option<PathBuf>,
    /// The private key to log in with [default: ssh's own choice: agent, config, `~/.ssh/id_*`].
    pub identity: Option<PathBuf>,
}

fn default_nginx() -> Vec<String> {
    vec!["nginx".into()]
}

fn default_socket() -> PathBuf {
    PathBuf::from("/var/run/docker.sock")
}

impl SshHosts {
    /// How many hosts deploy at once.
    pub(crate) fn batch_size(&self) -> usize {
        self.batch.unwrap_or(self.hosts.len()).clamp(1, self.hosts.len().max(1))
    }
}

/// `health = { url = "…" }` or `health = { container = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Health {
    pub url: Option<String>,
    pub container: Option<String>,
    pub timeout: Option<Seconds>,
}

impl Deploy {
    /// The kind of target this entry configures.
    pub(crate) fn kind(&self) -> &'static str {
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

    pub(crate) fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.kind())
    }
}

/// The host-name template of a preview target.
pub(crate) fn preview_host_template(deploy: &Deploy) -> &str {
    deploy.preview_host.as_deref().unwrap_or("pr-{pr}.{project}.{domain}")
}

/// A preview's host name from the template.
pub(crate) fn preview_host(template: &str, pr: u64, project: &str, service: &str, domain: &str) -> String {
    template
        .replace("{pr}", &pr.to_string())
        .replace("{project}", project)
        .replace("{service}", service)
        .replace("{domain}", domain)
}
