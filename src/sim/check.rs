//! The simulator's validation of request bodies: every documented field of both submit endpoints
//! and of the batch query, with the shared checks of [`crate::api`] so that the simulator and the
//! client-side validator agree on what the API accepts.
//!
//! Bodies are parsed as [`serde_json::Value`] rather than into typed structs, so that a type error
//! names its field (`img_count must be an integer, got a string`) and an unknown field is reported
//! by name. The first problem found is reported; fields are checked in the order the API
//! reference lists them.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::api::{self, Kind};

use super::codes;
use super::hash;

/// Fields of a text-to-image body (API reference §2).
const TXT2IMG_FIELDS: [&str; 7] = [
    "prompt",
    "negative_prompt",
    "img_count",
    "version",
    "resolution",
    "request_id",
    "notify_url",
];
/// Fields of a model-image body (API reference §5).
const MODEL_FIELDS: [&str; 6] = [
    "image",
    "mask",
    "template",
    "prompt",
    "image_count",
    "notify_url",
];
/// Fields of a model-image `template`.
const TEMPLATE_FIELDS: [&str; 3] = [
    "human_template_id",
    "scene_template_id",
    "custom_human_template",
];
/// Fields of a batch result query (API reference §4).
const BATCH_FIELDS: [&str; 2] = ["task_id_list", "notify_url"];
/// Most task ids in one batch query (the API documents no maximum; this is the simulator's).
pub(crate) const MAX_BATCH: usize = 1000;

/// Why a request was refused: its `code`, the key it is counted under in
/// `Stats::rejected_by_reason`, and a message naming the field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub code: i64,
    pub reason: &'static str,
    pub message: String,
}

fn reject(code: i64, reason: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        reason,
        message: message.into(),
    }
}

/// What the simulator needs to know about a valid submission.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checked {
    /// Images asked for (1–4).
    pub images: u32,
    /// Hash of the whole body (key order and whitespace ignored); picks the generated images.
    pub hash: u64,
    /// Identity for duplicate detection: the body as sent (a txt2img `request_id` included), so
    /// a body accepted twice is a duplicate whatever its kind.
    pub key: u64,
    /// The client's txt2img `request_id`, echoed in the answer.
    pub request_id: Option<String>,
}

