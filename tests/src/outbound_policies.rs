//! Outbound policies for tests, built as Linkerd's policy controller builds them
//! (`OutboundPolicies`: a Service parent, `HTTPRoute`s with matches, filters, backends,
//! timeouts and retries, `GRPCRoute`s, the forbidden opaque route of an undefined port), and a
//! mesh to try them in: a client pod and two server pods (`web-a`, `web-b`, the test server on
//! 8080) under a [`LinkerdPlane`], the servers known to Destination by their services' names,
//! and the parent service a virtual IP only the policy knows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use linkerd2_proxy_api::destination as dst;
use linkerd2_proxy_api::grpc_route as grpc_pb;
use linkerd2_proxy_api::http_route as http_pb;
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::outbound as pb;

use crate::apps::test_server;
use crate::http::{Reply, http1, send1};
use crate::linkerd::{Endpoint, LinkerdPlane, Workload, WorkloadSpec};
use crate::{Net, eventually};

/// The parent service's virtual IP and port.
pub const VIP: &str = "10.96.0.10";
pub const PORT: u16 = 8080;
/// The destination paths of the two backends.
pub const WEB_A: &str = "web-a.shop.svc.cluster.local:8080";
pub const WEB_B: &str = "web-b.shop.svc.cluster.local:8080";
/// A service with no endpoints.
pub const WEB_EMPTY: &str = "web-empty.shop.svc.cluster.local:8080";

pub fn vip() -> SocketAddr {
    SocketAddr::new(VIP.parse().expect("VIP"), PORT)
}

pub fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub fn default_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.into())),
    }
}

pub fn resource(group: &str, kind: &str, name: &str, port: u32) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
            section: String::new(),
            port,
        })),
    }
}

pub fn service(name: &str, port: u32) -> meta::Metadata {
    resource("core", "Service", name, port)
}

/// A backend balanced over `path`'s endpoints (named by its service, as the controller does).
pub fn balancer(path: &str) -> pb::Backend {
    use pb::backend::{BalanceP2c, EndpointDiscovery, Kind, balance_p2c, endpoint_discovery};
    let name = path.split('.').next().unwrap_or(path);
    pb::Backend {
        metadata: Some(service(name, PORT.into())),
        queue: Some(pb::Queue {
            capacity: 100,
            failfast_timeout: Some(duration(3000)),
        }),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet { path: path.into() },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: Some(duration(30)),
                decay: Some(duration(10_000)),
            })),
        })),
    }
}

fn route_backend(b: pb::Backend) -> pb::http_route::RouteBackend {
    #[allow(deprecated)]
    pb::http_route::RouteBackend {
        backend: Some(b),
        filters: vec![],
        request_timeout: None,
    }
}

pub fn first_available(paths: &[&str]) -> pb::http_route::Distribution {
    use pb::http_route::distribution;
    pb::http_route::Distribution {
        kind: Some(distribution::Kind::FirstAvailable(
            distribution::FirstAvailable {
                backends: paths.iter().map(|p| route_backend(balancer(p))).collect(),
            },
        )),
    }
}

pub fn random_available(weighted: &[(&str, u32)]) -> pb::http_route::Distribution {
    use pb::http_route::distribution;
    pb::http_route::Distribution {
        kind: Some(distribution::Kind::RandomAvailable(
            distribution::RandomAvailable {
                backends: weighted
                    .iter()
                    .map(|(p, weight)| pb::http_route::WeightedRouteBackend {
                        backend: Some(route_backend(balancer(p))),
                        weight: *weight,
                    })
                    .collect(),
            },
        )),
    }
}

/// A rule: its matches (none: everything) and backends.
pub fn rule(
    matches: Vec<http_pb::HttpRouteMatch>,
    backends: pb::http_route::Distribution,
) -> pb::http_route::Rule {
    #[allow(deprecated)]
    pb::http_route::Rule {
        matches,
        filters: vec![],
        backends: Some(backends),
        request_timeout: None,
        timeouts: None,
        retry: None,
        allow_l5d_request_headers: false,
    }
}

pub fn header(name: &str, value: &str) -> http_pb::HttpRouteMatch {
    http_pb::HttpRouteMatch {
        headers: vec![http_pb::HeaderMatch {
            name: name.into(),
            value: Some(http_pb::header_match::Value::Exact(
                value.as_bytes().to_vec(),
            )),
        }],
        ..Default::default()
    }
}

pub fn path_prefix(p: &str) -> http_pb::HttpRouteMatch {
    http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch {
            kind: Some(http_pb::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

pub fn path_regex(r: &str) -> http_pb::HttpRouteMatch {
    http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch {
            kind: Some(http_pb::path_match::Kind::Regex(r.into())),
        }),
        ..Default::default()
    }
}

/// An `HTTPRoute` named `name` (in `shop`).
pub fn http_route(name: &str, rules: Vec<pb::http_route::Rule>) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: Some(resource("gateway.networking.k8s.io", "HTTPRoute", name, 0)),
        hosts: vec![],
        rules,
    }
}

