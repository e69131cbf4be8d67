//! The simulator's HTTP surface: both submit endpoints at their real paths, their result and
//! batch-result queries, the two template lists and their covers, the generated images and
//! `/sim/stats`.
//!
//! A submit request is decided the moment it has arrived (its whole body read), in this order:
//! authentication (401), the `--max-concurrent` gate (429), `--throttle-rate` (429),
//! `--error-rate` (500), a hang-up before the task exists (`--drop-before`), validation (HTTP 200
//! with `code != 0`; with `--strict-templates`, a template id not in its lists, code 1007), the
//! account (HTTP 200: `--max-pending` 1201, then `--credits` 1202), the
//! `--rate-limit` window (429), then the task's creation. Only then does `--latency` pass, and the
//! answer (or a hang-up after the task was created, `--drop-after`) goes out. Like a real server,
//! the simulator does not undo a task because the client hung up, timed out or was killed while it
//! waited for the answer. Nothing on this path holds a lock across an `.await`; the only locks are
//! the account (held from its check to the task's creation, so that check and creation are one
//! step), the rolling-minute window (taken inside the account's lock, never the other way), a
//! shard of the duplicate set and (in tests) the ledger, each held for a few instructions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::api::{
    BATCH_RESULTS_SUFFIX, Envelope, HUMAN_TEMPLATES_PATH, Kind, MODEL_PATH, RESULTS_SUFFIX,
    SCENE_TEMPLATES_PATH, Submitted, TXT2IMG_PATH,
};

use super::RefusalResult;
use crate::logging::safe;

use super::check;
use super::codes;
use super::conn::Hangup;
use super::faults::{Draws, Pass, on_sim_clock, retry_after_secs};
use super::image;
use super::ledger::Created;
use super::shared::Shared;
use super::stats::{bump, slot};
use super::tasks::{Fate, Task, unix_ms};

mod lists;

/// Largest request body accepted: a 4096 px image in base64 fits with room to spare.
const MAX_BODY: usize = 64 << 20;

/// The router, with its state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let results = |path: &str| format!("{path}{RESULTS_SUFFIX}");
    let batch = |path: &str| format!("{path}{BATCH_RESULTS_SUFFIX}");
    Router::new()
        .route(TXT2IMG_PATH, post(submit_txt2img))
        .route(MODEL_PATH, post(submit_model))
        .route(&results(TXT2IMG_PATH), get(results_txt2img))
        .route(&results(MODEL_PATH), get(results_model))
        .route(&batch(TXT2IMG_PATH), post(batch_txt2img))
        .route(&batch(MODEL_PATH), post(batch_model))
        .route(HUMAN_TEMPLATES_PATH, get(lists::templates_human))
        .route(SCENE_TEMPLATES_PATH, get(lists::templates_scene))
        .route("/sim/templates/{file}", get(lists::template_cover))
        .route("/sim/images/{file}", get(image_file))
        .route("/sim/stats", get(stats))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(mark))
        .with_state(shared)
}

