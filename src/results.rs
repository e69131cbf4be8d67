//! The results CSV's schema (SPEC §4), shared by the journal, `merge` and `collect`: the columns,
//! the statuses a request can have, which server a row came from, how a request's row is
//! rendered, and the strict reader every results file is read with.
//!
//! A row has three kinds of columns:
//! - **outcome** columns (`request_id`, `status`, `task_id`, `sub_task_ids`, `attempts`,
//!   `http_status`, `code`, `message`, `submitted_at`, `elapsed_ms`): what happened, written once
//!   and only ever replaced by a newer outcome of the same request;
//! - **descriptive** columns (`job`, `kind`, the request's parameters, `var.*`, `meta.*`): what the
//!   manifest says about the request. They cost nothing to change, so they are rendered again from
//!   the current manifest whenever a run meets the request (a fixed SKU caption shows up);
//! - any other column (one a person added in a spreadsheet) is kept as it is.
//!
//! **Which server.** A row written against the simulator (`run --simulate`, or `simulate` reached
//! through `--base-url`) says so: its `message` starts with [`SIM_MARK`], and its task id (if any)
//! has the simulator's self-checking shape. A run never takes a row of the other server for its
//! own (see `journal`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use crate::api::Kind;
use crate::expand::{Body, ImageRef, Request};
use crate::manifest::{Field, Manifest, Source};

/// The leading columns, in order (SPEC §4).
pub const LEADING: [&str; 12] = [
    "request_id",
    "job",
    "kind",
    "status",
    "task_id",
    "sub_task_ids",
    "attempts",
    "http_status",
    "code",
    "message",
    "submitted_at",
    "elapsed_ms",
];

/// The leading columns that record an outcome (all but `job` and `kind`).
pub const OUTCOME: [&str; 10] = [
    "request_id",
    "status",
    "task_id",
    "sub_task_ids",
    "attempts",
    "http_status",
    "code",
    "message",
    "submitted_at",
    "elapsed_ms",
];

/// Starts the `message` of every row written against the simulator.
pub const SIM_MARK: &str = "(simulator)";

/// A request's status in the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The API returned a task id.
    Submitted,
    /// The API refused the request; not retried.
    Rejected,
    /// Transient errors outlasted `--max-attempts`, or no attempt could be made.
    Failed,
    /// Sent, no answer: the task may exist.
    Unknown,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Submitted,
        Status::Rejected,
        Status::Failed,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
        }
    }

    /// Parse a status as written, or as a spreadsheet may have re-saved it (`Submitted`, ` failed `).
    pub fn parse(s: &str) -> Option<Status> {
        let s = s.trim();
        Status::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s))
    }
}

/// The server a row's outcome came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// HiDream's API (the real hosts, or any proxy in front of them).
    Api,
    /// hidream-batch's simulator.
    Simulator,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Api => "api",
            World::Simulator => "simulator",
        }
    }

    pub fn parse(s: &str) -> Option<World> {
        match s {
            "api" => Some(World::Api),
            "simulator" | "sim" => Some(World::Simulator),
            _ => None,
        }
    }

    /// The world of a row, from its task id and message.
    pub fn of_row(task_id: &str, message: &str) -> World {
        if message.starts_with(SIM_MARK) || crate::sim::is_task_id(task_id) {
            World::Simulator
        } else {
            World::Api
        }
    }

    /// A row's message as this world writes it.
    pub fn mark<'a>(self, message: &'a str) -> Cow<'a, str> {
        match self {
            World::Api => message.into(),
            World::Simulator if message.is_empty() => SIM_MARK.into(),
            World::Simulator => format!("{SIM_MARK} {message}").into(),
        }
    }
}

