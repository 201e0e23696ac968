//! Remora and linkerd2-proxy in one mesh: pods of each under the same Linkerd-shaped control
//! plane ([`remora_tests::linkerd`]), each given exactly the environment Linkerd's injector
//! renders, mesh in both directions.
//!
//! For each direction (a Remora client pod calling a linkerd2-proxy server pod, and a
//! linkerd2-proxy client pod calling a Remora server pod):
//!
//! - HTTP/1.1 and HTTP/2 reach the server's app, which sees the version its client spoke and
//!   `l5d-client-id` naming the client workload;
//! - gRPC, unary and server streaming, the same (the unary reply carries the client id the
//!   server's app saw);
//! - opaque TCP (the echo app on 3306, opaque by the chart's default) round-trips 100 000
//!   pattern bytes intact;
//! - and all of it crosses in Linkerd's transport-header mode, as the plane's hints
//!   (`opaque_transport` to 4143, and `h2`) ask: mTLS to the server proxy's inbound port with a
//!   transport header naming the app's port and, for HTTP, the session protocol HTTP/2. On a
//!   linkerd2-proxy server this shows in its own metric
//!   `inbound_tcp_transport_header_connections_total`; on a Remora server, in the debug line its
//!   direct path logs for each such connection (`direct connection ... port= protocol=`).
//!
//! - and when the server's app is down (a port nothing listens on), the server proxy answers
//!   502 (linkerd2-proxy: 504 while its reconnect to the app backs off) with
//!   `l5d-proxy-connection: close`, and the client proxy strips the mesh's headers and closes
//!   its app's connection: HTTP/1 `connection: close`, HTTP/2 GOAWAY; the body is empty.
//!
//! Each test prints one `interop: <client> -> <server>: ...` line per call on stdout.
//!
//! Linkerd viz's queries ([`viz`]): a Remora server pod and a linkerd2-proxy server pod under
//! the same load from a Remora and a linkerd2-proxy client give the same success rate and a
//! p95 in the same latency bucket, evaluated over two scrapes as Prometheus would
//! ([`remora_tests::promql`]), and their inbound series carry the same labels.
//!
//! And linkerd2-proxy under Remora's own control plane, `remora control` in a pod of its own
//! ([`ClusterPlane`]), every pod a linkerd2-proxy given Linkerd's rendered environment pointed
//! at it: the proxies certify, watch both policy APIs for their ports and targets without a
//! policy warning, reach services by virtual IP with and without profile routes (the outbound
//! policy's backend is balanced over Destination's endpoints), follow a route edit (a header
//! match sending to a second backend) without a restart, and refuse with 403 a request no
//! authorization of the server admits. And, as in Kubernetes, linkerd2-proxy certifies with a
//! projected service-account token (its file's bytes sent as the token), which `remora control`
//! verifies offline against the issuer's JWKS (`token_auth = ["kubernetes"]`), and the
//! identities so certified carry a request between two linkerd2-proxy pods.
//!
//! # Running
//!
//! The suite needs a linkerd2-proxy binary, named by `REMORA_LINKERD2_PROXY`; without it every
//! test says so on stderr and passes. It was written against linkerd2-proxy at commit
//! `29637b64f6cebedaf15bfbf516818d7a28a4d5a6` (github.com/linkerd/linkerd2-proxy), built by hand
//! from that repository with its default features (the repository holds no recipe for it).
//! Like every `netns_*` test it needs root:
//!
//! ```text
//! REMORA_REQUIRE_NETNS=1 REMORA_LINKERD2_PROXY=/path/to/linkerd2-proxy \
//!     cargo test -p remora-tests --test interop -- --nocapture --test-threads=2
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use remora_control::sa_token::mint::Minter;
use remora_tests::apps::{connect_in, echo, echo_roundtrip, test_server};
use remora_tests::control::{ClusterPlane, Linkerd2Pod, Pki};
use remora_tests::http::{get, grpc_channel, grpc_count, grpc_echo, http1, http2, send1, send2};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, Workload, WorkloadSpec, workload_identity};
use remora_tests::services::{Service, route};
use remora_tests::{Net, eventually};

const HTTP: u16 = 8080;
/// A port of the server pod no app listens on: its proxy cannot reach the app.
const DOWN: u16 = 8081;
/// Opaque by the chart's default (`INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`).
const OPAQUE: u16 = 3306;
/// Bytes sent through the opaque port.
const OPAQUE_BYTES: u64 = 100_000;
/// A Remora server logs its direct path's connections (an explicit `REMORA_*` variable wins
/// over the Linkerd surface's `LINKERD2_PROXY_LOG`).
const REMORA_SERVER_LOG: &str = "info,remora_proxy::inbound=debug,remora_proxy::tls::mtls=debug";
/// A Remora client pod's log filter: its handshakes show the key exchange negotiated.
const REMORA_CLIENT_LOG: &str = "info,remora_proxy::tls::mtls=debug";

/// The linkerd2-proxy binary to run, or `None` (the test is skipped) when
/// `REMORA_LINKERD2_PROXY` is not set. Set to a path that does not exist, it fails the test.
fn linkerd2_proxy() -> Option<PathBuf> {
    let Some(path) = std::env::var_os("REMORA_LINKERD2_PROXY") else {
        eprintln!(
            "interop: REMORA_LINKERD2_PROXY is not set; skipping (build linkerd2-proxy by hand \
             and point it there)"
        );
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "REMORA_LINKERD2_PROXY={} is not a file",
        path.display()
    );
    Some(path)
}

/// Which proxy a pod runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    Remora,
    Linkerd2,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Remora => "remora",
            Proxy::Linkerd2 => "linkerd2-proxy",
        }
    }
}

/// A client pod and a server pod (test server on 8080, echo on 3306) under one plane, the
/// server's ports known to Destination by its pod address.
struct Mesh {
    _net: Net,
    _plane: LinkerdPlane,
    client: Workload,
    server: Workload,
    client_proxy: Proxy,
    server_proxy: Proxy,
    client_id: String,
}

impl Mesh {
    async fn start(client: Proxy, server: Proxy) -> Option<Mesh> {
        let linkerd2 = linkerd2_proxy()?;
        let net = Net::new()?;
        let plane = LinkerdPlane::start(&net, 1).await;
        let spec = |spec: WorkloadSpec, proxy: Proxy| match proxy {
            Proxy::Remora => spec,
            Proxy::Linkerd2 => WorkloadSpec {
                program: Some(linkerd2.clone()),
                ..spec
            },
        };
        let mut server_spec = spec(
            WorkloadSpec::new("web-0", "web")
                .app(test_server(HTTP, "web-0"), HTTP)
                .app(echo(OPAQUE), OPAQUE),
            server,
        );
        if server == Proxy::Remora {
            server_spec = server_spec.env("REMORA_LOG", REMORA_SERVER_LOG);
        }
        server_spec.ports = format!("{HTTP},{OPAQUE},{DOWN}");
        let server_pod = plane.workload(&net, server_spec).await;
        for (port, opaque) in [(HTTP, false), (OPAQUE, true), (DOWN, false)] {
            plane.add_service(
                &server_pod.pod.addr4(port).to_string(),
                vec![Endpoint {
                    addr: server_pod.pod.addr4(port),
                    sa: "web".into(),
                    ns: "shop".into(),
                    pod: server_pod.pod.name.clone(),
                    opaque,
                }],
            );
        }
        let mut client_spec = spec(WorkloadSpec::new("client-0", "client"), client);
        if client == Proxy::Remora {
            client_spec = client_spec.env("REMORA_LOG", REMORA_CLIENT_LOG);
        }
        let client_pod = plane.workload(&net, client_spec).await;
        Some(Mesh {
            _net: net,
            _plane: plane,
            client: client_pod,
            server: server_pod,
            client_proxy: client,
            server_proxy: server,
            client_id: workload_identity("client", "shop"),
        })
    }

    fn ns(&self) -> &str {
        &self.client.pod.ns
    }

    /// Prints the test's summary: what worked, and what showed the transport header (one
    /// `println!`, so that parallel tests' lines do not interleave).
    fn report(&self, what: &str, header: &str) {
        let who = format!(
            "interop: {} -> {}:",
            self.client_proxy.name(),
            self.server_proxy.name()
        );
        println!("{who} {what}\n{who}   over the transport header: {header}");
    }

