//! What every command gets: the global flags, the output they imply, and the pipeline file
//! (with what organization discovery found) and the state file they name.

use crate::cli::GlobalArgs;
use crate::config::{self, Config};
use crate::output::Output;

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
