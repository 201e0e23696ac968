//! Small builders of API messages that both policy services use: metadata, durations,
//! authorizations (Linkerd's `to_authz`), and filters in each route flavour's wrapper.

use std::time::Duration;

use ipnet::IpNet;
use linkerd2_proxy_api::inbound;
use linkerd2_proxy_api::meta::{Metadata, Resource, metadata};
use linkerd2_proxy_api::outbound;

use super::model::{Authn, Authorization, DefaultPolicy, Network};
use super::routes::Filter;

/// The group of Gateway API routes.
pub const ROUTE_GROUP: &str = "gateway.networking.k8s.io";
/// The group of Linkerd's policy resources.
pub const POLICY_GROUP: &str = "policy.linkerd.io";

/// `Default{name}`: something the control plane made up rather than a resource.
pub fn default_meta(name: &str) -> Metadata {
    Metadata {
        kind: Some(metadata::Kind::Default(name.to_string())),
    }
}

/// A resource's metadata.
pub fn resource_meta(group: &str, kind: &str, namespace: &str, name: &str, port: u16) -> Metadata {
    Metadata {
        kind: Some(metadata::Kind::Resource(Resource {
            group: group.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            section: String::new(),
            port: u32::from(port),
        })),
    }
}

/// A `core/Service` port: the parent of a service's outbound policy and of its backends.
pub fn service_meta(namespace: &str, name: &str, port: u16) -> Metadata {
    resource_meta("core", "Service", namespace, name, port)
}

