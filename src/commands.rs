//! The commands that read manifests without sending anything: `validate` and `expand`, and the
//! shared step every manifest command starts with ([`load_valid`]).

use std::io::Write;

use crate::api::Kind;
use crate::cli::{ExpandArgs, ManifestArgs};
use crate::exit;
use crate::expand;
use crate::manifest::Manifest;
use crate::validate::{self, Report};

/// Load and validate the manifests; print warnings; on any problem print them all (stderr) and
/// fail with exit code 2.
pub fn load_valid(args: &ManifestArgs) -> anyhow::Result<(Vec<Manifest>, Report)> {
    let options = validate::Options {
        max_requests: args.max_requests,
        run_id: args.run_id.as_deref(),
    };
    let (manifests, report) = validate::validate(&args.manifests, &options);
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
    Err(exit::invalid(format!(
        "{n} problem{} in the manifests; nothing was sent",
        if n == 1 { "" } else { "s" }
    )))
}

/// `validate`: print what the manifests expand to and what a run would send.
pub fn validate(args: &ManifestArgs) -> anyhow::Result<u8> {
    let (_, report) = load_valid(args)?;
    let mut out = String::new();
    let counts = &report.counts;
    for m in &counts.manifests {
        out += &format!(
            "{} ({}): {} job{}, {} request{}\n",
            m.name,
            m.path.display(),
            m.jobs,
            plural(m.jobs),
            m.requests,
            plural(m.requests)
        );
    }
    let jobs: u64 = counts.manifests.iter().map(|m| m.jobs).sum();
    out += &format!(
        "total: {jobs} job{}, {} request{}\n",
        plural(jobs),
        counts.requests(),
        plural(counts.requests())
    );
    let per_kind = counts.per_kind();
    for (kind, (requests, images)) in &per_kind {
        out += &format!(
            "  {kind}: {requests} request{}, {images} image{} → {}\n",
            plural(*requests),
            plural(*images),
            kind.endpoint(None)
        );
    }
    let rate = crate::run::DEFAULT_RATE;
    out += &format!(
        "at the default rate of {rate} images per minute per endpoint, a run takes {}\n",
        describe_estimate(crate::run::estimate(&per_kind, rate))
    );
    print_out(&out)
}

/// "under a minute", or "about 2m 1s, or about 2m 40s paced evenly (…)" when the two differ.
pub fn describe_estimate((window, paced): (std::time::Duration, std::time::Duration)) -> String {
    let one = |d: std::time::Duration| {
        if d.as_secs() < 60 {
            "under a minute".to_string()
        } else {
            let whole = std::time::Duration::from_secs(d.as_secs());
            format!("about {}", humantime::format_duration(whole))
        }
    };
    let (window, paced) = (one(window), one(paced));
    if window == paced {
        window
    } else {
        format!("{window}, or {paced} paced evenly (after the API answers HTTP 429)")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `expand`: one JSON line per request.
pub fn expand(args: &ExpandArgs) -> anyhow::Result<u8> {
    let (manifests, _) = load_valid(&args.manifest)?;
    let endpoints: Vec<(Kind, String)> = Kind::ALL
        .iter()
        .map(|k| (*k, k.endpoint(args.base_url.as_deref())))
        .collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for request in expand::expand(&manifests, args.manifest.run_id.as_deref()) {
        let request = request.map_err(|p| exit::invalid(format!("{}", p[0])))?;
        let kind = request.body.kind();
        let body = request.display_body(args.full).map_err(|e| {
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

fn print_out(text: &str) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(exit::OK),
        Err(e) => broken_pipe(e),
    }
}

/// A reader that stops early (`| head`) is not an error.
fn broken_pipe(e: std::io::Error) -> anyhow::Result<u8> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(exit::OK)
    } else {
        Err(anyhow::Error::new(e).context("cannot write to stdout"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::describe_estimate;
    use crate::api::Kind;
    use crate::run::estimate;

    #[test]
    fn estimates_count_windows_for_the_busiest_endpoint_and_the_even_pace() {
        let per_kind = BTreeMap::from([(Kind::Txt2Img, (1500, 1500)), (Kind::Model, (10, 40))]);
        let (window, paced) = estimate(&per_kind, 1200);
        assert_eq!(window, Duration::from_millis(60_500));
        assert_eq!(paced, Duration::from_secs(75));
        assert_eq!(
            describe_estimate((window, paced)),
            "about 1m, or about 1m 15s paced evenly (after the API answers HTTP 429)"
        );
        // Within one allowance: no window to wait for; two allowances: one window.
        let one = BTreeMap::from([(Kind::Txt2Img, (100, 100))]);
        assert_eq!(estimate(&one, 100).0, Duration::ZERO);
        assert_eq!(
            describe_estimate(estimate(&one, 100)),
            "under a minute, or about 1m paced evenly (after the API answers HTTP 429)"
        );
        let two = BTreeMap::from([(Kind::Txt2Img, (200, 200))]);
        assert_eq!(estimate(&two, 100).0, Duration::from_millis(60_500));
        let small = BTreeMap::from([(Kind::Txt2Img, (5, 20))]);
        assert_eq!(describe_estimate(estimate(&small, 100)), "under a minute");
    }
}
