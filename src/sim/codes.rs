//! The `code` values the simulator answers with.
//!
//! HiDream documents only `0` (success) and, for one product-image field, `1051`; its real error
//! codes, and the HTTP statuses of authentication failures and limits, are undocumented (API
//! reference §11). These are the simulator's own choices, stable so tests can match on them:
//!
//! | code | HTTP | meaning |
//! |---|---|---|
//! | 0 | 200 | success |
//! | 1000 | 200 | the body is not a JSON object, or `Content-Type` is not `application/json` |
//! | 1001 | 200 | a field has the wrong type or a value outside its documented set or range (also a `task_id_list` over 1000 ids, a template list's `page_size` outside 1–100 or `page_index` below 1) |
//! | 1002 | 200 | an unknown field (the message names it) |
//! | 1003 | 200 | a required field is missing or empty (also `task_id` / `task_id_list` of a result query) |
//! | 1004 | 200 | model `prompt` longer than 500 characters |
//! | 1005 | 200 | bad `image`/`mask`: neither an http(s) URL nor base64, a `data:` prefix, not PNG/JPEG/WebP, corrupt, or over 4096 px on a side |
//! | 1006 | 200 | model: both or neither of `template` and `prompt` |
//! | 1007 | 200 | model: a `template` id that is not in the simulator's template lists (`--strict-templates`) |
//! | 1101 | 200 | result query: unknown or garbled `task_id` |
//! | 1201 | 200 | as many unfinished tasks as `--max-pending` allows (the API's concurrency limit per membership tier) |
//! | 1202 | 200 | not enough credit left for the request's images (`--credits`) |
//! | 4001 | 401 | missing or wrong bearer token |
//! | 4004 | 404 | no such endpoint, or no such (finished) image |
//! | 4291 | 429 | over `--rate-limit` images per rolling minute (with `Retry-After`) |
//! | 4292 | 429 | over `--max-concurrent` submit requests in flight (with `Retry-After`) |
//! | 4293 | 429 | shed at random (`--throttle-rate`, with `Retry-After: 1`) |
//! | 5000 | 500 | simulated server error (`--error-rate`) |

/// Success.
pub const OK: i64 = 0;
/// The body is not a JSON object, or `Content-Type` is not `application/json`.
pub const BAD_BODY: i64 = 1000;
/// A field has the wrong type or a value outside its documented set or range.
pub const INVALID_VALUE: i64 = 1001;
/// A field the endpoint does not document.
pub const UNKNOWN_FIELD: i64 = 1002;
/// A required field is missing or empty.
pub const MISSING_FIELD: i64 = 1003;
/// Model `prompt` longer than 500 characters.
pub const PROMPT_TOO_LONG: i64 = 1004;
/// A bad `image` or `mask`.
pub const BAD_IMAGE: i64 = 1005;
/// Model: both or neither of `template` and `prompt`.
pub const TEMPLATE_XOR_PROMPT: i64 = 1006;
/// Model: a template id the simulator's lists do not have (`--strict-templates`).
pub const UNKNOWN_TEMPLATE: i64 = 1007;
/// Result query: a task id this simulator never issued.
pub const UNKNOWN_TASK: i64 = 1101;
/// As many unfinished tasks as `--max-pending` allows; the message is
/// `并行任务数已达上限（N），请等待任务完成后再提交`.
pub const PENDING_LIMIT: i64 = 1201;
/// Less credit left than the request's images (`--credits`); the message is
/// `积分不足，请充值后再试`.
pub const NO_CREDITS: i64 = 1202;
/// HTTP 401: missing or wrong bearer token.
pub const UNAUTHORIZED: i64 = 4001;
/// HTTP 404: no such endpoint or image.
pub const NOT_FOUND: i64 = 4004;
/// HTTP 429: over the images-per-minute limit.
pub const RATE_LIMITED: i64 = 4291;
/// HTTP 429: over the in-flight request limit.
pub const TOO_MANY_IN_FLIGHT: i64 = 4292;
/// HTTP 429: shed at random (`--throttle-rate`).
pub const OVERLOADED: i64 = 4293;
/// HTTP 500: simulated server error.
pub const SERVER_ERROR: i64 = 5000;