    /// The key exchange the Remora side of the pair logged for its mTLS with the other
    /// (post-quantum X25519MLKEM768 on both proxies: the test fails on anything else).
    fn key_exchange(&self) -> String {
        let (pod, what) = if self.server_proxy == Proxy::Remora {
            (&self.server, "mTLS accepted")
        } else {
            (&self.client, "mTLS established")
        };
        let log = pod.pod.proxy().log();
        let line = log
            .lines()
            .find(|l| l.contains(what) && l.contains("kx="))
            .unwrap_or_else(|| panic!("no {what:?} line with kx= in\n{log}"));
        assert!(
            line.contains("kx=Some(X25519MLKEM768)"),
            "not post-quantum: {line}"
        );
        "X25519MLKEM768".to_string()
    }

    /// Both proxies' logs, for a failure's message.
    fn logs(&self) -> String {
        format!(
            "--- client proxy ({}) ---\n{}\n--- server proxy ({}) ---\n{}",
            self.client_proxy.name(),
            self.client.pod.proxy().log(),
            self.server_proxy.name(),
            self.server.pod.proxy().log()
        )
    }

    /// Waits until the server proxy shows it accepted the client's connection to its inbound
    /// port with a transport header naming `port` and `session` (`http/2`, or none for opaque
    /// bytes); returns what showed it.
    async fn transport_header(&self, port: u16, session: Option<&str>) -> String {
        let seen = std::sync::Mutex::new(None);
        let found = eventually(Duration::from_secs(20), || async {
            let now = match self.server_proxy {
                Proxy::Linkerd2 => self.linkerd2_transport_header(port, session).await,
                Proxy::Remora => self.remora_direct_connection(port, session),
            };
            let shown = now.is_some();
            *seen.lock().unwrap() = now;
            shown
        })
        .await;
        assert!(
            found,
            "the {} server shows no transport-header connection from {} to port {port} with \
             session protocol {session:?}\n{}\n{}",
            self.server_proxy.name(),
            self.client_id,
            self.server_metrics_text().await,
            self.logs()
        );
        seen.into_inner().unwrap().unwrap()
    }

    /// linkerd2-proxy counts each connection its direct stack accepted, by header and client.
    async fn linkerd2_transport_header(&self, port: u16, session: Option<&str>) -> Option<String> {
        let metrics = self.server.pod.metrics().await;
        let port = port.to_string();
        let labels = [
            ("session_protocol", session.unwrap_or("")),
            ("target_port", port.as_str()),
            ("client_id", self.client_id.as_str()),
        ];
        (metrics.get("inbound_tcp_transport_header_connections_total", &labels) >= 1.0).then(|| {
            metrics
                .text
                .lines()
                .find(|l| {
                    l.starts_with("inbound_tcp_transport_header_connections_total{")
                        && labels
                            .iter()
                            .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
                })
                .unwrap_or_default()
                .to_string()
        })
    }

    /// Remora's direct path logs each connection with the client, the port and the session
    /// protocol of its header.
    fn remora_direct_connection(&self, port: u16, session: Option<&str>) -> Option<String> {
        let protocol = match session {
            Some("http/2") => "Some(Http2)",
            Some("http/1") => "Some(Http1)",
            Some(other) => panic!("no such session protocol {other}"),
            None => "None",
        };
        let log = self.server.pod.proxy().log();
        log.lines()
            .find(|l| {
                l.contains("direct connection")
                    && l.contains(&format!("client.id={}", self.client_id))
                    && l.contains(&format!("port={port} "))
                    && l.contains(&format!("protocol={protocol}"))
            })
            .map(|l| l[l.find("direct connection").unwrap_or(0)..].to_string())
    }

    async fn server_metrics_text(&self) -> String {
        match self.server.pod.admin("GET", "/metrics").await {
            Ok((_, text)) => text,
            Err(e) => format!("(no metrics: {e})"),
        }
    }
}

// ---- the checks, the same in both directions ----

/// Awaits `f`, failing with both proxies' logs when it takes more than 30 s.
async fn within<T>(m: &Mesh, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30 s\n{}", m.logs()))
}

/// An HTTP/1.1 request reaches the server's app as HTTP/1.1 with the client's identity.
async fn http1_carries_the_callers_identity(m: &Mesh) {
    let target = m.server.pod.addr4(HTTP);
    let r = within(m, "HTTP/1.1 GET /echo", async {
        let mut conn = http1(m.ns(), target).await;
        send1(&mut conn, get(&target.to_string(), "/echo")).await
    })
    .await
    .unwrap_or_else(|e| panic!("HTTP/1.1: {e}\n{}", m.logs()));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(r.json()["version"], "HTTP/1.1", "{}", r.text());
    assert_eq!(
        r.json()["headers"]["l5d-client-id"],
        m.client_id.as_str(),
        "{}",
        r.text()
    );
    let header = m.transport_header(HTTP, Some("http/2")).await;
    let kx = m.key_exchange();
    m.report(
        &format!(
            "HTTP/1.1 ok (app saw HTTP/1.1, l5d-client-id={}); key exchange {kx}",
            m.client_id
        ),
        &header,
    );
}

/// An HTTP/2 request reaches the server's app as HTTP/2 with the client's identity.
async fn http2_carries_the_callers_identity(m: &Mesh) {
    let target = m.server.pod.addr4(HTTP);
    let r = within(m, "HTTP/2 GET /echo", async {
        let mut conn = http2(m.ns(), target).await;
        send2(&mut conn, get(&target.to_string(), "/echo")).await
    })
    .await
    .unwrap_or_else(|e| panic!("HTTP/2: {e}\n{}", m.logs()));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(r.json()["version"], "HTTP/2.0", "{}", r.text());
    assert_eq!(
        r.json()["headers"]["l5d-client-id"],
        m.client_id.as_str(),
        "{}",
        r.text()
    );
    let header = m.transport_header(HTTP, Some("http/2")).await;
    m.report(
        &format!(
            "HTTP/2 ok (app saw HTTP/2.0, l5d-client-id={})",
            m.client_id
        ),
        &header,
    );
}

/// A unary gRPC call is answered with the client's identity as the server's app saw it, and
/// a server-streaming call delivers every message.
async fn grpc_carries_the_callers_identity(m: &Mesh) {
    let target = m.server.pod.addr4(HTTP);
    let channel = within(m, "a gRPC channel", grpc_channel(m.ns(), target)).await;
    let unary = grpc_echo(channel.clone(), "hello across proxies", 0);
    let reply = within(m, "a unary gRPC call", unary)
        .await
        .unwrap_or_else(|e| panic!("gRPC unary: {e:?}\n{}", m.logs()));
    assert_eq!(reply.message, "hello across proxies");
    assert_eq!(reply.client_id, m.client_id);
    let counted = within(m, "a server-streaming gRPC call", grpc_count(channel, 50))
        .await
        .unwrap_or_else(|e| panic!("gRPC streaming: {e:?}\n{}", m.logs()));
    assert_eq!(counted, (0..50).collect::<Vec<u32>>());
    let header = m.transport_header(HTTP, Some("http/2")).await;
    m.report(
        &format!(
            "gRPC unary ok (client_id={}), server streaming ok (50 messages)",
            reply.client_id
        ),
        &header,
    );
}

/// Bytes to the opaque port come back intact.
async fn opaque_tcp_round_trips(m: &Mesh) {
    let echoed = within(m, "the opaque echo", async {
        let conn = connect_in(m.ns(), m.server.pod.addr4(OPAQUE)).await?;
        echo_roundtrip(conn, OPAQUE_BYTES).await
    })
    .await
    .unwrap_or_else(|e| panic!("opaque echo: {e}\n{}", m.logs()));
    assert_eq!(echoed, OPAQUE_BYTES, "{}", m.logs());
    let header = m.transport_header(OPAQUE, None).await;
    m.report(
        &format!("opaque TCP on {OPAQUE} ok ({echoed} bytes echoed intact)"),
        &header,
    );
}

