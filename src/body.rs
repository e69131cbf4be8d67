//! Request bodies: the typed [`Body`] of an expanded request (with its [`ImageRef`]s), and the
//! body as sent ([`WireBody`]): the JSON of a request, with each local image streamed as base64 from
//! its file while the request goes out, never held whole in memory.
//!
//! A model request with a 6 MB photo would otherwise hold the file, its base64 and the JSON that
//! embeds it (about 22 MB) for every request in flight and every retry. Here the JSON is
//! serialized with a placeholder where each local image goes and split there; the parts between
//! are small byte buffers, and the images are read in chunks of 48 KiB (a multiple of 3, so each
//! chunk encodes on its own) and base64-encoded on the fly. The exact length is known up front
//! (base64 of n bytes is 4·⌈n/3⌉), so the request carries a `Content-Length`, as a plain JSON POST
//! would. A retry builds a new stream from the same parts.
//!
//! Each image is hashed as it streams and checked against the digest validation took (which is
//! also in the request id) before anything after it is sent: an image edited after validation
//! ends the stream with an error, so the server never receives a complete body and creates no
//! task.

use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::Bytes;
use futures::Stream;
use tokio::io::AsyncReadExt;

use serde::{Serialize, Serializer};

use crate::api::Kind;
use crate::api::model::ModelBody;
use crate::api::txt2img::Txt2ImgBody;
use crate::digest::Digest;

/// An image given to a model request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An http(s) URL, sent as is.
    Url(String),
    /// A local file: `shown` as written in the manifest, `path` resolved against it.
    File {
        /// As written in the manifest.
        shown: String,
        /// Resolved against the manifest's folder.
        path: PathBuf,
    },
    /// Base64 given inline (a `data:` URI whose prefix was stripped).
    Inline(String),
}

impl ImageRef {
    /// Classify a rendered `image`/`mask` value. The flag is true when a `data:` prefix was
    /// stripped (the API wants bare base64; validation warns).
    pub fn parse(value: &str, dir: &Path) -> (ImageRef, bool) {
        if value.starts_with("https://") || value.starts_with("http://") {
            (ImageRef::Url(value.to_string()), false)
        } else if let Some(rest) = value.strip_prefix("data:") {
            let data = rest.split_once(',').map_or(rest, |(_, d)| d);
            (ImageRef::Inline(data.to_string()), true)
        } else {
            (
                ImageRef::File {
                    shown: value.to_string(),
                    path: dir.join(value),
                },
                false,
            )
        }
    }

    /// How it is shown: the URL, the path as written, or the data.
    pub fn shown(&self) -> &str {
        match self {
            ImageRef::Url(s) | ImageRef::Inline(s) => s,
            ImageRef::File { shown, .. } => shown,
        }
    }
}

impl Serialize for ImageRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// A typed request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Body {
    /// A text-to-image body.
    Txt2Img(Txt2ImgBody),
    /// A model-image body, its images as [`ImageRef`]s.
    Model(ModelBody<ImageRef>),
}

impl Body {
    /// The request kind, and so the endpoint, of this body.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Txt2Img(_) => Kind::Txt2Img,
            Body::Model(_) => Kind::Model,
        }
    }

    /// Images the request asks for: what the per-minute limit counts.
    pub fn images(&self) -> u32 {
        match self {
            Body::Txt2Img(b) => b.images(),
            Body::Model(b) => b.images(),
        }
    }
}

/// Bytes read per chunk of an image: a multiple of 3.
const CHUNK: usize = 48 * 1024;

/// One piece of a body.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// Sent as is.
    Bytes(Bytes),
    /// A local file, sent as base64: the size and digest its bytes had when validated.
    Base64File {
        /// The file to read.
        path: PathBuf,
        /// Its length in bytes when validated.
        size: u64,
        /// Its BLAKE3 digest when validated.
        hash: [u8; 32],
    },
}

/// A request body ready to send any number of times.
#[derive(Debug, Clone)]
pub(crate) struct WireBody {
    parts: Vec<Part>,
    len: u64,
}

fn base64_len(size: u64) -> u64 {
    size.div_ceil(3) * 4
}

impl WireBody {
    /// A body that is all bytes.
    pub(crate) fn bytes(b: Vec<u8>) -> WireBody {
        WireBody {
            len: b.len() as u64,
            parts: vec![Part::Bytes(Bytes::from(b))],
        }
    }

