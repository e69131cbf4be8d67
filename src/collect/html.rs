//! `DIR/index.html`: the contact sheet, a page a person can look a sweep over with.
//!
//! It exists because a folder of UUID-named files answers "is it there?", not "which style works
//! best for the sneaker?". The page is self-contained — inline CSS, no script at all, images by
//! relative path — so DIR can be zipped, copied or served as is. Everything that came from outside
//! (job ids, variable values, prompts, API messages, paths) is HTML-escaped.
//!
//! Layout, per job (jobs in the order of the results):
//! - the job's **axes** are its `var.*` variables, except that variables whose values always go
//!   together — the columns of one `for_each` row, such as `sku`, `title` and `image` — form one
//!   axis (labelled `sku · title · image`), since a grid of two such variables would only fill its
//!   diagonal;
//! - no axis: a **strip** of tiles; one axis: a **labelled row**, one labelled group per value;
//!   two axes: a **grid**, rows = the first axis in column order (the outer loop of the matrix),
//!   columns = the second, with labelled headers;
//! - more than two axes: the two with the most values make the grid (ties: the first in column
//!   order) and the others split the job into groups, one grid per combination, each headed by
//!   its values.
//!
//! A cell holds every image of the requests with those values (all images of a request, all
//! repeats), in the results' order. A model request's garment photo (`collect::inputs`) comes
//! first: in a grid row's header when the whole row shares it, else before the tiles of the
//! request it differs from the one before; its template ids are labelled with their names when
//! the lists are known (under the job's title when the whole job shares them, else on each tile). A tile links to its full image; without an image it shows its
//! status (queued, running, failed, refused …) and the reason; `meta.*` values are its caption.
//! Markup carries `data-*` attributes (`data-job`, `data-row`, `data-col`, `data-status`, …) so
//! tests and scripts can read the page without guessing.

use std::fmt::Write as _;

use super::Summary;
use super::batch::{Batch, Sub, SubStatus, Task};
use super::inputs::{Extras, Input};
use super::layout::{Axis, Layout, label, layout, meta_name};
use crate::templates::Which;

/// Escape text for HTML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The style of the contact sheet and of the template gallery (`sheet.css`, kept apart from the
/// markup).
const CSS: &str = concat!("\n", include_str!("sheet.css"));

/// The top of a self-contained page (the contact sheet, the template gallery): the head with the
/// shared stylesheet, then `<body><header>` (left open) with the title and, beside it, `what`.
pub(crate) fn page_start(command: &str, title: &str, what: &str) -> String {
    let mut h = String::new();
    h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    let _ = writeln!(
        h,
        "<meta name=\"generator\" content=\"hidream-batch {command}\">"
    );
    let _ = writeln!(h, "<title>{title}: {}</title>", escape(what));
    let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>\n<header>");
    let _ = writeln!(
        h,
        "<h1>{title} <span class=\"k\">{}</span></h1>",
        escape(what)
    );
    h
}

/// The whole page.
pub(crate) fn render(batch: &Batch, summary: &Summary, source: &str, extras: &Extras) -> String {
    let mut jobs: Vec<(&str, Vec<&Task>)> = Vec::new();
    for t in &batch.tasks {
        match jobs.iter_mut().find(|(j, _)| *j == t.job) {
            Some((_, list)) => list.push(t),
            None => jobs.push((&t.job, vec![t])),
        }
    }
    let mut h = page_start("collect", "Contact sheet", source);
    let _ = writeln!(
        h,
        "<p class=\"summary\" data-images=\"{}\"><b>{}</b> images: <b>{}</b> done, <b>{}</b> failed, <b>{}</b> refused, <b>{}</b> pending{}</p>",
        summary.images,
        summary.images,
        summary.done,
        summary.failed,
        summary.refused,
        summary.pending,
        if summary.not_downloaded > 0 {
            format!(
                ", <b>{}</b> done but not downloaded",
                summary.not_downloaded
            )
        } else {
            String::new()
        }
    );
    h += "<nav class=\"jobs\">";
    for (job, _) in &jobs {
        let _ = write!(
            h,
            "<a href=\"#{}\">{}</a>",
            escape(&anchor(job)),
            escape(job)
        );
    }
    h += "</nav>\n</header>\n<main>\n";
    for (job, tasks) in &jobs {
        job_section(&mut h, batch, extras, job, tasks);
    }
    if jobs.is_empty() {
        h += "<p>No submitted tasks in the results.</p>\n";
    }
    let _ = writeln!(
        h,
        "</main>\n<footer>Written by hidream-batch collect from <code>{}</code>. Images are relative to this page; the same data is in <code>images.csv</code>.</footer>\n</body>\n</html>",
        escape(source)
    );
    h
}

