//! The plan: which requests a run sends, which it skips, and why. It decides what gets paid for.
//!
//! A request's state before the run is the latest row of it in the results, or — if an earlier run
//! left it in flight — the row the journal settles it with first (see [`crate::journal`]):
//!
//! | state before the run | sent by this run? |
//! |---|---|
//! | none (never sent) | yes |
//! | `failed` (transient errors, or the run stopped after an answer that proves no task) | yes |
//! | `submitted` | never |
//! | `rejected` | only with `--retry-rejected` |
//! | `unknown` (sent, no answer; or in flight when a run stopped) | only with `--retry-unknown` |
//!
//! Rows answered by another server (a simulator rehearsal in the results of a real run, or the
//! reverse) never count: a run refuses such results before the plan (see `commands::run`).
//!
//! [`make`] is the plan's one pass over the expansion; a run that will send also lays out the
//! compacted results in it ([`Target::Compact`]). A first run (no earlier rows, nothing in
//! flight, no shard) skips the pass: its plan is validation's counts.

use std::collections::BTreeMap;

use crate::api::Kind;
use crate::expand::{self, Request};
use crate::journal::{self, Compactor, Prior};
use crate::manifest::Manifest;
use crate::results::{Status, World};
use crate::units::Shard;

/// The flags that change what is resent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub retry_rejected: bool,
    pub retry_unknown: bool,
}

/// Whether a request in state `before` is sent by a run with `flags` (the table above).
pub(crate) fn should_send(before: Option<Status>, flags: Flags) -> bool {
    match before {
        None | Some(Status::Failed) => true,
        Some(Status::Submitted) => false,
        Some(Status::Rejected) => flags.retry_rejected,
        Some(Status::Unknown) => flags.retry_unknown,
    }
}

/// What a run will do, counted per reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub total: u64,
    pub new: u64,
    pub already_submitted: u64,
    pub to_retry_failed: u64,
    pub rejected_skipped: u64,
    pub rejected_retry: u64,
    pub unknown_skipped: u64,
    pub unknown_retry: u64,
    /// Images to send per kind.
    pub images: BTreeMap<Kind, u64>,
    /// Requests to send per kind.
    pub requests: BTreeMap<Kind, u64>,
}

impl Plan {
    /// Count one request of the run: its state before, and whether it is sent.
    pub(crate) fn count(
        &mut self,
        before: Option<Status>,
        flags: Flags,
        kind: Kind,
        images: u32,
    ) -> bool {
        self.total += 1;
        match before {
            None => self.new += 1,
            Some(Status::Submitted) => self.already_submitted += 1,
            Some(Status::Failed) => self.to_retry_failed += 1,
            Some(Status::Rejected) if flags.retry_rejected => self.rejected_retry += 1,
            Some(Status::Rejected) => self.rejected_skipped += 1,
            Some(Status::Unknown) if flags.retry_unknown => self.unknown_retry += 1,
            Some(Status::Unknown) => self.unknown_skipped += 1,
        }
        let send = should_send(before, flags);
        if send {
            *self.images.entry(kind).or_default() += u64::from(images);
            *self.requests.entry(kind).or_default() += 1;
        }
        send
    }

    /// Requests the run sends.
    pub(crate) fn to_send(&self) -> u64 {
        self.new + self.to_retry_failed + self.rejected_retry + self.unknown_retry
    }

    /// Images the run sends.
    pub(crate) fn images(&self) -> u64 {
        self.images.values().sum()
    }
}

/// Where the plan's pass puts what it learns: nowhere (a dry run), or the compaction.
pub(crate) enum Target {
    /// A dry run: the results are only read.
    Dry(Box<Prior>),
    /// A run that sends: the compacted results are laid out in this run's order.
    Compact(Box<Compactor>),
}

impl Target {
    fn lookup(&self, id: &uuid::Uuid) -> Option<(Status, World)> {
        match self {
            Target::Dry(p) => p.lookup(id),
            Target::Compact(c) => c.lookup(id),
        }
    }

