//! Retries: the policy as data ([`RetryPolicy`]: attempts, [`Backoff`] delays), one driver
//! ([`Retrier::drive`]: attempt → classify → wait → again) used by submissions, task queries and
//! downloads, and the classifiers side by side ([`classify`]).
//!
//! The driver knows nothing of what an attempt is: the caller's attempt function sends, classifies
//! and says [`Step::Done`] or [`Step::Retry`]. That function is also where a submission logs its
//! write-ahead line before it sends, and notes an answer that proves no task was created (the hook
//! the journal needs); queries and downloads have nothing to log. Before every attempt the driver
//! takes the endpoint's rate limiter, if one is given, and stops when the shutdown stops
//! dispatching: no new attempt starts, and a backoff wait is cut short.

pub(crate) mod classify;
#[cfg(test)]
mod corpus;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::env_vars;
use crate::rate::Limiter;
use crate::shutdown::Shutdown;

/// How many attempts, and how long between them.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// The delays between them.
    pub backoff: Backoff,
}

/// Retry delays: doubling from `base`, capped at `max`, with full jitter (a uniform draw in
/// `0..=cap`), and a `Retry-After` floor applied by [`Backoff::delay`] — itself capped at `max`,
/// so a server asking for a day's wait does not stall a run for a day. The delay, whichever of
/// these it comes from, is scaled by the test hook [`crate::env_vars::TIME_SCALE`].
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `retry` (1 = the first retry).
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        self.scaled_delay(retry, retry_after, rng, env_vars::time_scale())
    }

    /// [`Backoff::delay`] multiplied by `scale` (a positive finite number): the backoff, the
    /// `Retry-After` floor and the cap alike.
    fn scaled_delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
        scale: f64,
    ) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20));
        let cap = exp.min(self.max);
        let jittered =
            Duration::from_nanos(rng.u64(0..=cap.as_nanos().min(u64::MAX as u128) as u64));
        let delay = jittered.max(retry_after.unwrap_or(Duration::ZERO).min(self.max));
        env_vars::scale(delay, scale)
    }

    /// Whether a `Retry-After` asks for longer than [`Backoff::max`] (and is cut to it).
    pub fn caps(&self, retry_after: Option<Duration>) -> bool {
        retry_after.is_some_and(|r| r > self.max)
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Step<T> {
    /// The end: no further attempt.
    Done(T),
    /// Worth another attempt after the backoff (at least `retry_after`).
    Retry {
        /// What went wrong, for the message if no attempt succeeds.
        reason: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

/// How the attempts ended.
#[derive(Debug)]
pub(crate) enum Ending<T> {
    /// An attempt said [`Step::Done`].
    Done(T),
    /// Every attempt said [`Step::Retry`].
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's reason.
        reason: String,
    },
    /// The shutdown stopped dispatching before the next attempt.
    Stopped {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's reason when the stop cut its backoff short; `None` when the stop
        /// came before an attempt (or while it waited for the rate limiter).
        reason: Option<String>,
    },
}

/// The retry driver of one command: its policy and its shutdown.
#[derive(Debug)]
pub(crate) struct Retrier {
    /// Attempts and delays.
    pub policy: RetryPolicy,
    /// Stops dispatching: no new attempt, no more waiting.
    pub shutdown: Shutdown,
    /// A `Retry-After` over `--backoff-max` was logged (once per command).
    capped_logged: AtomicBool,
    /// The test hook [`env_vars::TIME_SCALE`]'s factor, applied to every delay.
    scale: f64,
}

impl Retrier {
    /// A driver with this policy, stopped by `shutdown`.
    pub(crate) fn new(policy: RetryPolicy, shutdown: Shutdown) -> Retrier {
        Retrier::scaled(policy, shutdown, env_vars::time_scale())
    }

    /// A driver whose delays are multiplied by `scale` (a positive finite number).
    fn scaled(policy: RetryPolicy, shutdown: Shutdown, scale: f64) -> Retrier {
        Retrier {
            policy,
            shutdown,
            capped_logged: AtomicBool::new(false),
            scale,
        }
    }

    /// Make attempts (numbered from 1) until one is [`Step::Done`], the policy's attempts are
    /// spent, or the shutdown stops dispatching. `gate`: the endpoint's limiter and the units an
    /// attempt costs, taken before every attempt. `what` names the endpoint in log lines.
    pub(crate) async fn drive<T>(
        &self,
        gate: Option<(&Limiter, u32)>,
        what: &str,
        mut attempt: impl AsyncFnMut(u32) -> Step<T>,
    ) -> Ending<T> {
        let mut rng = fastrand::Rng::new();
        let mut n = 0;
        loop {
            if let Some((limiter, units)) = gate {
                tokio::select! {
                    _ = limiter.acquire(units) => {}
                    _ = self.shutdown.stopping() => {}
                }
            }
            if self.shutdown.is_stopping() {
                return Ending::Stopped {
                    attempts: n,
                    reason: None,
                };
            }
            n += 1;
            let (reason, retry_after) = match attempt(n).await {
                Step::Done(t) => return Ending::Done(t),
                Step::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            if n >= self.policy.max_attempts {
                return Ending::Exhausted {
                    attempts: n,
                    reason,
                };
            }
            let backoff = &self.policy.backoff;
            if backoff.caps(retry_after) && !self.capped_logged.swap(true, Ordering::Relaxed) {
                // In whole seconds: a date's wait is measured from now, to the nanosecond.
                let asked = Duration::from_secs(retry_after.unwrap_or_default().as_secs());
                tracing::warn!(
                    "{what}: the API asked to wait {} (Retry-After); waiting at most --backoff-max {}",
                    humantime::format_duration(asked),
                    humantime::format_duration(backoff.max)
                );
            }
            let delay = backoff.scaled_delay(n, retry_after, &mut rng, self.scale);
            let _waiting = crate::activity::waiting(crate::activity::Wait::Backoff {
                after: crate::activity::short_reason(&reason),
                until: tokio::time::Instant::now() + delay,
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.stopping() => {
                    return Ending::Stopped { attempts: n, reason: Some(reason) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_retries_until_done_or_spent() {
        let r = Retrier::new(policy(3), Shutdown::new());
        let mut seen = Vec::new();
        let ending = r
            .drive(None, "test", async |n| {
                seen.push(n);
                if n == 2 {
                    Step::Done(n)
                } else {
                    Step::Retry {
                        reason: "busy".into(),
                        retry_after: None,
                    }
                }
            })
            .await;
        assert!(matches!(ending, Ending::Done(2)));
        assert_eq!(seen, [1, 2]);
        let ending = r
            .drive(None, "test", async |_| Step::<()>::Retry {
                reason: "busy".into(),
                retry_after: None,
            })
            .await;
        assert!(
            matches!(ending, Ending::Exhausted { attempts: 3, ref reason } if reason == "busy")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_the_wait_and_starts_nothing() {
        let shutdown = Shutdown::new();
        let r = Retrier::new(policy(5), shutdown.clone());
        let ending = r
            .drive(None, "test", async |_| {
                shutdown.signal();
                Step::<()>::Retry {
                    reason: "busy".into(),
                    retry_after: Some(Duration::from_secs(30)),
                }
            })
            .await;
        assert!(matches!(
            ending,
            Ending::Stopped {
                attempts: 1,
                reason: Some(_)
            }
        ));
        let ending = r.drive(None, "test", async |_| Step::Done(())).await;
        assert!(matches!(
            ending,
            Ending::Stopped {
                attempts: 0,
                reason: None
            }
        ));
    }

    #[test]
    fn backoff_doubles_caps_jitters_and_honours_floor() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..10 {
            let cap =
                Duration::from_millis(100 * (1 << (retry - 1))).min(Duration::from_millis(1000));
            for _ in 0..50 {
                assert!(b.delay(retry, None, &mut rng) <= cap);
            }
        }
        let draws: Vec<_> = (0..50).map(|_| b.delay(5, None, &mut rng)).collect();
        assert!(
            draws.iter().any(|d| *d < Duration::from_millis(500)),
            "jitter spreads delays"
        );
        let long = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        assert_eq!(
            long.delay(1, Some(Duration::from_secs(5)), &mut rng),
            Duration::from_secs(5)
        );
        // A Retry-After beyond the cap is cut to it.
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(long.delay(1, day, &mut rng), Duration::from_secs(60));
        assert!(long.caps(day) && !long.caps(Some(Duration::from_secs(5))));
    }

    /// The test hook `HIDREAM_BATCH_TIME_SCALE`: the backoff, `Retry-After` and the cap scale.
    #[test]
    fn a_scaled_backoff_scales_every_delay() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            b.scaled_delay(1, five, &mut rng, 0.1),
            Duration::from_millis(500)
        );
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(
            b.scaled_delay(1, day, &mut rng, 0.1),
            Duration::from_secs(6),
            "the cap as applied"
        );
        for retry in 1..12 {
            let cap = Duration::from_millis(100 * (1 << (retry - 1))).min(b.max);
            for _ in 0..50 {
                assert!(b.scaled_delay(retry, None, &mut rng, 0.1) <= cap / 10);
            }
        }
        // The same draws, scaled.
        let (mut r1, mut r2) = (fastrand::Rng::with_seed(3), fastrand::Rng::with_seed(3));
        for retry in 1..12 {
            let unscaled = b.scaled_delay(retry, None, &mut r1, 1.0);
            let scaled = b.scaled_delay(retry, None, &mut r2, 0.5);
            assert!(scaled.abs_diff(unscaled / 2) <= Duration::from_nanos(1));
        }
    }

    /// The driver waits the scaled delay: a `Retry-After: 30` scaled by 0.1 is 3 s (paused
    /// clock: the wait is exact to tokio's millisecond).
    #[tokio::test(start_paused = true)]
    async fn a_scaled_driver_waits_the_scaled_retry_after() {
        let r = Retrier::scaled(policy(2), Shutdown::new(), 0.1);
        let start = tokio::time::Instant::now();
        let mut sent = Vec::new();
        let ending = r
            .drive(None, "test", async |n| {
                sent.push(start.elapsed());
                if n == 2 {
                    Step::Done(())
                } else {
                    Step::Retry {
                        reason: "busy".into(),
                        retry_after: Some(Duration::from_secs(30)),
                    }
                }
            })
            .await;
        assert!(matches!(ending, Ending::Done(())));
        assert_eq!(sent[0], Duration::ZERO);
        assert!(
            sent[1] >= Duration::from_secs(3) && sent[1] < Duration::from_millis(3_001),
            "{sent:?}"
        );
    }
}
