//! `pipe status`: the state as a table or a JSON document; reads only, takes no lock.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Serialize;

use super::context::Context;
use crate::cli::StatusArgs;
use crate::engine::discover;
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
    // Each ref's images come from its history, read only for projects the pipeline file gives
    // `images`, or for every ref of the one project asked for (a `.pipe.toml` may declare
    // them): a status of many refs stays a read of `state.toml`.
    let config = if args.project.is_some() { None } else { cx.config().ok() };
    let several = |name: &str| {
        args.project.is_some()
            || config.as_ref().is_some_and(|c| c.projects.get(name).is_some_and(|p| !p.images.is_empty()))
    };
    let mut rows = Vec::new();
    for (name, project) in &st.project {
        if args.project.as_ref().is_some_and(|p| p != name) {
            continue;
        }
        let traffic = report::commit_to_traffic(&path, name);
        let previews = report::preview_urls(&path, name);
        let mut fleets = report::fleets(&path, name);
        for (refname, r) in &project.refs {
            let mut row = RefStatus::new(name, refname, r, now, traffic.get(refname).copied());
            row.preview_url = previews.get(refname).cloned();
            if several(name) {
                row.images = report::images(&path, name, refname, &row.commit);
            }
            row.fleets = fleets.remove(refname).unwrap_or_default();
            rows.push(row);
        }
    }
    let discovery = discovery(cx, &path);
    let forge_of = |project: &str| discovery.iter().find(|d| d.projects.iter().any(|p| p == project));
    if args.json {
        let report = StatusReport { version: 1, refs: rows };
        let doc = StatusDoc { report: &report, discovery: &discovery };
        output::println(serde_json::to_string_pretty(&doc).context("failed to render JSON")?)?;
        return Ok(code::OK);
    }
    if rows.is_empty() {
        cx.out.info(format!("nothing recorded yet in `{}`; run `pipe poll` first", path.display()));
        return Ok(code::OK);
    }
    // The deploy-time column appears once some ref was deployed with a timeline, the
    // discovered one once some project was discovered.
    let traffic = rows.iter().any(|r| r.commit_to_traffic_seconds.is_some());
    // And the preview column once some pull request has a preview running.
    let previews = rows.iter().any(|r| r.preview_url.is_some());
    let discovered = rows.iter().any(|r| forge_of(&r.project).is_some());
    let several = rows.iter().any(|r| !r.images.is_empty());
    // And the hosts column once some ref went to a target that spans hosts.
    let fleets = rows.iter().any(|r| !r.fleets.is_empty());
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
            if discovered {
                row.push(forge_of(&r.project).map_or_else(|| "-".into(), |d| d.forge.clone()));
            }
            if several {
                // Each image and the commit its build is: this one's when built, else earlier.
                let images: Vec<String> = r.images.iter().map(|i| format!("{}={}", i.name, short(&i.from))).collect();
                row.push(if images.is_empty() { "-".into() } else { images.join(" ") });
            }
            if fleets {
                let hosts: Vec<String> = r.fleets.iter().map(|f| format!("{}: {}", f.target, f.summary)).collect();
                row.push(if hosts.is_empty() { "-".into() } else { hosts.join("; ") });
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
    if discovered {
        header.push("DISCOVERED");
    }
    if several {
        header.push("IMAGES");
    }
    if fleets {
        header.push("HOSTS");
    }
    output::print(output::table(&header, &table))?;
    Ok(code::OK)
}

/// `pipe status --json`: the status document, plus what organization discovery knows.
#[derive(Serialize)]
struct StatusDoc<'a> {
    #[serde(flatten)]
    report: &'a StatusReport,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    discovery: &'a [DiscoveryStatus],
}

/// One forge's discovery, as its cache beside the state says.
#[derive(Serialize)]
struct DiscoveryStatus {
    forge: String,
    org: String,
    /// The projects discovery made on its last listing.
    projects: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listed_at: Option<jiff::Timestamp>,
    /// Discovery waits for the forge's rate limit until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    throttled_until: Option<jiff::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Projects no longer discovered, not polled; their state stays until `pipe prune`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    gone: BTreeMap<String, String>,
    /// Listed repositories kept out because a name they would hold is another's, with why.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    kept_out: BTreeMap<String, String>,
}

/// Reads the discovery caches and says on stderr what holds discovery back.
fn discovery(cx: &Context, path: &std::path::Path) -> Vec<DiscoveryStatus> {
    let mut found = Vec::new();
    for (forge, cache) in state::load_all_discovered(path) {
        let cache = match cache {
            Ok(c) => c,
            Err(e) => {
                cx.out.warn(format!("forge `{forge}`: {e:#}"));
                continue;
            }
        };
        let throttled_until = discover::throttled(&cache);
        if let Some(until) = throttled_until {
            cx.out.warn(format!(
                "forge `{forge}`: discovery of `{}` is throttled by the forge's rate limit until {until}; known projects are polled",
                cache.org
            ));
        }
        if let Some(error) = &cache.error {
            cx.out.warn(format!("forge `{forge}`: the last listing of `{}` failed: {error}", cache.org));
        }
        for (name, why) in &cache.gone {
            cx.out.info(format!(
                "forge `{forge}`: `{name}` is no longer discovered ({why}); `pipe prune` removes its state"
            ));
        }
        for (repo, why) in &cache.kept_out {
            cx.out.warn(format!("forge `{forge}`: `{repo}` is kept out: {why}"));
        }
        found.push(DiscoveryStatus {
            forge,
            org: cache.org,
            projects: cache.projects,
            listed_at: cache.listed_at,
            throttled_until,
            error: cache.error,
            gone: cache.gone,
            kept_out: cache.kept_out,
        });
    }
    found
}
