//! A `Server` from the policy service, compiled into a [`ServerPolicy`], by linkerd2-proxy's
//! rules (`linkerd/proxy/server-policy`):
//!
//! - `protocol` is required, and `Detect` needs its timeout; the rate limit comes from
//!   `Detect`, `Http1` or `Http2` only.
//! - The server's authorizations get the implicit `localhost` one appended (any client from
//!   `127.0.0.1/32` or `::1/128`); a route's are its own, then the server's.
//! - An authorization needs networks (each with its `net`), an authentication, and for mesh
//!   TLS its clients; it is named by its `metadata`, else its `labels`.
//! - A route needs its `metadata`; its host matches must be set and its regexes compile. A
//!   server without routes gets one matching every request, `Default{"default"}`.
//! - A filter of unknown kind is not an error: its rule answers 500.
//! - The server is named by its `labels` (`name` required; group `policy.linkerd.io`, kind
//!   `server` by default). `remora control` adds the pod's declared ports as the label
//!   `remora.io/declared-ports` (a list in `INBOUND_PORTS`'s syntax, at most 64 KiB).
//!
//! Anything invalid refuses the whole message; the port keeps its previous policy
//! (linkerd2-proxy installs its `invalid` policy instead, whose route has no authorization:
//! 403 to every request, every connection denied).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::inbound as pb;
use remora_metrics::inbound_policy::Object;

use super::filter::{self, InvalidFilter};
use super::ratelimit::LocalRateLimit;
use super::server::{
    Authn, Authz, DECLARED_PORTS_LABEL, GrpcRoute, HttpRoute, LOCALHOST, Network, Protocol,
    RouteInfo, ServerPolicy,
};
use crate::policy::Meta;
use crate::policy::meta::MetaError;
use crate::policy::route::proto::{self as route_pb, InvalidMatch};
use crate::policy::route::{GrpcMatch, HttpMatch, Route, Rule};

const GROUP: &str = "policy.linkerd.io";

/// Why a `Server` was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidServer {
    #[error("the server has no protocol (or one this proxy does not know)")]
    NoProtocol,
    #[error("the server's Detect protocol has no timeout")]
    NoDetectTimeout,
    #[error("invalid detect timeout: {0}")]
    DetectTimeout(String),
    #[error("the server's name: {0}")]
    Name(MetaError),
    #[error("authorization {index}: {why}")]
    Authz { index: usize, why: InvalidAuthz },
    #[error("route {name}: {why}")]
    Route { name: String, why: InvalidRoute },
    #[error("the rate limit's name: {0}")]
    RateLimit(MetaError),
    #[error("the declared ports ({DECLARED_PORTS_LABEL}): {0}")]
    DeclaredPorts(String),
}

/// The longest [`DECLARED_PORTS_LABEL`] value read.
const MAX_DECLARED_PORTS_LABEL: usize = 64 * 1024;

/// The pod's ports a `Server`'s labels declare (none without the label).
fn declared_ports(labels: &HashMap<String, String>) -> Result<BTreeSet<u16>, InvalidServer> {
    let Some(v) = labels.get(DECLARED_PORTS_LABEL) else {
        return Ok(BTreeSet::new());
    };
    if v.len() > MAX_DECLARED_PORTS_LABEL {
        return Err(InvalidServer::DeclaredPorts(format!(
            "longer than {MAX_DECLARED_PORTS_LABEL} bytes"
        )));
    }
    crate::config::parse::ports(v).map_err(InvalidServer::DeclaredPorts)
}

