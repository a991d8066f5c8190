//! The `s2iam` binary: parse the command line and hand it to `cli`, which runs the
//! command and maps its errors to the reference CLI's output and exit codes.

use std::process::ExitCode;

mod cli;

use clap::Parser;

fn main() -> ExitCode {
    cli::main(cli::Cli::parse_from(cli::normalize_args(
        std::env::args_os(),
    )))
}
