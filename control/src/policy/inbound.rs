//! `InboundServerPolicies` answers, compiled once per config: each configured server's
//! `Server` message, the default servers, and what is known of each pod (labels, named ports,
//! opaque ports). A lookup picks the pod's first server that selects the port, else a default:
//!
//! ```text
//!  workload {"ns","pod"} + port
//!          servers of the namespace, in config order: selects the pod and the port?
//!                  │ first that does                    │ none
//!                  ▼                                    ▼
//!           its Server (protocol, routes,        the default Server: port 4191 with the probe
//!           authorizations, rate limit)          route, an opaque port Opaque, else Detect
//! ```
//!
//! The pods are the config's endpoints (their labels and their services' named and opaque
//! ports). Every answer for a pod its services list carries the label
//! `remora.io/declared-ports`: its services' target ports (`8080,9000-9002`), the ports the
//! pod declares, to which the proxy limits its direct path (proxy/src/inbound/ports.rs). A pod no service lists, in any namespace, is a pod without labels or named ports:
//! it gets a server that selects it by name or selects every pod of its namespace, else the
//! defaults. (Linkerd's controller answers `NotFound` for a pod it does not know, but its pods
//! exist before their proxies start; a config's endpoints may well lag a pod's start, and
//! linkerd2-proxy warns and retries on `NotFound` — with its own local default meanwhile,
//! which is what the cluster's default gives it here.)

use std::collections::{BTreeMap, BTreeSet};

use linkerd2_proxy_api::http_types::HttpMethod;
use linkerd2_proxy_api::{grpc_route, http_route, inbound};

use super::model::{AuthzTarget, Model, PortRef, Selector, Server, ServerProtocol};
use super::proto::{self, POLICY_GROUP, ROUTE_GROUP, prefix_match};
use super::routes::Parent;
use super::workload::Workload;
use crate::cluster::{ClusterState, Protocol};
use crate::error::Invalid;

/// linkerd2-proxy's admin port, which it always watches and kubelet probes (`/live`,
/// `/ready`): its default server carries Linkerd's probe route.
pub const PROXY_ADMIN_PORT: u16 = 4191;
/// The paths Linkerd's injected probes ask the proxy's admin port for.
const PROBE_PATHS: [&str; 2] = ["/live", "/ready"];

/// What the config says of one pod.
#[derive(Clone, Debug, Default)]
struct Pod {
    labels: BTreeMap<String, String>,
    /// Port names of its services, to their target ports.
    named_ports: BTreeMap<String, u16>,
    /// Target ports of its services' opaque ports.
    opaque_ports: BTreeSet<u16>,
    /// Target ports of all its services' ports.
    ports: BTreeSet<u16>,
    /// Its endpoints are opaque (`protocol = "opaque"`): every port is.
    opaque: bool,
}

impl Pod {
    fn port(&self, port: &PortRef) -> Option<u16> {
        match port {
            PortRef::Number(n) => Some(*n),
            PortRef::Name(name) => self.named_ports.get(name).copied(),
        }
    }
}

#[derive(Clone, Debug)]
struct Compiled {
    selector: Selector,
    port: PortRef,
    server: inbound::Server,
}

/// Every inbound answer of one config.
#[derive(Clone, Debug)]
pub struct InboundIndex {
    /// Namespace → pod → what the config says of it.
    pods: BTreeMap<String, BTreeMap<String, Pod>>,
    /// Namespace → its servers, in config order.
    servers: BTreeMap<String, Vec<Compiled>>,
    detect: inbound::Server,
    admin: inbound::Server,
    opaque: inbound::Server,
}

impl Default for InboundIndex {
    /// Linkerd's defaults for every port.
    fn default() -> Self {
        InboundIndex::defaults(&Model::default())
    }
}

impl InboundIndex {
    /// No servers, no pods: `model`'s defaults for every port.
    fn defaults(model: &Model) -> InboundIndex {
        InboundIndex {
            pods: BTreeMap::new(),
            servers: BTreeMap::new(),
            detect: default_server(model, false, false),
            admin: default_server(model, true, false),
            opaque: default_server(model, false, true),
        }
    }