/// Every answer says it comes from the simulator (see [`super::MARK_HEADER`]), whatever the
/// path or method, so a client can tell a rehearsal from the real API before it sends anything.
async fn mark(mut response: Response) -> Response {
    response.headers_mut().insert(
        super::MARK_HEADER,
        axum::http::HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    response
}

type St = State<Arc<Shared>>;
type Conn = ConnectInfo<Hangup>;

async fn submit_txt2img(State(s): St, ConnectInfo(h): Conn, hd: HeaderMap, b: Bytes) -> Response {
    submit(Kind::Txt2Img, &s, &h, &hd, &b).await
}

async fn submit_model(State(s): St, ConnectInfo(h): Conn, hd: HeaderMap, b: Bytes) -> Response {
    submit(Kind::Model, &s, &h, &hd, &b).await
}

async fn submit(
    kind: Kind,
    s: &Shared,
    hangup: &Hangup,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let c = &s.counters;
    bump(&c.submit[slot(kind)]);
    let _in_flight = c.arrive();
    let seq = s.seq.fetch_add(1, Ordering::Relaxed);
    let draws = Draws::new(&s.config, seq);
    // Everything is decided, and the task created, now: the request has arrived. A client that
    // hangs up, times out or is killed from here on does not undo it, as on a real server.
    // `--latency` delays only the answer (the concurrency gate is held until then).
    let (pass, answer) = arrive(kind, s, &draws, seq, headers, body);
    if !draws.latency.is_zero() {
        tokio::time::sleep(draws.latency).await;
    }
    drop(pass);
    match answer {
        Answer::Send(response) => response,
        Answer::HangUp => {
            hangup.hang_up();
            StatusCode::OK.into_response() // never reaches the client
        }
    }
}

/// What a submission gets, decided on arrival.
enum Answer {
    Send(Response),
    /// Close the connection without answering.
    HangUp,
}

/// Decide a submission on arrival, in the order of the module docs; a task it accepts exists when
/// this returns. The gate pass (if any) is returned to be held until the answer.
fn arrive(
    kind: Kind,
    s: &Shared,
    draws: &Draws,
    seq: u64,
    headers: &HeaderMap,
    body: &[u8],
) -> (Option<Pass>, Answer) {
    let c = &s.counters;
    let request_id = || draws.request_uuid.to_string();
    if let Err(why) = s.authenticate(headers) {
        bump(&c.http_401);
        tracing::debug!(seq, %kind, "401: {why}");
        let response = answer(
            s,
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            why,
            request_id(),
        );
        return (None, Answer::Send(response));
    }
    // The gate is passed on arrival and held until the answer, latency included.
    let Some(pass) = s.gate.admit(s.config.max_concurrent) else {
        bump(&c.concurrency_limited);
        let max = s.config.max_concurrent.unwrap_or(0);
        let message = format!("more than {max} requests in flight; retry later");
        tracing::debug!(seq, %kind, "429: {message}");
        let response = too_many(s, codes::TOO_MANY_IN_FLIGHT, message, 1, request_id());
        return (None, Answer::Send(response));
    };
    let pass = Some(pass);
    if draws.throttle {
        bump(&c.throttled);
        let message = "overloaded (`--throttle-rate`); retry later".to_string();
        tracing::debug!(seq, %kind, "429: {message}");
        let response = too_many(s, codes::OVERLOADED, message, 1, request_id());
        return (pass, Answer::Send(response));
    }
    if draws.error {
        bump(&c.http_500);
        let message = "simulated server error (`--error-rate`)";
        tracing::debug!(seq, %kind, "500: {message}");
        let response = answer(
            s,
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::SERVER_ERROR,
            message,
            request_id(),
        );
        return (pass, Answer::Send(response));
    }
    if draws.drop_before {
        bump(&c.dropped_before);
        tracing::debug!(seq, %kind, "hanging up before creating the task (`--drop-before`)");
        return (pass, Answer::HangUp);
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let checked = match check::submission(kind, content_type, body) {
        Ok(checked) => checked,
        Err(rejection) => {
            c.reject(rejection.reason);
            tracing::debug!(seq, %kind, code = rejection.code, "rejected: {}", safe(&rejection.message));
            let response = answer(
                s,
                StatusCode::OK,
                rejection.code,
                rejection.message,
                request_id(),
            );
            return (pass, Answer::Send(response));
        }
    };
    if s.config.strict_templates
        && kind == Kind::Model
        && let Some((field, message)) = lists::unknown_template(body)
    {
        c.reject(field);
        tracing::debug!(seq, %kind, "rejected: {}", safe(&message));
        let response = answer(
            s,
            StatusCode::OK,
            codes::UNKNOWN_TEMPLATE,
            message,
            request_id(),
        );
        return (pass, Answer::Send(response));
    }
    // Held until the task is created: the account counts it from then, atomically with its check.
    // A refusal further on (the rate window) drops it, and the account registers nothing.
    let admission = match s.account.admit(checked.images) {
        Ok(admission) => admission,
        Err(refusal) => {
            tracing::debug!(seq, %kind, code = refusal.code(), "refused: {}", refusal.message());
            let response = answer(
                s,
                StatusCode::OK,
                refusal.code(),
                refusal.message(),
                request_id(),
            );
            return (pass, Answer::Send(response));
        }
    };
    let now_ms = s.started.elapsed().as_millis() as u64;
    let added = s.windows.0[slot(kind)]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .try_add(
            now_ms,
            checked.images,
            s.config.rate_limit,
            s.config.rate_burst,
        );
    let window_total = match added {
        Ok(total) => total,
        Err(wait) => {
            bump(&c.rate_limited);
            let limit = s.config.rate_limit.unwrap_or(0);
            let message = format!(
                "{} more {kind} images would exceed {limit} per {}; retry later",
                checked.images,
                match s.config.rate_burst {
                    Some(burst) => format!("minute (bursts up to {burst})"),
                    None => "rolling minute".to_string(),
                }
            );
            tracing::debug!(seq, %kind, "429: {message}");
            let response = too_many(
                s,
                codes::RATE_LIMITED,
                message,
                retry_after_secs(on_sim_clock(wait, s.config.rate_minute)),
                request_id(),
            );
            return (pass, Answer::Send(response));
        }
    };
    let mut fates = draws.fates;
    for fate in fates.iter_mut().skip(checked.images as usize) {
        *fate = Fate::Done;
    }
    let task = Task {
        kind,
        created_ms: admission.created_ms(),
        run_ms: Task::run_ms_of(s.config.task_time),
        count: checked.images as u8,
        fates,
        hash: checked.hash,
        seq,
    };
    admission.commit();
    let (task_id, sub_task_ids) = task.ids();
    c.accept(kind, checked.images, checked.key, window_total);
    s.ledger.record(Created {
        kind,
        request_id: checked.request_id.clone(),
        task_id: task_id.clone(),
        key: checked.key,
    });
    if draws.drop_after {
        bump(&c.dropped_after);
        tracing::debug!(seq, %kind, "hanging up after creating the task (`--drop-after`)");
        return (pass, Answer::HangUp);
    }
    let response = Json(Envelope {
        code: codes::OK,
        message: "Success".to_string(),
        request_id: Some(checked.request_id.unwrap_or_else(request_id)),
        result: Some(Submitted {
            task_id,
            sub_task_ids,
        }),
    })
    .into_response();
    (pass, Answer::Send(response))
}

/// The query string of a result query. `request_id`, which some clients send, is ignored.
#[derive(Debug, Deserialize)]
struct ResultsQuery {
    task_id: Option<String>,
}

async fn results_txt2img(State(s): St, hd: HeaderMap, Query(q): Query<ResultsQuery>) -> Response {
    results(Kind::Txt2Img, &s, &hd, q)
}

async fn results_model(State(s): St, hd: HeaderMap, Query(q): Query<ResultsQuery>) -> Response {
    results(Kind::Model, &s, &hd, q)
}

/// A query without the right bearer token: HTTP 401 (counted), or `None` to go on.
fn refuse_unauthenticated(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let why = s.authenticate(headers).err()?;
    bump(&s.counters.http_401);
    Some(answer(
        s,
        StatusCode::UNAUTHORIZED,
        codes::UNAUTHORIZED,
        why,
        fresh_id(),
    ))
}

fn results(kind: Kind, s: &Shared, headers: &HeaderMap, query: ResultsQuery) -> Response {
    let c = &s.counters;
    bump(&c.results[slot(kind)]);
    if let Some(refused) = refuse_unauthenticated(s, headers) {
        return refused;
    }
    let Some(id) = query.task_id.filter(|id| !id.is_empty()) else {
        let message = "`task_id` is required (`?task_id=…`)";
        return answer(s, StatusCode::OK, codes::MISSING_FIELD, message, fresh_id());
    };
    match s.task_result(kind, &id, &s.origin(headers)) {
        Some(result) => success(result),
        None => {
            bump(&c.unknown_task_ids);
            answer(
                s,
                StatusCode::OK,
                codes::UNKNOWN_TASK,
                unknown_task(kind, &id),
                fresh_id(),
            )
        }
    }
}

async fn batch_txt2img(State(s): St, hd: HeaderMap, b: Bytes) -> Response {
    batch(Kind::Txt2Img, &s, &hd, &b)
}

async fn batch_model(State(s): St, hd: HeaderMap, b: Bytes) -> Response {
    batch(Kind::Model, &s, &hd, &b)
}

/// `POST …/results/batch`: one entry per task id, in the order asked; any unknown id refuses the
/// whole query (code 1101, naming it), so a client never mistakes a typo for a pending task.
fn batch(kind: Kind, s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let c = &s.counters;
    bump(&c.batch_results[slot(kind)]);
    if let Some(refused) = refuse_unauthenticated(s, headers) {
        return refused;
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let ids = match check::batch_query(content_type, body) {
        Ok(ids) => ids,
        Err(rejection) => {
            return answer(
                s,
                StatusCode::OK,
                rejection.code,
                rejection.message,
                fresh_id(),
            );
        }
    };
    let origin = s.origin(headers);
    let mut results = Vec::with_capacity(ids.len());
    for id in &ids {
        match s.task_result(kind, id, &origin) {
            Some(result) => results.push(result),
            None => {
                bump(&c.unknown_task_ids);
                return answer(
                    s,
                    StatusCode::OK,
                    codes::UNKNOWN_TASK,
                    unknown_task(kind, id),
                    fresh_id(),
                );
            }
        }
    }
    success(results)
}

fn unknown_task(kind: Kind, id: &str) -> String {
    let shown: String = id.chars().take(80).collect();
    format!("unknown `task_id` `{shown}`: not a {kind} task of this simulator")
}

/// `GET /sim/images/<sub_task_id>.png`, or `/sim/images/<sub_task_id>` (for a client that builds
/// image URLs from bare ids, `--bare-image-ids`), for finished images only.
async fn image_file(State(s): St, Path(file): Path<String>) -> Response {
    bump(&s.counters.images);
    let id = file.strip_suffix(".png").unwrap_or(&file);
    let found = Task::parse_sub(id).filter(|(task, index)| task.is_done(*index, unix_ms()));
    match found {
        Some((task, index)) => (
            [
                (CONTENT_TYPE, "image/png"),
                (CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            image::tile(task.hash, index),
        )
            .into_response(),
        None => {
            let shown: String = file.chars().take(80).collect();
            let message = format!("no finished image `{shown}`");
            answer(
                &s,
                StatusCode::NOT_FOUND,
                codes::NOT_FOUND,
                message,
                fresh_id(),
            )
        }
    }
}

async fn stats(State(s): St) -> Response {
    bump(&s.counters.stats);
    Json(s.stats()).into_response()
}

async fn not_found(State(s): St, uri: axum::http::Uri) -> Response {
    bump(&s.counters.not_found);
    let path: String = uri.path().chars().take(120).collect();
    let message = format!("no endpoint `{path}` in the simulator");
    answer(
        &s,
        StatusCode::NOT_FOUND,
        codes::NOT_FOUND,
        message,
        fresh_id(),
    )
}

/// A `request_id` for answers outside the seeded submit path.
fn fresh_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

fn success<T: serde::Serialize>(result: T) -> Response {
    Json(Envelope {
        code: codes::OK,
        message: "Success".to_string(),
        request_id: Some(fresh_id()),
        result: Some(result),
    })
    .into_response()
}

/// An answer with no result: an error, or a rejection. Its `result` is written as
/// `--refusal-result` says (`null` by default; `{}` or absent, as other servers write "no result").
fn answer(
    s: &Shared,
    status: StatusCode,
    code: i64,
    message: impl Into<String>,
    request_id: String,
) -> Response {
    let mut envelope = serde_json::json!({
        "code": code,
        "message": message.into(),
        "request_id": request_id,
    });
    match s.config.refusal_result {
        RefusalResult::Null => envelope["result"] = serde_json::Value::Null,
        RefusalResult::Empty => envelope["result"] = serde_json::json!({}),
        RefusalResult::Absent => {}
    }
    (status, Json(envelope)).into_response()
}

fn too_many(
    s: &Shared,
    code: i64,
    message: String,
    retry_after: u64,
    request_id: String,
) -> Response {
    let mut response = answer(s, StatusCode::TOO_MANY_REQUESTS, code, message, request_id);
    response.headers_mut().insert(
        RETRY_AFTER,
        retry_after.to_string().parse().expect("digits"),
    );
    response
}
