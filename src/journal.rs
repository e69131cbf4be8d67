//! The results CSV (SPEC §4): the run's record and its resume state.
//!
//! - **Append as it goes.** Each outcome is appended and flushed when it arrives, so a crash loses
//!   nothing that completed (outcomes that finish together are written with one `write`, before
//!   the run waits for anything else); the file is fsynced every few seconds and at the end.
//! - **Write-ahead intent.** Before each attempt, `<results>.wal` gets a `sent` line (request id,
//!   attempt, time) and, once the outcome row is in the results, a `done` line. A run that finds a
//!   `sent` without its `done` knows the process died with that request in flight: the task may
//!   exist, so it is recorded `unknown` — never silently resubmitted.
//! - **Resume index.** On open, the latest row of every request id is indexed by its byte offset
//!   (16-byte id + offset + status per request: all a resume needs, rows stay on disk).
//! - **Final rewrite.** At the end the file is rewritten atomically (temp file, fsync, rename) to one
//!   row per request in expansion order; rows of requests no longer in the manifests are kept at the
//!   end, so no task id is ever lost. The order comes from positions the run gives each row (its
//!   request's place in the expansion: [`Journal::place`] for rows of earlier runs, `record` for
//!   new ones), kept in the index, so the rewrite needs no further pass over the manifests.
//! - **Lock.** `<results>.lock` is held with an exclusive OS lock for the whole run, and names the
//!   holder's pid; a lock left by a dead process is released by the OS and does not block.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The leading columns, in order (SPEC §4).
pub const LEADING: [&str; 12] = [
    "request_id",
    "job",
    "kind",
    "status",
    "task_id",
    "sub_task_ids",
    "attempts",
    "http_status",
    "code",
    "message",
    "submitted_at",
    "elapsed_ms",
];

/// How often appended rows are fsynced (they are flushed to the OS as they arrive).
pub const FSYNC_EVERY: Duration = Duration::from_secs(3);

/// A request's status in the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The API returned a task id.
    Submitted,
    /// The API refused the request; not retried.
    Rejected,
    /// Transient errors outlasted `--max-attempts`.
    Failed,
    /// Sent, no answer: the task may exist.
    Unknown,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Submitted,
        Status::Rejected,
        Status::Failed,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The statuses of the requests already in the results when the run started: what resume
/// decides from. Kept apart from the journal's offsets so the dispatching side can read it while
/// the one writer appends.
pub type Resume = HashMap<Uuid, Status>;

/// Counts bytes written, so each row's offset is known.
struct Counting {
    file: File,
    written: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The exclusive lock of a results file.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Failure to take the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("`{path}` is in use by another run (pid {pid})")]
    Held { path: PathBuf, pid: String },
    #[error("cannot lock `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Lock `<results>.lock` (created if missing) and write our pid into it.
pub fn lock(results: &Path) -> Result<Lock, LockError> {
    let path = sibling(results, "lock");
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Held {
                path: results.to_path_buf(),
                pid: pid.trim().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    file.set_len(0).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    write!(file, "{}", std::process::id()).map_err(io_err)?;
    file.flush().map_err(io_err)?;
    Ok(Lock { _file: file })
}

/// `results.csv` → `results.csv.<ext>`.
pub fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The write-ahead log of attempts in flight. Shared by the submitting futures (one short
/// append under a mutex per attempt); everything else in the journal has a single owner.
///
/// A `sent` line reaches the OS before its request leaves. `done` lines are buffered and written
/// with the periodic sync: one lost in a crash only makes the next run treat a request that has an
/// outcome row as in doubt (a `submitted` row settles it; any other becomes `unknown`), which is
/// the safe side.
#[derive(Debug)]
pub struct Wal {
    file: Mutex<io::BufWriter<File>>,
}

impl Wal {
    /// Record that an attempt is about to be sent; the line is written (to the OS) when this
    /// returns, before the request leaves.
    ///
    /// A group commit: the line is appended to the buffer, the task yields once so that the other
    /// submissions starting at the same moment append theirs, and the first to resume writes
    /// them all with one `write` (the others find their line already written).
    pub async fn sent(&self, id: &Uuid, attempt: u32, at: &str) -> io::Result<()> {
        {
            let mut f = self.file.lock().expect("wal lock");
            writeln!(f, "sent {id} {attempt} {at}")?;
        }
        tokio::task::yield_now().await;
        self.file.lock().expect("wal lock").flush()
    }

    fn done(&self, id: &Uuid) -> io::Result<()> {
        let mut f = self.file.lock().expect("wal lock");
        writeln!(f, "done {id}")
    }

    fn sync(&self) -> io::Result<()> {
        let mut f = self.file.lock().expect("wal lock");
        f.flush()?;
        f.get_ref().sync_data()
    }
}

/// A request found in flight when the previous run died.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub id: Uuid,
    pub attempt: u32,
    pub sent_at: String,
}

/// Where a row is in the results file: its request, byte offset and length, and its request's
/// position in the expansion ([`UNPLACED`] if not in this run's manifests; the field fills what
/// would be padding, so the index is 32 bytes per row either way).
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: Uuid,
    offset: u64,
    len: u32,
    pos: u32,
}

