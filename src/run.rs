//! `run`: the pipeline (SPEC §1.1, §4–§6).
//!
//! `stream::iter(lazily expanded requests).map(submit).buffer_unordered(--concurrency)`, consumed
//! by one loop that is the only owner of the results journal, the counters and the progress
//! display. `submit` builds the body (and the base64 of local images) only when the request is
//! dispatched, so memory is bounded by what is in flight, and it always returns an [`Outcome`]: a
//! failed request is data, not an error, so the stream never stops early.
//!
//! Before anything is sent: the settings are checked, the manifests validated (and read once:
//! every later pass reads the same bytes), the server identified (the simulator or the API, see
//! [`World`]), the results locked and read ([`journal::Prior`]), and the plan made in one pass over
//! the expansion ([`crate::plan`]) — which also lays out the compacted results in expansion order.
//! A first run (no earlier rows, nothing in flight, no shard) skips that pass: its plan is
//! validation's counts. A dry run stops after the plan and writes nothing.
//!
//! Every attempt is logged durably in the write-ahead log before it leaves, and an attempt
//! answered in a way that proves no task was created is noted there too (see [`crate::journal`]).
//!
//! Where the time goes (overhead-bound benchmark, one thread): about two thirds in reqwest, hyper
//! and the kernel's TCP; the rest is expansion, the journal and the rows. Measured and kept: the
//! current-thread runtime, write-ahead lines group-committed on a thread of their own, rows of
//! outcomes that finish together in one write. Measured and dropped: a work-stealing runtime (one
//! or two workers), and expanding on a thread of its own (the channel costs more than the
//! expansion it moves).
//!
//! Stopping: a 401/403 sets `abort` (no new dispatch, in-flight requests finish, exit 3); the
//! first SIGINT/SIGTERM sets `stop` (the same, exit 130); a second one drops what is in flight at
//! once — their write-ahead entries stay open, and the next run records them `unknown` and names
//! them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};

use crate::api::Kind;
use crate::cli::{ConnectionArgs, RunArgs};
use crate::client::retry::{self, Backoff, Verdict};
use crate::client::{BaseUrl, Client, SIMULATOR_TOKEN, Token};
use crate::expand::{self, Request};
use crate::journal::{self, Compactor, Journal, Prior, SentLine, WalHandle};
use crate::manifest::Manifest;
use crate::plan::{Flags, Plan};
use crate::rate::Limiter;
use crate::results::{OutcomeCols, Rows, Status, World};
use crate::units::Shard;
use crate::{commands, env_vars, exit};

/// `--rate` default: the API's documented text-to-image limit.
pub const DEFAULT_RATE: u32 = crate::api::DOCUMENTED_TXT2IMG_RATE;
/// How often a status line is logged when stderr is not a terminal.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The API connection of `run` and `collect`: the client, and the in-process simulator when
/// `--simulate` started one (kept alive as long as this value).
pub struct Connection {
    pub client: Client,
    pub simulator: Option<crate::sim::Simulator>,
}

/// Build the connection: `--simulate` starts the simulator and uses a dummy token; otherwise the
/// token must be in `HIDREAM_API_TOKEN` (exit 2 before anything is sent).
pub async fn connect(args: &ConnectionArgs, timeout: Duration) -> anyhow::Result<Connection> {
    let pool = args.concurrency as usize;
    if args.simulate {
        // The `simulate` command's default latency, so a rehearsal feels like the real API.
        let config = crate::sim::SimConfig {
            latency: crate::units::Latency::Fixed(Duration::from_millis(50)),
            ..crate::sim::SimConfig::default()
        };
        let sim = crate::sim::start(config)
            .await
            .map_err(|e| exit::aborted(format!("cannot start the simulator: {e}")))?;
        tracing::info!("simulator listening on {}", sim.base_url());
        let base = BaseUrl::parse(&sim.base_url()).map_err(exit::invalid)?;
        let token = Token::new(SIMULATOR_TOKEN.into()).expect("non-empty");
        let client = Client::new(base, &token, timeout, pool).map_err(exit::invalid)?;
        return Ok(Connection {
            client,
            simulator: Some(sim),
        });
    }
    let base = match &args.base_url {
        Some(u) => BaseUrl::parse(u).map_err(|m| exit::invalid(format!("--base-url: {m}")))?,
        None => BaseUrl::REAL,
    };
    let token = Token::from_env().ok_or_else(|| {
        exit::invalid(format!(
            "`{}` is not set: export your HiDream API token (or use --simulate to try the tool); nothing was sent",
            env_vars::API_TOKEN
        ))
    })?;
    let client = Client::new(base, &token, timeout, pool).map_err(exit::invalid)?;
    Ok(Connection {
        client,
        simulator: None,
    })
}

