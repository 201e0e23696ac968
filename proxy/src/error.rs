//! Every error the proxy answers an HTTP request with, and the one place that turns an error
//! into a response.
//!
//! A [`ProxyError`] knows its status, its reason (the `l5d-proxy-error` header's subject and
//! the `reason` / `error` label of `http_proxy_errors_total` and `response_total`), where it
//! came from ([`Origin`]) and whether the request may safely be sent again elsewhere
//! ([`ProxyError::is_retryable`]). [`respond`] logs it, counts it and builds the response.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use remora_metrics::http::HttpMetrics;
use remora_metrics::tcp::Direction;
use tracing::warn;

use crate::http::pool::ConnectFailure;
use crate::http::{Body, L5D_PROXY_ERROR, boxed};
use crate::inbound::policy::Denied;

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something the proxy will not carry.
    Downstream,
    /// The target could not be reached, or failed while answering.
    Upstream,
    /// The proxy itself decided: policy, routing, a timeout.
    Proxy,
}

/// An error the proxy answers a request with.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An explicit-mode request the proxy cannot carry (origin-form, `https://`, ...).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The client's request body broke off or was malformed.
    #[error("malformed request body")]
    MalformedBody,
    #[error("no endpoints for {0}")]
    NoEndpoints(String),
    #[error("cannot resolve {name}: {why}")]
    Unresolvable { name: String, why: String },
    /// The target is one of this proxy's own listeners.
    #[error("{0} is one of this proxy's own listeners")]
    Loop(SocketAddr),
    /// No connection to the target: the request was never sent.
    #[error("{addr}: {failure}")]
    Connect {
        addr: SocketAddr,
        failure: ConnectFailure,
    },
    /// An `Upgrade` or `CONNECT` the target refused or could not complete.
    #[error("{0}")]
    Upgrade(String),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection to the target failed while the request was in flight.
    #[error("{addr}: {detail}")]
    Upstream { addr: SocketAddr, detail: String },
    /// A retry was due but the request's body was not kept.
    #[error("cannot replay")]
    NotReplayable,
    /// Inbound: the app could not be reached or failed while answering.
    #[error("the app at {addr}: {detail}")]
    App { addr: SocketAddr, detail: String },
    /// Inbound: refused by the port's policy.
    #[error("{0}")]
    Denied(Denied),
    /// Gateway: the request already passed this gateway.
    #[error("the request already passed this gateway")]
    GatewayLoop,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::MalformedBody => StatusCode::BAD_REQUEST,
            ProxyError::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::GatewayLoop => StatusCode::LOOP_DETECTED,
            ProxyError::Unresolvable { .. }
            | ProxyError::Loop(_)
            | ProxyError::Connect { .. }
            | ProxyError::Upgrade(_)
            | ProxyError::Upstream { .. }
            | ProxyError::NotReplayable
            | ProxyError::App { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The reason, as a fixed label value.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "explicit_bad_request",
            ProxyError::MalformedBody => "malformed_request",
            ProxyError::NoEndpoints(_) => "no_endpoints",
            ProxyError::Unresolvable { .. } => "unresolvable",
            ProxyError::Loop(_) | ProxyError::GatewayLoop => "loop",
            ProxyError::Connect { .. } => "connect",
            ProxyError::Upgrade(_) => "upgrade",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Upstream { .. } | ProxyError::NotReplayable => "upstream",
            ProxyError::App { .. } => "app",
            ProxyError::Denied(d) => d.as_str(),
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::BadRequest(_) | ProxyError::MalformedBody => Origin::Downstream,
            ProxyError::Connect { .. }
            | ProxyError::Upgrade(_)
            | ProxyError::Upstream { .. }
            | ProxyError::App { .. } => Origin::Upstream,
            ProxyError::NoEndpoints(_)
            | ProxyError::Unresolvable { .. }
            | ProxyError::Loop(_)
            | ProxyError::Timeout(_)
            | ProxyError::NotReplayable
            | ProxyError::Denied(_)
            | ProxyError::GatewayLoop => Origin::Proxy,
        }
    }

    /// Whether the request may be sent again, to another endpoint: nothing of it reached the
    /// target.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProxyError::Connect { .. })
    }
}

