//! A hostile or broken server (issue 14, points 5 and 6): ids that look like formulas, ids with
//! control characters, a body that drips forever, a `Retry-After` of days or a year, and escape
//! sequences in the API's messages. Each is met over loopback by `run`, `collect`, or both.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

const TXT2IMG: &str = "/api-pub/gw/v3/image/txt2img/async";
const RESULTS: &str = "/api-pub/gw/v3/image/txt2img/async/results";
/// A request id for results files written by hand.
const REQUEST: &str = "3f0c6a4e-0000-5000-8000-000000000001";

/// Arguments of `collect` against `base`, reading `results` and writing `out`; quick retries.
fn collect_args(base: &str, results: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "collect",
        "--base-url",
        base,
        "--results",
        &results.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--rate",
        "0",
        "--backoff",
        "5ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A results file with one submitted text-to-image task.
fn one_task(dir: &Path, task: &str, subs: &str) -> std::path::PathBuf {
    let results = dir.join("results.csv");
    std::fs::write(
        &results,
        format!(
            "request_id,job,kind,status,task_id,sub_task_ids\n{REQUEST},hero,txt2img,submitted,{task},{subs}\n"
        ),
    )
    .unwrap();
    results
}

/// Run the binary, killing it if it has not ended within 60 s: a hang detector, not a
/// measurement (a hang would otherwise keep the test from ever finishing).
async fn bounded(args: Vec<String>) -> Output {
    let child = spawn(&args);
    let pid = child.id();
    match tokio::time::timeout(Duration::from_secs(60), wait(child)).await {
        Ok(output) => output,
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("`hidream-batch {}` did not end within 60 s", args[0]);
        }
    }
}

fn code_and_stderr(o: &Output) -> (Option<i32>, String) {
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Whether `bytes` hold a control character other than a line end (an escape sequence, a bell).
fn has_raw_control(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .any(|b| (*b < 0x20 && !matches!(b, b'\n' | b'\r')) || *b == 0x7f)
}

/// The task ids the received queries asked for, decoded.
async fn queried_tasks(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == RESULTS)
        .map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "task_id")
                .map(|(_, v)| v.into_owned())
                .expect("a task_id in the query")
        })
        .collect()
}

/// A task id that a spreadsheet would run is written with a `'` before it, and read back as the
/// API sent it: `collect` asks for the original id, and a second `run` sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formula_task_id_is_escaped_in_the_csvs_and_read_back_as_sent() {
    const TASK: &str = "=cmd|' /C calc'!A0";
    const SUB: &str = "+sub-0";
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
            {"code": 0, "message": "Success", "result": {"task_id": TASK, "sub_task_ids": [SUB]}}
        )))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RESULTS))
        .and(query_param("task_id", TASK))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
            {"code": 0, "message": "Success", "result": {"task_id": TASK,
             "sub_task_results": [{"sub_task_id": SUB, "task_status": 3, "description": "nsfw"}]}}
        )))
        .mount(&server)
        .await;
    let (dir, manifest, out) = txt2img_scratch("formula-id", 1, &[1]);
    let o = bounded(run_args(&manifest, &server.uri(), &out, &[])).await;
    assert_eq!(code_and_stderr(&o).0, Some(0), "{}", code_and_stderr(&o).1);
    let row = &results(&out)[0];
    assert_eq!(row["task_id"], format!("'{TASK}"));
    assert_eq!(row["sub_task_ids"], format!("'{SUB}"));

    // `collect` asks for the task as the API named it; the failed image is the sub-task
    // submitted (one row). A second `collect` reads images.csv back: the image is settled under
    // its own ids, so nothing is asked again.
    let images = dir.path().join("images");
    for _ in 1..=2 {
        let o = bounded(collect_args(&server.uri(), &out, &images, &[])).await;
        let (code, stderr) = code_and_stderr(&o);
        assert_eq!(code, Some(1), "a failed image\n{stderr}");
        assert_eq!(queried_tasks(&server).await, [TASK]);
        let rows = results(&images.join("images.csv"));
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["task_id"], format!("'{TASK}"));
        assert_eq!(rows[0]["sub_task_id"], format!("'{SUB}"));
        assert_eq!(rows[0]["status"], "failed");
    }

    // Resume: the request is submitted; nothing more is sent, and its cells are as they were.
    let o = bounded(run_args(&manifest, &server.uri(), &out, &[])).await;
    assert_eq!(code_and_stderr(&o).0, Some(0), "{}", code_and_stderr(&o).1);
    assert_eq!(submissions(&server).await.len(), 1);
    assert_eq!(results(&out)[0]["task_id"], format!("'{TASK}"));

    // A crash cut the row short after its ids while its request was in the write-ahead log: the
    // next run recovers the ids themselves (escaped once, not twice) and sends nothing.
    let text = std::fs::read_to_string(&out).unwrap();
    let cut = text.find(&format!(",'{SUB},")).unwrap() + SUB.len() + 4;
    std::fs::write(&out, &text[..cut]).unwrap();
    let at = &results_row_time(&text);
    std::fs::write(
        sibling(&out, "wal"),
        format!(
            "sent {} 1 {at} {at} api txt2img j0\n",
            expanded_ids(&[&manifest.display().to_string()])[0]
        ),
    )
    .unwrap();
    let o = bounded(run_args(&manifest, &server.uri(), &out, &[])).await;
    let (code, stderr) = code_and_stderr(&o);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(submissions(&server).await.len(), 1);
    let row = &results(&out)[0];
    assert_eq!(row["status"], "submitted", "{row:?}");
    assert_eq!(row["task_id"], format!("'{TASK}"));
    assert_eq!(row["sub_task_ids"], format!("'{SUB}"));
}

