//! The images-per-minute limiter, one per endpoint (SPEC §5: never more than `--rate` images per
//! endpoint in any 60-second window; a request for 4 images counts 4). Each endpoint has its own
//! rate (`--rate model=20`, see [`crate::units::Rates`]); one at 0 has no limiter at all.
//!
//! Two rules, applied to every attempt, retries included:
//! - **the window**, always: a log of the last minute's attempts keeps every 60-second window at
//!   or under the rate, exactly, with mixed image counts. Within that bound attempts go as soon as
//!   `--concurrency` lets them: a run smaller than a minute's allowance is not made to wait.
//! - **pacing**, once the endpoint has answered HTTP 429: an attempt then also waits for its own
//!   image count × 60 s / rate after the attempt before it, for the rest of the run. A server
//!   that counts a rolling or fixed minute accepts what the window lets through; a gateway that
//!   enforces the rate as a steady flow (nginx's `limit_req`) refuses the first burst, and from
//!   its first 429 on it gets the even flow it accepts. `collect`'s queries are paced from the
//!   start ([`Limiter::even`]): polling gains nothing from a burst.
//!
//! Every wait is scaled by the test hook [`crate::env_vars::TIME_SCALE`] (1 unless set): the
//! window ([`WINDOW`], documented unscaled) and the pacing alike.
//!
//! A token bucket (the `leaky-bucket` crate) was the first choice, but a full bucket lets a whole
//! minute's allowance go at once and then refills during the same minute: up to twice the rate in
//! one window, which a server counting a rolling minute answers with 429s.

use std::collections::VecDeque;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::activity::{self, Wait};
use crate::api::Kind;
use crate::env_vars;

/// The window the limit applies to, with a small margin for clock skew and latency jitter
/// between this process and the server's count.
pub(crate) const WINDOW: Duration = Duration::from_millis(60_500);

/// The minute the rate is counted in (pacing spaces attempts by a share of it).
const MINUTE: Duration = Duration::from_secs(60);

/// A limiter of images per rolling minute.
#[derive(Debug)]
pub(crate) struct Limiter {
    per_minute: u32,
    /// [`WINDOW`], scaled.
    window: Duration,
    /// [`MINUTE`], scaled: `per_minute` images take this long when paced.
    minute: Duration,
    /// Attempts are also spaced evenly (set by [`Limiter::slow_down`], or from the start).
    paced: AtomicBool,
    state: Mutex<State>,
    /// The endpoint and whether it limits task queries, as [`crate::activity`] names the wait.
    label: Option<(Kind, bool)>,
    /// What the progress display reads ([`Limiter::eta`]): a copy of the state as the last
    /// attempt left it (the state's lock is held while an attempt waits).
    published: std::sync::Mutex<Published>,
}

/// The schedule as the last attempt left it.
#[derive(Debug, Default, Clone, Copy)]
struct Published {
    /// Images in the window then.
    in_window: u64,
    /// When the oldest of them leaves the window.
    frees_at: Option<Instant>,
    /// Images let through so far, retries included.
    admitted: u64,
}

#[derive(Debug)]
struct State {
    /// When the last attempt went.
    last: Option<Instant>,
    log: VecDeque<(Instant, u32)>,
    in_window: u64,
}

impl Limiter {
    /// A limiter that lets the window's allowance go at once, until [`Limiter::slow_down`].
    /// `per_minute` must be at least 1 (`--rate 0` means no limiter at all).
    pub(crate) fn new(per_minute: u32) -> Limiter {
        Limiter::with_pacing(per_minute, false)
    }

    /// A limiter that spaces attempts evenly from the start.
    pub(crate) fn even(per_minute: u32) -> Limiter {
        Limiter::with_pacing(per_minute, true)
    }

    fn with_pacing(per_minute: u32, paced: bool) -> Limiter {
        Limiter::scaled(per_minute, paced, env_vars::time_scale())
    }

    /// A limiter whose waits are all multiplied by `scale` (a positive finite number).
    fn scaled(per_minute: u32, paced: bool, scale: f64) -> Limiter {
        Limiter {
            per_minute: per_minute.max(1),
            window: env_vars::scale(WINDOW, scale),
            minute: env_vars::scale(MINUTE, scale),
            paced: AtomicBool::new(paced),
            state: Mutex::new(State {
                last: None,
                log: VecDeque::new(),
                in_window: 0,
            }),
            label: None,
            published: std::sync::Mutex::new(Published::default()),
        }
    }

    /// Name the endpoint (and whether this limits task queries) for [`crate::activity`].
    pub(crate) fn labelled(mut self, kind: Kind, queries: bool) -> Limiter {
        self.label = Some((kind, queries));
        self
    }

    /// Images let through so far, retries included.
    pub(crate) fn admitted(&self) -> u64 {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admitted
    }

