//! The simulator's account over real loopback HTTP: the limit on unfinished tasks
//! (`--max-pending`, code 1201), the credit (`--credits`, code 1202), and image results given as
//! bare ids (`--bare-image-ids`).

use std::time::Duration;

use hidream_batch::api::{Kind, TaskResult, status};
use hidream_batch::sim::{RefusalResult, SimConfig, Simulator, codes};
use serde_json::{Value, json};

use crate::common::{TOKEN, bin, quiet, simulator, until_async};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Submit and return the HTTP status and the parsed body.
async fn submit(c: &reqwest::Client, sim: &Simulator, kind: Kind, body: &Value) -> (u16, Value) {
    let response = c
        .post(kind.endpoint(Some(&sim.base_url())))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// The task of a result query.
async fn query(c: &reqwest::Client, sim: &Simulator, kind: Kind, task_id: &str) -> TaskResult {
    let url = format!(
        "{}/results?task_id={task_id}",
        kind.endpoint(Some(&sim.base_url()))
    );
    let answer: Value = crate::common::get_json(c, url).await;
    assert_eq!(answer["code"], 0, "{answer}");
    serde_json::from_value(answer["result"].clone()).unwrap()
}

fn txt2img(prompt: &str, images: u32) -> Value {
    json!({"prompt": prompt, "img_count": images})
}

fn model(prompt: &str) -> Value {
    json!({"image": "https://example.com/shirt.jpg", "prompt": prompt})
}

/// The task id of an accepted submission.
fn task_id(status: u16, answer: &Value) -> String {
    assert_eq!((status, &answer["code"]), (200, &json!(0)), "{answer}");
    answer["result"]["task_id"].as_str().unwrap().to_string()
}

const PENDING_MESSAGE: &str = "并行任务数已达上限（3），请等待任务完成后再提交";

#[tokio::test]
async fn unfinished_tasks_are_limited_across_both_endpoints_until_they_end() {
    let sim = simulator(SimConfig {
        max_pending: Some(3),
        task_time: Duration::from_secs(3),
        refusal_result: RefusalResult::Absent,
        ..quiet()
    })
    .await;
    let c = client();
    let bodies = [
        (Kind::Txt2Img, txt2img("one", 4)),
        (Kind::Model, model("two")),
        (Kind::Txt2Img, txt2img("three", 1)),
        (Kind::Model, model("four")),
        (Kind::Txt2Img, txt2img("five", 2)),
    ];
    let mut answers = Vec::new();
    for (kind, body) in &bodies {
        answers.push(submit(&c, &sim, *kind, body).await);
    }
    let last_accepted = task_id(answers[2].0, &answers[2].1);
    for (status, answer) in &answers[..2] {
        task_id(*status, answer);
    }
    for (status, answer) in &answers[3..] {
        assert_eq!(
            *status, 200,
            "a business refusal, not an HTTP error: {answer}"
        );
        assert_eq!(answer["code"], codes::PENDING_LIMIT, "{answer}");
        assert_eq!(answer["message"], PENDING_MESSAGE);
        assert!(
            answer.get("result").is_none(),
            "written as --refusal-result says: {answer}"
        );
    }
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.pending_limited), (3, 2));
    assert_eq!((stats.pending, stats.max_pending_seen), (3, 3));
    assert_eq!(
        stats.rejected, 0,
        "a refusal of the account is not invalid input"
    );

    // Once the last task reads as ended, the account has room again.
    until_async("the third task to end", || async {
        query(&c, &sim, Kind::Txt2Img, &last_accepted)
            .await
            .sub_task_results
            .iter()
            .all(|s| s.task_status == status::DONE)
    })
    .await;
    let (status, answer) = submit(&c, &sim, Kind::Model, &model("six")).await;
    task_id(status, &answer);
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.pending_limited), (4, 2));
    assert_eq!((stats.pending, stats.max_pending_seen), (1, 3));
}

/// Several worker threads, so that submissions are decided in parallel, not one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_never_exceed_the_limit() {
    // Tasks outlive the test: exactly three can be unfinished, whatever the interleaving. The
    // latency (after the decision) keeps the requests in flight together, to show they overlapped.
    let sim = simulator(SimConfig {
        max_pending: Some(3),
        task_time: Duration::from_secs(60),
        latency: "50ms".parse().unwrap(),
        ..quiet()
    })
    .await;
    let c = client();
    let sends = (0..20).map(|i| {
        let (c, sim) = (&c, &sim);
        async move {
            let (kind, body) = if i % 2 == 0 {
                (Kind::Txt2Img, txt2img(&format!("p{i}"), 1 + i % 4))
            } else {
                (Kind::Model, model(&format!("p{i}")))
            };
            submit(c, sim, kind, &body).await
        }
    });
    let answers = futures::future::join_all(sends).await;
    let accepted = answers.iter().filter(|(_, a)| a["code"] == 0).count();
    let refused = answers
        .iter()
        .filter(|(s, a)| *s == 200 && a["code"] == codes::PENDING_LIMIT)
        .count();
    assert_eq!((accepted, refused), (3, 17), "{answers:?}");
    let stats = sim.stats();
    assert_eq!(stats.max_pending_seen, 3);
    assert_eq!((stats.accepted, stats.pending_limited), (3, 17));
    assert!(stats.max_in_flight > 1, "the submissions overlapped");
}

