//! Manifests: the serde-independent model that both formats load into, and `load` by extension.
//!
//! A YAML manifest (`yaml.rs`) is a list of jobs, each a set of field templates swept over
//! `for_each` rows, a `matrix` and `repeat`. A CSV manifest (`csv.rs`) is one request per row and
//! is never held in memory: it is re-read, row by row, whenever it is expanded. Both produce the
//! same [`FieldSet`], which `expand` renders and types into API request bodies.

pub mod csv;
pub mod snapshot;
pub mod template;
pub mod yaml;
mod yaml_doc;
mod yaml_errors;
mod yaml_guard;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::Kind;
use crate::digest::Digests;
use crate::problem::{At, Problem};
pub use template::Template;

/// Every request field a manifest can set. CSV columns use [`Field::name`]; YAML nests the three
/// template fields under `template:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `prompt`: txt2img's prompt, or a model request's prompt mode.
    Prompt,
    /// `negative_prompt` (txt2img).
    NegativePrompt,
    /// `img_count` (txt2img): images per request.
    ImgCount,
    /// `version` (txt2img).
    Version,
    /// `resolution` (txt2img).
    Resolution,
    /// `notify_url` (both kinds).
    NotifyUrl,
    /// `image` (model): the model photo.
    Image,
    /// `mask` (model).
    Mask,
    /// `image_count` (model): images per request.
    ImageCount,
    /// `template.human_template_id` (model).
    HumanTemplateId,
    /// `template.scene_template_id` (model).
    SceneTemplateId,
    /// `template.custom_human_template` (model).
    CustomHumanTemplate,
}

impl Field {
    /// Every field, in declaration order.
    pub const ALL: [Field; 12] = [
        Field::Prompt,
        Field::NegativePrompt,
        Field::ImgCount,
        Field::Version,
        Field::Resolution,
        Field::NotifyUrl,
        Field::Image,
        Field::Mask,
        Field::ImageCount,
        Field::HumanTemplateId,
        Field::SceneTemplateId,
        Field::CustomHumanTemplate,
    ];