/// What happened to one dispatched request.
#[derive(Debug)]
pub struct Outcome {
    pub request: Request,
    /// The request's position in the expansion (orders the final results).
    pub pos: u32,
    /// `None`: never attempted (the run was stopping); no row is written.
    pub status: Option<Status>,
    pub task_id: String,
    pub sub_task_ids: Vec<String>,
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub code: Option<i64>,
    pub message: String,
    pub submitted_at: String,
    pub elapsed: Duration,
    /// The credentials were refused.
    pub unauthorized: bool,
}

/// What every submission shares.
struct Ctx {
    client: Client,
    world: World,
    limiters: BTreeMap<Kind, Limiter>,
    backoff: Backoff,
    max_attempts: u32,
    retry_unknown: bool,
    wal: WalHandle,
    /// A `Retry-After` over `--backoff-max` was logged.
    capped_logged: AtomicBool,
    /// 401/403 seen: dispatch nothing more.
    abort: AtomicBool,
    /// A signal arrived: dispatch nothing more.
    stop: AtomicBool,
    stop_notify: tokio::sync::Notify,
}

impl Ctx {
    fn stopping(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst)
    }

    /// Completes once the run is stopping (registered before the flag is read, so a stop that
    /// happens in between is not missed).
    async fn stopped(&self) {
        loop {
            let notified = self.stop_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }

    /// Sleep, unless the run is stopping; returns false when cut short.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping(),
            _ = self.stopped() => false,
        }
    }
}