/// The position of a row whose request is not in this run's expansion (or is beyond the first
/// 2³² − 1 requests: it is still written, after the placed rows).
pub const UNPLACED: u32 = u32::MAX;

/// The results file of one run.
pub struct Journal {
    path: PathBuf,
    header: Vec<String>,
    /// Every row written: first the rows of earlier runs (one per request, sorted by id, so
    /// [`Journal::place`] can find them), then this run's rows in file order (a request may
    /// appear twice: the later row wins). A flat list is a third of the memory of a hash map; it
    /// is sorted once more, at the end.
    index: Vec<Slot>,
    /// How many slots at the start of `index` are earlier runs' rows, sorted by id.
    prior: usize,
    writer: Appender,
    wal: std::sync::Arc<Wal>,
    last_sync: Instant,
    /// Requests that were in flight when an earlier run died, found in its write-ahead log.
    pub orphans: Vec<Orphan>,
}

impl Journal {
    /// Open (or create) the results at `path` with this run's `header`: an existing file is
    /// compacted to its latest row per request and converted to the header (columns matched by
    /// name), and the resume statuses are returned with the journal.
    pub fn open(path: &Path, header: Vec<String>) -> io::Result<(Journal, Resume)> {
        let dir = parent(path);
        let tmp = tempfile::NamedTempFile::new_in(&dir)?;
        let mut index = Vec::new();
        let mut resume = Resume::new();
        {
            let mut w = csv::Writer::from_writer(Counting {
                file: tmp.as_file().try_clone()?,
                written: 0,
            });
            w.write_record(&header)?;
            w.flush()?;
            if path.exists() {
                compact(path, &header, &mut w, &mut index, &mut resume)?;
            }
            w.flush()?;
        }
        persist(tmp, path)?;
        index.sort_unstable_by_key(|s| s.id);
        let prior = index.len();
        let file = OpenOptions::new().append(true).open(path)?;
        let written = file.metadata()?.len();
        let writer = Appender::new(file, written);

        // The write-ahead log: requests in flight when the last run died.
        let wal_path = sibling(path, "wal");
        let orphans = if wal_path.exists() {
            read_orphans(&wal_path)?
        } else {
            Vec::new()
        };
        let wal_file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&wal_path)?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            header,
            index,
            prior,
            writer,
            wal: std::sync::Arc::new(Wal {
                file: Mutex::new(io::BufWriter::new(wal_file)),
            }),
            last_sync: Instant::now(),
            orphans: Vec::new(),
        };
        // An orphan whose task id made it to the results is settled; any other is in doubt.
        journal.orphans = orphans
            .into_iter()
            .filter(|o| resume.get(&o.id) != Some(&Status::Submitted))
            .collect();
        Ok((journal, resume))
    }

    pub fn header(&self) -> &[String] {
        &self.header
    }

    pub fn wal(&self) -> std::sync::Arc<Wal> {
        self.wal.clone()
    }

    /// Make room for `n` more rows (the run knows how many requests it will send).
    pub fn reserve(&mut self, n: usize) {
        self.index.reserve_exact(n);
    }

    /// Whether the results hold no row of an earlier run.
    pub fn is_empty(&self) -> bool {
        self.prior == 0
    }

    /// Give the row an earlier run wrote for `id` (if any) its position in this run's expansion.
    pub fn place(&mut self, id: &Uuid, pos: u32) {
        if let Ok(i) = self.index[..self.prior].binary_search_by_key(id, |s| s.id) {
            self.index[i].pos = pos;
        }
    }

    /// Append an outcome row (aligned with the header) for the request at position `pos` of the
    /// expansion, and flush it (see [`Journal::flush`]).
    pub fn record<S: AsRef<str>>(&mut self, id: Uuid, pos: u32, row: &[S]) -> io::Result<()> {
        self.append(id, pos, row)?;
        self.flush()
    }

    /// Append an outcome row without writing it yet: outcomes that arrive together are written
    /// with one [`Journal::flush`], which the caller makes before it waits for anything else.
    pub fn append<S: AsRef<str>>(&mut self, id: Uuid, pos: u32, row: &[S]) -> io::Result<()> {
        let (offset, len) = self.writer.push(row)?;
        self.index.push(Slot {
            id,
            offset,
            len,
            pos,
        });
        self.writer.done.push(id);
        Ok(())
    }

    /// Write the appended rows to the results file; then mark their attempts done in the
    /// write-ahead log (never before: a `done` line whose row is not in the results would let a
    /// crash lose a task id).
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        for id in std::mem::take(&mut self.writer.done) {
            self.wal.done(&id)?;
        }
        if self.last_sync.elapsed() >= FSYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// fsync the results and the write-ahead log.
    pub fn sync(&mut self) -> io::Result<()> {
        self.writer.file.sync_data()?;
        self.wal.sync()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Rewrite the results atomically: one row per request, in expansion order (the positions
    /// given by `place` and `record`), then the rows of requests not placed (kept, in file order).
    /// The write-ahead log is emptied. Rows are copied as the bytes they were written as, through
    /// a [`Window`] on the file.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        self.sync()?;
        // The latest row of each request: sort by id, later rows (larger offsets) last; a request
        // keeps the position any of its rows was given.
        let mut slots = std::mem::take(&mut self.index);
        slots.sort_unstable_by_key(|s| (s.id, s.offset));
        let mut latest: Vec<Slot> = Vec::with_capacity(slots.len());
        for slot in slots {
            match latest.last_mut() {
                Some(last) if last.id == slot.id => {
                    let pos = last.pos.min(slot.pos);
                    *last = Slot { pos, ..slot };
                }
                _ => latest.push(slot),
            }
        }
        latest.sort_unstable_by_key(|s| (s.pos, s.offset));
        let source = File::open(&self.path)?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent(&self.path))?;
        {
            let mut w = io::BufWriter::new(tmp.as_file_mut());
            let mut header = csv::Writer::from_writer(Vec::new());
            header.write_record(&self.header)?;
            w.write_all(&header.into_inner().map_err(|e| e.into_error())?)?;
            let mut window = Window::new(&source);
            let mut copy = |slot: &Slot, w: &mut io::BufWriter<_>| -> io::Result<()> {
                w.write_all(window.get(slot.offset, slot.len as usize)?)
            };
            for slot in &latest {
                copy(slot, &mut w)?;
            }
            w.flush()?;
        }
        persist(tmp, &self.path)?;
        // Everything is recorded: nothing is in flight.
        let mut wal = self.wal.file.lock().expect("wal lock");
        wal.flush()?;
        wal.get_ref().set_len(0)?;
        Ok(())
    }
}

