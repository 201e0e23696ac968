//! `InboundServerPolicies` and `OutboundPolicies` over gRPC against a running control plane
//! whose config file the test edits: each answer checked field by field against the message
//! Linkerd's policy controller sends in the same situation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use linkerd2_proxy_api::destination as dst;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use linkerd2_proxy_api::http_route as hr;
use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::inbound::{self as ib, PortSpec};
use linkerd2_proxy_api::meta::{Metadata, Resource, metadata};
use linkerd2_proxy_api::net::{IpNetwork, TcpAddress};
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use linkerd2_proxy_api::outbound::{self as ob, TrafficSpec, traffic_spec};
use remora_control::config::Config;
use remora_control::server::Control;
use remora_control::token::TokenKey;
use remora_identity::certs::Ca;
use tonic::Code;
use tonic::transport::Channel;

const DAY: Duration = Duration::from_secs(86_400);
/// As linkerd2-proxy sends it: the injector's YAML block scalar ends in a newline.
const WEB_0: &str = "{\"ns\":\"shop\", \"pod\":\"web-0\"}\n";

struct Cluster {
    dir: PathBuf,
    grpc: SocketAddr,
    admin: SocketAddr,
    drain: remora_runtime::drain::Drain,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.drain.signal();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const HEAD: &str = r#"
[cluster]
name = "east"
trust_domain = "east.example"
[server]
addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
[identity]
trust_anchors = "root.pem"
issuer_cert = "issuer.pem"
issuer_key = "issuer.key"
token_key = "token.key"

[[services]]
name = "web"
namespace = "shop"
cluster_ip = "10.96.0.10"
ports = [{ port = 80, target_port = 8080, name = "http" }, { port = 3306, opaque = true }]
[[services.endpoints]]
pod = "web-0"
ip = "10.213.0.5"
service_account = "web"
labels = { app = "web" }

[[services]]
name = "web-v2"
namespace = "shop"
cluster_ip = "10.96.0.11"
ports = [{ port = 80, target_port = 8080 }]
[[services.endpoints]]
pod = "web-v2-0"
ip = "10.213.0.6"
service_account = "web"
"#;

/// Writes [`HEAD`] and `extra` as the config file.
fn write(dir: &Path, extra: &str) {
    write_text(dir, &format!("{HEAD}\n{extra}"));
}

/// Writes to a temporary file and renames it, as editors and config-map updates do.
fn write_text(dir: &Path, text: &str) {
    let tmp = dir.join("control.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("control.toml")).unwrap();
}

async fn start(extra: &str) -> Cluster {
    start_text(&format!("{HEAD}\n{extra}")).await
}

async fn start_text(text: &str) -> Cluster {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rmt{}-pol{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let root = Ca::new_root("root", DAY).unwrap();
    let issuer = root.new_intermediate("issuer", DAY).unwrap();
    std::fs::write(dir.join("root.pem"), root.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.pem"), issuer.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.key"), issuer.key_pem()).unwrap();
    std::fs::write(dir.join("token.key"), TokenKey::generate_hex().unwrap()).unwrap();
    write_text(&dir, text);
    let path = dir.join("control.toml");
    let control = Control::bind(Config::load(&path).unwrap(), Some(path)).unwrap();
    let grpc = control.grpc_addr().unwrap();
    let admin = control.admin_addr().unwrap();
    let drain = control.drain();
    tokio::spawn(control.run());
    Cluster {
        dir,
        grpc,
        admin,
        drain,
    }
}

async fn channel(c: &Cluster) -> Channel {
    Channel::from_shared(format!("http://{}", c.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn inbound(c: &Cluster) -> InboundServerPoliciesClient<Channel> {
    InboundServerPoliciesClient::new(channel(c).await)
}

async fn outbound(c: &Cluster) -> OutboundPoliciesClient<Channel> {
    OutboundPoliciesClient::new(channel(c).await)
}

fn port(workload: &str, port: u32) -> PortSpec {
    PortSpec {
        workload: workload.into(),
        port,
    }
}

fn to_addr(addr: &str) -> TrafficSpec {
    let a: SocketAddr = addr.parse().unwrap();
    TrafficSpec {
        source_workload: "{\"ns\":\"shop\", \"pod\":\"client-0\"}\n".into(),
        target: Some(traffic_spec::Target::Addr(TcpAddress::from(a))),
    }
}

fn to_authority(authority: &str) -> TrafficSpec {
    TrafficSpec {
        source_workload: "{\"ns\":\"shop\", \"pod\":\"client-0\"}\n".into(),
        target: Some(traffic_spec::Target::Authority(authority.into())),
    }
}

// ---- expected messages, written out as Linkerd's controller builds them ----

fn secs(s: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: s,
        nanos: 0,
    }
}

fn millis(ms: i32) -> prost_types::Duration {
    prost_types::Duration {
        seconds: 0,
        nanos: ms * 1_000_000,
    }
}

fn default(name: &str) -> Option<Metadata> {
    Some(Metadata {
        kind: Some(metadata::Kind::Default(name.into())),
    })
}

fn resource(group: &str, kind: &str, ns: &str, name: &str, port: u32) -> Option<Metadata> {
    Some(Metadata {
        kind: Some(metadata::Kind::Resource(Resource {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: ns.into(),
            section: String::new(),
            port,
        })),
    })
}

fn labels(group: &str, kind: &str, name: &str) -> HashMap<String, String> {
    [("group", group), ("kind", kind), ("name", name)]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// The target ports of web-0's services, which every answer for web-0 lists (W2.12).
const WEB_0_PORTS: &str = "3306,8080";

/// `labels` with the pod's declared ports.
fn declared(mut labels: HashMap<String, String>, ports: &str) -> HashMap<String, String> {
    labels.insert("remora.io/declared-ports".into(), ports.into());
    labels
}

fn net(ip: &str, len: u8) -> ib::Network {
    ib::Network {
        net: Some(IpNetwork::from((ip.parse::<IpAddr>().unwrap(), len))),
        except: Vec::new(),
    }
}

fn unauthenticated() -> Option<ib::Authn> {
    Some(ib::Authn {
        permit: Some(ib::authn::Permit::Unauthenticated(
            ib::authn::PermitUnauthenticated {},
        )),
    })
}

fn localhost() -> ib::Authz {
    ib::Authz {
        networks: vec![net("127.0.0.1", 32), net("::1", 128)],
        authentication: unauthenticated(),
        labels: labels("", "default", "localhost"),
        metadata: default("localhost"),
    }
}

fn all_unauthenticated() -> ib::Authz {
    ib::Authz {
        networks: vec![net("0.0.0.0", 0), net("::", 0)],
        authentication: unauthenticated(),
        labels: labels("", "default", "all-unauthenticated"),
        metadata: default("all-unauthenticated"),
    }
}

fn prefix(p: &str) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

fn default_route() -> ib::HttpRoute {
    ib::HttpRoute {
        metadata: default("default"),
        hosts: Vec::new(),
        authorizations: Vec::new(),
        rules: vec![ib::http_route::Rule {
            matches: vec![prefix("/")],
            filters: Vec::new(),
        }],
    }
}

fn probe_route() -> ib::HttpRoute {
    let get = |p: &str| hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Exact(p.into())),
        }),
        method: Some(http::Method::GET.into()),
        ..Default::default()
    };
    ib::HttpRoute {
        metadata: default("probe"),
        hosts: Vec::new(),
        authorizations: vec![ib::Authz {
            networks: vec![net("0.0.0.0", 0), net("::", 0)],
            authentication: unauthenticated(),
            labels: labels("", "default", "probe"),
            metadata: default("probe"),
        }],
        rules: vec![ib::http_route::Rule {
            matches: vec![get("/live"), get("/ready")],
            filters: Vec::new(),
        }],
    }
}

fn detect(routes: Vec<ib::HttpRoute>) -> Option<ib::ProxyProtocol> {
    Some(ib::ProxyProtocol {
        kind: Some(ib::proxy_protocol::Kind::Detect(
            ib::proxy_protocol::Detect {
                timeout: Some(secs(10)),
                http_routes: routes,
                http_local_rate_limit: None,
            },
        )),
    })
}

/// The default server of `all-unauthenticated`, with `routes`.
fn default_server(routes: Vec<ib::HttpRoute>) -> ib::Server {
    ib::Server {
        protocol: detect(routes),
        server_ips: Vec::new(),
        authorizations: vec![all_unauthenticated(), localhost()],
        labels: labels("", "default", "all-unauthenticated"),
    }
}

fn backend(svc: &str, port: u32) -> ob::Backend {
    use ob::backend::{BalanceP2c, EndpointDiscovery, Kind, balance_p2c, endpoint_discovery};
    ob::Backend {
        metadata: resource("core", "Service", "shop", svc, port),
        queue: Some(ob::Queue {
            capacity: 100,
            failfast_timeout: Some(secs(3)),
        }),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: format!("{svc}.shop.svc.cluster.local:{port}"),
                    },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: Some(millis(30)),
                decay: Some(secs(10)),
            })),
        })),
    }
}

