//! The injectable shutdown, in-process: the library's `run` and `collect`, given a [`Shutdown`]
//! the test triggers, against the simulator of this process (whose counters show what was sent).
//! Settings are made as the binary makes them: a command line parsed by clap, then `settings`.
//!
//! `journal.rs` does the same through the binary and real signals; here the signal is a call, so
//! a test knows exactly when it came.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser as _;
use hidream_batch::cli::{Cli, Command};
use hidream_batch::commands;
use hidream_batch::settings::{CollectSettings, RunSettings};
use hidream_batch::shutdown::Shutdown;
use hidream_batch::sim::{LedgerConfig, SimConfig};

use crate::common::*;

/// `run` and `collect` read the token from the process's environment (`Token::from_env`, which
/// no setting replaces outside `--simulate`, and `--simulate` starts a simulator a test cannot
/// see). So the variable is set once for the whole test binary, to the one value every test
/// agrees on ([`TOKEN`], what [`simulator`] accepts).
///
/// Why this is sound here: `set_var` is `unsafe` because another thread may read the environment
/// at the same time. Rust's own readers (`std::env::var`, and `Command::spawn`, which copies the
/// environment for a child) take std's environment lock, as `set_var` does, so they cannot race
/// it. What could race it is libc reading the environment on another thread behind std's back:
/// nothing here does that we know of (the in-process clients connect to IP literals on loopback,
/// which are not resolved; no logging or local time zone is set up in-process). And no
/// other test depends on the variable being unset: every child process is started with it
/// removed (`common::bin`) or set to [`TOKEN`] (`common::spawn`, `run_bin`, the strace test), and
/// the `simulate` children of `sim.rs` do not read it. Only the tests here read it in-process.
fn token_in_environment() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: see above: set once, to one value, before any reader of it in this process.
        unsafe { std::env::set_var(hidream_batch::env_vars::API_TOKEN, TOKEN) };
    });
}

/// The settings of `hidream-batch run …` ([`run_args`]) against `base`.
fn run_settings(manifest: &Path, base: &str, out: &Path, extra: &[&str]) -> RunSettings {
    let argv =
        std::iter::once("hidream-batch".to_string()).chain(run_args(manifest, base, out, extra));
    match Cli::try_parse_from(argv)
        .expect("the command line parses")
        .command
    {
        Command::Run(args) => hidream_batch::settings::run(args).expect("the settings work"),
        _ => unreachable!("a `run` command line"),
    }
}

/// The settings of `hidream-batch collect …` against `base`, polling every 100 ms.
fn collect_settings(base: &str, results: &Path, out: &Path, extra: &[&str]) -> CollectSettings {
    let mut argv: Vec<String> = ["hidream-batch", "collect", "--base-url", base]
        .into_iter()
        .map(str::to_string)
        .collect();
    argv.extend([
        "--results".into(),
        results.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    argv.extend(
        [
            "--rate",
            "0",
            "--backoff",
            "5ms",
            "--poll-interval",
            "100ms",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(str::to_string),
    );
    match Cli::try_parse_from(argv)
        .expect("the command line parses")
        .command
    {
        Command::Collect(args) => {
            hidream_batch::settings::collect(args).expect("the settings work")
        }
        _ => unreachable!("a `collect` command line"),
    }
}

/// A command running as the binary runs it: on a thread of its own, on a current-thread runtime
/// (`app::main`). Its future is not `Send` (`run` holds the lazy expansion, a `dyn Iterator`;
/// `collect`'s stream closures are not `Send` for every lifetime), so `tokio::spawn` cannot take
/// it: the thread makes it from `command`, and sends back what it returns.
fn start<F, Fut>(command: F) -> tokio::sync::oneshot::Receiver<anyhow::Result<u8>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u8>>,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _ = done.send(runtime.block_on(command()));
    });
    result
}

