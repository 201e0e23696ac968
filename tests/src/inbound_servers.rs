//! `Server` messages for [`crate::linkerd::LinkerdPlane::set_server`], shaped as Linkerd's
//! policy controller shapes them (§5.3 of the notes): a `Server` resource's labels, its
//! protocol, `AuthorizationPolicy` authorizations with their metadata, `HTTPRoute`s and
//! `GRPCRoute`s, an `HTTPLocalRateLimitPolicy`; and, for the tests that need them, messages
//! no controller would send.
//!
//! ```text
//! server("web-http", detect()).authz(authz("clients", everywhere(), identities(&[id])))
//!     .route(http_route("admin").prefix("/admin").authz(...)).build()
//! ```

use linkerd2_proxy_api::inbound::{self as pb, proxy_protocol::Kind};
use linkerd2_proxy_api::{grpc_route, http_route as route_pb, meta, net};

/// A `Server` being built.
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    name: String,
    kind: Kind,
    authzs: Vec<pb::Authz>,
}

fn resource(kind: &str, name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.linkerd.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
            ..Default::default()
        })),
    })
}

/// `proxyProtocol: unknown`: detect HTTP within 10 s (the controller's constant).
pub fn detect() -> Kind {
    Kind::Detect(pb::proxy_protocol::Detect {
        timeout: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        http_routes: Vec::new(),
        http_local_rate_limit: None,
    })
}

pub fn http1() -> Kind {
    Kind::Http1(pb::proxy_protocol::Http1 {
        routes: Vec::new(),
        local_rate_limit: None,
    })
}

pub fn http2() -> Kind {
    Kind::Http2(pb::proxy_protocol::Http2 {
        routes: Vec::new(),
        local_rate_limit: None,
    })
}

pub fn grpc() -> Kind {
    Kind::Grpc(pb::proxy_protocol::Grpc { routes: Vec::new() })
}

pub fn opaque() -> Kind {
    Kind::Opaque(pb::proxy_protocol::Opaque {})
}

pub fn tls() -> Kind {
    Kind::Tls(pb::proxy_protocol::Tls {})
}

/// A `Server` resource named `name` speaking `kind`.
pub fn server(name: &str, kind: Kind) -> ServerBuilder {
    ServerBuilder {
        name: name.to_string(),
        kind,
        authzs: Vec::new(),
    }
}

impl ServerBuilder {
    pub fn authz(mut self, a: pb::Authz) -> Self {
        self.authzs.push(a);
        self
    }

    /// Adds an HTTP route (Detect, HTTP/1, HTTP/2 servers).
    pub fn route(mut self, r: RouteBuilder) -> Self {
        let route = r.build();
        match &mut self.kind {
            Kind::Detect(d) => d.http_routes.push(route),
            Kind::Http1(h) => h.routes.push(route),
            Kind::Http2(h) => h.routes.push(route),
            _ => panic!("HTTP routes belong to Detect, HTTP/1 and HTTP/2 servers"),
        }
        self
    }

    /// Adds a gRPC route (gRPC servers) for `service`/`method` (`""`: any).
    pub fn grpc_route(
        mut self,
        name: &str,
        service: &str,
        method: &str,
        authzs: Vec<pb::Authz>,
    ) -> Self {
        let Kind::Grpc(g) = &mut self.kind else {
            panic!("gRPC routes belong to gRPC servers");
        };
        g.routes.push(pb::GrpcRoute {
            metadata: resource("GRPCRoute", name),
            hosts: Vec::new(),
            authorizations: authzs,
            rules: vec![pb::grpc_route::Rule {
                matches: vec![grpc_route::GrpcRouteMatch {
                    rpc: Some(grpc_route::GrpcRpcMatch {
                        service: service.into(),
                        method: method.into(),
                    }),
                    headers: Vec::new(),
                }],
                filters: Vec::new(),
            }],
        });
        self
    }