/// The results header of a run: leading columns, parameters, `var.*`, `meta.*` (over all
/// manifests), then every column of the existing file not among them (another manifest's
/// variables, a column someone added), so that nothing already in the file is lost.
pub fn header(manifests: &[Manifest], existing: &[String]) -> Vec<String> {
    let mut h: Vec<String> = LEADING.iter().map(|s| s.to_string()).collect();
    h.extend(Field::ALL.iter().map(|f| f.name().to_string()));
    let mut vars: Vec<&String> = Vec::new();
    let mut meta: Vec<&String> = Vec::new();
    for m in manifests {
        let (v, me): (Vec<&String>, Vec<&String>) = match &m.source {
            Source::Yaml(jobs) => (
                jobs.iter().flat_map(|j| j.info.vars.iter()).collect(),
                jobs.iter().flat_map(|j| j.info.meta.iter()).collect(),
            ),
            Source::Csv(c) => (Vec::new(), c.meta_names().iter().collect()),
        };
        for n in v {
            if !vars.contains(&n) {
                vars.push(n);
            }
        }
        for n in me {
            if !meta.contains(&n) {
                meta.push(n);
            }
        }
    }
    h.extend(vars.iter().map(|v| format!("var.{v}")));
    h.extend(meta.iter().map(|m| format!("meta.{m}")));
    for c in existing {
        if !h.contains(c) {
            h.push(c.clone());
        }
    }
    h
}

/// A request's parameters as shown in the results: never base64.
pub fn params(body: &Body) -> [Cow<'_, str>; 12] {
    fn show(r: &ImageRef) -> Cow<'_, str> {
        match r {
            ImageRef::Inline(d) => format!("(inline base64, {} bytes)", d.len()).into(),
            other => other.shown().into(),
        }
    }
    fn num(n: Option<i64>) -> Cow<'static, str> {
        n.map(|n| n.to_string().into()).unwrap_or_default()
    }
    fn opt(s: &Option<String>) -> Cow<'_, str> {
        s.as_deref().unwrap_or_default().into()
    }
    let mut p: [Cow<'_, str>; 12] = Default::default();
    let mut set = |f: Field, v| {
        let i = Field::ALL.iter().position(|x| *x == f).expect("field");
        p[i] = v;
    };
    match body {
        Body::Txt2Img(b) => {
            set(Field::Prompt, b.prompt.as_str().into());
            set(Field::NegativePrompt, opt(&b.negative_prompt));
            set(Field::ImgCount, num(b.img_count));
            set(Field::Version, opt(&b.version));
            set(Field::Resolution, opt(&b.resolution));
            set(Field::NotifyUrl, opt(&b.notify_url));
        }
        Body::Model(b) => {
            set(Field::Image, show(&b.image));
            set(Field::Mask, b.mask.as_ref().map(show).unwrap_or_default());
            if let Some(t) = &b.template {
                set(Field::HumanTemplateId, t.human_template_id.as_str().into());
                set(Field::SceneTemplateId, t.scene_template_id.as_str().into());
                set(
                    Field::CustomHumanTemplate,
                    t.custom_human_template
                        .map(|c| c.to_string().into())
                        .unwrap_or_default(),
                );
            }
            set(Field::Prompt, opt(&b.prompt));
            set(Field::ImageCount, num(b.image_count));
            set(Field::NotifyUrl, opt(&b.notify_url));
        }
    }
    p
}

/// The outcome columns of a row, as text.
#[derive(Debug, Clone, Default)]
pub struct OutcomeCols<'a> {
    pub status: &'a str,
    pub task_id: &'a str,
    pub sub_task_ids: Cow<'a, str>,
    pub attempts: Cow<'a, str>,
    pub http_status: Cow<'a, str>,
    pub code: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub submitted_at: &'a str,
    pub elapsed_ms: Cow<'a, str>,
}

/// Renders rows aligned with one header (which starts with [`LEADING`], then the parameters).
#[derive(Debug)]
pub struct Rows {
    width: usize,
    /// First column of the parameters.
    params: usize,
    /// Column of each `var.<name>` and `meta.<name>`, by the bare name.
    vars: HashMap<String, usize>,
    meta: HashMap<String, usize>,
    /// Every `var.*` and `meta.*` column (blanked before a request's own values are set).
    sweep: Vec<usize>,
}