fn anchor(job: &str) -> String {
    format!("job-{}", super::batch::safe_name(job))
}

/// What every tile of a job needs: the batch, the `meta.*` columns that are captions, the extras
/// (garment photos, template names), and which template ids vary within the job (captions;
/// the others are said once under the title).
struct Cx<'a> {
    batch: &'a Batch,
    captions: &'a [usize],
    extras: &'a Extras,
    template_captions: [bool; 2],
}

fn job_section(h: &mut String, batch: &Batch, extras: &Extras, job: &str, tasks: &[&Task]) {
    let images: usize = tasks.iter().map(|t| t.subs.len().max(1)).sum();
    let kind = tasks.first().map(|t| t.kind.as_str()).unwrap_or("");
    let _ = writeln!(
        h,
        "<section class=\"job\" id=\"{}\" data-job=\"{}\">\n<h2>{}<span class=\"info\">{kind} · {} request{} · {images} image{}</span></h2>",
        escape(&anchor(job)),
        escape(job),
        escape(job),
        tasks.len(),
        if tasks.len() == 1 { "" } else { "s" },
        if images == 1 { "" } else { "s" },
    );
    // `meta.*` values the same for the whole job are said once, under its title; the others
    // are the captions of its tiles.
    let (constant, captions): (Vec<usize>, Vec<usize>) = (0..batch.meta.len())
        .filter(|&m| tasks.iter().any(|t| !t.meta[m].is_empty()))
        .partition(|&m| tasks.iter().all(|t| t.meta[m] == tasks[0].meta[m]));
    // Template ids likewise: the same for the whole job, said once; varying, on each tile.
    let mut template_captions = [false; 2];
    let mut constant_templates = Vec::new();
    for (i, which) in Which::ALL.into_iter().enumerate() {
        let first = &tasks[0].templates[i];
        if tasks.iter().all(|t| t.templates[i].is_empty()) {
            continue;
        }
        if tasks.iter().all(|t| t.templates[i] == *first) {
            constant_templates.push((which, first.as_str()));
        } else {
            template_captions[i] = true;
        }
    }
    if !constant.is_empty() || !constant_templates.is_empty() {
        h.push_str("<p class=\"job-meta\">");
        for m in constant {
            let _ = write!(
                h,
                "<span data-meta=\"{0}\"><span class=\"k\">{0}</span> {1}</span>",
                escape(meta_name(&batch.meta[m])),
                escape(&tasks[0].meta[m])
            );
        }
        for (which, id) in constant_templates {
            template_label(h, extras, which, id);
        }
        h.push_str("</p>\n");
    }
    let cx = Cx {
        batch,
        captions: captions.as_slice(),
        extras,
        template_captions,
    };
    match layout(tasks, batch.vars.len()) {
        Layout::Strip => {
            h.push_str("<div class=\"strip\" data-layout=\"strip\">");
            let mut shown = None;
            for t in tasks {
                tiles(h, &cx, t, Some(&mut shown));
            }
            h.push_str("</div>\n");
        }
        Layout::Row(axis) => {
            let _ = write!(
                h,
                "<div class=\"row-layout\" data-layout=\"row\" data-cols=\"{}\">",
                escape(&axis.name(batch))
            );
            for value in &axis.values {
                let l = label(value);
                let _ = write!(
                    h,
                    "<div class=\"column\" data-col=\"{}\"><div class=\"label\"><span class=\"k\">{}</span> {}</div><div class=\"tiles\">",
                    escape(&l),
                    escape(&axis.name(batch)),
                    escape(&l)
                );
                let mut shown = None;
                for t in tasks.iter().filter(|t| axis.key(t) == *value) {
                    tiles(h, &cx, t, Some(&mut shown));
                }
                h.push_str("</div></div>");
            }
            h.push_str("</div>\n");
        }
        Layout::Grid { rows, cols, rest } => {
            // One group per combination of the remaining axes (one group when there are none).
            let mut groups: Vec<(Vec<Vec<String>>, Vec<&Task>)> = Vec::new();
            for t in tasks {
                let key: Vec<Vec<String>> = rest.iter().map(|a| a.key(t)).collect();
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, list)) => list.push(t),
                    None => groups.push((key, vec![t])),
                }
            }
            for (key, members) in &groups {
                let group_label = rest
                    .iter()
                    .zip(key)
                    .map(|(a, v)| (a.name(batch), label(v)))
                    .collect::<Vec<_>>();
                if !group_label.is_empty() {
                    h.push_str("<h3 class=\"group\">");
                    for (i, (name, value)) in group_label.iter().enumerate() {
                        if i > 0 {
                            h.push_str(" · ");
                        }
                        let _ = write!(
                            h,
                            "<span class=\"k\">{}</span> {}",
                            escape(name),
                            escape(value)
                        );
                    }
                    h.push_str("</h3>\n");
                }
                grid(h, &cx, &rows, &cols, members, &group_label);
            }
        }
    }
    h.push_str("</section>\n");
}

