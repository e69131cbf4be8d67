//! Dispatch: one function per command, called by `main` with the parsed arguments. Each returns the
//! process exit code; errors are printed once, with their chain, and mapped by [`crate::exit`].

use crate::cli::{Cli, Command};
use crate::exit;
use crate::settings;

/// Run the command line and return the exit code.
pub fn main(cli: Cli) -> u8 {
    let verbosity = if cli.quiet { -1 } else { cli.verbose as i8 };
    crate::logging::init(cli.log_format, verbosity);
    // The simulator serves many connections and wants every core. The client commands are
    // I/O-bound: one thread does their work with less CPU and memory than a work-stealing pool
    // (measured: about a third less CPU per request in the overhead-bound benchmark).
    let mut builder = match cli.command {
        Command::Simulate(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit::ABORTED;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    // Work abandoned on the blocking pool (a validation a signal stopped) ends with the process.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => {
            crate::logging::error(&format!("{err:#}"));
            exit::code_of(&err)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    use crate::commands;
    let invalid = crate::exit::invalid;
    // One shutdown for the commands that run until stopped: SIGINT and SIGTERM reach them through
    // it. The others (`validate`, `expand`, `merge`) keep the default: a signal ends them.
    let shutdown = crate::shutdown::Shutdown::new();
    if matches!(
        command,
        Command::Run(_) | Command::Collect(_) | Command::Simulate(_)
    ) {
        shutdown.listen();
    }
    match command {
        Command::Simulate(args) => {
            commands::simulate::run(settings::simulate(args).map_err(invalid)?, shutdown).await
        }
        Command::Run(args) => {
            let settings = settings::run(args).map_err(invalid)?;
            let metrics = settings.metrics.clone();
            reported(metrics, "run", commands::run::run(settings, shutdown).await)
        }
        Command::Validate(args) => commands::validate::validate(&settings::manifest(args)),
        Command::Expand(args) => {
            commands::expand::expand(&settings::expand(args).map_err(invalid)?)
        }
        Command::Collect(args) => {
            let settings = settings::collect(args).map_err(invalid)?;
            let metrics = settings.metrics.clone();
            reported(
                metrics,
                "collect",
                commands::collect::run(settings, shutdown).await,
            )
        }
        Command::Merge(args) => commands::merge::run(&settings::merge(args)),
    }
}

/// Write the metrics textfile, if asked, with the exit code the command ended with (whatever it
/// was); a file that cannot be written is a warning, never a change of the outcome.
fn reported(
    metrics: Option<crate::metrics::Metrics>,
    command: &str,
    result: anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    if let Some(m) = metrics {
        let code = match &result {
            Ok(code) => *code,
            Err(e) => exit::code_of(e),
        };
        if let Err(e) = m.write(command, code) {
            tracing::warn!("cannot write the metrics textfile: {e}");
        }
    }
    result
}
