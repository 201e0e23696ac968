//! HTTP and gRPC routes validated: parents resolved (a service and its ports, or a server),
//! matches and filters already in the API's shape (so compiling a policy only assembles them),
//! backends, timeouts and retries typed. What linkerd2-proxy would refuse (a regex that does
//! not compile, a header name that is not one, a redirect prefix without a prefix match, all
//! backend weights zero) is refused here, naming the field.

use std::time::Duration;

use linkerd2_proxy_api::grpc_route as grpc;
use linkerd2_proxy_api::http_route as http_pb;

use super::filters::filters;
use super::matches::{grpc_match, http_match};
use super::model::{Context, Server, ServerProtocol, bad, check_label, check_meta};
use super::raw::{
    RawBackendRef, RawGrpcMatch, RawHttpMatch, RawParentRef, RawRetry, RawRoute, RawRule,
    RawTimeouts,
};
use crate::cluster::{SvcKey, duration};
use crate::error::Invalid;

/// A route: its parents, hostnames and rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Route<R> {
    pub name: String,
    pub namespace: String,
    pub parents: Vec<Parent>,
    pub hosts: Vec<http_pb::HostMatch>,
    pub rules: Vec<R>,
}

/// Where a route attaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    /// Clients' traffic to a service: one port, or every port.
    Service { name: String, port: Option<u16> },
    /// A server's inbound traffic.
    Server(String),
}

/// A rule: its matches in the API's shape, filters, backends, timeouts and retry.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule<M> {
    pub matches: Vec<M>,
    pub filters: Vec<Filter>,
    /// Empty: the parent service.
    pub backends: Vec<Backend>,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
}

pub type HttpRule = Rule<http_pb::HttpRouteMatch>;
pub type GrpcRule = Rule<grpc::GrpcRouteMatch>;

/// A filter, as the API carries it.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    RequestHeaders(http_pb::RequestHeaderModifier),
    ResponseHeaders(http_pb::ResponseHeaderModifier),
    Redirect(http_pb::RequestRedirect),
    HttpFailure(http_pb::HttpFailureInjector),
    GrpcFailure(grpc::GrpcFailureInjector),
}

/// A backend service.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub name: String,
    pub namespace: String,
    /// Unset: the parent's port.
    pub port: Option<u16>,
    pub weight: u32,
    pub filters: Vec<Filter>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub request: Option<Duration>,
    pub response: Option<Duration>,
    pub idle: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub limit: u32,
    /// HTTP routes: status ranges (inclusive).
    pub statuses: Vec<(u16, u16)>,
    /// gRPC routes.
    pub codes: grpc_conditions::Conditions,
    pub timeout: Option<Duration>,
    pub backoff: (Duration, Duration, f32),
}

/// The gRPC retry conditions (`outbound::grpc_route::retry::Conditions`).
pub mod grpc_conditions {
    pub use linkerd2_proxy_api::outbound::grpc_route::retry::Conditions;
}

/// Linkerd's retry backoff (the controller's constant).
const BACKOFF: (Duration, Duration, f32) =
    (Duration::from_millis(25), Duration::from_millis(250), 1.0);

/// Which of a route's features a context allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Outbound,
    Inbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Http,
    Grpc,
}

/// Validates both route lists.
#[allow(clippy::type_complexity)]
pub(super) fn validate_routes(
    http: &[RawRoute<RawHttpMatch>],
    grpc: &[RawRoute<RawGrpcMatch>],
    servers: &[Server],
    cx: &Context<'_>,
) -> Result<(Vec<Route<HttpRule>>, Vec<Route<GrpcRule>>), Invalid> {
    let mut names = std::collections::HashSet::new();
    let mut out_http = Vec::new();
    for r in http {
        let at = format!("policy.http_routes[{}/{}]", r.namespace, r.name);
        if !names.insert((&r.namespace, &r.name)) {
            return Err(bad(&at, "defined twice"));
        }
        out_http.push(route(&at, r, Kind::Http, servers, cx, http_match)?);
    }
    check_prefix_redirects(&out_http)?;
    let mut names = std::collections::HashSet::new();
    let mut out_grpc = Vec::new();
    for r in grpc {
        let at = format!("policy.grpc_routes[{}/{}]", r.namespace, r.name);
        if !names.insert((&r.namespace, &r.name)) {
            return Err(bad(&at, "defined twice"));
        }
        out_grpc.push(route(&at, r, Kind::Grpc, servers, cx, grpc_match)?);
    }
    Ok((out_http, out_grpc))
}