/// Submit one request: every attempt through the rate limiter, logged in the write-ahead log
/// before it leaves, retried per SPEC §5.
async fn submit(ctx: Arc<Ctx>, pos: u32, request: Request) -> Outcome {
    let mut started = Instant::now();
    let mut out = Outcome {
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
    };
    if ctx.stopping() {
        return out;
    }
    let kind = out.request.body.kind();
    let images = out.request.body.images();
    let body = match out.request.wire() {
        Ok(b) => b,
        Err(e) => {
            out.status = Some(Status::Failed);
            out.submitted_at = journal::now_rfc3339();
            out.message = format!("cannot read a local image: {e}");
            return out;
        }
    };
    let mut rng = fastrand::Rng::new();
    // What the request is if it stops here without an answer that settles it: `failed` (sent
    // again) only if no attempt so far may have created a task; once one may have (no answer,
    // a gateway timeout), `unknown` for good, whatever later attempts say.
    let mut last = Status::Failed;
    loop {
        if let Some(limiter) = ctx.limiters.get(&kind) {
            tokio::select! {
                _ = limiter.acquire(images) => {}
                _ = ctx.stopped() => {}
            }
        }
        if ctx.stopping() {
            // Stopped before this attempt went out: a retry after a transient error becomes
            // `failed` (resent next run); after an unknown outcome it stays `unknown`.
            if out.attempts > 0 {
                out.status = Some(last);
            }
            break;
        }
        out.attempts += 1;
        let at = journal::now_rfc3339();
        if out.attempts == 1 {
            out.submitted_at = at.clone();
            started = Instant::now();
        }
        // Durable before it leaves (journal invariant 1).
        let sent = SentLine {
            id: out.request.id,
            attempt: out.attempts,
            at: &at,
            first_at: &out.submitted_at,
            world: ctx.world,
            kind: Some(kind),
            job: &out.request.job.id,
        };
        if let Err(e) = ctx.wal.sent(sent).await {
            out.attempts -= 1;
            out.status = Some(if out.attempts == 0 {
                Status::Failed
            } else {
                last
            });
            out.message = format!("cannot write the write-ahead log, so it was not sent: {e}");
            break;
        }
        let attempt = ctx.client.submit(kind, &body).await;
        if let crate::client::Attempt::Answered {
            status, envelope, ..
        } = &attempt
        {
            out.http_status = Some(*status);
            out.code = envelope.as_ref().ok().map(|e| e.code);
            if *status == 429
                && let Some(limiter) = ctx.limiters.get(&kind)
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
        let verdict = retry::classify(attempt);
        tracing::debug!(
            request_id = %out.request.id,
            job = %out.request.job.id,
            attempt = out.attempts,
            http_status = out.http_status,
            code = out.code,
            "{}",
            crate::logging::safe(&format!("{verdict:?}"))
        );
        if matches!(verdict, Verdict::Unknown { .. }) {
            last = Status::Unknown;
        }
        let (retry_after, terminal) = match verdict {
            Verdict::Submitted {
                task_id,
                sub_task_ids,
            } => {
                out.status = Some(Status::Submitted);
                out.task_id = task_id;
                out.sub_task_ids = sub_task_ids;
                out.message.clear();
                break;
            }
            Verdict::Rejected { code, message } => {
                out.status = Some(Status::Rejected);
                out.code = code.or(out.code);
                out.message = message;
                break;
            }
            Verdict::Failed { reason } => {
                // Cut off before it was complete: no task, and another attempt would fail alike.
                ctx.wal.noted(out.request.id, out.attempts, "not-sent");
                out.status = Some(last);
                out.message = reason;
                break;
            }
            Verdict::Unauthorized { message } => {
                ctx.abort.store(true, Ordering::SeqCst);
                ctx.stop_notify.notify_waiters();
                out.unauthorized = true;
                out.status = Some(Status::Failed);
                out.message = message;
                break;
            }
            Verdict::Unknown { reason } => {
                out.message = reason;
                (
                    None,
                    if ctx.retry_unknown {
                        None
                    } else {
                        Some(Status::Unknown)
                    },
                )
            }
            Verdict::Retry {
                reason,
                retry_after,
            } => {
                // This answer proves no task was created: a crash from here on leaves the
                // request `failed`, not `unknown`.
                let what = out
                    .http_status
                    .map_or_else(|| "not-sent".to_string(), |s| s.to_string());
                ctx.wal.noted(out.request.id, out.attempts, &what);
                out.message = reason;
                (retry_after, None)
            }
        };
        if let Some(status) = terminal {
            out.status = Some(status);
            break;
        }
        if out.attempts >= ctx.max_attempts {
            out.status = Some(last);
            break;
        }
        if ctx.backoff.caps(retry_after) && !ctx.capped_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "{kind}: the API asked to wait {} (Retry-After); waiting at most --backoff-max {}",
                humantime::format_duration(retry_after.unwrap_or_default()),
                humantime::format_duration(ctx.backoff.max)
            );
        }
        let delay = ctx.backoff.delay(out.attempts, retry_after, &mut rng);
        if !ctx.pause(delay).await {
            out.status = Some(last);
            break;
        }
    }
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

/// Which server the run talks to. `--simulate` is the simulator and no `--base-url` the API; a
/// `--base-url` is asked (one `HEAD`, without the token, retried like a submission while it cannot
/// connect): the simulator marks every answer.
async fn world(args: &ConnectionArgs, timeout: Duration) -> anyhow::Result<World> {
    if args.simulate {
        return Ok(World::Simulator);
    }
    let Some(base) = &args.base_url else {
        return Ok(World::Api);
    };
    let parsed = BaseUrl::parse(base).map_err(|m| exit::invalid(format!("--base-url: {m}")))?;
    let token = Token::new("not-sent".into()).expect("non-empty");
    let client = Client::new(parsed, &token, timeout, 1).map_err(exit::invalid)?;
    let backoff = Backoff {
        base: args.backoff,
        max: args.backoff_max,
    };
    let mut rng = fastrand::Rng::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.world().await {
            Ok(w) => return Ok(w),
            Err(e) if attempt >= args.max_attempts => {
                return Err(exit::aborted(format!(
                    "cannot reach --base-url `{base}` ({e}); a run first asks it whether it is the simulator; nothing was sent"
                )));
            }
            Err(_) => tokio::time::sleep(backoff.delay(attempt, None, &mut rng)).await,
        }
    }
}

