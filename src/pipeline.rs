//! The pipeline of `run`: `stream::iter(lazily expanded requests).map(submit)
//! .buffer_unordered(--concurrency)`, consumed by one loop that is the only owner of the results
//! journal and the counters. It returns a [`Summary`] and prints nothing (the display is
//! [`crate::display`]'s).
//!
//! `submit` builds the body (and the base64 of local images) only when the request is dispatched,
//! so memory is bounded by what is in flight, and it always returns an [`Outcome`]: a failed
//! request is data, not an error, so the stream never stops early. Its attempts go through the
//! one retry driver ([`crate::retry::Retrier`]); each is logged durably in the write-ahead log
//! before it leaves, and an answer that proves no task was created is noted there too (see
//! [`crate::journal`]).
//!
//! Stopping: a 401/403 stops this run's dispatch (in-flight requests finish; exit 3); so does the
//! [`crate::breaker`], from the consumer, when K refusals in a row share a code (exit 4); the
//! first signal does the same (exit 130); the second drops what is in flight at once — their
//! write-ahead entries stay open, and the next run records them `unknown` and names them. The
//! three stops are one mechanism: the run's own child of the shutdown, which the source of
//! requests and the retry driver both watch.
//!
//! Where the time goes (overhead-bound benchmark, one thread): about two thirds in reqwest, hyper
//! and the kernel's TCP; the rest is expansion, the journal and the rows. Measured and kept: the
//! current-thread runtime, write-ahead lines group-committed on a thread of their own, rows of
//! outcomes that finish together in one write. Measured and dropped: a work-stealing runtime (one
//! or two workers), and expanding on a thread of its own (the channel costs more than the
//! expansion it moves).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::breaker::{Breaker, Tripped};
use crate::client::{Client, Limiters};
use crate::collect::batch::Task;
use crate::collect::poller::Tracked;
use crate::expand::Request;
use crate::journal::{self, Journal, SentLine, WalHandle};
use crate::results::{OutcomeCols, Rows, Status, World};
use crate::retry::classify::{self, Verdict};
use crate::retry::{Ending, Retrier, RetryPolicy, Step};
use crate::shutdown::Shutdown;

/// What happened to one dispatched request.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The request.
    pub request: Request,
    /// The request's position in the expansion (orders the final results).
    pub pos: u32,
    /// `None`: never attempted (the run was stopping); no row is written.
    pub status: Option<Status>,
    /// The task id, when submitted.
    pub task_id: String,
    /// The sub-task ids, when submitted.
    pub sub_task_ids: Vec<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's HTTP status.
    pub http_status: Option<u16>,
    /// The last answer's `code`.
    pub code: Option<i64>,
    /// The last attempt's message.
    pub message: String,
    /// When the first attempt went (RFC 3339).
    pub submitted_at: String,
    /// From the first attempt to the outcome.
    pub elapsed: Duration,
    /// The credentials were refused.
    pub unauthorized: bool,
    /// Its slot of the pending-task window, if `--max-pending` is set: handed on with a
    /// submitted task, released with any other outcome.
    pub slot: Option<OwnedSemaphorePermit>,
}

impl Outcome {
    fn new(request: Request, pos: u32) -> Outcome {
        Outcome {
            submitted_at: String::new(),
            request,
            pos,
            status: None,
            task_id: String::new(),
            sub_task_ids: Vec::new(),
            attempts: 0,
            http_status: None,
            code: None,
            message: String::new(),
            elapsed: Duration::ZERO,
            unauthorized: false,
            slot: None,
        }
    }
}

/// Whoever shows the pipeline's progress (the pipeline itself prints nothing).
pub(crate) trait Observer {
    /// The outcomes so far (several may have finished together).
    fn update(&self, summary: &Summary);
}

/// What a run's pipeline did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Outcomes of this run per status.
    pub counts: BTreeMap<Status, u64>,
    /// Images of the requests submitted by this run.
    pub submitted_images: u64,
    /// From the first dispatch to the last outcome.
    pub elapsed: Duration,
    /// The requests' own time, from their first attempt to their outcome, summed.
    pub busy: Duration,
    /// The API refused the credentials.
    pub unauthorized: bool,
    /// The breaker stopped dispatch: the refusals in a row, their code and message.
    pub breaker: Option<Tripped>,
}

impl Summary {
    /// Outcomes of this run.
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Outcomes of this run with `status`.
    pub(crate) fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }
}

