//! Logging: tracing-subscriber on stderr, as text or JSON, filtered by `-q`/`-v` or `RUST_LOG`.
//! On a terminal, text lines have colours and no timestamp; in a file or a pipe, no colours and
//! each text line starts with its UTC timestamp. Lines written while a progress bar shows clear it first
//! ([`show_bar`]). User-supplied text (prompts, API messages) is logged
//! through [`safe`], which escapes control characters so a prompt cannot rewrite the terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// How often a status line is logged when no progress bar shows the progress (`run` and the
/// polling loop of `collect`).
pub(crate) const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
use crate::env_vars;

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The progress bar on screen, if any: every line written while it shows is written with the
/// bar cleared and drawn again after it, so no copy of the bar is left behind.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// The bar now on screen (`None` once it is gone).
pub(crate) fn show_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = bar;
}

/// Run `write` with the bar (if one shows) cleared.
fn around_bar<T>(write: impl FnOnce() -> T) -> T {
    let bar = BAR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Report a fatal error once: `error: …` on stderr, or a JSON log line with `--log-format json`
/// (so every stderr line of a JSON run parses). Control characters in it (a manifest's value, a
/// server's message) are escaped ([`safe`]).
pub(crate) fn error(message: &str) {
    let message = safe(message);
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!("{message}");
    } else {
        around_bar(|| eprintln!("error: {message}"));
    }
}

/// Whether `--log-format json` is on: every line on stdout and stderr is then one JSON object
/// with a `type` (README "JSON output").
pub(crate) fn json_mode() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// With `--log-format json`, write one typed object on stdout: `{"timestamp", "type", …fields}`.
/// Does nothing in text mode (the caller says it as text).
pub(crate) fn emit(kind: &str, fields: serde_json::Value) {
    if !json_mode() {
        return;
    }
    let mut object = serde_json::Map::new();
    object.insert("timestamp".into(), crate::journal::now_rfc3339().into());
    object.insert("type".into(), kind.into());
    if let serde_json::Value::Object(f) = fields {
        object.extend(f);
    }
    write_stdout(&format!("{}\n", serde_json::Value::Object(object)));
}

/// Write `text` to stdout as it is — or, with `--log-format json`, each of its lines as a
/// `message` object. A reader that went away (`run … | head`) is not an error: the command goes
/// on, and its exit code says how it ended; any other failure is logged.
pub(crate) fn say(text: &str) {
    if json_mode() {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            emit("message", serde_json::json!({ "text": line.trim_end() }));
        }
        return;
    }
    write_stdout(text);
}

fn write_stdout(text: &str) {
    use std::io::Write;
    let written = around_bar(|| {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|()| out.flush())
    });
    if let Err(e) = written
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
        .with_writer(Line::default)
        .with_target(false);
    let _ = match format {
        // On a terminal a person watches as it happens; in a log file each line says when.
        LogFormat::Text if std::io::stderr().is_terminal() => {
            builder.with_ansi(true).without_time().try_init()
        }
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => {
            JSON.store(true, std::sync::atomic::Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_ansi(false)
                .with_writer(Line::typed)
                .try_init()
        }
    };
}

/// One log line on stderr, written whole when tracing is done with it, with the progress bar
/// (if one shows) cleared around it. In JSON mode (`typed`) the line gets its `type` — `error`
/// (level ERROR), `outcome` (a request's outcome that needs attention: it has a `status` field),
/// `progress` (the periodic status lines), `log` otherwise — inserted as the object's first key.
#[derive(Default)]
struct Line {
    line: Vec<u8>,
    typed: bool,
}

impl Line {
    fn typed() -> Line {
        Line {
            line: Vec::new(),
            typed: true,
        }
    }
}

/// The `type` of a JSON log line.
fn kind_of(line: &str) -> &'static str {
    if line.contains("\"level\":\"ERROR\"") {
        "error"
    } else if line.contains("\"status\":\"") {
        "outcome"
    } else if line.contains("\"message\":\"progress:") || line.contains("\"message\":\"collecting:")
    {
        "progress"
    } else {
        "log"
    }
}

impl std::io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let mut line = std::mem::take(&mut self.line);
        if self.typed {
            let text = String::from_utf8_lossy(&line);
            if let Some(rest) = text.strip_prefix('{') {
                line = format!("{{\"type\":\"{}\",{rest}", kind_of(&text)).into_bytes();
            }
        }
        around_bar(|| std::io::stderr().lock().write_all(&line))
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
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