/// Check a submission to `kind`'s endpoint.
pub(crate) fn submission(
    kind: Kind,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Checked, Rejection> {
    let value = json_object(content_type, body)?;
    let Value::Object(obj) = &value else {
        unreachable!("json_object returns objects")
    };
    let (images, request_id) = match kind {
        Kind::Txt2Img => txt2img(obj)?,
        Kind::Model => (model(obj)?, None),
    };
    let hash = hash::json(&value);
    let key = hash::Fnv::new()
        .bytes(kind.as_str().as_bytes())
        .u64(hash)
        .finish();
    Ok(Checked {
        images,
        hash,
        key,
        request_id,
    })
}

/// Check a batch result query; returns the task ids.
pub(crate) fn batch_query(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<String>, Rejection> {
    let value = json_object(content_type, body)?;
    let Value::Object(obj) = &value else {
        unreachable!("json_object returns objects")
    };
    unknown_fields(obj, &BATCH_FIELDS)?;
    let list = match present(obj, "task_id_list") {
        None => {
            return Err(reject(
                codes::MISSING_FIELD,
                "task_id_list",
                "`task_id_list` is required",
            ));
        }
        Some(Value::Array(list)) => list,
        Some(other) => return Err(wrong_type("task_id_list", "a list of task ids", other)),
    };
    if list.is_empty() {
        return Err(reject(
            codes::MISSING_FIELD,
            "task_id_list",
            "`task_id_list` is empty",
        ));
    }
    if list.len() > MAX_BATCH {
        return Err(reject(
            codes::INVALID_VALUE,
            "task_id_list",
            format!(
                "`task_id_list` has {} ids; the simulator accepts at most {MAX_BATCH}",
                list.len()
            ),
        ));
    }
    let mut ids = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match item {
            Value::String(s) => ids.push(s.clone()),
            other => {
                return Err(reject(
                    codes::INVALID_VALUE,
                    "task_id_list",
                    format!(
                        "`task_id_list[{i}]` must be a string, got {}",
                        type_name(other)
                    ),
                ));
            }
        }
    }
    url(obj, "notify_url")?;
    Ok(ids)
}

/// Parse a JSON object body, checking the documented `Content-Type`.
fn json_object(content_type: Option<&str>, body: &[u8]) -> Result<Value, Rejection> {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if essence.as_deref() != Some("application/json") {
        return Err(reject(
            codes::BAD_BODY,
            "content_type",
            format!(
                "`Content-Type` must be `application/json`, not `{}`",
                shown(content_type.unwrap_or(""))
            ),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(reject(
            codes::BAD_BODY,
            "body",
            format!("the body must be a JSON object, got {}", type_name(&other)),
        )),
        Err(err) => Err(reject(
            codes::BAD_BODY,
            "body",
            format!("the body is not valid JSON ({err})"),
        )),
    }
}

/// A text-to-image body: the image count and the `request_id`, if any.
fn txt2img(obj: &Map<String, Value>) -> Result<(u32, Option<String>), Rejection> {
    unknown_fields(obj, &TXT2IMG_FIELDS)?;
    match string(obj, "prompt")? {
        None => return Err(missing("prompt")),
        Some(p) if p.trim().is_empty() => return Err(empty("prompt")),
        Some(_) => {}
    }
    string(obj, "negative_prompt")?;
    let images = count(obj, "img_count")?;
    if let Some(v) = string(obj, "version")? {
        api::check_version(v).map_err(|e| invalid("version", format!("`version`: {e}")))?;
    }
    if let Some(r) = string(obj, "resolution")? {
        api::check_resolution(r)
            .map_err(|e| invalid("resolution", format!("`resolution`: {}", shorten(&e))))?;
    }
    let request_id = string(obj, "request_id")?
        .filter(|id| !id.is_empty())
        .map(str::to_string);
    url(obj, "notify_url")?;
    Ok((images, request_id))
}

/// A model-image body: the image count.
fn model(obj: &Map<String, Value>) -> Result<u32, Rejection> {
    unknown_fields(obj, &MODEL_FIELDS)?;
    match string(obj, "image")? {
        None => return Err(missing("image")),
        Some("") => return Err(empty("image")),
        Some(image) => check_image("image", image)?,
    }
    if let Some(mask) = string(obj, "mask")? {
        check_image("mask", mask)?;
    }
    let template = match present(obj, "template") {
        None => None,
        Some(Value::Object(t)) => Some(t),
        Some(other) => return Err(wrong_type("template", "an object", other)),
    };
    if let Some(t) = template {
        if let Some(field) = t.keys().find(|k| !TEMPLATE_FIELDS.contains(&k.as_str())) {
            return Err(reject(
                codes::UNKNOWN_FIELD,
                "unknown_field",
                format!(
                    "unknown field `template.{}` (a template has {})",
                    shown(field),
                    TEMPLATE_FIELDS.join(", ")
                ),
            ));
        }
        for (field, name) in [
            ("human_template_id", "template.human_template_id"),
            ("scene_template_id", "template.scene_template_id"),
        ] {
            match string_named(t, field, name)? {
                None => return Err(missing(name)),
                Some(id) if id.trim().is_empty() => return Err(empty(name)),
                Some(_) => {}
            }
        }
        const CUSTOM: &str = "template.custom_human_template";
        match present(t, "custom_human_template") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => {
                return Err(invalid(
                    CUSTOM,
                    format!(
                        "`{CUSTOM}` must be false (the API does not support custom templates yet)"
                    ),
                ));
            }
            Some(other) => return Err(wrong_type(CUSTOM, "a boolean", other)),
        }
    }
    let prompt = string(obj, "prompt")?;
    if let Some(p) = prompt {
        if p.trim().is_empty() {
            return Err(empty("prompt"));
        }
        api::check_model_prompt(p)
            .map_err(|e| reject(codes::PROMPT_TOO_LONG, "prompt", format!("`prompt` {e}")))?;
    }
    match (template.is_some(), prompt.is_some()) {
        (true, true) => {
            return Err(reject(
                codes::TEMPLATE_XOR_PROMPT,
                "template_or_prompt",
                "give either `template` or `prompt`, not both",
            ));
        }
        (false, false) => {
            return Err(reject(
                codes::TEMPLATE_XOR_PROMPT,
                "template_or_prompt",
                "give one of `template` and `prompt`",
            ));
        }
        _ => {}
    }
    let images = count(obj, "image_count")?;
    url(obj, "notify_url")?;
    Ok(images)
}

/// `image` / `mask`: an http(s) URL, or base64 (without a `data:` prefix) of a PNG, JPEG or WebP
/// image of at most 4096 px per side.
fn check_image(field: &'static str, value: &str) -> Result<(), Rejection> {
    let bad = |message: String| reject(codes::BAD_IMAGE, field, message);
    if value.starts_with("data:") {
        return Err(bad(format!(
            "`{field}` has a `data:` prefix; send the base64 without it"
        )));
    }
    if value.contains("://") {
        return api::check_url(value).map_err(|e| bad(format!("`{field}`: {}", shorten(&e))));
    }
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = BASE64.decode(value).map_err(|e| {
        bad(format!(
            "`{field}` is neither an http(s) URL nor valid base64 ({e})"
        ))
    })?;
    api::check_image_type(&bytes).map_err(|e| bad(format!("`{field}` {e}")))?;
    let size = imagesize::blob_size(&bytes)
        .map_err(|_| bad(format!("`{field}` is a truncated or corrupt image")))?;
    api::check_image_size(size.width, size.height).map_err(|e| bad(format!("`{field}` {e}")))
}

/// The first field not in `known`, if any, as a rejection.
fn unknown_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), Rejection> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(field) => Err(reject(
            codes::UNKNOWN_FIELD,
            "unknown_field",
            format!(
                "unknown field `{}` (this endpoint accepts {})",
                shown(field),
                known.join(", ")
            ),
        )),
    }
}

