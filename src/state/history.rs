//! Per-ref run histories and per-target deploy histories: the files beside `state.toml` that
//! only the stage working on a ref (or `pipe logs`, `pipe prune`) reads.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::disk::{SCHEMA, state_error, write_atomic};
use crate::error::line_column;
use crate::model::{DeployResult, HostResult, Outcome, Stage};

/// The runs of one ref, newest last. Kept in its own file beside the state so that a tick,
/// which reads only `state.toml`, never pays for history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    pub schema: u32,
    #[serde(rename = "ref")]
    pub refname: String,
    pub next_run: u64,
    /// For a project of several images: per image, the last commit of this ref whose build of
    /// it passed its tests, and the image that holds it: what the next commit is compared with.
    /// Kept here, not in the runs, so that pruning old runs never loses it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tested: BTreeMap<String, Tested>,
    #[serde(default, rename = "run")]
    pub runs: Vec<Run>,
}

/// An image's last build that passed its tests on a ref.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tested {
    /// The commit the image was built from.
    pub commit: String,
    /// The local image reference (`repository:tag`) that holds that build.
    pub image: String,
    /// A digest of what the build was made with (image, Dockerfile, context, paths, build
    /// args): a build made otherwise is never reused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recipe: String,
}

/// One image of a run of a project with several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRun {
    /// The image's table name (`api`).
    pub name: String,
    /// The image repository and the tags this run gave it (local names).
    pub image: String,
    pub tags: Vec<String>,
    /// Built by this run; otherwise the image of `from` got this run's tags.
    pub built: bool,
    /// The commit whose build this image is: the run's own when built.
    pub from: String,
    /// Why it was built or retagged.
    pub why: String,
    /// What the build was made with, as [`Tested::recipe`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recipe: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// How this image's tests ended in this run (absent: not tested by this run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tested: Option<Outcome>,
    /// Registry name → pushed digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
}

/// One pass of a commit through the stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub number: u64,
    pub commit: String,
    pub started: Timestamp,
    /// The image repository and the tags it was built with (local names).
    pub image: String,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub log: PathBuf,
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageRun>,
    /// Registry name → pushed digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
    /// The test command, environment and services resolved at build time for this commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub test_env: BTreeMap<String, String>,
    /// Names of the secret test variables the pipeline file gives this run (values are
    /// resolved at test time, never stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_secrets: Vec<String>,
    /// The accepted test services, as pipe stored them (not the repository's file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_services: Option<PathBuf>,
    /// The commit's subject and author's name, from the build's checkout (capped, control
    /// characters blanked). Absent in runs older than these fields and when no checkout was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A project of several images: each image of this commit's release (the first is also
    /// `image` and `tags` above). Empty for a project of one image.
    #[serde(default, rename = "images", skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRun>,
}

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRun {
    pub stage: Stage,
    pub result: Outcome,
    pub started: Timestamp,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the stage ended, to the millisecond ([`crate::clock::precise`]): the deploy
    /// timeline's instant for it. Absent in records older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Timestamp>,
}

impl StageRun {
    /// A stage's record, made when the stage ends; durations are kept to 0.1 s.
    pub fn new(
        stage: Stage,
        result: Outcome,
        started: Timestamp,
        took: std::time::Duration,
        exit_code: Option<i32>,
    ) -> StageRun {
        let seconds = (took.as_secs_f64() * 10.0).round() / 10.0;
        StageRun { stage, result, started, seconds, exit_code, ended: Some(crate::clock::precise()) }
    }
}

impl Run {
    /// The latest outcome of `stage` in this run.
    pub fn stage(&self, stage: Stage) -> Option<&StageRun> {
        self.stages.iter().rev().find(|s| s.stage == stage)
    }
}

/// The last deploys of one target, newest last: what rollback goes back to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployHistory {
    pub schema: u32,
    #[serde(default, rename = "deploy")]
    pub deploys: Vec<DeployRecord>,
}

