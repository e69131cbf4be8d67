//! hidream-batch: turn manifests of HiDream image requests into paid submissions, at the pace the
//! account allows, without ever paying twice for the same request.
//!
//! # Layout
//!
//! - [`cli`]: clap types; doc comments are the `--help` text. [`settings`]: the checked settings
//!   every command runs with, built once from the clap types; [`settings::defaults`]: every
//!   default.
//! - [`app`]: logging, the runtime, one [`shutdown::Shutdown`] fed by SIGINT/SIGTERM, and the
//!   dispatch to [`commands`]: one file per command (`run`, `validate`, `expand`, `collect`,
//!   `merge`, `simulate`, `templates`).
//! - [`units`]: argument value types (durations, latency ranges, shards). [`env_vars`]: every
//!   environment variable. [`exit`]: the exit codes and the errors that carry them. [`files`]:
//!   opening the files a user names (regular files only, without blocking). [`limits`]: every
//!   bound on what is read (manifests, images, answers), the README's "Limits" table.
//! - [`api`]: the HiDream API contract: hosts, paths, field limits, response shapes.
//! - [`manifest`]: YAML and CSV manifests, loaded into one model (CSV files read once, from a
//!   private copy); [`problem`]: what is wrong, where.
//! - [`expand`]: manifests → a lazy iterator of typed requests; [`ids`]: a request's id is its
//!   content (local images by the BLAKE3 digest of their bytes).
//! - [`validate`]: the API contract's checks on every request, all problems at once.
//! - [`body`]: request bodies as sent, local images streamed as base64 and checked against their
//!   digest.
//! - [`client`]: the shared HTTP client and one attempt (submissions by the lean transport of
//!   `client::direct`, HTTP/1.1 connections pooled there, or reqwest through a proxy);
//!   `client::connection`: the server a command talks to (and whether it is the simulator).
//! - [`retry`]: the retry policy, the one retry driver, and the classifiers of submissions, task
//!   queries and downloads side by side. [`rate`]: the images-per-minute limiter per endpoint.
//! - [`plan`]: what a run sends and why. [`pipeline`]: `buffer_unordered(submit)` → one consumer
//!   → a [`pipeline::Summary`]; [`breaker`]: the consumer stops dispatch when the API refuses K
//!   requests in a row with one code (exit 4). [`display`]: the plan, the progress and the summary as a person
//!   reads them; [`activity`]: what the command waits for right now (a rate window, a backoff,
//!   a pending-task slot), named by the progress display.
//! - [`results`]: the results CSV's schema, rows and strict reader; [`journal`]: the results as a
//!   state machine — write-ahead log, lock, compaction, one writer thread, final rewrite — and
//!   its invariants.
//! - [`merge`]: combine results CSVs (shards).
//! - [`logging`]: tracing setup (text or JSON), safe display of outside text.
//! - [`collect`]: the polling loop (`collect::poller`: each task on its own schedule,
//!   `collect::schedule`) that `collect` runs over a results file and `run` over the tasks it
//!   submits (`--max-pending`, `--collect`), downloads, `images.csv` and the HTML contact sheet.
//! - [`templates`]: the model-image template lists — read page by page, cached, printed, a
//!   gallery of their covers — and `--check-templates`, which checks the manifests' template ids
//!   against them before anything is sent.
//! - [`sim`]: the simulator, a local stand-in of the API (`simulate`, `run --simulate`, tests).
//!
//! # Data flow
//!
//! `cli → settings → validate::load_valid (manifest::load → expand, lazy, ids from content →
//! validate::check) → plan::make (journal::Prior, Compactor) → pipeline::run:
//! buffer_unordered(submit: Retrier::drive(rate limiter → WalHandle::sent, synced →
//! Client::submit → retry::classify::submission) → Outcome) → Journal::append (one consumer) →
//! the writer thread → Journal::finish → display::print_summary → exit code`
//!
//! # How a request flows
//!
//! From `main` to its row in `results.csv`, for `hidream-batch run catalog.yaml`:
//!
//! 1. `main` parses the [`cli::Cli`] and calls [`app::main`]: logging, a current-thread runtime,
//!    and `app::dispatch`, which starts the [`shutdown::Shutdown`] (`Shutdown::listen`) and turns
//!    the parsed arguments into [`settings::RunSettings`] ([`settings::run`]: defaults, cross-field
//!    checks; exit 2 on a setting that cannot work).
//! 2. [`commands::run::run`] calls [`validate::load_valid`]: [`manifest::load`] reads each file
//!    once, [`expand::expand`] yields every request lazily with its id ([`ids`]), and
//!    [`validate::check`] checks it against the API contract; any problem is exit 2, nothing
//!    sent.
//! 3. [`client::connection::connect`] builds the client (or starts the simulator for
//!    `--simulate`); the results are locked (`journal::lock`) and the server is asked whether it
//!    is the simulator ([`client::connection::world`]).
//! 4. On the blocking pool, `commands::run::start` reads the results ([`journal::Prior::read`]),
//!    and [`plan::make`] walks the expansion once: each request's state before the run
//!    ([`plan::should_send`] decides), and its place in the compacted results
//!    ([`journal::Compactor::place`]); [`journal::Compactor::finish`] settles the open entries
//!    of a crashed run, empties the write-ahead log, and opens the [`journal::Journal`] with its
//!    writer thread.
//! 5. [`pipeline::run`] streams the requests to send into `pipeline::submit`, `--concurrency` at a
//!    time. `submit` builds the body ([`expand::Request::wire`]) and hands its attempts to
//!    [`retry::Retrier::drive`]: the endpoint's [`rate::Limiter`], then
//!    [`journal::WalHandle::sent`] (the `sent` line synced by the writer thread), then
//!    [`client::Client::submit`], then [`retry::classify::submission`] — `Submitted`,
//!    `Rejected`, `Unknown`, or `Retry` after a [`retry::Backoff`] delay.
//! 6. The consumer loop of `pipeline::run` takes each [`pipeline::Outcome`], renders its row
//!    ([`results::Rows::row`]) and appends it ([`journal::Journal::append`]), and counts it in
//!    the [`breaker::Breaker`] (K refusals in a row with one code stop dispatch);
//!    [`journal::Journal::flush`] hands the rows to the writer thread, which writes them to
//!    `results.csv`, syncs, and only then settles their write-ahead entries (`done`).
//! 7. [`journal::Journal::finish`] rewrites the results in expansion order, one row per request;
//!    [`display::print_summary`] prints the summary; the exit code says whether every request
//!    was submitted (or, 4, that the breaker stopped the run).
//!
//! See the README for the user's view: commands, manifest reference, results columns, exit codes.

#![warn(unreachable_pub, missing_docs)]
// These docs are the developers' map of the whole crate, private modules included: read them with
// `cargo doc --document-private-items --open`, where every link resolves.
#![allow(rustdoc::private_intra_doc_links)]

pub(crate) mod activity;
pub mod api;
pub mod app;
pub mod body;
pub(crate) mod breaker;
pub mod cli;
pub(crate) mod client;
pub(crate) mod collect;
pub mod commands;
pub mod digest;
pub(crate) mod display;
pub mod env_vars;
pub(crate) mod exit;
pub mod expand;
pub(crate) mod files;
pub mod ids;
pub(crate) mod journal;
pub mod limits;
pub(crate) mod logging;
pub mod manifest;
pub(crate) mod merge;
pub mod metrics;
pub mod ping;
pub(crate) mod pipeline;
pub(crate) mod plan;
pub(crate) mod problem;
pub(crate) mod rate;
pub(crate) mod results;
pub(crate) mod retry;
pub mod settings;
pub mod shutdown;
pub mod sim;
pub mod templates;
pub mod units;
pub(crate) mod validate;