#[tokio::test]
async fn unfinished_tasks_are_counted_without_a_limit() {
    let sim = simulator(SimConfig {
        task_time: Duration::from_secs(60),
        ..quiet()
    })
    .await;
    let c = client();
    for i in 0..4 {
        let (status, answer) = submit(&c, &sim, Kind::Txt2Img, &txt2img(&format!("p{i}"), 1)).await;
        task_id(status, &answer);
    }
    let stats = sim.stats();
    assert_eq!((stats.pending, stats.max_pending_seen), (4, 4));
    assert_eq!((stats.pending_limited, stats.credits_left), (0, None));
}

#[tokio::test]
async fn credit_is_spent_per_image_and_a_request_over_it_is_refused() {
    let sim = simulator(SimConfig {
        credits: Some(5),
        ..quiet()
    })
    .await;
    let c = client();
    let two_images = json!({"image": "https://example.com/shirt.jpg", "prompt": "p",
                            "image_count": 2});
    let (status, answer) = submit(&c, &sim, Kind::Txt2Img, &txt2img("a", 2)).await;
    task_id(status, &answer);
    let (status, answer) = submit(&c, &sim, Kind::Model, &two_images).await;
    task_id(status, &answer);
    let (status, answer) = submit(&c, &sim, Kind::Txt2Img, &txt2img("c", 2)).await;
    assert_eq!((status, &answer["code"]), (200, &json!(codes::NO_CREDITS)));
    assert_eq!(answer["message"], "积分不足，请充值后再试");
    assert_eq!(answer["result"], Value::Null, "{answer}");

    let stats: Value = crate::common::get_json(&c, format!("{}/sim/stats", sim.base_url())).await;
    assert_eq!(stats["credits_left"], 1, "{stats}");
    assert_eq!(stats["credits_refused"], 1, "{stats}");
    assert_eq!(stats["accepted_images"], 4, "{stats}");

    // A model request without `image_count` asks for one image: it fits.
    let (status, answer) = submit(&c, &sim, Kind::Model, &model("d")).await;
    task_id(status, &answer);
    let stats = sim.stats();
    assert_eq!((stats.credits_left, stats.credits_refused), (Some(0), 1));
    assert_eq!(stats.accepted, 3);
}

#[tokio::test]
async fn bare_image_ids_are_served_with_and_without_the_extension() {
    let sim = simulator(SimConfig {
        bare_image_ids: true,
        task_time: Duration::ZERO,
        ..quiet()
    })
    .await;
    let c = client();
    let (status, answer) = submit(&c, &sim, Kind::Txt2Img, &txt2img("a heron", 2)).await;
    let id = task_id(status, &answer);
    let result = query(&c, &sim, Kind::Txt2Img, &id).await;
    assert_eq!(result.sub_task_results.len(), 2);
    for sub in &result.sub_task_results {
        assert_eq!(sub.task_status, status::DONE);
        assert_eq!(sub.image.as_deref(), Some(sub.sub_task_id.as_str()));
        let mut bodies = Vec::new();
        for path in [format!("{}.png", sub.sub_task_id), sub.sub_task_id.clone()] {
            let png = c
                .get(format!("{}/sim/images/{path}", sim.base_url()))
                .send()
                .await
                .unwrap();
            assert_eq!(png.status(), 200, "{path}");
            assert_eq!(png.headers()["content-type"], "image/png");
            let bytes = png.bytes().await.unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{path}");
            bodies.push(bytes);
        }
        assert_eq!(bodies[0], bodies[1]);
    }
    let missing = c
        .get(format!("{}/sim/images/{id}-9", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "no such image, with or without `.png`"
    );
}

#[test]
fn the_simulate_command_refuses_a_limit_of_zero_and_documents_the_account() {
    let output = bin()
        .args(["simulate", "--listen", "127.0.0.1:0", "--max-pending", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`--max-pending`"), "{stderr}");
    assert!(output.stdout.is_empty());

    let help = bin().args(["simulate", "--help"]).output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for option in ["--max-pending <N>", "--credits <N>", "--bare-image-ids"] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}
