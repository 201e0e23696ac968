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
//! Each test prints one `interop: <client> -> <server>: ...` line per call on stdout.
//!
//! And linkerd2-proxy under Remora's own control plane, `remora control` in a pod of its own
//! ([`ClusterPlane`]), every pod a linkerd2-proxy given Linkerd's rendered environment pointed
//! at it: the proxies certify, watch both policy APIs for their ports and targets without a
//! policy warning, reach services by virtual IP with and without profile routes (the outbound
//! policy's backend is balanced over Destination's endpoints), follow a route edit (a header
//! match sending to a second backend) without a restart, and refuse with 403 a request no
//! authorization of the server admits.
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

use remora_tests::apps::{connect_in, echo, echo_roundtrip, test_server};
use remora_tests::control::{ClusterPlane, Linkerd2Pod, Pki};
use remora_tests::http::{get, grpc_channel, grpc_count, grpc_echo, http1, http2, send1, send2};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, Workload, WorkloadSpec, workload_identity};
use remora_tests::services::{Service, route};
use remora_tests::{Net, eventually};

const HTTP: u16 = 8080;
/// Opaque by the chart's default (`INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`).
const OPAQUE: u16 = 3306;
/// Bytes sent through the opaque port.
const OPAQUE_BYTES: u64 = 100_000;
/// A Remora server logs its direct path's connections (an explicit `REMORA_*` variable wins
/// over the Linkerd surface's `LINKERD2_PROXY_LOG`).
const REMORA_SERVER_LOG: &str = "info,remora_proxy::inbound=debug";

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
        let server_pod = plane.workload(&net, server_spec).await;
        for (port, opaque) in [(HTTP, false), (OPAQUE, true)] {
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
        let client_pod = plane
            .workload(&net, spec(WorkloadSpec::new("client-0", "client"), client))
            .await;
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
    m.report(
        &format!(
            "HTTP/1.1 ok (app saw HTTP/1.1, l5d-client-id={})",
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
