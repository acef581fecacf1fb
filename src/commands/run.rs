//! `pipe run`: the timer's command. Poll, then for each ref with a new head build → test →
//! push → deploy its newest commit (the tick, in `engine::tick`); notify; print a summary.

use anyhow::Context as _;
use serde::Serialize;

use super::context::Context;
use crate::cli::RunArgs;
use crate::engine::poll::PollError;
use crate::engine::tick::{self, RefResult};
use crate::error::code;
use crate::model::Verdict;
use crate::refs::{self, Change};
use crate::{docker, output};

#[derive(Debug, Serialize)]
struct RunReport<'a> {
    version: u32,
    changes: &'a [Change],
    errors: &'a [PollError],
    results: &'a [RefResult],
    /// Refs with work left for a later run (beyond `pipe.max_builds`).
    deferred: usize,
}

pub(super) fn run(cx: &Context, args: &RunArgs) -> anyhow::Result<u8> {
    let mut metrics = crate::metrics::tick::Recorder::start();
    let result = run_tick(cx, args, &mut metrics);
    if !args.dry_run {
        // A tick refused before it read the pipeline file (the lock) still counts.
        if !metrics.configured()
            && let (Ok(config), Ok(state_path)) = (cx.config(), cx.state_path())
        {
            metrics.configure(&config, &state_path);
        }
        metrics.finish(cx.out, &result);
    }
    result
}

fn run_tick(cx: &Context, args: &RunArgs, metrics: &mut crate::metrics::tick::Recorder) -> anyhow::Result<u8> {
    let super::context::Discovered { config, lock, .. } = cx.discovered_config("run", args.dry_run)?;
    let projects = config.select(&args.projects)?;
    let state_path = cx.state_path()?;
    metrics.configure(&config, &state_path);
    let tick = tick::tick(cx.out, &config, &state_path, &projects, args.retry, args.dry_run, lock)?;
    metrics.observe(&config, &state_path, &tick);
    if args.dry_run {
        for w in &tick.work {
            output::println(format_args!(
                "{} {}: build {} then test, push, deploy as configured",
                w.project,
                refs::display(&w.refname),
                output::short(&w.head)
            ))?;
        }
        return Ok(code::OK);
    }
    let (report, results, deferred) = (&tick.poll, &tick.results, tick.deferred);
    if args.json {
        let doc = RunReport { version: 1, changes: &report.changes, errors: &report.errors, results, deferred };
        output::println(serde_json::to_string_pretty(&doc).context("failed to render JSON")?)?;
    } else {
        print_summary(cx, results, deferred)?;
    }
    let failed = !report.errors.is_empty()
        || results.iter().any(|r| !matches!(r.result, Verdict::Passed | Verdict::Unavailable));
    let unavailable = results.iter().any(|r| r.result == Verdict::Unavailable);
    Ok(if results.iter().any(|r| r.state_error) {
        code::STATE
    } else if failed {
        code::FAILED
    } else if unavailable {
        code::UNAVAILABLE
    } else {
        code::OK
    })
}

fn print_summary(cx: &Context, results: &[RefResult], deferred: usize) -> anyhow::Result<()> {
    if results.is_empty() {
        cx.out.info(if deferred > 0 {
            format!("nothing run; {deferred} ref(s) deferred")
        } else {
            "nothing to do".into()
        });
        return Ok(());
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.project.clone(),
                refs::display(&r.refname).to_string(),
                docker::commit_tag(&r.commit).to_string(),
                r.stage.to_string(),
                r.result.to_string(),
                format!("{:.1}s", r.seconds),
            ]
        })
        .collect();
    output::print(output::table(&["PROJECT", "REF", "COMMIT", "STAGE", "RESULT", "TIME"], &rows))?;
    if deferred > 0 {
        cx.out.info(format!("{deferred} more ref(s) wait for the next run (pipe.max_builds)"));
    }
    Ok(())
}
