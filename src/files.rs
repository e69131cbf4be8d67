//! Opening the files a user names (manifests, `for_each` tables, local images): regular files
//! only, checked for what they are before anything is read. A path is opened without blocking (a
//! named pipe nobody writes to would otherwise hang the open), and a folder, a pipe, a device (a
//! link to `/dev/zero` would be read without end), a socket or a loop of symbolic links each get
//! a message that says so.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Open the regular file at `path` (links followed) for reading. The error says what the path
/// is when it is not a regular file.
pub(crate) fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other("is a loop of symbolic links, not a file"),
            _ => e,
        })?;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_dir() {
        "is a folder, not a file"
    } else if kind.is_fifo() {
        "is a named pipe (FIFO), not a file"
    } else if kind.is_char_device() || kind.is_block_device() {
        "is a device, not a file"
    } else if kind.is_socket() {
        "is a socket, not a file"
    } else {
        "is not a regular file"
    };
    Err(io::Error::other(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what(path: &Path) -> String {
        open_regular(path).unwrap_err().to_string()
    }

    #[test]
    fn only_regular_files_open_and_the_rest_say_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.png");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file).is_ok());
        std::os::unix::fs::symlink(&file, dir.path().join("link.png")).unwrap();
        assert!(
            open_regular(&dir.path().join("link.png")).is_ok(),
            "links are followed"
        );
        assert_eq!(what(dir.path()), "is a folder, not a file");
        assert_eq!(what(Path::new("/dev/zero")), "is a device, not a file");
        let fifo = dir.path().join("pipe.png");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(
            what(&fifo),
            "is a named pipe (FIFO), not a file",
            "and it did not hang"
        );
        let (a, b) = (dir.path().join("loop-a"), dir.path().join("loop-b"));
        std::os::unix::fs::symlink(&a, &b).unwrap();
        std::os::unix::fs::symlink(&b, &a).unwrap();
        assert_eq!(what(&a), "is a loop of symbolic links, not a file");
        assert_eq!(
            open_regular(&dir.path().join("missing"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
