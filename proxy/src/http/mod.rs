//! HTTP as both directions use it: HTTP/1.1, HTTP/2 and gRPC between apps and proxies, with
//! hyper 1.
//!
//! A connection detected as HTTP ([`detect`]) is served ([`server`]: HTTP/1 by our own
//! [`h1server`], HTTP/2 by hyper); each request is handled on its own by its direction
//! (`outbound::http`, `inbound::http`). Requests go out on pooled client connections ([`pool`]): one HTTP/2 connection per meshed peer, carrying HTTP/1
//! requests upgraded with `l5d-orig-proto` ([`orig_proto`]). `Upgrade` (WebSocket) and
//! `CONNECT` requests get a connection of their own and become byte tunnels after the 101/2xx
//! ([`upgrade`]).
//!
//! # Layout
//! - [`detect`]: HTTP/1 request line or HTTP/2 preface; refuses a smuggling-prone first head.
//! - [`server`]: serving a detected connection; handlers may close it.
//! - [`h1server`], [`h1client`], [`h2client`]: our own HTTP/1 server and client connections,
//!   and our client on the `h2` crate's connections.
//! - [`inflight`]: the proxy's cap on requests in flight, both directions.
//! - [`pool`]: client connections per endpoint.
//! - [`orig_proto`]: HTTP/1 over HTTP/2 between proxies.
//! - [`upgrade`]: Upgrade and CONNECT tunnels.
//! - [`record`]: golden metrics and the access log per request.

pub mod detect;
pub mod h1client;
pub mod h1server;
pub mod h2client;
pub mod h2conn;
pub mod h2server;
pub mod inflight;
pub mod memo;
pub mod orig_proto;
pub mod pool;
pub mod record;
pub mod server;
pub mod upgrade;

pub use h1server::RequestBody;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response the proxy handles. What most messages carry goes
/// unboxed: nothing, or the response of a pooled client connection (an HTTP/1 or HTTP/2
/// body as the client gives it); any other body is boxed ([`boxed`]). Such a response crosses
/// a proxy in two wrappers (its golden metrics, its request's permit: `record::Recorded`,
/// `inflight::Held`) and no box.
#[derive(Default)]
pub enum Body {
    /// No bytes (also the default: `tonic::Status::into_http` asks for one).
    #[default]
    Empty,
    /// A pooled client connection's response.
    Pool(pool::PoolBody),
    /// Any other body.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Body::Empty => "Body::Empty",
            Body::Pool(_) => "Body::Pool",
            Body::Boxed(_) => "Body::Boxed",
        })
    }
}

impl From<pool::PoolBody> for Body {
    fn from(b: pool::PoolBody) -> Self {
        Body::Pool(b)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => std::task::Poll::Ready(None),
            Body::Pool(b) => std::pin::Pin::new(b).poll_frame(cx),
            Body::Boxed(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Pool(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Empty => hyper::body::SizeHint::with_exact(0),
            Body::Pool(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}

pub const L5D_PROXY_ERROR: HeaderName = HeaderName::from_static("l5d-proxy-error");
pub const L5D_PROXY_CONNECTION: HeaderName = HeaderName::from_static("l5d-proxy-connection");
pub const L5D_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");
pub const L5D_ORIG_PROTO: HeaderName = HeaderName::from_static("l5d-orig-proto");
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The `grpc-status` of a header map (a response's headers or trailers). Looked up by a
/// constant name: a `&str` key is parsed and checked on every call.
pub fn grpc_status(h: &HeaderMap) -> Option<u16> {
    h.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// Boxes any body.
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Body::Boxed(body.map_err(Into::into).boxed_unsync())
}

/// HTTP/2 needs an absolute URI: fills in the scheme and an authority (from `Host`, else
/// `fallback`) when the request has none.
pub fn ensure_absolute<B>(req: &mut http::Request<B>, fallback: std::net::SocketAddr) {
    if req.uri().scheme().is_some() && req.uri().authority().is_some() {
        return;
    }
    let authority = match req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        Some(host) => host.to_string(),
        None => fallback.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = authority.parse().ok();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// A request body that notes whether reading it failed (a malformed body from the client, as
/// opposed to a failure of the peer). A body already at its end (most requests) cannot fail: it
/// becomes [`Body::Empty`], and no flag is made.
pub fn watch_errors<B>(body: B) -> (Body, BodyFailed)
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    if body.is_end_stream() {
        return (Body::Empty, BodyFailed(None));
    }
    let failed = std::sync::Arc::new(AtomicBool::new(false));
    let flag = failed.clone();
    let body = body
        .map_err(move |e| {
            flag.store(true, Ordering::Relaxed);
            e.into()
        })
        .boxed_unsync();
    (Body::Boxed(body), BodyFailed(Some(failed)))
}

/// Whether reading a body [`watch_errors`] watches has failed.
#[derive(Clone, Debug)]
pub struct BodyFailed(Option<std::sync::Arc<std::sync::atomic::AtomicBool>>);

impl BodyFailed {
    pub fn get(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Describes an error with its causes.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Whether a `Connection` header of `headers` names `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, token.as_bytes()))
}

/// Whether a comma-separated field value names `token` (case-insensitive).
pub fn has_token(value: &HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and the headers it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE` (except `trailers`), `Trailer`, `Transfer-Encoding`,
/// `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present is cheaper than the
    // dozen hashed removals below (BENCHMARKS.md, "Instructions per request").
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    remove_connection_named(headers);
    for name in [
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes `Connection` and the fields it names.
pub(super) fn remove_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
}

/// Whether `name` is one of the hop-by-hop headers [`strip_hop_by_hop`] always looks at
/// (the ones `Connection` names are found through `Connection` itself).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn each_hop_by_hop_header_alone_goes_and_others_stay() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-kept", HeaderValue::from_static("yes"));
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("deflate"),
            );
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
            assert_eq!(h["x-kept"], "yes");
        }
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("web"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
