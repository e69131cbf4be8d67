//! Text-to-image (`POST /api-pub/gw/v3/image/txt2img/async`): the request body as the API names
//! its fields.

use serde::{Deserialize, Serialize};

/// The JSON body of a text-to-image submission. Field order is the canonical order used for
/// request ids (`expand::request_id`): do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txt2ImgBody {
    /// What to generate (required; validation refuses an empty prompt).
    pub prompt: String,
    /// What not to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Images to generate, 1–4 (the API's default is 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub img_count: Option<i64>,
    /// The model version: only `v2L` is documented (the API's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `width*height`, one of [`crate::api::RESOLUTIONS`] (the API states no default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// A public http(s) URL the API POSTs to when the task completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// Set to the hidream-batch request id when sent; never part of the id itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Txt2ImgBody {
    /// Images this request asks for (the API's default is 1).
    pub fn images(&self) -> u32 {
        self.img_count.unwrap_or(1).clamp(0, 4) as u32
    }
}
