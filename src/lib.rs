//! hidream-batch: turn manifests of HiDream image requests into paid submissions, at the pace the
//! account allows, without ever paying twice for the same request.
//!
//! # Layout
//!
//! - [`cli`]: clap types; doc comments are the `--help` text. [`settings`]: what clap cannot check.
//! - [`units`]: argument value types (durations, latency ranges, shards).
//! - [`env_vars`]: every environment variable, documented.
//! - [`exit`]: the exit codes of SPEC §6 and the errors that carry them.
//! - [`api`]: the HiDream API contract: hosts, paths, field limits, response shapes.
//! - [`app`]: dispatch of the commands; [`commands`]: `validate` and `expand`.
//! - [`manifest`]: YAML and CSV manifests, loaded into one model (CSV files read once, from a
//!   private copy); [`problem`]: what is wrong, where.
//! - [`expand`]: manifests → a lazy iterator of typed requests; [`ids`]: a request's id is its
//!   content (local images by the BLAKE3 digest of their bytes).
//! - [`validate`]: the API contract's checks on every request, all problems at once.
//! - [`body`]: request bodies as sent, local images streamed as base64 and checked against their
//!   digest.
//! - [`client`]: the shared HTTP client, credentials, one attempt; `client::retry` classifies.
//! - [`rate`]: the images-per-minute limiter per endpoint.
//! - [`plan`]: what a run sends and why; [`run`]: the pipeline: `buffer_unordered(submit)` → one
//!   consumer.
//! - [`results`]: the results CSV's schema, rows and strict reader; [`journal`]: the results as a
//!   state machine — write-ahead log, lock, compaction, final rewrite — and its invariants.
//! - [`merge`]: combine results CSVs (shards).
//! - [`logging`]: tracing setup (text or JSON), safe display of outside text.
//! - [`collect`]: polling, downloads, `images.csv` and the HTML contact sheet (`collect`, `run --collect`).
//! - [`sim`]: the simulator, a local stand-in of the API (`simulate`, `run --simulate`, tests).
//!
//! # Data flow
//!
//! `cli → settings → manifest::load → expand (lazy, ids from content) → validate → journal
//! (lock, read, plan, compaction) → run: buffer_unordered(submit: rate → wal.sent (synced) →
//! client::submit → retry::classify → Outcome) → journal.append (one consumer) → journal.finish
//! → ExitCode`
//!
//! See the README for the user's view: commands, manifest reference, results columns, exit codes.

pub mod api;
pub mod app;
pub mod body;
pub mod cli;
pub mod client;
pub mod collect;
pub mod commands;
pub mod display;
pub mod env_vars;
pub mod exit;
pub mod expand;
pub mod ids;
pub mod journal;
pub mod logging;
pub mod manifest;
pub mod merge;
pub mod pipeline;
pub mod plan;
pub mod problem;
pub mod rate;
pub mod results;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod sim;
pub mod units;
pub mod validate;