/// A run never takes rows answered by the other server for its own (see [`World`]).
fn check_world(prior: &Prior, world: World) -> anyhow::Result<()> {
    let (api, sim) = prior.worlds();
    let shown = prior.paths().display();
    match world {
        World::Api if sim > 0 => Err(exit::invalid(format!(
            "the results {shown} hold {sim} request{} answered by the simulator (a rehearsal such as `run --simulate`); a run against the HiDream API would take their task ids for its own and skip them. Give this run its own results file (for example `-o results-live.csv`), or move {shown} away; nothing was sent",
            if sim == 1 { "" } else { "s" }
        ))),
        World::Simulator if api > 0 => Err(exit::invalid(format!(
            "the results {shown} hold {api} request{} answered by the HiDream API; a rehearsal against the simulator would mix its task ids with them. Give the rehearsal its own results file (for example `-o rehearsal.csv`); nothing was sent",
            if api == 1 { "" } else { "s" }
        ))),
        _ => Ok(()),
    }
}

/// Where the plan's pass puts what it learns: nowhere (a dry run), or the compaction.
enum Target {
    Dry(Box<Prior>),
    Compact(Box<Compactor>),
}

impl Target {
    fn lookup(&self, id: &uuid::Uuid) -> Option<(Status, World)> {
        match self {
            Target::Dry(p) => p.lookup(id),
            Target::Compact(c) => c.lookup(id),
        }
    }

    fn contains(&self, id: &uuid::Uuid) -> bool {
        match self {
            Target::Dry(p) => p.contains(id),
            Target::Compact(c) => c.prior().contains(id),
        }
    }

    fn place(&mut self, pos: u32, request: &Request) -> std::io::Result<()> {
        match self {
            Target::Dry(_) => Ok(()),
            Target::Compact(c) => c.place(pos, request),
        }
    }
}

fn in_shard(shard: Option<Shard>, id: &uuid::Uuid) -> bool {
    shard.is_none_or(|s| s.contains(id))
}

