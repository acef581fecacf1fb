//! `pipe status`: the state as a table or a JSON document; reads only, takes no lock.

use anyhow::Context as _;

use super::Context;
use crate::cli::StatusArgs;
use crate::error::{Usage, code};
use crate::output::short;
use crate::refs;
use crate::report::{self, RefStatus, StatusReport};
use crate::{output, state};

pub(super) fn run(cx: &Context, args: &StatusArgs) -> anyhow::Result<u8> {
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
        let traffic = report::commit_to_traffic(&path, name);
        let previews = report::preview_urls(&path, name);
        for (refname, r) in &project.refs {
            let mut row = RefStatus::new(name, refname, r, now, traffic.get(refname).copied());
            row.preview_url = previews.get(refname).cloned();
            rows.push(row);
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
    // And the preview column once some pull request has a preview running.
    let previews = rows.iter().any(|r| r.preview_url.is_some());
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
            if previews {
                row.push(r.preview_url.clone().unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    let mut header = vec!["PROJECT", "REF", "COMMIT", "STAGE", "RESULT", "AGE"];
    if traffic {
        header.push("COMMIT TO TRAFFIC");
    }
    if previews {
        header.push("PREVIEW");
    }
    print!("{}", output::table(&header, &table));
    Ok(code::OK)
}
