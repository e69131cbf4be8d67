//! Expansion: manifests become a lazy iterator of typed API requests, each with its request id.
//!
//! Order: manifests as given; jobs in file order; within a job, `for_each` rows in file
//! order, then the matrix in key order with the last key varying fastest, then `repeat`. Nothing
//! proportional to the number of requests is built: rows are streamed from their CSV files, the
//! matrix is an odometer, and local images stay paths until a body is sent ([`Request::wire`]).
//!
//! Each request carries its id: its content (see [`crate::ids`]). Sweep variables and `meta` are
//! not part of it: a variable that changes the body changes the id through the body, and one that
//! does not (a spreadsheet's notes column, a SKU caption) must not cause a second, paid submission.

use std::borrow::Cow;

use std::sync::Arc;

use uuid::Uuid;

use crate::api::Kind;
use crate::api::model::{ModelBody, ModelTemplate};
use crate::api::txt2img::Txt2ImgBody;
use crate::body::{Body, ImageRef, WireBody};
use crate::manifest::{self, Field, FieldSet, Job, JobInfo, Manifest, Source, Template};
use crate::problem::{At, Problem};

/// Where a request came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A YAML job without `for_each`.
    Job,
    /// A `for_each` row (its line).
    Row(u64),
    /// A CSV manifest row (its line).
    CsvRow(u64),
}

impl Origin {
    /// How a field is named where this request came from: CSV column or YAML key.
    pub fn field_name(self, field: Field) -> &'static str {
        match self {
            Origin::CsvRow(_) => field.name(),
            _ => field.yaml_name(),
        }
    }
}

/// One expanded request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request id: a UUIDv5 of the request's content ([`crate::ids`]).
    pub id: Uuid,
    /// The job (or CSV row) it was expanded from.
    pub job: Arc<JobInfo>,
    /// The typed body; local images stay paths until it is sent ([`Request::wire`]).
    pub body: Body,
    /// Values of `job.vars`.
    pub vars: Vec<Arc<str>>,
    /// Values of `job.meta`.
    pub meta: Vec<String>,
    /// Which of the job's `repeat` submissions this is, from 0 (part of the id).
    pub repeat: u32,
    /// Where in the manifest it came from.
    pub origin: Origin,
    /// A `data:` prefix was stripped from an image.
    pub stripped_data_prefix: bool,
}

impl Request {
    /// Where the request came from, for a problem about it.
    pub fn at(&self) -> At {
        at(&self.job, self.origin)
    }

    /// The body as sent: JSON with the request id as `request_id` for text-to-image, and local
    /// images streamed from their files as base64 while the request goes out ([`WireBody`]).
    pub(crate) fn wire(&self) -> std::io::Result<WireBody> {
        match &self.body {
            Body::Txt2Img(b) => {
                let mut b = b.clone();
                b.request_id = Some(self.id.to_string());
                Ok(WireBody::bytes(
                    serde_json::to_vec(&b).expect("request bodies serialize"),
                ))
            }
            Body::Model(b) => {
                // A placeholder no manifest can contain, replaced by the streamed file.
                let nonce = fastrand::u64(..);
                let mut files = Vec::new();
                let mut placeholders = Vec::new();
                let wire = b.try_map_images(|r| -> std::io::Result<String> {
                    Ok(match r {
                        ImageRef::File { path, .. } => {
                            let p = format!("@@hidream-batch-image-{nonce:016x}-{}@@", files.len());
                            // The bytes sent must be the bytes validated (and in the id).
                            files.push((path.clone(), self.job.digests.get(path)));
                            placeholders.push(p.clone());
                            p
                        }
                        other => other.shown().to_string(),
                    })
                })?;
                let json = serde_json::to_vec(&wire).expect("request bodies serialize");
                WireBody::with_files(json, &placeholders, &files)
            }
        }
    }

    /// The whole body in memory, as sent (for `expand --full`).
    pub fn wire_body(&self) -> std::io::Result<Vec<u8>> {
        self.wire()?.to_vec()
    }

    /// The body for display (`expand`): images as written, or with `full` as sent.
    pub fn display_body(&self, full: bool) -> std::io::Result<serde_json::Value> {
        if full {
            let bytes = self.wire_body()?;
            return Ok(serde_json::from_slice(&bytes).expect("valid json"));
        }
        let mut value = serde_json::to_value(&self.body).expect("request bodies serialize");
        if let (Body::Txt2Img(_), Some(obj)) = (&self.body, value.as_object_mut()) {
            obj.insert("request_id".into(), self.id.to_string().into());
        }
        Ok(value)
    }
}