/// This run's rows on their way to the results file: CSV-encoded one by one into a buffer (so
/// each row's offset and length are known), written with one `write` per [`Appender::flush`].
struct Appender {
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Rows encoded, not yet written (`None` only inside `flush`).
    csv: Option<csv::Writer<Vec<u8>>>,
    /// The requests of the pending rows (their `done` lines follow the write).
    done: Vec<Uuid>,
}

impl Appender {
    fn new(file: File, len: u64) -> Appender {
        Appender {
            file,
            len,
            csv: Some(Self::encoder(Vec::new())),
            done: Vec::new(),
        }
    }

    fn encoder(buf: Vec<u8>) -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(buf)
    }

    fn csv(&mut self) -> &mut csv::Writer<Vec<u8>> {
        self.csv.as_mut().expect("an encoder outside flush")
    }

    /// Encode a row; its offset and length in the file.
    fn push<S: AsRef<str>>(&mut self, row: &[S]) -> io::Result<(u64, u32)> {
        let start = self.csv().get_ref().len();
        self.csv()
            .write_record(row.iter().map(|f| f.as_ref().as_bytes()))?;
        self.csv().flush()?;
        let end = self.csv().get_ref().len();
        let len = u32::try_from(end - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a results row over 4 GiB"))?;
        Ok((self.len + start as u64, len))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.csv().get_ref().is_empty() {
            return Ok(());
        }
        let csv = self.csv.take().expect("an encoder");
        let mut buf = csv.into_inner().map_err(|e| e.into_error())?;
        let written = self.file.write_all(&buf);
        if written.is_ok() {
            self.len += buf.len() as u64;
        }
        buf.clear();
        self.csv = Some(Self::encoder(buf));
        written
    }
}

