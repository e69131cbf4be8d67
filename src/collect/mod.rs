//! `collect` (README "`collect`"): poll the tasks of a results CSV, download every finished image once, and
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

pub(crate) mod batch;
pub(crate) mod fetch;
pub(crate) mod html;
pub(crate) mod images_csv;
pub(crate) mod inputs;
pub(crate) mod layout;
pub(crate) mod poller;
pub(crate) mod progress;
pub(crate) mod schedule;

use std::path::Path;

use crate::api::status;
use crate::client::Client;
use crate::exit;
use crate::settings::CollectSettings;
use crate::shutdown::Shutdown;

use batch::{Batch, Sub, SubStatus};
use fetch::{Ctx, File, Polled};
use schedule::Schedule;

/// What a run that followed its own tasks learned of their images, by task id: `collect` asks
/// nothing more about the ones settled.
pub(crate) type Known = std::collections::HashMap<String, Vec<Sub>>;

/// The file of the images' table, in DIR.
pub(crate) const IMAGES_CSV: &str = "images.csv";
/// The contact sheet, in DIR.
pub(crate) const INDEX_HTML: &str = "index.html";
/// Counts over every image of the submitted tasks, after collecting.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Summary {
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
    /// The mean `task_completion` of the pending images that report one, 0–1.
    pub pending_completion: Option<f64>,
    /// Requests of the results without a task (not submitted).
    pub without_task: u64,
}

impl Summary {
    pub(crate) fn of(batch: &Batch) -> Summary {
        let mut s = Summary {
            without_task: batch.without_task,
            ..Summary::default()
        };
        let mut completions = (0.0, 0u64);
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
                    _ => {
                        s.pending += 1;
                        if let Some(c) = sub.completion {
                            completions.0 += c;
                            completions.1 += 1;
                        }
                    }
                }
            }
        }
        s.pending_completion = (completions.1 > 0).then(|| completions.0 / completions.1 as f64);
        s
    }

    /// Every image done and on disk.
    pub(crate) fn complete(&self) -> bool {
        self.done == self.images && self.not_downloaded == 0
    }
}

