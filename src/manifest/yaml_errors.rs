//! A YAML manifest's structural problems (syntax, types, unknown keys) as [`Problem`]s, and the
//! pass that goes on past the first one.
//!
//! serde stops at the first problem of a document. So that a user sees every problem at once (as
//! the README promises), [`structural`] reads the file again loosely — the top level as a mapping,
//! each job as a value of its own — and checks every other job alone: its own structural problem,
//! or, when it is well formed, every check [`super::yaml::load_job`] makes. The job of the first
//! problem is not checked again. A file whose top level cannot be read even loosely (a syntax
//! error, `jobs` not a list) has only the first problem to show.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::yaml::{DefaultsDoc, JobDoc, at_most_jobs, load_job};
use crate::digest::Digests;
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
fn split(err: &serde_yaml::Error) -> (Option<usize>, Option<String>, String) {
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
fn label(job: &serde_yaml::Value) -> Option<String> {
    match job.get("id")? {
        serde_yaml::Value::String(s) => Some(s.clone()),
        other => serde_yaml::to_string(other)
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

/// The top level, read loosely: unknown keys were reported by the first pass.
#[derive(Deserialize)]
struct LooseDoc {
    #[serde(default)]
    name: Option<serde_yaml::Value>,
    #[serde(default)]
    defaults: Option<serde_yaml::Value>,
    #[serde(default, deserialize_with = "at_most_jobs")]
    jobs: Vec<serde_yaml::Value>,
}

/// Every structural problem of a manifest whose strict reading failed with `first`, and every
/// other problem of the jobs that are well formed. `text` passed [`super::yaml_guard::measure`].
pub(super) fn structural(
    path: &Path,
    dir: &Path,
    text: &str,
    first: &serde_yaml::Error,
    digests: &Arc<Digests>,
) -> Vec<Problem> {
    let mut problems = vec![problem(path, Some(text), first)];
    let Ok(doc) = serde_yaml::from_str::<LooseDoc>(text) else {
        return problems;
    };
    let (first_job, _, _) = split(first);
    // The defaults, when they are well formed (otherwise the first problem is theirs, or they
    // are reported here, and the jobs are checked for their structure only).
    let defaults = match doc.defaults.map(|d| reparse::<DefaultsDoc>(&d)) {
        None => Some(DefaultsDoc::default()),
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            if first_job.is_some() {
                let (_, field, message) = split(&e);
                let field = field.map_or("defaults".to_string(), |f| format!("defaults.{f}"));
                problems.push(Problem::new(path, At::File, Some(&field), message));
            }
            None
        }
    };
    let name: Arc<str> = match doc.name {
        Some(serde_yaml::Value::String(n)) if !n.trim().is_empty() => n.trim().into(),
        _ => super::stem(path).into(),
    };
    for (index, value) in doc.jobs.iter().enumerate() {
        if Some(index) == first_job {
            continue;
        }
        let at = At::Job(label(value).unwrap_or_else(|| format!("#{}", index + 1)));
        match reparse::<JobDoc>(value) {
            Err(e) => {
                let (_, field, message) = split(&e);
                problems.push(Problem::new(path, at, field.as_deref(), message));
            }
            Ok(job) => {
                if let Some(defaults) = &defaults
                    && let Err(mut p) = load_job(path, dir, &name, defaults, index, &job, digests)
                {
                    problems.append(&mut p);
                }
            }
        }
    }
    problems
}

/// A value read as `T` from its own YAML text, so that serde's message names the field inside
/// it (`matrix.style: …`) — reading the value directly would not.
fn reparse<T: for<'de> Deserialize<'de>>(
    value: &serde_yaml::Value,
) -> Result<T, serde_yaml::Error> {
    serde_yaml::from_str(&serde_yaml::to_string(value)?)
}
