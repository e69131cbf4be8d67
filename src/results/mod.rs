//! The results CSV's schema (README "Results CSV"), shared by the journal, `merge` and `collect`: the columns,
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
//! **Cells from outside.** Text the API sent is written so that a spreadsheet cannot run it as a
//! formula: a `message` through [`no_formula`] (control characters escaped too); a task id and
//! the sub-task ids, which are read back (resume, `merge`, `collect`), through the reversible
//! [`cell_escape`], and read with [`cell_unescape`]. An id with control characters never gets
//! here: such an answer is `unknown` (see `retry::classify`).
//!
//! **Which server.** A row written against the simulator (`run --simulate`, or `simulate` reached
//! through `--base-url`) says so: its `message` starts with [`SIM_MARK`], and its task id (if any)
//! has the simulator's self-checking shape. A run never takes a row of the other server for its
//! own (see `journal`).

mod reader;

use std::borrow::Cow;
use std::collections::HashMap;

pub(crate) use reader::{Item, Reader, Unreadable};

use crate::api::Kind;
use crate::body::{Body, ImageRef};
use crate::expand::Request;
use crate::manifest::{Field, Manifest, Source};

/// The leading columns, in order.
pub(crate) const LEADING: [&str; 12] = [
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

/// Starts the `message` of every row written against the simulator.
pub(crate) const SIM_MARK: &str = "(simulator)";

/// A request's status in the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Status {
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
    pub(crate) const ALL: [Status; 4] = [
        Status::Submitted,
        Status::Rejected,
        Status::Failed,
        Status::Unknown,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Unknown => "unknown",
        }
    }

    /// Parse a status as written, or as a spreadsheet may have re-saved it (`Submitted`, ` failed `).
    pub(crate) fn parse(s: &str) -> Option<Status> {
        let s = s.trim();
        Status::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s))
    }
}

/// The server a row's outcome came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum World {
    /// HiDream's API (the real hosts, or any proxy in front of them).
    Api,
    /// hidream-batch's simulator.
    Simulator,
}

impl World {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            World::Api => "api",
            World::Simulator => "simulator",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<World> {
        match s {
            "api" => Some(World::Api),
            "simulator" | "sim" => Some(World::Simulator),
            _ => None,
        }
    }

    /// The world of a row, from its task id and message.
    pub(crate) fn of_row(task_id: &str, message: &str) -> World {
        if message.starts_with(SIM_MARK) || crate::sim::is_task_id(task_id) {
            World::Simulator
        } else {
            World::Api
        }
    }

    /// A row's message as this world writes it.
    pub(crate) fn mark<'a>(self, message: &'a str) -> Cow<'a, str> {
        match self {
            World::Api => message.into(),
            World::Simulator if message.is_empty() => SIM_MARK.into(),
            World::Simulator => format!("{SIM_MARK} {message}").into(),
        }
    }
}

/// The first characters that make a spreadsheet run a cell as a formula.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A cell of outside text (an API message, an image URL) as written to `results.csv` and
/// `images.csv`: one that a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`,
/// a tab or a carriage return) gets a leading `'`, which a spreadsheet hides and shows the text
/// as it was (OWASP's advice on CSV injection). Already guarded text is left as it is. For text
/// that is read back, use [`cell_escape`] instead.
pub(crate) fn no_formula(text: &str) -> Cow<'_, str> {
    if text.starts_with(FORMULA_START) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// An id from the API (a `task_id`, the `sub_task_ids`, an `images.csv` `sub_task_id`) as written
/// to a cell that is read back: like [`no_formula`], but reversibly — text that starts with a
/// formula character **or with `'`** gets one more `'`, so [`cell_unescape`] gives back exactly
/// what was written, a leading `'` of the id itself included.
pub(crate) fn cell_escape<'a>(id: impl Into<Cow<'a, str>>) -> Cow<'a, str> {
    let id = id.into();
    if id.starts_with(FORMULA_START) || id.starts_with('\'') {
        format!("'{id}").into()
    } else {
        id
    }
}

/// The id in a cell written by [`cell_escape`]: one leading `'` is taken away when the text after
/// it starts with a formula character or `'` (as only an escaped cell does); any other text is
/// the id as it is.
pub(crate) fn cell_unescape(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_START) || rest.starts_with('\'') => rest,
        _ => cell,
    }
}