    /// Compiles `model` for the pods of `state` (the config's own services, not mirrors).
    pub fn build(model: &Model, state: &ClusterState) -> Result<InboundIndex, Invalid> {
        let mut index = InboundIndex::defaults(model);
        for svc in state.services.values() {
            let ns = &svc.key.namespace;
            for e in &svc.endpoints {
                let pod = index
                    .pods
                    .entry(ns.clone())
                    .or_default()
                    .entry(e.pod.clone())
                    .or_default();
                let at = || format!("service {}: endpoint {}", svc.key, e.pod);
                for (k, v) in &e.labels {
                    if let Some(old) = pod.labels.insert(k.clone(), v.clone())
                        && old != *v
                    {
                        return Err(Invalid(format!(
                            "{}: label {k} is {v:?} here but {old:?} in another service (a pod \
                             has one set of labels)",
                            at()
                        )));
                    }
                }
                for p in &svc.ports {
                    if let Some(name) = &p.name
                        && let Some(old) = pod.named_ports.insert(name.clone(), p.target_port)
                        && old != p.target_port
                    {
                        return Err(Invalid(format!(
                            "{}: port name {name} is port {} here but {old} in another service",
                            at(),
                            p.target_port
                        )));
                    }
                    if p.opaque {
                        pod.opaque_ports.insert(p.target_port);
                    }
                    pod.ports.insert(p.target_port);
                }
                pod.opaque |= e.protocol == Protocol::Opaque;
            }
        }
        for s in &model.servers {
            index
                .servers
                .entry(s.namespace.clone())
                .or_default()
                .push(Compiled {
                    selector: s.selector.clone(),
                    port: s.port.clone(),
                    server: compile(model, s),
                });
        }
        Ok(index)
    }

    /// The server for `port` of `workload`.
    pub fn server(&self, workload: &Workload, port: u16) -> inbound::Server {
        let none = Pod::default();
        let pod = self
            .pods
            .get(&workload.namespace)
            .and_then(|pods| pods.get(&workload.pod))
            .unwrap_or(&none);
        let configured = self
            .servers
            .get(&workload.namespace)
            .into_iter()
            .flatten()
            .find(|s| {
                pod.port(&s.port) == Some(port) && s.selector.selects(&workload.pod, &pod.labels)
            });
        let mut server = if let Some(s) = configured {
            s.server.clone()
        } else if port == PROXY_ADMIN_PORT {
            self.admin.clone()
        } else if pod.opaque || pod.opaque_ports.contains(&port) {
            self.opaque.clone()
        } else {
            self.detect.clone()
        };
        if !pod.ports.is_empty() {
            server
                .labels
                .insert(DECLARED_PORTS_LABEL.to_string(), port_list(&pod.ports));
        }
        server
    }

    /// How many servers are configured.
    pub fn server_count(&self) -> usize {
        self.servers.values().map(Vec::len).sum()
    }
}

/// The label listing the pod's declared ports (read by proxy/src/inbound/policy/proto.rs).
pub const DECLARED_PORTS_LABEL: &str = "remora.io/declared-ports";

/// `ports` as a list of ports and ranges: `80,8080-8082`.
fn port_list(ports: &BTreeSet<u16>) -> String {
    let mut out = String::new();
    let mut iter = ports.iter().copied().peekable();
    while let Some(lo) = iter.next() {
        let mut hi = lo;
        while let Some(&next) = iter.peek() {
            if Some(next) != hi.checked_add(1) {
                break;
            }
            hi = next;
            iter.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&lo.to_string());
        if hi != lo {
            out.push('-');
            out.push_str(&hi.to_string());
        }
    }
    out
}

/// Linkerd's default route: every request.
fn default_route() -> inbound::HttpRoute {
    inbound::HttpRoute {
        metadata: Some(proto::default_meta("default")),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules: vec![inbound::http_route::Rule {
            matches: vec![prefix_match()],
            filters: Vec::new(),
        }],
    }
}

