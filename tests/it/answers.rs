//! The answer corpus (`tests/fixtures/answers/`) served over loopback, whole path: each submission
//! answer to a `run`, each task-query answer to a `collect`, and the results read back against
//! `table.csv` (the same table the classifiers are checked against in `src/retry/corpus.rs`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{results, root, run_args, run_bin, txt2img_manifest};

fn corpus() -> PathBuf {
    root().join("tests/fixtures/answers")
}

/// The rows of `table.csv`: file, verdict, code, message.
fn table() -> Vec<[String; 4]> {
    let mut r = csv::Reader::from_path(corpus().join("table.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            [0, 1, 2, 3].map(|i| rec[i].to_string())
        })
        .collect()
}

/// A server that answers every POST and GET of the API with the raw answer `file` (`IMAGE_URL`
/// replaced by its own address), a `HEAD` with an empty 200, and `*.png` with a PNG.
/// Returns its address and the count of API calls (POSTs and GETs of the API).
fn serve(file: &str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let raw = std::fs::read_to_string(corpus().join(file)).unwrap();
    let (head, body) = raw.split_once("\n\n").unwrap();
    let body = body.replace("IMAGE_URL", &base);
    let answer = format!(
        "{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        head.replace('\n', "\r\n"),
        body.len()
    );
    let png = std::fs::read(root().join("manifests/images/shirt-01.png")).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&request).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let mut sent = vec![0u8; length];
            let _ = conn.read_exact(&mut sent);
            let line = head.lines().next().unwrap_or_default();
            let reply: Vec<u8> = if line.starts_with("HEAD ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            } else if line.contains(".png ") {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    png.len()
                )
                .into_bytes();
                r.extend_from_slice(&png);
                r
            } else {
                counted.fetch_add(1, Ordering::SeqCst);
                answer.clone().into_bytes()
            };
            let _ = conn.write_all(&reply);
        }
    });
    (base, calls)
}

