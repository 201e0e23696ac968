//! `OutboundPolicy` messages compiled into the model, refusing what linkerd2-proxy refuses
//! (`linkerd/proxy/client-policy`): the policy's metadata and protocol are required; `Detect`
//! needs its timeout and all three protocols; every route its metadata, every rule a
//! distribution, and a non-empty one for `FirstAvailable` / `RandomAvailable`; a filter its
//! kind; a retry its conditions (HTTP status ranges within 1..=599); a backend its metadata,
//! queue (with a failfast timeout) and, for a balancer, discovery and load (peak EWMA with its
//! RTT and decay); a resource name its group, kind, name and namespace; an opaque policy at
//! most one route, and opaque and TLS routes exactly one rule; a failure accrual its kind and
//! backoff. Regexes are compiled here ([`crate::policy::route::proto`]), bounded in size.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use linkerd2_proxy_api::destination as dst;
use linkerd2_proxy_api::grpc_route as grpc_pb;
use linkerd2_proxy_api::http_route as http_pb;
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::outbound as pb;
use remora_metrics::outbound_route::ObjectRef;

use super::filters::{AuthorityOverride, ModifyPath, Redirect};
use super::{
    Backend, Dispatch, Distribution, GrpcCodes, GrpcFilter, GrpcRoutes, HttpFilter, HttpRoutes,
    ModifyHeaders, OpaqueFilter, OpaqueRoute, OpaqueRoutes, OutboundPolicy, Protocol, Queue, Ratio,
    Retry, RouteBackend, Routes, RulePolicy, StatusRanges, Timeouts, TlsRoute, TlsRoutes,
};
use crate::discovery::Endpoint;
use crate::discovery::balance::{Accrual, ExpBackoff};
use crate::discovery::budget::{BudgetConfig, RetryBudget};
use crate::policy::route::{self, HostMatch, Route, Rule};

type Result<T> = std::result::Result<T, String>;

fn missing(what: &str) -> String {
    format!("missing {what}")
}

/// Compiles one message; the error says what is wrong, for the log line.
pub fn compile(msg: pb::OutboundPolicy) -> Result<OutboundPolicy> {
    let parent = object(msg.metadata.as_ref(), "the policy's metadata")?;
    let kind = msg
        .protocol
        .and_then(|p| p.kind)
        .ok_or_else(|| missing("protocol"))?;
    use pb::proxy_protocol::Kind;
    let protocol = match kind {
        Kind::Detect(d) => Protocol::Detect {
            timeout: duration(d.timeout, "detect timeout")?
                .ok_or_else(|| missing("detect timeout"))?,
            http1: {
                let h = d.http1.ok_or_else(|| missing("detect's http1"))?;
                http_routes(h.routes, h.failure_accrual)?
            },
            http2: {
                let h = d.http2.ok_or_else(|| missing("detect's http2"))?;
                http_routes(h.routes, h.failure_accrual)?
            },
            opaque: opaque_routes(d.opaque.ok_or_else(|| missing("detect's opaque"))?)?,
        },
        Kind::Http1(h) => Protocol::Http1(http_routes(h.routes, h.failure_accrual)?),
        Kind::Http2(h) => Protocol::Http2(http_routes(h.routes, h.failure_accrual)?),
        Kind::Grpc(g) => Protocol::Grpc(grpc_routes(g.routes, g.failure_accrual)?),
        Kind::Opaque(o) => Protocol::Opaque(opaque_routes(o)?),
        Kind::Tls(t) => Protocol::Tls(tls_routes(t)?),
    };
    Ok(OutboundPolicy { parent, protocol })
}

/// A policy object's name: a default, or a resource with its group, kind, name and namespace.
pub fn object(m: Option<&meta::Metadata>, what: &str) -> Result<Arc<ObjectRef>> {
    match m
        .and_then(|m| m.kind.as_ref())
        .ok_or_else(|| missing(what))?
    {
        meta::metadata::Kind::Default(name) => Ok(Arc::new(ObjectRef::default_named(name))),
        meta::metadata::Kind::Resource(r) => {
            for (field, v) in [
                ("group", &r.group),
                ("kind", &r.kind),
                ("name", &r.name),
                ("namespace", &r.namespace),
            ] {
                if v.is_empty() {
                    return Err(format!("{what}: a resource without a {field}"));
                }
            }
            Ok(Arc::new(ObjectRef {
                group: Arc::from(r.group.as_str()),
                kind: Arc::from(r.kind.as_str()),
                namespace: Arc::from(r.namespace.as_str()),
                name: Arc::from(r.name.as_str()),
                port: u16::try_from(r.port).ok().filter(|p| *p != 0),
                section: Arc::from(r.section.as_str()),
            }))
        }
    }
}

