//! The account behind the token: the API's concurrency limit, counted in unfinished tasks
//! (`--max-pending`), and a credit of images for the whole run (`--credits`).
//!
//! HiDream limits each membership tier to 1, 3, 5, 7 or 10 "parallel requests", counted in
//! submitted requests (a request for 2 images counts 1), account-wide (API reference §8). The
//! simulator reads that as *tasks not yet at their end*: a task ends `--task-time` after its
//! creation (see `tasks`), whatever its outcome. It keeps the end times of this process's
//! unfinished tasks in a min-heap (the soonest on top), so counting them is dropping the ended
//! ones from the top. Tasks that an earlier simulator created are not counted: it is a new account.
//!
//! One mutex guards the heap, the credit and their counters. [`Account::admit`] takes it and
//! returns an [`Admission`] that holds it until the task is created ([`Admission::commit`]) or the
//! submission is refused further on (the admission is dropped and nothing is registered): counting
//! the unfinished tasks, comparing with the limit and registering the new task is one step, so
//! concurrent submissions can never exceed the limit, and `max_pending_seen` is exact. The lock is
//! held for a few instructions, never across an `.await`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, MutexGuard};

use super::SimConfig;
use super::codes;
use super::stats::Stats;
use super::tasks::{Task, unix_ms};

/// The account's limits and what they have seen.
pub(crate) struct Account {
    /// `--max-pending`.
    max_pending: Option<u32>,
    /// How long every task runs, in milliseconds (as stored in task ids).
    run_ms: u64,
    state: Mutex<State>,
}

struct State {
    /// End times (Unix milliseconds) of the tasks created and not yet ended; the soonest on top.
    ends: BinaryHeap<Reverse<u64>>,
    /// Images of credit left (`None`: no `--credits`, unlimited).
    credits_left: Option<u64>,
    /// The most unfinished tasks there ever were at once.
    max_pending_seen: u64,
    /// Submissions refused by `--max-pending`.
    pending_limited: u64,
    /// Submissions refused by `--credits`.
    credits_refused: u64,
}

impl State {
    /// Forget the tasks that have ended by `now_ms`; the number still unfinished.
    fn pending(&mut self, now_ms: u64) -> u64 {
        while self.ends.peek().is_some_and(|Reverse(end)| *end <= now_ms) {
            self.ends.pop();
        }
        self.ends.len() as u64
    }
}

/// Why the account refuses a submission (HTTP 200, a business `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// As many unfinished tasks as `--max-pending` allows (the limit).
    Pending(u32),
    /// Less credit left than the request's images.
    Credits,
}

impl Refusal {
    /// The answer's `code`.
    pub(crate) fn code(self) -> i64 {
        match self {
            Refusal::Pending(_) => codes::PENDING_LIMIT,
            Refusal::Credits => codes::NO_CREDITS,
        }
    }

    /// The answer's `message`, in the API's language.
    pub(crate) fn message(self) -> String {
        match self {
            Refusal::Pending(n) => format!("并行任务数已达上限（{n}），请等待任务完成后再提交"),
            Refusal::Credits => "积分不足，请充值后再试".to_string(),
        }
    }
}

/// A submission the account lets through, holding the account's lock until the task is created.
pub(crate) struct Admission<'a> {
    state: MutexGuard<'a, State>,
    created_ms: u64,
    end_ms: u64,
    images: u32,
}

impl Admission<'_> {
    /// The creation time (Unix milliseconds) the task must carry: its end is counted from it.
    pub(crate) fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The task is created: count it unfinished until its end, and take its images from the
    /// credit. Dropping the admission instead registers nothing.
    pub(crate) fn commit(mut self) {
        let state = &mut *self.state;
        if let Some(left) = &mut state.credits_left {
            *left -= u64::from(self.images);
        }
        if self.end_ms > self.created_ms {
            state.ends.push(Reverse(self.end_ms));
        }
        let pending = state.ends.len() as u64;
        state.max_pending_seen = state.max_pending_seen.max(pending);
    }
}

