//! The binary: parse arguments, initialise logging, build the runtime, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hidream_batch::cli::Cli::parse();
    ExitCode::from(hidream_batch::app::main(cli))
}