fn duration(d: Option<prost_types::Duration>, what: &str) -> Result<Option<Duration>> {
    d.map(|d| Duration::try_from(d).map_err(|e| format!("invalid {what}: {e}")))
        .transpose()
}

fn backoff(b: pb::ExponentialBackoff) -> Result<ExpBackoff> {
    let min = duration(b.min_backoff, "min backoff")?.ok_or_else(|| missing("min backoff"))?;
    let max = duration(b.max_backoff, "max backoff")?.ok_or_else(|| missing("max backoff"))?;
    if min > max {
        return Err("backoff: the maximum is less than the minimum".into());
    }
    if max.is_zero() {
        return Err("backoff: the maximum is zero".into());
    }
    if !b.jitter_ratio.is_finite() || !(0.0..=100.0).contains(&b.jitter_ratio) {
        return Err(format!("backoff: invalid jitter {}", b.jitter_ratio));
    }
    Ok(ExpBackoff {
        min,
        max,
        jitter: b.jitter_ratio,
    })
}

/// Consecutive failures, or the consecutive-failure ceiling of a unified accrual (its success
/// rate is not applied).
fn accrual(a: Option<pb::FailureAccrual>) -> Result<Accrual> {
    use pb::failure_accrual::Kind;
    let Some(a) = a else {
        return Ok(Accrual::never());
    };
    match a.kind.ok_or_else(|| missing("failure accrual kind"))? {
        Kind::ConsecutiveFailures(c) => Ok(Accrual {
            max_failures: c.max_failures,
            backoff: backoff(
                c.backoff
                    .ok_or_else(|| missing("failure accrual backoff"))?,
            )?,
        }),
        Kind::Unified(u) => {
            if !(0.0..=1.0).contains(&u.success_rate_threshold) {
                return Err("failure accrual: success rate threshold outside 0..=1".into());
            }
            let window =
                duration(u.decay, "failure accrual window")?.unwrap_or(Duration::from_secs(10));
            if u.success_rate_threshold > 0.0 && window < Duration::from_millis(10) {
                return Err("failure accrual: window below 10 ms".into());
            }
            if u.min_requests > 1_000_000 {
                return Err("failure accrual: min_requests above 1 000 000".into());
            }
            let backoff = backoff(
                u.backoff
                    .ok_or_else(|| missing("failure accrual backoff"))?,
            )?;
            Ok(Accrual {
                max_failures: match u.max_consecutive_failures {
                    0 => u32::MAX,
                    n => n,
                },
                backoff,
            })
        }
    }
}

fn timeouts(
    t: Option<http_pb::Timeouts>,
    legacy: Option<prost_types::Duration>,
) -> Result<Timeouts> {
    let mut out = match t {
        Some(t) => Timeouts {
            request: duration(t.request, "request timeout")?,
            response: duration(t.response, "response timeout")?,
            idle: duration(t.idle, "idle timeout")?,
        },
        None => Timeouts::default(),
    };
    // The deprecated rule field is the request timeout's fallback.
    if out.request.is_none() {
        out.request = duration(legacy, "request timeout")?;
    }
    Ok(out)
}

fn budget() -> RetryBudget {
    RetryBudget::new(BudgetConfig::default())
}

fn header_pairs(
    h: Option<linkerd2_proxy_api::http_types::Headers>,
) -> Result<Vec<(HeaderName, HeaderValue)>> {
    h.map_or(Ok(Vec::new()), |h| {
        h.headers
            .into_iter()
            .map(|h| {
                let name = HeaderName::try_from(h.name.as_str())
                    .map_err(|_| format!("invalid header name {:?}", h.name))?;
                let value = HeaderValue::from_bytes(&h.value)
                    .map_err(|_| format!("invalid value of header {:?}", h.name))?;
                Ok((name, value))
            })
            .collect()
    })
}