fn first_available(b: ob::Backend) -> Option<ob::http_route::Distribution> {
    use ob::http_route::{Distribution, RouteBackend, distribution};
    Some(Distribution {
        kind: Some(distribution::Kind::FirstAvailable(
            distribution::FirstAvailable {
                backends: vec![RouteBackend {
                    backend: Some(b),
                    filters: Vec::new(),
                    ..Default::default()
                }],
            },
        )),
    })
}

fn opaq(b: ob::Backend) -> ob::proxy_protocol::Opaque {
    use ob::opaque_route::{Distribution, RouteBackend, Rule, distribution};
    ob::proxy_protocol::Opaque {
        routes: vec![ob::OpaqueRoute {
            metadata: default("opaq"),
            rules: vec![Rule {
                backends: Some(Distribution {
                    kind: Some(distribution::Kind::FirstAvailable(
                        distribution::FirstAvailable {
                            backends: vec![RouteBackend {
                                backend: Some(b),
                                filters: Vec::new(),
                            }],
                        },
                    )),
                }),
                filters: Vec::new(),
            }],
        }],
    }
}

/// A plain service port's policy: `Service` parent, detection, the default `http` and `opaq`
/// routes to the service itself.
#[allow(deprecated)]
fn service_policy(svc: &str, port: u32) -> ob::OutboundPolicy {
    let http = ob::HttpRoute {
        metadata: default("http"),
        hosts: Vec::new(),
        rules: vec![ob::http_route::Rule {
            matches: vec![prefix("/")],
            filters: Vec::new(),
            backends: first_available(backend(svc, port)),
            request_timeout: None,
            timeouts: Some(hr::Timeouts::default()),
            retry: None,
            allow_l5d_request_headers: false,
        }],
    };
    ob::OutboundPolicy {
        metadata: resource("core", "Service", "shop", svc, port),
        protocol: Some(ob::ProxyProtocol {
            kind: Some(ob::proxy_protocol::Kind::Detect(
                ob::proxy_protocol::Detect {
                    timeout: Some(secs(10)),
                    opaque: Some(opaq(backend(svc, port))),
                    http1: Some(ob::proxy_protocol::Http1 {
                        routes: vec![http.clone()],
                        failure_accrual: None,
                    }),
                    http2: Some(ob::proxy_protocol::Http2 {
                        routes: vec![http],
                        failure_accrual: None,
                    }),
                },
            )),
        }),
    }
}

