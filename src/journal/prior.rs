//! What the files say before a run: the latest row of every request, and the open entries of
//! the write-ahead log with the rows that settle them (invariants 3 and 4). Reading writes
//! nothing: a dry run stops here.

use std::collections::HashMap;
use std::fs::File;
use std::io;

use uuid::Uuid;

use super::file::{Window, parse_row};
use super::wal::{self, Sent};
use super::{Paths, UNPLACED};
use crate::results::{self, Item, Status, World};

/// A request an earlier run left in flight (an open entry of the log, not settled by any row).
#[derive(Debug, Clone)]
pub(crate) struct Orphan {
    /// Its last attempt.
    pub sent: Sent,
    /// What proved that attempt created no task, if anything did.
    pub noted: Option<String>,
    /// No attempt of it can have created a task: each was answered without one.
    pub no_task: bool,
    /// The task id (and sub-task ids) of a last row cut short by a crash after them.
    pub recovered: Option<(String, String)>,
}

impl Orphan {
    /// The status its row gets.
    pub(crate) fn status(&self) -> Status {
        if self.recovered.is_some() {
            Status::Submitted
        } else if self.no_task {
            Status::Failed
        } else {
            Status::Unknown
        }
    }

    /// Its row's message.
    pub(crate) fn message(&self) -> String {
        let s = &self.sent;
        if self.recovered.is_some() {
            return "the row of this task was cut short by a crash; its task id was recovered"
                .into();
        }
        match self.noted.as_ref().filter(|_| self.no_task) {
            Some(what) => format!(
                "the run stopped after attempt {} ({}) was answered {} (no task was created); it is sent again",
                s.attempt,
                s.at,
                match what.split_once(':') {
                    _ if what == "not-sent" => "with a refused connection".to_string(),
                    // `--retry-code`: a 2xx refusal, noted with its code.
                    Some((status, code)) => format!("HTTP {status} with code {code}"),
                    None => format!("HTTP {what}"),
                }
            ),
            None => format!(
                "the run stopped while attempt {} (sent at {}) was in flight; the task may exist: check it in the HiDream console, then resend with --retry-unknown if it never arrived",
                s.attempt, s.at
            ),
        }
    }

    /// Its row's outcome columns.
    pub(super) fn outcome(&self) -> OrphanCols {
        let http = self
            .noted
            .as_deref()
            .filter(|_| self.no_task)
            .map(|w| w.split_once(':').map_or(w, |(status, _)| status))
            .filter(|w| w.parse::<u16>().is_ok())
            .unwrap_or("")
            .to_string();
        let (task_id, sub_task_ids) = self.recovered.clone().unwrap_or_default();
        OrphanCols {
            status: self.status(),
            task_id,
            sub_task_ids,
            attempts: self.sent.attempt.to_string(),
            http_status: http,
            message: self.sent.world.mark(&self.message()).into_owned(),
        }
    }
}

/// The outcome columns of an orphan's row, owned.
pub(super) struct OrphanCols {
    pub(super) status: Status,
    pub(super) task_id: String,
    pub(super) sub_task_ids: String,
    pub(super) attempts: String,
    pub(super) http_status: String,
    pub(super) message: String,
}

/// Why the journal cannot be used: nothing was sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(
        "cannot read the results {shown} completely: {place}{what}. Nothing was sent: a run decides from this file what to send, and a row it cannot read would be sent (and paid for) again. Fix that line — from a spreadsheet, save as \"CSV UTF-8\" and keep the columns as they were — or restore the file as hidream-batch wrote it"
    )]
    Results {
        shown: String,
        place: String,
        what: String,
    },
    #[error(
        "cannot read the write-ahead log `{path}`: line {line}: {what}. Nothing was sent: the log names requests that may have been in flight when a run stopped. Restore it; or, once every request it names has a row in the results (or was checked in the HiDream console), move it aside"
    )]
    Wal {
        path: String,
        line: u64,
        what: String,
    },
    #[error("cannot read {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The latest row of a request in the results.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) id: Uuid,
    pub(super) offset: u64,
    pub(super) len: u32,
    /// Its request's position in this run's expansion ([`UNPLACED`] until placed).
    pub(super) pos: u32,
    pub(super) status: Status,
    pub(super) world: World,
}

/// What the results and the write-ahead log say before a run. Reading writes nothing.
pub(crate) struct Prior {
    pub(super) paths: Paths,
    pub(super) header: Vec<String>,
    /// The latest row of each request, sorted by id.
    pub(super) slots: Vec<Slot>,
    pub(super) file: Option<File>,
    pub(super) orphans: Vec<Orphan>,
    pub(super) by_orphan: HashMap<Uuid, usize>,
    /// A torn last line was excused (the compaction drops it).
    torn: bool,
}

