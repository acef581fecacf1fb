//! `pipe build`: fetch one commit into the project's workspace, check it out clean, and
//! `docker build` it with OCI labels. `--here` builds the working tree a developer stands in.

use super::context::Context;
use crate::cli::BuildArgs;
use crate::engine::{self, Session, build, here, statuses};
use crate::error::code;
use crate::{git, output};

pub(super) fn run(cx: &Context, args: &BuildArgs) -> anyhow::Result<u8> {
    if args.here {
        engine::here_takes_no_project(&args.project)?;
        let built = here::build_here(&cx.out, args.dry_run)?;
        for image in built.iter().flat_map(|b| &b.images) {
            output::println(&image.reference)?;
        }
        return Ok(code::OK);
    }
    let name = args.project.as_deref().expect("clap requires PROJECT without --here");
    let session = Session::open(cx.config()?, cx.state_path()?, name, "build", args.dry_run)?;
    let job = session.job(cx.out, name, args.reference.as_deref());
    if args.dry_run {
        let workdir = engine::workspace_dir(job.config, name);
        output::println(format_args!(
            "git fetch {} +{}:refs/pipe/fetched (no tags) into {}",
            git::redact_url(&job.project.repo),
            job.refname,
            workdir.display()
        ))?;
        let commit = args.commit.as_deref().unwrap_or("refs/pipe/fetched");
        output::println(format_args!("git checkout --force {commit} && git clean -ffdx"))?;
        output::println(format_args!(
            "{} build … (tags, labels and build args resolved after checkout; build network: {})",
            job.docker().program.to_string_lossy(),
            job.project.build_network(job.trusted()).name()
        ))?;
        let default_branch = {
            let st = session.state.lock().unwrap_or_else(|e| e.into_inner());
            engine::default_branch(job.config, name, job.project, &st)
        };
        if let Ok(builder) = build::choose_builder(&job) {
            for line in engine::build_cache::dry_run(&job, builder, &default_branch) {
                output::println(line)?;
            }
        }
        return Ok(code::OK);
    }
    // Like "build now": the ref's current tip on the remote, unless a commit is named.
    let default_branch = {
        let st = session.state.lock().unwrap_or_else(|e| e.into_inner());
        engine::default_branch(job.config, name, job.project, &st)
    };
    let mut files = job.files()?;
    let built = statuses::by_hand(&job, &mut files, "pipe/build", None, |files| {
        build::build(&job, files, &default_branch, args.commit.as_deref())
    });
    let settled = job.settle(&session.state, files.take_unsettled(), None);
    engine::conclude(built, settled)?;
    Ok(code::OK)
}
