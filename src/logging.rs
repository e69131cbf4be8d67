//! Logging: tracing-subscriber on stderr, as text or JSON, filtered by `-q`/`-v` or `RUST_LOG`.
//! No ANSI colours unless stderr is a terminal. User-supplied text (prompts, API messages) is logged
//! through [`safe`], which escapes control characters so a prompt cannot rewrite the terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// How often a status line is logged when no progress bar shows the progress (`run` and the
/// polling loop of `collect`).
pub(crate) const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
use crate::env_vars;

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Report a fatal error once: `error: …` on stderr, or a JSON log line with `--log-format json`
/// (so every stderr line of a JSON run parses). Control characters in it (a manifest's value, a
/// server's message) are escaped ([`safe`]).
pub(crate) fn error(message: &str) {
    let message = safe(message);
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!("{message}");
    } else {
        eprintln!("error: {message}");
    }
}

/// Write `text` to stdout as it is. A reader that went away (`run … | head`) is not an error: the
/// command goes on, and its exit code says how it ended; any other failure is logged.
pub(crate) fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tracing::warn!("cannot write to stdout: {e}");
    }
}

/// Install the global subscriber. `verbosity`: -1 quiet, 0 default (info), 1 debug, ≥2 trace.
pub(crate) fn init(format: LogFormat, verbosity: i8) {
    let default = match verbosity {
        i8::MIN..=-1 => "warn",
        0 => "info",
        1 => "hidream_batch=debug,info",
        _ => "trace",
    };
    let filter = std::env::var(env_vars::RUST_LOG)
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .without_time()
            .try_init(),
        LogFormat::Json => {
            JSON.store(true, std::sync::atomic::Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_ansi(false)
                .try_init()
        }
    };
}

/// Text from outside (a prompt, an API message) made safe for a terminal and a log line: control
/// characters, escape sequences included, are shown escaped.
pub(crate) fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars().flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_terminal_control() {
        assert_eq!(super::safe("plain 中文"), "plain 中文");
        assert_eq!(super::safe("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
    }
}
