//! A YAML manifest's structural problems (syntax, types, unknown keys): serde's errors as
//! [`Problem`]s, with the line, the job and the field.

use std::path::Path;

use crate::problem::{At, Problem};

/// A serde error as a problem: its line and column, the field, and the job when the error is
/// inside one. `text` is given to look the job's id up (only text that passed
/// [`super::yaml_guard::measure`]: the lookup parses it whole).
pub(super) fn problem(path: &Path, text: Option<&str>, err: &serde_yaml::Error) -> Problem {
    let (index, field, message) = split(err);
    let job = index
        .zip(text)
        .and_then(|(index, text)| job_id(text, index));
    match err.location() {
        Some(loc) => Problem::new(
            path,
            At::Text {
                line: loc.line(),
                column: loc.column(),
                job,
            },
            field.as_deref(),
            message,
        ),
        None => Problem::new(path, At::File, field.as_deref(), message),
    }
}

/// serde's message `jobs[2].matrix.style: invalid type …` split into the job's index, the field
/// and the message (without serde's own " at line L column C" suffix: the place is shown apart).
pub(super) fn split(err: &serde_yaml::Error) -> (Option<usize>, Option<String>, String) {
    let mut message = err.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if message == "repetition limit exceeded" {
        // The YAML reader's own bound on alias uses (100 per event of the file).
        message = "the manifest's aliases are used too many times (README \"Limits\")".into();
    }
    let Some((prefix, rest)) = message
        .split_once(": ")
        .filter(|(prefix, _)| !prefix.contains(' '))
    else {
        return (None, None, message);
    };
    let (index, local) = match prefix.strip_prefix("jobs[") {
        Some(r) => match r.split_once(']') {
            Some((i, f)) => (i.parse().ok(), f.trim_start_matches('.')),
            None => (None, ""),
        },
        None => (None, prefix),
    };
    let unknown = rest
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
        .map(|(name, _)| name);
    let field = match (local, unknown) {
        ("", Some(u)) => Some(u.to_string()),
        (l, Some(u)) => Some(format!("{l}.{u}")),
        ("", None) => None,
        (l, None) => Some(l.to_string()),
    };
    (index, field, rest.to_string())
}

/// The id of job `index` of `text`, read leniently.
fn job_id(text: &str, index: usize) -> Option<String> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    label(value.get("jobs")?.get(index)?)
}

/// A job's `id` as written, if it has one.
pub(super) fn label(job: &serde_yaml::Value) -> Option<String> {
    match job.get("id")? {
        serde_yaml::Value::String(s) => Some(s.clone()),
        other => serde_yaml::to_string(other)
            .ok()
            .map(|s| s.trim().to_string()),
    }
}