/// One deploy of an image to a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRecord {
    pub commit: String,
    /// The image repository as deployed (with the registry when pulled from one).
    pub image: String,
    pub tag: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub at: Timestamp,
    pub result: DeployResult,
    /// When the commit went from detected to taking traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// This deploy put an earlier image back: by hand (`pipe deploy --commit` of a commit
    /// other than the ref's newest build) or after a failed deploy (the automatic rollback).
    #[serde(default, skip_serializing_if = "super::disk::is_false")]
    pub rollback: bool,
    /// A release of several images: image name → repository, each with `tag` (on the CI host
    /// local, as built; on a receiving host as the webhook's body named it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// A target that spans hosts: where each host ended up, in the pipeline file's order.
    #[serde(default, rename = "host", skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostRecord>,
}

impl DeployRecord {
    /// A fleet deploy's hosts in a few words: how many ended how, then each host that did not
    /// take the release with its reason (`3 rolled_back, 1 failed: 10.0.0.3 failed: …`).
    pub fn hosts_summary(&self) -> Option<String> {
        if self.hosts.is_empty() {
            return None;
        }
        let mut counts: Vec<(HostResult, usize)> = Vec::new();
        for h in &self.hosts {
            match counts.iter_mut().find(|(r, _)| *r == h.result) {
                Some((_, n)) => *n += 1,
                None => counts.push((h.result, 1)),
            }
        }
        let mut text = counts.iter().map(|(r, n)| format!("{n} {}", r.as_str())).collect::<Vec<_>>().join(", ");
        let odd: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| !matches!(h.result, HostResult::Deployed | HostResult::RolledBack | HostResult::NotStarted))
            .map(|h| match &h.detail {
                Some(d) => format!("{} {}: {}", h.host, h.result.as_str(), short_reason(d)),
                None => format!("{} {}", h.host, h.result.as_str()),
            })
            .collect();
        if !odd.is_empty() {
            text.push_str(": ");
            text.push_str(&odd.join("; "));
        }
        Some(text)
    }
}

/// A host's reason as a summary shows it: a health check's last answer, else the reason's
/// start.
fn short_reason(detail: &str) -> String {
    if let Some((_, last)) = detail.split_once("last answered") {
        let last = last.trim_start_matches(':').trim();
        let cut: String = last.chars().take(60).collect();
        return format!("health check's last answer: {cut}");
    }
    if let Some((_, last)) = detail.split_once("(last: ") {
        return format!("health check's last answer: {}", last.split(')').next().unwrap_or(last));
    }
    let cut: String = detail.chars().take(80).collect();
    if cut.len() < detail.len() { format!("{cut}…") } else { cut }
}

/// One host of a fleet in one deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    pub host: String,
    pub result: HostResult,
    /// Why it failed, was skipped or was not rolled back: the receiver's own words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The moments of one deploy, from the commit being detected to its release taking traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    /// The ref's head first seen at this commit (`since` in the state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tested: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Timestamp>,
    /// The new release passed its checks (before the release command and the switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<Timestamp>,
    /// The ingress sends it traffic (or, without a switched ingress, the deploy finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Timestamp>,
}

impl Timeline {
    /// Seconds from the commit being detected to its release taking traffic.
    pub fn commit_to_traffic(&self) -> Option<f64> {
        let (from, to) = (self.detected?, self.traffic?);
        Some(((to.as_millisecond() - from.as_millisecond()) as f64 / 100.0).round() / 10.0)
    }

    /// `detected 20:01:02.3, built +4.1s, …, took traffic +13.0s`: every instant in tenths.
    pub fn describe(&self) -> String {
        let base = self.detected.or(self.built).or(self.healthy);
        let mut parts = Vec::new();
        if let Some(at) = self.detected {
            parts.push(format!("detected {}", at.strftime("%H:%M:%S%.1f")));
        }
        for (what, at) in [
            ("built", self.built),
            ("tested", self.tested),
            ("pushed", self.pushed),
            ("healthy", self.healthy),
            ("took traffic", self.traffic),
        ] {
            if let (Some(at), Some(base)) = (at, base) {
                let secs = (at.as_millisecond() - base.as_millisecond()) as f64 / 1000.0;
                parts.push(format!("{what} +{secs:.1}s"));
            }
        }
        parts.join(", ")
    }
}

/// Deploy records kept per target.
pub const KEEP_DEPLOYS: usize = 10;

