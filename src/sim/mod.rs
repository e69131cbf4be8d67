//! The simulator: a local stand-in of HiDream's asynchronous image API, so that the tool can be
//! tried without a token, and so that tests and benchmarks have a faithful, observable server.
//!
//! It serves both submit endpoints at their real paths with the documented validation, the
//! result and batch-result queries, the two template lists (with generated covers), generated PNG
//! images and `GET /sim/stats`; it can misbehave
//! on purpose (HTTP 500, 429 with `Retry-After`, latency, hung-up connections), reproducibly for a
//! given `--seed`, and model an account's limits (unfinished tasks, credit). Like a real server it
//! creates a task the moment a submission has arrived: a client that hangs up, times out or is
//! killed while waiting for the answer does not undo it. It keeps no per-task state beyond the
//! end times of its unfinished tasks (for the account's limit): task ids describe themselves, so
//! a simulator started later (with `collect --simulate`) answers for tasks that an earlier one
//! created.
//!
//! Every answer carries the header [`MARK_HEADER`], and its task ids have a shape no other server
//! produces ([`is_task_id`]): a run can tell a rehearsal from the real API, and never takes the
//! one's task ids for the other's.
//!
//! # Layout
//!
//! - `routes`: the HTTP handlers and the order of checks on a submit request.
//! - `shared`: the state every handler shares (configuration, counters, limits, ledger).
//! - `check`: request validation, on top of the shared checks of [`crate::api`].
//! - `account`: the account's limits: unfinished tasks (`--max-pending`) and credit (`--credits`).
//! - `faults`: the seeded random choices, the rolling-minute window and the concurrency gate.
//! - `tasks`: self-describing task ids and task progress over time.
//! - `image`: the generated PNG tiles and template covers.
//! - `templates`: the fixed template lists it serves (paged, as the API documents) and
//!   `--strict-templates`.
//! - `conn`: connections a handler can hang up on (`--drop-before`, `--drop-after`).
//! - [`stats`]: the counters behind `GET /sim/stats`.
//! - [`codes`]: the `code` values of the simulator's answers.
//!
//! Entry points: [`start`] (in-process on a free loopback port, for tests and `run --simulate`),
//! [`serve`] (on a given listener until a shutdown future completes) and `commands::simulate` (the
//! `simulate` command).

mod account;
mod check;
pub mod codes;
mod conn;
mod faults;
mod hash;
mod image;
mod ledger;
mod routes;
mod shared;
pub mod stats;
mod tasks;
mod templates;

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::settings::defaults;
use crate::units::Latency;

pub use ledger::Created;
pub use stats::{Calls, PerKind, Stats};

/// The header every answer of the simulator carries (its value: the version).
pub const MARK_HEADER: &str = "x-hidream-simulator";

/// Whether `id` is a task id this simulator (any instance, any version of this scheme) issued.
pub fn is_task_id(id: &str) -> bool {
    !id.is_empty() && tasks::Task::parse(id).is_some()
}

use conn::{Hangup, HangupListener};
use shared::Shared;

