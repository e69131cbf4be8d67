//! Retry policy as data, and the one place that decides what an attempt's result means (SPEC §5).
//!
//! | result | verdict | did it create a task? |
//! |---|---|---|
//! | HTTP 200, `code == 0`, a task id | `Submitted` | yes |
//! | HTTP 200, `code == 0`, no task id; a 2xx body unreadable or over 1 MiB | `Unknown` | maybe |
//! | HTTP 200, `code != 0` | `Rejected` with code and message | no |
//! | HTTP 401 / 403 | `Unauthorized`: stop dispatching, exit 3 | no |
//! | HTTP 504, 524, 598, 599 (a gateway gave up waiting on an upstream that had the request), 520 (the upstream's answer was lost) | `Unknown` | maybe |
//! | HTTP 408 / 429 / other 5xx | `Retry`, honouring `Retry-After` | no |
//! | other HTTP statuses (4xx, 3xx, …) | `Rejected` | no |
//! | not sent (connection refused, DNS) | `Retry` | no |
//! | our own body could not be produced whole (an image unreadable, or edited since validation) | `Failed`, not retried | no |
//! | sent, no answer (timeout, connection closed) | `Unknown`; retried only with `--retry-unknown` | maybe |
//!
//! Every `Retry` is an answer that proves no task was created: the run notes it in the
//! write-ahead log, so a crash during the backoff leaves the request `failed` (sent again), not
//! `unknown`.

use std::time::Duration;

use super::Attempt;

/// What an attempt means for the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Submitted {
        task_id: String,
        sub_task_ids: Vec<String>,
    },
    /// Transient, and no task was created: try again after a backoff (at least `retry_after`).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The API refused the request: never resent automatically.
    Rejected { code: Option<i64>, message: String },
    /// The credentials were refused.
    Unauthorized { message: String },
    /// Sent, but no usable answer: the API may have created (and billed) the task.
    Unknown { reason: String },
    /// Our own request could not be sent whole: no task; trying again would fail the same way.
    Failed { reason: String },
}

/// Classify one attempt (taking it: its strings move into the verdict).
pub fn classify(attempt: Attempt) -> Verdict {
    match attempt {
        Attempt::NotSent(reason) => Verdict::Retry {
            reason,
            retry_after: None,
        },
        Attempt::NoAnswer(reason) => Verdict::Unknown { reason },
        Attempt::BodyFailed(reason) => Verdict::Failed { reason },
        Attempt::Answered {
            status,
            retry_after,
            envelope,
        } => {
            let code = envelope.as_ref().ok().map(|e| e.code);
            let message =
                |envelope: Result<super::Envelope<super::Submitted>, String>| match envelope {
                    Ok(e) => e.message,
                    Err(m) => m,
                };
            match status {
                401 | 403 => Verdict::Unauthorized {
                    message: format!("HTTP {status}: {}", message(envelope)),
                },
                504 | 520 | 524 | 598 | 599 => Verdict::Unknown {
                    reason: format!(
                        "HTTP {status}: a gateway gave up waiting for the API, which may have created the task: {}",
                        message(envelope)
                    ),
                },
                408 | 429 | 500..=599 => Verdict::Retry {
                    reason: format!("HTTP {status}: {}", message(envelope)),
                    retry_after,
                },
                200..=299 => match envelope {
                    Ok(e) if e.code != 0 => Verdict::Rejected {
                        code: Some(e.code),
                        message: e.message,
                    },
                    Ok(e) => match e.result {
                        Some(r) if !r.task_id.is_empty() => Verdict::Submitted {
                            task_id: r.task_id,
                            sub_task_ids: r.sub_task_ids,
                        },
                        _ => Verdict::Unknown {
                            reason: "the API answered success without a task id".into(),
                        },
                    },
                    Err(m) => Verdict::Unknown { reason: m },
                },
                _ => Verdict::Rejected {
                    code,
                    message: format!("HTTP {status}: {}", message(envelope)),
                },
            }
        }
    }
}

/// Retry delays: doubling from `base`, capped at `max`, with full jitter (a uniform draw in
/// `0..=cap`), and a `Retry-After` floor applied by [`Backoff::delay`] — itself capped at `max`,
/// so a server asking for a day's wait does not stall a run for a day.
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
        let exp = self
            .base
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20));
        let cap = exp.min(self.max);
        let jittered =
            Duration::from_nanos(rng.u64(0..=cap.as_nanos().min(u64::MAX as u128) as u64));
        jittered.max(retry_after.unwrap_or(Duration::ZERO).min(self.max))
    }

    /// Whether a `Retry-After` asks for longer than [`Backoff::max`] (and is cut to it).
    pub fn caps(&self, retry_after: Option<Duration>) -> bool {
        retry_after.is_some_and(|r| r > self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Envelope, Submitted};

    fn answered(status: u16, body: Result<Envelope<Submitted>, String>) -> Attempt {
        Attempt::Answered {
            status,
            retry_after: Some(Duration::from_secs(3)),
            envelope: body,
        }
    }

    fn env(code: i64, task: Option<&str>) -> Result<Envelope<Submitted>, String> {
        Ok(Envelope {
            code,
            message: if code == 0 {
                "Success".into()
            } else {
                "bad resolution".into()
            },
            request_id: None,
            result: task.map(|t| Submitted {
                task_id: t.into(),
                sub_task_ids: vec![format!("{t}-0")],
            }),
        })
    }

    #[test]
    fn success_with_task_id_is_submitted() {
        assert_eq!(
            classify(answered(200, env(0, Some("t1")))),
            Verdict::Submitted {
                task_id: "t1".into(),
                sub_task_ids: vec!["t1-0".into()]
            }
        );
    }

    #[test]
    fn success_without_task_id_or_unreadable_is_unknown() {
        assert!(matches!(
            classify(answered(200, env(0, None))),
            Verdict::Unknown { .. }
        ));
        assert!(matches!(
            classify(answered(200, Err("html".into()))),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn business_error_is_rejected_with_code() {
        assert_eq!(
            classify(answered(200, env(1001, None))),
            Verdict::Rejected {
                code: Some(1001),
                message: "bad resolution".into()
            }
        );
    }

    #[test]
    fn auth_failures_stop() {
        for s in [401, 403] {
            assert!(
                matches!(
                    classify(answered(s, env(1, None))),
                    Verdict::Unauthorized { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn transient_statuses_retry_with_retry_after() {
        for s in [408, 429, 500, 501, 502, 503, 507] {
            match classify(answered(s, Err("x".into()))) {
                Verdict::Retry { retry_after, .. } => {
                    assert_eq!(retry_after, Some(Duration::from_secs(3)))
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_gateway_timeout_is_unknown() {
        for s in [504, 520, 524, 598, 599] {
            assert!(
                matches!(
                    classify(answered(s, Err("x".into()))),
                    Verdict::Unknown { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_rejected() {
        for s in [400, 404, 409, 413, 422, 301] {
            assert!(
                matches!(
                    classify(answered(s, Err("x".into()))),
                    Verdict::Rejected { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn transport_errors() {
        assert!(matches!(
            classify(Attempt::NotSent("refused".into())),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify(Attempt::NoAnswer("timeout".into())),
            Verdict::Unknown { .. }
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
}
