//! When each task is queried next: a task is first queried when it could plausibly be done, then
//! at a growing interval — doubling up to `--poll-interval` — so a long batch does not re-ask
//! about tasks whose last answer is still fresh, and a quick task is not kept waiting a whole
//! interval. Queries themselves are paced by `--poll-rate` (the limiter), not here.
//!
//! "Plausibly done" is learned from the tasks that `run` follows ([`Schedule::submitted`],
//! [`Schedule::finished`]): it starts at [`FIRST_QUERY`]; a task found finished at its first query
//! may have finished earlier, so the next one is asked sooner (by a fifth, until some task has been
//! found unfinished at its first query; by 2 % from then on: a window of P tasks finishes P at a
//! time); a task found finished only later took about as long as it was followed, so that becomes
//! the expectation. It settles just
//! above the API's real task time, where a finished task frees its slot of the pending-task
//! window within a small fraction of that time. After the first query of a followed task the
//! interval starts at [`MIN_GAP`] and grows by a quarter each time (not doubling: the first query
//! is where the task should be done, so one that is not is close, and is asked again soon).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// Where the expectation of a task's time starts: the first task `run` follows is first queried
/// this long after its submission (the simulator's tasks take 2 s by default; the API's, seconds
/// to minutes); from there the expectation is learned. A task of `collect` (from a results file)
/// is asked at once, then at intervals doubling from this.
pub(crate) const FIRST_QUERY: Duration = Duration::from_secs(1);

/// The shortest interval between two queries of a task.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(100);

/// Due times of the tasks to query, by their position in the batch.
#[derive(Debug)]
pub(crate) struct Schedule {
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    /// The interval after each task's next query.
    gap: HashMap<usize, Duration>,
    /// When each followed task was submitted, and whether it has been queried yet.
    followed: HashMap<usize, (Instant, bool)>,
    first: Duration,
    max: Duration,
    /// A followed task has been found unfinished at its first query: the expectation has met
    /// the real task time from below, and is moved in small steps from then on.
    bracketed: bool,
}

impl Schedule {
    /// A schedule whose intervals double from `first` up to `max` (`--poll-interval`).
    pub(crate) fn new(first: Duration, max: Duration) -> Schedule {
        Schedule {
            due: BinaryHeap::new(),
            gap: HashMap::new(),
            followed: HashMap::new(),
            first: first.min(max),
            max,
            bracketed: false,
        }
    }

    /// When a task is first queried after its submission (what is learned so far).
    #[cfg(test)]
    pub(crate) fn first(&self) -> Duration {
        self.first
    }

    /// Query `task` at `at`, then at the first interval.
    pub(crate) fn add(&mut self, task: usize, at: Instant) {
        self.gap.insert(task, self.first);
        self.due.push(Reverse((at, task)));
    }

    /// A task `run` just submitted: first queried when it could plausibly be done.
    pub(crate) fn submitted(&mut self, task: usize, at: Instant) {
        self.followed.insert(task, (at, false));
        self.gap.insert(task, MIN_GAP.min(self.max));
        self.due.push(Reverse((at + self.first, task)));
    }

    /// A followed task was found finished at `now`: learn how long tasks take.
    pub(crate) fn finished(&mut self, task: usize, now: Instant) {
        let Some((submitted, asked_before)) = self.followed.remove(&task) else {
            return;
        };
        self.first = match asked_before {
            // Done at its first query: perhaps long before; ask the next one sooner — by half
            // until a task has been found unfinished, then by 5 %.
            false if self.bracketed => self.first.mul_f64(0.98),
            false => self.first.mul_f64(0.8),
            // Done only at a later query: it took about this long.
            true => {
                self.bracketed = true;
                now.duration_since(submitted)
            }
        }
        .max(MIN_GAP)
        .min(self.max);
    }

    /// Query `task` again after its interval from `now`; the interval grows (doubling; by a
    /// quarter for a followed task), up to the maximum.
    pub(crate) fn again(&mut self, task: usize, now: Instant) {
        let growth = match self.followed.get_mut(&task) {
            Some((_, asked)) => {
                *asked = true;
                1.25
            }
            None => 2.0,
        };
        let gap = self.gap.entry(task).or_insert(self.first);
        let at = now + *gap;
        *gap = gap.mul_f64(growth).min(self.max);
        self.due.push(Reverse((at, task)));
    }

    /// A task whose time has come, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<usize> {
        match self.due.peek() {
            Some(Reverse((at, _))) if *at <= now => self.due.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }

    /// When the next task is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Tasks waiting for their time.
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_double_up_to_the_poll_interval_and_tasks_come_in_due_order() {
        let t0 = Instant::now();
        let s = |n: u64| Duration::from_secs(n);
        let mut sched = Schedule::new(s(2), s(5));
        sched.add(0, t0 + s(2));
        sched.add(1, t0);
        assert_eq!(sched.pop_due(t0), Some(1));
        assert_eq!(sched.pop_due(t0), None, "task 0 is not due yet");
        assert_eq!(sched.next_due(), Some(t0 + s(2)));
        let mut at = t0;
        let mut gaps = Vec::new();
        for _ in 0..4 {
            sched.again(1, at);
            let next = loop {
                let due = sched.next_due().unwrap();
                let task = sched.pop_due(due).unwrap();
                if task == 1 {
                    break due;
                }
            };
            gaps.push((next - at).as_secs());
            at = next;
        }
        assert_eq!(gaps, [2, 4, 5, 5]);
        assert_eq!(
            Schedule::new(s(2), s(1)).first(),
            s(1),
            "never above the maximum"
        );
    }

    #[test]
    fn the_first_query_follows_how_long_tasks_take() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut sched = Schedule::new(ms(2000), ms(5000));
        // Tasks of 1 s: each found done at its first query, the next is asked sooner.
        let mut at = t0;
        for task in 0..20 {
            sched.submitted(task, at);
            assert_eq!(sched.pop_due(at + sched.first()), Some(task));
            sched.finished(task, at + sched.first());
            at += ms(5000);
        }
        assert!(
            sched.first() < ms(1000),
            "it went below 1 s: {:?}",
            sched.first()
        );
        // A task not done at its first query is asked again soon, and its duration becomes the
        // expectation.
        sched.submitted(8, at);
        let first = sched.first();
        assert_eq!(sched.pop_due(at + first), Some(8));
        sched.again(8, at + first);
        let next = sched.next_due().unwrap();
        assert_eq!(next - (at + first), MIN_GAP);
        sched.finished(8, next);
        assert_eq!(sched.first(), next - at);
    }
}
