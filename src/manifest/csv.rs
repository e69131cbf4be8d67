//! CSV files: CSV manifests (one request per row; README "Manifest reference") and the `for_each` tables of YAML jobs.
//!
//! Both are read the way spreadsheets export them: UTF-8 with or without a BOM, quoted fields with
//! newlines, CRLF line ends. Neither is held in memory: rows are streamed from a private copy taken
//! when the manifest is loaded ([`Snapshot`]) each time the manifest is expanded, so an edit made
//! during a run is never sent. Non-UTF-8 input (e.g. a GBK export) is an error naming the line,
//! not mojibake.

use std::path::Path;
use std::sync::Arc;

use csv::StringRecord;

use super::snapshot::{Snapshot, SnapshotReader};
use super::{Field, FieldSet, JobInfo, Manifest, Source, Template};
use crate::api::Kind;
use crate::digest::Digests;
use crate::problem::{At, Problem};

/// A column of a CSV manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Kind,
    Id,
    Repeat,
    Field(Field),
    Meta(String),
}

/// A CSV manifest: its header, and the copy its rows are read from when expanded.
#[derive(Debug)]
pub struct CsvManifest {
    columns: Vec<Column>,
    meta: Vec<String>,
    snapshot: Snapshot,
    digests: Arc<Digests>,
}

/// One row of a CSV manifest, ready to expand.
#[derive(Debug)]
pub struct Row {
    /// The line the row starts on.
    pub line: u64,
    /// What the row's requests share (the row is its own job).
    pub info: Arc<JobInfo>,
    /// The row's non-empty API field cells, as literal templates.
    pub fields: FieldSet,
    /// The `repeat` cell: submissions of the row (at least 1; default 1).
    pub repeat: u32,
    /// The `meta.<name>` cells, in `info.meta` order.
    pub meta: Vec<Template>,
}

/// Start reading a CSV copy (the `csv` crate strips a UTF-8 BOM).
pub(crate) fn open(snapshot: &Snapshot) -> csv::Reader<SnapshotReader> {
    csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(snapshot.reader())
}

/// A CSV error as a message naming the line (and the column, for bad UTF-8); `line` turns the
/// reader's position into the line a person sees (see [`line_of`]).
pub(crate) fn describe(
    err: &csv::Error,
    headers: &[String],
    line: impl Fn(&csv::Position) -> u64,
) -> (Option<u64>, Option<String>, String) {
    match err.kind() {
        csv::ErrorKind::UnequalLengths { pos, len, .. } => (
            pos.as_ref().map(&line),
            None,
            format!(
                "the row has {len} fields but the header has {}",
                headers.len()
            ),
        ),
        csv::ErrorKind::Utf8 { pos, err } => (
            pos.as_ref().map(&line),
            headers.get(err.field()).cloned(),
            "the value is not valid UTF-8 (save the file as UTF-8, e.g. Excel's \"CSV UTF-8\")"
                .to_string(),
        ),
        _ => (None, None, err.to_string()),
    }
}

/// The header of a CSV as strings, or a message.
fn headers(reader: &mut csv::Reader<SnapshotReader>) -> Result<Vec<String>, String> {
    match reader.headers() {
        Ok(h) if h.iter().all(str::is_empty) => Err("the file has no header row".into()),
        Ok(h) => Ok(h.iter().map(|s| s.trim().to_string()).collect()),
        Err(e) => Err(format!(
            "header: {}",
            describe(&e, &[], csv::Position::line).2
        )),
    }
}

/// Copy and check a `for_each` CSV: it is a file, has a header and at least one row. Returns the
/// copy and the column names (the job's variables).
pub(crate) fn for_each_columns(dir: &Path, shown: &str) -> Result<(Snapshot, Vec<String>), String> {
    let path = dir.join(shown);
    let snapshot =
        Snapshot::take(&path).map_err(|e| super::snapshot::describe(shown, &path, &e))?;
    let mut reader = open(&snapshot);
    let columns = headers(&mut reader).map_err(|m| format!("`{shown}`: {m}"))?;
    let mut record = StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok((snapshot, columns)),
        Ok(false) => Err(format!(
            "`{shown}` has no rows, so the job would expand to nothing"
        )),
        Err(e) => {
            let (line, column, m) = describe(&e, &columns, |p| line_of(&reader, p));
            let column = column
                .map(|c| format!(", column `{c}`"))
                .unwrap_or_default();
            Err(format!("`{shown}` line {}{column}: {m}", line.unwrap_or(0)))
        }
    }
}

