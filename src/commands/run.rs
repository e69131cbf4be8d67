//! `run`: validate, plan, submit, record.
//!
//! Before anything is sent: the manifests are validated (and read once: every later pass reads
//! the same bytes), their template ids checked against the API's lists (`--check-templates`,
//! [`crate::templates`]), the server identified (the simulator or the API, see [`World`]), the results
//! locked and read ([`journal::Prior`]), and the plan made in one pass over the expansion
//! ([`plan::make`]) — which also lays out the compacted results in expansion order. A dry run
//! stops after the plan and writes nothing. Then the pipeline ([`crate::pipeline`]) sends, the
//! journal's final rewrite orders the results, and `--collect` collects.
//!
//! The exit code, when several causes apply: refused credentials (3) first, then the breaker
//! (4, [`crate::breaker`]), then a signal (130), then whether every request has a task (0 or 1,
//! or the collection's code if worse). After the breaker, `--collect` still collects what was
//! submitted; after refused credentials or a signal it does not.

use std::sync::Arc;

use crate::client::connection::{connect, world};
use crate::display::{self, Progress};
use crate::exit;
use crate::journal::{self, Journal, Prior, Resume};
use crate::manifest::Manifest;
use crate::pipeline::{self, Dispatch, Follow};
use crate::plan::{self, Plan, PlanError, Target};
use crate::results::{Rows, Status, World};
use crate::settings::RunSettings;
use crate::shutdown::Shutdown;
use crate::validate::Counts;

/// What the start of a run that sends leaves: the journal open for this run's rows, the states
/// before it, the plan, the rows' layout, and the lock held until the end.
struct Ready {
    journal: Journal,
    resume: Resume,
    plan: Plan,
    rows: Rows,
    /// The results, as messages name them.
    shown: String,
    _lock: Option<journal::Lock>,
}

