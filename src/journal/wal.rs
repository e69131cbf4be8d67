//! The write-ahead log, `<results>.wal`: which attempts left this process, so that a run that
//! dies with requests in flight never forgets them.
//!
//! One line per event, appended:
//!
//! ```text
//! sent <request id> <attempt> <at> <first at> <api|simulator> <kind> <job>
//! noted <request id> <attempt> <what>
//! done <request id>
//! ```
//!
//! - `sent`: attempt `attempt` of a request is about to leave. `first at` is the time of the
//!   request's first attempt in this run, which its outcome row carries as `submitted_at`.
//! - `noted`: that attempt was answered in a way that proves no task was created (`what`: the HTTP
//!   status, or `not-sent` when no complete request left). A request whose every attempt in the
//!   entry is noted is `failed` (sent again), not `unknown`, if the run dies before it gets its
//!   row; one attempt without a `noted` line (it may have created a task) keeps it `unknown`.
//! - `done`: the request's outcome row is on disk.
//!
//! An *open entry* is a request with a `sent` line and no `done` line after it.
//!
//! # The writer
//!
//! One thread owns the file ([`WalWriter`]); submissions talk to it over a channel. It writes the
//! lines that arrived together with one `write` and one `fdatasync` (a group commit), and only
//! then lets their requests go: a `sent` line is on disk before its request's first byte leaves.
//! `done` lines follow an `fdatasync` of the results file, so an entry is settled only by a row
//! that is on disk. When the log grows past [`COMPACT_OVER`] and every entry it settled has its
//! row on disk, it is rewritten (atomically) to its open entries alone, so a long run's log stays
//! small. Nothing here runs on the async runtime's thread.
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
use std::sync::mpsc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::api::Kind;
use crate::results::World;

/// How often the results file is synced so that `done` lines can follow (also at the end).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The size past which a run's log is rewritten to its open entries.
pub const COMPACT_OVER: u64 = 8 << 20;
/// How far ahead of its text the log's zeros are laid down, at most: a new log starts with
/// [`AHEAD_FIRST`] and doubles each time (a small run does not wait for megabytes of zeros).
pub const AHEAD: u64 = 4 << 20;
const AHEAD_FIRST: u64 = 256 << 10;

/// A `sent` line: one attempt of a request, about to leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: Uuid,
    pub attempt: u32,
    /// When this attempt went (RFC 3339).
    pub at: String,
    /// When the request's first attempt in its run went: its row's `submitted_at`.
    pub first_at: String,
    pub world: World,
    /// `None` in a log written before kinds were logged.
    pub kind: Option<Kind>,
    /// The job, for messages (empty if not logged).
    pub job: String,
}

impl Sent {
    #[cfg(test)]
    fn line(&self) -> String {
        SentLine {
            id: self.id,
            attempt: self.attempt,
            at: &self.at,
            first_at: &self.first_at,
            world: self.world,
            kind: self.kind,
            job: &self.job,
        }
        .line()
    }
}

/// A `sent` line to write, borrowing what it says from the submission (one allocation: the line).
#[derive(Debug, Clone, Copy)]
pub struct SentLine<'a> {
    pub id: Uuid,
    pub attempt: u32,
    pub at: &'a str,
    pub first_at: &'a str,
    pub world: World,
    pub kind: Option<Kind>,
    pub job: &'a str,
}

impl SentLine<'_> {
    fn line(&self) -> String {
        let kind = self.kind.map_or("-", Kind::as_str);
        // Job ids have no spaces (validation sees to it); a line must stay one field per word.
        let job: std::borrow::Cow<'_, str> = if self.job.is_empty() {
            "-".into()
        } else if self.job.contains(char::is_whitespace) {
            self.job.replace(char::is_whitespace, "_").into()
        } else {
            self.job.into()
        };
        format!(
            "sent {} {} {} {} {} {kind} {job}\n",
            self.id,
            self.attempt,
            self.at,
            self.first_at,
            self.world.as_str(),
        )
    }
}

/// A request whose last `sent` line has no `done` after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its last attempt.
    pub sent: Sent,
    /// What proved that last attempt created no task, if anything did.
    pub noted: Option<String>,
    /// An earlier attempt of the entry was not noted: it may have created a task.
    pub earlier_unnoted: bool,
}

