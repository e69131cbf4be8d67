//! The network side of `collect`: one task's query and the downloads of its finished images, as
//! one future that always returns a [`Polled`] (a failure is data, so the stream never stops).
//!
//! Queries go through the same client, retry policy and per-endpoint rate limiter as
//! submissions (one limiter unit per HTTP call). A query is a GET, so unlike a submission it is
//! safe to repeat after a timeout: transport errors, HTTP 408/429/5xx and unreadable answers are
//! retried up to `--max-attempts` with the `--backoff` schedule, `Retry-After` as a floor.
//!
//! Downloads use the same HTTP client **without** the `Authorization` header (image URLs may be on
//! another host, a CDN: the token goes only to the API), are not counted by the API's rate
//! limiter, and are written to a temporary file in the job's directory, then renamed, so an image
//! file on disk is always complete.
//!
//! What the answer says is made safe here, where it comes in: a sub-task id, an image URL and a
//! description have their control characters escaped (`logging::safe`) before they reach a log
//! line, `images.csv` or the page. A sub-task id is only ever compared, never sent back; a URL
//! with a control character is not one a download could use anyway.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{Kind, RESULTS_SUFFIX};
use crate::client::{BaseUrl, Body, Client, Limiters, MAX_IMAGE_BYTES, describe, read_bounded};
use crate::retry::classify::{self, DownloadVerdict, QueryVerdict};
use crate::retry::{Ending, Retrier, Step};

use super::batch::{self, SubStatus};

/// The URL that queries one task: `GET <submit URL>/results?task_id=…`.
///
/// No HiDream documentation lists this endpoint (API reference §3 and §6): it is the form
/// HiDream's own clients and third-party integrations use, and for model images it is inferred
/// from the family pattern. It is built here and nowhere else, so there is one line to change if
/// the real endpoint turns out to differ.
pub(crate) fn result_url(base: &BaseUrl, kind: Kind, task_id: &str) -> Result<String, String> {
    let mut url = reqwest::Url::parse(&format!("{}{RESULTS_SUFFIX}", base.endpoint(kind)))
        .map_err(|e| format!("cannot build the result URL: {e}"))?;
    url.query_pairs_mut().append_pair("task_id", task_id);
    Ok(url.into())
}

/// An image as the API gave it, as a URL: an http(s) URL as is; anything else is a bare id (as
/// HiDream's own client reads it for its domestic service), put into `template` for `{id}`.
pub(crate) fn image_url(template: &str, image: &str) -> String {
    let image = image.trim();
    if image.starts_with("http://") || image.starts_with("https://") {
        image.to_string()
    } else {
        template.replace("{id}", image)
    }
}

/// What every poll shares.
pub(crate) struct Ctx {
    /// The shared HTTP client.
    pub client: Client,
    /// One per endpoint kind; none with `--rate 0`.
    pub limiters: Limiters,
    /// Attempts and delays; stopped by a signal, the `--wait` deadline, or a 401.
    pub retrier: Retrier,
    /// DIR, where finished images are downloaded; `None`: nothing is downloaded (`run
    /// --max-pending` without `--collect` only follows its tasks).
    pub out: Option<PathBuf>,
    /// `--image-url-template`: how an `image` that is a bare id becomes a URL.
    pub image_url: String,
}

impl Ctx {
    /// The context of one polling loop: queries paced by `--poll-rate` (`even`: spaced evenly
    /// from the start; otherwise per rolling minute), retried by `retry` until `stop`, images
    /// downloaded into `out` if there is one.
    pub(crate) fn new(
        client: &Client,
        poll: &crate::settings::PollSettings,
        retry: crate::retry::RetryPolicy,
        stop: &crate::shutdown::Shutdown,
        out: Option<PathBuf>,
        even: bool,
    ) -> Arc<Ctx> {
        Arc::new(Ctx {
            client: client.clone(),
            limiters: Limiters::queries(poll.rate, even),
            retrier: Retrier::new(retry, stop.clone()),
            out,
            image_url: poll.image_url.clone(),
        })
    }
}

/// A task to query, with what the future needs to know about its images.
#[derive(Debug, Clone)]
pub(crate) struct Poll {
    /// Its position in the batch.
    pub task: usize,
    pub kind: Kind,
    pub task_id: String,
    pub job: String,
    pub request_id: String,
    /// Known sub-tasks: id, index, and whether it needs no download (on disk, or given up).
    pub known: Vec<(String, usize, bool)>,
    pub next_index: usize,
}

/// What became of a file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum File {
    /// Nothing to do (not done, or settled before).
    None,
    /// It was already on disk (relative path): not downloaded again.
    Present(String),
    /// Downloaded now (relative path).
    Downloaded(String),
    /// Every attempt failed.
    Failed(String),
}

