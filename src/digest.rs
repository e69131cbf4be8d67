//! The BLAKE3 digests of local images: what a request's id says of an image (`ids`), and what the
//! bytes sent are checked against while they stream (`body`). Each distinct file is read whole
//! once per run, when validation first meets it.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The largest local image a request may carry ([`crate::limits::IMAGE_FILE_BYTES`]).
pub(crate) const MAX_IMAGE_FILE_BYTES: u64 = crate::limits::IMAGE_FILE_BYTES;

/// The BLAKE3 digest of a file's bytes, with its length when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// The BLAKE3 hash of the bytes (of the path, for an unreadable file).
    pub hash: [u8; 32],
    /// `None`: the file could not be read (its request cannot pass validation).
    pub len: Option<u64>,
}

impl Digest {
    /// As hashed into a request id: `blake3:<hex>` (or `unreadable:<hex>`).
    pub fn text(&self) -> String {
        let hex: String = self.hash.iter().map(|b| format!("{b:02x}")).collect();
        match self.len {
            Some(_) => format!("blake3:{hex}"),
            None => format!("unreadable:{hex}"),
        }
    }
}

/// The digests of the local images a run has met, by path.
#[derive(Debug, Default)]
pub struct Digests {
    map: Mutex<HashMap<PathBuf, Digest>>,
}

impl Digests {
    /// The digest of the file at `path`, read whole the first time it is asked for. A path that is
    /// not a readable regular file gets a digest of its name (its request is refused by
    /// validation, so the id is never used to send).
    pub fn get(&self, path: &Path) -> Digest {
        let cached = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied();
        if let Some(d) = cached {
            return d;
        }
        let digest = digest_file(path).unwrap_or_else(|_| Digest {
            hash: *blake3::hash(format!("unreadable\0{}", path.display()).as_bytes()).as_bytes(),
            len: None,
        });
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), digest);
        digest
    }
}

/// Hash a regular file's bytes.
pub fn digest_file(path: &Path) -> std::io::Result<Digest> {
    let mut file = crate::files::open_regular(path)?;
    // A file over the bound is not read (validation refuses its request).
    if file.metadata()?.len() > MAX_IMAGE_FILE_BYTES {
        return Err(std::io::Error::other("over the bound of a local image"));
    }
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Digest {
        hash: *hasher.finalize().as_bytes(),
        len: Some(len),
    })
}