/// A bad row: its line, the column when known, and what is wrong.
pub(crate) type RowError = (u64, Option<String>, String);

/// Stream the rows of a CSV copy: `(line, values)` or what is wrong with a row.
pub(crate) fn rows(
    snapshot: &Snapshot,
) -> impl Iterator<Item = Result<(u64, Vec<Arc<str>>), RowError>> + use<> {
    let mut reader = open(snapshot);
    let names: Vec<String> = reader
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut record = StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => {
                let line = record.position().map_or(0, |p| line_of(&reader, p));
                Some(Ok((line, record.iter().map(Arc::from).collect())))
            }
            Ok(false) => None,
            Err(e) => {
                let (line, column, m) = describe(&e, &names, |p| line_of(&reader, p));
                // An I/O error ends the file; a bad row is reported and skipped.
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) {
                    failed = true;
                }
                Some(Err((line.unwrap_or(0), column, m)))
            }
        }
    })
}

/// The line a record starts on, as a person sees it in the file. The CSV reader counts a line when
/// it consumes its `\n`; after a row ended with `\r\n` (Excel on Windows) it stops at the `\r`,
/// so the next record's position is still on the `\n`, one line too low.
fn line_of(reader: &csv::Reader<SnapshotReader>, p: &csv::Position) -> u64 {
    p.line() + u64::from(reader.get_ref().byte_at(p.byte()) == Some(b'\n'))
}

/// Count the data rows of a CSV copy.
pub(crate) fn count_rows(snapshot: &Snapshot) -> Result<u64, String> {
    let mut reader = open(snapshot);
    let mut record = csv::ByteRecord::new();
    let mut n = 0;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => n += 1,
            Ok(false) => return Ok(n),
            Err(e) if matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. }) => n += 1,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Load a CSV manifest: copy it, check its header; rows are checked as they are expanded.