/// One sub-task as the API reported it.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub id: String,
    pub index: usize,
    pub status: SubStatus,
    pub url: Option<String>,
    pub description: String,
    pub file: File,
    /// `task_completion`, 0–1, when the API gives it.
    pub completion: Option<f64>,
}

/// The result of one poll.
#[derive(Debug)]
pub(crate) enum Polled {
    Answered {
        task: usize,
        reports: Vec<Report>,
    },
    /// The API refused the query (`code != 0`, HTTP 4xx other than 401/403/408/429).
    Refused {
        task: usize,
        message: String,
    },
    /// Transient failures outlasted `--max-attempts`; polled again in the next round.
    Failed {
        task: usize,
        message: String,
    },
    /// HTTP 401/403: stop everything.
    Unauthorized {
        message: String,
    },
    /// Not attempted: stopping.
    Skipped,
}

/// Query one task, then download its finished images that are not on disk yet.
pub(crate) async fn poll(ctx: Arc<Ctx>, p: Poll) -> Polled {
    if ctx.retrier.shutdown.is_stopping() {
        return Polled::Skipped;
    }
    let url = match result_url(ctx.client.base(), p.kind, &p.task_id) {
        Ok(u) => u,
        Err(message) => {
            return Polled::Refused {
                task: p.task,
                message,
            };
        }
    };
    let gate = ctx.limiters.gate(p.kind, 1);
    let ending = ctx
        .retrier
        .drive(gate, p.kind.as_str(), async |n| {
            let answer = ctx.client.get_reply(p.kind, &url).await;
            match classify::query(answer) {
                QueryVerdict::Answer(r) => Step::Done(Ok(r)),
                QueryVerdict::Refused(message) => Step::Done(Err(Polled::Refused {
                    task: p.task,
                    message: crate::logging::safe(&message).into_owned(),
                })),
                QueryVerdict::Unauthorized(message) => Step::Done(Err(Polled::Unauthorized {
                    message: crate::logging::safe(&message).into_owned(),
                })),
                QueryVerdict::Retry {
                    reason,
                    retry_after,
                } => {
                    tracing::debug!(task_id = %p.task_id, attempt = n, "query: {}", crate::logging::safe(&reason));
                    Step::Retry {
                        reason,
                        retry_after,
                    }
                }
            }
        })
        .await;
    let failed = |attempts: u32, reason: &str| Polled::Failed {
        task: p.task,
        message: format!(
            "query failed after {attempts} attempt{}: {}",
            if attempts == 1 { "" } else { "s" },
            crate::logging::safe(reason)
        ),
    };
    let result = match ending {
        Ending::Done(Ok(r)) => r,
        Ending::Done(Err(polled)) => return polled,
        Ending::Exhausted { attempts, reason }
        | Ending::Stopped {
            attempts,
            reason: Some(reason),
        } => return failed(attempts, &reason),
        Ending::Stopped { reason: None, .. } => return Polled::Skipped,
    };

    let mut next_index = p.next_index;
    let mut reports = Vec::with_capacity(result.sub_task_results.len());
    for r in result.sub_task_results {
        let id = crate::logging::safe(&r.sub_task_id).into_owned();
        let (index, settled) = match p.known.iter().find(|(known, _, _)| *known == id) {
            Some((_, i, s)) => (*i, *s),
            None => {
                next_index += 1;
                (next_index - 1, false)
            }
        };
        let status = SubStatus::Code(r.task_status);
        let url = r
            .image
            .filter(|u| !u.trim().is_empty())
            .map(|image| crate::logging::safe(&image_url(&ctx.image_url, &image)).into_owned());
        let file = match (&url, &ctx.out, status.is_done() && !settled) {
            (Some(url), Some(out), true) => {
                let stem = batch::stem(&p.job, &p.request_id, index);
                match batch::existing(out, &stem) {
                    Some(rel) => File::Present(rel),
                    None => match download(&ctx.client, &ctx.retrier, out, url, &stem).await {
                        Ok(rel) => File::Downloaded(rel),
                        Err(e) => File::Failed(crate::logging::safe(&e).into_owned()),
                    },
                }
            }
            (None, Some(_), true) => {
                File::Failed("the API reports it done but gives no image URL".to_string())
            }
            _ => File::None,
        };
        reports.push(Report {
            id,
            index,
            status,
            url,
            description: crate::logging::safe(r.description.as_deref().unwrap_or("")).into_owned(),
            file,
            completion: r
                .task_completion
                .filter(|c| c.is_finite())
                .map(|c| c.clamp(0.0, 1.0)),
        });
    }
    Polled::Answered {
        task: p.task,
        reports,
    }
}