/// Reads rows of a file by offset through one window of [`Window::SIZE`] bytes. Rows were
/// appended in completion order, which is close to expansion order (at most `--concurrency`
/// apart), so almost every row of the final rewrite is already in the window: one read per window
/// instead of one per row.
struct Window<'f> {
    file: &'f File,
    start: u64,
    buf: Vec<u8>,
}

impl<'f> Window<'f> {
    const SIZE: usize = 256 * 1024;

    fn new(file: &'f File) -> Self {
        Window {
            file,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// The `len` bytes at `offset`.
    fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        use std::os::unix::fs::FileExt;
        let end = offset + len as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            // A quarter of the window behind the row: the rows around it are nearly in order.
            self.start = offset.saturating_sub(Self::SIZE as u64 / 4);
            let need = (end - self.start) as usize;
            self.buf.resize(Self::SIZE.max(need), 0);
            let mut filled = 0;
            while filled < self.buf.len() {
                match self
                    .file
                    .read_at(&mut self.buf[filled..], self.start + filled as u64)
                {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buf.truncate(filled);
            if filled < need {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a results row ends beyond the end of the file",
                ));
            }
        }
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + len])
    }
}

/// Replace `path` atomically with a finished temporary file: fsync, keep the permissions of the
/// file it replaces (or `rw-r--r--` for a new one, not the temp file's private `rw-------`),
/// rename, fsync the folder.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(path);
    Ok(())
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(parent(path)) {
        let _ = d.sync_all();
    }
}

/// Copy the latest row of each request from the existing results into `w`, converted to
/// `header`, and index them. Rows that cannot be read (a row torn by a crash) are skipped.
fn compact(
    path: &Path,
    header: &[String],
    w: &mut csv::Writer<Counting>,
    index: &mut Vec<Slot>,
    resume: &mut Resume,
) -> io::Result<()> {
    let open = || -> io::Result<csv::Reader<File>> {
        Ok(csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(File::open(path)?))
    };
    let mut reader = open()?;
    let old: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
    let id_col = old.iter().position(|c| c == "request_id");
    let status_col = old.iter().position(|c| c == "status");
    let (Some(id_col), Some(status_col)) = (id_col, status_col) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "`{}` is not a hidream-batch results file (no request_id/status columns)",
                path.display()
            ),
        ));
    };
    // Pass 1: the latest row number of each id.
    let mut latest: HashMap<Uuid, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    let mut n = 0u64;
    while read_ok(&mut reader, &mut record) {
        if record.len() == old.len()
            && let Some(id) = record.get(id_col).and_then(|s| Uuid::parse_str(s).ok())
        {
            latest.insert(id, n);
        }
        n += 1;
    }
    // Pass 2: write those rows, mapped to the new header.
    let map: Vec<Option<usize>> = header
        .iter()
        .map(|h| old.iter().position(|o| o == h))
        .collect();
    let mut reader = open()?;
    let mut n = 0u64;
    while read_ok(&mut reader, &mut record) {
        let here = n;
        n += 1;
        if record.len() != old.len() {
            continue;
        }
        let Some(id) = record.get(id_col).and_then(|s| Uuid::parse_str(s).ok()) else {
            continue;
        };
        if latest.get(&id) != Some(&here) {
            continue;
        }
        let Some(status) = record.get(status_col).and_then(Status::parse) else {
            continue;
        };
        let row: Vec<&str> = map
            .iter()
            .map(|m| m.and_then(|i| record.get(i)).unwrap_or(""))
            .collect();
        w.flush()?;
        let offset = w.get_ref().written;
        w.write_record(&row)?;
        w.flush()?;
        let len = (w.get_ref().written - offset) as u32;
        index.push(Slot {
            id,
            offset,
            len,
            pos: UNPLACED,
        });
        resume.insert(id, status);
    }
    Ok(())
}