/// `run`. `signals` yields once per SIGINT/SIGTERM.
pub async fn run(args: RunArgs, signals: impl Stream<Item = ()> + Unpin) -> anyhow::Result<u8> {
    crate::settings::check_run(&args).map_err(exit::invalid)?;
    let (manifests, report) = commands::load_valid(&args.manifest)?;
    let run_id = args.manifest.run_id.as_deref();
    let flags = Flags {
        retry_rejected: args.retry_rejected,
        retry_unknown: args.retry_unknown,
    };
    // A dry run sends nothing and needs no token.
    let conn = match args.dry_run {
        true => None,
        false => Some(connect(&args.connection, args.timeout).await?),
    };
    let paths = journal::Paths::resolve(&args.out).map_err(|e| {
        exit::aborted(format!(
            "cannot use the results `{}`: {e}",
            args.out.display()
        ))
    })?;
    let shown = paths.display();
    let unwritable =
        |e: std::io::Error| exit::aborted(format!("cannot write the results {shown}: {e}"));
    let _lock = journal::lock(&paths, !args.dry_run).map_err(|e| exit::aborted(e.to_string()))?;
    let world = world(&args.connection, args.timeout).await?;
    let prior = Prior::read(paths).map_err(|e| exit::aborted(e.to_string()))?;
    check_world(&prior, world)?;
    let header = crate::results::header(&manifests, prior.header());
    let rows = Rows::new(&header);
    let orphans = prior.orphans().to_vec();

    // The plan: one pass over the expansion, which also lays out the compacted results. A first
    // run (no earlier rows, nothing in flight, no shard) sends every request: its plan is
    // validation's counts, and the pass is skipped.
    let mut plan = Plan::default();
    let first_run = prior.is_empty() && args.shard.is_none();
    let mut target = if args.dry_run {
        Target::Dry(Box::new(prior))
    } else {
        Target::Compact(Box::new(prior.compactor(header).map_err(unwritable)?))
    };
    if first_run {
        for (kind, (requests, images)) in report.counts.per_kind() {
            plan.total += requests;
            plan.new += requests;
            *plan.requests.entry(kind).or_default() += requests;
            *plan.images.entry(kind).or_default() += images;
        }
    } else {
        let mut legacy = 0u64;
        for (pos, request) in positioned(&manifests, run_id) {
            if !in_shard(args.shard, &request.id) {
                continue;
            }
            // A request the results do not hold may be there under the ids of before content
            // identity: sending it would pay for it again.
            if !target.contains(&request.id)
                && target.contains(&crate::ids::legacy_request_id(
                    &request.job,
                    &request.body,
                    request.repeat,
                    run_id,
                ))
            {
                legacy += 1;
            }
            let before = target.lookup(&request.id).map(|(s, _)| s);
            plan.count(before, flags, request.body.kind(), request.body.images());
            target.place(pos, &request).map_err(unwritable)?;
        }
        if legacy > 0 {
            return Err(exit::aborted(format!(
                "the results {shown} were written by an earlier hidream-batch, whose request ids depended on the manifest's file name and job ids: {legacy} of these requests are in them under their old ids, and this run would send them again. Start a new results file (-o NEW.csv) — `collect` still reads the old one — or move it away; nothing was sent"
            )));
        }
    }
    for o in &orphans {
        let what = match o.status() {
            Status::Failed => {
                "its last attempt was answered with no task: recorded `failed` (sent again)"
            }
            _ => {
                "recorded `unknown` (check it in the HiDream console; resend with --retry-unknown)"
            }
        };
        let will = if args.dry_run { "will be " } else { "" };
        tracing::warn!(
            request_id = %o.sent.id,
            job = %o.sent.job,
            "request {} (job `{}`) was in flight when an earlier run stopped (attempt {} at {}): {will}{what}",
            o.sent.id,
            crate::logging::safe(&o.sent.job),
            o.sent.attempt,
            o.sent.at
        );
    }
    let images = plan.images();
    print_plan(&plan, &args);
    if let Some(max) = args.max_images
        && images > max
    {
        return Err(exit::invalid(format!(
            "this run would submit {images} images, more than --max-images {max}; nothing was sent"
        )));
    }
    let (mut journal, resume): (Journal, _) = match target {
        Target::Dry(_) => return Ok(exit::OK),
        // Open entries get their rows, then the log is emptied: only then is anything sent.
        Target::Compact(c) => (*c).finish().map_err(unwritable)?,
    };
    let conn = conn.expect("a run that sends has a connection");

    // The pipeline.
    journal.reserve(plan.to_send() as usize);
    let ctx = Arc::new(Ctx {
        client: conn.client.clone(),
        world,
        limiters: if args.connection.rate == 0 {
            BTreeMap::new()
        } else {
            Kind::ALL
                .iter()
                .map(|k| (*k, Limiter::new(args.connection.rate)))
                .collect()
        },
        backoff: Backoff {
            base: args.connection.backoff,
            max: args.connection.backoff_max,
        },
        max_attempts: args.connection.max_attempts,
        retry_unknown: args.retry_unknown,
        wal: journal.wal(),
        capped_logged: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        stop_notify: tokio::sync::Notify::new(),
    });
    // A signal that came while the run started stops it before it dispatches anything.
    let mut signals = signals.fuse();
    let mut signalled = 0;
    while let Some(Some(())) = signals.next().now_or_never() {
        signalled += 1;
        ctx.stop.store(true, Ordering::SeqCst);
    }
    if signalled > 0 {
        tracing::warn!("interrupted while starting: nothing is sent");
    }
    let source_ctx = ctx.clone();
    let source = positioned(&manifests, run_id)
        .filter(|(_, r)| {
            in_shard(args.shard, &r.id) && crate::plan::should_send(resume.get(&r.id), flags)
        })
        .take_while(move |_| !source_ctx.stopping());
    let mut stream = futures::stream::iter(source)
        .map(|(pos, r)| submit(ctx.clone(), pos, r))
        .buffer_unordered(args.connection.concurrency as usize);

    let started = Instant::now();
    let progress = Progress::new(plan.to_send());
    let mut counts: BTreeMap<Status, u64> = BTreeMap::new();
    let mut submitted_images: u64 = 0;
    let mut unauthorized = false;
    let mut ticker = tokio::time::interval(STATUS_EVERY);
    ticker.tick().await;
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
                    unauthorized |= outcome.unauthorized;
                    if let Some(status) = outcome.status {
                        if status == Status::Submitted {
                            submitted_images += u64::from(outcome.request.body.images());
                            tasks.push((outcome.request.id, outcome.task_id.clone()));
                        }
                        let row = outcome_row(&rows, &outcome, status, world);
                        journal.append(outcome.request.id, outcome.pos, &row).map_err(unwritable)?;
                        *counts.entry(status).or_default() += 1;
                        if status != Status::Submitted {
                            tracing::info!(request_id = %outcome.request.id, job = %outcome.request.job.id, status = status.as_str(), http_status = outcome.http_status, code = outcome.code, attempt = outcome.attempts, "{} {}: {}", outcome.request.job.id, status.as_str(), crate::logging::safe(&outcome.message));
                        }
                    }
                    match stream.next().now_or_never() {
                        Some(Some(o)) => next = Some(o),
                        Some(None) => finished = true,
                        None => {}
                    }
                }
                journal.flush().map_err(|e| {
                    for (id, task) in &tasks {
                        tracing::error!(request_id = %id, "request {id} was submitted as task `{}`, but its row could not be written", crate::logging::safe(task));
                    }
                    unwritable(e)
                })?;
                progress.update(&counts);
                if finished {
                    break;
                }
            }
            Some(()) = signals.next() => {
                signalled += 1;
                ctx.stop.store(true, Ordering::SeqCst);
                ctx.stop_notify.notify_waiters();
                if signalled == 1 {
                    tracing::warn!("interrupted: no new requests; waiting for those in flight (signal again to stop at once)");
                } else {
                    tracing::warn!("interrupted again: stopping now; the requests in flight stay in the write-ahead log, and the next run records them `unknown`");
                    // Outcomes already in (answers that arrived) are kept, not abandoned.
                    while let Some(Some(outcome)) = stream.next().now_or_never() {
                        if let Some(status) = outcome.status {
                            let row = outcome_row(&rows, &outcome, status, world);
                            journal.append(outcome.request.id, outcome.pos, &row).map_err(unwritable)?;
                            *counts.entry(status).or_default() += 1;
                        }
                    }
                    journal.flush().map_err(unwritable)?;
                    break;
                }
            }
            _ = ticker.tick(), if progress.is_hidden() => {
                tracing::info!("progress: {} of {} requests done ({})", counts.values().sum::<u64>(), plan.to_send(), describe_counts(&counts));
            }
        }
    }
    drop(stream);
    drop(ctx);
    progress.finish();

    // Final rewrite: one row per request, in expansion order.
    let abandoned = journal.finish().map_err(unwritable)?;
    for s in &abandoned {
        tracing::warn!(
            request_id = %s.id,
            job = %s.job,
            "request {} (job `{}`) was abandoned in flight (attempt {}): the next run records it `unknown`",
            s.id,
            crate::logging::safe(&s.job),
            s.attempt
        );
    }

    let elapsed = started.elapsed();
    let this_run: u64 = counts.values().sum();
    let submitted_now = counts.get(&Status::Submitted).copied().unwrap_or(0);
    // Per minute of the run; a run shorter than a minute sent all its images in one minute.
    let per_minute = submitted_images as f64 * 60.0 / elapsed.as_secs_f64().max(60.0);
    println!(
        "done: {} this run ({}); {} already submitted earlier; {} images submitted in {:.1}s ({:.0} images/min); results in {}",
        this_run,
        describe_counts(&counts),
        plan.already_submitted,
        submitted_images,
        elapsed.as_secs_f64(),
        per_minute,
        args.out.display()
    );
    let skipped = plan.rejected_skipped + plan.unknown_skipped;
    if skipped > 0 {
        println!(
            "not sent: {} rejected and {} unknown from earlier runs (use --retry-rejected / --retry-unknown)",
            plan.rejected_skipped, plan.unknown_skipped
        );
    }
    if unauthorized {
        return Err(exit::aborted(
            "the API refused the credentials (HTTP 401/403): dispatch stopped; check HIDREAM_API_TOKEN",
        ));
    }
    if signalled > 0 {
        tracing::warn!("interrupted: results written to {}", args.out.display());
        return Ok(exit::INTERRUPTED);
    }
    let complete = plan.already_submitted + submitted_now == plan.total;
    let code = if complete { exit::OK } else { exit::INCOMPLETE };
    // `--collect DIR`: wait for the tasks and download their images, with the same client. The
    // worse of the two outcomes is the exit code (0 only if every request was submitted and every
    // image is on disk; 130 if a signal stopped the collection; an error, such as 401, wins).
    if let Some(dir) = &args.collect {
        let settings = crate::collect::Settings::after_run(&args.connection, &args.out, dir);
        let collected = crate::collect::collect(&conn.client, &settings, &mut signals).await?;
        return Ok(code.max(collected));
    }
    Ok(code)
}

