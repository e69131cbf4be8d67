//! Validation: the API contract's checks on every expanded request, all problems at
//! once, before anything is sent.
//!
//! The checks that depend only on a value live in [`crate::api`] (shared with the simulator);
//! this module applies them to requests, reads local images' headers (once per distinct file), finds
//! requests that expand to the same id, and folds a problem that repeats on every request of a job
//! into one line. It also counts what a run would send: requests and images per endpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::api::{self, Kind};
use crate::body::{Body, ImageRef};
use crate::expand::{self, Request};
use crate::limits;
use crate::manifest::{self, Field, Manifest};
use crate::problem::{At, Problem};

/// How many distinct problems are listed before the rest are only counted.
pub(crate) const MAX_LISTED: usize = 50;

/// What the manifests would send.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub manifests: Vec<ManifestCounts>,
}

#[derive(Debug, Clone, Default)]
pub struct ManifestCounts {
    pub path: PathBuf,
    pub name: String,
    pub jobs: u64,
    pub requests: u64,
    /// Requests and images per kind.
    pub per_kind: BTreeMap<Kind, (u64, u64)>,
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.manifests.iter().map(|m| m.requests).sum()
    }

    /// Requests and images per kind over all manifests.
    pub fn per_kind(&self) -> BTreeMap<Kind, (u64, u64)> {
        let mut out = BTreeMap::new();
        for m in &self.manifests {
            for (k, (r, i)) in &m.per_kind {
                let e = out.entry(*k).or_insert((0, 0));
                e.0 += r;
                e.1 += i;
            }
        }
        out
    }
}

/// The outcome of validation: counts, warnings, and problems (empty when valid).
#[derive(Debug, Default)]
pub struct Report {
    pub counts: Counts,
    pub problems: Vec<Problem>,
    /// Problems beyond [`MAX_LISTED`] distinct ones.
    pub more_problems: u64,
    pub warnings: Vec<Problem>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Options of validation.
#[derive(Debug, Clone)]
pub(crate) struct Options<'a> {
    pub max_requests: u64,
    pub run_id: Option<&'a str>,
}

/// Load manifests; problems of every file are collected.
pub(crate) fn load_all(paths: &[PathBuf]) -> (Vec<Manifest>, Vec<Problem>) {
    let mut manifests = Vec::new();
    let mut problems = Vec::new();
    let digests = std::sync::Arc::new(crate::digest::Digests::default());
    for path in paths {
        match manifest::load(path, &digests) {
            Ok(m) => manifests.push(m),
            Err(mut p) => problems.append(&mut p),
        }
    }
    (manifests, problems)
}

/// Collects problems: distinct ones in order, a job-wide problem folded into one line.
#[derive(Default)]
struct Collector {
    seen: HashSet<Problem>,
    listed: Vec<Problem>,
    more: u64,
}

impl Collector {
    fn add(&mut self, p: Problem) {
        // A problem that is the same on every row of a job is listed once, without its row.
        let key = p.without_row();
        if self.seen.contains(&key) {
            return;
        }
        if self.listed.len() >= MAX_LISTED {
            self.more += 1;
            return;
        }
        self.seen.insert(key);
        self.listed.push(p);
    }
}

