//! `merge`: combine results CSVs (typically the shards of one manifest) into one.
//!
//! For each request id one row is kept, and a task id is never dropped:
//! - a `submitted` row wins over any row that is not, later or not;
//! - otherwise the latest row wins (by `submitted_at`; on a tie, the later file);
//! - two rows of one request with different task ids mean the request was submitted twice and both
//!   tasks may be billed: that is reported, never hidden, and the merge exits 1 (the later is kept).
//!
//! Inputs are read as strictly as `run` reads its results: a row that cannot be read stops the
//! merge (exit 3) naming the file and line. Every input and the output are locked as a run locks
//! its results (a shard still running, or a live results file as the output, exits 3), and an
//! input whose write-ahead log holds requests that were in flight when its run stopped is refused
//! (exit 3): those requests have no row yet, and the merged file has no log to remember them by.
//! The output is written to the file itself (a symbolic link stays a link). Columns are the union of the inputs' headers (first
//! file's order, new columns appended). Like the journal, rows stay on disk: only an index (id →
//! file, offset, time) is held.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::results::{self, Item, Status};
use crate::{exit, journal};

struct Pick {
    file: usize,
    offset: u64,
    submitted: bool,
    submitted_at: String,
    task_id: String,
    first_seen: u64,
}

/// A conflict: one request with two different task ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub request_id: Uuid,
    pub kept: (String, PathBuf),
    pub other: (String, PathBuf),
}

/// Merge `inputs` into `out` (written atomically), rows in `order` first (ids not in the inputs
/// are skipped), then the rest in order of first appearance. Returns the conflicts found.
pub(crate) fn merge(
    inputs: &[PathBuf],
    out: &Path,
    order: impl Iterator<Item = Uuid>,
) -> anyhow::Result<Vec<Conflict>> {
    let mut headers: Vec<Vec<String>> = Vec::new();
    let mut union: Vec<String> = Vec::new();
    let mut index: HashMap<Uuid, Pick> = HashMap::new();
    let mut conflicts = Vec::new();
    let mut seen = 0u64;
    for (file, path) in inputs.iter().enumerate() {
        let shown = path.display();
        let f =
            File::open(path).map_err(|e| exit::invalid(format!("cannot read `{shown}`: {e}")))?;
        let unreadable = |u: results::Unreadable| {
            exit::invalid(format!(
                "cannot read `{shown}` completely: line {}: {}",
                u.line, u.what
            ))
        };
        let mut reader = results::Reader::open(&f)
            .map_err(|e| exit::invalid(format!("cannot read `{shown}`: {e}")))?
            .map_err(unreadable)?;
        let header = reader.header().to_vec();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .expect("a required column")
        };
        let (task_col, time_col) = (col("task_id"), col("submitted_at"));
        for h in &header {
            if !union.contains(h) {
                union.push(h.clone());
            }
        }
        while let Some(item) = reader.next_item() {
            let row = match item.map_err(unreadable)? {
                Item::Row(row) => row,
                Item::Torn { line, .. } => {
                    return Err(unreadable(results::Unreadable {
                        line,
                        what: "the last row is incomplete".into(),
                    }));
                }
            };
            let new = Pick {
                file,
                offset: row.offset,
                submitted: row.status == Status::Submitted,
                submitted_at: row.record[time_col].to_string(),
                task_id: results::cell_unescape(&row.record[task_col]).to_string(),
                first_seen: seen,
            };
            let id = row.id;
            seen += 1;
            match index.get_mut(&id) {
                None => {
                    index.insert(id, new);
                }
                Some(old) => {
                    let later = new.submitted_at >= old.submitted_at;
                    if !new.task_id.is_empty()
                        && !old.task_id.is_empty()
                        && new.task_id != old.task_id
                    {
                        let (kept, other) = if later { (&new, &*old) } else { (&*old, &new) };
                        conflicts.push(Conflict {
                            request_id: id,
                            kept: (kept.task_id.clone(), inputs[kept.file].clone()),
                            other: (other.task_id.clone(), inputs[other.file].clone()),
                        });
                    }
                    // A task id is never dropped for a row without one.
                    let wins = match (new.submitted, old.submitted) {
                        (true, false) => true,
                        (false, true) => false,
                        _ => later,
                    };
                    if wins {
                        *old = Pick {
                            first_seen: old.first_seen,
                            ..new
                        };
                    }
                }
            }
        }
        headers.push(header);
    }
    // Write the given order, then the rest in order of first appearance.
    let mut rows: Vec<(usize, u64)> = order
        .filter_map(|id| index.remove(&id))
        .map(|p| (p.file, p.offset))
        .collect();
    let mut rest: Vec<(u64, usize, u64)> = index
        .values()
        .map(|p| (p.first_seen, p.file, p.offset))
        .collect();
    rest.sort_unstable();
    rows.extend(rest.into_iter().map(|(_, f, o)| (f, o)));
    let mut readers: Vec<csv::Reader<File>> = inputs
        .iter()
        .map(|p| open(p))
        .collect::<anyhow::Result<_>>()?;
    let maps: Vec<Vec<Option<usize>>> = headers
        .iter()
        .map(|h| {
            union
                .iter()
                .map(|u| h.iter().position(|x| x == u))
                .collect()
        })
        .collect();
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(tmp.as_file_mut()));
        w.write_record(&union)?;
        let mut record = csv::StringRecord::new();
        for (file, offset) in rows {
            if readers[file].position().byte() != offset {
                let mut pos = csv::Position::new();
                pos.set_byte(offset);
                readers[file].seek(pos)?;
            }
            readers[file].read_record(&mut record)?;
            let row: Vec<&str> = maps[file]
                .iter()
                .map(|m| m.and_then(|i| record.get(i)).unwrap_or(""))
                .collect();
            w.write_record(&row)?;
        }
        w.flush()?;
    }
    crate::journal::persist(tmp, out)?;
    Ok(conflicts)
}