/// What the pipeline sends with.
pub(crate) struct Dispatch {
    /// The shared HTTP client.
    pub client: Client,
    /// The server's world, written in every row.
    pub world: World,
    /// The images-per-minute limiters per endpoint (`--rate`), shared with the progress
    /// display, which reads their schedule.
    pub limiters: Arc<Limiters>,
    /// Attempts and delays.
    pub retry: RetryPolicy,
    /// `--retry-unknown`: an attempt without an answer is tried again.
    pub retry_unknown: bool,
    /// `--retry-code`: business codes of a 2xx answer retried as transient.
    pub retry_codes: BTreeSet<i64>,
    /// `--max-consecutive-rejections`: the breaker's K; 0 = off.
    pub max_consecutive_rejections: u32,
    /// HTTP requests in flight at once.
    pub concurrency: usize,
    /// Where submitted tasks are followed (`--max-pending`, `--collect`), if they are.
    pub follow: Option<Follow>,
}

/// How a run follows the tasks it submits: the pending-task window's slots (`--max-pending`),
/// and the feed of the polling loop (`crate::collect::poller`) that releases them.
pub(crate) struct Follow {
    /// One permit per task that may be submitted and unfinished; `None`: no window.
    pub slots: Option<Arc<Semaphore>>,
    /// Each submitted task goes here, with its slot, once its row is written.
    pub feed: mpsc::UnboundedSender<Tracked>,
}

/// What every submission shares.
struct Ctx {
    client: Client,
    world: World,
    limiters: Arc<Limiters>,
    /// Stopped by the run's shutdown, or by a 401/403 (this run's own stop).
    retrier: Retrier,
    retry_unknown: bool,
    retry_codes: BTreeSet<i64>,
    wal: WalHandle,
    /// The pending-task window (`--max-pending`).
    slots: Option<Arc<Semaphore>>,
}

/// Submit `requests` (each with its position in the expansion), append their rows to `journal`,
/// and return what happened. An error is a results file that cannot be written.
pub(crate) async fn run(
    dispatch: Dispatch,
    requests: impl Iterator<Item = (u32, Request)>,
    journal: &mut Journal,
    rows: &Rows,
    progress: &impl Observer,
    shutdown: &Shutdown,
) -> Result<Summary, std::io::Error> {
    let mut breaker = Breaker::new(
        dispatch.max_consecutive_rejections,
        dispatch.retry_codes.clone(),
    );
    let ctx = Arc::new(Ctx {
        client: dispatch.client,
        world: dispatch.world,
        limiters: dispatch.limiters,
        retrier: Retrier::new(dispatch.retry, shutdown.child()),
        retry_unknown: dispatch.retry_unknown,
        retry_codes: dispatch.retry_codes,
        wal: journal.wal(),
        slots: dispatch.follow.as_ref().and_then(|f| f.slots.clone()),
    });
    let feed = dispatch.follow.map(|f| f.feed);
    let world = ctx.world;
    // A signal that came while the run started stops it before it dispatches anything.
    let mut stop_seen = shutdown.is_stopping();
    if stop_seen {
        tracing::warn!("interrupted while starting: nothing is sent");
    }
    let source_ctx = ctx.clone();
    let source = requests.take_while(move |_| !source_ctx.retrier.shutdown.is_stopping());
    let mut stream = futures::stream::iter(source)
        .map(|(pos, r)| submit(ctx.clone(), pos, r))
        .buffer_unordered(dispatch.concurrency);

    let started = Instant::now();
    let mut summary = Summary::default();
    loop {
        tokio::select! {
            next = stream.next() => {
                let Some(outcome) = next else { break };
                // This outcome and any others already finished are appended, then written
                // together before the loop waits again.
                let mut next = Some(outcome);
                let mut finished = false;
                // The task ids of this batch, named if the results cannot be written.
                let mut tasks: Vec<(uuid::Uuid, String)> = Vec::new();
                while let Some(outcome) = next.take() {
                    // The breaker sees the outcome before the stream is polled again (which
                    // would dispatch the next request).
                    let trips = outcome
                        .status
                        .is_some_and(|status| breaker.observe(status, outcome.code, &outcome.message));
                    record(&mut summary, journal, rows, world, outcome, &mut tasks, feed.as_ref())?;
                    if trips {
                        ctx.retrier.shutdown.stop_dispatch();
                        if let Some(t) = breaker.tripped() {
                            tracing::warn!(
                                "the API refused {} requests in a row with code {}: no new requests; waiting for those in flight",
                                t.count,
                                t.code
                            );
                        }
                    }
                    match stream.next().now_or_never() {
                        Some(Some(o)) => next = Some(o),
                        Some(None) => finished = true,
                        None => {}
                    }
                }
                journal.flush(tasks)?;
                progress.update(&summary);
                if finished {
                    break;
                }
            }
            () = shutdown.stopping(), if !stop_seen => {
                stop_seen = true;
                tracing::warn!("interrupted: no new requests; waiting for those in flight (signal again to stop at once)");
            }
            () = shutdown.stopped_now() => {
                tracing::warn!("interrupted again: stopping now; the requests in flight stay in the write-ahead log, and the next run records them `unknown`");
                // Outcomes already in (answers that arrived) are kept, not abandoned.
                let mut tasks = Vec::new();
                while let Some(Some(outcome)) = stream.next().now_or_never() {
                    record(&mut summary, journal, rows, world, outcome, &mut tasks, feed.as_ref())?;
                }
                journal.flush(tasks)?;
                break;
            }
        }
    }
    summary.elapsed = started.elapsed();
    summary.breaker = breaker.tripped().cloned();
    Ok(summary)
}