/// Validate manifests: load them (problems of all files at once), guard `--max-requests`, expand
/// every request and check it.
pub(crate) fn validate(paths: &[PathBuf], options: &Options<'_>) -> (Vec<Manifest>, Report) {
    let (manifests, load_problems) = load_all(paths);
    let mut report = Report::default();
    let mut collector = Collector::default();
    for p in load_problems {
        collector.add(p);
    }
    // The guard counts without expanding, so a runaway matrix is refused at once.
    let mut total: u64 = 0;
    for m in &manifests {
        match expand::count(m) {
            Ok(n) => total = total.saturating_add(n),
            Err(p) => collector.add(p),
        }
    }
    if total > options.max_requests {
        collector.add(Problem::new(
            Path::new(&paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
            At::File,
            None,
            format!(
                "the manifests expand to {}, more than --max-requests {}; raise the limit if that is intended",
                if total == u64::MAX {
                    "more than 2^64 requests".to_string()
                } else {
                    format!("{total} requests")
                },
                options.max_requests
            ),
        ));
        report.problems = collector.listed;
        return (manifests, report);
    }

    let mut images = ImageChecker::default();
    // Sized ahead from the count (growing it rehashes), up to a million ids (8 MB): a larger
    // expansion grows it as it goes.
    let mut ids: HashSet<u64> = HashSet::with_capacity(total.min(1 << 20) as usize);
    let mut suspects: HashSet<u64> = HashSet::new();
    for m in &manifests {
        let mut counts = ManifestCounts {
            path: m.path.clone(),
            name: m.name.to_string(),
            jobs: m.job_count().unwrap_or(0),
            ..Default::default()
        };
        for item in expand::expand(std::slice::from_ref(m), options.run_id) {
            match item {
                Err(problems) => problems.into_iter().for_each(|p| collector.add(p)),
                Ok(request) => {
                    counts.requests += 1;
                    let e = counts.per_kind.entry(request.body.kind()).or_insert((0, 0));
                    e.0 += 1;
                    e.1 += u64::from(request.body.images());
                    for p in check(&request, &mut images) {
                        collector.add(p);
                    }
                    if request.stripped_data_prefix {
                        let w = Problem::new(
                            &request.job.file,
                            request.at(),
                            Some("image"),
                            "a `data:` prefix was stripped: the API wants bare base64",
                        );
                        if !report
                            .warnings
                            .iter()
                            .any(|x| x.without_row() == w.without_row())
                        {
                            report.warnings.push(w);
                        }
                    }
                    let short = request.id.as_u64_pair().0;
                    if !ids.insert(short) {
                        suspects.insert(short);
                    }
                }
            }
        }
        report.counts.manifests.push(counts);
    }
    drop(ids);
    if !suspects.is_empty() {
        for p in duplicates(&manifests, options.run_id, &suspects) {
            collector.add(p);
        }
    }
    report.problems = collector.listed;
    report.more_problems = collector.more;
    (manifests, report)
}

/// Requests that share a request id: a second pass over the suspects only.
fn duplicates(
    manifests: &[Manifest],
    run_id: Option<&str>,
    suspects: &HashSet<u64>,
) -> Vec<Problem> {
    let mut first: HashMap<uuid::Uuid, String> = HashMap::new();
    let mut out = Vec::new();
    for request in expand::expand(manifests, run_id).flatten() {
        if !suspects.contains(&request.id.as_u64_pair().0) {
            continue;
        }
        let here = describe(&request);
        match first.get(&request.id) {
            None => {
                first.insert(request.id, here);
            }
            Some(earlier) => out.push(Problem::new(
                &request.job.file,
                request.at(),
                None,
                format!(
                    "{here} is identical to {earlier} (same body, so the same request id); make them differ, or use `repeat` to submit a request more than once"
                ),
            )),
        }
    }
    out
}

/// A request, named for a person: where it came from and its sweep values.
fn describe(r: &Request) -> String {
    let mut out = match r.at() {
        At::CsvRow { line, .. } => format!("line {line} of `{}`", r.job.file.display()),
        At::JobRow { line, file, .. } => format!("job `{}` at `{file}` line {line}", r.job.id),
        _ => format!("job `{}`", r.job.id),
    };
    let vars: Vec<String> = r
        .job
        .vars
        .iter()
        .zip(&r.vars)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !vars.is_empty() {
        out += &format!(" ({})", vars.join(", "));
    }
    out
}

/// Reads each local image's header once.
#[derive(Default)]
pub(crate) struct ImageChecker {
    cache: HashMap<PathBuf, Result<(), String>>,
}

impl ImageChecker {
    /// Check a local image: it exists, is PNG/JPEG/WebP, and is at most 4096 px per side.
    pub(crate) fn check(&mut self, path: &Path) -> Result<(), String> {
        if let Some(r) = self.cache.get(path) {
            return r.clone();
        }
        let r = check_image_file(path);
        self.cache.insert(path.to_path_buf(), r.clone());
        r
    }
}

fn check_image_file(path: &Path) -> Result<(), String> {
    let mut file = crate::files::open_regular(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("`{}` does not exist", path.display()),
        std::io::ErrorKind::Other => format!("`{}` {e}", path.display()),
        _ => format!("cannot read `{}`: {e}", path.display()),
    })?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        }
    }
    api::check_image_type(&head[..n]).map_err(|m| format!("`{}` {m}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .len();
    if len > crate::digest::MAX_IMAGE_FILE_BYTES {
        return Err(format!(
            "`{}` is {} MiB, over the {} MiB a local image may be (its base64 is sent in the request)",
            path.display(),
            len >> 20,
            crate::digest::MAX_IMAGE_FILE_BYTES >> 20
        ));
    }
    complete(&file, len, &head[..n]).map_err(|m| format!("`{}` {m}", path.display()))?;
    // The header is read from the file already open (the path is not opened twice).
    std::io::Seek::rewind(&mut file)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let size = imagesize::reader_size(std::io::BufReader::new(file))
        .map_err(|e| format!("`{}` has an unreadable image header: {e}", path.display()))?;
    api::check_image_size(size.width, size.height).map_err(|m| format!("`{}` {m}", path.display()))
}

/// Whether the file ends as its format says an image ends (cheaply: the last bytes, no decoding):
/// PNG's `IEND` chunk, JPEG's end-of-image marker (in its last 1 KiB: some cameras pad after
/// it), the length WebP's RIFF header declares. A truncated upload or copy is caught here, not by
/// the API.
fn complete(file: &std::fs::File, len: u64, head: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let tail_len = len.min(1024) as usize;
    let mut tail = vec![0u8; tail_len];
    file.read_exact_at(&mut tail, len - tail_len as u64)
        .map_err(|e| format!("cannot be read to its end: {e}"))?;
    let whole = match imagesize::image_type(head) {
        Ok(imagesize::ImageType::Png) => tail.ends_with(b"IEND\xAE\x42\x60\x82"),
        Ok(imagesize::ImageType::Jpeg) => tail.windows(2).any(|w| w == [0xFF, 0xD9]),
        Ok(imagesize::ImageType::Webp) => head
            .get(4..8)
            .is_some_and(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) + 8 <= len),
        _ => true,
    };
    if whole {
        Ok(())
    } else {
        Err(
            "is cut short: it does not end as a complete image (a partial copy or download?)"
                .into(),
        )
    }
}

