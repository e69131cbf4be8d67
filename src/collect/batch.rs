//! What `collect` knows about a batch: the submitted tasks of the results CSV, each with its
//! sub-tasks (one per image), merged with what an earlier `collect` recorded in `images.csv`.
//!
//! It exists so that the polling loop, `images.csv` and the contact sheet all read one model, and
//! so that a rerun can tell — without asking the API — which images are settled: done with their
//! file on disk, or failed, or refused (terminal: never retried silently). Only the owner of the
//! polling loop mutates it (no locks).
//!
//! Image files are named `DIR/<job>/<request_id>-<n>.<ext>`: `n` is the sub-task's index in the
//! `sub_task_ids` the API returned at submission (0-based), so a name never changes between runs.
//! Sub-tasks the API reports beyond that list get the next indices, in the order it reports them.
//! Task and sub-task ids go through `results::cell_escape` into `images.csv` and back through
//! `cell_unescape`, from `results.csv` alike: an id cannot start a formula, and reads back as sent.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;

use crate::api::{Kind, status};
use crate::exit;
use crate::results::cell_unescape;

/// The file extensions `collect` writes (from the image's content type), in the order a rerun
/// looks for an existing file.
pub(crate) const EXTENSIONS: [&str; 3] = ["png", "jpg", "webp"];

/// `images.csv` columns before `var.*` and `meta.*`.
pub(crate) const LEADING: [&str; 8] = [
    "request_id",
    "job",
    "task_id",
    "sub_task_id",
    "status",
    "url",
    "path",
    "message",
];

/// The status of a sub-task: the API's `task_status`, or not known yet (never answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubStatus {
    Unknown,
    Code(i64),
}

impl SubStatus {
    /// The name written to `images.csv` and shown on the page: queued, running, done, failed,
    /// refused; any other value as its number; `unknown` when the task was never answered.
    pub(crate) fn name(self) -> String {
        match self {
            SubStatus::Unknown => "unknown".into(),
            SubStatus::Code(status::QUEUED) => "queued".into(),
            SubStatus::Code(status::RUNNING) => "running".into(),
            SubStatus::Code(status::DONE) => "done".into(),
            SubStatus::Code(status::FAILED) => "failed".into(),
            SubStatus::Code(status::REFUSED) => "refused".into(),
            SubStatus::Code(other) => other.to_string(),
        }
    }

    /// The inverse of [`SubStatus::name`]; anything unreadable is `Unknown`.
    pub(crate) fn parse(s: &str) -> SubStatus {
        match s.trim() {
            "queued" => SubStatus::Code(status::QUEUED),
            "running" => SubStatus::Code(status::RUNNING),
            "done" => SubStatus::Code(status::DONE),
            "failed" => SubStatus::Code(status::FAILED),
            "refused" => SubStatus::Code(status::REFUSED),
            other => other
                .parse::<i64>()
                .map(SubStatus::Code)
                .unwrap_or(SubStatus::Unknown),
        }
    }

    pub(crate) fn is_done(self) -> bool {
        self == SubStatus::Code(status::DONE)
    }

    /// Failed or refused: terminal, recorded, never polled again.
    pub(crate) fn is_lost(self) -> bool {
        matches!(
            self,
            SubStatus::Code(status::FAILED) | SubStatus::Code(status::REFUSED)
        )
    }
}

/// One image of a task.
#[derive(Debug, Clone)]
pub(crate) struct Sub {
    pub id: String,
    /// `n` in the file name.
    pub index: usize,
    pub status: SubStatus,
    pub url: String,
    /// The image file, relative to DIR with `/` separators, once it is on disk.
    pub path: Option<String>,
    /// Why it failed or was refused (the API's `description`), or why it has no file.
    pub message: String,
    /// Downloaded by this invocation.
    pub downloaded_now: bool,
    /// Its download failed after every attempt: not tried again until the next `collect`.
    pub download_given_up: bool,
    /// The API's `task_completion` at the last answer (progress only; not recorded).
    pub completion: Option<f64>,
}

impl Sub {
    pub(super) fn new(id: String, index: usize) -> Sub {
        Sub {
            id,
            index,
            status: SubStatus::Unknown,
            url: String::new(),
            path: None,
            message: String::new(),
            downloaded_now: false,
            download_given_up: false,
            completion: None,
        }
    }

    /// Nothing more to do in this invocation: its file is on disk, it is failed or refused, or
    /// its download was given up.
    pub(crate) fn settled(&self) -> bool {
        self.status.is_lost()
            || (self.status.is_done() && (self.path.is_some() || self.download_given_up))
    }
}