impl Rows {
    /// For a header that starts with [`LEADING`] and the parameters (as [`header`] makes).
    pub fn new(header: &[String]) -> Rows {
        let by_prefix = |prefix: &str| -> HashMap<String, usize> {
            header
                .iter()
                .enumerate()
                .filter_map(|(i, h)| Some((h.strip_prefix(prefix)?.to_string(), i)))
                .collect()
        };
        let vars = by_prefix("var.");
        let meta = by_prefix("meta.");
        let sweep = vars.values().chain(meta.values()).copied().collect();
        Rows {
            width: header.len(),
            params: LEADING.len(),
            vars,
            meta,
            sweep,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The column of a leading column (the header starts with them, in order).
    fn col(name: &str) -> usize {
        LEADING
            .iter()
            .position(|c| *c == name)
            .expect("a leading column")
    }

    /// A new row: the request described, with these outcome columns.
    pub fn row<'a>(&self, r: &'a Request, o: OutcomeCols<'a>) -> Vec<Cow<'a, str>> {
        let mut row: Vec<Cow<'a, str>> = vec![Cow::Borrowed(""); self.width];
        self.set_outcome(&mut row, r.id.to_string().into(), o);
        self.describe(&mut row, r);
        row
    }

    /// Put the outcome columns into `row`.
    pub fn set_outcome<'a>(&self, row: &mut [Cow<'a, str>], id: Cow<'a, str>, o: OutcomeCols<'a>) {
        row[Self::col("request_id")] = id;
        row[Self::col("status")] = o.status.into();
        row[Self::col("task_id")] = o.task_id.into();
        row[Self::col("sub_task_ids")] = o.sub_task_ids;
        row[Self::col("attempts")] = o.attempts;
        row[Self::col("http_status")] = o.http_status;
        row[Self::col("code")] = o.code;
        row[Self::col("message")] = match o.message {
            Cow::Borrowed(m) => crate::logging::safe(m),
            Cow::Owned(m) => crate::logging::safe(&m).into_owned().into(),
        };
        row[Self::col("submitted_at")] = o.submitted_at.into();
        row[Self::col("elapsed_ms")] = o.elapsed_ms;
    }

    /// Put a job and kind into `row` (for a request this run does not know: what its log entry
    /// says).
    pub fn set_job<'a>(&self, row: &mut [Cow<'a, str>], job: &'a str, kind: Option<Kind>) {
        row[Self::col("job")] = job.into();
        row[Self::col("kind")] = kind.map_or("", |k| k.as_str()).into();
    }

    /// Put the descriptive columns of `r` into `row`: job, kind, parameters, and its own `var.*`
    /// and `meta.*` values (the other sweep columns are blank: they belong to other requests).
    pub fn describe<'a>(&self, row: &mut [Cow<'a, str>], r: &'a Request) {
        row[Self::col("job")] = r.job.id.as_str().into();
        row[Self::col("kind")] = r.body.kind().as_str().into();
        for (i, p) in params(&r.body).into_iter().enumerate() {
            row[self.params + i] = p;
        }
        for &i in &self.sweep {
            row[i] = Cow::Borrowed("");
        }
        for (name, value) in r.job.vars.iter().zip(&r.vars) {
            if let Some(&i) = self.vars.get(name.as_str()) {
                row[i] = Cow::Borrowed(value);
            }
        }
        for (name, value) in r.job.meta.iter().zip(&r.meta) {
            if let Some(&i) = self.meta.get(name.as_str()) {
                row[i] = Cow::Borrowed(value);
            }
        }
    }
}

/// Why a results file cannot be read completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// 1-based line (0: the file as a whole).
    pub line: u64,
    pub what: String,
}

/// One row of a results file as read: where it is and what it says.
#[derive(Debug)]
pub struct Row {
    pub line: u64,
    /// Byte offset and length in the file (its line end included).
    pub offset: u64,
    pub len: u64,
    pub record: csv::StringRecord,
    pub id: uuid::Uuid,
    pub status: Status,
}

/// What a strict read yields: rows, or a final line torn by a crash (its fields so far, for the
/// caller to excuse if the write-ahead log still holds its request).
#[derive(Debug)]
pub enum Item {
    Row(Row),
    Torn {
        line: u64,
        record: csv::StringRecord,
    },
}

