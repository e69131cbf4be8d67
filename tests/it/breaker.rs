//! Issue 15 over loopback: per-endpoint rates (`--rate model=N`), business codes retried as
//! transient (`--retry-code`), and the breaker that stops a run the API refuses account-wide
//! (`--max-consecutive-rejections`, exit 4).

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use hidream_batch::env_vars::TIME_SCALE;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

/// A manifest of `txt2img` one-image text-to-image requests, then `model` one-image model-image
/// requests (prompt mode, an image URL), in `dir`.
fn mixed_manifest(dir: &Path, txt2img: usize, model: usize) -> std::path::PathBuf {
    let mut yaml = String::from("name: mixed\njobs:\n");
    for i in 0..txt2img {
        yaml += &format!(
            "  - id: t{i}\n    kind: txt2img\n    prompt: \"prompt {i}\"\n    img_count: 1\n"
        );
    }
    for i in 0..model {
        yaml += &format!(
            "  - id: m{i}\n    kind: model\n    image: \"https://example.com/shirt-{i}.jpg\"\n    prompt: \"a person wearing shirt {i}\"\n    image_count: 1\n"
        );
    }
    let path = dir.join("mixed.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// From the first to the last `submitted_at` of the rows of `kind`.
fn span(rows: &[std::collections::HashMap<String, String>], kind: &str) -> Duration {
    let at: Vec<SystemTime> = rows
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| humantime::parse_rfc3339(&r["submitted_at"]).unwrap())
        .collect();
    assert!(!at.is_empty(), "rows of {kind}");
    let (first, last) = (at.iter().min().unwrap(), at.iter().max().unwrap());
    last.duration_since(*first).unwrap()
}

/// `--rate 0 --rate model=4`: model images wait for the window (4 a minute), text-to-image is not
/// limited at all. A twentieth of the time (`HIDREAM_BATCH_TIME_SCALE=0.05`: the window is
/// 3.025 s): 8 model images take two windows, 8 text-to-image ones go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_keeps_its_own_rate_and_0_is_no_limit() {
    let sim = simulator(quiet()).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = mixed_manifest(dir.path(), 8, 8);
    let out = dir.path().join("r.csv");
    let mut args = run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "8"]);
    args.extend(["--rate".into(), "model=4".into()]);
    // The plan's estimate uses each endpoint's rate: 8 model images at 4 a minute take a window
    // (the even pace: 2 minutes); text-to-image adds nothing.
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let o = run_bin(dry, vec![]).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("at --rate txt2img=0, model=4 images per minute per endpoint this takes about 1m, or about 2m paced evenly"),
        "{stdout}"
    );
    let o = run_bin(args, vec![(TIME_SCALE, "0.05".into())]).await;
    crate::common::exits(&o, 0);
    let rows = results(&out);
    assert_eq!(rows.len(), 16);
    assert_eq!(sim.stats().accepted, 16);
    // Model images: the second four waited for the window (3.025 s, scaled); a run without the
    // per-endpoint rate (`--rate 0`) sends them all at once.
    let model = span(&rows, "model");
    assert!(model >= Duration::from_millis(3_000), "{model:?}");
    // Text-to-image: not limited, so not held back by the model endpoint's limiter.
    let txt2img = span(&rows, "txt2img");
    assert!(txt2img < Duration::from_millis(3_000), "{txt2img:?}");
}

/// A `--rate` that cannot be read is a usage error (exit 2) naming the flag, for `run` and for
/// `collect`, which shares the option; nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rate_is_exit_2_naming_the_flag() {
    let sim = simulator(quiet()).await;
    let (_dir, manifest, out) = txt2img_scratch("badrate", 2, &[1]);
    for bad in [
        "model=x",
        "image=5",
        "4294967296",
        "model=",
        "1.5",
        "Model=3",
    ] {
        let mut args = run_args(&manifest, &sim.base_url(), &out, &[]);
        set_option(&mut args, "--rate", bad);
        let o = run_bin(args, vec![]).await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--rate"), "{bad}: {stderr}");
        let o = run_bin(
            vec![
                "collect".into(),
                "--results".into(),
                out.display().to_string(),
                "--base-url".into(),
                sim.base_url(),
                "--rate".into(),
                bad.into(),
            ],
            vec![],
        )
        .await;
        assert_eq!(o.status.code(), Some(2), "collect {bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--rate"));
    }
    assert_eq!(sim.stats().submitted, 0, "nothing was sent");
}

