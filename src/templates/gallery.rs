//! `templates human|scene --gallery DIR`: the templates as a page of their covers, to pick from by
//! eye and copy ids from.
//!
//! Each template's `show_image` is fetched once, at the size the API documents
//! (`?width=512`, [`crate::api::TEMPLATE_COVER_WIDTH`]), without the token (cover URLs may be on a
//! CDN), into `DIR/covers/<id>.<ext>`; a cover already there is not fetched again. The page,
//! `DIR/index.html`, is self-contained like the contact sheet — the same stylesheet
//! (`collect/sheet.css`), no script, covers by relative path — so DIR works offline and can be
//! zipped or shared. Templates are grouped by gender (humans) or scene type (scenes), in the
//! order the API lists them; each tile is captioned with its id (selectable with one click, to
//! paste into a manifest), its names and region. A cover that cannot be fetched is a tile saying
//! why; the page is written all the same.

use std::fmt::Write as _;
use std::path::Path;

use futures::StreamExt as _;

use super::{List, Template};
use crate::client::Client;
use crate::collect::batch::{existing, safe_name};
use crate::collect::html::escape;
use crate::retry::Retrier;

/// The gallery's page, in DIR.
pub(crate) const INDEX_HTML: &str = "index.html";
/// The covers' folder, in DIR.
pub(crate) const COVERS: &str = "covers";

/// What became of the covers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Covers {
    /// Fetched now.
    pub fetched: usize,
    /// Already in DIR.
    pub present: usize,
    /// Not fetched (the reason is on the page).
    pub failed: usize,
    /// Templates without a `show_image`.
    pub none: usize,
}

/// The cover URL of a template: its `show_image` with `width` set to `width`.
pub(crate) fn cover_url(show_image: &str, width: u32) -> Result<String, String> {
    let mut url = reqwest::Url::parse(show_image.trim())
        .map_err(|e| format!("`{}` is not a URL: {e}", crate::logging::safe(show_image)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the cover URL is not http(s): `{}`", url.scheme()));
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "width")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("width", &width.to_string());
    Ok(url.into())
}

/// The file stem of a template's cover, relative to DIR: its id when that is a safe file name,
/// else the safe name and a hash of the id (two ids never share a file).
fn stem(id: &str) -> String {
    let safe = safe_name(id);
    if safe == id {
        format!("{COVERS}/{safe}")
    } else {
        let hash = blake3::hash(id.as_bytes()).to_hex();
        format!("{COVERS}/{safe}-{}", &hash[..8])
    }
}

/// A template's cover on disk (relative to DIR), or why there is none.
type Cover = Result<String, String>;

/// Fetch the covers missing from DIR, `concurrency` at a time; then write the page.
pub(crate) async fn write(
    list: &List,
    dir: &Path,
    client: &Client,
    retrier: &Retrier,
    concurrency: usize,
    origin: &str,
) -> anyhow::Result<Covers> {
    let shown = dir.display().to_string();
    std::fs::create_dir_all(dir.join(COVERS)).map_err(|e| {
        crate::exit::aborted(format!("cannot create the gallery folder `{shown}`: {e}"))
    })?;
    let mut counts = Covers::default();
    let jobs = list.templates.iter().map(|t| async move {
        let Some(show) = t.show_image.as_deref().filter(|s| !s.trim().is_empty()) else {
            return (None, Err("no `show_image`".to_string()));
        };
        let stem = stem(&t.id);
        if let Some(rel) = existing(dir, &stem) {
            return (Some(false), Ok(rel));
        }
        let url = match cover_url(show, crate::api::TEMPLATE_COVER_WIDTH) {
            Ok(u) => u,
            Err(e) => return (Some(true), Err(e)),
        };
        let got = crate::collect::fetch::download(client, retrier, dir, &url, &stem).await;
        (
            Some(true),
            got.map_err(|e| crate::logging::safe(&e).into_owned()),
        )
    });
    let results: Vec<(Option<bool>, Cover)> = futures::stream::iter(jobs)
        .buffered(concurrency.max(1))
        .collect()
        .await;
    for (fetch, cover) in &results {
        match (fetch, cover) {
            (None, _) => counts.none += 1,
            (Some(false), _) => counts.present += 1,
            (Some(true), Ok(_)) => counts.fetched += 1,
            (Some(true), Err(_)) => counts.failed += 1,
        }
    }
    let covers: Vec<Cover> = results.into_iter().map(|(_, c)| c).collect();
    let page = render(list, &covers, origin);
    crate::collect::write_atomic(&dir.join(INDEX_HTML), page.as_bytes()).map_err(|e| {
        crate::exit::aborted(format!(
            "cannot write `{}`: {e}",
            dir.join(INDEX_HTML).display()
        ))
    })?;
    Ok(counts)
}

/// The page: one section per gender or scene type, one tile per template.
pub(crate) fn render(list: &List, covers: &[Cover], origin: &str) -> String {
    let which = list.which;
    let field = which.group_field();
    let mut groups: Vec<(String, Vec<(&Template, &Cover)>)> = Vec::new();
    for (t, c) in list.templates.iter().zip(covers) {
        let g = t
            .get(field)
            .filter(|g| !g.trim().is_empty())
            .unwrap_or_else(|| "other".into());
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, members)) => members.push((t, c)),
            None => groups.push((g, vec![(t, c)])),
        }
    }
    let title = format!("{} templates", capitalised(which.as_str()));
    let mut h = crate::collect::html::page_start("templates", &title, origin);
    let counts: Vec<String> = groups
        .iter()
        .map(|(g, m)| format!("<b>{}</b> {}", m.len(), escape(g)))
        .collect();
    let _ = writeln!(
        h,
        "<p class=\"summary\" data-templates=\"{}\"><b>{}</b> templates: {}. Copy an id into a manifest's <code>template.{which}_template_id</code> (CSV: <code>{which}_template_id</code>).</p>",
        list.templates.len(),
        list.templates.len(),
        counts.join(", ")
    );
    h += "<nav class=\"jobs\">";
    for (g, _) in &groups {
        let _ = write!(h, "<a href=\"#{}\">{}</a>", escape(&anchor(g)), escape(g));
    }
    h += "</nav>\n</header>\n<main>\n";
    for (g, members) in &groups {
        let _ = writeln!(
            h,
            "<section class=\"job\" id=\"{}\" data-group=\"{}\">\n<h2>{}<span class=\"info\">{} template{}</span></h2>\n<div class=\"strip\">",
            escape(&anchor(g)),
            escape(g),
            escape(g),
            members.len(),
            if members.len() == 1 { "" } else { "s" }
        );
        for (t, cover) in members {
            tile(&mut h, t, cover);
        }
        h += "</div>\n</section>\n";
    }
    if list.templates.is_empty() {
        let _ = writeln!(h, "<p>The API lists no {which} templates.</p>");
    }
    let _ = writeln!(
        h,
        "</main>\n<footer>Written by <code>hidream-batch templates {which} --gallery</code> from <code>{}</code>. Covers are in <code>{COVERS}/</code>, relative to this page.</footer>\n</body>\n</html>",
        escape(origin)
    );
    h
}

