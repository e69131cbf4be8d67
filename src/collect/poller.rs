//! The polling loop `collect` and `run` share: tasks are queried when their [`Schedule`] says,
//! `--concurrency` at a time and paced by `--poll-rate` (the limiter in [`Ctx`]); each answer is
//! applied to the [`Batch`] by the one loop that owns it.
//!
//! `collect` hands it the tasks of a results file, all due at once. `run` hands it an empty batch
//! and a **feed**: each task it submits arrives as a [`Tracked`], first queried
//! [`Schedule::first`] after its submission, with the slot of the pending-task window
//! (`--max-pending`) it holds. Invariant of the window: a slot is released only when the task it
//! was taken for is **finished** (every image done, failed or refused) or can no longer be asked
//! about (the API refused the query); so the run never has more than `--max-pending` submitted,
//! unfinished tasks of its own, as the API counts its concurrency limit. When the feed closes (the
//! last submission is answered) the loop either stops at once (a window without `--collect`:
//! nothing is waited for) or goes on until every task is settled or the wait times out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use super::batch::{Batch, Task};
use super::fetch::{self, Ctx, Poll, Polled};
use super::progress::CollectProgress;
use super::schedule::Schedule;
use crate::logging::STATUS_EVERY;
use crate::shutdown::Shutdown;

/// How often the bar of `collect` is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(200);

/// A task `run` submitted, handed to the loop with its slot of the pending-task window.
#[derive(Debug)]
pub(crate) struct Tracked {
    /// The task, as its results row would load it.
    pub task: Task,
    /// Its slot, when `--max-pending` is set: released when the task is finished.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Queries in flight at once.
    pub concurrency: usize,
    /// Query each task again until it is settled (`--wait`); otherwise once.
    pub wait: bool,
    /// Whether finished images are downloaded (`--collect DIR`, `collect`).
    pub downloads: bool,
    /// How long the loop goes on once there is nothing more to come: from the start for
    /// `collect --wait`, from the feed's end for `run`. `None`: no wait after the feed closes.
    pub wait_timeout: Option<Duration>,
}

/// How the loop ended.
#[derive(Debug, Default)]
pub(crate) struct Ended {
    /// Task queries made.
    pub queries: u64,
    /// The API refused the credentials (the message).
    pub unauthorized: Option<String>,
    /// The wait timed out with tasks unsettled.
    pub timed_out: bool,
}

/// The task a query is about, built for the future that makes it.
fn poll_of(batch: &Batch, i: usize) -> Poll {
    let t = &batch.tasks[i];
    Poll {
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
    }
}

async fn next_tracked(feed: &mut Option<mpsc::UnboundedReceiver<Tracked>>) -> Option<Tracked> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The tasks still to be asked about.
fn unsettled(batch: &Batch, options: &Options) -> u64 {
    batch
        .tasks
        .iter()
        .filter(|t| t.needs_query(options.downloads))
        .count() as u64
}

