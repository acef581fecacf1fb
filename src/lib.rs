//! `pipe`: a lean CI/CD loop for teams that run their apps as Docker containers on a few hosts.
//!
//! The binary in `main.rs` is a thin shell over [`run`]. Each subcommand lives in
//! [`commands`]; the modules below it each own one concern:
//!
//! - [`cli`]: the command-line definition (clap derive), the source of help, completions and man pages.
//! - [`config`]: `pipeline.toml` types, strict loading and validation; no network, no processes.
//! - [`state`]: the state file: versioned types, the lock, atomic saves.
//! - [`git`]: git2: listing a remote's refs with bounded auth and timeouts.
//! - [`refs`]: pure logic: which refs a project tracks and how they changed since the last poll.
//! - [`nginx`]: the nginx front `pipe generate nginx` writes from the deploy targets' services.
//! - [`server`]: the small HTTP/1.1 server under `pipe serve`.
//! - [`signals`]: SIGTERM/SIGINT stop the running stage cleanly; a second one exits at once.
//! - [`secret`]: secrets read from `*_env` / `*_file`, never printed.
//! - [`notify`]: Slack and generic webhook notifications.
//! - [`output`]: how messages reach a terminal or a journal.
//! - [`error`]: typed error leaves and the documented exit codes.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod docker;
pub mod engine;
pub mod error;
pub mod exec;
pub mod forge;
pub mod git;
pub mod model;
pub mod nginx;
pub mod notify;
pub mod output;
pub mod page;
pub mod refs;
pub mod report;
pub mod secret;
pub mod serve;
pub mod server;
pub mod signals;
pub mod state;
pub mod targets;

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<u8> {
    commands::dispatch(cli)
}