/// Reads a target's deploy history; a missing file is an empty history.
pub fn load_deploys(path: &Path) -> anyhow::Result<DeployHistory> {
    Ok(read_versioned(path)?.unwrap_or(DeployHistory { schema: SCHEMA, deploys: Vec::new() }))
}

pub fn save_deploys(path: &Path, history: &mut DeployHistory) -> anyhow::Result<()> {
    if history.deploys.len() > KEEP_DEPLOYS {
        history.deploys.drain(..history.deploys.len() - KEEP_DEPLOYS);
    }
    let text = toml::to_string(history).map_err(|e| state_error(path, format!("cannot be rendered: {e}")))?;
    write_atomic(path, &text)
}

/// Reads a ref's history; a missing file is an empty history.
pub fn load_history(path: &Path, refname: &str) -> anyhow::Result<History> {
    let empty = || History {
        schema: SCHEMA,
        refname: refname.to_string(),
        next_run: 1,
        tested: BTreeMap::new(),
        runs: Vec::new(),
    };
    Ok(read_versioned(path)?.unwrap_or_else(empty))
}

/// A file with a `schema` field: `None` when missing; corrupt or of another schema, a
/// `StateError` naming the file and line.
pub(super) fn read_versioned<T: DeserializeOwned + Versioned>(path: &Path) -> anyhow::Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(state_error(path, format!("cannot be read: {err}"))),
    };
    parse_versioned(path, &text).map(Some)
}

/// [`read_versioned`] of a text already read from `path`.
pub(super) fn parse_versioned<T: DeserializeOwned + Versioned>(path: &Path, text: &str) -> anyhow::Result<T> {
    let value: T = toml::from_str(text).map_err(|err| {
        let (line, column) = err.span().map(|s| line_column(text, s.start)).unwrap_or((1, 1));
        state_error(path, format!("corrupt at line {line}, column {column}: {}", err.message()))
    })?;
    if value.schema() != SCHEMA {
        return Err(state_error(path, format!("has schema {} but this pipe reads schema {SCHEMA}", value.schema())));
    }
    Ok(value)
}

pub(super) trait Versioned {
    fn schema(&self) -> u32;
}

impl Versioned for History {
    fn schema(&self) -> u32 {
        self.schema
    }
}

impl Versioned for DeployHistory {
    fn schema(&self) -> u32 {
        self.schema
    }
}

/// Saves a ref's history atomically, keeping the newest `keep` runs and deleting older logs.
pub fn save_history(path: &Path, history: &mut History, keep: usize) -> anyhow::Result<()> {
    let keep = keep.max(1);
    if history.runs.len() > keep {
        let old: Vec<Run> = history.runs.drain(..history.runs.len() - keep).collect();
        for run in old {
            // A log that is already gone is what pruning wants anyway.
            let _ = fs::remove_file(&run.log);
        }
    }
    let text = toml::to_string(history).map_err(|e| state_error(path, format!("cannot be rendered: {e}")))?;
    write_atomic(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleets_summary_counts_the_hosts_and_names_the_one_that_failed_with_its_health_answer() {
        let host = |h: &str, result, detail: Option<&str>| HostRecord {
            host: h.into(),
            result,
            detail: detail.map(str::to_string),
        };
        let record = DeployRecord {
            commit: "c".repeat(40),
            image: "app".into(),
            tag: "t".into(),
            refname: "refs/heads/main".into(),
            at: Timestamp::from_second(1_790_000_000).unwrap(),
            result: DeployResult::RolledBack,
            timeline: None,
            rollback: false,
            images: Default::default(),
            hosts: vec![
                host("web1", HostResult::RolledBack, None),
                host("web2", HostResult::RolledBack, None),
                host(
                    "web3",
                    HostResult::Failed,
                    Some(
                        "run failed: health check `http://127.0.0.1:8080/health` did not answer 2xx within 8s (last: HTTP 503)",
                    ),
                ),
                host("web4", HostResult::NotStarted, None),
            ],
        };
        assert_eq!(
            record.hosts_summary().as_deref(),
            Some("2 rolled_back, 1 failed, 1 not_started: web3 failed: health check's last answer: HTTP 503")
        );
        assert_eq!(DeployRecord { hosts: Vec::new(), ..record }.hosts_summary(), None);
    }
}
