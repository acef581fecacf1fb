//! The command-line definition. Help text, completions and man pages are all generated from here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A lean CI/CD loop for Docker hosts: poll git, build, test, push, deploy.
///
/// A systemd timer runs `pipe run` every minute; operators run single stages by hand;
/// developers build locally exactly as CI does. Exit codes: 0 success or nothing to do,
/// 1 a stage or remote failed, 2 usage or config error, 3 another run holds the lock,
/// 4 docker or git unavailable, 5 the state file cannot be read or written.
#[derive(Debug, Parser)]
#[command(name = "pipe", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]
    #[arg(short, long, global = true, env = "PIPE_CONFIG", hide_env_values = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd,
    /// /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]
    #[arg(long, global = true, env = "PIPE_STATE", hide_env_values = true, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// Print only errors and warnings
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail (repeat for even more, e.g. every git and docker action)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask each remote for its branch and pull-request heads and record what changed
    Poll(PollArgs),
    /// Check out a commit clean and build its Docker image
    Build(BuildArgs),
    /// Run the project's test command inside the image built for a commit
    Test(TestArgs),
    /// Push a tested image to the registries configured for its branch
    Push(PushArgs),
    /// Run the deploy targets configured for a branch, or roll back to an earlier commit
    Deploy(DeployArgs),
    /// The timer's command: poll, then build, test, push and deploy every new commit
    Run(RunArgs),
    /// Show project, ref, commit, last stage, result and age from the state
    Status(StatusArgs),
    /// Print the saved log of a ref's latest (or an earlier) run
    Logs(LogsArgs),
    /// Validate the pipeline file and report every error at once
    Check(CheckArgs),
    /// Run the authenticated deploy receiver for this host
    Serve(ServeArgs),
    /// Remove run logs and images pipe no longer needs, never one a deploy target runs or can roll back to
    Prune(PruneArgs),
    /// Print or write files derived from pipe: nginx front, systemd units, completions, man pages
    Generate(GenerateArgs),
}

/// Arguments of `pipe poll`.
#[derive(Debug, Args)]
pub struct PollArgs {
    /// Projects to poll [default: every project in the pipeline file]
    #[arg(value_name = "PROJECT")]
    pub projects: Vec<String>,

    /// Print one JSON document on stdout instead of a table
    #[arg(long)]
    pub json: bool,

    /// List the remotes and print what changed, but record nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `pipe build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Project to build (omit with --here)
    #[arg(value_name = "PROJECT", required_unless_present = "here")]
    pub project: Option<String>,

    /// Branch or pull request to build, e.g. `dev`, `feature/x`, `pr-12` [default: the project's default branch]
    #[arg(value_name = "REF")]
    pub reference: Option<String>,

    /// Build this commit instead of the ref's recorded head
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,

    /// Build the checkout in the current directory, uncommitted changes included, as CI would
    #[arg(long)]
    pub here: bool,

    /// Print the exact git and docker actions without running them
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `pipe test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Project to test (omit with --here)
    #[arg(value_name = "PROJECT", required_unless_present = "here")]
    pub project: Option<String>,

    /// Branch or pull request whose image is tested [default: the project's default branch]
    #[arg(value_name = "REF")]
    pub reference: Option<String>,

    /// Test the image built from the checkout in the current directory
    #[arg(long)]
    pub here: bool,

    /// Print the exact docker actions without running them
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `pipe push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Project whose image is pushed
    #[arg(value_name = "PROJECT")]
    pub project: String,

    /// Branch or pull request whose image is pushed [default: the project's default branch]
    #[arg(value_name = "REF")]
    pub reference: Option<String>,

    /// Push even though the image's tests did not pass
    #[arg(long)]
    pub force: bool,

    /// Print the exact docker actions, secrets redacted, without running them
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `pipe deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Project to deploy
    #[arg(value_name = "PROJECT")]
    pub project: String,

    /// Branch or pull request to deploy [default: the project's default branch]
    #[arg(value_name = "REF")]
    pub reference: Option<String>,

    /// Run only the deploy target with this name
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,

    /// Redeploy the image of this earlier commit (rollback)
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,

    /// Print one JSON document on stdout: each target's result (and each host's, for a target
    /// that spans hosts)
    #[arg(long)]
    pub json: bool,

    /// Print the exact docker, command and HTTP actions, secrets redacted, without running them
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `pipe run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Projects to run [default: every project in the pipeline file]
    #[arg(value_name = "PROJECT")]
    pub projects: Vec<String>,

    /// Rebuild commits whose last attempt failed
    #[arg(long)]
    pub retry: bool,

    /// Print one JSON summary on stdout
    #[arg(long)]
    pub json: bool,

    /// Poll and print every action that would run, without running it
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `pipe status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only this project
    #[arg(value_name = "PROJECT")]
    pub project: Option<String>,

    /// Print one JSON document on stdout instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Project of the run
    #[arg(value_name = "PROJECT")]
    pub project: String,

    /// Branch or pull request of the run
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Show run number N instead of the latest
    #[arg(long, value_name = "N")]
    pub run: Option<u64>,

    /// Print one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON document on stdout: the file's summary and what organization discovery
    /// would make of each listed repository
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `pipe serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: the pipeline file's `serve.listen`, else 127.0.0.1:9010]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// Arguments of `pipe prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Projects to prune [default: every project in the pipeline file]
    #[arg(value_name = "PROJECT")]
    pub projects: Vec<String>,

    /// Print every file and the exact `docker image rm` commands, but remove nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Print one JSON document on stdout instead of lines
    #[arg(long)]
    pub json: bool,
}

/// `pipe internal-submodules PROJECT DIR`: not part of the CLI (no help, completion or man
/// page): the build stage runs it to fetch a checkout's submodules in a process its deadline
/// can stop. `main` recognises it by its first argument.
#[derive(Debug, Parser)]
#[command(name = "pipe internal-submodules")]
pub struct InternalSubmodulesArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Project whose checkout it is (its repository, credentials and submodule policy)
    #[arg(value_name = "PROJECT")]
    pub project: String,
    /// The checkout
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// The first argument that selects [`InternalSubmodulesArgs`].
pub const INTERNAL_SUBMODULES: &str = "internal-submodules";

/// Arguments of `pipe generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: GenerateWhat,
}

#[derive(Debug, Subcommand)]
pub enum GenerateWhat {
    /// Print the nginx configuration that routes `<service>.DOMAIN` to each service in the
    /// deploy targets' `ingress` tables (settings from `[ingress]`)
    Nginx,
    /// Write pipe.service, pipe.timer, pipe-serve.service and pipe-prune.service/.timer into a directory
    Systemd {
        /// Directory to write into, e.g. /etc/systemd/system
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Path of the pipe binary the units start
        #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/pipe")]
        bin: PathBuf,
    },
    /// Print the forge webhook to add for a project: its URL, secret and the events to select
    Webhook {
        /// Project whose forge sends the webhook
        #[arg(value_name = "PROJECT")]
        project: String,
        /// Public base URL the forge reaches `pipe serve` at [default: http://`serve.listen`]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Print the completion script for a shell
    Completions {
        /// Shell to generate for
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write man pages (pipe.1 and one per subcommand) into a directory
    Man {
        /// Directory to write into
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
