//! Settings: the one place where what clap parsed becomes checked values (ripgrep's `lowargs` →
//! `hiargs`). `cli` parses; the functions here turn its types into [`RunSettings`],
//! [`CollectSettings`], [`ConnectionSettings`], [`SimSettings`] (and the small settings of
//! `validate`, `expand`, `merge` and `templates`; `validate`'s and `templates`' live in
//! `templates.rs`) once, and nothing past this module sees a clap type.
//!
//! Settings that parse but cannot work are refused before anything is sent (exit 2), naming the
//! flag: a zero timeout would send (and pay for) a request whose answer can never arrive, and a
//! first retry delay above the longest one is a typo. Every default lives in [`defaults`].

pub mod defaults;
mod templates;

pub use templates::{
    ListFormat, TemplateCheck, TemplatesSettings, ValidateSettings, templates, validate,
};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{
    CollectArgs, ConnectionArgs, ExpandArgs, ManifestArgs, MergeArgs, PollArgs, RefusalResultArg,
    RunArgs, SimulateArgs,
};
use crate::client::BaseUrl;
use crate::plan::Flags;
use crate::retry::{Backoff, RetryPolicy};
use crate::sim::{LedgerConfig, RefusalResult, SimConfig};
use crate::units::{Rates, Shard};

/// What every manifest command reads.
#[derive(Debug, Clone)]
pub struct ManifestSettings {
    /// The manifests, expanded in this order.
    pub manifests: Vec<PathBuf>,
    /// Manifests that expand to more requests are refused.
    pub max_requests: u64,
    /// Salt of every request id (`--run-id`).
    pub run_id: Option<String>,
}

impl ManifestSettings {
    /// Validate and load the manifests (exit 2 on any problem, every problem printed).
    pub fn load_valid(
        &self,
    ) -> anyhow::Result<(Vec<crate::manifest::Manifest>, crate::validate::Report)> {
        let options = crate::validate::Options {
            max_requests: self.max_requests,
            run_id: self.run_id.as_deref(),
        };
        crate::validate::load_valid(&self.manifests, &options)
    }
}

/// The server requests go to.
#[derive(Debug, Clone)]
pub enum Server {
    /// The HiDream API at its real hosts.
    Api,
    /// `--base-url`: the API or the simulator behind one origin (a run asks which).
    Url {
        /// The checked origin.
        url: BaseUrl,
        /// As the user wrote it, for messages.
        text: String,
    },
    /// `--simulate`: the simulator, started in-process.
    Simulator,
}

/// How to reach the API: `run`'s and `collect`'s connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Where requests go.
    pub server: Server,
    /// HTTP requests in flight at once.
    pub concurrency: usize,
    /// Images (for `collect`: queries) per rolling minute, per endpoint; 0 = no limit.
    pub rates: Rates,
    /// Attempts and the delays between them.
    pub retry: RetryPolicy,
    /// One HTTP attempt, whole.
    pub timeout: Duration,
}

/// `run`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The manifests.
    pub manifest: ManifestSettings,
    /// The server, the pace and the retries.
    pub connection: ConnectionSettings,
    /// The results CSV (also the resume state).
    pub out: PathBuf,
    /// What is resent of earlier outcomes.
    pub flags: Flags,
    /// `--retry-code`: business codes of a 2xx answer retried as transient (never 0).
    pub retry_codes: BTreeSet<i64>,
    /// `--max-consecutive-rejections`: the breaker's K; 0 = off.
    pub max_consecutive_rejections: u32,
    /// Refuse to start if the run would submit more images.
    pub max_images: Option<u64>,
    /// Only the requests of this shard.
    pub shard: Option<Shard>,
    /// Print the plan, send and write nothing.
    pub dry_run: bool,
    /// `--collect DIR`: download as tasks finish, then collect the rest.
    pub collect: Option<CollectSettings>,
    /// `--max-pending`: this run's submitted, unfinished tasks at most.
    pub max_pending: Option<u32>,
    /// How tasks are queried (`--max-pending`, `--collect`).
    pub poll: PollSettings,
    /// What the run reports (`--metrics-textfile`, `--ping-url`'s body).
    pub metrics: crate::metrics::Metrics,
    /// `--ping-url`.
    pub ping: Option<String>,
    /// `--check-templates`, `--refresh-templates`.
    pub templates: TemplateCheck,
}