/// Why an authorization is invalid.
#[derive(Debug, thiserror::Error)]
pub enum InvalidAuthz {
    #[error("it has no networks")]
    NoNetworks,
    #[error("a network has no address")]
    NoNetwork,
    #[error("invalid network: {0}")]
    Network(#[from] linkerd2_proxy_api::net::InvalidIpNetwork),
    #[error("it has no authentication")]
    NoAuthentication,
    #[error("its name: {0}")]
    Name(MetaError),
}

/// Why a route is invalid.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRoute {
    #[error("it has no metadata")]
    NoName,
    #[error("{0}")]
    Match(#[from] InvalidMatch),
    #[error("a filter: {0}")]
    Filter(#[from] InvalidFilter),
    #[error("authorization {index}: {why}")]
    Authz { index: usize, why: InvalidAuthz },
}

fn labels_of(meta: &Meta) -> Arc<Object> {
    Object::new(meta.group(), meta.kind(), meta.name())
}

/// The implicit authorization of loopback clients.
pub fn localhost() -> Authz {
    let meta = Meta::default(LOCALHOST);
    Authz {
        labels: labels_of(&meta),
        meta,
        networks: ["127.0.0.1/32", "::1/128"]
            .into_iter()
            .filter_map(|n| n.parse().ok())
            .map(|net| Network {
                net,
                except: Vec::new(),
            })
            .collect(),
        authn: Authn::Unauthenticated,
    }
}

pub fn authz(a: &pb::Authz) -> Result<Authz, InvalidAuthz> {
    if a.networks.is_empty() {
        return Err(InvalidAuthz::NoNetworks);
    }
    let networks = a
        .networks
        .iter()
        .map(|n| {
            let net = n.net.ok_or(InvalidAuthz::NoNetwork)?.try_into()?;
            let except = n
                .except
                .iter()
                .map(|e| (*e).try_into())
                .collect::<Result<_, _>>()?;
            Ok(Network { net, except })
        })
        .collect::<Result<Vec<_>, InvalidAuthz>>()?;
    use pb::authn::Permit;
    use pb::authn::permit_mesh_tls::Clients;
    let permit = a
        .authentication
        .as_ref()
        .and_then(|a| a.permit.as_ref())
        .ok_or(InvalidAuthz::NoAuthentication)?;
    let authn = match permit {
        Permit::Unauthenticated(_) => Authn::Unauthenticated,
        Permit::MeshTls(m) => match m.clients.as_ref().ok_or(InvalidAuthz::NoAuthentication)? {
            Clients::Unauthenticated(_) => Authn::TlsUnauthenticated,
            Clients::Identities(ids) => Authn::TlsAuthenticated {
                identities: ids.identities.iter().map(|i| i.name.clone()).collect(),
                suffixes: ids
                    .suffixes
                    .iter()
                    .map(|s| {
                        if s.parts.is_empty() {
                            String::new()
                        } else {
                            format!(".{}", s.parts.join("."))
                        }
                    })
                    .collect(),
            },
        },
    };
    let meta = match &a.metadata {
        Some(m) => Meta::from_proto(m).ok_or(InvalidAuthz::Name(MetaError::Missing))?,
        None => Meta::from_labels(&a.labels, GROUP, "serverauthorization")
            .map_err(InvalidAuthz::Name)?,
    };
    Ok(Authz {
        labels: labels_of(&meta),
        meta,
        networks,
        authn,
    })
}

/// The authorizations of `own`, then `inherited` (the server's).
fn authzs(own: &[pb::Authz], inherited: &[Authz]) -> Result<Vec<Authz>, (usize, InvalidAuthz)> {
    let mut out = Vec::with_capacity(own.len() + inherited.len());
    for (index, a) in own.iter().enumerate() {
        out.push(authz(a).map_err(|why| (index, why))?);
    }
    out.extend(inherited.iter().cloned());
    Ok(out)
}

fn route_info(
    metadata: &Option<linkerd2_proxy_api::meta::Metadata>,
    own: &[pb::Authz],
    server: &[Authz],
) -> Result<RouteInfo, InvalidRoute> {
    let meta = metadata
        .as_ref()
        .and_then(Meta::from_proto)
        .ok_or(InvalidRoute::NoName)?;
    let authzs = authzs(own, server).map_err(|(index, why)| InvalidRoute::Authz { index, why })?;
    Ok(RouteInfo {
        labels: labels_of(&meta),
        meta,
        authzs: authzs.into(),
    })
}

fn route_name(m: &Option<linkerd2_proxy_api::meta::Metadata>) -> String {
    m.as_ref()
        .and_then(Meta::from_proto)
        .map_or_else(|| "(unnamed)".to_string(), |m| m.to_string())
}

/// Compiles an inbound route: HTTP's and gRPC's have the same shape in different message types,
/// which share no trait; `$matches` and `$filter` compile their parts.
macro_rules! route {
    ($r:expr, $server:expr, $matches:path, $filter:path) => {{
        let r = $r;
        let route = route_info(&r.metadata, &r.authorizations, $server)?;
        let hosts = r
            .hosts
            .iter()
            .map(route_pb::host)
            .collect::<Result<_, _>>()?;
        let rules = r
            .rules
            .iter()
            .map(|rule| {
                Ok(Rule {
                    matches: rule
                        .matches
                        .iter()
                        .map($matches)
                        .collect::<Result<_, _>>()?,
                    policy: rule.filters.iter().map($filter).collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, InvalidRoute>>()?;
        Ok(Route {
            hosts,
            rules,
            route,
        })
    }};
}

fn http_route(r: &pb::HttpRoute, server: &[Authz]) -> Result<HttpRoute, InvalidRoute> {
    route!(r, server, route_pb::http, filter::proto::http)
}

fn grpc_route(r: &pb::GrpcRoute, server: &[Authz]) -> Result<GrpcRoute, InvalidRoute> {
    route!(r, server, route_pb::grpc, filter::proto::grpc)
}

/// The route a server without routes has: every request, `Default{"default"}`.
pub fn default_route<M, P: Default>(authzs: Arc<[Authz]>) -> Route<M, RouteInfo, P> {
    let meta = Meta::default("default");
    Route {
        hosts: Vec::new(),
        rules: vec![Rule {
            matches: Vec::new(),
            policy: P::default(),
        }],
        route: RouteInfo {
            labels: labels_of(&meta),
            meta,
            authzs,
        },
    }
}

fn http_routes(
    routes: &[pb::HttpRoute],
    server: &[Authz],
) -> Result<Arc<[HttpRoute]>, InvalidServer> {
    if routes.is_empty() {
        return Ok(Arc::from([default_route::<HttpMatch, _>(server.into())]));
    }
    routes
        .iter()
        .map(|r| {
            http_route(r, server).map_err(|why| InvalidServer::Route {
                name: route_name(&r.metadata),
                why,
            })
        })
        .collect()
}

fn grpc_routes(
    routes: &[pb::GrpcRoute],
    server: &[Authz],
) -> Result<Arc<[GrpcRoute]>, InvalidServer> {
    if routes.is_empty() {
        return Ok(Arc::from([default_route::<GrpcMatch, _>(server.into())]));
    }
    routes
        .iter()
        .map(|r| {
            grpc_route(r, server).map_err(|why| InvalidServer::Route {
                name: route_name(&r.metadata),
                why,
            })
        })
        .collect()
}

fn rate_limit(
    rl: &Option<pb::HttpLocalRateLimit>,
) -> Result<Option<LocalRateLimit>, InvalidServer> {
    let Some(rl) = rl else { return Ok(None) };
    let meta = match &rl.metadata {
        None => None,
        Some(m) => Some(Meta::from_proto(m).ok_or(InvalidServer::RateLimit(MetaError::Missing))?),
    };
    let rps = |l: &Option<pb::http_local_rate_limit::Limit>| {
        l.as_ref().map_or(0, |l| l.requests_per_second)
    };
    let overrides = rl
        .overrides
        .iter()
        .map(|o| {
            let ids = o
                .clients
                .iter()
                .flat_map(|c| c.identities.iter())
                // linkerd2-proxy drops identities that are not names.
                .filter(|i| i.name.parse::<remora_identity::Name>().is_ok())
                .map(|i| i.name.clone())
                .collect();
            (rps(&o.limit), ids)
        })
        .collect();
    Ok(LocalRateLimit::new(
        meta,
        rps(&rl.total),
        rps(&rl.identity),
        overrides,
    ))
}

fn timeout(d: Option<prost_types::Duration>) -> Result<Duration, InvalidServer> {
    let d = d.ok_or(InvalidServer::NoDetectTimeout)?;
    Duration::try_from(d).map_err(|e| InvalidServer::DetectTimeout(e.to_string()))
}

/// Compiles a `Server`.
pub fn server(s: &pb::Server) -> Result<ServerPolicy, InvalidServer> {
    use pb::proxy_protocol::Kind;
    let kind = s
        .protocol
        .as_ref()
        .and_then(|p| p.kind.as_ref())
        .ok_or(InvalidServer::NoProtocol)?;
    let mut server = authzs(&s.authorizations, &[])
        .map_err(|(index, why)| InvalidServer::Authz { index, why })?;
    server.push(localhost());
    let (protocol, rate_limit) = match kind {
        Kind::Detect(d) => (
            Protocol::Detect {
                timeout: timeout(d.timeout)?,
                http: http_routes(&d.http_routes, &server)?,
                tcp: server.as_slice().into(),
            },
            rate_limit(&d.http_local_rate_limit)?,
        ),
        Kind::Http1(h) => (
            Protocol::Http1(http_routes(&h.routes, &server)?),
            rate_limit(&h.local_rate_limit)?,
        ),
        Kind::Http2(h) => (
            Protocol::Http2(http_routes(&h.routes, &server)?),
            rate_limit(&h.local_rate_limit)?,
        ),
        Kind::Grpc(g) => (Protocol::Grpc(grpc_routes(&g.routes, &server)?), None),
        Kind::Tls(_) => (Protocol::Tls(server.into()), None),
        Kind::Opaque(_) => (Protocol::Opaque(server.into()), None),
    };
    let meta = Meta::from_labels(&s.labels, GROUP, "server").map_err(InvalidServer::Name)?;
    Ok(ServerPolicy {
        labels: labels_of(&meta),
        meta,
        protocol,
        rate_limit,
        from_service: true,
        pod_ports: Arc::new(declared_ports(&s.labels)?),
    })
}
