//! Progress that never looks hung (issue 16): on a terminal the bar keeps changing while the run
//! waits for its rate window and names the wait; without one, status lines say the same facts,
//! with a timestamp; with `--log-format json` they are typed `progress` objects.
//!
//! A run of 4 one-image requests at `--rate 2` sends two, then waits for the window; the test hook
//! `HIDREAM_BATCH_TIME_SCALE=0.05` makes that window 3 s (and the status lines every 0.5 s).

use std::path::Path;

use hidream_batch::env_vars::TIME_SCALE;

use crate::common::{TOKEN, bin, exits, quiet, simulator};

const MANIFEST: &str =
    "name: pty\njobs:\n  - id: a\n    kind: txt2img\n    prompt: \"a red fox\"\n    repeat: 4\n";

fn manifest(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("m.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    path
}

/// What a terminal would show, without colours and cursor moves: each redraw on its own line.
fn screen_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params letter.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            plain.push('\n');
        } else if c == '\r' {
            plain.push('\n');
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The bar, in a pseudo-terminal (`script`), changes while the run waits for the rate window,
/// and says that it waits, for what, and until when.
#[test]
fn on_a_terminal_the_bar_ticks_through_a_rate_wait_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path());
    let out = dir.path().join("r.csv");
    let binary = assert_cmd::cargo::cargo_bin("hidream-batch");
    let command = format!(
        "'{}' run '{}' --simulate -o '{}' --rate 2",
        binary.display(),
        m.display(),
        out.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env(TIME_SCALE, "0.05")
        .env("TERM", "xterm")
        .env_remove("HIDREAM_API_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("`script` (util-linux) runs");
    let lines = screen_lines(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{lines:#?}");
    // The wait is named with its endpoint, its rate and a countdown that moves.
    let waits: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| {
            let at = l.find("rate window (txt2img, 2 images/min): next slot in ")?;
            Some(&l[at..])
        })
        .collect();
    assert!(
        waits.len() >= 2,
        "the wait's countdown never changed: {lines:#?}"
    );
    assert!(waits.iter().all(|l| l.contains(" UTC)")), "{waits:#?}");
    // The first line of the bar moves during the wait: the elapsed time and the ETA.
    let bars: std::collections::BTreeSet<&String> = lines
        .iter()
        .filter(|l| l.contains("2/4 2 images in ") && l.contains(" · eta "))
        .collect();
    assert!(bars.len() >= 2, "the bar froze during the wait: {lines:#?}");
    // The bar is gone at the end, and the summary is there.
    let last = lines.last().unwrap();
    assert!(last.starts_with("done: 4 this run"), "{lines:#?}");
}

/// Run the binary in a pseudo-terminal (`script`, from util-linux): what the terminal got.
fn in_terminal(args: &str, envs: &[(&str, &str)]) -> std::process::Output {
    let binary = assert_cmd::cargo::cargo_bin("hidream-batch");
    let mut cmd = std::process::Command::new("script");
    cmd.args([
        "-qfec",
        &format!("'{}' {args}", binary.display()),
        "/dev/null",
    ])
    .env("TERM", "xterm")
    .env_remove("HIDREAM_API_TOKEN")
    .env_remove("RUST_LOG")
    .env_remove(TIME_SCALE)
    .stdin(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("`script` (util-linux) runs")
}

/// Every HTTP 429 answered: the bar names the backoff, and the warning logged while the bar
/// shows is written after the bar was cleared (no copy of the bar is left above it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_a_backoff_is_named_and_log_lines_clear_the_bar() {
    let sim = simulator(hidream_batch::sim::SimConfig {
        throttle_rate: 1.0,
        ..quiet()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path());
    let args = format!(
        "run '{}' --base-url {} -o '{}' --max-attempts 2 --backoff 2s",
        m.display(),
        sim.base_url(),
        dir.path().join("r.csv").display()
    );
    let o =
        tokio::task::spawn_blocking(move || in_terminal(&args, &[("HIDREAM_API_TOKEN", TOKEN)]))
            .await
            .unwrap();
    let lines = screen_lines(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("backing off after HTTP 429 (") && l.contains("next attempt in ")),
        "{lines:#?}"
    );
    // The warning, and what came between the last drawing of the bar and it.
    let raw = o.stdout;
    let warning = b"the API answered HTTP 429";
    let at = raw
        .windows(warning.len())
        .position(|w| w == warning)
        .unwrap_or_else(|| panic!("no warning: {lines:#?}"));
    let glyph = "░".as_bytes();
    let bar = raw[..at]
        .windows(glyph.len())
        .rposition(|w| w == glyph)
        .expect("the bar was drawn before the first answer");
    let between = &raw[bar..at];
    assert!(
        between.windows(4).any(|w| w == b"\x1b[2K"),
        "the bar was not cleared before the log line: {:?}",
        String::from_utf8_lossy(between)
    );
    assert!(!String::from_utf8_lossy(&raw).contains(TOKEN));
}

/// `run ARGS --simulate -o OUT --log-format json` with the test hook at 0.05, exit 0: its
/// `progress` objects, and its stderr.
fn json_progress(args: &[&str], out: &Path) -> (Vec<serde_json::Value>, String) {
    let o = bin()
        .arg("run")
        .args(args)
        .args(["--simulate", "--log-format", "json", "-o"])
        .arg(out)
        .env(TIME_SCALE, "0.05")
        .output()
        .unwrap();
    exits(&o, 0);
    let stderr = String::from_utf8(o.stderr).unwrap();
    let progress = stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "progress")
        .collect();
    (progress, stderr)
}

/// Without a terminal: status lines with a timestamp, the counts, the pace, the ETA and the
/// wait; with `--log-format json`, `progress` objects with the same facts as fields.
#[test]
fn without_a_terminal_status_lines_say_the_same_facts() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path());
    let o = bin()
        .args([
            "run",
            m.to_str().unwrap(),
            "--simulate",
            "--rate",
            "2",
            "-o",
        ])
        .arg(dir.path().join("text.csv"))
        .env(TIME_SCALE, "0.05")
        .output()
        .unwrap();
    exits(&o, 0);
    let stderr = String::from_utf8(o.stderr).unwrap();
    let status = stderr
        .lines()
        .find(|l| {
            l.contains("progress: 2 of 4 requests done") && l.contains("waiting: rate window")
        })
        .unwrap_or_else(|| panic!("no status line during the wait: {stderr}"));
    // "2026-12-02T06:01:02.123456Z  INFO progress: 2 of 4 requests done (2 submitted, …); 2
    // images submitted in 1.0 s; eta 2.0 s; waiting: rate window (…)"
    assert!(
        status.len() > 20 && status.as_bytes()[4] == b'-' && status[..20].contains('T'),
        "no timestamp: {status}"
    );
    assert!(status.contains("2 images submitted in "), "{status}");
    assert!(status.contains("; eta "), "{status}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI off a terminal: {stderr}"
    );

    let (progress, stderr) = json_progress(
        &[m.to_str().unwrap(), "--rate", "2"],
        &dir.path().join("json.csv"),
    );
    let waiting = progress
        .iter()
        .find(|v| v["done"] == 2)
        .unwrap_or_else(|| panic!("no progress object during the wait: {stderr}"));
    assert_eq!(waiting["total"], 4, "{waiting}");
    assert_eq!(waiting["submitted"], 2, "{waiting}");
    assert_eq!(waiting["images"], 2, "{waiting}");
    assert!(waiting["elapsed_seconds"].is_number(), "{waiting}");
    assert!(waiting["eta_seconds"].is_number(), "{waiting}");
    assert!(
        waiting["waiting"]
            .as_str()
            .is_some_and(|w| w.starts_with("rate window (txt2img, 2 images/min)")),
        "{waiting}"
    );
}

