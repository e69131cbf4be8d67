//! Files read once per run. A CSV manifest and a `for_each` table are streamed on every pass over
//! the manifests (validation, the plan, the run), never held in memory; reading the file itself
//! on each pass would send an edit made during the run without validating it. So each is copied,
//! when the manifest is loaded, into a private temporary file that nothing else can reach (it has
//! no name), and every pass reads that copy: the bytes validated are the bytes sent.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A private copy of a file, as it was when it was loaded.
#[derive(Debug, Clone)]
pub struct Snapshot {
    file: Arc<File>,
}

impl Snapshot {
    /// Copy the regular file at `path`. The error says what the path is when it is not a file.
    pub fn take(path: &Path) -> io::Result<Snapshot> {
        let mut source = crate::files::open_regular(path)?;
        let mut copy = tempfile::tempfile()?;
        io::copy(&mut source, &mut copy)?;
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
