//! Outbound policy: how the control plane says calls to a target are routed
//! (`io.linkerd.proxy.outbound.OutboundPolicies`, `docs/policy.md`), compiled once per message
//! and applied as linkerd2-proxy applies it.
//!
//! ```text
//! connection to dst ─► client: Watch(Addr(dst)) (or Authority(name) for explicit / ingress
//!                      requests), the first answer awaited ≤ the discovery timeout
//!   ├─ NotFound / Unimplemented / no answer ─► no policy: profiles and Destination, as before
//!   └─ OutboundPolicy ─► protocol: Detect{timeout} | Http1 | Http2 | Grpc | Opaque | Tls
//!        HTTP/gRPC, per request ([`http`]): best route (hosts, matches) ─► filters ─►
//!          distribution (FirstAvailable / RandomAvailable) ─► backend (Dst path through the
//!          resolver and its P2C balancer, or Forward) ─► attempts: timeouts, retries,
//!          failure accrual ─► route and backend metrics
//!        opaque / TLS ([`opaque`]): the route (SNI for TLS) ─► its first filter (Forbidden,
//!          Invalid: reset and counted) ─► backend ─► forward
//! ```
//!
//! A target's policy is watched for as long as connections use it ([`client`]); route edits
//! apply to the next request, protocol changes to the next connection. A message that does
//! not compile (§4.2 of the notes: missing metadata, an empty distribution, a regex that does
//! not build, a filter of no known kind, ...) is refused, logged, and the previous policy
//! kept.
//!
//! # Layout
//! - this module: the compiled model.
//! - [`client`]: the watches per target, the wait for a first answer.
//! - `compile`: protobuf → model, refusing what linkerd2-proxy refuses.
//! - [`http`]: routing one HTTP or gRPC request.
//! - `attempts`: the attempts of one policy-routed request (retries, timeouts).
//! - `l5d`: the `l5d-retry-*` / `l5d-timeout` request headers.
//! - `filters`: header modifiers, redirects, injected failures.
//! - `body`: replayable request bodies, response bodies with timeouts and metrics.
//! - [`opaque`]: opaque and TLS routes.

mod attempts;
mod body;
pub mod client;
mod compile;
mod filters;
pub mod http;
mod l5d;
pub mod opaque;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use remora_metrics::outbound_route::{
    BackendHandle, BackendLabels, ObjectRef, RouteFamilies, RouteHandle, RouteLabels,
    TcpRouteFamilies, TcpRouteHandle, TcpRouteLabels,
};

use crate::discovery::Endpoint;
use crate::discovery::balance::{Accrual, ExpBackoff};
use crate::discovery::budget::RetryBudget;
use crate::policy::route::{GrpcMatch, HostMatch, HttpMatch, Route};

pub use client::{PolicyClient, TargetPolicy};
pub use compile::compile;

/// What a policy is watched for: the original destination, or a named target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PolicyTarget {
    Addr(SocketAddr),
    /// `host:port`.
    Authority(Arc<str>),
}

impl fmt::Display for PolicyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyTarget::Addr(a) => write!(f, "{a}"),
            PolicyTarget::Authority(a) => f.write_str(a),
        }
    }
}

/// A target's outbound policy, compiled.
#[derive(Debug)]
pub struct OutboundPolicy {
    /// The parent: the Service, EgressNetwork, ... the target is.
    pub parent: Arc<ObjectRef>,
    pub protocol: Protocol,
}

/// How connections to the target speak, with the routes of each protocol.
#[derive(Debug)]
pub enum Protocol {
    /// Detect HTTP within `timeout`: HTTP/1 or HTTP/2 routes, else the opaque route.
    Detect {
        timeout: Duration,
        http1: HttpRoutes,
        http2: HttpRoutes,
        opaque: OpaqueRoutes,
    },
    Http1(HttpRoutes),
    Http2(HttpRoutes),
    Grpc(GrpcRoutes),
    Opaque(OpaqueRoutes),
    Tls(TlsRoutes),
}

impl OutboundPolicy {
    /// The opaque route, for a connection that is not HTTP.
    pub fn opaque(&self) -> Option<&OpaqueRoute> {
        match &self.protocol {
            Protocol::Detect { opaque, .. } | Protocol::Opaque(opaque) => opaque.as_ref(),
            _ => None,
        }
    }