/// Linkerd's probe route: `GET` of each probe path, admitted from the probe networks.
fn probe_route(model: &Model) -> Option<inbound::HttpRoute> {
    if model.probe_networks.is_empty() {
        return None;
    }
    let matches = PROBE_PATHS
        .iter()
        .map(|p| http_route::HttpRouteMatch {
            path: Some(http_route::PathMatch {
                kind: Some(http_route::path_match::Kind::Exact(p.to_string())),
            }),
            method: Some(HttpMethod::from(http::Method::GET)),
            ..Default::default()
        })
        .collect();
    Some(inbound::HttpRoute {
        metadata: Some(proto::default_meta("probe")),
        hosts: Vec::new(),
        authorizations: vec![proto::named_authz(
            "probe",
            &model.probe_networks,
            super::model::Authn::Unauthenticated,
        )],
        rules: vec![inbound::http_route::Rule {
            matches,
            filters: Vec::new(),
        }],
    })
}

/// The routes of a server without routes of its own: `default`, and on the admin port
/// `probe` (sorted by name, as Linkerd's controller sorts default routes).
fn default_routes(model: &Model, admin: bool) -> Vec<inbound::HttpRoute> {
    let mut routes = vec![default_route()];
    if admin {
        routes.extend(probe_route(model));
    }
    routes
}

fn default_server(model: &Model, admin: bool, opaque: bool) -> inbound::Server {
    let policy = model.default_policy;
    let mut authorizations: Vec<_> = proto::default_authz(policy, &model.cluster_networks)
        .into_iter()
        .collect();
    authorizations.push(proto::localhost_authz());
    let kind = match opaque {
        true => inbound::proxy_protocol::Kind::Opaque(inbound::proxy_protocol::Opaque {}),
        false => inbound::proxy_protocol::Kind::Detect(inbound::proxy_protocol::Detect {
            timeout: Some(proto::duration(model.detect_timeout)),
            http_routes: default_routes(model, admin),
            http_local_rate_limit: None,
        }),
    };
    inbound::Server {
        protocol: Some(inbound::ProxyProtocol { kind: Some(kind) }),
        server_ips: Vec::new(),
        authorizations,
        labels: proto::server_labels("", "default", policy.name()),
    }
}

/// The authorizations of the route `target` names.
fn route_authz(model: &Model, s: &Server, target: &AuthzTarget) -> Vec<inbound::Authz> {
    model
        .authorizations
        .iter()
        .filter(|a| a.namespace == s.namespace && a.target == *target)
        .map(|a| proto::authz(a, &model.cluster_networks))
        .collect()
}

fn http_routes(model: &Model, s: &Server) -> Vec<inbound::HttpRoute> {
    let parent = Parent::Server(s.name.clone());
    let routes: Vec<_> = model
        .http_routes
        .iter()
        .filter(|r| r.namespace == s.namespace && r.parents.contains(&parent))
        .map(|r| inbound::HttpRoute {
            metadata: Some(proto::resource_meta(
                ROUTE_GROUP,
                "HTTPRoute",
                "",
                &r.name,
                0,
            )),
            hosts: r.hosts.clone(),
            authorizations: route_authz(model, s, &AuthzTarget::HttpRoute(r.name.clone())),
            rules: r
                .rules
                .iter()
                .map(|rule| inbound::http_route::Rule {
                    matches: match rule.matches.is_empty() {
                        true => vec![prefix_match()],
                        false => rule.matches.clone(),
                    },
                    filters: rule
                        .filters
                        .iter()
                        .filter_map(proto::inbound_http_filter)
                        .collect(),
                })
                .collect(),
        })
        .collect();
    match routes.is_empty() {
        true => default_routes(model, s.port == PortRef::Number(PROXY_ADMIN_PORT)),
        false => routes,
    }
}

