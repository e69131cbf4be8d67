//! The command line, as clap derive types. Doc comments here are the `--help` text; nothing else
//! lives in this file. `crate::settings` turns them into checked settings (and holds every default).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::settings::defaults::*;
use crate::units::{Latency, RateArg, Shard, parse_duration};

/// Submit manifests of HiDream image requests: validated, rate-limited, resumable, never paid twice.
#[derive(Debug, Parser)]
#[command(name = "hidream-batch", version, about, max_term_width = 100, after_help = AFTER_HELP)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,

    /// Text, or one JSON object per line on stdout and stderr (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log output (-v, -vv, -vvv); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less output: warnings and errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The environment and the exit codes, under the top-level `--help` (README "Exit codes").
pub const AFTER_HELP: &str = "\
Environment:
  HIDREAM_API_TOKEN    the API token (run, collect, templates, --check-templates; not with
                       --simulate, nor for a --dry-run alone); never shown
  HIDREAM_API_USER_ID  optional; sent as API-User-ID to text-to-image
  HIDREAM_BATCH_CACHE_DIR
                       the cache folder (template lists); default $XDG_CACHE_HOME/hidream-batch,
                       else ~/.cache/hidream-batch
  RUST_LOG             log filter; overrides -v and -q

Exit codes:
  0    every request has a task (collect: every image done and on disk)
  1    finished, but some requests are rejected, failed or unknown (collect: some images not)
  2    invalid input or usage: nothing was sent
  3    aborted: credentials refused, results locked or unwritable, a state that needs a person
  4    stopped: the API refused --max-consecutive-rejections requests in a row with one code
  130  interrupted by a signal, after the results were written";

/// How log lines are written on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[expect(
        missing_docs,
        reason = "clap shows variant docs in --help; `text`: human-readable log lines"
    )]
    Text,
    #[expect(
        missing_docs,
        reason = "clap shows variant docs in --help; `json`: one JSON object per log line"
    )]
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_names_every_exit_code_and_the_environment() {
        use crate::exit::*;
        for code in [OK, INCOMPLETE, INVALID, ABORTED, STOPPED, INTERRUPTED] {
            assert!(
                AFTER_HELP.contains(&format!("\n  {code} ")),
                "exit code {code} is not in --help"
            );
        }
        for var in [
            crate::env_vars::API_TOKEN,
            crate::env_vars::API_USER_ID,
            crate::env_vars::CACHE_DIR,
            crate::env_vars::RUST_LOG,
        ] {
            assert!(AFTER_HELP.contains(var), "{var} is not in --help");
        }
    }
}

/// The commands of `hidream-batch`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Expand, validate and submit manifests; write the results CSV.
    Run(RunArgs),
    /// Parse, expand and validate manifests; print counts; send nothing.
    Validate(ValidateArgs),
    /// Print every expanded request as a JSON line, with its request id and endpoint.
    Expand(ExpandArgs),
    /// Poll the tasks of a results CSV, download finished images, write images.csv and index.html.
    Collect(CollectArgs),
    /// Serve a local stand-in of the HiDream API (try the tool without a token; tests; benchmarks).
    Simulate(SimulateArgs),
    /// Merge results CSVs (e.g. from shards) into one.
    Merge(MergeArgs),
    /// List the model-image templates (human or scene): a table, CSV or JSON, or a gallery page.
    Templates(TemplatesArgs),
}

/// Options shared by every command that reads manifests.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// Manifest files: YAML (`.yaml`, `.yml`) or CSV (`.csv`), expanded in the order given.
    #[arg(value_name = "MANIFEST", required = true)]
    pub manifests: Vec<PathBuf>,

    /// Refuse manifests that expand to more than N requests.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REQUESTS)]
    pub max_requests: u64,

    /// Salt mixed into every request id, so the same manifest can be submitted again as a new run.
    #[arg(long, value_name = "TEXT")]
    pub run_id: Option<String>,
}

/// `--check-templates` and `--refresh-templates`: shared by `run` and `validate`.
#[derive(Debug, Clone, Args)]
pub struct TemplateCheckArgs {
    /// Check every template id of the manifests against the API's lists before anything is sent:
    /// an unknown id is a problem (exit 2); lists that cannot be read stop the command (exit 3).
    /// The lists are cached for a day (HIDREAM_BATCH_CACHE_DIR).
    #[arg(long)]
    pub check_templates: bool,

