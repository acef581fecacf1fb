//! `pipe`: a lean CI/CD loop for teams that run their apps as Docker containers on a few hosts.
//!
//! The binary in `main.rs` is a thin shell over [`run`]. Commands (`commands`) parse their
//! arguments, call the engine (`engine`) and print; ARCHITECTURE.md maps every room. Items are
//! `pub(crate)` by default (`unreachable_pub` keeps it so). Public are only what `main.rs` needs
//! ([`cli`], [`error`], [`run`]) and the state files' format ([`state`], [`model`]), so tests
//! and tools write fixtures with pipe's own writer instead of a copy of its format.

#![warn(unreachable_pub)]

pub mod cli;
pub(crate) mod clock;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod docker;
pub(crate) mod engine;
pub mod error;
pub(crate) mod exec;
pub(crate) mod forge;
pub(crate) mod git;
pub(crate) mod http;
pub(crate) mod metrics;
pub mod model;
pub(crate) mod nginx;
pub(crate) mod notify;
pub(crate) mod output;
pub(crate) mod page;
pub(crate) mod refs;
pub(crate) mod report;
pub(crate) mod secret;
pub(crate) mod serve;
pub(crate) mod server;
pub(crate) mod signals;
pub mod state;
pub(crate) mod targets;
pub(crate) mod trust;

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: cli::Cli) -> anyhow::Result<u8> {
    commands::dispatch(cli)
}

/// Fetches a build checkout's submodules: the child process the build stage starts (see
/// [`cli::InternalSubmodulesArgs`]).
pub fn run_internal_submodules(args: cli::InternalSubmodulesArgs) -> anyhow::Result<u8> {
    commands::internal_submodules(args)
}
