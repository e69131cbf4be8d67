//! Self-describing task ids, so the simulator keeps no per-task state.
//!
//! A task id carries everything needed to answer a query about it: the endpoint kind, when it was
//! created (Unix milliseconds), how long it runs, how many images it has, how each image ends
//! (done, failed, refused: decided when the task is created), the hash of the request body (which
//! picks the generated image), the submission's sequence number (two identical requests accepted
//! in the same millisecond are two tasks, as on a real server), and a check digest. Any simulator process — a restarted one, or the
//! one `collect --simulate` starts after `run --simulate` has exited — answers the same way, and a
//! garbled or invented id fails the digest and is reported as unknown.
//!
//! Format: `{t|m}-{created_ms:x}-{run_ms:x}-{count}{fates:02x}-{hash:016x}-{seq:x}-{check:08x}`,
//! e.g. `t-19a9e7c4f10-7d0-100-8c3e4d5f6a7b8c9d-2a-1a2b3c4d`; sub-task ids append `-{index}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::{Kind, status};

use super::hash;

/// Keys the check digest, so that a digest of another format never validates by accident.
const CHECK_KEY: &[u8] = b"hidream-batch sim task id v1";

/// How one image of a task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Done,
    Failed,
    Refused,
}

impl Fate {
    fn bits(self) -> u8 {
        match self {
            Fate::Done => 0,
            Fate::Failed => 1,
            Fate::Refused => 2,
        }
    }

    fn from_bits(bits: u8) -> Option<Fate> {
        match bits {
            0 => Some(Fate::Done),
            1 => Some(Fate::Failed),
            2 => Some(Fate::Refused),
            _ => None,
        }
    }
}

/// A decoded task id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Task {
    pub kind: Kind,
    pub created_ms: u64,
    pub run_ms: u64,
    /// 1–4 images.
    pub count: u8,
    /// The fate of image `i` is `fates[i]`; entries past `count` are [`Fate::Done`].
    pub fates: [Fate; 4],
    /// Hash of the request body.
    pub hash: u64,
    /// The submission's sequence number in the simulator that accepted it.
    pub seq: u64,
}

/// The state of one image at some moment, as a query reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Progress {
    pub status: i64,
    /// 0.0–1.0.
    pub completion: f64,
}

impl Task {
    /// The task id.
    pub(crate) fn id(&self) -> String {
        let prefix = self.prefix();
        let check = check(&prefix);
        format!("{prefix}-{check:08x}")
    }

    /// The id of image `index` (0-based).
    pub(crate) fn sub_id(&self, index: usize) -> String {
        format!("{}-{index}", self.id())
    }

    /// The task id and the ids of its images.
    pub(crate) fn ids(&self) -> (String, Vec<String>) {
        let id = self.id();
        let subs = (0..usize::from(self.count))
            .map(|i| format!("{id}-{i}"))
            .collect();
        (id, subs)
    }

    fn prefix(&self) -> String {
        let kind = match self.kind {
            Kind::Txt2Img => 't',
            Kind::Model => 'm',
        };
        let fates = self
            .fates
            .iter()
            .enumerate()
            .fold(0u8, |acc, (i, f)| acc | (f.bits() << (2 * i)));
        format!(
            "{kind}-{:x}-{:x}-{}{fates:02x}-{:016x}-{:x}",
            self.created_ms, self.run_ms, self.count, self.hash, self.seq
        )
    }