/// The server's app is down: the server proxy answers 502 (linkerd2-proxy: 504 while its
/// reconnect backs off) with `l5d-proxy-error` and `l5d-proxy-connection: close`, the client
/// proxy strips both and closes its app's
/// connection (the app dialled the pod): HTTP/1 with `connection: close`, HTTP/2 with
/// GOAWAY; the body is empty.
async fn app_down_closes_the_callers_connection(m: &Mesh) {
    let down = m.server.pod.addr4(DOWN);
    let mut lines = Vec::new();
    for h2 in [false, true] {
        let proto = if h2 { "HTTP/2" } else { "HTTP/1.1" };
        let a = within(
            m,
            proto,
            remora_tests::http::answer_and_close(
                m.ns(),
                down,
                &down.to_string(),
                h2,
                Duration::from_secs(10),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{proto}: {e}\n{}", m.logs()));
        // linkerd2-proxy answers 502 for the refused connect, then 504 while its reconnect to
        // the app backs off (fail-fast); both close.
        assert!(
            a.status == 502 || (m.server_proxy == Proxy::Linkerd2 && a.status == 504),
            "{proto}: {a}\n{}",
            m.logs()
        );
        assert!(a.l5d_headers.is_empty(), "{proto}: {a}");
        assert_eq!(a.body_len, 0, "{proto}: {a}");
        if !h2 {
            assert_eq!(a.connection.as_deref(), Some("close"), "{proto}: {a}");
        }
        assert!(a.closed, "{proto}: {a}\n{}", m.logs());
        lines.push(format!("{proto} app down: {a}"));
    }
    m.report(&lines.join("; "), "(not checked: error signalling)");
}

// ---- Remora client -> linkerd2-proxy server ----

#[tokio::test]
async fn netns_interop_remora_to_linkerd2_proxy_http1_via_transport_header_with_client_id() {
    let Some(m) = Mesh::start(Proxy::Remora, Proxy::Linkerd2).await else {
        return;
    };
    http1_carries_the_callers_identity(&m).await;
}

#[tokio::test]
async fn netns_interop_remora_to_linkerd2_proxy_http2_via_transport_header_with_client_id() {
    let Some(m) = Mesh::start(Proxy::Remora, Proxy::Linkerd2).await else {
        return;
    };
    http2_carries_the_callers_identity(&m).await;
}

#[tokio::test]
async fn netns_interop_remora_to_linkerd2_proxy_grpc_via_transport_header_with_client_id() {
    let Some(m) = Mesh::start(Proxy::Remora, Proxy::Linkerd2).await else {
        return;
    };
    grpc_carries_the_callers_identity(&m).await;
}

#[tokio::test]
async fn netns_interop_remora_to_linkerd2_proxy_opaque_tcp_via_transport_header_round_trips() {
    let Some(m) = Mesh::start(Proxy::Remora, Proxy::Linkerd2).await else {
        return;
    };
    opaque_tcp_round_trips(&m).await;
}

#[tokio::test]
async fn netns_interop_remora_to_linkerd2_proxy_app_down_closes_the_callers_connection() {
    let Some(m) = Mesh::start(Proxy::Remora, Proxy::Linkerd2).await else {
        return;
    };
    app_down_closes_the_callers_connection(&m).await;
}

// ---- linkerd2-proxy client -> Remora server ----

#[tokio::test]
async fn netns_interop_linkerd2_proxy_to_remora_http1_via_transport_header_with_client_id() {
    let Some(m) = Mesh::start(Proxy::Linkerd2, Proxy::Remora).await else {
        return;
    };
    http1_carries_the_callers_identity(&m).await;
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_to_remora_http2_via_transport_header_with_client_id() {
    let Some(m) = Mesh::start(Proxy::Linkerd2, Proxy::Remora).await else {
        return;
    };
    http2_carries_the_callers_identity(&m).await;
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_to_remora_grpc_via_transport_header_with_client_id() {
    let Some(m) = Mesh::start(Proxy::Linkerd2, Proxy::Remora).await else {
        return;
    };
    grpc_carries_the_callers_identity(&m).await;
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_to_remora_opaque_tcp_via_transport_header_round_trips() {
    let Some(m) = Mesh::start(Proxy::Linkerd2, Proxy::Remora).await else {
        return;
    };
    opaque_tcp_round_trips(&m).await;
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_to_remora_app_down_closes_the_callers_connection() {
    let Some(m) = Mesh::start(Proxy::Linkerd2, Proxy::Remora).await else {
        return;
    };
    app_down_closes_the_callers_connection(&m).await;
}

// ---- linkerd2-proxy under `remora control` ----

/// The virtual IPs of the services [`RemoraMesh`] configures: `web` (no profile routes),
/// `web-v2` (a second backend), and `web-profiled` (the same pod as `web`, with a profile
/// route).
const WEB_VIP: &str = "10.96.0.10";
const WEB_V2_VIP: &str = "10.96.0.11";
const PROFILED_VIP: &str = "10.96.0.12";

/// linkerd2-proxy pods under `remora control` (in a pod of its own, TLS with its identity): a
/// client and two servers running the test server on 8080 (`web-0` and `web-v2-0`, each
/// reporting its name in `x-server`).
struct RemoraMesh {
    _net: Net,
    _pki: Pki,
    plane: ClusterPlane,
    client: Linkerd2Pod,
    web: Linkerd2Pod,
    web_v2: Linkerd2Pod,
}

impl RemoraMesh {
    async fn start() -> Option<RemoraMesh> {
        let program = linkerd2_proxy()?;
        let net = Net::new()?;
        let pki = Pki::new();
        let mut plane = ClusterPlane::east(&net, &pki).await;
        let server = |name: &str| vec![(test_server(HTTP, name), HTTP)];
        let web = plane
            .linkerd2_pod(&net, &program, "web-0", "web", server("web-0"))
            .await;
        let web_v2 = plane
            .linkerd2_pod(&net, &program, "web-v2-0", "web", server("web-v2-0"))
            .await;
        plane
            .cp
            .apply(&[
                Service::new("web", "shop")
                    .vip(WEB_VIP)
                    .port(HTTP)
                    .endpoint(&web.pod, "web"),
                Service::new("web-v2", "shop")
                    .vip(WEB_V2_VIP)
                    .port(HTTP)
                    .endpoint(&web_v2.pod, "web"),
                Service::new("web-profiled", "shop")
                    .vip(PROFILED_VIP)
                    .port(HTTP)
                    .endpoint(&web.pod, "web")
                    .route(route("echo", "/echo")),
            ])
            .await;
        let client = plane
            .linkerd2_pod(&net, &program, "client-0", "client", Vec::new())
            .await;
        Some(RemoraMesh {
            _net: net,
            _pki: pki,
            plane,
            client,
            web,
            web_v2,
        })
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for p in [&self.client, &self.web, &self.web_v2] {
            out.push_str(&format!(
                "--- {} (linkerd2-proxy) ---\n{}\n",
                p.pod.name,
                p.pod.proxy().log()
            ));
        }
        out.push_str(&format!(
            "--- remora control ---\n{}",
            self.plane.cp.process().log()
        ));
        out
    }

    /// `GET /echo` from the client's app to `vip`:8080 with `headers`: the status and who
    /// answered (`x-server`).
    async fn get(
        &self,
        vip: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<(u16, String), String> {
        let target: std::net::SocketAddr = format!("{vip}:{HTTP}").parse().unwrap();
        let mut req = get(&target.to_string(), "/echo");
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let call = async {
            let mut conn = http1(&self.client.pod.ns, target).await;
            send1(&mut conn, req).await
        };
        let r = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .map_err(|_| "no answer within 15 s".to_string())?
            .map_err(|e| e.to_string())?;
        let server = r
            .headers
            .get("x-server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((r.status.as_u16(), server))
    }

    /// Waits (up to 20 s) until `GET /echo` to `vip` with `headers` answers `status` from
    /// `server` (any server when empty); panics with the last answer and the logs.
    async fn expect(&self, vip: &str, headers: &[(&'static str, &str)], status: u16, server: &str) {
        let last = std::sync::Mutex::new(None);
        let ok = eventually(Duration::from_secs(20), || async {
            let r = self.get(vip, headers).await;
            let ok =
                matches!(&r, Ok((s, who)) if *s == status && (server.is_empty() || who == server));
            *last.lock().unwrap() = Some(r);
            ok
        })
        .await;
        assert!(
            ok,
            "GET {vip}:{HTTP}/echo {headers:?}: want {status} from {server:?}, last {:?}\n{}",
            last.into_inner().unwrap(),
            self.logs()
        );
    }

    /// The lines linkerd2-proxy logged at WARN or above that speak of policy.
    fn policy_warnings(&self) -> Vec<String> {
        [&self.client, &self.web, &self.web_v2]
            .iter()
            .flat_map(|p| {
                p.pod
                    .proxy()
                    .log()
                    .lines()
                    .filter(|l| {
                        (l.contains("WARN") || l.contains("ERROR"))
                            && l.to_ascii_lowercase().contains("polic")
                    })
                    .map(|l| format!("{}: {l}", p.pod.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn report(&self, what: &str) {
        println!("interop: linkerd2-proxy under remora control: {what}");
    }
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_under_remora_control_reaches_services_by_virtual_ip() {
    let Some(m) = RemoraMesh::start().await else {
        return;
    };
    // A service with no profile route: routed by its outbound policy, balanced over
    // Destination's endpoints for the policy's Dst path (not the virtual IP itself).
    m.expect(WEB_VIP, &[], 200, "web-0").await;
    m.expect(WEB_V2_VIP, &[], 200, "web-v2-0").await;
    // A service whose profile has a route: routed by the profile.
    m.expect(PROFILED_VIP, &[], 200, "web-0").await;
    // Every proxy watched its ports' inbound policy (the servers 8080 and 4191, the client
    // its admin port 4191) and its targets' outbound policy, and none warned about policy.
    let metrics = m.plane.cp.metrics().await;
    let watches = |api| metrics.get("policy_watches", &[("api", api)]);
    assert!(watches("inbound") >= 5.0, "{}", metrics.text);
    assert!(watches("outbound") >= 3.0, "{}", metrics.text);
    let warnings = m.policy_warnings();
    assert!(
        warnings.is_empty(),
        "policy warnings:\n{}\n{}",
        warnings.join("\n"),
        m.logs()
    );
    m.report(&format!(
        "started, certified by {}; GET {WEB_VIP}:{HTTP} (no profile route) -> 200 web-0, \
         {WEB_V2_VIP}:{HTTP} -> 200 web-v2-0, {PROFILED_VIP}:{HTTP} (profile route) -> 200 web-0; \
         policy watches: {} inbound, {} outbound; no policy warning in the proxies' logs",
        m.plane.cp.own_identity(),
        watches("inbound"),
        watches("outbound"),
    ));
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_under_remora_control_follows_a_route_edit() {
    let Some(mut m) = RemoraMesh::start().await else {
        return;
    };
    let canary = [("x-canary", "1")];
    m.expect(WEB_VIP, &canary, 200, "web-0").await;
    let pid = m.client.pod.proxy().pid();
    m.plane
        .cp
        .apply_policy(
            r#"
[policy]
[[policy.http_routes]]
name = "web-canary"
namespace = "shop"
parent_refs = [{ kind = "Service", name = "web", port = 8080 }]
[[policy.http_routes.rules]]
matches = [{ headers = [{ name = "x-canary", value = "1" }] }]
backend_refs = [{ name = "web-v2" }]
[[policy.http_routes.rules]]
"#,
        )
        .await;
    // The route's header match sends to the second backend; everything else still goes to
    // the service itself; the client's proxy was not restarted.
    m.expect(WEB_VIP, &canary, 200, "web-v2-0").await;
    m.expect(WEB_VIP, &[], 200, "web-0").await;
    assert_eq!(m.client.pod.proxy().pid(), pid);
    assert!(m.client.pod.proxy().is_running());
    // Its route metrics carry the route's and the backend's names.
    let metrics = m.client.pod.metrics().await;
    let routed = metrics.get(
        "outbound_http_route_backend_requests_total",
        &[("route_name", "web-canary"), ("backend_name", "web-v2")],
    );
    assert!(routed >= 1.0, "{}", metrics.text);
    let warnings = m.policy_warnings();
    assert!(
        warnings.is_empty(),
        "policy warnings:\n{}",
        warnings.join("\n")
    );
    m.report(&format!(
        "after adding HTTPRoute web-canary (x-canary: 1 -> web-v2) without a restart: \
         GET {WEB_VIP}:{HTTP} x-canary: 1 -> 200 web-v2-0, without it -> 200 web-0; \
         outbound_http_route_backend_requests_total{{route_name=\"web-canary\",backend_name=\"web-v2\"}} = {routed}"
    ));
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_under_remora_control_denies_what_no_authorization_admits() {
    let Some(mut m) = RemoraMesh::start().await else {
        return;
    };
    m.expect(WEB_VIP, &[], 200, "web-0").await;
    let policy = |identity: &str| {
        format!(
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
client = {{ mesh_tls = {{ identities = ["{identity}"] }} }}
"#
        )
    };
    let other = m.plane.cp.identity("batch", "shop");
    m.plane.cp.apply_policy(&policy(&other)).await;
    // web-0's proxy refuses the client: its identity is not the one authorized.
    m.expect(WEB_VIP, &[], 403, "").await;
    // The other server is not selected, and admits it.
    m.expect(WEB_V2_VIP, &[], 200, "web-v2-0").await;
    let metrics = m.web.pod.metrics().await;
    let denied = metrics.get(
        "inbound_http_authz_deny_total",
        &[
            ("srv_name", "web-http"),
            ("client_id", m.client.identity.as_str()),
        ],
    );
    assert!(denied >= 1.0, "{}", metrics.text);
    // Authorizing the client's identity lets it through, without a restart.
    let client = m.client.identity.clone();
    m.plane.cp.apply_policy(&policy(&client)).await;
    m.expect(WEB_VIP, &[], 200, "web-0").await;
    let metrics = m.web.pod.metrics().await;
    let allowed = metrics.get(
        "inbound_http_authz_allow_total",
        &[("srv_name", "web-http"), ("authz_name", "web-clients")],
    );
    assert!(allowed >= 1.0, "{}", metrics.text);
    m.report(&format!(
        "Server web-http on web-0:{HTTP} admitting only {other}: GET {WEB_VIP}:{HTTP} from \
         {client} -> 403 (inbound_http_authz_deny_total = {denied}); admitting {client}: -> 200 \
         (inbound_http_authz_allow_total{{authz_name=\"web-clients\"}} = {allowed})"
    ));
}

// ---- inbound policy: the same Server on a Remora and a linkerd2-proxy server ----

/// The same `Server`s pushed (by the Linkerd-shaped plane) to a Remora server pod and a
/// linkerd2-proxy server pod, called by the same callers (two meshed Remora pods of different
/// identities and an unmeshed pod): each call's outcome must be the same on both servers.
/// Each scenario prints one `interop: policy ...` line per call, with both outcomes.
mod inbound_policy {
    use std::net::SocketAddr;
    use std::time::Duration;

    use remora_tests::apps::{connect_in, echo, test_server};
    use remora_tests::http::{get, grpc_channel, grpc_echo, http1, send1};
    use remora_tests::inbound_servers::{
        audit, authz, detect, everywhere, http_route, identities, network, opaque, server,
        unauthenticated,
    };
    use remora_tests::linkerd::{
        Endpoint, LinkerdPlane, Workload, WorkloadSpec, workload_identity,
    };
    use remora_tests::{Net, Pod, eventually};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::linkerd2_proxy;

    const HTTP: u16 = 8080;
    const TCP: u16 = 7000;
    const OPAQUE: u16 = 3306;

    struct Servers {
        net: Net,
        plane: LinkerdPlane,
        remora: Workload,
        linkerd2: Workload,
        client: Workload,
        batch: Workload,
        plain: Pod,
    }

    /// What a caller does.
    #[derive(Clone, Copy, Debug)]
    enum Call {
        Get(&'static str),
        Grpc,
        Echo(u16),
    }

    impl Servers {
        async fn start() -> Option<Servers> {
            let program = linkerd2_proxy()?;
            let net = Net::new()?;
            let plane = LinkerdPlane::start(&net, 1).await;
            let spec = |name: &str| {
                WorkloadSpec::new(name, "web")
                    .app(test_server(HTTP, name), HTTP)
                    .app(echo(TCP), TCP)
                    .app(echo(OPAQUE), OPAQUE)
            };
            let remora = plane.workload(&net, spec("web-remora")).await;
            let linkerd2 = plane
                .workload(
                    &net,
                    WorkloadSpec {
                        program: Some(program),
                        ..spec("web-l2p")
                    },
                )
                .await;
            for w in [&remora, &linkerd2] {
                for (port, opaque) in [(HTTP, false), (TCP, false), (OPAQUE, true)] {
                    let addr = w.pod.addr4(port);
                    plane.add_service(
                        &addr.to_string(),
                        vec![Endpoint {
                            addr,
                            sa: "web".into(),
                            ns: "shop".into(),
                            pod: w.pod.name.clone(),
                            opaque,
                        }],
                    );
                }
            }
            let client = plane
                .workload(&net, WorkloadSpec::new("client-0", "client"))
                .await;
            let batch = plane
                .workload(&net, WorkloadSpec::new("batch-0", "batch"))
                .await;
            let plain = net.pod("u").start().await;
            Some(Servers {
                net,
                plane,
                remora,
                linkerd2,
                client,
                batch,
                plain,
            })
        }

        fn callers(&self) -> [(&'static str, &Pod); 3] {
            [
                ("client", &self.client.pod),
                ("batch", &self.batch.pod),
                ("unmeshed", &self.plain),
            ]
        }

        /// The outcome of `call` from `from` to `to`: a status, a gRPC code, `echo` or
        /// `closed`.
        async fn call(&self, from: &Pod, to: &Workload, call: Call) -> String {
            let deadline = Duration::from_secs(10);
            match call {
                Call::Get(path) => {
                    let target = to.pod.addr4(HTTP);
                    let req = async {
                        let mut conn = http1(&from.ns, target).await;
                        send1(&mut conn, get(&target.to_string(), path)).await
                    };
                    match tokio::time::timeout(deadline, req).await {
                        Ok(Ok(r)) => r.status.as_u16().to_string(),
                        Ok(Err(e)) => format!("error ({e})"),
                        Err(_) => "timeout".into(),
                    }
                }
                Call::Grpc => {
                    let rpc = async {
                        grpc_echo(grpc_channel(&from.ns, to.pod.addr4(HTTP)).await, "hi", 0).await
                    };
                    match tokio::time::timeout(deadline, rpc).await {
                        Ok(Ok(_)) => "grpc Ok".into(),
                        Ok(Err(s)) => format!("grpc {:?}", s.code()),
                        Err(_) => "timeout".into(),
                    }
                }
                Call::Echo(port) => {
                    let echoed = async {
                        let mut c = connect_in(&from.ns, to.pod.addr4(port)).await.ok()?;
                        c.write_all(b"ping").await.ok()?;
                        let mut buf = [0u8; 4];
                        c.read_exact(&mut buf).await.ok()?;
                        (&buf == b"ping").then_some(())
                    };
                    match tokio::time::timeout(deadline, echoed).await {
                        Ok(Some(())) => "echo".into(),
                        _ => "closed".into(),
                    }
                }
            }
        }

        /// Pushes `servers` (port, Server) to both pods, waits until `probe` gives one of
        /// `want` on both, then makes every call from every caller to both servers: returns
        /// the rows (caller, call, Remora's outcome, linkerd2-proxy's).
        async fn scenario(
            &self,
            name: &str,
            servers: Vec<(u16, linkerd2_proxy_api::inbound::Server)>,
            probe: (usize, Call, &[&str]),
            calls: &[Call],
        ) -> Vec<(String, String, String, String)> {
            for (port, s) in servers {
                self.plane.set_server(port, Some(s));
            }
            let (who, call, want) = probe;
            let from = self.callers()[who].1;
            for to in [&self.remora, &self.linkerd2] {
                let ok = eventually(Duration::from_secs(30), || async {
                    want.contains(&self.call(from, to, call).await.as_str())
                })
                .await;
                assert!(
                    ok,
                    "{name}: {call:?} from {} to {} never gave {want:?}\n{}",
                    self.callers()[who].0,
                    to.pod.name,
                    to.pod.proxy().log()
                );
            }
            let mut rows = Vec::new();
            for (who, from) in self.callers() {
                for &call in calls {
                    let r = self.call(from, &self.remora, call).await;
                    let l = self.call(from, &self.linkerd2, call).await;
                    println!(
                        "interop: policy {name}: {who} {call:?}: remora={r} linkerd2-proxy={l}"
                    );
                    rows.push((who.to_string(), format!("{call:?}"), r, l));
                }
            }
            rows
        }
    }

    fn assert_same(name: &str, rows: &[(String, String, String, String)], s: &Servers) {
        let differ: Vec<_> = rows.iter().filter(|(_, _, r, l)| r != l).collect();
        assert!(
            differ.is_empty(),
            "{name}: Remora and linkerd2-proxy differ: {differ:#?}\n--- remora ---\n{}\n--- linkerd2-proxy ---\n{}",
            s.remora.pod.proxy().log(),
            s.linkerd2.pod.proxy().log()
        );
    }

    const ALL: &[Call] = &[
        Call::Get("/echo"),
        Call::Grpc,
        Call::Echo(TCP),
        Call::Echo(OPAQUE),
    ];

    #[tokio::test]
    async fn netns_interop_inbound_policy_identities_routes_networks_and_audit_decide_alike() {
        let Some(s) = Servers::start().await else {
            return;
        };
        let client = workload_identity("client", "shop");
        let only_client = || authz("clients", everywhere(), identities(&[&client], &[]));
        let rows = s
            .scenario(
                "identities (only client)",
                vec![
                    (
                        HTTP,
                        server("web-http", detect()).authz(only_client()).build(),
                    ),
                    (
                        TCP,
                        server("web-tcp", detect()).authz(only_client()).build(),
                    ),
                    (
                        OPAQUE,
                        server("web-db", opaque()).authz(only_client()).build(),
                    ),
                ],
                (1, Call::Get("/echo"), &["403"]),
                ALL,
            )
            .await;
        assert_same("identities", &rows, &s);
        assert!(
            rows.iter()
                .any(|(w, c, r, _)| w == "batch" && c == "Grpc" && r == "grpc PermissionDenied")
        );

        let rows = s
            .scenario(
                "per-route (admin: client; rest: any identity)",
                vec![(
                    HTTP,
                    server("web-http", detect())
                        .route(http_route("admin").prefix("/admin").authz(only_client()))
                        .route(http_route("rest").prefix("/").authz(authz(
                            "meshed",
                            everywhere(),
                            identities(&[], &[&[]]),
                        )))
                        .build(),
                )],
                (1, Call::Get("/admin"), &["403"]),
                &[Call::Get("/admin"), Call::Get("/echo")],
            )
            .await;
        assert_same("per-route", &rows, &s);

        let except = format!("{}/32", s.client.pod.ip4());
        let pods = format!("{}/24", s.net.subnet4());
        let rows = s
            .scenario(
                "networks (the pod network except client-0)",
                vec![
                    (
                        HTTP,
                        server("web-http", detect())
                            .authz(authz(
                                "pods",
                                vec![network(&pods, &[&except])],
                                unauthenticated(),
                            ))
                            .build(),
                    ),
                    (
                        TCP,
                        server("web-tcp", detect())
                            .authz(authz(
                                "pods",
                                vec![network(&pods, &[&except])],
                                unauthenticated(),
                            ))
                            .build(),
                    ),
                ],
                (0, Call::Get("/echo"), &["403"]),
                &[Call::Get("/echo"), Call::Echo(TCP)],
            )
            .await;
        assert_same("networks", &rows, &s);

        let rows = s
            .scenario(
                "audit",
                vec![
                    (HTTP, server("web-http", detect()).authz(audit()).build()),
                    (TCP, server("web-tcp", detect()).authz(audit()).build()),
                ],
                (2, Call::Get("/echo"), &["200"]),
                &[Call::Get("/echo"), Call::Echo(TCP)],
            )
            .await;
        assert_same("audit", &rows, &s);
        // Both count the audited requests as allowed by the audit authorization.
        for w in [&s.remora, &s.linkerd2] {
            let m = w.pod.metrics().await;
            let n = m.get(
                "inbound_http_authz_allow_total",
                &[("authz_name", "audit"), ("srv_name", "web-http")],
            );
            assert!(n >= 1.0, "{}: {}", w.pod.name, m.text);
            println!(
                "interop: policy audit: {} inbound_http_authz_allow_total{{authz_name=\"audit\"}} = {n}",
                w.pod.name
            );
        }
    }

    /// How many of `n` requests on one connection got 200.
    async fn burst(from: &Pod, to: SocketAddr, n: usize) -> (usize, usize) {
        let mut conn = http1(&from.ns, to).await;
        let (mut ok, mut limited) = (0, 0);
        for _ in 0..n {
            match send1(&mut conn, get(&to.to_string(), "/echo"))
                .await
                .map(|r| r.status.as_u16())
            {
                Ok(200) => ok += 1,
                Ok(429) => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        (ok, limited)
    }

    #[tokio::test]
    async fn netns_interop_inbound_policy_rate_limits_alike() {
        let Some(s) = Servers::start().await else {
            return;
        };
        s.plane.set_server(
            HTTP,
            Some(
                server("web-http", detect())
                    .authz(authz("everyone", everywhere(), unauthenticated()))
                    .rate_limit("per-caller", 0, 5, &[])
                    .build(),
            ),
        );
        for to in [&s.remora, &s.linkerd2] {
            let target = to.pod.addr4(HTTP);
            let applied = eventually(Duration::from_secs(30), || async {
                burst(&s.client.pod, target, 10).await.1 > 0
            })
            .await;
            assert!(applied, "{}: no 429\n{}", to.pod.name, to.pod.proxy().log());
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut seen = Vec::new();
        for to in [&s.remora, &s.linkerd2] {
            let target = to.pod.addr4(HTTP);
            let (ok, limited) = burst(&s.client.pod, target, 20).await;
            let (batch_ok, _) = burst(&s.batch.pod, target, 5).await;
            println!(
                "interop: policy rate limit 5/s per identity: {}: client {ok} x 200, {limited} x 429; batch {batch_ok} x 200 of 5",
                to.pod.name
            );
            let m = to.pod.metrics().await;
            let counted = m.get(
                "inbound_http_local_ratelimit_total",
                &[("ratelimit_scope", "identity")],
            );
            println!(
                "interop: policy rate limit: {} inbound_http_local_ratelimit_total{{ratelimit_scope=\"identity\"}} = {counted}",
                to.pod.name
            );
            assert!(
                (5..=8).contains(&ok) && limited >= 12 && batch_ok == 5,
                "{}",
                to.pod.name
            );
            assert!(counted >= 12.0, "{}", m.text);
            seen.push(ok);
        }
    }

    #[tokio::test]
    async fn netns_interop_inbound_policy_where_remora_differs_on_purpose() {
        // Reported, not asserted equal: an injected failure (linkerd2-proxy's inbound answers
        // every one 500, Remora the configured status) and a malformed Server (linkerd2-proxy
        // installs its "invalid" policy, whose one route has no authorization: 403 to every
        // request; Remora keeps the last good one).
        let Some(s) = Servers::start().await else {
            return;
        };
        use linkerd2_proxy_api::http_route as route_pb;
        use linkerd2_proxy_api::inbound as pb;
        let mut fail = server("web-http", detect())
            .authz(authz("everyone", everywhere(), unauthenticated()))
            .build();
        if let Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Detect(d)),
        }) = &mut fail.protocol
        {
            d.http_routes.push(pb::HttpRoute {
                metadata: Some(linkerd2_proxy_api::meta::Metadata {
                    kind: Some(linkerd2_proxy_api::meta::metadata::Kind::Default(
                        "fail".into(),
                    )),
                }),
                hosts: Vec::new(),
                authorizations: Vec::new(),
                rules: vec![pb::http_route::Rule {
                    matches: Vec::new(),
                    filters: vec![pb::http_route::Filter {
                        kind: Some(pb::http_route::filter::Kind::FailureInjector(
                            route_pb::HttpFailureInjector {
                                status: 503,
                                message: "injected".into(),
                                ratio: None,
                            },
                        )),
                    }],
                }],
            });
        }
        let rows = s
            .scenario(
                "failure injector (503)",
                vec![(HTTP, fail)],
                (2, Call::Get("/echo"), &["500", "503"]),
                &[Call::Get("/echo")],
            )
            .await;
        let good = server("web-http", detect())
            .authz(authz(
                "clients",
                everywhere(),
                identities(&[&workload_identity("client", "shop")], &[]),
            ))
            .build();
        assert!(rows.iter().all(|(_, _, r, _)| r == "503"), "{rows:?}");
        // Once a good one is in place (client 200 on both), a malformed one.
        let _ = s
            .scenario(
                "a good server",
                vec![(HTTP, good.clone())],
                (0, Call::Get("/echo"), &["200"]),
                &[],
            )
            .await;
        let mut bad = good;
        bad.protocol = Some(pb::ProxyProtocol { kind: None });
        s.plane.set_server(HTTP, Some(bad));
        let applied = eventually(Duration::from_secs(30), || async {
            s.call(&s.client.pod, &s.linkerd2, Call::Get("/echo")).await == "403"
                && s.remora
                    .pod
                    .metrics()
                    .await
                    .get("inbound_policy_refused_total", &[])
                    >= 1.0
        })
        .await;
        assert!(applied, "the malformed server did not reach both");
        let rows = s
            .scenario(
                "malformed after a good one",
                Vec::new(),
                (1, Call::Get("/echo"), &["403"]),
                &[Call::Get("/echo")],
            )
            .await;
        let client = rows.iter().find(|(who, ..)| who == "client").unwrap();
        assert_eq!(client.2, "200", "Remora keeps the last good policy");
    }
}

#[tokio::test]
async fn netns_interop_linkerd2_proxy_certifies_with_a_service_account_token() {
    let Some(program) = linkerd2_proxy() else {
        return;
    };
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let issuer = Minter::generate_es256("sa-key-1").unwrap();
    let mut plane = ClusterPlane::create(&net, &pki, "east", "east.example", 8086).await;
    plane.cp.accept_sa_tokens(
        &["kubernetes"],
        &[&issuer],
        Some("https://kubernetes.default.svc.cluster.local"),
    );
    plane.cp.start().await;
    // Both pods certify with their projected tokens (linkerd2_pod waits until each is ready).
    let token = plane.cp.sa_token_file(&issuer, "web", "shop");
    let web = plane
        .linkerd2_pod_with_token(
            &net,
            &program,
            "web-0",
            "web",
            vec![(test_server(HTTP, "web-0"), HTTP)],
            &token,
        )
        .await;
    plane
        .cp
        .apply(&[Service::new("web", "shop")
            .vip(WEB_VIP)
            .port(HTTP)
            .endpoint(&web.pod, "web")])
        .await;
    let token = plane.cp.sa_token_file(&issuer, "client", "shop");
    let client = plane
        .linkerd2_pod_with_token(&net, &program, "client-0", "client", Vec::new(), &token)
        .await;
    // The identities those tokens gave carry a request over mTLS: the server's app sees the
    // client's identity.
    let target: std::net::SocketAddr = format!("{WEB_VIP}:{HTTP}").parse().unwrap();
    let logs = || {
        format!(
            "--- web-0 ---\n{}\n--- client-0 ---\n{}\n--- remora control ---\n{}",
            web.pod.proxy().log(),
            client.pod.proxy().log(),
            plane.cp.process().log()
        )
    };
    let seen = std::sync::Mutex::new(String::new());
    let ok = eventually(Duration::from_secs(20), || async {
        let call = async {
            let mut conn = http1(&client.pod.ns, target).await;
            send1(&mut conn, get(&target.to_string(), "/echo")).await
        };
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(r)) if r.status == 200 => {
                *seen.lock().unwrap() = r.json()["headers"]["l5d-client-id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                true
            }
            _ => false,
        }
    })
    .await;
    assert!(ok, "GET {target}/echo never answered 200\n{}", logs());
    let client_id = seen.into_inner().unwrap();
    assert_eq!(client_id, client.identity, "{}", logs());

    let issued = plane
        .cp
        .metrics()
        .await
        .get("identity_certs_issued_total", &[]);
    println!(
        "interop: linkerd2-proxy under remora control with token_auth = [\"kubernetes\"]: web-0 \
         and client-0 certified with projected service-account tokens (ES256, kid sa-key-1, \
         audience identity.l5d.io); GET {target}/echo from client-0 -> 200, l5d-client-id={client_id}; \
         {issued} certificates issued"
    );
}

// ---- outbound policy: the same OutboundPolicy in a Remora and a linkerd2-proxy client ----

/// One `OutboundPolicy` (an `HTTPRoute` with a header match, retries, a timeout, a redirect, a
/// weighted split and a failover; the forbidden opaque route of an undefined port) given to a
/// Remora client pod and to a linkerd2-proxy client pod under the same plane and servers: both
/// route the same requests to the same backends, answer the same synthetic responses, and
/// label their route metrics alike.
mod outbound_policy {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::Bytes;
    use linkerd2_proxy_api::http_route::Timeouts;
    use remora_tests::apps::connect_in;
    use remora_tests::outbound_policies::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn the_policy() -> linkerd2_proxy_api::outbound::OutboundPolicy {
        let mut retried = rule(vec![path_prefix("/fail-first")], first_available(&[WEB_A]));
        retried.retry = Some(retry_5xx(2, 1024));
        let mut timed = rule(vec![path_prefix("/delay")], first_available(&[WEB_A]));
        timed.timeouts = Some(Timeouts {
            request: Some(duration(300)),
            response: None,
            idle: None,
        });
        let mut moved = rule(vec![path_prefix("/moved")], first_available(&[WEB_A]));
        moved.filters = vec![redirect("new.shop", 301)];
        web_policy(vec![
            http_route(
                "web",
                vec![
                    retried,
                    timed,
                    moved,
                    rule(
                        vec![path_prefix("/split")],
                        random_available(&[(WEB_A, 70), (WEB_B, 30)]),
                    ),
                    rule(
                        vec![path_prefix("/failover")],
                        first_available(&[WEB_EMPTY, WEB_B]),
                    ),
                    rule(vec![], first_available(&[WEB_A])),
                ],
            ),
            http_route(
                "web-canary",
                vec![rule(
                    vec![header("x-canary", "1")],
                    first_available(&[WEB_B]),
                )],
            ),
        ])
    }

    /// What a client pod's proxy did with each request of the script.
    async fn observe(m: &PolicyMesh) -> BTreeMap<&'static str, String> {
        let mut out = BTreeMap::new();
        out.insert(
            "1 GET / x-canary: 1",
            m.who("/echo", &[("x-canary", "1")]).await,
        );
        out.insert("2 GET /", m.who("/echo", &[]).await);
        let r = m.get("/fail-first/2/interop", &[]).await;
        out.insert(
            "3 GET /fail-first/2 (retry 5xx x2)",
            r.map_or_else(
                |e| e,
                |r| format!("{} from {:?}", r.status, r.headers.get("x-server")),
            ),
        );
        let post = http::Request::post("/fail-first/1/interop-body")
            .header("host", "web.shop.svc.cluster.local:8080")
            .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 4096])))
            .unwrap();
        let r = m.send(post).await;
        out.insert(
            "4 POST 4 KiB /fail-first/1 (over the 1 KiB limit)",
            r.map_or_else(|e| e, |r| r.status.as_u16().to_string()),
        );
        let r = m.get("/delay/3000", &[]).await;
        out.insert(
            "5 GET /delay/3000 (request timeout 300 ms)",
            r.map_or_else(|e| e, |r| r.status.as_u16().to_string()),
        );
        let r = m.get("/moved/here?x=1", &[]).await;
        out.insert(
            "6 GET /moved (redirect filter)",
            r.map_or_else(
                |e| e,
                |r| format!("{} {:?}", r.status.as_u16(), r.headers.get("location")),
            ),
        );
        let (mut a, mut b) = (0, 0);
        for _ in 0..100 {
            match m.who("/split", &[]).await.as_str() {
                "web-a" => a += 1,
                "web-b" => b += 1,
                _ => {}
            }
        }
        // 70 expected (binomial sd 4.6): report the side of the split.
        let split = if (55..=85).contains(&a) {
            "70/30"
        } else {
            "off"
        };
        out.insert(
            "7 GET /split x100 (70/30)",
            format!("{split} (web-a {a}, web-b {b})"),
        );
        // The first requests may wait out the empty backend's failfast timeout.
        for _ in 0..3 {
            m.who("/failover", &[]).await;
        }
        let mut failover = Vec::new();
        for _ in 0..5 {
            failover.push(m.who("/failover", &[]).await);
        }
        failover.dedup();
        out.insert(
            "8 GET /failover x5 (FirstAvailable [empty, web-b])",
            failover.join(","),
        );
        let forbidden: std::net::SocketAddr = format!("{VIP}:9999").parse().unwrap();
        let refused = async {
            let mut c = connect_in(&m.client.pod.ns, forbidden).await.ok()?;
            let _ = c.write_all(b"hello").await;
            let mut buf = [0u8; 8];
            tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
                .await
                .ok()
        }
        .await;
        let refused = match refused {
            Some(Ok(0)) | Some(Err(_)) => "closed".to_string(),
            other => format!("{other:?}"),
        };
        out.insert("9 TCP to undefined port 9999", refused);
        out
    }

    /// The label names of the canary route's status series, and its count.
    async fn route_series(m: &PolicyMesh) -> (Vec<String>, f64) {
        let metrics = m.client.pod.metrics().await;
        let family = "outbound_http_route_request_statuses_total";
        let labels = [("route_name", "web-canary"), ("http_status", "200")];
        let names = metrics
            .series(family)
            .find(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(l, _)| l.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        (names, metrics.get(family, &labels))
    }

    async fn run(
        proxy: ClientProxy,
    ) -> Option<(BTreeMap<&'static str, String>, (Vec<String>, f64), String)> {
        let m = PolicyMesh::start(1, proxy, Some(the_policy())).await?;
        m.plane
            .set_outbound(&format!("{VIP}:9999"), Some(undefined_port(9999)));
        let seen = observe(&m).await;
        Some((seen, route_series(&m).await, m.logs()))
    }

    #[tokio::test]
    async fn netns_interop_the_same_outbound_policy_routes_alike_in_remora_and_linkerd2_proxy() {
        let Some(program) = super::linkerd2_proxy() else {
            return;
        };
        let Some((remora, remora_series, remora_logs)) = run(ClientProxy::Remora).await else {
            return;
        };
        let Some((linkerd2, linkerd2_series, linkerd2_logs)) =
            run(ClientProxy::Linkerd2(program)).await
        else {
            return;
        };
        // The split's exact counts differ by chance; its side must not.
        let comparable = |check: &str, v: &str| -> String {
            match check.starts_with("7 ") {
                true => v.split(' ').next().unwrap_or(v).to_string(),
                false => v.to_string(),
            }
        };
        let mut report = String::new();
        for (check, r) in &remora {
            let l = &linkerd2[check];
            let same = if comparable(check, r) == comparable(check, l) {
                "same"
            } else {
                "DIFFERENT"
            };
            report.push_str(&format!(
                "interop: outbound policy: {check}: remora: {r} | linkerd2-proxy: {l} | {same}\n"
            ));
        }
        report.push_str(&format!(
            "interop: outbound policy: route series labels: remora {:?} = {} | linkerd2-proxy {:?} = {}\n",
            remora_series.0, remora_series.1, linkerd2_series.0, linkerd2_series.1
        ));
        print!("{report}");
        for (check, r) in &remora {
            let (r, l) = (comparable(check, r), comparable(check, &linkerd2[check]));
            assert_eq!(
                r, l,
                "{check}\n{report}\n--- remora ---\n{remora_logs}\n--- linkerd2-proxy ---\n{linkerd2_logs}"
            );
        }
        assert_eq!(remora_series.0, linkerd2_series.0, "{report}");
        assert_eq!(remora_series.1, linkerd2_series.1, "{report}");
    }
}

// ---- Linkerd viz's queries: a Remora server pod and a linkerd2-proxy server pod ----

mod viz {
    //! A Remora server pod and a linkerd2-proxy server pod under one plane get the same
    //! scripted load from a Remora client and a linkerd2-proxy client: successes, app 500s
    //! and slow successes. Over two scrapes of each server, Linkerd viz's success rate and p95
    //! ([`remora_tests::promql`]) agree (the success rate exactly, p95 within one latency
    //! bucket), and both pods' inbound series carry the same label names.

    use super::*;
    use remora_tests::admin::Metrics;
    use remora_tests::promql::{
        bucket_of, inbound_latency_quantile, inbound_success_rate, label_names, sum_increase,
    };

    /// Linkerd's latency buckets (ms).
    const BOUNDS: [f64; 25] = [
        1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
        1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
    ];
    /// Per client and server: successes, 500s, and successes after 35 ms (bucket (30, 40]), in
    /// rounds of three, one and one.
    const OK: usize = 30;
    const FAILED: usize = 10;
    const SLOW: usize = 10;
    const PORT: [(&str, &str); 1] = [("target_port", "8080")];

    async fn scrape(pod: &remora_tests::Pod) -> Metrics {
        pod.metrics().await
    }

    #[tokio::test]
    async fn netns_interop_viz_success_rate_p95_and_inbound_labels_match_linkerd2_proxy() {
        let Some(linkerd2) = linkerd2_proxy() else {
            return;
        };
        let Some(net) = Net::new() else { return };
        let plane = LinkerdPlane::start(&net, 1).await;
        let spec = |name: &str, sa: &str, proxy: Proxy| {
            let s = WorkloadSpec::new(name, sa);
            match proxy {
                Proxy::Remora => s,
                Proxy::Linkerd2 => WorkloadSpec {
                    program: Some(linkerd2.clone()),
                    ..s
                },
            }
        };
        let mut servers = Vec::new();
        for (name, proxy) in [("web-r", Proxy::Remora), ("web-l", Proxy::Linkerd2)] {
            let w = plane
                .workload(
                    &net,
                    spec(name, "web", proxy).app(test_server(HTTP, name), HTTP),
                )
                .await;
            plane.add_service(
                &w.pod.addr4(HTTP).to_string(),
                vec![Endpoint {
                    addr: w.pod.addr4(HTTP),
                    sa: "web".into(),
                    ns: "shop".into(),
                    pod: w.pod.name.clone(),
                    opaque: false,
                }],
            );
            servers.push((proxy, w));
        }
        let mut clients = Vec::new();
        for (name, proxy) in [("client-r", Proxy::Remora), ("client-l", Proxy::Linkerd2)] {
            clients.push((
                proxy,
                plane.workload(&net, spec(name, "client", proxy)).await,
            ));
        }
        let logs = || {
            servers
                .iter()
                .chain(&clients)
                .map(|(p, w)| {
                    format!(
                        "--- {} ({}) ---\n{}",
                        w.pod.name,
                        p.name(),
                        w.pod.proxy().log()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        // One warm-up request per pair, so both servers have their series before the first
        // scrape (Prometheus cannot see an increase of a series it never scraped).
        for (_, c) in &clients {
            for (_, s) in &servers {
                let target = s.pod.addr4(HTTP);
                let mut conn = http1(&c.pod.ns, target).await;
                let r = send1(&mut conn, get(&target.to_string(), "/echo"))
                    .await
                    .unwrap_or_else(|e| panic!("warm-up: {e}\n{}", logs()));
                assert_eq!(r.status, 200, "{}\n{}", r.text(), logs());
            }
        }
        let warm = (clients.len()) as f64;
        let mut before = Vec::new();
        for (_, s) in &servers {
            let pod = &s.pod;
            let ok = eventually(Duration::from_secs(20), || async {
                sum_increase(
                    &Metrics {
                        text: String::new(),
                    },
                    &scrape(pod).await,
                    "response_total",
                    &[("direction", "inbound")],
                ) >= warm
            })
            .await;
            assert!(
                ok,
                "{} counted no warm-up responses\n{}",
                pod.name,
                scrape(pod).await.text
            );
            before.push(scrape(pod).await);
        }
        // The same script from each client to each server.
        for (_, c) in &clients {
            for (_, s) in &servers {
                let target = s.pod.addr4(HTTP);
                let host = target.to_string();
                let mut conn = http1(&c.pod.ns, target).await;
                // Interleaved: a run of failures would eject the endpoint from the client's
                // balancer (consecutive-failure accrual).
                let round = [
                    ("/echo", 200),
                    ("/echo", 200),
                    ("/echo", 200),
                    ("/status/500", 500),
                    ("/delay/35", 200),
                ];
                let script = round.into_iter().cycle().take(OK + FAILED + SLOW);
                for (path, want) in script {
                    let r = within_secs(30, send1(&mut conn, get(&host, path)))
                        .await
                        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", logs()));
                    assert_eq!(r.status, want, "{path}: {}\n{}", r.text(), logs());
                }
            }
        }
        let per_server = (clients.len() * (OK + FAILED + SLOW)) as f64;
        let mut answers = Vec::new();
        for ((proxy, s), before) in servers.iter().zip(&before) {
            let pod = &s.pod;
            let settled = eventually(Duration::from_secs(20), || async {
                sum_increase(
                    before,
                    &scrape(pod).await,
                    "response_total",
                    &[("direction", "inbound")],
                ) >= per_server
            })
            .await;
            let after = scrape(pod).await;
            assert!(
                settled,
                "{}: not all responses counted\n{}",
                pod.name, after.text
            );
            let rate = inbound_success_rate(before, &after, &PORT).expect("traffic");
            let p95 = inbound_latency_quantile(0.95, before, &after, &PORT);
            let labels: Vec<_> = [
                "request_total",
                "response_total",
                "response_latency_ms_bucket",
            ]
            .iter()
            .map(|f| {
                (
                    *f,
                    label_names(&after, f, &[("direction", "inbound"), PORT[0]]),
                )
            })
            .collect();
            println!(
                "interop: viz: {} pod ({}): success rate {:.4}, p95 {:.2} ms, inbound request_total labels {:?}",
                proxy.name(),
                pod.name,
                rate,
                p95,
                labels[0].1
            );
            answers.push((*proxy, rate, p95, labels, after));
        }
        let (r, l) = (&answers[0], &answers[1]);
        let want = (OK + SLOW) as f64 / (OK + FAILED + SLOW) as f64;
        assert!(
            (l.1 - want).abs() < 1e-9,
            "linkerd2-proxy's success rate {} != {want}\n{}",
            l.1,
            l.4.text
        );
        assert_eq!(
            r.1, l.1,
            "success rates: remora {} vs linkerd2-proxy {}\n{}",
            r.1, l.1, r.4.text
        );
        assert_eq!(
            bucket_of(r.2, &BOUNDS),
            bucket_of(l.2, &BOUNDS),
            "p95: remora {} ms vs linkerd2-proxy {} ms",
            r.2,
            l.2
        );
        for ((family, remora), (_, linkerd2)) in r.3.iter().zip(&l.3) {
            assert_eq!(
                remora, linkerd2,
                "{family}: inbound label names differ\nremora: {remora:?}\nlinkerd2-proxy: {linkerd2:?}"
            );
            println!("interop: viz: inbound {family} label names equal: {remora:?}");
        }
        // And the same values, but the pod's own address: the same server, route,
        // authorization and callers.
        let values = |m: &Metrics| -> std::collections::BTreeSet<(String, String)> {
            m.series("request_total")
                .filter(|(l, _)| {
                    l.iter().any(|(k, v)| k == "direction" && v == "inbound")
                        && l.iter().any(|(k, v)| k == "target_port" && v == "8080")
                })
                .flat_map(|(l, _)| l.into_iter())
                .filter(|(k, v)| !v.is_empty() && k != "target_addr" && k != "target_ip")
                .collect()
        };
        let (rv, lv) = (values(&r.4), values(&l.4));
        assert_eq!(rv, lv, "inbound request_total label values differ");
        println!("interop: viz: inbound request_total label values equal: {rv:?}");
        println!(
            "interop: viz: success rate equal ({:.4}); p95 remora {:.2} ms, linkerd2-proxy {:.2} ms, both in bucket {:?}",
            r.1,
            r.2,
            l.2,
            bucket_of(r.2, &BOUNDS)
        );
    }

    async fn within_secs<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .unwrap_or_else(|_| panic!("did not finish within {secs} s"))
    }
}
