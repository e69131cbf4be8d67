//! The results journal (SPEC §4): the record of what was sent and what came back, from which every
//! run decides what to send. It decides what gets paid for, so it is a small state machine whose
//! invariants hold on every path: a kill, a second signal, a dry run, another manifest or shard on
//! the same results, a crash while starting up, a file re-saved by a spreadsheet.
//!
//! # Files
//!
//! - `results.csv`: one row per outcome (see [`crate::results`]); the latest row of a request is
//!   its state. Rewritten atomically at the start and the end of a run.
//! - `results.csv.wal`: the write-ahead log of attempts (`wal.rs`).
//! - `results.csv.lock`: held by the run using the results (`lock.rs`).
//!
//! All three are named after the results file itself, symbolic links resolved.
//!
//! # States of a request
//!
//! ```text
//!            sent line on disk                  row on disk, then `done`
//!   new ─────────────────────────▶ in flight ───────────────────────────▶ submitted | rejected
//!   failed                            │                                   | failed | unknown
//!   (rejected, unknown: with          │ the process dies
//!    --retry-rejected/-unknown)       ▼
//!                                  open entry ──next run──▶ unknown, or failed if its last
//!                                                           attempt was answered with no task
//! ```
//!
//! # Invariants
//!
//! 1. **Durable before it leaves.** An attempt's `sent` line is synced to disk before the first
//!    byte of the attempt is sent ([`WalHandle::sent`] returns only then).
//! 2. **Settled only by a row.** An open entry is settled only by an outcome row on disk: a `done`
//!    line follows a sync of the results; a row of an earlier run settles it if it is `submitted` or
//!    carries the entry's first attempt time as `submitted_at`. The log is emptied only when no
//!    entry in it is open: after the compaction that gave every open entry its row ([`Prior`] →
//!    [`Compactor::finish`]), and at the end of a run that left nothing in flight
//!    ([`Journal::finish`]); a long run rewrites it to its open entries once every entry it
//!    settled has its row on disk. A dry run, a run of another manifest or shard, a start-up that
//!    stops early and a second signal empty nothing.
//! 3. **Open entries first.** Before a run sends anything, every open entry gets its row:
//!    `unknown` (the task may exist), or `failed` when the last attempt was answered in a way that
//!    proves no task was created — whether or not its request is in this run's manifests.
//! 4. **Nothing unread.** Every row of the results is read, or the run stops before sending
//!    (exit 3) naming the line. The one exception: a torn last line (a crash while it was
//!    written) whose request the log still holds open.
//! 5. **One writer per file.** The lock is taken on the file itself, however it is named; a file
//!    with a second hard link is refused.
//! 6. **No row lost.** A rewrite keeps the latest row of every request, in this run's expansion
//!    order, then the rows of requests this run does not know (another manifest, another
//!    shard), then every column of the old file. Descriptive columns of requests in this run are
//!    rendered again from the current manifests; outcome columns are never changed.
//!
//! # Layout
//!
//! - [`Prior`]: what the files say before a run (read-only: a dry run stops there).
//! - [`Compactor`]: the start of a run that will send: rows of earlier runs in this run's order,
//!   open entries settled, then the log emptied; it becomes the [`Journal`].
//! - [`Journal`]: appends this run's rows; the final rewrite.
//! - `lock.rs`, `wal.rs`, `file.rs`: the lock and paths, the write-ahead log and its writer
//!   thread, bytes on disk.

mod file;
mod lock;
mod wal;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;

use uuid::Uuid;

pub use file::persist;
pub use lock::{Lock, LockError, Paths, lock, sibling};
pub use wal::{SYNC_EVERY, Sent, SentLine, WalHandle};

use crate::expand::Request;
use crate::results::{self, Item, OutcomeCols, Rows, Status, World};
use file::{Appender, Window, parse_row, sync_dir};
use lock::parent;
use wal::WalWriter;

/// The position of a row whose request is not in this run's expansion (or is beyond the first
/// 2³² − 1 requests: it is still written, after the placed rows).
pub const UNPLACED: u32 = u32::MAX;

