//! What a request is: its content. The bytes validated are the bytes sent (manifests read once,
//! images checked against their digest), a renamed or copied catalogue is the same catalogue, two
//! catalogues that only share names are not, and a rehearsal's results never pass for a real
//! run's.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::*;

/// A server that accepts every submission after `delay`.
async fn slow_server(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({
                    "code": 0, "message": "Success", "request_id": "r",
                    "result": {"task_id": "t", "sub_task_ids": ["t-0"]}
                }))
                .set_delay(delay),
        )
        .mount(&server)
        .await;
    server
}

fn body(r: &wiremock::Request) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_edited_during_a_run_sends_only_what_was_validated() {
    let server = slow_server(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.csv");
    std::fs::write(
        &catalog,
        "kind,id,prompt\ntxt2img,a,first a\ntxt2img,b,first b\n",
    )
    .unwrap();
    let rows = dir.path().join("rows.csv");
    std::fs::write(&rows, "item\nx1\nx2\nx3\n").unwrap();
    let sweep = dir.path().join("sweep.yaml");
    std::fs::write(
        &sweep,
        "jobs:\n  - id: s\n    kind: txt2img\n    for_each: rows.csv\n    prompt: \"sweep {item}\"\n",
    )
    .unwrap();
    let out = dir.path().join("r.csv");
    let mut args = run_args(&catalog, &server.uri(), &out, &["--concurrency", "1"]);
    args.insert(2, sweep.display().to_string());
    let child = spawn(&args);
    until_async("the first request", || async {
        !submissions(&server).await.is_empty()
    })
    .await;
    // Both files change under the run: other prompts, an invalid count, more rows.
    std::fs::write(
        &catalog,
        "kind,id,prompt,img_count\ntxt2img,a,second a,9\ntxt2img,b,second b,1\ntxt2img,c,new c,1\n",
    )
    .unwrap();
    std::fs::write(&rows, "item\ny1\ny2\ny3\ny4\n").unwrap();
    let o = wait(child).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sent: HashSet<String> = submissions(&server)
        .await
        .iter()
        .map(|r| body(r)["prompt"].as_str().unwrap().to_string())
        .collect();
    let validated: HashSet<String> = ["first a", "first b", "sweep x1", "sweep x2", "sweep x3"]
        .map(String::from)
        .into();
    assert_eq!(sent, validated);
    assert_eq!(results(&out).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_edited_after_validation_is_not_sent() {
    let server = slow_server(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let images = root().join("manifests/images");
    std::fs::copy(images.join("shirt-01.png"), dir.path().join("a.png")).unwrap();
    let dress = std::fs::read(images.join("dress-02.png")).unwrap();
    std::fs::write(dir.path().join("b.png"), &dress).unwrap();
    let catalog = dir.path().join("catalog.csv");
    std::fs::write(
        &catalog,
        "kind,id,image,prompt\nmodel,a,a.png,a model in a shirt\nmodel,b,b.png,a model in a dress\n",
    )
    .unwrap();
    let out = dir.path().join("r.csv");
    let child = spawn(&run_args(
        &catalog,
        &server.uri(),
        &out,
        &["--concurrency", "1"],
    ));
    until_async("the first request", || async {
        !submissions(&server).await.is_empty()
    })
    .await;
    // The same size, one byte changed: only the digest, checked while the bytes stream, sees it.
    let mut edited = dress.clone();
    let last = edited.len() - 1;
    edited[last] ^= 0xff;
    std::fs::write(dir.path().join("b.png"), &edited).unwrap();
    let o = wait(child).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        submissions(&server).await.len(),
        1,
        "the edited image never arrived whole"
    );
    let rows = results(&out);
    let b = rows.iter().find(|r| r["job"] == "b").unwrap();
    assert_eq!(
        (b["status"].as_str(), b["attempts"].as_str()),
        ("failed", "1"),
        "{b:?}"
    );
    assert!(
        b["message"].contains("changed after it was validated"),
        "{b:?}"
    );
    assert!(open_entries(&out).is_empty());
}

/// A catalogue folder: `name` with two model rows, and its images.
fn catalogue(dir: &Path, name: &str, shirt: &str) -> PathBuf {
    let images = root().join("manifests/images");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::copy(images.join(shirt), dir.join("images/shirt.png")).unwrap();
    std::fs::copy(images.join("dress-02.png"), dir.join("images/dress.png")).unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        "kind,image,human_template_id,scene_template_id,meta.sku\nmodel,images/shirt.png,h-1,s-1,SH-1\nmodel,images/dress.png,h-1,s-1,DR-2\n",
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_its_content_whatever_the_manifest_is_called_or_where_it_lives() {
    let sim = simulator(quiet()).await;
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let original = catalogue(a.path(), "catalog.csv", "shirt-01.png");
    // A copy, renamed as a download would name it, in another folder.
    let copy = catalogue(b.path(), "catalog (1).csv", "shirt-01.png");
    // Another catalogue: same file name, same relative paths, another shirt.
    let other = catalogue(c.path(), "catalog.csv", "tee-04.jpg");
    let ids = |m: &Path| expanded_ids(&[m.to_str().unwrap()]);
    assert_eq!(ids(&original), ids(&copy));
    let (first, third) = (ids(&original), ids(&other));
    assert_ne!(first[0], third[0], "another image is another request");
    assert_eq!(
        first[1], third[1],
        "the same dress photo is the same request"
    );

    let out = a.path().join("r.csv");
    let run = |m: &Path| run_bin(run_args(m, &sim.base_url(), &out, &[]), vec![]);
    assert_eq!(run(&original).await.status.code(), Some(0));
    let o = run(&copy).await;
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 already submitted"));
    let o = run(&other).await;
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 new, 1 already submitted"));
    assert_eq!(sim.stats().accepted, 3, "the new shirt only");
    assert_eq!(sim.stats().duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_written_with_the_old_ids_stop_the_run_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = txt2img_manifest(dir.path(), "old", 3, &[1]);
    let loaded = hidream_batch::manifest::load(&manifest, &Default::default()).unwrap();
    let mut old = format!("{RESULTS_HEADER}\n");
    for r in hidream_batch::expand::expand(std::slice::from_ref(&loaded), None) {
        let r = r.unwrap();
        let id = hidream_batch::ids::legacy_request_id(&r.job, &r.body, r.repeat, None);
        old += &format!(
            "{id},{},txt2img,submitted,task-{id},,1,200,0,,2026-11-20T00:00:00.000Z,9\n",
            r.job.id
        );
    }
    let out = dir.path().join("r.csv");
    std::fs::write(&out, &old).unwrap();
    let server = accepting_server().await;
    let o = run_bin(run_args(&manifest, &server.uri(), &out, &[]), vec![]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("earlier hidream-batch") && stderr.contains("3 of these requests"),
        "{stderr}"
    );
    assert!(submissions(&server).await.is_empty());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_never_passes_for_a_real_run_nor_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = root().join("manifests/sweep.yaml");
    let rehearsal = dir.path().join("results.csv");
    let o = run_bin(
        vec![
            "run".into(),
            manifest.display().to_string(),
            "--simulate".into(),
            "-o".into(),
            rehearsal.display().to_string(),
        ],
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(0));
    assert!(
        results(&rehearsal)
            .iter()
            .all(|r| r["message"] == "(simulator)")
    );
    // The first real run in the same folder stops, says why, and sends nothing.
    let api = accepting_server().await;
    let o = run_bin(run_args(&manifest, &api.uri(), &rehearsal, &[]), vec![]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("answered by the simulator") && stderr.contains("-o"),
        "{stderr}"
    );
    assert!(submissions(&api).await.is_empty());
    // The simulator reached through --base-url is the simulator: nothing is sent again.
    let sim = simulator(quiet()).await;
    let o = run_bin(
        run_args(&manifest, &sim.base_url(), &rehearsal, &[]),
        vec![],
    )
    .await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(sim.stats().submitted, 0);

    // A real run's results: a rehearsal refuses them, and a proxy of the API is the API.
    let live = dir.path().join("live.csv");
    let o = run_bin(run_args(&manifest, &api.uri(), &live, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(0));
    let o = run_bin(run_args(&manifest, &sim.base_url(), &live, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("answered by the HiDream API"));
    let proxy = accepting_server().await;
    let o = run_bin(run_args(&manifest, &proxy.uri(), &live, &[]), vec![]).await;
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("11 already submitted"));
    assert!(submissions(&proxy).await.is_empty());
    assert_eq!(sim.stats().submitted, 0);
}