    /// The API's name of the field (and the CSV column).
    pub fn name(self) -> &'static str {
        match self {
            Field::Prompt => "prompt",
            Field::NegativePrompt => "negative_prompt",
            Field::ImgCount => "img_count",
            Field::Version => "version",
            Field::Resolution => "resolution",
            Field::NotifyUrl => "notify_url",
            Field::Image => "image",
            Field::Mask => "mask",
            Field::ImageCount => "image_count",
            Field::HumanTemplateId => "human_template_id",
            Field::SceneTemplateId => "scene_template_id",
            Field::CustomHumanTemplate => "custom_human_template",
        }
    }

    /// The name as written in a YAML manifest.
    pub fn yaml_name(self) -> &'static str {
        match self {
            Field::HumanTemplateId => "template.human_template_id",
            Field::SceneTemplateId => "template.scene_template_id",
            Field::CustomHumanTemplate => "template.custom_human_template",
            other => other.name(),
        }
    }

    /// The field with this API name (CSV column), if any.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the API's request of `kind` has this field.
    pub fn belongs_to(self, kind: Kind) -> bool {
        match self {
            Field::Prompt | Field::NotifyUrl => true,
            Field::NegativePrompt | Field::ImgCount | Field::Version | Field::Resolution => {
                kind == Kind::Txt2Img
            }
            _ => kind == Kind::Model,
        }
    }

    /// Whether the field belongs to the model `template` object.
    pub fn in_template(self) -> bool {
        matches!(
            self,
            Field::HumanTemplateId | Field::SceneTemplateId | Field::CustomHumanTemplate
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The field templates of one job (or CSV row): `None` = not set.
#[derive(Debug, Clone, Default)]
pub struct FieldSet {
    values: [Option<Template>; 12],
    /// Whether a model `template` was given (it may still lack its ids).
    pub template: bool,
}

impl FieldSet {
    /// The field's template, if the field is set.
    pub fn get(&self, field: Field) -> Option<&Template> {
        self.values[field.index()].as_ref()
    }

    /// Set the field's template (replacing any earlier one).
    pub fn set(&mut self, field: Field, value: Template) {
        self.values[field.index()] = Some(value);
    }
}

/// What every request of a job shares; requests hold it by `Arc`.
#[derive(Debug)]
pub struct JobInfo {
    /// The manifest's name (shown by `expand`; not part of request ids).
    pub manifest: Arc<str>,
    /// The manifest file, as given on the command line.
    pub file: PathBuf,
    /// The folder relative paths in the manifest are resolved against.
    pub dir: PathBuf,
    /// The job id shown to users (`row-<line>` for a CSV row without `id`).
    pub id: String,
    /// The job's part of a request id in the scheme before content identity (its id, or empty
    /// for a CSV row without `id`); only used to recognise results written by that scheme.
    pub id_key: String,
    /// The job's `kind`: which API its requests go to.
    pub kind: Kind,
    /// Sweep variables: `for_each` columns first, then matrix keys.
    pub vars: Vec<String>,
    /// `meta.<name>` names.
    pub meta: Vec<String>,
    /// The `for_each` CSV as written in the manifest (for messages).
    pub for_each: Option<String>,
    /// The digests of local images, shared by every request of the run (request ids).
    pub digests: Arc<Digests>,
}

/// A job of a YAML manifest, ready to expand.
#[derive(Debug)]
pub struct Job {
    /// What the job's requests share.
    pub info: Arc<JobInfo>,
    /// The job's field templates, `defaults` applied.
    pub fields: FieldSet,
    /// Values of each matrix key (the matrix keys are `info.vars[for_each columns..]`).
    pub matrix: Vec<Vec<Arc<str>>>,
    /// The job's `for_each` CSV, if any.
    pub for_each: Option<ForEach>,
    /// `repeat`: submissions per combination of variables (at least 1; default 1).
    pub repeat: u32,
    /// Templates of the `meta` values, in `info.meta` order.
    pub meta: Vec<Template>,
}

/// A `for_each` CSV: its columns become variables, one expansion per row.
#[derive(Debug, Clone)]
pub struct ForEach {
    /// As written in the manifest (for messages).
    pub shown: String,
    /// The copy taken when the manifest was loaded: every pass reads it.
    pub snapshot: snapshot::Snapshot,
}

/// A loaded manifest.
#[derive(Debug)]
pub struct Manifest {
    /// The file, as given on the command line.
    pub path: PathBuf,
    /// The folder its relative paths are resolved against.
    pub dir: PathBuf,
    /// YAML `name`, or the file name without extension.
    pub name: Arc<str>,
    /// The jobs (YAML) or the rows to read (CSV).
    pub source: Source,
}

/// A loaded manifest's contents, by format.
#[derive(Debug)]
pub enum Source {
    /// A YAML manifest's jobs, in file order.
    Yaml(Vec<Job>),
    /// A CSV manifest, its rows read when expanded.
    Csv(csv::CsvManifest),
}

impl Manifest {
    /// Number of jobs (for a CSV manifest: of rows, counted by reading it).
    pub fn job_count(&self) -> Result<u64, Problem> {
        match &self.source {
            Source::Yaml(jobs) => Ok(jobs.len() as u64),
            Source::Csv(c) => c.count_rows(self),
        }
    }
}

/// Load a manifest, choosing the format by extension. Every problem found is returned. Local
/// images' digests go into `digests` as requests are expanded.
pub fn load(path: &Path, digests: &Arc<Digests>) -> Result<Manifest, Vec<Problem>> {
    if path.as_os_str() == "-" {
        // Standard input has no extension to tell the format, no folder to resolve images
        // against, and cannot be read again to resume: a manifest is a file.
        return Err(vec![Problem::new(
            path,
            At::File,
            None,
            "a manifest cannot be read from standard input (`-`): save it to a `.yaml` or `.csv` file and give its path (relative image paths are resolved against the file's folder, and a resumed run reads it again)",
        )]);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("yaml" | "yml") => yaml::load(path, digests),
        Some("csv") => csv::load(path, digests),
        _ => Err(vec![Problem::new(
            path,
            At::File,
            None,
            "unknown manifest format: use a `.yaml`, `.yml` or `.csv` file",
        )]),
    }
}

/// The folder a manifest's relative paths are resolved against.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The default manifest name: the file name without extension.
pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "manifest".to_string())
}

/// Job ids: `[A-Za-z0-9_.-]+`.
pub(crate) fn valid_job_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
