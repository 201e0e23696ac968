//! Every error the proxy answers an HTTP request with, and the one place that turns an error
//! into a response.
//!
//! A [`ProxyError`] knows its status, its reason (the `l5d-proxy-error` header's subject and
//! the `reason` / `error` label of `http_proxy_errors_total` and `response_total`), where it
//! came from ([`Origin`]) and whether the request may safely be sent again elsewhere
//! ([`ProxyError::is_retryable`]) and whether the client's connection is closed after the
//! answer ([`ProxyError::closes`]). [`respond`] logs it, counts it and builds the response.
//!
//! # Closing connections, as linkerd2-proxy does
//!
//! linkerd2-proxy closes the client's connection after every answer it makes for a failure to
//! reach or hear from the target and after its own failures (no endpoints, loops, a profile
//! route's timeout, an unusable policy), but not after an answer about the request itself (a
//! policy's 403 or 404, a rate limit's 429, a redirect, an injected failure, a policy route's
//! timeout): HTTP/1 with `connection: close`, HTTP/2 with GOAWAY
//! ([`crate::http::server::CloseConnection`]). The inbound also tells an identified peer with
//! `l5d-proxy-connection: close`; the peer's outbound strips it (with `l5d-proxy-error`) and,
//! when its app addressed that endpoint itself rather than through a balanced service, closes
//! the app's connection in turn ([`RemoteClose`]), so the app reconnects and may pick another
//! replica. The inbound's answers have empty bodies (the detail goes in `l5d-proxy-error`, to
//! identified peers only); the outbound's answers to its own app keep the detail in the body
//! as well.

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
use crate::http::server::CloseConnection;
use crate::http::{Body, L5D_PROXY_CONNECTION, L5D_PROXY_ERROR, boxed};
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
    /// Inbound: the app never took the request (it refused or reset the connection, or closed
    /// it before any byte of the response). The text starts with [`NOT_PROCESSED`], which
    /// tells the peer's outbound that it may send the request to another endpoint.
    #[error("{NOT_PROCESSED}: the app at {addr}: {detail}")]
    AppNotReached { addr: SocketAddr, detail: String },
    /// Inbound: the app did not accept a connection within the connect timeout.
    #[error("the app at {addr}: {detail}")]
    AppTimeout { addr: SocketAddr, detail: String },
    /// Inbound: refused by the port's policy.
    #[error("{0}")]
    Denied(Denied),
    /// Gateway: the request already passed this gateway.
    #[error("the request already passed this gateway")]
    GatewayLoop,
    /// Outbound: what a target's outbound policy (routes, filters, backends) answered.
    #[error("{0}")]
    Route(RouteError),
    /// Inbound: what the port's policy answered instead of the app (see the inbound policy
    /// block below).
    #[error("{0}")]
    Policy(PolicyRefusal),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::MalformedBody => StatusCode::BAD_REQUEST,
            ProxyError::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout(_) | ProxyError::AppTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::GatewayLoop => StatusCode::LOOP_DETECTED,
            ProxyError::Unresolvable { .. }
            | ProxyError::Loop(_)
            | ProxyError::Connect { .. }
            | ProxyError::Upgrade(_)
            | ProxyError::Upstream { .. }
            | ProxyError::NotReplayable
            | ProxyError::App { .. }
            | ProxyError::AppNotReached { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Route(e) => e.status(),
            ProxyError::Policy(r) => r.status(),
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
            ProxyError::App { .. }
            | ProxyError::AppNotReached { .. }
            | ProxyError::AppTimeout { .. } => "app",
            ProxyError::Denied(d) => d.as_str(),
            ProxyError::Route(e) => e.reason(),
            ProxyError::Policy(r) => r.reason(),
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            ProxyError::BadRequest(_) | ProxyError::MalformedBody => Origin::Downstream,
            ProxyError::Connect { .. }
            | ProxyError::Upgrade(_)
            | ProxyError::Upstream { .. }
            | ProxyError::App { .. }
            | ProxyError::AppNotReached { .. }
            | ProxyError::AppTimeout { .. } => Origin::Upstream,
            ProxyError::NoEndpoints(_)
            | ProxyError::Unresolvable { .. }
            | ProxyError::Loop(_)
            | ProxyError::Timeout(_)
            | ProxyError::NotReplayable
            | ProxyError::Denied(_)
            | ProxyError::GatewayLoop
            | ProxyError::Route(_)
            | ProxyError::Policy(_) => Origin::Proxy,
        }
    }

    /// Whether the request may be sent again, to another endpoint: nothing of it reached the
    /// target.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::AppNotReached { .. }
        )
    }

    /// Whether the client's connection is closed after the answer (see the module's doc): yes
    /// for failures of the target or of the proxy, no for answers about the request itself.
    pub fn closes(&self) -> bool {
        match self {
            ProxyError::BadRequest(_) | ProxyError::Denied(_) => false,
            ProxyError::Route(e) => e.closes(),
            ProxyError::Policy(r) => r.closes(),
            ProxyError::MalformedBody
            | ProxyError::NoEndpoints(_)
            | ProxyError::Unresolvable { .. }
            | ProxyError::Loop(_)
            | ProxyError::Connect { .. }
            | ProxyError::Upgrade(_)
            | ProxyError::Timeout(_)
            | ProxyError::Upstream { .. }
            | ProxyError::NotReplayable
            | ProxyError::App { .. }
            | ProxyError::AppNotReached { .. }
            | ProxyError::AppTimeout { .. }
            | ProxyError::GatewayLoop => true,
        }
    }
}

