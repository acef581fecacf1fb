//! `pipe deploy`: run the deploy targets configured for a ref's branch; with `--commit`, deploy
//! an earlier image (rollback by hand).

use super::context::Context;
use crate::cli::DeployArgs;
use crate::engine::{self, Session, deploy, statuses};
use crate::error::code;

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
    engine::conclude(deployed, settled)?;
    Ok(code::OK)
}
