//! The simulator over real loopback HTTP: validation, results over time, limits, seeded faults,
//! dropped connections, state across instances, authentication, images and stats.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hidream_batch::api::{Envelope, Kind, Submitted, TXT2IMG_PATH, TaskResult, status};
use hidream_batch::sim::{self, SimConfig, Simulator, Stats, codes};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "test-token";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn start(config: SimConfig) -> Simulator {
    sim::start(config).await.expect("simulator starts")
}

/// POST a JSON body to a submit endpoint with the test token.
async fn post(
    client: &reqwest::Client,
    sim: &Simulator,
    kind: Kind,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(kind.endpoint(Some(&sim.base_url())))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
}

/// Submit and return the HTTP status and the parsed body.
async fn submit(
    client: &reqwest::Client,
    sim: &Simulator,
    kind: Kind,
    body: &Value,
) -> (u16, Value) {
    let response = post(client, sim, kind, body).await.expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Submit a request that must be accepted; return its task.
async fn accepted(
    client: &reqwest::Client,
    sim: &Simulator,
    kind: Kind,
    body: &Value,
) -> Submitted {
    let (status, answer) = submit(client, sim, kind, body).await;
    assert_eq!(status, 200, "{answer}");
    let envelope: Envelope<Submitted> = serde_json::from_value(answer.clone()).unwrap();
    assert_eq!(envelope.code, 0, "{answer}");
    assert_eq!(envelope.message, "Success");
    envelope.result.expect("a result")
}

async fn query(
    client: &reqwest::Client,
    sim: &Simulator,
    kind: Kind,
    task_id: &str,
) -> Envelope<TaskResult> {
    // Simulator task ids need no escaping in a query string.
    let url = format!(
        "{}/results?task_id={task_id}",
        kind.endpoint(Some(&sim.base_url()))
    );
    client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Poll a task until every image has ended (bounded); returns the statuses seen, in order.
async fn poll_until_ended(
    client: &reqwest::Client,
    sim: &Simulator,
    kind: Kind,
    task_id: &str,
) -> (Vec<i64>, TaskResult) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        let answer = query(client, sim, kind, task_id).await;
        assert_eq!(answer.code, 0, "{}", answer.message);
        let result = answer.result.unwrap();
        let first = result.sub_task_results[0].task_status;
        if seen.last() != Some(&first) {
            seen.push(first);
        }
        if result
            .sub_task_results
            .iter()
            .all(|s| ![status::QUEUED, status::RUNNING].contains(&s.task_status))
        {
            return (seen, result);
        }
        assert!(
            Instant::now() < deadline,
            "task did not end; statuses {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first bytes of a PNG of the given size: enough for the API's header checks.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(13u32.to_be_bytes());
    v.extend(b"IHDR");
    v.extend(width.to_be_bytes());
    v.extend(height.to_be_bytes());
    v.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    v
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn txt2img(prompt: &str, request_id: &str) -> Value {
    json!({"prompt": prompt, "img_count": 1, "version": "v2L", "resolution": "1024*1024",
           "request_id": request_id})
}

fn model_prompt(prompt: &str) -> Value {
    json!({"image": "https://example.com/shirt.jpg", "prompt": prompt})
}

#[tokio::test]
async fn valid_requests_of_both_kinds_are_accepted() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let full = json!({
        "prompt": "a lighthouse at dusk", "negative_prompt": "text", "img_count": 4,
        "version": "v2L", "resolution": "832*1248", "request_id": "req-1",
        "notify_url": "https://example.com/hook"
    });
    let (status, answer) = submit(&c, &sim, Kind::Txt2Img, &full).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["request_id"], "req-1",
        "the client's request_id is echoed"
    );
    let task: Submitted = serde_json::from_value(answer["result"].clone()).unwrap();
    assert_eq!(task.sub_task_ids.len(), 4);
    assert!(
        task.sub_task_ids
            .iter()
            .all(|s| s.starts_with(&task.task_id))
    );

    let minimal = accepted(&c, &sim, Kind::Txt2Img, &json!({"prompt": "a cat"})).await;
    assert_eq!(minimal.sub_task_ids.len(), 1);

    let template = json!({
        "image": b64(&png_header(800, 1200)), "mask": "https://example.com/mask.png",
        "template": {"human_template_id": "h-101", "scene_template_id": "s-street",
                     "custom_human_template": false},
        "image_count": 2, "notify_url": "http://example.com/hook"
    });
    assert_eq!(
        accepted(&c, &sim, Kind::Model, &template)
            .await
            .sub_task_ids
            .len(),
        2
    );
    // 500 characters, not bytes: each of these is three bytes in UTF-8.
    let long_prompt = model_prompt(&"模".repeat(500));
    accepted(&c, &sim, Kind::Model, &long_prompt).await;
    let webp = json!({"image": b64(b"RIFF\x24\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0\x1f\0\0\x1f\0\0"),
                      "prompt": "on a beach"});
    accepted(&c, &sim, Kind::Model, &webp).await;

    let stats = sim.stats();
    assert_eq!(stats.accepted, 5);
    assert_eq!(stats.accepted_images, 4 + 1 + 2 + 1 + 1);
    assert_eq!(
        (stats.accepted_by_kind.txt2img, stats.accepted_by_kind.model),
        (2, 3)
    );
    assert_eq!(stats.rejected, 0);
}

#[tokio::test]
async fn every_validation_rule_rejects_naming_the_field() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let png = b64(&png_header(64, 64));
    let cases: Vec<(Kind, Value, i64, &str, &str)> = vec![
        // (kind, body, code, text the message must contain, stats reason)
        (
            Kind::Txt2Img,
            json!({"img_count": 1}),
            codes::MISSING_FIELD,
            "`prompt`",
            "prompt",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "  "}),
            codes::MISSING_FIELD,
            "`prompt`",
            "prompt",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": 5}),
            codes::INVALID_VALUE,
            "`prompt`",
            "prompt",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "negative_prompt": ["x"]}),
            codes::INVALID_VALUE,
            "`negative_prompt`",
            "negative_prompt",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "img_count": 0}),
            codes::INVALID_VALUE,
            "`img_count`",
            "img_count",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "img_count": 5}),
            codes::INVALID_VALUE,
            "`img_count`",
            "img_count",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "img_count": "2"}),
            codes::INVALID_VALUE,
            "`img_count`",
            "img_count",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "img_count": 2.5}),
            codes::INVALID_VALUE,
            "`img_count`",
            "img_count",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "version": "v3"}),
            codes::INVALID_VALUE,
            "`version`",
            "version",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "resolution": "1000*1000"}),
            codes::INVALID_VALUE,
            "`resolution`",
            "resolution",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "request_id": 7}),
            codes::INVALID_VALUE,
            "`request_id`",
            "request_id",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "notify_url": "example.com/hook"}),
            codes::INVALID_VALUE,
            "`notify_url`",
            "notify_url",
        ),
        (
            Kind::Txt2Img,
            json!({"prompt": "a", "aspect_ratio": "1:1"}),
            codes::UNKNOWN_FIELD,
            "`aspect_ratio`",
            "unknown_field",
        ),
        (
            Kind::Txt2Img,
            json!(["prompt"]),
            codes::BAD_BODY,
            "JSON object",
            "body",
        ),
        (
            Kind::Model,
            json!({"prompt": "a"}),
            codes::MISSING_FIELD,
            "`image`",
            "image",
        ),
        (
            Kind::Model,
            json!({"image": format!("data:image/png;base64,{png}"), "prompt": "a"}),
            codes::BAD_IMAGE,
            "`data:`",
            "image",
        ),
        (
            Kind::Model,
            json!({"image": "not base64 at all!", "prompt": "a"}),
            codes::BAD_IMAGE,
            "`image`",
            "image",
        ),
        (
            Kind::Model,
            json!({"image": b64(b"just some text"), "prompt": "a"}),
            codes::BAD_IMAGE,
            "`image`",
            "image",
        ),
        (
            Kind::Model,
            json!({"image": b64(b"GIF89a\x10\0\x10\0\0\0\0"), "prompt": "a"}),
            codes::BAD_IMAGE,
            "`image`",
            "image",
        ),
        (
            Kind::Model,
            json!({"image": b64(&png_header(4097, 100)), "prompt": "a"}),
            codes::BAD_IMAGE,
            "4096",
            "image",
        ),
        (
            Kind::Model,
            json!({"image": "ftp://example.com/a.png", "prompt": "a"}),
            codes::BAD_IMAGE,
            "`image`",
            "image",
        ),
        (
            Kind::Model,
            json!({"image": png, "mask": "data:image/png;base64,AAAA", "prompt": "a"}),
            codes::BAD_IMAGE,
            "`mask`",
            "mask",
        ),
        (
            Kind::Model,
            json!({"image": png, "template": "h-101"}),
            codes::INVALID_VALUE,
            "`template`",
            "template",
        ),
        (
            Kind::Model,
            json!({"image": png, "template": {"human_template_id": "h"}}),
            codes::MISSING_FIELD,
            "`template.scene_template_id`",
            "template.scene_template_id",
        ),
        (
            Kind::Model,
            json!({"image": png, "template": {"scene_template_id": "s"}}),
            codes::MISSING_FIELD,
            "`template.human_template_id`",
            "template.human_template_id",
        ),
        (
            Kind::Model,
            json!({"image": png, "template": {"human_template_id": "h", "scene_template_id": "s", "style": 1}}),
            codes::UNKNOWN_FIELD,
            "`template.style`",
            "unknown_field",
        ),
        (
            Kind::Model,
            json!({"image": png, "template": {"human_template_id": "h", "scene_template_id": "s", "custom_human_template": true}}),
            codes::INVALID_VALUE,
            "`template.custom_human_template`",
            "template.custom_human_template",
        ),
        (
            Kind::Model,
            model_prompt(&"模".repeat(501)),
            codes::PROMPT_TOO_LONG,
            "`prompt`",
            "prompt",
        ),
        (
            Kind::Model,
            json!({"image": png, "prompt": "a", "template": {"human_template_id": "h", "scene_template_id": "s"}}),
            codes::TEMPLATE_XOR_PROMPT,
            "`template`",
            "template_or_prompt",
        ),
        (
            Kind::Model,
            json!({"image": png}),
            codes::TEMPLATE_XOR_PROMPT,
            "`prompt`",
            "template_or_prompt",
        ),
        (
            Kind::Model,
            json!({"image": png, "prompt": "a", "image_count": 9}),
            codes::INVALID_VALUE,
            "`image_count`",
            "image_count",
        ),
        (
            Kind::Model,
            json!({"image": png, "prompt": "a", "notify_url": "mailto:x@y"}),
            codes::INVALID_VALUE,
            "`notify_url`",
            "notify_url",
        ),
        (
            Kind::Model,
            json!({"image": png, "prompt": "a", "request_id": "r"}),
            codes::UNKNOWN_FIELD,
            "`request_id`",
            "unknown_field",
        ),
    ];
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (kind, body, code, needle, reason) in &cases {
        let (status, answer) = submit(&c, &sim, *kind, body).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(answer["code"], *code, "{kind} {body} → {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{body}: `{message}` should name {needle}"
        );
        assert!(answer["result"].is_null());
        *expected.entry(reason.to_string()).or_default() += 1;
    }

    // Not JSON at all, and JSON without its content type.
    let url = Kind::Txt2Img.endpoint(Some(&sim.base_url()));
    let raw = |body: &'static str, content_type: &'static str| {
        c.post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let answer: Value = raw("{\"prompt\":", "application/json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], codes::BAD_BODY);
    let answer: Value = raw("{\"prompt\":\"a\"}", "text/plain")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], codes::BAD_BODY);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("`Content-Type`")
    );
    *expected.entry("body".into()).or_default() += 1;
    *expected.entry("content_type".into()).or_default() += 1;

    let stats = sim.stats();
    assert_eq!(stats.rejected_by_reason, expected);
    assert_eq!(stats.rejected, cases.len() as u64 + 2);
    assert_eq!(stats.accepted, 0);
}

