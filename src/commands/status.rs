//! `pipe status`: the state as a table or a JSON document; reads only, takes no lock.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Serialize;

use super::Context;
use crate::cli::StatusArgs;
use crate::error::{Usage, code};
use crate::model::DeployResult;
use crate::output::short;
use crate::refs::{self, RefKind};
use crate::{output, state};

#[derive(Debug, Serialize)]
struct StatusReport {
    version: u32,
    refs: Vec<RefStatus>,
}

#[derive(Debug, Serialize)]
struct RefStatus {
    project: String,
    #[serde(rename = "ref")]
    refname: String,
    kind: RefKind,
    head: String,
    /// The commit of the last stage, or the head when no stage ran yet.
    commit: String,
    stage: String,
    result: String,
    /// When the last stage ended, or when the head was first seen.
    at: jiff::Timestamp,
    age_seconds: i64,
    /// The last deploy of this ref: seconds from its commit being detected to taking traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_to_traffic_seconds: Option<f64>,
}

/// Per ref of one project: the commit-to-traffic time of its newest successful deploy to any
/// of the project's targets. Each deploy history is read once per project, not once per ref.
fn commit_to_traffic(state_path: &std::path::Path, project: &str) -> BTreeMap<String, f64> {
    let mut newest: BTreeMap<String, (jiff::Timestamp, f64)> = BTreeMap::new();
    let [_, _, dir] = state::project_dirs(state_path, project);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(history) = state::load_deploys(&entry.path()) else { continue };
        for d in history.deploys.iter().filter(|d| d.result == DeployResult::Succeeded) {
            let Some(secs) = d.timeline.as_ref().and_then(|t| t.commit_to_traffic()) else { continue };
            if newest.get(&d.refname).is_none_or(|(at, _)| d.at > *at) {
                newest.insert(d.refname.clone(), (d.at, secs));
            }
        }
    }
    newest.into_iter().map(|(refname, (_, secs))| (refname, secs)).collect()
}

pub fn run(cx: &Context, args: &StatusArgs) -> anyhow::Result<u8> {
    let path = cx.state_path()?;
    let st = state::load(&path)?;
    if let Some(project) = &args.project
        && !st.project.contains_key(project)
    {
        return Err(Usage(format!("no project `{project}` in state file `{}`", path.display())).into());
    }
    let now = crate::clock::now();
    let mut rows = Vec::new();
    for (name, project) in &st.project {
        if args.project.as_ref().is_some_and(|p| p != name) {
            continue;
        }
        let traffic = commit_to_traffic(&path, name);
        for (refname, r) in &project.refs {
            let (stage, result, commit, at) = match &r.last {
                Some(last) => (last.stage.to_string(), last.result.to_string(), last.commit.clone(), last.at),
                None => ("poll".into(), if r.pending { "pending" } else { "seen" }.into(), r.head.clone(), r.since),
            };
            rows.push(RefStatus {
                project: name.clone(),
                refname: refname.clone(),
                kind: refs::classify(refname).unwrap_or(RefKind::Branch),
                head: r.head.clone(),
                commit,
                stage,
                result,
                at,
                age_seconds: now.as_second() - at.as_second(),
                commit_to_traffic_seconds: traffic.get(refname).copied(),
            });
        }
    }
    if args.json {
        let report = StatusReport { version: 1, refs: rows };
        println!("{}", serde_json::to_string_pretty(&report).context("failed to render JSON")?);
        return Ok(code::OK);
    }
    if rows.is_empty() {
        cx.out.info(format!("nothing recorded yet in `{}`; run `pipe poll` first", path.display()));
        return Ok(code::OK);
    }
    // The deploy-time column appears once some ref was deployed with a timeline.
    let traffic = rows.iter().any(|r| r.commit_to_traffic_seconds.is_some());
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.project.clone(),
                refs::display(&r.refname).to_string(),
                short(&r.commit).to_string(),
                r.stage.clone(),
                r.result.clone(),
                output::age(r.age_seconds),
            ];
            if traffic {
                row.push(r.commit_to_traffic_seconds.map_or_else(|| "-".into(), |s| format!("{s:.1}s")));
            }
            row
        })
        .collect();
    let mut header = vec!["PROJECT", "REF", "COMMIT", "STAGE", "RESULT", "AGE"];
    if traffic {
        header.push("COMMIT TO TRAFFIC");
    }
    print!("{}", output::table(&header, &table));
    Ok(code::OK)
}
