//! The model-image templates (README "Choosing templates"): the two lists the API serves — the
//! model types (`human`) and the scenes (`scene`) — read whole, cached, shown, and checked against
//! the template ids of the manifests.
//!
//! A model request in template mode carries a `human_template_id` and a `scene_template_id`. A
//! typo in one is found by the API only when the request is sent (and paid for, if the id happens
//! to exist): this module lets a catalog team see the lists (`hidream-batch templates
//! human|scene`, a table, CSV or JSON; `--gallery DIR` for their covers) and check a manifest's ids
//! against them before anything is sent (`validate --check-templates`, `run --check-templates`).
//!
//! - [`Template`]: one entry, read field by field as leniently as every answer
//!   (`crate::api::answer`): an id given as a number is its digits; a field that is not text is
//!   kept as it came, with every field the documentation does not name, in [`Template::extra`]
//!   (JSON output keeps them all).
//! - `fetch`: every page of a list, through the client and the one retry driver, bounded in pages
//!   and templates ([`crate::limits::TEMPLATE_PAGES`], [`crate::limits::TEMPLATES`]): a
//!   `total_page` that never ends or pages that repeat end the read with an error, never a loop.
//! - `cache`: the lists kept on disk per API origin for [`cache::LIFETIME`], written atomically,
//!   never with the token.
//! - `check`: the template ids of the manifests against the lists, with a "did you mean" for a
//!   name or a near miss (names are never resolved to ids: a paid request carries the id the
//!   user wrote).
//! - `output`: the table, CSV and JSON of `templates`; `gallery`: the HTML page of the covers.
//!
//! The lists of the check are **fail-closed**: if they cannot be read (network, 5xx after the
//! retries, a refusal, an answer that is not a list), `--check-templates` stops the command with
//! exit 3 before anything is sent; refused credentials are exit 3 as everywhere.

pub(crate) mod cache;
pub(crate) mod check;
pub(crate) mod fetch;
pub(crate) mod gallery;
pub(crate) mod output;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::answer::text;

use crate::api::Kind;
use crate::client::{Client, Limiters};
use crate::retry::Retrier;
use crate::settings::{ConnectionSettings, Server};
use crate::shutdown::Shutdown;

/// Which of the two lists (defined with the API's contract, [`crate::api::TemplateList`]).
pub use crate::api::TemplateList as Which;

/// The manifest field whose ids `which`'s list holds.
pub(crate) fn field(which: Which) -> crate::manifest::Field {
    match which {
        Which::Human => crate::manifest::Field::HumanTemplateId,
        Which::Scene => crate::manifest::Field::SceneTemplateId,
    }
}

/// One template as the API lists it. The documented fields are read as text (a number as its
/// digits); every other field, and a documented one that is not text, is kept in
/// [`Template::extra`] as it came.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Template {
    /// The id a request sends (`模版ID，发送生图任务时使用`).
    pub id: String,
    /// The English name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_en: Option<String>,
    /// The Chinese name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_zh: Option<String>,
    /// Humans: `Woman` or `Man`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// Scenes: `outdoor scenes` or `indoor scenes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenes_type: Option<String>,
    /// Scenes: the region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The cover image's URL (`?width=N` gives a sized copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_image: Option<String>,
    /// Every other field of the entry, as the API sent it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Template {
    /// Read one entry of a list: `Err` says why it cannot be used (not an object, no id).
    pub fn from_value(value: Value) -> Result<Template, String> {
        let Value::Object(mut map) = value else {
            return Err("an entry that is not an object".into());
        };
        let id = map
            .get("id")
            .and_then(text)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "an entry without an `id`".to_string())?;
        map.remove("id");
        let mut take = |key: &str| match map.get(key).and_then(text) {
            Some(t) => {
                map.remove(key);
                Some(t)
            }
            // Null is no value; anything else that is not text stays in `extra`.
            None => {
                if map.get(key).is_some_and(Value::is_null) {
                    map.remove(key);
                }
                None
            }
        };
        let name_en = take("name_en");
        let name_zh = take("name_zh");
        let gender = take("gender");
        let scenes_type = take("scenes_type");
        let region = take("region");
        let show_image = take("show_image");
        Ok(Template {
            id,
            name_en,
            name_zh,
            gender,
            scenes_type,
            region,
            show_image,
            extra: map,
        })
    }

    /// A documented field by name (`id`, `name_en`, …), or an extra one written as text.
    pub(crate) fn get(&self, field: &str) -> Option<String> {
        match field {
            "id" => Some(self.id.clone()),
            "name_en" => self.name_en.clone(),
            "name_zh" => self.name_zh.clone(),
            "gender" => self.gender.clone(),
            "scenes_type" => self.scenes_type.clone(),
            "region" => self.region.clone(),
            "show_image" => self.show_image.clone(),
            other => self.extra.get(other).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    }

    /// The name a person reads: English, else Chinese, else nothing.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name_en
            .as_deref()
            .or(self.name_zh.as_deref())
            .filter(|n| !n.trim().is_empty())
    }
}

/// A whole list, as read (or as cached).
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    /// Which list.
    pub which: Which,
    /// Its templates, in the API's order, each id once.
    pub templates: Vec<Template>,
}

