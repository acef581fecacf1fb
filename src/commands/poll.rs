//! `pipe poll`: list every remote's heads in parallel, compare with the state, record changes.

use anyhow::Context as _;

use super::context::Context;
use crate::cli::PollArgs;
use crate::engine::poll::{PollReport, poll};
use crate::error::code;
use crate::refs::{self, ChangeKind};
use crate::{output, state};

pub(super) fn run(cx: &Context, args: &PollArgs) -> anyhow::Result<u8> {
    let super::context::Discovered { config, lock, .. } = cx.discovered_config("poll", args.dry_run)?;
    let projects = config.select(&args.projects)?;
    let state_path = cx.state_path()?;
    let _lock = match lock {
        None if !args.dry_run => Some(state::lock(&state_path, "poll")?),
        lock => lock,
    };
    let mut st = state::load(&state_path)?;

    let report = poll(&cx.out, &config, &projects, &mut st);
    if !args.dry_run && report.state_changed {
        state::save(&state_path, &st)?;
    }
    let report = report.report;
    if args.json {
        output::println(serde_json::to_string_pretty(&report).context("failed to render JSON")?)?;
    } else {
        print_table(cx, &report)?;
    }
    Ok(if report.errors.is_empty() { code::OK } else { code::FAILED })
}

fn print_table(cx: &Context, report: &PollReport) -> anyhow::Result<()> {
    if report.changes.is_empty() {
        if report.errors.is_empty() {
            cx.out.info("no changes");
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .changes
        .iter()
        .map(|c| {
            let commits = match (c.change, &c.from, &c.to) {
                (ChangeKind::Updated, Some(from), Some(to)) => {
                    format!("{} -> {}", output::short(from), output::short(to))
                }
                (_, _, Some(to)) => output::short(to).to_string(),
                (_, Some(from), None) => format!("(was {})", output::short(from)),
                _ => String::new(),
            };
            let change = match c.change {
                ChangeKind::New => "new",
                ChangeKind::Updated => "updated",
                ChangeKind::Deleted => "deleted",
            };
            vec![c.project.clone(), refs::display(&c.refname).to_string(), change.to_string(), commits]
        })
        .collect();
    output::print(output::table(&["PROJECT", "REF", "CHANGE", "COMMIT"], &rows))
}
