//! Model images (`POST /api-pub/ec/v3/image/model/async`): the request body as the API names its
//! fields. Note `image_count`, not `img_count`.

use serde::{Deserialize, Serialize};

/// The JSON body of a model-image submission, generic over how the images are carried: a
/// [`crate::body::ImageRef`] (a path or URL, for display and ids) or a `String` (the value sent:
/// a URL or base64 without a `data:` prefix). Field order is canonical for request ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBody<I = String> {
    /// The model photo (required): a URL, or base64 without a `data:` prefix; at most 4K
    /// ([`crate::api::MAX_IMAGE_SIDE`]).
    pub image: I,
    /// A custom processing mask, carried like `image` (the API page does not give its format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<I>,
    /// Generate from templates; the API takes either this or `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ModelTemplate>,
    /// Generate from this prompt (at most 500 characters); the API takes either this or `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Images to generate, 1–4 (the API's default is 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_count: Option<i64>,
    /// A public http(s) URL the API POSTs to when the task completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

/// `template`: generate from a human (model-type) template and a scene template; the alternative
/// to `prompt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTemplate {
    /// The id of a model-type (human) template, as listed by
    /// `GET /api-pub/ec/v3/template/model/human`.
    pub human_template_id: String,
    /// The id of a scene template, as listed by
    /// `GET /api-pub/ec/v3/template/model/scene`.
    pub scene_template_id: String,
    /// The API's default is `false`; `true` is announced for a later version, so validation
    /// refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_human_template: Option<bool>,
}

impl<I> ModelBody<I> {
    /// Images this request asks for (the API's default is 1).
    pub fn images(&self) -> u32 {
        self.image_count.unwrap_or(1).clamp(0, 4) as u32
    }

    /// The same body with its images carried another way (e.g. loaded as base64 when sent).
    pub fn try_map_images<J, E>(
        &self,
        mut f: impl FnMut(&I) -> Result<J, E>,
    ) -> Result<ModelBody<J>, E> {
        Ok(ModelBody {
            image: f(&self.image)?,
            mask: self.mask.as_ref().map(&mut f).transpose()?,
            template: self.template.clone(),
            prompt: self.prompt.clone(),
            image_count: self.image_count,
            notify_url: self.notify_url.clone(),
        })
    }
}