    /// The HTTP routes for a connection detected as `h2` (or not).
    pub fn http(&self, h2: bool) -> Option<HttpOrGrpc<'_>> {
        match &self.protocol {
            Protocol::Detect { http1, http2, .. } => {
                Some(HttpOrGrpc::Http(if h2 { http2 } else { http1 }))
            }
            Protocol::Http1(r) | Protocol::Http2(r) => Some(HttpOrGrpc::Http(r)),
            Protocol::Grpc(r) => Some(HttpOrGrpc::Grpc(r)),
            Protocol::Opaque(_) | Protocol::Tls(_) => None,
        }
    }
}

/// The routes an HTTP connection's requests are matched against.
#[derive(Clone, Copy, Debug)]
pub enum HttpOrGrpc<'a> {
    Http(&'a HttpRoutes),
    Grpc(&'a GrpcRoutes),
}

/// The routes of one HTTP protocol and the failure accrual of its backends' endpoints.
#[derive(Debug)]
pub struct Routes<M, F> {
    pub routes: Vec<Route<M, Arc<ObjectRef>, RulePolicy<F>>>,
    /// `Accrual::never()` when the policy configures none.
    pub accrual: Accrual,
}

pub type HttpRoutes = Routes<HttpMatch, HttpFilter>;
pub type GrpcRoutes = Routes<GrpcMatch, GrpcFilter>;

/// What a rule does with the requests it takes.
#[derive(Debug)]
pub struct RulePolicy<F> {
    pub filters: Vec<F>,
    pub distribution: Distribution<F>,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
    pub allow_l5d_request_headers: bool,
    /// Our retry budget over the rule's retries (20 % of its requests, 10 a second).
    pub budget: RetryBudget,
    /// The route's series, resolved at the first request.
    pub metrics: OnceLock<RouteHandle>,
}

impl<F> RulePolicy<F> {
    pub fn route_metrics(
        &self,
        families: &RouteFamilies,
        parent: &Arc<ObjectRef>,
        route: &Arc<ObjectRef>,
    ) -> RouteHandle {
        self.metrics
            .get_or_init(|| {
                families.route(&RouteLabels {
                    parent: parent.clone(),
                    route: route.clone(),
                })
            })
            .clone()
    }
}

/// Timeouts of a rule (`http_route.Timeouts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole stream, from the request's start to the response's end.
    pub request: Option<Duration>,
    /// From the request's end to the response's end.
    pub response: Option<Duration>,
    /// No frame in either direction for this long.
    pub idle: Option<Duration>,
}

/// A rule's retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub max_retries: u32,
    pub max_request_bytes: usize,
    /// HTTP statuses that are retried (HTTP routes).
    pub http: Option<StatusRanges>,
    /// gRPC statuses that are retried (gRPC routes).
    pub grpc: Option<GrpcCodes>,
    /// Each attempt's response headers must arrive within this (but the last's).
    pub timeout: Option<Duration>,
    pub backoff: Option<ExpBackoff>,
}

/// HTTP status ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusRanges(pub Vec<RangeInclusive<u16>>);

impl StatusRanges {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

/// A set of gRPC status codes (0..=16), as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcCodes(pub u32);

impl GrpcCodes {
    pub const CANCELLED: u16 = 1;
    pub const DEADLINE_EXCEEDED: u16 = 4;
    pub const RESOURCE_EXHAUSTED: u16 = 8;
    pub const INTERNAL: u16 = 13;
    pub const UNAVAILABLE: u16 = 14;

    pub fn with(mut self, code: u16) -> Self {
        if code < 32 {
            self.0 |= 1 << code;
        }
        self
    }