fn http_routes(p: &ob::OutboundPolicy) -> Vec<ob::HttpRoute> {
    match p.protocol.as_ref().unwrap().kind.as_ref().unwrap() {
        ob::proxy_protocol::Kind::Detect(d) => {
            assert_eq!(
                d.http1.as_ref().unwrap().routes,
                d.http2.as_ref().unwrap().routes
            );
            d.http1.as_ref().unwrap().routes.clone()
        }
        other => panic!("not Detect: {other:?}"),
    }
}

/// The next message of `stream`, within 10 s.
async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an update within 10 s")
        .unwrap()
        .unwrap()
}

/// Nothing arrives on `stream` for 700 ms (several reload polls).
async fn quiet<T: std::fmt::Debug>(stream: &mut tonic::Streaming<T>) {
    let extra = tokio::time::timeout(Duration::from_millis(700), stream.message()).await;
    assert!(extra.is_err(), "unexpected message {extra:?}");
}

async fn admin_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

// ---- inbound ----

#[tokio::test]
async fn every_port_of_a_known_pod_gets_linkerds_default_server() {
    let c = start("").await;
    let mut client = inbound(&c).await;
    let mut watch = client
        .watch_port(port(WEB_0, 8080))
        .await
        .unwrap()
        .into_inner();
    let mut expected = default_server(vec![default_route()]);
    expected.labels = declared(expected.labels, WEB_0_PORTS);
    assert_eq!(next(&mut watch).await, expected);
    // GetPort answers the same; any port gets a server, declared or not.
    let got = client
        .get_port(port(WEB_0, 7777))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, expected);
    // The proxy's admin port adds Linkerd's probe route for kubelet.
    let admin = client
        .get_port(port(WEB_0, 4191))
        .await
        .unwrap()
        .into_inner();
    let mut expected = default_server(vec![default_route(), probe_route()]);
    expected.labels = declared(expected.labels, WEB_0_PORTS);
    assert_eq!(admin, expected);
    // The opaque port of its service is opaque, with no routes.
    let opaque = client
        .get_port(port(WEB_0, 3306))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        opaque.protocol.unwrap().kind,
        Some(ib::proxy_protocol::Kind::Opaque(
            ib::proxy_protocol::Opaque {}
        ))
    );
    assert_eq!(opaque.authorizations, [all_unauthenticated(), localhost()]);
    // A pod the config does not list (yet), in any namespace: the defaults. The legacy
    // workload form works too.
    for w in [
        "{\"ns\":\"shop\",\"pod\":\"client-0\"}",
        "shop:client-0",
        "{\"ns\":\"elsewhere\",\"pod\":\"x\"}\n",
    ] {
        let other = client.get_port(port(w, 8080)).await.unwrap().into_inner();
        assert_eq!(other, default_server(vec![default_route()]), "{w}");
    }
    // Bad input is refused.
    for (spec, what) in [
        (port("not json", 8080), "workload"),
        (port("{\"ns\":\"shop\"}", 8080), "workload"),
        (port(WEB_0, 0), "port"),
        (port(WEB_0, 70_000), "port"),
    ] {
        let e = client.get_port(spec).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    quiet(&mut watch).await;
    let m = admin_metrics(c.admin).await;
    assert!(m.contains("policy_watches{api=\"inbound\"} 1"), "{m}");
}

