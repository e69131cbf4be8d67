//! The HTTP client: one shared reqwest client (rustls, explicit timeouts), the credentials, one
//! attempt of a submission or a query, and the rate limiters of the API's endpoints
//! ([`Limiters`]). Retrying is not done here but by the one retry driver (`crate::retry`), which
//! takes the endpoint's limiter before every attempt, so every attempt is counted.

pub(crate) mod connection;
mod direct;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER,
    USER_AGENT,
};

use crate::api::Kind;
use crate::api::answer::Reply;
use crate::body::WireBody;
use crate::env_vars;
use crate::units::Rates;

/// The images-per-minute limiters of the API's endpoints, one per kind whose rate is limited
/// (none for an endpoint at `--rate 0` or `--rate KIND=0`).
#[derive(Debug, Default)]
pub(crate) struct Limiters(std::collections::BTreeMap<Kind, crate::rate::Limiter>);

impl Limiters {
    /// The submissions' limiters: `rates` per endpoint, a minute's allowance at once until the
    /// endpoint answers 429.
    pub(crate) fn submissions(rates: Rates) -> Limiters {
        Limiters::of(rates, false, false)
    }

    /// The task queries' limiters: `per_minute` per endpoint; `even`: spaced evenly from the
    /// start, else a minute's allowance at once.
    pub(crate) fn queries(per_minute: u32, even: bool) -> Limiters {
        Limiters::of(Rates::uniform(per_minute), even, true)
    }

    fn of(rates: Rates, even: bool, queries: bool) -> Limiters {
        let make = |kind: Kind| {
            let rate = rates.get(kind);
            let limiter = if even {
                crate::rate::Limiter::even(rate)
            } else {
                crate::rate::Limiter::new(rate)
            };
            limiter.labelled(kind, queries)
        };
        Limiters(
            Kind::ALL
                .iter()
                .filter(|k| rates.get(**k) > 0)
                .map(|k| (*k, make(*k)))
                .collect(),
        )
    }

    /// How long the rest of `planned` images of `kind` take by its limiter's schedule (zero
    /// without a limit): what the limiter has not let through yet, at its rate.
    pub(crate) fn eta(&self, kind: Kind, planned: u64) -> Duration {
        self.get(kind).map_or(Duration::ZERO, |l| {
            l.eta(planned.saturating_sub(l.admitted()))
        })
    }

    /// The limiter of `kind`'s endpoint, if the rate is limited.
    pub(crate) fn get(&self, kind: Kind) -> Option<&crate::rate::Limiter> {
        self.0.get(&kind)
    }

    /// The gate of one attempt for the retry driver: `kind`'s limiter and what the attempt costs.
    pub(crate) fn gate(&self, kind: Kind, units: u32) -> Option<(&crate::rate::Limiter, u32)> {
        self.get(kind).map(|l| (l, units))
    }
}

/// Connect timeout of every request (the per-attempt `--timeout` covers the whole exchange).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read into memory ([`crate::limits::ANSWER_BYTES`]).
pub(crate) const MAX_ANSWER_BYTES: usize = crate::limits::ANSWER_BYTES;
/// The `User-Agent` of every request.
const USER_AGENT_VALUE: &str = concat!("hidream-batch/", env!("CARGO_PKG_VERSION"));
/// The token `run --simulate` uses with its in-process simulator.
pub(crate) const SIMULATOR_TOKEN: &str = "simulated-token";

/// The API token. It cannot be printed: `Debug` shows `Token(***)` and there is no `Display`; the
/// header built from it is marked sensitive so HTTP-level logs redact it too.
#[derive(Clone)]
pub(crate) struct Token(String);

impl Token {
    pub(crate) fn new(value: String) -> Option<Token> {
        let value = value.trim().to_string();
        (!value.is_empty()).then_some(Token(value))
    }

    /// From `HIDREAM_API_TOKEN`, if set and non-empty.
    pub(crate) fn from_env() -> Option<Token> {
        std::env::var(env_vars::API_TOKEN).ok().and_then(Token::new)
    }

    fn header(&self) -> Result<HeaderValue, String> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| {
            format!(
                "`{}` contains characters not allowed in a header",
                env_vars::API_TOKEN
            )
        })?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Refuse an origin that holds a user or a password (`https://user:secret@host`): it would be