/// The `submitted_at` of the one row of a results text.
fn results_row_time(text: &str) -> String {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let col = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "submitted_at")
        .unwrap();
    r.records().next().unwrap().unwrap()[col].to_string()
}

/// A success whose task id holds control characters cannot be recorded as sent: it is `unknown`
/// (the task may exist), named escaped, and the results and the terminal get no raw control byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_id_with_control_characters_is_unknown_and_shown_escaped() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
            {"code": 0, "message": "Success",
             "result": {"task_id": "t-1\n\u{1b}[2J\u{7}", "sub_task_ids": ["t-1-0"]}}
        )))
        .expect(1)
        .mount(&server)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("control-id", 1, &[1]);
    let o = bounded(run_args(&manifest, &server.uri(), &out, &[])).await;
    let (code, stderr) = code_and_stderr(&o);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!has_raw_control(&o.stderr), "{stderr:?}");
    assert!(stderr.contains(r"t-1\n\u{1b}[2J\u{7}"), "{stderr}");
    let text = std::fs::read(&out).unwrap();
    assert!(!has_raw_control(&text));
    let rows = results(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "unknown", "{:?}", rows[0]);
    assert_eq!(rows[0]["task_id"], "");
    assert!(
        rows[0]["message"].contains("cannot be recorded"),
        "{:?}",
        rows[0]
    );
    assert!(
        rows[0]["message"].contains(r"`t-1\n\u{1b}[2J\u{7}`"),
        "{:?}",
        rows[0]
    );
    // Unknown: not sent again without --retry-unknown.
    let o = bounded(run_args(&manifest, &server.uri(), &out, &[])).await;
    assert_eq!(code_and_stderr(&o).0, Some(1));
    assert_eq!(submissions(&server).await.len(), 1);
}

/// A listener on loopback, its origin, and a counter shared with the server's thread.
fn test_server() -> (std::net::TcpListener, String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    (listener, origin, Arc::new(AtomicUsize::new(0)))
}

/// A request's head, read byte by byte up to its blank line (or the end of the connection).
fn read_head(conn: &mut std::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    head
}

/// A server on a std thread that answers `HEAD` (the check a run makes first) at once, and any
/// other request with its headers and then one byte of body every 50 ms, without end, until the
/// client hangs up. Returns its origin and how many body bytes it has sent.
fn dripping_server() -> (String, Arc<AtomicUsize>) {
    let (listener, origin, dripped) = test_server();
    let count = dripped.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let count = count.clone();
            std::thread::spawn(move || {
                let head = read_head(&mut conn);
                if head.starts_with(b"HEAD ") {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                }
                let headers = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if conn.write_all(headers).is_err() {
                    return;
                }
                // The pace of the drip, not a synchronisation: the client's timeout ends it.
                while conn.write_all(b"1\r\n \r\n").is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    (origin, dripped)
}

/// A server on a std thread that answers each request as keep-alive (no `Connection: close`)
/// and then closes the connection anyway, as servers do when their keep-alive ends. Returns its
/// origin and how many submissions it has answered.
fn one_answer_per_connection_server() -> (String, Arc<AtomicUsize>) {
    let (listener, origin, posts) = test_server();
    let count = posts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let head = read_head(&mut conn);
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let mut body = vec![0u8; length];
            let _ = conn.read_exact(&mut body);
            let answer = if text.starts_with("head ") {
                String::new()
            } else {
                let n = count.fetch_add(1, Ordering::SeqCst);
                format!(
                    "{{\"code\": 0, \"message\": \"ok\", \"result\": {{\"task_id\": \"t-{n}\", \"sub_task_ids\": [\"t-{n}-0\"]}}}}"
                )
            };
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                )
                .as_bytes(),
            );
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    });
    (origin, posts)
}

