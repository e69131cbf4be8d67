//! hidream-batch: turn manifests of HiDream image requests into paid submissions, at the pace the
//! account allows, without ever paying twice for the same request.
//!
//! # Layout
//!
//! - [`cli`]: clap types; doc comments are the `--help` text.
//! - [`units`]: argument value types (durations, latency ranges, shards).
//! - [`env_vars`]: every environment variable, documented.
//! - [`exit`]: the exit codes of SPEC §6 and the errors that carry them.
//! - [`api`]: the HiDream API contract: hosts, paths, field limits, response shapes.
//! - [`app`]: dispatch of the commands; [`commands`]: `validate` and `expand`.
//! - [`manifest`]: YAML and CSV manifests, loaded into one model; [`problem`]: what is wrong, where.
//! - [`expand`]: manifests → a lazy iterator of typed requests with their ids.
//! - [`validate`]: the API contract's checks on every request, all problems at once.
//! - [`body`]: request bodies as sent, local images streamed as base64.
//! - [`client`]: the shared HTTP client, credentials, one attempt; `client::retry` classifies.
//! - [`rate`]: the images-per-minute limiter per endpoint.
//! - [`run`]: the pipeline: `buffer_unordered(submit)` → one consumer.
//! - [`journal`]: the results CSV: append + flush, write-ahead log, resume index, rewrite, lock.
//! - [`merge`]: combine results CSVs (shards).
//! - [`logging`]: tracing setup (text or JSON), safe display of outside text.
//! - [`collect`]: polling, downloads, `images.csv` and the HTML contact sheet (`collect`, `run --collect`).
//! - [`sim`]: the simulator, a local stand-in of the API (`simulate`, `run --simulate`, tests).
//!
//! # Data flow
//!
//! `cli → settings → manifest::load → expand (lazy) → validate → run: buffer_unordered(submit:
//! rate → client::send_with_retry → Outcome) → journal.record + summary (one consumer) → ExitCode`
//!
//! See the README for the user's view: commands, manifest reference, results columns, exit codes.

pub mod api;
pub mod app;
pub mod body;
pub mod cli;
pub mod client;
pub mod collect;
pub mod commands;
pub mod env_vars;
pub mod exit;
pub mod expand;
pub mod ids;
pub mod journal;
pub mod logging;
pub mod manifest;
pub mod merge;
pub mod plan;
pub mod problem;
pub mod rate;
pub mod results;
pub mod run;
pub mod settings;
pub mod sim;
pub mod units;
pub mod validate;
