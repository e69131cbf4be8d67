//! Request identity: a request's id is its content (README "Request ids").
//!
//! The id is a UUIDv5 over the request's kind, its canonical body with every local image replaced
//! by the BLAKE3 digest of its bytes, the repeat index and `--run-id`. So:
//!
//! - renaming, copying or moving a manifest (YAML or CSV) or its folder changes no id, and neither
//!   does renaming a job or editing `meta`, a sweep variable that is not used in the body, or a
//!   spreadsheet's notes column;
//! - changing a local image's bytes changes the id (a new image is a new request), and two
//!   different images never share one; an image given inline as base64 has the id of the same
//!   bytes given as a file;
//! - an image given by URL is identified by its URL (its bytes are not fetched);
//! - `repeat` and `--run-id` make new submissions of the same content.
//!
//! Two requests with the same content in one run are the same request: validation refuses them
//! (use `repeat`), and a run of another manifest skips a request an earlier run submitted.
//!
//! The images' digests are computed once per file per run ([`Digests`]): each distinct file is
//! read whole once, when validation first meets it. The bytes sent are checked against the same
//! digest while they stream (`body.rs`): an image edited after validation is never sent.

use base64::Engine as _;
use serde::Serialize;
use uuid::Uuid;

use crate::api::Kind;
use crate::body::{Body, ImageRef};
use crate::digest::{Digest, Digests};
use crate::manifest::JobInfo;

/// The UUIDv5 namespace of hidream-batch request ids. Never change it: ids would change.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c1e_9a4d_5e2b_8c7f_0d1a_2b3c_4d5e);

/// The id scheme; part of the hashed material.
const SCHEME: u8 = 2;

/// How an image takes part in the id: a URL as written, anything else as the digest of its bytes.
fn image_identity(image: &ImageRef, digests: &Digests) -> String {
    match image {
        ImageRef::Url(u) => u.clone(),
        ImageRef::File { path, .. } => digests.get(path).text(),
        ImageRef::Inline(data) => {
            match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
                Ok(bytes) => Digest {
                    hash: *blake3::hash(&bytes).as_bytes(),
                    len: Some(bytes.len() as u64),
                }
                .text(),
                Err(_) => format!("inline:{data}"),
            }
        }
    }
}

/// The id of a request (see the module docs). The JSON layout of the hashed material is part of
/// the scheme: changing it changes every id.
pub fn request_id(body: &Body, repeat: u32, run_id: Option<&str>, digests: &Digests) -> Uuid {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum IdBody<'a> {
        Txt2Img(&'a crate::api::txt2img::Txt2ImgBody),
        Model(crate::api::model::ModelBody<String>),
    }
    #[derive(Serialize)]
    struct Material<'a> {
        scheme: u8,
        kind: Kind,
        body: IdBody<'a>,
        repeat: u32,
        run_id: Option<&'a str>,
    }
    let body_material = match body {
        Body::Txt2Img(b) => IdBody::Txt2Img(b),
        Body::Model(b) => IdBody::Model(
            b.try_map_images(|r| Ok::<_, std::convert::Infallible>(image_identity(r, digests)))
                .unwrap_or_else(|never| match never {}),
        ),
    };
    let material = Material {
        scheme: SCHEME,
        kind: body.kind(),
        body: body_material,
        repeat,
        run_id,
    };
    hash(&material)
}

/// The id an earlier hidream-batch (before content identity) gave a request: manifest name, job
/// id, and local images by path. Only used to recognise a results file written by it, which a run
/// must not take for new requests (it would send them all again).
pub fn legacy_request_id(job: &JobInfo, body: &Body, repeat: u32, run_id: Option<&str>) -> Uuid {
    #[derive(Serialize)]
    struct Material<'a> {
        scheme: u8,
        manifest: &'a str,
        job: &'a str,
        kind: Kind,
        body: &'a Body,
        repeat: u32,
        run_id: Option<&'a str>,
    }
    hash(&Material {
        scheme: 1,
        manifest: &job.manifest,
        job: &job.id_key,
        kind: body.kind(),
        body,
        repeat,
        run_id,
    })
}

fn hash<T: Serialize>(material: &T) -> Uuid {
    // One buffer per thread: ids are hashed on every pass over the manifests.
    thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        serde_json::to_writer(&mut *buf, material).expect("ids serialize");
        v5(buf)
    })
}

/// The UUIDv5 of `name` in [`NAMESPACE`], as `Uuid::new_v5` computes it (RFC 9562: the first 16
/// bytes of SHA-1 over the namespace and the name, with the version and variant set), with
/// AWS-LC's SHA-1, which uses the CPU's SHA instructions: an id is hashed on every pass over the
/// manifests, and uuid's portable SHA-1 was a third of validation's time.
fn v5(name: &[u8]) -> Uuid {
    use aws_lc_rs::digest;
    let mut sha1 = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(NAMESPACE.as_bytes());
    sha1.update(name);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&sha1.finish().as_ref()[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::{ModelBody, ModelTemplate};
    use std::path::Path;

    proptest::proptest! {
        /// The ids are uuid's UUIDv5, whatever computes the SHA-1: ids are kept in results files.
        #[test]
        fn v5_is_uuids_v5(name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            proptest::prop_assert_eq!(v5(&name), Uuid::new_v5(&NAMESPACE, &name));
        }
    }

    fn model(image: ImageRef) -> Body {
        Body::Model(ModelBody {
            image,
            mask: None,
            template: Some(ModelTemplate {
                human_template_id: "h".into(),
                scene_template_id: "s".into(),
                custom_human_template: None,
            }),
            prompt: None,
            image_count: Some(1),
            notify_url: None,
        })
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> ImageRef {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        ImageRef::File {
            shown: name.into(),
            path,
        }
    }

    #[test]
    fn an_image_is_its_bytes_wherever_it_lives() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let digests = Digests::default();
        let id = |r: ImageRef| request_id(&model(r), 0, None, &digests);
        // The same bytes under another name or folder: the same request.
        let one = id(file(a.path(), "images/shirt.png", b"pixels-1"));
        assert_eq!(one, id(file(b.path(), "elsewhere/copy.png", b"pixels-1")));
        // The same relative path in another catalogue, other bytes: another request.
        assert_ne!(one, id(file(b.path(), "images/shirt.png", b"pixels-2")));
        // Inline base64 of the same bytes: the same request.
        let inline = base64::engine::general_purpose::STANDARD.encode(b"pixels-1");
        assert_eq!(one, id(ImageRef::Inline(inline)));
        // A URL is its URL.
        assert_ne!(one, id(ImageRef::Url("https://x/shirt.png".into())));
        // Repeat and run id make new submissions.
        let body = model(file(a.path(), "images/shirt.png", b"pixels-1"));
        assert_ne!(
            request_id(&body, 0, None, &digests),
            request_id(&body, 1, None, &digests)
        );
        assert_ne!(
            request_id(&body, 0, None, &digests),
            request_id(&body, 0, Some("2026-12-01"), &digests)
        );
    }

    #[test]
    fn a_file_is_read_once_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let digests = Digests::default();
        let r = file(dir.path(), "a.png", b"first");
        let before = request_id(&model(r.clone()), 0, None, &digests);
        std::fs::write(dir.path().join("a.png"), b"second").unwrap();
        assert_eq!(
            before,
            request_id(&model(r.clone()), 0, None, &digests),
            "the run keeps the digest it validated"
        );
        assert_ne!(before, request_id(&model(r), 0, None, &Digests::default()));
    }
}
