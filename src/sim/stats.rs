//! What the simulator saw, for tests and benchmarks to prove what a client did: `GET /sim/stats`
//! and [`super::Simulator::stats`] return a [`Stats`] snapshot. The account's numbers (unfinished
//! tasks, credit) live with the account, under its lock, and are added to the snapshot there.
//!
//! Counters are atomics updated on the hot path without locks; only the rare paths (a rejection's
//! reason) and duplicate detection take a short `std` mutex, never held across an `.await`.
//! Duplicate detection keeps one 64-bit hash per accepted request and nothing more.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::api::Kind;

/// A snapshot of the simulator's counters, as `GET /sim/stats` serves it. All counts start at 0
/// when the simulator starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Stats {
    /// Requests received per endpoint, whatever the answer.
    pub calls: Calls,
    /// Submit requests received, both kinds (`calls.submit_txt2img + calls.submit_model`).
    pub submitted: u64,
    /// Submit requests that created a task (including those whose answer was then dropped).
    pub accepted: u64,
    /// Images in the accepted requests (a request for 4 images counts 4).
    pub accepted_images: u64,
    /// Accepted requests per kind.
    pub accepted_by_kind: PerKind,
    /// Submit requests answered HTTP 200 with `code != 0` for invalid input (the account's
    /// refusals are counted apart: `pending_limited`, `credits_refused`).
    pub rejected: u64,
    /// Rejections by the field at fault: the field's name (`prompt`, `img_count`,
    /// `template.human_template_id` — missing, or with `--strict-templates` not listed —, …), or `unknown_field`, `body` (not a JSON object),
    /// `content_type`, `template_or_prompt` (both or neither).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Accepted requests that were accepted before: the same txt2img `request_id` (or, without
    /// one, the same body), or for model requests the same body. Each repeat counts 1.
    pub duplicates: u64,
    /// Answers HTTP 401 (missing or wrong bearer token), on any endpoint.
    pub http_401: u64,
    /// Answers HTTP 429, every cause (`rate_limited + concurrency_limited + throttled`).
    pub http_429: u64,
    /// HTTP 429 because accepting would exceed `--rate-limit` images per rolling minute.
    pub rate_limited: u64,
    /// HTTP 429 because more than `--max-concurrent` submit requests were in flight.
    pub concurrency_limited: u64,
    /// HTTP 429 shed at random (`--throttle-rate`).
    pub throttled: u64,
    /// Answers HTTP 500 (the `--error-rate` fault).
    pub http_500: u64,
    /// Submit connections closed without an answer before a task was created (`--drop-before`).
    pub dropped_before: u64,
    /// Submit connections closed without an answer after the task was created (`--drop-after`).
    pub dropped_after: u64,
    /// Result queries (single or batch) naming a task id that this simulator never issued.
    pub unknown_task_ids: u64,
    /// Submit requests being handled right now (from arrival to answer, latency included).
    pub in_flight: u64,
    /// The most submit requests ever handled at once, counted on arrival — before any 429 — so it
    /// shows the concurrency the client used, not the concurrency the simulator allowed.
    pub max_in_flight: u64,
    /// Per endpoint, the most images accepted in any rolling minute (60 s unless
    /// [`super::SimConfig::rate_minute`] says otherwise; 600 buckets, 100 ms each of 60 s).
    pub max_images_per_minute: PerKind,
    /// Tasks created by this simulator and not yet at their end (`task_time` after creation),
    /// both endpoints: what the API's concurrency limit counts (`--max-pending`).
    pub pending: u64,
    /// The most unfinished tasks there ever were at once, counted whether or not `--max-pending`
    /// is set: a client that respects a limit of N never makes it exceed N.
    pub max_pending_seen: u64,
    /// Submit requests refused (HTTP 200, `code` 1201) because `--max-pending` tasks were
    /// unfinished.
    pub pending_limited: u64,
    /// Submit requests refused (HTTP 200, `code` 1202) because less credit was left than their
    /// images (`--credits`).
    pub credits_refused: u64,
    /// Images of credit left (`--credits`); `null` without `--credits`.
    pub credits_left: Option<u64>,
}

/// Requests received per endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Calls {
    /// `POST /api-pub/gw/v3/image/txt2img/async`.
    pub submit_txt2img: u64,
    /// `POST /api-pub/ec/v3/image/model/async`.
    pub submit_model: u64,
    /// `GET /api-pub/gw/v3/image/txt2img/async/results`.
    pub results_txt2img: u64,
    /// `GET /api-pub/ec/v3/image/model/async/results`.
    pub results_model: u64,
    /// `POST /api-pub/gw/v3/image/txt2img/async/results/batch`.
    pub batch_results_txt2img: u64,
    /// `POST /api-pub/ec/v3/image/model/async/results/batch`.
    pub batch_results_model: u64,
    /// `GET /sim/images/<sub_task_id>.png` (or without `.png`).
    pub images: u64,
    /// `GET /sim/stats`.
    pub stats: u64,
    /// Any other path (answered HTTP 404).
    pub not_found: u64,
    /// `GET /api-pub/ec/v3/template/model/human`: one per page asked.
    pub templates_human: u64,
    /// `GET /api-pub/ec/v3/template/model/scene`: one per page asked.
    pub templates_scene: u64,
    /// `GET /sim/templates/<id>.png`: template covers.
    pub template_covers: u64,
}

