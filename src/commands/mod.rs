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
    /// Finds and loads the pipeline file named by `-c`/`PIPE_CONFIG` or the defaults, with
    /// the projects organization discovery found on its last listing (no network).
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let path = config::locate(self.global.config.as_deref())?;
        let mut config = config::load(&path)?;
        if config.forges.values().any(|f| f.discover.is_some()) {
            crate::engine::discover::apply(&self.out, &mut config, &self.state_path()?);
        }
        Ok(config)
    }

    /// The pipeline file with organization discovery refreshed: every discovering forge is
    /// listed (conditionally) and what moved is probed; the caches are saved unless `dry_run`.
    /// Takes the state lock when there is discovery to do, unless a dry run, and hands it back.
    pub(crate) fn discovered_config(&self, command: &str, dry_run: bool) -> anyhow::Result<Discovered> {
        let path = config::locate(self.global.config.as_deref())?;
        let mut config = config::load(&path)?;
        if !config.forges.values().any(|f| f.discover.is_some()) {
            return Ok(Discovered { config, lock: None, reports: Vec::new() });
        }
        let state_path = self.state_path()?;
        let lock = if dry_run { None } else { Some(crate::state::lock(&state_path, command)?) };
        let reports = crate::engine::discover::refresh(&self.out, &mut config, &state_path, !dry_run);
        Ok(Discovered { config, lock, reports })
    }

    /// The state file named by `--state`/`PIPE_STATE` or the default location.
    pub(crate) fn state_path(&self) -> anyhow::Result<std::path::PathBuf> {
        crate::state::locate(self.global.state.as_deref())
    }
}

/// The pipeline file after a discovery refresh, the lock it was done under, and what each
/// discovering forge's listing made.
pub(crate) struct Discovered {
    pub config: Config,
    pub lock: Option<crate::state::StateLock>,
    pub reports: Vec<crate::engine::discover::ForgeReport>,
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