/// Marks a response the proxy made itself with its reason, for `response_total{error}`.
#[derive(Clone, Copy, Debug)]
pub struct ErrorReason(pub &'static str);

/// Turns `err` into the response the client gets: logged, counted in
/// `http_proxy_errors_total{direction, status, reason}`, the reason marked for the golden
/// metrics, and `l5d-proxy-error` set when `annotate` (toward the app on the outbound, toward
/// an identified mesh peer on the inbound).
pub fn respond(
    err: ProxyError,
    direction: Direction,
    metrics: &HttpMetrics,
    annotate: bool,
) -> Response<Body> {
    let (status, reason) = (err.status(), err.reason());
    let detail = err.to_string();
    warn!(
        status = status.as_u16(),
        reason,
        detail = %detail,
        origin = ?err.origin(),
        "answering with an error"
    );
    metrics.error(direction, status.as_u16(), reason);
    let mut rsp = error_response(status, &detail, annotate);
    rsp.extensions_mut().insert(ErrorReason(reason));
    rsp
}

/// A response the proxy makes itself, carrying `l5d-proxy-error: detail` when `annotate`.
pub fn error_response(status: StatusCode, detail: &str, annotate: bool) -> Response<Body> {
    let mut rsp = Response::new(boxed(Full::new(Bytes::from(format!("{detail}\n")))));
    *rsp.status_mut() = status;
    let headers = rsp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if annotate && let Ok(v) = HeaderValue::from_str(&sanitize(detail)) {
        headers.insert(L5D_PROXY_ERROR, v);
    }
    rsp
}

/// Header values cannot carry newlines or non-visible bytes.
fn sanitize(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(512)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_annotated_only_when_asked() {
        let r = error_response(StatusCode::SERVICE_UNAVAILABLE, "no endpoints\nx", true);
        assert_eq!(r.headers()[L5D_PROXY_ERROR], "no endpoints x");
        let r = error_response(StatusCode::FORBIDDEN, "denied", false);
        assert!(r.headers().get(L5D_PROXY_ERROR).is_none());
    }

    #[test]
    fn each_error_knows_its_status_reason_origin_and_whether_it_may_be_retried() {
        let addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let cases = [
            (
                ProxyError::BadRequest("x"),
                400,
                "explicit_bad_request",
                Origin::Downstream,
                false,
            ),
            (
                ProxyError::MalformedBody,
                400,
                "malformed_request",
                Origin::Downstream,
                false,
            ),
            (
                ProxyError::NoEndpoints("a:1".into()),
                503,
                "no_endpoints",
                Origin::Proxy,
                false,
            ),
            (ProxyError::Loop(addr), 502, "loop", Origin::Proxy, false),
            (
                ProxyError::Connect {
                    addr,
                    failure: ConnectFailure::Closed,
                },
                502,
                "connect",
                Origin::Upstream,
                true,
            ),
            (
                ProxyError::Timeout(Duration::from_secs(1)),
                504,
                "timeout",
                Origin::Proxy,
                false,
            ),
            (
                ProxyError::Upstream {
                    addr,
                    detail: "reset".into(),
                },
                502,
                "upstream",
                Origin::Upstream,
                false,
            ),
            (
                ProxyError::Denied(Denied::Deny),
                403,
                "policy_deny",
                Origin::Proxy,
                false,
            ),
            (ProxyError::GatewayLoop, 508, "loop", Origin::Proxy, false),
        ];
        for (err, status, reason, origin, retry) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.reason(), reason, "{err}");
            assert_eq!(err.origin(), origin, "{err}");
            assert_eq!(err.is_retryable(), retry, "{err}");
        }
    }

    #[test]
    fn the_response_carries_the_reason_for_the_metrics() {
        let mut registry = remora_metrics::Registry::default();
        let series = remora_metrics::series::SeriesLimits::register(
            &mut registry,
            remora_metrics::bounded::Limits {
                max_series: 100,
                idle: Duration::from_secs(60),
            },
        );
        let metrics = HttpMetrics::register(&mut registry, &series);
        let rsp = respond(
            ProxyError::NoEndpoints("web:80".into()),
            Direction::Outbound,
            &metrics,
            true,
        );
        assert_eq!(rsp.status(), 503);
        assert_eq!(rsp.headers()[L5D_PROXY_ERROR], "no endpoints for web:80");
        assert_eq!(
            rsp.extensions().get::<ErrorReason>().map(|r| r.0),
            Some("no_endpoints")
        );
    }
}
