//! `run` against the simulator and wiremock over loopback: rows, concurrency, rate, retries,
//! stopping on 401, unknown outcomes, resume, and the token never leaking.

use std::time::{Duration, Instant};

use hidream_batch::env_vars::TIME_SCALE;
use hidream_batch::sim::{SimConfig, Simulator};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

const TXT2IMG: &str = "/api-pub/gw/v3/image/txt2img/async";

fn ok_body(task: &str) -> serde_json::Value {
    serde_json::json!({"code": 0, "message": "Success", "request_id": "r", "result": {"task_id": task, "sub_task_ids": [format!("{task}-0")]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_sweep_gets_a_row_with_its_task_id() {
    let sim = simulator(quiet()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.csv");
    let manifest = root().join("manifests/sweep.yaml");
    let o = run_bin(run_args(&manifest, &sim.base_url(), &out, &[]), vec![]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows = results(&out);
    assert_eq!(rows.len(), 11);
    let expanded = bin()
        .args(["expand", "manifests/sweep.yaml"])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8(expanded.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let row_ids: Vec<&str> = rows.iter().map(|r| r["request_id"].as_str()).collect();
    assert_eq!(row_ids, ids, "one row per request, in expansion order");
    for r in &rows {
        assert_eq!(r["status"], "submitted");
        assert!(!r["task_id"].is_empty());
        assert_eq!(
            r["sub_task_ids"].split(';').count(),
            r["img_count"].parse::<usize>().unwrap_or(1)
        );
        assert_eq!(r["attempts"], "1");
        assert!(r["submitted_at"].ends_with('Z'));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o644,
        "the team can read the results, not only the owner"
    );
    let stats = sim.stats();
    assert_eq!(stats.accepted, 11);
    assert_eq!(stats.accepted_images, 20);
    assert_eq!(stats.duplicates, 0);
    // A second run sends nothing.
    let again = run_bin(run_args(&manifest, &sim.base_url(), &out, &[]), vec![]).await;
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("11 already submitted"));
    assert_eq!(sim.stats().calls.submit_txt2img, 11);
    assert_eq!(results(&out).len(), 11);
}

/// Submissions go by the direct transport (`src/client/direct.rs`), which does not speak to
/// proxies: when `HTTP_PROXY` (or `HTTPS_PROXY`, `ALL_PROXY`) applies to the submit URL, they go
/// through reqwest and the proxy, as every other request does. Here the "proxy" is the simulator
/// and the `--base-url` a port where nothing listens: only a run that honours the proxy submits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_go_through_a_proxy_from_the_environment() {
    let proxy = simulator(quiet()).await;
    let (_dir, manifest, out) = txt2img_scratch("proxied", 3, &[1]);
    // Nothing listens on port 9 (discard) on loopback.
    let mut args = run_args(
        &manifest,
        "http://127.0.0.1:9",
        &out,
        &["--max-attempts", "2"],
    );
    let run = |args: Vec<String>, envs: Vec<(&'static str, String)>| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = bin();
            cmd.env("HIDREAM_API_TOKEN", TOKEN).args(&args);
            for k in [
                "HTTPS_PROXY",
                "https_proxy",
                "ALL_PROXY",
                "all_proxy",
                "http_proxy",
            ] {
                cmd.env_remove(k);
            }
            cmd.env("NO_PROXY", "").env("no_proxy", "");
            for (k, v) in envs {
                cmd.env(k, v);
            }
            cmd.output().expect("binary runs")
        })
    };
    let o = run(args.clone(), vec![("HTTP_PROXY", proxy.base_url())])
        .await
        .unwrap();
    exits(&o, 0);
    all_submitted(&out, 3);
    assert_eq!(proxy.stats().accepted, 3);
    // Without the proxy the same run reaches nothing (and sends nothing).
    set_option(
        &mut args,
        "-o",
        &out.with_file_name("direct.csv").display().to_string(),
    );
    let o = run(args, vec![("HTTP_PROXY", String::new())])
        .await
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(proxy.stats().calls.submit_txt2img, 3);
}

/// What a submission carries, by either kind: the token, JSON, who sends it, and the API-User-ID
/// only where the API lists it (text-to-image).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_carry_the_headers_the_api_expects() {
    let server = accepting_server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("manifests/images/shirt-01.png"),
        dir.path().join("shirt.png"),
    )
    .unwrap();
    let manifest = dir.path().join("both.yaml");
    std::fs::write(
        &manifest,
        "jobs:\n  - id: t\n    kind: txt2img\n    prompt: \"a cat\"\n  - id: m\n    kind: model\n    image: shirt.png\n    prompt: \"on a model\"\n",
    )
    .unwrap();
    let out = dir.path().join("r.csv");
    let envs = vec![("HIDREAM_API_USER_ID", "u-7".to_string())];
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), envs).await;
    exits(&o, 0);
    let sent = submissions(&server).await;
    assert_eq!(sent.len(), 2);
    for r in &sent {
        let header = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(header("authorization"), Some(format!("Bearer {TOKEN}")));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("accept").as_deref(), Some("*/*"));
        assert!(
            header("user-agent").is_some_and(|u| u.starts_with("hidream-batch/")),
            "{r:?}"
        );
        let txt2img = r.url.path().contains("txt2img");
        assert_eq!(
            header("api-user-id"),
            txt2img.then(|| "u-7".to_string()),
            "{}",
            r.url
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_concurrency_in_flight() {
    let sim = simulator(SimConfig {
        latency: "30ms".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("conc", 24, &[1]);
    let o = run_bin(
        run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "3"]),
        vec![],
    )
    .await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stats = sim.stats();
    assert_eq!(stats.accepted, 24);
    assert!(
        stats.max_in_flight <= 3,
        "max in flight {}",
        stats.max_in_flight
    );
    assert_eq!(
        stats.max_in_flight, 3,
        "the bound is used, not just respected"
    );
}

/// `run` over `(_dir, manifest, out)` against `sim` at `--rate rate`, with `envs`: the output and
/// elapsed time.
async fn run_at_rate(
    sim: &Simulator,
    scratch: &(tempfile::TempDir, std::path::PathBuf, std::path::PathBuf),
    rate: u32,
    envs: Vec<(&'static str, String)>,
) -> (std::process::Output, Duration) {
    let (_, manifest, out) = scratch;
    let mut args = run_args(manifest, &sim.base_url(), out, &["--concurrency", "8"]);
    set_option(&mut args, "--rate", &rate.to_string());
    let started = Instant::now();
    let o = run_bin(args, envs).await;
    let elapsed = started.elapsed();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (o, elapsed)
}

/// The test hook that scales every wait of the client by 0.1, for a simulator whose minute is
/// 6 s: the same limits, a tenth of the time.
fn a_tenth() -> Vec<(&'static str, String)> {
    vec![(TIME_SCALE, "0.1".into())]
}

/// The bound of SPEC §5 held end to end, against a server counting the same rolling minute — a
/// tenth of a minute, with the client's waits scaled to match (`HIDREAM_BATCH_TIME_SCALE=0.1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_per_minute_limit_holds_with_mixed_counts() {
    // 30 requests of 1, 2 or 4 images = 70 images at 60 a minute: two windows.
    let sim = simulator(SimConfig {
        rate_limit: Some(60),
        rate_minute: Duration::from_secs(6),
        ..quiet()
    })
    .await;
    let scratch = txt2img_scratch("rate", 30, &[1, 2, 4]);
    let (o, elapsed) = run_at_rate(&sim, &scratch, 60, a_tenth()).await;
    let stats = sim.stats();
    assert_eq!(stats.accepted_images, 70);
    assert_eq!(
        stats.http_429, 0,
        "the client never provokes the server's limit"
    );
    assert!(
        stats.max_images_per_minute.txt2img <= 60,
        "{} images in a minute",
        stats.max_images_per_minute.txt2img
    );
    // The images beyond the first minute's allowance waited for the window, scaled: 6.05 s
    // (60.5 s × 0.1), and no longer than an even pace would: 0.1 s an image, scaled, so the
    // last request (4 images) would go no sooner than 6.6 s after the first, the 66 images
    // before it spaced out. Measured between the rows' `submitted_at` (each taken as its request
    // leaves the rate limiter, to the millisecond), not around the process: a busy disk can add
    // seconds to the start and the synced writes of a run (12 s once, for a span of 6.052 s),
    // which is not the limiter's doing. The span's lower bound allows 10 ms for the two
    // timestamps' truncation to the millisecond and the instant between the limiter's answer
    // and the clock's reading; its upper one leaves 550 ms to the timer's lateness (the span is
    // 6.051-6.052 s here). Without the hook the span is 60.5 s; a simulator without the short
    // minute answers 429.
    let at: Vec<std::time::SystemTime> = results(&scratch.2)
        .iter()
        .map(|r| humantime::parse_rfc3339(&r["submitted_at"]).unwrap())
        .collect();
    let span = at
        .iter()
        .max()
        .unwrap()
        .duration_since(*at.iter().min().unwrap())
        .unwrap();
    assert!(span >= Duration::from_millis(6_040), "{span:?}");
    assert!(span < Duration::from_millis(6_600), "{span:?}");
    // And around the process: the run cannot end before the window has passed.
    assert!(elapsed >= Duration::from_millis(6_050), "{elapsed:?}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("429"));
}

/// Against a gateway that enforces the rate as a steady flow with small bursts, the first burst
/// is refused once, and the run goes on at an even pace. A tenth of the time, as above: 0.8 s
/// instead of 6.5 s, with as many 429s (3 to 8 in 18 runs, idle and under CPU load; unscaled,
/// 4 to 9 in 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_turns_the_burst_into_an_even_pace() {
    // 600 images a minute = 10 a second (scaled: 100), bursts of up to 10; 70 images.
    let sim = simulator(SimConfig {
        rate_limit: Some(600),
        rate_burst: Some(10),
        rate_minute: Duration::from_secs(6),
        ..quiet()
    })
    .await;
    let scratch = txt2img_scratch("gateway", 30, &[1, 2, 4]);
    let (o, _) = run_at_rate(&sim, &scratch, 600, a_tenth()).await;
    let stats = sim.stats();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stats.accepted_images, 70);
    assert!(stats.http_429 >= 1, "the burst went beyond 10 images");
    // Only what was in flight when the first 429 came back is refused (without pacing: 40+).
    assert!(stats.http_429 <= 16, "{} × 429", stats.http_429);
    assert_eq!(
        stderr.matches("answered HTTP 429; sending evenly").count(),
        1,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_up_to_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(500).set_body_string("oops"))
        .expect(3)
        .mount(&server)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("five", 1, &[1]);
    let o = run_bin(
        run_args(&manifest, &server.uri(), &out, &["--max-attempts", "3"]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let rows = results(&out);
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["attempts"], "3");
    assert_eq!(rows[0]["http_status"], "500");
    // A failed request is retried by the next run.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("t-9")))
        .expect(1)
        .mount(&server)
        .await;
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(results(&out)[0]["task_id"], "t-9");
}

/// A server that answers the first submission 429 with `Retry-After: retry_after`, then submits.
async fn throttled_once(retry_after: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", retry_after))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("t-1")))
        .expect(1)
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_as_a_floor() {
    let server = throttled_once("1").await;
    let (_dir, manifest, out) = txt2img_scratch("ra", 1, &[1]);
    let started = Instant::now();
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited at least Retry-After with a 5 ms backoff"
    );
    let rows = results(&out);
    assert_eq!(rows[0]["attempts"], "2");
    assert_eq!(rows[0]["task_id"], "t-1");
}

/// The test hook scales the retry delays too, `Retry-After` included: 10 s asked, 1 s waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_hook_scales_retry_after() {
    let server = throttled_once("10").await;
    let (_dir, manifest, out) = txt2img_scratch("scaled-ra", 1, &[1]);
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), a_tenth()).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let row = &results(&out)[0];
    assert_eq!(row["attempts"], "2");
    // From the first attempt to the outcome: at least the scaled Retry-After (a floor), and
    // less than the unscaled one, which is all a run without the hook would wait (not measured
    // around the process, whose start and synced writes a busy disk can slow by seconds).
    let waited = Duration::from_millis(row["elapsed_ms"].parse().unwrap());
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_and_business_errors_are_not_retried() {
    for response in [
        ResponseTemplate::new(400).set_body_string("bad request"),
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"code": 1001, "message": "resolution: unsupported"})),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(TXT2IMG))
            .respond_with(response)
            .expect(1)
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let manifest = txt2img_manifest(dir.path(), "rej", 1, &[1]);
        let out = dir.path().join("r.csv");
        let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
        assert_eq!(o.status.code(), Some(1));
        let rows = results(&out);
        assert_eq!(rows[0]["status"], "rejected");
        assert_eq!(rows[0]["attempts"], "1");
        // Not resent by a later run, unless asked.
        let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stdout).contains("1 rejected"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_stops_the_run_after_at_most_concurrency_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"code": 401, "message": "invalid token"}))
                .set_delay(Duration::from_millis(20)),
        )
        .mount(&server)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("auth", 40, &[1]);
    let o = run_bin(
        run_args(&manifest, &server.uri(), &out, &["--concurrency", "3"]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(3));
    let received = submissions(&server).await.len();
    assert!(
        (1..=3).contains(&received),
        "{received} requests reached the server"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused the credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_unknown_and_not_resent_without_the_flag() {
    let sim = simulator(SimConfig {
        drop_after: 1.0,
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("drop", 3, &[1]);
    let o = run_bin(run_args(&manifest, &sim.base_url(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(1));
    let rows = results(&out);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "unknown" && r["attempts"] == "1"),
        "{rows:?}"
    );
    assert_eq!(sim.stats().calls.submit_txt2img, 3);
    // Not resent by default.
    let o = run_bin(run_args(&manifest, &sim.base_url(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(sim.stats().calls.submit_txt2img, 3);
    // Resent with --retry-unknown: the simulator had created the tasks, so these are duplicates.
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &out,
            &["--retry-unknown", "--max-attempts", "1"],
        ),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(sim.stats().calls.submit_txt2img, 6);
    assert_eq!(sim.stats().duplicates, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_one_job_sends_only_its_changed_requests() {
    let sim = simulator(quiet()).await;
    let (_dir, manifest, out) = txt2img_scratch("edit", 6, &[1]);
    assert_eq!(
        run_bin(run_args(&manifest, &sim.base_url(), &out, &[]), vec![])
            .await
            .status
            .code(),
        Some(0)
    );
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("prompt number 4", "prompt number 4, edited");
    std::fs::write(&manifest, text).unwrap();
    let o = run_bin(run_args(&manifest, &sim.base_url(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        sim.stats().calls.submit_txt2img,
        7,
        "only the edited request was sent"
    );
    let rows = results(&out);
    assert_eq!(
        rows.len(),
        7,
        "six current requests, plus the superseded one's row kept at the end"
    );
    assert_eq!(rows[4]["prompt"], "prompt number 4, edited");
    assert_eq!(rows[6]["prompt"], "prompt number 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_at_the_highest_verbosity() {
    let sim = simulator(quiet()).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = root().join("manifests/lookbook.yaml");
    for (i, envs) in [vec![], vec![("RUST_LOG", "trace".to_string())]]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("r{i}.csv"));
        let args = run_args(&manifest, &sim.base_url(), &out, &["-vvv"]);
        let o = run_bin(args, envs).await;
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.len() > 100,
            "verbose logging produced output: {stderr}"
        );
        for text in [
            stderr.to_string(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            std::fs::read_to_string(&out).unwrap(),
        ] {
            assert!(!text.contains(TOKEN), "the token leaked");
            assert!(!text.contains("DO-NOT-LEAK"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_exit_2_and_send_nothing() {
    let sim = simulator(quiet()).await;
    let (_dir, manifest, out) = txt2img_scratch("setup", 4, &[4]);
    // --max-images
    let o = run_bin(
        run_args(&manifest, &sim.base_url(), &out, &["--max-images", "15"]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("16 images, more than --max-images 15"));
    // --dry-run
    let o = run_bin(
        run_args(&manifest, &sim.base_url(), &out, &["--dry-run"]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 new"));
    // missing token
    let o = tokio::task::spawn_blocking({
        let args = run_args(&manifest, &sim.base_url(), &out, &[]);
        move || bin().args(args).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("HIDREAM_API_TOKEN"));
    // plain http to a non-loopback host
    let o = run_bin(
        run_args(&manifest, "http://api.example.com", &out, &[]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(sim.stats().calls.submit_txt2img, 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_id_submits_the_same_manifest_again() {
    let sim = simulator(quiet()).await;
    let (_dir, manifest, out) = txt2img_scratch("nightly", 3, &[1]);
    for day in ["2026-11-21", "2026-11-22"] {
        let o = run_bin(
            run_args(&manifest, &sim.base_url(), &out, &["--run-id", day]),
            vec![],
        )
        .await;
        assert_eq!(o.status.code(), Some(0));
    }
    assert_eq!(sim.stats().accepted, 6);
    assert_eq!(
        sim.stats().duplicates,
        0,
        "distinct request ids, hence no duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_images_arrive_as_base64_with_a_content_length() {
    const MODEL: &str = "/api-pub/ec/v3/image/model/async";
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MODEL))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("t-img")))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let image = root().join("manifests/images/shirt-01.png");
    std::fs::copy(&image, dir.path().join("shirt.png")).unwrap();
    let manifest = dir.path().join("img.yaml");
    std::fs::write(
        &manifest,
        "jobs:\n  - id: img\n    kind: model\n    image: shirt.png\n    prompt: \"on a model\"\n",
    )
    .unwrap();
    let out = dir.path().join("r.csv");
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let received = &submissions(&server).await[0];
    let length: usize = received
        .headers
        .get("content-length")
        .expect("a Content-Length, not chunked")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, received.body.len());
    assert!(received.headers.get("transfer-encoding").is_none());
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    use base64::Engine;
    let sent = base64::engine::general_purpose::STANDARD
        .decode(body["image"].as_str().unwrap())
        .unwrap();
    assert_eq!(sent, std::fs::read(&image).unwrap());
    assert_eq!(body["prompt"], "on a model");
    assert_eq!(
        results(&out)[0]["image"],
        "shirt.png",
        "the results show the path, never base64"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_answer_came_too_late_is_unknown_and_its_task_exists() {
    let sim = simulator(SimConfig {
        latency: "2s".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("late", 1, &[1]);
    let o = run_bin(
        run_args(&manifest, &sim.base_url(), &out, &["--timeout", "300ms"]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let row = &results(&out)[0];
    assert_eq!(row["status"], "unknown", "{row:?}");
    assert!(row["message"].contains("timed out"), "{row:?}");
    assert_eq!(sim.stats().accepted, 1, "the task exists: it may be billed");
    // Not sent again without --retry-unknown.
    let again = run_bin(run_args(&manifest, &sim.base_url(), &out, &[]), vec![]).await;
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(sim.stats().submitted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_cannot_work_are_refused_before_anything_is_sent() {
    let server = MockServer::start().await;
    let (_dir, manifest, out) = txt2img_scratch("settings", 2, &[1]);
    let zero = run_args(&manifest, &server.uri(), &out, &["--timeout", "0s"]);
    let mut backwards = run_args(&manifest, &server.uri(), &out, &["--backoff-max", "1s"]);
    set_option(&mut backwards, "--backoff", "10s");
    for (args, flag) in [(zero, "`--timeout`"), (backwards, "`--backoff-max`")] {
        let o = run_bin(args, vec![]).await;
        assert_eq!(o.status.code(), Some(2), "{flag}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(flag), "{flag}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
    assert!(!out.exists(), "no results were written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_longer_than_backoff_max_is_capped_and_said() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "999999"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("t1")))
        .mount(&server)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("capped", 1, &[1]);
    let mut args = run_args(&manifest, &server.uri(), &out, &["--backoff-max", "200ms"]);
    args.extend(["--timeout".into(), "5s".into()]);
    // Bounded: a run that honoured the full Retry-After would wait eleven days.
    let o = tokio::time::timeout(Duration::from_secs(30), run_bin(args, vec![]))
        .await
        .expect("the wait was capped");
    assert_eq!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("waiting at most --backoff-max 200ms"),
        "{stderr}"
    );
    assert_eq!(results(&out)[0]["attempts"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_the_bound_is_not_read_and_is_unknown() {
    let server = MockServer::start().await;
    let mut huge = ok_body("t1");
    huge["padding"] = serde_json::Value::String("x".repeat(2 << 20));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(huge))
        .mount(&server)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("huge", 1, &[1]);
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(1));
    let row = &results(&out)[0];
    assert_eq!(row["status"], "unknown", "{row:?}");
    assert!(row["message"].contains("larger than 1024 KiB"), "{row:?}");
}

/// An API message that a spreadsheet would run as a formula is written so that it shows as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_looks_like_a_formula_is_written_as_text() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"code": 1001, "message": "=HYPERLINK(\"http://x\",\"click\")"}),
        ))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "formula", 1, &[1]);
    let out = dir.path().join("r.csv");
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(1));
    let rows = results(&out);
    assert_eq!(rows[0]["status"], "rejected");
    assert_eq!(rows[0]["message"], "'=HYPERLINK(\"http://x\",\"click\")");
}