    /// How long `remaining` more images take by this limiter's schedule from now: paced, their
    /// share of a minute each; otherwise the rest of the current window's allowance at once,
    /// then a window per allowance. For display (the progress bar's ETA).
    pub(crate) fn eta(&self, remaining: u64) -> Duration {
        if remaining == 0 {
            return Duration::ZERO;
        }
        let per = u64::from(self.per_minute);
        if self.is_paced() {
            return self.minute.mul_f64(remaining as f64 / per as f64);
        }
        let p = *self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        // Once the oldest entry has left, count the window as empty (an estimate).
        let (in_window, first) = match p.frees_at {
            Some(at) if at > now => (p.in_window, at - now),
            _ => (0, Duration::ZERO),
        };
        let free = per.saturating_sub(in_window);
        if remaining <= free {
            return Duration::ZERO;
        }
        let more = (remaining - free).div_ceil(per) - 1;
        first + self.window * u32::try_from(more).unwrap_or(u32::MAX)
    }

    /// The endpoint answered HTTP 429: space attempts evenly from now on. True the first time.
    pub(crate) fn slow_down(&self) -> bool {
        !self.paced.swap(true, Ordering::Relaxed)
    }

    /// Whether attempts are spaced evenly.
    pub(crate) fn is_paced(&self) -> bool {
        self.paced.load(Ordering::Relaxed)
    }

