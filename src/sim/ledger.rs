//! The simulator's ledger: every task it created, in memory (for tests) or as JSON lines in a
//! file (`simulate --ledger`), to check that a client lost no task id.

use std::sync::Mutex;

use crate::api::Kind;

/// The record of created tasks (see [`super::LedgerConfig`]).
pub(crate) enum Ledger {
    Off,
    Memory(Mutex<Vec<Created>>),
    File(Mutex<std::io::BufWriter<std::fs::File>>),
}

impl Ledger {
    pub(super) fn open(config: &super::LedgerConfig) -> std::io::Result<Ledger> {
        Ok(match config {
            super::LedgerConfig::Off => Ledger::Off,
            super::LedgerConfig::Memory => Ledger::Memory(Mutex::new(Vec::new())),
            super::LedgerConfig::File(path) => Ledger::File(Mutex::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ))),
        })
    }

    pub(super) fn record(&self, created: Created) {
        match self {
            Ledger::Off => {}
            Ledger::Memory(list) => list.lock().unwrap_or_else(|e| e.into_inner()).push(created),
            Ledger::File(file) => {
                use std::io::Write;
                let line = serde_json::json!({
                    "kind": created.kind,
                    "request_id": created.request_id,
                    "task_id": created.task_id,
                });
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                if writeln!(f, "{line}").and_then(|()| f.flush()).is_err() {
                    tracing::warn!("cannot write the ledger");
                }
            }
        }
    }

    pub(crate) fn created(&self) -> Vec<Created> {
        match self {
            Ledger::Memory(list) => list.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            _ => Vec::new(),
        }
    }
}

/// A task the simulator created (see [`super::SimConfig::ledger`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The endpoint it was submitted to.
    pub kind: Kind,
    /// The txt2img `request_id` the client sent, if any.
    pub request_id: Option<String>,
    /// The task id the simulator answered with.
    pub task_id: String,
    /// The duplicate-detection key (the body's hash).
    pub key: u64,
}
