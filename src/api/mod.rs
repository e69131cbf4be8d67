//! The HiDream API contract, in one place: hosts, paths, documented field limits, and the shapes of
//! the JSON the API answers with.
//!
//! Everything here comes from `shared/api/HIDREAM_API.md`. Both the validator (`validate`) and the
//! simulator (`sim`) check requests with the functions below, so the tool and its stand-in can never
//! disagree about what the API accepts.

pub mod answer;
pub mod model;
pub mod txt2img;

use serde::{Deserialize, Serialize};

/// The real host of the general-generation ("gw") endpoints, text-to-image among them.
pub const TXT2IMG_HOST: &str = "https://www.hidreamai.com";
/// The real host of the e-commerce ("ec") endpoints, model images among them (no `www`).
pub const MODEL_HOST: &str = "https://hidreamai.com";
/// Submit path of text-to-image.
pub const TXT2IMG_PATH: &str = "/api-pub/gw/v3/image/txt2img/async";
/// Submit path of model images.
pub const MODEL_PATH: &str = "/api-pub/ec/v3/image/model/async";
/// Appended to a submit URL to query a task: `GET <submit URL>/results?task_id=…`. No official page
/// documents it; it is the form HiDream's own clients use (API reference §3, §6).
pub const RESULTS_SUFFIX: &str = "/results";
/// Appended to a submit URL for the batch query `POST <submit URL>/results/batch` (v2 docs, §4).
pub const BATCH_RESULTS_SUFFIX: &str = "/results/batch";

/// The model-type (human) template list, on the e-commerce host (API reference §7.1):
/// `GET …?page_size=&page_index=`.
pub const HUMAN_TEMPLATES_PATH: &str = "/api-pub/ec/v3/template/model/human";
/// The scene template list, on the e-commerce host (API reference §7.2).
pub const SCENE_TEMPLATES_PATH: &str = "/api-pub/ec/v3/template/model/scene";
/// The largest `page_size` of a template list (documented: at most 100).
pub const MAX_TEMPLATE_PAGE_SIZE: u32 = 100;
/// The `page_size` of a template list when none is given (documented: 20).
pub const DEFAULT_TEMPLATE_PAGE_SIZE: u32 = 20;
/// The cover image of a template is its `show_image` URL with `?width=N` (documented with 512).
pub const TEMPLATE_COVER_WIDTH: u32 = 512;

/// The two template lists of model images: model types (`human`) and scenes (`scene`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TemplateList {
    /// The model types (模特类型): `human_template_id`.
    Human,
    /// The scenes (模特场景): `scene_template_id`.
    Scene,
}

impl TemplateList {
    /// Both lists, human first.
    pub const ALL: [TemplateList; 2] = [TemplateList::Human, TemplateList::Scene];

    /// `human` or `scene`.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateList::Human => "human",
            TemplateList::Scene => "scene",
        }
    }

    /// The list's path on the e-commerce host.
    pub fn path(self) -> &'static str {
        match self {
            TemplateList::Human => HUMAN_TEMPLATES_PATH,
            TemplateList::Scene => SCENE_TEMPLATES_PATH,
        }
    }

    /// The field a list is grouped by in the gallery and shown by in the table: `gender` for
    /// humans, `scenes_type` for scenes.
    pub fn group_field(self) -> &'static str {
        match self {
            TemplateList::Human => "gender",
            TemplateList::Scene => "scenes_type",
        }
    }
}

impl std::fmt::Display for TemplateList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The resolutions documented for txt2img `v2L`, as `width*height`.
pub const RESOLUTIONS: [&str; 7] = [
    "1024*1024",
    "832*1248",
    "880*1168",
    "768*1360",
    "1248*832",
    "1168*880",
    "1360*768",
];
/// The documented set of txt2img `version`s.
pub const VERSIONS: [&str; 1] = ["v2L"];
/// `img_count` / `image_count` range.
pub const MIN_IMAGES: i64 = 1;
/// The most images one request can ask for (`img_count` / `image_count` ≤ 4).
pub const MAX_IMAGES: i64 = 4;
/// Model-image prompt limit, in characters (not bytes).
pub const MAX_MODEL_PROMPT_CHARS: usize = 500;
/// Largest accepted side of an input image ("最大分辨率支持4K").
pub const MAX_IMAGE_SIDE: usize = 4096;
/// The documented per-minute limit for text-to-image, in images.
pub const DOCUMENTED_TXT2IMG_RATE: u32 = 100;

/// The two request kinds hidream-batch submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Text-to-image (文生图), at [`TXT2IMG_PATH`]; `txt2img` in manifests and results.
    #[serde(rename = "txt2img")]
    Txt2Img,
    /// Model images (模特图), at [`MODEL_PATH`]; `model` in manifests and results.
    #[serde(rename = "model")]
    Model,
}

impl Kind {
    /// Both kinds, text-to-image first.
    pub const ALL: [Kind; 2] = [Kind::Txt2Img, Kind::Model];

