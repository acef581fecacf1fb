//! What discovery made of each organization and each listed repository: the report `pipe
//! check`, `pipe status` and `pipe poll` print.

use std::collections::BTreeMap;

use serde::Serialize;

/// What discovery made of one organization.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ForgeReport {
    pub forge: String,
    pub org: String,
    /// Listing requests this run sent, and how many were answered `304 Not Modified`.
    pub requests: usize,
    pub not_modified: usize,
    /// The forge's rate limit holds discovery back until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<jiff::Timestamp>,
    /// Why the listing did not complete; the known projects stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every listed repository and what it became.
    pub repos: Vec<RepoDecision>,
    /// Listing entries refused before use, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Projects discovery made before and no longer makes: not polled, state kept until
    /// `pipe prune`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gone: BTreeMap<String, String>,
}

/// One repository of the listing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RepoDecision {
    pub repo: String,
    /// The project it is (or would be) under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What became of a listed repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Decision {
    /// A project from the template.
    Project,
    /// A project of that name or forge repository is written out in the pipeline file.
    WrittenOut,
    Excluded,
    Archived,
    Fork,
    /// Its name makes no valid project name.
    InvalidName,
    /// A name its project would hold (project name, compose project, swarm stack, image
    /// repository, host) is held by another project, forge or hook, exactly or folded.
    NameTaken,
    /// Its default branch carries neither `.pipe.toml` nor `.jenkins-env` beside a `Dockerfile`.
    NoPipeFile,
    /// The template gives an invalid project for it.
    InvalidProject,
    /// Its default branch could not be probed yet.
    NotProbed,
}

impl Decision {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::Project => "project",
            Decision::WrittenOut => "written out",
            Decision::Excluded => "excluded",
            Decision::Archived => "archived",
            Decision::Fork => "fork",
            Decision::InvalidName => "invalid name",
            Decision::NameTaken => "name taken",
            Decision::NoPipeFile => "no .pipe.toml",
            Decision::InvalidProject => "invalid project",
            Decision::NotProbed => "not probed",
        }
    }
}