    fn contains(&self, id: &uuid::Uuid) -> bool {
        match self {
            Target::Dry(p) => p.contains(id),
            Target::Compact(c) => c.prior().contains(id),
        }
    }

    fn place(&mut self, pos: u32, request: &Request) -> std::io::Result<()> {
        match self {
            Target::Dry(_) => Ok(()),
            Target::Compact(c) => c.place(pos, request),
        }
    }
}

/// Why the plan could not be made.
#[derive(Debug)]
pub(crate) enum PlanError {
    /// The compacted results could not be written.
    Io(std::io::Error),
    /// This many requests are in the results under the ids of before content identity: sending
    /// them would pay for them again.
    Legacy(u64),
}

/// Whether request `id` belongs to `shard` (every request without one).
pub(crate) fn in_shard(shard: Option<Shard>, id: &uuid::Uuid) -> bool {
    shard.is_none_or(|s| s.contains(id))
}

/// The (valid) expansion with each request's position in it.
pub(crate) fn positioned<'a>(
    manifests: &'a [Manifest],
    run_id: Option<&'a str>,
) -> impl Iterator<Item = (u32, Request)> + 'a {
    expand::expand(manifests, run_id)
        .flatten()
        .enumerate()
        .map(|(i, r)| (u32::try_from(i).unwrap_or(journal::UNPLACED), r))
}