/// Connections are pooled, but one the server closed after its answer is not used again: each
/// submission goes on a new connection, none is lost or `unknown`, none is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_closed_after_answering_is_not_reused() {
    let (origin, posts) = one_answer_per_connection_server();
    let (_dir, manifest, out) = txt2img_scratch("closing", 6, &[1]);
    let extra = ["--concurrency", "1", "--max-attempts", "1"];
    let o = bounded(run_args(&manifest, &origin, &out, &extra)).await;
    let (code, stderr) = code_and_stderr(&o);
    assert_eq!(code, Some(0), "{stderr}");
    all_submitted(&out, 6);
    assert_eq!(posts.load(Ordering::SeqCst), 6, "each sent once");
}

/// A submission answered with headers and a body that never ends is cut off by `--timeout`: the
/// request was received, so it is `unknown`, and the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_answer_that_drips_forever_is_cut_off_and_unknown() {
    let (origin, dripped) = dripping_server();
    let (_dir, manifest, out) = txt2img_scratch("drip", 1, &[1]);
    let extra = ["--timeout", "500ms", "--max-attempts", "1"];
    let o = bounded(run_args(&manifest, &origin, &out, &extra)).await;
    let (code, stderr) = code_and_stderr(&o);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        dripped.load(Ordering::Relaxed) >= 2,
        "the body had begun when the timeout cut it"
    );
    let row = &results(&out)[0];
    assert_eq!(row["status"], "unknown", "{row:?}");
    assert!(row["message"].contains("timed out"), "{row:?}");
    assert_eq!(row["task_id"], "");
}

/// A task query answered with a body that never ends is cut off by `--request-timeout`: the
/// task stays unanswered (pending), and `collect` ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answer_that_drips_forever_is_cut_off_and_the_task_stays_pending() {
    let (origin, dripped) = dripping_server();
    let dir = tempfile::tempdir().unwrap();
    let results_csv = one_task(dir.path(), "t-1", "t-1-0");
    let out = dir.path().join("out");
    let extra = ["--request-timeout", "500ms", "--max-attempts", "2"];
    let o = bounded(collect_args(&origin, &results_csv, &out, &extra)).await;
    let (code, stderr) = code_and_stderr(&o);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(dripped.load(Ordering::Relaxed) >= 2);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("1 pending"), "{stdout}");
    let rows = results(&out.join("images.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["status"], "unknown",
        "never answered: {:?}",
        rows[0]
    );
    assert!(
        rows[0]["message"].contains("after 2 attempts") && rows[0]["message"].contains("timed out"),
        "{:?}",
        rows[0]
    );
}

/// A server asking `collect` to wait eleven days (`Retry-After: 999999`) waits at most
/// `--backoff-max`, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_caps_a_retry_after_of_days_at_backoff_max_and_says_so() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(RESULTS))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "999999"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    let answer = serde_json::json!({"code": 0, "message": "Success", "result": {"task_id": "t-1",
        "sub_task_results": [
            {"sub_task_id": "t-1-0", "task_status": 1, "image": format!("{}/cdn/a", server.uri())}]}});
    Mock::given(method("GET"))
        .and(path(RESULTS))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/cdn/a"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "image/png")
                .set_body_bytes(b"\x89PNG\r\n\x1a\n not really a png".to_vec()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let results_csv = one_task(dir.path(), "t-1", "t-1-0");
    let out = dir.path().join("out");
    let extra = ["--backoff-max", "200ms", "--request-timeout", "5s"];
    let o = bounded(collect_args(&server.uri(), &results_csv, &out, &extra)).await;
    let (code, stderr) = code_and_stderr(&o);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("the API asked to wait 11days")
            && stderr.contains("waiting at most --backoff-max 200ms"),
        "{stderr}"
    );
    assert_eq!(queried_tasks(&server).await.len(), 2);
    let rows = results(&out.join("images.csv"));
    assert_eq!(rows[0]["status"], "done");
    assert!(out.join(&rows[0]["path"]).exists(), "{:?}", rows[0]);
}

