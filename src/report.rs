//! The versioned JSON documents `pipe status --json` and `pipe logs --json` print, shared with
//! the status page of `pipe serve` so both speak one schema. Reads state files only.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::model::DeployResult;
use crate::refs::{self, RefKind};
use crate::state::{self, DeployRecord, HostRecord, RefState, Run, StageRun};

/// `pipe status --json`, version 1.
#[derive(Debug, Serialize)]
pub(crate) struct StatusReport {
    pub version: u32,
    pub refs: Vec<RefStatus>,
}

/// One ref in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RefStatus {
    pub project: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub kind: RefKind,
    pub head: String,
    /// The commit of the last stage, or the head when no stage ran yet.
    pub commit: String,
    pub stage: String,
    pub result: String,
    /// When the last stage ended, or when the head was first seen.
    pub at: jiff::Timestamp,
    pub age_seconds: i64,
    /// The last deploy of this ref: seconds from its commit being detected to taking traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_to_traffic_seconds: Option<f64>,
    /// Where the pull request's preview answers, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_url: Option<String>,
    /// A project of several images: each image of the commit's release.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageStatus>,
    /// Per target that spans hosts: where each host ended in this ref's last deploy there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fleets: Vec<FleetStatus>,
}

/// One image of a release of several: built by this commit's run, or the build of `from`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ImageStatus {
    pub name: String,
    pub image: String,
    pub built: bool,
    /// The commit whose build this image is.
    pub from: String,
    /// Why it was built or retagged.
    pub why: String,
}

/// The images of `commit`'s newest run on a ref of a project of several images (read from the
/// ref's history; empty for a project of one image or a commit never built).
pub(crate) fn images(state_path: &Path, project: &str, refname: &str, commit: &str) -> Vec<ImageStatus> {
    let Ok(history) = state::load_history(&state::history_path(state_path, project, refname), refname) else {
        return Vec::new();
    };
    let Some(run) = history.runs.iter().rev().find(|r| r.commit == commit) else { return Vec::new() };
    run.images
        .iter()
        .map(|i| ImageStatus {
            name: i.name.clone(),
            image: i.image.clone(),
            built: i.built,
            from: i.from.clone(),
            why: i.why.clone(),
        })
        .collect()
}

/// One fleet target's last deploy of a ref, host by host.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FleetStatus {
    pub target: String,
    pub commit: String,
    pub result: DeployResult,
    pub hosts: Vec<HostRecord>,
    /// In a few words, for tables: counts, then each host that did not take the release and why.
    pub summary: String,
}

impl RefStatus {
    /// A ref's row; `traffic` from [`commit_to_traffic`] of its project.
    pub(crate) fn new(
        project: &str,
        refname: &str,
        r: &RefState,
        now: jiff::Timestamp,
        traffic: Option<f64>,
    ) -> RefStatus {
        let (stage, commit, at) = match &r.last {
            Some(last) => (last.stage.to_string(), last.commit.clone(), last.at),
            None => ("poll".into(), r.head.clone(), r.since),
        };
        let result = last_result(r).to_string();
        RefStatus {
            project: project.to_string(),
            refname: refname.to_string(),
            kind: refs::classify(refname).unwrap_or(RefKind::Branch),
            head: r.head.clone(),
            commit,
            stage,
            result,
            at,
            age_seconds: now.as_second() - at.as_second(),
            commit_to_traffic_seconds: traffic,
            preview_url: None,
            images: Vec::new(),
            fleets: Vec::new(),
        }
    }
}

/// A ref's result word: its last stage's outcome, else `pending` or `seen`.
pub(crate) fn last_result(r: &RefState) -> &'static str {
    match &r.last {
        Some(last) => last.result.as_str(),
        None if r.pending => "pending",
        None => "seen",
    }
}

/// Per ref of one project: the commit-to-traffic time of its newest successful deploy to any
/// of the project's targets. Each deploy history is read once per project, not once per ref.
pub(crate) fn commit_to_traffic(state_path: &Path, project: &str) -> BTreeMap<String, f64> {
    let [_, _, dir] = state::project_dirs(state_path, project);
    let histories: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| state::load_deploys(&e.path()).ok())
        .collect();
    traffic_times(histories.iter().flat_map(|h| &h.deploys))
}

