//! Inbound policy from the control plane (W2.5): a Remora server pod given Linkerd's injected
//! environment watches `InboundServerPolicies/WatchPort` for its ports on a Linkerd-shaped
//! plane, which the tests script ([`LinkerdPlane::set_server`]), and enforces each `Server`:
//!
//! - identities: an authorized caller passes, another gets 403 (HTTP), `PERMISSION_DENIED`
//!   (gRPC) or a closed connection (TCP, detected or opaque), an unmeshed caller a bare 403;
//! - a route's own authorization, networks with exceptions, the `audit` authorization;
//! - local rate limits (per identity, total): 429 past the rate;
//! - the server's protocol overriding detection (Opaque skips TLS detection, HTTP/1 servers
//!   deny what is not HTTP, gRPC servers route only gRPC calls);
//! - a policy edit applies to the next request of an open connection and closes an open TCP
//!   connection it no longer admits, without a restart;
//! - malformed servers are refused with a log line and the last good policy is kept, also
//!   through the loss of the control plane;
//! - and the same against `remora control`'s own `InboundServerPolicies`.
//!
//! Each outcome is also checked in the server proxy's Linkerd families
//! (`inbound_http_authz_*`, `inbound_tcp_authz_*`, ...). Needs root, like every `netns_*`
//! test:
//!
//! ```text
//! REMORA_REQUIRE_NETNS=1 cargo test -p remora-tests --test inbound_policy
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use linkerd2_proxy_api::inbound as pb;
use remora_tests::apps::{connect_in, echo, test_server};
use remora_tests::http::{Reply, get, grpc_channel, grpc_echo, http1, send1};
use remora_tests::inbound_servers::{
    audit, authz, detect, everywhere, grpc, http_route, http1 as http1_server, identities,
    mesh_tls, network, opaque, server, unauthenticated,
};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, Workload, WorkloadSpec, workload_identity};
use remora_tests::{Net, Pod, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HTTP: u16 = 8080;
/// An echo app on a detected port (not HTTP).
const TCP: u16 = 7000;
/// An echo app on a port opaque by the chart's default.
const OPAQUE: u16 = 3306;

/// A server pod (`web-0`: the test server on 8080, echo on 7000 and 3306), two meshed callers
/// of different identities (`client-0`, `batch-0`) and an unmeshed one (`u`), under a
/// Linkerd-shaped plane.
struct Mesh {
    net: Net,
    plane: LinkerdPlane,
    server: Workload,
    client: Workload,
    batch: Workload,
    plain: Pod,
    client_id: String,
    batch_id: String,
}

impl Mesh {
    async fn start(replicas: usize) -> Option<Mesh> {
        let net = Net::new()?;
        let plane = LinkerdPlane::start(&net, replicas).await;
        let server = plane
            .workload(
                &net,
                WorkloadSpec::new("web-0", "web")
                    .app(test_server(HTTP, "web-0"), HTTP)
                    .app(echo(TCP), TCP)
                    .app(echo(OPAQUE), OPAQUE),
            )
            .await;
        for (port, opaque) in [(HTTP, false), (TCP, false), (OPAQUE, true)] {
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
        // The callers keep their discovery entries for a minute (Linkerd's default is 5 s):
        // the outage test below is about the server's last good policy, and a caller whose
        // entry went idle during the outage forwards in plaintext, which is a different test.
        let caller = |name: &str, sa: &str| {
            WorkloadSpec::new(name, sa).env("LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT", "60s")
        };
        let client = plane.workload(&net, caller("client-0", "client")).await;
        let batch = plane.workload(&net, caller("batch-0", "batch")).await;
        let plain = net.pod("u").start().await;
        Some(Mesh {
            net,
            plane,
            server,
            client,
            batch,
            plain,
            client_id: workload_identity("client", "shop"),
            batch_id: workload_identity("batch", "shop"),
        })
    }

    fn at(&self, port: u16) -> SocketAddr {
        self.server.pod.addr4(port)
    }

    /// `GET path` to the server's HTTP port from `from`, on a new connection.
    async fn get(&self, from: &Pod, path: &str) -> Result<Reply, String> {
        let target = self.at(HTTP);
        let call = async {
            let mut conn = http1(&from.ns, target).await;
            send1(&mut conn, get(&target.to_string(), path)).await
        };
        tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .map_err(|_| "no answer within 15 s".to_string())?
            .map_err(|e| e.to_string())
    }

    async fn status(&self, from: &Pod, path: &str) -> u16 {
        self.get(from, path).await.map_or(0, |r| r.status.as_u16())
    }

    /// Waits (up to 20 s) until `GET path` from `from` answers `want`.
    async fn expect(&self, from: &Pod, path: &str, want: u16) {
        let ok = eventually(Duration::from_secs(20), || async {
            self.status(from, path).await == want
        })
        .await;
        assert!(
            ok,
            "GET {path} from {}: want {want}, got {}\n{}",
            from.name,
            self.status(from, path).await,
            self.logs()
        );
    }

    /// A unary gRPC call from `from`: its status code.
    async fn grpc(&self, from: &Pod) -> tonic::Code {
        let call = async {
            let channel = grpc_channel(&from.ns, self.at(HTTP)).await;
            grpc_echo(channel, "hi", 0).await
        };
        match tokio::time::timeout(Duration::from_secs(15), call).await {
            Ok(Ok(_)) => tonic::Code::Ok,
            Ok(Err(status)) => status.code(),
            Err(_) => tonic::Code::DeadlineExceeded,
        }
    }

    /// Whether bytes sent from `from` to the server's `port` come back.
    async fn echoes(&self, from: &Pod, port: u16) -> bool {
        let Ok(mut conn) = connect_in(&from.ns, self.at(port)).await else {
            return false;
        };
        let _ = conn.write_all(b"ping").await;
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut buf)).await,
            Ok(Ok(_)) if &buf == b"ping"
        )
    }

    async fn expect_echo(&self, from: &Pod, port: u16, want: bool) {
        let ok = eventually(Duration::from_secs(20), || async {
            self.echoes(from, port).await == want
        })
        .await;
        assert!(
            ok,
            "echo on {port} from {}: want {want}\n{}",
            from.name,
            self.logs()
        );
    }

    /// The server proxy's metric `name` with `labels`.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.server.pod.metrics().await.get(name, labels)
    }

    fn server_log(&self) -> String {
        self.server.pod.proxy().log()
    }

    fn logs(&self) -> String {
        format!(
            "--- server proxy ---\n{}\n--- client proxy ---\n{}",
            self.server_log(),
            self.client.pod.proxy().log()
        )
    }
}