/// The file extension of an image: from its content type, else from its first bytes.
pub(crate) fn extension(content_type: Option<&str>, head: &[u8]) -> Option<&'static str> {
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    match mime.as_deref() {
        Some("image/png") => return Some("png"),
        Some("image/jpeg" | "image/jpg" | "image/pjpeg") => return Some("jpg"),
        Some("image/webp") => return Some("webp"),
        _ => {}
    }
    match imagesize::image_type(head) {
        Ok(imagesize::ImageType::Png) => Some("png"),
        Ok(imagesize::ImageType::Jpeg) => Some("jpg"),
        Ok(imagesize::ImageType::Webp) => Some("webp"),
        _ => None,
    }
}

/// Download `url` to `DIR/<stem>.<ext>` (temporary file, then rename), without the token;
/// retried like a query. Returns the path relative to DIR. (Also the template gallery's covers.)
pub(crate) async fn download(
    client: &Client,
    retrier: &Retrier,
    out: &Path,
    url: &str,
    stem: &str,
) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad image URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the image URL is not http(s): `{}`",
            parsed.scheme()
        ));
    }
    let ending = retrier
        .drive(None, "download", async |_| {
            let response = match client.http().get(parsed.clone()).send().await {
                Err(e) => {
                    return Step::Retry {
                        reason: format!("download failed: {}", describe(&e)),
                        retry_after: None,
                    };
                }
                Ok(r) => r,
            };
            let status = response.status().as_u16();
            let retry_after = crate::client::retry_after(response.headers());
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match classify::download(status) {
                DownloadVerdict::Failed => {
                    Step::Done(Err(format!("download failed: HTTP {status}")))
                }
                DownloadVerdict::Retry => Step::Retry {
                    reason: format!("download failed: HTTP {status}"),
                    retry_after,
                },
                // Bounded: a server that sends without end fails this image, not the run.
                DownloadVerdict::Image => match read_bounded(response, MAX_IMAGE_BYTES).await {
                    Err(Body::Failed(m)) => Step::Retry {
                        reason: format!("download failed: {m}"),
                        retry_after: None,
                    },
                    Err(Body::TooLarge(m)) => Step::Done(Err(format!("download refused: {m}"))),
                    Ok(bytes) => Step::Done(Ok((bytes, content_type))),
                },
            }
        })
        .await;
    let (bytes, content_type) = match ending {
        Ending::Done(Ok(got)) => got,
        Ending::Done(Err(e)) => return Err(e),
        Ending::Exhausted { attempts, reason } => {
            return Err(format!("{reason} (after {attempts} attempts)"));
        }
        Ending::Stopped {
            reason: Some(reason),
            ..
        } => return Err(reason),
        Ending::Stopped { reason: None, .. } => {
            return Err("not downloaded: collect was stopping".into());
        }
    };
    let Some(ext) = extension(content_type.as_deref(), &bytes) else {
        return Err(format!(
            "the download is not a PNG, JPEG or WebP image (content type `{}`)",
            content_type.unwrap_or_default()
        ));
    };
    let rel = format!("{stem}.{ext}");
    let target = out.join(&rel);
    tokio::task::spawn_blocking(move || save(&target, &bytes))
        .await
        .map_err(|e| format!("cannot save the image: {e}"))?
        .map(|()| rel)
        .map_err(|e| format!("cannot save the image: {e}"))
}

/// Write the bytes to a temporary file next to `target`, sync, and rename it into place.
fn save(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    crate::journal::persist(tmp, target)
}

impl Polled {
    /// The task the poll was about (none for a stop).
    pub(crate) fn task(&self) -> Option<usize> {
        match self {
            Polled::Answered { task, .. }
            | Polled::Refused { task, .. }
            | Polled::Failed { task, .. } => Some(*task),
            Polled::Unauthorized { .. } | Polled::Skipped => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_url_is_the_submit_url_plus_results() {
        let base = BaseUrl::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            result_url(&base, Kind::Txt2Img, "t-1 2&x").unwrap(),
            "http://127.0.0.1:9/api-pub/gw/v3/image/txt2img/async/results?task_id=t-1+2%26x"
        );
        assert_eq!(
            result_url(&BaseUrl::REAL, Kind::Model, "abc").unwrap(),
            "https://hidreamai.com/api-pub/ec/v3/image/model/async/results?task_id=abc"
        );
        assert_eq!(
            result_url(&BaseUrl::REAL, Kind::Txt2Img, "abc").unwrap(),
            "https://www.hidreamai.com/api-pub/gw/v3/image/txt2img/async/results?task_id=abc"
        );
    }

    #[test]
    fn extensions_from_content_type_then_bytes() {
        assert_eq!(extension(Some("image/png"), b""), Some("png"));
        assert_eq!(extension(Some("IMAGE/JPEG; charset=x"), b""), Some("jpg"));
        assert_eq!(extension(Some("image/webp"), b""), Some("webp"));
        assert_eq!(
            extension(
                Some("application/octet-stream"),
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"
            ),
            Some("png")
        );
        assert_eq!(
            extension(None, b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01"),
            Some("jpg")
        );
        assert_eq!(extension(Some("text/html"), b"<html>"), None);
    }
}
