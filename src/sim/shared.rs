//! What every handler of the simulator shares: the configuration, the counters, the limits'
//! state, the account and the ledger, with the few questions asked of them on every request (is
//! the token right, where do image URLs point, what is the state of a task).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HOST};

use crate::api::{Kind, SubTaskResult, TaskResult, status};

use super::SimConfig;
use super::account::Account;
use super::faults::{Gate, Windows};
use super::ledger::Ledger;
use super::stats::{Counters, Stats};
use super::tasks::{Task, unix_ms};

/// Everything the handlers share.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub counters: Counters,
    /// Sequence number of the next submit request (see [`super::faults`]).
    pub seq: AtomicU64,
    pub gate: Gate,
    pub windows: Windows,
    /// Origin of the monotonic clock of the rate windows.
    pub started: Instant,
    /// Where this simulator listens: the image host when a request has no usable `Host` header.
    local_addr: SocketAddr,
    /// Every task created, when [`SimConfig::ledger`] asks for it.
    pub ledger: Ledger,
    /// The unfinished tasks and the credit (`--max-pending`, `--credits`).
    pub account: Account,
}

impl Shared {
    pub(crate) fn new(config: SimConfig, local_addr: SocketAddr) -> std::io::Result<Shared> {
        let ledger = Ledger::open(&config.ledger)?;
        let windows = Windows::new(config.rate_minute);
        let account = Account::new(&config);
        Ok(Shared {
            config,
            counters: Counters::default(),
            seq: AtomicU64::new(0),
            gate: Gate::default(),
            windows,
            started: Instant::now(),
            local_addr,
            ledger,
            account,
        })
    }

    /// What `GET /sim/stats` answers: the counters and the account's numbers.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        self.account.fill(&mut stats);
        stats
    }

    /// Whether the request carries an acceptable bearer token; `Err` says what is wrong (without
    /// ever repeating the token).
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let value = headers
            .get(AUTHORIZATION)
            .ok_or("missing `Authorization: Bearer …` header")?;
        let value = value
            .to_str()
            .map_err(|_| "the `Authorization` header is not text")?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or("the `Authorization` header is not `Bearer <token>`")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("the `Authorization` header is not `Bearer <token>`");
        }
        let token = token.trim();
        let ok = match &self.config.token {
            None => !token.is_empty(),
            Some(expected) => constant_time_eq(expected.as_bytes(), token.as_bytes()),
        };
        if ok {
            Ok(())
        } else {
            Err("the bearer token is not valid")
        }
    }

    /// `http://host:port` as the client reached us, for image URLs.
    pub(crate) fn origin(&self, headers: &HeaderMap) -> String {
        let host = headers.get(HOST).and_then(|h| h.to_str().ok()).filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        });
        match host {
            Some(h) => format!("http://{h}"),
            None => format!("http://{}", self.local_addr),
        }
    }

    /// The answer to a query about `id`, or `None` if it is not a task of `kind` this simulator
    /// (or one started before it) issued.
    pub(crate) fn task_result(&self, kind: Kind, id: &str, origin: &str) -> Option<TaskResult> {
        let task = Task::parse(id).filter(|t| t.kind == kind)?;
        let now = unix_ms();
        let sub_task_results = (0..usize::from(task.count))
            .map(|i| {
                let progress = task.progress(i, now);
                let sub_task_id = task.sub_id(i);
                let image = (progress.status == status::DONE).then(|| {
                    if self.config.bare_image_ids {
                        sub_task_id.clone()
                    } else {
                        format!("{origin}/sim/images/{sub_task_id}.png")
                    }
                });
                let description = match progress.status {
                    status::FAILED => Some("generation failed (simulated)".to_string()),
                    status::REFUSED => Some("refused by content review (simulated)".to_string()),
                    _ => None,
                };
                SubTaskResult {
                    sub_task_id,
                    task_status: progress.status,
                    task_completion: Some(progress.completion),
                    image,
                    description,
                }
            })
            .collect();
        Some(TaskResult {
            task_id: Some(id.to_string()),
            sub_task_results,
        })
    }
}

/// Constant-time comparison, so response timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
