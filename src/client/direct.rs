//! The submissions' transport: HTTP/1.1 connections of hyper's (`hyper::client::conn`) over
//! rustls (or plain TCP to loopback), pooled here, with nothing between the request and the
//! connection.
//!
//! Submitting is the one hot path of a run: every request pays for it once, and on an
//! overhead-bound run (no latency, 64 in flight) the client's CPU per request is what limits the
//! rate. reqwest (kept for everything else: task queries, downloads, templates) adds per request a
//! header map copy, a boxed future, a tower retry and redirect layer, and two parses of the URL
//! into a `url::Url` (its redirect policy and its response); hyper-util's general pool under it
//! keys, locks and wraps every checkout. Together about a quarter of a submission's CPU
//! (`bench/results/overhead-9reps.md`). This transport sends the same bytes without them.
//!
//! It sends what reqwest would send (the same headers, `Accept: */*` and `Host` included, the
//! target in origin form) and connects as reqwest would:
//!
//! - TLS is the one rustls setup reqwest is given too ([`super::tls`]: the aws-lc-rs provider
//!   and the platform's verifier, as reqwest 0.13 builds it); ALPN offers `http/1.1` only, as
//!   for reqwest (the tool is built without HTTP/2: see [`super::Client::new`]);
//! - connections are pooled per origin (at most `--concurrency` idle, each for at most
//!   [`IDLE_FOR`], as reqwest's default), with `TCP_NODELAY`, reqwest's TCP keepalive (15 s, 3
//!   probes) and `TCP_USER_TIMEOUT` (30 s, Linux); connecting (TCP and the TLS handshake, before
//!   any byte of a request is written) is bounded by [`super::CONNECT_TIMEOUT`] (at most
//!   `--timeout`), and a connection that cannot be made in time is a failure to connect (nothing
//!   was sent), as in reqwest (with `--timeout` of 10 s or less both bounds end together, and a
//!   connection that stalls to the end is told either way, whichever fires first: as in reqwest,
//!   and never resent after a byte was written);
//! - redirects are not followed and nothing is retried, with one exception that cannot pay
//!   twice: a pooled connection found closed, or one that hyper hands the request back from
//!   because it was closed before a byte of the request was serialised onto it
//!   (`TrySendError::take_message`), is dropped and the request goes on another (as hyper-util's
//!   `retry_canceled_requests` does);
//! - `--timeout` bounds the whole attempt: connecting, sending, the answer and its body.
//!
//! What an attempt became is told as for reqwest (`super::Attempt`): a failure to connect (or a
//! new connection closed before the request was written) is `NotSent` (no byte reached the
//! server), any later failure `NoAnswer` (the task may exist), and a failure of our own body
//! stream `BodyFailed` (asked of the stream itself). A connection goes back to the pool only
//! after its answer was read whole.
//!
//! **Proxies.** reqwest honours `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`; this
//! transport does not speak to proxies. [`Direct::new`] asks the same rules (hyper-util's
//! matcher, which reqwest uses) whether a submit URL goes through a proxy; when one does, there is
//! no direct transport and submissions go through reqwest, as before.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderValue};

use super::{Attempt, Body, CONNECT_TIMEOUT, MAX_ANSWER_BYTES, answered, retry_after};
use crate::body::WireBody;

/// A body with no file (sent from memory), or one streamed from its parts.
type SubmitBody = Either<Full<Bytes>, http_body_util::combinators::BoxBody<Bytes, std::io::Error>>;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long a connection may wait in the pool (reqwest's and hyper-util's default): past it, a
/// server's keep-alive may have closed it.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(90);

/// The connector, with connecting bounded in time: TCP and TLS together (hyper's own timeout
/// covers TCP alone). A timeout is a connector error, so hyper reports it as a failure to
/// connect.
#[derive(Clone)]
struct Bounded {
    inner: Https,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for Bounded {
    type Response = <Https as tower_service::Service<http::Uri>>::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (connecting, timeout) = (self.inner.call(uri), self.timeout);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(format!(
                    "no connection within {} (TCP and TLS)",
                    humantime::format_duration(timeout)
                )
                .into()),
            }
        })
    }
}

/// The direct transport of submissions (see the module docs).
#[derive(Clone)]
pub(crate) struct Direct {
    connector: Bounded,
    pool: Arc<Pool>,
    timeout: Duration,
    /// The submit URLs, worked out once (in the order they were given).
    endpoints: Arc<[Endpoint]>,
}

