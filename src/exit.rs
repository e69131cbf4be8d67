//! The exit codes (README "Exit codes"), and the error types that carry them to `main`.

use std::fmt;

/// Every request has a task id (in this run or an earlier one).
pub(crate) const OK: u8 = 0;
/// The run finished, but some requests are rejected, failed or unknown.
pub(crate) const INCOMPLETE: u8 = 1;
/// Bad usage or invalid input: nothing was sent.
pub(crate) const INVALID: u8 = 2;
/// Aborted: credentials refused, results file locked or unwritable.
pub(crate) const ABORTED: u8 = 3;
/// Stopped early: the API refused requests account-wide (the breaker,
/// `--max-consecutive-rejections`); the requests not sent stay unsent, for the next run.
pub(crate) const STOPPED: u8 = 4;
/// Interrupted by a signal, after writing the results.
pub(crate) const INTERRUPTED: u8 = 130;

/// An error that ends the process with a given exit code. Wrap a cause with [`invalid`] or
/// [`aborted`]; `main` finds it anywhere in the `anyhow` chain.
#[derive(Debug)]
pub(crate) struct Exit {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Invalid input (exit 2).
pub(crate) fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code: INVALID,
        message: message.into(),
    })
}

/// Aborted (exit 3).
pub(crate) fn aborted(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code: ABORTED,
        message: message.into(),
    })
}

/// Stopped early by the breaker (exit 4).
pub(crate) fn stopped(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code: STOPPED,
        message: message.into(),
    })
}

/// Interrupted by a signal before anything was sent (exit 130).
pub(crate) fn interrupted(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code: INTERRUPTED,
        message: message.into(),
    })
}

/// The exit code for an error that reached `main`: the code of the first [`Exit`] in the chain;
/// otherwise 3 (an unexpected failure aborts, it never claims that nothing was sent).
pub(crate) fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Exit>().map(|x| x.code))
        .unwrap_or(ABORTED)
}
