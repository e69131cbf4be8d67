//! The compaction at the start of a run that sends: the results rewritten with the latest row of
//! every request in this run's order, every open entry settled by its row, and only then the
//! write-ahead log emptied (invariants 2, 3 and 6). It becomes the [`Journal`].

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io;

use uuid::Uuid;

use super::file::{Encoder, Window, parse_row, persist, sync_dir};
use super::lock::parent;
use super::prior::Orphan;
use super::writer::WalWriter;
use super::{Journal, Prior, UNPLACED, Written, crash_point};
use crate::expand::Request;
use crate::results::{OutcomeCols, Rows, Status, World};

impl Prior {
    /// Start the compaction that opens the journal for a run that will send, with this run's
    /// `header` (see [`crate::results::header`]).
    pub(crate) fn compactor(self, header: Vec<String>) -> io::Result<Compactor> {
        let dir = parent(&self.paths.file);
        let tmp = tempfile::NamedTempFile::new_in(&dir)?;
        let mut head = csv::Writer::from_writer(Vec::new());
        head.write_record(&header)?;
        let head = head.into_inner().map_err(|e| e.into_error())?;
        io::Write::write_all(&mut tmp.as_file(), &head)?;
        let out = Encoder::new(head.len() as u64);
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

/// The compaction at the start of a run that sends: a new results file with the latest row of
/// every request, in this run's expansion order (descriptive columns from the current manifests),
/// a row for every open entry, then the rows of requests this run does not know.
pub(crate) struct Compactor {
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
    pub(crate) fn lookup(&self, id: &Uuid) -> Option<(Status, World)> {
        self.prior.lookup(id)
    }

    pub(crate) fn prior(&self) -> &Prior {
        &self.prior
    }

    /// The request at position `pos` of this run's expansion: its row (its earlier row with the
    /// current manifest's descriptive columns, and the outcome that settles its open entry if it
    /// has one) goes here.
    pub(crate) fn place(&mut self, pos: u32, request: &Request) -> io::Result<()> {
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
            self.flush()?;
        }
        Ok(())
    }

    /// Write the rows encoded so far to the new file.
    fn flush(&mut self) -> io::Result<()> {
        let (bytes, _) = self.written.out.take();
        io::Write::write_all(&mut self.tmp.as_file(), &bytes)
    }

    /// Write the rows this run does not know, replace the results with the new file, and only
    /// then empty the write-ahead log (every open entry now has its row on disk). The journal
    /// is ready for this run's rows; the states of the requests before it are returned for the
    /// dispatch to decide from.
    pub(crate) fn finish(mut self) -> io::Result<(Journal, Resume)> {
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
        self.flush()?;
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
        let writer = WalWriter::start(&paths.wal, wal, results)?;
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
                out: Encoder::new(len),
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
pub(crate) struct Resume {
    states: Vec<(Uuid, Status)>,
}

impl Resume {
    pub(crate) fn get(&self, id: &Uuid) -> Option<Status> {
        self.states
            .binary_search_by_key(id, |(i, _)| *i)
            .ok()
            .map(|i| self.states[i].1)
    }
}