/// Count an outcome and append its row (if it was attempted); a submitted task then goes to the
/// `feed` with its slot (any other outcome's slot is released here).
fn record(
    summary: &mut Summary,
    journal: &mut Journal,
    rows: &Rows,
    world: World,
    mut outcome: Outcome,
    tasks: &mut Vec<(uuid::Uuid, String)>,
    feed: Option<&mpsc::UnboundedSender<Tracked>>,
) -> std::io::Result<()> {
    summary.unauthorized |= outcome.unauthorized;
    let slot = outcome.slot.take();
    let Some(status) = outcome.status else {
        return Ok(());
    };
    if status == Status::Submitted {
        summary.submitted_images += u64::from(outcome.request.body.images());
        tasks.push((outcome.request.id, outcome.task_id.clone()));
    }
    let row = outcome_row(rows, &outcome, status, world);
    journal.append(outcome.request.id, outcome.pos, &row)?;
    if status == Status::Submitted
        && let Some(feed) = feed
    {
        let task = Task::submitted(
            outcome.request.id.to_string(),
            outcome.request.job.id.clone(),
            outcome.request.body.kind(),
            std::mem::take(&mut outcome.task_id),
            &outcome.sub_task_ids,
        );
        // The loop is gone only when the run is stopping: the slot goes with the task.
        let _ = feed.send(Tracked { task, slot });
    }
    *summary.counts.entry(status).or_default() += 1;
    summary.busy += outcome.elapsed;
    // `unknown` needs a person (the task may exist, and be billed): a warning, shown with -q.
    macro_rules! outcome_line {
        ($level:ident) => {
            tracing::$level!(
                request_id = %outcome.request.id,
                job = %outcome.request.job.id,
                status = status.as_str(),
                http_status = outcome.http_status,
                code = outcome.code,
                attempt = outcome.attempts,
                "{} {}: {}",
                outcome.request.job.id,
                status.as_str(),
                crate::logging::safe(&outcome.message)
            )
        };
    }
    match status {
        Status::Submitted => {}
        Status::Unknown => outcome_line!(warn),
        _ => outcome_line!(info),
    }
    Ok(())
}

