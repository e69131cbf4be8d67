//! Files read once per run. A CSV manifest and a `for_each` table are streamed on every pass over
//! the manifests (validation, the plan, the run), never held in memory; reading the file itself
//! on each pass would send an edit made during the run without validating it. So each is copied,
//! when the manifest is loaded, into a private temporary file that nothing else can reach (it has
//! no name), and every pass reads that copy: the bytes validated are the bytes sent.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::limits::{self, CSV_COLUMNS, CSV_FILE_BYTES, CSV_ROW_BYTES, CSV_ROWS};

/// A private copy of a file, as it was when it was loaded.
#[derive(Debug, Clone)]
pub struct Snapshot {
    file: Arc<File>,
}

impl Snapshot {
    /// Copy the regular CSV file at `path`, measuring it against the CSV limits as it is copied
    /// ([`CsvMeasure`]): a file over a limit is refused before any row of it is read into memory.
    /// The error says what the path is when it is not a file, or which limit it passes and where.
    pub fn take(path: &Path) -> io::Result<Snapshot> {
        let source = crate::files::open_regular(path)?;
        if source.metadata()?.len() > CSV_FILE_BYTES {
            return Err(too_big());
        }
        let mut source = source.take(CSV_FILE_BYTES + 1);
        let mut copy = tempfile::tempfile()?;
        let mut measure = CsvMeasure::default();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            measure.feed(&buf[..n])?;
            copy.write_all(&buf[..n])?;
        }
        measure.feed(&[])?;
        Ok(Snapshot {
            file: Arc::new(copy),
        })
    }

    /// A reader from the start of the copy (readers are independent of each other).
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader {
            file: self.file.clone(),
            pos: 0,
            last: (0, Vec::new()),
        }
    }
}

/// Reads a [`Snapshot`] from its start.
#[derive(Debug)]
pub struct SnapshotReader {
    file: Arc<File>,
    pos: u64,
    /// The last piece read, and where it starts: [`SnapshotReader::byte_at`] asks about bytes
    /// just read, which are almost always in it (no system call per row).
    last: (u64, Vec<u8>),
}