/// A submit URL as this transport sends to it, worked out once: its origin (the pool's key), the
/// request target in origin form, and the headers of every request to it (`Host` included).
struct Endpoint {
    uri: http::Uri,
    origin: Arc<str>,
    target: http::Uri,
    headers: HeaderMap,
}

impl Endpoint {
    fn new(uri: &http::Uri, mut headers: HeaderMap) -> Option<Endpoint> {
        let origin = format!("{}://{}", uri.scheme_str()?, uri.authority()?);
        let target = uri.path_and_query().map_or_else(
            || http::Uri::from_static("/"),
            |pq| http::Uri::from(pq.clone()),
        );
        headers.insert(HOST, HeaderValue::from_str(&host(uri)).ok()?);
        Some(Endpoint {
            uri: uri.clone(),
            origin: origin.into(),
            target,
            headers,
        })
    }
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Idle connections, the most recently used last.
struct Pool {
    idle: Mutex<Vec<Idle>>,
    max: usize,
}

struct Idle {
    /// `scheme://authority`.
    origin: Arc<str>,
    since: Instant,
    sender: SendRequest<SubmitBody>,
}

impl Pool {
    /// The most recently used idle connection to `origin` that is still open and has not waited
    /// too long, if any; the ones passed over on the way are dropped.
    fn take(&self, origin: &str) -> Option<SendRequest<SubmitBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        loop {
            let i = idle.iter().rposition(|c| &*c.origin == origin)?;
            let c = idle.swap_remove(i);
            if !c.sender.is_closed() && now.saturating_duration_since(c.since) < IDLE_FOR {
                return Some(c.sender);
            }
        }
    }

    /// Keep a connection whose exchange is over, if it is open and there is room.
    fn put(&self, origin: &Arc<str>, sender: SendRequest<SubmitBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if !sender.is_closed() && idle.len() < self.max {
            idle.push(Idle {
                origin: origin.clone(),
                since: Instant::now(),
                sender,
            });
        }
    }
}

