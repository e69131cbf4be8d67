//! The journal's one writer: a thread that owns the write-ahead log and appends this run's rows
//! to the results file, so no file is written (or synced) on the async runtime's thread.
//!
//! Submissions and the pipeline's consumer talk to it over one channel ([`WalHandle`],
//! [`WalWriter`]). It writes the
//! lines that arrived together with one `write` and one `fdatasync` (a group commit), and only
//! then lets their requests go: a `sent` line is on disk before its request's first byte leaves.
//! `done` lines follow an `fdatasync` of the results file, so an entry is settled only by a row
//! that is on disk. When the log grows past [`COMPACT_OVER`] and every entry it settled has its
//! row on disk, it is rewritten (atomically) to its open entries alone, so a long run's log stays
//! small.
//!
//! Rows arrive encoded, with their requests ([`WalWriter::rows`]): they are written to the
//! results file as soon as they arrive (a kill of the process from then on loses none), and
//! their entries are settled (`done`) after the next sync of the results (every [`SYNC_EVERY`],
//! or at once when [`SETTLE_AT`] rows wait, so their memory is bounded). A row that cannot be
//! written settles nothing: its entry stays open, the task ids it carried are logged, and the
//! run learns of it at its next [`WalWriter::rows`] (or at the end) and stops.
//!
//! The lines are written over zeros laid down [`AHEAD`] of them (and synced then): a sync of a
//! group then writes the group's lines alone, not also the file's new size, which halves its
//! time (measured on the development machine: about 0.25 ms against 0.45 ms under load), and a
//! request waits for that sync before it leaves. So the log's text ends at its first zero byte;
//! a reader stops there.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::wal::{Sent, SentLine, parse};

/// How often the results file is synced so that `done` lines can follow (also at the end).
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How many written rows may wait for that sync: past it the results are synced at once, so the
/// requests waiting to be settled (16 bytes each, and their 42-byte `done` lines) take memory
/// bounded by this, not by a second's worth of requests (20,000 against a fast server).
pub(super) const SETTLE_AT: usize = 4096;
/// The size past which a run's log is rewritten to its open entries.
pub(super) const COMPACT_OVER: u64 = 8 << 20;
/// How far ahead of its text the log's zeros are laid down, at most: a new log starts with
/// [`AHEAD_FIRST`] and doubles each time (a small run does not wait for megabytes of zeros).
pub(super) const AHEAD: u64 = 4 << 20;
const AHEAD_FIRST: u64 = 256 << 10;

/// A `sent` line waiting to be written, and whom to tell once it is on disk.
type Pending = (Uuid, String, tokio::sync::oneshot::Sender<io::Result<()>>);

enum Msg {
    /// The `sent` lines of submissions that started together.
    Sent(Vec<Pending>),
    /// Rows for the results file, encoded, with the requests they settle and the task ids they
    /// carry (named in the log if they cannot be written).
    Rows {
        bytes: Vec<u8>,
        ids: Vec<Uuid>,
        tasks: Vec<(Uuid, String)>,
    },
    Noted {
        id: Uuid,
        attempt: u32,
        what: String,
    },
    Finish(mpsc::Sender<io::Result<Vec<Sent>>>),
}

/// What submissions hold: announce an attempt (and wait until it is on disk), or note that one
/// created no task.
#[derive(Debug, Clone)]
pub(crate) struct WalHandle {
    tx: mpsc::Sender<Msg>,
    /// Lines of submissions starting in the same turn of the runtime, handed over together.
    pending: Arc<Mutex<Vec<Pending>>>,
}

fn closed() -> io::Error {
    io::Error::other("the write-ahead log is closed")
}

impl WalHandle {
    /// Log that an attempt is about to leave; returns once the line is on disk (synced).
    pub(crate) async fn sent(&self, sent: SentLine<'_>) -> io::Result<()> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let lock = || self.pending.lock().unwrap_or_else(|e| e.into_inner());
        lock().push((sent.id, sent.line(), ack));
        // The submissions that start in this turn add their lines too; the first to resume hands
        // them all over (one message, one group), the others find theirs gone.
        tokio::task::yield_now().await;
        let batch = std::mem::take(&mut *lock());
        if !batch.is_empty() {
            self.tx.send(Msg::Sent(batch)).map_err(|_| closed())?;
        }
        done.await.map_err(|_| closed())?
    }

    /// Log that attempt `attempt` of `id` was answered in a way that proves no task was created.
    /// Written with the next group, not waited for: losing it only leaves the request `unknown`.
    pub(crate) fn noted(&self, id: Uuid, attempt: u32, what: &str) {
        let _ = self.tx.send(Msg::Noted {
            id,
            attempt,
            what: what.to_string(),
        });
    }
}

