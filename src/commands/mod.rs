//! One module per subcommand. Each takes its parsed arguments and returns an exit code.

use crate::cli::{Cli, Command};
use crate::output::Output;

mod build;
mod check;
mod context;
mod deploy;
mod generate;
mod internal_submodules;
mod logs;
mod poll;
mod prune;
mod push;
mod run;
mod serve;
mod status;
mod test;

use context::Context;

/// Runs `pipe internal-submodules` (not a command of the CLI).
pub(crate) fn internal_submodules(args: crate::cli::InternalSubmodulesArgs) -> anyhow::Result<u8> {
    let out = Output::new(args.global.quiet, args.global.verbose);
    crate::signals::install()?;
    let cx = Context { global: args.global.clone(), out };
    internal_submodules::run(&cx, &args)
}

/// Runs the parsed command.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    if !matches!(cli.command, Command::Serve(_)) {
        one_malloc_arena();
    }
    let out = Output::new(cli.global.quiet, cli.global.verbose);
    crate::signals::install()?;
    let cx = Context { global: cli.global, out };
    match cli.command {
        Command::Poll(args) => poll::run(&cx, &args),
        Command::Status(args) => status::run(&cx, &args),
        Command::Check(args) => check::run(&cx, &args),
        Command::Generate(args) => generate::run(&cx, &args),
        Command::Build(args) => build::run(&cx, &args),
        Command::Test(args) => test::run(&cx, &args),
        Command::Push(args) => push::run(&cx, &args),
        Command::Deploy(args) => deploy::run(&cx, &args),
        Command::Run(args) => run::run(&cx, &args),
        Command::Logs(args) => logs::run(&cx, &args),
        Command::Serve(args) => serve::run(&cx, &args),
        Command::Prune(args) => prune::run(&cx, &args),
    }
}

/// One malloc arena for the short-lived commands. glibc gives each new thread that allocates an
/// arena of its own (64 MiB reserved, its first pages faulted in): a poll's workers and a
/// tick's projects paid that per thread, about a sixth of a no-op poll's CPU over twenty
/// `git://` repositories. Their threads allocate little and rarely at once, so one shared arena
/// costs no contention worth measuring. `pipe serve`, long-lived and concurrent, keeps glibc's
/// default.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes glibc's allocator; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
