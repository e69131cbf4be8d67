//! `collect` and `run --collect` against the simulator over loopback: every done image gets its
//! file and its row, a rerun downloads nothing, failed and refused images are recorded, `--wait`
//! stops at `--timeout`, and the contact sheet lists every image and lays sweeps out as grids.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hidream_batch::sim::SimConfig;

use crate::common::*;

/// Rows of a CSV as maps from column to value (`results` is also a variable name here).
fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    crate::common::results(path)
}

/// Arguments of `collect` against `base`, reading `results` and writing `out`.
fn collect_args(base: &str, results: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "collect".into(),
        "--base-url".into(),
        base.into(),
        "--results".into(),
        results.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--rate".into(),
        "0".into(),
        "--poll-rate".into(),
        "0".into(),
        "--backoff".into(),
        "5ms".into(),
        "--poll-interval".into(),
        "100ms".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn fast(task_time_ms: u64) -> SimConfig {
    SimConfig {
        task_time: Duration::from_millis(task_time_ms),
        ..quiet()
    }
}

fn ok(o: &std::process::Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Submit `manifest` to `base`, writing `results`; every request must get a task.
async fn submit(manifest: &Path, base: &str, results: &Path) {
    let o = run_bin(run_args(manifest, base, results, &[]), vec![]).await;
    ok(&o, 0);
}

/// The opening tag and content of every `<tag …>…</tag>` whose opening tag contains `attr`.
/// Enough for the page's flat, generated markup (no element nests in one of its own kind).
fn elements<'a>(html: &'a str, tag: &str, attr: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag} "), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let from = &rest[i..];
        let end = from
            .find(&close)
            .map(|j| j + close.len())
            .unwrap_or(from.len());
        let element = &from[..end];
        let head = &element[..element.find('>').unwrap_or(element.len())];
        if head.contains(attr) {
            out.push(element);
        }
        rest = &from[open.len()..];
    }
    out
}

/// The value of `name="…"` in the opening tag of `element`.
fn attr<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    let head = &element[..element.find('>')?];
    let key = format!(" {name}=\"");
    let start = head.find(&key)? + key.len();
    let len = head[start..].find('"')?;
    Some(&head[start..start + len])
}