#[tokio::test]
async fn the_default_policy_shapes_the_default_authorization() {
    let c = start("[policy]\ndefault_inbound_policy = \"all-authenticated\"\n").await;
    let mut client = inbound(&c).await;
    let mut watch = client
        .watch_port(port(WEB_0, 8080))
        .await
        .unwrap()
        .into_inner();
    let s = next(&mut watch).await;
    assert_eq!(
        s.labels,
        declared(labels("", "default", "all-authenticated"), WEB_0_PORTS)
    );
    let any_identity = ib::Authz {
        networks: vec![net("0.0.0.0", 0), net("::", 0)],
        authentication: Some(ib::Authn {
            permit: Some(ib::authn::Permit::MeshTls(ib::authn::PermitMeshTls {
                clients: Some(ib::authn::permit_mesh_tls::Clients::Identities(
                    ib::authn::permit_mesh_tls::PermitClientIdentities {
                        identities: Vec::new(),
                        suffixes: vec![ib::IdentitySuffix { parts: Vec::new() }],
                    },
                )),
            })),
        }),
        labels: labels("", "default", "all-authenticated"),
        metadata: default("all-authenticated"),
    };
    assert_eq!(s.authorizations, [any_identity, localhost()]);
    // An edit to `cluster-unauthenticated` reaches the open stream: the cluster's networks.
    write(
        &c.dir,
        "[policy]\ndefault_inbound_policy = \"cluster-unauthenticated\"\ncluster_networks = [\"10.0.0.0/8\", \"fd00::/8\"]\n",
    );
    let s = next(&mut watch).await;
    assert_eq!(s.labels["name"], "cluster-unauthenticated");
    assert_eq!(
        s.authorizations[0].networks,
        [net("10.0.0.0", 8), net("fd00::", 8)]
    );
    assert_eq!(s.authorizations[0].authentication, unauthenticated());
    // `audit` is Linkerd's convention: an authorization named Default("audit").
    write(&c.dir, "[policy]\ndefault_inbound_policy = \"audit\"\n");
    let s = next(&mut watch).await;
    assert_eq!(s.authorizations[0].metadata, default("audit"));
    assert_eq!(s.authorizations[0].authentication, unauthenticated());
    // `deny`: no authorization but the loopback one.
    write(&c.dir, "[policy]\ndefault_inbound_policy = \"deny\"\n");
    let s = next(&mut watch).await;
    assert_eq!(s.authorizations, [localhost()]);
    assert_eq!(s.protocol, detect(vec![default_route()]));
    // An edit that changes nothing for this port sends nothing.
    write(
        &c.dir,
        "[policy]\ndefault_inbound_policy = \"deny\"\ndetect_timeout = \"10s\"\n",
    );
    quiet(&mut watch).await;
}

const SERVER: &str = r#"
[policy]
[[policy.servers]]
name = "web-http"
namespace = "shop"
port = "http"
proxy_protocol = "HTTP/1"
pod_selector = { match_labels = { app = "web" } }

[[policy.authorizations]]
name = "from-client"
namespace = "shop"
target_ref = { kind = "Server", name = "web-http" }
[policy.authorizations.client]
networks = [{ cidr = "10.0.0.0/8", except = ["10.9.0.0/16"] }]
mesh_tls = { identities = ["*.shop.serviceaccount.identity.linkerd.east.example"], service_accounts = [{ name = "client" }] }

[[policy.authorizations]]
name = "watch-health"
namespace = "shop"
target_ref = { kind = "HTTPRoute", name = "health" }
audit = true
client = { unauthenticated = true }

[[policy.rate_limits]]
name = "web-limit"
namespace = "shop"
target_ref = { kind = "Server", name = "web-http" }
total = { requests_per_second = 100 }
identity = { requests_per_second = 10 }
overrides = [{ requests_per_second = 50, client_refs = [{ name = "batch" }] }]