/// One submitted request of the results.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub request_id: String,
    pub job: String,
    pub kind: Kind,
    pub task_id: String,
    /// The prompt, if the results have one (shown as a tooltip on the page).
    pub prompt: String,
    /// A model request's input (garment) photo as the results show it: a URL, or a path as the
    /// manifest wrote it; empty otherwise.
    pub image: String,
    /// A model request's `human_template_id` and `scene_template_id`; empty otherwise.
    pub templates: [String; 2],
    /// Aligned with [`Batch::vars`] and [`Batch::meta`].
    pub vars: Vec<String>,
    pub meta: Vec<String>,
    pub subs: Vec<Sub>,
    /// Why the last query failed, if it did.
    pub message: String,
    /// The API refused the query (`code != 0`, HTTP 4xx): not asked again until the next `collect`.
    pub query_given_up: bool,
}

impl Task {
    /// A task just submitted: its images are the sub-task ids the API returned, in that order
    /// (their indices name the files), as `load` reads them from its results row.
    pub(crate) fn submitted(
        request_id: String,
        job: String,
        kind: Kind,
        task_id: String,
        sub_task_ids: &[String],
    ) -> Task {
        Task {
            request_id,
            job,
            kind,
            task_id,
            prompt: String::new(),
            image: String::new(),
            templates: Default::default(),
            vars: Vec::new(),
            meta: Vec::new(),
            subs: sub_task_ids
                .iter()
                .enumerate()
                .map(|(n, s)| Sub::new(s.clone(), n))
                .collect(),
            message: String::new(),
            query_given_up: false,
        }
    }

    /// Whether it must be queried: some image is not settled — or, when nothing is downloaded,
    /// the task is not finished — or no image is known yet.
    pub(crate) fn needs_query(&self, downloads: bool) -> bool {
        !self.query_given_up
            && match downloads {
                true => self.subs.is_empty() || self.subs.iter().any(|s| !s.settled()),
                false => !self.finished(),
            }
    }

    /// Every image is in a terminal status (done, failed or refused): the API no longer counts
    /// the task as running.
    pub(crate) fn finished(&self) -> bool {
        !self.subs.is_empty()
            && self
                .subs
                .iter()
                .all(|s| s.status.is_done() || s.status.is_lost())
    }

    /// The next free index for a sub-task the API reports beyond the known ones.
    pub(crate) fn next_index(&self) -> usize {
        self.subs.iter().map(|s| s.index + 1).max().unwrap_or(0)
    }
}

/// The submitted tasks of a results CSV, in its row order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// `var.<name>` column names of the results, in their order.
    pub vars: Vec<String>,
    /// `meta.<name>` column names.
    pub meta: Vec<String>,
    pub tasks: Vec<Task>,
    /// Requests of the results without a task (rejected, failed, unknown): nothing to collect.
    pub without_task: u64,
}

/// A directory name for a job: job ids are `[A-Za-z0-9_.-]+` when the manifest was valid, but the
/// results CSV is only a file, so anything else is replaced rather than trusted as a path.
pub(crate) fn safe_name(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        format!("_{}", cleaned)
    } else {
        cleaned
    }
}

/// `<job>/<request_id>-<n>` relative to DIR, without the extension.
pub(crate) fn stem(job: &str, request_id: &str, index: usize) -> String {
    format!("{}/{}-{index}", safe_name(job), safe_name(request_id))
}

/// The image already on disk for this stem, as a path relative to DIR, if any.
pub(crate) fn existing(dir: &Path, stem: &str) -> Option<String> {
    EXTENSIONS.iter().find_map(|ext| {
        let rel = format!("{stem}.{ext}");
        std::fs::metadata(dir.join(&rel))
            .ok()
            .filter(|m| m.is_file() && m.len() > 0)
            .map(|_| rel)
    })
}

/// Read the results CSV (row by row, keeping only what collecting needs); what `DIR/images.csv`
/// recorded is merged in by `images_csv::merge`.
pub(crate) fn load(results: &Path) -> anyhow::Result<Batch> {
    let file = File::open(results).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            exit::invalid(format!(
                "the results `{}` do not exist: give the results CSV written by `run` with --results PATH",
                results.display()
            ))
        } else {
            exit::invalid(format!(
                "cannot read the results `{}`: {e}",
                results.display()
            ))
        }
    })?;
    read_results(file, results)
}