pub fn load(path: &Path, digests: &Arc<Digests>) -> Result<Manifest, Vec<Problem>> {
    let file_problem = |m: String| vec![Problem::new(path, At::File, None, m)];
    let shown = path.display().to_string();
    let snapshot = Snapshot::take(path)
        .map_err(|e| file_problem(super::snapshot::describe(&shown, path, &e)))?;
    let mut reader = open(&snapshot);
    let names = headers(&mut reader).map_err(file_problem)?;
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    let mut meta = Vec::new();
    for name in &names {
        let column = match name.as_str() {
            "kind" => Column::Kind,
            "id" => Column::Id,
            "repeat" => Column::Repeat,
            other => match (Field::from_name(other), other.strip_prefix("meta.")) {
                (Some(f), _) => Column::Field(f),
                (None, Some(m)) if !m.is_empty() => {
                    meta.push(m.to_string());
                    Column::Meta(m.to_string())
                }
                _ => {
                    problems.push(Problem::new(
                        path,
                        At::File,
                        Some(other),
                        format!(
                            "unknown column `{other}` (columns: kind, id, repeat, the API fields {}, and meta.<name>)",
                            Field::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                    continue;
                }
            },
        };
        if columns.contains(&column) {
            problems.push(Problem::new(
                path,
                At::File,
                Some(name),
                format!("column `{name}` appears twice"),
            ));
        }
        columns.push(column);
    }
    if !columns.contains(&Column::Kind) {
        problems.push(Problem::new(
            path,
            At::File,
            Some("kind"),
            "the CSV manifest needs a `kind` column",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut record = StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err(file_problem("the CSV manifest has no rows".into())),
        Err(_) => {} // reported with its line when the rows are expanded
    }
    Ok(Manifest {
        path: path.to_path_buf(),
        dir: super::base_dir(path),
        name: super::stem(path).into(),
        source: Source::Csv(CsvManifest {
            columns,
            meta,
            snapshot,
            digests: digests.clone(),
        }),
    })
}

impl CsvManifest {
    /// The `meta.<name>` columns.
    pub fn meta_names(&self) -> &[String] {
        &self.meta
    }

    /// Number of rows, read from the file.
    pub fn count_rows(&self, manifest: &Manifest) -> Result<u64, Problem> {
        count_rows(&self.snapshot).map_err(|m| Problem::new(&manifest.path, At::File, None, m))
    }

    /// Requests the file expands to (each row's `repeat`), read from the file.
    pub fn count_requests(&self, manifest: &Manifest) -> Result<u64, Problem> {
        let at = self.columns.iter().position(|c| *c == Column::Repeat);
        let mut reader = open(&self.snapshot);
        let mut record = csv::ByteRecord::new();
        let mut n = 0u64;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {
                    let repeat = at
                        .and_then(|i| record.get(i))
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(1);
                    n += repeat.max(1);
                }
                Ok(false) => return Ok(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                    ) =>
                {
                    n += 1
                }
                Err(e) => return Err(Problem::new(&manifest.path, At::File, None, e.to_string())),
            }
        }
    }

    /// Stream the rows as ready-to-expand jobs, or the problems of each bad row.
    pub fn rows<'a>(
        &'a self,
        manifest: &'a Manifest,
    ) -> impl Iterator<Item = Result<Row, Vec<Problem>>> + 'a {
        rows(&self.snapshot).map(move |row| match row {
            Err((line, column, message)) => Err(vec![Problem::new(
                &manifest.path,
                At::CsvRow { line, job: None },
                column.as_deref(),
                message,
            )]),
            Ok((line, values)) => self.row(manifest, line, &values),
        })
    }

    fn row(
        &self,
        manifest: &Manifest,
        line: u64,
        values: &[Arc<str>],
    ) -> Result<Row, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut kind = None;
        let mut id = None;
        let mut repeat = 1;
        let mut set = Vec::new();
        let mut meta = Vec::new();
        for (column, value) in self.columns.iter().zip(values) {
            let value: &str = value;
            match column {
                Column::Kind => kind = Some(value.trim()),
                Column::Id if !value.trim().is_empty() => id = Some(value.trim()),
                Column::Repeat if !value.trim().is_empty() => match value.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => repeat = n,
                    _ => problems.push((
                        "repeat",
                        format!("`{value}` is not a whole number of at least 1"),
                    )),
                },
                Column::Field(f) if !value.is_empty() => set.push((*f, value)),
                Column::Meta(_) => meta.push(Template::literal(value)),
                _ => {}
            }
        }
        let job = id
            .map(str::to_string)
            .unwrap_or_else(|| format!("row-{line}"));
        let kind = match kind {
            Some("") | None => {
                problems.push((
                    "kind",
                    "the row has no `kind`: use `txt2img` or `model`".into(),
                ));
                None
            }
            Some(k) => {
                let parsed = Kind::parse(k);
                if parsed.is_none() {
                    problems.push((
                        "kind",
                        format!("unknown kind `{k}`: use `txt2img` or `model`"),
                    ));
                }
                parsed
            }
        };
        if let Some(i) = id.filter(|i| !super::valid_job_id(i)) {
            problems.push((
                "id",
                format!("`{i}` is not a valid job id (letters, digits, `_`, `.`, `-`)"),
            ));
        }
        let mut fields = FieldSet::default();
        if let Some(kind) = kind {
            for (f, value) in set {
                if !f.belongs_to(kind) {
                    problems.push((
                        f.name(),
                        format!("`{kind}` requests have no field `{}`", f.name()),
                    ));
                } else {
                    fields.template |= f.in_template();
                    fields.set(f, Template::literal(value));
                }
            }
        }
        if !problems.is_empty() || kind.is_none() {
            return Err(problems
                .into_iter()
                .map(|(field, m)| {
                    Problem::new(
                        &manifest.path,
                        At::CsvRow {
                            line,
                            job: Some(job.clone()),
                        },
                        Some(field),
                        m,
                    )
                })
                .collect());
        }
        Ok(Row {
            line,
            info: Arc::new(JobInfo {
                manifest: manifest.name.clone(),
                file: manifest.path.clone(),
                dir: manifest.dir.clone(),
                id_key: id.unwrap_or_default().to_string(),
                id: job,
                kind: kind.expect("checked above"),
                vars: Vec::new(),
                meta: self.meta.clone(),
                for_each: None,
                digests: self.digests.clone(),
            }),
            fields,
            repeat,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of the rows of `text`, bad rows included.
    fn lines(text: &str) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, text).unwrap();
        rows(&Snapshot::take(&path).unwrap())
            .map(|r| match r {
                Ok((line, _)) => line,
                Err((line, _, _)) => line,
            })
            .collect()
    }

    #[test]
    fn crlf_rows_are_on_the_lines_a_person_sees() {
        // A quoted value over two lines, a short row (an error), then a plain row.
        let lf = "kind,prompt\ntxt2img,a cat\ntxt2img,\"two\nlines\"\ntxt2img\ntxt2img,a dog\n";
        assert_eq!(lines(lf), [2, 3, 5, 6]);
        assert_eq!(
            lines(&lf.replace('\n', "\r\n")),
            [2, 3, 5, 6],
            "Excel on Windows"
        );
    }
}