#[tokio::test]
async fn results_progress_from_queued_or_running_to_done() {
    let sim = start(SimConfig {
        task_time: Duration::from_millis(600),
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let body = json!({"prompt": "a red fox", "img_count": 2});
    let task = accepted(&c, &sim, Kind::Txt2Img, &body).await;
    let (seen, result) = poll_until_ended(&c, &sim, Kind::Txt2Img, &task.task_id).await;
    assert!(
        [status::QUEUED, status::RUNNING].contains(&seen[0]),
        "a new task is not done at once: {seen:?}"
    );
    assert_eq!(*seen.last().unwrap(), status::DONE);
    assert_eq!(result.task_id.as_deref(), Some(task.task_id.as_str()));
    assert_eq!(result.sub_task_results.len(), 2);
    for (sub, id) in result.sub_task_results.iter().zip(&task.sub_task_ids) {
        assert_eq!(&sub.sub_task_id, id);
        assert_eq!(sub.task_completion, Some(1.0));
        let url = sub.image.as_deref().expect("a finished image has a URL");
        assert_eq!(url, format!("{}/sim/images/{id}.png", sim.base_url()));
        let png = c.get(url).send().await.unwrap();
        assert_eq!(png.status(), 200);
        assert_eq!(png.headers()["content-type"], "image/png");
    }
    // Model tasks are queried at their own path.
    let model = accepted(&c, &sim, Kind::Model, &model_prompt("in a park")).await;
    let (_, result) = poll_until_ended(&c, &sim, Kind::Model, &model.task_id).await;
    assert_eq!(result.sub_task_results[0].task_status, status::DONE);
    assert!(sim.stats().calls.results_txt2img >= 2);
}

#[tokio::test]
async fn failed_and_refused_fractions_end_with_3_and_4() {
    let sim = start(SimConfig {
        task_time: Duration::ZERO,
        fail_rate: 0.4,
        refuse_rate: 0.4,
        seed: 5,
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let mut ends = BTreeMap::new();
    for i in 0..10 {
        let task = accepted(
            &c,
            &sim,
            Kind::Txt2Img,
            &json!({"prompt": format!("p{i}"), "img_count": 4}),
        )
        .await;
        let result = query(&c, &sim, Kind::Txt2Img, &task.task_id)
            .await
            .result
            .unwrap();
        for sub in result.sub_task_results {
            match sub.task_status {
                status::DONE => assert!(sub.image.is_some() && sub.description.is_none()),
                status::FAILED | status::REFUSED => {
                    assert!(sub.image.is_none() && sub.description.is_some())
                }
                other => panic!("unexpected status {other}"),
            }
            *ends.entry(sub.task_status).or_insert(0) += 1;
        }
    }
    assert_eq!(ends.len(), 3, "all three ends occur in 40 images: {ends:?}");
}

#[tokio::test]
async fn batch_query_answers_each_task_in_order() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    let a = accepted(&c, &sim, Kind::Txt2Img, &json!({"prompt": "a"})).await;
    let b = accepted(
        &c,
        &sim,
        Kind::Txt2Img,
        &json!({"prompt": "b", "img_count": 3}),
    )
    .await;
    let url = format!(
        "{}/results/batch",
        Kind::Txt2Img.endpoint(Some(&sim.base_url()))
    );
    let batch = |body: Value| c.post(&url).bearer_auth(TOKEN).json(&body).send();

    let answer: Envelope<Vec<TaskResult>> = batch(json!({"task_id_list": [b.task_id, a.task_id]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer.code, 0);
    let list = answer.result.unwrap();
    assert_eq!(list[0].task_id.as_deref(), Some(b.task_id.as_str()));
    assert_eq!(list[0].sub_task_results.len(), 3);
    assert_eq!(list[1].task_id.as_deref(), Some(a.task_id.as_str()));

    let unknown: Value =
        batch(json!({"task_id_list": [a.task_id, "3fe836e2-e1ce-11ee-975a-76ad3c0ace6b"]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(unknown["code"], codes::UNKNOWN_TASK);
    assert!(unknown["message"].as_str().unwrap().contains("3fe836e2"));
    let empty: Value = batch(json!({"task_id_list": []}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(empty["code"], codes::MISSING_FIELD);
    // A txt2img task is unknown to the model endpoints.
    let model_url = format!(
        "{}/results/batch",
        Kind::Model.endpoint(Some(&sim.base_url()))
    );
    let wrong: Value = c
        .post(model_url)
        .bearer_auth(TOKEN)
        .json(&json!({"task_id_list": [a.task_id]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wrong["code"], codes::UNKNOWN_TASK);

    let stats = sim.stats();
    assert_eq!(stats.calls.batch_results_txt2img, 3);
    assert_eq!(stats.calls.batch_results_model, 1);
    assert_eq!(stats.unknown_task_ids, 2);
}

/// A 429's `Retry-After` (seconds) and body.
async fn too_many(r: reqwest::Response) -> (u64, Value) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (retry_after, r.json().await.unwrap())
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_per_endpoint() {
    let sim = start(SimConfig {
        rate_limit: Some(5),
        ..SimConfig::default()
    })
    .await;
    let c = client();
    accepted(
        &c,
        &sim,
        Kind::Txt2Img,
        &json!({"prompt": "a", "img_count": 4}),
    )
    .await;
    let over = post(
        &c,
        &sim,
        Kind::Txt2Img,
        &json!({"prompt": "b", "img_count": 2}),
    )
    .await
    .unwrap();
    let (retry_after, body) = too_many(over).await;
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(body["code"], codes::RATE_LIMITED);
    // One more image still fits; the model endpoint has its own window.
    accepted(&c, &sim, Kind::Txt2Img, &json!({"prompt": "c"})).await;
    accepted(
        &c,
        &sim,
        Kind::Model,
        &json!({"image": "https://x.test/a.png", "prompt": "d", "image_count": 4}),
    )
    .await;
    let full = post(&c, &sim, Kind::Txt2Img, &json!({"prompt": "e"}))
        .await
        .unwrap();
    assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);

    let stats = sim.stats();
    assert_eq!(
        (
            stats.http_429,
            stats.rate_limited,
            stats.concurrency_limited
        ),
        (2, 2, 0)
    );
    assert_eq!(stats.max_images_per_minute.txt2img, 5);
    assert_eq!(stats.max_images_per_minute.model, 4);
    assert_eq!(stats.accepted_images, 9);
}

#[tokio::test]
async fn max_concurrent_answers_429_beyond_the_limit() {
    let sim = start(SimConfig {
        max_concurrent: Some(2),
        // Long enough that all five requests arrive while the first two are held.
        latency: "2s".parse().unwrap(),
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let sends = (0..5).map(|i| {
        let body = txt2img(&format!("p{i}"), &format!("r{i}"));
        let c = &c;
        let sim = &sim;
        async move { post(c, sim, Kind::Txt2Img, &body).await.unwrap() }
    });
    let answers = futures::future::join_all(sends).await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let limited: Vec<_> = answers
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((ok, limited.len()), (2, 3));
    assert!(
        limited
            .iter()
            .all(|r| r.headers().contains_key("retry-after"))
    );

    let stats = sim.stats();
    assert_eq!(stats.concurrency_limited, 3);
    assert_eq!(stats.accepted, 2);
    assert_eq!(
        stats.max_in_flight, 5,
        "counted on arrival, before the gate"
    );
    assert_eq!(stats.in_flight, 0);
}

/// What a client saw for one submission: an HTTP status, or a connection closed without answer.
async fn outcome(c: &reqwest::Client, sim: &Simulator, n: usize) -> String {
    match post(
        c,
        sim,
        Kind::Txt2Img,
        &txt2img("seeded", &format!("req-{n}")),
    )
    .await
    {
        Ok(response) => response.status().as_u16().to_string(),
        Err(err) => {
            assert!(!err.is_timeout(), "{err:?}");
            "dropped".to_string()
        }
    }
}

async fn fault_sequence(seed: u64) -> (Vec<String>, Stats) {
    let sim = start(SimConfig {
        seed,
        error_rate: 0.25,
        drop_before: 0.1,
        drop_after: 0.1,
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let mut seen = Vec::new();
    for n in 0..40 {
        seen.push(outcome(&c, &sim, n).await);
    }
    let stats = sim.stats();
    sim.shutdown().await;
    (seen, stats)
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fault_sequence() {
    let (first, stats) = fault_sequence(7).await;
    let (again, _) = fault_sequence(7).await;
    let (other, _) = fault_sequence(8).await;
    assert_eq!(first, again);
    assert_ne!(first, other);
    for kind in ["200", "500", "dropped"] {
        assert!(first.iter().any(|s| s == kind), "{kind} in {first:?}");
    }
    let count = |kind: &str| first.iter().filter(|s| *s == kind).count() as u64;
    assert_eq!(stats.http_500, count("500"));
    assert_eq!(stats.dropped_before + stats.dropped_after, count("dropped"));
    assert_eq!(stats.accepted, count("200") + stats.dropped_after);
}

#[tokio::test]
async fn stats_count_duplicates() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    accepted(&c, &sim, Kind::Txt2Img, &txt2img("one", "dup-1")).await;
    // A duplicate is the same body sent twice; a txt2img body includes its request id.
    accepted(&c, &sim, Kind::Txt2Img, &txt2img("one", "dup-1")).await;
    accepted(&c, &sim, Kind::Txt2Img, &txt2img("two", "dup-1")).await;
    accepted(&c, &sim, Kind::Txt2Img, &txt2img("one", "dup-2")).await;
    // The same body (in any key order) is a duplicate, whatever its kind.
    let a: Value =
        serde_json::from_str(r#"{"image":"https://x.test/a.png","prompt":"p"}"#).unwrap();
    let b: Value =
        serde_json::from_str(r#"{"prompt":"p", "image":"https://x.test/a.png"}"#).unwrap();
    accepted(&c, &sim, Kind::Model, &a).await;
    accepted(&c, &sim, Kind::Model, &b).await;
    accepted(&c, &sim, Kind::Model, &model_prompt("q")).await;
    let stats = sim.stats();
    assert_eq!((stats.accepted, stats.duplicates), (7, 2));
}

#[tokio::test]
async fn drop_before_closes_the_connection_without_a_task() {
    let sim = start(SimConfig {
        drop_before: 1.0,
        ..SimConfig::default()
    })
    .await;
    let err = post(&client(), &sim, Kind::Txt2Img, &txt2img("a", "r"))
        .await
        .unwrap_err();
    assert!(err.is_request() && !err.is_timeout(), "{err:?}");
    assert!(format!("{err:?}").contains("IncompleteMessage"), "{err:?}");

    // On the wire: the request is read, and not a single byte comes back.
    let body = txt2img("b", "r2").to_string();
    let mut tcp = std::net::TcpStream::connect(sim.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        tcp,
        "POST {TXT2IMG_PATH} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer t\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        sim.addr,
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::task::spawn_blocking(move || tcp.read_to_end(&mut answer).map(|_| answer))
        .await
        .unwrap();
    match read {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }

    let stats = sim.stats();
    assert_eq!(
        (stats.submitted, stats.dropped_before, stats.accepted),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn drop_after_creates_the_task_and_closes_the_connection() {
    let sim = start(SimConfig {
        drop_after: 1.0,
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let err = post(&c, &sim, Kind::Txt2Img, &txt2img("a", "r"))
        .await
        .unwrap_err();
    assert!(err.is_request() && !err.is_timeout(), "{err:?}");
    // The client does not know; resubmitting the same request creates it twice.
    post(&c, &sim, Kind::Txt2Img, &txt2img("a", "r"))
        .await
        .unwrap_err();
    let stats = sim.stats();
    assert_eq!(
        (stats.accepted, stats.dropped_after, stats.duplicates),
        (2, 2, 1)
    );
}

#[tokio::test]
async fn a_second_instance_with_the_same_seed_answers_for_earlier_tasks() {
    let config = SimConfig {
        seed: 3,
        task_time: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let c = client();
    let first = start(config.clone()).await;
    let task = accepted(
        &c,
        &first,
        Kind::Model,
        &model_prompt("state across processes"),
    )
    .await;
    first.shutdown().await;

    let second = start(config).await;
    let (_, result) = poll_until_ended(&c, &second, Kind::Model, &task.task_id).await;
    let sub = &result.sub_task_results[0];
    assert_eq!(sub.sub_task_id, task.sub_task_ids[0]);
    assert_eq!(sub.task_status, status::DONE);
    let image = c.get(sub.image.as_deref().unwrap()).send().await.unwrap();
    assert_eq!(
        image.status(),
        200,
        "the image is served by the second instance"
    );

    // A garbled id, or an id of the other kind, is unknown.
    let mut garbled = task.task_id.clone().into_bytes();
    let i = garbled.len() - 12;
    garbled[i] = if garbled[i] == b'0' { b'1' } else { b'0' };
    let garbled = String::from_utf8(garbled).unwrap();
    assert_eq!(
        query(&c, &second, Kind::Model, &garbled).await.code,
        codes::UNKNOWN_TASK
    );
    assert_eq!(
        query(&c, &second, Kind::Txt2Img, &task.task_id).await.code,
        codes::UNKNOWN_TASK
    );
    let missing: Value = c
        .get(format!(
            "{}/results",
            Kind::Model.endpoint(Some(&second.base_url()))
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing["code"], codes::MISSING_FIELD);
    assert_eq!(second.stats().unknown_task_ids, 2);
}

#[tokio::test]
async fn wrong_or_missing_token_gets_401() {
    let sim = start(SimConfig {
        token: Some("s3cret".into()),
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let url = Kind::Txt2Img.endpoint(Some(&sim.base_url()));
    let body = json!({"prompt": "a"});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret"),
        Some("Bearer "),
    ] {
        let mut request = c.post(&url).json(&body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], codes::UNAUTHORIZED);
        assert!(
            !answer["message"].as_str().unwrap().contains("wrong"),
            "never echo a token"
        );
    }
    let ok = c
        .post(&url)
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let results = c
        .get(format!("{url}/results?task_id=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(results.status(), 401);
    assert_eq!(sim.stats().http_401, 5);

    // Without --token, any non-empty bearer token is accepted.
    let open = start(SimConfig::default()).await;
    let url = Kind::Txt2Img.endpoint(Some(&open.base_url()));
    let any = c
        .post(&url)
        .bearer_auth("anything")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(any.status(), 200);
    let none = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
}

#[tokio::test]
async fn images_are_pngs_that_differ_by_request() {
    let sim = start(SimConfig {
        task_time: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let fetch = async |prompt: &str| {
        let task = accepted(&c, &sim, Kind::Txt2Img, &json!({"prompt": prompt})).await;
        let url = format!("{}/sim/images/{}.png", sim.base_url(), task.sub_task_ids[0]);
        let response = c.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap().to_vec()
    };
    let fox = fetch("a fox").await;
    let owl = fetch("an owl").await;
    let fox_again = fetch("a fox").await;
    assert!(fox.starts_with(b"\x89PNG\r\n\x1a\n"));
    let size = imagesize::blob_size(&fox).unwrap();
    assert_eq!((size.width, size.height), (128, 128));
    assert_ne!(fox, owl, "different prompts, different tiles");
    assert_eq!(fox, fox_again, "the same request, the same image");

    let missing = c
        .get(format!("{}/sim/images/nope.png", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(sim.stats().calls.images, 4);

    // An image that is not finished yet is not there.
    let slow = start(SimConfig::default()).await;
    let task = accepted(&c, &slow, Kind::Txt2Img, &json!({"prompt": "a fox"})).await;
    let early = c
        .get(format!(
            "{}/sim/images/{}.png",
            slow.base_url(),
            task.sub_task_ids[0]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 404);
}

#[tokio::test]
async fn stats_endpoint_serves_the_counters() {
    let sim = start(SimConfig::default()).await;
    let c = client();
    accepted(
        &c,
        &sim,
        Kind::Txt2Img,
        &json!({"prompt": "a", "img_count": 3}),
    )
    .await;
    let nowhere = c
        .get(format!("{}/api-pub/nowhere", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    let served: Stats = crate::common::get_json(&c, format!("{}/sim/stats", sim.base_url())).await;
    assert_eq!(served.calls.stats, 1);
    assert_eq!(served.calls.submit_txt2img, 1);
    assert_eq!(served.calls.not_found, 1);
    assert_eq!((served.accepted, served.accepted_images), (1, 3));
    assert_eq!(served.max_images_per_minute.get(Kind::Txt2Img), 3);
    assert_eq!(served.max_in_flight, 1);
    assert_eq!(served, sim.stats());
}

#[test]
fn the_simulate_command_prints_its_address_and_stops_on_sigterm() {
    // `:0`, as the README writes it: a free port on loopback.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hidream-batch"))
        .args(["simulate", "--listen", ":0", "--latency", "0ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("hidream-batch simulator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    let stats = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            reqwest::get(format!("{url}/sim/stats"))
                .await
                .map(|r| r.status())
        })
    })
    .join()
    .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(stats.unwrap(), 200);
    assert!(killed.unwrap().success());
    assert_eq!(status.code(), Some(0), "a clean stop exits 0");
}

#[test]
fn the_simulate_command_refuses_bad_rates() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hidream-batch"))
        .args(["simulate", "--listen", "127.0.0.1:0", "--error-rate", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`--error-rate`"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn rate_burst_enforces_the_limit_as_a_steady_flow() {
    // 6 images a minute (one per 10 s), bursts of up to 3 images.
    let sim = start(SimConfig {
        rate_limit: Some(6),
        rate_burst: Some(3),
        ..SimConfig::default()
    })
    .await;
    let c = client();
    accepted(
        &c,
        &sim,
        Kind::Txt2Img,
        &json!({"prompt": "a", "img_count": 2}),
    )
    .await;
    accepted(&c, &sim, Kind::Txt2Img, &json!({"prompt": "b"})).await;
    // A rolling minute would still have room for 3 images; the flow has none for 10 s.
    let over = post(&c, &sim, Kind::Txt2Img, &json!({"prompt": "c"}))
        .await
        .unwrap();
    let (retry_after, body) = too_many(over).await;
    assert!((9..=10).contains(&retry_after), "{retry_after}");
    assert_eq!(body["code"], codes::RATE_LIMITED);
    assert!(
        body["message"].as_str().unwrap().contains("bursts up to 3"),
        "{body}"
    );
    let stats = sim.stats();
    assert_eq!((stats.accepted_images, stats.rate_limited), (3, 1));
}

#[tokio::test]
async fn throttle_rate_sheds_submissions_with_429() {
    let sim = start(SimConfig {
        throttle_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let shed = post(&c, &sim, Kind::Txt2Img, &json!({"prompt": "a"}))
        .await
        .unwrap();
    let (retry_after, body) = too_many(shed).await;
    assert_eq!(retry_after, 1);
    assert_eq!(body["code"], codes::OVERLOADED);
    let stats = sim.stats();
    assert_eq!((stats.http_429, stats.throttled, stats.accepted), (1, 1, 0));

    // A fraction sheds about that fraction, the same ones for the same seed.
    let shed_of = |seed: u64| async move {
        let sim = start(SimConfig {
            throttle_rate: 0.25,
            seed,
            ..SimConfig::default()
        })
        .await;
        let c = client();
        let mut statuses = Vec::new();
        for i in 0..200 {
            let r = post(&c, &sim, Kind::Txt2Img, &json!({"prompt": format!("p{i}")}))
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        statuses
    };
    let first = shed_of(3).await;
    let shed = first.iter().filter(|s| **s == 429).count();
    assert!((25..=75).contains(&shed), "{shed} of 200 shed");
    assert_eq!(first, shed_of(3).await, "reproducible for a seed");
}

/// Like a real server, a task exists once its request has arrived: a client that stops waiting
/// (or is killed) does not undo it. `--latency` delays the answer only.
#[tokio::test]
async fn a_task_exists_once_its_request_has_arrived_whatever_the_client_does_next() {
    let sim = start(SimConfig {
        latency: "3s".parse().unwrap(),
        ledger: hidream_batch::sim::LedgerConfig::Memory,
        ..SimConfig::default()
    })
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let body = txt2img("arrived", "req-1");
    let err = post(&impatient, &sim, Kind::Txt2Img, &body)
        .await
        .expect_err("the client gave up before the answer");
    assert!(err.is_timeout(), "{err}");
    let stats = sim.stats();
    assert_eq!((stats.submitted, stats.accepted), (1, 1));
    let created = sim.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].request_id.as_deref(), Some("req-1"));
    assert!(sim::is_task_id(&created[0].task_id));
    // The simulator marks every answer, so a client can tell it from the API.
    let head = client()
        .head(Kind::Model.endpoint(Some(&sim.base_url())))
        .send()
        .await
        .unwrap();
    assert!(head.headers().contains_key(sim::MARK_HEADER));
    assert!(!sim::is_task_id("3fe836e2-e1ce-11ee-975a-76ad3c0ace6b"));
}

/// Two identical requests accepted at once are two tasks with two task ids, as on a real server
/// (a `repeat` submits the same body again on purpose); ids once derived from the body and the
/// millisecond alone, so `repeat: 2` got one id twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_at_once_get_different_task_ids() {
    let sim = start(SimConfig {
        latency: "0ms".parse().unwrap(),
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let body = json!({"prompt": "the same fox", "img_count": 2});
    let (a, b) = tokio::join!(
        accepted(&c, &sim, Kind::Txt2Img, &body),
        accepted(&c, &sim, Kind::Txt2Img, &body)
    );
    assert_ne!(a.task_id, b.task_id);
    assert_ne!(a.sub_task_ids, b.sub_task_ids);
}
