//! `--ping-url URL` (`run`, `collect`): health-check pings in healthchecks.io's convention —
//! `URL/start` when the command starts, `URL/<exit code>` when it ends, with the JSON summary as
//! the body (at most [`MAX_BODY`] bytes) — and `?rid=<uuid>`, one run id on both, so the service
//! pairs them and measures the run.
//!
//! A ping is a side channel: it has its own HTTP client, without the API token or any header of
//! the API's; each ping gets a short timeout and a few attempts, and a ping that fails is a
//! warning — it never changes the command's outcome or exit code, and never delays it by more
//! than [`ATTEMPTS`] × [`TIMEOUT`].

use std::time::Duration;

/// The timeout of one ping attempt.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per ping.
pub const ATTEMPTS: u32 = 3;
/// The largest body a ping carries (healthchecks.io keeps the first 100 KB of a ping's body).
pub const MAX_BODY: usize = 10 << 10;

/// The pings of one invocation.
#[derive(Debug)]
pub struct Ping {
    url: String,
    rid: uuid::Uuid,
    http: Option<reqwest::Client>,
}

impl Ping {
    /// Pings to `url` (checked: http(s), no credentials), with a fresh run id.
    pub fn new(url: String) -> Ping {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| tracing::warn!("pings are off: cannot build their client: {e}"))
            .ok();
        Ping {
            url,
            rid: uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid(),
            http,
        }
    }

    /// `URL/start`.
    pub async fn start(&self) {
        self.send("start", String::new()).await;
    }

    /// `URL/<code>`, with `body` (cut to [`MAX_BODY`] bytes).
    pub async fn end(&self, code: u8, mut body: String) {
        if body.len() > MAX_BODY {
            let mut cut = MAX_BODY;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        self.send(&code.to_string(), body).await;
    }

    async fn send(&self, what: &str, body: String) {
        let Some(http) = &self.http else { return };
        let url = format!("{}/{what}?rid={}", self.url, self.rid);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match http.post(&url).body(body.clone()).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = crate::client::describe(&e),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
        tracing::warn!("the `{what}` ping failed after {ATTEMPTS} attempts: {last}");
    }
}
