//! The answer corpus (`tests/fixtures/answers/`), run through the classifiers as a table: one raw
//! HTTP answer per file, and `table.csv` saying what each means — the verdict, the code kept and
//! the message (for a task query's answer: each image's id, status, image and reason). The same
//! corpus is served over loopback by `tests/it/answers.rs` to check the whole path.

use std::path::PathBuf;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::classify::{self, QueryVerdict, Verdict};
use crate::api::answer::Reply;
use crate::client::Attempt;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/answers")
}

/// A raw answer: the status line, the headers, a blank line, the body.
fn parse(raw: &[u8]) -> (u16, HeaderMap, Vec<u8>) {
    let split = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("a blank line after the headers");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(": ").unwrap();
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    (status, headers, raw[split + 2..].to_vec())
}

/// What the classifier made of an answer, as the table writes it.
fn outcome(file: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> (String, String, String) {
    let retry_after = crate::client::retry_after(headers);
    if file.starts_with("query-") {
        return match classify::query(Ok((status, retry_after, Reply::read(body)))) {
            QueryVerdict::Answer(t) => {
                let entries: Vec<String> = t
                    .sub_task_results
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} {} {}",
                            s.sub_task_id,
                            s.task_status,
                            s.image.as_deref().unwrap_or("-"),
                            s.description.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                ("answer".into(), String::new(), entries.join(" | "))
            }
            QueryVerdict::Refused(m) => ("refused".into(), String::new(), m),
            QueryVerdict::Retry { reason, .. } => ("retry".into(), String::new(), reason),
            QueryVerdict::Unauthorized(m) => ("unauthorized".into(), String::new(), m),
        };
    }
    let attempt = Attempt::Answered {
        status,
        retry_after,
        envelope: Reply::read(body),
    };
    let code = |c: Option<i64>| c.map(|c| c.to_string()).unwrap_or_default();
    match classify::submission(attempt, &std::collections::BTreeSet::new()) {
        Verdict::Submitted {
            task_id,
            sub_task_ids,
        } => (
            "submitted".into(),
            String::new(),
            format!("{task_id} [{}]", sub_task_ids.join(",")),
        ),
        Verdict::Rejected { code: c, message } => ("rejected".into(), code(c), message),
        Verdict::Unknown { reason } => ("unknown".into(), String::new(), reason),
        Verdict::Retry { reason, .. } => ("retry".into(), String::new(), reason),
        Verdict::Unauthorized { message } => ("unauthorized".into(), String::new(), message),
        Verdict::Failed { reason } => ("failed".into(), String::new(), reason),
    }
}

#[test]
fn every_answer_of_the_corpus_means_what_the_table_says() {
    let mut table = csv::Reader::from_path(corpus().join("table.csv")).unwrap();
    let mut listed = Vec::new();
    for row in table.records() {
        let row = row.unwrap();
        let (file, verdict, code, message) = (&row[0], &row[1], &row[2], &row[3]);
        listed.push(file.to_string());
        let (status, headers, body) = parse(&std::fs::read(corpus().join(file)).unwrap());
        let (v, c, m) = outcome(file, status, &headers, &body);
        assert_eq!((v.as_str(), c.as_str()), (verdict, code), "{file}: {m}");
        if verdict == "answer" || verdict == "submitted" {
            assert_eq!(m, message, "{file}");
        } else {
            assert!(m.contains(message), "{file}: {m:?} lacks {message:?}");
        }
    }
    let mut files: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".http"))
        .collect();
    files.sort();
    listed.sort();
    assert_eq!(
        files, listed,
        "every answer of the corpus is in the table, once"
    );
}