/// What the run sends, and why: one pass over the expansion, each request counted from its state
/// in `target`; a run that sends also places each request's row in the compacted results. With
/// `first_run` (no earlier rows, nothing in flight, no shard) every request is new: the plan is
/// `counts` and the pass is skipped.
pub(crate) fn make(
    target: &mut Target,
    manifests: &[Manifest],
    run_id: Option<&str>,
    shard: Option<Shard>,
    flags: Flags,
    first_run: Option<&crate::validate::Counts>,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    if let Some(counts) = first_run {
        for (kind, (requests, images)) in counts.per_kind() {
            plan.total += requests;
            plan.new += requests;
            *plan.requests.entry(kind).or_default() += requests;
            *plan.images.entry(kind).or_default() += images;
        }
        return Ok(plan);
    }
    let mut legacy = 0u64;
    for (pos, request) in positioned(manifests, run_id) {
        if !in_shard(shard, &request.id) {
            continue;
        }
        // A request the results do not hold may be there under the ids of before content
        // identity: sending it would pay for it again.
        if !target.contains(&request.id)
            && target.contains(&crate::ids::legacy_request_id(
                &request.job,
                &request.body,
                request.repeat,
                run_id,
            ))
        {
            legacy += 1;
        }
        let before = target.lookup(&request.id).map(|(s, _)| s);
        plan.count(before, flags, request.body.kind(), request.body.images());
        target.place(pos, &request).map_err(PlanError::Io)?;
    }
    if legacy > 0 {
        return Err(PlanError::Legacy(legacy));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::journal::Paths;

    #[test]
    fn only_what_has_no_task_is_sent_without_flags() {
        let none = Flags::default();
        assert!(should_send(None, none));
        assert!(should_send(Some(Status::Failed), none));
        assert!(!should_send(Some(Status::Submitted), none));
        assert!(!should_send(Some(Status::Rejected), none));
        assert!(!should_send(Some(Status::Unknown), none));
        let all = Flags {
            retry_rejected: true,
            retry_unknown: true,
        };
        assert!(
            !should_send(Some(Status::Submitted), all),
            "a task id is never paid for twice, whatever the flags"
        );
        assert!(should_send(Some(Status::Rejected), all));
        assert!(should_send(Some(Status::Unknown), all));
    }

    #[test]
    fn the_plan_counts_every_request_once_and_what_it_sends() {
        let mut plan = Plan::default();
        let flags = Flags {
            retry_rejected: true,
            retry_unknown: false,
        };
        let states = [
            None,
            Some(Status::Submitted),
            Some(Status::Failed),
            Some(Status::Rejected),
            Some(Status::Unknown),
        ];
        let sent: Vec<bool> = states
            .iter()
            .map(|s| plan.count(*s, flags, Kind::Txt2Img, 2))
            .collect();
        assert_eq!(sent, [true, false, true, true, false]);
        assert_eq!(plan.total, 5);
        assert_eq!(plan.to_send(), 3);
        assert_eq!(plan.images(), 6);
        assert_eq!(plan.unknown_skipped, 1);
        assert_eq!(plan.rejected_retry, 1);
    }

    /// A manifest of five requests, and results that say: the first submitted, the second
    /// rejected, the third unknown, the fourth failed; the fifth was never sent.
    fn five(dir: &std::path::Path) -> (Vec<Manifest>, Vec<uuid::Uuid>, Prior) {
        let path = dir.join("m.yaml");
        std::fs::write(
            &path,
            "name: m\njobs:\n  - id: sweep\n    kind: txt2img\n    prompt: \"photo {i}\"\n    matrix:\n      i: [0, 1, 2, 3, 4]\n",
        )
        .unwrap();
        let digests = Arc::new(crate::digest::Digests::default());
        let manifests = vec![crate::manifest::load(&path, &digests).unwrap()];
        let ids: Vec<uuid::Uuid> = positioned(&manifests, None).map(|(_, r)| r.id).collect();
        let mut text = String::from(
            "request_id,job,kind,status,task_id,sub_task_ids,attempts,http_status,code,message,submitted_at,elapsed_ms\n",
        );
        for (id, (status, task)) in ids.iter().zip([
            ("submitted", "t-1"),
            ("rejected", ""),
            ("unknown", ""),
            ("failed", ""),
        ]) {
            text += &format!(
                "{id},sweep,txt2img,{status},{task},,1,200,0,,2026-12-01T00:00:00.000Z,5\n"
            );
        }
        let results = dir.join("r.csv");
        std::fs::write(&results, text).unwrap();
        let prior = Prior::read(Paths::resolve(&results).unwrap()).unwrap();
        (manifests, ids, prior)
    }

    #[test]
    fn make_counts_each_request_from_its_state_in_the_results() {
        let dir = tempfile::tempdir().unwrap();
        let (manifests, _, prior) = five(dir.path());
        let mut target = Target::Dry(Box::new(prior));
        let plan = make(&mut target, &manifests, None, None, Flags::default(), None).unwrap();
        assert_eq!(plan.total, 5);
        assert_eq!(
            (
                plan.new,
                plan.already_submitted,
                plan.rejected_skipped,
                plan.unknown_skipped,
                plan.to_retry_failed
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(plan.to_send(), 2, "the new request and the failed one");
        let all = Flags {
            retry_rejected: true,
            retry_unknown: true,
        };
        let plan = make(&mut target, &manifests, None, None, all, None).unwrap();
        assert_eq!(
            plan.to_send(),
            4,
            "never the submitted one, whatever the flags"
        );
    }

    #[test]
    fn make_counts_only_the_shard_and_trusts_a_first_run_to_validation() {
        let dir = tempfile::tempdir().unwrap();
        let (manifests, ids, prior) = five(dir.path());
        let mut target = Target::Dry(Box::new(prior));
        let shard: Shard = "1/2".parse().unwrap();
        let plan = make(
            &mut target,
            &manifests,
            None,
            Some(shard),
            Flags::default(),
            None,
        )
        .unwrap();
        let in_it = ids.iter().filter(|id| shard.contains(id)).count() as u64;
        assert_eq!(plan.total, in_it);
        // A first run: the counts are validation's, every request new.
        let (_, report) = crate::validate::validate(
            &[dir.path().join("m.yaml")],
            &crate::validate::Options {
                max_requests: 100,
                run_id: None,
            },
        );
        let plan = make(
            &mut target,
            &manifests,
            None,
            None,
            Flags::default(),
            Some(&report.counts),
        )
        .unwrap();
        assert_eq!((plan.total, plan.new, plan.to_send()), (5, 5, 5));
    }
}
