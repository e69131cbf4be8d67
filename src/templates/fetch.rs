//! Reading a whole template list: `GET <list>?page_size=N&page_index=K` for K = 1, 2, … until
//! `total_page`, each page through the one retry driver ([`Retrier::drive`]) and read by the rule
//! every query follows ([`classify::reply`]: 401/403 stop, 408/429/5xx and transport failures are
//! retried, `code != 0` is a refusal).
//!
//! The paging is not trusted to end: at most [`limits::TEMPLATE_PAGES`] pages and
//! [`limits::TEMPLATES`] templates are read; a page that brings no template not seen before (the
//! server ignores `page_index`) ends the read with an error, as does a `total_page` above the
//! bound. Without a readable `total_page`, the read ends at an empty page or one shorter than
//! `page_size`. A template listed on two pages (the list changed while it was read) is kept once.

use std::collections::HashSet;

use serde_json::Value;

use super::{List, Template, Which};
use crate::client::{BaseUrl, Client};
use crate::exit;
use crate::limits;
use crate::rate::Limiter;
use crate::retry::classify::{self, ReplyVerdict};
use crate::retry::{Ending, Retrier, Step};

/// The URL of one page of a list.
pub(crate) fn page_url(
    base: &BaseUrl,
    which: Which,
    page_size: u32,
    page_index: u32,
) -> Result<String, String> {
    let mut url = reqwest::Url::parse(&format!("{}{}", base.model_origin(), which.path()))
        .map_err(|e| format!("cannot build the template list URL: {e}"))?;
    url.query_pairs_mut()
        .append_pair("page_size", &page_size.to_string())
        .append_pair("page_index", &page_index.to_string());
    Ok(url.into())
}

/// One page's `result`.
#[derive(Debug)]
struct Page {
    entries: Vec<Value>,
    total_page: Option<u64>,
    total_count: Option<u64>,
}

/// Read a page's `result`: `templates` must be a list; `total_page` and `total_count` are numbers
/// or strings of digits, or unknown.
fn read_page(result: Value) -> Result<Page, String> {
    let Value::Object(mut map) = result else {
        return Err("the API answered success without a `result` object".into());
    };
    let count = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let total_page = count(map.get("total_page"));
    let total_count = count(map.get("total_count"));
    match map.remove("templates") {
        Some(Value::Array(entries)) => Ok(Page {
            entries,
            total_page,
            total_count,
        }),
        // No templates at all is an empty page.
        Some(Value::Null) | None => Ok(Page {
            entries: Vec::new(),
            total_page,
            total_count,
        }),
        Some(_) => Err("the answer's `templates` is not a list".into()),
    }
}

/// Read every page of `which` at `page_size` (1–100). `gate`: the rate limiter an attempt takes
/// first (`--rate`), if any. Errors carry their exit code: 3 for a list that cannot be read
/// (refused credentials included), 130 for a signal.
pub(crate) async fn fetch(
    client: &Client,
    retrier: &Retrier,
    gate: Option<&Limiter>,
    which: Which,
    page_size: u32,
) -> anyhow::Result<List> {
    let origin = client.base().model_origin().to_string();
    let fail = |why: String| {
        exit::aborted(format!(
            "cannot read the {which} template list from {origin}: {why}"
        ))
    };
    let mut templates: Vec<Template> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let (mut repeated, mut unusable) = (0u64, Vec::new());
    let mut total_pages: Option<u64> = None;
    let mut total_count = None;
    let mut page_index: u32 = 1;
    loop {
        if page_index > limits::TEMPLATE_PAGES {
            return Err(fail(format!(
                "it has more than {} pages, the most hidream-batch reads (README \"Limits\")",
                limits::TEMPLATE_PAGES
            )));
        }
        let url = page_url(client.base(), which, page_size, page_index).map_err(fail)?;
        let page = page(client, retrier, gate, which, &url)
            .await
            .map_err(|e| match e {
                PageError::Stopped => {
                    exit::interrupted("interrupted while reading the template lists")
                }
                PageError::Unauthorized(m) => exit::aborted(format!(
                    "the API refused the credentials ({m}) when the {which} template list was read; check HIDREAM_API_TOKEN; nothing was sent"
                )),
                PageError::Failed(m) => fail(m),
            })?;
        if page_index == 1 {
            total_pages = page.total_page;
            total_count = page.total_count;
        }
        if let Some(n) = total_pages
            && n > u64::from(limits::TEMPLATE_PAGES)
        {
            return Err(fail(format!(
                "it says {n} pages of {page_size}, more than the {} hidream-batch reads (README \"Limits\")",
                limits::TEMPLATE_PAGES
            )));
        }
        let listed = page.entries.len();
        let unusable_before = unusable.len();
        let mut new = 0;
        for entry in page.entries {
            match Template::from_value(entry) {
                Ok(t) => {
                    if seen.insert(t.id.clone()) {
                        templates.push(t);
                        new += 1;
                    } else {
                        repeated += 1;
                    }
                }
                Err(why) => unusable.push(why),
            }
        }
        if templates.len() > limits::TEMPLATES {
            return Err(fail(format!(
                "it holds more than {} templates, the most hidream-batch keeps (README \"Limits\")",
                limits::TEMPLATES
            )));
        }
        tracing::debug!(%which, page_index, listed, new, "template list page");
        if listed == 0 {
            break;
        }
        if new == 0 && unusable.len() == unusable_before {
            return Err(fail(format!(
                "page {page_index} lists only templates of earlier pages: the server does not page as documented, and the list cannot be known whole"
            )));
        }
        let last = match total_pages {
            Some(n) => u64::from(page_index) >= n,
            None => listed < page_size as usize,
        };
        if last {
            break;
        }
        page_index += 1;
    }
    if repeated > 0 {
        tracing::warn!(
            "the {which} template list named {repeated} template{} on more than one page (it changed while it was read?); each is kept once",
            if repeated == 1 { "" } else { "s" }
        );
    }
    if let Some(first) = unusable.first() {
        tracing::warn!(
            "the {which} template list has {} unusable entr{} (skipped), such as {first}",
            unusable.len(),
            if unusable.len() == 1 { "y" } else { "ies" }
        );
    }
    if let Some(n) = total_count
        && n != templates.len() as u64
    {
        tracing::warn!(
            "the {which} template list says {n} templates; {} were read",
            templates.len()
        );
    }
    Ok(List { which, templates })
}

