//! `expand`: every expanded request as a JSON line, with its request id and endpoint.

use std::io::Write;

use crate::api::Kind;
use crate::exit;
use crate::settings::ExpandSettings;

use super::broken_pipe;

/// `expand`: one JSON line per request.
pub fn expand(settings: &ExpandSettings) -> anyhow::Result<u8> {
    let (manifests, _) = settings.manifest.load_valid()?;
    let endpoints: Vec<(Kind, String)> = Kind::ALL
        .iter()
        .map(|k| (*k, k.endpoint(settings.base_url.as_deref())))
        .collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for request in crate::expand::expand(&manifests, settings.manifest.run_id.as_deref()) {
        let request = request.map_err(|p| exit::invalid(format!("{}", p[0])))?;
        let kind = request.body.kind();
        let body = request.display_body(settings.full).map_err(|e| {
            exit::invalid(format!(
                "job `{}`: cannot read a local image: {e}",
                request.job.id
            ))
        })?;
        let vars: serde_json::Map<String, serde_json::Value> = request
            .job
            .vars
            .iter()
            .zip(&request.vars)
            .map(|(k, v)| (k.clone(), v.to_string().into()))
            .collect();
        let meta: serde_json::Map<String, serde_json::Value> = request
            .job
            .meta
            .iter()
            .zip(&request.meta)
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let line = serde_json::json!({
            "request_id": request.id.to_string(),
            "manifest": &*request.job.manifest,
            "job": request.job.id,
            "kind": kind.as_str(),
            "endpoint": endpoints.iter().find(|(k, _)| *k == kind).map(|(_, e)| e),
            "images": request.body.images(),
            "repeat": request.repeat,
            "vars": vars,
            "meta": meta,
            "body": body,
        });
        if let Err(e) = writeln!(out, "{line}") {
            return broken_pipe(e);
        }
    }
    match out.flush() {
        Ok(()) => Ok(exit::OK),
        Err(e) => broken_pipe(e),
    }
}