    /// Read the template lists from the API even if the cache has them.
    #[arg(long, requires = "check_templates")]
    pub refresh_templates: bool,
}

/// The arguments of `validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The manifests and how they expand.
    #[command(flatten)]
    pub manifest: ManifestArgs,

    /// The template check (the only part of `validate` that uses the network).
    #[command(flatten)]
    pub templates: TemplateCheckArgs,

    /// With --check-templates: read the lists from this origin instead of the real host.
    #[arg(long, value_name = "URL", requires = "check_templates")]
    pub base_url: Option<String>,

    /// With --check-templates: read the lists of the built-in simulator (no token needed).
    #[arg(long, conflicts_with = "base_url", requires = "check_templates")]
    pub simulate: bool,
}

/// Which template list `templates` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TemplateListArg {
    /// Model types (`human_template_id`): id, names, gender.
    Human,
    /// Scenes (`scene_template_id`): id, names, scene type, region.
    Scene,
}

/// How `templates` prints its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TemplateFormat {
    /// Aligned columns: id, English and Chinese name, gender or scene type, region.
    Table,
    /// CSV with every field (fields the API documents first).
    Csv,
    /// A JSON array of the templates as the API sent them, every field kept.
    Json,
}

/// The arguments of `templates`.
#[derive(Debug, Clone, Args)]
pub struct TemplatesArgs {
    /// Which list.
    #[arg(value_enum)]
    pub list: TemplateListArg,

    /// How to reach the API, at what pace (--rate: list pages per minute), with what retries.
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// How the list is printed on stdout.
    #[arg(long, value_enum, default_value_t = TemplateFormat::Table)]
    pub format: TemplateFormat,

    /// Also write DIR/index.html, a page of the templates' covers (fetched once each, at
    /// ?width=512, into DIR/covers/) grouped by gender or scene type, captioned with their ids.
    #[arg(long, value_name = "DIR")]
    pub gallery: Option<PathBuf>,

    /// Templates per page asked of the API (1-100).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TEMPLATE_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub page_size: u32,

    /// Timeout of one HTTP attempt (a page or a cover).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The arguments of `expand`.
#[derive(Debug, Clone, Args)]
pub struct ExpandArgs {
    /// The manifests and how they expand.
    #[command(flatten)]
    pub manifest: ManifestArgs,

    /// Print local images as the base64 that would be sent, not as their path.
    #[arg(long)]
    pub full: bool,

    /// Show endpoints on this origin instead of the real hosts.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
}

/// How to reach the API: shared by `run` and `collect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Send every request to this origin instead of the real hosts (plain http only to loopback).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Start the built-in simulator in-process on a loopback port and use it; no token needed.
    #[arg(long, conflicts_with = "base_url")]
    pub simulate: bool,

    /// At most N requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// At most N images per rolling minute per endpoint (a request for 4 images counts 4); 0 = no
    /// limit. `KIND=N` (`txt2img=N`, `model=N`) sets one endpoint; repeatable, a later value wins.
    ///
    /// `--rate 100 --rate model=20`: text-to-image 100, model images 20. `run` sends a minute's
    /// allowance as fast as --concurrency lets it, then waits for the window; once an endpoint
    /// answers HTTP 429 its attempts are spaced evenly (60 s / N per image) for the rest of the
    /// run. Task queries have their own pace (--poll-rate); `collect` ignores --rate.
    #[arg(long, value_name = "N|KIND=N", default_values_t = [RateArg::All(DEFAULT_RATE)])]
    pub rate: Vec<RateArg>,

    /// Attempts per request, the first included.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// First retry delay; doubles per attempt with full jitter; `Retry-After` is a floor.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_BACKOFF, value_parser = parse_duration)]
    pub backoff: Duration,

    /// Longest retry delay.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_BACKOFF_MAX, value_parser = parse_duration)]
    pub backoff_max: Duration,
}

/// How submitted tasks are followed: shared by `run` (`--max-pending`, `--collect`) and `collect`.
#[derive(Debug, Clone, Args)]
pub struct PollArgs {
    /// At most N task queries per minute per endpoint; 0 = no limit. Queries have their own
    /// pace, apart from --rate (the API documents no limit on them).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_POLL_RATE)]
    pub poll_rate: u32,

