//! `run`: the pipeline (SPEC §1.1, §4–§6).
//!
//! `stream::iter(lazily expanded requests).map(submit).buffer_unordered(--concurrency)`, consumed
//! by one loop that is the only owner of the results journal, the counters and the progress
//! display. `submit` builds the body (and the base64 of local images) only when the request is
//! dispatched, so memory is bounded by what is in flight, and it always returns an [`Outcome`]: a
//! failed request is data, not an error, so the stream never stops early.
//!
//! Passes over the manifests: validation (before anything is written), the plan (statuses of
//! earlier runs, orphans of a crash, `--dry-run`; skipped on a first run, whose plan is
//! validation's counts), and the pipeline. The final rewrite needs none: rows carry their
//! position in the expansion.
//!
//! Where the time goes (overhead-bound benchmark, one thread): about two thirds in reqwest, hyper
//! and the kernel's TCP; the rest is expansion, the journal and the rows. Measured and kept: the
//! current-thread runtime, group-committed write-ahead lines, rows of outcomes that finish
//! together in one write. Measured and dropped: a work-stealing runtime (one or two workers), and
//! expanding on a thread of its own (the channel costs more than the expansion it moves).
//!
//! Stopping: a 401/403 sets `abort` (no new dispatch, in-flight requests finish, exit 3); the
//! first SIGINT/SIGTERM sets `stop` (the same, exit 130); a second one drops what is in flight at
//! once — their write-ahead entries make the next run record them `unknown`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use uuid::Uuid;

use crate::api::Kind;
use crate::cli::{ConnectionArgs, RunArgs};
use crate::client::retry::{self, Backoff, Verdict};
use crate::client::{BaseUrl, Client, SIMULATOR_TOKEN, Token};
use crate::expand::{self, Body, ImageRef, Request};
use crate::journal::{self, Journal, Status, Wal};
use crate::manifest::{Field, Manifest, Source};
use crate::rate::Limiter;
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
    limiters: HashMap<Kind, Limiter>,
    backoff: Backoff,
    max_attempts: u32,
    retry_unknown: bool,
    wal: Arc<Wal>,
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

/// Submit one request: every attempt through the rate limiter, retried per SPEC §5.
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
    // What the request is if it stops here: the last attempt's status decides (unknown stays
    // unknown, transient becomes failed).
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
        if let Err(e) = ctx.wal.sent(&out.request.id, out.attempts, &at).await {
            out.status = Some(Status::Failed);
            out.submitted_at = at;
            out.message = format!("cannot write the write-ahead log: {e}");
            break;
        }
        if out.attempts == 1 {
            out.submitted_at = at;
            started = Instant::now();
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
        last = if matches!(verdict, Verdict::Unknown { .. }) {
            Status::Unknown
        } else {
            Status::Failed
        };
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
        let delay = ctx.backoff.delay(out.attempts, retry_after, &mut rng);
        if !ctx.pause(delay).await {
            out.status = Some(last);
            break;
        }
    }
    out.elapsed = started.elapsed();
    out
}

/// The results header: leading columns, parameters, `var.*`, `meta.*` (over all manifests).
pub fn header(manifests: &[Manifest]) -> Vec<String> {
    let mut vars: Vec<String> = Vec::new();
    let mut meta: Vec<String> = Vec::new();
    let add = |list: &mut Vec<String>, names: &[String]| {
        for n in names {
            if !list.contains(n) {
                list.push(n.clone());
            }
        }
    };
    for m in manifests {
        match &m.source {
            Source::Yaml(jobs) => {
                for j in jobs {
                    add(&mut vars, &j.info.vars);
                    add(&mut meta, &j.info.meta);
                }
            }
            Source::Csv(c) => add(&mut meta, c.meta_names()),
        }
    }
    let mut h: Vec<String> = journal::LEADING.iter().map(|s| s.to_string()).collect();
    h.extend(Field::ALL.iter().map(|f| f.name().to_string()));
    h.extend(vars.iter().map(|v| format!("var.{v}")));
    h.extend(meta.iter().map(|m| format!("meta.{m}")));
    h
}

