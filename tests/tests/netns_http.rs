//! HTTP through the mesh (A's app → A's proxy → mTLS → B's proxy → B's app): HTTP/1.1, HTTP/2,
//! gRPC, WebSocket, big bodies, many streams, routing by authority, detection and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use remora_tests::apps::{name, test_server};
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::http::{get, grpc_channel, grpc_count, grpc_echo, http1, http2, send1, send2};
use remora_tests::services::Service;
use remora_tests::{Net, Pod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 8080;
const VIP: &str = "10.96.0.40:8080";
const HOST: &str = "web.shop.svc.cluster.local:8080";

struct Mesh {
    net: Net,
    _pki: Pki,
    east: ClusterPlane,
    a: Pod,
    b: Pod,
}

/// A (client, web.shop) and B (test-server "b" on 8080, echo.shop) meshed, service `web` →
/// B at 10.96.0.40:8080.
async fn mesh(b_env: &[(&str, &str)]) -> Option<Mesh> {
    let net = Net::new()?;
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let mut b = net
        .pod("b")
        .app(test_server(PORT, "b"))
        .control_plane(&east.cp, "echo", "shop");
    for (k, v) in b_env {
        b = b.env(k, v);
    }
    let b = b.meshed().start().await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    east.cp
        .apply(&[Service::new("web", "shop")
            .vip("10.96.0.40")
            .port(PORT)
            .endpoint(&b, "echo")])
        .await;
    Some(Mesh {
        net,
        _pki: pki,
        east,
        a,
        b,
    })
}

#[tokio::test]
async fn netns_http1_and_http2_cross_with_identities() {
    let Some(m) = mesh(&[]).await else { return };
    let web_id = m.east.cp.identity("web", "shop");
    // HTTP/1.1, with a forged l5d-client-id that must not survive.
    let mut h1 = http1(&m.a.ns, VIP.parse().unwrap()).await;
    let mut req = get(HOST, "/echo");
    req.headers_mut()
        .insert("l5d-client-id", "forged.example".parse().unwrap());
    let r = send1(&mut h1, req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["server"], "b");
    assert_eq!(echo["version"], "HTTP/1.1", "B's app got HTTP/1.1 back");
    assert_eq!(echo["headers"]["l5d-client-id"], web_id.as_str());
    assert!(echo["headers"].get("l5d-orig-proto").is_none());
    assert!(r.headers.get("l5d-orig-proto").is_none());
    // A POST with a body, keep-alive on the same connection.
    let post = Request::post("/echo")
        .header("host", HOST)
        .body(Full::new(Bytes::from(vec![7u8; 5000])))
        .unwrap();
    let r = send1(&mut h1, post).await.unwrap();
    assert_eq!(r.json()["body_bytes"], 5000);
    // HTTP/2 from the app stays HTTP/2.
    let mut h2 = http2(&m.a.ns, VIP.parse().unwrap()).await;
    let r = send2(&mut h2, get(HOST, "/echo")).await.unwrap();
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["headers"]["l5d-client-id"], web_id.as_str());
    // Trailers arrive intact.
    let r = send2(&mut h2, get(HOST, "/trailers")).await.unwrap();
    assert_eq!(r.trailers.unwrap()["x-trailer"], "yes");
    drop(m.net);
}

#[tokio::test]
async fn netns_grpc_unary_streaming_and_status() {
    let Some(m) = mesh(&[]).await else { return };
    let channel = grpc_channel(&m.a.ns, VIP.parse().unwrap()).await;
    let reply = grpc_echo(channel.clone(), "hello", 0).await.unwrap();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.client_id, m.east.cp.identity("web", "shop"));
    assert_eq!(
        grpc_count(channel.clone(), 100).await.unwrap(),
        (0..100).collect::<Vec<_>>()
    );
    let err = grpc_echo(channel, "x", 14).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "grpc-status preserved: {err:?}"
    );
}

#[tokio::test]
async fn netns_http1_apps_share_one_http2_connection_between_proxies() {
    let Some(m) = mesh(&[]).await else { return };
    for _ in 0..5 {
        let mut h1 = http1(&m.a.ns, VIP.parse().unwrap()).await;
        for _ in 0..3 {
            let r = send1(&mut h1, get(HOST, "/echo")).await.unwrap();
            assert_eq!(r.json()["version"], "HTTP/1.1");
        }
    }
    let am = m.a.metrics().await;
    let bm = m.b.metrics().await;
    assert_eq!(
        am.get(
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "src")]
        ),
        5.0,
        "five app connections"
    );
    assert_eq!(
        am.get(
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "dst"), ("tls", "true")]
        ),
        1.0,
        "one mTLS connection to B:\n{}",
        am.text
    );
    assert_eq!(
        bm.get(
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src"), ("tls", "true")]
        ),
        1.0
    );
}