/// How the simulator behaves. [`SimConfig::default`] is a well-behaved server: no latency, no
/// faults, no limits, no account limits (unfinished tasks, credit), tasks done after 2 s, any
/// non-empty bearer token accepted.
#[derive(Clone)]
pub struct SimConfig {
    /// Added to every submit request before it is answered.
    pub latency: Latency,
    /// Fraction of submit requests answered HTTP 500 (0–1).
    pub error_rate: f64,
    /// Answer HTTP 429 when accepting a request would exceed this many images in a rolling
    /// minute (of [`SimConfig::rate_minute`]) on its endpoint (a request for 4 images counts 4).
    pub rate_limit: Option<u32>,
    /// Enforce `rate_limit` as a steady flow of `rate_limit` images per minute that lets a
    /// burst of this many images through at once (a leaky bucket, as nginx's `limit_req` with
    /// `burst=`), instead of per rolling minute.
    pub rate_burst: Option<u32>,
    /// The length of the "minute" of `rate_limit` and `rate_burst`: 60 s. Their `Retry-After`
    /// counts seconds of this clock (a 60th of it). A test that runs the client with the test
    /// hook [`crate::env_vars::TIME_SCALE`] shortens it by the same factor, so that the limits
    /// still mean what they mean without waiting whole minutes. A library setting, no
    /// command-line flag.
    pub rate_minute: Duration,
    /// Answer HTTP 429 when more than this many submit requests are in flight.
    pub max_concurrent: Option<u32>,
    /// Fraction of submit requests answered HTTP 429 (`Retry-After: 1`) at random, as an
    /// overloaded API sheds load (the API's "system load" limit).
    pub throttle_rate: f64,
    /// Time from submission to a task's end (queued for the first tenth, then running).
    pub task_time: Duration,
    /// The only bearer token accepted; `None` accepts any non-empty token.
    pub token: Option<String>,
    /// Seed of every random choice: faults, latencies, task outcomes.
    pub seed: u64,
    /// Fraction of images that end with status 3 (generation failed).
    pub fail_rate: f64,
    /// Fraction of images that end with status 4 (refused by content review).
    pub refuse_rate: f64,
    /// Fraction of submit requests whose connection is closed, without an answer, before a task
    /// is created.
    pub drop_before: f64,
    /// Fraction of submit requests whose connection is closed, without an answer, after the task
    /// was created (it counts as accepted).
    pub drop_after: f64,
    /// Keep a ledger of every task created, for tests and benchmarks that check no task id was
    /// lost: in memory ([`Simulator::created`]; it grows with every task) or in a file.
    pub ledger: LedgerConfig,
    /// How an answer without a result (a refusal, an error) writes `result`.
    pub refusal_result: RefusalResult,
    /// Refuse a submission (HTTP 200, `code` 1201) while this many of the tasks this simulator
    /// created are unfinished (not yet `task_time` old): the API's concurrency limit per
    /// membership tier (1, 3, 5, 7 or 10), counted in requests, across both endpoints.
    pub max_pending: Option<u32>,
    /// Images of credit for the whole run: each accepted submission spends its image count; one
    /// asking for more than is left is refused (HTTP 200, `code` 1202).
    pub credits: Option<u64>,
    /// Query results give `image` as the bare sub-task id, as HiDream's own client expects
    /// (it builds the URL itself), instead of a URL. The image is served at
    /// `/sim/images/{id}.png` and `/sim/images/{id}` either way.
    pub bare_image_ids: bool,
    /// Refuse a model submission (HTTP 200, `code` 1007) whose template id is not in the
    /// simulator's lists. The lists are served either way.
    pub strict_templates: bool,
}

/// How the simulator writes the `result` of an answer that has none. The API's documentation
/// shows only successes; other servers write "no result" each of these ways, and hidream-batch
/// reads them all as one (`api::answer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RefusalResult {
    /// `"result": null`.
    #[default]
    Null,
    /// `"result": {}`.
    Empty,
    /// No `result` key.
    Absent,
}

/// Where the simulator records the tasks it creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LedgerConfig {
    /// No ledger.
    #[default]
    Off,
    /// In memory: [`Simulator::created`].
    Memory,
    /// One JSON line per task (`kind`, `request_id`, `task_id`) appended to this file.
    File(std::path::PathBuf),
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            latency: Latency::Fixed(Duration::ZERO),
            error_rate: 0.0,
            rate_limit: None,
            rate_burst: None,
            rate_minute: Duration::from_secs(60),
            max_concurrent: None,
            throttle_rate: 0.0,
            task_time: defaults::duration(defaults::DEFAULT_TASK_TIME),
            token: None,
            seed: 0,
            fail_rate: 0.0,
            refuse_rate: 0.0,
            drop_before: 0.0,
            drop_after: 0.0,
            ledger: LedgerConfig::Off,
            refusal_result: RefusalResult::Null,
            max_pending: None,
            credits: None,
            bare_image_ids: false,
            strict_templates: false,
        }
    }
}