/// The results status a submission verdict ends in, with one attempt allowed.
fn status_of(verdict: &str) -> &'static str {
    match verdict {
        "submitted" => "submitted",
        "rejected" => "rejected",
        "unknown" => "unknown",
        "retry" => "failed",
        other => panic!("no results status for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_submission_answer_of_the_corpus_ends_in_its_row() {
    for [file, verdict, code, message] in table() {
        if file.starts_with("query-") {
            continue;
        }
        let (base, calls) = serve(&file);
        let dir = tempfile::tempdir().unwrap();
        let manifest = txt2img_manifest(dir.path(), "corpus", 1, &[1]);
        let out = dir.path().join("r.csv");
        let o = run_bin(
            run_args(&manifest, &base, &out, &["--max-attempts", "1"]),
            vec![],
        )
        .await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{file}: one submission");
        if verdict == "unauthorized" {
            assert_eq!(o.status.code(), Some(3), "{file}: {stderr}");
            assert!(stderr.contains(&message), "{file}: {stderr}");
            continue;
        }
        let expected_exit = if verdict == "submitted" { 0 } else { 1 };
        assert_eq!(o.status.code(), Some(expected_exit), "{file}: {stderr}");
        let row = &results(&out)[0];
        assert_eq!(row["status"], status_of(&verdict), "{file}: {row:?}");
        if verdict == "rejected" {
            assert_eq!(
                row["code"], code,
                "{file}: the refusal's code is kept: {row:?}"
            );
        }
        match verdict.as_str() {
            "submitted" => assert_eq!(
                format!(
                    "{} [{}]",
                    row["task_id"],
                    row["sub_task_ids"].replace(';', ",")
                ),
                message,
                "{file}"
            ),
            _ => assert!(
                row["message"].contains(&message),
                "{file}: {:?} lacks {message:?}",
                row["message"]
            ),
        }
    }
}

/// A results file with one submitted text-to-image task, `t-1`.
fn one_task(dir: &Path) -> PathBuf {
    let results = dir.join("results.csv");
    std::fs::write(
        &results,
        "request_id,job,kind,status,task_id,sub_task_ids\n\
         3f0c6a4e-0000-5000-8000-000000000001,hero,txt2img,submitted,t-1,\n",
    )
    .unwrap();
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_answer_of_the_corpus_is_recorded_image_by_image() {
    for [file, verdict, _, message] in table() {
        if !file.starts_with("query-") {
            continue;
        }
        let (base, _) = serve(&file);
        let dir = tempfile::tempdir().unwrap();
        let results = one_task(dir.path());
        let out = dir.path().join("out");
        let args: Vec<String> = [
            "collect",
            "--base-url",
            &base,
            "--results",
            &results.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--rate",
            "0",
            "--backoff",
            "5ms",
            "--max-attempts",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = run_bin(args, vec![]).await;
        let stderr = String::from_utf8_lossy(&o.stderr);
        let rows = crate::common::results(&out.join("images.csv"));
        // Every image the answer names has its row: done ones downloaded, the rest with their
        // status and reason.
        let entries: Vec<&str> = if verdict == "answer" && !message.is_empty() {
            message.split(" | ").collect()
        } else {
            vec![]
        };
        let all_done = !entries.is_empty()
            && entries
                .iter()
                .all(|e| e.split(' ').nth(1) == Some("1") && !e.contains(" - -"));
        assert_eq!(
            o.status.code(),
            Some(if all_done { 0 } else { 1 }),
            "{file}: {stderr}"
        );
        for entry in &entries {
            let parts: Vec<&str> = entry.splitn(4, ' ').collect();
            let (id, status, image, reason) = (parts[0], parts[1], parts[2], parts[3]);
            let row = rows
                .iter()
                .find(|r| r["sub_task_id"] == id)
                .unwrap_or_else(|| panic!("{file}: no row for {id}: {rows:?}"));
            match (status, image) {
                ("1", "-") => assert!(row["message"].contains("no image URL"), "{file}: {row:?}"),
                ("1", _) => assert!(
                    !row["path"].is_empty() && out.join(&row["path"]).is_file(),
                    "{file}: the image is on disk: {row:?}"
                ),
                _ => assert!(row["path"].is_empty(), "{file}: {row:?}"),
            }
            if reason != "-" {
                assert_eq!(row["message"], reason, "{file}");
            }
        }
        if entries.is_empty() {
            assert!(
                rows.iter().all(|r| r["path"].is_empty()),
                "{file}: nothing downloaded: {rows:?}"
            );
        }
        assert!(
            !stderr.contains("panicked"),
            "{file}: a round never crashes: {stderr}"
        );
    }
}

/// Issue 18's case, whole: a server that refuses every request with `"result": {}` leaves every
/// row `rejected` with its code and message (exit 1), and `--retry-rejected` resends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_with_an_empty_result_are_rejected_and_resent_on_request() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
            {"code": 1999, "message": "积分不足", "request_id": "", "result": {}}
        )))
        .mount(&refusing)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "broke", 3, &[1, 2]);
    let out = dir.path().join("r.csv");
    let o = run_bin(run_args(&manifest, &refusing.uri(), &out, &[]), vec![]).await;
    crate::common::exits(&o, 1);
    let rows = results(&out);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(
            (
                row["status"].as_str(),
                row["code"].as_str(),
                row["message"].as_str()
            ),
            ("rejected", "1999", "积分不足"),
            "{row:?}"
        );
    }
    let accepting = crate::common::accepting_server().await;
    let o = run_bin(run_args(&manifest, &accepting.uri(), &out, &[]), vec![]).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "still not every request submitted"
    );
    assert_eq!(
        crate::common::submissions(&accepting).await.len(),
        0,
        "rejected rows are not resent without --retry-rejected"
    );
    let o = run_bin(
        run_args(&manifest, &accepting.uri(), &out, &["--retry-rejected"]),
        vec![],
    )
    .await;
    crate::common::exits(&o, 0);
    assert_eq!(crate::common::submissions(&accepting).await.len(), 3);
    assert!(results(&out).iter().all(|r| r["status"] == "submitted"));
}

/// `simulate --refusal-result`: the simulator writes "no result" each way, and every way is read
/// as the same refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_writes_its_refusals_each_way() {
    use hidream_batch::sim::RefusalResult;
    for (shape, written) in [
        (RefusalResult::Null, Some(serde_json::Value::Null)),
        (RefusalResult::Empty, Some(serde_json::json!({}))),
        (RefusalResult::Absent, None),
    ] {
        let sim = crate::common::simulator(hidream_batch::sim::SimConfig {
            refusal_result: shape,
            ..crate::common::quiet()
        })
        .await;
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!(
                "{}/api-pub/gw/v3/image/txt2img/async",
                sim.base_url()
            ))
            .bearer_auth(crate::common::TOKEN)
            .json(&serde_json::json!({"prompt": "a cat", "img_count": 9}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(answer["code"], 0, "{answer}");
        assert_eq!(
            answer.get("result").cloned(),
            written,
            "{shape:?}: {answer}"
        );
    }
}