/// How submitted tasks are queried.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Task queries per minute per endpoint; 0 = no limit.
    pub rate: u32,
    /// How a bare image id becomes a URL (`{id}` replaced).
    pub image_url: String,
    /// The longest pause between two queries of one task.
    pub interval: Duration,
}

/// `--poll-rate`, `--image-url-template`.
pub fn poll(args: PollArgs) -> Result<PollSettings, String> {
    if !args.image_url_template.contains("{id}") {
        return Err(format!(
            "--image-url-template: `{}` has no `{{id}}` to put the image id in",
            args.image_url_template
        ));
    }
    positive("--poll-interval", args.poll_interval)?;
    Ok(PollSettings {
        rate: args.poll_rate,
        image_url: args.image_url_template,
        interval: args.poll_interval,
    })
}

/// `collect`, and `run --collect`.
#[derive(Debug, Clone)]
pub struct CollectSettings {
    /// The connection (`run --collect`: the run's).
    pub connection: ConnectionSettings,
    /// The results CSV read.
    pub results: PathBuf,
    /// Where images, images.csv and index.html go.
    pub out: PathBuf,
    /// Poll until every task is finished or `wait_timeout` passes.
    pub wait: bool,
    /// How long `wait` polls.
    pub wait_timeout: Duration,
    /// How tasks are queried.
    pub poll: PollSettings,
    /// What the collection reports (`run --collect`: the run's).
    pub metrics: crate::metrics::Metrics,
    /// `--ping-url` (`run --collect`: none; the run pings).
    pub ping: Option<String>,
    /// Where the local garment photos the results name are looked for, before the results'
    /// folder and the current one (`--input-dir`; `run --collect`: the manifests' folders).
    pub input_dirs: Vec<PathBuf>,
}

/// `simulate`.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// The address to listen on, as given.
    pub listen: String,
    /// What the simulator does.
    pub config: SimConfig,
}

/// `expand`.
#[derive(Debug, Clone)]
pub struct ExpandSettings {
    /// The manifests.
    pub manifest: ManifestSettings,
    /// Local images as the base64 that would be sent.
    pub full: bool,
    /// Endpoints shown on this origin.
    pub base_url: Option<String>,
}

/// `merge`.
#[derive(Debug, Clone)]
pub struct MergeSettings {
    /// The results CSVs merged.
    pub inputs: Vec<PathBuf>,
    /// The merged results CSV.
    pub out: PathBuf,
    /// Order rows as these manifests expand.
    pub order: Option<ManifestSettings>,
}

fn positive(flag: &str, d: Duration) -> Result<(), String> {
    if d.is_zero() {
        Err(format!(
            "`{flag}` must be longer than zero (an attempt that cannot wait for its answer is paid for and recorded `unknown`)"
        ))
    } else {
        Ok(())
    }
}

/// The manifest options.
pub fn manifest(args: ManifestArgs) -> ManifestSettings {
    ManifestSettings {
        manifests: args.manifests,
        max_requests: args.max_requests,
        run_id: args.run_id,
    }
}

/// The connection options shared by `run` and `collect`; `timeout` bounds one attempt.
pub fn connection(
    args: ConnectionArgs,
    timeout_flag: &str,
    timeout: Duration,
) -> Result<ConnectionSettings, String> {
    positive(timeout_flag, timeout)?;
    if args.backoff > args.backoff_max {
        return Err(format!(
            "`--backoff` ({}) is longer than `--backoff-max` ({}): the first retry delay cannot exceed the longest",
            humantime::format_duration(args.backoff),
            humantime::format_duration(args.backoff_max)
        ));
    }
    let server = match (args.simulate, args.base_url) {
        (true, _) => Server::Simulator,
        (false, None) => Server::Api,
        (false, Some(text)) => Server::Url {
            url: BaseUrl::parse(&text).map_err(|m| format!("--base-url: {m}"))?,
            text,
        },
    };
    Ok(ConnectionSettings {
        server,
        concurrency: args.concurrency.max(1) as usize,
        rates: Rates::from_args(defaults::DEFAULT_RATE, &args.rate),
        retry: RetryPolicy {
            max_attempts: args.max_attempts.max(1),
            backoff: Backoff {
                base: args.backoff,
                max: args.backoff_max,
            },
        },
        timeout,
    })
}