/// A retry of 5xx (`retry.linkerd.io/http: 5xx`), `max` times, bodies up to `bytes`.
pub fn retry_5xx(max: u32, bytes: u32) -> pb::http_route::Retry {
    pb::http_route::Retry {
        max_retries: max,
        max_request_bytes: bytes,
        conditions: Some(pb::http_route::retry::Conditions {
            status_ranges: vec![pb::http_route::retry::conditions::StatusRange {
                start: 500,
                end: 599,
            }],
        }),
        timeout: None,
        backoff: Some(pb::ExponentialBackoff {
            min_backoff: Some(duration(25)),
            max_backoff: Some(duration(250)),
            jitter_ratio: 1.0,
            respect_retry_after_hint: false,
        }),
    }
}

pub fn redirect(host: &str, status: u32) -> pb::http_route::Filter {
    pb::http_route::Filter {
        kind: Some(pb::http_route::filter::Kind::Redirect(
            http_pb::RequestRedirect {
                host: host.into(),
                status,
                ..Default::default()
            },
        )),
    }
}

/// The policy of the parent service `web` with these HTTP routes, behind protocol detection
/// (as the controller answers for a port without an `appProtocol`).
pub fn web_policy(routes: Vec<pb::HttpRoute>) -> pb::OutboundPolicy {
    use pb::proxy_protocol::{Detect, Http1, Http2, Kind, Opaque};
    pb::OutboundPolicy {
        metadata: Some(service("web", PORT.into())),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(Kind::Detect(Detect {
                timeout: Some(duration(10_000)),
                opaque: Some(Opaque { routes: vec![] }),
                http1: Some(Http1 {
                    routes: routes.clone(),
                    failure_accrual: None,
                }),
                http2: Some(Http2 {
                    routes,
                    failure_accrual: None,
                }),
            })),
        }),
    }
}

/// The controller's answer for a port the service does not declare: an opaque route whose
/// filter forbids every connection.
pub fn undefined_port(port: u32) -> pb::OutboundPolicy {
    use pb::opaque_route::{Distribution, Filter, Rule, distribution, filter};
    pb::OutboundPolicy {
        metadata: Some(service("web", port)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Opaque(
                pb::proxy_protocol::Opaque {
                    routes: vec![pb::OpaqueRoute {
                        metadata: Some(default_meta("undefined-port")),
                        rules: vec![Rule {
                            backends: Some(Distribution {
                                kind: Some(distribution::Kind::Empty(distribution::Empty {})),
                            }),
                            filters: vec![Filter {
                                kind: Some(filter::Kind::Forbidden(
                                    linkerd2_proxy_api::opaque_route::Forbidden {},
                                )),
                            }],
                        }],
                    }],
                },
            )),
        }),
    }
}

/// A gRPC policy for the parent `web`: one `GRPCRoute` to `path`, retrying the gRPC statuses
/// `conditions` names up to twice.
pub fn grpc_policy(
    path: &str,
    conditions: pb::grpc_route::retry::Conditions,
) -> pb::OutboundPolicy {
    #[allow(deprecated)]
    let rule = pb::grpc_route::Rule {
        matches: vec![grpc_pb::GrpcRouteMatch {
            rpc: Some(grpc_pb::GrpcRpcMatch {
                service: "remora.test.Test".into(),
                method: String::new(),
            }),
            headers: vec![],
        }],
        filters: vec![],
        backends: Some(pb::grpc_route::Distribution {
            kind: Some(pb::grpc_route::distribution::Kind::FirstAvailable(
                pb::grpc_route::distribution::FirstAvailable {
                    backends: vec![pb::grpc_route::RouteBackend {
                        backend: Some(balancer(path)),
                        filters: vec![],
                        request_timeout: None,
                    }],
                },
            )),
        }),
        request_timeout: None,
        timeouts: None,
        retry: Some(pb::grpc_route::Retry {
            max_retries: 2,
            max_request_bytes: 64 * 1024,
            conditions: Some(conditions),
            timeout: None,
            backoff: None,
        }),
        allow_l5d_request_headers: false,
    };
    pb::OutboundPolicy {
        metadata: Some(service("web", PORT.into())),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Grpc(pb::proxy_protocol::Grpc {
                routes: vec![pb::GrpcRoute {
                    metadata: Some(resource(
                        "gateway.networking.k8s.io",
                        "GRPCRoute",
                        "echo",
                        0,
                    )),
                    hosts: vec![],
                    rules: vec![rule],
                }],
                failure_accrual: None,
            })),
        }),
    }
}

/// Which proxy a client pod runs.
#[derive(Clone, Debug)]
pub enum ClientProxy {
    Remora,
    Linkerd2(PathBuf),
}

/// A client pod, two server pods and a plane serving the policies a test sets.
#[derive(Debug)]
pub struct PolicyMesh {
    pub net: Net,
    pub plane: LinkerdPlane,
    pub client: Workload,
    pub web_a: Workload,
    pub web_b: Workload,
}

