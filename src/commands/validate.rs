//! `validate`: what the manifests expand to and what a run would send; nothing is sent. With
//! `--check-templates` it reads the API's template lists (or their cache) to check the ids.

use crate::display::{describe_estimate, estimate};
use crate::settings::ValidateSettings;
use crate::settings::defaults::DEFAULT_RATE;
use crate::shutdown::Shutdown;
use crate::units::Rates;

use super::print_out;

/// `validate`: print what the manifests expand to and what a run would send; with
/// `--check-templates`, check their template ids against the API's lists first.
pub async fn validate(settings: &ValidateSettings, shutdown: Shutdown) -> anyhow::Result<u8> {
    let (manifests, report) = settings.manifest.load_valid()?;
    let checked = match settings.templates.check {
        false => None,
        true => Some(
            crate::templates::check_manifests(
                &manifests,
                settings.manifest.run_id.as_deref(),
                &settings.connection,
                None,
                settings.templates.refresh,
                &shutdown,
            )
            .await?,
        ),
    };
    let mut out = String::new();
    let counts = &report.counts;
    for m in &counts.manifests {
        out += &format!(
            "{} ({}): {} job{}, {} request{}\n",
            crate::logging::safe(&m.name),
            crate::logging::safe(&m.path.display().to_string()),
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
    let rate = DEFAULT_RATE;
    let (window, paced) = estimate(&per_kind, Rates::uniform(rate));
    // `--log-format json`: one `validation` object instead of the text.
    if crate::logging::json_mode() {
        crate::logging::emit(
            "validation",
            serde_json::json!({
                "manifests": counts.manifests.iter().map(|m| serde_json::json!({
                    "name": m.name,
                    "path": m.path.display().to_string(),
                    "jobs": m.jobs,
                    "requests": m.requests,
                })).collect::<Vec<_>>(),
                "jobs": jobs,
                "requests": counts.requests(),
                "per_endpoint": per_kind.iter().map(|(k, (r, i))| (k.as_str().to_string(), serde_json::json!({
                    "requests": r,
                    "images": i,
                    "url": k.endpoint(None),
                }))).collect::<serde_json::Map<_, _>>(),
                "rate": rate,
                "estimate_seconds": window.as_secs_f64().round(),
                "estimate_paced_seconds": paced.as_secs_f64().round(),
            }),
        );
        return Ok(crate::exit::OK);
    }
    out += &format!(
        "at the default rate of {rate} images per minute per endpoint, a run takes {}\n",
        describe_estimate((window, paced))
    );
    if let Some(line) = checked {
        out += &line;
        out.push('\n');
    }
    print_out(&out)
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