/// `run`'s options.
pub fn run(args: RunArgs) -> Result<RunSettings, String> {
    let connection = connection(args.connection, "--timeout", args.timeout)?;
    let poll = poll(args.poll)?;
    if args.retry_code.contains(&0) {
        return Err(
            "`--retry-code 0`: code 0 is the API's success (a task id), never a refusal to retry"
                .into(),
        );
    }
    let metrics = crate::metrics::Metrics::new(args.metrics_textfile);
    let ping = args.ping_url.map(ping_url).transpose()?;
    let mut collect = args
        .collect
        .map(|dir| CollectSettings::after_run(&connection, &poll, &args.out, dir, metrics.clone()));
    if let Some(c) = &mut collect {
        // A local image is written relative to its manifest: the sheet looks there first.
        for m in &args.manifest.manifests {
            let dir = m.parent().unwrap_or(std::path::Path::new("")).to_path_buf();
            if !c.input_dirs.contains(&dir) {
                c.input_dirs.push(dir);
            }
        }
    }
    Ok(RunSettings {
        manifest: manifest(args.manifest),
        connection,
        out: args.out,
        flags: Flags {
            retry_rejected: args.retry_rejected,
            retry_unknown: args.retry_unknown,
        },
        retry_codes: args.retry_code.into_iter().collect(),
        max_consecutive_rejections: args.max_consecutive_rejections,
        max_images: args.max_images,
        shard: args.shard,
        dry_run: args.dry_run,
        collect,
        max_pending: args.max_pending,
        poll,
        metrics,
        ping,
        templates: args.templates.into(),
    })
}

impl CollectSettings {
    /// `run --collect DIR`: the run's connection and results, `--wait`, and `collect`'s default
    /// poll interval and wait timeout.
    pub fn after_run(
        connection: &ConnectionSettings,
        poll: &PollSettings,
        results: &std::path::Path,
        out: PathBuf,
        metrics: crate::metrics::Metrics,
    ) -> CollectSettings {
        CollectSettings {
            connection: connection.clone(),
            results: results.to_path_buf(),
            out,
            wait: true,
            wait_timeout: defaults::duration(defaults::DEFAULT_WAIT_TIMEOUT),
            poll: poll.clone(),
            metrics,
            ping: None,
            input_dirs: Vec::new(),
        }
    }
}

/// `collect`'s options.
pub fn collect(args: CollectArgs) -> Result<CollectSettings, String> {
    positive("--timeout", args.timeout)?;
    Ok(CollectSettings {
        connection: connection(args.connection, "--request-timeout", args.request_timeout)?,
        results: args.results,
        out: args.out,
        wait: args.wait,
        wait_timeout: args.timeout,
        poll: poll(args.poll)?,
        metrics: crate::metrics::Metrics::new(args.metrics_textfile),
        ping: args.ping_url.map(ping_url).transpose()?,
        input_dirs: args.input_dir,
    })
}

/// `--ping-url`: an http(s) URL without a user or password (it is logged when a ping fails).
fn ping_url(url: String) -> Result<String, String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!("--ping-url: `{url}` is not an http(s) URL"));
    }
    crate::client::no_credentials(&url).map_err(|m| format!("--ping-url: {m}"))?;
    Ok(url.trim_end_matches('/').to_string())
}

