//! The direct path limited to the ports a pod declares (W2.12): a transport header naming a
//! port outside the pod's declared ports (`INBOUND_PORTS`, its services' ports under
//! `remora control`, or a port a `Server` selects) is refused, logged with the peer's identity
//! and counted as `tcp_refused_total{reason="port_not_declared"}`, whether a probe sends it
//! by hand or a peer proxy's opaque transport or HTTP session protocol does; declared ports
//! work as before. A pod that declares no ports stays open with one warning; an explicit
//! setting lifts the limit. The gateway's counterpart is in `netns_gateway.rs`.
//!
//! ```text
//! REMORA_REQUIRE_NETNS=1 cargo test -p remora-tests --test direct_ports
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use linkerd2_proxy_api::inbound as pb;
use remora_proxy::transport::header::TransportHeader;
use remora_tests::apps::{echo, echo_roundtrip, test_server};
use remora_tests::control::{ClusterPlane, ControlPlane, Pki};
use remora_tests::http::{get, http1, send1};
use remora_tests::inbound_servers::{authz, everywhere, opaque, server, unauthenticated};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, Workload, WorkloadSpec, workload_identity};
use remora_tests::services::Service;
use remora_tests::tls::{certify, connect_tls, mesh_configs};
use remora_tests::{Net, Pod, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOUR: Duration = Duration::from_secs(3600);
const DECLARED: u16 = 7000;
const UNDECLARED: u16 = 7001;
const NO_PORTS_WARNING: &str = "the pod declares no ports";

/// Sends a transport header naming `port` of `to` over mTLS as `probe` (issued by `cp`), then
/// a message; whether it came back (the direct path forwarded it to the app).
async fn direct(cp: &ControlPlane, from: &Pod, to: &Pod, to_sa: &str, port: u16) -> bool {
    let probe = certify(&cp.issuer(), &cp.identity("probe", "shop"), HOUR);
    let client = mesh_configs(&probe, &cp.anchors()).client_alpn;
    let Ok(mut tls) = connect_tls(
        &from.ns,
        to.addr4(4143),
        client,
        &cp.identity(to_sa, "shop"),
    )
    .await
    else {
        return false;
    };
    let header = TransportHeader {
        port,
        name: None,
        protocol: None,
    };
    let msg = b"through the direct path";
    if tls.write_all(&header.encode()).await.is_err() || tls.write_all(msg).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    matches!(
        tokio::time::timeout(Duration::from_secs(15), tls.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && back == msg
}

async fn refused(pod: &Pod) -> f64 {
    pod.metrics().await.get(
        "tcp_refused_total",
        &[("direction", "inbound"), ("reason", "port_not_declared")],
    )
}

/// The refusal's log line names the port and the peer.
fn logged(pod: &Pod, port: u16, peer: &str) -> bool {
    pod.proxy()
        .log()
        .lines()
        .any(|l| l.contains(&format!("does not declare port {port}")) && l.contains(peer))
}

/// Echo apps on a declared and an undeclared port, meshed under `cp` as `sa`, with `env`.
async fn echo_pod(net: &Net, cp: &ControlPlane, name: &str, env: &[(&str, &str)]) -> Pod {
    let mut b = net
        .pod(name)
        .app(echo(DECLARED))
        .app(echo(UNDECLARED))
        .control_plane(cp, "echo", "shop")
        .meshed();
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.start().await
}

#[tokio::test]
async fn netns_direct_ports_remora_env_limits_the_direct_path_and_opaque_transport() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let ports = DECLARED.to_string();
    let limited = echo_pod(
        &net,
        &east.cp,
        "lim",
        &[("REMORA_INBOUND_PORTS", ports.as_str())],
    )
    .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let u = net.pod("u").start().await;
    // Opaque transport: a's proxy names the port in a transport header to lim's 4143.
    east.cp
        .apply(&[
            Service::new("db", "shop")
                .vip("10.96.0.30")
                .opaque_port(DECLARED)
                .endpoint(&limited, "echo"),
            Service::new("side", "shop")
                .vip("10.96.0.31")
                .opaque_port(UNDECLARED)
                .endpoint(&limited, "echo"),
        ])
        .await;

    // By hand: the declared port passes, the other is refused, logged and counted.
    assert!(direct(&east.cp, &u, &limited, "echo", DECLARED).await);
    assert!(!direct(&east.cp, &u, &limited, "echo", UNDECLARED).await);
    assert_eq!(refused(&limited).await, 1.0);
    let probe_id = east.cp.identity("probe", "shop");
    assert!(
        eventually(Duration::from_secs(10), || async {
            logged(&limited, UNDECLARED, &probe_id)
        })
        .await,
        "{}",
        limited.proxy().log()
    );

    // Through a peer proxy's opaque transport: the same.
    let conn = a.connect("10.96.0.30:7000".parse().unwrap()).await.unwrap();
    assert_eq!(echo_roundtrip(conn, 100_000).await.unwrap(), 100_000);
    let conn = a.connect("10.96.0.31:7001".parse().unwrap()).await.unwrap();
    assert!(
        echo_roundtrip(conn, 100_000).await.is_err(),
        "opaque transport reached an undeclared port"
    );
    let web_id = east.cp.identity("web", "shop");
    assert!(
        eventually(Duration::from_secs(10), || async {
            refused(&limited).await == 2.0 && logged(&limited, UNDECLARED, &web_id)
        })
        .await,
        "{}",
        limited.proxy().log()
    );
    // The declared port still works.
    assert!(direct(&east.cp, &u, &limited, "echo", DECLARED).await);
    assert!(!limited.proxy().log().contains(NO_PORTS_WARNING));
}

#[tokio::test]
async fn netns_direct_ports_no_declared_ports_warn_once_and_the_opt_out_lifts_the_limit() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let east = ClusterPlane::east(&net, &pki).await;
    let ports = DECLARED.to_string();
    let open = echo_pod(&net, &east.cp, "open", &[]).await;
    let free = echo_pod(
        &net,
        &east.cp,
        "free",
        &[
            ("REMORA_INBOUND_PORTS", ports.as_str()),
            ("REMORA_INBOUND_DIRECT_PORTS_UNRESTRICTED", "true"),
        ],
    )
    .await;
    let u = net.pod("u").start().await;
    for _ in 0..3 {
        for port in [DECLARED, UNDECLARED] {
            assert!(direct(&east.cp, &u, &open, "echo", port).await, "{port}");
            assert!(direct(&east.cp, &u, &free, "echo", port).await, "{port}");
        }
    }
    assert!(
        open.proxy()
            .wait_log(NO_PORTS_WARNING, Duration::from_secs(10))
            .await
    );
    let warnings = open.proxy().log().matches(NO_PORTS_WARNING).count();
    assert_eq!(warnings, 1, "{}", open.proxy().log());
    assert!(!free.proxy().log().contains(NO_PORTS_WARNING));
    assert!(
        free.proxy()
            .log()
            .contains("REMORA_INBOUND_DIRECT_PORTS_UNRESTRICTED")
    );
    assert_eq!(refused(&open).await, 0.0);
    assert_eq!(refused(&free).await, 0.0);
}

#[tokio::test]
async fn netns_direct_ports_follow_remora_controls_services_and_servers() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let workload = "{\"ns\":\"shop\", \"pod\":\"web-0\"}\n".to_string();
    let (addr, svc_name) = (east.cp.addr.to_string(), east.cp.own_identity());
    let web = echo_pod(
        &net,
        &east.cp,
        "web-0",
        &[
            ("REMORA_POLICY_ADDR", addr.as_str()),
            ("REMORA_POLICY_SVC_NAME", svc_name.as_str()),
            ("REMORA_POLICY_WORKLOAD", workload.as_str()),
        ],
    )
    .await;
    let u = net.pod("u").start().await;
    // The pod's service declares 7000 (its target port): the control plane says so in every
    // policy answer, and the direct path is limited to it.
    east.cp
        .apply(&[Service::new("echo", "shop")
            .vip("10.96.0.40")
            .port(DECLARED)
            .endpoint(&web, "echo")])
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            !direct(&east.cp, &u, &web, "echo", UNDECLARED).await
        })
        .await,
        "{}",
        web.proxy().log()
    );
    assert!(direct(&east.cp, &u, &web, "echo", DECLARED).await);
    assert!(refused(&web).await >= 1.0);
    let probe_id = east.cp.identity("probe", "shop");
    assert!(logged(&web, UNDECLARED, &probe_id), "{}", web.proxy().log());

    // A Server selecting 7001 opens it.
    east.cp
        .apply_policy(&format!(
            r#"
[policy]
[[policy.servers]]
name = "side"
namespace = "shop"
port = {UNDECLARED}
pod_selector = {{ pods = ["web-0"] }}

[[policy.authorizations]]
name = "probes"
namespace = "shop"
target_ref = {{ kind = "Server", name = "side" }}
client = {{ mesh_tls = {{ identities = ["{probe_id}"] }} }}
"#
        ))
        .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            direct(&east.cp, &u, &web, "echo", UNDECLARED).await
        })
        .await,
        "{}",
        web.proxy().log()
    );
    assert!(direct(&east.cp, &u, &web, "echo", DECLARED).await);
}