fn only(ids: &[&str]) -> pb::Authn {
    identities(ids, &[])
}

#[tokio::test]
async fn netns_inbound_policy_identities_decide_http_grpc_and_tcp() {
    let Some(m) = Mesh::start(1).await else {
        return;
    };
    // Before any Server: the plane's default (all-unauthenticated) admits everyone.
    m.expect(&m.batch.pod, "/echo", 200).await;
    let clients = |name: &str, kind| {
        server(name, kind)
            .authz(authz("clients", everywhere(), only(&[&m.client_id])))
            .build()
    };
    m.plane
        .set_server(HTTP, Some(clients("web-http", detect())));
    m.plane.set_server(TCP, Some(clients("web-tcp", detect())));
    m.plane
        .set_server(OPAQUE, Some(clients("web-db", opaque())));

    m.expect(&m.batch.pod, "/echo", 403).await;
    let r = m.get(&m.client.pod, "/echo").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["l5d-client-id"], m.client_id.as_str());
    // The unmeshed caller: a bare 403, no reason.
    let r = m.get(&m.plain, "/echo").await.unwrap();
    assert_eq!(r.status, 403);
    assert!(
        !r.headers.contains_key("l5d-proxy-error"),
        "{:?}",
        r.headers
    );
    // gRPC: PERMISSION_DENIED.
    assert_eq!(m.grpc(&m.client.pod).await, tonic::Code::Ok);
    assert_eq!(m.grpc(&m.batch.pod).await, tonic::Code::PermissionDenied);
    // TCP, detected and opaque: closed without a byte.
    for port in [TCP, OPAQUE] {
        m.expect_echo(&m.client.pod, port, true).await;
        m.expect_echo(&m.batch.pod, port, false).await;
        m.expect_echo(&m.plain, port, false).await;
    }

    let batch = m.batch_id.as_str();
    let denied = m
        .metric(
            "inbound_http_authz_deny_total",
            &[
                ("srv_name", "web-http"),
                ("route_name", "default"),
                ("client_id", batch),
            ],
        )
        .await;
    assert!(denied >= 2.0, "{}", m.server.pod.metrics().await.text);
    let allowed = m
        .metric(
            "inbound_http_authz_allow_total",
            &[
                ("srv_kind", "server"),
                ("srv_name", "web-http"),
                ("srv_port", "8080"),
                ("authz_kind", "AuthorizationPolicy"),
                ("authz_name", "clients"),
                ("client_id", m.client_id.as_str()),
            ],
        )
        .await;
    assert!(allowed >= 2.0);
    for (srv, port) in [("web-tcp", "7000"), ("web-db", "3306")] {
        let d = m
            .metric(
                "inbound_tcp_authz_deny_total",
                &[("srv_name", srv), ("target_port", port)],
            )
            .await;
        assert!(d >= 2.0, "{srv}: {}", m.server.pod.metrics().await.text);
    }
    // Plaintext on the opaque port: TLS detection skipped.
    let skipped = m
        .metric(
            "inbound_tcp_authz_deny_total",
            &[
                ("srv_name", "web-db"),
                ("tls", "no_identity"),
                ("no_tls_reason", "port_skipped"),
            ],
        )
        .await;
    assert!(skipped >= 1.0);
    // Logged at INFO with the server, the route, the client.
    let log = m.server_log();
    assert!(
        log.lines().any(|l| l.contains("request refused by policy")
            && l.contains("server=policy.linkerd.io/server/web-http")
            && l.contains("route=default:default")
            && l.contains(&format!("client.id={batch}"))
            && l.contains(&format!("client.addr={}", m.batch.pod.ip4()))),
        "{log}"
    );
    assert!(log.contains("connection refused by policy"), "{log}");
    println!(
        "inbound policy: identities: {} 200 / {batch} 403 / unmeshed 403 (HTTP), gRPC \
         Ok / PermissionDenied, TCP echo only for {}; inbound_http_authz_deny_total = {denied}",
        m.client_id, m.client_id
    );
    drop(m.net);
}

