//! The simulator's template lists over HTTP: the two paged lists (API reference §7.1–7.2), the
//! covers they point at, and the `--strict-templates` check of a model submission.

use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{St, answer, fresh_id, refuse_unauthenticated, success};
use crate::api::MAX_TEMPLATE_PAGE_SIZE;
use crate::sim::codes;
use crate::sim::shared::Shared;
use crate::sim::stats::bump;
use crate::sim::templates;

/// `--strict-templates`: the first template id of a (valid) model body that the lists do not
/// have, as the reason it is counted under and the message.
pub(super) fn unknown_template(body: &[u8]) -> Option<(&'static str, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let template = value.get("template")?;
    for (key, field, list) in [
        (
            "human_template_id",
            "template.human_template_id",
            templates::List::Human,
        ),
        (
            "scene_template_id",
            "template.scene_template_id",
            templates::List::Scene,
        ),
    ] {
        let id = template.get(key).and_then(|v| v.as_str()).unwrap_or("");
        if !templates::has(list, id) {
            let shown: String = id.chars().take(80).collect();
            return Some((
                field,
                format!("unknown `{field}` `{shown}`: not a template of this simulator's lists"),
            ));
        }
    }
    None
}

/// The query string of a template list: both optional (20 and 1 by default), as text so that a
/// value that is not a number is answered like the API's other refusals.
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    page_size: Option<String>,
    page_index: Option<String>,
}

pub(super) async fn templates_human(
    State(s): St,
    hd: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    template_list(templates::List::Human, &s, &hd, q)
}

pub(super) async fn templates_scene(
    State(s): St,
    hd: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    template_list(templates::List::Scene, &s, &hd, q)
}

/// `GET …/template/model/{human,scene}?page_size=&page_index=`: one page (API reference §7.1).
fn template_list(
    list: templates::List,
    s: &Shared,
    headers: &HeaderMap,
    query: PageQuery,
) -> Response {
    bump(&s.counters.templates[list as usize]);
    if let Some(refused) = refuse_unauthenticated(s, headers) {
        return refused;
    }
    let number = |v: &Option<String>, default: u64| match v.as_deref().map(str::trim) {
        None | Some("") => Some(default),
        Some(t) => t.parse::<u64>().ok(),
    };
    let size = number(
        &query.page_size,
        crate::api::DEFAULT_TEMPLATE_PAGE_SIZE.into(),
    )
    .filter(|n| (1..=u64::from(MAX_TEMPLATE_PAGE_SIZE)).contains(n));
    let Some(size) = size else {
        let message = format!("`page_size` must be an integer from 1 to {MAX_TEMPLATE_PAGE_SIZE}");
        return answer(s, StatusCode::OK, codes::INVALID_VALUE, message, fresh_id());
    };
    let Some(index) = number(&query.page_index, 1).filter(|n| (1..=1_000_000).contains(n)) else {
        let message = "`page_index` must be an integer from 1";
        return answer(s, StatusCode::OK, codes::INVALID_VALUE, message, fresh_id());
    };
    success(templates::page(
        list,
        size as usize,
        index as usize,
        &s.origin(headers),
    ))
}

/// The query string of a cover: `?width=N`.
#[derive(Debug, Deserialize)]
pub(super) struct CoverQuery {
    width: Option<String>,
}

/// `GET /sim/templates/<id>.png[?width=N]`: a template's generated cover (no token needed, as a
/// CDN's would not).
pub(super) async fn template_cover(
    State(s): St,
    Path(file): Path<String>,
    Query(q): Query<CoverQuery>,
) -> Response {
    bump(&s.counters.template_covers);
    let id = file.strip_suffix(".png").unwrap_or(&file);
    let width = q
        .width
        .and_then(|w| w.trim().parse::<usize>().ok())
        .unwrap_or(768);
    match templates::cover(id, width) {
        Some(png) => (
            [
                (CONTENT_TYPE, "image/png"),
                (CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            png,
        )
            .into_response(),
        None => {
            let shown: String = file.chars().take(80).collect();
            answer(
                &s,
                StatusCode::NOT_FOUND,
                codes::NOT_FOUND,
                format!("no template cover `{shown}`"),
                fresh_id(),
            )
        }
    }
}
