//! The work below the commands: the Docker client, the build plan, the stages and the run
//! they hand along. Commands parse arguments, call in here and print.

pub mod docker;