/// The answer of an API out of credits (or over its task limit): HTTP 200, a business code, an
/// empty `result`.
fn refusal(code: i64, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(serde_json::json!({"code": code, "message": message, "result": {}}))
}

fn accepted(i: u32) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "code": 0, "message": "Success", "request_id": "r",
        "result": {"task_id": format!("task-{i}"), "sub_task_ids": [format!("task-{i}-0")]}
    }))
}

/// A server whose `n`-th submission (from 0) is answered `answer(n)`.
async fn server(answer: impl Fn(u32) -> ResponseTemplate + Send + Sync + 'static) -> MockServer {
    let server = MockServer::start().await;
    let n = AtomicU32::new(0);
    Mock::given(method("POST"))
        .respond_with(move |_: &wiremock::Request| answer(n.fetch_add(1, Ordering::SeqCst)))
        .mount(&server)
        .await;
    server
}

/// `--retry-code 2001`: a 2xx answer with that code is transient. Answered twice, then accepted:
/// `submitted` at the third attempt. Always answered so: `failed` (resent by the next run), not
/// `rejected`, with the code and the API's message kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_code_is_retried_and_ends_failed_not_rejected() {
    let twice = server(|n| {
        if n < 2 {
            refusal(2001, "任务数已达上限")
        } else {
            accepted(n)
        }
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("retrycode", 1, &[1]);
    let o = run_bin(
        run_args(&manifest, &twice.uri(), &out, &["--retry-code", "2001"]),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    let row = &results(&out)[0];
    assert_eq!(
        (
            row["status"].as_str(),
            row["attempts"].as_str(),
            row["task_id"].as_str()
        ),
        ("submitted", "3", "task-2")
    );
    assert_eq!(submissions(&twice).await.len(), 3);

    let always = server(|_| refusal(2001, "任务数已达上限")).await;
    let (_dir, manifest, out) = txt2img_scratch("retrycode-always", 1, &[1]);
    let o = run_bin(
        run_args(
            &manifest,
            &always.uri(),
            &out,
            &["--retry-code", "2001", "--max-attempts", "3"],
        ),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    let row = &results(&out)[0];
    assert_eq!(
        (
            row["status"].as_str(),
            row["attempts"].as_str(),
            row["http_status"].as_str(),
            row["code"].as_str(),
            row["message"].as_str()
        ),
        ("failed", "3", "200", "2001", "任务数已达上限")
    );
    assert_eq!(submissions(&always).await.len(), 3);
    // `failed` is resent by the next run (without --retry-rejected).
    let o = run_bin(
        run_args(&manifest, &always.uri(), &out, &["--max-attempts", "1"]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(submissions(&always).await.len(), 4, "resent");
    // Without the flag, the same answer is a refusal.
    assert_eq!(results(&out)[0]["status"], "rejected");
}

/// A 2xx refusal retried for its code proves no task was created, like a 429: killed during the
/// backoff that follows, the run leaves the request `failed`, and the next run sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_backoff_after_a_retry_code_leaves_the_request_failed() {
    let busy = server(|_| refusal(2001, "busy")).await;
    let (_dir, manifest, out) = txt2img_scratch("retrycode-crash", 1, &[1]);
    let mut args = run_args(&manifest, &busy.uri(), &out, &["--retry-code", "2001"]);
    set_option(&mut args, "--backoff", "60s");
    args.extend(["--backoff-max".into(), "60s".into()]);
    let child = spawn(&args);
    // The answer is in and noted with its code; the run waits for its backoff: kill it.
    until("the answer noted", || {
        std::fs::read_to_string(sibling(&out, "wal"))
            .unwrap_or_default()
            .contains(" 1 200:2001\n")
    })
    .await;
    signal(&child, "-KILL");
    wait(child).await;
    let accepting = accepting_server().await;
    let o = run_bin(run_args(&manifest, &accepting.uri(), &out, &[]), vec![]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("answered with no task"), "{stderr}");
    assert_eq!(submissions(&accepting).await.len(), 1, "sent again");
    assert_eq!(results(&out)[0]["status"], "submitted");
}

/// The message of the run's stop, as stderr says it.
fn stopped(k: u32, code: i64, message: &str) -> String {
    format!("stopped: the API refused {k} requests in a row with code {code}: {message}")
}

/// An account out of credits: every submission is answered `{"code": 1999, "message": "积分不足",
/// "result": {}}`. With the default K = 10 and `--concurrency 4`, the run stops after at most 13
/// submissions (counted by the server), exits 4 and says why; the requests it did not send get no
/// row, and the next run sends them — but not the refused ones, unless `--retry-rejected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_refusing_everything_stops_the_run_after_k_refusals() {
    let broke = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(refusal(1999, "积分不足").set_delay(Duration::from_millis(10)))
        .mount(&broke)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("broke", 40, &[1]);
    let o = run_bin(
        run_args(&manifest, &broke.uri(), &out, &["--concurrency", "4"]),
        vec![],
    )
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&stopped(10, 1999, "积分不足")), "{stderr}");
    let sent = submissions(&broke).await.len();
    assert!(
        (10..=13).contains(&sent),
        "{sent} submissions reached the server"
    );
    // Every request that went out has its row, `rejected` with the code; the others have none.
    let rows = results(&out);
    assert_eq!(rows.len(), sent);
    assert!(
        rows.iter().all(|r| r["status"] == "rejected"
            && r["code"] == "1999"
            && r["message"] == "积分不足"),
        "{rows:?}"
    );
    assert!(
        stdout.contains(&format!("{} requests were not sent", 40 - sent))
            && stdout.contains("rerun the same command")
            && stdout.contains("--retry-rejected"),
        "{stdout}"
    );
    assert!(
        open_entries(&out).is_empty(),
        "every request sent is settled"
    );

    // Credits bought: the next run sends the rest, not the refused ones.
    let paid = accepting_server().await;
    let o = run_bin(run_args(&manifest, &paid.uri(), &out, &[]), vec![]).await;
    crate::common::exits(&o, 1);
    assert_eq!(submissions(&paid).await.len(), 40 - sent);
    let rows = results(&out);
    assert_eq!(rows.len(), 40);
    let submitted = rows.iter().filter(|r| r["status"] == "submitted").count();
    assert_eq!(submitted, 40 - sent);
    // And with --retry-rejected, the refused ones.
    let o = run_bin(
        run_args(&manifest, &paid.uri(), &out, &["--retry-rejected"]),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    assert_eq!(submissions(&paid).await.len(), 40);
}

/// What does not trip it: refusals whose codes alternate, a success every K − 1 refusals, and
/// `--max-consecutive-rejections 0` against an account refusing everything. One request at a time,
/// so the server's order is the order the run sees its outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_codes_a_success_between_or_k_0_do_not_trip_it() {
    let alternating = server(|n| {
        if n % 2 == 0 {
            refusal(1999, "积分不足")
        } else {
            refusal(1001, "resolution: unsupported")
        }
    })
    .await;
    let between = server(|n| {
        if n % 3 == 2 {
            accepted(n)
        } else {
            refusal(1999, "积分不足")
        }
    })
    .await;
    let broke = server(|_| refusal(1999, "积分不足")).await;
    for (server, k, rejected) in [
        (&alternating, "2", 20),
        (&between, "3", 14),
        (&broke, "0", 20),
    ] {
        let (_dir, manifest, out) = txt2img_scratch("no-trip", 20, &[1]);
        let o = run_bin(
            run_args(
                &manifest,
                &server.uri(),
                &out,
                &["--concurrency", "1", "--max-consecutive-rejections", k],
            ),
            vec![],
        )
        .await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "K {k}: {stderr}");
        assert!(!stderr.contains("stopped:"), "{stderr}");
        assert_eq!(
            submissions(server).await.len(),
            20,
            "K {k}: every request sent"
        );
        let rows = results(&out);
        assert_eq!(
            rows.iter().filter(|r| r["status"] == "rejected").count(),
            rejected,
            "K {k}"
        );
    }
    // K = 1: the first refusal stops the run, whatever comes next.
    let (_dir, manifest, out) = txt2img_scratch("k1", 20, &[1]);
    let o = run_bin(
        run_args(
            &manifest,
            &alternating.uri(),
            &out,
            &["--concurrency", "1", "--max-consecutive-rejections", "1"],
        ),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(results(&out).len(), 1);
}

/// A code listed by `--retry-code` is transient, never a refusal: requests answered with it end
/// `failed`, and the breaker (K = 2 here) does not trip however many there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_code_never_trips_the_breaker() {
    let busy = server(|_| refusal(2001, "任务数已达上限")).await;
    let (_dir, manifest, out) = txt2img_scratch("busy", 6, &[1]);
    let o = run_bin(
        run_args(
            &manifest,
            &busy.uri(),
            &out,
            &[
                "--retry-code",
                "2001",
                "--max-attempts",
                "2",
                "--max-consecutive-rejections",
                "2",
            ],
        ),
        vec![],
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("stopped:"), "{stderr}");
    assert_eq!(submissions(&busy).await.len(), 12);
    assert!(
        results(&out)
            .iter()
            .all(|r| r["status"] == "failed" && r["code"] == "2001")
    );
}

