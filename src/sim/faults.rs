//! Limits and faults: what makes the simulator misbehave on purpose, reproducibly.
//!
//! Every random choice about a submit request is a pure function of `(seed, n)`, where `n` is the
//! request's sequence number (the n-th submit request this process received, both endpoints
//! counted, from 0). The same seed and the same sequence of requests therefore give the same
//! latencies, HTTP 500s, dropped connections and task outcomes. (A function of the body hash
//! instead would make every retry of a failed request fail again.)
//!
//! The limits are exact rather than random: a rolling-minute image window per endpoint, and a gate
//! on the number of submit requests in flight. The "minute" is [`SimConfig::rate_minute`]: 60 s
//! unless a test shortens it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::SimConfig;
use super::hash::mix;
use super::tasks::Fate;

/// The random choices for one submit request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Draws {
    pub latency: Duration,
    /// Answer HTTP 500.
    pub error: bool,
    /// Close the connection before creating the task.
    pub drop_before: bool,
    /// Create the task, then close the connection without answering.
    pub drop_after: bool,
    /// Answer HTTP 429 (`--throttle-rate`).
    pub throttle: bool,
    /// How each image of the task, if one is created, ends.
    pub fates: [Fate; 4],
    /// The response's `request_id` when the client sent none.
    pub request_uuid: uuid::Uuid,
}

impl Draws {
    pub(crate) fn new(config: &SimConfig, seq: u64) -> Draws {
        let mut rng = fastrand::Rng::with_seed(mix(config.seed ^ mix(seq.wrapping_add(1))));
        let error = rng.f64() < config.error_rate;
        let drop_before = rng.f64() < config.drop_before;
        let drop_after = rng.f64() < config.drop_after;
        let fates = std::array::from_fn(|_| {
            let u = rng.f64();
            if u < config.fail_rate {
                Fate::Failed
            } else if u < config.fail_rate + config.refuse_rate {
                Fate::Refused
            } else {
                Fate::Done
            }
        });
        let request_uuid = uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes()).into_uuid();
        // Drawn last, so that changing `--latency` leaves the fault sequence as it was.
        let latency = config.latency.sample(&mut rng);
        // After the latency, so that earlier seeds keep their sequences.
        let throttle = rng.f64() < config.throttle_rate;
        Draws {
            latency,
            error,
            drop_before,
            drop_after,
            throttle,
            fates,
            request_uuid,
        }
    }
}

/// Buckets in a minute.
const TICKS: usize = 600;

/// Images accepted in the last minute on one endpoint, in buckets of a 600th of a minute (100 ms
/// of a 60-second minute). The window is never stricter than an exact rolling minute and at most
/// one bucket more lenient (and under 600 µs more when the minute is not a whole number of
/// 600 µs). With a burst (`--rate-burst`) the limit is checked by a leaky bucket instead; the
/// window still counts, for the statistics.
#[derive(Debug)]
pub(crate) struct Window {
    buckets: Box<[u32; TICKS]>,
    /// The newest tick seen.
    tick: u64,
    /// Sum of the buckets.
    sum: u64,
    /// The leaky bucket's theoretical arrival time (GCRA), in milliseconds: when it will be empty.
    empty_at_ms: f64,
    /// The length of the minute.
    minute: Duration,
    /// Width of one bucket, in microseconds: a 600th of the minute, rounded down.
    tick_us: u64,
}

impl Window {
    /// An empty window over a `minute` of at least 1 ms ([`SimConfig::check`]).
    pub(crate) fn new(minute: Duration) -> Window {
        Window {
            buckets: Box::new([0; TICKS]),
            tick: 0,
            sum: 0,
            empty_at_ms: 0.0,
            minute,
            tick_us: (minute.as_micros() / TICKS as u128).clamp(1, u128::from(u64::MAX)) as u64,
        }
    }

    /// Forget the buckets that left the window by `now_tick`.
    fn advance(&mut self, now_tick: u64) {
        if now_tick <= self.tick {
            return;
        }
        let steps = (now_tick - self.tick).min(TICKS as u64);
        for t in (now_tick + 1 - steps)..=now_tick {
            let slot = &mut self.buckets[(t % TICKS as u64) as usize];
            self.sum -= u64::from(*slot);
            *slot = 0;
        }
        self.tick = now_tick;
    }

    /// Add `images` at `now_ms` (milliseconds on a monotonic clock) unless that would exceed
    /// `limit` images in the window. `Ok` carries the window's new total; `Err` how long until
    /// the images would fit.
    pub(crate) fn try_add(
        &mut self,
        now_ms: u64,
        images: u32,
        limit: Option<u32>,
        burst: Option<u32>,
    ) -> Result<u64, Duration> {
        let now_tick = now_ms * 1000 / self.tick_us;
        self.advance(now_tick);
        match (limit, burst) {
            (Some(limit), Some(burst)) => self.flow(now_ms, images, limit, burst)?,
            (Some(limit), None) => {
                let limit = u64::from(limit);
                let need = u64::from(images);
                if self.sum + need > limit {
                    return Err(self.wait_for(now_ms, need, limit));
                }
            }
            (None, _) => {}
        }
        self.buckets[(now_tick % TICKS as u64) as usize] += images;
        self.sum += u64::from(images);
        Ok(self.sum)
    }

