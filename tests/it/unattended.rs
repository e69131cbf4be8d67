//! Unattended operation: SIGKILL at several points and resume, SIGINT, the lock, shards and
//! merge, JSON logs. The binary runs as a child process against an in-process simulator.

use std::path::Path;
use std::time::Duration;

use hidream_batch::sim::SimConfig;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_several_points_then_resume_leaves_one_row_per_request_and_no_duplicates() {
    let sim = simulator(SimConfig {
        latency: "150ms".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("kill", 30, &[1]);
    let args = run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "4"]);
    let reported = |stderr: &[u8]| {
        String::from_utf8_lossy(stderr)
            .matches("was in flight when an earlier run stopped")
            .count()
    };
    let mut reported_in_flight = 0;
    // Three runs, each killed at a later point (each resumes the one before), then a last run.
    for kill_after_rows in [0usize, 8, 16] {
        let child = spawn(&args);
        let base = sim.stats().calls.submit_txt2img;
        // Kill while requests are in flight: after the server has seen a request of this run.
        until("requests in flight", || {
            sim.stats().calls.submit_txt2img > base && row_count(&out) >= kill_after_rows
        })
        .await;
        signal(&child, "-KILL");
        let o = wait(child).await;
        assert_eq!(o.status.code(), None, "killed by a signal");
        reported_in_flight += reported(&o.stderr);
    }
    let last = run_bin(args.clone(), vec![]).await;
    reported_in_flight += reported(&last.stderr);
    assert!(
        last.status.code() == Some(0) || last.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let rows = results(&out);
    assert_eq!(rows.len(), 30, "one row per request");
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r["request_id"].clone()).collect();
    assert_eq!(ids.len(), 30);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "submitted" || r["status"] == "unknown")
    );
    let unknown = rows.iter().filter(|r| r["status"] == "unknown").count();
    assert!(
        unknown > 0,
        "requests in flight at a kill are recorded unknown"
    );
    assert_eq!(unknown, reported_in_flight, "each one was reported by id");
    assert!(
        unknown <= 3 * 4,
        "at most the in-flight requests of three kills"
    );
    assert_eq!(
        sim.stats().duplicates,
        0,
        "nothing was silently resubmitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_in_flight_writes_results_and_exits_130() {
    let sim = simulator(SimConfig {
        latency: "100ms".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("int", 20, &[1]);
    let args = run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "2"]);
    let child = spawn(&args);
    until("a few rows", || row_count(&out) >= 3).await;
    signal(&child, "-INT");
    let o = wait(child).await;
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows = results(&out);
    assert!(rows.len() < 20, "it stopped early");
    assert!(
        rows.iter().all(|r| r["status"] == "submitted"),
        "in-flight requests finished: {rows:?}"
    );
    let o = run_bin(args, vec![]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(results(&out).len(), 20);
    let stats = sim.stats();
    assert_eq!(stats.accepted, 20);
    assert_eq!(stats.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_results_exits_3_and_sends_nothing() {
    let sim = simulator(SimConfig {
        latency: "200ms".parse().unwrap(),
        ..quiet()
    })
    .await;
    let other = wiremock::MockServer::start().await;
    let (_dir, manifest, out) = txt2img_scratch("lock", 20, &[1]);
    let first = spawn(&run_args(
        &manifest,
        &sim.base_url(),
        &out,
        &["--concurrency", "1"],
    ));
    until("the first run to start", || {
        sim.stats().calls.submit_txt2img > 0
    })
    .await;
    let second = run_bin(run_args(&manifest, &other.uri(), &out, &[]), vec![]).await;
    assert_eq!(second.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    assert!(
        other.received_requests().await.unwrap().is_empty(),
        "the second run sent nothing"
    );
    signal(&first, "-KILL");
    wait(first).await;
    // The dead run's lock does not block the next one.
    let third = run_bin(
        run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "8"]),
        vec![],
    )
    .await;
    assert!(
        third.status.code() == Some(0) || third.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_submit_every_request_once_and_merge_like_an_unsharded_run() {
    let sim = simulator(quiet()).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = root().join("manifests/sweep.yaml");
    let mut shard_files = Vec::new();
    for k in 1..=3 {
        let out = dir.path().join(format!("shard{k}.csv"));
        let o = run_bin(
            run_args(
                &manifest,
                &sim.base_url(),
                &out,
                &["--shard", &format!("{k}/3")],
            ),
            vec![],
        )
        .await;
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        shard_files.push(out.display().to_string());
    }
    let stats = sim.stats();
    assert_eq!(stats.accepted, 11, "every request once");
    assert_eq!(stats.duplicates, 0);
    let merged = dir.path().join("all.csv");
    let mut args = vec!["merge".to_string()];
    args.extend(shard_files.iter().cloned());
    args.extend([
        "-o".into(),
        merged.display().to_string(),
        "--manifest".into(),
        manifest.display().to_string(),
    ]);
    let o = run_bin(args, vec![]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let whole = dir.path().join("whole.csv");
    let sim2 = simulator(quiet()).await;
    assert_eq!(
        run_bin(run_args(&manifest, &sim2.base_url(), &whole, &[]), vec![])
            .await
            .status
            .code(),
        Some(0)
    );
    let strip = |p: &Path| -> Vec<Vec<String>> {
        let mut r = csv::Reader::from_path(p).unwrap();
        let h: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
        let keep: Vec<usize> = (0..h.len())
            .filter(|i| {
                !["task_id", "sub_task_ids", "submitted_at", "elapsed_ms"].contains(&h[*i].as_str())
            })
            .collect();
        let mut rows = vec![keep.iter().map(|i| h[*i].clone()).collect()];
        rows.extend(r.records().map(|rec| {
            let rec = rec.unwrap();
            keep.iter().map(|i| rec[*i].to_string()).collect()
        }));
        rows
    };
    assert_eq!(strip(&merged), strip(&whole));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_line_by_line_and_never_hold_the_token() {
    let sim = simulator(SimConfig {
        error_rate: 0.3,
        seed: 3,
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("json", 12, &[1, 2]);
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &out,
            &["--log-format", "json", "-vv", "--max-attempts", "2"],
        ),
        vec![],
    )
    .await;
    let stderr = String::from_utf8(o.stderr).unwrap();
    let mut lines = 0;
    let mut with_request = 0;
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
            "{line}"
        );
        if v["request_id"].is_string() {
            with_request += 1;
            assert!(v["attempt"].is_number() && v["job"].is_string(), "{line}");
        }
        lines += 1;
    }
    assert!(lines > 10 && with_request > 0, "{stderr}");
    assert!(!stderr.contains(TOKEN));
    // -v says what an attempt meant in words, not as a Rust `Debug` struct.
    assert!(stderr.contains("submitted as task "), "{stderr}");
    assert!(
        !stderr.contains("Submitted {") && !stderr.contains("Retry {"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no ANSI colours off a terminal");
}

/// With `--retry-unknown`, a stop while the retry of an unknown attempt waits for the rate
/// limiter leaves the request `unknown` (its task may exist), never `failed` (which the next run
/// would resend without the flag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_an_unknown_waits_for_its_retry_keeps_it_unknown() {
    let sim = simulator(SimConfig {
        drop_after: 1.0,
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("stop-unknown", 1, &[1]);
    let mut args = run_args(&manifest, &sim.base_url(), &out, &["--retry-unknown"]);
    // One image a minute: after the first attempt, the retry waits for the window.
    set_option(&mut args, "--rate", "1");
    let child = spawn(&args);
    until("the first attempt dropped", || {
        sim.stats().dropped_after >= 1
    })
    .await;
    signal(&child, "-INT");
    let o = wait(child).await;
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows = results(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "unknown", "{rows:?}");
    assert_eq!(sim.stats().submitted, 1, "sent once");
}

/// `run … | head -1`: the reader goes away after the plan; the run goes on to the end, writes
/// every row, and exits as the run ended (0), without a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_nothing() {
    use std::io::BufRead;
    let sim = simulator(SimConfig {
        latency: "50ms".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("head", 8, &[1]);
    let mut child = spawn(&run_args(&manifest, &sim.base_url(), &out, &[]));
    let stdout = child.stdout.take().unwrap();
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("plan:"), "{first}");
    // The reader is gone (as `head -1` exits): the summary line cannot be written.
    let o = wait(child).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(results(&out).len(), 8);
    assert_eq!(sim.stats().accepted, 8);
}

/// Ctrl-C while the manifests are validated stops the run at once: exit 130, nothing sent. The
/// manifest is a sweep of 3.4 million requests, whose validation takes far longer than the test
/// waits; it runs on a thread of its own, which the test waits to see before it signals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_during_validation_stops_the_run_at_once() {
    let server = wiremock::MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<String> = (0..150).map(|i| i.to_string()).collect();
    let values = values.join(", ");
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: big\njobs:\n  - id: s\n    kind: txt2img\n    prompt: \"photo {{a}} {{b}} {{c}}\"\n    matrix:\n      a: [{values}]\n      b: [{values}]\n      c: [{values}]\n"
        ),
    )
    .unwrap();
    let out = dir.path().join("r.csv");
    let child = spawn(&run_args(
        &manifest,
        &server.uri(),
        &out,
        &["--max-requests", "10000000"],
    ));
    // Validation runs on the blocking pool: a second thread of the process.
    let tasks = format!("/proc/{}/task", child.id());
    until("validation started on its own thread", || {
        std::fs::read_dir(&tasks).map_or(0, |d| d.count()) >= 2
    })
    .await;
    signal(&child, "-INT");
    let o = tokio::time::timeout(Duration::from_secs(10), wait(child))
        .await
        .expect("the run stopped within seconds of the signal");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert!(server.received_requests().await.unwrap().is_empty());
    assert!(!out.exists(), "no results written");
}

/// A cron line writing to a dated folder that does not exist yet: the run makes the folder (a
/// missing folder used to be exit 3, "page someone"); a dry run writes nothing, not even it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_of_the_results_is_made_by_a_run_and_left_alone_by_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate::common::txt2img_manifest(dir.path(), "nightly", 2, &[1]);
    let out = dir.path().join("results/2026-12-02/r.csv");
    let args = |extra: &str| -> Vec<String> {
        vec![
            "run".into(),
            manifest.display().to_string(),
            extra.into(),
            "-o".into(),
            out.display().to_string(),
        ]
    };
    let o = crate::common::run_bin(args("--dry-run"), vec![]).await;
    crate::common::exits(&o, 0);
    assert!(
        !dir.path().join("results").exists(),
        "a dry run makes nothing"
    );
    let o = crate::common::run_bin(args("--simulate"), vec![]).await;
    crate::common::exits(&o, 0);
    assert_eq!(crate::common::results(&out).len(), 2);
}

/// Every `hidream-batch <command> …` in `deploy/` and the `Dockerfile` uses only flags that
/// command has (a flag renamed in the code must be renamed there too); `docker build` is not
/// available here, so this is what checks the deployment files.
#[test]
fn the_deploy_files_name_only_flags_the_binary_has() {
    let root = crate::common::root();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(root.join("Dockerfile"));
    let help = |command: &str| -> String {
        let o = crate::common::bin()
            .args([command, "--help"])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(at) = line.find("hidream-batch ") else {
                continue;
            };
            let rest = &line[at + "hidream-batch ".len()..];
            let command = rest.split_whitespace().next().unwrap_or_default();
            if !["run", "collect", "merge", "simulate", "validate", "expand"].contains(&command) {
                continue;
            }
            // The command's own line, then the lines of a folded YAML block that go on with flags.
            let mut words: Vec<&str> = rest.split_whitespace().collect();
            for next in &lines[i + 1..] {
                let t = next.trim_start();
                if !t.starts_with("--") && !t.starts_with("-o ") {
                    break;
                }
                words.extend(t.split_whitespace());
            }
            let known = help(command);
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                let flag = flag
                    .split('=')
                    .next()
                    .unwrap()
                    .trim_end_matches(['"', '\'']);
                assert!(
                    known.contains(&format!("{flag} ")) || known.contains(&format!("{flag}\n")),
                    "{}:{}: `hidream-batch {command}` has no {flag}",
                    file.display(),
                    i + 1
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "the files were read: {checked} flags checked"
    );
}

/// An `unknown` outcome needs a person: it is a warning, so `-q` (warnings and errors) shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcomes_are_warnings_that_quiet_still_shows() {
    let sim = crate::common::simulator(hidream_batch::sim::SimConfig {
        drop_after: 1.0,
        ..crate::common::quiet()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate::common::txt2img_manifest(dir.path(), "lost", 1, &[1]);
    let out = dir.path().join("r.csv");
    let o = crate::common::run_bin(
        crate::common::run_args(&manifest, &sim.base_url(), &out, &["-q"]),
        vec![],
    )
    .await;
    crate::common::exits(&o, 1);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("j0 unknown"),
        "{stderr}"
    );
}

/// `--metrics-textfile`: after a run (and its collection) the file says what happened, in the
/// textfile format; a later failed run keeps the last success's time and says its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_textfile_says_what_happened_and_keeps_the_last_success() {
    let sim = crate::common::simulator(hidream_batch::sim::SimConfig {
        task_time: std::time::Duration::from_millis(50),
        ..crate::common::quiet()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate::common::txt2img_manifest(dir.path(), "m", 3, &[1, 2]);
    let out = dir.path().join("r.csv");
    let prom = dir.path().join("hidream.prom");
    let images = dir.path().join("imgs");
    let extra = [
        "--metrics-textfile",
        prom.to_str().unwrap(),
        "--collect",
        images.to_str().unwrap(),
    ];
    let o = crate::common::run_bin(
        crate::common::run_args(&manifest, &sim.base_url(), &out, &extra),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    let text = std::fs::read_to_string(&prom).unwrap();
    // Read with a Prometheus text-format parser: `name{label="v",…}` → its value.
    let value = |text: &str, sample: &str| -> f64 {
        let (metric, labels) = sample.split_once('{').unwrap_or((sample, "}"));
        let labels: Vec<(&str, &str)> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k, v.trim_matches('"'))
            })
            .collect();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("the textfile parses");
        let found = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {sample} in {text}"));
        match found.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
            ref other => panic!("{sample} is not a gauge or a counter: {other:?}"),
        }
    };
    assert_eq!(
        value(
            &text,
            r#"hidream_batch_requests{command="run",status="submitted"}"#
        ),
        3.0
    );
    assert_eq!(
        value(&text, r#"hidream_batch_images_submitted{command="run"}"#),
        4.0
    );
    assert_eq!(
        value(
            &text,
            r#"hidream_batch_images{command="run",status="done"}"#
        ),
        4.0
    );
    assert_eq!(
        value(&text, r#"hidream_batch_exit_code{command="run"}"#),
        0.0
    );
    let success = value(
        &text,
        r#"hidream_batch_last_success_timestamp_seconds{command="run"}"#,
    );
    // Every line is a sample the parser reads, typed (not `untyped`) and documented.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the textfile parses");
    let data_lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(scrape.samples.len(), data_lines, "{text}");
    for s in &scrape.samples {
        assert!(
            !matches!(s.value, prometheus_parse::Value::Untyped(_)),
            "{} has no TYPE: {text}",
            s.metric
        );
        assert!(
            scrape.docs.contains_key(&s.metric),
            "{} has no HELP: {text}",
            s.metric
        );
    }
    // A run that fails (an invalid manifest: exit 2) still writes the file, and keeps the time.
    std::fs::write(&manifest, "jobs: [{id: x, kind: nope}]\n").unwrap();
    let o = crate::common::run_bin(
        crate::common::run_args(&manifest, &sim.base_url(), &out, &extra),
        vec![],
    )
    .await;
    crate::common::exits(&o, 2);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        value(&text, r#"hidream_batch_exit_code{command="run"}"#),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"hidream_batch_last_success_timestamp_seconds{command="run"}"#
        ),
        success
    );
}

/// `--ping-url`: URL/start, then URL/<exit code> with the JSON summary, one run id on both, and
/// never the token; a ping server that is down changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_bracket_the_run_and_a_dead_ping_server_changes_nothing() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let sim = crate::common::simulator(crate::common::quiet()).await;
    let hc = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hc)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = crate::common::txt2img_manifest(dir.path(), "pinged", 2, &[1]);
    let out = dir.path().join("r.csv");
    let url = format!("{}/hc/abc", hc.uri());
    let o = crate::common::run_bin(
        crate::common::run_args(&manifest, &sim.base_url(), &out, &["--ping-url", &url]),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    let pings = hc.received_requests().await.unwrap();
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert_eq!(pings[0].url.path(), "/hc/abc/start");
    assert_eq!(pings[1].url.path(), "/hc/abc/0");
    let rid = |r: &wiremock::Request| r.url.query().unwrap_or_default().to_string();
    assert!(rid(&pings[0]).starts_with("rid=") && rid(&pings[0]) == rid(&pings[1]));
    for p in &pings {
        assert!(
            p.headers.get("authorization").is_none(),
            "the token stays with the API"
        );
    }
    let body: serde_json::Value = serde_json::from_slice(&pings[1].body).unwrap();
    assert_eq!(body["command"], "run");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["requests"]["submitted"], 2);

    // The ping server is gone: the run's outcome is the same.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hc", l.local_addr().unwrap())
    };
    let manifest = crate::common::txt2img_manifest(dir.path(), "unpinged", 1, &[1]);
    let o = crate::common::run_bin(
        crate::common::run_args(
            &manifest,
            &sim.base_url(),
            &dir.path().join("r2.csv"),
            &["--ping-url", &dead],
        ),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("ping failed"));
}

