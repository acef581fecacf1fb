//! `pipe logs`: print the saved log of a ref's latest (or `--run N`) run.

use anyhow::Context as _;

use super::context::Context;
use crate::cli::LogsArgs;
use crate::engine;
use crate::error::{Usage, code};
use crate::report::LogsReport;
use crate::state;
use crate::{output, refs};

pub(super) fn run(cx: &Context, args: &LogsArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    let project = engine::project(&config, &args.project)?;
    let state_path = cx.state_path()?;
    let st = state::load(&state_path)?;
    let refname = engine::resolve_ref(&config, &args.project, project, &st, Some(&args.reference));
    let files = engine::RefFiles::load(&state_path, &args.project, &refname)?;
    let run = match args.run {
        Some(n) => files.history.runs.iter().find(|r| r.number == n),
        None => files.history.runs.last(),
    };
    let Some(run) = run else {
        let which = args.run.map_or("any run".to_string(), |n| format!("run {n}"));
        return Err(Usage(format!(
            "no log of {which} for {} {} (kept runs: {})",
            args.project,
            refs::display(&refname),
            files.history.runs.iter().map(|r| r.number.to_string()).collect::<Vec<_>>().join(", ")
        ))
        .into());
    };
    let bytes = std::fs::read(&run.log).with_context(|| format!("failed to read log file `{}`", run.log.display()))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if args.json {
        let report = LogsReport::new(&args.project, &refname, run, text);
        output::println(serde_json::to_string_pretty(&report).context("failed to render JSON")?)?;
    } else {
        output::print(output::printable(&text))?;
    }
    Ok(code::OK)
}