[[policy.http_routes]]
name = "health"
namespace = "shop"
parent_refs = [{ kind = "Server", name = "web-http" }]
hostnames = ["*.example.com"]
[[policy.http_routes.rules]]
matches = [{ path = { type = "Exact", value = "/healthz" }, method = "GET" }]
filters = [{ type = "FailureInjector", failure_injector = { status = 503, message = "down" } }]
"#;

#[tokio::test]
async fn a_configured_server_carries_its_protocol_authorizations_routes_and_rate_limit() {
    let c = start(SERVER).await;
    let mut client = inbound(&c).await;
    // Selected by label, on the port named "http" (8080, the target port).
    let s = client
        .get_port(port(WEB_0, 8080))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.labels,
        declared(
            labels("policy.linkerd.io", "server", "web-http"),
            WEB_0_PORTS
        )
    );
    assert!(s.server_ips.is_empty());
    let from_client = ib::Authz {
        networks: vec![ib::Network {
            net: Some(IpNetwork::from(("10.0.0.0".parse::<IpAddr>().unwrap(), 8))),
            except: vec![IpNetwork::from(("10.9.0.0".parse::<IpAddr>().unwrap(), 16))],
        }],
        authentication: Some(ib::Authn {
            permit: Some(ib::authn::Permit::MeshTls(ib::authn::PermitMeshTls {
                clients: Some(ib::authn::permit_mesh_tls::Clients::Identities(
                    ib::authn::permit_mesh_tls::PermitClientIdentities {
                        identities: vec![ib::Identity {
                            name: "client.shop.serviceaccount.identity.linkerd.east.example".into(),
                        }],
                        suffixes: vec![ib::IdentitySuffix {
                            parts: [
                                "shop",
                                "serviceaccount",
                                "identity",
                                "linkerd",
                                "east",
                                "example",
                            ]
                            .map(String::from)
                            .to_vec(),
                        }],
                    },
                )),
            })),
        }),
        labels: labels("policy.linkerd.io", "authorizationpolicy", "from-client"),
        metadata: resource(
            "policy.linkerd.io",
            "authorizationpolicy",
            "",
            "from-client",
            0,
        ),
    };
    // A server's access policy defaults to deny: its own authorizations, and loopback.
    assert_eq!(s.authorizations, [from_client, localhost()]);
    let Some(ib::proxy_protocol::Kind::Http1(http1)) = s.protocol.unwrap().kind else {
        panic!("not HTTP/1");
    };
    let health = ib::HttpRoute {
        metadata: resource("gateway.networking.k8s.io", "HTTPRoute", "", "health", 0),
        hosts: vec![hr::HostMatch {
            r#match: Some(hr::host_match::Match::Suffix(hr::host_match::Suffix {
                reverse_labels: vec!["com".into(), "example".into()],
            })),
        }],
        // The route's own authorization, audited: Default("audit").
        authorizations: vec![ib::Authz {
            networks: vec![
                net("10.0.0.0", 8),
                net("100.64.0.0", 10),
                net("172.16.0.0", 12),
                net("192.168.0.0", 16),
                net("fd00::", 8),
            ],
            authentication: unauthenticated(),
            labels: labels("", "default", "audit"),
            metadata: default("audit"),
        }],
        rules: vec![ib::http_route::Rule {
            matches: vec![hr::HttpRouteMatch {
                path: Some(hr::PathMatch {
                    kind: Some(hr::path_match::Kind::Exact("/healthz".into())),
                }),
                method: Some(http::Method::GET.into()),
                ..Default::default()
            }],
            filters: vec![ib::http_route::Filter {
                kind: Some(ib::http_route::filter::Kind::FailureInjector(
                    hr::HttpFailureInjector {
                        status: 503,
                        message: "down".into(),
                        ratio: Some(hr::Ratio {
                            numerator: 1,
                            denominator: 1,
                        }),
                    },
                )),
            }],
        }],
    };
    assert_eq!(http1.routes, [health]);
    use ib::http_local_rate_limit::{Limit, Override, r#override::ClientIdentities};
    assert_eq!(
        http1.local_rate_limit,
        Some(ib::HttpLocalRateLimit {
            metadata: resource(
                "policy.linkerd.io",
                "HTTPLocalRateLimitPolicy",
                "",
                "web-limit",
                0
            ),
            total: Some(Limit {
                requests_per_second: 100
            }),
            identity: Some(Limit {
                requests_per_second: 10
            }),
            overrides: vec![Override {
                limit: Some(Limit {
                    requests_per_second: 50
                }),
                clients: Some(ClientIdentities {
                    identities: vec![ib::Identity {
                        name: "batch.shop.serviceaccount.identity.linkerd.east.example".into(),
                    }],
                }),
            }],
        })
    );
    // Another port of the pod, and a pod the selector does not select, keep the defaults.
    let other = client
        .get_port(port(WEB_0, 9000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.labels["kind"], "default");
    let unlabelled = client
        .get_port(port("{\"ns\":\"shop\",\"pod\":\"web-v2-0\"}", 8080))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unlabelled.labels["kind"], "default");
}