/// The `<section>` of one job.
fn section<'a>(html: &'a str, job: &str) -> &'a str {
    elements(html, "section", &format!("data-job=\"{job}\""))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no section for job {job}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_is_collected_once_and_laid_out_as_a_grid() {
    let sim = simulator(fast(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.csv");
    let out = dir.path().join("images");
    submit(
        &root().join("manifests/sweep.yaml"),
        &sim.base_url(),
        &results,
    )
    .await;

    let o = run_bin(
        collect_args(
            &sim.base_url(),
            &results,
            &out,
            &["--wait", "--timeout", "30s"],
        ),
        vec![],
    )
    .await;
    ok(&o, 0);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("20 images: 20 done (20 downloaded"),
        "{stdout}"
    );

    // Every sub-task of the results has its row, and every done one its file.
    let submitted = csv_rows(&results);
    let rows = csv_rows(&out.join("images.csv"));
    assert_eq!(rows.len(), 20);
    let expected: Vec<String> = submitted
        .iter()
        .flat_map(|r| {
            r["sub_task_ids"]
                .split(';')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let got: Vec<String> = rows.iter().map(|r| r["sub_task_id"].clone()).collect();
    assert_eq!(got, expected, "one row per image, in the results' order");
    let by_request: HashMap<&str, &HashMap<String, String>> = submitted
        .iter()
        .map(|r| (r["request_id"].as_str(), r))
        .collect();
    for r in &rows {
        assert_eq!(r["status"], "done");
        let n = r["sub_task_id"].rsplit('-').next().unwrap();
        assert_eq!(
            r["path"],
            format!("{}/{}-{n}.png", r["job"], r["request_id"])
        );
        let bytes = std::fs::read(out.join(&r["path"])).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", r["path"]);
        assert!(r["url"].starts_with("http://"));
        let source = by_request[r["request_id"].as_str()];
        for column in ["task_id", "job", "var.style", "var.subject", "meta.shot"] {
            assert_eq!(r[column], source[column], "{column}");
        }
    }
    assert!(
        std::fs::read_dir(out.join("hero")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')),
        "no temporary file is left"
    );
    let stats = sim.stats();
    assert_eq!(stats.calls.images, 20, "each image downloaded once");
    let queries = stats.calls.results_txt2img;
    assert!(queries >= 11);

    // A second collect downloads nothing and asks nothing: every image is settled.
    let again = run_bin(
        collect_args(&sim.base_url(), &results, &out, &["--wait"]),
        vec![],
    )
    .await;
    ok(&again, 0);
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("0 downloaded, 20 skipped: already on disk")
    );
    let stats = sim.stats();
    assert_eq!(stats.calls.images, 20);
    assert_eq!(stats.calls.results_txt2img, queries);
    assert_eq!(csv_rows(&out.join("images.csv")), rows);

    // A missing file is fetched again, and only it.
    std::fs::remove_file(out.join(&rows[5]["path"])).unwrap();
    let third = run_bin(collect_args(&sim.base_url(), &results, &out, &[]), vec![]).await;
    ok(&third, 0);
    let stats = sim.stats();
    assert_eq!(stats.calls.images, 21);
    assert_eq!(stats.calls.results_txt2img, queries + 1);
    assert!(out.join(&rows[5]["path"]).exists());

    // The contact sheet: every image, and `hero` (style × subject) as a 3 × 3 grid.
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(!html.contains("<script"), "no scripts");
    let srcs: Vec<&str> = html
        .match_indices("<img src=\"")
        .map(|(i, m)| {
            let s = &html[i + m.len()..];
            &s[..s.find('"').unwrap()]
        })
        .collect();
    let mut paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str()).collect();
    let mut shown = srcs.clone();
    paths.sort();
    shown.sort();
    assert_eq!(shown, paths, "the page shows every image, by relative path");
    for r in &rows {
        assert!(
            html.contains(&format!("<a href=\"{0}\"><img src=\"{0}\"", r["path"])),
            "each tile links to its full image"
        );
    }

    let hero = section(&html, "hero");
    let grids = elements(hero, "table", "data-layout=\"grid\"");
    assert_eq!(grids.len(), 1);
    let grid = grids[0];
    assert_eq!(attr(grid, "data-rows"), Some("style"));
    assert_eq!(attr(grid, "data-cols"), Some("subject"));
    let row_heads: Vec<&str> = elements(grid, "th", "scope=\"row\"")
        .iter()
        .map(|e| attr(e, "data-row").unwrap())
        .collect();
    let col_heads: Vec<&str> = elements(grid, "th", "scope=\"col\"")
        .iter()
        .map(|e| attr(e, "data-col").unwrap())
        .collect();
    assert_eq!(row_heads, ["minimalist", "vintage", "neon"]);
    assert_eq!(col_heads, ["leather bag", "sneaker", "wristwatch"]);
    assert!(
        grid.contains(">minimalist</th>") && grid.contains(">wristwatch</th>"),
        "labelled headers"
    );
    let cells = elements(grid, "td", "data-row=");
    assert_eq!(cells.len(), 9);
    for cell in cells {
        let (style, subject) = (
            attr(cell, "data-row").unwrap(),
            attr(cell, "data-col").unwrap(),
        );
        let want: Vec<&str> = rows
            .iter()
            .filter(|r| {
                r["job"] == "hero" && r["var.style"] == style && r["var.subject"] == subject
            })
            .map(|r| r["path"].as_str())
            .collect();
        assert_eq!(want.len(), 2);
        for p in want {
            assert!(
                cell.contains(&format!("src=\"{p}\"")),
                "{style} × {subject} holds {p}"
            );
        }
    }
    let banner = section(&html, "banner");
    assert_eq!(elements(banner, "div", "data-layout=\"strip\"").len(), 1);
    assert_eq!(banner.matches("<img ").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_for_each_sweep_is_one_axis_with_sku_captions() {
    let sim = simulator(fast(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.csv");
    let out = dir.path().join("look");
    submit(
        &root().join("manifests/lookbook.yaml"),
        &sim.base_url(),
        &results,
    )
    .await;
    let o = run_bin(collect_args(&sim.base_url(), &results, &out, &[]), vec![]).await;
    ok(&o, 0);
    let rows = csv_rows(&out.join("images.csv"));
    assert_eq!(rows.len(), 18);
    assert_eq!(sim.stats().calls.results_model, 10);

    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let look = section(&html, "lookbook");
    let grid = elements(look, "table", "data-layout=\"grid\"")[0];
    // sku, title and image come from one row of products.csv: one axis, not a diagonal grid.
    assert_eq!(attr(grid, "data-rows"), Some("sku · title · image"));
    assert_eq!(attr(grid, "data-cols"), Some("human"));
    assert_eq!(elements(grid, "th", "scope=\"row\"").len(), 4);
    assert_eq!(elements(grid, "th", "scope=\"col\"").len(), 2);
    let cells = elements(grid, "td", "data-row=");
    assert_eq!(cells.len(), 8);
    for cell in &cells {
        assert_eq!(cell.matches("<img ").count(), 2);
        let sku = attr(cell, "data-row").unwrap().split(" · ").next().unwrap();
        assert!(
            cell.contains(&format!("<span class=\"k\">sku</span> {sku}</span>")),
            "the SKU is the caption: {cell}"
        );
    }
    let portrait = section(&html, "portrait");
    assert_eq!(elements(portrait, "div", "data-layout=\"strip\"").len(), 1);
    assert!(portrait.contains("JK-0003"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_refused_images_are_recorded_and_never_retried() {
    for (config, status, reason) in [
        (
            SimConfig {
                fail_rate: 1.0,
                ..fast(0)
            },
            "failed",
            "generation failed (simulated)",
        ),
        (
            SimConfig {
                refuse_rate: 1.0,
                ..fast(0)
            },
            "refused",
            "refused by content review (simulated)",
        ),
    ] {
        let sim = simulator(config).await;
        let dir = tempfile::tempdir().unwrap();
        let manifest = txt2img_manifest(dir.path(), "lost", 3, &[1, 2]);
        let results = dir.path().join("results.csv");
        let out = dir.path().join("out");
        submit(&manifest, &sim.base_url(), &results).await;
        let o = run_bin(
            collect_args(&sim.base_url(), &results, &out, &["--wait"]),
            vec![],
        )
        .await;
        ok(&o, 1);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&format!("4 {status}")),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let rows = csv_rows(&out.join("images.csv"));
        assert_eq!(rows.len(), 4);
        for r in &rows {
            assert_eq!(r["status"], status);
            assert_eq!(r["message"], reason);
            assert_eq!(r["path"], "");
        }
        let stats = sim.stats();
        assert_eq!(stats.calls.images, 0);
        assert_eq!(
            stats.calls.results_txt2img, 3,
            "one query each: terminal at once"
        );

        // Terminal: a rerun neither asks again nor changes the record.
        let again = run_bin(
            collect_args(&sim.base_url(), &results, &out, &["--wait"]),
            vec![],
        )
        .await;
        ok(&again, 1);
        assert_eq!(sim.stats().calls.results_txt2img, 3);
        assert_eq!(csv_rows(&out.join("images.csv")), rows);

        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        let tiles = elements(&html, "figure", &format!("data-status=\"{status}\""));
        assert_eq!(tiles.len(), 4);
        for t in tiles {
            assert!(
                t.contains(&format!(">{status}</span>")) && t.contains(reason),
                "{t}"
            );
            assert!(!t.contains("<img"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_stops_at_the_timeout_when_tasks_never_finish() {
    let sim = simulator(SimConfig {
        task_time: Duration::from_secs(3600),
        ..quiet()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "slow", 2, &[2]);
    let results = dir.path().join("results.csv");
    let out = dir.path().join("out");
    submit(&manifest, &sim.base_url(), &results).await;

    // Without --wait: one round, pending, exit 1.
    let o = run_bin(collect_args(&sim.base_url(), &results, &out, &[]), vec![]).await;
    ok(&o, 1);
    assert_eq!(sim.stats().calls.results_txt2img, 2);

    let started = Instant::now();
    let o = run_bin(
        collect_args(
            &sim.base_url(),
            &results,
            &out,
            &["--wait", "--timeout", "700ms"],
        ),
        vec![],
    )
    .await;
    let elapsed = started.elapsed();
    ok(&o, 1);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("4 pending") && stdout.contains("--timeout reached"),
        "{stdout}"
    );
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    let queries = sim.stats().calls.results_txt2img - 2;
    assert!(queries >= 4, "polled in rounds: {queries} queries");
    let rows = csv_rows(&out.join("images.csv"));
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert!(
            ["queued", "running"].contains(&r["status"].as_str()),
            "{r:?}"
        );
        assert_eq!(r["path"], "");
    }
    assert_eq!(sim.stats().calls.images, 0);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(
        html.matches("<figure ").count(),
        4,
        "a tile per pending image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_collect_submits_then_downloads() {
    let sim = simulator(fast(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "both", 3, &[1, 2, 3]);
    let results = dir.path().join("results.csv");
    let out = dir.path().join("imgs");
    let out_arg = out.display().to_string();
    let o = run_bin(
        run_args(
            &manifest,
            &sim.base_url(),
            &results,
            &["--collect", &out_arg],
        ),
        vec![],
    )
    .await;
    ok(&o, 0);
    let rows = csv_rows(&out.join("images.csv"));
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "done" && out.join(&r["path"]).exists())
    );
    assert_eq!(sim.stats().calls.images, 6);

    // Every request submitted but every image refused: the run's exit code is collect's 1.
    let refusing = simulator(SimConfig {
        refuse_rate: 1.0,
        ..fast(0)
    })
    .await;
    let results2 = dir.path().join("r2.csv");
    let out2 = dir.path().join("imgs2");
    let o = run_bin(
        run_args(
            &manifest,
            &refusing.base_url(),
            &results2,
            &["--collect", &out2.display().to_string()],
        ),
        vec![],
    )
    .await;
    ok(&o, 1);
    assert!(
        csv_rows(&results2)
            .iter()
            .all(|r| r["status"] == "submitted")
    );
    assert!(
        csv_rows(&out2.join("images.csv"))
            .iter()
            .all(|r| r["status"] == "refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_simulate_then_collect_simulate_meet() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "meet", 2, &[1]);
    let results = dir.path().join("results.csv");
    let out = dir.path().join("out");
    let o = run_bin(
        vec![
            "run".into(),
            manifest.display().to_string(),
            "--simulate".into(),
            "-o".into(),
            results.display().to_string(),
        ],
        vec![],
    )
    .await;
    ok(&o, 0);
    // Task ids describe themselves: a fresh in-process simulator answers for them.
    let o = run_bin(
        vec![
            "collect".into(),
            "--simulate".into(),
            "--results".into(),
            results.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--wait".into(),
            "--poll-interval".into(),
            "100ms".into(),
            "--timeout".into(),
            "30s".into(),
        ],
        vec![],
    )
    .await;
    ok(&o, 0);
    assert_eq!(csv_rows(&out.join("images.csv")).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_exit_2_and_a_refused_token_exits_3() {
    let sim = simulator(fast(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = dir.path().join("nope.csv");
    let o = run_bin(collect_args(&sim.base_url(), &missing, &out, &[]), vec![]).await;
    ok(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.csv` do not exist"));

    let manifest = txt2img_manifest(dir.path(), "auth", 2, &[1]);
    let results = dir.path().join("results.csv");
    submit(&manifest, &sim.base_url(), &results).await;
    let o = bin()
        .args(collect_args(&sim.base_url(), &results, &out, &[]))
        .output()
        .unwrap();
    ok(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("HIDREAM_API_TOKEN"));

    let o = run_bin(
        collect_args(&sim.base_url(), &results, &out, &[]),
        vec![("HIDREAM_API_TOKEN", "wrong-token".into())],
    )
    .await;
    ok(&o, 3);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(!stderr.contains(TOKEN));
    assert_eq!(sim.stats().calls.images, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_on_the_page_is_escaped() {
    let sim = simulator(fast(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("esc.yaml");
    std::fs::write(
        &manifest,
        "name: esc\njobs:\n  - id: j\n    kind: txt2img\n    prompt: \"a {thing} on a table\"\n    matrix:\n      thing: [\"<b>bold</b>\", \"fish & chips\"]\n    meta:\n      sku: \"<script>alert('x')</script>\"\n",
    )
    .unwrap();
    let results = dir.path().join("results.csv");
    let out = dir.path().join("out");
    submit(&manifest, &sim.base_url(), &results).await;
    let o = run_bin(collect_args(&sim.base_url(), &results, &out, &[]), vec![]).await;
    ok(&o, 0);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(!html.contains("<b>bold</b>") && !html.contains("<script"));
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(html.contains("fish &amp; chips"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    let row = elements(&html, "div", "data-layout=\"row\"");
    assert_eq!(row.len(), 1, "one variable is a labelled row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_downloads_are_retried_and_the_token_stays_with_the_api() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const RESULTS: &str = "/api-pub/gw/v3/image/txt2img/async/results";
    let server = MockServer::start().await;
    // The query: 429 with Retry-After, then 503, then the answer.
    Mock::given(method("GET"))
        .and(path(RESULTS))
        .and(query_param("task_id", "t-1"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RESULTS))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    let answer = serde_json::json!({"code": 0, "message": "Success", "result": {"task_id": "t-1",
        "sub_task_results": [
            {"sub_task_id": "t-1-0", "task_status": 1, "image": format!("{}/cdn/a", server.uri())},
            {"sub_task_id": "t-1-1", "task_status": 1004, "image": null}]}});
    Mock::given(method("GET"))
        .and(path(RESULTS))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;
    // The image: 500 once, then a JPEG (the extension comes from the content type).
    Mock::given(method("GET"))
        .and(path("/cdn/a"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/cdn/a"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "image/jpeg")
                .set_body_bytes(b"\xff\xd8\xff\xe0 not really a jpeg".to_vec()),
        )
        .expect(1)
        .mount(&server)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.csv");
    std::fs::write(
        &results,
        "request_id,job,kind,status,task_id,sub_task_ids,prompt,var.style\n\
         3f0c6a4e-0000-5000-8000-000000000001,hero,txt2img,submitted,t-1,t-1-0;t-1-1,a cat,ink\n\
         3f0c6a4e-0000-5000-8000-000000000002,hero,txt2img,rejected,,,a dog,ink\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let started = Instant::now();
    let o = run_bin(collect_args(&server.uri(), &results, &out, &[]), vec![]).await;
    ok(&o, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After is a floor"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("not collected: 1 request of the results without a task"),
        "{stdout}"
    );
    let rows = csv_rows(&out.join("images.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["status"], "done");
    assert_eq!(
        rows[0]["path"],
        "hero/3f0c6a4e-0000-5000-8000-000000000001-0.jpg"
    );
    assert_eq!(rows[0]["var.style"], "ink");
    assert_eq!(
        rows[1]["status"], "1004",
        "an unknown status is recorded as-is"
    );
    assert_eq!(rows[1]["path"], "");
    assert!(out.join(&rows[0]["path"]).exists());

    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests.iter().filter(|r| r.url.path() == RESULTS).count(),
        3
    );
    for r in &requests {
        let auth = r.headers.get("authorization").map(|v| v.to_str().unwrap());
        if r.url.path() == RESULTS {
            assert_eq!(auth, Some(format!("Bearer {TOKEN}").as_str()));
        } else {
            assert_eq!(auth, None, "the token never goes to an image host");
        }
    }
    // The unknown status is polled again; the downloaded image is not fetched again.
    let o = run_bin(collect_args(&server.uri(), &results, &out, &[]), vec![]).await;
    ok(&o, 1);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests.iter().filter(|r| r.url.path() == RESULTS).count(),
        4
    );
    assert_eq!(
        requests.iter().filter(|r| r.url.path() == "/cdn/a").count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_paced_by_the_poll_rate_per_endpoint() {
    let sim = simulator(fast(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "paced", 4, &[1]);
    let results = dir.path().join("results.csv");
    let out = dir.path().join("out");
    submit(&manifest, &sim.base_url(), &results).await;
    let mut args = collect_args(&sim.base_url(), &results, &out, &["--concurrency", "4"]);
    set_option(&mut args, "--poll-rate", "120"); // one query every 0.5 s
    let started = Instant::now();
    let o = run_bin(args, vec![]).await;
    ok(&o, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "4 queries at 120/min take at least 1.5 s: {:?}",
        started.elapsed()
    );
    assert_eq!(sim.stats().calls.results_txt2img, 4);
}

/// An image host that sends without end: the download stops at its bound and fails that image
/// (the run goes on, memory stays bounded); a description that looks like a formula is written
/// to images.csv as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_image_fails_that_image_and_a_formula_stays_text() {
    use std::io::{Read, Write};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    // The endless image host: chunked, 64 KiB a chunk, until the client hangs up.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image_url = format!("http://{}/endless.png", host.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in host.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let chunk = vec![b'x'; 64 << 10];
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                loop {
                    let ok = conn
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .and_then(|()| conn.write_all(&chunk))
                        .and_then(|()| conn.write_all(b"\r\n"));
                    if ok.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let server = MockServer::start().await;
    let answer = serde_json::json!({"code": 0, "message": "Success", "result": {"task_id": "t-1",
        "sub_task_results": [
            {"sub_task_id": "t-1-0", "task_status": 1, "image": image_url},
            {"sub_task_id": "t-1-1", "task_status": 3, "image": null,
             "description": "=HYPERLINK(\"http://x\")"}]}});
    Mock::given(method("GET"))
        .and(path("/api-pub/gw/v3/image/txt2img/async/results"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.csv");
    std::fs::write(
        &results,
        "request_id,job,kind,status,task_id,sub_task_ids\n\
         3f0c6a4e-0000-5000-8000-000000000001,hero,txt2img,submitted,t-1,t-1-0;t-1-1\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run_bin(collect_args(&server.uri(), &results, &out, &[]), vec![]).await;
    ok(&o, 1);
    let rows = csv_rows(&out.join("images.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["path"], "", "the endless image is not on disk");
    assert!(
        rows[0]["message"].contains("larger than"),
        "{:?}",
        rows[0]["message"]
    );
    assert_eq!(rows[1]["message"], "'=HYPERLINK(\"http://x\")");
}