fn grpc_routes(model: &Model, s: &Server) -> Vec<inbound::GrpcRoute> {
    let parent = Parent::Server(s.name.clone());
    let routes: Vec<_> = model
        .grpc_routes
        .iter()
        .filter(|r| r.namespace == s.namespace && r.parents.contains(&parent))
        .map(|r| inbound::GrpcRoute {
            metadata: Some(proto::resource_meta(
                ROUTE_GROUP,
                "GRPCRoute",
                "",
                &r.name,
                0,
            )),
            hosts: r.hosts.clone(),
            authorizations: route_authz(model, s, &AuthzTarget::GrpcRoute(r.name.clone())),
            rules: r
                .rules
                .iter()
                .map(|rule| inbound::grpc_route::Rule {
                    matches: rule.matches.clone(),
                    filters: rule
                        .filters
                        .iter()
                        .filter_map(proto::inbound_grpc_filter)
                        .collect(),
                })
                .collect(),
        })
        .collect();
    if !routes.is_empty() {
        return routes;
    }
    // Linkerd's default gRPC route: any service, any method.
    vec![inbound::GrpcRoute {
        metadata: Some(proto::default_meta("default")),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules: vec![inbound::grpc_route::Rule {
            matches: vec![grpc_route::GrpcRouteMatch {
                rpc: Some(grpc_route::GrpcRpcMatch::default()),
                headers: Vec::new(),
            }],
            filters: Vec::new(),
        }],
    }]
}

fn rate_limit(model: &Model, s: &Server) -> Option<inbound::HttpLocalRateLimit> {
    use inbound::http_local_rate_limit::{Limit, Override, r#override::ClientIdentities};
    let r = model
        .rate_limits
        .iter()
        .find(|r| r.namespace == s.namespace && r.server == s.name)?;
    let limit = |rps: u32| Limit {
        requests_per_second: rps,
    };
    Some(inbound::HttpLocalRateLimit {
        metadata: Some(proto::resource_meta(
            POLICY_GROUP,
            "HTTPLocalRateLimitPolicy",
            "",
            &r.name,
            0,
        )),
        total: r.total.map(limit),
        identity: r.identity.map(limit),
        overrides: r
            .overrides
            .iter()
            .map(|(rps, ids)| Override {
                limit: Some(limit(*rps)),
                clients: Some(ClientIdentities {
                    identities: ids
                        .iter()
                        .map(|name| inbound::Identity { name: name.clone() })
                        .collect(),
                }),
            })
            .collect(),
    })
}

/// A configured server's message: Linkerd's controller's `to_server`.
fn compile(model: &Model, s: &Server) -> inbound::Server {
    use inbound::proxy_protocol::{Detect, Grpc, Http1, Http2, Kind, Opaque, Tls};
    let nets = &model.cluster_networks;
    let mut authorizations: Vec<_> = model
        .authorizations
        .iter()
        .filter(|a| {
            a.namespace == s.namespace
                && match &a.target {
                    AuthzTarget::Server(name) => *name == s.name,
                    AuthzTarget::Namespace => true,
                    _ => false,
                }
        })
        .map(|a| proto::authz(a, nets))
        .collect();
    authorizations.extend(proto::default_authz(s.access_policy, nets));
    authorizations.push(proto::localhost_authz());
    let kind = match s.protocol {
        ServerProtocol::Detect => Kind::Detect(Detect {
            timeout: Some(proto::duration(model.detect_timeout)),
            http_routes: http_routes(model, s),
            http_local_rate_limit: rate_limit(model, s),
        }),
        ServerProtocol::Http1 => Kind::Http1(Http1 {
            routes: http_routes(model, s),
            local_rate_limit: rate_limit(model, s),
        }),
        ServerProtocol::Http2 => Kind::Http2(Http2 {
            routes: http_routes(model, s),
            local_rate_limit: rate_limit(model, s),
        }),
        ServerProtocol::Grpc => Kind::Grpc(Grpc {
            routes: grpc_routes(model, s),
        }),
        ServerProtocol::Opaque => Kind::Opaque(Opaque {}),
        ServerProtocol::Tls => Kind::Tls(Tls {}),
    };
    inbound::Server {
        protocol: Some(inbound::ProxyProtocol { kind: Some(kind) }),
        server_ips: Vec::new(),
        authorizations,
        labels: proto::server_labels(POLICY_GROUP, "server", &s.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_fold_runs_into_ranges() {
        let ports: BTreeSet<u16> = [80, 8080, 8081, 8082, 9000, 65535].into();
        assert_eq!(port_list(&ports), "80,8080-8082,9000,65535");
        assert_eq!(port_list(&BTreeSet::new()), "");
    }
}
