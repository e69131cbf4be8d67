//! `--metrics-textfile PATH` (`run`, `collect`): at the end of every invocation — also a failed
//! or interrupted one — a Prometheus textfile-collector file, written atomically (a temporary file
//! in the same folder, synced, renamed), so node_exporter never reads half a file.
//!
//! The command fills [`Metrics`] as it learns (`run`: requests by outcome, images submitted;
//! `collect` and `run --collect`: images by status); `app` writes it with the exit code once the
//! command has ended. `hidream_batch_last_success_timestamp_seconds` moves only when the exit code
//! is 0; otherwise the value in the file being replaced is kept, so "no success for a day" is one
//! alert rule (README "Running unattended").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What an invocation reports, and where.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `--metrics-textfile`; `None`: the facts are kept for the ping's body only.
    path: Option<PathBuf>,
    facts: Arc<Mutex<Facts>>,
    started: Instant,
}

#[derive(Debug, Default)]
struct Facts {
    /// `run`: requests of this run by outcome.
    requests: BTreeMap<&'static str, u64>,
    /// `run`: images of the requests submitted by this run.
    images_submitted: Option<u64>,
    /// `collect`: images by status (done, failed, refused, pending, downloaded).
    images: BTreeMap<&'static str, u64>,
    /// Where the results are, the run id (`--run-id`), the images' folder.
    context: serde_json::Map<String, serde_json::Value>,
}

/// The metric that only a successful invocation moves.
const LAST_SUCCESS: &str = "hidream_batch_last_success_timestamp_seconds";

impl Metrics {
    /// Metrics to be written to `path` (if any), timed from now.
    pub fn new(path: Option<PathBuf>) -> Metrics {
        Metrics {
            path,
            facts: Arc::default(),
            started: Instant::now(),
        }
    }

    /// `run`'s outcomes: requests by status (every status named, 0 included), images submitted.
    pub(crate) fn record_run(&self, requests: &[(&'static str, u64)], images_submitted: u64) {
        let mut f = self.facts.lock().expect("not poisoned");
        f.requests = requests.iter().copied().collect();
        f.images_submitted = Some(images_submitted);
    }

    /// Where the outputs are (`results`, `images_dir`) and the `run_id`, for the JSON summary.
    pub(crate) fn record_context(&self, key: &str, value: serde_json::Value) {
        self.facts
            .lock()
            .expect("not poisoned")
            .context
            .insert(key.into(), value);
    }

    /// `collect`'s images by status.
    pub(crate) fn record_images(&self, images: &[(&'static str, u64)]) {
        self.facts.lock().expect("not poisoned").images = images.iter().copied().collect();
    }

    /// Write the file for `command`, which ended with `code` (nothing without a path).
    pub fn write(&self, command: &str, code: u8) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let last_success = match code {
            0 => Some(now),
            _ => previous(path, command),
        };
        let text = render(
            command,
            &self.facts.lock().expect("not poisoned"),
            code,
            self.started.elapsed().as_secs_f64(),
            now,
            last_success,
        );
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        crate::journal::persist(tmp, path)
    }

    /// The facts as one JSON object (the body of `--ping-url`'s last ping).
    pub fn summary_json(&self, command: &str, code: u8) -> String {
        self.summary(command, code).to_string()
    }

    /// The facts as a JSON object: `command`, `exit_code`, `duration_seconds`, `requests` (by
    /// status), `images_submitted`, `images` (by status), and the context (`results`,
    /// `images_dir`, `run_id`) that is known.
    pub fn summary(&self, command: &str, code: u8) -> serde_json::Value {
        let f = self.facts.lock().expect("not poisoned");
        let mut v = serde_json::json!({
            "command": command,
            "exit_code": code,
            "duration_seconds": (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "requests": f.requests,
            "images_submitted": f.images_submitted,
            "images": f.images,
        });
        if let serde_json::Value::Object(o) = &mut v {
            o.extend(f.context.clone());
        }
        v
    }
}

/// The last success of `command` in the file being replaced, if it has one.
fn previous(path: &Path, command: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let prefix = format!("{LAST_SUCCESS}{{command=\"{command}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn render(
    command: &str,
    facts: &Facts,
    code: u8,
    duration: f64,
    now: f64,
    last_success: Option<f64>,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{command=\"{command}\"{labels}}} {value}");
        }
    };
    let by = |label: &str, map: &BTreeMap<&'static str, u64>| -> Vec<(String, String)> {
        map.iter()
            .map(|(k, v)| (format!(",{label}=\"{k}\""), v.to_string()))
            .collect()
    };
    if !facts.requests.is_empty() {
        metric(
            "hidream_batch_requests",
            "Requests of the last run by outcome.",
            "gauge",
            &by("status", &facts.requests),
        );
        let unknown = facts.requests.get("unknown").copied().unwrap_or(0);
        metric(
            "hidream_batch_unknown_requests",
            "Requests of the last run whose outcome is unknown (the task may exist): check them.",
            "gauge",
            &[(String::new(), unknown.to_string())],
        );
    }
    if let Some(images) = facts.images_submitted {
        metric(
            "hidream_batch_images_submitted",
            "Images of the requests the last run submitted.",
            "gauge",
            &[(String::new(), images.to_string())],
        );
    }
    if !facts.images.is_empty() {
        metric(
            "hidream_batch_images",
            "Images of the collected tasks by status.",
            "gauge",
            &by("status", &facts.images),
        );
    }
    let one = |v: String| [(String::new(), v)];
    metric(
        "hidream_batch_duration_seconds",
        "How long the last invocation took.",
        "gauge",
        &one(format!("{duration:.3}")),
    );
    metric(
        "hidream_batch_exit_code",
        "The exit code of the last invocation (README \"Exit codes\").",
        "gauge",
        &one(code.to_string()),
    );
    metric(
        "hidream_batch_last_run_timestamp_seconds",
        "When the last invocation ended (Unix time).",
        "gauge",
        &one(format!("{now:.3}")),
    );
    if let Some(t) = last_success {
        metric(
            LAST_SUCCESS,
            "When the last invocation that exited 0 ended (Unix time).",
            "gauge",
            &one(format!("{t:.3}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_last_success_and_every_sample_has_help_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hb.prom");
        let m = Metrics::new(Some(path.clone()));
        m.record_run(&[("submitted", 3), ("unknown", 1)], 5);
        m.write("run", 0).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        let success = previous(&path, "run").expect("a success is recorded");
        let m = Metrics::new(Some(path.clone()));
        m.write("run", 4).unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert_eq!(previous(&path, "run"), Some(success), "a failure keeps it");
        assert!(second.contains("hidream_batch_exit_code{command=\"run\"} 4"));
        assert!(first.contains("hidream_batch_unknown_requests{command=\"run\"} 1"));
        assert!(first.contains("hidream_batch_requests{command=\"run\",status=\"submitted\"} 3"));
        for text in [&first, &second] {
            let mut declared = std::collections::HashSet::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    declared.insert(rest.split(' ').next().unwrap().to_string());
                } else if !line.starts_with('#') {
                    let name = line.split('{').next().unwrap();
                    assert!(declared.contains(name), "{name} has no TYPE: {text}");
                    let value = line.rsplit(' ').next().unwrap();
                    assert!(value.parse::<f64>().is_ok(), "{line}");
                }
            }
        }
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left");
    }
}