fn modify(
    add: Option<linkerd2_proxy_api::http_types::Headers>,
    set: Option<linkerd2_proxy_api::http_types::Headers>,
    remove: Vec<String>,
) -> Result<ModifyHeaders> {
    Ok(ModifyHeaders {
        add: header_pairs(add)?,
        set: header_pairs(set)?,
        remove: remove
            .iter()
            .map(|n| {
                HeaderName::try_from(n.as_str()).map_err(|_| format!("invalid header name {n:?}"))
            })
            .collect::<Result<_>>()?,
    })
}

fn ratio(r: Option<http_pb::Ratio>) -> Result<Ratio> {
    match r {
        None => Ok(Ratio {
            numerator: 1,
            denominator: 1,
        }),
        Some(r) if r.denominator == 0 || r.numerator > r.denominator => Err(format!(
            "invalid failure injector ratio {}/{}",
            r.numerator, r.denominator
        )),
        Some(r) => Ok(Ratio {
            numerator: r.numerator,
            denominator: r.denominator,
        }),
    }
}

fn redirect(r: http_pb::RequestRedirect) -> Result<Redirect> {
    let scheme = r
        .scheme
        .map(http::uri::Scheme::try_from)
        .transpose()
        .map_err(|e| format!("redirect: invalid scheme: {e}"))?;
    let port = u16::try_from(r.port).map_err(|_| format!("redirect: invalid port {}", r.port))?;
    let bad = |e: http::uri::InvalidUri| format!("redirect: invalid authority: {e}");
    let authority = match (r.host.is_empty(), NonZeroU16::new(port)) {
        (true, p) => p.map(AuthorityOverride::Port),
        (false, Some(p)) => Some(AuthorityOverride::Exact(
            format!("{}:{p}", r.host).parse().map_err(bad)?,
        )),
        (false, None) => Some(AuthorityOverride::Host(r.host.parse().map_err(bad)?)),
    };
    let path = match r.path.and_then(|p| p.replace) {
        None => None,
        Some(http_pb::path_modifier::Replace::Full(p)) if p.starts_with('/') => {
            Some(ModifyPath::Full(p))
        }
        Some(http_pb::path_modifier::Replace::Prefix(p)) if p.starts_with('/') => {
            Some(ModifyPath::Prefix(p))
        }
        Some(_) => return Err("redirect: paths must be absolute".into()),
    };
    let status = match u16::try_from(r.status)
        .map_err(|_| format!("redirect: invalid status {}", r.status))?
    {
        0 => None,
        s => Some(StatusCode::from_u16(s).map_err(|_| format!("redirect: invalid status {s}"))?),
    };
    Ok(Redirect {
        scheme,
        authority,
        path,
        status,
    })
}

fn http_filter(f: pb::http_route::Filter) -> Result<HttpFilter> {
    use pb::http_route::filter::Kind;
    Ok(
        match f
            .kind
            .ok_or_else(|| "a filter of no known kind".to_string())?
        {
            Kind::RequestHeaderModifier(m) => {
                HttpFilter::RequestHeaders(modify(m.add, m.set, m.remove)?)
            }
            Kind::ResponseHeaderModifier(m) => {
                HttpFilter::ResponseHeaders(modify(m.add, m.set, m.remove)?)
            }
            Kind::Redirect(r) => HttpFilter::Redirect(redirect(r)?),
            Kind::FailureInjector(f) => HttpFilter::Inject {
                status: u16::try_from(f.status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| format!("failure injector: invalid status {}", f.status))?,
                message: Arc::from(f.message.as_str()),
                ratio: ratio(f.ratio)?,
            },
        },
    )
}

fn grpc_filter(f: pb::grpc_route::Filter) -> Result<GrpcFilter> {
    use pb::grpc_route::filter::Kind;
    Ok(
        match f
            .kind
            .ok_or_else(|| "a filter of no known kind".to_string())?
        {
            Kind::RequestHeaderModifier(m) => {
                GrpcFilter::RequestHeaders(modify(m.add, m.set, m.remove)?)
            }
            Kind::FailureInjector(grpc_pb::GrpcFailureInjector {
                code,
                message,
                ratio: r,
            }) => GrpcFilter::Inject {
                code: u16::try_from(code)
                    .map_err(|_| format!("failure injector: invalid code {code}"))?,
                message: Arc::from(message.as_str()),
                ratio: ratio(r)?,
            },
        },
    )
}

