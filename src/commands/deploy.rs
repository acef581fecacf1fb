//! `pipe deploy`: run the deploy targets configured for a ref's branch; with `--commit`, deploy
//! an earlier image (rollback by hand).

use anyhow::Context as _;
use serde::Serialize;

use super::context::Context;
use crate::cli::DeployArgs;
use crate::engine::{self, Session, deploy, statuses};
use crate::error::code;
use crate::{output, state};

pub(super) fn run(cx: &Context, args: &DeployArgs) -> anyhow::Result<u8> {
    let session = Session::open(cx.config()?, cx.state_path()?, &args.project, "deploy", args.dry_run)?;
    let job = session.job(cx.out, &args.project, args.reference.as_deref());
    let mut files = job.files()?;
    let (only, commit) = (args.target.as_deref(), args.commit.as_deref());
    let deployed = if args.dry_run {
        deploy::deploy(&job, &mut files, only, commit, true)
    } else {
        // The commit the statuses name: the image deployed, a rollback's too when it is known by
        // its build here (a commit known only from the target's deploy history gets none).
        let full = engine::latest_built(&files.history, commit).map(|r| r.commit.clone());
        statuses::deploy_by_hand(&job, &mut files, only, full.as_deref(), |files| {
            deploy::deploy(&job, files, only, commit, false)
        })
    };
    let settled = job.settle(&session.state, files.take_unsettled(), None);
    if args.json && !args.dry_run {
        let targets: Vec<TargetResult> = deploy::targets(&job, only)
            .iter()
            .filter_map(|t| last_deploy(&session.state_path, &args.project, t.display_name()))
            .collect();
        let doc = serde_json::json!({
            "version": 1,
            "project": args.project,
            "ref": job.refname,
            "result": if deployed.is_ok() { "succeeded" } else { "failed" },
            "targets": targets,
        });
        output::println(serde_json::to_string_pretty(&doc).context("failed to render JSON")?)?;
    }
    engine::conclude(deployed, settled)?;
    Ok(code::OK)
}

/// One target in `pipe deploy --json`: its newest deploy record.
#[derive(Serialize)]
struct TargetResult {
    target: String,
    #[serde(flatten)]
    record: state::DeployRecord,
}

/// The target's newest deploy record, passing over the redeploy of an automatic rollback (the
/// failed record before it says what happened, host by host).
fn last_deploy(state_path: &std::path::Path, project: &str, target: &str) -> Option<TargetResult> {
    let history = state::load_deploys(&state::deploys_path(state_path, project, target)).ok()?;
    let mut records = history.deploys.into_iter().rev();
    let newest = records.next()?;
    let record = if newest.rollback && newest.timeline.is_none() { records.next().unwrap_or(newest) } else { newest };
    Some(TargetResult { target: target.to_string(), record })
}