/// Why a page was not read.
enum PageError {
    Stopped,
    Unauthorized(String),
    Failed(String),
}

/// One page, with its retries.
async fn page(
    client: &Client,
    retrier: &Retrier,
    gate: Option<&Limiter>,
    which: Which,
    url: &str,
) -> Result<Page, PageError> {
    let what = format!("{which} templates");
    let ending = retrier
        .drive(gate.map(|l| (l, 1)), &what, async |n| {
            let answer = client.get_reply(crate::api::Kind::Model, url).await;
            let retry = |reason: String, retry_after| {
                tracing::debug!(attempt = n, "{what}: {}", crate::logging::safe(&reason));
                Step::Retry {
                    reason,
                    retry_after,
                }
            };
            match classify::reply(answer) {
                ReplyVerdict::Answer(reply) => match read_page(reply.result) {
                    Ok(page) => Step::Done(Ok(page)),
                    Err(why) => retry(why, None),
                },
                ReplyVerdict::Retry {
                    reason,
                    retry_after,
                } => retry(reason, retry_after),
                ReplyVerdict::Refused(m) => Step::Done(Err(PageError::Failed(m))),
                ReplyVerdict::Unauthorized(m) => Step::Done(Err(PageError::Unauthorized(m))),
            }
        })
        .await;
    let safe = |m: String| PageError::Failed(crate::logging::safe(&m).into_owned());
    match ending {
        Ending::Done(Ok(page)) => Ok(page),
        Ending::Done(Err(PageError::Failed(m))) => Err(safe(m)),
        Ending::Done(Err(e)) => Err(e),
        Ending::Exhausted { attempts, reason } => Err(safe(format!(
            "{reason} (after {attempts} attempt{})",
            if attempts == 1 { "" } else { "s" }
        ))),
        Ending::Stopped { .. } => Err(PageError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_page_url_is_on_the_model_host() {
        assert_eq!(
            page_url(&BaseUrl::REAL, Which::Human, 100, 2).unwrap(),
            "https://hidreamai.com/api-pub/ec/v3/template/model/human?page_size=100&page_index=2"
        );
        let base = BaseUrl::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(
            page_url(&base, Which::Scene, 20, 1).unwrap(),
            "http://127.0.0.1:9/api-pub/ec/v3/template/model/scene?page_size=20&page_index=1"
        );
    }

    #[test]
    fn a_page_is_read_leniently_but_templates_must_be_a_list() {
        let p =
            read_page(json!({"templates": [{"id": "a"}], "total_page": "3", "total_count": 41}))
                .unwrap();
        assert_eq!(
            (p.entries.len(), p.total_page, p.total_count),
            (1, Some(3), Some(41))
        );
        let p = read_page(json!({"templates": null})).unwrap();
        assert!(p.entries.is_empty() && p.total_page.is_none());
        assert!(read_page(json!({"templates": {}})).is_err());
        assert!(read_page(json!(null)).is_err());
    }
}