    /// The kind's name: `txt2img` or `model`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Txt2Img => "txt2img",
            Kind::Model => "model",
        }
    }

    /// The kind named `s` (exactly `txt2img` or `model`), if any.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "txt2img" => Some(Kind::Txt2Img),
            "model" => Some(Kind::Model),
            _ => None,
        }
    }

    /// The submit path on the API host.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Txt2Img => TXT2IMG_PATH,
            Kind::Model => MODEL_PATH,
        }
    }

    /// The real host serving this kind.
    pub fn default_host(self) -> &'static str {
        match self {
            Kind::Txt2Img => TXT2IMG_HOST,
            Kind::Model => MODEL_HOST,
        }
    }

    /// Full submit URL on `base` (an origin such as `http://127.0.0.1:8787`), or on the real host.
    pub fn endpoint(self, base: Option<&str>) -> String {
        let host = base.unwrap_or(self.default_host()).trim_end_matches('/');
        format!("{host}{}", self.path())
    }

    /// Whether the API lists the `API-User-ID` header for this endpoint (gw pages only).
    pub fn accepts_user_id(self) -> bool {
        matches!(self, Kind::Txt2Img)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope every documented response uses: success is `code == 0`. The simulator writes it;
/// answers are read leniently by [`answer::Reply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The API's status code (返回状态码): 0 is success, anything else an error.
    pub code: i64,
    /// The API's status message (`"Success"`, or what went wrong); empty when absent.
    #[serde(default)]
    pub message: String,
    /// The API's id of this call (本次请求的ID); hidream-batch does not read it.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The payload (返回结果); `None` when the answer has none.
    #[serde(default = "Option::default")]
    pub result: Option<T>,
}

/// `result` of an accepted submission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Submitted {
    /// The task the API created: what `collect` queries, and what the results record.
    pub task_id: String,
    /// One id per image of the task; empty when absent.
    #[serde(default)]
    pub sub_task_ids: Vec<String>,
}

/// `result` of a task query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskResult {
    /// The task queried, when the answer names it (hidream-batch does not read it).
    #[serde(default)]
    pub task_id: Option<String>,
    /// The state of each image of the task; empty when absent.
    #[serde(default)]
    pub sub_task_results: Vec<SubTaskResult>,
}

/// One image of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubTaskResult {
    /// Which image of the task this is: its sub-task id.
    pub sub_task_id: String,
    /// 0 queued, 2 running, 1 done, 3 failed, 4 refused by content review; anything else is
    /// recorded as-is and polled again.
    pub task_status: i64,
    /// Progress, when given (a fraction 0–1 by third-party accounts); hidream-batch does not read
    /// it.
    #[serde(default)]
    pub task_completion: Option<f64>,
    /// The image's URL once done (status 1); `collect` downloads it (http(s) URLs only).
    #[serde(default)]
    pub image: Option<String>,
    /// Why the image failed, when given; `collect` writes it to the `message` column of
    /// `images.csv`.
    #[serde(default)]
    pub description: Option<String>,
}

/// Task statuses (API reference §9; no official table exists).
pub mod status {
    /// Queued, waiting to start.
    pub const QUEUED: i64 = 0;
    /// Done: the image is ready (final).
    pub const DONE: i64 = 1;
    /// In progress.
    pub const RUNNING: i64 = 2;
    /// Generation failed (final).
    pub const FAILED: i64 = 3;
    /// Refused by content review (final).
    pub const REFUSED: i64 = 4;
}

/// `resolution` must be one of [`RESOLUTIONS`].
pub fn check_resolution(value: &str) -> Result<(), String> {
    if RESOLUTIONS.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a supported resolution (one of {})",
            RESOLUTIONS.join(", ")
        ))
    }
}

/// `version` must be one of [`VERSIONS`].
pub fn check_version(value: &str) -> Result<(), String> {
    if VERSIONS.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a supported version (only {})",
            VERSIONS.join(", ")
        ))
    }
}

/// `img_count` / `image_count` must be 1–4.
pub fn check_count(value: i64) -> Result<(), String> {
    if (MIN_IMAGES..=MAX_IMAGES).contains(&value) {
        Ok(())
    } else {
        Err(format!("{value} is outside {MIN_IMAGES}–{MAX_IMAGES}"))
    }
}

/// A model-image prompt is at most 500 characters (not bytes).
pub fn check_model_prompt(value: &str) -> Result<(), String> {
    let n = value.chars().count();
    if n <= MAX_MODEL_PROMPT_CHARS {
        Ok(())
    } else {
        Err(format!(
            "is {n} characters long; the API allows at most {MAX_MODEL_PROMPT_CHARS}"
        ))
    }
}

/// An input image's pixel size must be at most 4096 on each side.
pub fn check_image_size(width: usize, height: usize) -> Result<(), String> {
    if width <= MAX_IMAGE_SIDE && height <= MAX_IMAGE_SIDE {
        Ok(())
    } else {
        Err(format!(
            "is {width}×{height} px; the API accepts at most {MAX_IMAGE_SIDE} px per side"
        ))
    }
}

/// The image formats hidream-batch sends (the API names none; these are the common photo formats).
pub fn check_image_type(head: &[u8]) -> Result<(), String> {
    match imagesize::image_type(head) {
        Ok(imagesize::ImageType::Png | imagesize::ImageType::Jpeg | imagesize::ImageType::Webp) => {
            Ok(())
        }
        Ok(other) => Err(format!("is a {other:?} image; use PNG, JPEG or WebP")),
        Err(_) => Err("is not a PNG, JPEG or WebP image".to_string()),
    }
}

/// `notify_url` must be an absolute http(s) URL.
pub fn check_url(value: &str) -> Result<(), String> {
    if value.starts_with("https://") || value.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("`{value}` is not an http(s) URL"))
    }
}
