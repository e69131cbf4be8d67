//! Every default of the command line, in one place: clap shows these in `--help`, and code that
//! needs a default without a flag (`run --collect` polls at `collect`'s defaults, `run --simulate`
//! starts the simulator at `simulate`'s latency) reads the same constant. Durations are written as
//! the user would type them and read with [`duration`].

use std::time::Duration;

/// `--max-requests`: manifests that expand to more are refused.
pub const DEFAULT_MAX_REQUESTS: u64 = 1_000_000;
/// `--concurrency`: HTTP requests in flight at once.
pub const DEFAULT_CONCURRENCY: u32 = 4;
/// `--rate`: images per rolling minute per endpoint, the API's documented text-to-image limit.
pub const DEFAULT_RATE: u32 = crate::api::DOCUMENTED_TXT2IMG_RATE;
/// `run --max-consecutive-rejections`: the breaker stops a run after this many refusals in a
/// row with the same code (an account out of credits); 0 = off. Ten: few enough that an account
/// refusing everything costs ten rows, not the manifest; more than a stray refusal or two. A job
/// whose every request the API refuses for one reason (an unknown template id) trips it too,
/// which stops sending a batch that is failing; the message names the code.
pub const DEFAULT_MAX_CONSECUTIVE_REJECTIONS: u32 = 10;
/// `--max-attempts`: attempts per request, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// `--backoff`: the first retry delay.
pub const DEFAULT_BACKOFF: &str = "1s";
/// `--backoff-max`: the longest retry delay (and the cap on `Retry-After`).
pub const DEFAULT_BACKOFF_MAX: &str = "60s";
/// `run --timeout` and `collect --request-timeout`: one HTTP attempt.
pub const DEFAULT_TIMEOUT: &str = "60s";
/// `run --out` and `collect --results`.
pub const DEFAULT_RESULTS: &str = "results.csv";
/// `collect --out`.
pub const DEFAULT_IMAGES_DIR: &str = "images";
/// `collect --poll-interval` (HiDream's own clients poll every 5 s).
pub const DEFAULT_POLL_INTERVAL: &str = "5s";
/// `--poll-rate`: task queries per minute per endpoint (50 a second; the API documents no limit
/// on queries, and 10,000 tasks are each asked once in under 4 minutes).
pub const DEFAULT_POLL_RATE: u32 = 3_000;
/// `--image-url-template`: the CDN HiDream's own client builds image URLs on from bare ids.
pub const DEFAULT_IMAGE_URL_TEMPLATE: &str = "https://storage-cdn.hidreamai.com/image/{id}.jpg";
/// `collect --timeout`: how long `--wait` polls (HiDream's model-image client caps at 30 minutes).
pub const DEFAULT_WAIT_TIMEOUT: &str = "30m";
/// `simulate --listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// `simulate --latency` (also `run --simulate`'s, so a rehearsal feels like the real API).
pub const DEFAULT_LATENCY: &str = "50ms";
/// `simulate --task-time`.
pub const DEFAULT_TASK_TIME: &str = "2s";

/// `templates --page-size`: the most the API serves a page (its own default is 20), so a list
/// takes the fewest queries; `--check-templates` asks for as many.
pub const DEFAULT_TEMPLATE_PAGE_SIZE: u32 = crate::api::MAX_TEMPLATE_PAGE_SIZE;

/// A default duration above, as a [`Duration`].
pub fn duration(text: &str) -> Duration {
    crate::units::parse_duration(text).expect("the defaults are valid durations")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_duration_parses() {
        for d in [
            DEFAULT_BACKOFF,
            DEFAULT_BACKOFF_MAX,
            DEFAULT_TIMEOUT,
            DEFAULT_POLL_INTERVAL,
            DEFAULT_WAIT_TIMEOUT,
            DEFAULT_TASK_TIME,
            DEFAULT_LATENCY,
        ] {
            assert!(duration(d) > Duration::ZERO, "{d}");
        }
        assert_eq!(duration(DEFAULT_WAIT_TIMEOUT), Duration::from_secs(30 * 60));
    }
}
