//! `merge`: combine results CSVs (typically the shards of one manifest) into one.
//!
//! For each request id one row is kept, and a task id is never dropped:
//! - a `submitted` row wins over any row that is not, later or not;
//! - otherwise the latest row wins (by `submitted_at`; on a tie, the later file);
//! - two rows of one request with different task ids mean the request was submitted twice and both
//!   tasks may be billed: that is reported, never hidden, and the merge exits 1 (the later is kept).
//!
//! Inputs are read as strictly as `run` reads its results: a row that cannot be read stops the
//! merge (exit 2) naming the file and line. Columns are the union of the inputs' headers (first
//! file's order, new columns appended). Like the journal, rows stay on disk: only an index (id →
//! file, offset, time) is held.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::cli::MergeArgs;
use crate::exit;
use crate::results::{self, Item, Status};

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
pub struct Conflict {
    pub request_id: Uuid,
    pub kept: (String, PathBuf),
    pub other: (String, PathBuf),
}

/// Merge `inputs` into `out` (written atomically), rows in `order` first (ids not in the inputs
/// are skipped), then the rest in order of first appearance. Returns the conflicts found.
pub fn merge(
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
                task_id: row.record[task_col].to_string(),
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

/// `merge`: exit 0, or 1 when conflicting task ids were found (they are listed).
pub fn command(args: &MergeArgs) -> anyhow::Result<u8> {
    let conflicts = if args.manifest.is_empty() {
        merge(&args.inputs, &args.out, std::iter::empty())?
    } else {
        let manifest_args = crate::cli::ManifestArgs {
            manifests: args.manifest.clone(),
            max_requests: u64::MAX,
            run_id: args.run_id.clone(),
        };
        let (manifests, _) = crate::commands::load_valid(&manifest_args)?;
        let order = crate::expand::expand(&manifests, args.run_id.as_deref())
            .flatten()
            .map(|r| r.id);
        merge(&args.inputs, &args.out, order)?
    };
    for c in &conflicts {
        tracing::error!(
            request_id = %c.request_id,
            "request {} has two task ids: `{}` (in `{}`, kept) and `{}` (in `{}`); it was submitted twice and both tasks may be billed",
            c.request_id,
            c.kept.0,
            c.kept.1.display(),
            c.other.0,
            c.other.1.display()
        );
    }
    println!(
        "merged {} files into {}{}",
        args.inputs.len(),
        args.out.display(),
        if conflicts.is_empty() {
            String::new()
        } else {
            format!("; {} conflicting task ids", conflicts.len())
        }
    );
    Ok(if conflicts.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}