    /// The longest pause between two queries of one task: a task `run` follows is first queried
    /// when tasks have been seen to finish (learned; 1 s at first), `collect` asks at once; then
    /// at growing intervals up to this.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_POLL_INTERVAL, value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// How an `image` the API gives as a bare id (not a URL) becomes a URL: `{id}` is replaced
    /// by it (HiDream's own client uses this CDN for its domestic service).
    #[arg(long, value_name = "TEMPLATE", default_value = DEFAULT_IMAGE_URL_TEMPLATE)]
    pub image_url_template: String,
}

/// The arguments of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The manifests and how they expand.
    #[command(flatten)]
    pub manifest: ManifestArgs,

    /// How to reach the API, at what pace, with what retries.
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Results CSV; also the resume state.
    #[arg(short, long, value_name = "PATH", default_value = DEFAULT_RESULTS)]
    pub out: PathBuf,

    /// Timeout of one attempt (connecting, TCP and TLS, at most 10 s).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,

    /// Also resubmit requests that the API rejected in an earlier run.
    #[arg(long)]
    pub retry_rejected: bool,

    /// Also retry requests whose outcome is unknown (the API may have created, and billed, the task).
    #[arg(long)]
    pub retry_unknown: bool,

    /// Stop dispatching after K refusals in a row with the same `code` and no success between
    /// (an account out of credits); exit 4. 0 = off.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_MAX_CONSECUTIVE_REJECTIONS)]
    pub max_consecutive_rejections: u32,

    /// Treat an HTTP 2xx answer with this `code` as transient: retried with backoff up to
    /// --max-attempts, then `failed` (resent by the next run), never `rejected`. Repeatable.
    #[arg(long, value_name = "CODE", allow_negative_numbers = true)]
    pub retry_code: Vec<i64>,

    /// Refuse to start (exit 2) if the run would submit more than N images.
    #[arg(long, value_name = "N")]
    pub max_images: Option<u64>,

    /// Submit only the requests whose id hashes to shard K of N (1-based).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,

    /// Print the plan (new, already submitted, to retry, unknown) and exit without sending.
    #[arg(long)]
    pub dry_run: bool,

    /// Download the images into DIR as their tasks finish, while submitting; then wait for the
    /// rest (as `collect --wait`) and write DIR/images.csv and DIR/index.html.
    #[arg(long, value_name = "DIR")]
    pub collect: Option<PathBuf>,

    /// At most N of this run's tasks submitted and not yet finished, across both endpoints (the
    /// API's concurrency limit per membership tier: 1, 3, 5, 7 or 10). The run follows its own
    /// tasks and submits the next request as soon as one finishes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending: Option<u32>,

    /// How tasks are queried (with --max-pending and --collect).
    #[command(flatten)]
    pub poll: PollArgs,

    /// The template check before anything is sent.
    #[command(flatten)]
    pub templates: TemplateCheckArgs,

    /// At the end (also of a failed run), write a Prometheus textfile-collector file here,
    /// atomically: outcomes, images, duration, exit code, last run and last success times.
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    /// Health-check pings (healthchecks.io's convention): URL/start when it starts, URL/<exit
    /// code> at the end with a JSON summary; a run id on both. A ping never changes the outcome.
    #[arg(long, value_name = "URL")]
    pub ping_url: Option<String>,
}

/// The arguments of `collect`.
#[derive(Debug, Clone, Args)]
pub struct CollectArgs {
    /// How to reach the API, at what pace, with what retries.
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// The results CSV written by `run`.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_RESULTS)]
    pub results: PathBuf,

    /// Where images, images.csv and index.html go.
    #[arg(short, long, value_name = "DIR", default_value = DEFAULT_IMAGES_DIR)]
    pub out: PathBuf,

    /// Keep polling until every task is finished or `--timeout` passes.
    #[arg(long)]
    pub wait: bool,

    /// How long `--wait` keeps polling.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_WAIT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,

    /// Timeout of one HTTP attempt (a query or a download).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How tasks are queried.
    #[command(flatten)]
    pub poll: PollArgs,

    /// A folder where the local garment photos the results name are looked for (a path as the
    /// manifest wrote it: give the manifest's folder); repeatable. The results' folder and the
    /// current one are always looked in.
    #[arg(long, value_name = "DIR")]
    pub input_dir: Vec<PathBuf>,

