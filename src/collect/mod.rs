//! `collect` (SPEC §8): poll the tasks of a results CSV, download every finished image once, and
//! write `DIR/images.csv` and the contact sheet `DIR/index.html`.
//!
//! Submitting is half the job: this module turns task ids into files a catalog team can find and
//! a page a person can look over. It is also what `run --collect DIR` calls after its final
//! results rewrite, with the same client.
//!
//! The loop follows `run`'s shape: a **round** is `stream::iter(tasks to query).map(fetch::poll)
//! .buffer_unordered(--concurrency)`, consumed by one loop that alone owns the [`batch::Batch`]
//! and the counters. A poll queries one task (through the per-endpoint rate limiter, retried per
//! `--max-attempts`/`--backoff`) and downloads its finished images that are not on disk yet.
//! Without `--wait` there is one round; with it, rounds repeat `--poll-interval` after each other
//! until nothing is pending or `--timeout` passes (no new query starts after it; those in flight
//! finish). A task is queried only while one of its images is unsettled, so a rerun asks nothing
//! about images that `images.csv` records as done (with their file on disk), failed or refused.
//!
//! Statuses per image (API reference §9): 0 queued and 2 running are polled again; 1 done is
//! downloaded; 3 failed and 4 refused are recorded with the API's `description` and never polled
//! or retried again; any other value is recorded as its number and polled again.
//!
//! Exit codes: 0 when every image of every submitted task is done and on disk; 1 when some are
//! failed, refused, still pending (at `--timeout`, or without `--wait`), or done but not
//! downloaded; 2 for a missing results file or token; 3 when the API refuses the credentials;
//! 130 on a signal (the outputs are written first in every case).

pub mod batch;
pub mod fetch;
pub mod html;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::api::{Kind, status};
use crate::cli::{CollectArgs, ConnectionArgs};
use crate::client::Client;
use crate::client::retry::Backoff;
use crate::exit;
use crate::rate::Limiter;

use batch::{Batch, Sub, SubStatus};
use fetch::{Ctx, File, Poll, Polled};

/// The file of the images' table, in DIR.
pub const IMAGES_CSV: &str = "images.csv";
/// The contact sheet, in DIR.
pub const INDEX_HTML: &str = "index.html";
/// `--poll-interval` default (HiDream's own clients poll every 5 s).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// `--timeout` default: how long `--wait` polls (HiDream's model-image client caps at 30 minutes).
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Checked settings of one collection.
#[derive(Debug, Clone)]
pub struct Settings {
    pub results: PathBuf,
    pub out: PathBuf,
    pub wait: bool,
    pub poll_interval: Duration,
    /// How long `--wait` polls.
    pub timeout: Duration,
    pub concurrency: usize,
    /// Images (here: queries) per minute per endpoint; 0 = no limit.
    pub rate: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl Settings {
    /// The settings of `hidream-batch collect`.
    pub fn from_args(args: &CollectArgs) -> Settings {
        let mut s = Settings::after_run(&args.connection, &args.results, &args.out);
        s.wait = args.wait;
        s.poll_interval = args.poll_interval;
        s.timeout = args.timeout;
        s
    }

    /// The settings of `run --collect DIR`: `run`'s connection options, `--wait`, and the default
    /// poll interval and wait timeout.
    pub fn after_run(connection: &ConnectionArgs, results: &Path, out: &Path) -> Settings {
        Settings {
            results: results.to_path_buf(),
            out: out.to_path_buf(),
            wait: true,
            poll_interval: DEFAULT_POLL_INTERVAL,
            timeout: DEFAULT_WAIT_TIMEOUT,
            concurrency: connection.concurrency.max(1) as usize,
            rate: connection.rate,
            max_attempts: connection.max_attempts.max(1),
            backoff: Backoff {
                base: connection.backoff,
                max: connection.backoff_max,
            },
        }
    }
}

/// Counts over every image of the submitted tasks, after collecting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Images known (a task none of whose images is known yet counts one).
    pub images: u64,
    pub done: u64,
    /// Downloaded by this invocation.
    pub downloaded: u64,
    /// Done, and already on disk before this invocation.
    pub skipped: u64,
    pub failed: u64,
    pub refused: u64,
    /// Queued, running, any other status, or never answered.
    pub pending: u64,
    /// Done, but the download failed.
    pub not_downloaded: u64,
    /// Requests of the results without a task (not submitted).
    pub without_task: u64,
}

impl Summary {
    pub fn of(batch: &Batch) -> Summary {
        let mut s = Summary {
            without_task: batch.without_task,
            ..Summary::default()
        };
        for t in &batch.tasks {
            if t.subs.is_empty() {
                s.images += 1;
                s.pending += 1;
            }
            for sub in &t.subs {
                s.images += 1;
                match sub.status {
                    st if st.is_done() => {
                        s.done += 1;
                        match &sub.path {
                            None => s.not_downloaded += 1,
                            Some(_) if sub.downloaded_now => s.downloaded += 1,
                            Some(_) => s.skipped += 1,
                        }
                    }
                    SubStatus::Code(status::FAILED) => s.failed += 1,
                    SubStatus::Code(status::REFUSED) => s.refused += 1,
                    _ => s.pending += 1,
                }
            }
        }
        s
    }