/// The pending-task window and the wait after the last submission (`--max-pending 1
/// --collect`) are named in the status lines too, with an ETA while requests are held back.
#[test]
fn status_lines_name_the_pending_window_and_the_final_wait() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("two.yaml");
    std::fs::write(
        &m,
        "name: two\njobs:\n  - id: a\n    kind: txt2img\n    prompt: \"a red fox\"\n    repeat: 2\n",
    )
    .unwrap();
    let images = dir.path().join("images");
    let (progress, stderr) = json_progress(
        &[
            m.to_str().unwrap(),
            "--max-pending",
            "1",
            "--collect",
            images.to_str().unwrap(),
        ],
        &dir.path().join("r.csv"),
    );
    let slot = progress
        .iter()
        .find(|v| {
            v["waiting"].as_str().is_some_and(|w| {
                w == "waiting for pending tasks to finish (--max-pending; 1 request held back)"
            })
        })
        .unwrap_or_else(|| panic!("the window's wait is not named: {stderr}"));
    assert_eq!(slot["done"], 1, "{slot}");
    assert!(
        slot["eta_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{slot}"
    );
    assert!(
        progress.iter().any(|v| v["done"] == 2
            && v["waiting"] == "all sent; waiting for 1 submitted task to finish"),
        "the final wait is not named: {stderr}"
    );
}
