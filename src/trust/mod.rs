//! The trust boundary: what a ref pipe does not trust, and the repository content of any ref,
//! may reach. Which refs are trusted is decided here ([`trusted`]); the rooms below keep
//! repository content off the host:
//!
//! - `paths`: every path a repository names resolved inside its checkout, repository files
//!   read capped and without following links;
//! - `services`: a repository's test services re-emitted from an allow-list, confined;
//! - `isolation`: the firewalled networks untrusted builds, tests and previews run on;
//! - `redact`: secret values masked in what a command wrote;
//! - `dockerfile`: the compose and stack labels an untrusted Dockerfile may not set;
//! - `writes`: an untrusted preview writing only to tmpfs of a bounded size, on a read-only root.
//!
//! Invariant: nothing here reads the pipeline's state or calls into the engine; the engine
//! and `pipe check` call in.

use crate::config::Project;
use crate::refs::{self, RefKind};

pub(crate) mod dockerfile;
pub(crate) mod isolation;
pub(crate) mod paths;
pub(crate) mod redact;
pub(crate) mod services;
pub(crate) mod writes;

/// Whether `refname` of `project` may have the project's secrets, registry login, pushes and
/// deploys: a pull request only with `trust_pull_requests`, a branch when it matches
/// `trusted_branches` (every branch when that is not set).
pub(crate) fn trusted(project: &Project, refname: &str) -> bool {
    if refs::classify(refname) == Some(RefKind::PullRequest) {
        return project.trust_pull_requests;
    }
    match (&project.trusted, refname.strip_prefix("refs/heads/")) {
        (None, _) => true,
        (Some(patterns), Some(branch)) => patterns.is_match(branch),
        (Some(_), None) => false,
    }
}

/// Why an untrusted ref is untrusted, for people.
pub(crate) fn untrusted_why(refname: &str) -> &'static str {
    if refs::classify(refname) == Some(RefKind::PullRequest) {
        "a pull request and `trust_pull_requests` is off"
    } else {
        "a branch outside `trusted_branches`"
    }
}