/// A `Retry-After` given as an HTTP date a year ahead is capped at `--backoff-max` by `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_caps_a_retry_after_date_a_year_ahead_at_backoff_max() {
    let next_year = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", httpdate::fmt_http_date(next_year).as_str()),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
            {"code": 0, "message": "Success", "result": {"task_id": "t-1", "sub_task_ids": ["t-1-0"]}}
        )))
        .expect(1)
        .mount(&server)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("ra-date", 1, &[1]);
    let extra = ["--backoff-max", "200ms", "--timeout", "5s"];
    let o = bounded(run_args(&manifest, &server.uri(), &out, &extra)).await;
    let (code, stderr) = code_and_stderr(&o);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("waiting at most --backoff-max 200ms"),
        "{stderr}"
    );
    // Said in whole seconds (a date's wait is measured from now, to the nanosecond).
    let asked = stderr
        .split("the API asked to wait ")
        .nth(1)
        .and_then(|s| {
            s.split(" (Retry-After); waiting at most --backoff-max 200ms")
                .next()
        })
        .unwrap_or_else(|| panic!("the cap is said: {stderr}"));
    assert!(asked.starts_with("11months 30days"), "{asked}");
    assert!(asked.ends_with('s') && !asked.ends_with("ms"), "{asked}");
    assert!(!asked.contains("us") && !asked.contains("ns"), "{asked}");
    let row = &results(&out)[0];
    assert_eq!(
        (row["attempts"].as_str(), row["task_id"].as_str()),
        ("2", "t-1")
    );
}

/// Colours, a window title and a bell, as an API message would carry them.
const ESCAPES: &str = "\u{1b}[31mRED\u{1b}]0;title\u{7}";
/// [`ESCAPES`] as hidream-batch shows it (`crate::logging::safe`).
const ESCAPED: &str = r"\u{1b}[31mRED\u{1b}]0;title\u{7}";

/// A rejection whose message holds escape sequences reaches the terminal and the results escaped,
/// at every verbosity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_in_a_rejection_reach_the_terminal_and_the_results_escaped() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TXT2IMG))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"code": 1001, "message": ESCAPES})),
        )
        .expect(3)
        .mount(&server)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("escapes", 1, &[1]);
    for verbosity in [None, Some("-v"), Some("-vv")] {
        let mut args = run_args(&manifest, &server.uri(), &out, &["--retry-rejected"]);
        args.splice(0..0, verbosity.map(String::from));
        let o = bounded(args).await;
        let (code, stderr) = code_and_stderr(&o);
        assert_eq!(code, Some(1), "{verbosity:?}: {stderr}");
        assert!(!has_raw_control(&o.stderr), "{verbosity:?}: {stderr:?}");
        assert!(stderr.contains(ESCAPED), "{verbosity:?}: {stderr}");
        assert!(!has_raw_control(&std::fs::read(&out).unwrap()));
        let row = &results(&out)[0];
        assert_eq!(row["status"], "rejected");
        assert_eq!(row["message"], ESCAPED);
    }
}

/// A failed image's description, a sub-task id and an image URL holding escape sequences reach
/// the terminal, images.csv and the page escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_in_a_query_answer_reach_the_terminal_and_images_csv_escaped() {
    let server = MockServer::start().await;
    let answer = serde_json::json!({"code": 0, "message": "Success", "result": {"task_id": "t-1",
        "sub_task_results": [
            {"sub_task_id": "t-1-0", "task_status": 3, "description": ESCAPES},
            {"sub_task_id": format!("t-1-1{ESCAPES}"), "task_status": 4, "description": "x",
             "image": format!("http://x/{ESCAPES}")}]}});
    Mock::given(method("GET"))
        .and(path(RESULTS))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(2)
        .mount(&server)
        .await;
    for verbosity in [None, Some("-v")] {
        let dir = tempfile::tempdir().unwrap();
        let results_csv = one_task(dir.path(), "t-1", "t-1-0");
        let out = dir.path().join("out");
        let mut args = collect_args(&server.uri(), &results_csv, &out, &[]);
        args.splice(0..0, verbosity.map(String::from));
        let o = bounded(args).await;
        let (code, stderr) = code_and_stderr(&o);
        assert_eq!(code, Some(1), "{verbosity:?}: {stderr}");
        assert!(!has_raw_control(&o.stderr), "{verbosity:?}: {stderr:?}");
        assert!(stderr.contains(ESCAPED), "{verbosity:?}: {stderr}");
        let images = out.join("images.csv");
        assert!(!has_raw_control(&std::fs::read(&images).unwrap()));
        let rows = results(&images);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0]["message"], ESCAPED);
        assert_eq!(rows[1]["sub_task_id"], format!("t-1-1{ESCAPED}"));
        assert_eq!(rows[1]["url"], format!("http://x/{ESCAPED}"));
        let html = std::fs::read(out.join("index.html")).unwrap();
        assert!(!has_raw_control(&html));
    }
}