/// The API contract's checks on one request.
pub(crate) fn check(request: &Request, images: &mut ImageChecker) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |field: Field, result: Result<(), String>| {
        if let Err(m) = result {
            let name = request.origin.field_name(field);
            out.push(Problem::new(&request.job.file, request.at(), Some(name), m));
        }
    };
    match &request.body {
        Body::Txt2Img(b) => {
            add(
                Field::Prompt,
                if b.prompt.trim().is_empty() {
                    Err("a text-to-image request needs a non-empty `prompt`".into())
                } else {
                    Ok(())
                },
            );
            add(Field::Prompt, prompt_length(&b.prompt));
            if let Some(p) = &b.negative_prompt {
                add(Field::NegativePrompt, prompt_length(p));
            }
            if let Some(n) = b.img_count {
                add(Field::ImgCount, api::check_count(n));
            }
            if let Some(v) = &b.version {
                add(Field::Version, api::check_version(v));
            }
            if let Some(r) = &b.resolution {
                add(Field::Resolution, api::check_resolution(r));
            }
            if let Some(u) = &b.notify_url {
                add(Field::NotifyUrl, api::check_url(u));
            }
        }
        Body::Model(b) => {
            for (field, image) in [
                (Field::Image, Some(&b.image)),
                (Field::Mask, b.mask.as_ref()),
            ] {
                match image {
                    None => {}
                    Some(ImageRef::Url(u)) if u.is_empty() => add(
                        field,
                        Err("a model request needs an `image` (a URL or a local file)".into()),
                    ),
                    Some(ImageRef::File { path, .. }) => add(field, images.check(path)),
                    Some(ImageRef::Inline(data)) => add(field, check_inline(data)),
                    Some(ImageRef::Url(_)) => {}
                }
            }
            match (&b.template, &b.prompt) {
                (Some(_), Some(_)) => add(
                    Field::Prompt,
                    Err("a model request takes `template` or `prompt`, not both".into()),
                ),
                (None, None) => add(
                    Field::Prompt,
                    Err("a model request needs either `template` or `prompt`".into()),
                ),
                _ => {}
            }
            if let Some(p) = &b.prompt {
                add(Field::Prompt, api::check_model_prompt(p));
            }
            if let Some(t) = &b.template {
                if t.human_template_id.trim().is_empty() {
                    add(
                        Field::HumanTemplateId,
                        Err(
                            "a `template` needs both `human_template_id` and `scene_template_id`"
                                .into(),
                        ),
                    );
                }
                if t.scene_template_id.trim().is_empty() {
                    add(
                        Field::SceneTemplateId,
                        Err(
                            "a `template` needs both `human_template_id` and `scene_template_id`"
                                .into(),
                        ),
                    );
                }
                if t.custom_human_template == Some(true) {
                    add(
                        Field::CustomHumanTemplate,
                        Err(
                            "must be false: the API does not support custom human templates yet"
                                .into(),
                        ),
                    );
                }
            }
            if let Some(n) = b.image_count {
                add(Field::ImageCount, api::check_count(n));
            }
            if let Some(u) = &b.notify_url {
                add(Field::NotifyUrl, api::check_url(u));
            }
        }
    }
    out
}

