//! What `templates` prints: a table for a person, CSV for a spreadsheet, JSON for a script.
//!
//! - **table**: id, English name, Chinese name, gender (humans) or scene type (scenes), region;
//!   columns aligned by display width (a Chinese character takes two cells).
//! - **csv**: the same columns and `show_image`, then every field the documentation does not
//!   name, in the order first seen; a cell that a spreadsheet would run as a formula gets a
//!   leading `'` (as `results.csv` does).
//! - **json**: an array of the templates as the API sent them, every field kept (a documented
//!   field that is not text, and fields the documentation does not name, as they came).
//!
//! Text from the API has its control characters escaped in the table and the CSV.

use super::{List, Which};
use crate::logging::safe;

/// The columns of the table and the first ones of the CSV.
fn columns(which: Which) -> [&'static str; 5] {
    ["id", "name_en", "name_zh", which.group_field(), "region"]
}

/// How many terminal cells `s` takes: East Asian wide characters two, others one.
pub(crate) fn width(s: &str) -> usize {
    s.chars().map(|c| if wide(c) { 2 } else { 1 }).sum()
}

/// The wide ranges of Unicode's East Asian Width (W and F) that names use: CJK, kana, hangul,
/// full-width forms.
fn wide(c: char) -> bool {
    matches!(u32::from(c),
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x20000..=0x3FFFD)
}

/// The list as an aligned table.
pub(crate) fn table(list: &List) -> String {
    let cols = columns(list.which);
    let rows: Vec<Vec<String>> = std::iter::once(cols.iter().map(|c| c.to_string()).collect())
        .chain(list.templates.iter().map(|t| {
            cols.iter()
                .map(|c| safe(&t.get(c).unwrap_or_default()).into_owned())
                .collect()
        }))
        .collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| rows.iter().map(|r| width(&r[i])).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line += cell;
            if i + 1 < row.len() {
                line += &" ".repeat(widths[i] - width(cell) + 2);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// The list as CSV: the documented fields, then the others.
pub(crate) fn csv(list: &List) -> Result<String, csv::Error> {
    let mut header: Vec<String> = columns(list.which).iter().map(|c| c.to_string()).collect();
    header.push("show_image".into());
    for t in &list.templates {
        for k in t.extra.keys() {
            if !header.contains(k) {
                header.push(k.clone());
            }
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header)?;
    for t in &list.templates {
        w.write_record(header.iter().map(|c| {
            let value = t.get(c).unwrap_or_default();
            crate::results::no_formula(&safe(&value)).into_owned()
        }))?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("CSV of strings is UTF-8"))
}

/// The list as a JSON array, every field kept.
pub(crate) fn json(list: &List) -> String {
    let mut s = serde_json::to_string_pretty(&list.templates).expect("templates serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::Template;
    use serde_json::json;

    fn list() -> List {
        List {
            which: Which::Human,
            templates: vec![
                Template::from_value(json!({"id": "h-1", "name_en": "Ava", "name_zh": "艾娃", "gender": "Woman", "age_range": "20-25"})).unwrap(),
                Template::from_value(json!({"id": "h-22", "name_en": "=cmd\u{1b}", "gender": "Man", "tags": ["a"]})).unwrap(),
            ],
        }
    }

    #[test]
    fn the_table_aligns_wide_characters() {
        let t = table(&list());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "id    name_en     name_zh  gender  region");
        assert_eq!(lines[1], "h-1   Ava         艾娃     Woman");
        assert!(lines[2].starts_with("h-22  =cmd\\u{1b}"), "{}", lines[2]);
        assert_eq!(width("艾娃 a"), 6);
    }

    #[test]
    fn csv_keeps_every_field_and_guards_formulas() {
        let c = csv(&list()).unwrap();
        let mut r = ::csv::Reader::from_reader(c.as_bytes());
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(
            header,
            [
                "id",
                "name_en",
                "name_zh",
                "gender",
                "region",
                "show_image",
                "age_range",
                "tags"
            ]
        );
        let rows: Vec<::csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][6], "20-25");
        assert_eq!(&rows[1][1], "'=cmd\\u{1b}");
        assert_eq!(&rows[1][7], "[\"a\"]");
        let back: Vec<serde_json::Value> = serde_json::from_str(&json(&list())).unwrap();
        assert_eq!(back[1]["tags"], json!(["a"]));
    }
}