    /// Decode a task id; `None` if it is not one this simulator issued (wrong shape or digest).
    pub(crate) fn parse(id: &str) -> Option<Task> {
        let (prefix, digest) = id.rsplit_once('-')?;
        if digest.len() != 8 || u32::from_str_radix(digest, 16).ok()? != check(prefix) {
            return None;
        }
        let mut parts = prefix.split('-');
        let kind = match parts.next()? {
            "t" => Kind::Txt2Img,
            "m" => Kind::Model,
            _ => return None,
        };
        let created_ms = u64::from_str_radix(parts.next()?, 16).ok()?;
        let run_ms = u64::from_str_radix(parts.next()?, 16).ok()?;
        let images = parts.next()?;
        if images.len() != 3 || !images.is_ascii() {
            return None;
        }
        let count = images[..1]
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=4).contains(n))?;
        let fate_bits = u8::from_str_radix(&images[1..], 16).ok()?;
        let mut fates = [Fate::Done; 4];
        for (i, fate) in fates.iter_mut().enumerate() {
            *fate = Fate::from_bits((fate_bits >> (2 * i)) & 3)?;
        }
        let hash = u64::from_str_radix(parts.next()?, 16).ok()?;
        let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
        if parts.next().is_some() {
            return None;
        }
        let task = Task {
            kind,
            created_ms,
            run_ms,
            count,
            fates,
            hash,
            seq,
        };
        // Only the canonical spelling is valid (no leading zeros, no upper case).
        (task.prefix() == prefix).then_some(task)
    }

    /// Decode a sub-task id into its task and image index.
    pub(crate) fn parse_sub(id: &str) -> Option<(Task, usize)> {
        let (task_id, index) = id.rsplit_once('-')?;
        let task = Task::parse(task_id)?;
        let index: usize = index.parse().ok()?;
        (index < usize::from(task.count) && index.to_string() == id[task_id.len() + 1..])
            .then_some((task, index))
    }

    /// The state of image `index` at `now_ms` (Unix milliseconds): queued for the first tenth of
    /// the run, then running, then its fate.
    pub(crate) fn progress(&self, index: usize, now_ms: u64) -> Progress {
        let elapsed = now_ms.saturating_sub(self.created_ms);
        if elapsed >= self.run_ms {
            let status = match self.fates[index] {
                Fate::Done => status::DONE,
                Fate::Failed => status::FAILED,
                Fate::Refused => status::REFUSED,
            };
            return Progress {
                status,
                completion: 1.0,
            };
        }
        if elapsed < self.run_ms / 10 {
            return Progress {
                status: status::QUEUED,
                completion: 0.0,
            };
        }
        let completion = (elapsed as f64 / self.run_ms as f64 * 100.0).floor() / 100.0;
        Progress {
            status: status::RUNNING,
            completion,
        }
    }

    /// Whether image `index` has finished with an image to download.
    pub(crate) fn is_done(&self, index: usize, now_ms: u64) -> bool {
        self.progress(index, now_ms).status == status::DONE
    }

    /// A run time as stored in an id.
    pub(crate) fn run_ms_of(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }
}

fn check(prefix: &str) -> u32 {
    (hash::Fnv::new()
        .bytes(CHECK_KEY)
        .bytes(prefix.as_bytes())
        .finish()
        >> 32) as u32
}

/// Wall-clock time in Unix milliseconds (task ids outlive the process, so not `Instant`).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(Task::run_ms_of)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task() -> Task {
        Task {
            kind: Kind::Model,
            created_ms: 1_700_000_000_000,
            run_ms: 2000,
            count: 3,
            fates: [Fate::Done, Fate::Failed, Fate::Refused, Fate::Done],
            hash: 0x0123_4567_89ab_cdef,
            seq: 42,
        }
    }

    #[test]
    fn ids_round_trip_and_reject_tampering() {
        let t = task();
        let id = t.id();
        assert!(id.starts_with("m-18bcfe56800-7d0-3"), "{id}");
        assert_eq!(Task::parse(&id), Some(t.clone()));
        assert_eq!(Task::parse_sub(&t.sub_id(2)), Some((t.clone(), 2)));
        assert_eq!(Task::parse_sub(&t.sub_id(3)), None, "index past the count");
        assert_eq!(Task::parse_sub(&format!("{id}-02")), None);
        assert_eq!(Task::parse(&id.replace("-7d0-", "-7d1-")), None);
        assert_eq!(Task::parse(&id.to_uppercase()), None);
        assert_eq!(Task::parse(""), None);
        assert_eq!(Task::parse("3fe836e2-e1ce-11ee-975a-76ad3c0ace6b"), None);
    }

    #[test]
    fn progress_goes_queued_running_then_fate() {
        let t = task();
        let at = |ms| t.created_ms + ms;
        assert_eq!(t.progress(0, at(0)).status, status::QUEUED);
        assert_eq!(t.progress(0, at(1000)).status, status::RUNNING);
        assert_eq!(t.progress(0, at(1000)).completion, 0.5);
        assert_eq!(t.progress(0, at(2000)).status, status::DONE);
        assert_eq!(t.progress(1, at(2000)).status, status::FAILED);
        assert_eq!(t.progress(2, at(5000)).status, status::REFUSED);
        assert_eq!(t.progress(0, t.created_ms - 5).status, status::QUEUED);
        let instant = Task { run_ms: 0, ..t };
        assert!(instant.is_done(0, instant.created_ms));
    }

    proptest! {
        #[test]
        fn any_task_round_trips(created in 0u64..(1 << 50), run in 0u64..(1 << 32), count in 1u8..=4,
                                fates in proptest::array::uniform4(0u8..3), hash: u64, seq: u64, model: bool) {
            let t = Task {
                kind: if model { Kind::Model } else { Kind::Txt2Img },
                created_ms: created,
                run_ms: run,
                count,
                fates: fates.map(|b| Fate::from_bits(b).unwrap()),
                hash,
                seq,
            };
            prop_assert_eq!(Task::parse(&t.id()), Some(t.clone()));
            for i in 0..usize::from(count) {
                prop_assert_eq!(Task::parse_sub(&t.sub_id(i)), Some((t.clone(), i)));
            }
        }
    }
}