    /// The leaky bucket: it drains `limit` images a minute and holds `burst` (or one request,
    /// if larger); `images` more must fit. `Err` carries how long until they would.
    fn flow(&mut self, now_ms: u64, images: u32, limit: u32, burst: u32) -> Result<(), Duration> {
        let per_image_ms = self.minute.as_secs_f64() * 1000.0 / f64::from(limit);
        let now = now_ms as f64;
        let level = (self.empty_at_ms - now).max(0.0) / per_image_ms;
        let over = level + f64::from(images) - f64::from(burst.max(images));
        if over > 1e-9 {
            return Err(Duration::from_secs_f64(over * per_image_ms / 1000.0));
        }
        self.empty_at_ms = self.empty_at_ms.max(now) + f64::from(images) * per_image_ms;
        Ok(())
    }

    /// Time until the oldest buckets have expired enough to fit `need` more images.
    fn wait_for(&self, now_ms: u64, need: u64, limit: u64) -> Duration {
        if need > limit {
            // Never fits; tell the client to wait a whole window.
            return self.minute;
        }
        let oldest = (self.tick + 1).saturating_sub(TICKS as u64);
        let mut freed = 0;
        for t in oldest..=self.tick {
            freed += u64::from(self.buckets[(t % TICKS as u64) as usize]);
            if self.sum - freed + need <= limit {
                let expires_us = (t + TICKS as u64) * self.tick_us;
                return Duration::from_micros(expires_us.saturating_sub(now_ms * 1000));
            }
        }
        self.minute
    }
}

/// The `--max-concurrent` gate: a count of admitted submit requests.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    admitted: Arc<AtomicU32>,
}

/// An admitted request's place at the gate, given back when dropped.
#[derive(Debug)]
pub(crate) struct Pass(Option<Arc<AtomicU32>>);