/// shown in messages, `expand`'s output and logs. The message does not repeat it.
pub(crate) fn no_credentials(value: &str) -> Result<(), String> {
    match reqwest::Url::parse(value) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => Err(format!(
            "`{}://…@{}` holds a user or password: give the origin alone (credentials would be shown in messages and logs; the API token goes in HIDREAM_API_TOKEN)",
            url.scheme(),
            url.host_str().unwrap_or("")
        )),
        _ => Ok(()),
    }
}

/// Where requests go: the real hosts, or one origin for every endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(Option<String>);

impl BaseUrl {
    pub const REAL: BaseUrl = BaseUrl(None);

    /// Check a `--base-url`: an absolute http(s) origin; plain `http://` only to loopback.
    pub fn parse(value: &str) -> Result<BaseUrl, String> {
        no_credentials(value)?;
        let url = reqwest::Url::parse(value).map_err(|e| format!("`{value}` is not a URL: {e}"))?;
        let host = url
            .host_str()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(format!(
                    "`{value}` is plain http to a host that is not loopback: the token would travel unencrypted; use https"
                ));
            }
            other => return Err(format!("`{value}`: unsupported scheme `{other}`")),
        }
        Ok(BaseUrl(Some(value.trim_end_matches('/').to_string())))
    }

    /// The submit URL of a kind.
    pub fn endpoint(&self, kind: Kind) -> String {
        kind.endpoint(self.0.as_deref())
    }

    /// The origin the e-commerce endpoints (model images, their templates) are reached at: the
    /// `--base-url`, or the real e-commerce host.
    pub fn model_origin(&self) -> &str {
        self.0.as_deref().unwrap_or(crate::api::MODEL_HOST)
    }
}

/// The result of one HTTP attempt, before classification.
#[derive(Debug, Clone)]
pub(crate) enum Attempt {
    /// The server answered.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        /// The envelope, read leniently ([`Reply`]), or why it is not one.
        envelope: Result<Reply, String>,
    },
    /// The request never reached the server (connection refused, DNS failure): safe to retry.
    NotSent(String),
    /// The request was sent and no answer came (timeout, connection closed): the task may exist.
    NoAnswer(String),
    /// Our own body could not be produced whole (a local image unreadable, or not the one
    /// validated): the request was cut off before it was complete, so no task was created.
    BodyFailed(String),
}

/// A URL as the direct transport sends to it: converted as reqwest converts it (a `Url` is
/// normalised: an international host in punycode).
fn wire_uri(url: &reqwest::Url) -> Result<http::Uri, String> {
    http::Uri::try_from(url.as_str()).map_err(|e| format!("bad endpoint URL: {e}"))
}

/// The TLS setup of every connection: rustls with the aws-lc-rs provider and the platform's
/// verifier (the system's CA roots), as reqwest 0.13 builds it by default, and no ALPN (each
/// transport sets its own). Built once per process: loading the roots takes milliseconds, and a
/// run builds more than one client.
fn tls() -> Result<rustls::ClientConfig, String> {
    static TLS: std::sync::OnceLock<Result<rustls::ClientConfig, String>> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
            .with_no_client_auth())
    })
    .clone()
}

/// Start building the TLS setup on a thread of its own, so that loading the system's CA roots
/// overlaps other work (`run` validates meanwhile); the first client waits for it if need be.
pub(crate) fn prepare_tls() {
    let _ = std::thread::Builder::new()
        .name("hidream-batch-tls".into())
        .spawn(|| {
            let _ = tls();
        });
}

/// The shared client and the credentials.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: BaseUrl,
    /// Submit URLs, parsed once (index: `Kind::ALL`).
    submit_urls: [reqwest::Url; 2],
    /// The submissions' transport, unless a proxy applies (then reqwest sends them).
    direct: Option<direct::Direct>,
    auth: HeaderValue,
    user_id: Option<HeaderValue>,
}