impl Prior {
    /// Read the results (strictly: see [`results::Reader`]) and the write-ahead log.
    pub(crate) fn read(paths: Paths) -> Result<Prior, OpenError> {
        let entries = match wal::read(&paths.wal) {
            Ok(Ok(entries)) => entries,
            Ok(Err(bad)) => {
                return Err(OpenError::Wal {
                    path: paths.wal.display().to_string(),
                    line: bad.line,
                    what: bad.what,
                });
            }
            Err(source) => {
                return Err(OpenError::Io {
                    what: format!("the write-ahead log `{}`", paths.wal.display()),
                    source,
                });
            }
        };
        let io_err = |source| OpenError::Io {
            what: format!("the results {}", paths.display()),
            source,
        };
        let unreadable = |line: u64, what: String| OpenError::Results {
            shown: paths.display(),
            place: if line > 0 {
                format!("line {line}: ")
            } else {
                String::new()
            },
            what,
        };
        // For each open entry: whether a row settles it (a `submitted` one, or the latest one
        // carrying the entry's first attempt time), and a task id a torn last row still shows.
        let first_at: HashMap<Uuid, &str> = entries
            .iter()
            .map(|e| (e.sent.id, e.sent.first_at.as_str()))
            .collect();
        let mut settled: HashMap<Uuid, (bool, bool)> = HashMap::new();
        let mut recovered: HashMap<Uuid, (String, String)> = HashMap::new();
        let mut header = Vec::new();
        let mut slots = Vec::new();
        let mut torn = false;
        let file = match File::open(&paths.file) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        let len = match &file {
            Some(f) => f.metadata().map_err(io_err)?.len(),
            None => 0,
        };
        let mut task_col = 0;
        if let (Some(f), true) = (&file, len > 0) {
            let mut reader = results::Reader::open(f)
                .map_err(io_err)?
                .map_err(|u| unreadable(u.line, u.what))?;
            header = reader.header().to_vec();
            let col = |name: &str| header.iter().position(|h| h == name).expect("required");
            task_col = col("task_id");
            let (status_col, subs_col, message_col, at_col) = (
                col("status"),
                col("sub_task_ids"),
                col("message"),
                col("submitted_at"),
            );
            while let Some(item) = reader.next_item() {
                match item.map_err(|u| unreadable(u.line, u.what))? {
                    Item::Row(r) => {
                        if let Some(first_at) = first_at.get(&r.id) {
                            let s = settled.entry(r.id).or_default();
                            s.0 |= r.status == Status::Submitted;
                            s.1 = r.record[at_col].trim() == *first_at;
                        }
                        slots.push(Slot {
                            id: r.id,
                            offset: r.offset,
                            len: u32::try_from(r.len).map_err(|_| {
                                unreadable(r.line, "the row is longer than 4 GiB".into())
                            })?,
                            pos: UNPLACED,
                            status: r.status,
                            world: World::of_row(
                                results::cell_unescape(&r.record[task_col]),
                                &r.record[message_col],
                            ),
                        });
                    }
                    Item::Torn { line, record } => {
                        let prefix = record.get(0).unwrap_or("").trim().to_ascii_lowercase();
                        let held = entries.iter().find(|e| {
                            !prefix.is_empty() && e.sent.id.to_string().starts_with(&prefix)
                        });
                        let Some(entry) = held else {
                            return Err(unreadable(
                                line,
                                "the last row is incomplete (a crash while it was written?) and the write-ahead log does not hold its request".into(),
                            ));
                        };
                        torn = true;
                        // A field is whole if another one started after it.
                        let whole = |c: usize| (c + 1 < record.len()).then(|| record[c].trim());
                        if whole(status_col).and_then(Status::parse) == Some(Status::Submitted)
                            && let Some(task) = whole(task_col).filter(|t| !t.is_empty())
                        {
                            // The ids themselves: the row that settles the entry escapes them again.
                            let subs = results::cell_unescape(whole(subs_col).unwrap_or(""));
                            recovered.insert(
                                entry.sent.id,
                                (results::cell_unescape(task).to_string(), subs.to_string()),
                            );
                        }
                    }
                }
            }
        }
        let slots = match &file {
            Some(f) => latest_rows(slots, f, task_col).map_err(io_err)?,
            None => slots,
        };
        let orphans: Vec<Orphan> = entries
            .into_iter()
            .filter(|e| !settled.get(&e.sent.id).is_some_and(|(sub, at)| *sub || *at))
            .map(|e| Orphan {
                no_task: e.no_task(),
                recovered: recovered.remove(&e.sent.id),
                sent: e.sent,
                noted: e.noted,
            })
            .collect();
        let by_orphan = orphans
            .iter()
            .enumerate()
            .map(|(i, o)| (o.sent.id, i))
            .collect();
        Ok(Prior {
            paths,
            header,
            slots,
            file,
            orphans,
            by_orphan,
            torn,
        })
    }

    pub(crate) fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The existing file's columns (empty if there is no file).
    pub(crate) fn header(&self) -> &[String] {
        &self.header
    }