/// A field's value; `null` counts as absent.
fn present<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    obj.get(field).filter(|v| !v.is_null())
}

fn string<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, Rejection> {
    string_named(obj, field, field)
}

fn string_named<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    name: &'static str,
) -> Result<Option<&'a str>, Rejection> {
    match present(obj, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(name, "a string", other)),
    }
}

/// `img_count` / `image_count`: an integer 1–4, default 1.
fn count(obj: &Map<String, Value>, field: &'static str) -> Result<u32, Rejection> {
    match present(obj, field) {
        None => Ok(1),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => {
                api::check_count(v).map_err(|e| invalid(field, format!("`{field}`: {e}")))?;
                Ok(v as u32)
            }
            None => Err(invalid(
                field,
                format!("`{field}` must be an integer from 1 to 4, got `{n}`"),
            )),
        },
        Some(other) => Err(wrong_type(field, "an integer", other)),
    }
}

fn url(obj: &Map<String, Value>, field: &'static str) -> Result<(), Rejection> {
    if let Some(u) = string(obj, field)? {
        api::check_url(u).map_err(|e| invalid(field, format!("`{field}`: {}", shorten(&e))))?;
    }
    Ok(())
}

fn missing(field: &'static str) -> Rejection {
    reject(
        codes::MISSING_FIELD,
        field,
        format!("`{field}` is required"),
    )
}

fn empty(field: &'static str) -> Rejection {
    reject(
        codes::MISSING_FIELD,
        field,
        format!("`{field}` must not be empty"),
    )
}

fn invalid(field: &'static str, message: String) -> Rejection {
    reject(codes::INVALID_VALUE, field, message)
}

fn wrong_type(field: &'static str, expected: &str, got: &Value) -> Rejection {
    invalid(
        field,
        format!("`{field}` must be {expected}, got {}", type_name(got)),
    )
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A client-supplied value cut to a length fit for a message.
fn shown(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        value.to_string()
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// A message from [`crate::api`] that quotes a client value in backticks, with that value cut.
fn shorten(message: &str) -> String {
    if message.len() <= 300 {
        return message.to_string();
    }
    let cut: String = message.chars().take(300).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn txt2img_defaults_and_a_key_of_the_whole_body() {
        let a = submission(Kind::Txt2Img, JSON, br#"{"prompt":"a","request_id":"r1"}"#).unwrap();
        assert_eq!(a.images, 1);
        assert_eq!(a.request_id.as_deref(), Some("r1"));
        let b = submission(
            Kind::Txt2Img,
            Some("application/json; charset=utf-8"),
            br#"{"prompt":"b","request_id":"r1","img_count":3}"#,
        )
        .unwrap();
        assert_eq!(b.images, 3);
        assert_ne!(a.key, b.key, "another body is another request");
        let again = submission(
            Kind::Txt2Img,
            JSON,
            br#"{ "request_id":"r1", "prompt":"a" }"#,
        );
        assert_eq!(again.unwrap().key, a.key, "the same body, however written");
        let model = submission(
            Kind::Model,
            JSON,
            br#"{"image":"https://x/a.png","prompt":"a"}"#,
        )
        .unwrap();
        assert_ne!(model.key, a.key);
    }

    #[test]
    fn wrong_content_type_is_refused() {
        let r = submission(Kind::Txt2Img, Some("text/plain"), br#"{"prompt":"a"}"#).unwrap_err();
        assert_eq!((r.code, r.reason), (codes::BAD_BODY, "content_type"));
        let r = submission(Kind::Txt2Img, None, br#"{"prompt":"a"}"#).unwrap_err();
        assert_eq!(r.reason, "content_type");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let field = "x".repeat(1000);
        let body = format!(r#"{{"prompt":"a","{field}":1}}"#);
        let r = submission(Kind::Txt2Img, JSON, body.as_bytes()).unwrap_err();
        assert!(r.message.len() < 300, "{}", r.message);
    }
}