fn route<M, P>(
    at: &str,
    r: &RawRoute<M>,
    kind: Kind,
    servers: &[Server],
    cx: &Context<'_>,
    matcher: fn(&str, &M) -> Result<P, Invalid>,
) -> Result<Route<Rule<P>>, Invalid> {
    check_meta(at, &r.name, &r.namespace)?;
    if r.parent_refs.is_empty() {
        return Err(bad(&format!("{at}.parent_refs"), "names no parent"));
    }
    let mut parents = Vec::new();
    for (i, p) in r.parent_refs.iter().enumerate() {
        parents.push(parent(
            &format!("{at}.parent_refs[{i}]"),
            p,
            r,
            kind,
            servers,
            cx,
        )?);
    }
    let inbound = parents.iter().any(|p| matches!(p, Parent::Server(_)));
    if inbound && parents.iter().any(|p| matches!(p, Parent::Service { .. })) {
        return Err(bad(
            &format!("{at}.parent_refs"),
            "mixes services and servers: a route is either for clients (Service) or for the \
             pods' inbound traffic (Server)",
        ));
    }
    let side = if inbound {
        Side::Inbound
    } else {
        Side::Outbound
    };
    let mut hosts = Vec::new();
    for (i, h) in r.hostnames.iter().enumerate() {
        hosts.push(host_match(&format!("{at}.hostnames[{i}]"), h)?);
    }
    if r.rules.is_empty() {
        return Err(bad(&format!("{at}.rules"), "at least one rule"));
    }
    let mut rules = Vec::new();
    for (i, raw) in r.rules.iter().enumerate() {
        rules.push(rule(
            &format!("{at}.rules[{i}]"),
            raw,
            kind,
            side,
            &r.namespace,
            matcher,
        )?);
    }
    Ok(Route {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        parents,
        hosts,
        rules,
    })
}

fn parent<M>(
    at: &str,
    p: &RawParentRef,
    r: &RawRoute<M>,
    kind: Kind,
    servers: &[Server],
    cx: &Context<'_>,
) -> Result<Parent, Invalid> {
    if let Some(ns) = &p.namespace
        && *ns != r.namespace
    {
        return Err(bad(
            &format!("{at}.namespace"),
            format!(
                "a route in {} attaches to parents of its own namespace, not {ns}",
                r.namespace
            ),
        ));
    }
    let group_ok = match (p.kind.as_str(), p.group.as_deref()) {
        (_, None) => true,
        ("Service", Some(g)) => g.is_empty() || g == "core",
        ("Server", Some(g)) => g == "policy.linkerd.io",
        _ => true,
    };
    if !group_ok {
        return Err(bad(
            &format!("{at}.group"),
            format!("not the group of a {}", p.kind),
        ));
    }
    match p.kind.as_str() {
        "Service" => {
            let key = SvcKey {
                namespace: r.namespace.clone(),
                name: p.name.clone(),
            };
            let Some(svc) = cx.state.services.get(&key) else {
                return Err(bad(
                    &format!("{at}.name"),
                    format!("no service {key} in [[services]]"),
                ));
            };
            if let Some(port) = p.port {
                let Some(sp) = svc.ports.iter().find(|sp| sp.port == port) else {
                    return Err(bad(
                        &format!("{at}.port"),
                        format!("service {key} has no port {port}"),
                    ));
                };
                if sp.opaque {
                    return Err(bad(
                        &format!("{at}.port"),
                        format!("port {port} of service {key} is opaque: routes need an HTTP port"),
                    ));
                }
            }
            Ok(Parent::Service {
                name: p.name.clone(),
                port: p.port,
            })
        }
        "Server" => {
            if p.port.is_some() {
                return Err(bad(&format!("{at}.port"), "a server has one port already"));
            }
            let Some(s) = servers
                .iter()
                .find(|s| s.namespace == r.namespace && s.name == p.name)
            else {
                return Err(bad(
                    &format!("{at}.name"),
                    format!("no server {} in namespace {}", p.name, r.namespace),
                ));
            };
            let fits = match kind {
                Kind::Http => s.protocol.is_http(),
                Kind::Grpc => s.protocol == ServerProtocol::Grpc,
            };
            if !fits {
                let want = match kind {
                    Kind::Http => "an HTTP route needs an unknown, HTTP/1 or HTTP/2 server",
                    Kind::Grpc => "a gRPC route needs a gRPC server",
                };
                return Err(bad(
                    &format!("{at}.name"),
                    format!("server {}: {want}", p.name),
                ));
            }
            Ok(Parent::Server(p.name.clone()))
        }
        other => Err(bad(
            &format!("{at}.kind"),
            format!("{other:?} is not Service or Server"),
        )),
    }
}