impl List {
    /// The template with this id.
    pub fn find(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.id == id)
    }
}

/// Whether lists read from this server are cached: not the in-process simulator's (`--simulate`:
/// its port changes every time, and reading its lists costs nothing).
fn cached(settings: &ConnectionSettings) -> bool {
    !matches!(settings.server, Server::Simulator)
}

/// Read one whole list from the server `client` reaches, with the connection's retries and
/// `--rate` (one unit per page); keep it in the cache (except the in-process simulator's).
pub(crate) async fn read(
    client: &Client,
    settings: &ConnectionSettings,
    shutdown: &Shutdown,
    which: Which,
    page_size: u32,
) -> anyhow::Result<List> {
    let retrier = Retrier::new(settings.retry.clone(), shutdown.clone());
    let limiters = Limiters::submissions(settings.rates);
    let list = fetch::fetch(
        client,
        &retrier,
        limiters.get(Kind::Model),
        which,
        page_size,
    )
    .await?;
    if cached(settings) {
        cache::write(client.base().model_origin(), &list);
    }
    Ok(list)
}

/// Both lists for a check: from the cache when younger than [`cache::LIFETIME`] (unless
/// `refresh`), else read from the server (and cached).
pub(crate) async fn lists(
    client: &Client,
    settings: &ConnectionSettings,
    shutdown: &Shutdown,
    refresh: bool,
) -> anyhow::Result<check::Lists> {
    let origin = client.base().model_origin();
    let mut got = Vec::new();
    for which in Which::ALL {
        let hit = (cached(settings) && !refresh)
            .then(|| cache::read(origin, which))
            .flatten()
            .filter(|c| c.age < cache::LIFETIME);
        let list = match hit {
            Some(c) => {
                tracing::info!(
                    "the {which} template list ({} templates) from the cache, read {} ago",
                    c.list.templates.len(),
                    humantime::format_duration(std::time::Duration::from_secs(c.age.as_secs()))
                );
                c.list
            }
            None => {
                let list = read(
                    client,
                    settings,
                    shutdown,
                    which,
                    crate::api::MAX_TEMPLATE_PAGE_SIZE,
                )
                .await?;
                tracing::info!(
                    "the {which} template list ({} templates) read from {origin}",
                    list.templates.len()
                );
                list
            }
        };
        got.push(list);
    }
    let scene = got.pop().expect("two lists");
    let human = got.pop().expect("two lists");
    Ok(check::Lists { human, scene })
}

/// `--check-templates`: every template id of the manifests against the lists (exit 2 on an
/// unknown one, every problem printed; exit 3 when the lists cannot be read). `client`: the
/// command's client, if it has one (a dry run has none: one is made). Returns the line that says
/// what was checked.
pub(crate) async fn check_manifests(
    manifests: &[crate::manifest::Manifest],
    run_id: Option<&str>,
    settings: &ConnectionSettings,
    client: Option<&Client>,
    refresh: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<String> {
    let refs = check::Refs::of(manifests, run_id);
    if refs.is_empty() {
        return Ok("template ids: none in the manifests (nothing to check)".into());
    }
    let own;
    let client = match client {
        Some(c) => c,
        None => {
            own = crate::client::connection::connect(settings).await?;
            &own.client
        }
    };
    let lists = lists(client, settings, shutdown, refresh).await?;
    let problems = refs.unknown(&lists);
    if problems.is_empty() {
        let (h, s) = (refs.count(Which::Human), refs.count(Which::Scene));
        return Ok(format!(
            "template ids: {h} human, {s} scene, all listed by the API"
        ));
    }
    let listed = crate::validate::MAX_LISTED;
    for p in problems.iter().take(listed) {
        crate::logging::error(&p.to_string());
    }
    if problems.len() > listed {
        crate::logging::error(&format!("… and {} more problems", problems.len() - listed));
    }
    let n = problems.len();
    Err(crate::exit::invalid(format!(
        "{n} problem{} in the manifests: template ids the API does not list (--check-templates); nothing was sent",
        if n == 1 { "" } else { "s" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_entry_is_read_field_by_field_and_keeps_what_it_does_not_know() {
        let t = Template::from_value(json!({
            "id": 1042, "name_en": "Ava", "name_zh": "艾娃", "gender": "Woman",
            "show_image": "https://x/a.jpg", "region": null, "scenes_type": ["odd"],
            "age_range": "20-25", "sort": 3
        }))
        .unwrap();
        assert_eq!(t.id, "1042");
        assert_eq!(t.name(), Some("Ava"));
        assert_eq!(t.region, None);
        assert_eq!(t.scenes_type, None);
        assert_eq!(t.extra.len(), 3, "{:?}", t.extra);
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(back["age_range"], "20-25");
        assert_eq!(back["scenes_type"], json!(["odd"]));
        assert_eq!(back["id"], "1042");
        assert!(back.get("region").is_none());
        assert!(Template::from_value(json!({"name_en": "x"})).is_err());
        assert!(Template::from_value(json!({"id": " "})).is_err());
        assert!(Template::from_value(json!("h-1")).is_err());
    }
}