/// `simulate`'s options.
pub fn simulate(args: SimulateArgs) -> Result<SimSettings, String> {
    let config = SimConfig {
        latency: args.latency,
        error_rate: args.error_rate,
        rate_limit: args.rate_limit,
        rate_burst: args.rate_burst,
        rate_minute: SimConfig::default().rate_minute,
        max_concurrent: args.max_concurrent,
        throttle_rate: args.throttle_rate,
        task_time: args.task_time,
        token: args.token,
        seed: args.seed,
        fail_rate: args.fail_rate,
        refuse_rate: args.refuse_rate,
        drop_before: args.drop_before,
        drop_after: args.drop_after,
        ledger: args.ledger.map_or(LedgerConfig::Off, LedgerConfig::File),
        refusal_result: match args.refusal_result {
            RefusalResultArg::Null => RefusalResult::Null,
            RefusalResultArg::Empty => RefusalResult::Empty,
            RefusalResultArg::Absent => RefusalResult::Absent,
        },
        max_pending: args.max_pending,
        credits: args.credits,
        bare_image_ids: args.bare_image_ids,
        strict_templates: args.strict_templates,
    };
    config.check()?;
    // `:PORT` is that port on loopback (`:0`: a free one): the simulator is for this machine.
    let listen = match args.listen.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => args.listen,
    };
    Ok(SimSettings { listen, config })
}

/// `expand`'s options.
pub fn expand(args: ExpandArgs) -> Result<ExpandSettings, String> {
    if let Some(url) = &args.base_url {
        crate::client::no_credentials(url).map_err(|m| format!("--base-url: {m}"))?;
    }
    Ok(ExpandSettings {
        manifest: manifest(args.manifest),
        full: args.full,
        base_url: args.base_url,
    })
}

/// `merge`'s options: `--manifest` orders the rows (every request, however many).
pub fn merge(args: MergeArgs) -> MergeSettings {
    MergeSettings {
        inputs: args.inputs,
        out: args.out,
        order: (!args.manifest.is_empty()).then_some(ManifestSettings {
            manifests: args.manifest,
            max_requests: u64::MAX,
            run_id: args.run_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn run(extra: &[&str]) -> Result<(), String> {
        let mut argv = vec!["hidream-batch", "run", "m.yaml"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).command {
            Command::Run(args) => super::run(args).map(|_| ()),
            _ => unreachable!(),
        }
    }

    #[test]
    fn settings_that_cannot_work_name_their_flag() {
        assert!(run(&[]).is_ok());
        assert!(
            run(&["--timeout", "0s"])
                .unwrap_err()
                .contains("`--timeout`")
        );
        let err = run(&["--backoff", "10s", "--backoff-max", "1s"]).unwrap_err();
        assert!(
            err.contains("`--backoff`") && err.contains("`--backoff-max`"),
            "{err}"
        );
        assert!(run(&["--backoff", "0s", "--backoff-max", "0s"]).is_ok());
        assert!(
            run(&["--retry-code", "2001", "--retry-code", "0"])
                .unwrap_err()
                .contains("`--retry-code 0`")
        );
        assert!(run(&["--retry-code", "2001", "--retry-code", "-7"]).is_ok());
    }
}

#[cfg(test)]
mod sim_tests {
    use crate::cli::SimulateArgs;
    use crate::sim::SimConfig;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> SimulateArgs {
        let mut argv = vec!["hidream-batch", "simulate"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Simulate(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn from_args_takes_the_flags() {
        let config = super::simulate(args(&[
            "--latency",
            "10ms..20ms",
            "--rate-limit",
            "100",
            "--token",
            "secret",
            "--seed",
            "7",
        ]))
        .unwrap()
        .config;
        assert_eq!(config.rate_limit, Some(100));
        assert_eq!(config.seed, 7);
        assert!(
            !format!("{config:?}").contains("secret"),
            "the token is redacted"
        );
    }

    #[test]
    fn from_args_refuses_bad_values_naming_the_flag() {
        for (argv, flag) in [
            (&["--error-rate", "1.5"][..], "--error-rate"),
            (&["--drop-after=-0.1"], "--drop-after"),
            (
                &["--fail-rate", "0.6", "--refuse-rate", "0.6"],
                "--refuse-rate",
            ),
            (&["--rate-limit", "0"], "--rate-limit"),
            (&["--max-concurrent", "0"], "--max-concurrent"),
            (&["--token", " "], "--token"),
        ] {
            let err = super::simulate(args(argv)).map(|s| s.config).unwrap_err();
            assert!(err.contains(&format!("`{flag}`")), "{err}");
        }
        let nan = SimConfig {
            error_rate: f64::NAN,
            ..SimConfig::default()
        };
        assert!(nan.check().is_err());
    }
}