/// Written by hand so that the token can never reach a log line.
impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("latency", &self.latency)
            .field("error_rate", &self.error_rate)
            .field("rate_limit", &self.rate_limit)
            .field("rate_burst", &self.rate_burst)
            .field("rate_minute", &self.rate_minute)
            .field("max_concurrent", &self.max_concurrent)
            .field("throttle_rate", &self.throttle_rate)
            .field("task_time", &self.task_time)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("seed", &self.seed)
            .field("fail_rate", &self.fail_rate)
            .field("refuse_rate", &self.refuse_rate)
            .field("drop_before", &self.drop_before)
            .field("drop_after", &self.drop_after)
            .field("ledger", &self.ledger)
            .field("refusal_result", &self.refusal_result)
            .field("max_pending", &self.max_pending)
            .field("credits", &self.credits)
            .field("bare_image_ids", &self.bare_image_ids)
            .field("strict_templates", &self.strict_templates)
            .finish()
    }
}

impl SimConfig {
    /// Check the values a command line could get wrong; the message names the flag.
    pub fn check(&self) -> Result<(), String> {
        for (flag, p) in [
            ("--error-rate", self.error_rate),
            ("--throttle-rate", self.throttle_rate),
            ("--fail-rate", self.fail_rate),
            ("--refuse-rate", self.refuse_rate),
            ("--drop-before", self.drop_before),
            ("--drop-after", self.drop_after),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("`{flag}` must be between 0 and 1, not `{p}`"));
            }
        }
        if self.fail_rate + self.refuse_rate > 1.0 {
            return Err(format!(
                "`--fail-rate` plus `--refuse-rate` must be at most 1 (they share the same tasks), not `{}`",
                self.fail_rate + self.refuse_rate
            ));
        }
        if self.rate_limit == Some(0) {
            return Err("`--rate-limit` must be at least 1 (leave it out for no limit)".into());
        }
        if self.rate_burst == Some(0) {
            return Err("`--rate-burst` must be at least 1".into());
        }
        if self.rate_burst.is_some() && self.rate_limit.is_none() {
            return Err("`--rate-burst` needs `--rate-limit`".into());
        }
        if self.rate_minute < Duration::from_millis(1) {
            return Err(format!(
                "the rate limit's minute must be at least 1 ms, not {:?}",
                self.rate_minute
            ));
        }
        if self.max_concurrent == Some(0) {
            return Err("`--max-concurrent` must be at least 1 (leave it out for no limit)".into());
        }
        if self.max_pending == Some(0) {
            return Err(
                "`--max-pending` must be at least 1 (the API's tiers allow 1, 3, 5, 7 or 10; leave it out for no limit)"
                    .into(),
            );
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err("`--token` must not be empty (leave it out to accept any token)".into());
        }
        Ok(())
    }
}

/// A simulator running in this process (see [`start`]). Dropping it stops the server in the
/// background; [`Simulator::shutdown`] stops it and waits.
pub struct Simulator {
    /// Where it listens (always a loopback address).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// The origin to send requests to, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters (what `GET /sim/stats` answers, without counting a call).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Every task created so far, in order (empty unless [`SimConfig::ledger`] is
    /// [`LedgerConfig::Memory`]).
    pub fn created(&self) -> Vec<Created> {
        self.shared.ledger.created()
    }

    /// Stop accepting connections, let the requests in progress finish, and wait.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!("simulator stopped with an error: {err}"),
                Err(err) => tracing::warn!("simulator task failed: {err}"),
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Start a simulator on a free port of `127.0.0.1`, in this process, and return at once.
pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
    config.check().map_err(invalid_input)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config, addr)?);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_shared(listener, shared.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(Simulator {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Serve on `listener` until `shutdown` completes, then finish the requests in progress.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config.check().map_err(invalid_input)?;
    let shared = Arc::new(Shared::new(config, listener.local_addr()?)?);
    serve_shared(listener, shared, shutdown).await
}

async fn serve_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = routes::router(shared).into_make_service_with_connect_info::<Hangup>();
    axum::serve(HangupListener(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn invalid_input(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}
