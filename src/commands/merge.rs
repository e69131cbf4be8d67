//! `merge`: results CSVs (shards, or runs of several machines) into one.

use crate::exit;
use crate::merge::{guard, merge};
use crate::settings::MergeSettings;

/// `merge`: exit 0, or 1 when conflicting task ids were found (they are listed).
pub fn run(settings: &MergeSettings) -> anyhow::Result<u8> {
    let (out, _locks) = guard(&settings.inputs, &settings.out)?;
    let conflicts = match &settings.order {
        None => merge(&settings.inputs, &out, std::iter::empty())?,
        Some(order) => {
            let (manifests, _) = order.load_valid()?;
            let ids = crate::expand::expand(&manifests, order.run_id.as_deref())
                .flatten()
                .map(|r| r.id);
            merge(&settings.inputs, &out, ids)?
        }
    };
    for c in &conflicts {
        tracing::error!(
            request_id = %c.request_id,
            "request {} has two task ids: `{}` (in `{}`, kept) and `{}` (in `{}`); it was submitted twice and both tasks may be billed",
            c.request_id,
            c.kept.0,
            c.kept.1.display(),
            c.other.0,
            c.other.1.display()
        );
    }
    crate::logging::say(&format!(
        "merged {} files into {}{}\n",
        settings.inputs.len(),
        settings.out.display(),
        if conflicts.is_empty() {
            String::new()
        } else {
            format!("; {} conflicting task ids", conflicts.len())
        }
    ));
    Ok(if conflicts.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}