#[tokio::test]
async fn inbound_streams_follow_edits_and_ignore_rejected_ones() {
    let c = start("").await;
    let mut client = inbound(&c).await;
    let mut watch = client
        .watch_port(port("{\"ns\":\"shop\",\"pod\":\"client-0\"}\n", 8080))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next(&mut watch).await,
        default_server(vec![default_route()])
    );
    // A server selecting the pod by name, with the gRPC protocol: its default gRPC route.
    let grpc = r#"
[[policy.servers]]
name = "client-grpc"
namespace = "shop"
port = 8080
proxy_protocol = "gRPC"
access_policy = "all-unauthenticated"
pod_selector = { pods = ["client-0"] }
"#;
    write(&c.dir, &format!("[policy]\n{grpc}"));
    let s = next(&mut watch).await;
    assert_eq!(s.labels["name"], "client-grpc");
    assert_eq!(s.authorizations, [all_unauthenticated(), localhost()]);
    let Some(ib::proxy_protocol::Kind::Grpc(g)) = s.protocol.unwrap().kind else {
        panic!("not gRPC");
    };
    assert_eq!(g.routes.len(), 1);
    assert_eq!(g.routes[0].metadata, default("default"));
    assert_eq!(
        g.routes[0].rules[0].matches,
        [linkerd2_proxy_api::grpc_route::GrpcRouteMatch {
            rpc: Some(Default::default()),
            headers: Vec::new(),
        }]
    );
    // A rejected edit (the server's port is not a port) is counted, keeps the last good
    // config, and sends nothing.
    write(
        &c.dir,
        &format!("[policy]\n{}", grpc.replace("port = 8080", "port = 0")),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = admin_metrics(c.admin).await;
        if m.contains("config_reloads_total{result=\"failure\"} 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not rejected:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    quiet(&mut watch).await;
    let again = client
        .get_port(port("shop:client-0", 8080))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.labels["name"], "client-grpc");
    // Removing the server brings the default back.
    write(&c.dir, "");
    assert_eq!(
        next(&mut watch).await,
        default_server(vec![default_route()])
    );
}

// ---- outbound ----