fn grid(
    h: &mut String,
    cx: &Cx<'_>,
    rows: &Axis,
    cols: &Axis,
    tasks: &[&Task],
    group: &[(String, String)],
) {
    let present = |axis: &Axis| -> Vec<Vec<String>> {
        axis.values
            .iter()
            .filter(|v| tasks.iter().any(|t| axis.key(t) == **v))
            .cloned()
            .collect()
    };
    let batch = cx.batch;
    let (row_values, col_values) = (present(rows), present(cols));
    let group_attr = group
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let _ = write!(
        h,
        "<div class=\"scroll\"><table class=\"grid\" data-layout=\"grid\" data-rows=\"{}\" data-cols=\"{}\" data-group=\"{}\">\n<thead><tr><th class=\"corner\">{} ↓ · {} →</th>",
        escape(&rows.name(batch)),
        escape(&cols.name(batch)),
        escape(&group_attr),
        escape(&rows.name(batch)),
        escape(&cols.name(batch)),
    );
    for c in &col_values {
        let _ = write!(
            h,
            "<th scope=\"col\" data-col=\"{}\">{}</th>",
            escape(&label(c)),
            header(cx, cols, tasks, c)
        );
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in &row_values {
        // A row whose requests share one garment photo shows it in its header, once.
        let in_row: Vec<&&Task> = tasks.iter().filter(|t| rows.key(t) == *r).collect();
        let image = in_row[0].image.as_str();
        let row_input =
            (!image.is_empty() && in_row.iter().all(|t| t.image == image)).then_some(image);
        let _ = write!(
            h,
            "<tr><th scope=\"row\" data-row=\"{}\">{}",
            escape(&label(r)),
            header(cx, rows, tasks, r)
        );
        if let Some(image) = row_input {
            input_tile(h, cx.extras, image);
        }
        h.push_str("</th>");
        for c in &col_values {
            let members: Vec<&&Task> = tasks
                .iter()
                .filter(|t| rows.key(t) == *r && cols.key(t) == *c)
                .collect();
            let attrs = format!(
                "data-row=\"{}\" data-col=\"{}\"",
                escape(&label(r)),
                escape(&label(c))
            );
            if members.is_empty() {
                let _ = write!(h, "<td class=\"empty\" {attrs}></td>");
                continue;
            }
            let _ = write!(h, "<td {attrs}><div class=\"cell\">");
            let mut shown = None;
            for t in members {
                let track = row_input.is_none().then_some(&mut shown);
                tiles(h, cx, t, track);
            }
            h.push_str("</div></td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>\n");
}

/// The tiles of one task: one per image (one placeholder if no image is known yet), after its
/// garment photo when `shown` tracks them and it differs from the one shown last.
fn tiles<'a>(h: &mut String, cx: &Cx<'_>, t: &'a Task, shown: Option<&mut Option<&'a str>>) {
    if let Some(shown) = shown
        && !t.image.is_empty()
        && *shown != Some(t.image.as_str())
    {
        input_tile(h, cx.extras, &t.image);
        *shown = Some(t.image.as_str());
    }
    if t.subs.is_empty() {
        tile(h, cx, t, None);
    }
    for s in &t.subs {
        tile(h, cx, t, Some(s));
    }
}

/// The garment photo of a model request: a thumbnail copied into DIR, a link to a URL, or why
/// neither.
fn input_tile(h: &mut String, extras: &Extras, image: &str) {
    let _ = write!(
        h,
        "<figure class=\"tile input\" data-input=\"{}\">",
        escape(image)
    );
    let name = image.rsplit('/').next().unwrap_or(image);
    match extras.inputs.get(image) {
        Some(Input::Local(rel)) => {
            let _ = write!(
                h,
                "<a href=\"{0}\"><img src=\"{0}\" alt=\"garment photo {1}\" loading=\"lazy\"></a>",
                escape(rel),
                escape(image)
            );
        }
        Some(Input::Url(url)) => {
            let _ = write!(
                h,
                "<div class=\"placeholder\"><span class=\"badge\">photo by URL</span><a class=\"why\" href=\"{0}\">{0}</a></div>",
                escape(url)
            );
        }
        Some(Input::Missing(why)) => {
            let _ = write!(
                h,
                "<div class=\"placeholder\"><span class=\"badge\">not found</span><span class=\"why\">{}</span></div>",
                escape(why)
            );
        }
        None => {
            let _ = write!(
                h,
                "<div class=\"placeholder\"><span class=\"why\">{}</span></div>",
                escape(image)
            );
        }
    }
    let _ = write!(
        h,
        "<figcaption><span class=\"input-label\">garment photo</span><span>{}</span></figcaption></figure>",
        escape(name)
    );
}

/// `human h-101 · Ava`: a template id and, when the lists are known, its name.
/// A grid header: the axis value, each part that is the template id of every request under it
/// followed by the template's name (when the lists are known). HTML, escaped.
fn header(cx: &Cx<'_>, axis: &Axis, tasks: &[&Task], value: &[String]) -> String {
    let under: Vec<&&Task> = tasks.iter().filter(|t| axis.key(t) == value).collect();
    value
        .iter()
        .map(|part| {
            let name = Which::ALL.into_iter().enumerate().find_map(|(i, which)| {
                under
                    .iter()
                    .all(|t| t.templates[i] == *part)
                    .then(|| cx.extras.name(which, part))
                    .flatten()
            });
            match name {
                Some(name) => format!(
                    "{} <span class=\"template-name\">{}</span>",
                    escape(part),
                    escape(name)
                ),
                None => escape(part),
            }
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn template_label(h: &mut String, extras: &Extras, which: Which, id: &str) {
    let _ = write!(
        h,
        "<span data-template=\"{which}\" data-template-id=\"{}\"><span class=\"k\">{which}</span> <code class=\"id\">{}</code>",
        escape(id),
        escape(id)
    );
    if let Some(name) = extras.name(which, id) {
        let _ = write!(h, " {}", escape(name));
    }
    h.push_str("</span>");
}

fn tile(h: &mut String, cx: &Cx<'_>, t: &Task, sub: Option<&Sub>) {
    let (batch, captions) = (cx.batch, cx.captions);
    let status = sub.map(|s| s.status).unwrap_or(SubStatus::Unknown);
    let name = status.name();
    let class = match name.as_str() {
        "queued" | "running" | "done" | "failed" | "refused" | "unknown" => name.clone(),
        _ => "other".to_string(),
    };
    let n = sub.map(|s| s.index.to_string()).unwrap_or_default();
    let title = if t.prompt.is_empty() {
        format!("{} #{n}", t.request_id)
    } else {
        format!("{}\n\n{} #{n}", t.prompt, t.request_id)
    };
    let _ = write!(
        h,
        "<figure class=\"tile status-{class}\" data-request-id=\"{}\" data-sub-task-id=\"{}\" data-status=\"{}\" title=\"{}\">",
        escape(&t.request_id),
        escape(sub.map(|s| s.id.as_str()).unwrap_or("")),
        escape(&name),
        escape(&title),
    );
    match sub.and_then(|s| s.path.as_deref()) {
        Some(path) => {
            let _ = write!(
                h,
                "<a href=\"{0}\"><img src=\"{0}\" alt=\"{1}\" loading=\"lazy\"></a>",
                escape(path),
                escape(&format!("{} {} #{n}", t.job, t.request_id)),
            );
        }
        None => {
            let shown = if status.is_done() {
                "not downloaded".to_string()
            } else {
                name.clone()
            };
            let why = sub
                .map(|s| s.message.as_str())
                .filter(|m| !m.is_empty())
                .unwrap_or(&t.message);
            let _ = write!(
                h,
                "<div class=\"placeholder\"><span class=\"badge\">{}</span>",
                escape(&shown)
            );
            if !why.is_empty() {
                let _ = write!(h, "<span class=\"why\">{}</span>", escape(why));
            }
            h.push_str("</div>");
        }
    }
    let lines: Vec<(&str, &str)> = captions
        .iter()
        .map(|&m| (meta_name(&batch.meta[m]), t.meta[m].as_str()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let templates: Vec<(Which, &str)> = Which::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| cx.template_captions[*i] && !t.templates[*i].is_empty())
        .map(|(i, which)| (which, t.templates[i].as_str()))
        .collect();
    if !lines.is_empty() || !templates.is_empty() {
        h.push_str("<figcaption>");
        for (which, id) in templates {
            template_label(h, cx.extras, which, id);
        }
        for (k, v) in lines {
            let _ = write!(
                h,
                "<span data-meta=\"{0}\"><span class=\"k\">{0}</span> {1}</span>",
                escape(k),
                escape(v)
            );
        }
        h.push_str("</figcaption>");
    }
    h.push_str("</figure>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
