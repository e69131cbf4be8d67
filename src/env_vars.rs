//! Every environment variable hidream-batch reads, as a documented constant.

use std::sync::OnceLock;
use std::time::Duration;

/// The API token, sent as `Authorization: Bearer …`. Required for the real API; never printed,
/// logged or written anywhere.
pub const API_TOKEN: &str = "HIDREAM_API_TOKEN";
/// Optional user id, sent as `API-User-ID` on the endpoints that list it (text-to-image).
pub const API_USER_ID: &str = "HIDREAM_API_USER_ID";
/// Standard tracing filter, e.g. `RUST_LOG=hidream_batch=debug`; overrides `-v`/`-q`.
pub const RUST_LOG: &str = "RUST_LOG";
/// The folder of hidream-batch's cache (the template lists of `--check-templates` and the
/// contact sheet's template names). Unset: `$XDG_CACHE_HOME/hidream-batch`, else
/// `~/.cache/hidream-batch`.
pub const CACHE_DIR: &str = "HIDREAM_BATCH_CACHE_DIR";
/// Test hook: a positive factor (e.g. `0.1`) that scales every wait the client makes by design
/// — the rate limiter's window and its even pacing, the retry delays (`Retry-After` and the
/// `--backoff-max` cap included) — so that tests of those waits take seconds, not minutes. Request
/// timeouts are not scaled, nor the plan's estimate. Unset, unparsable, zero, negative or not
/// finite: 1 (no scaling). Read once ([`time_scale`]). Not for production use: below 1 a run sends
/// faster than `--rate` allows, and the API answers HTTP 429.
pub const TIME_SCALE: &str = "HIDREAM_BATCH_TIME_SCALE";
/// Test hook: abort the process at a named point of the journal, as a power cut would —
/// `compacted` (the results rewritten at the start of a run, the write-ahead log not yet
/// emptied), `settled` (the results synced, the `done` lines not yet written), `finished` (the
/// final rewrite done, the log not yet emptied). Not for production use.
pub const CRASH_AT: &str = "HIDREAM_BATCH_CRASH_AT";

/// The factor of the test hook [`TIME_SCALE`], read once: 1 when it is unset or not a positive
/// finite number.
pub fn time_scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| {
        let Ok(value) = std::env::var(TIME_SCALE) else {
            return 1.0;
        };
        match parse_time_scale(&value) {
            Some(scale) => {
                if scale != 1.0 {
                    tracing::warn!("{TIME_SCALE}={scale}: every wait is scaled (a test hook)");
                }
                scale
            }
            None => {
                tracing::warn!("{TIME_SCALE}={value:?} ignored: not a positive number");
                1.0
            }
        }
    })
}

/// A [`TIME_SCALE`] value as a factor, if it is a positive finite number.
fn parse_time_scale(value: &str) -> Option<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f > 0.0)
}

/// `d` times `factor` (a positive finite number), saturating; exactly `d` when `factor` is 1.
pub fn scale(d: Duration, factor: f64) -> Duration {
    if factor == 1.0 {
        return d;
    }
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_positive_finite_factor_scales() {
        assert_eq!(parse_time_scale("0.1"), Some(0.1));
        assert_eq!(parse_time_scale(" 2 "), Some(2.0));
        for ignored in ["", "fast", "0", "-0.5", "inf", "NaN", "1e999"] {
            assert_eq!(parse_time_scale(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn scaling_is_exact_at_1_and_saturates() {
        let d = Duration::from_nanos(60_500_000_001);
        assert_eq!(scale(d, 1.0), d);
        assert_eq!(
            scale(Duration::from_millis(60_500), 0.1),
            Duration::from_millis(6_050)
        );
        assert_eq!(scale(Duration::from_secs(60), 0.5), Duration::from_secs(30));
        assert_eq!(scale(Duration::MAX, 2.0), Duration::MAX);
    }
}