/// One number per endpoint kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PerKind {
    /// Text-to-image.
    pub txt2img: u64,
    /// Model images.
    pub model: u64,
}

impl PerKind {
    /// The number of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Txt2Img => self.txt2img,
            Kind::Model => self.model,
        }
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submit: [AtomicU64; 2],
    pub results: [AtomicU64; 2],
    pub batch_results: [AtomicU64; 2],
    pub images: AtomicU64,
    pub stats: AtomicU64,
    pub not_found: AtomicU64,
    /// Template list pages asked: human, scene.
    pub templates: [AtomicU64; 2],
    pub template_covers: AtomicU64,
    pub accepted: [AtomicU64; 2],
    pub accepted_images: AtomicU64,
    pub rejected: AtomicU64,
    pub reasons: Mutex<BTreeMap<&'static str, u64>>,
    pub duplicates: AtomicU64,
    pub http_401: AtomicU64,
    pub rate_limited: AtomicU64,
    pub concurrency_limited: AtomicU64,
    pub throttled: AtomicU64,
    pub http_500: AtomicU64,
    pub dropped_before: AtomicU64,
    pub dropped_after: AtomicU64,
    pub unknown_task_ids: AtomicU64,
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub max_per_minute: [AtomicU64; 2],
    pub seen: Seen,
}

/// Index of a kind in the per-kind counter arrays.
pub(crate) fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Txt2Img => 0,
        Kind::Model => 1,
    }
}

/// Add one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn reject(&self, reason: &'static str) {
        bump(&self.rejected);
        *self
            .reasons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Record an accepted request; `key` identifies it for duplicate detection.
    pub(crate) fn accept(&self, kind: Kind, images: u32, key: u64, window_total: u64) {
        bump(&self.accepted[slot(kind)]);
        self.accepted_images
            .fetch_add(u64::from(images), Ordering::Relaxed);
        self.max_per_minute[slot(kind)].fetch_max(window_total, Ordering::Relaxed);
        if !self.seen.insert(key) {
            bump(&self.duplicates);
        }
    }

    /// A submit request arrived; the returned guard counts it in flight until dropped.
    pub(crate) fn arrive(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let per = |c: &[AtomicU64; 2]| PerKind {
            txt2img: get(&c[0]),
            model: get(&c[1]),
        };
        let calls = Calls {
            submit_txt2img: get(&self.submit[0]),
            submit_model: get(&self.submit[1]),
            results_txt2img: get(&self.results[0]),
            results_model: get(&self.results[1]),
            batch_results_txt2img: get(&self.batch_results[0]),
            batch_results_model: get(&self.batch_results[1]),
            images: get(&self.images),
            stats: get(&self.stats),
            not_found: get(&self.not_found),
            templates_human: get(&self.templates[0]),
            templates_scene: get(&self.templates[1]),
            template_covers: get(&self.template_covers),
        };
        let accepted_by_kind = per(&self.accepted);
        let (rate_limited, concurrency_limited, throttled) = (
            get(&self.rate_limited),
            get(&self.concurrency_limited),
            get(&self.throttled),
        );
        Stats {
            submitted: calls.submit_txt2img + calls.submit_model,
            calls,
            accepted: accepted_by_kind.txt2img + accepted_by_kind.model,
            accepted_images: get(&self.accepted_images),
            accepted_by_kind,
            rejected: get(&self.rejected),
            rejected_by_reason: self
                .reasons
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            duplicates: get(&self.duplicates),
            http_401: get(&self.http_401),
            http_429: rate_limited + concurrency_limited + throttled,
            rate_limited,
            concurrency_limited,
            throttled,
            http_500: get(&self.http_500),
            dropped_before: get(&self.dropped_before),
            dropped_after: get(&self.dropped_after),
            unknown_task_ids: get(&self.unknown_task_ids),
            in_flight: get(&self.in_flight),
            max_in_flight: get(&self.max_in_flight),
            max_images_per_minute: per(&self.max_per_minute),
            // The account's numbers: filled in by `Account::fill`.
            pending: 0,
            max_pending_seen: 0,
            pending_limited: 0,
            credits_refused: 0,
            credits_left: None,
        }
    }
}

/// Counts a submit request in flight while alive.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The keys of accepted requests, split into shards so that concurrent inserts rarely contend.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    shards: [Mutex<HashSet<u64, BuildHasherDefault<Identity>>>; 16],
}

impl Seen {
    /// Remember `key`; `false` if it was already there.
    fn insert(&self, key: u64) -> bool {
        // Middle bits: the table uses the low bits for its index and the top seven as tags.
        self.shards[((key >> 40) & 15) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
    }
}

/// The keys are already well-mixed hashes: hashing them again would only cost time.
#[derive(Debug, Default)]
pub(crate) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