impl Client {
    /// Build the client. `timeout` bounds one whole attempt.
    pub(crate) fn new(
        base: BaseUrl,
        token: &Token,
        timeout: Duration,
        pool: usize,
    ) -> Result<Client, String> {
        let tls = tls()?;
        // HTTP/1.1 only: the tool is built without HTTP/2 (reqwest's, hyper's). Every exchange
        // is one small request or one image download, `--concurrency` at a time, on pooled
        // connections, which HTTP/1.1 serves as well; leaving HTTP/2 out takes 3 MB off the
        // binary and about 0.5 MB off a run's resident memory (issue 7's target).
        let mut alpn = tls.clone();
        alpn.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(alpn)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            // A redirected POST comes back as a GET without its body: never follow one. A 3xx is
            // classified like any other unexpected status (`rejected`, nothing was created).
            .redirect(reqwest::redirect::Policy::none())
            // No retries hidden inside the client (reqwest 0.13 retries some refusals by
            // default): every attempt goes through the rate limiter and counts (`retry.rs`).
            .retry(reqwest::retry::never())
            .user_agent(USER_AGENT_VALUE)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let user_id = std::env::var(env_vars::API_USER_ID)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| HeaderValue::from_str(s.trim()))
            .transpose()
            .map_err(|_| format!("`{}` is not a valid header value", env_vars::API_USER_ID))?;
        let parse = |kind: Kind| {
            reqwest::Url::parse(&base.endpoint(kind)).map_err(|e| format!("bad endpoint URL: {e}"))
        };
        let submit_urls = [parse(Kind::ALL[0])?, parse(Kind::ALL[1])?];
        let mut client = Client {
            http,
            direct: None,
            submit_urls,
            base,
            auth: token.header()?,
            user_id,
        };
        // The direct transport's endpoints, in the order of `Kind::ALL`, with the headers of
        // every submission to each.
        let mut endpoints = Vec::new();
        for (kind, url) in Kind::ALL.iter().zip(&client.submit_urls) {
            let mut headers = client.headers(*kind);
            headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            endpoints.push((wire_uri(url)?, headers));
        }
        client.direct = direct::Direct::new(&endpoints, tls, timeout, pool);
        Ok(client)
    }

    pub(crate) fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// The underlying HTTP client (for downloads).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn headers(&self, kind: Kind) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, self.auth.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let (true, Some(u)) = (kind.accepts_user_id(), &self.user_id) {
            h.insert("API-User-ID", u.clone());
        }
        h
    }

    /// Which server `--base-url` reaches: the simulator marks every answer ([`crate::sim::MARK_HEADER`]).
    /// One `HEAD` of the text-to-image submit URL, without the token (it creates nothing).
    pub(crate) async fn world(&self) -> Result<crate::results::World, String> {
        let url = self.submit_urls[0].clone();
        match self.http.head(url).send().await {
            Ok(r) if r.headers().contains_key(crate::sim::MARK_HEADER) => {
                Ok(crate::results::World::Simulator)
            }
            Ok(_) => Ok(crate::results::World::Api),
            Err(e) => Err(describe(&e)),
        }
    }

    /// One submission attempt. A body with local images is streamed (with its exact
    /// `Content-Length`); a plain one is sent from memory. It goes by the direct transport
    /// (`direct.rs`), or by reqwest when a proxy from the environment applies.
    pub(crate) async fn submit(&self, kind: Kind, body: &WireBody) -> Attempt {
        let i = Kind::ALL.iter().position(|k| *k == kind).expect("a kind");
        if let Some(direct) = &self.direct {
            return direct.submit(i, body).await;
        }
        let request = self
            .http
            .post(self.submit_urls[i].clone())
            .headers(self.headers(kind));
        let (request, failure) = match body.as_bytes() {
            Some(bytes) => (request.body(bytes), None),
            None => {
                let (stream, failure) = body.stream();
                let request = request
                    .header(CONTENT_LENGTH, body.len())
                    .body(reqwest::Body::wrap_stream(stream));
                (request, Some(failure))
            }
        };
        let sent = request.send().await;
        // reqwest reports a failed body stream as a request error: ask the stream itself.
        if let Some(why) = failure.as_ref().and_then(|f| f.get()) {
            return Attempt::BodyFailed(why.to_string());
        }
        answer(sent).await
    }

    /// One GET of an API answer on a kind's endpoint family (task results).
    pub(crate) async fn get_reply(
        &self,
        kind: Kind,
        url: &str,
    ) -> Result<(u16, Option<Duration>, Result<Reply, String>), Attempt> {
        let mut headers = self.headers(kind);
        headers.remove(CONTENT_TYPE);
        match self.http.get(url).headers(headers).send().await {
            Err(e) => Err(transport(&e)),
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = retry_after(r.headers());
                match read_bounded(r, MAX_ANSWER_BYTES).await {
                    Ok(b) => Ok((status, retry_after, Reply::read(&b))),
                    Err(Body::TooLarge(m)) if !(200..300).contains(&status) => {
                        Ok((status, retry_after, Err(m)))
                    }
                    Err(Body::TooLarge(m) | Body::Failed(m)) => Err(Attempt::NoAnswer(m)),
                }
            }
        }
    }
}