/// Reads a results file strictly: UTF-8, every row with the header's number of fields, a request
/// id and a known status, the [`LEADING`] columns present. Anything else is an [`Unreadable`] with
/// its line, never a row skipped. The one thing it does not decide is a torn final line (no line
/// end, too few fields or no status): it is returned as [`Item::Torn`].
pub struct Reader<R: Read> {
    csv: csv::Reader<R>,
    header: Vec<String>,
    id_col: usize,
    status_col: usize,
    /// The file's length, and whether it ends with a line end (a final line without one may be
    /// torn).
    len: u64,
    ends_with_newline: bool,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Start reading a file of `len` bytes; `ends_with_newline` says whether its last byte is a
    /// line end.
    pub fn new(input: R, len: u64, ends_with_newline: bool) -> Result<Reader<R>, Unreadable> {
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let header: Vec<String> = match csv.headers() {
            Ok(h) => h.iter().map(|s| s.trim().to_string()).collect(),
            Err(e) => {
                return Err(Unreadable {
                    line: 1,
                    what: describe_error(&e),
                });
            }
        };
        let mut seen = std::collections::HashSet::new();
        for h in &header {
            if !seen.insert(h.as_str()) {
                return Err(Unreadable {
                    line: 1,
                    what: format!("the header names the column `{h}` twice"),
                });
            }
        }
        let missing: Vec<&str> = LEADING
            .iter()
            .copied()
            .filter(|c| !header.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            return Err(Unreadable {
                line: 1,
                what: format!(
                    "the header lacks the column{} `{}` (a results file starts with {})",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join("`, `"),
                    LEADING.join(", ")
                ),
            });
        }
        let col = |name: &str| header.iter().position(|h| h == name).expect("checked");
        Ok(Reader {
            id_col: col("request_id"),
            status_col: col("status"),
            csv,
            header,
            len,
            ends_with_newline,
            done: false,
        })
    }

    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The next row, a torn final line, or what makes the file unreadable; `None` at the end.
    pub fn next_item(&mut self) -> Option<Result<Item, Unreadable>> {
        if self.done {
            return None;
        }
        let offset = self.csv.position().byte();
        let mut record = csv::StringRecord::new();
        let more = match self.csv.read_record(&mut record) {
            Ok(more) => more,
            Err(e) => {
                self.done = true;
                let line = e.position().map_or(0, |p| p.line());
                return Some(Err(Unreadable {
                    line,
                    what: describe_error(&e),
                }));
            }
        };
        if !more {
            self.done = true;
            return None;
        }
        let line = record.position().map_or(0, |p| p.line());
        let end = self.csv.position().byte();
        let last = end >= self.len;
        let fail = |what: String| Some(Err(Unreadable { line, what }));
        let torn = |record: csv::StringRecord| Some(Ok(Item::Torn { line, record }));
        if record.len() != self.header.len() {
            if last && !self.ends_with_newline && record.len() < self.header.len() {
                self.done = true;
                return torn(record);
            }
            return fail(format!(
                "the row has {} fields but the header has {} (a comma typed into a cell, or a cell pasted across columns?)",
                record.len(),
                self.header.len()
            ));
        }
        let Some(status) = Status::parse(&record[self.status_col]) else {
            if last && !self.ends_with_newline {
                self.done = true;
                return torn(record);
            }
            return fail(format!(
                "the status `{}` is not one of submitted, rejected, failed, unknown",
                crate::logging::safe(&record[self.status_col])
            ));
        };
        let raw_id = record[self.id_col].trim();
        let Ok(id) = uuid::Uuid::parse_str(raw_id) else {
            return fail(format!(
                "`{}` is not a request id",
                crate::logging::safe(raw_id)
            ));
        };
        Some(Ok(Item::Row(Row {
            line,
            offset,
            len: end - offset,
            record,
            id,
            status,
        })))
    }
}

