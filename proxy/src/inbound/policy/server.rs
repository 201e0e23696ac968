//! The compiled policy of one inbound port, as linkerd2-proxy holds a `ServerPolicy`: the
//! protocol the port speaks (which overrides detection), the authorizations of its TCP
//! connections, its HTTP or gRPC routes with their own authorizations and filters, and its
//! local rate limit.
//!
//! Both sources compile to it: a `Server` from the policy service (`proto.rs`) and the
//! `REMORA_INBOUND_*` policies (`local.rs`). Matching a client against an authorization reads
//! the connection's address and TLS only: no allocation.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use remora_identity::Name;
use remora_metrics::inbound_policy::Object;

use super::filter::{GrpcFilter, HttpFilter};
use super::ratelimit::LocalRateLimit;
use crate::policy::Meta;
use crate::policy::route::{GrpcMatch, HttpMatch, Route};

/// The policy of one port.
#[derive(Debug)]
pub struct ServerPolicy {
    pub meta: Meta,
    /// `srv_group`, `srv_kind`, `srv_name`.
    pub labels: Arc<Object>,
    pub protocol: Protocol,
    /// `None`: no limit (and always on gRPC, Opaque and TLS servers).
    pub rate_limit: Option<LocalRateLimit>,
    /// The policy service answered it (a local policy otherwise).
    pub from_service: bool,
    /// The pod's ports as the policy service declares them (`remora control`: its services'
    /// target ports, the [`DECLARED_PORTS_LABEL`] label); empty when it does not say.
    pub pod_ports: Arc<BTreeSet<u16>>,
}

/// The label of a `Server` in which `remora control` lists the ports the pod's services
/// declare (`8080,9000-9002`; control/src/policy/inbound.rs writes it). Linkerd's controller
/// does not send it.
pub const DECLARED_PORTS_LABEL: &str = "remora.io/declared-ports";

impl ServerPolicy {
    /// Whether this policy declares `port` for the direct path: the policy service selected
    /// it with a `Server` of its own (not a default), or lists it among the pod's ports.
    pub fn declares(&self, port: u16) -> bool {
        self.from_service
            && (matches!(self.meta, Meta::Resource { .. }) || self.pod_ports.contains(&port))
    }
}

/// What a port speaks, and who may use it.
#[derive(Debug)]
pub enum Protocol {
    /// Detect HTTP within `timeout`: HTTP is served by the routes, anything else (or silence)
    /// is a TCP connection checked against `tcp`.
    Detect {
        timeout: Duration,
        http: Arc<[HttpRoute]>,
        tcp: Arc<[Authz]>,
    },
    Http1(Arc<[HttpRoute]>),
    Http2(Arc<[HttpRoute]>),
    Grpc(Arc<[GrpcRoute]>),
    /// The app's TLS: mesh TLS is terminated when addressed to this proxy, then bytes.
    Tls(Arc<[Authz]>),
    /// Bytes, without TLS detection.
    Opaque(Arc<[Authz]>),
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Detect { .. } => "detect",
            Protocol::Http1(_) => "http/1",
            Protocol::Http2(_) => "http/2",
            Protocol::Grpc(_) => "grpc",
            Protocol::Tls(_) => "tls",
            Protocol::Opaque(_) => "opaque",
        }
    }
}

/// Who may connect: clients from one of `networks` that pass `authn`.
#[derive(Clone, Debug)]
pub struct Authz {
    pub meta: Meta,
    /// `authz_group`, `authz_kind`, `authz_name`.
    pub labels: Arc<Object>,
    pub networks: Vec<Network>,
    pub authn: Authn,
}

/// A network, less its exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub net: IpNet,
    pub except: Vec<IpNet>,
}

impl Network {
    pub fn all() -> Vec<Network> {
        ["0.0.0.0/0", "::/0"]
            .into_iter()
            .filter_map(|n| n.parse().ok())
            .map(|net| Network {
                net,
                except: Vec::new(),
            })
            .collect()
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        self.net.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// What a client must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    /// Anything, TLS or not.
    Unauthenticated,
    /// Mesh TLS terminated by this proxy, with or without a client certificate.
    TlsUnauthenticated,
    /// Mesh TLS with a client identity that is one of `identities` or ends with one of
    /// `suffixes` (`.foo.bar`; `""` ends every identity).
    TlsAuthenticated {
        identities: HashSet<String>,
        suffixes: Vec<String>,
    },
}

/// What a route carries besides its rules: its name and who may use it (the route's own
/// authorizations, then the server's).
#[derive(Debug)]
pub struct RouteInfo {
    pub meta: Meta,
    pub labels: Arc<Object>,
    pub authzs: Arc<[Authz]>,
}

pub type HttpRoute = Route<HttpMatch, RouteInfo, Vec<HttpFilter>>;
pub type GrpcRoute = Route<GrpcMatch, RouteInfo, Vec<GrpcFilter>>;

/// The routes requests are matched against.
#[derive(Clone, Copy, Debug)]
pub enum Routes<'a> {
    Http(&'a [HttpRoute]),
    Grpc(&'a [GrpcRoute]),
}

/// How the client reached the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientTls {
    /// Mesh TLS the proxy terminated, and the identity of the client's certificate (if any).
    Established(Option<Name>),
    /// TLS not addressed to this proxy, passed through to the app.
    Passthru,
    /// Plaintext (or a port whose TLS is not detected).
    None,
}

/// The client of a connection, as authorizations see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Canonical: an IPv4-mapped IPv6 address is its IPv4 address.
    pub addr: IpAddr,
    pub tls: ClientTls,
}