    /// No row of an earlier run, nothing in flight: a run sends everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.orphans.is_empty() && !self.torn
    }

    /// Requests an earlier run left in flight; each gets a row before anything is sent.
    pub(crate) fn orphans(&self) -> &[Orphan] {
        &self.orphans
    }

    /// A request's state before this run: the status its open entry will be settled with, or
    /// its latest row's; and the server that answered it.
    pub(crate) fn lookup(&self, id: &Uuid) -> Option<(Status, World)> {
        if let Some(&i) = self.by_orphan.get(id) {
            let o = &self.orphans[i];
            return Some((o.status(), o.sent.world));
        }
        self.slot(id)
            .map(|i| (self.slots[i].status, self.slots[i].world))
    }

    /// Whether the results hold a row of this request.
    pub(crate) fn contains(&self, id: &Uuid) -> bool {
        self.slot(id).is_some() || self.by_orphan.contains_key(id)
    }

    pub(super) fn slot(&self, id: &Uuid) -> Option<usize> {
        self.slots.binary_search_by_key(id, |s| s.id).ok()
    }

    /// How many requests each server answered (rows and open entries): `(api, simulator)`.
    pub(crate) fn worlds(&self) -> (u64, u64) {
        let mut n = (0, 0);
        let mut count = |w: World| match w {
            World::Api => n.0 += 1,
            World::Simulator => n.1 += 1,
        };
        self.slots
            .iter()
            .filter(|s| !self.by_orphan.contains_key(&s.id))
            .for_each(|s| count(s.world));
        self.orphans.iter().for_each(|o| count(o.sent.world));
        n
    }
}

/// The row that stands for each request: its latest `submitted` row if it has one (a task id is
/// never given up for a later row without one, as `merge` decides too), else its latest row.
/// Two `submitted` rows with different task ids mean the request was paid for twice: both ids
/// are named in a warning (the latest row is kept).
fn latest_rows(mut slots: Vec<Slot>, file: &File, task_col: usize) -> io::Result<Vec<Slot>> {
    slots.sort_unstable_by_key(|s| (s.id, s.offset));
    let mut out: Vec<Slot> = Vec::with_capacity(slots.len());
    let mut window: Option<Window> = None;
    let mut start = 0;
    while start < slots.len() {
        let id = slots[start].id;
        let end = start + slots[start..].iter().take_while(|s| s.id == id).count();
        let group = &slots[start..end];
        let submitted: Vec<&Slot> = group
            .iter()
            .filter(|s| s.status == Status::Submitted)
            .collect();
        if submitted.len() > 1 {
            let w = match &mut window {
                Some(w) => w,
                None => window.insert(Window::new(file.try_clone()?)),
            };
            let mut tasks: Vec<String> = Vec::new();
            for s in &submitted {
                let row = parse_row(w.get(s.offset, s.len as usize)?)?;
                let task = results::cell_unescape(row.get(task_col).unwrap_or("")).to_string();
                if !tasks.contains(&task) {
                    tasks.push(task);
                }
            }
            if tasks.len() > 1 {
                tracing::warn!(
                    request_id = %id,
                    "request {id} has {} task ids in the results ({}): it was submitted more than once, and each may be billed; the latest is kept",
                    tasks.len(),
                    tasks.iter().map(|t| crate::logging::safe(t).into_owned()).collect::<Vec<_>>().join(", ")
                );
            }
        }
        out.push(**submitted.last().unwrap_or(&group.last().expect("a group")));
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orphan(noted: Option<&str>, no_task: bool) -> Orphan {
        Orphan {
            sent: Sent {
                id: Uuid::from_u128(1),
                attempt: 2,
                at: "2025-01-01T00:00:00Z".into(),
                first_at: "2025-01-01T00:00:00Z".into(),
                world: World::Api,
                kind: None,
                job: "j".into(),
            },
            noted: noted.map(str::to_string),
            no_task,
            recovered: None,
        }
    }

    /// What a noted attempt was answered is in the orphan's row: the HTTP status in its column,
    /// and a 2xx retried for its code (`--retry-code`, noted `200:2001`) says so.
    #[test]
    fn a_noted_answer_is_named_in_the_row() {
        let coded = orphan(Some("200:2001"), true);
        assert_eq!(coded.status(), Status::Failed);
        assert_eq!(coded.outcome().http_status, "200");
        assert!(
            coded
                .message()
                .contains("answered HTTP 200 with code 2001 (no task was created)"),
            "{}",
            coded.message()
        );
        let busy = orphan(Some("429"), true);
        assert_eq!(busy.outcome().http_status, "429");
        assert!(busy.message().contains("answered HTTP 429 (no task"));
        let refused = orphan(Some("not-sent"), true);
        assert_eq!(refused.outcome().http_status, "");
        assert!(refused.message().contains("with a refused connection"));
        // An earlier attempt may have created a task: `unknown`, whatever the last was answered.
        let maybe = orphan(Some("200:2001"), false);
        assert_eq!(maybe.status(), Status::Unknown);
        assert_eq!(maybe.outcome().http_status, "");
    }
}