#[tokio::test]
async fn netns_inbound_policy_routes_networks_and_audit() {
    let Some(m) = Mesh::start(1).await else {
        return;
    };
    // A route only client-0 may use, the rest for any meshed identity; nothing at the server.
    m.plane.set_server(
        HTTP,
        Some(
            server("web-http", detect())
                .route(http_route("admin").prefix("/admin").authz(authz(
                    "admins",
                    everywhere(),
                    only(&[&m.client_id]),
                )))
                .route(http_route("rest").prefix("/").authz(authz(
                    "meshed",
                    everywhere(),
                    identities(&[], &[&[]]),
                )))
                .build(),
        ),
    );
    m.expect(&m.batch.pod, "/admin", 403).await;
    assert_eq!(m.status(&m.batch.pod, "/echo").await, 200);
    assert_eq!(
        m.status(&m.client.pod, "/admin").await,
        404,
        "the test server has no /admin: it got there"
    );
    assert_eq!(m.status(&m.client.pod, "/echo").await, 200);
    assert_eq!(m.status(&m.plain, "/echo").await, 403);
    let admin_denied = m
        .metric(
            "inbound_http_authz_deny_total",
            &[
                ("route_kind", "HTTPRoute"),
                ("route_name", "admin"),
                ("client_id", m.batch_id.as_str()),
            ],
        )
        .await;
    assert!(admin_denied >= 1.0);

    // The pod network, except client-0: by address, whatever the identity.
    let net = format!("{}/24", m.net.subnet4());
    let client_ip = format!("{}/32", m.client.pod.ip4());
    m.plane.set_server(
        TCP,
        Some(
            server("web-tcp", detect())
                .authz(authz(
                    "pods",
                    vec![network(&net, &[&client_ip])],
                    unauthenticated(),
                ))
                .build(),
        ),
    );
    m.expect_echo(&m.client.pod, TCP, false).await;
    m.expect_echo(&m.batch.pod, TCP, true).await;
    m.expect_echo(&m.plain, TCP, true).await;

    // Audit: what would be denied is allowed, logged and counted.
    m.plane.set_server(
        HTTP,
        Some(server("web-http", detect()).authz(audit()).build()),
    );
    m.expect(&m.plain, "/echo", 200).await;
    let audited = m
        .metric(
            "inbound_http_authz_allow_total",
            &[
                ("authz_kind", "default"),
                ("authz_name", "audit"),
                ("tls", "no_identity"),
            ],
        )
        .await;
    assert!(audited >= 1.0, "{}", m.server.pod.metrics().await.text);
    assert!(
        m.server_log()
            .contains("request allowed by the audit policy"),
        "{}",
        m.server_log()
    );
    println!(
        "inbound policy: route admin: {} 403, rest 200; network {net} except {client_ip}: \
         client-0 closed, others echo; audit: unmeshed 200, counted {audited}",
        m.batch_id
    );
}

