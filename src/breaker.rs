//! The breaker (`run --max-consecutive-rejections K`, SPEC §5): a run that the API refuses
//! account-wide stops dispatching instead of recording every request of the manifest `rejected`.
//!
//! The API says "out of credits" or "over the account's task limit" as HTTP 200 with a business
//! `code`, the way it says "this resolution is not supported": each such answer is a `rejected`
//! row. Against an account out of credits, a manifest of 10,000 requests would become 10,000
//! rejected rows as fast as `--rate` allows, none of them useful, and all of them to be resent
//! with `--retry-rejected`. The breaker tells the two apart by repetition: the same code for K
//! requests in a row is the account, not the requests.
//!
//! **Invariant.** Once K outcomes counted here are refusals with the same `code`, with no
//! `submitted` outcome and no refusal with another code between them, the run starts no new
//! request: the pipeline's one consumer, which alone sees outcomes in order, stops dispatch
//! before it takes the next outcome from the stream (the same stop as an HTTP 401/403: the run's
//! own [`crate::shutdown::Shutdown::child`]). The requests in flight finish and get their rows;
//! the requests not dispatched keep their rows as they were (none, for new ones) and are sent by
//! the next run. So a run against an API that refuses everything makes at most
//! K + `--concurrency` − 1 submissions. `tests/it/breaker.rs` counts them at the server.
//!
//! What each outcome does to the count, and why:
//!
//! | outcome | count | why |
//! |---|---|---|
//! | `rejected` with a code, the code of the current run | + 1 | the same refusal again |
//! | `rejected` with another code | restarts at 1 for that code | a different reason: the API is judging requests, not (only) the account |
//! | `submitted` | back to 0 | the account works |
//! | `rejected` without a code (a 4xx without the API's envelope), or with a code listed by `--retry-code` | unchanged | no code to compare; a listed code is transient by the user's word and never trips the breaker |
//! | `failed`, `unknown` | unchanged | transport trouble (timeouts, 5xx after retries) says nothing about the account: it neither proves credits came back nor that they are gone |
//! | not attempted (the run was stopping) | unchanged | no answer |
//!
//! K = 0 turns the breaker off. The first trip is the one reported; later refusals (of requests
//! that were in flight) change nothing.

use std::collections::BTreeSet;

use crate::results::Status;

/// Why the breaker stopped the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tripped {
    /// The refusals in a row (`--max-consecutive-rejections`).
    pub count: u32,
    /// Their code.
    pub code: i64,
    /// The last one's message, as the API wrote it (escape it to show it).
    pub message: String,
}

/// The count of consecutive refusals with one code.
#[derive(Debug)]
pub(crate) struct Breaker {
    /// K; 0 = off.
    limit: u32,
    /// `--retry-code`: never counted.
    ignored: BTreeSet<i64>,
    /// The code of the current run of refusals, and its length.
    run: Option<(i64, u32)>,
    tripped: Option<Tripped>,
}

impl Breaker {
    /// A breaker that trips at `limit` refusals in a row (0: never), ignoring `ignored` codes.
    pub(crate) fn new(limit: u32, ignored: BTreeSet<i64>) -> Breaker {
        Breaker {
            limit,
            ignored,
            run: None,
            tripped: None,
        }
    }

    /// Count one outcome (its status, its code, its message). True only the moment the breaker
    /// trips: the caller stops dispatching then.
    pub(crate) fn observe(&mut self, status: Status, code: Option<i64>, message: &str) -> bool {
        if self.limit == 0 || self.tripped.is_some() {
            return false;
        }
        match (status, code) {
            (Status::Submitted, _) => self.run = None,
            (Status::Rejected, Some(code)) if !self.ignored.contains(&code) => {
                let n = match self.run {
                    Some((c, n)) if c == code => n + 1,
                    _ => 1,
                };
                self.run = Some((code, n));
                if n >= self.limit {
                    self.tripped = Some(Tripped {
                        count: n,
                        code,
                        message: message.to_string(),
                    });
                    return true;
                }
            }
            // A refusal it cannot compare, `failed`, `unknown`: the count stands.
            _ => {}
        }
        false
    }

    /// Why it tripped, if it did.
    pub(crate) fn tripped(&self) -> Option<&Tripped> {
        self.tripped.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Failed, Rejected, Submitted, Unknown};

