//! The commands, one file each: what a command does from its checked settings to its exit code.
//! `app` calls them; they call the library's pieces (and print what the user reads).

pub mod collect;
pub mod expand;
pub mod merge;
pub mod run;
pub mod simulate;
pub mod templates;
pub mod validate;

use std::io::Write;

use crate::exit;

pub(crate) fn print_out(text: &str) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(exit::OK),
        Err(e) => broken_pipe(e),
    }
}

/// A reader that stops early (`| head`) is not an error.
pub(crate) fn broken_pipe(e: std::io::Error) -> anyhow::Result<u8> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(exit::OK)
    } else {
        Err(anyhow::Error::new(e).context("cannot write to stdout"))
    }
}
