//! YAML manifests (README "Manifest reference"): the limits first (`yaml_guard`), then the serde
//! model (`yaml_doc`, strict: an unknown key anywhere is an error), then the checks serde cannot make (ids, kinds, fields of the kind, defaults, placeholders, matrix,
//! `for_each`), all reported at once.
//!
//! serde stops at the first problem of a document. So that a user sees every problem at once (as
//! the README promises), [`structural`] reads the file again loosely — the top level as a mapping,
//! each job as a value of its own — and checks every other job alone: its own structural problem,
//! or, when it is well formed, every check [`load_job`] makes. The job of the first problem is not
//! checked again. A file whose top level cannot be read even loosely (a syntax error, `jobs` not
//! a list) has only the first problem to show.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::yaml_doc::{DefaultsDoc, FileDoc, JobDoc, Scalar, at_most_jobs};
use super::{FieldSet, ForEach, Job, JobInfo, Manifest, Source, Template};
use super::{yaml_errors, yaml_guard};
use crate::api::Kind;
use crate::digest::Digests;
use crate::limits::YAML_DEPTH;
use crate::problem::{At, Problem};

/// YAML `name`, or the file name without extension.
fn name_of(path: &Path, name: Option<&Scalar>) -> Arc<str> {
    match name {
        Some(n) if !n.0.trim().is_empty() => n.0.trim().into(),
        _ => super::stem(path).into(),
    }
}