/// A request's parameters as shown in the results: never base64.
pub fn params(body: &Body) -> [Cow<'_, str>; 12] {
    fn show(r: &ImageRef) -> Cow<'_, str> {
        match r {
            ImageRef::Inline(d) => format!("(inline base64, {} bytes)", d.len()).into(),
            other => other.shown().to_string().into(),
        }
    }
    fn num(n: Option<i64>) -> Cow<'static, str> {
        n.map(|n| n.to_string().into()).unwrap_or_default()
    }
    fn opt(s: &Option<String>) -> Cow<'_, str> {
        s.as_deref().unwrap_or_default().into()
    }
    let mut p: [Cow<'_, str>; 12] = Default::default();
    let mut set = |f: Field, v| {
        let i = Field::ALL.iter().position(|x| *x == f).expect("field");
        p[i] = v;
    };
    match body {
        Body::Txt2Img(b) => {
            set(Field::Prompt, b.prompt.as_str().into());
            set(Field::NegativePrompt, opt(&b.negative_prompt));
            set(Field::ImgCount, num(b.img_count));
            set(Field::Version, opt(&b.version));
            set(Field::Resolution, opt(&b.resolution));
            set(Field::NotifyUrl, opt(&b.notify_url));
        }
        Body::Model(b) => {
            set(Field::Image, show(&b.image));
            set(Field::Mask, b.mask.as_ref().map(show).unwrap_or_default());
            if let Some(t) = &b.template {
                set(Field::HumanTemplateId, t.human_template_id.as_str().into());
                set(Field::SceneTemplateId, t.scene_template_id.as_str().into());
                set(
                    Field::CustomHumanTemplate,
                    t.custom_human_template
                        .map(|c| c.to_string().into())
                        .unwrap_or_default(),
                );
            }
            set(Field::Prompt, opt(&b.prompt));
            set(Field::ImageCount, num(b.image_count));
            set(Field::NotifyUrl, opt(&b.notify_url));
        }
    }
    p
}

/// Builds result rows aligned with the header.
struct Rows {
    width: usize,
    /// Column of each `var.<name>` and `meta.<name>`, by the bare name.
    vars: HashMap<String, usize>,
    meta: HashMap<String, usize>,
}

impl Rows {
    fn new(header: &[String]) -> Rows {
        let by_prefix = |prefix: &str| {
            header
                .iter()
                .enumerate()
                .filter_map(|(i, h)| Some((h.strip_prefix(prefix)?.to_string(), i)))
                .collect()
        };
        Rows {
            width: header.len(),
            vars: by_prefix("var."),
            meta: by_prefix("meta."),
        }
    }

    /// A row aligned with the header, borrowing what it can from the request and the outcome.
    #[allow(clippy::too_many_arguments)]
    fn row<'a>(
        &self,
        r: &'a Request,
        status: Status,
        task_id: &'a str,
        sub_task_ids: &[String],
        attempts: u32,
        http_status: Option<u16>,
        code: Option<i64>,
        message: &'a str,
        submitted_at: &'a str,
        elapsed_ms: Option<u128>,
    ) -> Vec<Cow<'a, str>> {
        let mut row: Vec<Cow<'a, str>> = Vec::with_capacity(self.width);
        let some = |v: Option<String>| -> Cow<'a, str> { v.map(Cow::from).unwrap_or_default() };
        row.extend([
            r.id.to_string().into(),
            r.job.id.as_str().into(),
            r.body.kind().as_str().into(),
            status.as_str().into(),
            task_id.into(),
            sub_task_ids.join(";").into(),
            attempts.to_string().into(),
            some(http_status.map(|s| s.to_string())),
            some(code.map(|c| c.to_string())),
            crate::logging::safe(message),
            submitted_at.into(),
            some(elapsed_ms.map(|e| e.to_string())),
        ]);
        row.extend(params(&r.body));
        row.resize(self.width, Cow::Borrowed(""));
        for (name, value) in r.job.vars.iter().zip(&r.vars) {
            if let Some(&i) = self.vars.get(name.as_str()) {
                row[i] = Cow::Borrowed(value);
            }
        }
        for (name, value) in r.job.meta.iter().zip(&r.meta) {
            if let Some(&i) = self.meta.get(name.as_str()) {
                row[i] = Cow::Borrowed(value);
            }
        }
        row
    }

    fn outcome<'a>(&self, o: &'a Outcome, status: Status) -> Vec<Cow<'a, str>> {
        self.row(
            &o.request,
            status,
            &o.task_id,
            &o.sub_task_ids,
            o.attempts,
            o.http_status,
            o.code,
            &o.message,
            &o.submitted_at,
            Some(o.elapsed.as_millis()),
        )
    }
}