/// `run`, stopped by `shutdown` (the first signal stops dispatching, the second stops at once).
pub async fn run(settings: RunSettings, shutdown: Shutdown) -> anyhow::Result<u8> {
    // Validation reads every manifest and image: on the blocking pool, so that a signal stops the
    // run at once (nothing was sent; the abandoned reads end with the process).
    let manifest = settings.manifest.clone();
    if !settings.dry_run {
        crate::client::prepare_tls();
    }
    let (manifests, report) =
        until_stopped(&shutdown, blocking(move || manifest.load_valid())).await?;
    // A dry run sends nothing and needs no token.
    let conn = match settings.dry_run {
        true => None,
        false => Some(connect(&settings.connection).await?),
    };
    if settings.templates.check {
        let checked = crate::templates::check_manifests(
            &manifests,
            settings.manifest.run_id.as_deref(),
            &settings.connection,
            conn.as_ref().map(|c| &c.client),
            settings.templates.refresh,
            &shutdown,
        );
        tracing::info!("{}", until_stopped(&shutdown, checked).await?);
    }
    // The results are locked, read, planned and compacted on a blocking thread: file I/O and
    // fsync never run on the runtime's thread (the in-process simulator shares it). The lock
    // comes first: a second run on the same results asks nothing of any server.
    let settings = Arc::new(settings);
    let locked = {
        let settings = settings.clone();
        blocking(move || lock(&settings)).await?
    };
    let world = world(&settings.connection, &shutdown).await?;
    let manifests = Arc::new(manifests);
    // A signal while the plan is made stops the run before it sends anything: the start is then
    // abandoned at whatever point it reached, which the journal's invariants hold for as for a
    // crash (see `crate::journal`).
    let ready = {
        let (manifests, settings) = (manifests.clone(), settings.clone());
        let start = blocking(move || start(&settings, locked, &manifests, &report.counts, world));
        until_stopped(&shutdown, start).await?
    };
    let Some(Ready {
        mut journal,
        resume,
        plan,
        rows,
        shown,
        _lock,
    }) = ready
    else {
        return Ok(exit::OK);
    };
    let conn = conn.expect("a run that sends has a connection");
    let (shard, flags) = (settings.shard, settings.flags);
    let requests =
        plan::positioned(&manifests, settings.manifest.run_id.as_deref()).filter(|(_, r)| {
            plan::in_shard(shard, &r.id) && plan::should_send(resume.get(&r.id), flags)
        });
    // `--max-pending` and `--collect`: the run follows its own tasks while it submits.
    let following = settings.max_pending.is_some() || settings.collect.is_some();
    let (feed, fed) = tokio::sync::mpsc::unbounded_channel();
    let limiters = Arc::new(crate::client::Limiters::submissions(
        settings.connection.rates,
    ));
    let dispatch = Dispatch {
        client: conn.client.clone(),
        world,
        limiters: limiters.clone(),
        retry: settings.connection.retry.clone(),
        retry_unknown: flags.retry_unknown,
        retry_codes: settings.retry_codes.clone(),
        max_consecutive_rejections: settings.max_consecutive_rejections,
        concurrency: settings.connection.concurrency,
        follow: following.then(|| Follow {
            slots: settings
                .max_pending
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize))),
            feed,
        }),
    };
    let progress = Progress::new(&plan, limiters, settings.connection.concurrency);
    let submitting = pipeline::run(
        dispatch,
        requests,
        &mut journal,
        &rows,
        &progress,
        &shutdown,
    );
    let follower = async {
        match following {
            true => crate::collect::follow(&conn.client, &settings, fed, &shutdown).await,
            false => Default::default(),
        }
    };
    let (summary, known) = tokio::join!(submitting, follower);
    let summary = summary.map_err(|e| unwritable(&shown, e))?;
    progress.finish();
    let by_status: Vec<(&'static str, u64)> = Status::ALL
        .iter()
        .map(|s| (s.as_str(), summary.count(*s)))
        .collect();
    settings
        .metrics
        .record_run(&by_status, summary.submitted_images);
    settings
        .metrics
        .record_context("results", settings.out.display().to_string().into());
    if let Some(id) = &settings.manifest.run_id {
        settings.metrics.record_context("run_id", id.clone().into());
    }

    // Final rewrite: one row per request, in expansion order.
    let abandoned = blocking(move || journal.finish().map_err(|e| unwritable(&shown, e))).await?;
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
    display::print_summary(&summary, &plan, &settings.out);
    if summary.unauthorized {
        return Err(exit::aborted(
            "the API refused the credentials (HTTP 401/403): dispatch stopped; check HIDREAM_API_TOKEN",
        ));
    }
    if let Some(t) = &summary.breaker {
        let stopped = exit::stopped(format!(
            "stopped: the API refused {} requests in a row with code {}: {}",
            t.count,
            t.code,
            crate::logging::safe(&t.message)
        ));
        // `--collect DIR`: what was submitted exists and is paid for, so it is still collected
        // (unless a signal came). The exit code stays 4 whatever the collection's (it prints its
        // own summary), as the breaker wins over a signal; an error (such as 401) wins over it.
        if let Some(collect) = &settings.collect
            && shutdown.signals() == 0
        {
            crate::collect::collect(&conn.client, collect, known, &shutdown).await?;
        }
        return Err(stopped);
    }
    if shutdown.signals() > 0 {
        tracing::warn!("interrupted: results written to {}", settings.out.display());
        return Ok(exit::INTERRUPTED);
    }
    let complete = plan.already_submitted + summary.count(Status::Submitted) == plan.total;
    let code = if complete { exit::OK } else { exit::INCOMPLETE };
    // `--collect DIR`: wait for the tasks and download their images, with the same client. The
    // worse of the two outcomes is the exit code (0 only if every request was submitted and every
    // image is on disk; 130 if a signal stopped the collection; an error, such as 401, wins).
    if let Some(collect) = &settings.collect {
        let collected = crate::collect::collect(&conn.client, collect, known, &shutdown).await?;
        return Ok(code.max(collected));
    }
    Ok(code)
}

/// The results cannot be written: the run stops (exit 3).
fn unwritable(shown: &str, e: std::io::Error) -> anyhow::Error {
    exit::aborted(format!("cannot write the results {shown}: {e}"))
}

