//! `pipe internal-submodules` (not part of the CLI): fetch a build checkout's submodules by the project's
//! policy. The build stage runs it as a child process so that its deadline, through exec.rs's
//! process group, bounds what libgit2 bounds only by socket timeouts.

use super::context::Context;
use crate::cli::InternalSubmodulesArgs;
use crate::engine;
use crate::error::code;
use crate::git;

pub(super) fn run(cx: &Context, args: &InternalSubmodulesArgs) -> anyhow::Result<u8> {
    let config = cx.config()?;
    let project = engine::project(&config, &args.project)?;
    let auth = engine::git_auth(&args.project, project)?;
    git::update_submodules(&project.repo, &auth, &args.dir, &engine::build::submodule_policy(project))?;
    Ok(code::OK)
}
