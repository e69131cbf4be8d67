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
    // (`validate --check-templates` is stopped by a signal like them: it sends nothing.)
    let shutdown = crate::shutdown::Shutdown::new();
    if matches!(
        command,
        Command::Run(_) | Command::Collect(_) | Command::Simulate(_) | Command::Templates(_)
    ) {
        shutdown.listen();
    }
    match command {
        Command::Simulate(args) => {
            commands::simulate::run(settings::simulate(args).map_err(invalid)?, shutdown).await
        }
        Command::Run(args) => {
            let settings = settings::run(args).map_err(invalid)?;
            let (metrics, ping) = (settings.metrics.clone(), settings.ping.clone());
            let ping = started(ping).await;
            let result = commands::run::run(settings, shutdown).await;
            reported(&metrics, ping, "run", result).await
        }
        Command::Validate(args) => {
            commands::validate::validate(&settings::validate(args).map_err(invalid)?, shutdown)
                .await
        }
        Command::Expand(args) => {
            commands::expand::expand(&settings::expand(args).map_err(invalid)?)
        }
        Command::Collect(args) => {
            let settings = settings::collect(args).map_err(invalid)?;
            let (metrics, ping) = (settings.metrics.clone(), settings.ping.clone());
            let ping = started(ping).await;
            let result = commands::collect::run(settings, shutdown).await;
            reported(&metrics, ping, "collect", result).await
        }
        Command::Merge(args) => commands::merge::run(&settings::merge(args)),
        Command::Templates(args) => {
            commands::templates::run(settings::templates(args).map_err(invalid)?, shutdown).await
        }
    }
}

/// `--ping-url`: the start ping, before the command does anything.
async fn started(url: Option<String>) -> Option<crate::ping::Ping> {
    let ping = crate::ping::Ping::new(url?);
    ping.start().await;
    Some(ping)
}

/// The end of `run` or `collect`, whatever it was: the metrics textfile (if asked) and the end
/// ping (if asked), both with the exit code the command ended with. Neither changes the outcome: a
/// file that cannot be written, or a ping that fails, is a warning.
async fn reported(
    metrics: &crate::metrics::Metrics,
    ping: Option<crate::ping::Ping>,
    command: &str,
    result: anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    let code = match &result {
        Ok(code) => *code,
        Err(e) => exit::code_of(e),
    };
    if let Err(e) = metrics.write(command, code) {
        tracing::warn!("cannot write the metrics textfile: {e}");
    }
    let mut summary = metrics.summary(command, code);
    if let Err(e) = &result {
        // The error, as it is shown (escaped).
        summary["error"] = crate::logging::safe(&format!("{e:#}")).into_owned().into();
    }
    // `--log-format json`: every run and collection ends with its `summary`, failed ones too.
    crate::logging::emit("summary", summary.clone());
    if let Some(ping) = ping {
        ping.end(code, summary.to_string()).await;
    }
    result
}