    /// Every image done and on disk.
    pub fn complete(&self) -> bool {
        self.done == self.images && self.not_downloaded == 0
    }
}

/// `hidream-batch collect`. `signals` yields once per SIGINT/SIGTERM.
pub async fn run(args: CollectArgs, signals: impl Stream<Item = ()> + Unpin) -> anyhow::Result<u8> {
    crate::settings::check_collect(&args).map_err(exit::invalid)?;
    let settings = Settings::from_args(&args);
    if !settings.results.exists() {
        // Before the connection, so a typo is reported as such even without a token.
        return Err(exit::invalid(format!(
            "the results `{}` do not exist: give the results CSV written by `run` with --results PATH",
            settings.results.display()
        )));
    }
    let conn = crate::run::connect(&args.connection, args.request_timeout).await?;
    collect(&conn.client, &settings, signals).await
}

/// Collect with a ready client: what `collect` and `run --collect` share.
pub async fn collect(
    client: &Client,
    settings: &Settings,
    signals: impl Stream<Item = ()> + Unpin,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut batch = batch::load(&settings.results, &settings.out)?;
    std::fs::create_dir_all(&settings.out).map_err(|e| {
        exit::aborted(format!(
            "cannot create the output directory `{}`: {e}",
            settings.out.display()
        ))
    })?;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        limiters: if settings.rate == 0 {
            HashMap::new()
        } else {
            Kind::ALL
                .iter()
                .map(|k| (*k, Limiter::even(settings.rate)))
                .collect()
        },
        backoff: settings.backoff.clone(),
        max_attempts: settings.max_attempts,
        out: settings.out.clone(),
        stop: AtomicBool::new(false),
        stop_notify: tokio::sync::Notify::new(),
    });
    let deadline = settings.wait.then(|| Instant::now() + settings.timeout);
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let deadline_sleep = tokio::time::sleep_until(deadline.unwrap_or(far));
    tokio::pin!(deadline_sleep);

    let mut signals = signals.fuse();
    let mut signalled = 0u32;
    let mut unauthorized: Option<String> = None;
    let mut timed_out = false;
    let mut rounds = 0u32;
    let mut queries = 0u64;
    'rounds: loop {
        let todo: Vec<Poll> = batch
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.needs_query())
            .map(|(i, t)| Poll {
                task: i,
                kind: t.kind,
                task_id: t.task_id.clone(),
                job: t.job.clone(),
                request_id: t.request_id.clone(),
                known: t
                    .subs
                    .iter()
                    .map(|s| (s.id.clone(), s.index, s.settled()))
                    .collect(),
                next_index: t.next_index(),
            })
            .collect();
        if todo.is_empty() {
            break;
        }
        rounds += 1;
        tracing::info!("round {rounds}: querying {} tasks", todo.len());
        let source_ctx = ctx.clone();
        let source = todo.into_iter().take_while(move |_| !source_ctx.stopping());
        let mut stream = futures::stream::iter(source)
            .map(|p| fetch::poll(ctx.clone(), p))
            .buffer_unordered(settings.concurrency);
        loop {
            tokio::select! {
                next = stream.next() => {
                    let Some(polled) = next else { break };
                    if !matches!(polled, Polled::Skipped) {
                        queries += 1;
                    }
                    if let Some(message) = apply(&mut batch, polled) {
                        if unauthorized.is_none() {
                            unauthorized = Some(message);
                        }
                        ctx.request_stop();
                    }
                }
                Some(()) = signals.next() => {
                    signalled += 1;
                    ctx.request_stop();
                    if signalled == 1 {
                        tracing::warn!("interrupted: no new queries; waiting for those in flight (signal again to stop at once)");
                    } else {
                        tracing::warn!("interrupted again: stopping now");
                        break;
                    }
                }
                () = &mut deadline_sleep, if deadline.is_some() && !timed_out => {
                    timed_out = true;
                    ctx.request_stop();
                    tracing::warn!("--timeout reached: no new queries; waiting for those in flight");
                }
            }
        }
        drop(stream);
        let pending = Summary::of(&batch).pending;
        tracing::info!("round {rounds} done: {pending} images pending");
        if ctx.stopping() || !settings.wait {
            break;
        }
        if !batch.tasks.iter().any(|t| t.needs_query()) {
            break;
        }
        // The pause between rounds, cut short by the deadline or a signal.
        tokio::select! {
            () = tokio::time::sleep(settings.poll_interval) => {}
            () = &mut deadline_sleep, if deadline.is_some() => {
                timed_out = true;
                break 'rounds;
            }
            Some(()) = signals.next() => {
                signalled += 1;
                break 'rounds;
            }
        }
    }

    // The outputs, whatever happened.
    let summary = Summary::of(&batch);
    let unwritable = |what: &str, e: std::io::Error| {
        exit::aborted(format!(
            "cannot write `{}`: {e}",
            settings.out.join(what).display()
        ))
    };
    batch::write_images_csv(&batch, &settings.out).map_err(|e| unwritable(IMAGES_CSV, e))?;
    let source = settings
        .results
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| settings.results.display().to_string());
    let page = html::render(&batch, &summary, &source);
    write_atomic(&settings.out.join(INDEX_HTML), page.as_bytes())
        .map_err(|e| unwritable(INDEX_HTML, e))?;

    println!(
        "collect: {} images: {} done ({} downloaded, {} skipped: already on disk), {} failed, {} refused, {} pending{}; {} task queries in {} round{}, {:.1}s; {} and {} in {}",
        summary.images,
        summary.done,
        summary.downloaded,
        summary.skipped,
        summary.failed,
        summary.refused,
        summary.pending,
        if summary.not_downloaded > 0 {
            format!(", {} done but not downloaded", summary.not_downloaded)
        } else {
            String::new()
        },
        queries,
        rounds,
        if rounds == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64(),
        IMAGES_CSV,
        INDEX_HTML,
        settings.out.display(),
    );
    if summary.without_task > 0 {
        println!(
            "not collected: {} request{} of the results without a task (rejected, failed or unknown)",
            summary.without_task,
            if summary.without_task == 1 { "" } else { "s" }
        );
    }
    if summary.pending > 0 {
        let why = if timed_out {
            "--timeout reached"
        } else if settings.wait {
            "stopped"
        } else {
            "run again, or use --wait"
        };
        println!("{} images still pending ({why})", summary.pending);
    }
    if let Some(message) = unauthorized {
        return Err(exit::aborted(format!(
            "the API refused the credentials ({message}): collecting stopped; check HIDREAM_API_TOKEN"
        )));
    }
    if signalled > 0 {
        eprintln!(
            "interrupted: {} and {} written to {}",
            IMAGES_CSV,
            INDEX_HTML,
            settings.out.display()
        );
        return Ok(exit::INTERRUPTED);
    }
    Ok(if summary.complete() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

/// Apply one poll to the batch; returns the message of a refused credential.
fn apply(batch: &mut Batch, polled: Polled) -> Option<String> {
    match polled {
        Polled::Skipped => {}
        Polled::Unauthorized { message } => return Some(message),
        Polled::Refused { task, message } => {
            let t = &mut batch.tasks[task];
            tracing::warn!(job = %t.job, request_id = %t.request_id, task_id = %t.task_id, "{message}");
            t.query_given_up = true;
            t.message = message;
        }
        Polled::Failed { task, message } => {
            let t = &mut batch.tasks[task];
            tracing::warn!(job = %t.job, request_id = %t.request_id, task_id = %t.task_id, "{message}");
            t.message = message;
        }
        Polled::Answered { task, reports } => {
            let t = &mut batch.tasks[task];
            t.message.clear();
            for r in reports {
                let i = match t.subs.iter().position(|s| s.id == r.id) {
                    Some(i) => i,
                    None => {
                        t.subs.push(Sub::new(r.id.clone(), r.index));
                        t.subs.len() - 1
                    }
                };
                let sub = &mut t.subs[i];
                let was = sub.status;
                sub.status = r.status;
                if let Some(url) = r.url {
                    sub.url = url;
                }
                match (sub.status.is_done(), &r.file) {
                    // Settled earlier: keep what was recorded (e.g. a download error).
                    (true, File::None) => {}
                    (true, _) => sub.message.clear(),
                    (false, _) => sub.message = r.description,
                }
                match r.file {
                    File::None => {}
                    File::Present(p) => sub.path = Some(p),
                    File::Downloaded(p) => {
                        sub.path = Some(p);
                        sub.downloaded_now = true;
                    }
                    File::Failed(e) => {
                        tracing::warn!(job = %t.job, request_id = %t.request_id, sub_task_id = %sub.id, "{e}");
                        sub.path = None;
                        sub.message = e;
                        sub.download_given_up = true;
                    }
                }
                if sub.status.is_lost() && was != sub.status {
                    tracing::info!(job = %t.job, request_id = %t.request_id, sub_task_id = %sub.id, "{}: {}", sub.status.name(), sub.message);
                }
            }
        }
    }
    None
}

/// Write a file atomically: temporary file in the same directory, sync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    crate::journal::persist(tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn defaults_match_the_command_line() {
        let cli = crate::cli::Cli::parse_from(["hidream-batch", "collect"]);
        let crate::cli::Command::Collect(args) = cli.command else {
            unreachable!()
        };
        assert_eq!(args.poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(args.timeout, DEFAULT_WAIT_TIMEOUT);
        let s = Settings::from_args(&args);
        assert!(!s.wait);
        let r = Settings::after_run(&args.connection, Path::new("r.csv"), Path::new("d"));
        assert!(r.wait);
        assert_eq!(r.poll_interval, DEFAULT_POLL_INTERVAL);
    }
}