/// A Gateway API hostname: `web.example.com`, or `*.example.com` for its subdomains.
pub(super) fn host_match(at: &str, h: &str) -> Result<http_pb::HostMatch, Invalid> {
    use http_pb::host_match::{Match, Suffix};
    let (wild, name) = match h.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, h),
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| check_label(at, l).is_ok())
        && name.parse::<std::net::IpAddr>().is_err();
    if !ok {
        return Err(bad(
            at,
            format!("{h:?} is not a hostname (lowercase DNS name, optionally starting *.)"),
        ));
    }
    Ok(http_pb::HostMatch {
        r#match: Some(match wild {
            true => Match::Suffix(Suffix {
                reverse_labels: name.rsplit('.').map(str::to_string).collect(),
            }),
            false => Match::Exact(name.to_string()),
        }),
    })
}

fn rule<M, P>(
    at: &str,
    r: &RawRule<M>,
    kind: Kind,
    side: Side,
    namespace: &str,
    matcher: fn(&str, &M) -> Result<P, Invalid>,
) -> Result<Rule<P>, Invalid> {
    let mut matches = Vec::new();
    for (i, m) in r.matches.iter().enumerate() {
        matches.push(matcher(&format!("{at}.matches[{i}]"), m)?);
    }
    let filters = filters(&format!("{at}.filters"), &r.filters, kind, side)?;
    if side == Side::Inbound {
        for (set, field) in [
            (!r.backend_refs.is_empty(), "backend_refs"),
            (r.timeouts.is_some(), "timeouts"),
            (r.retry.is_some(), "retry"),
        ] {
            if set {
                return Err(bad(
                    &format!("{at}.{field}"),
                    "a server's routes have no backends, timeouts or retries (those are for \
                     clients: attach the route to a Service)",
                ));
            }
        }
    }
    let mut backends = Vec::new();
    for (i, b) in r.backend_refs.iter().enumerate() {
        backends.push(backend(
            &format!("{at}.backend_refs[{i}]"),
            b,
            kind,
            namespace,
        )?);
    }
    if backends.len() > 1 && backends.iter().all(|b| b.weight == 0) {
        return Err(bad(&format!("{at}.backend_refs"), "every weight is 0"));
    }
    let timeouts = match &r.timeouts {
        Some(t) => timeouts(&format!("{at}.timeouts"), t)?,
        None => Timeouts::default(),
    };
    let retry = r
        .retry
        .as_ref()
        .map(|x| retry(&format!("{at}.retry"), x, kind))
        .transpose()?;
    Ok(Rule {
        matches,
        filters,
        backends,
        timeouts,
        retry,
    })
}

fn backend(at: &str, b: &RawBackendRef, kind: Kind, namespace: &str) -> Result<Backend, Invalid> {
    match (b.group.as_deref(), b.kind.as_deref()) {
        (None | Some("") | Some("core"), None | Some("Service")) => {}
        _ => return Err(bad(&format!("{at}.kind"), "a backend is a Service")),
    }
    check_label(&format!("{at}.name"), &b.name)?;
    let ns = b.namespace.clone().unwrap_or_else(|| namespace.to_string());
    check_label(&format!("{at}.namespace"), &ns)?;
    if b.port == Some(0) {
        return Err(bad(&format!("{at}.port"), "port 0"));
    }
    Ok(Backend {
        name: b.name.clone(),
        namespace: ns,
        port: b.port,
        weight: b.weight.unwrap_or(1),
        filters: filters(&format!("{at}.filters"), &b.filters, kind, Side::Outbound)?
            .into_iter()
            .map(|f| match f {
                Filter::Redirect(_) => {
                    Err(bad(&format!("{at}.filters"), "a backend cannot redirect"))
                }
                f => Ok(f),
            })
            .collect::<Result<_, _>>()?,
    })
}

fn positive(at: &str, v: &str) -> Result<Duration, Invalid> {
    let d = duration(at, v)?;
    if d.is_zero() {
        return Err(bad(at, "must be more than 0"));
    }
    Ok(d)
}

fn timeouts(at: &str, t: &RawTimeouts) -> Result<Timeouts, Invalid> {
    let get = |v: &Option<String>, f: &str| {
        v.as_deref()
            .map(|v| positive(&format!("{at}.{f}"), v))
            .transpose()
    };
    Ok(Timeouts {
        request: get(&t.request, "request")?,
        response: get(&t.response, "response")?,
        idle: get(&t.idle, "idle")?,
    })
}