    /// Wait until `images` may be sent, and count them. Waiters are served in order (the lock is
    /// fair and held while waiting, so nobody overtakes).
    pub(crate) async fn acquire(&self, images: u32) {
        let images = images.max(1);
        let mut st = self.state.lock().await;
        loop {
            let now = Instant::now();
            while let Some(&(t, n)) = st.log.front() {
                if now.duration_since(t) >= self.window {
                    st.log.pop_front();
                    st.in_window -= u64::from(n);
                } else {
                    break;
                }
            }
            // Paced: this attempt's images need their share of a minute since the last attempt
            // (a steady-flow limit checks the room for the request it is given).
            let spacing = self.minute * images / self.per_minute;
            let mut wait_until = st
                .last
                .map(|t| t + spacing)
                .filter(|n| *n > now && self.is_paced());
            // A request bigger than the whole allowance goes alone in an empty window.
            let limit = u64::from(self.per_minute.max(images));
            if st.in_window + u64::from(images) > limit {
                // Wait for enough of the oldest entries to leave the window.
                let mut freed = 0u64;
                let need = st.in_window + u64::from(images) - limit;
                for &(t, n) in &st.log {
                    freed += u64::from(n);
                    if freed >= need {
                        let at = t + self.window;
                        wait_until = Some(wait_until.map_or(at, |w| w.max(at)));
                        break;
                    }
                }
            }
            match wait_until {
                Some(at) if at > now => {
                    let _waiting = self.label.map(|(kind, queries)| {
                        activity::waiting(Wait::Rate {
                            kind,
                            queries,
                            paced: self.is_paced(),
                            per_minute: self.per_minute,
                            until: at,
                        })
                    });
                    tokio::time::sleep_until(at).await;
                }
                _ => {
                    st.log.push_back((now, images));
                    st.in_window += u64::from(images);
                    st.last = Some(now);
                    let mut p = self
                        .published
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    *p = Published {
                        in_window: st.in_window,
                        frees_at: st.log.front().map(|(t, _)| *t + self.window),
                        admitted: p.admitted + u64::from(images),
                    };
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEIGHTS: [u32; 14] = [1, 4, 2, 1, 3, 4, 4, 1, 2, 2, 4, 1, 1, 3];

    /// Acquire `WEIGHTS` `rounds` times; each acquisition's time since the start and weight.
    async fn acquire_all(limiter: &Limiter, rounds: usize) -> Vec<(Duration, u32)> {
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..rounds {
            for &w in &WEIGHTS {
                limiter.acquire(w).await;
                times.push((Instant::now() - start, w));
            }
        }
        times
    }

    /// The most images any 60-second window holds.
    fn busiest_minute(times: &[(Duration, u32)]) -> u32 {
        busiest(times, Duration::from_secs(60))
    }

    /// The most images any window of `span` holds.
    fn busiest(times: &[(Duration, u32)], span: Duration) -> u32 {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|(t, _)| *t < times[i].0 + span)
                    .map(|(_, w)| w)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    /// Paused tokio time: the tests run instantly and the clock is exact.
    #[tokio::test(start_paused = true)]
    async fn a_minute_allowance_goes_at_once_and_no_window_holds_more() {
        let limiter = Limiter::new(60);
        let times = acquire_all(&limiter, 12).await;
        assert_eq!(busiest_minute(&times), 60);
        // The first 60 images (mixed counts) go without waiting.
        let mut sum = 0;
        for (t, w) in &times {
            sum += w;
            if sum <= 60 {
                assert_eq!(*t, Duration::ZERO, "image {sum} waited");
            } else {
                assert!(*t >= WINDOW, "image {sum} went at {t:?}");
                break;
            }
        }
        // 12 × 33 = 396 images: the last go in the seventh window, one allowance per window.
        let total: u32 = times.iter().map(|(_, w)| w).sum();
        let windows = times.last().unwrap().0.as_secs_f64() / WINDOW.as_secs_f64();
        assert!(
            windows > f64::from(total) / 60.0 - 1.0 && windows <= f64::from(total) / 60.0,
            "{total} images took {windows} windows"
        );
        assert!(!limiter.is_paced());
    }

    #[tokio::test(start_paused = true)]
    async fn an_even_limiter_paces_and_never_exceeds_the_window() {
        let times = acquire_all(&Limiter::even(60), 12).await;
        assert!(busiest_minute(&times) <= 60);
        // 1 image per second on average, from the start.
        let total: u32 = times.iter().map(|(_, w)| w).sum();
        let elapsed = times.last().unwrap().0.as_secs_f64();
        assert!(
            elapsed >= f64::from(total) * 0.9 - 4.0,
            "{elapsed} s for {total} images"
        );
        assert!(
            elapsed <= f64::from(total) * 1.1 + 4.0,
            "{elapsed} s for {total} images"
        );
        assert!(times[1].0 >= Duration::from_secs(1), "{:?}", times[1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_turns_the_burst_into_an_even_pace() {
        let limiter = Limiter::new(60);
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire(1).await;
        }
        assert_eq!(Instant::now(), start, "10 of 60 images go at once");
        assert!(limiter.slow_down(), "the first 429 switches");
        assert!(!limiter.slow_down(), "later ones change nothing");
        for i in 1..=5u64 {
            limiter.acquire(2).await;
            // Each 2-image attempt waits for 2 images' share of a minute after the one before.
            assert_eq!(Instant::now() - start, Duration::from_secs(2 * i));
        }
        limiter.acquire(1).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(11));
    }

    /// Whether `d` is `expected`, to the millisecond of tokio's timer.
    fn about(d: Duration, expected: Duration) -> bool {
        d >= expected && d < expected + Duration::from_millis(1)
    }

    /// The test hook `HIDREAM_BATCH_TIME_SCALE`: a limiter scaled by 0.1 keeps every 6-second
    /// window at the rate, and waits 6.05 s (not 60.5 s) for the window.
    #[tokio::test(start_paused = true)]
    async fn a_scaled_limiter_counts_a_scaled_window() {
        let limiter = Limiter::scaled(60, false, 0.1);
        let times = acquire_all(&limiter, 12).await;
        assert_eq!(busiest(&times, Duration::from_secs(6)), 60);
        let mut sum = 0;
        for (t, w) in &times {
            sum += w;
            if sum <= 60 {
                assert_eq!(*t, Duration::ZERO, "image {sum} waited");
            } else {
                assert!(
                    about(*t, Duration::from_millis(6_050)),
                    "image {sum} went at {t:?}"
                );
                break;
            }
        }
        // 12 × 33 = 396 images take between 5.6 and 6.6 windows of 6.05 s, as unscaled.
        let windows = times.last().unwrap().0.as_secs_f64() / 6.05;
        assert!(windows > 5.6 && windows <= 6.6, "{windows} windows");
    }

    #[tokio::test(start_paused = true)]
    async fn a_scaled_limiter_paces_at_a_scaled_share_of_a_minute() {
        let limiter = Limiter::scaled(60, false, 0.1);
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire(1).await;
        }
        assert_eq!(Instant::now(), start);
        limiter.slow_down();
        for i in 1..=5u32 {
            limiter.acquire(2).await;
            // 2 images' share of a 6-second minute: 200 ms.
            assert!(
                about(Instant::now() - start, Duration::from_millis(200) * i),
                "{:?}",
                Instant::now() - start
            );
        }
        let even = Limiter::scaled(600, true, 0.25);
        let start = Instant::now();
        for _ in 0..4 {
            even.acquire(4).await;
        }
        // 4 images at 600 a 15-second minute: 100 ms apart, from the start.
        assert!(
            about(Instant::now() - start, Duration::from_millis(300)),
            "{:?}",
            Instant::now() - start
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_scale_of_1_is_the_unscaled_limiter() {
        let limiter = Limiter::scaled(60, false, 1.0);
        assert_eq!(limiter.window, WINDOW);
        assert_eq!(limiter.minute, Duration::from_secs(60));
        limiter.acquire(60).await;
        let start = Instant::now();
        limiter.acquire(1).await;
        assert_eq!(Instant::now() - start, WINDOW);
    }
}
