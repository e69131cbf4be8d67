//! The submissions' transport: hyper's pooled HTTP client over rustls (or plain TCP to loopback),
//! with nothing between the request and the connection.
//!
//! Submitting is the one hot path of a run: every request pays for it once, and on an
//! overhead-bound run (no latency, 64 in flight) the client's CPU per request is what limits the
//! rate. reqwest (kept for everything else: task queries, downloads, templates) adds per request a
//! header map copy, a boxed future, a tower retry and redirect layer, and two parses of the URL
//! into a `url::Url` (its redirect policy and its response); together about a fifth of a
//! submission's CPU (`bench/results/overhead-9reps.md`). This transport sends the same bytes
//! without them.
//!
//! It sends what reqwest would send (the same headers, `Accept: */*` included) and connects as
//! reqwest would:
//!
//! - TLS is the one rustls setup reqwest is given too ([`super::tls`]: the aws-lc-rs provider
//!   and the platform's verifier, as reqwest 0.13 builds it); ALPN offers `h2` and `http/1.1`;
//! - connections are pooled (`--concurrency` idle per host), with `TCP_NODELAY`, reqwest's TCP
//!   keepalive (15 s, 3 probes) and `TCP_USER_TIMEOUT` (30 s, Linux); connecting (TCP
//!   and the TLS handshake, before any byte of a request is written) is bounded by
//!   [`super::CONNECT_TIMEOUT`] (at most `--timeout`), and a connection that cannot be made in
//!   time is a failure to connect (nothing was sent), as in reqwest (with `--timeout` of 10 s or
//!   less both bounds end together, and a connection that stalls to the end is told either
//!   way, whichever fires first: as in reqwest, and never resent after a byte was written);
//! - redirects are not followed and nothing is retried inside (hyper resends a request only when
//!   a pooled connection closed before any byte of it was written: nothing reached the server);
//! - `--timeout` bounds the whole attempt: connecting, sending, the answer and its body.
//!
//! What an attempt became is told as for reqwest (`super::Attempt`): a failure to connect is
//! `NotSent` (no byte reached the server), any later failure `NoAnswer` (the task may exist), and
//! a failure of our own body stream `BodyFailed` (asked of the stream itself).
//!
//! **Proxies.** reqwest honours `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`; this
//! transport does not speak to proxies. [`Direct::new`] asks the same rules (hyper-util's
//! matcher, which reqwest uses) whether a submit URL goes through a proxy; when one does, there is
//! no direct transport and submissions go through reqwest, as before.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper_util::client::legacy::{self, connect::HttpConnector};
use reqwest::header::{CONTENT_LENGTH, HeaderMap};

use super::{Attempt, Body, CONNECT_TIMEOUT, MAX_ANSWER_BYTES, answered, retry_after};
use crate::body::WireBody;

/// A body with no file (sent from memory), or one streamed from its parts.
type SubmitBody = Either<Full<Bytes>, http_body_util::combinators::BoxBody<Bytes, std::io::Error>>;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

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
    http: legacy::Client<Bounded, SubmitBody>,
    timeout: Duration,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// The transport for `uris`, or `None` when a proxy from the environment applies to one of
    /// them (reqwest sends those).
    pub(crate) fn new(
        uris: &[http::Uri],
        tls: rustls::ClientConfig,
        timeout: Duration,
        pool: usize,
    ) -> Option<Direct> {
        let proxies = hyper_util::client::proxy::matcher::Matcher::from_system();
        if uris.iter().any(|u| proxies.intercept(u).is_some()) {
            return None;
        }
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
                .enable_all_versions()
                .wrap_connector(tcp),
            timeout: bound,
        };
        let http = legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Some(Direct { http, timeout })
    }

    /// One submission attempt: POST `body` to `uri` with `headers`.
    pub(crate) async fn submit(
        &self,
        uri: http::Uri,
        headers: HeaderMap,
        body: &WireBody,
    ) -> Attempt {
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
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        if failure.is_some() {
            request
                .headers_mut()
                .insert(CONTENT_LENGTH, body.len().into());
        }
        let attempt = async {
            let response = match self.http.request(request).await {
                Ok(r) => r,
                Err(e) => {
                    return if e.is_connect() {
                        Attempt::NotSent(chain("cannot connect", &e))
                    } else {
                        Attempt::NoAnswer(chain("connection failed", &e))
                    };
                }
            };
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let declared = http_body::Body::size_hint(response.body()).exact();
            let body = read_bounded(declared, response.into_body(), MAX_ANSWER_BYTES, |e| {
                chain("connection failed", e)
            })
            .await;
            answered(status, retry_after, body)
        };
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
