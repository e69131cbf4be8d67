//! The README's usage block is the output of `hidream-batch --help`: this fails when they drift.

use crate::common::{bin, root};

#[test]
fn readme_usage_matches_help() {
    let help = String::from_utf8(bin().arg("--help").output().unwrap().stdout).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let marker = "<!-- usage:";
    let start = readme.find(marker).expect("usage marker in README");
    let block = &readme[start..];
    let open = block.find("```text\n").expect("usage block") + "```text\n".len();
    let close = block[open..].find("\n```").expect("end of usage block");
    assert_eq!(
        &block[open..open + close],
        help.trim_end(),
        "README usage block differs from --help"
    );
}

#[test]
fn readme_first_screen_has_the_two_commands() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first: String = readme.lines().take(25).collect::<Vec<_>>().join("\n");
    assert!(first.contains("cargo run --release -- run manifests/sweep.yaml --simulate"));
    assert!(first.contains("cargo test --locked"));
}

/// The README's "Limits" table shows the figures of `src/limits.rs`.
#[test]
fn readme_limits_table_matches_the_code() {
    use hidream_batch::limits::{self, *};
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("### Limits").expect("a Limits section");
    let table = &readme[start..start + readme[start..].find("\n\n**").unwrap()];
    let thousands = |n: u64| {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let rows = [
        ("YAML manifest file", limits::bytes(YAML_FILE_BYTES)),
        ("YAML values", format!("{} values", thousands(YAML_VALUES))),
        (
            "YAML values",
            format!("{} of text", limits::bytes(YAML_TEXT_BYTES)),
        ),
        ("YAML nesting", format!("{YAML_DEPTH} levels")),
        ("YAML jobs", thousands(YAML_JOBS as u64)),
        ("CSV file", limits::bytes(CSV_FILE_BYTES)),
        ("CSV rows", thousands(CSV_ROWS)),
        ("CSV columns", thousands(CSV_COLUMNS as u64)),
        ("CSV row |", limits::bytes(CSV_ROW_BYTES)),
        (
            "text-to-image `prompt`",
            format!("{} characters", thousands(TXT2IMG_PROMPT_CHARS as u64)),
        ),
        ("local image file", limits::bytes(IMAGE_FILE_BYTES)),
        (
            "inline (",
            format!("{} decoded", limits::bytes(INLINE_IMAGE_BYTES)),
        ),
        ("an API answer read", limits::bytes(ANSWER_BYTES as u64)),
        (
            "an image `collect` downloads",
            limits::bytes(DOWNLOAD_BYTES as u64),
        ),
        ("template list pages", format!("{TEMPLATE_PAGES} pages")),
        (
            "templates of one list",
            format!("{} templates", thousands(TEMPLATES as u64)),
        ),
    ];
    for (what, figure) in rows {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {what}")))
            .unwrap_or_else(|| panic!("no Limits row for {what:?}"));
        assert!(line.contains(&figure), "{what}: {figure:?} not in {line:?}");
    }
}