/// What a run will do, decided from the results of earlier runs.
#[derive(Debug, Default)]
pub struct Plan {
    pub total: u64,
    pub new: u64,
    pub already_submitted: u64,
    pub to_retry_failed: u64,
    pub rejected_skipped: u64,
    pub rejected_retry: u64,
    pub unknown_skipped: u64,
    pub unknown_retry: u64,
    /// Images to send per kind.
    pub images: BTreeMap<Kind, u64>,
    pub requests: BTreeMap<Kind, u64>,
}

impl Plan {
    pub fn to_send(&self) -> u64 {
        self.new + self.to_retry_failed + self.rejected_retry + self.unknown_retry
    }
}

/// Whether a request with this earlier status is sent in this run.
fn should_send(status: Option<Status>, args: &RunArgs) -> bool {
    match status {
        None | Some(Status::Failed) => true,
        Some(Status::Submitted) => false,
        Some(Status::Rejected) => args.retry_rejected,
        Some(Status::Unknown) => args.retry_unknown,
    }
}

fn in_shard(shard: Option<Shard>, id: &Uuid) -> bool {
    shard.is_none_or(|s| s.contains(id))
}

/// `run`. `signals` yields once per SIGINT/SIGTERM.
pub async fn run(args: RunArgs, signals: impl Stream<Item = ()> + Unpin) -> anyhow::Result<u8> {
    let (manifests, report) = commands::load_valid(&args.manifest)?;
    let run_id = args.manifest.run_id.as_deref();
    let conn = connect(&args.connection, args.timeout).await?;
    let _lock = journal::lock(&args.out).map_err(|e| exit::aborted(e.to_string()))?;
    let header = header(&manifests);
    let rows = Rows::new(&header);
    let (mut journal, resume) = Journal::open(&args.out, header).map_err(|e| {
        exit::aborted(format!(
            "cannot write the results `{}`: {e}",
            args.out.display()
        ))
    })?;
    let unwritable = |e: std::io::Error| {
        exit::aborted(format!(
            "cannot write the results `{}`: {e}",
            args.out.display()
        ))
    };

    // Requests in flight when an earlier run died: recorded `unknown`, never silently resent.
    let orphans: HashMap<Uuid, journal::Orphan> =
        journal.orphans.drain(..).map(|o| (o.id, o)).collect();
    let mut resume = resume;
    let mut orphans_reported = HashSet::new();

    // The plan: one pass over the expansion, which also gives earlier runs' rows their place in
    // the final results. A first run (no earlier rows, nothing in flight, no shard) sends every
    // request: its plan is validation's counts, and the pass is skipped.
    let mut plan = Plan::default();
    let first_run = journal.is_empty() && orphans.is_empty() && args.shard.is_none();
    if first_run {
        for (kind, (requests, images)) in report.counts.per_kind() {
            plan.total += requests;
            plan.new += requests;
            *plan.requests.entry(kind).or_default() += requests;
            *plan.images.entry(kind).or_default() += images;
        }
    }
    let pass = (!first_run).then(|| positioned(&manifests, run_id));
    for (pos, request) in pass.into_iter().flatten() {
        if !in_shard(args.shard, &request.id) {
            continue;
        }
        plan.total += 1;
        journal.place(&request.id, pos);
        if let Some(o) = orphans.get(&request.id) {
            if !args.dry_run {
                let message = format!(
                    "the run stopped while this request was in flight (attempt {} sent at {}); the task may exist",
                    o.attempt, o.sent_at
                );
                let row = rows.row(
                    &request,
                    Status::Unknown,
                    "",
                    &[],
                    o.attempt,
                    None,
                    None,
                    &message,
                    &o.sent_at,
                    None,
                );
                journal.record(request.id, pos, &row).map_err(unwritable)?;
            }
            tracing::warn!(request_id = %request.id, job = %request.job.id, "request {} was in flight when an earlier run stopped: recorded `unknown` (resend with --retry-unknown)", request.id);
            orphans_reported.insert(request.id);
            resume.insert(request.id, Status::Unknown);
        }
        let status = resume.get(&request.id).copied();
        match status {
            None => plan.new += 1,
            Some(Status::Submitted) => plan.already_submitted += 1,
            Some(Status::Failed) => plan.to_retry_failed += 1,
            Some(Status::Rejected) if args.retry_rejected => plan.rejected_retry += 1,
            Some(Status::Rejected) => plan.rejected_skipped += 1,
            Some(Status::Unknown) if args.retry_unknown => plan.unknown_retry += 1,
            Some(Status::Unknown) => plan.unknown_skipped += 1,
        }
        if should_send(status, &args) {
            let kind = request.body.kind();
            *plan.images.entry(kind).or_default() += u64::from(request.body.images());
            *plan.requests.entry(kind).or_default() += 1;
        }
    }
    for (id, o) in &orphans {
        if !orphans_reported.contains(id) {
            tracing::warn!(
                "request {id} (not in these manifests) was in flight when an earlier run stopped at {}; the task may exist",
                o.sent_at
            );
        }
    }
    let images: u64 = plan.images.values().sum();
    print_plan(&plan, &args);
    if let Some(max) = args.max_images
        && images > max
    {
        return Err(exit::invalid(format!(
            "this run would submit {images} images, more than --max-images {max}; nothing was sent"
        )));
    }
    if args.dry_run {
        return Ok(exit::OK);
    }

    // The pipeline.
    journal.reserve(plan.to_send() as usize);
    let ctx = Arc::new(Ctx {
        client: conn.client.clone(),
        limiters: if args.connection.rate == 0 {
            HashMap::new()
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
        abort: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        stop_notify: tokio::sync::Notify::new(),
    });
    let source_ctx = ctx.clone();
    let source = positioned(&manifests, run_id)
        .filter(|(_, r)| {
            in_shard(args.shard, &r.id) && should_send(resume.get(&r.id).copied(), &args)
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
    let mut signals = signals.fuse();
    let mut signalled = 0;
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
                while let Some(outcome) = next.take() {
                    unauthorized |= outcome.unauthorized;
                    if let Some(status) = outcome.status {
                        if status == Status::Submitted {
                            submitted_images += u64::from(outcome.request.body.images());
                        }
                        journal.append(outcome.request.id, outcome.pos, &rows.outcome(&outcome, status)).map_err(unwritable)?;
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
                journal.flush().map_err(unwritable)?;
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
                    tracing::warn!("interrupted again: stopping now; requests in flight will be recorded `unknown` by the next run");
                    break;
                }
            }
            _ = ticker.tick(), if progress.is_hidden() => {
                tracing::info!("progress: {} of {} requests done ({})", counts.values().sum::<u64>(), plan.to_send(), describe_counts(&counts));
            }
        }
    }
    drop(stream);
    progress.finish();

    // Final rewrite: one row per request, in expansion order.
    journal.finish().map_err(unwritable)?;

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
