//! The images-per-minute limiter, one per endpoint (SPEC §5: never more than `--rate` images per
//! endpoint in any 60-second window; a request for 4 images counts 4).
//!
//! Two rules, both applied to every attempt, retries included:
//! - **pacing**: attempts are spaced by their image count × 60 s / rate, so a run flows evenly
//!   at the rate instead of bursting a minute's allowance and then stalling (an unknown server-side
//!   limiter is least likely to object to an even flow);
//! - **the window**: a log of the last minute's attempts guarantees the SPEC's bound exactly, even
//!   where pacing would allow a few images more (a 4-image request right after a 1-image one).
//!
//! A token bucket (the `leaky-bucket` crate) was the first choice, but a full bucket lets a whole
//! minute's allowance go at once and then refills during the same minute: up to twice the rate in
//! one window, which a server counting a rolling minute answers with 429s.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The window the limit applies to, with a small margin for clock skew and latency jitter
/// between this process and the server's count.
pub const WINDOW: Duration = Duration::from_millis(60_500);

/// A limiter of images per rolling minute.
#[derive(Debug)]
pub struct Limiter {
    per_minute: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    next: Option<Instant>,
    log: VecDeque<(Instant, u32)>,
    in_window: u64,
}

impl Limiter {
    /// `per_minute` must be at least 1 (`--rate 0` means no limiter at all).
    pub fn new(per_minute: u32) -> Limiter {
        Limiter {
            per_minute: per_minute.max(1),
            state: Mutex::new(State {
                next: None,
                log: VecDeque::new(),
                in_window: 0,
            }),
        }
    }

    /// Wait until `images` may be sent, and count them. Waiters are served in order (the lock is
    /// fair and held while waiting, so nobody overtakes).
    pub async fn acquire(&self, images: u32) {
        let images = images.max(1);
        let mut st = self.state.lock().await;
        loop {
            let now = Instant::now();
            while let Some(&(t, n)) = st.log.front() {
                if now.duration_since(t) >= WINDOW {
                    st.log.pop_front();
                    st.in_window -= u64::from(n);
                } else {
                    break;
                }
            }
            let mut wait_until = st.next.filter(|n| *n > now);
            // A request bigger than the whole allowance goes alone in an empty window.
            let limit = u64::from(self.per_minute.max(images));
            if st.in_window + u64::from(images) > limit {
                // Wait for enough of the oldest entries to leave the window.
                let mut freed = 0u64;
                let need = st.in_window + u64::from(images) - limit;
                for &(t, n) in &st.log {
                    freed += u64::from(n);
                    if freed >= need {
                        let at = t + WINDOW;
                        wait_until = Some(wait_until.map_or(at, |w| w.max(at)));
                        break;
                    }
                }
            }
            match wait_until {
                Some(at) if at > now => tokio::time::sleep_until(at).await,
                _ => {
                    st.log.push_back((now, images));
                    st.in_window += u64::from(images);
                    let spacing = Duration::from_secs(60) * images / self.per_minute;
                    st.next = Some(now + spacing);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paused tokio time: the test runs instantly and the clock is exact.
    #[tokio::test(start_paused = true)]
    async fn paces_evenly_and_never_exceeds_the_window() {
        let limiter = Limiter::new(60);
        let start = Instant::now();
        let mut times = Vec::new();
        let weights = [1u32, 4, 2, 1, 3, 4, 4, 1, 2, 2, 4, 1, 1, 3];
        for round in 0..12 {
            for &w in &weights {
                limiter.acquire(w).await;
                times.push((Instant::now() - start, w, round));
            }
        }
        // Any 60 s window holds at most 60 images.
        for (i, &(t0, _, _)) in times.iter().enumerate() {
            let sum: u32 = times[i..]
                .iter()
                .take_while(|(t, _, _)| *t < t0 + Duration::from_secs(60))
                .map(|(_, w, _)| w)
                .sum();
            assert!(sum <= 60, "window at {t0:?} holds {sum}");
        }
        // Pacing: 1 image per second on average.
        let total: u32 = times.iter().map(|(_, w, _)| w).sum();
        let elapsed = times.last().unwrap().0.as_secs_f64();
        assert!(
            elapsed >= f64::from(total) * 0.9 - 4.0,
            "{elapsed} s for {total} images"
        );
        assert!(
            elapsed <= f64::from(total) * 1.1 + 4.0,
            "{elapsed} s for {total} images"
        );
    }
}
