//! `pipe deploy`: run the deploy targets configured for a ref's branch; with `--commit`, deploy
//! an earlier image (rollback by hand).

use super::Context;
use crate::cli::DeployArgs;
use crate::engine::{self, Session, deploy};
use crate::error::code;

pub(super) fn run(cx: &Context, args: &DeployArgs) -> anyhow::Result<u8> {
    let session = Session::open(cx.config()?, cx.state_path()?, &args.project, "deploy", args.dry_run)?;
    let job = session.job(cx.out, &args.project, args.reference.as_deref());
    let mut files = job.files()?;
    let deployed = deploy::deploy(&job, &mut files, args.target.as_deref(), args.commit.as_deref(), args.dry_run);
    let settled = job.settle(&session.state, files.take_unsettled(), None);
    engine::conclude(deployed, settled)?;
    Ok(code::OK)
}
