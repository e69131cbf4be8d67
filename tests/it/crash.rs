//! Crash consistency: a server that creates each task the moment its request arrives (and keeps
//! it whatever the client does next), random latency and faults; the client interrupted at random
//! points — SIGKILL (also while it starts up), SIGTERM, a double SIGINT — with a dry run, another
//! manifest and another shard run in between, several times, then run to the end.
//!
//! It checks what the journal promises: the server never accepted a body twice; every task it
//! created is in the final results under its request, or that request is `unknown`; and a request
//! is `unknown` only if it was really in flight when a run was interrupted (its write-ahead entry
//! was open right after the interruption).
//!
//! Seeded: the seed is printed; `HIDREAM_BATCH_CRASH_SEED=N cargo test crash` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hidream_batch::sim::SimConfig;

use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Interruption {
    Kill,
    /// SIGKILL as soon as the run holds the lock: while it reads, plans and compacts.
    KillStarting,
    Term,
    DoubleInt,
}

/// Send a signal to a process that may have exited already.
fn try_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// A text-to-image manifest of `n` distinct requests named `name`.
fn manifest(dir: &Path, name: &str, n: usize) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "jobs:\n  - id: {name}\n    kind: txt2img\n    prompt: \"{name} {{i}}\"\n    matrix: {{ i: [{}] }}\n",
            (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_at_random_no_body_is_accepted_twice_and_no_task_id_is_lost() {
    let seed: u64 = std::env::var("HIDREAM_BATCH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("crash-consistency seed: {seed} (replay: HIDREAM_BATCH_CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let sim = simulator(SimConfig {
        latency: "10ms..150ms".parse().unwrap(),
        error_rate: 0.05,
        throttle_rate: 0.05,
        seed,
        ledger: hidream_batch::sim::LedgerConfig::Memory,
        ..quiet()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = manifest(dir.path(), "catalog", 120);
    let other = manifest(dir.path(), "other", 30);
    let out = dir.path().join("r.csv");
    let args = |m: &Path, extra: &[&str]| {
        let mut a = vec!["--concurrency", "8", "--max-attempts", "3"];
        a.extend_from_slice(extra);
        run_args(m, &sim.base_url(), &out, &a)
    };
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();

    // Every interruption twice, in a seeded order.
    let mut plan = [
        Interruption::Kill,
        Interruption::KillStarting,
        Interruption::Term,
        Interruption::DoubleInt,
    ]
    .repeat(2);
    rng.shuffle(&mut plan);
    let mut in_flight: BTreeSet<String> = BTreeSet::new();
    let mut ran_other = false;
    for (round, how) in plan.iter().enumerate() {
        let shard = rng.bool().then(|| format!("{}/2", rng.u32(1..=2)));
        let extra: Vec<&str> = match &shard {
            Some(s) => vec!["--shard", s.as_str()],
            None => vec![],
        };
        let mut run = Watched::start(&args(&catalog, &extra));
        let pid = run.child.id();
        let target = sim.stats().accepted + rng.u64(1..25);
        let deadline = Instant::now() + Duration::from_secs(60);
        // The interruption point: the lock taken, or some new tasks created; or the run ended.
        loop {
            assert!(Instant::now() < deadline, "round {round}: stuck");
            if run.child.try_wait().unwrap().is_some() {
                break;
            }
            let ready = match how {
                Interruption::KillStarting => {
                    read(&sibling(&out, "lock")) == pid.to_string().as_bytes()
                }
                _ => sim.stats().accepted >= target,
            };
            if ready {
                match how {
                    Interruption::Kill | Interruption::KillStarting => try_signal(pid, "-KILL"),
                    Interruption::Term => try_signal(pid, "-TERM"),
                    Interruption::DoubleInt => {
                        try_signal(pid, "-INT");
                        while run.child.try_wait().unwrap().is_none()
                            && !run.stderr().contains("interrupted: no new requests")
                        {
                            assert!(Instant::now() < deadline, "round {round}: no first stop");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        try_signal(pid, "-INT");
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (code, stderr) = run.finish().await;
        assert!(
            matches!(code, None | Some(0 | 1 | 130)),
            "round {round} ({how:?}): exit {code:?}\n{stderr}"
        );
        in_flight.extend(open_entries(&out));

        // In between: a dry run changes nothing; sometimes another manifest runs to its end.
        let before = (read(&out), read(&sibling(&out, "wal")));
        let dry = run_bin(args(&catalog, &["--dry-run"]), vec![]).await;
        assert_eq!(
            dry.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&dry.stderr)
        );
        assert_eq!(
            before,
            (read(&out), read(&sibling(&out, "wal"))),
            "round {round}: the dry run wrote"
        );
        if rng.u8(0..3) == 0 {
            let o = run_bin(args(&other, &[]), vec![]).await;
            assert!(
                matches!(o.status.code(), Some(0 | 1)),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
            ran_other = true;
        }
    }
    // To the end: what failed (faults) is sent again until nothing is left to send.
    let mut manifests = vec![catalog.clone()];
    if ran_other {
        manifests.push(other.clone());
    }
    for m in &manifests {
        for _ in 0..6 {
            let o = run_bin(args(m, &[]), vec![]).await;
            assert!(
                matches!(o.status.code(), Some(0 | 1)),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
            if !String::from_utf8_lossy(&o.stdout).contains("failed to retry")
                || results(&out).iter().all(|r| r["status"] != "failed")
            {
                break;
            }
        }
    }

    let rows = results(&out);
    let by_id: BTreeMap<&str, &std::collections::HashMap<String, String>> =
        rows.iter().map(|r| (r["request_id"].as_str(), r)).collect();
    assert_eq!(by_id.len(), rows.len(), "one row per request");
    let expected = 120 + if ran_other { 30 } else { 0 };
    let catalog_ids = expanded_ids(&[catalog.to_str().unwrap()]);
    assert!(catalog_ids.iter().all(|id| by_id.contains_key(id.as_str())));
    assert_eq!(rows.len(), expected);
    let stats = sim.stats();
    assert_eq!(
        stats.duplicates, 0,
        "a body was accepted twice (seed {seed})"
    );
    for created in sim.created() {
        let id = created.request_id.expect("txt2img bodies carry their id");
        let row = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("task {} of {id} is lost (seed {seed})", created.task_id));
        match row["status"].as_str() {
            "submitted" => assert_eq!(row["task_id"], created.task_id, "seed {seed}"),
            "unknown" => {}
            other => panic!("{id} has a task but is `{other}` (seed {seed})"),
        }
    }
    for r in &rows {
        match r["status"].as_str() {
            "submitted" => {}
            "unknown" => assert!(
                in_flight.contains(&r["request_id"]),
                "{} is unknown but was not in flight at an interruption (seed {seed})",
                r["request_id"]
            ),
            other => panic!("{} ended `{other}` (seed {seed}): {r:?}", r["request_id"]),
        }
    }
    assert!(open_entries(&out).is_empty());
    let unknown = rows.iter().filter(|r| r["status"] == "unknown").count();
    println!(
        "{} rounds; {} rows, {unknown} unknown (in flight at interruptions: {}); server: {} submissions, {} accepted, {} duplicates",
        plan.len(),
        rows.len(),
        in_flight.len(),
        stats.submitted,
        stats.accepted,
        stats.duplicates
    );
}

/// The moments random kills rarely hit, hit on purpose (the test hook `HIDREAM_BATCH_CRASH_AT`
/// aborts the process there, as a power cut would): between the compacted results and the log
/// emptied, between the results synced and the `done` lines, between the final rewrite and the
/// log emptied. The next run recovers without sending anything twice or losing a task id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_the_journal_loses_nothing_and_sends_nothing_twice() {
    for point in ["compacted", "settled", "finished"] {
        let sim = simulator(SimConfig {
            latency: "20ms..120ms".parse().unwrap(),
            ledger: hidream_batch::sim::LedgerConfig::Memory,
            ..quiet()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let catalog = manifest(dir.path(), "catalog", 40);
        let out = dir.path().join("r.csv");
        let args = run_args(&catalog, &sim.base_url(), &out, &["--concurrency", "4"]);
        // Something in flight first, so that the compaction has entries to settle.
        let child = spawn(&args);
        until("tasks created", || sim.stats().accepted >= 6).await;
        signal(&child, "-KILL");
        wait(child).await;
        let mut in_flight = open_entries(&out);
        let crashed = run_bin(args.clone(), vec![("HIDREAM_BATCH_CRASH_AT", point.into())]).await;
        assert_eq!(crashed.status.code(), None, "{point}: aborted");
        in_flight.extend(open_entries(&out));
        let last = run_bin(args.clone(), vec![]).await;
        let stderr = String::from_utf8_lossy(&last.stderr);
        assert!(
            matches!(last.status.code(), Some(0 | 1)),
            "{point}: {stderr}"
        );
        let rows = results(&out);
        assert_eq!(rows.len(), 40, "{point}");
        assert_eq!(sim.stats().duplicates, 0, "{point}: sent twice");
        for created in sim.created() {
            let id = created.request_id.unwrap();
            let row = rows.iter().find(|r| r["request_id"] == id).expect("a row");
            assert!(
                row["task_id"] == created.task_id || row["status"] == "unknown",
                "{point}: the task of {id} is lost: {row:?}"
            );
        }
        for r in rows.iter().filter(|r| r["status"] != "submitted") {
            assert_eq!(r["status"], "unknown", "{point}: {r:?}");
            assert!(in_flight.contains(&r["request_id"]), "{point}: {r:?}");
        }
        assert!(open_entries(&out).is_empty(), "{point}");
    }
}