fn read_results(file: File, path: &Path) -> anyhow::Result<Batch> {
    let shown = path.display();
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| exit::invalid(format!("cannot read the results `{shown}`: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            exit::invalid(format!(
                "`{shown}` is not a results CSV of `run`: it has no `{name}` column"
            ))
        })
    };
    let (c_id, c_job, c_kind, c_status, c_task, c_subs) = (
        need("request_id")?,
        need("job")?,
        need("kind")?,
        need("status")?,
        need("task_id")?,
        need("sub_task_ids")?,
    );
    let c_prompt = col("prompt");
    let (c_image, c_human, c_scene) = (
        col("image"),
        col("human_template_id"),
        col("scene_template_id"),
    );
    let vars: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("var."))
        .map(|(i, h)| (i, h.clone()))
        .collect();
    let meta: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| h.starts_with("meta."))
        .map(|(i, h)| (i, h.clone()))
        .collect();

    // The latest row of a request wins (a results file being appended by a run may hold several).
    let mut rows: Vec<Option<Task>> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(exit::invalid(format!(
                    "cannot read the results `{shown}`: {e}"
                )));
            }
        }
        let get = |i: usize| record.get(i).unwrap_or("").to_string();
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let request_id = get(c_id);
        if request_id.is_empty() {
            continue;
        }
        let task_id = cell_unescape(record.get(c_task).unwrap_or("")).to_string();
        let task = if get(c_status) == "submitted" && !task_id.is_empty() {
            match Kind::parse(&get(c_kind)) {
                Some(kind) => Some(Task {
                    request_id: request_id.clone(),
                    job: get(c_job),
                    kind,
                    task_id,
                    prompt: c_prompt.map(get).unwrap_or_default(),
                    image: c_image.map(get).unwrap_or_default(),
                    templates: [c_human, c_scene].map(|c| c.map(get).unwrap_or_default()),
                    vars: vars.iter().map(|(i, _)| get(*i)).collect(),
                    meta: meta.iter().map(|(i, _)| get(*i)).collect(),
                    subs: cell_unescape(&get(c_subs))
                        .split(';')
                        .filter(|s| !s.trim().is_empty())
                        .enumerate()
                        .map(|(n, s)| Sub::new(s.trim().to_string(), n))
                        .collect(),
                    message: String::new(),
                    query_given_up: false,
                }),
                None => {
                    tracing::warn!(
                        "`{shown}` line {line}: unknown kind `{}`; request {} skipped",
                        crate::logging::safe(&get(c_kind)),
                        crate::logging::safe(&request_id)
                    );
                    None
                }
            }
        } else {
            None
        };
        match by_id.get(&request_id) {
            Some(&i) => rows[i] = task,
            None => {
                by_id.insert(request_id, rows.len());
                rows.push(task);
            }
        }
    }
    let total = rows.len() as u64;
    let tasks: Vec<Task> = rows.into_iter().flatten().collect();
    Ok(Batch {
        vars: vars.into_iter().map(|(_, h)| h).collect(),
        meta: meta.into_iter().map(|(_, h)| h).collect(),
        without_task: total - tasks.len() as u64,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for code in [-1, 0, 1, 2, 3, 4, 1004] {
            let s = SubStatus::Code(code);
            assert_eq!(SubStatus::parse(&s.name()), s);
        }
        assert_eq!(
            SubStatus::parse(&SubStatus::Unknown.name()),
            SubStatus::Unknown
        );
        assert_eq!(SubStatus::parse(""), SubStatus::Unknown);
        assert_eq!(SubStatus::Code(4).name(), "refused");
        assert_eq!(SubStatus::Code(1004).name(), "1004");
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        assert_eq!(safe_name("hero"), "hero");
        assert_eq!(safe_name("a.b-c_d"), "a.b-c_d");
        assert_eq!(safe_name("../etc"), ".._etc");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("a/b\\c d"), "a_b_c_d");
        assert_eq!(stem("hero", "abc", 2), "hero/abc-2");
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_latest_row_of_a_request_wins_and_only_submitted_rows_have_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let results = write(
            dir.path(),
            "r.csv",
            "request_id,job,kind,status,task_id,sub_task_ids,prompt,var.style,meta.sku\n\
             a,hero,txt2img,failed,,,p1,x,S1\n\
             b,hero,txt2img,rejected,,,p2,y,S2\n\
             a,hero,txt2img,submitted,t1,t1-0;t1-1,p1,x,S1\n\
             c,look,model,submitted,t2,,,,S3\n",
        );
        let b = load(&results).unwrap();
        assert_eq!(b.vars, ["var.style"]);
        assert_eq!(b.meta, ["meta.sku"]);
        assert_eq!(b.without_task, 1);
        assert_eq!(b.tasks.len(), 2);
        assert_eq!(b.tasks[0].request_id, "a");
        assert_eq!(
            b.tasks[0].subs.iter().map(|s| s.index).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(b.tasks[1].kind, Kind::Model);
        assert!(b.tasks[1].subs.is_empty() && b.tasks[1].needs_query(true));
    }

    #[test]
    fn a_missing_results_file_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("nope.csv")).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::INVALID);
        assert!(err.to_string().contains("do not exist"), "{err}");
        let bad = write(dir.path(), "x.csv", "a,b\n1,2\n");
        let err = load(&bad).unwrap_err();
        assert!(err.to_string().contains("no `request_id` column"), "{err}");
    }
}