/// [`commit_to_traffic`] over deploy records already read.
pub(crate) fn traffic_times<'a>(deploys: impl Iterator<Item = &'a DeployRecord>) -> BTreeMap<String, f64> {
    let mut newest: BTreeMap<String, (jiff::Timestamp, f64)> = BTreeMap::new();
    for d in deploys.filter(|d| d.result == DeployResult::Succeeded) {
        let Some(secs) = d.timeline.as_ref().and_then(|t| t.commit_to_traffic()) else { continue };
        if newest.get(&d.refname).is_none_or(|(at, _)| d.at > *at) {
            newest.insert(d.refname.clone(), (d.at, secs));
        }
    }
    newest.into_iter().map(|(refname, (_, secs))| (refname, secs)).collect()
}

/// Per ref of one project: its last deploy to each target that spans hosts. An automatic
/// rollback's record (no timeline, after the failed one) is passed over: the failure is what
/// the hosts' results explain.
pub(crate) fn fleets(state_path: &Path, project: &str) -> BTreeMap<String, Vec<FleetStatus>> {
    let [_, _, dir] = state::project_dirs(state_path, project);
    let mut files: Vec<std::path::PathBuf> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut by_ref: BTreeMap<String, Vec<FleetStatus>> = BTreeMap::new();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
        let Ok(history) = state::load_deploys(path) else { continue };
        let target = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        for d in history.deploys.iter().rev().filter(|d| !d.hosts.is_empty()) {
            if (d.rollback && d.timeline.is_none()) || !seen.insert(d.refname.clone()) {
                continue;
            }
            by_ref.entry(d.refname.clone()).or_default().push(FleetStatus {
                target: target.clone(),
                commit: d.commit.clone(),
                result: d.result,
                hosts: d.hosts.clone(),
                summary: d.hosts_summary().unwrap_or_default(),
            });
        }
    }
    by_ref
}

/// Per pull request of one project: where its preview answers (its first preview target's).
pub(crate) fn preview_urls(state_path: &Path, project: &str) -> BTreeMap<String, String> {
    let mut urls = BTreeMap::new();
    let previews = state::load_previews(&state::previews_path(state_path, project)).unwrap_or_default();
    for p in previews.previews.into_iter().filter(|p| !p.commit.is_empty()) {
        urls.entry(p.refname).or_insert(p.url);
    }
    urls
}

/// `pipe logs --json`, version 1: one run of a ref with its log text.
#[derive(Serialize)]
pub(crate) struct LogsReport<'a> {
    pub version: u32,
    pub project: &'a str,
    #[serde(rename = "ref")]
    pub refname: &'a str,
    pub run: u64,
    pub commit: &'a str,
    pub log: String,
    pub image: String,
    pub tags: &'a [String],
    pub image_id: Option<&'a str>,
    pub digests: &'a BTreeMap<String, String>,
    pub stages: &'a [StageRun],
    pub text: String,
}

impl<'a> LogsReport<'a> {
    pub(crate) fn new(project: &'a str, refname: &'a str, run: &'a Run, text: String) -> LogsReport<'a> {
        LogsReport {
            version: 1,
            project,
            refname,
            run: run.number,
            commit: &run.commit,
            log: run.log.display().to_string(),
            image: run.image.clone(),
            tags: &run.tags,
            image_id: run.image_id.as_deref(),
            digests: &run.digests,
            stages: &run.stages,
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Timeline;

    #[test]
    fn traffic_times_are_those_of_each_refs_newest_succeeded_deploy() {
        let at = |s: i64| jiff::Timestamp::from_second(1_790_000_000 + s).unwrap();
        let deploy = |refname: &str, when: i64, took: i64, result| DeployRecord {
            commit: "c".repeat(40),
            image: "app".into(),
            tag: "t".into(),
            refname: refname.into(),
            at: at(when),
            result,
            timeline: Some(Timeline { detected: Some(at(when - took)), traffic: Some(at(when)), ..Default::default() }),
            rollback: false,
            images: Default::default(),
            hosts: Vec::new(),
        };
        let records = [
            deploy("refs/heads/main", 100, 30, DeployResult::Succeeded),
            deploy("refs/heads/main", 300, 12, DeployResult::Succeeded),
            deploy("refs/heads/main", 400, 99, DeployResult::Failed),
            deploy("refs/heads/dev", 200, 7, DeployResult::RolledBack),
            deploy("refs/heads/dev", 50, 5, DeployResult::Succeeded),
        ];
        let times = traffic_times(records.iter());
        assert_eq!(times.get("refs/heads/main"), Some(&12.0), "the newest success, not the failure after it");
        assert_eq!(times.get("refs/heads/dev"), Some(&5.0));
        assert_eq!(times.len(), 2);
    }
}
