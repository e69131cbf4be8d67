//! The strict reader every results file is read with: every row read, or the line and what is
//! wrong with it (journal invariant 4); a torn last line is told apart for the caller to excuse.

use std::io::Read;

use super::{LEADING, Status};

/// Why a results file cannot be read completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unreadable {
    /// 1-based line (0: the file as a whole).
    pub line: u64,
    pub what: String,
}

/// One row of a results file as read: where it is and what it says.
#[derive(Debug)]
pub(crate) struct Row {
    pub line: u64,
    /// Byte offset and length in the file (its line end included).
    pub offset: u64,
    pub len: u64,
    pub record: csv::StringRecord,
    pub id: uuid::Uuid,
    pub status: Status,
}

/// What a strict read yields: rows, or a final line torn by a crash (its fields so far, for the
/// caller to excuse if the write-ahead log still holds its request).
#[derive(Debug)]
pub(crate) enum Item {
    Row(Row),
    Torn {
        line: u64,
        record: csv::StringRecord,
    },
}

/// Reads a results file strictly: UTF-8, every row with the header's number of fields, a request
/// id and a known status, the [`LEADING`] columns present. Anything else is an [`Unreadable`] with
/// its line, never a row skipped. The one thing it does not decide is a torn final line (no line
/// end, too few fields or no status): it is returned as [`Item::Torn`].
pub(crate) struct Reader<R: Read> {
    csv: csv::Reader<R>,
    header: Vec<String>,
    id_col: usize,
    status_col: usize,
    /// The file's length, and whether it ends with a line end (a final line without one may be
    /// torn).
    len: u64,
    ends_with_newline: bool,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Start reading a file of `len` bytes; `ends_with_newline` says whether its last byte is a
    /// line end.
    pub(crate) fn new(
        input: R,
        len: u64,
        ends_with_newline: bool,
    ) -> Result<Reader<R>, Unreadable> {
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let header: Vec<String> = match csv.headers() {
            Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
            Err(e) => {
                return Err(Unreadable {
                    line: 1,
                    what: describe_error(&e),
                });
            }
        };
        let mut seen = std::collections::HashSet::new();
        for h in &header {
            if !seen.insert(h.as_str()) {
                return Err(Unreadable {
                    line: 1,
                    what: format!("the header names the column `{h}` twice"),
                });
            }
        }
        let missing: Vec<&str> = LEADING
            .iter()
            .copied()
            .filter(|c| !header.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            return Err(Unreadable {
                line: 1,
                what: format!(
                    "the header lacks the column{} `{}` (a results file starts with {})",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join("`, `"),
                    LEADING.join(", ")
                ),
            });
        }
        let col = |name: &str| header.iter().position(|h| h == name).expect("checked");
        Ok(Reader {
            id_col: col("request_id"),
            status_col: col("status"),
            csv,
            header,
            len,
            ends_with_newline,
            done: false,
        })
    }

    pub(crate) fn header(&self) -> &[String] {
        &self.header
    }

    /// The next row, a torn final line, or what makes the file unreadable; `None` at the end.
    pub(crate) fn next_item(&mut self) -> Option<Result<Item, Unreadable>> {
        if self.done {
            return None;
        }
        let offset = self.csv.position().byte();
        let mut record = csv::StringRecord::new();
        let more = match self.csv.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                self.done = true;
                let line = e.position().map_or(0, |p| p.line());
                return Some(Err(Unreadable {
                    line,
                    what: describe_error(&e),
                }));
            }
        };
        if !more {
            self.done = true;
            return None;
        }
        let line = record.position().map_or(0, |p| p.line());
        let end = self.csv.position().byte();
        let last = end >= self.len;
        let fail = |what: String| Some(Err(Unreadable { line, what }));
        let torn = |record: csv::StringRecord| Some(Ok(Item::Torn { line, record }));
        if record.len() != self.header.len() {
            if last && !self.ends_with_newline && record.len() < self.header.len() {
                self.done = true;
                return torn(record);
            }
            return fail(format!(
                "the row has {} fields but the header has {} (a comma typed into a cell, or a cell pasted across columns?)",
                record.len(),
                self.header.len()
            ));
        }
        let Some(status) = Status::parse(&record[self.status_col]) else {
            if last && !self.ends_with_newline {
                self.done = true;
                return torn(record);
            }
            return fail(format!(
                "the status `{}` is not one of submitted, rejected, failed, unknown",
                crate::logging::safe(&record[self.status_col])
            ));
        };
        let raw_id = record[self.id_col].trim();
        let Ok(id) = uuid::Uuid::parse_str(raw_id) else {
            return fail(format!(
                "`{}` is not a request id",
                crate::logging::safe(raw_id)
            ));
        };
        Some(Ok(Item::Row(Row {
            line,
            offset,
            len: end - offset,
            record,
            id,
            status,
        })))
    }
}

impl Reader<std::io::BufReader<std::fs::File>> {
    /// Start reading a results file (from its start, whatever the handle's position).
    pub(crate) fn open(
        file: &std::fs::File,
    ) -> std::io::Result<Result<Reader<std::io::BufReader<std::fs::File>>, Unreadable>> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let len = file.metadata()?.len();
        let mut last = [0u8];
        if len > 0 {
            file.read_exact_at(&mut last, len - 1)?;
        }
        let mut input = file.try_clone()?;
        input.seek(SeekFrom::Start(0))?;
        let input = std::io::BufReader::with_capacity(256 * 1024, input);
        Ok(Reader::new(input, len, matches!(last[0], b'\n' | b'\r')))
    }
}

fn describe_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "the text is not UTF-8 (was the file re-saved in another encoding? save it as \"CSV UTF-8\")"
                .to_string()
        }
        csv::ErrorKind::Io(io) => format!("cannot read it: {io}"),
        _ => e.to_string(),
    }
}