/// The README's cron line (with the simulator instead of a token), log file and all: with
/// `--log-format json` every line it writes, stdout and stderr, is one JSON object with a `type`,
/// and the last is the `summary`, which agrees with the results CSV.
#[test]
fn the_cron_line_writes_only_json_and_ends_with_a_summary_that_matches_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let root = crate::common::root();
    std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
    std::fs::copy(
        root.join("manifests/sweep.yaml"),
        dir.path().join("manifests/catalog.yaml"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let binary = assert_cmd::cargo::cargo_bin("hidream-batch");
    let line = format!(
        "cd {} && {} run manifests/catalog.yaml --simulate --run-id $(date +%F) -o results/results-$(date +%F).csv --log-format json >> logs/hidream.log 2>&1",
        dir.path().display(),
        binary.display()
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &line])
        .env_remove("HIDREAM_API_TOKEN")
        .env_remove("RUST_LOG")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("logs/hidream.log")).unwrap();
    let objects: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for o in &objects {
        assert!(o["type"].is_string(), "no type: {o}");
    }
    assert!(objects.iter().any(|o| o["type"] == "plan"));
    let summary = objects.last().unwrap();
    assert_eq!(summary["type"], "summary", "{log}");
    assert_eq!(summary["exit_code"], 0);
    let results_path = summary["results"].as_str().unwrap();
    let rows = crate::common::results(&dir.path().join(results_path));
    let submitted = rows.iter().filter(|r| r["status"] == "submitted").count();
    assert_eq!(summary["requests"]["submitted"], submitted as u64);
    let images: u64 = rows
        .iter()
        .map(|r| r["img_count"].parse::<u64>().unwrap_or(1))
        .sum();
    assert_eq!(summary["images_submitted"], images);
    assert!(
        summary["run_id"].as_str().unwrap().len() == 10,
        "the date: {summary}"
    );
}