async fn answer(sent: reqwest::Result<reqwest::Response>) -> Attempt {
    let response = match sent {
        Ok(r) => r,
        Err(e) => return transport(&e),
    };
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    answered(
        status,
        retry_after,
        read_bounded(response, MAX_ANSWER_BYTES).await,
    )
}

/// What an answered submission attempt was, from its status and its body (or why the body was
/// not read). The same for both transports.
fn answered(
    status: u16,
    retry_after: Option<Duration>,
    body: Result<bytes::Bytes, Body>,
) -> Attempt {
    match body {
        Ok(bytes) => Attempt::Answered {
            status,
            retry_after,
            envelope: Reply::read(&bytes),
        },
        // Too large to read: the status alone decides, except a success, whose task id is in
        // the part not read.
        Err(Body::TooLarge(m)) if !(200..300).contains(&status) => Attempt::Answered {
            status,
            retry_after,
            envelope: Err(m),
        },
        // Headers came, the body did not: the request was received; the outcome is unknown.
        Err(Body::TooLarge(m) | Body::Failed(m)) => Attempt::NoAnswer(m),
    }
}

/// Why an answer's body was not read.
pub(crate) enum Body {
    /// Over its bound (declared or read so far): not read further.
    TooLarge(String),
    /// The connection failed while it was read.
    Failed(String),
}

/// An image downloaded by `collect` larger than this fails that image
/// ([`crate::limits::DOWNLOAD_BYTES`]).
pub(crate) const MAX_IMAGE_BYTES: usize = crate::limits::DOWNLOAD_BYTES;

/// Read a body, up to `limit` bytes ([`MAX_ANSWER_BYTES`] for an API answer,
/// [`MAX_IMAGE_BYTES`] for an image): a larger one (declared, or read so far) is not read
/// further, so a server that sends without end cannot exhaust memory.
pub(crate) async fn read_bounded(
    response: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, Body> {
    let declared = response.content_length();
    let body = http::Response::from(response).into_body();
    direct::read_bounded(declared, body, limit, describe).await
}

/// A transport error: a failure to connect means no request reached the server; anything later
/// means the request may have been received. (A failure of our own body is told by the body
/// stream itself: see [`Client::submit`].)
fn transport(e: &reqwest::Error) -> Attempt {
    if e.is_connect() || e.is_builder() {
        Attempt::NotSent(describe(e))
    } else {
        Attempt::NoAnswer(describe(e))
    }
}

/// An error with its causes, on one line (reqwest's Display hides the interesting part).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    // URLs carry no secrets here, but keep messages short.
    out
}

/// `Retry-After`: seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::new("secret-value".into()).unwrap();
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(Token::new("  ".into()).is_none());
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(BaseUrl::parse("http://127.0.0.1:8787").is_ok());
        assert!(BaseUrl::parse("http://localhost:1").is_ok());
        assert!(BaseUrl::parse("http://[::1]:1").is_ok());
        assert!(BaseUrl::parse("https://proxy.example.com").is_ok());
        let err = BaseUrl::parse("http://proxy.example.com").unwrap_err();
        assert!(err.contains("unencrypted"), "{err}");
        assert!(BaseUrl::parse("ftp://x").is_err());
        // Credentials are refused, and the message does not repeat them.
        let err = BaseUrl::parse("https://user:hunter2@proxy.example.com").unwrap_err();
        assert!(
            err.contains("user or password") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(BaseUrl::parse("https://user@proxy.example.com").is_err());
        assert_eq!(
            BaseUrl::parse("http://127.0.0.1:9/")
                .unwrap()
                .endpoint(Kind::Model),
            "http://127.0.0.1:9/api-pub/ec/v3/image/model/async"
        );
    }

    #[test]
    fn an_international_host_is_sent_as_punycode() {
        let base = BaseUrl::parse("https://bücher.example").unwrap();
        let token = Token::new("t".into()).unwrap();
        let client = Client::new(base, &token, Duration::from_secs(1), 1).unwrap();
        assert_eq!(
            wire_uri(&client.submit_urls[0]).unwrap().host(),
            Some("xn--bcher-kva.example"),
            "as reqwest converts its URL"
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("garbage"));
        assert_eq!(retry_after(&h), None);
    }
}