/// The thread that owns the log and appends the rows.
pub(super) struct WalWriter {
    tx: mpsc::Sender<Msg>,
    pending: Arc<Mutex<Vec<Pending>>>,
    /// Set by the writer when the results cannot be written: the run stops.
    failed: Arc<Mutex<Option<(io::ErrorKind, String)>>>,
}

impl WalWriter {
    /// Start the writer on the log at `path` (`wal`: opened for writing) and `results` (the
    /// results file, opened for appending: this run's rows are appended to it, and it is synced
    /// before `done` lines).
    pub(super) fn start(path: &Path, wal: File, results: File) -> io::Result<WalWriter> {
        Self::start_with(path, wal, results, Tuning::DEFAULT)
    }

    fn start_with(path: &Path, wal: File, results: File, tuning: Tuning) -> io::Result<WalWriter> {
        let (tx, rx) = mpsc::channel();
        let mut log = Log::open(path, wal, tuning)?;
        log.extend(0)?;
        let failed = Arc::new(Mutex::new(None));
        let shared = failed.clone();
        std::thread::Builder::new()
            .name("hidream-batch-wal".into())
            .spawn(move || serve(&rx, &shared, log, results))?;
        Ok(WalWriter {
            tx,
            pending: Default::default(),
            failed,
        })
    }

    pub(super) fn handle(&self) -> WalHandle {
        WalHandle {
            tx: self.tx.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Append `bytes` (the encoded rows of requests `ids`) to the results file; `tasks`: the task
    /// ids among them, named in the log if the rows cannot be written. An error: an earlier
    /// batch of rows could not be written (the run must stop).
    pub(super) fn rows(
        &self,
        bytes: Vec<u8>,
        ids: Vec<Uuid>,
        tasks: Vec<(Uuid, String)>,
    ) -> io::Result<()> {
        if let Some((kind, message)) = &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            lost(&tasks);
            return Err(io::Error::new(*kind, message.clone()));
        }
        if !ids.is_empty() {
            self.tx
                .send(Msg::Rows { bytes, ids, tasks })
                .map_err(|_| closed())?;
        }
        Ok(())
    }

    /// Sync the results, log `done` for every request whose row was written, sync the log, stop
    /// the writer; the entries still open (requests abandoned in flight).
    pub(super) fn finish(self) -> io::Result<Vec<Sent>> {
        let (reply, answer) = mpsc::channel();
        self.tx.send(Msg::Finish(reply)).map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }
}

/// When the writer syncs the results, settles and compacts ([`SYNC_EVERY`], [`SETTLE_AT`],
/// [`COMPACT_OVER`]; tests use other values).
#[derive(Debug, Clone, Copy)]
struct Tuning {
    sync_every: Duration,
    settle_at: usize,
    compact_over: u64,
}

impl Tuning {
    const DEFAULT: Tuning = Tuning {
        sync_every: SYNC_EVERY,
        settle_at: SETTLE_AT,
        compact_over: COMPACT_OVER,
    };
}

/// The log file, as the writer thread holds it: its text, then zeros up to `allocated`.
struct Log {
    tuning: Tuning,
    path: std::path::PathBuf,
    /// Opened for writing (not appending: the text is written over the zeros), positioned at
    /// the end of the text.
    file: File,
    /// Bytes of text.
    len: u64,
    /// Bytes in the file, zeros included.
    allocated: u64,
}

impl Log {
    /// Take over the log at `path` (`file` opened for writing): its text ends at its first zero.
    fn open(path: &Path, mut file: File, tuning: Tuning) -> io::Result<Log> {
        use std::io::{Read, Seek, SeekFrom};
        let allocated = file.metadata()?.len();
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()) as u64;
        file.seek(SeekFrom::Start(len))?;
        Ok(Log {
            tuning,
            path: path.to_path_buf(),
            file,
            len,
            allocated,
        })
    }

    /// Lay down (and sync) zeros so that `need` more bytes of text fit, and [`AHEAD`] more.
    fn extend(&mut self, need: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.len + need <= self.allocated && self.allocated > self.len {
            return Ok(());
        }
        let ahead = self.allocated.clamp(AHEAD_FIRST, AHEAD);
        let target = self.len + need + ahead;
        // Static: a buffer allocated here would stay in the heap (glibc reuses the freed megabyte
        // instead of returning it), a megabyte of resident memory for the rest of the run.
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let zeros = &ZEROS;
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_data()?;
        self.allocated = target;
        Ok(())
    }