fn tile(h: &mut String, t: &Template, cover: &Cover) {
    let name = t.name().unwrap_or("");
    let _ = write!(
        h,
        "<figure class=\"tile template\" data-template-id=\"{}\">",
        escape(&t.id)
    );
    match cover {
        Ok(rel) => {
            let _ = write!(
                h,
                "<a href=\"{0}\"><img src=\"{0}\" alt=\"{1}\" loading=\"lazy\"></a>",
                escape(rel),
                escape(&format!("{} {name}", t.id))
            );
        }
        Err(why) => {
            let _ = write!(
                h,
                "<div class=\"placeholder\"><span class=\"badge\">no cover</span><span class=\"why\">{}</span></div>",
                escape(why)
            );
        }
    }
    let _ = write!(
        h,
        "<figcaption><code class=\"id\" data-field=\"id\">{}</code>",
        escape(&t.id)
    );
    for (field, value) in [
        ("name_en", &t.name_en),
        ("name_zh", &t.name_zh),
        ("region", &t.region),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            let _ = write!(h, "<span data-field=\"{field}\">{}</span>", escape(v));
        }
    }
    h.push_str("</figcaption></figure>");
}

fn anchor(group: &str) -> String {
    format!("group-{}", safe_name(group))
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cover_url_asks_for_the_documented_width() {
        assert_eq!(
            cover_url("https://cdn.example.com/a.jpg", 512).unwrap(),
            "https://cdn.example.com/a.jpg?width=512"
        );
        assert_eq!(
            cover_url("https://cdn.example.com/a.jpg?x=1&width=2048", 512).unwrap(),
            "https://cdn.example.com/a.jpg?x=1&width=512"
        );
        assert!(cover_url("file:///etc/passwd", 512).is_err());
        assert!(cover_url("not a url", 512).is_err());
    }

    #[test]
    fn ids_that_are_not_file_names_get_a_hashed_stem() {
        assert_eq!(stem("h-101"), "covers/h-101");
        let odd = stem("../x");
        assert!(odd.starts_with("covers/.._x-") && odd.len() == "covers/.._x-".len() + 8);
        assert_ne!(stem("a/b"), stem("a_b"));
    }
}