/// A path prefix of `/`: every request (the Gateway API's default match).
pub fn prefix_match() -> linkerd2_proxy_api::http_route::HttpRouteMatch {
    use linkerd2_proxy_api::http_route::{HttpRouteMatch, PathMatch, path_match};
    HttpRouteMatch {
        path: Some(PathMatch {
            kind: Some(path_match::Kind::Prefix("/".into())),
        }),
        ..Default::default()
    }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The deprecated `labels` Linkerd's controller still sets beside the metadata.
fn labels(group: &str, kind: &str, name: &str) -> std::collections::HashMap<String, String> {
    [("group", group), ("kind", kind), ("name", name)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn networks(list: &[IpNet]) -> Vec<inbound::Network> {
    list.iter()
        .map(|n| inbound::Network {
            net: Some((*n).into()),
            except: Vec::new(),
        })
        .collect()
}

fn permit(authn: &Authn) -> inbound::Authn {
    use inbound::authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    use inbound::authn::{Permit, PermitMeshTls, PermitUnauthenticated};
    let permit = match authn {
        Authn::Unauthenticated => Permit::Unauthenticated(PermitUnauthenticated {}),
        Authn::TlsUnauthenticated => Permit::MeshTls(PermitMeshTls {
            clients: Some(Clients::Unauthenticated(PermitUnauthenticated {})),
        }),
        Authn::TlsAuthenticated {
            identities,
            suffixes,
        } => Permit::MeshTls(PermitMeshTls {
            clients: Some(Clients::Identities(PermitClientIdentities {
                identities: identities
                    .iter()
                    .map(|name| inbound::Identity { name: name.clone() })
                    .collect(),
                suffixes: suffixes
                    .iter()
                    .map(|parts| inbound::IdentitySuffix {
                        parts: parts.clone(),
                    })
                    .collect(),
            })),
        }),
    };
    inbound::Authn {
        permit: Some(permit),
    }
}

/// An authorization of the config. Audited ones are named `Default{"audit"}`: the proxy logs
/// every request and connection such an authorization admits.
pub fn authz(a: &Authorization, cluster_networks: &[IpNet]) -> inbound::Authz {
    let (metadata, labels) = match a.audit {
        true => (default_meta("audit"), labels("", "default", "audit")),
        false => (
            resource_meta(POLICY_GROUP, "authorizationpolicy", "", &a.name, 0),
            labels(POLICY_GROUP, "authorizationpolicy", &a.name),
        ),
    };
    let networks = match a.networks.is_empty() {
        true => networks(cluster_networks),
        false => a
            .networks
            .iter()
            .map(|Network { net, except }| inbound::Network {
                net: Some((*net).into()),
                except: except.iter().map(|e| (*e).into()).collect(),
            })
            .collect(),
    };
    inbound::Authz {
        networks,
        authentication: Some(permit(&a.authn)),
        labels,
        metadata: Some(metadata),
    }
}

/// A default policy's authorization (`None` for `deny`), named after the policy.
pub fn default_authz(policy: DefaultPolicy, cluster_networks: &[IpNet]) -> Option<inbound::Authz> {
    let all: Vec<IpNet> = ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let any_id = Authn::TlsAuthenticated {
        identities: Vec::new(),
        suffixes: vec![Vec::new()],
    };
    let (nets, authn) = match policy {
        DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => (all, Authn::Unauthenticated),
        DefaultPolicy::AllAuthenticated => (all, any_id),
        DefaultPolicy::ClusterUnauthenticated => {
            (cluster_networks.to_vec(), Authn::Unauthenticated)
        }
        DefaultPolicy::ClusterAuthenticated => (cluster_networks.to_vec(), any_id),
        DefaultPolicy::Deny => return None,
    };
    Some(named_authz(policy.name(), &nets, authn))
}

/// An authorization the control plane made up, named `Default{name}`.
pub fn named_authz(name: &str, nets: &[IpNet], authn: Authn) -> inbound::Authz {
    inbound::Authz {
        networks: networks(nets),
        authentication: Some(permit(&authn)),
        labels: labels("", "default", name),
        metadata: Some(default_meta(name)),
    }
}

/// The loopback authorization linkerd2-proxy adds to every server it is sent (the proxy's
/// `localhost` authz); sent explicitly, so a client that does not add it behaves the same.
pub fn localhost_authz() -> inbound::Authz {
    let nets: Vec<IpNet> = ["127.0.0.1/32", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    named_authz("localhost", &nets, Authn::Unauthenticated)
}

/// Server labels: `{group, kind, name}`, whence the proxy takes the server's metadata.
pub fn server_labels(
    group: &str,
    kind: &str,
    name: &str,
) -> std::collections::HashMap<String, String> {
    labels(group, kind, name)
}

/// A filter of an inbound HTTP route (validation admits no other kind there).
pub fn inbound_http_filter(f: &Filter) -> Option<inbound::http_route::Filter> {
    use inbound::http_route::filter::Kind;
    let kind = match f {
        Filter::RequestHeaders(m) => Kind::RequestHeaderModifier(m.clone()),
        Filter::Redirect(r) => Kind::Redirect(r.clone()),
        Filter::HttpFailure(fi) => Kind::FailureInjector(fi.clone()),
        Filter::ResponseHeaders(_) | Filter::GrpcFailure(_) => return None,
    };
    Some(inbound::http_route::Filter { kind: Some(kind) })
}

/// A filter of an inbound gRPC route.
pub fn inbound_grpc_filter(f: &Filter) -> Option<inbound::grpc_route::Filter> {
    use inbound::grpc_route::filter::Kind;
    let kind = match f {
        Filter::RequestHeaders(m) => Kind::RequestHeaderModifier(m.clone()),
        Filter::GrpcFailure(fi) => Kind::FailureInjector(fi.clone()),
        _ => return None,
    };
    Some(inbound::grpc_route::Filter { kind: Some(kind) })
}

/// A filter of an outbound HTTP route or backend.
pub fn outbound_http_filter(f: &Filter) -> Option<outbound::http_route::Filter> {
    use outbound::http_route::filter::Kind;
    let kind = match f {
        Filter::RequestHeaders(m) => Kind::RequestHeaderModifier(m.clone()),
        Filter::ResponseHeaders(m) => Kind::ResponseHeaderModifier(m.clone()),
        Filter::Redirect(r) => Kind::Redirect(r.clone()),
        Filter::HttpFailure(fi) => Kind::FailureInjector(fi.clone()),
        Filter::GrpcFailure(_) => return None,
    };
    Some(outbound::http_route::Filter { kind: Some(kind) })
}

/// A filter of an outbound gRPC route or backend.
pub fn outbound_grpc_filter(f: &Filter) -> Option<outbound::grpc_route::Filter> {
    use outbound::grpc_route::filter::Kind;
    let kind = match f {
        Filter::RequestHeaders(m) => Kind::RequestHeaderModifier(m.clone()),
        Filter::GrpcFailure(fi) => Kind::FailureInjector(fi.clone()),
        _ => return None,
    };
    Some(outbound::grpc_route::Filter { kind: Some(kind) })
}