    fn append(&mut self, text: &str) -> io::Result<()> {
        self.extend(text.len() as u64)?;
        self.file.write_all(text.as_bytes())?;
        self.len += text.len() as u64;
        Ok(())
    }

    /// Replace the log by one holding only `open` (the entries still in flight, every line of
    /// each): a new file, synced, renamed over the old one.
    fn compact(&mut self, open: &HashMap<Uuid, String>) -> io::Result<()> {
        let text: String = open.values().map(String::as_str).collect();
        let dir = super::lock::parent(&self.path);
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_data()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        super::file::sync_dir(&self.path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)?;
        *self = Log::open(&self.path, file, self.tuning)?;
        self.extend(0)
    }
}

/// Name the task ids of rows that could not be written: the log is the only place left.
fn lost(tasks: &[(Uuid, String)]) {
    for (id, task) in tasks {
        tracing::error!(request_id = %id, "request {id} was submitted as task `{}`, but its row could not be written", crate::logging::safe(task));
    }
}

fn serve(
    rx: &mpsc::Receiver<Msg>,
    failed: &Mutex<Option<(io::ErrorKind, String)>>,
    mut log: Log,
    mut results: File,
) {
    use std::fmt::Write as _;
    // The entries held open: every line written for each.
    let mut open: HashMap<Uuid, String> = HashMap::new();
    // Requests whose rows are written but not yet synced: their `done` lines wait.
    let mut settled: Vec<Uuid> = Vec::new();
    let mut last_sync = Instant::now();
    let mut broken: Option<(io::ErrorKind, String)> = None;
    // The rows could not be written: nothing more is (their entries stay open).
    let mut rows_broken = false;
    loop {
        let first = match rx.recv_timeout(log.tuning.sync_every.max(Duration::from_millis(1))) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut buf = String::new();
        let mut acks = Vec::new();
        let mut finish = None;
        for msg in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match msg {
                Msg::Sent(batch) => {
                    for (id, line, ack) in batch {
                        buf += &line;
                        acks.push(ack);
                        match open.get_mut(&id) {
                            Some(lines) => *lines += &line,
                            None => {
                                open.insert(id, line);
                            }
                        }
                    }
                }
                Msg::Noted { id, attempt, what } => {
                    let line = format!("noted {id} {attempt} {what}\n");
                    buf += &line;
                    if let Some(lines) = open.get_mut(&id) {
                        *lines += &line;
                    }
                }
                Msg::Rows { bytes, ids, tasks } => {
                    // Their `sent` lines were all acknowledged before: the rows settle them.
                    let written = if rows_broken {
                        Err(io::Error::other("an earlier row could not be written"))
                    } else {
                        results.write_all(&bytes)
                    };
                    match written {
                        Ok(()) => {
                            settled.extend(ids.into_iter().filter(|id| open.remove(id).is_some()));
                        }
                        Err(e) => {
                            rows_broken = true;
                            lost(&tasks);
                            let mut failed = failed.lock().unwrap_or_else(|e| e.into_inner());
                            failed.get_or_insert((e.kind(), e.to_string()));
                        }
                    }
                }
                Msg::Finish(reply) => finish = Some(reply),
            }
        }
        if broken.is_none() {
            let mut step = || -> io::Result<()> {
                if !settled.is_empty()
                    && (finish.is_some()
                        || settled.len() >= log.tuning.settle_at
                        || last_sync.elapsed() >= log.tuning.sync_every)
                {
                    // The rows are on disk: only now may their entries be settled.
                    results.sync_data()?;
                    super::crash_point("settled");
                    for id in settled.drain(..) {
                        let _ = writeln!(buf, "done {id}");
                    }
                    last_sync = Instant::now();
                }
                if !buf.is_empty() {
                    log.append(&buf)?;
                }
                if !acks.is_empty() || finish.is_some() {
                    log.file.sync_data()?;
                }
                // Every entry the log settled has its row on disk: what is open is all it needs.
                if settled.is_empty() && log.len > log.tuning.compact_over {
                    log.compact(&open)?;
                }
                Ok(())
            };
            if let Err(e) = step() {
                broken = Some((e.kind(), e.to_string()));
            }
        }
        let rows_failed = failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result = || match (&broken, &rows_failed) {
            (None, None) => Ok(()),
            (Some((kind, message)), _) | (None, Some((kind, message))) => {
                Err(io::Error::new(*kind, message.clone()))
            }
        };
        for ack in acks {
            let _ = ack.send(result());
        }
        if let Some(reply) = finish {
            let abandoned = open
                .values()
                .flat_map(|lines| parse(lines.as_bytes()).unwrap_or_default())
                .map(|e| e.sent)
                .collect();
            let _ = reply.send(result().map(|()| abandoned));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::wal::{read, sample as sent};

    fn line(s: &Sent) -> SentLine<'_> {
        SentLine {
            id: s.id,
            attempt: s.attempt,
            at: &s.at,
            first_at: &s.first_at,
            world: s.world,
            kind: s.kind,
            job: &s.job,
        }
    }

    /// A new log and results file in `dir`: the log's path, the log opened for writing, the
    /// results opened for appending.
    fn files(dir: &tempfile::TempDir) -> (std::path::PathBuf, File, File) {
        let path = dir.path().join("r.wal");
        let wal = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let results = File::create(dir.path().join("r.csv")).unwrap();
        (path, wal, results)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sent_returns_once_the_line_is_written_and_finish_reports_what_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let (path, wal, results) = files(&dir);
        let writer = WalWriter::start(&path, wal, results).unwrap();
        let handle = writer.handle();
        // Fifty submissions starting together, as `buffer_unordered` starts them.
        futures::future::join_all((0..50u128).map(|i| {
            let handle = handle.clone();
            let path = path.clone();
            async move {
                handle.sent(line(&sent(i, 1))).await.unwrap();
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(text.contains(&format!("sent {} 1 ", Uuid::from_u128(i))));
            }
        }))
        .await;
        handle.noted(Uuid::from_u128(7), 1, "500");
        writer
            .rows(
                Vec::new(),
                (0..49u128).map(Uuid::from_u128).collect(),
                Vec::new(),
            )
            .unwrap();
        let open = writer.finish().unwrap();
        assert_eq!(open, vec![sent(49, 1)], "one request abandoned in flight");
        let entries = read(&path).unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].sent.id, Uuid::from_u128(49));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_log_is_rewritten_to_what_is_still_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (path, wal, results) = files(&dir);
        let writer = WalWriter::start_with(
            &path,
            wal,
            results,
            Tuning {
                sync_every: Duration::ZERO,
                compact_over: 4096,
                ..Tuning::DEFAULT
            },
        )
        .unwrap();
        let handle = writer.handle();
        for i in 0..200u128 {
            handle.sent(line(&sent(i, 1))).await.unwrap();
            if i == 199 {
                handle.noted(Uuid::from_u128(i), 1, "503");
            }
            if i % 40 != 39 {
                writer
                    .rows(Vec::new(), vec![Uuid::from_u128(i)], Vec::new())
                    .unwrap();
            }
        }
        let open = writer.finish().unwrap();
        assert_eq!(open.len(), 5);
        let bytes = std::fs::read(&path).unwrap();
        let text = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        assert!(text < 4096, "compacted to {text} bytes of text");
        let mut entries = read(&path).unwrap().unwrap();
        entries.sort_by_key(|e| e.sent.id);
        let ids: Vec<u128> = entries.iter().map(|e| e.sent.id.as_u128()).collect();
        assert_eq!(ids, [39, 79, 119, 159, 199]);
        assert_eq!(
            entries[4].noted.as_deref(),
            Some("503"),
            "what was noted survives"
        );
        assert!(entries[4].no_task());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rows_waiting_to_be_settled_are_bounded_in_number_not_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let (path, wal, results) = files(&dir);
        // A sync every hour: only the bound of 10 rows can settle anything before the end.
        let hour = Duration::from_secs(3600);
        let tuning = Tuning {
            sync_every: hour,
            settle_at: 10,
            ..Tuning::DEFAULT
        };
        let writer = WalWriter::start_with(&path, wal, results, tuning).unwrap();
        let handle = writer.handle();
        for i in 0..25u128 {
            handle.sent(line(&sent(i, 1))).await.unwrap();
            writer
                .rows(Vec::new(), vec![Uuid::from_u128(i)], Vec::new())
                .unwrap();
        }
        // Messages are served in order: once this line is on disk, so are the `done` lines the
        // rows before it allowed.
        handle.sent(line(&sent(99, 1))).await.unwrap();
        let entries = read(&path).unwrap().unwrap();
        let open: Vec<u128> = entries.iter().map(|e| e.sent.id.as_u128()).collect();
        assert!(
            open.len() <= 10 + 1,
            "at most 10 written rows wait to be settled, {} entries open: {open:?}",
            open.len()
        );
        assert!(open.contains(&99));
        let open = writer.finish().unwrap();
        assert_eq!(open, vec![sent(99, 1)]);
    }
}