#[tokio::test]
async fn netns_websocket_echo_crosses_the_mesh() {
    let Some(m) = mesh(&[]).await else { return };
    let mut c = m.a.connect(VIP.parse().unwrap()).await.unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET /ws HTTP/1.1\r\nhost: {HOST}\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // A masked text frame "hello mesh"; the echo comes back unmasked.
    let payload = b"hello mesh";
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.write_all(&frame).await.unwrap();
    let mut reply = vec![0u8; 2 + payload.len()];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply[..2], &[0x81, payload.len() as u8]);
    assert_eq!(&reply[2..], payload);
}

#[tokio::test]
async fn netns_routing_follows_the_authority() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let b1 = net
        .pod("b1")
        .app(test_server(PORT, "b1"))
        .control_plane(&east.cp, "one", "shop")
        .meshed()
        .start()
        .await;
    let b2 = net
        .pod("b2")
        .app(test_server(PORT, "b2"))
        .control_plane(&east.cp, "two", "shop")
        .meshed()
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    east.cp
        .apply(&[
            Service::new("one", "shop")
                .vip("10.96.0.41")
                .port(PORT)
                .endpoint(&b1, "one"),
            Service::new("two", "shop")
                .vip("10.96.0.42")
                .port(PORT)
                .endpoint(&b2, "two"),
        ])
        .await;
    let mut h1 = http1(&a.ns, "10.96.0.41:8080".parse().unwrap()).await;
    let r = send1(&mut h1, get("one.shop.svc.cluster.local:8080", "/echo"))
        .await
        .unwrap();
    assert_eq!(r.json()["server"], "b1");
    // The same connection to one's IP, with two's Host: it goes to two.
    let r = send1(&mut h1, get("two.shop.svc.cluster.local:8080", "/echo"))
        .await
        .unwrap();
    assert_eq!(r.json()["server"], "b2");
    // An authority discovery does not know falls back to the original destination.
    let r = send1(&mut h1, get("unknown.example:8080", "/echo"))
        .await
        .unwrap();
    assert_eq!(r.json()["server"], "b1");
}

#[tokio::test]
async fn netns_big_bodies_stream_and_many_streams_multiplex() {
    let Some(m) = mesh(&[]).await else { return };
    // 1 GiB up, streamed: the proxies never hold the body.
    let gib: u64 = 1 << 30;
    let body = http_body_util::StreamBody::new(futures_like::chunks(gib));
    let stream = m.a.connect(VIP.parse().unwrap()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/upload")
        .header("host", HOST)
        .body(body)
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(600), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let text = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(String::from_utf8_lossy(&text).trim(), gib.to_string());
    for pod in [&m.a, &m.b] {
        let hwm = vm_hwm_kib(pod.proxy().pid());
        assert!(
            hwm < 100 * 1024,
            "proxy of {} peaked at {hwm} KiB while 1 GiB crossed it",
            pod.name
        );
    }
    // 1 000 concurrent HTTP/2 streams on one connection.
    let h2 = http2(&m.a.ns, VIP.parse().unwrap()).await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let mut s = h2.clone();
            tokio::spawn(async move {
                send2(&mut s, get(HOST, "/delay/200"))
                    .await
                    .map(|r| r.status)
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(s)) if s == 200) {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
}

/// Peak resident memory of a process (KiB).
fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

mod futures_like {
    use bytes::Bytes;
    use hyper::body::Frame;

    pub use tokio_stream::Stream;

    /// `total` bytes as 64 KiB frames, made as they are polled.
    pub fn chunks(
        total: u64,
    ) -> impl Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> {
        const CHUNK: u64 = 64 * 1024;
        let chunk = Bytes::from(vec![0x42u8; CHUNK as usize]);
        tokio_stream::iter((0..total.div_ceil(CHUNK)).map(move |i| {
            let n = CHUNK.min(total - i * CHUNK) as usize;
            Ok(Frame::data(chunk.slice(..n)))
        }))
    }
}

#[tokio::test]
async fn netns_detection_spares_server_first_and_silent_clients() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let east = ClusterPlane::east(&net, &pki).await;
    let b = net
        .pod("b")
        .app(name(3306, "mysql-like"))
        .app(name(7000, "quiet"))
        .control_plane(&east.cp, "echo", "shop")
        .env("REMORA_INBOUND_DETECT_TIMEOUT", "1s")
        .meshed()
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .env("REMORA_OUTBOUND_DETECT_TIMEOUT", "1s")
        .meshed()
        .start()
        .await;
    // Port 3306 is opaque by default: the server speaks first and is heard at once.
    let started = tokio::time::Instant::now();
    let got = remora_tests::apps::ask_name(&a.ns, b.addr4(3306))
        .await
        .unwrap();
    assert_eq!(got, "mysql-like");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no detection wait: {:?}",
        started.elapsed()
    );
    // A client that sends nothing still reaches its app once detection gives up.
    let got = remora_tests::apps::ask_name(&a.ns, b.addr4(7000))
        .await
        .unwrap();
    assert_eq!(got, "quiet");
}