impl Direct {
    /// The transport for `endpoints` (each submit URL with the headers of every request to it),
    /// or `None` when a proxy from the environment applies to one of them (reqwest sends those)
    /// or one is not an absolute URL.
    pub(crate) fn new(
        endpoints: &[(http::Uri, HeaderMap)],
        tls: rustls::ClientConfig,
        timeout: Duration,
        pool: usize,
    ) -> Option<Direct> {
        let proxies = hyper_util::client::proxy::matcher::Matcher::from_system();
        if endpoints
            .iter()
            .any(|(u, _)| proxies.intercept(u).is_some())
        {
            return None;
        }
        let endpoints = endpoints
            .iter()
            .map(|(uri, headers)| Endpoint::new(uri, headers.clone()))
            .collect::<Option<Arc<[Endpoint]>>>()?;
        let bound = CONNECT_TIMEOUT.min(timeout);
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        // reqwest 0.13's defaults: a pooled connection that died silently (a NAT or a load
        // balancer dropping it) is found out before a request is written into it, and the
        // connect time is shared between a host's addresses.
        tcp.set_connect_timeout(Some(bound));
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let connector = Bounded {
            inner: hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(tcp),
            timeout: bound,
        };
        let pool = Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            max: pool.max(1),
        });
        Some(Direct {
            connector,
            pool,
            timeout,
            endpoints,
        })
    }

    /// A new connection to `uri`'s origin, its I/O driven by a task of its own.
    async fn connect(&self, uri: &http::Uri) -> Result<SendRequest<SubmitBody>, String> {
        let mut connector = self.connector.clone();
        let io = tower_service::Service::call(&mut connector, uri.clone())
            .await
            .map_err(|e| chain(&format!("cannot connect: {e}"), &*e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| chain("cannot connect", &e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Send `request` on a pooled connection or a new one (see the module docs for the one
    /// case where it moves to another connection), and read the answer.
    async fn exchange(&self, to: &Endpoint, mut request: http::Request<SubmitBody>) -> Attempt {
        loop {
            let (mut sender, pooled) = match self.pool.take(&to.origin) {
                Some(s) => (s, true),
                // Boxed: a new connection is rare (a few per run), and its future (TCP, TLS,
                // the HTTP handshake) would otherwise make every submission's state kilobytes
                // larger, moved and allocated once per request.
                None => match Box::pin(self.connect(&to.uri)).await {
                    Ok(s) => (s, false),
                    Err(why) => return Attempt::NotSent(why),
                },
            };
            if sender.ready().await.is_err() {
                // Closed before anything was written on it.
                if pooled {
                    continue;
                }
                return Attempt::NotSent("cannot connect: the connection closed at once".into());
            }
            let response = match sender.try_send_request(request).await {
                Ok(r) => r,
                Err(mut e) => match e.take_message() {
                    // Handed back: not a byte of it was written.
                    Some(back) if pooled => {
                        request = back;
                        continue;
                    }
                    Some(_) => return Attempt::NotSent(chain("cannot connect", e.error())),
                    None => return Attempt::NoAnswer(chain("connection failed", e.error())),
                },
            };
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let declared = http_body::Body::size_hint(response.body()).exact();
            let body = read_bounded(declared, response.into_body(), MAX_ANSWER_BYTES, |e| {
                chain("connection failed", e)
            })
            .await;
            if body.is_ok() {
                self.pool.put(&to.origin, sender);
            }
            return answered(status, retry_after, body);
        }
    }

    /// One submission attempt: POST `body` to endpoint `i` (in the order given to [`Direct::new`]).
    pub(crate) async fn submit(&self, i: usize, body: &WireBody) -> Attempt {
        let to = &self.endpoints[i];
        let (payload, failure) = match body.as_bytes() {
            Some(bytes) => (Either::Left(Full::new(bytes)), None),
            None => {
                let (stream, failure) = body.stream();
                let frames = stream.map(|chunk| chunk.map(hyper::body::Frame::data));
                (
                    Either::Right(BodyExt::boxed(StreamBody::new(frames))),
                    Some(failure),
                )
            }
        };
        let mut request = http::Request::new(payload);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = to.target.clone();
        *request.headers_mut() = to.headers.clone();
        if failure.is_some() {
            request
                .headers_mut()
                .insert(CONTENT_LENGTH, body.len().into());
        }
        let attempt = self.exchange(to, request);
        let attempt = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(a) => a,
            Err(_) => Attempt::NoAnswer("timed out".into()),
        };
        // A failed body stream shows as a failed request: ask the stream itself.
        if let Some(why) = failure.as_ref().and_then(|f| f.get()) {
            return Attempt::BodyFailed(why.to_string());
        }
        attempt
    }
}

/// Read a body of `declared` length (if known), up to `limit` bytes: a larger one (declared, or
/// read so far) is not read further, so a server that sends without end cannot exhaust memory.
/// `failed` says why a frame could not be read.
pub(crate) async fn read_bounded<B>(
    declared: Option<u64>,
    body: B,
    limit: usize,
    failed: impl Fn(&B::Error) -> String,
) -> Result<Bytes, Body>
where
    B: http_body::Body<Data = Bytes>,
{
    let too_large = || {
        Body::TooLarge(format!(
            "the answer is larger than {} KiB; it was not read",
            limit / 1024
        ))
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut buf: Option<bytes::BytesMut> = None;
    let mut first: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Body::Failed(failed(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let held = first.as_ref().map_or(0, Bytes::len) + buf.as_ref().map_or(0, |b| b.len());
        if held + data.len() > limit {
            return Err(too_large());
        }
        // The common case, a small answer in one piece, is not copied.
        match (&mut buf, first.take()) {
            (None, None) => first = Some(data),
            (None, Some(f)) => {
                let mut b = bytes::BytesMut::from(f);
                b.extend_from_slice(&data);
                buf = Some(b);
            }
            (Some(b), _) => b.extend_from_slice(&data),
        }
    }
    Ok(match (buf, first) {
        (Some(b), _) => b.freeze(),
        (None, Some(f)) => f,
        (None, None) => Bytes::new(),
    })
}

/// The `Host` header of `uri`: its host, and its port unless it is the scheme's own.
fn host(uri: &http::Uri) -> String {
    let host = uri.host().unwrap_or("");
    match (uri.scheme_str(), uri.port_u16()) {
        (Some("http"), Some(80)) | (Some("https"), Some(443)) | (_, None) => host.to_string(),
        (_, Some(port)) => format!("{host}:{port}"),
    }
}

/// An error with its causes, on one line, after `what`.
fn chain(what: &str, e: &dyn std::error::Error) -> String {
    let mut out = what.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    out
}