    /// Feed `outcomes` to a breaker of `limit`; the index of the outcome that tripped it.
    fn trips_at(limit: u32, outcomes: &[(Status, Option<i64>)]) -> Option<usize> {
        let mut b = Breaker::new(limit, BTreeSet::from([2001]));
        let mut at = None;
        for (i, (status, code)) in outcomes.iter().enumerate() {
            if b.observe(*status, *code, "积分不足") {
                assert!(at.is_none(), "trips once");
                at = Some(i);
            }
        }
        assert_eq!(b.tripped().is_some(), at.is_some());
        at
    }

    const OUT: (Status, Option<i64>) = (Rejected, Some(1999));

    #[test]
    fn k_refusals_with_one_code_trip_it() {
        assert_eq!(trips_at(3, &[OUT, OUT, OUT, OUT]), Some(2));
        assert_eq!(trips_at(1, &[OUT]), Some(0));
        assert_eq!(trips_at(3, &[OUT, OUT]), None);
        let mut b = Breaker::new(2, BTreeSet::new());
        b.observe(Rejected, Some(1999), "first");
        b.observe(Rejected, Some(1999), "second\u{1b}[31m");
        assert_eq!(
            b.tripped(),
            Some(&Tripped {
                count: 2,
                code: 1999,
                message: "second\u{1b}[31m".into()
            })
        );
        // Later refusals change nothing.
        assert!(!b.observe(Rejected, Some(7), "x"));
        assert_eq!(b.tripped().unwrap().code, 1999);
    }

    #[test]
    fn a_success_resets_and_another_code_restarts() {
        let ok = (Submitted, None);
        let other = (Rejected, Some(1001));
        assert_eq!(trips_at(3, &[OUT, OUT, ok, OUT, OUT]), None);
        assert_eq!(trips_at(3, &[OUT, OUT, ok, OUT, OUT, OUT]), Some(5));
        // Alternating codes never trip; another code starts its own count at 1.
        assert_eq!(trips_at(2, &[OUT, other, OUT, other, OUT, other]), None);
        assert_eq!(trips_at(3, &[OUT, OUT, other, other, other]), Some(4));
    }

    #[test]
    fn failures_unknowns_and_refusals_without_a_comparable_code_leave_the_count() {
        let failed = (Failed, Some(1999));
        let unknown = (Unknown, None);
        let codeless = (Rejected, None);
        let listed = (Rejected, Some(2001));
        let between = [OUT, failed, unknown, codeless, listed, OUT, OUT];
        assert_eq!(trips_at(3, &between), Some(6));
        // None of them counts on its own.
        assert_eq!(trips_at(1, &[failed, unknown, codeless, listed]), None);
    }

    #[test]
    fn zero_is_off() {
        assert_eq!(trips_at(0, &[OUT; 100]), None);
    }

    proptest::proptest! {
        /// Against any sequence of outcomes, it trips exactly when the last K counted refusals
        /// share a code with no success or other code between them: checked against a direct
        /// reading of that rule.
        #[test]
        fn it_trips_exactly_at_the_first_run_of_k(
            limit in 1u32..5,
            seq in proptest::collection::vec((0u8..6, 0i64..3), 0..60),
        ) {
            let outcomes: Vec<(Status, Option<i64>)> = seq
                .iter()
                .map(|(s, c)| match s {
                    0 => (Submitted, None),
                    1 => (Failed, None),
                    2 => (Unknown, None),
                    3 => (Rejected, None),
                    _ => (Rejected, Some(1000 + c)),
                })
                .collect();
            // The rule, read directly: the breaker's events are successes and coded refusals;
            // it trips at the first coded refusal ending K coded refusals of one code with no
            // other event between them.
            let events: Vec<(usize, Option<i64>)> = outcomes
                .iter()
                .enumerate()
                .filter_map(|(i, (s, c))| match (s, c) {
                    (Submitted, _) => Some((i, None)),
                    (Rejected, Some(c)) => Some((i, Some(*c))),
                    _ => None,
                })
                .collect();
            let k = limit as usize;
            let expected = (k - 1..events.len())
                .find(|&j| {
                    let code = events[j].1;
                    code.is_some() && events[j + 1 - k..=j].iter().all(|e| e.1 == code)
                })
                .map(|j| events[j].0);
            proptest::prop_assert_eq!(trips_at(limit, &outcomes), expected);
        }
    }
}