fn at(job: &JobInfo, origin: Origin) -> At {
    match origin {
        Origin::Job => At::Job(job.id.clone()),
        Origin::Row(line) => At::JobRow {
            job: job.id.clone(),
            file: job.for_each.clone().unwrap_or_default(),
            line,
        },
        Origin::CsvRow(line) => At::CsvRow {
            line,
            job: Some(job.id.clone()),
        },
    }
}

/// Render one request's fields and type them into a body. Problems name the field.
fn build_body(
    job: &JobInfo,
    fields: &FieldSet,
    values: &[Arc<str>],
) -> Result<(Body, bool), Vec<(Field, String)>> {
    let mut problems = Vec::new();
    let text = |f: Field| fields.get(f).map(|t: &Template| t.render(values));
    let string = |f: Field| text(f).map(Cow::into_owned);
    let mut int = |f: Field| {
        let v = text(f)?;
        match v.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push((f, format!("`{v}` is not a whole number")));
                None
            }
        }
    };
    let body = match job.kind {
        Kind::Txt2Img => {
            let img_count = int(Field::ImgCount);
            let body = Body::Txt2Img(Txt2ImgBody {
                prompt: string(Field::Prompt).unwrap_or_default(),
                negative_prompt: string(Field::NegativePrompt),
                img_count,
                version: string(Field::Version),
                resolution: string(Field::Resolution),
                notify_url: string(Field::NotifyUrl),
                request_id: None,
            });
            (body, false)
        }
        Kind::Model => {
            let image_count = int(Field::ImageCount);
            let custom = match text(Field::CustomHumanTemplate) {
                None => None,
                Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => {
                        problems.push((
                            Field::CustomHumanTemplate,
                            format!("`{v}` is not `true` or `false`"),
                        ));
                        None
                    }
                },
            };
            let mut stripped = false;
            let mut image = |f: Field| {
                text(f).map(|v| {
                    let (r, s) = ImageRef::parse(&v, &job.dir);
                    stripped |= s;
                    r
                })
            };
            let img = image(Field::Image);
            let mask = image(Field::Mask);
            let template = fields.template.then(|| ModelTemplate {
                human_template_id: string(Field::HumanTemplateId).unwrap_or_default(),
                scene_template_id: string(Field::SceneTemplateId).unwrap_or_default(),
                custom_human_template: custom,
            });
            let body = Body::Model(ModelBody {
                image: img.unwrap_or(ImageRef::Url(String::new())),
                mask,
                template,
                prompt: string(Field::Prompt),
                image_count,
                notify_url: string(Field::NotifyUrl),
            });
            (body, stripped)
        }
    };
    if problems.is_empty() {
        Ok(body)
    } else {
        Err(problems)
    }
}

/// Build a request, or the problems that stop it.
fn make(
    job: &Arc<JobInfo>,
    fields: &FieldSet,
    vars: Vec<Arc<str>>,
    meta: &[Template],
    repeat: u32,
    origin: Origin,
    run_id: Option<&str>,
) -> Result<Request, Vec<Problem>> {
    match build_body(job, fields, &vars) {
        Ok((body, stripped)) => Ok(Request {
            id: crate::ids::request_id(&body, repeat, run_id, &job.digests),
            meta: meta.iter().map(|t| t.render(&vars).into_owned()).collect(),
            job: job.clone(),
            body,
            vars,
            repeat,
            origin,
            stripped_data_prefix: stripped,
        }),
        Err(problems) => {
            let at = at(job, origin);
            Err(problems
                .into_iter()
                .map(|(f, m)| Problem::new(&job.file, at.clone(), Some(origin.field_name(f)), m))
                .collect())
        }
    }
}

/// An expanded request, or the problems of one request (or of one unreadable row).
pub type Item = Result<Request, Vec<Problem>>;

/// Expand manifests lazily, in order.
pub fn expand<'a>(
    manifests: &'a [Manifest],
    run_id: Option<&'a str>,
) -> impl Iterator<Item = Item> + 'a {
    manifests.iter().flat_map(move |m| expand_one(m, run_id))
}

fn expand_one<'a>(m: &'a Manifest, run_id: Option<&'a str>) -> Box<dyn Iterator<Item = Item> + 'a> {
    match &m.source {
        Source::Yaml(jobs) => Box::new(jobs.iter().flat_map(move |job| expand_job(job, run_id))),
        Source::Csv(c) => Box::new(c.rows(m).flat_map(
            move |row| -> Box<dyn Iterator<Item = Item>> {
                match row {
                    Err(p) => Box::new(std::iter::once(Err(p))),
                    Ok(row) => Box::new((0..row.repeat).map(move |r| {
                        make(
                            &row.info,
                            &row.fields,
                            Vec::new(),
                            &row.meta,
                            r,
                            Origin::CsvRow(row.line),
                            run_id,
                        )
                    })),
                }
            },
        )),
    }
}

