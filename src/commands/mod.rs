//! One module per subcommand. Each takes its parsed arguments and returns an exit code.

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::{self, Config};
use crate::output::Output;

mod build;
mod check;
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

/// What every command gets: the global flags and the output settings they imply.
pub(crate) struct Context {
    pub global: GlobalArgs,
    pub out: Output,
}

impl Context {
    /// Finds and loads the pipeline file named by `-c`/`PIPE_CONFIG` or the defaults.
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let path = config::locate(self.global.config.as_deref())?;
        config::load(&path)
    }

    /// The state file named by `--state`/`PIPE_STATE` or the default location.
    pub(crate) fn state_path(&self) -> anyhow::Result<std::path::PathBuf> {
        crate::state::locate(self.global.state.as_deref())
    }
}

/// Runs `pipe internal-submodules` (not a command of the CLI).
pub(crate) fn internal_submodules(args: crate::cli::InternalSubmodulesArgs) -> anyhow::Result<u8> {
    let out = Output::new(args.global.quiet, args.global.verbose);
    crate::signals::install()?;
    let cx = Context { global: args.global.clone(), out };
    internal_submodules::run(&cx, &args)
}

/// Runs the parsed command.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<u8> {
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