impl Client {
    pub fn new(addr: IpAddr, tls: ClientTls) -> Self {
        Client {
            addr: addr.to_canonical(),
            tls,
        }
    }

    pub fn id(&self) -> Option<&Name> {
        match &self.tls {
            ClientTls::Established(id) => id.as_ref(),
            _ => None,
        }
    }
}

impl Authz {
    /// Whether `client` passes: its address in a network, and its TLS as required.
    pub fn admits(&self, client: &Client) -> bool {
        self.networks.iter().any(|n| n.contains(&client.addr)) && self.authenticates(client)
    }

    fn authenticates(&self, client: &Client) -> bool {
        match (&self.authn, &client.tls) {
            (Authn::Unauthenticated, _) => true,
            (Authn::TlsUnauthenticated, ClientTls::Established(_)) => true,
            (
                Authn::TlsAuthenticated {
                    identities,
                    suffixes,
                },
                ClientTls::Established(Some(id)),
            ) => {
                identities.contains(id.as_str())
                    || suffixes.iter().any(|s| id.as_str().ends_with(s.as_str()))
            }
            _ => false,
        }
    }

    /// linkerd2-proxy's audit convention: allowed, and logged as such.
    pub fn is_audit(&self) -> bool {
        self.meta.is_audit()
    }

    fn is_localhost(&self) -> bool {
        matches!(&self.meta, Meta::Default { name } if &**name == LOCALHOST)
    }
}

/// The implicit authorization of loopback clients the proxy adds to every `Server` from the
/// policy service.
pub const LOCALHOST: &str = "localhost";

/// The first authorization of `authzs` that admits `client`.
pub fn authorize<'a>(authzs: &'a [Authz], client: &Client) -> Option<&'a Authz> {
    authzs.iter().find(|a| a.admits(client))
}

impl ServerPolicy {
    /// The routes of an HTTP server (`None` for Opaque and TLS servers: no route is found).
    pub fn routes(&self) -> Option<Routes<'_>> {
        match &self.protocol {
            Protocol::Detect { http, .. } | Protocol::Http1(http) | Protocol::Http2(http) => {
                Some(Routes::Http(http))
            }
            Protocol::Grpc(grpc) => Some(Routes::Grpc(grpc)),
            Protocol::Tls(_) | Protocol::Opaque(_) => None,
        }
    }

    /// The authorizations of TCP connections: none for HTTP-only servers, whose connections
    /// that turn out not to be HTTP are denied.
    pub fn tcp_authzs(&self) -> &[Authz] {
        match &self.protocol {
            Protocol::Detect { tcp, .. } | Protocol::Tls(tcp) | Protocol::Opaque(tcp) => tcp,
            Protocol::Http1(_) | Protocol::Http2(_) | Protocol::Grpc(_) => &[],
        }
    }

    /// The authorization that admits `client`'s TCP connection, or why none does.
    pub fn authorize_tcp(&self, client: &Client) -> Result<&Authz, Denied> {
        let authzs = self.tcp_authzs();
        authorize(authzs, client).ok_or_else(|| explain(authzs, client))
    }
}

/// Why no authorization admitted a client (for logs, `l5d-proxy-error` and the refusal
/// counters; the decision itself is [`authorize`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Authorizations admit the client's address only with mesh TLS (and an identity).
    Unauthenticated,
    /// No authorization admits the client's address.
    OutsideCluster,
    /// The port is `cluster-authenticated` and the client's identity is of another trust
    /// domain.
    ForeignTrustDomain,
    /// The client's identity is not among those authorized.
    NotAllowed,
    /// The port has no authorizations.
    Deny,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Unauthenticated => "policy_unauthenticated",
            Denied::OutsideCluster => "policy_outside_cluster",
            Denied::ForeignTrustDomain => "policy_foreign_trust_domain",
            Denied::NotAllowed => "policy_not_allowed",
            Denied::Deny => "policy_deny",
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denied::Unauthenticated => "the port requires an authenticated (mTLS) peer",
            Denied::OutsideCluster => {
                "the client's address is outside the networks the port admits"
            }
            Denied::ForeignTrustDomain => "the port requires a peer of this cluster's trust domain",
            Denied::NotAllowed => "the peer's identity is not on the port's allow-list",
            Denied::Deny => "the port denies all connections",
        })
    }
}

/// Why none of `authzs` admits `client`.
pub fn explain(authzs: &[Authz], client: &Client) -> Denied {
    let mut real = authzs.iter().filter(|a| !a.is_localhost()).peekable();
    if real.peek().is_none() {
        return Denied::Deny;
    }
    let in_net: Vec<&Authz> = real
        .filter(|a| a.networks.iter().any(|n| n.contains(&client.addr)))
        .collect();
    if in_net.is_empty() {
        return Denied::OutsideCluster;
    }
    match &client.tls {
        ClientTls::Established(Some(_)) => {
            let cluster = in_net.iter().any(
                |a| matches!(&a.meta, Meta::Default { name } if &**name == "cluster-authenticated"),
            );
            if cluster {
                Denied::ForeignTrustDomain
            } else {
                Denied::NotAllowed
            }
        }
        // Without a certificate (or TLS), every authorization that admits the address
        // wanted one.
        _ => Denied::Unauthenticated,
    }
}