    pub fn contains(&self, code: u16) -> bool {
        code < 32 && self.0 & (1 << code) != 0
    }
}

/// How a rule chooses a backend for each request.
#[derive(Debug)]
pub enum Distribution<F> {
    /// No backend: every request fails (503).
    Empty,
    /// The first backend that can take a request, in order.
    FirstAvailable(Vec<RouteBackend<F>>),
    /// A weighted random choice among the backends that can take a request.
    RandomAvailable(Vec<(RouteBackend<F>, u32)>),
}

/// A backend as a rule names it, with the rule's filters for it.
#[derive(Debug)]
pub struct RouteBackend<F> {
    pub backend: Arc<Backend>,
    pub filters: Vec<F>,
    /// The route backend's series, resolved at the first request.
    pub metrics: OnceLock<BackendHandle>,
}

impl<F> RouteBackend<F> {
    pub fn backend_metrics(
        &self,
        families: &RouteFamilies,
        parent: &Arc<ObjectRef>,
        route: &Arc<ObjectRef>,
    ) -> BackendHandle {
        self.metrics
            .get_or_init(|| {
                families.backend(&BackendLabels {
                    parent: parent.clone(),
                    route: route.clone(),
                    backend: self.backend.metrics_ref.clone(),
                })
            })
            .clone()
    }
}

/// A backend: where its requests go, and its queue.
#[derive(Debug)]
pub struct Backend {
    /// Its name in the policy.
    pub meta: Arc<ObjectRef>,
    /// Its name in the backend metrics (linkerd2-proxy names a forward backend by its pod,
    /// `default:unknown` without one, and a backend without a dispatcher `default:fail`).
    pub metrics_ref: Arc<ObjectRef>,
    pub dispatch: Dispatch,
    pub queue: Queue,
}

/// How a backend's requests reach an endpoint.
#[derive(Debug)]
pub enum Dispatch {
    /// Endpoints from `Destination/Get` of `path` (`host:port`), balanced with P2C over
    /// peak-EWMA latency.
    Balance { path: String },
    /// One endpoint.
    Forward(Arc<Endpoint>),
    /// The policy names no way to reach it: requests fail (502).
    Fail(String),
}

/// A backend's queue: requests waiting for an endpoint.
#[derive(Debug)]
pub struct Queue {
    /// Requests waiting at most; beyond, a request is shed (503).
    pub capacity: usize,
    /// A request waits this long at most for an endpoint (then 504).
    pub failfast: Duration,
    waiting: AtomicUsize,
}

impl Queue {
    pub fn new(capacity: usize, failfast: Duration) -> Self {
        Queue {
            capacity,
            failfast,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A place in the queue, `None` when it is full.
    pub fn enter(&self) -> Option<QueueSlot<'_>> {
        let n = self.waiting.fetch_add(1, Ordering::AcqRel);
        if n >= self.capacity {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(QueueSlot(self))
    }
}

/// A request waiting for an endpoint.
#[derive(Debug)]
pub struct QueueSlot<'a>(&'a Queue);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Header modifications: added, then set, then removed.
#[derive(Clone, Debug, Default)]
pub struct ModifyHeaders {
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl ModifyHeaders {
    pub fn apply(&self, headers: &mut ::http::HeaderMap) {
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// A failure injector's share of requests: `numerator / denominator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    pub numerator: u32,
    pub denominator: u32,
}

/// An HTTP route filter.
#[derive(Debug)]
pub enum HttpFilter {
    RequestHeaders(ModifyHeaders),
    ResponseHeaders(ModifyHeaders),
    Redirect(filters::Redirect),
    Inject {
        status: ::http::StatusCode,
        message: Arc<str>,
        ratio: Ratio,
    },
}

/// A gRPC route filter.
#[derive(Debug)]
pub enum GrpcFilter {
    RequestHeaders(ModifyHeaders),
    Inject {
        code: u16,
        message: Arc<str>,
        ratio: Ratio,
    },
}

/// An opaque or TLS route filter (only a route's first is applied).
#[derive(Debug)]
pub enum OpaqueFilter {
    /// The connection is refused.
    Forbidden,
    /// The backend is invalid; the connection is refused.
    Invalid(Arc<str>),
}

/// The opaque route (at most one).
pub type OpaqueRoutes = Option<OpaqueRoute>;

/// An opaque route: one rule.
#[derive(Debug)]
pub struct OpaqueRoute {
    pub meta: Arc<ObjectRef>,
    pub filters: Vec<OpaqueFilter>,
    pub distribution: Distribution<OpaqueFilter>,
    pub metrics: OnceLock<TcpRouteHandle>,
}

impl OpaqueRoute {
    pub fn route_metrics(
        &self,
        families: &TcpRouteFamilies,
        parent: &Arc<ObjectRef>,
        target: SocketAddr,
    ) -> TcpRouteHandle {
        self.metrics
            .get_or_init(|| {
                families.route(&TcpRouteLabels {
                    parent: parent.clone(),
                    route: self.meta.clone(),
                    target_ip: Some(target.ip()),
                    target_port: target.port(),
                })
            })
            .clone()
    }
}

/// A TLS route: the SNIs it is for (none: any), and one rule.
#[derive(Debug)]
pub struct TlsRoute {
    pub snis: Vec<HostMatch>,
    pub route: OpaqueRoute,
}

pub type TlsRoutes = Vec<TlsRoute>;