/// The Kubernetes wrappers (`deploy/*.yaml`) start the binary as `/bin/sh -c 'exec hidream-batch
/// run …'`: the binary replaces the shell, so the SIGTERM Kubernetes sends reaches it, in-flight
/// requests finish and the run exits 130 (without `exec`, `sh` would be killed and the run lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_wrapper_lets_sigterm_reach_the_run() {
    let yaml = std::fs::read_to_string(crate::common::root().join("deploy/cronjob.yaml")).unwrap();
    assert!(
        yaml.contains("command: [\"/bin/sh\", \"-c\"]") && yaml.contains("exec hidream-batch run"),
        "the wrapper this test runs is the one deploy/cronjob.yaml writes"
    );
    let sim = crate::common::simulator(hidream_batch::sim::SimConfig {
        latency: "100ms".parse().unwrap(),
        ..crate::common::quiet()
    })
    .await;
    let (_dir, manifest, out) = crate::common::txt2img_scratch("wrapped", 20, &[1]);
    let run = crate::common::run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "2"]);
    let script = format!(
        "exec {} {}",
        assert_cmd::cargo::cargo_bin("hidream-batch").display(),
        run.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let child = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .current_dir(crate::common::root())
        .env("HIDREAM_API_TOKEN", crate::common::TOKEN)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::until("a few rows", || crate::common::row_count(&out) >= 3).await;
    // The signal goes to the wrapper's process, as Kubernetes sends it to PID 1 of the container.
    crate::common::signal(&child, "-TERM");
    let o = crate::common::wait(child).await;
    crate::common::exits(&o, 130);
    let rows = crate::common::results(&out);
    assert!(
        rows.len() < 20 && rows.iter().all(|r| r["status"] == "submitted"),
        "{rows:?}"
    );
}

/// `validate --log-format json`: one `validation` object on stdout with the documented fields;
/// a problem is an `error` object on stderr, exit 2.
#[test]
fn validate_in_json_mode_writes_one_validation_object() {
    let o = crate::common::bin()
        .args(["--log-format", "json", "validate", "manifests/sweep.yaml"])
        .output()
        .unwrap();
    crate::common::exits(&o, 0);
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v = &lines[0];
    assert_eq!(v["type"], "validation");
    assert_eq!(v["manifests"][0]["path"], "manifests/sweep.yaml");
    assert_eq!(v["requests"], 11);
    assert_eq!(v["per_endpoint"]["txt2img"]["images"], 20);
    assert!(
        v["estimate_seconds"].is_number() && v["rate"].is_number(),
        "{v}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\njobs:\n  - id: a\n    kind: txt2img\n").unwrap();
    let o = crate::common::bin()
        .args(["--log-format", "json", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    crate::common::exits(&o, 2);
    assert!(o.stdout.is_empty());
    for line in String::from_utf8(o.stderr).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["type"], "error", "{line}");
    }
}
