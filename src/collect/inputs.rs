//! What the contact sheet shows beside a model job's outputs: the garment photo each request was
//! made from, and the names of its templates.
//!
//! **Garment photos.** A model request's `image` is in the results as the manifest wrote it: a
//! URL, or a local path relative to the manifest's folder. A URL is linked (the page stays
//! self-contained: nothing is downloaded). A local file is looked for in the `--input-dir`
//! folders (`run --collect`: the manifests' folders), then the results' folder, then the current
//! one, and copied as it is — a small copy: the API takes at most 4096 px — into
//! `DIR/inputs/<BLAKE3 of its bytes>.<ext>`, once (a file already there is not copied again).
//! A file found nowhere is shown as such, with the folders looked in.
//!
//! **Template names.** From the lists cached by `--check-templates` or `templates` for this
//! server (of any age: they only label tiles), or, for the in-process simulator, its own lists;
//! `collect` never reads the API's lists itself. Without them a tile shows the ids alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::settings::{CollectSettings, Server};
use crate::templates::Which;

use super::batch::Batch;

/// The folder of the copied garment photos, in DIR.
pub(crate) const INPUTS: &str = "inputs";

/// A garment photo as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    /// Copied into DIR: its path relative to DIR.
    Local(String),
    /// An http(s) URL: linked.
    Url(String),
    /// Not shown, and why.
    Missing(String),
}

/// What the page knows beyond the results: garment photos by the `image` cell, template names
/// by list and id.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub inputs: HashMap<String, Input>,
    pub names: HashMap<(Which, String), String>,
}

impl Extras {
    /// The name of a template, if the lists are known.
    pub(crate) fn name(&self, which: Which, id: &str) -> Option<&str> {
        self.names.get(&(which, id.to_string())).map(String::as_str)
    }
}

/// The garment photos of the batch's model requests, copied into `out` where local (on the
/// blocking pool: it reads and writes files).
pub(crate) fn inputs(batch: &Batch, settings: &CollectSettings) -> HashMap<String, Input> {
    let mut roots: Vec<PathBuf> = settings.input_dirs.clone();
    let results_dir = settings
        .results
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for dir in [results_dir, PathBuf::new()] {
        if !roots.contains(&dir) {
            roots.push(dir);
        }
    }
    let mut out = HashMap::new();
    for t in &batch.tasks {
        let image = t.image.trim();
        if image.is_empty() || out.contains_key(image) {
            continue;
        }
        out.insert(image.to_string(), input(image, &roots, &settings.out));
    }
    out
}

fn input(image: &str, roots: &[PathBuf], out: &Path) -> Input {
    if image.starts_with("https://") || image.starts_with("http://") {
        return Input::Url(image.to_string());
    }
    if image.starts_with('(') {
        // `(inline base64, N bytes)`: not a file.
        return Input::Missing("given inline (base64) in the manifest".into());
    }
    let candidates: Vec<PathBuf> = if Path::new(image).is_absolute() {
        vec![PathBuf::from(image)]
    } else {
        roots.iter().map(|r| r.join(image)).collect()
    };
    let Some(found) = candidates.iter().find(|p| p.is_file()) else {
        let looked: Vec<String> = roots
            .iter()
            .map(|r| match r.as_os_str().is_empty() {
                true => ".".to_string(),
                false => r.display().to_string(),
            })
            .collect();
        return Input::Missing(format!(
            "`{image}` not found (looked in {}; give the manifest's folder with --input-dir)",
            looked.join(", ")
        ));
    };
    match copy(found, out) {
        Ok(rel) => Input::Local(rel),
        Err(e) => Input::Missing(format!("cannot copy `{}`: {e}", found.display())),
    }
}

/// Copy `file` into `out/inputs/` under the hash of its bytes, unless it is there already.
fn copy(file: &Path, out: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(file)?;
    let ext = match imagesize::image_type(&bytes) {
        Ok(imagesize::ImageType::Png) => "png",
        Ok(imagesize::ImageType::Jpeg) => "jpg",
        Ok(imagesize::ImageType::Webp) => "webp",
        _ => return Err(std::io::Error::other("not a PNG, JPEG or WebP image")),
    };
    let hash = blake3::hash(&bytes).to_hex();
    let rel = format!("{INPUTS}/{}.{ext}", &hash[..16]);
    let target = out.join(&rel);
    if !target.is_file() {
        std::fs::create_dir_all(out.join(INPUTS))?;
        super::write_atomic(&target, &bytes)?;
    }
    Ok(rel)
}

/// The template names for the page: the cached lists of this server, or the in-process
/// simulator's own. Never an error: without lists, tiles show ids alone.
pub(crate) async fn names(
    batch: &Batch,
    client: &crate::client::Client,
    settings: &CollectSettings,
) -> HashMap<(Which, String), String> {
    let mut out = HashMap::new();
    if !batch
        .tasks
        .iter()
        .any(|t| t.templates.iter().any(|id| !id.is_empty()))
    {
        return out;
    }
    let origin = client.base().model_origin();
    for which in Which::ALL {
        let list = match settings.connection.server {
            // Its lists are in this process: reading them costs two local requests.
            Server::Simulator => {
                let stop = crate::shutdown::Shutdown::new();
                match crate::templates::read(
                    client,
                    &settings.connection,
                    &stop,
                    which,
                    crate::api::MAX_TEMPLATE_PAGE_SIZE,
                )
                .await
                {
                    Ok(list) => Some(list),
                    Err(e) => {
                        tracing::debug!("no template names: {e:#}");
                        None
                    }
                }
            }
            _ => crate::templates::cache::read(origin, which).map(|c| c.list),
        };
        for t in list.iter().flat_map(|l| &l.templates) {
            if let Some(name) = t.name() {
                out.insert((which, t.id.clone()), name.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_photo_is_found_in_the_first_folder_that_has_it_and_copied_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, out) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("out"),
        );
        std::fs::create_dir_all(b.join("images")).unwrap();
        std::fs::create_dir_all(&a).unwrap();
        let png = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/images/shirt-01.png"),
        )
        .unwrap();
        std::fs::write(b.join("images/s.png"), &png).unwrap();
        let roots = [a.clone(), b.clone()];
        let got = input("images/s.png", &roots, &out);
        let Input::Local(rel) = &got else {
            panic!("{got:?}")
        };
        assert!(rel.starts_with("inputs/") && rel.ends_with(".png"));
        assert_eq!(std::fs::read(out.join(rel)).unwrap(), png);
        assert_eq!(
            input("images/s.png", &roots, &out),
            got,
            "same bytes, same file"
        );
        match input("images/none.png", &roots, &out) {
            Input::Missing(why) => {
                assert!(why.contains("not found") && why.contains("--input-dir"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            input("https://x/y.jpg", &roots, &out),
            Input::Url("https://x/y.jpg".into())
        );
    }
}