/// An HTTP retry condition, as Linkerd's `retry.linkerd.io/http` annotation writes them.
fn status_condition(at: &str, c: &str) -> Result<(u16, u16), Invalid> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| {
                bad(
                    at,
                    format!("{c:?} is not 5xx, gateway-error, a status or a range (500-504)"),
                )
            })
    };
    let (a, b) = match c {
        "5xx" => (500, 599),
        "gateway-error" => (502, 504),
        _ => match c.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => (code(c)?, code(c)?),
        },
    };
    if a > b {
        return Err(bad(at, format!("{c:?} runs backwards")));
    }
    Ok((a, b))
}

fn retry(at: &str, r: &RawRetry, kind: Kind) -> Result<Retry, Invalid> {
    let limit = r.limit.unwrap_or(1);
    if limit > u32::from(u16::MAX) {
        return Err(bad(
            &format!("{at}.limit"),
            format!("{limit} is more than {}", u16::MAX),
        ));
    }
    let mut statuses = Vec::new();
    let mut codes = grpc_conditions::Conditions::default();
    match kind {
        Kind::Http => {
            if !r.grpc.is_empty() {
                return Err(bad(
                    &format!("{at}.grpc"),
                    "an HTTP route retries on http statuses",
                ));
            }
            for (i, c) in r.http.iter().enumerate() {
                statuses.push(status_condition(&format!("{at}.http[{i}]"), c)?);
            }
        }
        Kind::Grpc => {
            if !r.http.is_empty() {
                return Err(bad(
                    &format!("{at}.http"),
                    "a gRPC route retries on grpc codes",
                ));
            }
            for (i, c) in r.grpc.iter().enumerate() {
                match c.to_ascii_lowercase().as_str() {
                    "cancelled" => codes.cancelled = true,
                    "deadline-exceeded" => codes.deadine_exceeded = true,
                    "internal" => codes.internal = true,
                    "resource-exhausted" => codes.resource_exhausted = true,
                    "unavailable" => codes.unavailable = true,
                    _ => {
                        return Err(bad(
                            &format!("{at}.grpc[{i}]"),
                            format!(
                                "{c:?} is not cancelled, deadline-exceeded, internal, \
                                 resource-exhausted or unavailable"
                            ),
                        ));
                    }
                }
            }
        }
    }
    let timeout = r
        .timeout
        .as_deref()
        .map(|t| positive(&format!("{at}.timeout"), t))
        .transpose()?;
    let backoff = match &r.backoff {
        None => BACKOFF,
        Some(b) => {
            let b_at = format!("{at}.backoff");
            let min = duration(&format!("{b_at}.min"), &b.min)?;
            let max = positive(&format!("{b_at}.max"), &b.max)?;
            if min > max {
                return Err(bad(&b_at, "min is more than max"));
            }
            let jitter = b.jitter.unwrap_or(BACKOFF.2);
            if !(0.0..=100.0).contains(&jitter) {
                return Err(bad(&format!("{b_at}.jitter"), "must be between 0 and 100"));
            }
            (min, max, jitter)
        }
    };
    Ok(Retry {
        limit,
        statuses,
        codes,
        timeout,
        backoff,
    })
}

/// Checks what needs the raw HTTP matches: a `ReplacePrefixMatch` redirect needs every match
/// of its rule to be a path prefix (the proxy cannot rewrite a prefix it did not match).
fn check_prefix_redirects(routes: &[Route<HttpRule>]) -> Result<(), Invalid> {
    use http_pb::path_match::Kind as P;
    for r in routes {
        for (i, rule) in r.rules.iter().enumerate() {
            let prefix_redirect = rule.filters.iter().any(|f| {
                matches!(
                    f,
                    Filter::Redirect(http_pb::RequestRedirect {
                        path: Some(http_pb::PathModifier {
                            replace: Some(http_pb::path_modifier::Replace::Prefix(_))
                        }),
                        ..
                    })
                )
            });
            let all_prefix = rule.matches.iter().all(|m| {
                matches!(
                    m.path.as_ref().and_then(|p| p.kind.as_ref()),
                    Some(P::Prefix(_))
                )
            });
            if prefix_redirect && !all_prefix {
                return Err(bad(
                    &format!(
                        "policy.http_routes[{}/{}].rules[{i}].filters",
                        r.namespace, r.name
                    ),
                    "a ReplacePrefixMatch redirect needs PathPrefix matches",
                ));
            }
        }
    }
    Ok(())
}