/// `--collect` after the breaker stopped the run: what was submitted is collected (its task
/// exists and is paid for); the exit code is still 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_still_collects_what_was_submitted_after_the_breaker() {
    const TXT2IMG: &str = "/api-pub/gw/v3/image/txt2img/async";
    let api = server(|n| {
        if n < 2 {
            accepted(n)
        } else {
            refusal(1999, "积分不足")
        }
    })
    .await;
    let images = format!("{}/img", api.uri());
    Mock::given(method("GET"))
        .and(path(format!("{TXT2IMG}/results")))
        .respond_with(move |r: &wiremock::Request| {
            let task = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "task_id")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "code": 0, "message": "Success",
                "result": {"task_id": task, "sub_task_results": [
                    {"sub_task_id": format!("{task}-0"), "task_status": 1, "image": format!("{images}/{task}.png")}
                ]}
            }))
        })
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/img/"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        )
        .mount(&api)
        .await;
    let (dir, manifest, out) = txt2img_scratch("collect-after", 12, &[1]);
    let pictures = dir.path().join("pictures");
    let o = run_bin(
        run_args(
            &manifest,
            &api.uri(),
            &out,
            &[
                "--concurrency",
                "1",
                "--max-consecutive-rejections",
                "3",
                "--collect",
                &pictures.display().to_string(),
            ],
        ),
        vec![],
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&stopped(3, 1999, "积分不足")), "{stderr}");
    assert_eq!(submissions(&api).await.len(), 5);
    let images = results(&pictures.join("images.csv"));
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(
        images
            .iter()
            .all(|r| r["status"] == "done" && !r["path"].is_empty()),
        "{images:?}"
    );
}

/// A message with control characters is shown escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_message_is_escaped() {
    let hostile = server(|_| refusal(1999, "no credits\u{1b}[2J\nrm -rf")).await;
    let (_dir, manifest, out) = txt2img_scratch("hostile", 4, &[1]);
    let o = run_bin(
        run_args(
            &manifest,
            &hostile.uri(),
            &out,
            &["--concurrency", "1", "--max-consecutive-rejections", "2"],
        ),
        vec![],
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(
        stderr.contains(&stopped(2, 1999, "no credits\\u{1b}[2J\\nrm -rf")),
        "{stderr}"
    );
}