    /// At the end (also of a failed run), write a Prometheus textfile-collector file here,
    /// atomically: outcomes, images, duration, exit code, last run and last success times.
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    /// Health-check pings (healthchecks.io's convention): URL/start when it starts, URL/<exit
    /// code> at the end with a JSON summary; a run id on both. A ping never changes the outcome.
    #[arg(long, value_name = "URL")]
    pub ping_url: Option<String>,
}

/// The arguments of `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// Latency per request: a duration, or a range `20ms..200ms`.
    #[arg(long, value_name = "D", default_value = DEFAULT_LATENCY)]
    pub latency: Latency,

    /// Fraction of submissions answered with HTTP 500.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub error_rate: f64,

    /// Answer HTTP 429 (with Retry-After) beyond N images per rolling minute per endpoint.
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,

    /// Enforce --rate-limit as a steady flow that tolerates bursts of N images (like nginx's
    /// `limit_req ... burst=N`), instead of per rolling minute
    #[arg(long, value_name = "N", requires = "rate_limit")]
    pub rate_burst: Option<u32>,

    /// Answer HTTP 429 (with Retry-After) when more than N submissions are in flight.
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u32>,

    /// Fraction of submissions answered HTTP 429 (Retry-After: 1), as an overloaded API sheds load.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub throttle_rate: f64,

    /// Time a task takes from submission to done.
    #[arg(long, value_name = "D", default_value = DEFAULT_TASK_TIME, value_parser = parse_duration)]
    pub task_time: Duration,

    /// Accept only this bearer token (default: any non-empty token).
    #[arg(long, value_name = "T", hide_env_values = true)]
    pub token: Option<String>,

    /// Seed of every random choice (faults, latency, task outcomes).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Fraction of tasks that end 3 (generation failed).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub fail_rate: f64,

    /// Fraction of tasks that end 4 (refused by content review).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub refuse_rate: f64,

    /// Fraction of submissions whose connection is closed without an answer, before the task exists.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub drop_before: f64,

    /// Fraction of submissions whose connection is closed without an answer, after the task was created.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub drop_after: f64,

    /// Append one JSON line per task created (kind, request_id, task_id) to FILE: what the server
    /// holds, to check that a client lost none.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<std::path::PathBuf>,

    /// How refusals and errors write their missing `result`: `null`, `{}` (empty) or no key at
    /// all (absent), as servers variously write "no result".
    #[arg(long, value_name = "SHAPE", value_enum, default_value = "null")]
    pub refusal_result: RefusalResultArg,

    /// Refuse submissions (HTTP 200, code 1201) while N tasks are unfinished: the API's
    /// concurrency limit per membership tier (1, 3, 5, 7 or 10), counted in requests whose task
    /// has not ended, across both endpoints.
    #[arg(long, value_name = "N")]
    pub max_pending: Option<u32>,

    /// N images of credit for the whole run: each accepted submission spends its image count;
    /// one asking for more than is left is refused (HTTP 200, code 1202).
    #[arg(long, value_name = "N")]
    pub credits: Option<u64>,

    /// Give a finished image in query results as its bare id (the sub-task id) instead of a URL,
    /// as HiDream's own client expects; it is served at `/sim/images/{id}.png` and
    /// `/sim/images/{id}`.
    #[arg(long)]
    pub bare_image_ids: bool,

    /// Refuse model submissions (HTTP 200, code 1007) whose human or scene template id is not in
    /// the simulator's template lists (which it always serves).
    #[arg(long)]
    pub strict_templates: bool,
}

/// `simulate --refusal-result`: how an answer without a result writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefusalResultArg {
    /// `"result": null`.
    Null,
    /// `"result": {}`.
    Empty,
    /// No `result` key.
    Absent,
}

/// The arguments of `merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Results CSVs to merge; for one request id the latest row wins.
    #[arg(value_name = "CSV", required = true)]
    pub inputs: Vec<PathBuf>,

    /// The merged results CSV.
    #[arg(short, long, value_name = "PATH")]
    pub out: PathBuf,

    /// Order the rows as these manifests expand (as an unsharded run would); other rows follow.
    #[arg(long, value_name = "MANIFEST")]
    pub manifest: Vec<PathBuf>,

    /// The `--run-id` the runs used (with `--manifest`).
    #[arg(long, value_name = "TEXT")]
    pub run_id: Option<String>,
}
