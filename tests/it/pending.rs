//! `run --max-pending` and `run --collect` as one streaming pipeline (issue 15): a run follows its
//! own tasks while it submits, downloads images as tasks finish, and a run killed half way resumes
//! both halves.

use std::time::{Duration, SystemTime};

use hidream_batch::sim::SimConfig;

use crate::common::{
    quiet, results, run_args, run_bin, signal, simulator, spawn, txt2img_manifest, until, wait,
};

fn task_time(ms: u64) -> SimConfig {
    SimConfig {
        task_time: Duration::from_millis(ms),
        ..quiet()
    }
}

fn csv_rows(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    results(path)
}

/// An RFC 3339 time with milliseconds (the results' `submitted_at`), as a `SystemTime`.
fn parse_time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_collect_images_are_on_disk_before_the_last_submission() {
    let sim = simulator(task_time(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "stream", 5, &[1]);
    let out = dir.path().join("r.csv");
    let images = dir.path().join("imgs");
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &out,
            &[
                "--max-pending",
                "1",
                "--collect",
                &images.display().to_string(),
            ],
        ),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    let rows = csv_rows(&out);
    let last_submission = rows
        .iter()
        .map(|r| parse_time(&r["submitted_at"]))
        .max()
        .unwrap();
    let on_disk = csv_rows(&images.join("images.csv"));
    assert_eq!(on_disk.len(), 5);
    let first_image = on_disk
        .iter()
        .map(|r| {
            std::fs::metadata(images.join(&r["path"]))
                .unwrap()
                .modified()
                .unwrap()
        })
        .min()
        .unwrap();
    assert!(
        first_image < last_submission,
        "an image was downloaded while the run was still submitting"
    );
    // The final collection asked nothing more about the tasks the run had followed to the end.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("0 task queries")
            || String::from_utf8_lossy(&o.stdout).contains("0 task queries"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_half_way_resumes_both_halves() {
    let sim = simulator(SimConfig {
        ledger: hidream_batch::sim::LedgerConfig::Memory,
        ..task_time(300)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "half", 8, &[1]);
    let out = dir.path().join("r.csv");
    let images = dir.path().join("imgs");
    let args = run_args(
        &manifest,
        &sim.base_url(),
        &out,
        &[
            "--max-pending",
            "1",
            "--collect",
            &images.display().to_string(),
        ],
    );
    let child = spawn(&args);
    until("an image on disk while submitting", || {
        std::fs::read_dir(images.join("j0"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
            && sim.stats().accepted < 8
    })
    .await;
    signal(&child, "-KILL");
    let _ = wait(child).await;
    assert!(sim.stats().accepted < 8, "killed half way");
    let o = run_bin(args, vec![]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 8);
    // A request in flight at the kill is `unknown` (exit 1), never sent twice; every other one
    // is submitted, and every submitted task's image is on disk.
    let unknown = rows.iter().filter(|r| r["status"] == "unknown").count();
    assert!(unknown <= 1, "{rows:?}");
    assert_eq!(
        o.status.code(),
        Some(if unknown == 0 { 0 } else { 1 }),
        "{stderr}"
    );
    assert_eq!(
        rows.iter().filter(|r| r["status"] == "submitted").count() + unknown,
        8
    );
    let created = sim.created();
    let distinct: std::collections::HashSet<_> =
        created.iter().map(|c| c.request_id.clone()).collect();
    assert_eq!(
        distinct.len(),
        created.len(),
        "no request was accepted twice"
    );
    let images_rows = csv_rows(&images.join("images.csv"));
    assert_eq!(images_rows.len(), 8 - unknown, "{images_rows:?}");
    assert!(
        images_rows
            .iter()
            .all(|r| r["status"] == "done" && images.join(&r["path"]).is_file())
    );
}

/// Against an account that allows 3 unfinished tasks, `--max-pending 3` submits everything with no
/// refusal, and the server never sees more than 3 unfinished tasks of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_keeps_within_the_accounts_limit_and_is_never_refused() {
    let sim = simulator(SimConfig {
        max_pending: Some(3),
        ..task_time(400)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "window", 12, &[1, 2]);
    let out = dir.path().join("r.csv");
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &out,
            &["--max-pending", "3", "--concurrency", "8"],
        ),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    let stats = sim.stats();
    assert_eq!(stats.pending_limited, 0, "never refused: {stats:?}");
    assert_eq!(stats.accepted, 12);
    assert_eq!(
        stats.max_pending_seen, 3,
        "the window was used, never passed"
    );
    assert!(csv_rows(&out).iter().all(|r| r["status"] == "submitted"));
}

/// Images given as bare ids are downloaded through `--image-url-template`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_image_ids_are_downloaded_through_the_template() {
    let sim = simulator(SimConfig {
        bare_image_ids: true,
        ..task_time(100)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "bare", 2, &[2]);
    let out = dir.path().join("r.csv");
    let images = dir.path().join("imgs");
    let template = format!("{}/sim/images/{{id}}.png", sim.base_url());
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &out,
            &[
                "--collect",
                &images.display().to_string(),
                "--image-url-template",
                &template,
            ],
        ),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    let rows = csv_rows(&images.join("images.csv"));
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert!(images.join(&r["path"]).is_file(), "{r:?}");
        assert!(
            r["url"].starts_with(&sim.base_url()),
            "the URL built: {r:?}"
        );
    }
}

/// The same account without `--max-pending`: its task limit refuses (HTTP 200, code 1201), the
/// breaker stops the run (exit 4) and the rest stays unsent; `--retry-code 1201` turns the refusals
/// into retries that succeed once tasks finish; an account out of credits trips the breaker too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accounts_refusals_trip_the_breaker_or_are_retried_on_request() {
    let account = || SimConfig {
        max_pending: Some(2),
        ..task_time(300)
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "over", 30, &[1]);

    let sim = simulator(account()).await;
    let out = dir.path().join("tripped.csv");
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &out,
            &["--concurrency", "1", "--max-consecutive-rejections", "3"],
        ),
        vec![],
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("refused 3 requests in a row with code 1201"),
        "{stderr}"
    );
    let stats = sim.stats();
    assert!(
        stats.accepted + stats.pending_limited < 30,
        "the rest stays unsent: {stats:?}"
    );

    let sim = simulator(account()).await;
    let out = dir.path().join("retried.csv");
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &out,
            &[
                "--retry-code",
                "1201",
                // Four requests take turns at two slots that free every 300 ms: a request may
                // be refused many times in a row (once, under load, more than 50).
                "--max-attempts",
                "500",
                "--backoff-max",
                "200ms",
            ],
        ),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    let stats = sim.stats();
    assert_eq!(stats.accepted, 30);
    assert!(
        stats.pending_limited > 0,
        "the limit was met and retried: {stats:?}"
    );
    assert!(csv_rows(&out).iter().all(|r| r["status"] == "submitted"));

    let broke = simulator(SimConfig {
        credits: Some(5),
        ..task_time(50)
    })
    .await;
    let out = dir.path().join("broke.csv");
    let o = run_bin(
        run_args(&manifest, &broke.base_url(), &out, &["--concurrency", "1"]),
        vec![],
    )
    .await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("with code 1202"), "{stderr}");
    let stats = broke.stats();
    assert_eq!(stats.accepted, 5);
    assert_eq!(
        stats.credits_refused, 10,
        "the default K of 10 refusals, then the stop: {stats:?}"
    );
}