impl Account {
    pub(crate) fn new(config: &SimConfig) -> Account {
        Account {
            max_pending: config.max_pending,
            run_ms: Task::run_ms_of(config.task_time),
            state: Mutex::new(State {
                ends: BinaryHeap::new(),
                credits_left: config.credits,
                max_pending_seen: 0,
                pending_limited: 0,
                credits_refused: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a submission of `images` images may create a task now: the limit on unfinished
    /// tasks first, then the credit. A refusal is counted.
    pub(crate) fn admit(&self, images: u32) -> Result<Admission<'_>, Refusal> {
        let state = self.lock();
        // The clock is read under the lock, so that creation times follow the order of admission.
        self.admit_at(state, unix_ms(), images)
    }

    fn admit_at<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        now_ms: u64,
        images: u32,
    ) -> Result<Admission<'a>, Refusal> {
        if let Some(max) = self.max_pending
            && state.pending(now_ms) >= u64::from(max)
        {
            state.pending_limited += 1;
            return Err(Refusal::Pending(max));
        }
        if state
            .credits_left
            .is_some_and(|left| left < u64::from(images))
        {
            state.credits_refused += 1;
            return Err(Refusal::Credits);
        }
        // Forget ended tasks even without a limit, so the heap holds only unfinished ones.
        state.pending(now_ms);
        Ok(Admission {
            state,
            created_ms: now_ms,
            end_ms: now_ms.saturating_add(self.run_ms),
            images,
        })
    }

    /// Write the account's numbers into a stats snapshot.
    pub(crate) fn fill(&self, stats: &mut Stats) {
        let mut state = self.lock();
        stats.pending = state.pending(unix_ms());
        stats.max_pending_seen = state.max_pending_seen;
        stats.pending_limited = state.pending_limited;
        stats.credits_refused = state.credits_refused;
        stats.credits_left = state.credits_left;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn account(max_pending: Option<u32>, credits: Option<u64>) -> Account {
        Account::new(&SimConfig {
            max_pending,
            credits,
            task_time: Duration::from_millis(1000),
            ..SimConfig::default()
        })
    }

    fn admit(a: &Account, now_ms: u64, images: u32) -> Result<u64, Refusal> {
        let admission = a.admit_at(a.lock(), now_ms, images)?;
        let created = admission.created_ms();
        admission.commit();
        Ok(created)
    }

    fn stats(a: &Account) -> Stats {
        let mut stats = Stats::default();
        a.fill(&mut stats);
        stats
    }

    #[test]
    fn unfinished_tasks_are_limited_until_they_end() {
        let a = account(Some(2), None);
        assert_eq!(admit(&a, 10_000, 4), Ok(10_000));
        assert_eq!(admit(&a, 10_500, 1), Ok(10_500));
        assert_eq!(admit(&a, 10_999, 1), Err(Refusal::Pending(2)));
        // The first task ends at 11 000 exactly, as `Task::progress` says.
        assert_eq!(admit(&a, 11_000, 1), Ok(11_000));
        assert_eq!(admit(&a, 11_499, 1), Err(Refusal::Pending(2)));
        let s = stats(&a);
        assert_eq!((s.max_pending_seen, s.pending_limited), (2, 2));
        assert_eq!(s.credits_left, None);
    }

    #[test]
    fn a_refused_or_abandoned_admission_registers_nothing() {
        let a = account(Some(1), Some(3));
        drop(a.admit_at(a.lock(), 0, 2).unwrap());
        assert_eq!(admit(&a, 0, 2), Ok(0));
        assert_eq!(admit(&a, 1, 1), Err(Refusal::Pending(1)));
        let s = stats(&a);
        assert_eq!((s.max_pending_seen, s.credits_left), (1, Some(1)));
    }

    #[test]
    fn credit_is_spent_per_image_and_refused_when_short() {
        let a = account(None, Some(5));
        assert!(admit(&a, 0, 2).is_ok());
        assert!(admit(&a, 0, 2).is_ok());
        assert_eq!(admit(&a, 0, 2), Err(Refusal::Credits));
        assert!(admit(&a, 0, 1).is_ok());
        assert_eq!(admit(&a, 0, 1), Err(Refusal::Credits));
        let s = stats(&a);
        assert_eq!((s.credits_left, s.credits_refused), (Some(0), 2));
        assert_eq!(s.max_pending_seen, 3, "counted without --max-pending");
    }

    #[test]
    fn refusals_speak_the_apis_language() {
        assert_eq!(Refusal::Pending(3).code(), 1201);
        assert_eq!(
            Refusal::Pending(3).message(),
            "并行任务数已达上限（3），请等待任务完成后再提交"
        );
        assert_eq!(Refusal::Credits.code(), 1202);
        assert_eq!(Refusal::Credits.message(), "积分不足，请充值后再试");
    }
}