fn opaque_filter(kind: Option<pb::opaque_route::filter::Kind>) -> Result<OpaqueFilter> {
    use pb::opaque_route::filter::Kind;
    Ok(
        match kind.ok_or_else(|| "a filter of no known kind".to_string())? {
            Kind::Forbidden(_) => OpaqueFilter::Forbidden,
            Kind::Invalid(i) => OpaqueFilter::Invalid(Arc::from(i.message.as_str())),
        },
    )
}

fn tls_filter(kind: Option<pb::tls_route::filter::Kind>) -> Result<OpaqueFilter> {
    use pb::tls_route::filter::Kind;
    Ok(
        match kind.ok_or_else(|| "a filter of no known kind".to_string())? {
            Kind::Forbidden(_) => OpaqueFilter::Forbidden,
            Kind::Invalid(i) => OpaqueFilter::Invalid(Arc::from(i.message.as_str())),
        },
    )
}

/// A `Dst` path must be `host:port`.
fn dst_path(path: &str) -> Result<String> {
    let ok = path
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !ok {
        return Err(format!("backend discovery path {path:?} is not host:port"));
    }
    Ok(path.to_string())
}

/// A forward backend's endpoint, with the identity and hints its address carries.
fn forward(w: dst::WeightedAddr) -> Result<(Arc<Endpoint>, Option<u16>)> {
    let addr = w
        .addr
        .and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(|| "a forward backend without a valid address".to_string())?;
    let labels = std::collections::HashMap::new();
    let ep = Endpoint::from_proto(w, &labels)
        .ok_or_else(|| format!("invalid forward address {addr}"))?;
    Ok((Arc::new(ep), Some(addr.port())))
}

fn backend(b: pb::Backend) -> Result<Arc<Backend>> {
    use pb::backend::Kind;
    let meta = object(b.metadata.as_ref(), "backend metadata")?;
    let q = b.queue.ok_or_else(|| missing("backend queue"))?;
    let failfast = duration(q.failfast_timeout, "failfast timeout")?
        .ok_or_else(|| missing("backend queue failfast timeout"))?;
    let queue = Queue::new(q.capacity as usize, failfast);
    let (dispatch, metrics_ref) = match b.kind {
        None => (
            Dispatch::Fail(format!(
                "backend for {} {}/{} has no dispatcher",
                meta.kind, meta.namespace, meta.name
            )),
            Arc::new(ObjectRef::default_named("fail")),
        ),
        Some(Kind::Forward(w)) => {
            let (ep, port) = forward(w)?;
            // linkerd2-proxy names a forward backend by the pod its address labels name.
            let pod = (ep.labels.get("namespace"), ep.labels.get("pod"));
            let name = match pod {
                (Some(ns), Some(pod)) => Arc::new(ObjectRef {
                    group: Arc::from("core"),
                    kind: Arc::from("Pod"),
                    namespace: Arc::from(ns.as_str()),
                    name: Arc::from(pod.as_str()),
                    port,
                    section: Arc::from(""),
                }),
                _ => Arc::new(ObjectRef::default_named("unknown")),
            };
            (Dispatch::Forward(ep), name)
        }
        Some(Kind::Balancer(p2c)) => {
            use pb::backend::balance_p2c::Load;
            use pb::backend::endpoint_discovery::Kind as D;
            let discovery = p2c
                .discovery
                .and_then(|d| d.kind)
                .ok_or_else(|| missing("balancer discovery"))?;
            let D::Dst(get) = discovery;
            match p2c.load.ok_or_else(|| missing("balancer load"))? {
                Load::PeakEwma(e) => {
                    duration(e.default_rtt, "peak EWMA default RTT")?
                        .ok_or_else(|| missing("peak EWMA default RTT"))?;
                    duration(e.decay, "peak EWMA decay")?
                        .ok_or_else(|| missing("peak EWMA decay"))?;
                }
                Load::PenaltyPeakEwma(e) => {
                    for (d, what) in [
                        (e.default_rtt, "default RTT"),
                        (e.decay, "decay"),
                        (e.penalty, "penalty"),
                        (e.max_retry_after, "max retry-after"),
                        (e.penalty_decay, "penalty decay"),
                    ] {
                        duration(d, what)?;
                    }
                }
            }
            (
                Dispatch::Balance {
                    path: dst_path(&get.path)?,
                },
                meta.clone(),
            )
        }
    };
    Ok(Arc::new(Backend {
        meta,
        metrics_ref,
        dispatch,
        queue,
    }))
}