/// The (valid) expansion with each request's position in it.
fn positioned<'a>(
    manifests: &'a [Manifest],
    run_id: Option<&'a str>,
) -> impl Iterator<Item = (u32, Request)> + 'a {
    expand::expand(manifests, run_id)
        .flatten()
        .enumerate()
        .map(|(i, r)| (u32::try_from(i).unwrap_or(journal::UNPLACED), r))
}

fn describe_counts(counts: &BTreeMap<Status, u64>) -> String {
    Status::ALL
        .iter()
        .map(|s| format!("{} {}", counts.get(s).copied().unwrap_or(0), s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_plan(plan: &Plan, args: &RunArgs) {
    let mut out = format!(
        "plan: {} requests: {} new, {} already submitted (skipped), {} failed to retry, {} rejected ({}), {} unknown ({})\n",
        plan.total,
        plan.new,
        plan.already_submitted,
        plan.to_retry_failed,
        plan.rejected_skipped + plan.rejected_retry,
        if args.retry_rejected {
            "to resend"
        } else {
            "skipped"
        },
        plan.unknown_skipped + plan.unknown_retry,
        if args.retry_unknown {
            "to resend"
        } else {
            "skipped"
        },
    );
    for (kind, images) in &plan.images {
        out += &format!(
            "  {kind}: {} requests, {images} images to send\n",
            plan.requests.get(kind).copied().unwrap_or(0)
        );
    }
    let per_kind: BTreeMap<Kind, (u64, u64)> = plan
        .images
        .iter()
        .map(|(k, i)| (*k, (plan.requests.get(k).copied().unwrap_or(0), *i)))
        .collect();
    let rate = args.connection.rate;
    if rate > 0 {
        out += &format!(
            "at --rate {rate} images per minute per endpoint this takes {}\n",
            commands::describe_estimate(estimate(&per_kind, rate))
        );
    }
    print!("{out}");
}

/// How long `rate` images per minute per endpoint make a run take, for its busiest endpoint
/// (see [`crate::rate`]): as the window allows (a minute's allowance per window), and paced evenly
/// (what an endpoint that answers 429 gets).
pub fn estimate(per_kind: &BTreeMap<Kind, (u64, u64)>, rate: u32) -> (Duration, Duration) {
    let images = per_kind.values().map(|(_, i)| *i).max().unwrap_or(0);
    let rate = u64::from(rate.max(1));
    let windows = images.div_ceil(rate).saturating_sub(1);
    (
        crate::rate::WINDOW * u32::try_from(windows).unwrap_or(u32::MAX),
        Duration::from_secs_f64(images as f64 * 60.0 / rate as f64),
    )
}

/// A progress bar on a terminal; nothing otherwise (the loop logs a status line every 10 s).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {msg} [{elapsed_precise}, eta {eta}]",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress { bar }
    }

    fn is_hidden(&self) -> bool {
        self.bar.is_none()
    }

    /// Show the counts so far (several outcomes may have finished together).
    fn update(&self, counts: &BTreeMap<Status, u64>) {
        if let Some(b) = &self.bar {
            b.set_position(counts.values().sum());
            b.set_message(describe_counts(counts));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