/// How many of `n` requests on one connection from `from` got each status: (200s, 429s).
async fn burst(m: &Mesh, from: &Pod, n: usize) -> (usize, usize) {
    let target = m.at(HTTP);
    let mut conn = http1(&from.ns, target).await;
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..n {
        match send1(&mut conn, get(&target.to_string(), "/echo")).await {
            Ok(r) if r.status == 200 => ok += 1,
            Ok(r) if r.status == 429 => limited += 1,
            Ok(r) => panic!("unexpected {}: {}", r.status, r.text()),
            Err(e) => panic!("{e}"),
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn netns_inbound_policy_rate_limits_answer_429_past_their_rate() {
    let Some(m) = Mesh::start(1).await else {
        return;
    };
    let everyone = || authz("everyone", everywhere(), unauthenticated());
    // 5 a second per identity: each caller has its own.
    m.plane.set_server(
        HTTP,
        Some(
            server("web-http", detect())
                .authz(everyone())
                .rate_limit("per-caller", 0, 5, &[])
                .build(),
        ),
    );
    let applied = eventually(Duration::from_secs(20), || async {
        burst(&m, &m.client.pod, 10).await.1 > 0
    })
    .await;
    assert!(applied, "{}", m.logs());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (ok, limited) = burst(&m, &m.client.pod, 30).await;
    assert!(
        (5..=8).contains(&ok) && limited >= 22,
        "client: {ok} ok, {limited} limited"
    );
    let (batch_ok, _) = burst(&m, &m.batch.pod, 5).await;
    assert_eq!(batch_ok, 5, "batch has a rate of its own");
    let counted = m
        .metric(
            "inbound_http_local_ratelimit_total",
            &[
                ("ratelimit_kind", "HTTPLocalRateLimitPolicy"),
                ("ratelimit_name", "per-caller"),
                ("ratelimit_scope", "identity"),
            ],
        )
        .await;
    assert!(counted >= 22.0, "{}", m.server.pod.metrics().await.text);
    // 10 a second in total, shared.
    m.plane.set_server(
        HTTP,
        Some(
            server("web-http", detect())
                .authz(everyone())
                .rate_limit("total", 10, 0, &[])
                .build(),
        ),
    );
    // Applied once the total scope refuses (the per-identity limit above never counts there).
    let applied = eventually(Duration::from_secs(20), || async {
        burst(&m, &m.batch.pod, 15).await;
        m.metric(
            "inbound_http_local_ratelimit_total",
            &[("ratelimit_scope", "total")],
        )
        .await
            > 0.0
    })
    .await;
    assert!(applied);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Both callers at once, so the shared bucket is what decides (two bursts one after the
    // other could straddle a refill on a loaded machine): 10 pass, plus what refilled while
    // the bursts ran.
    let started = std::time::Instant::now();
    let ((a, _), (b, _)) = tokio::join!(burst(&m, &m.client.pod, 15), burst(&m, &m.batch.pod, 15));
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        (10..=10 + refilled + 1).contains(&(a + b)),
        "total: {a} + {b} in {:?}",
        started.elapsed()
    );
    println!(
        "inbound policy: rate limit 5/s per identity: client {ok} ok, {limited} x 429; batch its own 5; total 10/s: {a} + {b} ok of 30"
    );
}

#[tokio::test]
async fn netns_inbound_policy_edits_apply_without_restart_and_close_tcp() {
    let Some(m) = Mesh::start(1).await else {
        return;
    };
    let pid = m.server.pod.proxy().pid();
    m.expect(&m.batch.pod, "/echo", 200).await;
    // An open HTTP connection and an open TCP connection from client-0.
    let target = m.at(HTTP);
    let mut h1 = http1(&m.client.pod.ns, target).await;
    assert_eq!(
        send1(&mut h1, get(&target.to_string(), "/echo"))
            .await
            .unwrap()
            .status,
        200
    );
    let mut tcp = connect_in(&m.client.pod.ns, m.at(TCP)).await.unwrap();
    tcp.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tcp.read_exact(&mut buf).await.unwrap();

    let batch_only = |name: &str| {
        server(name, detect())
            .authz(authz("batch", everywhere(), only(&[&m.batch_id])))
            .build()
    };
    m.plane.set_server(HTTP, Some(batch_only("web-http")));
    m.plane.set_server(TCP, Some(batch_only("web-tcp")));
    // The open TCP connection is closed: it is no longer admitted.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut b = [0u8; 16];
        loop {
            match tcp.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the open connection survived\n{}", m.logs());
    assert!(
        m.metric(
            "inbound_tcp_authz_terminate_total",
            &[("srv_name", "web-tcp"), ("client_id", m.client_id.as_str())]
        )
        .await
            >= 1.0
    );
    assert!(
        m.server_log()
            .contains("connection terminated due to policy change")
    );
    // The next request of the open HTTP connection is refused.
    let mut refused = false;
    for _ in 0..100 {
        match send1(&mut h1, get(&target.to_string(), "/echo")).await {
            Ok(r) if r.status == 403 => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("the open HTTP connection failed: {e}\n{}", m.logs()),
        }
    }
    assert!(refused, "{}", m.logs());
    assert_eq!(m.status(&m.batch.pod, "/echo").await, 200);
    m.expect_echo(&m.client.pod, TCP, false).await;
    m.expect_echo(&m.batch.pod, TCP, true).await;
    // Back to the default.
    m.plane.set_server(HTTP, None);
    m.expect(&m.client.pod, "/echo", 200).await;
    assert_eq!(m.server.pod.proxy().pid(), pid, "no restart");
    println!(
        "inbound policy: edit without restart: open HTTP connection's next request 403, open TCP connection closed (terminate counted), back to 200 after the edit is undone"
    );
}

#[tokio::test]
async fn netns_inbound_policy_refuses_malformed_servers_and_keeps_the_last_good_through_an_outage()
{
    let Some(mut m) = Mesh::start(1).await else {
        return;
    };
    let good = server("web-http", detect())
        .authz(authz("clients", everywhere(), only(&[&m.client_id])))
        .build();
    m.plane.set_server(HTTP, Some(good.clone()));
    m.expect(&m.batch.pod, "/echo", 403).await;
    // An unknown protocol (a `oneof` this proxy does not know decodes as none).
    let mut bad = good.clone();
    bad.protocol = Some(pb::ProxyProtocol { kind: None });
    m.plane.set_server(HTTP, Some(bad));
    let refused = eventually(Duration::from_secs(20), || async {
        m.metric("inbound_policy_refused_total", &[]).await >= 1.0
    })
    .await;
    assert!(refused, "{}", m.logs());
    // A bad network.
    let mut bad = good.clone();
    bad.authorizations[0].networks[0].net = Some(linkerd2_proxy_api::net::IpNetwork {
        ip: Some("10.0.0.0".parse::<std::net::IpAddr>().unwrap().into()),
        prefix_len: 40,
    });
    m.plane.set_server(HTTP, Some(bad));
    let refused = eventually(Duration::from_secs(20), || async {
        m.metric("inbound_policy_refused_total", &[]).await >= 2.0
    })
    .await;
    assert!(refused, "{}", m.logs());
    let log = m.server_log();
    assert!(
        log.contains("refusing an invalid policy; keeping the previous one"),
        "{log}"
    );
    assert!(log.contains("the server has no protocol"), "{log}");
    assert!(log.contains("invalid network"), "{log}");
    // The previous policy still holds.
    assert_eq!(m.status(&m.batch.pod, "/echo").await, 403);
    assert_eq!(m.status(&m.client.pod, "/echo").await, 200);

    // The control plane goes away: the last good policy stays.
    m.plane.kill(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..3 {
        assert_eq!(m.status(&m.batch.pod, "/echo").await, 403, "{}", m.logs());
        assert_eq!(m.status(&m.client.pod, "/echo").await, 200);
    }
    assert!(
        m.server_log()
            .contains("policy unavailable; keeping the last known"),
        "{}",
        m.server_log()
    );
    println!(
        "inbound policy: an unknown protocol and a /40 IPv4 network refused (inbound_policy_refused_total = 2), previous policy kept; after the plane's only replica died: still 403 for batch, 200 for client"
    );
}

#[tokio::test]
async fn netns_inbound_policy_protocols_override_detection() {
    let Some(m) = Mesh::start(1).await else {
        return;
    };
    let everyone = || authz("everyone", everywhere(), unauthenticated());
    // Opaque: no TLS detection for plaintext callers; meshed callers come by the direct path.
    m.plane.set_server(
        TCP,
        Some(server("web-tcp", opaque()).authz(everyone()).build()),
    );
    let skipped = eventually(Duration::from_secs(20), || async {
        m.echoes(&m.plain, TCP).await
            && m.metric(
                "inbound_tcp_authz_allow_total",
                &[("srv_name", "web-tcp"), ("no_tls_reason", "port_skipped")],
            )
            .await
                >= 1.0
    })
    .await;
    assert!(skipped, "{}", m.server.pod.metrics().await.text);
    m.expect_echo(&m.client.pod, TCP, true).await;
    // HTTP/1: what is not HTTP is denied.
    m.plane.set_server(
        TCP,
        Some(server("web-tcp", http1_server()).authz(everyone()).build()),
    );
    m.expect_echo(&m.client.pod, TCP, false).await;
    m.expect_echo(&m.plain, TCP, false).await;
    assert!(
        m.metric("inbound_tcp_authz_deny_total", &[("srv_name", "web-tcp")])
            .await
            >= 1.0
    );
    // gRPC: gRPC calls are routed, a plain GET finds no route.
    m.plane.set_server(
        HTTP,
        Some(
            server("web-grpc", grpc())
                .authz(authz("meshed", everywhere(), mesh_tls()))
                .grpc_route("echo", "remora.test.Test", "", Vec::new())
                .build(),
        ),
    );
    m.expect(&m.client.pod, "/echo", 404).await;
    assert_eq!(m.grpc(&m.client.pod).await, tonic::Code::Ok);
    assert!(
        m.metric(
            "inbound_http_route_not_found_total",
            &[("srv_name", "web-grpc")]
        )
        .await
            >= 1.0
    );
    assert!(
        m.metric(
            "inbound_http_authz_allow_total",
            &[
                ("srv_name", "web-grpc"),
                ("route_kind", "GRPCRoute"),
                ("route_name", "echo")
            ]
        )
        .await
            >= 1.0
    );
    println!(
        "inbound policy: Opaque (no TLS detection, port_skipped), HTTP/1 (non-HTTP denied), gRPC (GET -> 404, gRPC routed) override detection"
    );
}

#[tokio::test]
async fn netns_inbound_policy_from_remora_control() {
    use remora_tests::control::{ClusterPlane, Pki};
    use remora_tests::services::Service;
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let policy_env = |pod: &str| {
        let mut env = vec![
            ("REMORA_POLICY_ADDR".to_string(), east.cp.addr.to_string()),
            ("REMORA_POLICY_SVC_NAME".to_string(), east.cp.own_identity()),
            (
                "REMORA_POLICY_WORKLOAD".to_string(),
                format!("{{\"ns\":\"shop\", \"pod\":\"{pod}\"}}\n"),
            ),
        ];
        env.push(("REMORA_INBOUND_PORTS".to_string(), HTTP.to_string()));
        env
    };
    let mut b = net
        .pod("web-0")
        .app(test_server(HTTP, "web-0"))
        .control_plane(&east.cp, "web", "shop")
        .meshed();
    for (k, v) in policy_env("web-0") {
        b = b.env(&k, &v);
    }
    let web = b.start().await;
    let client = east.client_pod(&net, "client-0").await;
    let batch = net
        .pod("batch-0")
        .control_plane(&east.cp, "batch", "shop")
        .meshed()
        .start()
        .await;
    east.cp
        .apply(&[Service::new("web", "shop")
            .vip("10.96.0.10")
            .port(HTTP)
            .endpoint(&web, "web")])
        .await;
    let client_id = east.cp.identity("client", "shop");
    east.cp
        .apply_policy(&format!(
            r#"
[policy]
[[policy.servers]]
name = "web-http"
namespace = "shop"
port = 8080
pod_selector = {{ pods = ["web-0"] }}

[[policy.authorizations]]
name = "web-clients"
namespace = "shop"
target_ref = {{ kind = "Server", name = "web-http" }}
client = {{ mesh_tls = {{ identities = ["{client_id}"] }} }}
"#
        ))
        .await;
    let status = |pod: &Pod| {
        let ns = pod.ns.clone();
        async move {
            let target: SocketAddr = "10.96.0.10:8080".parse().unwrap();
            let call = async {
                let mut conn = http1(&ns, target).await;
                send1(&mut conn, get("web.shop.svc.cluster.local:8080", "/echo")).await
            };
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(r)) => r.status.as_u16(),
                _ => 0,
            }
        }
    };
    let denied = eventually(Duration::from_secs(30), || async {
        status(&batch).await == 403
    })
    .await;
    assert!(denied, "batch was not refused\n{}", web.proxy().log());
    assert_eq!(status(&client).await, 200);
    let metrics = web.metrics().await;
    let d = metrics.get(
        "inbound_http_authz_deny_total",
        &[
            ("srv_name", "web-http"),
            ("client_id", east.cp.identity("batch", "shop").as_str()),
        ],
    );
    let a = metrics.get(
        "inbound_http_authz_allow_total",
        &[("srv_name", "web-http"), ("authz_name", "web-clients")],
    );
    assert!(d >= 1.0 && a >= 1.0, "{}", metrics.text);
    println!(
        "inbound policy from remora control: Server web-http admitting {client_id}: batch 403 (deny {d}), client 200 (allow {a})"
    );
}
