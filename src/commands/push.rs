//! `pipe push`: push the tested image of a ref to the registries its branch deploys through.

use super::context::Context;
use crate::cli::PushArgs;
use crate::engine::{self, Session, push, statuses};
use crate::error::code;

pub(super) fn run(cx: &Context, args: &PushArgs) -> anyhow::Result<u8> {
    let session = Session::open(cx.config()?, cx.state_path()?, &args.project, "push", args.dry_run)?;
    let job = session.job(cx.out, &args.project, args.reference.as_deref());
    let mut files = job.files()?;
    let pushed = if args.dry_run {
        push::push(&job, &mut files, args.force, true)
    } else {
        let commit = engine::latest_built(&files.history, None).map(|r| r.commit.clone());
        statuses::by_hand(&job, &mut files, "pipe/push", commit.as_deref(), |files| {
            push::push(&job, files, args.force, false)
        })
    };
    let settled = job.settle(&session.state, files.take_unsettled(), None);
    engine::conclude(pushed, settled)?;
    Ok(code::OK)
}
