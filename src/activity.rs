//! What the command is waiting for right now, for the person (or the log) watching: the progress
//! bar and the status lines name it, so a run that waits never looks hung. **Display only**:
//! nothing decides anything from it.
//!
//! A wait is registered for as long as its [`Waiting`] guard lives: the rate limiter while an
//! attempt waits for its slot ([`crate::rate`]), the retry driver during a backoff
//! ([`crate::retry`]), a submission while it waits for a slot of the pending-task window
//! (`--max-pending`), and the polling loop while a run waits for its submitted tasks to finish
//! (`--collect`). [`describe`] names the waits now — each kind once, with how many wait and
//! when the next one ends, as a countdown and a UTC clock time.
//!
//! The registry is process-wide, like the log: one command runs per process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::api::Kind;

/// One thing a part of the command waits for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Wait {
    /// An endpoint's images-per-minute limit: the next attempt may go at `until`.
    Rate {
        /// The endpoint.
        kind: Kind,
        /// Task queries (`--poll-rate`), not submissions (`--rate`).
        queries: bool,
        /// Spaced evenly (after an HTTP 429, or queries from the start), not a full window.
        paced: bool,
        /// The limit, images (or queries) per minute.
        per_minute: u32,
        /// When the next attempt may go.
        until: Instant,
    },
    /// A retry's backoff: the next attempt goes at `until`.
    Backoff {
        /// What the last attempt got ("HTTP 429", "timeout", …), short.
        after: String,
        /// When the next attempt goes.
        until: Instant,
    },
    /// A submission waits for a slot of the pending-task window (`--max-pending`).
    Slot,
    /// Everything is sent; the run waits for `count` submitted tasks to finish (`--collect`).
    Tasks {
        /// Tasks not settled yet.
        count: u64,
    },
}

static NEXT: AtomicU64 = AtomicU64::new(0);
static WAITS: Mutex<BTreeMap<u64, Wait>> = Mutex::new(BTreeMap::new());

fn waits() -> std::sync::MutexGuard<'static, BTreeMap<u64, Wait>> {
    // A panic elsewhere while the lock was held leaves a map that is still whole.
    WAITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A registered wait; dropping it ends the wait.
#[derive(Debug)]
pub(crate) struct Waiting(u64);

impl Waiting {
    /// The wait changed (a new count, a later slot).
    pub(crate) fn set(&self, wait: Wait) {
        waits().insert(self.0, wait);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        waits().remove(&self.0);
    }
}

/// Register `wait` until the guard is dropped.
pub(crate) fn waiting(wait: Wait) -> Waiting {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    waits().insert(id, wait);
    Waiting(id)
}

/// Whether some submission waits for a slot of the pending-task window: a wait no schedule
/// knows the end of (the API finishes tasks at its own pace).
pub(crate) fn slots_awaited() -> bool {
    waits().values().any(|w| *w == Wait::Slot)
}

/// A short name for what an attempt got, from its retry reason: "HTTP 429" from
/// "HTTP 429: too many requests", the first clause otherwise, at most 40 characters.
pub(crate) fn short_reason(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    let mut short: String = head.chars().take(40).collect();
    if head.chars().count() > 40 {
        short.push('…');
    }
    crate::logging::safe(&short).into_owned()
}

/// "1 request", "2 requests".
fn count(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        _ => format!("{n} {what}s"),
    }
}

/// "in 14 s (at 06:10:31 UTC)": a countdown and the wall-clock time it ends.
fn when(until: Instant, now: Instant) -> String {
    let left = until.saturating_duration_since(now);
    let at = SystemTime::now() + left;
    let clock = humantime::format_rfc3339_seconds(at).to_string();
    // "2026-12-02T06:10:31Z" → "06:10:31"
    let clock = clock.get(11..19).unwrap_or(&clock).to_string();
    format!("in {} (at {clock} UTC)", seconds(left))
}