impl Reader<std::io::BufReader<std::fs::File>> {
    /// Start reading a results file (from its start, whatever the handle's position).
    pub fn open(
        file: &std::fs::File,
    ) -> std::io::Result<Result<Reader<std::io::BufReader<std::fs::File>>, Unreadable>> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let len = file.metadata()?.len();
        let mut last = [0u8];
        if len > 0 {
            file.read_exact_at(&mut last, len - 1)?;
        }
        let mut input = file.try_clone()?;
        input.seek(SeekFrom::Start(0))?;
        let input = std::io::BufReader::with_capacity(256 * 1024, input);
        Ok(Reader::new(input, len, matches!(last[0], b'\n' | b'\r')))
    }
}

fn describe_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "the text is not UTF-8 (was the file re-saved in another encoding? save it as \"CSV UTF-8\")"
                .to_string()
        }
        csv::ErrorKind::Io(io) => format!("cannot read it: {io}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6b1f3c1e-9a4d-5e2b-8c7f-0d1a2b3c4d5e";

    fn items(text: &str) -> Vec<Result<String, Unreadable>> {
        let header = LEADING.join(",");
        let text = format!("{header}\n{text}");
        let mut r = Reader::new(text.as_bytes(), text.len() as u64, text.ends_with('\n')).unwrap();
        std::iter::from_fn(|| r.next_item())
            .map(|i| {
                i.map(|i| match i {
                    Item::Row(r) => format!("row {} {}", r.line, r.status.as_str()),
                    Item::Torn { line, .. } => format!("torn {line}"),
                })
            })
            .collect()
    }

    fn row(status: &str) -> String {
        format!("{ID},j,txt2img,{status},t,,1,200,0,,2026-12-01T00:00:00.000Z,5")
    }

    #[test]
    fn a_short_last_line_without_its_end_is_torn_anything_else_unreadable() {
        let good = row("submitted");
        assert_eq!(items(&format!("{good}\n")), [Ok("row 2 submitted".into())]);
        // A complete last row without its line end is a row.
        assert_eq!(items(&good), [Ok("row 2 submitted".into())]);
        // Cut short at the end of the file: torn (the caller decides).
        let cut = &good[..50];
        assert_eq!(
            items(&format!("{good}\n{cut}")),
            [Ok("row 2 submitted".into()), Ok("torn 3".into())]
        );
        // The same short row with its line end, or before another row: unreadable.
        assert_eq!(items(&format!("{cut}\n"))[0].as_ref().unwrap_err().line, 2);
        assert_eq!(
            items(&format!("{cut}\n{good}\n"))[0]
                .as_ref()
                .unwrap_err()
                .line,
            2
        );
        // Statuses as a spreadsheet may write them.
        assert_eq!(items(&row(" Failed ")), [Ok("row 2 failed".into())]);
        let bad = items(&format!("{}\n", row("done")));
        assert!(bad[0].as_ref().unwrap_err().what.contains("`done`"));
        let no_id = items("x,j,txt2img,failed,,,1,,,,,\n");
        assert!(
            no_id[0]
                .as_ref()
                .unwrap_err()
                .what
                .contains("not a request id")
        );
    }

    #[test]
    fn the_header_must_name_every_leading_column_once() {
        let missing = Reader::new(&b"request_id,status\n"[..], 18, true)
            .err()
            .unwrap();
        assert!(missing.what.contains("`job`"), "{}", missing.what);
        let twice = format!("{},status\n", LEADING.join(","));
        let err = Reader::new(twice.as_bytes(), twice.len() as u64, true)
            .err()
            .unwrap();
        assert!(err.what.contains("twice"));
    }

    #[test]
    fn a_world_is_told_by_the_mark_or_the_task_id() {
        assert_eq!(World::of_row("", "(simulator) HTTP 500"), World::Simulator);
        assert_eq!(World::of_row("", "HTTP 500"), World::Api);
        assert_eq!(
            World::of_row("3fe836e2-e1ce-11ee-975a-76ad3c0ace6b", ""),
            World::Api
        );
        assert_eq!(World::Simulator.mark(""), SIM_MARK);
        assert_eq!(World::Simulator.mark("x"), "(simulator) x");
        assert_eq!(World::Api.mark("x"), "x");
    }
}
