//! Settings that parse but cannot work are refused before anything is sent (exit 2), naming the
//! flag: a zero timeout would send (and pay for) a request whose answer can never arrive, and a
//! first retry delay above the longest one is a typo.

use std::time::Duration;

use crate::cli::{CollectArgs, ConnectionArgs, RunArgs};

fn positive(flag: &str, d: Duration) -> Result<(), String> {
    if d.is_zero() {
        Err(format!(
            "`{flag}` must be longer than zero (an attempt that cannot wait for its answer is paid for and recorded `unknown`)"
        ))
    } else {
        Ok(())
    }
}

/// The connection options shared by `run` and `collect`.
pub fn check_connection(args: &ConnectionArgs) -> Result<(), String> {
    if args.backoff > args.backoff_max {
        return Err(format!(
            "`--backoff` ({}) is longer than `--backoff-max` ({}): the first retry delay cannot exceed the longest",
            humantime::format_duration(args.backoff),
            humantime::format_duration(args.backoff_max)
        ));
    }
    Ok(())
}

/// `run`'s options.
pub fn check_run(args: &RunArgs) -> Result<(), String> {
    check_connection(&args.connection)?;
    positive("--timeout", args.timeout)
}

/// `collect`'s options.
pub fn check_collect(args: &CollectArgs) -> Result<(), String> {
    check_connection(&args.connection)?;
    positive("--request-timeout", args.request_timeout)?;
    positive("--poll-interval", args.poll_interval)?;
    positive("--timeout", args.timeout)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn run(extra: &[&str]) -> Result<(), String> {
        let mut argv = vec!["hidream-batch", "run", "m.yaml"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).command {
            Command::Run(args) => super::check_run(&args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn settings_that_cannot_work_name_their_flag() {
        assert!(run(&[]).is_ok());
        assert!(
            run(&["--timeout", "0s"])
                .unwrap_err()
                .contains("`--timeout`")
        );
        let err = run(&["--backoff", "10s", "--backoff-max", "1s"]).unwrap_err();
        assert!(
            err.contains("`--backoff`") && err.contains("`--backoff-max`"),
            "{err}"
        );
        assert!(run(&["--backoff", "0s", "--backoff-max", "0s"]).is_ok());
    }
}