impl PolicyMesh {
    /// Starts the mesh with `replicas` of the plane; the parent's policy is `policy` from the
    /// start (the client's first connection waits for it).
    pub async fn start(
        replicas: usize,
        client: ClientProxy,
        policy: Option<pb::OutboundPolicy>,
    ) -> Option<PolicyMesh> {
        let net = Net::new()?;
        let plane = LinkerdPlane::start(&net, replicas).await;
        let server = |name: &str| {
            WorkloadSpec::new(&format!("{name}-0"), name).app(test_server(PORT, name), PORT)
        };
        let web_a = plane.workload(&net, server("web-a")).await;
        let web_b = plane.workload(&net, server("web-b")).await;
        for (path, w, sa) in [(WEB_A, &web_a, "web-a"), (WEB_B, &web_b, "web-b")] {
            plane.add_service(
                path,
                vec![Endpoint {
                    addr: w.pod.addr4(PORT),
                    sa: sa.into(),
                    ns: "shop".into(),
                    pod: w.pod.name.clone(),
                    opaque: false,
                }],
            );
        }
        plane.add_service(WEB_EMPTY, Vec::new());
        if let Some(p) = policy {
            plane.set_outbound(&vip().to_string(), Some(p));
        }
        let mut spec = WorkloadSpec::new("client-0", "client")
            .env("REMORA_LOG", "info,remora_proxy::outbound=debug");
        if let ClientProxy::Linkerd2(program) = client {
            spec.program = Some(program);
            spec.env.clear();
        }
        let client = plane.workload(&net, spec).await;
        Some(PolicyMesh {
            net,
            plane,
            client,
            web_a,
            web_b,
        })
    }

    /// `GET path` from the client's app to the parent's virtual IP, with `headers`, on a new
    /// connection.
    pub async fn get(&self, path: &str, headers: &[(&'static str, &str)]) -> Result<Reply, String> {
        get_from(&self.client, path, headers).await
    }

    /// Sends `req` from the client's app to the parent's virtual IP on a new connection.
    pub async fn send(&self, req: http::Request<crate::http::Body>) -> Result<Reply, String> {
        send_from(&self.client, req).await
    }

    /// Who answered (`x-server`), or the status and `l5d-proxy-error` of a proxy's answer.
    pub async fn who(&self, path: &str, headers: &[(&'static str, &str)]) -> String {
        who_from(&self.client, path, headers).await
    }

    /// Waits (up to 20 s) until `GET path` with `headers` is answered by `server`.
    pub async fn until(&self, path: &str, headers: &[(&'static str, &str)], server: &str) -> bool {
        eventually(Duration::from_secs(20), || async {
            self.who(path, headers).await == server
        })
        .await
    }

    /// Every pod's proxy log, for a failure's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for w in [&self.client, &self.web_a, &self.web_b] {
            out.push_str(&format!(
                "--- {} ---\n{}\n",
                w.pod.name,
                w.pod.proxy().log()
            ));
        }
        out
    }
}

/// A forward backend to `addr` (an egress fallback's).
pub fn forward(addr: SocketAddr) -> pb::Backend {
    pb::Backend {
        metadata: Some(default_meta("egress-fallback")),
        queue: Some(pb::Queue {
            capacity: 100,
            failfast_timeout: Some(duration(3000)),
        }),
        kind: Some(pb::backend::Kind::Forward(dst::WeightedAddr {
            addr: Some(addr.into()),
            weight: 1,
            ..Default::default()
        })),
    }
}

/// `GET path` from `client`'s app to the parent's virtual IP, with `headers`, on a new
/// connection.
pub async fn get_from(
    client: &Workload,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<Reply, String> {
    let mut req = crate::http::get(&format!("web.shop.svc.cluster.local:{PORT}"), path);
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, v.parse().map_err(|_| "header value".to_string())?);
    }
    send_from(client, req).await
}

/// Sends `req` from `client`'s app to the parent's virtual IP on a new connection.
pub async fn send_from(
    client: &Workload,
    req: http::Request<crate::http::Body>,
) -> Result<Reply, String> {
    let call = async {
        let mut conn = http1(&client.pod.ns, vip()).await;
        send1(&mut conn, req).await
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .map_err(|_| "no answer within 15 s".to_string())?
        .map_err(|e| e.to_string())
}

/// Who answered `GET path` from `client` (`x-server`), or the status and `l5d-proxy-error` of a
/// proxy's answer, or what went wrong.
pub async fn who_from(client: &Workload, path: &str, headers: &[(&'static str, &str)]) -> String {
    match get_from(client, path, headers).await {
        Ok(r) => match r.headers.get("x-server") {
            Some(s) => s.to_str().unwrap_or_default().to_string(),
            None => format!(
                "{} {}",
                r.status,
                r.headers
                    .get("l5d-proxy-error")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
            ),
        },
        Err(e) => e,
    }
}
