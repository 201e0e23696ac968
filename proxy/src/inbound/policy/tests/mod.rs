//! Table-driven tests of the inbound policy: every `Server` field the proxy honours (or
//! refuses) and the authorization of clients (`compile.rs`), the evaluation of requests
//! (routes, authorizations, filters, rate limits) and connections (`requests.rs`), and the
//! `REMORA_INBOUND_*` policies (`local.rs`). This module builds the messages.

mod compile;
mod local;
mod requests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use linkerd2_proxy_api::inbound::{self as pb, proxy_protocol::Kind};
use linkerd2_proxy_api::{
    grpc_route as grpc_pb, http_route as route_pb, http_types, meta, net as pbnet,
};
use remora_metrics::Registry;
use remora_metrics::bounded::Limits;
use remora_metrics::inbound_policy::{ClientTls as TlsLabel, InboundPolicyMetrics};
use remora_metrics::series::SeriesLimits;
use tokio::sync::watch;

use super::proto::{InvalidServer, server};
use super::server::Routes;
use super::*;
use crate::error::PolicyRefusal;
use crate::policy::Meta;

// ---- building messages ----

fn net(cidr: &str) -> pbnet::IpNetwork {
    cidr.parse::<ipnet::IpNet>().unwrap().into()
}

fn network(cidr: &str, except: &[&str]) -> pb::Network {
    pb::Network {
        net: Some(net(cidr)),
        except: except.iter().map(|e| net(e)).collect(),
    }
}

fn default_meta(name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.into())),
    })
}

fn resource(kind: &str, name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.linkerd.io".into(),
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        })),
    })
}

fn unauthenticated() -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::Unauthenticated(
            pb::authn::PermitUnauthenticated {},
        )),
    }
}

fn mesh_tls_any() -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: Some(pb::authn::permit_mesh_tls::Clients::Unauthenticated(
                pb::authn::PermitUnauthenticated {},
            )),
        })),
    }
}

fn identities(ids: &[&str], suffixes: &[&[&str]]) -> pb::Authn {
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

fn authz(name: &str, networks: Vec<pb::Network>, authn: pb::Authn) -> pb::Authz {
    pb::Authz {
        networks,
        authentication: Some(authn),
        labels: Default::default(),
        metadata: resource("AuthorizationPolicy", name),
    }
}

fn everywhere() -> Vec<pb::Network> {
    vec![network("0.0.0.0/0", &[]), network("::/0", &[])]
}

fn labels(name: &str) -> std::collections::HashMap<String, String> {
    [
        ("group".to_string(), "policy.linkerd.io".to_string()),
        ("kind".to_string(), "server".to_string()),
        ("name".to_string(), name.to_string()),
    ]
    .into()
}

fn detect(routes: Vec<pb::HttpRoute>, rl: Option<pb::HttpLocalRateLimit>) -> Kind {
    Kind::Detect(pb::proxy_protocol::Detect {
        timeout: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        http_routes: routes,
        http_local_rate_limit: rl,
    })
}

fn srv(kind: Kind, authzs: Vec<pb::Authz>) -> pb::Server {
    pb::Server {
        protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
        server_ips: Vec::new(),
        authorizations: authzs,
        labels: labels("web-http"),
    }
}

fn path_prefix(p: &str) -> route_pb::HttpRouteMatch {
    route_pb::HttpRouteMatch {
        path: Some(route_pb::PathMatch {
            kind: Some(route_pb::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

fn http_route(
    name: &str,
    matches: Vec<route_pb::HttpRouteMatch>,
    authzs: Vec<pb::Authz>,
    filters: Vec<pb::http_route::filter::Kind>,
) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: resource("HTTPRoute", name),
        hosts: Vec::new(),
        authorizations: authzs,
        rules: vec![pb::http_route::Rule {
            matches,
            filters: filters
                .into_iter()
                .map(|k| pb::http_route::Filter { kind: Some(k) })
                .collect(),
        }],
    }
}

// ---- evaluating ----

const WEB: &str = "web.shop.serviceaccount.identity.linkerd.cluster.local";
const BATCH: &str = "batch.shop.serviceaccount.identity.linkerd.cluster.local";

fn mtls(id: &str) -> ClientTls {
    ClientTls::Established(Some(id.parse().unwrap()))
}

fn client(addr: &str, tls: ClientTls) -> Client {
    Client::new(addr.parse().unwrap(), tls)
}

/// A connection to 10.0.0.1:8080 from `client` under `policy`, and the registry its
/// metrics are in.
fn conn(
    policy: ServerPolicy,
    client: Client,
) -> (ConnPolicy, Registry, watch::Sender<Arc<ServerPolicy>>) {
    let mut registry = Registry::default();
    let series = SeriesLimits::register(&mut registry, Limits::default());
    let metrics = InboundPolicyMetrics::register(&mut registry, &series);
    let (tx, rx) = watch::channel(Arc::new(policy));
    let label = match client.id() {
        Some(id) => TlsLabel::Established(Some(Arc::from(id.as_str()))),
        None => TlsLabel::NoTls("no_tls_from_remote"),
    };
    let target: SocketAddr = "10.0.0.1:8080".parse().unwrap();
    (
        ConnPolicy::new(rx, client, target, label, metrics),
        registry,
        tx,
    )
}

fn req(method: Method, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "web.shop.svc.cluster.local:8080")
        .body(())
        .unwrap()
}

fn compiled(s: pb::Server) -> ServerPolicy {
    server(&s).unwrap_or_else(|e| panic!("{e}"))
}