    /// `json` with each `placeholders[i]` (which must occur exactly once, inside a JSON string)
    /// replaced by the base64 of `files[i]`, whose bytes must still have the digest given.
    pub(crate) fn with_files(
        json: Vec<u8>,
        placeholders: &[String],
        files: &[(PathBuf, Digest)],
    ) -> std::io::Result<WireBody> {
        let mut parts = Vec::new();
        let mut rest: &[u8] = &json;
        let mut len = 0u64;
        // Placeholders appear in field order; find each in what is left.
        for (placeholder, (path, digest)) in placeholders.iter().zip(files) {
            let at = find(rest, placeholder.as_bytes())
                .ok_or_else(|| std::io::Error::other("placeholder missing from the body"))?;
            parts.push(Part::Bytes(Bytes::copy_from_slice(&rest[..at])));
            len += at as u64;
            let size = std::fs::metadata(path)?.len();
            let expected = digest.len.ok_or_else(|| {
                std::io::Error::other(format!("`{}` could not be read", path.display()))
            })?;
            check_size(path, expected, size)?;
            parts.push(Part::Base64File {
                path: path.clone(),
                size,
                hash: digest.hash,
            });
            len += base64_len(size);
            rest = &rest[at + placeholder.len()..];
        }
        parts.push(Part::Bytes(Bytes::copy_from_slice(rest)));
        len += rest.len() as u64;
        Ok(WireBody { parts, len })
    }

    /// Exact length in bytes (the `Content-Length`).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The whole body in memory, when it has no file (cheap to clone).
    pub(crate) fn as_bytes(&self) -> Option<Bytes> {
        match self.parts.as_slice() {
            [Part::Bytes(b)] => Some(b.clone()),
            _ => None,
        }
    }

    /// The whole body in memory (for `expand --full`).
    pub(crate) fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        for part in &self.parts {
            match part {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::Base64File { path, size, hash } => {
                    let data = std::fs::read(path)?;
                    check_size(path, *size, data.len() as u64)?;
                    check_hash(path, hash, blake3::hash(&data).as_bytes())?;
                    out.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(&data)
                            .as_bytes(),
                    );
                }
            }
        }
        Ok(out)
    }

    /// A stream of the body's chunks, reading and encoding images as it goes, and the record of
    /// its failure: when reading an image fails, or an image is not the one validated, the stream
    /// ends with that error before anything after the image is sent (the request is never
    /// complete, so no task can be created), and [`BodyFailure::get`] says why.
    pub(crate) fn stream(
        &self,
    ) -> (
        impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        BodyFailure,
    ) {
        let failure = BodyFailure::default();
        let record = failure.clone();
        let start = Some((self.parts.clone().into_iter(), None::<Streaming>));
        let stream = futures::stream::unfold(start, move |state| {
            let record = record.clone();
            async move {
                let (mut parts, mut file) = state?;
                match next_chunk(&mut parts, &mut file).await? {
                    Ok(chunk) => Some((Ok(chunk), Some((parts, file)))),
                    Err(e) => {
                        let _ = record.0.set(e.to_string());
                        Some((Err(e), None))
                    }
                }
            }
        });
        (stream, failure)
    }
}

/// Why a body stream failed, once it has (see [`WireBody::stream`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyFailure(std::sync::Arc<std::sync::OnceLock<String>>);

impl BodyFailure {
    /// What went wrong, once the stream has failed; `None` until then.
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The next chunk of a body: the next piece of bytes, or the next base64 chunk of the image
/// being read; `None` at the end.
async fn next_chunk(
    parts: &mut std::vec::IntoIter<Part>,
    file: &mut Option<Streaming>,
) -> Option<std::io::Result<Bytes>> {
    loop {
        if let Some(s) = file.as_mut() {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match s.file.read(&mut buf[n..]).await {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Some(Err(e)),
                }
            }
            if s.read + n as u64 > s.size {
                return Some(Err(changed(&s.path, "it grew")));
            }
            s.read += n as u64;
            s.hasher.update(&buf[..n]);
            if n == 0 {
                // Nothing after the image goes out unless it is the image validated.
                let done = check_size(&s.path, s.size, s.read)
                    .and_then(|()| check_hash(&s.path, &s.hash, s.hasher.finalize().as_bytes()));
                *file = None;
                if let Err(e) = done {
                    return Some(Err(e));
                }
                continue;
            }
            let chunk = Bytes::from(base64::engine::general_purpose::STANDARD.encode(&buf[..n]));
            return Some(Ok(chunk));
        }
        match parts.next()? {
            Part::Bytes(b) => return Some(Ok(b)),
            Part::Base64File { path, size, hash } => match tokio::fs::File::open(&path).await {
                Ok(f) => {
                    *file = Some(Streaming {
                        file: f,
                        path,
                        size,
                        read: 0,
                        hash,
                        hasher: Box::new(blake3::Hasher::new()),
                    })
                }
                Err(e) => return Some(Err(e)),
            },
        }
    }
}

