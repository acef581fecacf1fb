//! The `pipe` binary: parse the command line, run it, print the error chain, exit with its code.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let internal = std::env::args_os().nth(1).is_some_and(|a| a == pipe::cli::INTERNAL_SUBMODULES);
    let result = if internal {
        let args = std::env::args_os().enumerate().filter(|(i, _)| *i != 1).map(|(_, a)| a);
        pipe::run_internal_submodules(pipe::cli::InternalSubmodulesArgs::parse_from(args))
    } else {
        pipe::run(pipe::cli::Cli::parse())
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Not `eprintln!`, which panics when nobody reads stderr any more.
            let _ = writeln!(std::io::stderr(), "{}", pipe::error::render(&err));
            ExitCode::from(pipe::error::exit_code(&err))
        }
    }
}
