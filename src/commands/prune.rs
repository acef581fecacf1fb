//! `pipe prune`: removes the run logs and images pipe no longer needs (see `engine::prune`).

use anyhow::Context as _;

use super::Context;
use crate::cli::PruneArgs;
use crate::engine::{self, prune};
use crate::error::code;
use crate::state;

pub(super) fn run(cx: &Context, args: &PruneArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    for name in &args.projects {
        engine::project(&config, name)?;
    }
    let state_path = cx.state_path()?;
    let _lock = if args.dry_run { None } else { Some(state::lock(&state_path, "prune")?) };
    let st = state::load(&state_path)?;
    let report = prune::prune(cx.out, &config, &state_path, &st, &args.projects, args.dry_run)?;
    print(cx, args, &report)?;
    Ok(code::OK)
}

fn print(cx: &Context, args: &PruneArgs, report: &prune::PruneReport) -> anyhow::Result<()> {
    for warning in &report.warnings {
        cx.out.warn(warning);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(report).context("failed to render the report")?);
        return Ok(());
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    for image in &report.removed_images {
        let name = image.tags.first().unwrap_or(&image.id);
        cx.out.info(format!("{}: {verb} image {name} ({})", image.project, image.reason));
    }
    for image in &report.kept_deployed {
        let name = image.tags.first().unwrap_or(&image.id);
        cx.out.detail(format!("{}: kept image {name} ({})", image.project, image.reason));
    }
    if args.dry_run {
        for file in &report.removed_files {
            cx.out.info(format!("would remove {}", file.display()));
        }
    }
    if !cx.out.quiet {
        println!(
            "{verb} {} image(s) and {} history and log file(s); kept {} image(s) that deploy targets run or can roll back to",
            report.removed_images.len(),
            report.removed_files.len(),
            report.kept_deployed.len()
        );
    }
    Ok(())
}