/// Collect with a ready client: what `collect` and `run --collect` share.
pub(crate) async fn collect(
    client: &Client,
    settings: &CollectSettings,
    mut known: Known,
    shutdown: &Shutdown,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut batch = batch::load(&settings.results)?;
    let previous = images_csv::read_previous(&settings.out.join(IMAGES_CSV));
    images_csv::merge(&mut batch, previous, &settings.out);
    std::fs::create_dir_all(&settings.out).map_err(|e| {
        exit::aborted(format!(
            "cannot create the output directory `{}`: {e}",
            settings.out.display()
        ))
    })?;
    let connection = &settings.connection;
    // This collection's own stop (a 401, the `--wait` deadline), and the signals' through it.
    let stop = shutdown.child();
    let ctx = Ctx::new(
        client,
        &settings.poll,
        connection.retry.clone(),
        &stop,
        Some(settings.out.clone()),
        true,
    );
    // What a run that followed its tasks already knows (settled ones are not asked again).
    for t in &mut batch.tasks {
        if let Some(subs) = known.remove(&t.task_id) {
            t.subs = subs;
        }
    }
    let options = poller::Options {
        concurrency: connection.concurrency,
        wait: settings.wait,
        downloads: true,
        wait_timeout: settings.wait.then_some(settings.wait_timeout),
    };
    let schedule = Schedule::new(schedule::FIRST_QUERY, settings.poll.interval);
    let progress = progress::CollectProgress::new();
    progress.update(&Summary::of(&batch), 0);
    let ended = poller::drive(
        &mut batch,
        ctx,
        schedule,
        None,
        &options,
        Some(&progress),
        &stop,
        shutdown,
    )
    .await;
    progress.finish();
    let (queries, timed_out) = (ended.queries, ended.timed_out);
    let unauthorized = ended.unauthorized;

    // The outputs, whatever happened.
    let summary = Summary::of(&batch);
    settings
        .metrics
        .record_context("images_dir", settings.out.display().to_string().into());
    settings.metrics.record_images(&[
        ("done", summary.done),
        ("downloaded", summary.downloaded),
        ("failed", summary.failed),
        ("refused", summary.refused),
        ("pending", summary.pending),
        ("not_downloaded", summary.not_downloaded),
    ]);
    let source = settings
        .results
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| settings.results.display().to_string());
    let names = inputs::names(&batch, client, settings).await;
    // Written on the blocking pool: no file is written on the runtime's thread.
    let out = settings.out.clone();
    let for_inputs = settings.clone();
    let for_page = summary.clone();
    let written = tokio::task::spawn_blocking(move || {
        let extras = inputs::Extras {
            inputs: inputs::inputs(&batch, &for_inputs),
            names,
        };
        let page = html::render(&batch, &for_page, &source, &extras);
        images_csv::write_images_csv(&batch, &out).map_err(|e| (IMAGES_CSV, e))?;
        write_atomic(&out.join(INDEX_HTML), page.as_bytes()).map_err(|e| (INDEX_HTML, e))
    })
    .await
    .map_err(|e| exit::aborted(format!("the outputs' thread failed: {e}")))?;
    if let Err((what, e)) = written {
        return Err(exit::aborted(format!(
            "cannot write `{}`: {e}",
            settings.out.join(what).display()
        )));
    }

    crate::logging::say(&format!(
        "collect: {} images: {} done ({} downloaded, {} skipped: already on disk), {} failed, {} refused, {} pending{}; {} task queries, {:.1}s; {} and {} in {}\n",
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
        started.elapsed().as_secs_f64(),
        IMAGES_CSV,
        INDEX_HTML,
        settings.out.display(),
    ));
    if summary.without_task > 0 {
        crate::logging::say(&format!(
            "not collected: {} request{} of the results without a task (rejected, failed or unknown)\n",
            summary.without_task,
            if summary.without_task == 1 { "" } else { "s" }
        ));
    }
    if summary.pending > 0 {
        let why = if timed_out {
            "--timeout reached"
        } else if settings.wait {
            "stopped"
        } else {
            "run again, or use --wait"
        };
        crate::logging::say(&format!(
            "{} images still pending ({why})\n",
            summary.pending
        ));
    }
    if let Some(message) = unauthorized {
        return Err(exit::aborted(format!(
            "the API refused the credentials ({message}): collecting stopped; check HIDREAM_API_TOKEN"
        )));
    }
    if shutdown.signals() > 0 {
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

/// Follow the tasks a run submits, as they come from `feed`: query each until it is finished
/// (releasing its slot of the pending-task window), and — with `--collect DIR` — download its
/// images as they finish, while the run goes on submitting. When the feed closes, a window alone
/// stops at once; with `--collect` the loop waits (up to `collect --timeout`'s default) for the
/// rest. Returns what it learned of each task's images, for the final `collect` (which then asks
/// nothing about what is settled).
pub(crate) async fn follow(
    client: &Client,
    settings: &crate::settings::RunSettings,
    feed: tokio::sync::mpsc::UnboundedReceiver<poller::Tracked>,
    shutdown: &Shutdown,
) -> Known {
    let collect = settings.collect.as_ref();
    let out = collect.map(|c| c.out.clone());
    if let Some(out) = &out
        && let Err(e) = std::fs::create_dir_all(out)
    {
        tracing::warn!("cannot create `{}` yet: {e}", out.display());
    }
    let stop = shutdown.child();
    // Paced per rolling minute, not evenly: the tasks of a window are submitted together and
    // finish together, and spacing their queries would keep the last one's slot idle.
    let ctx = Ctx::new(
        client,
        &settings.poll,
        settings.connection.retry.clone(),
        &stop,
        out,
        false,
    );
    let options = poller::Options {
        concurrency: settings.connection.concurrency,
        wait: true,
        downloads: collect.is_some(),
        wait_timeout: collect.map(|c| c.wait_timeout),
    };
    let schedule = Schedule::new(schedule::FIRST_QUERY, settings.poll.interval);
    let mut batch = Batch::default();
    let lines = progress::CollectProgress::lines().filter(|_| collect.is_some());
    let ended = poller::drive(
        &mut batch,
        ctx,
        schedule,
        Some(feed),
        &options,
        lines.as_ref(),
        &stop,
        shutdown,
    )
    .await;
    if let Some(message) = ended.unauthorized {
        tracing::warn!(
            "the API refused the credentials for a task query ({message}): this run's tasks are no longer followed"
        );
    }
    let s = Summary::of(&batch);
    tracing::info!(
        "followed {} tasks with {} queries: {} images done ({} downloaded), {} failed, {} refused, {} pending",
        batch.tasks.len(),
        ended.queries,
        s.done,
        s.downloaded,
        s.failed,
        s.refused,
        s.pending
    );
    batch
        .tasks
        .into_iter()
        .map(|t| (t.task_id, t.subs))
        .collect()
}

/// Apply one poll to the batch; returns the message of a refused credential.
pub(crate) fn apply(batch: &mut Batch, polled: Polled) -> Option<String> {
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
                sub.completion = r.completion;
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
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
