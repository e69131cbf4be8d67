//! `merge`: combine results CSVs (typically the shards of one manifest) into one.
//!
//! For each request id the latest row wins (by `submitted_at`; on a tie, the later file). Two rows
//! of one request with different task ids mean the request was submitted twice and both tasks may
//! be billed: that is reported, never hidden, and the merge exits 1. Columns are the union of the
//! inputs' headers (first file's order, new columns appended). Like the journal, rows stay on disk:
//! only an index (id → file, offset, time) is held.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::cli::MergeArgs;
use crate::exit;

struct Pick {
    file: usize,
    offset: u64,
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
        let mut reader = open(path)?;
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| exit::invalid(format!("`{}`: {e}", path.display())))?
            .iter()
            .map(str::to_string)
            .collect();
        let col = |name: &str| header.iter().position(|h| h == name);
        let (Some(id_col), Some(task_col), Some(time_col)) =
            (col("request_id"), col("task_id"), col("submitted_at"))
        else {
            return Err(exit::invalid(format!(
                "`{}` is not a hidream-batch results file",
                path.display()
            )));
        };
        for h in &header {
            if !union.contains(h) {
                union.push(h.clone());
            }
        }
        let mut record = csv::StringRecord::new();
        loop {
            let offset = reader.position().byte();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(exit::invalid(format!("`{}`: {e}", path.display()))),
            }
            let Ok(id) = Uuid::parse_str(record.get(id_col).unwrap_or("")) else {
                continue;
            };
            let task_id = record.get(task_col).unwrap_or("").to_string();
            let submitted_at = record.get(time_col).unwrap_or("").to_string();
            let new = Pick {
                file,
                offset,
                submitted_at,
                task_id,
                first_seen: seen,
            };
            seen += 1;
            match index.get_mut(&id) {
                None => {
                    index.insert(id, new);
                }
                Some(old) => {
                    let newer = new.submitted_at >= old.submitted_at;
                    if !new.task_id.is_empty()
                        && !old.task_id.is_empty()
                        && new.task_id != old.task_id
                    {
                        let (kept, other) = if newer { (&new, &*old) } else { (&*old, &new) };
                        conflicts.push(Conflict {
                            request_id: id,
                            kept: (kept.task_id.clone(), inputs[kept.file].clone()),
                            other: (other.task_id.clone(), inputs[other.file].clone()),
                        });
                    }
                    if newer {
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