/// A request an earlier run left in flight (an open entry of the log, not settled by any row).
#[derive(Debug, Clone)]
pub struct Orphan {
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
    pub fn status(&self) -> Status {
        if self.recovered.is_some() {
            Status::Submitted
        } else if self.no_task {
            Status::Failed
        } else {
            Status::Unknown
        }
    }

    /// Its row's message.
    pub fn message(&self) -> String {
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
                if what == "not-sent" {
                    "with a refused connection".to_string()
                } else {
                    format!("HTTP {what}")
                }
            ),
            None => format!(
                "the run stopped while attempt {} (sent at {}) was in flight; the task may exist: check it in the HiDream console, then resend with --retry-unknown if it never arrived",
                s.attempt, s.at
            ),
        }
    }

    /// Its row's outcome columns.
    fn outcome(&self) -> OrphanCols {
        let http = self
            .noted
            .as_deref()
            .filter(|w| self.no_task && w.parse::<u16>().is_ok())
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
struct OrphanCols {
    status: Status,
    task_id: String,
    sub_task_ids: String,
    attempts: String,
    http_status: String,
    message: String,
}

/// Why the journal cannot be used: nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
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
struct Slot {
    id: Uuid,
    offset: u64,
    len: u32,
    /// Its request's position in this run's expansion ([`UNPLACED`] until placed).
    pos: u32,
    status: Status,
    world: World,
}

/// What the results and the write-ahead log say before a run. Reading writes nothing.
pub struct Prior {
    paths: Paths,
    header: Vec<String>,
    /// The latest row of each request, sorted by id.
    slots: Vec<Slot>,
    file: Option<File>,
    orphans: Vec<Orphan>,
    by_orphan: HashMap<Uuid, usize>,
    /// A torn last line was excused (the compaction drops it).
    torn: bool,
}

impl Prior {
    /// Read the results (strictly: see [`results::Reader`]) and the write-ahead log.
    pub fn read(paths: Paths) -> Result<Prior, OpenError> {
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
                            world: World::of_row(&r.record[task_col], &r.record[message_col]),
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
                            let subs = whole(subs_col).unwrap_or("").to_string();
                            recovered.insert(entry.sent.id, (task.to_string(), subs));
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

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The existing file's columns (empty if there is no file).
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// No row of an earlier run, nothing in flight: a run sends everything.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.orphans.is_empty() && !self.torn
    }

    /// Requests an earlier run left in flight; each gets a row before anything is sent.
    pub fn orphans(&self) -> &[Orphan] {
        &self.orphans
    }

    /// A request's state before this run: the status its open entry will be settled with, or
    /// its latest row's; and the server that answered it.
    pub fn lookup(&self, id: &Uuid) -> Option<(Status, World)> {
        if let Some(&i) = self.by_orphan.get(id) {
            let o = &self.orphans[i];
            return Some((o.status(), o.sent.world));
        }
        self.slot(id)
            .map(|i| (self.slots[i].status, self.slots[i].world))
    }

    /// Whether the results hold a row of this request.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.slot(id).is_some() || self.by_orphan.contains_key(id)
    }

    fn slot(&self, id: &Uuid) -> Option<usize> {
        self.slots.binary_search_by_key(id, |s| s.id).ok()
    }

    /// How many requests each server answered (rows and open entries): `(api, simulator)`.
    pub fn worlds(&self) -> (u64, u64) {
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

    /// Start the compaction that opens the journal for a run that will send, with this run's
    /// `header` (see [`results::header`]).
    pub fn compactor(self, header: Vec<String>) -> io::Result<Compactor> {
        let dir = parent(&self.paths.file);
        let tmp = tempfile::NamedTempFile::new_in(&dir)?;
        let mut head = csv::Writer::from_writer(Vec::new());
        head.write_record(&header)?;
        let head = head.into_inner().map_err(|e| e.into_error())?;
        let mut out = Appender::new(tmp.as_file().try_clone()?, 0);
        io::Write::write_all(&mut out.file, &head)?;
        out = Appender::new(out.file, head.len() as u64);
        let map = header
            .iter()
            .map(|h| self.header.iter().position(|o| o == h))
            .collect();
        let window = match &self.file {
            Some(f) => Some(Window::new(f.try_clone()?)),
            None => None,
        };
        Ok(Compactor {
            rows: Rows::new(&header),
            placed_orphans: vec![false; self.orphans.len()],
            prior: self,
            window,
            tmp,
            written: Written {
                out,
                index: Vec::new(),
            },
            header,
            map,
        })
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
                let task = parse_row(w.get(s.offset, s.len as usize)?)?
                    .get(task_col)
                    .unwrap_or("")
                    .to_string();
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

/// A row of the results being written, and where its request is in this run's expansion.
#[derive(Debug, Clone, Copy)]
struct Placed {
    id: Uuid,
    offset: u64,
    len: u32,
    pos: u32,
}

/// Rows appended to a file, and where each is.
struct Written {
    out: Appender,
    index: Vec<Placed>,
}

impl Written {
    /// Encode the row of request `id` (at position `pos` of the expansion); written with the
    /// next [`Appender::flush`].
    fn push<S: AsRef<str>>(&mut self, id: Uuid, pos: u32, row: &[S]) -> io::Result<()> {
        let (offset, len) = self.out.push(id, row)?;
        self.index.push(Placed {
            id,
            offset,
            len,
            pos,
        });
        Ok(())
    }
}

/// The compaction at the start of a run that sends: a new results file with the latest row of
/// every request, in this run's expansion order (descriptive columns from the current manifests),
/// a row for every open entry, then the rows of requests this run does not know.
pub struct Compactor {
    prior: Prior,
    window: Option<Window>,
    tmp: tempfile::NamedTempFile,
    written: Written,
    header: Vec<String>,
    rows: Rows,
    /// The old column of each column of the new header.
    map: Vec<Option<usize>>,
    placed_orphans: Vec<bool>,
}

/// Rows are written to the temporary file in pieces of about this size.
const PIECE: usize = 256 * 1024;

impl Compactor {
    /// The state of `request` before this run (as [`Prior::lookup`]).
    pub fn lookup(&self, id: &Uuid) -> Option<(Status, World)> {
        self.prior.lookup(id)
    }

    pub fn prior(&self) -> &Prior {
        &self.prior
    }

    /// The request at position `pos` of this run's expansion: its row (its earlier row with the
    /// current manifest's descriptive columns, and the outcome that settles its open entry if it
    /// has one) goes here.
    pub fn place(&mut self, pos: u32, request: &Request) -> io::Result<()> {
        let id = request.id;
        let slot = self.prior.slot(&id);
        if let Some(i) = slot {
            self.prior.slots[i].pos = pos;
        }
        let orphan = self.prior.by_orphan.get(&id).copied();
        if let Some(i) = orphan
            && std::mem::replace(&mut self.placed_orphans[i], true)
        {
            return Ok(());
        }
        if slot.is_none() && orphan.is_none() {
            return Ok(());
        }
        self.write_row(id, pos, slot, orphan, Some(request))
    }

    /// Write the row of request `id` at position `pos`: its earlier row (`slot`) with every
    /// column kept, the outcome that settles its open entry (`orphan`) if it has one, and the
    /// descriptive columns of `request` when this run knows it.
    fn write_row(
        &mut self,
        id: Uuid,
        pos: u32,
        slot: Option<usize>,
        orphan: Option<usize>,
        request: Option<&Request>,
    ) -> io::Result<()> {
        let record = slot.map(|i| self.old_row(i)).transpose()?;
        let mut row: Vec<Cow<'_, str>> = self
            .map
            .iter()
            .map(|m| Cow::Borrowed(m.and_then(|c| record.as_ref()?.get(c)).unwrap_or("")))
            .collect();
        let orphan = orphan.map(|i| self.prior.orphans[i].clone());
        let settled = orphan.as_ref().map(Orphan::outcome);
        let id_text = id.to_string();
        if let (Some(o), Some(c)) = (&orphan, &settled) {
            self.rows.set_outcome(
                &mut row,
                id_text.as_str().into(),
                OutcomeCols {
                    status: c.status.as_str(),
                    task_id: &c.task_id,
                    sub_task_ids: c.sub_task_ids.as_str().into(),
                    attempts: c.attempts.as_str().into(),
                    http_status: c.http_status.as_str().into(),
                    message: c.message.as_str().into(),
                    submitted_at: &o.sent.first_at,
                    ..OutcomeCols::default()
                },
            );
            if record.is_none() {
                self.rows.set_job(&mut row, &o.sent.job, o.sent.kind);
            }
        }
        if let Some(r) = request {
            self.rows.describe(&mut row, r);
        }
        let row: Vec<String> = row.into_iter().map(Cow::into_owned).collect();
        self.push(id, pos, &row)
    }

    fn old_row(&mut self, slot: usize) -> io::Result<csv::StringRecord> {
        let s = self.prior.slots[slot];
        let window = self
            .window
            .as_mut()
            .ok_or_else(|| io::Error::other("a row without a results file"))?;
        parse_row(window.get(s.offset, s.len as usize)?)
    }

    fn push<S: AsRef<str>>(&mut self, id: Uuid, pos: u32, row: &[S]) -> io::Result<()> {
        self.written.push(id, pos, row)?;
        if self.written.out.buffered() >= PIECE {
            self.written.out.flush()?;
        }
        Ok(())
    }

    /// Write the rows this run does not know, replace the results with the new file, and only
    /// then empty the write-ahead log (every open entry now has its row on disk). The journal
    /// is ready for this run's rows; the states of the requests before it are returned for the
    /// dispatch to decide from.
    pub fn finish(mut self) -> io::Result<(Journal, Resume)> {
        // Rows of requests not in this run, in the order they were in (settling their open
        // entries, if any).
        let mut rest: Vec<usize> = (0..self.prior.slots.len())
            .filter(|&i| self.prior.slots[i].pos == UNPLACED)
            .collect();
        rest.sort_unstable_by_key(|&i| self.prior.slots[i].offset);
        for i in rest {
            let id = self.prior.slots[i].id;
            let orphan = self.prior.by_orphan.get(&id).copied();
            if let Some(o) = orphan {
                self.placed_orphans[o] = true;
            }
            self.write_row(id, UNPLACED, Some(i), orphan, None)?;
        }
        // Open entries of requests with no row and not in this run: settled all the same.
        for i in 0..self.prior.orphans.len() {
            if !std::mem::replace(&mut self.placed_orphans[i], true) {
                let id = self.prior.orphans[i].sent.id;
                self.write_row(id, UNPLACED, None, Some(i), None)?;
            }
        }
        self.written.out.flush()?;
        let paths = self.prior.paths.clone();
        persist(self.tmp, &paths.file)?;
        crash_point("compacted");
        // Every open entry has its row on disk: the log may be emptied (invariant 2).
        let wal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&paths.wal)?;
        wal.sync_all()?;
        sync_dir(&paths.wal)?;
        let results = OpenOptions::new().append(true).open(&paths.file)?;
        let len = results.metadata()?.len();
        let writer = WalWriter::start(&paths.wal, wal, results.try_clone()?)?;
        let mut states: Vec<(Uuid, Status)> = self
            .prior
            .slots
            .iter()
            .filter(|s| !self.prior.by_orphan.contains_key(&s.id))
            .map(|s| (s.id, s.status))
            .chain(self.prior.orphans.iter().map(|o| (o.sent.id, o.status())))
            .collect();
        states.sort_unstable_by_key(|(id, _)| *id);
        let journal = Journal {
            paths,
            header: self.header,
            written: Written {
                out: Appender::new(results, len),
                index: self.written.index,
            },
            wal: writer,
        };
        Ok((journal, Resume { states }))
    }
}

/// The state of every request before the run (its latest row, open entries settled), which the
/// dispatch decides from: 24 bytes a request, sorted by id.
#[derive(Debug, Default)]
pub struct Resume {
    states: Vec<(Uuid, Status)>,
}

impl Resume {
    pub fn get(&self, id: &Uuid) -> Option<Status> {
        self.states
            .binary_search_by_key(id, |(i, _)| *i)
            .ok()
            .map(|i| self.states[i].1)
    }
}

/// The results file of a running run: this run's rows are appended; [`Journal::finish`] rewrites.
pub struct Journal {
    paths: Paths,
    header: Vec<String>,
    /// Every row in the file: the compacted ones, then this run's in file order (a request may
    /// appear twice: the later row wins).
    written: Written,
    wal: WalWriter,
}

impl Journal {
    /// What submissions use to log their attempts.
    pub fn wal(&self) -> WalHandle {
        self.wal.handle()
    }

    /// Make room for `n` more rows (the run knows how many requests it will send).
    pub fn reserve(&mut self, n: usize) {
        self.written.index.reserve_exact(n);
    }

    /// Append the outcome row (aligned with the header) of the request at position `pos`, without
    /// writing it yet: outcomes that arrive together are written with one [`Journal::flush`],
    /// which the caller makes before it waits for anything else.
    pub fn append<S: AsRef<str>>(&mut self, id: Uuid, pos: u32, row: &[S]) -> io::Result<()> {
        self.written.push(id, pos, row)
    }

    /// Write the appended rows to the results file (a crash of the process loses none of them
    /// from then on); their entries are settled in the log once the file is synced.
    pub fn flush(&mut self) -> io::Result<()> {
        let ids = self.written.out.flush()?;
        self.wal.settled(ids);
        Ok(())
    }

    /// End the run: every row on disk and settled in the log; the results rewritten atomically
    /// to one row per request in expansion order (rows not placed after them, in file order);
    /// the log emptied if nothing is left in flight. Returns the attempts still in flight (a
    /// second signal abandoned them): they stay in the log for the next run to settle.
    pub fn finish(mut self) -> io::Result<Vec<Sent>> {
        self.flush()?;
        let open = self.wal.finish()?;
        // The latest row of each request: sort by id, later rows (larger offsets) last; a request
        // keeps the position any of its rows was given.
        let mut slots = std::mem::take(&mut self.written.index);
        slots.sort_unstable_by_key(|s| (s.id, s.offset));
        let mut latest: Vec<Placed> = Vec::with_capacity(slots.len());
        for slot in slots {
            match latest.last_mut() {
                Some(last) if last.id == slot.id => {
                    let pos = last.pos.min(slot.pos);
                    *last = Placed { pos, ..slot };
                }
                _ => latest.push(slot),
            }
        }
        latest.sort_unstable_by_key(|s| (s.pos, s.offset));
        let mut window = Window::new(File::open(&self.paths.file)?);
        let mut tmp = tempfile::NamedTempFile::new_in(parent(&self.paths.file))?;
        {
            use io::Write;
            let mut w = io::BufWriter::new(tmp.as_file_mut());
            let mut header = csv::Writer::from_writer(Vec::new());
            header.write_record(&self.header)?;
            w.write_all(&header.into_inner().map_err(|e| e.into_error())?)?;
            for slot in &latest {
                w.write_all(window.get(slot.offset, slot.len as usize)?)?;
            }
            w.flush()?;
        }
        persist(tmp, &self.paths.file)?;
        crash_point("finished");
        if open.is_empty() {
            // Everything is recorded: nothing is in flight (invariant 2).
            let wal = OpenOptions::new().write(true).open(&self.paths.wal)?;
            wal.set_len(0)?;
            wal.sync_all()?;
        }
        Ok(open)
    }
}

/// Abort here if the test hook [`crate::env_vars::CRASH_AT`] names this point.
pub(crate) fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(crate::env_vars::CRASH_AT).ok());
    if at.as_deref() == Some(name) {
        std::process::abort();
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