impl Entry {
    /// Whether no attempt of the entry can have created a task.
    pub fn no_task(&self) -> bool {
        self.noted.is_some() && !self.earlier_unnoted
    }
}

/// A line of the log that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub line: u64,
    pub what: String,
}

/// The open entries of a log, in the order their requests were first sent. A last line without
/// its line end was torn by a crash before it was synced (so its request never left) and is
/// ignored; any other line that cannot be read is an error.
pub fn read(path: &Path) -> io::Result<Result<Vec<Entry>, Unreadable>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(Vec::new())),
        Err(e) => return Err(e),
    };
    Ok(parse(&bytes))
}

fn parse(bytes: &[u8]) -> Result<Vec<Entry>, Unreadable> {
    let mut open: HashMap<Uuid, Entry> = HashMap::new();
    let mut order: Vec<Uuid> = Vec::new();
    // The text ends at the first zero byte (the zeros laid down ahead of it).
    let bytes = &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())];
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[][..],
    };
    for (n, raw) in complete.split(|&b| b == b'\n').enumerate() {
        let line = n as u64 + 1;
        if raw.is_empty() {
            continue;
        }
        let bad = |what: String| Unreadable { line, what };
        let text = std::str::from_utf8(raw).map_err(|_| bad("the line is not UTF-8".into()))?;
        let fields: Vec<&str> = text.split(' ').collect();
        let id = fields
            .get(1)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| bad(format!("`{}` is not a write-ahead line", safe(text))))?;
        let number = |i: usize| -> Result<u32, Unreadable> {
            fields
                .get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("`{}` has no attempt number", safe(text))))
        };
        match fields[0] {
            "sent" => {
                let attempt = number(2)?;
                let at = fields.get(3).copied().unwrap_or("").to_string();
                // Lines before kinds were logged end after the time.
                let first_at = fields.get(4).map_or_else(|| at.clone(), |s| s.to_string());
                let world = match fields.get(5) {
                    None => World::Api,
                    Some(w) => World::parse(w)
                        .ok_or_else(|| bad(format!("`{}`: unknown server `{w}`", safe(text))))?,
                };
                let kind = fields.get(6).and_then(|k| Kind::parse(k));
                let job = fields
                    .get(7..)
                    .map(|j| j.join(" "))
                    .filter(|j| j != "-")
                    .unwrap_or_default();
                let sent = Sent {
                    id,
                    attempt,
                    at,
                    first_at,
                    world,
                    kind,
                    job,
                };
                match open.get_mut(&id) {
                    Some(e) => {
                        e.earlier_unnoted |= e.noted.is_none();
                        e.sent = sent;
                        e.noted = None;
                    }
                    None => {
                        let entry = Entry {
                            sent,
                            noted: None,
                            earlier_unnoted: false,
                        };
                        open.insert(id, entry);
                        order.push(id);
                    }
                }
            }
            "noted" => {
                let attempt = number(2)?;
                if let Some(e) = open.get_mut(&id)
                    && e.sent.attempt == attempt
                {
                    e.noted = Some(fields.get(3).copied().unwrap_or("answered").to_string());
                }
            }
            "done" => {
                open.remove(&id);
            }
            _ => return Err(bad(format!("`{}` is not a write-ahead line", safe(text)))),
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|id| open.remove(&id))
        .collect())
}

fn safe(text: &str) -> String {
    let shown: String = text.chars().take(120).collect();
    crate::logging::safe(&shown).into_owned()
}

/// A `sent` line waiting to be written, and whom to tell once it is on disk.
type Pending = (Uuid, String, tokio::sync::oneshot::Sender<io::Result<()>>);