#[tokio::test]
async fn netns_malformed_http_is_answered_and_the_proxy_keeps_serving() {
    let Some(m) = mesh(&[]).await else { return };
    let vip = VIP.parse().unwrap();
    let big = "x".repeat(100 * 1024);
    let cases: Vec<(String, &[&str])> = vec![
        ("GET /echo HTTP/1.1\r\nhost: a\r\nbad header line\r\n\r\n".into(), &["400"]),
        (format!("GET /echo HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\n\r\n"), &["431"]),
        ("POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".into(), &["400", ""]),
        ("POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n".into(), &["400", ""]),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x09garbage-garbage-garbage".into(), &[""]),
    ];
    for (raw, allowed) in cases {
        let mut c = m.a.connect(vip).await.unwrap();
        c.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        let status = text.split_whitespace().nth(1).unwrap_or("").to_string();
        let status = if text.starts_with("HTTP/1.1") {
            status
        } else {
            String::new()
        };
        assert!(
            allowed.contains(&status.as_str()),
            "{:?}... got {:?}",
            &raw[..raw.len().min(40)],
            &text[..text.len().min(200)]
        );
        assert!(!text.contains("smuggled"), "a smuggled request got through");
    }
    let mut h1 = http1(&m.a.ns, vip).await;
    assert_eq!(
        send1(&mut h1, get(HOST, "/echo")).await.unwrap().status,
        200
    );
    assert!(m.a.proxy().is_running() && m.b.proxy().is_running());
}

#[tokio::test]
async fn netns_proxy_errors_are_clear_and_only_ours_keep_their_header() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let db = east.cp.identity("db", "shop");
    let b = net
        .pod("b")
        .app(test_server(PORT, "b"))
        .control_plane(&east.cp, "echo", "shop")
        .env("REMORA_INBOUND_PORT_POLICIES", &format!("8081=allow({db})"))
        .meshed()
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .env("REMORA_DESTINATION_TIMEOUT", "1s")
        .meshed()
        .start()
        .await;
    east.cp
        .apply(&[
            Service::new("empty", "shop").vip("10.96.0.50").port(PORT),
            Service::new("private", "shop")
                .vip("10.96.0.51")
                .port(8081)
                .endpoint(&b, "echo"),
            Service::new("dead", "shop")
                .vip("10.96.0.52")
                .port(9999)
                .endpoint(&b, "echo"),
            Service::new("impostor", "shop")
                .vip("10.96.0.53")
                .port(PORT)
                .endpoint(&b, "other"),
        ])
        .await;
    let ask = |vip: &'static str, host: &'static str| {
        let ns = a.ns.clone();
        async move {
            let mut h1 = http1(&ns, vip.parse().unwrap()).await;
            send1(&mut h1, get(host, "/echo")).await.unwrap()
        }
    };
    // Made by A: no endpoints, and a peer that fails identity verification.
    let r = ask("10.96.0.50:8080", "empty.shop.svc.cluster.local:8080").await;
    assert_eq!(r.status, 503);
    assert!(
        r.headers["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .contains("no endpoints")
    );
    let r = ask("10.96.0.53:8080", "impostor.shop.svc.cluster.local:8080").await;
    assert_eq!(r.status, 502);
    assert!(r.headers.contains_key("l5d-proxy-error"), "{:?}", r.headers);
    // Made by B (policy 403, the app unreachable): the status crosses, B's header does not.
    let r = ask("10.96.0.51:8081", "private.shop.svc.cluster.local:8081").await;
    assert_eq!(r.status, 403);
    assert!(
        !r.headers.contains_key("l5d-proxy-error"),
        "{:?}",
        r.headers
    );
    let r = ask("10.96.0.52:9999", "dead.shop.svc.cluster.local:9999").await;
    assert_eq!(r.status, 502);
    assert!(!r.headers.contains_key("l5d-proxy-error"));

    let am = a.metrics().await;
    let errs = |m: &remora_tests::admin::Metrics, dir: &str, status: &str, reason: &str| {
        m.get(
            "http_proxy_errors_total",
            &[("direction", dir), ("status", status), ("reason", reason)],
        )
    };
    assert_eq!(
        errs(&am, "outbound", "503", "no_endpoints"),
        1.0,
        "{}",
        am.text
    );
    assert_eq!(errs(&am, "outbound", "502", "connect"), 1.0);
    let bm = b.metrics().await;
    assert_eq!(
        errs(&bm, "inbound", "403", "policy_not_allowed"),
        1.0,
        "{}",
        bm.text
    );
    assert_eq!(errs(&bm, "inbound", "502", "app"), 1.0);
    assert!(
        a.proxy()
            .wait_log("no endpoints for", Duration::from_secs(10))
            .await
    );
    assert!(
        b.proxy()
            .wait_log(
                "the peer's identity is not on the port's allow-list",
                Duration::from_secs(10)
            )
            .await
    );
}