/// "14 s", "0.6 s", "2m 5s".
pub(crate) fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else if d < Duration::from_secs(60) {
        format!("{} s", d.as_secs())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// The waits now, each kind once ("rate window (txt2img, 100/min): next slot in 14 s (at
/// 06:10:31 UTC); backing off after HTTP 429 (3 requests): next attempt in 2.1 s (…)"), or
/// `None` when nothing waits.
pub(crate) fn describe() -> Option<String> {
    describe_at(
        &waits().values().cloned().collect::<Vec<_>>(),
        Instant::now(),
    )
}

fn describe_at(all: &[Wait], now: Instant) -> Option<String> {
    // Rate waits per endpoint and purpose: the earliest slot.
    let mut rates: BTreeMap<(bool, Kind), (bool, u32, Instant)> = BTreeMap::new();
    // Backoffs per reason: how many, the earliest next attempt.
    let mut backoffs: BTreeMap<&str, (u64, Instant)> = BTreeMap::new();
    let (mut slots, mut tasks) = (0u64, None);
    for w in all {
        match w {
            Wait::Rate {
                kind,
                queries,
                paced,
                per_minute,
                until,
            } => {
                let e = rates
                    .entry((*queries, *kind))
                    .or_insert((*paced, *per_minute, *until));
                e.2 = e.2.min(*until);
            }
            Wait::Backoff { after, until } => {
                let e = backoffs.entry(after).or_insert((0, *until));
                e.0 += 1;
                e.1 = e.1.min(*until);
            }
            Wait::Slot => slots += 1,
            Wait::Tasks { count } => tasks = Some(*count),
        }
    }
    let mut parts = Vec::new();
    for ((queries, kind), (paced, per_minute, until)) in rates {
        let what = match (queries, paced) {
            (true, _) => format!("query pace ({kind}, {per_minute}/min): next query"),
            (false, false) => format!("rate window ({kind}, {per_minute} images/min): next slot"),
            (false, true) => {
                format!("paced after HTTP 429 ({kind}, {per_minute} images/min): next slot")
            }
        };
        parts.push(format!("{what} {}", when(until, now)));
    }
    for (after, (n, until)) in backoffs {
        let who = if n == 1 {
            String::new()
        } else {
            format!(" ({n} requests)")
        };
        parts.push(format!(
            "backing off after {after}{who}: next attempt {}",
            when(until, now)
        ));
    }
    if slots > 0 {
        parts.push(format!(
            "waiting for pending tasks to finish (--max-pending; {} held back)",
            count(slots, "request")
        ));
    }
    if let Some(n) = tasks {
        parts.push(format!(
            "all sent; waiting for {} to finish",
            count(n, "submitted task")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_and_safe() {
        assert_eq!(short_reason("HTTP 429: slow down"), "HTTP 429");
        assert_eq!(short_reason("timeout"), "timeout");
        assert_eq!(short_reason("a\u{1b}[2J"), "a\\u{1b}[2J");
        assert_eq!(short_reason(&"x".repeat(50)).chars().count(), 41);
    }

    #[test]
    fn each_kind_of_wait_is_named_once_with_its_earliest_end() {
        let now = Instant::now();
        let all = [
            Wait::Rate {
                kind: Kind::Txt2Img,
                queries: false,
                paced: false,
                per_minute: 100,
                until: now + Duration::from_secs(14),
            },
            Wait::Backoff {
                after: "HTTP 429".into(),
                until: now + Duration::from_millis(2100),
            },
            Wait::Backoff {
                after: "HTTP 429".into(),
                until: now + Duration::from_secs(3),
            },
            Wait::Slot,
            Wait::Slot,
        ];
        let text = describe_at(&all, now).unwrap();
        assert!(
            text.starts_with("rate window (txt2img, 100 images/min): next slot in 14 s (at "),
            "{text}"
        );
        assert!(
            text.contains("; backing off after HTTP 429 (2 requests): next attempt in 2.1 s (at "),
            "{text}"
        );
        assert!(
            text.ends_with(
                "; waiting for pending tasks to finish (--max-pending; 2 requests held back)"
            ),
            "{text}"
        );
        assert_eq!(describe_at(&[], now), None);
        assert_eq!(
            describe_at(&[Wait::Tasks { count: 3 }], now).unwrap(),
            "all sent; waiting for 3 submitted tasks to finish"
        );
    }

    #[test]
    fn a_guard_registers_until_dropped() {
        let marker = Wait::Tasks { count: 987_654 };
        let g = waiting(marker.clone());
        assert!(waits().values().any(|w| *w == marker));
        g.set(Wait::Tasks { count: 987_653 });
        assert!(!waits().values().any(|w| *w == marker));
        drop(g);
        assert!(
            !waits()
                .values()
                .any(|w| *w == Wait::Tasks { count: 987_653 })
        );
    }
}