fn expand_job<'a>(job: &'a Job, run_id: Option<&'a str>) -> Box<dyn Iterator<Item = Item> + 'a> {
    type Rows<'r> = Box<dyn Iterator<Item = Result<(Origin, Vec<Arc<str>>), Vec<Problem>>> + 'r>;
    let rows: Rows<'a> = match &job.for_each {
        None => Box::new(std::iter::once(Ok((Origin::Job, Vec::new())))),
        Some(fe) => Box::new(manifest::csv::rows(&fe.snapshot).map(move |r| match r {
            Ok((line, values)) => Ok((Origin::Row(line), values)),
            Err((line, column, message)) => Err(vec![Problem::new(
                &job.info.file,
                At::JobRow {
                    job: job.info.id.clone(),
                    file: fe.shown.clone(),
                    line,
                },
                Some(&column.map_or_else(|| "for_each".to_string(), |c| format!("for_each.{c}"))),
                message,
            )]),
        })),
    };
    Box::new(
        rows.flat_map(move |row| -> Box<dyn Iterator<Item = Item> + 'a> {
            match row {
                Err(p) => Box::new(std::iter::once(Err(p))),
                Ok((origin, row_values)) => {
                    Box::new(Odometer::new(&job.matrix).flat_map(move |combo| {
                        let mut vars = row_values.clone();
                        vars.extend(
                            combo
                                .iter()
                                .zip(&job.matrix)
                                .map(|(&i, values)| values[i].clone()),
                        );
                        (0..job.repeat).map(move |r| {
                            make(
                                &job.info,
                                &job.fields,
                                vars.clone(),
                                &job.meta,
                                r,
                                origin,
                                run_id,
                            )
                        })
                    }))
                }
            }
        }),
    )
}

/// The matrix as an odometer: index tuples with the last key varying fastest. No keys → one empty
/// tuple; an empty list → nothing (validation reports it).
struct Odometer {
    sizes: Vec<usize>,
    next: Option<Vec<usize>>,
}

impl Odometer {
    fn new(matrix: &[Vec<Arc<str>>]) -> Odometer {
        let sizes: Vec<usize> = matrix.iter().map(Vec::len).collect();
        let next = (!sizes.contains(&0)).then(|| vec![0; sizes.len()]);
        Odometer { sizes, next }
    }
}

impl Iterator for Odometer {
    type Item = Vec<usize>;
    fn next(&mut self) -> Option<Vec<usize>> {
        let current = self.next.take()?;
        let mut following = current.clone();
        for i in (0..self.sizes.len()).rev() {
            following[i] += 1;
            if following[i] < self.sizes[i] {
                self.next = Some(following);
                break;
            }
            following[i] = 0;
        }
        Some(current)
    }
}

/// How many requests the manifests expand to, counted without expanding (rows are counted by
/// reading the CSVs). Used for the `--max-requests` guard.
pub fn count(m: &Manifest) -> Result<u64, Problem> {
    match &m.source {
        Source::Csv(c) => c.count_requests(m),
        Source::Yaml(jobs) => {
            let mut total: u64 = 0;
            for job in jobs {
                let rows = match &job.for_each {
                    None => 1,
                    Some(fe) => manifest::csv::count_rows(&fe.snapshot).map_err(|e| {
                        Problem::new(&m.path, At::Job(job.info.id.clone()), Some("for_each"), e)
                    })?,
                };
                // Checked: a matrix whose count overflows 64 bits is more than any limit, not the
                // small number a wrapped product would be.
                let product = job
                    .matrix
                    .iter()
                    .try_fold(1u64, |n, v| n.checked_mul(v.len() as u64))
                    .unwrap_or(u64::MAX);
                total = total.saturating_add(
                    rows.saturating_mul(product)
                        .saturating_mul(job.repeat as u64),
                );
            }
            Ok(total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odometer_varies_last_key_fastest() {
        let m = vec![
            vec![Arc::from("a"), Arc::from("b")],
            vec![Arc::from("1"), Arc::from("2"), Arc::from("3")],
        ];
        let combos: Vec<_> = Odometer::new(&m).collect();
        assert_eq!(combos.len(), 6);
        assert_eq!(combos[0], vec![0, 0]);
        assert_eq!(combos[1], vec![0, 1]);
        assert_eq!(combos[3], vec![1, 0]);
        assert_eq!(Odometer::new(&[]).count(), 1);
        assert_eq!(Odometer::new(&[vec![]]).count(), 0);
    }
}
