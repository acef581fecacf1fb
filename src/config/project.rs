//! `[project.NAME]`: one repository, what happens to its branches, and what its builds, tests
//! and networks may have.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::duration::Seconds;
use super::patterns::Patterns;
use super::targets::Deploy;
use super::values::ArgValue;
use crate::model::Stage;

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
    /// Reuse earlier builds on a fresh workspace or host: BuildKit's cache in the pushed image
    /// and `--cache-from` the registry, the legacy builder's pull of the ref's last image
    /// [default: true; only trusted refs ever read or write it; `false`: no registry].
    pub cache: Option<bool>,
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

impl Timeouts {
    pub(crate) fn get(&self, stage: Stage) -> Option<Seconds> {
        match stage {
            Stage::Poll => self.poll,
            Stage::Build => self.build,
            Stage::Test => self.test,
            Stage::Push => self.push,
            Stage::Deploy => self.deploy,
        }
    }
}