enum Msg {
    /// The `sent` lines of submissions that started together.
    Sent(Vec<Pending>),
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
pub struct WalHandle {
    tx: mpsc::Sender<Msg>,
    /// Lines of submissions starting in the same turn of the runtime, handed over together.
    pending: std::sync::Arc<std::sync::Mutex<Vec<Pending>>>,
}

fn closed() -> io::Error {
    io::Error::other("the write-ahead log is closed")
}

impl WalHandle {
    /// Log that an attempt is about to leave; returns once the line is on disk (synced).
    pub async fn sent(&self, sent: SentLine<'_>) -> io::Result<()> {
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
    pub fn noted(&self, id: Uuid, attempt: u32, what: &str) {
        let _ = self.tx.send(Msg::Noted {
            id,
            attempt,
            what: what.to_string(),
        });
    }
}

/// The thread that owns the log.
pub struct WalWriter {
    tx: mpsc::Sender<Msg>,
    /// Requests whose rows were written: handed over without waking the writer, which takes
    /// them whenever it wakes for a group (or once every [`SYNC_EVERY`]).
    written: std::sync::Arc<std::sync::Mutex<Vec<Uuid>>>,
    pending: std::sync::Arc<std::sync::Mutex<Vec<Pending>>>,
}

impl WalWriter {
    /// Start the writer on the log at `path` (`wal`: opened for appending) and `results` (a
    /// handle on the results file that rows are appended to, for syncing it before `done` lines).
    pub fn start(path: &Path, wal: File, results: File) -> io::Result<WalWriter> {
        Self::start_with(path, wal, results, SYNC_EVERY, COMPACT_OVER)
    }

    fn start_with(
        path: &Path,
        wal: File,
        results: File,
        sync_every: Duration,
        compact_over: u64,
    ) -> io::Result<WalWriter> {
        let (tx, rx) = mpsc::channel();
        let mut log = Log::open(path, wal, sync_every, compact_over)?;
        log.extend(0)?;
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = written.clone();
        std::thread::Builder::new()
            .name("hidream-batch-wal".into())
            .spawn(move || serve(&rx, &shared, log, &results))?;
        Ok(WalWriter {
            tx,
            written,
            pending: Default::default(),
        })
    }

    pub fn handle(&self) -> WalHandle {
        WalHandle {
            tx: self.tx.clone(),
            pending: self.pending.clone(),
        }
    }

    /// The rows of these requests were written to the results file (`write` returned).
    pub fn settled(&self, ids: Vec<Uuid>) {
        if !ids.is_empty() {
            self.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
        }
    }