    /// An `HTTPLocalRateLimitPolicy` named `name`: `total` and `identity` requests a second (0:
    /// none) and overrides.
    pub fn rate_limit(
        mut self,
        name: &str,
        total: u32,
        identity: u32,
        overrides: &[(u32, &[&str])],
    ) -> Self {
        let limit = |rps: u32| {
            (rps > 0).then_some(pb::http_local_rate_limit::Limit {
                requests_per_second: rps,
            })
        };
        let rl = pb::HttpLocalRateLimit {
            metadata: resource("HTTPLocalRateLimitPolicy", name),
            total: limit(total),
            identity: limit(identity),
            overrides: overrides
                .iter()
                .map(|(rps, ids)| pb::http_local_rate_limit::Override {
                    limit: limit(*rps),
                    clients: Some(pb::http_local_rate_limit::r#override::ClientIdentities {
                        identities: ids
                            .iter()
                            .map(|i| pb::Identity {
                                name: i.to_string(),
                            })
                            .collect(),
                    }),
                })
                .collect(),
        };
        match &mut self.kind {
            Kind::Detect(d) => d.http_local_rate_limit = Some(rl),
            Kind::Http1(h) => h.local_rate_limit = Some(rl),
            Kind::Http2(h) => h.local_rate_limit = Some(rl),
            _ => panic!("rate limits belong to Detect, HTTP/1 and HTTP/2 servers"),
        }
        self
    }

    pub fn build(self) -> pb::Server {
        pb::Server {
            protocol: Some(pb::ProxyProtocol {
                kind: Some(self.kind),
            }),
            server_ips: Vec::new(),
            authorizations: self.authzs,
            labels: [
                ("group".to_string(), "policy.linkerd.io".to_string()),
                ("kind".to_string(), "server".to_string()),
                ("name".to_string(), self.name),
            ]
            .into(),
        }
    }
}

/// An HTTP route being built: a name, path prefixes, its own authorizations.
#[derive(Clone, Debug)]
pub struct RouteBuilder {
    name: String,
    prefixes: Vec<String>,
    authzs: Vec<pb::Authz>,
}

/// An `HTTPRoute` named `name`, matching every request until given prefixes.
pub fn http_route(name: &str) -> RouteBuilder {
    RouteBuilder {
        name: name.to_string(),
        prefixes: Vec::new(),
        authzs: Vec::new(),
    }
}

impl RouteBuilder {
    pub fn prefix(mut self, p: &str) -> Self {
        self.prefixes.push(p.to_string());
        self
    }

    pub fn authz(mut self, a: pb::Authz) -> Self {
        self.authzs.push(a);
        self
    }

    fn build(self) -> pb::HttpRoute {
        pb::HttpRoute {
            metadata: resource("HTTPRoute", &self.name),
            hosts: Vec::new(),
            authorizations: self.authzs,
            rules: vec![pb::http_route::Rule {
                matches: self
                    .prefixes
                    .iter()
                    .map(|p| route_pb::HttpRouteMatch {
                        path: Some(route_pb::PathMatch {
                            kind: Some(route_pb::path_match::Kind::Prefix(p.clone())),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                filters: Vec::new(),
            }],
        }
    }
}

/// An `AuthorizationPolicy`'s authorization: clients from `networks` passing `authn`.
pub fn authz(name: &str, networks: Vec<pb::Network>, authn: pb::Authn) -> pb::Authz {
    pb::Authz {
        networks,
        authentication: Some(authn),
        labels: [
            ("group".to_string(), "policy.linkerd.io".to_string()),
            ("kind".to_string(), "authorizationpolicy".to_string()),
            ("name".to_string(), name.to_string()),
        ]
        .into(),
        metadata: resource("AuthorizationPolicy", name),
    }
}

/// The controller's `audit` default authorization: everyone, named `Default{"audit"}`.
pub fn audit() -> pb::Authz {
    pb::Authz {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default("audit".into())),
        }),
        labels: Default::default(),
        ..authz("audit", everywhere(), unauthenticated())
    }
}

fn cidr(s: &str) -> net::IpNetwork {
    s.parse::<ipnet::IpNet>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .into()
}

/// `net` less `except`.
pub fn network(net: &str, except: &[&str]) -> pb::Network {
    pb::Network {
        net: Some(cidr(net)),
        except: except.iter().map(|e| cidr(e)).collect(),
    }
}

/// Every address (IPv4 and IPv6).
pub fn everywhere() -> Vec<pb::Network> {
    vec![network("0.0.0.0/0", &[]), network("::/0", &[])]
}

pub fn unauthenticated() -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::Unauthenticated(
            pb::authn::PermitUnauthenticated {},
        )),
    }
}

/// Mesh TLS, with or without a client identity.
pub fn mesh_tls() -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: Some(pb::authn::permit_mesh_tls::Clients::Unauthenticated(
                pb::authn::PermitUnauthenticated {},
            )),
        })),
    }
}

/// Mesh TLS from these identities (and those under the suffixes, each given as parts:
/// `["shop", "serviceaccount", ...]`; `[]` is every identity).
pub fn identities(ids: &[&str], suffixes: &[&[&str]]) -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: Some(pb::authn::permit_mesh_tls::Clients::Identities(
                pb::authn::permit_mesh_tls::PermitClientIdentities {
                    identities: ids
                        .iter()
                        .map(|i| pb::Identity {
                            name: i.to_string(),
                        })
                        .collect(),
                    suffixes: suffixes
                        .iter()
                        .map(|s| pb::IdentitySuffix {
                            parts: s.iter().map(|p| p.to_string()).collect(),
                        })
                        .collect(),
                },
            )),
        })),
    }
}