#[tokio::test]
async fn a_service_port_gets_linkerds_service_policy_by_ip_and_by_name() {
    let c = start("").await;
    let mut client = outbound(&c).await;
    let mut watch = client
        .watch(to_addr("10.96.0.10:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch).await, service_policy("web", 80));
    for authority in [
        "web.shop.svc.cluster.local:80",
        "web.shop.svc.cluster.local.:80",
        "web.shop.svc.cluster.local",
    ] {
        let p = client
            .get(to_authority(authority))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p, service_policy("web", 80), "{authority}");
    }
    // The opaque port: opaque, straight to the service.
    let p = client
        .get(to_addr("10.96.0.10:3306"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p,
        ob::OutboundPolicy {
            metadata: resource("core", "Service", "shop", "web", 3306),
            protocol: Some(ob::ProxyProtocol {
                kind: Some(ob::proxy_protocol::Kind::Opaque(opaq(backend("web", 3306)))),
            }),
        }
    );
    // A port the service does not declare: Linkerd's forbidden opaque route.
    use ob::opaque_route::{Distribution, Filter, Rule, distribution, filter};
    let forbidden = ob::OutboundPolicy {
        metadata: resource("core", "Service", "shop", "web", 81),
        protocol: Some(ob::ProxyProtocol {
            kind: Some(ob::proxy_protocol::Kind::Opaque(
                ob::proxy_protocol::Opaque {
                    routes: vec![ob::OpaqueRoute {
                        metadata: default("undefined-port"),
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
    };
    let mut undefined = client
        .watch(to_addr("10.96.0.10:81"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut undefined).await, forbidden);
    // Unknown targets are not found, which linkerd2-proxy takes quietly (it falls back to
    // Destination and profiles); malformed ones are refused.
    for spec in [
        to_addr("10.213.0.5:8080"),
        to_addr("192.0.2.1:80"),
        to_authority("api.shop.svc.cluster.local:80"),
        to_authority("web.shop:80"),
        to_authority("example.com:80"),
    ] {
        let e = client.watch(spec.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{spec:?}: {e:?}");
    }
    let no_target = TrafficSpec {
        target: None,
        ..to_addr("10.96.0.10:80")
    };
    let bad_workload = TrafficSpec {
        source_workload: "nobody".into(),
        ..to_addr("10.96.0.10:80")
    };
    for spec in [no_target, bad_workload, to_addr("10.96.0.10:0")] {
        let e = client.get(spec.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{spec:?}: {e:?}");
    }
    quiet(&mut watch).await;
}

#[tokio::test]
async fn destination_answers_the_backends_dst_path() {
    let c = start("").await;
    let p = outbound(&c)
        .await
        .get(to_addr("10.96.0.10:80"))
        .await
        .unwrap()
        .into_inner();
    let routes = http_routes(&p);
    let Some(ob::http_route::distribution::Kind::FirstAvailable(f)) =
        routes[0].rules[0].backends.clone().unwrap().kind
    else {
        panic!("not FirstAvailable");
    };
    let Some(ob::backend::Kind::Balancer(b)) = f.backends[0].backend.clone().unwrap().kind else {
        panic!("not a balancer");
    };
    let Some(ob::backend::endpoint_discovery::Kind::Dst(d)) = b.discovery.unwrap().kind else {
        panic!("not Dst");
    };
    let mut dst = DestinationClient::new(channel(&c).await);
    let mut stream = dst
        .get(dst::GetDestination {
            path: d.path.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(dst::update::Update::Add(add)) = next(&mut stream).await.update else {
        panic!("no endpoints for {}", d.path);
    };
    let addrs: Vec<SocketAddr> = add
        .addrs
        .iter()
        .map(|w| SocketAddr::try_from(w.addr.unwrap()).unwrap())
        .collect();
    assert_eq!(addrs, ["10.213.0.5:8080".parse::<SocketAddr>().unwrap()]);
}

const CANARY: &str = r#"
[policy]
allow_l5d_request_headers = true
[[policy.http_routes]]
name = "web-canary"
namespace = "shop"
parent_refs = [{ kind = "Service", name = "web", port = 80 }]
[[policy.http_routes.rules]]
matches = [{ headers = [{ name = "x-canary", value = "1" }] }]
backend_refs = [{ name = "web-v2" }, { name = "web-west", weight = 0 }]
timeouts = { request = "10s" }
retry = { limit = 2, http = ["5xx"], timeout = "300ms" }
filters = [{ type = "ResponseHeaderModifier", response_header_modifier = { set = [{ name = "x-route", value = "canary" }] } }]
[[policy.http_routes.rules]]
"#;

#[tokio::test]
#[allow(deprecated)]
async fn outbound_streams_follow_route_edits() {
    use ob::http_route::{Distribution, RouteBackend, WeightedRouteBackend, distribution};
    let c = start("").await;
    let mut client = outbound(&c).await;
    let mut watch = client
        .watch(to_addr("10.96.0.10:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch).await, service_policy("web", 80));
    // An edit elsewhere (a new endpoint of another service) changes nothing here.
    write(
        &c.dir,
        "[[services.endpoints]]\npod = \"web-v2-1\"\nip = \"10.213.0.7\"\nservice_account = \"web\"\n",
    );
    quiet(&mut watch).await;
    write(&c.dir, CANARY);
    let p = next(&mut watch).await;
    assert_eq!(p.metadata, resource("core", "Service", "shop", "web", 80));
    let routes = http_routes(&p);
    assert_eq!(
        routes.len(),
        1,
        "a configured route replaces the default one"
    );
    let r = &routes[0];
    assert_eq!(
        r.metadata,
        resource(
            "gateway.networking.k8s.io",
            "HTTPRoute",
            "shop",
            "web-canary",
            0
        )
    );
    let canary = &r.rules[0];
    assert_eq!(
        canary.matches,
        [hr::HttpRouteMatch {
            path: Some(hr::PathMatch {
                kind: Some(hr::path_match::Kind::Prefix("/".into())),
            }),
            headers: vec![hr::HeaderMatch {
                name: "x-canary".into(),
                value: Some(hr::header_match::Value::Exact(b"1".to_vec())),
            }],
            ..Default::default()
        }]
    );
    // The second backend names a service the config does not have: Linkerd's invalid
    // backend, a 500 naming it.
    let missing = ob::Backend {
        metadata: resource("core", "Service", "shop", "web-west", 80),
        queue: Some(ob::Queue {
            capacity: 100,
            failfast_timeout: Some(secs(3)),
        }),
        kind: None,
    };
    assert_eq!(
        canary.backends,
        Some(Distribution {
            kind: Some(distribution::Kind::RandomAvailable(
                distribution::RandomAvailable {
                    backends: vec![
                        WeightedRouteBackend {
                            weight: 1,
                            backend: Some(RouteBackend {
                                backend: Some(backend("web-v2", 80)),
                                filters: Vec::new(),
                                ..Default::default()
                            }),
                        },
                        WeightedRouteBackend {
                            weight: 0,
                            backend: Some(RouteBackend {
                                backend: Some(missing),
                                filters: vec![ob::http_route::Filter {
                                    kind: Some(ob::http_route::filter::Kind::FailureInjector(
                                        hr::HttpFailureInjector {
                                            status: 500,
                                            message: "Service not found web-west".into(),
                                            ratio: None,
                                        },
                                    )),
                                }],
                                ..Default::default()
                            }),
                        },
                    ],
                },
            )),
        })
    );
    assert_eq!(canary.request_timeout, Some(secs(10)));
    assert_eq!(
        canary.timeouts,
        Some(hr::Timeouts {
            request: Some(secs(10)),
            ..Default::default()
        })
    );
    assert_eq!(
        canary.retry,
        Some(ob::http_route::Retry {
            max_retries: 2,
            max_request_bytes: 65_536,
            conditions: Some(ob::http_route::retry::Conditions {
                status_ranges: vec![ob::http_route::retry::conditions::StatusRange {
                    start: 500,
                    end: 599,
                }],
            }),
            timeout: Some(millis(300)),
            backoff: Some(ob::ExponentialBackoff {
                min_backoff: Some(millis(25)),
                max_backoff: Some(millis(250)),
                jitter_ratio: 1.0,
                respect_retry_after_hint: false,
            }),
        })
    );
    assert!(canary.allow_l5d_request_headers);
    assert_eq!(
        canary.filters,
        [ob::http_route::Filter {
            kind: Some(ob::http_route::filter::Kind::ResponseHeaderModifier(
                hr::ResponseHeaderModifier {
                    add: Some(Default::default()),
                    set: Some(linkerd2_proxy_api::http_types::Headers {
                        headers: vec![linkerd2_proxy_api::http_types::headers::Header {
                            name: "x-route".into(),
                            value: b"canary".to_vec(),
                        }],
                    }),
                    remove: Vec::new(),
                },
            )),
        }]
    );
    // The catch-all rule: every request, to the parent service.
    let rest = &r.rules[1];
    assert_eq!(rest.matches, [prefix("/")]);
    assert_eq!(rest.backends, first_available(backend("web", 80)));
    assert_eq!(rest.retry, None);
    // The other service is untouched; removing the route restores the default policy.
    let v2 = client
        .get(to_addr("10.96.0.11:80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v2, service_policy("web-v2", 80));
    write(&c.dir, "");
    assert_eq!(next(&mut watch).await, service_policy("web", 80));
}

#[tokio::test]
async fn grpc_routes_and_failure_accrual_shape_the_protocol() {
    let extra = r#"
[policy]
[[policy.grpc_routes]]
name = "echo"
namespace = "shop"
parent_refs = [{ kind = "Service", name = "web-v2" }]
[[policy.grpc_routes.rules]]
matches = [{ method = { service = "echo.Echo", method = "Unary" } }]
retry = { grpc = ["unavailable", "cancelled"] }
"#;
    let accrual = HEAD.replace(
        "name = \"web-v2\"\nnamespace = \"shop\"",
        "name = \"web-v2\"\nnamespace = \"shop\"\nfailure_accrual = { kind = \"consecutive\", max_failures = 3 }",
    );
    let c = start_text(&format!("{accrual}\n{extra}")).await;
    let mut client = outbound(&c).await;
    let p = client
        .get(to_addr("10.96.0.11:80"))
        .await
        .unwrap()
        .into_inner();
    let Some(ob::proxy_protocol::Kind::Grpc(g)) = p.protocol.unwrap().kind else {
        panic!("not gRPC");
    };
    assert_eq!(
        g.failure_accrual,
        Some(ob::FailureAccrual {
            kind: Some(ob::failure_accrual::Kind::ConsecutiveFailures(
                ob::failure_accrual::ConsecutiveFailures {
                    max_failures: 3,
                    backoff: Some(ob::ExponentialBackoff {
                        min_backoff: Some(secs(1)),
                        max_backoff: Some(secs(60)),
                        jitter_ratio: 0.5,
                        respect_retry_after_hint: false,
                    }),
                },
            )),
            ejection: None,
        })
    );
    let r = &g.routes[0];
    assert_eq!(
        r.metadata,
        resource("gateway.networking.k8s.io", "GRPCRoute", "shop", "echo", 0)
    );
    assert_eq!(
        r.rules[0].matches[0].rpc,
        Some(linkerd2_proxy_api::grpc_route::GrpcRpcMatch {
            service: "echo.Echo".into(),
            method: "Unary".into(),
        })
    );
    let cond = r.rules[0].retry.as_ref().unwrap().conditions.unwrap();
    assert!(cond.unavailable && cond.cancelled && !cond.internal);
    assert!(!r.rules[0].allow_l5d_request_headers);
}