    /// Sync the results, log `done` for every request whose row was written, sync the log, stop
    /// the writer; the entries still open (requests abandoned in flight).
    pub fn finish(self) -> io::Result<Vec<Sent>> {
        let (reply, answer) = mpsc::channel();
        self.tx.send(Msg::Finish(reply)).map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }
}

/// The log file, as the writer thread holds it: its text, then zeros up to `allocated`.
struct Log {
    sync_every: Duration,
    compact_over: u64,
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
    fn open(
        path: &Path,
        mut file: File,
        sync_every: Duration,
        compact_over: u64,
    ) -> io::Result<Log> {
        use std::io::{Read, Seek, SeekFrom};
        let allocated = file.metadata()?.len();
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()) as u64;
        file.seek(SeekFrom::Start(len))?;
        Ok(Log {
            sync_every,
            compact_over,
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
        let zeros = vec![0u8; 1 << 20];
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
        *self = Log::open(&self.path, file, self.sync_every, self.compact_over)?;
        self.extend(0)
    }
}

fn serve(
    rx: &mpsc::Receiver<Msg>,
    written: &std::sync::Mutex<Vec<Uuid>>,
    mut log: Log,
    results: &File,
) {
    use std::fmt::Write as _;
    // The entries held open: every line written for each.
    let mut open: HashMap<Uuid, String> = HashMap::new();
    // Requests whose rows are written but not yet synced: their `done` lines wait.
    let mut settled: Vec<Uuid> = Vec::new();
    let mut last_sync = Instant::now();
    let mut broken: Option<(io::ErrorKind, String)> = None;
    loop {
        let first = match rx.recv_timeout(log.sync_every.max(Duration::from_millis(1))) {
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
                Msg::Finish(reply) => finish = Some(reply),
            }
        }
        // Rows written since the last group (their `sent` lines were all acknowledged before).
        let rows = std::mem::take(&mut *written.lock().unwrap_or_else(|e| e.into_inner()));
        settled.extend(rows.into_iter().filter(|id| open.remove(id).is_some()));
        if broken.is_none() {
            let mut step = || -> io::Result<()> {
                if !settled.is_empty()
                    && (finish.is_some() || last_sync.elapsed() >= log.sync_every)
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
                if settled.is_empty() && log.len > log.compact_over {
                    log.compact(&open)?;
                }
                Ok(())
            };
            if let Err(e) = step() {
                broken = Some((e.kind(), e.to_string()));
            }
        }
        let result = || match &broken {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
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

    fn sent(id: u128, attempt: u32) -> Sent {
        Sent {
            id: Uuid::from_u128(id),
            attempt,
            at: format!("2026-12-01T00:00:0{attempt}.000Z"),
            first_at: "2026-12-01T00:00:01.000Z".into(),
            world: World::Api,
            kind: Some(Kind::Txt2Img),
            job: "hero".into(),
        }
    }

    #[test]
    fn lines_round_trip_and_entries_close_with_done() {
        let a = sent(1, 1);
        let mut b = sent(2, 1);
        b.world = World::Simulator;
        b.kind = Some(Kind::Model);
        let b2 = Sent {
            attempt: 2,
            at: "2026-12-01T00:00:09.000Z".into(),
            ..b.clone()
        };
        let c = sent(3, 1);
        let text = format!(
            "{}{}noted {} 1 500\n{}{}noted {} 1 429\ndone {}\n",
            a.line(),
            b.line(),
            b.id,
            b2.line(),
            c.line(),
            c.id,
            a.id
        );
        let open = parse(text.as_bytes()).unwrap();
        assert_eq!(
            open,
            vec![
                // b's second attempt was not answered; the 500 belongs to the first.
                Entry {
                    sent: b2,
                    noted: None,
                    earlier_unnoted: false,
                },
                Entry {
                    sent: c,
                    noted: Some("429".into()),
                    earlier_unnoted: false,
                },
            ]
        );
        assert!(!open[0].no_task() && open[1].no_task());
        // An attempt that went unanswered, then one answered 503: a task may exist.
        let d = sent(4, 1);
        let d2 = Sent {
            attempt: 2,
            ..d.clone()
        };
        let text = format!("{}{}noted {} 2 503\n", d.line(), d2.line(), d.id);
        let open = parse(text.as_bytes()).unwrap();
        assert!(open[0].earlier_unnoted && !open[0].no_task());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_line_is_an_error() {
        let a = sent(1, 1);
        let torn = format!("{}sent {} 1 2026", a.line(), Uuid::from_u128(2));
        assert_eq!(parse(torn.as_bytes()).unwrap().len(), 1);
        let bad = format!("garbage\n{}", a.line());
        assert_eq!(parse(bad.as_bytes()).unwrap_err().line, 1);
        let mut not_utf8 = a.line().into_bytes();
        not_utf8.extend_from_slice(b"sent \xff\n");
        assert_eq!(parse(&not_utf8).unwrap_err().line, 2);
    }

    #[test]
    fn the_text_ends_at_the_zeros_laid_down_ahead() {
        let a = sent(1, 1);
        let mut bytes = a.line().into_bytes();
        bytes.extend_from_slice(b"sent 00000000-0000-0000-0000-00000000"); // torn by a power cut
        bytes.extend(std::iter::repeat_n(0u8, 64));
        bytes.extend_from_slice(sent(2, 1).line().as_bytes()); // never synced: past the zeros
        let open = parse(&bytes).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].sent, a);
    }

    #[test]
    fn a_log_written_before_kinds_were_logged_reads() {
        let id = Uuid::from_u128(9);
        let open = parse(format!("sent {id} 2 2026-11-01T00:00:00.000Z\n").as_bytes()).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].sent.first_at, "2026-11-01T00:00:00.000Z");
        assert_eq!(open[0].sent.world, World::Api);
        assert_eq!(open[0].sent.kind, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sent_returns_once_the_line_is_written_and_finish_reports_what_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wal");
        let wal = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let results = File::create(dir.path().join("r.csv")).unwrap();
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
        writer.settled((0..49u128).map(Uuid::from_u128).collect());
        let open = writer.finish().unwrap();
        assert_eq!(open, vec![sent(49, 1)], "one request abandoned in flight");
        let entries = read(&path).unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].sent.id, Uuid::from_u128(49));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_log_is_rewritten_to_what_is_still_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.wal");
        let results = File::create(dir.path().join("r.csv")).unwrap();
        let wal = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let writer = WalWriter::start_with(&path, wal, results, Duration::ZERO, 4096).unwrap();
        let handle = writer.handle();
        for i in 0..200u128 {
            handle.sent(line(&sent(i, 1))).await.unwrap();
            if i == 199 {
                handle.noted(Uuid::from_u128(i), 1, "503");
            }
            if i % 40 != 39 {
                writer.settled(vec![Uuid::from_u128(i)]);
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
}