/// How the `l5d-proxy-error` of an answer to a request its app never took begins: a peer's
/// outbound that reads it may send the request to another endpoint, whatever the route says.
pub const NOT_PROCESSED: &str = "request not processed";

/// Whether a meshed peer's `l5d-proxy-error` says its app never took the request.
pub fn never_processed(l5d_proxy_error: &HeaderValue) -> bool {
    l5d_proxy_error
        .as_bytes()
        .starts_with(NOT_PROCESSED.as_bytes())
}

/// Marks a meshed peer's response that carried `l5d-proxy-connection: close` (the header itself
/// removed): the outbound closes its app's connection after it when the app addressed that
/// endpoint itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteClose;

/// Marks a response the proxy made itself with its reason, for `response_total{error}`.
#[derive(Clone, Copy, Debug)]
pub struct ErrorReason(pub &'static str);

/// Turns `err` into the response the client gets: logged, counted in
/// `http_proxy_errors_total{direction, status, reason}`, the reason marked for the golden
/// metrics, and `l5d-proxy-error` set when `annotate` (toward the app on the outbound, toward
/// an identified mesh peer on the inbound). An error that [closes](ProxyError::closes) marks the
/// response to close its connection and, from the inbound to an identified peer, carries
/// `l5d-proxy-connection: close`. The inbound's answer has an empty body; the outbound's tells
/// its app the detail in the body too.
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
    let mut rsp = match direction {
        Direction::Inbound => empty_response(status, &detail, annotate),
        Direction::Outbound => error_response(status, &detail, annotate),
    };
    if err.closes() {
        if direction == Direction::Inbound && annotate {
            rsp.headers_mut()
                .insert(L5D_PROXY_CONNECTION, HeaderValue::from_static("close"));
        }
        rsp.extensions_mut().insert(CloseConnection);
    }
    rsp.extensions_mut().insert(ErrorReason(reason));
    rsp
}