/// Run the loop over `batch` (tasks already in it are due at once) and, if given, the `feed`.
/// `stop` is the loop's own stop (a 401, the wait's end); `shutdown` brings the signals.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive(
    batch: &mut Batch,
    ctx: Arc<Ctx>,
    mut schedule: Schedule,
    mut feed: Option<mpsc::UnboundedReceiver<Tracked>>,
    options: &Options,
    progress: Option<&CollectProgress>,
    stop: &Shutdown,
    shutdown: &Shutdown,
) -> Ended {
    let now = Instant::now();
    for (i, t) in batch.tasks.iter().enumerate() {
        if t.needs_query(options.downloads) {
            schedule.add(i, now);
        }
    }
    let mut ended = Ended::default();
    let mut inflight = FuturesUnordered::new();
    let mut slots: HashMap<usize, OwnedSemaphorePermit> = HashMap::new();
    let mut feed_open = feed.is_some();
    let mut deadline = match feed_open {
        true => None,
        false => options.wait_timeout.map(|w| now + w),
    };
    let far = now + Duration::from_secs(365 * 24 * 3600);
    let mut first_signal_seen = shutdown.is_stopping();
    let mut ticker = tokio::time::interval(STATUS_EVERY);
    ticker.tick().await;
    let mut drawn = now;
    // Once everything is sent (`run --collect`): the tasks still waited for, as the progress
    // display names the wait ([`crate::activity`]), recounted at most every [`BAR_EVERY`].
    let mut tasks_wait: Option<(crate::activity::Waiting, Instant)> = None;
    loop {
        if !stop.is_stopping() {
            let now = Instant::now();
            while inflight.len() < options.concurrency {
                let Some(i) = schedule.pop_due(now) else {
                    break;
                };
                if batch.tasks[i].needs_query(options.downloads) {
                    inflight.push(fetch::poll(ctx.clone(), poll_of(batch, i)));
                }
            }
        }
        let waiting = schedule.len() > 0 && !stop.is_stopping();
        if inflight.is_empty() && !waiting && !feed_open {
            break;
        }
        if stop.is_stopping() {
            // Nothing more is queried: no slot may be held for a task nobody will ask about.
            slots.clear();
        }
        let next_due = schedule.next_due().filter(|_| waiting);
        tokio::select! {
            Some(polled) = inflight.next(), if !inflight.is_empty() => {
                if !matches!(polled, Polled::Skipped) {
                    ended.queries += 1;
                }
                let task = polled.task();
                if let Some(message) = super::apply(batch, polled) {
                    ended.unauthorized.get_or_insert(message);
                    stop.stop_dispatch();
                }
                // The bar, at most every [`BAR_EVERY`]: counting goes over every image.
                if let Some(p) = progress.filter(|p| p.draws())
                    && drawn.elapsed() >= BAR_EVERY
                {
                    p.update(&super::Summary::of(batch), ended.queries);
                    drawn = Instant::now();
                }
                if let Some((w, counted)) = &mut tasks_wait
                    && counted.elapsed() >= BAR_EVERY
                {
                    w.set(crate::activity::Wait::Tasks { count: unsettled(batch, options) });
                    *counted = Instant::now();
                }
                if let Some(i) = task {
                    let t = &batch.tasks[i];
                    if t.finished() || t.query_given_up {
                        slots.remove(&i);
                        schedule.finished(i, Instant::now());
                    }
                    if options.wait && t.needs_query(options.downloads) {
                        schedule.again(i, Instant::now());
                    }
                }
            }
            tracked = next_tracked(&mut feed), if feed_open => match tracked {
                Some(Tracked { task, slot }) => {
                    let i = batch.tasks.len();
                    batch.tasks.push(task);
                    schedule.submitted(i, Instant::now());
                    if let Some(slot) = slot
                        && !stop.is_stopping()
                    {
                        slots.insert(i, slot);
                    }
                }
                None => {
                    feed_open = false;
                    match options.wait_timeout {
                        None => stop.stop_dispatch(),
                        Some(w) => {
                            deadline = Some(Instant::now() + w);
                            let waiting = unsettled(batch, options);
                            if waiting > 0 {
                                tasks_wait = Some((
                                    crate::activity::waiting(crate::activity::Wait::Tasks { count: waiting }),
                                    Instant::now(),
                                ));
                                tracing::info!(
                                    "all sent; waiting for the {waiting} tasks not collected yet (at most {})",
                                    humantime::format_duration(w)
                                );
                            }
                        }
                    }
                }
            },
            () = tokio::time::sleep_until(next_due.unwrap_or(far)), if next_due.is_some() && inflight.len() < options.concurrency => {}
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !ended.timed_out => {
                ended.timed_out = true;
                stop.stop_dispatch();
                tracing::warn!("--timeout reached: no new queries; waiting for those in flight");
            }
            () = shutdown.stopping(), if !first_signal_seen => {
                first_signal_seen = true;
                tracing::warn!("interrupted: no new queries; waiting for those in flight (signal again to stop at once)");
            }
            () = shutdown.stopped_now() => {
                tracing::warn!("interrupted again: stopping now");
                break;
            }
            _ = ticker.tick(), if progress.is_some_and(CollectProgress::wants_status) => {
                if let Some(p) = progress {
                    p.status(&super::Summary::of(batch), ended.queries, schedule.len());
                }
            }
        }
    }
    // The window's slots go with the loop: nothing is submitted after it.
    drop(slots);
    ended.timed_out &= batch.tasks.iter().any(|t| t.needs_query(options.downloads));
    ended
}
