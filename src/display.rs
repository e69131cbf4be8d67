//! What `run` shows a person: the plan before it sends, the progress while it sends (a bar on a
//! terminal, a status line every [`crate::logging::STATUS_EVERY`] otherwise, see [`Progress`]),
//! and the summary at the end. Nothing here decides anything.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::api::Kind;
use crate::client::Limiters;
use crate::pipeline::{Observer, Summary};
use crate::plan::{Flags, Plan};
use crate::results::Status;
use crate::units::Rates;

/// "1 submitted, 0 rejected, …" in the order of [`Status::ALL`].
pub(crate) fn describe_counts(counts: &BTreeMap<Status, u64>) -> String {
    Status::ALL
        .iter()
        .map(|s| format!("{} {}", counts.get(s).copied().unwrap_or(0), s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan, on stdout (a `plan` object with `--log-format json`).
pub(crate) fn print_plan(plan: &Plan, flags: Flags, rates: Rates) {
    if crate::logging::json_mode() {
        let per_kind: BTreeMap<Kind, (u64, u64)> = plan
            .images
            .iter()
            .map(|(k, i)| (*k, (plan.requests.get(k).copied().unwrap_or(0), *i)))
            .collect();
        let (window, paced) = estimate(&per_kind, rates);
        crate::logging::emit(
            "plan",
            serde_json::json!({
                "requests": plan.total,
                "new": plan.new,
                "already_submitted": plan.already_submitted,
                "failed_to_retry": plan.to_retry_failed,
                "rejected": plan.rejected_skipped + plan.rejected_retry,
                "rejected_resent": flags.retry_rejected,
                "unknown": plan.unknown_skipped + plan.unknown_retry,
                "unknown_resent": flags.retry_unknown,
                "to_send": plan.to_send(),
                "per_endpoint": per_kind.iter().map(|(k, (r, i))| (k.as_str().to_string(), serde_json::json!({"requests": r, "images": i}))).collect::<serde_json::Map<_, _>>(),
                "estimate_seconds": window.as_secs_f64().round(),
                "estimate_paced_seconds": paced.as_secs_f64().round(),
            }),
        );
        return;
    }
    let mut out = format!(
        "plan: {} requests: {} new, {} already submitted (skipped), {} failed to retry, {} rejected ({}), {} unknown ({})\n",
        plan.total,
        plan.new,
        plan.already_submitted,
        plan.to_retry_failed,
        plan.rejected_skipped + plan.rejected_retry,
        if flags.retry_rejected {
            "to resend"
        } else {
            "skipped"
        },
        plan.unknown_skipped + plan.unknown_retry,
        if flags.retry_unknown {
            "to resend"
        } else {
            "skipped"
        },
    );
    for (kind, images) in &plan.images {
        out += &format!(
            "  {kind}: {} requests, {images} images to send\n",
            plan.requests.get(kind).copied().unwrap_or(0)
        );
    }
    let per_kind: BTreeMap<Kind, (u64, u64)> = plan
        .images
        .iter()
        .map(|(k, i)| (*k, (plan.requests.get(k).copied().unwrap_or(0), *i)))
        .collect();
    // Only the endpoints this run sends to, and only if one of them is limited.
    if per_kind.keys().any(|k| rates.get(*k) > 0) {
        out += &format!(
            "at --rate {rates} images per minute per endpoint this takes {}\n",
            describe_estimate(estimate(&per_kind, rates))
        );
    }
    crate::logging::say(&out);
}

/// The end of a run, on stdout. With `--log-format json` the `summary` object that ends every
/// run (written by `app`, with the exit code) says it instead; the notes below become `message`s.
pub(crate) fn print_summary(summary: &Summary, plan: &Plan, results: &std::path::Path) {
    if !crate::logging::json_mode() {
        crate::logging::say(&format!(
            "done: {} this run ({}); {} already submitted earlier; {}; results in {}\n",
            summary.total(),
            describe_counts(&summary.counts),
            plan.already_submitted,
            achieved(summary.submitted_images, summary.elapsed),
            results.display()
        ));
    }
    if let Some(t) = &summary.breaker {
        crate::logging::say(&format!(
            "stopped early: the API refused {} requests in a row with code {}; {} requests were not sent. Fix the cause (credits, the account's task limit), then rerun the same command: the unsent requests are sent; the {} rejected ones are resent only with --retry-rejected (or --retry-code {} if the refusal passes by itself)\n",
            t.count,
            t.code,
            plan.to_send().saturating_sub(summary.total()),
            summary.count(Status::Rejected),
            t.code
        ));
    }
    if plan.rejected_skipped + plan.unknown_skipped > 0 {
        crate::logging::say(&format!(
            "not sent: {} rejected and {} unknown from earlier runs (use --retry-rejected / --retry-unknown)\n",
            plan.rejected_skipped, plan.unknown_skipped
        ));
    }
}

/// The achieved pace: "N images submitted in S s", and per minute over the elapsed time only when
/// the run lasted a minute or more (a rate over a few seconds says nothing about `--rate`).
pub(crate) fn achieved(images: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 60.0 {
        format!("{images} images submitted in {secs:.1} s")
    } else {
        format!(
            "{images} images submitted in {} ({:.0} images/min)",
            humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
            images as f64 * 60.0 / secs
        )
    }
}

/// How long a run takes at each endpoint's rate, for its slowest endpoint (see [`crate::rate`]):
/// as the window allows (a minute's allowance per window), and paced evenly (what an endpoint
/// that answers 429 gets). An endpoint without a limit (rate 0) takes no time here.
pub(crate) fn estimate(
    per_kind: &BTreeMap<Kind, (u64, u64)>,
    rates: Rates,
) -> (Duration, Duration) {
    let mut slowest = (Duration::ZERO, Duration::ZERO);
    for (kind, (_, images)) in per_kind {
        let rate = u64::from(rates.get(*kind));
        if rate == 0 {
            continue;
        }
        let windows = images.div_ceil(rate).saturating_sub(1);
        let window = crate::rate::WINDOW * u32::try_from(windows).unwrap_or(u32::MAX);
        let paced = Duration::from_secs_f64(*images as f64 * 60.0 / rate as f64);
        slowest = (slowest.0.max(window), slowest.1.max(paced));
    }
    slowest
}

/// "under a minute", or "about 2m 1s, or about 2m 40s paced evenly (…)" when the two differ.
pub(crate) fn describe_estimate((window, paced): (Duration, Duration)) -> String {
    let one = |d: Duration| {
        if d.as_secs() < 60 {
            "under a minute".to_string()
        } else {
            let whole = Duration::from_secs(d.as_secs());
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

/// How often the bar's facts are recomputed (the bar's own spinner ticks as often).
const BAR_EVERY: Duration = Duration::from_millis(200);

/// What `run` shows while it sends: a bar on a terminal (not with `--log-format json`), redrawn
/// every [`BAR_EVERY`] whether or not anything finished; otherwise a status line every
/// [`crate::logging::STATUS_EVERY`]. Both say the same facts ([`Facts`]): requests done of the
/// total, images submitted and the achieved pace, an ETA from the rate limiters' schedule, and
/// what the run waits for ([`crate::activity`]). Both go on while a run waits for its tasks
/// after the last submission (`--collect`), until [`Progress::finish`].
pub(crate) struct Progress {
    shared: Arc<Shared>,
    bar: Option<indicatif::ProgressBar>,
    refresher: tokio::task::JoinHandle<()>,
}

/// What the refresher reads.
struct Shared {
    /// Requests to send.
    total: u64,
    /// Submissions in flight at once (`--concurrency`).
    concurrency: usize,
    /// Images to send per endpoint.
    planned: BTreeMap<Kind, u64>,
    limiters: Arc<Limiters>,
    started: std::time::Instant,
    /// Outcomes so far per status (in the order of [`Status::ALL`]), the images submitted, and
    /// the requests' time from their first attempt to their outcome (µs), summed: written after
    /// every batch of outcomes without a lock or an allocation, read by the refresher.
    counts: [AtomicU64; Status::ALL.len()],
    images: AtomicU64,
    busy_us: AtomicU64,
}

impl Progress {
    /// Progress towards the plan's requests and images, `concurrency` at a time at the pace of
    /// `limiters`. Must be called within the runtime (the refresher is a task).
    pub(crate) fn new(plan: &Plan, limiters: Arc<Limiters>, concurrency: usize) -> Progress {
        let shared = Arc::new(Shared {
            total: plan.to_send(),
            concurrency: concurrency.max(1),
            planned: plan.images.clone(),
            limiters,
            started: std::time::Instant::now(),
            counts: Default::default(),
            images: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
        });
        let bar = (std::io::stderr().is_terminal() && !crate::logging::json_mode()).then(|| {
            let bar = indicatif::ProgressBar::new(shared.total);
            // Two lines: the counts, the pace and the ETA; then what the run does or waits for,
            // cut to the terminal's width (a wrapped line would leave copies behind).
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:20} {pos}/{len} {prefix}\n  {wide_msg}",
                )
                .expect("valid template"),
            );
            bar.set_message("starting");
            crate::logging::show_bar(Some(bar.clone()));
            bar
        });
        let refresher = {
            let (shared, bar) = (shared.clone(), bar.clone());
            tokio::spawn(async move {
                // Status lines every 10 s (scaled by the test hook, as every wait is).
                let every = match bar {
                    Some(_) => BAR_EVERY,
                    None => crate::env_vars::scale(
                        crate::logging::STATUS_EVERY,
                        crate::env_vars::time_scale(),
                    ),
                };
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let facts = shared.facts();
                    match &bar {
                        Some(b) => {
                            b.set_position(facts.done);
                            b.set_prefix(facts.pace());
                            b.set_message(facts.doing());
                        }
                        None => facts.log(),
                    }
                }
            })
        };
        Progress {
            shared,
            bar,
            refresher,
        }
    }

    /// Stop refreshing and remove the bar.
    pub(crate) fn finish(&self) {
        self.refresher.abort();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            crate::logging::show_bar(None);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Observer for Progress {
    fn update(&self, summary: &Summary) {
        let shared = &self.shared;
        for (slot, status) in shared.counts.iter().zip(Status::ALL) {
            slot.store(summary.count(status), Ordering::Relaxed);
        }
        shared
            .images
            .store(summary.submitted_images, Ordering::Relaxed);
        let busy = u64::try_from(summary.busy.as_micros()).unwrap_or(u64::MAX);
        shared.busy_us.store(busy, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(summary.total());
        }
    }
}

/// What the progress says at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Facts {
    /// Requests with an outcome, of `total`.
    pub done: u64,
    pub total: u64,
    /// Outcomes per status.
    pub counts: BTreeMap<Status, u64>,
    /// Images submitted (accepted by the API).
    pub images: u64,
    pub elapsed: Duration,
    /// Time left: the slower of the limiters' schedule and the requests' own time; `None` when
    /// done, or not known yet (nothing done, nothing scheduled).
    pub eta: Option<Duration>,
    /// What the run waits for now ([`crate::activity::describe`]).
    pub waiting: Option<String>,
}

impl Shared {
    fn facts(&self) -> Facts {
        let counts: BTreeMap<Status, u64> = Status::ALL
            .into_iter()
            .zip(&self.counts)
            .map(|(status, n)| (status, n.load(Ordering::Relaxed)))
            .collect();
        let images = self.images.load(Ordering::Relaxed);
        let busy = Duration::from_micros(self.busy_us.load(Ordering::Relaxed));
        let done: u64 = counts.values().sum();
        let elapsed = self.started.elapsed();
        // Unknown until something is scheduled or done.
        let eta = (done < self.total)
            .then(|| {
                let schedule = self
                    .planned
                    .iter()
                    .map(|(kind, planned)| self.limiters.eta(*kind, *planned))
                    .max()
                    .unwrap_or_default();
                // What no limiter schedules: the requests' own time (latency, retries), as the
                // finished ones took, `--concurrency` at a time. (Not the elapsed time per request:
                // that counts the rate windows the schedule already counts.)
                // While the pending-task window holds requests back, the API's pace of
                // finishing tasks sets the run's: the pace so far, waits included.
                let left = (self.total - done) as f64 / done.max(1) as f64;
                let pace = match done {
                    0 => Duration::ZERO,
                    _ if crate::activity::slots_awaited() => elapsed.mul_f64(left),
                    _ => busy.mul_f64(left / self.concurrency as f64),
                };
                schedule.max(pace)
            })
            .filter(|eta| done > 0 || !eta.is_zero());
        Facts {
            done,
            total: self.total,
            counts,
            images,
            elapsed,
            eta,
            waiting: crate::activity::describe(),
        }
    }
}

impl Facts {
    /// The outcomes other than `submitted` that happened ("2 rejected, 1 unknown"), if any.
    fn troubles(&self) -> Option<String> {
        let t: Vec<String> = Status::ALL
            .iter()
            .filter(|s| **s != Status::Submitted)
            .filter_map(|s| {
                let n = self.counts.get(s).copied().unwrap_or(0);
                (n > 0).then(|| format!("{n} {}", s.as_str()))
            })
            .collect();
        (!t.is_empty()).then(|| t.join(", "))
    }

    /// The bar's first line after the counts: "40 images in 12.3 s · eta 48 s" ("…, 98/min"
    /// after a minute).
    pub(crate) fn pace(&self) -> String {
        let images = match per_minute(self.images, self.elapsed) {
            None => format!(
                "{} images in {:.1} s",
                self.images,
                self.elapsed.as_secs_f64()
            ),
            Some(rate) => format!(
                "{} images in {}, {rate:.0}/min",
                self.images,
                crate::activity::seconds(self.elapsed)
            ),
        };
        match self.eta {
            Some(eta) => format!("{images} · eta {}", crate::activity::seconds(eta)),
            None => images,
        }
    }

    /// The bar's second line: the outcomes that need a look, then what the run waits for, or
    /// "sending".
    pub(crate) fn doing(&self) -> String {
        let doing = self.waiting.clone().unwrap_or_else(|| {
            if self.done < self.total {
                "sending".into()
            } else {
                "finishing".into()
            }
        });
        match self.troubles() {
            Some(t) => format!("{t} · {doing}"),
            None => doing,
        }
    }

    /// The status line (a `progress` object with `--log-format json`).
    fn log(&self) {
        let count = |s: Status| self.counts.get(&s).copied().unwrap_or(0);
        let eta = self.eta.map(|d| d.as_secs_f64().round());
        let rate = per_minute(self.images, self.elapsed);
        if crate::logging::json_mode() {
            tracing::info!(
                done = self.done,
                total = self.total,
                submitted = count(Status::Submitted),
                rejected = count(Status::Rejected),
                failed = count(Status::Failed),
                unknown = count(Status::Unknown),
                images = self.images,
                elapsed_seconds = (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
                images_per_minute = rate,
                eta_seconds = eta,
                waiting = self.waiting.as_deref(),
                "progress: {} of {} requests done",
                self.done,
                self.total
            );
        } else {
            tracing::info!(
                "progress: {} of {} requests done ({}); {}{}{}",
                self.done,
                self.total,
                describe_counts(&self.counts),
                achieved(self.images, self.elapsed),
                self.eta
                    .map(|d| format!("; eta {}", crate::activity::seconds(d)))
                    .unwrap_or_default(),
                self.waiting
                    .as_deref()
                    .map(|w| format!("; waiting: {w}"))
                    .unwrap_or_default(),
            );
        }
    }
}

/// Images per minute over `elapsed`, once a minute has passed (a rate over a few seconds says
/// nothing about `--rate`).
pub(crate) fn per_minute(images: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs >= 60.0).then(|| (images as f64 * 60.0 / secs).round())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_is_per_minute_only_over_a_minute_or_more() {
        assert_eq!(
            achieved(20, Duration::from_millis(3_200)),
            "20 images submitted in 3.2 s"
        );
        assert_eq!(
            achieved(300, Duration::from_secs(180)),
            "300 images submitted in 3m (100 images/min)"
        );
    }

    #[test]
    fn estimates_count_windows_for_the_busiest_endpoint_and_the_even_pace() {
        let per_kind = BTreeMap::from([(Kind::Txt2Img, (1500, 1500)), (Kind::Model, (10, 40))]);
        let (window, paced) = estimate(&per_kind, Rates::uniform(1200));
        assert_eq!(window, Duration::from_millis(60_500));
        assert_eq!(paced, Duration::from_secs(75));
        assert_eq!(
            describe_estimate((window, paced)),
            "about 1m, or about 1m 15s paced evenly (after the API answers HTTP 429)"
        );
        // Within one allowance: no window to wait for; two allowances: one window.
        let one = BTreeMap::from([(Kind::Txt2Img, (100, 100))]);
        assert_eq!(estimate(&one, Rates::uniform(100)).0, Duration::ZERO);
        assert_eq!(
            describe_estimate(estimate(&one, Rates::uniform(100))),
            "under a minute, or about 1m paced evenly (after the API answers HTTP 429)"
        );
        let two = BTreeMap::from([(Kind::Txt2Img, (200, 200))]);
        assert_eq!(
            estimate(&two, Rates::uniform(100)).0,
            Duration::from_millis(60_500)
        );
        let small = BTreeMap::from([(Kind::Txt2Img, (5, 20))]);
        assert_eq!(
            describe_estimate(estimate(&small, Rates::uniform(100))),
            "under a minute"
        );
    }

    /// Each endpoint at its own rate: the slowest one sets the estimate; one without a limit
    /// takes no time.
    #[test]
    fn estimates_use_each_endpoints_rate() {
        let rates = |args: &[&str]| {
            let args: Vec<_> = args.iter().map(|a| a.parse().unwrap()).collect();
            Rates::from_args(100, &args)
        };
        // 200 text-to-image images at 100, 40 model images at 20: both take two windows, the
        // model endpoint 2 minutes paced.
        let per_kind = BTreeMap::from([(Kind::Txt2Img, (200, 200)), (Kind::Model, (10, 40))]);
        assert_eq!(
            estimate(&per_kind, rates(&["model=20"])),
            (Duration::from_millis(60_500), Duration::from_secs(120))
        );
        // Model images unlimited: only text-to-image counts.
        assert_eq!(
            estimate(&per_kind, rates(&["model=0"])),
            (Duration::from_millis(60_500), Duration::from_secs(120))
        );
        assert_eq!(
            estimate(&per_kind, rates(&["txt2img=0", "model=10"])),
            (Duration::from_millis(3 * 60_500), Duration::from_secs(240))
        );
        assert_eq!(
            estimate(&per_kind, rates(&["0"])),
            (Duration::ZERO, Duration::ZERO)
        );
    }
}