/// Submit one request: every attempt through the rate limiter, logged in the write-ahead log
/// before it leaves, retried as [`crate::retry::classify::submission`] says.
async fn submit(ctx: Arc<Ctx>, pos: u32, request: Request) -> Outcome {
    let mut out = Outcome::new(request, pos);
    if ctx.retrier.shutdown.is_stopping() {
        return out;
    }
    let kind = out.request.body.kind();
    let images = out.request.body.images();
    // A slot of the pending-task window first: nothing is built or sent without one.
    if let Some(slots) = &ctx.slots {
        let _waiting = (slots.available_permits() == 0)
            .then(|| crate::activity::waiting(crate::activity::Wait::Slot));
        tokio::select! {
            permit = slots.clone().acquire_owned() => out.slot = permit.ok(),
            () = ctx.retrier.shutdown.stopping() => return out,
        }
    }
    let body = match out.request.wire() {
        Ok(b) => b,
        Err(e) => {
            out.status = Some(Status::Failed);
            out.submitted_at = journal::now_rfc3339();
            out.message = format!("cannot read a local image: {e}");
            return out;
        }
    };
    let mut started = Instant::now();
    // What the request is if it stops here without an answer that settles it: `failed` (sent
    // again) only if no attempt so far may have created a task; once one may have (no answer,
    // a gateway timeout), `unknown` for good, whatever later attempts say.
    let mut last = Status::Failed;
    let gate = ctx.limiters.gate(kind, images);
    let ending = ctx
        .retrier
        .drive(gate, kind.as_str(), async |n| {
            out.attempts = n;
            let at = journal::now_rfc3339();
            if n == 1 {
                out.submitted_at = at.clone();
                started = Instant::now();
            }
            // Durable before it leaves (journal invariant 1).
            let sent = SentLine {
                id: out.request.id,
                attempt: n,
                at: &at,
                first_at: &out.submitted_at,
                world: ctx.world,
                kind: Some(kind),
                job: &out.request.job.id,
            };
            if let Err(e) = ctx.wal.sent(sent).await {
                out.attempts = n - 1;
                out.message = format!("cannot write the write-ahead log, so it was not sent: {e}");
                return Step::Done(if n == 1 { Status::Failed } else { last });
            }
            let attempt = ctx.client.submit(kind, &body).await;
            if let crate::client::Attempt::Answered {
                status, envelope, ..
            } = &attempt
            {
                out.http_status = Some(*status);
                out.code = envelope.as_ref().ok().map(|e| e.code);
                if *status == 429
                    && let Some(limiter) = ctx.limiters.get(kind)
                    && limiter.slow_down()
                {
                    tracing::warn!(
                        "{kind}: the API answered HTTP 429; sending evenly at --rate from now on"
                    );
                }
            } else {
                out.http_status = None;
                out.code = None;
            }
            let verdict = classify::submission(attempt, &ctx.retry_codes);
            tracing::debug!(
                request_id = %out.request.id,
                job = %out.request.job.id,
                attempt = n,
                http_status = out.http_status,
                code = out.code,
                "{}",
                crate::logging::safe(&verdict.to_string())
            );
            match verdict {
                Verdict::Submitted {
                    task_id,
                    sub_task_ids,
                } => {
                    out.task_id = task_id;
                    out.sub_task_ids = sub_task_ids;
                    out.message.clear();
                    Step::Done(Status::Submitted)
                }
                Verdict::Rejected { code, message } => {
                    out.code = code.or(out.code);
                    out.message = message;
                    Step::Done(Status::Rejected)
                }
                Verdict::Failed { reason } => {
                    // Cut off before it was complete: no task, and another attempt would fail
                    // alike.
                    ctx.wal.noted(out.request.id, n, "not-sent");
                    out.message = reason;
                    Step::Done(last)
                }
                Verdict::Unauthorized { message } => {
                    ctx.retrier.shutdown.stop_dispatch();
                    out.unauthorized = true;
                    out.message = message;
                    Step::Done(Status::Failed)
                }
                Verdict::Unknown { reason } => {
                    last = Status::Unknown;
                    out.message.clone_from(&reason);
                    if ctx.retry_unknown {
                        Step::Retry {
                            reason,
                            retry_after: None,
                        }
                    } else {
                        Step::Done(Status::Unknown)
                    }
                }
                Verdict::Retry {
                    reason,
                    retry_after,
                } => {
                    // This answer proves no task was created: a crash from here on leaves the
                    // request `failed`, not `unknown`. A 2xx retried for its code
                    // (`--retry-code`) is noted with it: `200:2001`.
                    let what = match (out.http_status, out.code) {
                        (None, _) => "not-sent".to_string(),
                        (Some(s @ 200..=299), Some(code)) => format!("{s}:{code}"),
                        (Some(s), _) => s.to_string(),
                    };
                    ctx.wal.noted(out.request.id, n, &what);
                    out.message.clone_from(&reason);
                    Step::Retry {
                        reason,
                        retry_after,
                    }
                }
            }
        })
        .await;
    out.status = match ending {
        Ending::Done(status) => Some(status),
        // Stopped before any attempt went out: no row.
        Ending::Stopped { attempts: 0, .. } => None,
        // Out of attempts, or stopped between them: a retry after a transient error becomes
        // `failed` (resent next run); after an unknown outcome it stays `unknown`.
        Ending::Exhausted { .. } | Ending::Stopped { .. } => Some(last),
    };
    out.elapsed = started.elapsed();
    out
}
/// A finished outcome's row.
fn outcome_row<'a>(
    rows: &Rows,
    o: &'a Outcome,
    status: Status,
    world: World,
) -> Vec<std::borrow::Cow<'a, str>> {
    rows.row(
        &o.request,
        OutcomeCols {
            status: status.as_str(),
            task_id: &o.task_id,
            sub_task_ids: o.sub_task_ids.join(";").into(),
            attempts: o.attempts.to_string().into(),
            http_status: o
                .http_status
                .map(|s| s.to_string())
                .unwrap_or_default()
                .into(),
            code: o.code.map(|c| c.to_string()).unwrap_or_default().into(),
            message: world.mark(&o.message),
            submitted_at: &o.submitted_at,
            elapsed_ms: o.elapsed.as_millis().to_string().into(),
        },
    )
}
