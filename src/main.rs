//! The `pipe` binary: parse the command line, run it, print the error chain, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = pipe::cli::Cli::parse();
    match pipe::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{}", pipe::error::render(&err));
            ExitCode::from(pipe::error::exit_code(&err))
        }
    }
}