/// Linkerd's surface: a server pod declaring 8080 and 3306 (`INBOUND_PORTS`, as the injector
/// fills it from the container ports), with apps also on 8081 and 5432 that it does not
/// declare, all known to Destination (3306 and 5432 opaque).
struct LinkerdMesh {
    _net: Net,
    plane: LinkerdPlane,
    server: Workload,
    client: Workload,
}

const HTTP: u16 = 8080;
const HTTP_UNDECLARED: u16 = 8081;
const OPAQUE: u16 = 3306;
const OPAQUE_UNDECLARED: u16 = 5432;

async fn linkerd_mesh() -> Option<LinkerdMesh> {
    let net = Net::new()?;
    let plane = LinkerdPlane::start(&net, 1).await;
    let mut spec = WorkloadSpec::new("web-0", "web")
        .app(test_server(HTTP, "web-0"), HTTP)
        .app(echo(OPAQUE), OPAQUE);
    spec.apps.push(test_server(HTTP_UNDECLARED, "web-0"));
    spec.apps.push(echo(OPAQUE_UNDECLARED));
    let server = plane.workload(&net, spec).await;
    for (port, opaque) in [
        (HTTP, false),
        (HTTP_UNDECLARED, false),
        (OPAQUE, true),
        (OPAQUE_UNDECLARED, true),
    ] {
        let addr = server.pod.addr4(port);
        plane.add_service(
            &addr.to_string(),
            vec![Endpoint {
                addr,
                sa: "web".into(),
                ns: "shop".into(),
                pod: server.pod.name.clone(),
                opaque,
            }],
        );
    }
    let client = plane
        .workload(&net, WorkloadSpec::new("client-0", "client"))
        .await;
    Some(LinkerdMesh {
        _net: net,
        plane,
        server,
        client,
    })
}

