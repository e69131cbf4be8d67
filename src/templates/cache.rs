//! The template lists kept on disk, so that `--check-templates` on every nightly run does not read
//! them again, and so that `collect` can name the templates on its contact sheet without asking.
//!
//! Where: `$HIDREAM_BATCH_CACHE_DIR`, else `$XDG_CACHE_HOME/hidream-batch`, else
//! `~/.cache/hidream-batch`; one file per list and API origin,
//! `templates-<human|scene>-<hash of the origin>.json`, so the simulator's lists never answer for
//! the real API's. What: the origin, the time the list was read and its templates — never the
//! token. How: written atomically (a temporary file, then a rename), so a reader never sees half a
//! file. For how long: a check uses a list younger than [`LIFETIME`] and reads it again otherwise
//! (`--refresh-templates` always reads it); the contact sheet uses a cached list of any age (it
//! only labels tiles). A cache that cannot be read or written is a warning, never a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{List, Template, Which};
use crate::env_vars;

/// How long a cached list is used by `--check-templates` before it is read again: a day, so a
/// nightly job reads the lists about once a night, and a template the API adds is seen by the
/// next day's check (or at once with `--refresh-templates`).
pub(crate) const LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest cache file read (a list at its bound, [`crate::limits::TEMPLATES`], is a few MiB).
const MAX_FILE_BYTES: u64 = 32 << 20;

/// The cache folder, if one can be named (no variable set and no home: none).
pub(crate) fn dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(env_vars::CACHE_DIR) {
        return Some(dir);
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("hidream-batch"));
    }
    var("HOME").map(|home| home.join(".cache").join("hidream-batch"))
}

/// The file of `which`'s list from `origin`, in `dir`.
fn file(dir: &Path, origin: &str, which: Which) -> PathBuf {
    let hash = blake3::hash(origin.as_bytes()).to_hex();
    dir.join(format!("templates-{which}-{}.json", &hash[..16]))
}

/// What a cache file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    /// The API origin the list was read from.
    origin: String,
    /// `human` or `scene`.
    which: String,
    /// When it was read, in seconds since 1970.
    fetched_at: u64,
    /// The templates, as `templates --format json` writes them.
    templates: Vec<Value>,
}

/// A list from the cache, and how old it is.
#[derive(Debug)]
pub(crate) struct Cached {
    pub list: List,
    pub age: Duration,
}

/// The cached list of `which` from `origin`, of any age; `None` if there is none, or it cannot
/// be read (said at debug level: the list is then read from the API).
pub(crate) fn read(origin: &str, which: Which) -> Option<Cached> {
    let path = file(&dir()?, origin, which);
    let bytes = match crate::files::open_regular(&path).and_then(|f| {
        use std::io::Read;
        let mut buf = Vec::new();
        f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
        Ok(buf)
    }) {
        Ok(b) if b.len() as u64 <= MAX_FILE_BYTES => b,
        Ok(_) => {
            tracing::warn!(
                "ignoring the template cache `{}`: too large",
                path.display()
            );
            return None;
        }
        Err(e) => {
            tracing::debug!("no template cache `{}`: {e}", path.display());
            return None;
        }
    };
    let stored: Stored = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("ignoring the template cache `{}`: {e}", path.display());
            return None;
        }
    };
    if stored.origin != origin || stored.which != which.as_str() {
        return None;
    }
    let templates = stored
        .templates
        .into_iter()
        .filter_map(|v| Template::from_value(v).ok())
        .collect();
    let fetched = UNIX_EPOCH + Duration::from_secs(stored.fetched_at);
    Some(Cached {
        list: List { which, templates },
        // A time in the future (a clock set back) is as old as can be: read again.
        age: SystemTime::now()
            .duration_since(fetched)
            .unwrap_or(Duration::MAX),
    })
}

/// Keep `list`, read from `origin` just now. A failure is a warning.
pub(crate) fn write(origin: &str, list: &List) {
    let Some(dir) = dir() else {
        tracing::debug!("no cache folder (no HOME): the template lists are not kept");
        return;
    };
    let stored = Stored {
        origin: origin.to_string(),
        which: list.which.as_str().to_string(),
        fetched_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        templates: list
            .templates
            .iter()
            .filter_map(|t| serde_json::to_value(t).ok())
            .collect(),
    };
    let path = file(&dir, origin, list.which);
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        crate::collect::write_atomic(&path, &bytes)
    });
    match written {
        Ok(()) => tracing::debug!("template list cached in `{}`", path.display()),
        Err(e) => tracing::warn!(
            "cannot keep the {} template list in `{}`: {e}",
            list.which,
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_list_and_origin() {
        let d = Path::new("/c");
        let a = file(d, "https://hidreamai.com", Which::Human);
        assert_ne!(a, file(d, "http://127.0.0.1:8787", Which::Human));
        assert_ne!(a, file(d, "https://hidreamai.com", Which::Scene));
        assert!(a.to_string_lossy().starts_with("/c/templates-human-"));
    }
}
