//! The journal's invariants, each broken on purpose (see `src/journal/mod.rs`): a second signal,
//! a kill followed by a dry run, another manifest, another shard and a start-up that stops early;
//! the order of writes and syncs against the request's first byte (under strace); answers that
//! prove no task was created; results files re-saved by a spreadsheet; `merge`; the lock through
//! links; descriptive columns from the current manifest.

use std::path::Path;
use std::process::Command;

use hidream_batch::sim::SimConfig;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_leaves_what_was_in_flight_to_the_next_run_which_records_it_unknown() {
    // Answers take 3 s: the requests are in flight when the signals come.
    let sim = simulator(SimConfig {
        latency: "3s".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (_dir, manifest, out) = txt2img_scratch("twice", 6, &[1]);
    let args = run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "2"]);
    let run = Watched::start(&args);
    until("two tasks created", || sim.stats().accepted >= 2).await;
    signal(&run.child, "-INT");
    until("the first signal handled", || {
        run.stderr().contains("interrupted: no new requests")
    })
    .await;
    signal(&run.child, "-INT");
    let (code, stderr) = run.finish().await;
    assert_eq!(code, Some(130), "{stderr}");
    let abandoned = open_entries(&out);
    assert_eq!(abandoned.len(), 2, "the log keeps what was in flight");
    for id in &abandoned {
        assert!(stderr.contains(id.as_str()), "named: {id}\n{stderr}");
    }
    // The next run records them `unknown`, names them, and never sends them again.
    let next = run_bin(
        run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "4"]),
        vec![],
    )
    .await;
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert_eq!(next.status.code(), Some(1), "{stderr}");
    for id in &abandoned {
        assert!(
            stderr.contains(&format!("request {id}")) && stderr.contains("was in flight"),
            "{stderr}"
        );
    }
    let rows = results(&out);
    assert_eq!(rows.len(), 6);
    for r in &rows {
        let expected = if abandoned.contains(&r["request_id"]) {
            "unknown"
        } else {
            "submitted"
        };
        assert_eq!(r["status"], expected, "{r:?}");
    }
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.duplicates), (6, 0));
    assert!(open_entries(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_nothing_but_a_row_on_disk_settles_what_was_in_flight() {
    let sim = simulator(SimConfig {
        latency: "1s".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (dir, catalog, out) = txt2img_scratch("catalog", 6, &[1]);
    let other = txt2img_manifest(dir.path(), "other", 3, &[2]);
    std::fs::write(
        &other,
        text(&other).replace("prompt number", "another prompt"),
    )
    .unwrap();
    let args = |manifest: &Path, extra: &[&str]| {
        let mut a = vec!["--concurrency", "4"];
        a.extend_from_slice(extra);
        run_args(manifest, &sim.base_url(), &out, &a)
    };
    let child = spawn(&run_args(
        &catalog,
        &sim.base_url(),
        &out,
        &["--concurrency", "2"],
    ));
    until("two tasks created", || sim.stats().accepted >= 2).await;
    signal(&child, "-KILL");
    wait(child).await;
    let in_flight = open_entries(&out);
    assert_eq!(in_flight.len(), 2);
    let (wal, rows) = (text(&sibling(&out, "wal")), text(&out));

    // A dry run reads and writes nothing.
    let dry = run_bin(args(&catalog, &["--dry-run"]), vec![]).await;
    assert_eq!(dry.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("2 unknown (skipped)"));
    assert!(String::from_utf8_lossy(&dry.stderr).contains("will be recorded `unknown`"));
    // A start-up that stops before sending changes nothing either.
    let stopped = run_bin(args(&catalog, &["--max-images", "0"]), vec![]).await;
    assert_eq!(stopped.status.code(), Some(2));
    assert_eq!((text(&sibling(&out, "wal")), text(&out)), (wal, rows));

    // Another manifest on the same results settles them with rows, and names them.
    let o = run_bin(args(&other, &[]), vec![]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    for id in &in_flight {
        assert!(stderr.contains(id.as_str()), "{stderr}");
    }
    let unknown: Vec<String> = results(&out)
        .into_iter()
        .filter(|r| r["status"] == "unknown")
        .map(|r| r["request_id"].clone())
        .collect();
    assert_eq!(unknown.len(), 2);
    assert!(open_entries(&out).is_empty());

    // Half the catalogue, then all of it: what was in flight is never sent again.
    let half = run_bin(args(&catalog, &["--shard", "1/2"]), vec![]).await;
    assert!(matches!(half.status.code(), Some(0 | 1)));
    let all = run_bin(args(&catalog, &[]), vec![]).await;
    assert_eq!(all.status.code(), Some(1), "two unknown");
    let rows = results(&out);
    assert_eq!(rows.len(), 9);
    assert_eq!(rows.iter().filter(|r| r["status"] == "unknown").count(), 2);
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.duplicates), (9, 0));
}

/// Every write and sync of one run, in order, from strace.
#[derive(Debug)]
enum Event {
    /// A write to the write-ahead log, and its text.
    Wal(String),
    WalSync,
    /// A row written to the results file.
    Results(String),
    ResultsSync,
    /// Bytes written to a socket (fd, text).
    Socket(String, String),
}

fn trace_events(trace: &str) -> Vec<Event> {
    let mut events = Vec::new();
    // Syncs that another thread's call interrupted in the trace: they count when they return.
    let mut pending: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in trace.lines() {
        // `PID name(fd</path>, ...) = n`, or split in `<unfinished ...>` and `<... name resumed>`.
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            if (resumed.starts_with("fdatasync ") || resumed.starts_with("fsync "))
                && let Some(call) = pending.remove(pid)
            {
                push_sync(&mut events, call);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        match name {
            "fdatasync" | "fsync" if rest.ends_with("<unfinished ...>") => {
                pending.insert(pid, args);
            }
            "fdatasync" | "fsync" => push_sync(&mut events, args),
            "write" | "writev" | "sendto" | "sendmsg" => {
                let fd = args.split('>').next().unwrap_or("").to_string();
                if fd.ends_with(".wal") {
                    events.push(Event::Wal(args.to_string()));
                } else if fd.ends_with("/r.csv") {
                    events.push(Event::Results(args.to_string()));
                } else if fd.contains("socket:") || fd.contains("TCP") {
                    events.push(Event::Socket(fd, args.to_string()));
                }
            }
            _ => {}
        }
    }
    events
}

fn push_sync(events: &mut Vec<Event>, args: &str) {
    let fd = args.split('>').next().unwrap_or("");
    if fd.ends_with(".wal") {
        events.push(Event::WalSync);
    } else if fd.ends_with("/r.csv") {
        events.push(Event::ResultsSync);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_leaves_only_after_its_log_line_is_synced_and_is_settled_only_after_its_row_is() {
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "this test needs strace (apt-get install strace)"
    );
    let sim = simulator(quiet()).await;
    let (dir, manifest, out) = txt2img_scratch("durable", 6, &[1]);
    let trace = dir.path().join("trace.txt");
    let mut args = run_args(&manifest, &sim.base_url(), &out, &["--concurrency", "3"]);
    args.insert(
        0,
        assert_cmd::cargo::cargo_bin("hidream-batch")
            .display()
            .to_string(),
    );
    let o = tokio::task::spawn_blocking(move || {
        Command::new("strace")
            .args(["-f", "-qq", "-s", "65536", "-y", "-o"])
            .arg(&trace)
            .args(["-e", "trace=write,writev,sendto,sendmsg,fdatasync,fsync"])
            .args(&args)
            .current_dir(root())
            .env("HIDREAM_API_TOKEN", TOKEN)
            .output()
            .map(|o| (o, std::fs::read_to_string(&trace).unwrap_or_default()))
            .unwrap()
    })
    .await
    .unwrap();
    let (output, trace) = o;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events = trace_events(&trace);
    let ids = expanded_ids(&[manifest.to_str().unwrap()]);
    assert_eq!(ids.len(), 6);
    for id in &ids {
        let sent = events
            .iter()
            .position(|e| matches!(e, Event::Wal(t) if t.contains(&format!("sent {id} "))))
            .unwrap_or_else(|| panic!("no sent line for {id}"));
        let synced = events[sent..]
            .iter()
            .position(|e| matches!(e, Event::WalSync))
            .map(|i| sent + i)
            .unwrap_or_else(|| panic!("the sent line of {id} was never synced"));
        let body = events
            .iter()
            .position(|e| matches!(e, Event::Socket(_, t) if t.contains(id.as_str())))
            .unwrap_or_else(|| panic!("{id} never left"));
        // The request starts with its last `POST` on the same connection.
        let Event::Socket(fd, _) = &events[body] else {
            unreachable!()
        };
        let start = (0..=body)
            .rev()
            .find(|&i| matches!(&events[i], Event::Socket(f, t) if f == fd && t.contains("POST ")))
            .expect("a request line");
        assert!(
            synced < start,
            "{id}: its first byte left (event {start}) before its log line was synced (event {synced})"
        );
        let row = events
            .iter()
            .position(|e| matches!(e, Event::Results(t) if t.contains(id.as_str())))
            .unwrap_or_else(|| panic!("no row for {id}"));
        let done = events
            .iter()
            .position(|e| matches!(e, Event::Wal(t) if t.contains(&format!("done {id}"))))
            .unwrap_or_else(|| panic!("{id} was never settled"));
        assert!(
            events[row..done]
                .iter()
                .any(|e| matches!(e, Event::ResultsSync)),
            "{id}: settled (event {done}) before its row (event {row}) was synced"
        );
    }
    assert_eq!(sim.stats().accepted, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_backoff_after_an_answer_without_a_task_leaves_the_request_failed() {
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("overloaded"))
        .mount(&failing)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("noted", 1, &[1]);
    let mut args = run_args(&manifest, &failing.uri(), &out, &[]);
    set_option(&mut args, "--backoff", "60s");
    args.extend(["--backoff-max".into(), "60s".into()]);
    let child = spawn(&args);
    until_async("the first attempt answered", || async {
        !submissions(&failing).await.is_empty()
    })
    .await;
    // The answer is in; the run waits for its backoff. Wait until it noted it, then kill it.
    until("the answer noted", || {
        text(&sibling(&out, "wal")).contains(" 1 500\n")
    })
    .await;
    signal(&child, "-KILL");
    wait(child).await;
    // No task exists: the next run records it `failed` and sends it again.
    let server = accepting_server().await;
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("answered with no task"), "{stderr}");
    assert_eq!(submissions(&server).await.len(), 1, "sent again");
    assert_eq!(results(&out)[0]["status"], "submitted");

    // A gateway timeout may have created the task: `unknown`, never retried without the flag.
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(504))
        .mount(&gateway)
        .await;
    let (_dir, manifest, out) = txt2img_scratch("gateway", 1, &[1]);
    let o = run_bin(run_args(&manifest, &gateway.uri(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(submissions(&gateway).await.len(), 1);
    let row = &results(&out)[0];
    assert_eq!(
        (row["status"].as_str(), row["http_status"].as_str()),
        ("unknown", "504")
    );
}

/// A results file written by a run, then edited by `edit` (the new bytes, and a write-ahead log
/// to put beside them); the next run's exit code, stderr, the submissions it made, and the file
/// after it.
async fn rerun_after_edit(
    name: &str,
    edit: impl FnOnce(&str) -> (Vec<u8>, Option<String>),
) -> (Option<i32>, String, usize, String) {
    let first = accepting_server().await;
    let (_dir, manifest, out) = txt2img_scratch(name, 3, &[1]);
    let o = run_bin(run_args(&manifest, &first.uri(), &out, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(0));
    let (edited, wal) = edit(&text(&out));
    std::fs::write(&out, &edited).unwrap();
    if let Some(wal) = wal {
        std::fs::write(sibling(&out, "wal"), wal).unwrap();
    }
    let second = accepting_server().await;
    let o = run_bin(run_args(&manifest, &second.uri(), &out, &[]), vec![]).await;
    let after = std::fs::read(&out).unwrap();
    if o.status.code() == Some(3) {
        assert_eq!(after, edited, "an unreadable file is left as it is");
    }
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        submissions(&second).await.len(),
        String::from_utf8_lossy(&after).into_owned(),
    )
}

/// The byte offset where the last row of a results file starts.
fn last_row(t: &str) -> usize {
    t.trim_end().rfind('\n').unwrap() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_file_that_cannot_be_read_completely_stops_the_run_before_anything_is_sent() {
    // Re-saved in another encoding: an accented prompt in Latin-1.
    let (code, stderr, sent, _) = rerun_after_edit("latin1", |t| {
        let mut bytes = t
            .replacen("prompt number 1", "cafe number 1", 1)
            .into_bytes();
        let at = bytes.windows(4).position(|w| w == b"cafe").unwrap() + 3;
        bytes[at] = 0xe9; // é in Latin-1
        (bytes, None)
    })
    .await;
    assert_eq!((code, sent), (Some(3), 0), "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("UTF-8"),
        "{stderr}"
    );
    assert!(
        stderr.contains("restore the file"),
        "how to restore it: {stderr}"
    );
    // A comma typed into a cell.
    let (code, stderr, sent, _) = rerun_after_edit("comma", |t| {
        (
            t.replacen("prompt number 2", "prompt, number 2", 1)
                .into_bytes(),
            None,
        )
    })
    .await;
    assert_eq!((code, sent), (Some(3), 0), "{stderr}");
    assert!(
        stderr.contains("line 4") && stderr.contains("fields"),
        "{stderr}"
    );
    // A status nobody wrote.
    let (code, stderr, sent, _) = rerun_after_edit("status", |t| {
        (t.replacen(",submitted,", ",done,", 1).into_bytes(), None)
    })
    .await;
    assert_eq!((code, sent), (Some(3), 0), "{stderr}");
    assert!(stderr.contains("status `done`"), "{stderr}");
    // A column deleted.
    let (code, stderr, sent, _) = rerun_after_edit("column", |t| {
        let without_task_id = t
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(',').collect();
                f.remove(4);
                f.join(",") + "\n"
            })
            .collect::<String>();
        (without_task_id.into_bytes(), None)
    })
    .await;
    assert_eq!((code, sent), (Some(3), 0), "{stderr}");
    assert!(stderr.contains("lacks the column `task_id`"), "{stderr}");
    // A last row cut short, which no write-ahead entry explains.
    let (code, stderr, sent, _) = rerun_after_edit("torn", |t| {
        (t.as_bytes()[..last_row(t) + 60].to_vec(), None)
    })
    .await;
    assert_eq!((code, sent), (Some(3), 0), "{stderr}");
    assert!(
        stderr.contains("line 4") && stderr.contains("incomplete"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_spreadsheet_changes_harmlessly_is_read_and_kept() {
    // Statuses capitalised, a notes column added, Windows line ends: nothing to send again.
    let (code, stderr, sent, after) = rerun_after_edit("excel", |t| {
        let resaved: String = t
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let l = l.replace(",submitted,", ",Submitted,");
                let note = if i == 0 { "notes" } else { "checked by Ana" };
                format!("{l},{note}\r\n")
            })
            .collect();
        (resaved.into_bytes(), None)
    })
    .await;
    assert_eq!((code, sent), (Some(0), 0), "{stderr}");
    assert_eq!(after.matches("checked by Ana").count(), 3, "{after}");
    // A last row cut short while the write-ahead log holds its request: in flight when the run
    // died, so `unknown`, and not sent again.
    let (code, stderr, sent, after) = rerun_after_edit("held", |t| {
        let start = last_row(t);
        let id = &t[start..start + 36];
        let wal = format!(
            "sent {id} 1 2026-12-01T00:00:00.000Z 2026-12-01T00:00:00.000Z api txt2img j2\n"
        );
        (t.as_bytes()[..start + 60].to_vec(), Some(wal))
    })
    .await;
    assert_eq!((code, sent), (Some(1), 0), "{stderr}");
    assert_eq!(after.matches(",unknown,").count(), 1, "{after}");
    assert!(stderr.contains("was in flight"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_never_drops_a_task_id() {
    let dir = tempfile::tempdir().unwrap();
    let id = "6b1f3c1e-9a4d-5e2b-8c7f-0d1a2b3c4d5e";
    // Submitted on the 21st; a later run (another shard file) recorded it failed.
    write_results(
        &dir.path().join("a.csv"),
        &[format!(
            "{id},j,txt2img,submitted,task-a,,1,200,0,,2026-11-21T01:00:00Z,5"
        )],
    );
    write_results(
        &dir.path().join("b.csv"),
        &[format!(
            "{id},j,txt2img,failed,,,5,500,,HTTP 500,2026-11-22T01:00:00Z,5"
        )],
    );
    let out = dir.path().join("m.csv");
    let merge = |files: &[&str]| {
        let mut args = vec!["merge".to_string()];
        args.extend(
            files
                .iter()
                .map(|f| dir.path().join(f).display().to_string()),
        );
        args.extend(["-o".into(), out.display().to_string()]);
        run_bin(args, vec![])
    };
    for order in [["a.csv", "b.csv"], ["b.csv", "a.csv"]] {
        let o = merge(&order).await;
        assert_eq!(o.status.code(), Some(0), "{order:?}");
        let rows = results(&out);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0]["status"].as_str(), rows[0]["task_id"].as_str()),
            ("submitted", "task-a"),
            "{order:?}"
        );
    }
    // Two task ids for one request stay a conflict.
    write_results(
        &dir.path().join("c.csv"),
        &[format!(
            "{id},j,txt2img,submitted,task-c,,1,200,0,,2026-11-23T01:00:00Z,5"
        )],
    );
    let o = merge(&["a.csv", "b.csv", "c.csv"]).await;
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("task-a")
            && stderr.contains("task-c")
            && stderr.contains("submitted twice"),
        "{stderr}"
    );
    assert_eq!(
        results(&out)[0]["task_id"],
        "task-c",
        "the latest task id is kept"
    );
    // An input that cannot be read completely stops the merge.
    write_results(
        &dir.path().join("d.csv"),
        &[format!("{id},j,txt2img,Done,,,1,,,,2026-11-23T01:00:00Z,5")],
    );
    let o = merge(&["a.csv", "d.csv"]).await;
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("d.csv"));
    // A shard that stopped with requests in flight has no row for them yet: refused.
    let other = "7c2a4d1e-0b3f-5a6c-9d8e-1f2a3b4c5d6e";
    std::fs::write(
        dir.path().join("a.csv.wal"),
        format!("sent {other} 1 2026-11-23T01:00:00.000Z 2026-11-23T01:00:00.000Z api txt2img j\n"),
    )
    .unwrap();
    let o = merge(&["a.csv", "b.csv"]).await;
    assert_eq!(o.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(other) && stderr.contains("in flight"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lock_per_results_file_however_it_is_reached() {
    let sim = simulator(SimConfig {
        latency: "300ms".parse().unwrap(),
        ..quiet()
    })
    .await;
    let (dir, manifest, _) = txt2img_scratch("links", 4, &[1]);
    let real = dir.path().join("real.csv");
    let link = dir.path().join("link.csv");
    // A link to a file that does not exist yet: the run creates the file, not a new link.
    std::os::unix::fs::symlink("real.csv", &link).unwrap();
    let first = spawn(&run_args(
        &manifest,
        &sim.base_url(),
        &link,
        &["--concurrency", "1"],
    ));
    until("the first run sending", || sim.stats().accepted >= 1).await;
    let second = run_bin(run_args(&manifest, &sim.base_url(), &real, &[]), vec![]).await;
    assert_eq!(second.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    let o = wait(first).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link is still a link"
    );
    assert_eq!(results(&real).len(), 4);
    assert!(sibling(&real, "lock").exists() && !sibling(&link, "lock").exists());
    // A second hard link: the atomic rewrite would split the names, so it is refused.
    let hard = dir.path().join("hard.csv");
    std::fs::hard_link(&real, &hard).unwrap();
    for path in [&hard, &real, &link] {
        let o = run_bin(run_args(&manifest, &sim.base_url(), path, &[]), vec![]).await;
        assert_eq!(o.status.code(), Some(3), "{}", path.display());
        assert!(String::from_utf8_lossy(&o.stderr).contains("hard links"));
    }
    assert_eq!(sim.stats().accepted, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_that_cost_nothing_show_up_and_another_manifest_wipes_no_column() {
    let sim = simulator(quiet()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.csv");
    let catalog = dir.path().join("catalog.yaml");
    let write = |caption: &str| {
        std::fs::write(
            &catalog,
            format!(
                "jobs:\n  - id: shirts\n    kind: txt2img\n    prompt: \"a shirt in {{color}}\"\n    matrix: {{ color: [red, blue], batch: [b1] }}\n    meta: {{ sku: \"SKU-{{color}}\", caption: \"{caption}\" }}\n"
            ),
        )
        .unwrap();
    };
    write("Sprng shirt");
    let run = |m: &Path| run_bin(run_args(m, &sim.base_url(), &out, &[]), vec![]);
    assert_eq!(run(&catalog).await.status.code(), Some(0));
    // The caption is fixed: the bodies are the same, so nothing is sent, and the rows say so.
    write("Spring shirt");
    let o = run(&catalog).await;
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 already submitted"));
    assert_eq!(sim.stats().accepted, 2);
    let rows = results(&out);
    assert!(
        rows.iter().all(|r| r["meta.caption"] == "Spring shirt"),
        "{rows:?}"
    );
    // Another manifest on the same results keeps the first one's columns and values.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        "jobs:\n  - id: bags\n    kind: txt2img\n    prompt: \"a {size} bag\"\n    matrix: { size: [S, M] }\n    meta: { note: new }\n",
    )
    .unwrap();
    assert_eq!(run(&other).await.status.code(), Some(0));
    let rows = results(&out);
    assert_eq!(rows.len(), 4);
    let shirts: Vec<_> = rows.iter().filter(|r| r["job"] == "shirts").collect();
    assert_eq!(shirts.len(), 2);
    for r in shirts {
        assert!(r["var.color"] == "red" || r["var.color"] == "blue", "{r:?}");
        assert_eq!(r["var.batch"], "b1");
        assert_eq!(r["meta.caption"], "Spring shirt");
        assert!(r["meta.sku"].starts_with("SKU-"));
    }
    let bags: Vec<_> = rows.iter().filter(|r| r["job"] == "bags").collect();
    assert!(
        bags.iter()
            .all(|r| r["meta.note"] == "new" && r["var.color"].is_empty())
    );
    assert_eq!(sim.stats().accepted, 4);
}