/// The exit code of a started command, which must return within `limit` and without an error.
async fn code_within(
    limit: Duration,
    result: tokio::sync::oneshot::Receiver<anyhow::Result<u8>>,
) -> u8 {
    tokio::time::timeout(limit, result)
        .await
        .unwrap_or_else(|_| panic!("the command did not return within {limit:?}"))
        .expect("the command's thread did not panic")
        .unwrap_or_else(|e| panic!("the command failed: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_signal_stops_dispatching_and_every_request_in_flight_gets_its_row() {
    token_in_environment();
    // 20 requests, 2 at a time, 200 ms each: 2 s if nothing stops the run.
    let sim = simulator(SimConfig {
        latency: "200ms".parse().unwrap(),
        ledger: LedgerConfig::Memory,
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("first", 20, &[1]);
    let concurrency = 2;
    let settings = run_settings(&manifest, &sim.base_url(), &out, &["--concurrency", "2"]);
    let shutdown = Shutdown::new();
    let run = start({
        let shutdown = shutdown.clone();
        move || commands::run::run(settings, shutdown)
    });
    until("two tasks created", || sim.stats().accepted >= 2).await;
    let arrived = sim.stats().submitted;
    assert_eq!(shutdown.signal(), 1);

    assert_eq!(code_within(Duration::from_secs(10), run).await, 130);
    let stats = sim.stats();
    // Those in flight at the signal (at most --concurrency, some perhaps not arrived yet)
    // finished; nothing new was sent.
    assert!(
        stats.submitted <= arrived + concurrency,
        "{} submissions after the signal, {arrived} before it, --concurrency {concurrency}",
        stats.submitted - arrived
    );
    assert!(stats.submitted < 20, "the signal stopped nothing");
    assert!(stats.max_in_flight <= concurrency, "{stats:?}");
    assert_eq!(
        (stats.accepted, stats.duplicates),
        (stats.submitted, 0),
        "{stats:?}"
    );
    // Every task the simulator created has its row, `submitted`, with its task id; requests that
    // were never sent have none.
    let created = sim.created();
    assert_eq!(created.len() as u64, stats.accepted);
    let rows = results(&out);
    assert_eq!(rows.len(), created.len(), "{rows:#?}");
    for task in &created {
        let id = task.request_id.as_deref().expect("a txt2img request_id");
        let row = rows
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no row for request {id}, task {}", task.task_id));
        assert_eq!(
            (row["status"].as_str(), row["task_id"].as_str()),
            ("submitted", task.task_id.as_str()),
            "{row:?}"
        );
    }
    assert!(open_entries(&out).is_empty(), "nothing left in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_signal_stops_at_once_and_the_next_run_records_what_was_in_flight_unknown() {
    token_in_environment();
    // Answers take 2 s: the requests are in flight when the signals come.
    let latency = Duration::from_secs(2);
    let sim = simulator(SimConfig {
        latency: "2s".parse().unwrap(),
        ledger: LedgerConfig::Memory,
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("twice", 4, &[1]);
    let settings = run_settings(&manifest, &sim.base_url(), &out, &["--concurrency", "2"]);
    let shutdown = Shutdown::new();
    let run = start({
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        move || commands::run::run(settings, shutdown)
    });
    until("two requests in flight", || sim.stats().accepted >= 2).await;
    assert_eq!((shutdown.signal(), shutdown.signal()), (1, 2));
    let signalled = Instant::now();

    assert_eq!(code_within(Duration::from_secs(10), run).await, 130);
    let took = signalled.elapsed();
    assert!(
        took < latency * 3 / 4,
        "returned {took:?} after the second signal: it waited for the answers ({latency:?})"
    );
    // The write-ahead log holds what was in flight, and no row does.
    let in_flight: std::collections::BTreeSet<String> = sim
        .created()
        .into_iter()
        .map(|t| t.request_id.expect("a txt2img request_id"))
        .collect();
    assert_eq!(in_flight.len(), 2);
    assert_eq!(open_entries(&out), in_flight);
    let wal = std::fs::read_to_string(sibling(&out, "wal")).unwrap();
    let sent: Vec<&str> = wal.lines().filter(|l| l.starts_with("sent ")).collect();
    assert_eq!(sent.len(), 2, "{wal}");
    assert_eq!(row_count(&out), 0, "no answer was recorded");

    // The same settings, a fresh shutdown: recorded `unknown`, never sent again; the rest sent.
    let code = commands::run::run(settings, Shutdown::new())
        .await
        .expect("the second run works");
    assert_eq!(code, 1, "two requests are `unknown`");
    let rows = results(&out);
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let expected = if in_flight.contains(&r["request_id"]) {
            "unknown"
        } else {
            "submitted"
        };
        assert_eq!(r["status"], expected, "{r:?}");
    }
    let stats = sim.stats();
    assert_eq!(
        (stats.submitted, stats.accepted, stats.duplicates),
        (4, 4, 0),
        "{stats:?}"
    );
    assert!(open_entries(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_collect_which_still_writes_images_csv() {
    token_in_environment();
    // Tasks that never finish: `collect --wait` would poll them until its timeout (60 s).
    let sim = simulator(SimConfig {
        task_time: Duration::from_secs(3600),
        ..quiet()
    })
    .await;
    let (dir, manifest, results_csv) = txt2img_scratch("collect", 4, &[2]);
    let submitted = commands::run::run(
        run_settings(&manifest, &sim.base_url(), &results_csv, &[]),
        Shutdown::new(),
    )
    .await
    .expect("the run works");
    assert_eq!(submitted, 0);
    let task_ids: std::collections::BTreeSet<String> = results(&results_csv)
        .into_iter()
        .map(|r| r["task_id"].clone())
        .collect();
    assert_eq!(task_ids.len(), 4);
    let out = dir.path().join("images");
    let settings = collect_settings(
        &sim.base_url(),
        &results_csv,
        &out,
        &["--wait", "--timeout", "60s", "--concurrency", "2"],
    );

    // A signal while it polls: the round in flight finishes, no other starts.
    let shutdown = Shutdown::new();
    let collect = start({
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        move || commands::collect::run(settings, shutdown)
    });
    let queries = || sim.stats().calls.results_txt2img;
    until("every task queried once", || queries() >= 4).await;
    let asked = queries();
    assert_eq!(shutdown.signal(), 1);
    assert_eq!(code_within(Duration::from_secs(10), collect).await, 130);
    assert!(
        queries() <= asked + 2,
        "{} queries after the signal, --concurrency 2",
        queries() - asked
    );
    // images.csv: a row per image of every task, none downloaded, with the statuses expected.
    let images = |what: &str, statuses: &[&str]| {
        let rows = results(&out.join("images.csv"));
        assert_eq!(rows.len(), 8, "{what}: a row per image: {rows:#?}");
        for r in &rows {
            assert!(task_ids.contains(&r["task_id"]), "{what}: {r:?}");
            assert!(statuses.contains(&r["status"].as_str()), "{what}: {r:?}");
            assert_eq!(r["path"], "", "{what}: {r:?}");
        }
    };
    images("stopped while polling", &["queued", "running"]);
    assert!(out.join("index.html").exists());

    // Signalled before it starts: nothing is queried, and the outputs are written all the same
    // (without the previous images.csv, no status is known).
    std::fs::remove_file(out.join("images.csv")).unwrap();
    let asked = queries();
    let shutdown = Shutdown::new();
    shutdown.signal();
    let collect = start(move || commands::collect::run(settings, shutdown));
    assert_eq!(code_within(Duration::from_secs(10), collect).await, 130);
    assert_eq!(queries(), asked, "a query after the signal");
    images("stopped before starting", &["unknown"]);
    assert_eq!(sim.stats().calls.images, 0);
}