/// A response the proxy makes itself with no body (`content-length: 0`), carrying
/// `l5d-proxy-error: detail` when `annotate`.
pub fn empty_response(status: StatusCode, detail: &str, annotate: bool) -> Response<Body> {
    let mut rsp = Response::new(Body::Empty);
    *rsp.status_mut() = status;
    let headers = rsp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    if annotate && let Ok(v) = HeaderValue::from_str(&sanitize(detail)) {
        headers.insert(L5D_PROXY_ERROR, v);
    }
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

// ---- Outbound policy: the answers of routes, filters and backends ----

/// What an outbound policy's route answered instead of the target, as linkerd2-proxy's
/// outbound answers it (its `ServerRescue`): the status (and gRPC status, for gRPC requests),
/// whether the client connection is closed, and the `l5d-proxy-error` text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route of the policy matches the request.
    #[error("no route found for request")]
    NoRoute,
    /// A `RequestRedirect` filter.
    #[error("request redirected to {}", location.to_str().unwrap_or("an opaque location"))]
    Redirect {
        status: StatusCode,
        location: HeaderValue,
    },
    /// A redirect that could not be built (a prefix replacement without a prefix match).
    #[error("invalid redirect: {0}")]
    InvalidRedirect(&'static str),
    /// An `HttpFailureInjector` filter.
    #[error("HTTP request configured to fail with {status}: {message}")]
    Injected {
        status: StatusCode,
        message: std::sync::Arc<str>,
    },
    /// A `GrpcFailureInjector` filter.
    #[error("gRPC request configured to fail with {code}: {message}")]
    GrpcInjected {
        code: u16,
        message: std::sync::Arc<str>,
    },
    /// The policy cannot be applied to the request.
    #[error("invalid client policy: {0}")]
    InvalidPolicy(&'static str),
    /// The chosen backend had no endpoint to take the request within its failfast timeout.
    #[error("{0} service in fail-fast")]
    FailFast(String),
    /// No backend of the route could take the request (an empty distribution, or every
    /// backend unavailable).
    #[error("no backend of the route is available")]
    LoadShed,
    /// A route timeout: the request's (`request`), the response's (`response`), or an
    /// attempt's (`response headers`).
    #[error("{kind} timeout after {after:?}")]
    Timeout { kind: &'static str, after: Duration },
    /// A backend the policy names without a way to reach it.
    #[error("{0}")]
    DispatcherFailed(String),
}

impl RouteError {
    pub fn status(&self) -> StatusCode {
        match self {
            RouteError::NoRoute => StatusCode::NOT_FOUND,
            RouteError::Redirect { status, .. } | RouteError::Injected { status, .. } => *status,
            RouteError::GrpcInjected { .. } => StatusCode::OK,
            RouteError::InvalidRedirect(_) | RouteError::InvalidPolicy(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RouteError::FailFast(_) | RouteError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RouteError::LoadShed => StatusCode::SERVICE_UNAVAILABLE,
            RouteError::DispatcherFailed(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The gRPC status a gRPC client gets.
    pub fn grpc_status(&self) -> u16 {
        match self {
            RouteError::NoRoute | RouteError::Redirect { .. } => 5,
            RouteError::Injected { .. } => 9,
            RouteError::GrpcInjected { code, .. } => *code,
            RouteError::InvalidRedirect(_) | RouteError::InvalidPolicy(_) => 13,
            RouteError::FailFast(_) | RouteError::Timeout { .. } => 4,
            RouteError::LoadShed | RouteError::DispatcherFailed(_) => 14,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            RouteError::NoRoute => "no_route",
            RouteError::Redirect { .. } => "redirect",
            RouteError::InvalidRedirect(_) => "invalid_redirect",
            RouteError::Injected { .. } | RouteError::GrpcInjected { .. } => "injected_failure",
            RouteError::InvalidPolicy(_) => "invalid_policy",
            RouteError::FailFast(_) => "fail_fast",
            RouteError::LoadShed => "load_shed",
            RouteError::Timeout { .. } => "timeout",
            RouteError::DispatcherFailed(_) => "dispatcher_failed",
        }
    }

    /// Whether the client's connection is closed after the answer (linkerd2-proxy closes it
    /// when another replica might do better).
    pub fn closes(&self) -> bool {
        matches!(
            self,
            RouteError::InvalidRedirect(_)
                | RouteError::InvalidPolicy(_)
                | RouteError::FailFast(_)
                | RouteError::LoadShed
                | RouteError::DispatcherFailed(_)
        )
    }

    /// Whether it is the route's answer rather than a failure (redirects and injected
    /// failures are logged at debug, not as errors).
    fn is_answer(&self) -> bool {
        matches!(
            self,
            RouteError::Redirect { .. }
                | RouteError::Injected { .. }
                | RouteError::GrpcInjected { .. }
        )
    }
}

/// The response to a policy-routed request for `err`: logged, counted in
/// `http_proxy_errors_total`, marked with its reason for the golden metrics; gRPC-shaped
/// (HTTP 200, `grpc-status`, `grpc-message`) when `grpc`, and annotated with
/// `l5d-proxy-error` when `annotate`.
pub fn respond_route(
    err: RouteError,
    metrics: &HttpMetrics,
    grpc: bool,
    annotate: bool,
) -> Response<Body> {
    let detail = err.to_string();
    let status = if grpc { StatusCode::OK } else { err.status() };
    if err.is_answer() {
        tracing::debug!(status = status.as_u16(), reason = err.reason(), detail = %detail, "answering for the route");
    } else {
        warn!(
            status = status.as_u16(),
            reason = err.reason(),
            detail = %detail,
            "answering with an error"
        );
    }
    metrics.error(Direction::Outbound, status.as_u16(), err.reason());
    let mut rsp = Response::new(Body::Empty);
    *rsp.status_mut() = status;
    let headers = rsp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let message = HeaderValue::from_str(&sanitize(&detail)).ok();
    if grpc {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(err.grpc_status()));
        if annotate && let Some(m) = &message {
            headers.insert("grpc-message", m.clone());
        }
    }
    if annotate && let Some(m) = message {
        headers.insert(L5D_PROXY_ERROR, m);
    }
    if let RouteError::Redirect { location, .. } = &err {
        headers.insert(header::LOCATION, location.clone());
    }
    if err.closes() {
        rsp.extensions_mut().insert(CloseConnection);
    }
    rsp.extensions_mut().insert(ErrorReason(err.reason()));
    rsp
}

// ---- Inbound policy: what a port's policy answers instead of the app ----

/// What the inbound answers a request its port's policy does not let through to the app,
/// as linkerd2-proxy's inbound does (`ServerRescue`): no route (404, gRPC `NOT_FOUND`), no
/// authorization (403, `PERMISSION_DENIED`), the rate limit (429, `RESOURCE_EXHAUSTED`), a
/// route's redirect (its status and `location`), an injected failure (its status or gRPC
/// code), a policy that cannot be applied (500, `INTERNAL`, and the connection closed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    #[error("no route found for request")]
    RouteNotFound,
    #[error("unauthorized request on route: {0}")]
    Unauthorized(crate::inbound::policy::Denied),
    #[error("{0}")]
    RateLimited(crate::inbound::policy::ratelimit::Limited),
    #[error("request redirected to {location}")]
    Redirect {
        status: StatusCode,
        location: http::Uri,
    },
    #[error("invalid redirect: {0}")]
    InvalidRedirect(String),
    #[error("invalid server policy: {0}")]
    InvalidPolicy(&'static str),
    #[error("HTTP request configured to fail with {0}: {1}")]
    Injected(StatusCode, std::sync::Arc<str>),
    #[error("gRPC request configured to fail with {0}: {1}")]
    GrpcInjected(u16, std::sync::Arc<str>),
}

impl PolicyRefusal {
    pub fn status(&self) -> StatusCode {
        match self {
            PolicyRefusal::RouteNotFound => StatusCode::NOT_FOUND,
            PolicyRefusal::Unauthorized(_) => StatusCode::FORBIDDEN,
            PolicyRefusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            PolicyRefusal::Redirect { status, .. } | PolicyRefusal::Injected(status, _) => *status,
            PolicyRefusal::GrpcInjected(..) => StatusCode::OK,
            PolicyRefusal::InvalidRedirect(_) | PolicyRefusal::InvalidPolicy(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The gRPC status a gRPC client gets.
    pub fn grpc_status(&self) -> u16 {
        match self {
            PolicyRefusal::RouteNotFound | PolicyRefusal::Redirect { .. } => 5,
            PolicyRefusal::Unauthorized(_) => 7,
            PolicyRefusal::RateLimited(_) => 8,
            PolicyRefusal::GrpcInjected(code, _) => *code,
            PolicyRefusal::Injected(..)
            | PolicyRefusal::InvalidRedirect(_)
            | PolicyRefusal::InvalidPolicy(_) => 13,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            PolicyRefusal::RouteNotFound => "route_not_found",
            PolicyRefusal::Unauthorized(d) => d.as_str(),
            PolicyRefusal::RateLimited(_) => "rate_limited",
            PolicyRefusal::Redirect { .. } => "redirect",
            PolicyRefusal::InvalidRedirect(_) => "invalid_redirect",
            PolicyRefusal::InvalidPolicy(_) => "invalid_policy",
            PolicyRefusal::Injected(..) | PolicyRefusal::GrpcInjected(..) => "injected_failure",
        }
    }

    /// Whether the client's connection is closed after the answer.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            PolicyRefusal::InvalidRedirect(_) | PolicyRefusal::InvalidPolicy(_)
        )
    }
}

/// The response to a request the inbound policy answered (logged by the policy, not here):
/// empty, counted in `http_proxy_errors_total` and marked with its reason for the golden
/// metrics (a redirect is neither); gRPC-shaped (HTTP 200 with `grpc-status`, trailers-only)
/// when `grpc`; `l5d-proxy-error` (and for gRPC `grpc-message`) only when `annotate`: to a
/// meshed peer with an identity, never to other clients.
pub fn respond_refusal(
    refusal: PolicyRefusal,
    metrics: &HttpMetrics,
    grpc: bool,
    annotate: bool,
) -> Response<Body> {
    let status = if grpc {
        StatusCode::OK
    } else {
        refusal.status()
    };
    let redirect = matches!(refusal, PolicyRefusal::Redirect { .. });
    if !redirect {
        metrics.error(Direction::Inbound, status.as_u16(), refusal.reason());
    }
    let mut rsp = Response::new(Body::Empty);
    *rsp.status_mut() = status;
    let headers = rsp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let message = annotate
        .then(|| HeaderValue::from_str(&sanitize(&refusal.to_string())).ok())
        .flatten();
    if grpc {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(refusal.grpc_status()));
        if let Some(m) = &message {
            headers.insert("grpc-message", m.clone());
        }
    }
    if let Some(m) = message {
        headers.insert(L5D_PROXY_ERROR, m);
    }
    if let PolicyRefusal::Redirect { location, .. } = &refusal
        && let Ok(v) = HeaderValue::from_str(&location.to_string())
    {
        headers.insert(header::LOCATION, v);
    }
    if refusal.closes() {
        if annotate {
            headers.insert(L5D_PROXY_CONNECTION, HeaderValue::from_static("close"));
        }
        rsp.extensions_mut().insert(CloseConnection);
    }
    if !redirect {
        rsp.extensions_mut().insert(ErrorReason(refusal.reason()));
    }
    rsp
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
    fn failures_of_the_target_or_the_proxy_close_answers_about_the_request_do_not() {
        let addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let closing = [
            ProxyError::MalformedBody,
            ProxyError::NoEndpoints("a:1".into()),
            ProxyError::Loop(addr),
            ProxyError::Connect {
                addr,
                failure: ConnectFailure::Closed,
            },
            ProxyError::Timeout(Duration::from_secs(1)),
            ProxyError::Upstream {
                addr,
                detail: "reset".into(),
            },
            ProxyError::App {
                addr,
                detail: "connection refused".into(),
            },
            ProxyError::AppTimeout {
                addr,
                detail: "timed out".into(),
            },
            ProxyError::GatewayLoop,
            ProxyError::Route(RouteError::LoadShed),
            ProxyError::Route(RouteError::FailFast("web".into())),
            ProxyError::Policy(PolicyRefusal::InvalidPolicy("x")),
        ];
        for e in &closing {
            assert!(e.closes(), "{e} closes");
        }
        let keeping = [
            ProxyError::BadRequest("x"),
            ProxyError::Denied(Denied::Deny),
            ProxyError::Route(RouteError::NoRoute),
            ProxyError::Route(RouteError::Timeout {
                kind: "request",
                after: Duration::from_secs(1),
            }),
            ProxyError::Policy(PolicyRefusal::RouteNotFound),
        ];
        for e in &keeping {
            assert!(!e.closes(), "{e} keeps the connection");
        }
        let timeout = ProxyError::AppTimeout {
            addr,
            detail: "x".into(),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn an_app_that_never_took_the_request_is_announced_as_not_processed() {
        let err = ProxyError::AppNotReached {
            addr: "192.0.2.1:80".parse().unwrap(),
            detail: "connection refused".into(),
        };
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert!(err.is_retryable() && err.closes());
        let rsp = respond(err, Direction::Inbound, &metrics(), true);
        let header = &rsp.headers()[L5D_PROXY_ERROR];
        assert!(never_processed(header), "{header:?}");
        assert_eq!(rsp.headers()[L5D_PROXY_CONNECTION], "close");
        let other = ProxyError::App {
            addr: "192.0.2.1:80".parse().unwrap(),
            detail: "broken".into(),
        };
        let rsp = respond(other, Direction::Inbound, &metrics(), true);
        assert!(!never_processed(&rsp.headers()[L5D_PROXY_ERROR]));
    }

    fn metrics() -> HttpMetrics {
        let mut registry = remora_metrics::Registry::default();
        let series = remora_metrics::series::SeriesLimits::register(
            &mut registry,
            remora_metrics::bounded::Limits {
                max_series: 100,
                idle: Duration::from_secs(60),
            },
        );
        HttpMetrics::register(&mut registry, &series)
    }

    async fn body_of(rsp: Response<Body>) -> Bytes {
        use http_body_util::BodyExt;
        rsp.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn the_inbound_tells_an_identified_peer_to_close_with_an_empty_body() {
        let m = metrics();
        let app = || ProxyError::App {
            addr: "10.0.0.5:8080".parse().unwrap(),
            detail: "connection refused".into(),
        };
        // To an identified peer: the detail and the close in headers, no body.
        let rsp = respond(app(), Direction::Inbound, &m, true);
        assert_eq!(rsp.status(), 502);
        assert_eq!(
            rsp.headers()[L5D_PROXY_ERROR],
            "the app at 10.0.0.5:8080: connection refused"
        );
        assert_eq!(rsp.headers()[L5D_PROXY_CONNECTION], "close");
        assert_eq!(rsp.headers()[header::CONTENT_LENGTH], "0");
        assert!(rsp.extensions().get::<CloseConnection>().is_some());
        assert!(body_of(rsp).await.is_empty());
        // To anyone else: the status alone; the connection still closes.
        let rsp = respond(app(), Direction::Inbound, &m, false);
        assert!(rsp.headers().get(L5D_PROXY_ERROR).is_none());
        assert!(rsp.headers().get(L5D_PROXY_CONNECTION).is_none());
        assert!(rsp.extensions().get::<CloseConnection>().is_some());
        assert!(body_of(rsp).await.is_empty());
        // A refusal of the request keeps the connection and says nothing of closing.
        let rsp = respond(
            ProxyError::Denied(Denied::Deny),
            Direction::Inbound,
            &m,
            true,
        );
        assert_eq!(rsp.status(), 403);
        assert!(rsp.headers().get(L5D_PROXY_CONNECTION).is_none());
        assert!(rsp.extensions().get::<CloseConnection>().is_none());
    }

    #[tokio::test]
    async fn the_outbound_closes_its_apps_connection_without_the_mesh_header() {
        let m = metrics();
        let rsp = respond(
            ProxyError::NoEndpoints("web:80".into()),
            Direction::Outbound,
            &m,
            true,
        );
        assert_eq!(rsp.status(), 503);
        assert!(rsp.headers().get(L5D_PROXY_CONNECTION).is_none());
        assert!(rsp.extensions().get::<CloseConnection>().is_some());
        assert_eq!(body_of(rsp).await, "no endpoints for web:80\n");
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