/// `work`, unless a signal stops the run first (exit 130, nothing sent).
async fn until_stopped<T>(
    shutdown: &Shutdown,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        done = work => done,
        () = shutdown.stopping() => Err(exit::interrupted("interrupted while starting: nothing was sent")),
    }
}

/// Run `f` on the blocking pool (file I/O and fsync), off the runtime's thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| exit::aborted(format!("the results' thread failed: {e}")))?
}

/// The results' paths, locked (a dry run locks only a lock file that exists).
fn lock(settings: &RunSettings) -> anyhow::Result<(journal::Paths, Option<journal::Lock>)> {
    // The folder of the results is made if it is missing (cron lines and services write to a
    // dated folder); a dry run writes nothing, so it makes nothing either.
    if let Some(dir) = settings.out.parent().filter(|d| !d.as_os_str().is_empty())
        && !settings.dry_run
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            exit::aborted(format!(
                "cannot create the folder `{}` of the results: {e}",
                dir.display()
            ))
        })?;
        tracing::info!("created the folder `{}` for the results", dir.display());
    }
    let paths = journal::Paths::resolve(&settings.out).map_err(|e| {
        exit::aborted(format!(
            "cannot use the results `{}`: {e}",
            settings.out.display()
        ))
    })?;
    let lock =
        journal::lock(&paths, !settings.dry_run).map_err(|e| exit::aborted(e.to_string()))?;
    Ok((paths, lock))
}

/// The start of a run: read the locked results, make the plan (and, for a run that sends, the
/// compacted results with every open entry settled), print it. `None`: a dry run, done.
fn start(
    settings: &RunSettings,
    (paths, lock): (journal::Paths, Option<journal::Lock>),
    manifests: &[Manifest],
    counts: &Counts,
    world: World,
) -> anyhow::Result<Option<Ready>> {
    let run_id = settings.manifest.run_id.as_deref();
    let flags = settings.flags;
    let shown = paths.display();
    let unwritable = |e: std::io::Error| unwritable(&shown.to_string(), e);
    let prior = Prior::read(paths).map_err(|e| exit::aborted(e.to_string()))?;
    check_world(&prior, world)?;
    let header = crate::results::header(manifests, prior.header());
    let rows = Rows::new(&header);
    let orphans = prior.orphans().to_vec();

    let first_run = prior.is_empty() && settings.shard.is_none();
    let mut target = if settings.dry_run {
        Target::Dry(Box::new(prior))
    } else {
        Target::Compact(Box::new(prior.compactor(header).map_err(unwritable)?))
    };
    let plan = plan::make(
        &mut target,
        manifests,
        run_id,
        settings.shard,
        flags,
        first_run.then_some(counts),
    )
    .map_err(|e| match e {
        PlanError::Io(e) => unwritable(e),
        PlanError::Legacy(legacy) => exit::aborted(format!(
            "the results {shown} were written by an earlier hidream-batch, whose request ids depended on the manifest's file name and job ids: {legacy} of these requests are in them under their old ids, and this run would send them again. Start a new results file (-o NEW.csv) — `collect` still reads the old one — or move it away; nothing was sent"
        )),
    })?;
    for o in &orphans {
        let what = match o.status() {
            Status::Failed => {
                "its last attempt was answered with no task: recorded `failed` (sent again)"
            }
            _ => {
                "recorded `unknown` (check it in the HiDream console; resend with --retry-unknown)"
            }
        };
        let will = if settings.dry_run { "will be " } else { "" };
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
    display::print_plan(&plan, flags, settings.connection.rates);
    if let Some(max) = settings.max_images
        && images > max
    {
        return Err(exit::invalid(format!(
            "this run would submit {images} images, more than --max-images {max}; nothing was sent"
        )));
    }
    let (mut journal, resume) = match target {
        Target::Dry(_) => return Ok(None),
        // Open entries get their rows, then the log is emptied: only then is anything sent.
        Target::Compact(c) => (*c).finish().map_err(unwritable)?,
    };
    journal.reserve(plan.to_send() as usize);
    Ok(Some(Ready {
        journal,
        resume,
        plan,
        rows,
        shown: shown.to_string(),
        _lock: lock,
    }))
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