async fn status(m: &LinkerdMesh, port: u16) -> u16 {
    let target = m.server.pod.addr4(port);
    let call = async {
        let mut conn = http1(&m.client.pod.ns, target).await;
        send1(&mut conn, get(&target.to_string(), "/echo")).await
    };
    match tokio::time::timeout(Duration::from_secs(15), call).await {
        Ok(Ok(r)) => r.status.as_u16(),
        _ => 0,
    }
}

async fn opaque_echo(m: &LinkerdMesh, port: u16) -> bool {
    match m.client.pod.connect(m.server.pod.addr4(port)).await {
        Ok(conn) => echo_roundtrip(conn, 50_000).await.ok() == Some(50_000),
        Err(_) => false,
    }
}

#[tokio::test]
async fn netns_direct_ports_under_linkerd_env() {
    let Some(m) = linkerd_mesh().await else {
        return;
    };
    let client_id = workload_identity("client", "shop");
    // Declared: HTTP (the transport header with a session protocol) and opaque transport.
    assert_eq!(status(&m, HTTP).await, 200);
    assert!(opaque_echo(&m, OPAQUE).await);
    // Not declared: refused on the direct path, both ways.
    assert_ne!(status(&m, HTTP_UNDECLARED).await, 200);
    assert!(!opaque_echo(&m, OPAQUE_UNDECLARED).await);
    let server = &m.server.pod;
    assert!(
        eventually(Duration::from_secs(10), || async {
            refused(server).await >= 2.0
                && logged(server, HTTP_UNDECLARED, &client_id)
                && logged(server, OPAQUE_UNDECLARED, &client_id)
        })
        .await,
        "{}\n{}",
        server.metrics().await.text,
        server.proxy().log()
    );
    assert!(!server.proxy().log().contains(NO_PORTS_WARNING));

    // A Server for 5432 (a policy opens the port): opaque transport reaches it.
    let opened: pb::Server = server_resource();
    m.plane.set_server(OPAQUE_UNDECLARED, Some(opened));
    assert!(
        eventually(Duration::from_secs(30), || async {
            opaque_echo(&m, OPAQUE_UNDECLARED).await
        })
        .await,
        "{}",
        server.proxy().log()
    );
    // The others as before.
    assert_eq!(status(&m, HTTP).await, 200);
    assert_ne!(status(&m, HTTP_UNDECLARED).await, 200);
}

fn server_resource() -> pb::Server {
    server("db", opaque())
        .authz(authz("all", everywhere(), unauthenticated()))
        .build()
}