/// Read the next record, skipping rows that do not parse (e.g. torn by a crash).
fn read_ok(reader: &mut csv::Reader<File>, record: &mut csv::StringRecord) -> bool {
    loop {
        match reader.read_record(record) {
            Ok(more) => return more,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return false,
            Err(_) => continue,
        }
    }
}

fn read_orphans(path: &Path) -> io::Result<Vec<Orphan>> {
    let mut open: HashMap<Uuid, Orphan> = HashMap::new();
    let mut order = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        let mut parts = line.split(' ');
        match (
            parts.next(),
            parts.next().and_then(|s| Uuid::parse_str(s).ok()),
        ) {
            (Some("sent"), Some(id)) => {
                let attempt = parts.next().and_then(|s| s.parse().ok()).unwrap_or(1);
                let sent_at = parts.next().unwrap_or("").to_string();
                if open
                    .insert(
                        id,
                        Orphan {
                            id,
                            attempt,
                            sent_at,
                        },
                    )
                    .is_none()
                {
                    order.push(id);
                }
            }
            (Some("done"), Some(id)) => {
                open.remove(&id);
            }
            _ => {} // a torn last line
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| open.remove(&id))
        .collect())
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn each_sent_line_is_in_the_file_when_sent_returns() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let wal = Wal {
            file: Mutex::new(io::BufWriter::new(tmp.reopen().unwrap())),
        };
        let ids: Vec<Uuid> = (0..50u128).map(Uuid::from_u128).collect();
        let check = |id: &Uuid| {
            let text = std::fs::read_to_string(tmp.path()).unwrap();
            assert!(text.contains(&format!("sent {id} 1 ")), "{id} not written");
        };
        // Fifty submissions starting together, as `buffer_unordered` starts them.
        futures::future::join_all(ids.iter().map(|id| async {
            wal.sent(id, 1, &now_rfc3339()).await.unwrap();
            check(id);
        }))
        .await;
        let lines = std::fs::read_to_string(tmp.path()).unwrap().lines().count();
        assert_eq!(lines, 50);
    }

    #[test]
    fn window_reads_rows_in_any_order_and_of_any_size() {
        let mut data = Vec::new();
        let mut rows = Vec::new();
        for i in 0..40_000u32 {
            // Mostly short rows, and some longer than the window itself.
            let len = if i % 9_999 == 0 {
                Window::SIZE + 17
            } else {
                1 + (i % 300) as usize
            };
            rows.push((data.len() as u64, len));
            data.extend(std::iter::repeat_n((i % 251) as u8, len));
        }
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&data).unwrap();
        let mut window = Window::new(tmp.as_file());
        // Nearly in order (as a run writes them), then backwards, then scattered.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.chunks_mut(64).for_each(|c| c.reverse());
        order.extend((0..rows.len()).rev());
        order.extend((0..rows.len()).map(|i| i * 7_919 % rows.len()));
        for i in order {
            let (offset, len) = rows[i];
            let got = window.get(offset, len).unwrap();
            assert_eq!(
                got,
                &data[offset as usize..offset as usize + len],
                "row {i}"
            );
        }
        let end = data.len() as u64;
        assert_eq!(
            window.get(end - 3, 10).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