/// Base64 given inline: it decodes to a PNG/JPEG/WebP of at most 4096 px per side.
/// A text-to-image prompt is at most [`limits::TXT2IMG_PROMPT_CHARS`] characters (the API states
/// no bound; the limit is ours, and says so).
fn prompt_length(value: &str) -> Result<(), String> {
    let n = value.chars().count();
    if n <= limits::TXT2IMG_PROMPT_CHARS {
        return Ok(());
    }
    Err(format!(
        "is {n} characters long; hidream-batch sends at most {} for text-to-image (the API states no limit; README \"Limits\")",
        limits::TXT2IMG_PROMPT_CHARS
    ))
}

fn check_inline(data: &str) -> Result<(), String> {
    use base64::Engine;
    // Base64 is 4 characters for 3 bytes: measured before anything is decoded.
    if data.trim().len() as u64 / 4 * 3 > limits::INLINE_IMAGE_BYTES {
        return Err(format!(
            "the inline image is larger than {}, the limit for an inline image (README \"Limits\"); put it in a file",
            limits::bytes(limits::INLINE_IMAGE_BYTES)
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| "the inline image is not valid base64".to_string())?;
    api::check_image_type(&bytes).map_err(|m| format!("the inline image {m}"))?;
    let size = imagesize::blob_size(&bytes)
        .map_err(|e| format!("the inline image has an unreadable header: {e}"))?;
    api::check_image_size(size.width, size.height).map_err(|m| format!("the inline image {m}"))
}
/// Load and validate the manifests; print warnings; on any problem print them all (stderr) and
/// fail with exit code 2.
pub(crate) fn load_valid(
    paths: &[PathBuf],
    options: &Options<'_>,
) -> anyhow::Result<(Vec<Manifest>, Report)> {
    let (manifests, report) = validate(paths, options);
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if report.is_valid() {
        return Ok((manifests, report));
    }
    for p in &report.problems {
        crate::logging::error(&p.to_string());
    }
    let n = report.problems.len() as u64 + report.more_problems;
    if report.more_problems > 0 {
        crate::logging::error(&format!("… and {} more problems", report.more_problems));
    }
    Err(crate::exit::invalid(format!(
        "{n} problem{} in the manifests; nothing was sent",
        if n == 1 { "" } else { "s" }
    )))
}
