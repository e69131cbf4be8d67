//! Every environment variable hidream-batch reads, as a documented constant.

/// The API token, sent as `Authorization: Bearer …`. Required for the real API; never printed,
/// logged or written anywhere.
pub const API_TOKEN: &str = "HIDREAM_API_TOKEN";
/// Optional user id, sent as `API-User-ID` on the endpoints that list it (text-to-image).
pub const API_USER_ID: &str = "HIDREAM_API_USER_ID";
/// Standard tracing filter, e.g. `RUST_LOG=hidream_batch=debug`; overrides `-v`/`-q`.
pub const RUST_LOG: &str = "RUST_LOG";
/// Test hook: scales every retry delay (e.g. `0.001`), so retry tests do not wait whole seconds.
/// Not for production use.
pub const BACKOFF_SCALE: &str = "HIDREAM_BATCH_BACKOFF_SCALE";
/// Test hook: abort the process at a named point of the journal, as a power cut would —
/// `compacted` (the results rewritten at the start of a run, the write-ahead log not yet
/// emptied), `settled` (the results synced, the `done` lines not yet written), `finished` (the
/// final rewrite done, the log not yet emptied). Not for production use.
pub const CRASH_AT: &str = "HIDREAM_BATCH_CRASH_AT";