fn open(path: &Path) -> anyhow::Result<csv::Reader<File>> {
    let file = File::open(path)
        .map_err(|e| exit::invalid(format!("cannot read `{}`: {e}", path.display())))?;
    Ok(csv::ReaderBuilder::new().flexible(true).from_reader(file))
}

/// Lock every input and the output (once each, however named), and check that no input (nor the
/// output) has requests in flight without a row. The locks are held while they live.
pub(crate) fn guard(
    inputs: &[PathBuf],
    out: &Path,
) -> anyhow::Result<(PathBuf, Vec<journal::Lock>)> {
    let resolve = |p: &Path| {
        journal::Paths::resolve(p)
            .map_err(|e| exit::aborted(format!("cannot use `{}`: {e}", p.display())))
    };
    let output = resolve(out)?;
    let mut locks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let all = inputs
        .iter()
        .map(|p| (p.as_path(), false))
        .chain([(out, true)]);
    for (path, is_out) in all {
        let paths = resolve(path)?;
        if !seen.insert(paths.file.clone()) {
            continue;
        }
        let create = is_out || paths.file == output.file;
        if let Some(lock) =
            journal::lock(&paths, create).map_err(|e| exit::aborted(e.to_string()))?
        {
            locks.push(lock);
        }
        let shown = paths.display();
        let prior = journal::Prior::read(paths).map_err(|e| exit::aborted(e.to_string()))?;
        if !prior.orphans().is_empty() {
            let ids: Vec<String> = prior
                .orphans()
                .iter()
                .map(|o| o.sent.id.to_string())
                .collect();
            return Err(exit::aborted(format!(
                "{shown} has {} request{} that {} in flight when its run stopped, with no row yet ({}): run that command again (it records them before it sends anything), then merge; nothing was written",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" },
                if ids.len() == 1 { "was" } else { "were" },
                ids.join(", ")
            )));
        }
    }
    Ok((output.file, locks))
}