/// Outside text as a cell: control characters escaped ([`crate::logging::safe`]), and never the
/// start of a formula ([`no_formula`]). Borrowed text that needs neither stays borrowed.
fn outside(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(t) => match crate::logging::safe(t) {
            Cow::Borrowed(t) => no_formula(t),
            Cow::Owned(t) => no_formula(&t).into_owned().into(),
        },
        Cow::Owned(t) => no_formula(&crate::logging::safe(&t)).into_owned().into(),
    }
}

/// The results header of a run: leading columns, parameters, `var.*`, `meta.*` (over all
/// manifests), then every column of the existing file not among them (another manifest's
/// variables, a column someone added), so that nothing already in the file is lost.
pub(crate) fn header(manifests: &[Manifest], existing: &[String]) -> Vec<String> {
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
pub(crate) fn params(body: &Body) -> [Cow<'_, str>; 12] {
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
pub(crate) struct OutcomeCols<'a> {
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
pub(crate) struct Rows {
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
    pub(crate) fn new(header: &[String]) -> Rows {
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

    /// The column of a leading column (the header starts with them, in order).
    fn col(name: &str) -> usize {
        LEADING
            .iter()
            .position(|c| *c == name)
            .expect("a leading column")
    }

    /// A new row: the request described, with these outcome columns.
    pub(crate) fn row<'a>(&self, r: &'a Request, o: OutcomeCols<'a>) -> Vec<Cow<'a, str>> {
        let mut row: Vec<Cow<'a, str>> = vec![Cow::Borrowed(""); self.width];
        self.set_outcome(&mut row, r.id.to_string().into(), o);
        self.describe(&mut row, r);
        row
    }

    /// Put the outcome columns into `row`.
    pub(crate) fn set_outcome<'a>(
        &self,
        row: &mut [Cow<'a, str>],
        id: Cow<'a, str>,
        o: OutcomeCols<'a>,
    ) {
        row[Self::col("request_id")] = id;
        row[Self::col("status")] = o.status.into();
        row[Self::col("task_id")] = cell_escape(o.task_id);
        row[Self::col("sub_task_ids")] = cell_escape(o.sub_task_ids);
        row[Self::col("attempts")] = o.attempts;
        row[Self::col("http_status")] = o.http_status;
        row[Self::col("code")] = o.code;
        row[Self::col("message")] = outside(o.message);
        row[Self::col("submitted_at")] = o.submitted_at.into();
        row[Self::col("elapsed_ms")] = o.elapsed_ms;
    }

    /// Put a job and kind into `row` (for a request this run does not know: what its log entry
    /// says).
    pub(crate) fn set_job<'a>(&self, row: &mut [Cow<'a, str>], job: &'a str, kind: Option<Kind>) {
        row[Self::col("job")] = job.into();
        row[Self::col("kind")] = kind.map_or("", |k| k.as_str()).into();
    }

    /// Put the descriptive columns of `r` into `row`: job, kind, parameters, and its own `var.*`
    /// and `meta.*` values (the other sweep columns are blank: they belong to other requests).
    pub(crate) fn describe<'a>(&self, row: &mut [Cow<'a, str>], r: &'a Request) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_cannot_start_a_formula() {
        assert_eq!(no_formula("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        for risky in ["+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(no_formula(risky).starts_with('\''), "{risky}");
        }
        assert_eq!(no_formula("积分不足"), "积分不足");
        assert_eq!(no_formula(""), "");
        assert_eq!(
            no_formula(&no_formula("=1")),
            "'=1",
            "guarding twice changes nothing"
        );
    }

    #[test]
    fn an_id_cell_cannot_start_a_formula_and_reads_back_as_written() {
        assert_eq!(cell_escape("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(
            cell_escape("'quoted"),
            "''quoted",
            "a leading quote is kept"
        );
        assert_eq!(cell_escape("3fe836e2-e1ce"), "3fe836e2-e1ce");
        assert_eq!(cell_escape("-"), "'-");
        for id in [
            "=1", "+1", "-1", "@A1", "\tx", "\rx", "'", "'x", "''=1", "'=1", "a'b", "", "t-1",
            "任务",
        ] {
            assert_eq!(cell_unescape(&cell_escape(id)), id, "{id:?}");
            assert!(!cell_escape(id).starts_with(FORMULA_START), "{id:?}");
        }
        // A cell not written by `cell_escape` (typed by hand) is read as it is.
        assert_eq!(cell_unescape("'abc"), "'abc");
        assert_eq!(cell_unescape("abc"), "abc");
        assert_eq!(cell_unescape("'"), "'");
    }

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
