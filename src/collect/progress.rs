//! What `collect` shows while it polls: a bar of settled images on a terminal, or a status line
//! every [`crate::logging::STATUS_EVERY`] otherwise, with what was queried, done, failed, refused,
//! pending (and how far the pending images are, when the API says) and downloaded.

use std::io::IsTerminal;
use std::time::Duration;

/// What `collect` shows while it polls: a bar of settled images on a terminal (done, failed or
/// refused, of all known), or a status line every [`crate::logging::STATUS_EVERY`] otherwise.
pub(crate) struct CollectProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl CollectProgress {
    /// A bar on a terminal (none in logs, cron or pipes).
    pub(crate) fn new() -> CollectProgress {
        let bar = (std::io::stderr().is_terminal() && !crate::logging::json_mode()).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} images settled {msg} [{elapsed_precise}]",
                )
                .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_secs(1));
            crate::logging::show_bar(Some(bar.clone()));
            bar
        });
        CollectProgress { bar }
    }

    /// Status lines only, never a bar (`run --collect`, whose own bar shows the submissions),
    /// and only when there is no terminal to draw that bar on.
    pub(crate) fn lines() -> Option<CollectProgress> {
        (!std::io::stderr().is_terminal() || crate::logging::json_mode())
            .then_some(CollectProgress { bar: None })
    }

    /// Whether [`CollectProgress::update`] shows anything (there is a bar to draw): counting the
    /// batch is not free, so the polling loop asks first.
    pub(crate) fn draws(&self) -> bool {
        self.bar.is_some()
    }

    /// The counts now, and the queries made.
    pub(crate) fn update(&self, s: &super::Summary, queries: u64) {
        if let Some(b) = &self.bar {
            b.set_length(s.images);
            b.set_position(s.done + s.failed + s.refused);
            let mut message = describe_collect(s, queries);
            if let Some(w) = crate::activity::describe() {
                message = format!("{message} · {w}");
            }
            b.set_message(message);
        }
    }

    /// Whether status lines are wanted (no bar).
    pub(crate) fn wants_status(&self) -> bool {
        self.bar.is_none()
    }

    /// The periodic status line.
    pub(crate) fn status(&self, s: &super::Summary, queries: u64, waiting: usize) {
        tracing::info!(
            "collecting: {} ({waiting} tasks waiting for their next query){}",
            describe_collect(s, queries),
            crate::activity::describe()
                .map(|w| format!("; waiting: {w}"))
                .unwrap_or_default()
        );
    }

    /// Remove the bar.
    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            crate::logging::show_bar(None);
        }
    }
}

/// "120 queried; 40 done (38 downloaded), 1 failed, 0 refused, 9 pending (running, 45 % on average)".
fn describe_collect(s: &super::Summary, queries: u64) -> String {
    format!(
        "{queries} queried; {} done ({} downloaded), {} failed, {} refused, {} pending{}",
        s.done,
        s.downloaded,
        s.failed,
        s.refused,
        s.pending,
        s.pending_completion
            .map(|c| format!(" ({:.0} % complete on average)", c * 100.0))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_names_every_count_and_how_far_pending_images_are() {
        let s = super::super::Summary {
            images: 10,
            done: 4,
            downloaded: 3,
            failed: 1,
            refused: 0,
            pending: 5,
            pending_completion: Some(0.456),
            ..Default::default()
        };
        assert_eq!(
            describe_collect(&s, 12),
            "12 queried; 4 done (3 downloaded), 1 failed, 0 refused, 5 pending (46 % complete on average)"
        );
    }
}
