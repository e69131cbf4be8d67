//! Which file the results are, however the user names them, and the lock that keeps a second run
//! away from them.
//!
//! The results path is resolved to the file itself (symbolic links followed, relative parts
//! made absolute), and the lock, the write-ahead log and the atomic rewrite all act on that file:
//! two runs that reach one file through different names take the same lock, and a symbolic link
//! stays a link to the rewritten file. A file with a second hard link is refused: the atomic
//! rewrite (a new file renamed over the old) would leave the other name holding stale results,
//! and a run through that name would send again what this one submitted.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The files of one results journal.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// The results as the user named them (for messages).
    pub shown: PathBuf,
    /// The results file itself: symbolic links resolved, absolute.
    pub file: PathBuf,
    /// `<file>.wal`: the write-ahead log.
    pub wal: PathBuf,
    /// `<file>.lock`: held while a run uses the results.
    pub lock: PathBuf,
}

impl Paths {
    /// Resolve `path` (which need not exist yet; a dangling link is resolved to where it points).
    pub(crate) fn resolve(path: &Path) -> io::Result<Paths> {
        let file = resolve(path)?;
        Ok(Paths {
            shown: path.to_path_buf(),
            wal: sibling(&file, "wal"),
            lock: sibling(&file, "lock"),
            file,
        })
    }

    /// The results for a message: the name given, and the file it leads to when that differs.
    pub(crate) fn display(&self) -> String {
        let shown = self.shown.display();
        let link = std::fs::symlink_metadata(&self.shown).is_ok_and(|m| m.file_type().is_symlink());
        if link {
            format!("`{shown}` (→ `{}`)", self.file.display())
        } else {
            format!("`{shown}`")
        }
    }
}

/// Follow symbolic links to the file itself; the folder part is made canonical.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)?;
                p = if target.is_absolute() {
                    target
                } else {
                    parent(&p).join(target)
                };
            }
            Ok(_) => return std::fs::canonicalize(&p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let name = p.file_name().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{}` does not name a file", path.display()),
                    )
                })?;
                // A folder that does not exist yet (a dry run does not create it) is kept as
                // written: nothing is there to lock or read.
                let dir = parent(&p);
                let dir = match std::fs::canonicalize(&dir) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => dir,
                    other => other?,
                };
                return Ok(dir.join(name));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "`{}`: too many levels of symbolic links",
        path.display()
    )))
}

/// `results.csv` → `results.csv.<ext>`.
pub(crate) fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The folder of a path (`.` for a bare file name).
pub(super) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The exclusive lock of a results file, held while this value lives.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

/// Failure to take the lock.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("{shown} is in use by another run (pid {pid}); nothing was sent")]
    Held { shown: String, pid: String },
    #[error(
        "{shown} has {links} hard links: a run rewrites its results file atomically, which would leave the other names with stale results (and a run through one of them would send again what this one submitted); keep one name (a symbolic link is fine); nothing was sent"
    )]
    HardLinked { shown: String, links: u64 },
    #[error("cannot lock {shown}: {source}")]
    Io {
        shown: String,
        #[source]
        source: io::Error,
    },
}

/// Lock the results (`<file>.lock`, created if missing) and write our pid into it. With `create`
/// false (a dry run, which writes nothing) a missing lock file means no run holds the results, and
/// nothing is created.
pub(crate) fn lock(paths: &Paths, create: bool) -> Result<Option<Lock>, LockError> {
    let shown = paths.display();
    let io_err = |source| LockError::Io {
        shown: shown.clone(),
        source,
    };
    if let Ok(m) = std::fs::metadata(&paths.file)
        && m.nlink() > 1
    {
        return Err(LockError::HardLinked {
            shown,
            links: m.nlink(),
        });
    }
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(&paths.lock);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Held {
                shown,
                pid: pid.trim().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
    }
    // Whoever holds the lock names itself in it (a dry run included: a run refused meanwhile
    // names the right process).
    file.set_len(0).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    write!(file, "{}", std::process::id()).map_err(io_err)?;
    file.flush().map_err(io_err)?;
    Ok(Some(Lock { _file: file }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_to_the_file_and_missing_files_to_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap().join("real.csv");
        std::fs::write(&real, "x").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink("real.csv", &link).unwrap();
        assert_eq!(Paths::resolve(&link).unwrap().file, real);
        assert_eq!(
            Paths::resolve(&link).unwrap().lock,
            sibling(&real, "lock"),
            "one lock, whatever the name"
        );
        // A link to a file not written yet leads to where the file will be.
        let dangling = dir.path().join("later.csv");
        std::os::unix::fs::symlink("sub/../new.csv", &dangling).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let resolved = Paths::resolve(&dangling).unwrap().file;
        assert_eq!(resolved.file_name().unwrap(), "new.csv");
        // A loop is an error, not a hang.
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(Paths::resolve(&a).is_err());
    }
}
