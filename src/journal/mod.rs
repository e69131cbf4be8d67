//! The results journal (README "Results CSV"): the record of what was sent and what came back, from which every
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

mod compact;
mod file;
mod lock;
mod prior;
mod wal;
mod writer;

use std::fs::{File, OpenOptions};
use std::io;

use uuid::Uuid;

pub(crate) use compact::{Compactor, Resume};
pub(crate) use file::persist;
pub(crate) use lock::{Lock, Paths, lock};
pub(crate) use prior::Prior;
pub(crate) use wal::{Sent, SentLine};
pub(crate) use writer::WalHandle;

use file::{Encoder, Window};
use lock::parent;
use writer::WalWriter;

/// The position of a row whose request is not in this run's expansion (or is beyond the first
/// 2³² − 1 requests: it is still written, after the placed rows).
pub(crate) const UNPLACED: u32 = u32::MAX;

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
    out: Encoder,
    index: Vec<Placed>,
}

impl Written {
    /// Encode the row of request `id` (at position `pos` of the expansion); written with the
    /// next [`Encoder::take`].
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

/// The results file of a running run: this run's rows are appended; [`Journal::finish`] rewrites.
pub(crate) struct Journal {
    paths: Paths,
    header: Vec<String>,
    /// Every row in the file: the compacted ones, then this run's in file order (a request may
    /// appear twice: the later row wins).
    written: Written,
    wal: WalWriter,
}

impl Journal {
    /// What submissions use to log their attempts.
    pub(crate) fn wal(&self) -> WalHandle {
        self.wal.handle()
    }

    /// Make room for `n` more rows (the run knows how many requests it will send).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.written.index.reserve_exact(n);
    }

    /// Append the outcome row (aligned with the header) of the request at position `pos`, without
    /// writing it yet: outcomes that arrive together are written with one [`Journal::flush`],
    /// which the caller makes before it waits for anything else.
    pub(crate) fn append<S: AsRef<str>>(
        &mut self,
        id: Uuid,
        pos: u32,
        row: &[S],
    ) -> io::Result<()> {
        self.written.push(id, pos, row)
    }

    /// Hand the appended rows to the writer, which writes them to the results file at once (a
    /// crash of the process loses none of them from then on) and settles their entries in the
    /// log once the file is synced. `tasks`: the task ids among them, named in the log if they
    /// cannot be written. An error: earlier rows could not be written; the run must stop.
    pub(crate) fn flush(&mut self, tasks: Vec<(Uuid, String)>) -> io::Result<()> {
        let (bytes, ids) = self.written.out.take();
        self.wal.rows(bytes, ids, tasks)
    }

    /// End the run: every row on disk and settled in the log; the results rewritten atomically
    /// to one row per request in expansion order (rows not placed after them, in file order);
    /// the log emptied if nothing is left in flight. Returns the attempts still in flight (a
    /// second signal abandoned them): they stay in the log for the next run to settle.
    pub(crate) fn finish(mut self) -> io::Result<Vec<Sent>> {
        self.flush(Vec::new())?;
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
            // Large writes: the file is megabytes (a row is ~300 bytes), 8 KiB writes are
            // hundreds of system calls; 256 KiB ones are tens, and little memory.
            let mut w = io::BufWriter::with_capacity(256 << 10, tmp.as_file_mut());
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
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
