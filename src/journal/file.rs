//! Bytes on disk: appending rows with known offsets, reading rows back by offset, and replacing a
//! file atomically.

use std::fs::File;
use std::io;
use std::path::Path;

use uuid::Uuid;

use super::lock::parent;

/// Rows on their way to a file: CSV-encoded one by one into a buffer (so each row's offset and
/// length in the file are known before it is written), then taken with [`Encoder::take`] and
/// written by whoever owns the file (the compaction itself, or the journal's writer thread).
pub(super) struct Encoder {
    /// Bytes in the file, and taken to be written there.
    len: u64,
    /// Rows encoded, not yet taken (`None` only inside `take`).
    csv: Option<csv::Writer<Vec<u8>>>,
    /// The requests of the rows not yet taken.
    pending: Vec<Uuid>,
}

impl Encoder {
    /// Rows that follow the `len` bytes of a file.
    pub(super) fn new(len: u64) -> Encoder {
        Encoder {
            len,
            csv: Some(Self::encoder(Vec::new())),
            pending: Vec::new(),
        }
    }

    fn encoder(buf: Vec<u8>) -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(buf)
    }

    fn csv(&mut self) -> &mut csv::Writer<Vec<u8>> {
        self.csv.as_mut().expect("an encoder outside take")
    }

    /// Bytes encoded and not yet taken.
    pub(super) fn buffered(&mut self) -> usize {
        self.csv().get_ref().len()
    }

    /// Encode a row of request `id`; its offset and length in the file.
    pub(super) fn push<S: AsRef<str>>(&mut self, id: Uuid, row: &[S]) -> io::Result<(u64, u32)> {
        let start = self.csv().get_ref().len();
        self.csv()
            .write_record(row.iter().map(|f| f.as_ref().as_bytes()))?;
        self.csv().flush()?;
        let end = self.csv().get_ref().len();
        let len = u32::try_from(end - start)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a results row over 4 GiB"))?;
        self.pending.push(id);
        Ok((self.len + start as u64, len))
    }

    /// The rows encoded since the last take, as bytes to append to the file, and their
    /// requests. The offsets given by [`Encoder::push`] hold once the bytes are written.
    pub(super) fn take(&mut self) -> (Vec<u8>, Vec<Uuid>) {
        let csv = self.csv.take().expect("an encoder");
        let bytes = csv
            .into_inner()
            .expect("rows are flushed into memory as they are pushed");
        self.len += bytes.len() as u64;
        self.csv = Some(Self::encoder(Vec::with_capacity(bytes.capacity())));
        (bytes, std::mem::take(&mut self.pending))
    }
}

/// Reads rows of a file by offset through one window of [`Window::SIZE`] bytes. Rows were
/// appended in completion order, which is close to expansion order (at most `--concurrency`
/// apart), so almost every row of the final rewrite is already in the window: one read per window
/// instead of one per row.
pub(super) struct Window {
    file: File,
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    pub(super) const SIZE: usize = 256 * 1024;

    pub(super) fn new(file: File) -> Self {
        Window {
            file,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// The `len` bytes at `offset`.
    pub(super) fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
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
/// rename, fsync the folder. `path` must be the file itself, not a symbolic link to it (the link
/// would be replaced by a plain file).
pub(crate) fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o644);
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(path)
}

/// fsync the folder of `path`, so a rename or a new file in it survives a power loss. (A file
/// system that cannot sync a folder says so with `EINVAL`; there is nothing more to do then.)
pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    match File::open(parent(path))?.sync_all() {
        Err(e) if e.raw_os_error() == Some(22) => Ok(()),
        other => other,
    }
}

/// Parse one CSV row from its bytes.
pub(super) fn parse_row(bytes: &[u8]) -> io::Result<csv::StringRecord> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record),
        Ok(false) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a results row vanished",
        )),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        std::io::Write::write_all(&mut tmp, &data).unwrap();
        let mut window = Window::new(tmp.reopen().unwrap());
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