/// An image being streamed.
struct Streaming {
    file: tokio::fs::File,
    path: PathBuf,
    size: u64,
    read: u64,
    hash: [u8; 32],
    hasher: Box<blake3::Hasher>,
}

/// A file that changed size since validation would not match its digest (nor its
/// `Content-Length`).
fn check_size(path: &std::path::Path, expected: u64, got: u64) -> std::io::Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(changed(
            path,
            &format!("{expected} bytes validated, {got} now"),
        ))
    }
}

fn check_hash(path: &std::path::Path, expected: &[u8; 32], got: &[u8; 32]) -> std::io::Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(changed(path, "its bytes differ"))
    }
}

/// The message of an image edited after validation.
fn changed(path: &std::path::Path, how: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "`{}` changed after it was validated ({how}); it was not sent: run again to validate the new image (it is a new request, with a new id)",
            path.display()
        ),
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn streams_files_as_base64_with_the_exact_length() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0usize,
            1,
            2,
            3,
            4,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 2,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let a = dir.path().join("a.bin");
            let b = dir.path().join("b.bin");
            std::fs::write(&a, &data).unwrap();
            std::fs::write(&b, &data[..size / 2]).unwrap();
            let json = br#"{"image":"@A@","mask":"@B@","prompt":"x"}"#.to_vec();
            let files = [
                (a.clone(), crate::digest::digest_file(&a).unwrap()),
                (b.clone(), crate::digest::digest_file(&b).unwrap()),
            ];
            let body = WireBody::with_files(json, &["@A@".into(), "@B@".into()], &files).unwrap();
            let engine = base64::engine::general_purpose::STANDARD;
            let expected = format!(
                r#"{{"image":"{}","mask":"{}","prompt":"x"}}"#,
                engine.encode(&data),
                engine.encode(&data[..size / 2])
            );
            let streamed: Vec<u8> = body
                .stream()
                .0
                .map(|c| c.unwrap())
                .collect::<Vec<_>>()
                .await
                .concat();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                expected,
                "size {size}"
            );
            assert_eq!(body.len(), expected.len() as u64);
            assert_eq!(body.to_vec().unwrap(), expected.as_bytes());
            assert!(body.as_bytes().is_none());
        }
    }

    #[tokio::test]
    async fn an_image_edited_after_validation_never_completes_a_body() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        std::fs::write(&a, b"12345").unwrap();
        let digest = crate::digest::digest_file(&a).unwrap();
        let files = [(a.clone(), digest)];
        let json = br#"{"image":"@A@","prompt":"x"}"#.to_vec();
        let body = WireBody::with_files(json.clone(), &["@A@".into()], &files).unwrap();
        // Same size, other bytes (the size check alone would not see it).
        std::fs::write(&a, b"54321").unwrap();
        let (stream, failure) = body.stream();
        let items: Vec<_> = stream.collect().await;
        assert!(
            failure
                .get()
                .is_some_and(|w| w.contains("its bytes differ"))
        );
        let sent: Vec<u8> = items
            .iter()
            .take_while(|r| r.is_ok())
            .flat_map(|r| r.as_ref().unwrap().to_vec())
            .collect();
        let err = items
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("an error");
        assert!(
            err.to_string().contains("changed after it was validated"),
            "{err}"
        );
        assert!(
            !String::from_utf8_lossy(&sent).contains("prompt"),
            "nothing after the image left: the body is incomplete"
        );
        assert!(body.to_vec().is_err());
        // Another size: refused when the body is built.
        std::fs::write(&a, b"123").unwrap();
        assert!(WireBody::with_files(json, &["@A@".into()], &files).is_err());
    }
}
