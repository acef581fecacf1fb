//! `pipe prune`: removes the run logs and images pipe no longer needs (see `engine::prune`).

use anyhow::Context as _;
use serde::Serialize;

use super::context::Context;
use crate::cli::PruneArgs;
use crate::engine::{self, discover, prune};
use crate::error::code;
use crate::state;

pub(super) fn run(cx: &Context, args: &PruneArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    for name in &args.projects {
        engine::project(&config, name)?;
    }
    let state_path = cx.state_path()?;
    let _lock = if args.dry_run { None } else { Some(state::lock(&state_path, "prune")?) };
    let mut st = state::load(&state_path)?;
    let mut report = prune::prune(cx.out, &config, &state_path, &st, &args.projects, args.dry_run)?;
    // Projects organization discovery no longer makes go only when no project was named.
    let (forgotten, caches) = if args.projects.is_empty() {
        discover::prune_gone(&config, &state_path, &mut st, args.dry_run)?
    } else {
        (Vec::new(), Vec::new())
    };
    for f in &forgotten {
        if let Err(err) = prune::forgotten_images(cx.out, &f.project, args.dry_run, &mut report) {
            report.warnings.push(format!("images of `{}` were not removed: {err:#}", f.project));
        }
    }
    if !forgotten.is_empty() && !args.dry_run {
        state::save(&state_path, &st)?;
    }
    for (path, cache) in &caches {
        state::save_discovered(path, cache)?;
    }
    print(cx, args, &report, &forgotten)?;
    Ok(code::OK)
}

/// `pipe prune --json`: the prune report, plus the no-longer-discovered projects removed.
#[derive(Serialize)]
struct PruneDoc<'a> {
    #[serde(flatten)]
    report: &'a prune::PruneReport,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    forgotten_projects: &'a [discover::Forgotten],
}

fn print(
    cx: &Context,
    args: &PruneArgs,
    report: &prune::PruneReport,
    forgotten: &[discover::Forgotten],
) -> anyhow::Result<()> {
    for warning in &report.warnings {
        cx.out.warn(warning);
    }
    if args.json {
        let doc = PruneDoc { report, forgotten_projects: forgotten };
        crate::output::println(serde_json::to_string_pretty(&doc).context("failed to render the report")?)?;
        return Ok(());
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    for f in forgotten {
        let files: Vec<String> = f.removed.iter().map(|p| format!("`{}`", p.display())).collect();
        cx.out.info(format!(
            "{}: {verb} the state of this project, no longer discovered on forge `{}` ({}): {} ref(s){}{}",
            f.project,
            f.forge,
            f.why,
            f.refs,
            if files.is_empty() { "" } else { ", " },
            files.join(", ")
        ));
    }
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
        crate::output::println(format_args!(
            "{verb} {} image(s) and {} history and log file(s); kept {} image(s) that deploy targets run or can roll back to",
            report.removed_images.len(),
            report.removed_files.len(),
            report.kept_deployed.len()
        ))?;
    }
    Ok(())
}
