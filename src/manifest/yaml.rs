//! YAML manifests (README "Manifest reference"): the serde model (strict: an unknown key anywhere is an error), then the
//! checks serde cannot make (ids, kinds, fields of the kind, defaults, placeholders, matrix,
//! `for_each`), all reported at once.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Field, FieldSet, ForEach, Job, JobInfo, Manifest, Source, Template};
use super::{yaml_errors, yaml_guard};
use crate::api::Kind;
use crate::digest::Digests;
use crate::limits::{YAML_DEPTH, YAML_JOBS};
use crate::problem::{At, Problem};

/// A YAML scalar (string, number or boolean) kept as text: every field is a template until a
/// request is rendered and typed. A list or map where a scalar belongs is a type error.
#[derive(Debug, Clone)]
pub(super) struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping whose order as written matters (the matrix: the last key varies fastest).
#[derive(Debug, Clone, Default)]
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Scalar, T>()? {
                    out.push((k.0, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A list of scalars (a matrix variable's values).
#[derive(Debug, Clone)]
struct Values(Vec<Scalar>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Scalar>()? {
                    out.push(v);
                }
                Ok(Values(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    name: Option<Scalar>,
    #[serde(default)]
    defaults: DefaultsDoc,
    #[serde(deserialize_with = "at_most_jobs")]
    jobs: Vec<JobDoc>,
}

/// The `jobs` list, refused past [`YAML_JOBS`] before the next job is built.
pub(super) fn at_most_jobs<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of jobs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(job) = seq.next_element()? {
                if out.len() == YAML_JOBS {
                    return Err(de::Error::custom(format!(
                        "the manifest has more than {YAML_JOBS} jobs (README \"Limits\"); sweep with a matrix, a `for_each` table or a CSV manifest"
                    )));
                }
                out.push(job);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(std::marker::PhantomData))
}

/// YAML `name`, or the file name without extension.
fn name_of(path: &Path, name: Option<&Scalar>) -> Arc<str> {
    match name {
        Some(n) if !n.0.trim().is_empty() => n.0.trim().into(),
        _ => super::stem(path).into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsDoc {
    txt2img: Option<FieldsDoc>,
    model: Option<FieldsDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateDoc {
    human_template_id: Option<Scalar>,
    scene_template_id: Option<Scalar>,
    custom_human_template: Option<Scalar>,
}

/// The API fields, as `defaults` and jobs write them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsDoc {
    prompt: Option<Scalar>,
    negative_prompt: Option<Scalar>,
    img_count: Option<Scalar>,
    version: Option<Scalar>,
    resolution: Option<Scalar>,
    notify_url: Option<Scalar>,
    image: Option<Scalar>,
    mask: Option<Scalar>,
    image_count: Option<Scalar>,
    template: Option<TemplateDoc>,
}

/// A job: its own keys and the API fields (serde cannot combine `flatten` with
/// `deny_unknown_fields`, so the fields are listed again here).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobDoc {
    id: Option<Scalar>,
    kind: Option<Scalar>,
    matrix: Option<Ordered<Values>>,
    for_each: Option<Scalar>,
    repeat: Option<Scalar>,
    meta: Option<Ordered<Scalar>>,
    prompt: Option<Scalar>,
    negative_prompt: Option<Scalar>,
    img_count: Option<Scalar>,
    version: Option<Scalar>,
    resolution: Option<Scalar>,
    notify_url: Option<Scalar>,
    image: Option<Scalar>,
    mask: Option<Scalar>,
    image_count: Option<Scalar>,
    template: Option<TemplateDoc>,
}

impl JobDoc {
    fn fields(&self) -> FieldsDoc {
        FieldsDoc {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            img_count: self.img_count.clone(),
            version: self.version.clone(),
            resolution: self.resolution.clone(),
            notify_url: self.notify_url.clone(),
            image: self.image.clone(),
            mask: self.mask.clone(),
            image_count: self.image_count.clone(),
            template: self.template.clone(),
        }
    }
}

impl FieldsDoc {
    /// The fields that are set, with their values.
    fn entries(&self) -> Vec<(Field, &str)> {
        fn push<'a>(out: &mut Vec<(Field, &'a str)>, f: Field, v: &'a Option<Scalar>) {
            if let Some(v) = v {
                out.push((f, v.0.as_str()));
            }
        }
        let mut out = Vec::new();
        push(&mut out, Field::Prompt, &self.prompt);
        push(&mut out, Field::NegativePrompt, &self.negative_prompt);
        push(&mut out, Field::ImgCount, &self.img_count);
        push(&mut out, Field::Version, &self.version);
        push(&mut out, Field::Resolution, &self.resolution);
        push(&mut out, Field::NotifyUrl, &self.notify_url);
        push(&mut out, Field::Image, &self.image);
        push(&mut out, Field::Mask, &self.mask);
        push(&mut out, Field::ImageCount, &self.image_count);
        if let Some(t) = &self.template {
            push(&mut out, Field::HumanTemplateId, &t.human_template_id);
            push(&mut out, Field::SceneTemplateId, &t.scene_template_id);
            push(
                &mut out,
                Field::CustomHumanTemplate,
                &t.custom_human_template,
            );
        }
        out
    }

    /// Apply `defaults` under the job's own fields. A job that chooses its model mode (`template`
    /// or `prompt`) takes neither mode from the defaults, so a default template never collides
    /// with a job's prompt; a `template` is taken as a whole, never merged key by key.
    fn with_defaults(mut self, defaults: Option<&FieldsDoc>, kind: Kind) -> FieldsDoc {
        let Some(d) = defaults else { return self };
        let own_mode = kind == Kind::Model && (self.template.is_some() || self.prompt.is_some());
        macro_rules! fill {
            ($($f:ident),*) => {$( if self.$f.is_none() { self.$f = d.$f.clone(); } )*};
        }
        fill!(
            negative_prompt,
            img_count,
            version,
            resolution,
            notify_url,
            image,
            mask,
            image_count
        );
        if !own_mode {
            fill!(prompt, template);
        }
        self
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
        Err(e) => return Err(yaml_errors::structural(path, &dir, &text, &e, digests)),
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