/// Load and check a YAML manifest (read once: the jobs are kept, the text is not read again).
pub fn load(path: &Path, digests: &Arc<Digests>) -> Result<Manifest, Vec<Problem>> {
    let text = yaml_guard::read(path).map_err(|m| vec![Problem::new(path, At::File, None, m)])?;
    if let Some((line, column)) = yaml_guard::flow_depth(&text, YAML_DEPTH) {
        return Err(vec![Problem::new(
            path,
            At::Text {
                line,
                column,
                job: None,
            },
            None,
            format!("the manifest is nested deeper than {YAML_DEPTH} levels (README \"Limits\")"),
        )]);
    }
    // Past this point the text's expanded size is bounded: it may be parsed again.
    yaml_guard::measure(&text).map_err(|e| vec![yaml_errors::problem(path, None, &e)])?;
    let dir = super::base_dir(path);
    let doc: FileDoc = match serde_yaml::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => return Err(structural(path, &dir, &text, &e, digests)),
    };
    let name = name_of(path, doc.name.as_ref());
    let mut problems = Vec::new();
    if doc.jobs.is_empty() {
        problems.push(Problem::new(
            path,
            At::File,
            Some("jobs"),
            "the manifest has no jobs",
        ));
    }
    for (kind, d) in [
        (Kind::Txt2Img, &doc.defaults.txt2img),
        (Kind::Model, &doc.defaults.model),
    ] {
        for (field, _) in d.iter().flat_map(|d| d.entries()) {
            if !field.belongs_to(kind) {
                problems.push(Problem::new(
                    path,
                    At::File,
                    Some(&format!("defaults.{kind}.{}", field.yaml_name())),
                    format!("`{kind}` requests have no field `{}`", field.yaml_name()),
                ));
            }
        }
    }
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    for (index, job) in doc.jobs.iter().enumerate() {
        match load_job(path, &dir, &name, &doc.defaults, index, job, digests) {
            Ok(job) => {
                if !seen.insert(job.info.id.clone()) {
                    problems.push(Problem::new(
                        path,
                        At::Job(job.info.id.clone()),
                        Some("id"),
                        format!(
                            "job id `{}` is used twice; job ids must be unique",
                            job.info.id
                        ),
                    ));
                }
                jobs.push(job);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(Manifest {
            path: path.to_path_buf(),
            dir,
            name,
            source: Source::Yaml(jobs),
        })
    } else {
        Err(problems)
    }
}

pub(super) fn load_job(
    path: &Path,
    dir: &Path,
    manifest: &Arc<str>,
    defaults: &DefaultsDoc,
    index: usize,
    doc: &JobDoc,
    digests: &Arc<Digests>,
) -> Result<Job, Vec<Problem>> {
    let mut problems = Vec::new();
    let label = doc
        .id
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| format!("#{}", index + 1));
    let at = || At::Job(label.clone());
    let mut problem = |field: &str, message: String| {
        problems.push(Problem::new(path, at(), Some(field), message));
    };
    match &doc.id {
        None => problem("id", "a job needs an `id`".into()),
        Some(id) if !super::valid_job_id(&id.0) => problem(
            "id",
            format!(
                "`{}` is not a valid job id (letters, digits, `_`, `.`, `-`)",
                id.0
            ),
        ),
        Some(_) => {}
    }
    let kind = match &doc.kind {
        None => {
            problem("kind", "a job needs a `kind`: `txt2img` or `model`".into());
            None
        }
        Some(k) => {
            let kind = Kind::parse(&k.0);
            if kind.is_none() {
                problem(
                    "kind",
                    format!("unknown kind `{}`: use `txt2img` or `model`", k.0),
                );
            }
            kind
        }
    };
    let repeat = match &doc.repeat {
        None => 1,
        Some(r) => match r.0.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                problem(
                    "repeat",
                    format!("`{}` is not a whole number of at least 1", r.0),
                );
                1
            }
        },
    };

    // Variables: for_each columns, then matrix keys.
    let mut vars: Vec<String> = Vec::new();
    let mut for_each = None;
    let mut for_each_failed = false;
    if let Some(fe) = &doc.for_each {
        match super::csv::for_each_columns(dir, &fe.0) {
            Ok((snapshot, columns)) => {
                for_each = Some(ForEach {
                    shown: fe.0.clone(),
                    snapshot,
                });
                vars.extend(columns);
            }
            Err(message) => {
                for_each_failed = true;
                problem("for_each", message)
            }
        }
    }
    let mut matrix = Vec::new();
    for (key, values) in doc.matrix.iter().flat_map(|m| m.0.iter()) {
        let field = format!("matrix.{key}");
        if values.0.is_empty() {
            problem(
                &field,
                "the list of values is empty, so the job would expand to nothing".into(),
            );
        }
        if key.is_empty() || key.contains(['{', '}']) {
            problem(&field, format!("`{key}` is not a usable variable name"));
        }
        if vars.contains(key) {
            problem(
                &field,
                format!("matrix variable `{key}` is also a `for_each` column; rename one of them"),
            );
        }
        vars.push(key.clone());
        matrix.push(values.0.iter().map(|v| Arc::from(v.0.as_str())).collect());
    }

    let mut fields = FieldSet::default();
    if let Some(kind) = kind {
        let own = doc.fields();
        for (field, _) in own.entries() {
            if !field.belongs_to(kind) {
                problem(
                    field.yaml_name(),
                    format!("`{kind}` requests have no field `{}`", field.yaml_name()),
                );
            }
        }
        let merged = own.with_defaults(
            match kind {
                Kind::Txt2Img => defaults.txt2img.as_ref(),
                Kind::Model => defaults.model.as_ref(),
            },
            kind,
        );
        fields.template = merged.template.is_some();
        for (field, text) in merged.entries() {
            if !field.belongs_to(kind) {
                continue;
            }
            match Template::parse(text, &vars) {
                Ok(t) => fields.set(field, t),
                // Without its for_each columns every placeholder looks undefined: one cause, one line.
                Err(_) if for_each_failed => {}
                Err(m) => problem(field.yaml_name(), m),
            }
        }
    }
    let mut meta_names = Vec::new();
    let mut meta = Vec::new();
    for (key, value) in doc.meta.iter().flat_map(|m| m.0.iter()) {
        let field = format!("meta.{key}");
        match Template::parse(&value.0, &vars) {
            Ok(t) => {
                meta_names.push(key.clone());
                meta.push(t);
            }
            Err(_) if for_each_failed => {}
            Err(m) => problem(&field, m),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let id = label;
    Ok(Job {
        info: Arc::new(JobInfo {
            manifest: manifest.clone(),
            file: path.to_path_buf(),
            dir: dir.to_path_buf(),
            id_key: id.clone(),
            id,
            kind: kind.expect("checked above"),
            vars,
            meta: meta_names,
            for_each: for_each.as_ref().map(|f: &ForEach| f.shown.clone()),
            digests: digests.clone(),
        }),
        fields,
        matrix,
        for_each,
        repeat,
        meta,
    })
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
fn structural(
    path: &Path,
    dir: &Path,
    text: &str,
    first: &serde_yaml::Error,
    digests: &Arc<Digests>,
) -> Vec<Problem> {
    let mut problems = vec![yaml_errors::problem(path, Some(text), first)];
    let Ok(doc) = serde_yaml::from_str::<LooseDoc>(text) else {
        return problems;
    };
    let (first_job, _, _) = yaml_errors::split(first);
    // The defaults, when they are well formed (otherwise the first problem is theirs, or they
    // are reported here, and the jobs are checked for their structure only).
    let defaults = match doc.defaults.map(|d| reparse::<DefaultsDoc>(&d)) {
        None => Some(DefaultsDoc::default()),
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            if first_job.is_some() {
                let (_, field, message) = yaml_errors::split(&e);
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
        let at = At::Job(yaml_errors::label(value).unwrap_or_else(|| format!("#{}", index + 1)));
        match reparse::<JobDoc>(value) {
            Err(e) => {
                let (_, field, message) = yaml_errors::split(&e);
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
