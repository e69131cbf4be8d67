//! Model images (`POST /api-pub/ec/v3/image/model/async`): the request body as the API names its
//! fields. Note `image_count`, not `img_count`.

use serde::{Deserialize, Serialize};

/// The JSON body of a model-image submission, generic over how the images are carried: a
/// [`crate::body::ImageRef`] (a path or URL, for display and ids) or a `String` (the value sent:
/// a URL or base64 without a `data:` prefix). Field order is canonical for request ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBody<I = String> {
    pub image: I,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<I>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ModelTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

/// `template`: generate from a human (model-type) template and a scene template; the alternative
/// to `prompt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTemplate {
    pub human_template_id: String,
    pub scene_template_id: String,
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