impl SnapshotReader {
    /// The byte at `offset` of the copy, if there is one (read without moving the reader).
    pub fn byte_at(&self, offset: u64) -> Option<u8> {
        let (start, piece) = &self.last;
        if let Some(b) = offset
            .checked_sub(*start)
            .and_then(|i| piece.get(usize::try_from(i).ok()?))
        {
            return Some(*b);
        }
        let mut b = [0u8; 1];
        match self.file.read_at(&mut b, offset) {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.last.0 = self.pos;
        self.last.1.clear();
        self.last.1.extend_from_slice(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

fn too_big() -> io::Error {
    io::Error::other(format!(
        "is larger than {}, the limit for a CSV file (README \"Limits\")",
        limits::bytes(CSV_FILE_BYTES)
    ))
}

/// The CSV limits, measured on the bytes as they are copied (a CSV parser that keeps no row:
/// it counts the bytes and the fields of the row it is in, and the rows). A quoted value over
/// several lines is one value, as the reader of the copy will see it.
#[derive(Debug)]
struct CsvMeasure {
    /// The limits: rows (data rows), columns, bytes of a row.
    rows: u64,
    columns: usize,
    row_bytes: u64,
    reader: csv_core::Reader,
    /// Bytes copied so far.
    copied: u64,
    /// Records so far, the header included.
    records: u64,
    /// Bytes and fields of the record being read.
    bytes: u64,
    fields: usize,
}

impl Default for CsvMeasure {
    fn default() -> Self {
        CsvMeasure {
            rows: CSV_ROWS,
            columns: CSV_COLUMNS,
            row_bytes: CSV_ROW_BYTES,
            reader: csv_core::Reader::new(),
            copied: 0,
            records: 0,
            bytes: 0,
            fields: 0,
        }
    }
}

impl CsvMeasure {
    /// Measure the next piece of the file (an empty piece: the end of the file).
    fn feed(&mut self, mut input: &[u8]) -> io::Result<()> {
        use csv_core::ReadRecordResult as R;
        self.copied += input.len() as u64;
        if self.copied > CSV_FILE_BYTES {
            return Err(too_big());
        }
        let mut out = [0u8; 8 << 10];
        let mut ends = [0usize; 256];
        loop {
            let (result, nin, nout, nend) = self.reader.read_record(input, &mut out, &mut ends);
            // The line of the bytes just read: a record ended by `\n` has already counted it.
            let ended_line = matches!(result, R::Record) && nin > 0 && input[nin - 1] == b'\n';
            let line = self.reader.line() - u64::from(ended_line);
            input = &input[nin..];
            self.bytes += nout as u64;
            self.fields += nend;
            if self.bytes > self.row_bytes {
                return Err(io::Error::other(format!(
                    "has a row larger than {}, the limit (README \"Limits\"): it passes it on line {}",
                    limits::bytes(self.row_bytes),
                    line
                )));
            }
            if self.fields > self.columns {
                return Err(io::Error::other(format!(
                    "has more than {} columns on line {}, the limit (README \"Limits\")",
                    self.columns, line
                )));
            }
            match result {
                // Empty input is the end of the file: the reader then ends the last record.
                R::InputEmpty => return Ok(()),
                R::OutputFull | R::OutputEndsFull => {}
                R::Record => {
                    self.records += 1;
                    self.bytes = 0;
                    self.fields = 0;
                    if self.records > self.rows + 1 {
                        return Err(io::Error::other(format!(
                            "has more than {} rows, the limit (README \"Limits\")",
                            self.rows
                        )));
                    }
                }
                R::End => return Ok(()),
            }
        }
    }
}

/// A message for a file that could not be copied: what the path is, or why it cannot be read.
pub fn describe(shown: &str, path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => {
            format!("`{shown}` does not exist (looked for `{}`)", path.display())
        }
        // What the path is, when it is not a regular file (`crate::files`).
        io::ErrorKind::Other => format!("`{shown}` {e}"),
        _ => format!("`{shown}` cannot be read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `text` in pieces of `piece` bytes to a measure with small limits (3 rows, 3 columns,
    /// 12 bytes a row); the error, if any.
    fn measured(text: &str, piece: usize) -> Option<String> {
        let mut m = CsvMeasure {
            rows: 3,
            columns: 3,
            row_bytes: 12,
            ..CsvMeasure::default()
        };
        for chunk in text.as_bytes().chunks(piece).chain([&[][..]]) {
            if let Err(e) = m.feed(chunk) {
                return Some(e.to_string());
            }
        }
        None
    }

    #[test]
    fn csv_limits_are_measured_while_copying_whatever_the_pieces() {
        for piece in [1, 2, 5, 1000] {
            assert_eq!(measured("a,b,c\n1,2,3\n4,5,6\n7,8,9\n", piece), None);
            assert_eq!(
                measured("a,b,c\n1,2,3\n4,5,6\n7,8,9\n0,0,0\n", piece).as_deref(),
                Some("has more than 3 rows, the limit (README \"Limits\")")
            );
            assert_eq!(
                measured("a,b,c\n1,2,3,4\n", piece).as_deref(),
                Some("has more than 3 columns on line 2, the limit (README \"Limits\")")
            );
            // A quoted value over lines is one value: the row starts on line 2, ends on 4.
            assert_eq!(
                measured("a,b\n\"x\ny\nz\",2\nlong,0123456789abc\n", piece).as_deref(),
                Some(
                    "has a row larger than 12 bytes, the limit (README \"Limits\"): it passes it on line 5"
                )
            );
            assert_eq!(
                measured("a,b\r\n1,2\r\n3,0123456789abc\r\n", piece).as_deref(),
                Some(
                    "has a row larger than 12 bytes, the limit (README \"Limits\"): it passes it on line 3"
                ),
                "CRLF"
            );
        }
    }

    #[test]
    fn a_snapshot_keeps_the_bytes_it_was_taken_with() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        let snap = Snapshot::take(&path).unwrap();
        std::fs::write(&path, "a,b\n9,9\n").unwrap();
        let mut one = String::new();
        let mut two = String::new();
        snap.reader().read_to_string(&mut one).unwrap();
        snap.reader().read_to_string(&mut two).unwrap();
        assert_eq!(one, "a,b\n1,2\n");
        assert_eq!(one, two);
        assert!(
            Snapshot::take(dir.path())
                .unwrap_err()
                .to_string()
                .contains("folder")
        );
    }
}
