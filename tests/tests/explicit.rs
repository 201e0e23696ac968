//! Explicit mode: pods on loopback addresses of their own, no namespaces, no iptables, no
//! root. Apps use their proxy's outbound listener as `HTTP_PROXY`; pods are announced with
//! opaque transport so peers reach them through the inbound port.
//!
//! Each test uses its own range of loopback addresses (`loopback(n)`), so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use remora_tests::apps::{echo, echo_roundtrip, test_server};
use remora_tests::explicit::{Cluster, WEB, first_answer, proxy_get, web};
use remora_tests::http::{grpc_channel_via, grpc_echo, http1, http2, send1, send2};
use remora_tests::netns::HOST;
use remora_tests::services::{RouteExt, Service, route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads an HTTP/1 response head byte by byte (nothing after it is consumed).
async fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut byte)).await;
        match read {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn tcp_opens(m: &remora_tests::admin::Metrics, labels: &[(&str, &str)]) -> f64 {
    m.get("tcp_open_total", labels)
}

#[tokio::test]
async fn explicit_http1_http2_and_grpc_reach_a_meshed_service_over_mtls() {
    let mut east = Cluster::start(10).await;
    let b = east.pod("b", 12, "web", vec![test_server(8080, "b")]).await;
    let a = east.pod("a", 11, "client", vec![]).await;
    east.cp.apply(&[web(&[&b])]).await;

    // HTTP/1.1, absolute-form, as HTTP_PROXY clients send it.
    let r = first_answer(&a, "/echo").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(
        echo["headers"]["l5d-client-id"],
        a.identity.as_str(),
        "{echo}"
    );
    assert_eq!(echo["headers"]["host"], WEB, "{echo}");
    assert_eq!(echo["version"], "HTTP/1.1", "{echo}");
    assert_eq!(echo["uri"], "/echo", "the app gets origin-form: {echo}");
    assert_eq!(r.headers["x-server"], "b");

    // HTTP/2 (prior knowledge) to the proxy, routed by :authority, HTTP/2 to the app.
    let mut h2 = http2(HOST, a.proxy_addr()).await;
    let r = send2(&mut h2, proxy_get(WEB, "/echo")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(
        echo["headers"]["l5d-client-id"],
        a.identity.as_str(),
        "{echo}"
    );
    assert_eq!(echo["version"], "HTTP/2.0", "{echo}");

    // gRPC over that path, with a non-OK status carried through.
    let channel = grpc_channel_via(HOST, a.proxy_addr(), WEB).await;
    let reply = grpc_echo(channel.clone(), "hello", 0).await.unwrap();
    assert_eq!(reply.message, "hello");
    let status = grpc_echo(channel, "x", 14).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // Both sides saw mTLS with the other's identity.
    let b_id = b.identity.as_str();
    assert!(
        tcp_opens(
            &a.metrics().await,
            &[
                ("direction", "outbound"),
                ("peer", "dst"),
                ("tls", "true"),
                ("server_id", b_id)
            ]
        ) >= 1.0
    );
    assert!(
        tcp_opens(
            &b.metrics().await,
            &[
                ("direction", "inbound"),
                ("peer", "src"),
                ("tls", "true"),
                ("client_id", a.identity.as_str())
            ]
        ) >= 1.0
    );
    // Every connection b's proxy accepted was mTLS.
    let m = b.metrics().await;
    assert_eq!(
        tcp_opens(
            &m,
            &[
                ("direction", "inbound"),
                ("peer", "src"),
                ("tls", "no_identity")
            ]
        ),
        0.0,
        "{}",
        m.text
    );

    // A destination discovery does not know (an IP literal outside the mesh) is reached as is,
    // in plaintext.
    let _outside = test_server(8080, "outside")
        .start_on(remora_tests::local::loopback(15))
        .unwrap();
    let target = SocketAddr::new(remora_tests::local::loopback(15), 8080).to_string();
    let mut h1 = http1(HOST, a.proxy_addr()).await;
    let r = send1(&mut h1, proxy_get(&target, "/echo")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-server"], "outside");
    assert!(r.json()["headers"].get("l5d-client-id").is_none());
}

#[tokio::test]
async fn explicit_connect_tunnels_raw_tcp_byte_exact_over_mtls() {
    let mut east = Cluster::start(20).await;
    let b = east.pod("b", 22, "echo", vec![echo(7000)]).await;
    let a = east.pod("a", 21, "client", vec![]).await;
    east.cp
        .apply(&[Service::new("echo", "shop")
            .port(7000)
            .explicit_endpoint("b", b.ip(), "echo")])
        .await;

    // By name, then by the pod's IP: both resolve through discovery to b, over mTLS.
    let by_ip = SocketAddr::new(b.ip(), 7000).to_string();
    for (i, target) in ["echo.shop.svc.cluster.local:7000", by_ip.as_str()]
        .into_iter()
        .enumerate()
    {
        let mut conn = TcpStream::connect(a.proxy_addr()).await.unwrap();
        conn.write_all(format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{target}: {head}");
        let len = 1024 * 1024 + 7;
        let echoed = tokio::time::timeout(Duration::from_secs(60), echo_roundtrip(conn, len))
            .await
            .expect("the echo finished")
            .unwrap();
        assert_eq!(echoed, len, "{target}");
        let m = b.metrics().await;
        assert_eq!(
            tcp_opens(
                &m,
                &[
                    ("direction", "inbound"),
                    ("peer", "src"),
                    ("tls", "true"),
                    ("client_id", a.identity.as_str())
                ]
            ),
            (i + 1) as f64,
            "{}",
            m.text
        );
    }
    assert_eq!(b.app(0).accepted(), 2);
    let m = a.metrics().await;
    assert_eq!(
        tcp_opens(
            &m,
            &[
                ("direction", "outbound"),
                ("peer", "dst"),
                ("tls", "true"),
                ("server_id", b.identity.as_str())
            ]
        ),
        2.0,
        "{}",
        m.text
    );

    // No endpoints: the client hears 503 before any byte is tunnelled.
    east.cp
        .apply(&[Service::new("echo", "shop").port(7000)])
        .await;
    let mut answered = String::new();
    for _ in 0..300 {
        let mut conn = TcpStream::connect(a.proxy_addr()).await.unwrap();
        conn.write_all(b"CONNECT echo.shop.svc.cluster.local:7000 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        answered = read_head(&mut conn).await;
        if answered.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered.starts_with("HTTP/1.1 503"), "{answered}");
    assert!(answered.contains("l5d-proxy-error"), "{answered}");
}

/// A retryable GET route for `/fail-first/...` and a 1 s timeout for `/delay/...`.
fn routes(s: Service) -> Service {
    s.route(
        route("get-flaky", "/fail-first/.*")
            .method("GET")
            .retryable(),
    )
    .route(route("slow", "/delay/.*").timeout("1s"))
}

#[tokio::test]
async fn explicit_requests_are_retried_as_in_transparent_mode() {
    let mut east = Cluster::start(30).await;
    let b = east.pod("b", 32, "web", vec![test_server(8080, "b")]).await;
    let a = east.pod("a", 31, "client", vec![]).await;
    east.cp.apply(&[routes(web(&[&b]))]).await;
    assert_eq!(first_answer(&a, "/echo").await.status, 200);
    // The profile travels with the endpoints, but on a stream of its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut h1 = http1(HOST, a.proxy_addr()).await;
    let r = send1(&mut h1, proxy_get(WEB, "/fail-first/2/get"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let m = a.metrics().await;
    assert_eq!(
        m.get("retries_total", &[("reason", "status")]),
        2.0,
        "{}",
        m.text
    );
}

#[tokio::test]
async fn explicit_requests_time_out_as_in_transparent_mode() {
    let mut east = Cluster::start(40).await;
    let b = east.pod("b", 42, "web", vec![test_server(8080, "b")]).await;
    let a = east.pod("a", 41, "client", vec![]).await;
    east.cp.apply(&[routes(web(&[&b]))]).await;
    assert_eq!(first_answer(&a, "/echo").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut h1 = http1(HOST, a.proxy_addr()).await;
    let started = tokio::time::Instant::now();
    let r = send1(&mut h1, proxy_get(WEB, "/delay/5000")).await.unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.headers["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .contains("timed out")
    );
    // A 1 s route timeout against a 5 s handler (generous for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.metrics().await.get("request_timeouts_total", &[]), 1.0);
}

#[tokio::test]
async fn explicit_requests_are_balanced_toward_the_fast_endpoint() {
    let mut east = Cluster::start(50).await;
    let fast = east
        .pod("fast", 52, "web", vec![test_server(8080, "fast")])
        .await;
    let slow = east
        .pod("slow", 53, "web", vec![test_server(8080, "slow")])
        .await;
    slow.app(0)
        .server
        .as_ref()
        .unwrap()
        .delay_ms
        .store(50, Ordering::Relaxed);
    let a = east.pod("a", 51, "client", vec![]).await;
    east.cp.apply(&[web(&[&fast, &slow])]).await;
    assert_eq!(first_answer(&a, "/echo").await.status, 200);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = a.proxy_addr();
        tasks.push(tokio::spawn(async move {
            let mut h1 = http1(HOST, addr).await;
            let mut servers = Vec::new();
            for _ in 0..80 {
                let r = send1(&mut h1, proxy_get(WEB, "/echo")).await.unwrap();
                assert_eq!(r.status, 200);
                servers.push(r.headers["x-server"].to_str().unwrap().to_string());
            }
            servers
        }));
    }
    let mut servers = Vec::new();
    for t in tasks {
        servers.extend(t.await.unwrap());
    }
    let on_fast = servers.iter().filter(|s| *s == "fast").count();
    let on_slow = servers.iter().filter(|s| *s == "slow").count();
    assert_eq!(on_fast + on_slow, 800);
    assert!(on_fast > 520, "the fast endpoint got {on_fast} of 800");
    assert!(on_slow > 0, "the slow endpoint was still probed");
}

#[tokio::test]
async fn explicit_malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let mut east = Cluster::start(60).await;
    let b = east.pod("b", 62, "web", vec![test_server(8080, "b")]).await;
    let a = east.pod("a", 61, "client", vec![]).await;
    east.cp.apply(&[web(&[&b])]).await;
    assert_eq!(first_answer(&a, "/echo").await.status, 200);

    let cases: [(&str, &[u8]); 6] = [
        ("not HTTP", b"\x16\x03\x01\x00\x05hello, this is not HTTP\r\n\r\n"),
        ("origin-form", b"GET /echo HTTP/1.1\r\nhost: web.shop.svc.cluster.local:8080\r\n\r\n"),
        ("https absolute-form", b"GET https://web.shop.svc.cluster.local:8080/ HTTP/1.1\r\nhost: x\r\n\r\n"),
        ("CONNECT without a port", b"CONNECT web.shop.svc.cluster.local HTTP/1.1\r\n\r\n"),
        ("a broken header", b"GET http://web.shop.svc.cluster.local:8080/ HTTP/1.1\r\nno colon here\r\n\r\n"),
        (
            "content-length and transfer-encoding",
            b"POST http://web.shop.svc.cluster.local:8080/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let mut conn = TcpStream::connect(a.proxy_addr()).await.unwrap();
        conn.write_all(bytes).await.unwrap();
        let head = read_head(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{what}: {head:?}");
        // And the proxy still serves.
        let mut h1 = http1(HOST, a.proxy_addr()).await;
        let r = send1(&mut h1, proxy_get(WEB, "/echo")).await.unwrap();
        assert_eq!(r.status, 200, "after {what}");
    }
    // A request naming the proxy's own listener would loop: refused, not followed.
    let own = a.proxy_addr().to_string();
    let mut h1 = http1(HOST, a.proxy_addr()).await;
    let r = send1(&mut h1, proxy_get(&own, "/")).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("own listeners"), "{}", r.text());

    let m = a.metrics().await;
    assert_eq!(
        m.get(
            "tcp_refused_total",
            &[("direction", "outbound"), ("reason", "explicit_not_http")]
        ),
        1.0,
        "{}",
        m.text
    );
    assert!(a.proxy.process.is_running());
}

/// Runs curl with `args` and `env`; `None` when curl is not installed (a failure in CI).
async fn curl(args: &[&str], env: &[(&str, String)]) -> Option<String> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"])
        .args(args)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output().await {
        Ok(out) => {
            assert!(
                out.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("REMORA_REQUIRE_NETNS").as_deref() != Ok("1"),
                "curl is not installed (.ci/run installs it)"
            );
            None
        }
        Err(e) => panic!("curl: {e}"),
    }
}

#[tokio::test]
async fn explicit_an_unchanged_http_proxy_client_works() {
    let mut east = Cluster::start(70).await;
    let b = east.pod("b", 72, "web", vec![test_server(8080, "b")]).await;
    let a = east.pod("a", 71, "client", vec![]).await;
    east.cp.apply(&[web(&[&b])]).await;
    assert_eq!(first_answer(&a, "/echo").await.status, 200);
    let proxy = format!("http://{}", a.proxy_addr());
    let url = format!("http://{WEB}/echo");

    // `http_proxy` in the environment, as apps are configured.
    let Some(out) = curl(&[&url], &[("http_proxy", proxy.clone())]).await else {
        return;
    };
    let echo: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(echo["server"], "b", "{echo}");
    assert_eq!(
        echo["headers"]["l5d-client-id"],
        a.identity.as_str(),
        "{echo}"
    );

    // `curl -p`: a CONNECT tunnel, inside which curl speaks HTTP itself. The tunnel is opaque
    // end to end, so b's proxy adds nothing to the request, but it is still mTLS between pods.
    let tls_from_a = |m: remora_tests::admin::Metrics| {
        tcp_opens(
            &m,
            &[
                ("direction", "inbound"),
                ("peer", "src"),
                ("tls", "true"),
                ("client_id", a.identity.as_str()),
            ],
        )
    };
    let before = tls_from_a(b.metrics().await);
    let out = curl(&["-p", "-x", &proxy, &url], &[]).await.unwrap();
    let echo: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(echo["server"], "b", "{echo}");
    assert!(echo["headers"].get("l5d-client-id").is_none(), "{echo}");
    assert_eq!(tls_from_a(b.metrics().await), before + 1.0);
}

/// `GET http://shop.example.com{path}` with `l5d-dst-override: {target}`, as an ingress
/// controller sends it through an ingress-mode proxy.
fn overridden(target: &str, path: &str) -> http::Request<remora_tests::http::Body> {
    http::Request::get(format!("http://shop.example.com{path}"))
        .header("host", "shop.example.com")
        .header("l5d-dst-override", target)
        .body(Default::default())
        .unwrap()
}

#[tokio::test]
async fn ingress_mode_routes_by_l5d_dst_override() {
    let mut east = Cluster::start(80).await;
    let b = east.pod("b", 82, "web", vec![test_server(8080, "b")]).await;
    let ingress = east
        .pod_with(
            "ingress",
            81,
            "ingress",
            vec![],
            &[("REMORA_INGRESS_MODE", "true")],
        )
        .await;
    east.cp.apply(&[web(&[&b])]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let r = loop {
        let mut h1 = http1(HOST, ingress.proxy_addr()).await;
        let r = send1(&mut h1, overridden(WEB, "/echo")).await.unwrap();
        if r.status == 200 || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(r.headers["x-server"], "b");
    assert_eq!(echo["headers"]["l5d-client-id"], ingress.identity.as_str());
    // The header is the proxy's: the app never sees it; the request's own host is kept.
    assert!(echo["headers"].get("l5d-dst-override").is_none(), "{echo}");
    assert_eq!(echo["headers"]["host"], "shop.example.com");
    // An override that is not host:port is refused.
    let mut h1 = http1(HOST, ingress.proxy_addr()).await;
    let r = send1(&mut h1, overridden("web.shop.svc.cluster.local", "/echo"))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // Without ingress mode the header routes nothing: the request goes by its authority
    // (which resolves nowhere here).
    let plain = east.pod("plain", 83, "client", vec![]).await;
    let mut h1 = http1(HOST, plain.proxy_addr()).await;
    let r = send1(&mut h1, overridden(WEB, "/echo")).await.unwrap();
    assert_ne!(r.status, 200, "{}", r.text());
}