/// The three distributions have the same shape in each route kind's module.
macro_rules! distribution {
    ($d:expr, $m:ident, $filter:expr) => {{
        let route_backend = |rb: pb::$m::RouteBackend| -> Result<RouteBackend<_>> {
            Ok(RouteBackend {
                backend: backend(
                    rb.backend
                        .ok_or_else(|| missing("route backend's backend"))?,
                )?,
                filters: rb.filters.into_iter().map($filter).collect::<Result<_>>()?,
                metrics: OnceLock::new(),
            })
        };
        match $d
            .and_then(|d| d.kind)
            .ok_or_else(|| missing("distribution"))?
        {
            pb::$m::distribution::Kind::Empty(_) => Distribution::Empty,
            pb::$m::distribution::Kind::FirstAvailable(f) => {
                if f.backends.is_empty() {
                    return Err("an empty FirstAvailable distribution".into());
                }
                Distribution::FirstAvailable(
                    f.backends
                        .into_iter()
                        .map(route_backend)
                        .collect::<Result<_>>()?,
                )
            }
            pb::$m::distribution::Kind::RandomAvailable(r) => {
                if r.backends.is_empty() {
                    return Err("an empty RandomAvailable distribution".into());
                }
                Distribution::RandomAvailable(
                    r.backends
                        .into_iter()
                        .map(|w| {
                            let rb = w.backend.ok_or_else(|| missing("weighted backend"))?;
                            Ok((route_backend(rb)?, w.weight))
                        })
                        .collect::<Result<_>>()?,
                )
            }
        }
    }};
}

fn hosts(h: &[http_pb::HostMatch]) -> Result<Vec<HostMatch>> {
    h.iter()
        .map(|h| route::proto::host(h).map_err(|e| e.to_string()))
        .collect()
}

fn http_retry(r: pb::http_route::Retry) -> Result<Retry> {
    let conditions = r
        .conditions
        .ok_or_else(|| "retry: missing conditions".to_string())?;
    let ranges = conditions
        .status_ranges
        .iter()
        .map(|s| {
            let (start, end) = (u16::try_from(s.start), u16::try_from(s.end));
            match (start, end) {
                (Ok(a), Ok(b)) if a > 0 && b > 0 && b <= 599 && a <= b => Ok(a..=b),
                _ => Err(format!("retry: invalid status range {}-{}", s.start, s.end)),
            }
        })
        .collect::<Result<_>>()?;
    if r.max_retries > u32::from(u16::MAX) {
        return Err(format!("retry: invalid max retries {}", r.max_retries));
    }
    Ok(Retry {
        max_retries: r.max_retries,
        max_request_bytes: r.max_request_bytes as usize,
        http: Some(StatusRanges(ranges)),
        grpc: None,
        timeout: duration(r.timeout, "retry timeout")?,
        backoff: r.backoff.map(backoff).transpose()?,
    })
}

fn grpc_retry(r: pb::grpc_route::Retry) -> Result<Retry> {
    let c = r
        .conditions
        .ok_or_else(|| "retry: missing conditions".to_string())?;
    let mut codes = GrpcCodes::default();
    for (on, code) in [
        (c.cancelled, GrpcCodes::CANCELLED),
        (c.deadine_exceeded, GrpcCodes::DEADLINE_EXCEEDED),
        (c.resource_exhausted, GrpcCodes::RESOURCE_EXHAUSTED),
        (c.internal, GrpcCodes::INTERNAL),
        (c.unavailable, GrpcCodes::UNAVAILABLE),
    ] {
        if on {
            codes = codes.with(code);
        }
    }
    Ok(Retry {
        max_retries: r.max_retries,
        max_request_bytes: r.max_request_bytes as usize,
        http: None,
        grpc: Some(codes),
        timeout: duration(r.timeout, "retry timeout")?,
        backoff: r.backoff.map(backoff).transpose()?,
    })
}