impl Gate {
    /// Admit one more request unless `max` are already admitted.
    pub(crate) fn admit(&self, max: Option<u32>) -> Option<Pass> {
        let Some(max) = max else {
            return Some(Pass(None));
        };
        let now = self.admitted.fetch_add(1, Ordering::AcqRel) + 1;
        if now > max {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Pass(Some(self.admitted.clone())))
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(admitted) = &self.0 {
            admitted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A `Retry-After` value in whole seconds (rounded up, at least 1).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

/// `wait` on the clock of a simulator whose minute lasts `minute`, in its seconds (a 60th of its
/// minute): what its `Retry-After` counts, so that a client whose waits are scaled by the same
/// factor (the test hook [`crate::env_vars::TIME_SCALE`]) waits `wait`. Exactly `wait` with the
/// 60-second minute.
pub(crate) fn on_sim_clock(wait: Duration, minute: Duration) -> Duration {
    let real = Duration::from_secs(60);
    if minute == real {
        return wait;
    }
    Duration::try_from_secs_f64(wait.as_secs_f64() * real.as_secs_f64() / minute.as_secs_f64())
        .unwrap_or(Duration::MAX)
}

/// The window of each endpoint, locked only for the few instructions of a check-and-add.
#[derive(Debug)]
pub(crate) struct Windows(pub [Mutex<Window>; 2]);

impl Windows {
    /// Both endpoints' windows over a `minute`.
    pub(crate) fn new(minute: Duration) -> Windows {
        Windows([
            Mutex::new(Window::new(minute)),
            Mutex::new(Window::new(minute)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Latency;

    #[test]
    fn window_limits_a_rolling_minute() {
        let mut w = Window::new(Duration::from_secs(60));
        let base = 1_000_000;
        assert_eq!(w.try_add(base, 4, Some(10), None), Ok(4));
        assert_eq!(w.try_add(base + 30_000, 4, Some(10), None), Ok(8));
        let wait = w.try_add(base + 30_000, 4, Some(10), None).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(30),
            "the first 4 images leave at base + 60 s"
        );
        assert_eq!(retry_after_secs(wait), 30);
        assert!(w.try_add(base + 59_999, 3, Some(10), None).is_err());
        assert_eq!(w.try_add(base + 60_000, 4, Some(10), None), Ok(8));
        assert_eq!(
            w.try_add(base + 200_000, 1, Some(10), None),
            Ok(1),
            "all expired"
        );
        assert_eq!(
            w.try_add(base + 200_000, 11, Some(10), None),
            Err(Duration::from_secs(60))
        );
        assert_eq!(w.try_add(base + 200_000, 500, None, None), Ok(501));
    }

    #[test]
    fn a_burst_limit_lets_a_steady_flow_through_and_stops_a_burst() {
        // 1,200 a minute: one image per 50 ms; bursts of up to 5 images.
        let mut w = Window::new(Duration::from_secs(60));
        let base = 1_000_000;
        for i in 0..5 {
            assert!(
                w.try_add(base, 1, Some(1200), Some(5)).is_ok(),
                "burst image {i}"
            );
        }
        let wait = w.try_add(base, 1, Some(1200), Some(5)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50), "one image drains in 50 ms");
        assert!(w.try_add(base + 50, 1, Some(1200), Some(5)).is_ok());
        // After the bucket drains, an even flow at the rate is never refused...
        let start = base + 10_000;
        for i in 0..2_000u64 {
            assert!(
                w.try_add(start + i * 50, 1, Some(1200), Some(5)).is_ok(),
                "paced image {i}"
            );
        }
        // ...and a request of four images counts four.
        let later = start + 200_000;
        assert!(w.try_add(later, 4, Some(1200), Some(5)).is_ok());
        assert_eq!(
            w.try_add(later, 4, Some(1200), Some(5)).unwrap_err(),
            Duration::from_millis(150)
        );
        // A request larger than the burst fits an empty bucket.
        assert!(w.try_add(later + 60_000, 9, Some(1200), Some(5)).is_ok());
    }

    /// A minute of 6 s (for a client run with `HIDREAM_BATCH_TIME_SCALE=0.1`): the same limits,
    /// a tenth of the time.
    #[test]
    fn a_short_minute_scales_the_window_and_the_bucket() {
        let six = Duration::from_secs(6);
        let mut w = Window::new(six);
        let base = 1_000_000;
        assert_eq!(w.try_add(base, 4, Some(10), None), Ok(4));
        assert_eq!(w.try_add(base + 3_000, 4, Some(10), None), Ok(8));
        let wait = w.try_add(base + 3_000, 4, Some(10), None).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(3),
            "the first 4 leave at base + 6 s"
        );
        assert_eq!(retry_after_secs(wait), 3);
        assert!(w.try_add(base + 5_999, 3, Some(10), None).is_err());
        assert_eq!(w.try_add(base + 6_000, 4, Some(10), None), Ok(8));
        assert_eq!(w.try_add(base + 20_000, 11, Some(10), None), Err(six));
        // Retry-After counts the simulator's seconds: 3 s of a 6-second minute are 30 of them,
        // which a client scaled by 0.1 waits as 3 s.
        assert_eq!(retry_after_secs(on_sim_clock(wait, six)), 30);
        let minute = Duration::from_secs(60);
        assert_eq!(on_sim_clock(wait, minute), wait);
        // 1,200 a 6-second minute: one image per 5 ms; bursts of up to 5 images.
        let mut w = Window::new(six);
        for _ in 0..5 {
            assert!(w.try_add(base, 1, Some(1200), Some(5)).is_ok());
        }
        let wait = w.try_add(base, 1, Some(1200), Some(5)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(5));
        assert!(w.try_add(base + 5, 1, Some(1200), Some(5)).is_ok());
        // A minute that is not a whole number of 600 µs is never stricter than exact.
        let mut w = Window::new(Duration::from_millis(6_001));
        assert_eq!(w.try_add(base, 10, Some(10), None), Ok(10));
        assert!(w.try_add(base + 6_000, 1, Some(10), None).is_err());
        assert_eq!(w.try_add(base + 6_001, 1, Some(10), None), Ok(1));
        let instant = SimConfig {
            rate_minute: Duration::from_micros(999),
            ..SimConfig::default()
        };
        assert!(instant.check().is_err());
    }

    #[test]
    fn gate_admits_up_to_max_and_frees_on_drop() {
        let gate = Gate::default();
        let a = gate.admit(Some(2)).unwrap();
        let _b = gate.admit(Some(2)).unwrap();
        assert!(gate.admit(Some(2)).is_none());
        drop(a);
        assert!(gate.admit(Some(2)).is_some());
        assert!(gate.admit(None).is_some());
    }

    #[test]
    fn draws_depend_on_seed_and_sequence_only() {
        let config = SimConfig {
            error_rate: 0.5,
            fail_rate: 0.3,
            refuse_rate: 0.3,
            ..SimConfig::default()
        };
        let run = |c: &SimConfig| (0..64).map(|n| Draws::new(c, n)).collect::<Vec<_>>();
        assert_eq!(run(&config), run(&config));
        let other = SimConfig {
            seed: 1,
            ..config.clone()
        };
        assert_ne!(run(&config), run(&other));
        let errors = run(&config).iter().filter(|d| d.error).count();
        assert!((16..48).contains(&errors), "{errors} of 64");
        // Latency is drawn last: a latency range leaves the faults unchanged.
        let slow = SimConfig {
            latency: "1ms..9ms".parse::<Latency>().unwrap(),
            ..config.clone()
        };
        let faults = |c: &SimConfig| {
            run(c)
                .into_iter()
                .map(|d| (d.error, d.fates))
                .collect::<Vec<_>>()
        };
        assert_eq!(faults(&config), faults(&slow));
    }
}