/// Compiles a protocol's routes: HTTP's and gRPC's have the same shape in different message
/// types (`pb::$m`), which share no trait; `$matches`, `$filter` and `$retry` compile their
/// parts.
macro_rules! routes {
    ($routes:expr, $accrual:expr, $m:ident, $matches:path, $filter:path, $retry:path) => {{
        let routes = $routes
            .into_iter()
            .map(|r| {
                let meta = object(r.metadata.as_ref(), "route metadata")?;
                let rules = r
                    .rules
                    .into_iter()
                    .map(|rule| {
                        #[allow(deprecated)]
                        let legacy = rule.request_timeout;
                        let matches = rule
                            .matches
                            .iter()
                            .map(|m| $matches(m).map_err(|e| e.to_string()))
                            .collect::<Result<_>>()?;
                        Ok(Rule {
                            matches,
                            policy: RulePolicy {
                                filters: rule
                                    .filters
                                    .into_iter()
                                    .map($filter)
                                    .collect::<Result<_>>()?,
                                distribution: distribution!(rule.backends, $m, $filter),
                                timeouts: timeouts(rule.timeouts, legacy)?,
                                retry: rule.retry.map($retry).transpose()?,
                                allow_l5d_request_headers: rule.allow_l5d_request_headers,
                                budget: budget(),
                                metrics: OnceLock::new(),
                            },
                        })
                    })
                    .collect::<Result<_>>()
                    .map_err(|e: String| format!("route {meta}: {e}"))?;
                Ok(Route {
                    hosts: hosts(&r.hosts)?,
                    rules,
                    route: meta,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Routes {
            routes,
            accrual: accrual($accrual)?,
        })
    }};
}

fn http_routes(routes: Vec<pb::HttpRoute>, a: Option<pb::FailureAccrual>) -> Result<HttpRoutes> {
    routes!(
        routes,
        a,
        http_route,
        route::proto::http,
        http_filter,
        http_retry
    )
}

fn grpc_routes(routes: Vec<pb::GrpcRoute>, a: Option<pb::FailureAccrual>) -> Result<GrpcRoutes> {
    routes!(
        routes,
        a,
        grpc_route,
        route::proto::grpc,
        grpc_filter,
        grpc_retry
    )
}

fn opaque_routes(o: pb::proxy_protocol::Opaque) -> Result<OpaqueRoutes> {
    if o.routes.len() > 1 {
        return Err(format!(
            "an opaque policy with {} routes (at most one)",
            o.routes.len()
        ));
    }
    let Some(r) = o.routes.into_iter().next() else {
        return Ok(None);
    };
    let meta = object(r.metadata.as_ref(), "route metadata")?;
    let [rule]: [pb::opaque_route::Rule; 1] = r.rules.try_into().map_err(|rules: Vec<_>| {
        format!(
            "opaque route {meta} has {} rules (exactly one)",
            rules.len()
        )
    })?;
    Ok(Some(OpaqueRoute {
        filters: rule
            .filters
            .into_iter()
            .map(|f| opaque_filter(f.kind))
            .collect::<Result<_>>()?,
        distribution: distribution!(
            rule.backends,
            opaque_route,
            |f: pb::opaque_route::Filter| { opaque_filter(f.kind) }
        ),
        meta,
        metrics: OnceLock::new(),
    }))
}

fn tls_routes(t: pb::proxy_protocol::Tls) -> Result<TlsRoutes> {
    t.routes
        .into_iter()
        .map(|r| {
            let meta = object(r.metadata.as_ref(), "route metadata")?;
            let snis = r
                .snis
                .iter()
                .map(|s| {
                    use linkerd2_proxy_api::tls_route::sni_match::Match;
                    let m = match s.r#match.as_ref().ok_or_else(|| missing("SNI match"))? {
                        Match::Exact(e) => http_pb::host_match::Match::Exact(e.clone()),
                        Match::Suffix(x) => {
                            http_pb::host_match::Match::Suffix(http_pb::host_match::Suffix {
                                reverse_labels: x.reverse_labels.clone(),
                            })
                        }
                    };
                    route::proto::host(&http_pb::HostMatch { r#match: Some(m) })
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_>>()?;
            let [rule]: [pb::tls_route::Rule; 1] =
                r.rules.try_into().map_err(|rules: Vec<_>| {
                    format!("TLS route {meta} has {} rules (exactly one)", rules.len())
                })?;
            Ok(TlsRoute {
                snis,
                route: OpaqueRoute {
                    filters: rule
                        .filters
                        .into_iter()
                        .map(|f| tls_filter(f.kind))
                        .collect::<Result<_>>()?,
                    distribution: distribution!(
                        rule.backends,
                        tls_route,
                        |f: pb::tls_route::Filter| { tls_filter(f.kind) }
                    ),
                    meta,
                    metrics: OnceLock::new(),
                },
            })
        })
        .collect()
}
