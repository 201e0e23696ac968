//! Server-speaks-first protocols on ports nobody marked opaque (W2.11): the app's first bytes
//! reach the client at once, through a meshed pair and to or from unmeshed pods, under both
//! configuration surfaces, with every detection timeout at 10 s so a wait is unmistakable;
//! HTTP through the pair is still HTTP, a client-first opaque protocol still works, and
//! `protocol_detect_total` / `protocol_detect_early_dial_total` count what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use remora_tests::apps::{connect_in, echo, listen_in, test_server};
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::http::{get, http1, http2, send1, send2};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, WorkloadSpec};
use remora_tests::services::Service;
use remora_tests::{Net, Pod, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// A port in no opaque list (neither Remora's nor Linkerd's defaults).
const BANNER: u16 = 7100;
const ECHO: u16 = 7200;
const HTTP: u16 = 8080;
const GREETING: &[u8] = b"220 remora-banner ESMTP ready\r\n";
/// Far beyond any early dial, far below the 10 s detection timeouts.
const PROMPT: Duration = Duration::from_secs(1);

/// A server-speaks-first app in namespace `ns`: greets, then echoes.
fn banner_app(ns: &str, port: u16) -> JoinHandle<()> {
    let listener = listen_in(ns, port).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(GREETING).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

/// A minimal HTTP/1.1 app in namespace `ns`: one `200 ok` per request head, keep-alive.
fn http_app(ns: &str, port: u16) -> JoinHandle<()> {
    let listener = listen_in(ns, port).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || head.len() > 64 * 1024 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        let rsp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(rsp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    })
}

/// Connects from `ns` to `addr`, says nothing, and returns how long the greeting took, after
/// checking the connection then echoes; on failure, the logs of `pods`' proxies.
async fn greeted_or_logs(ns: &str, addr: SocketAddr, pods: &[&Pod]) -> Duration {
    match try_greeted(ns, addr).await {
        Ok(took) => took,
        Err(e) => {
            let logs: Vec<String> = pods
                .iter()
                .map(|p| format!("--- {} ---\n{}", p.name, p.proxy().log()))
                .collect();
            panic!("{e} (from {ns} to {addr})\n{}", logs.join("\n"));
        }
    }
}

async fn greeted(ns: &str, addr: SocketAddr) -> Duration {
    greeted_or_logs(ns, addr, &[]).await
}

async fn try_greeted(ns: &str, addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn = connect_in(ns, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut buf = vec![0u8; GREETING.len()];
    tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut buf))
        .await
        .map_err(|_| "no greeting within 30 s".to_string())?
        .map_err(|e| format!("reading the greeting: {e}"))?;
    let took = started.elapsed();
    if buf != GREETING {
        return Err(format!("greeted with {:?}", String::from_utf8_lossy(&buf)));
    }
    conn.write_all(b"EHLO client\r\n")
        .await
        .map_err(|e| format!("writing: {e}"))?;
    let mut echo = vec![0u8; 13];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut echo))
        .await
        .map_err(|_| "no echo within 10 s".to_string())?
        .map_err(|e| format!("reading the echo: {e}"))?;
    if echo != b"EHLO client\r\n" {
        return Err(format!("echoed {:?}", String::from_utf8_lossy(&echo)));
    }
    Ok(took)
}

/// One untimed HTTP/1.1 request from `ns` to `addr`, so the path is known to work (and the
/// neighbour tables filled) before anything is timed.
async fn warm(ns: &str, addr: SocketAddr) {
    let ok = eventually(Duration::from_secs(20), || async {
        let Ok(mut conn) = connect_in(ns, addr).await else {
            return false;
        };
        let req = format!("GET / HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        if conn.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut rsp = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rsp)).await;
        matches!(read, Ok(Ok(_))) && rsp.starts_with(b"HTTP/1.1 ")
    })
    .await;
    assert!(ok, "no HTTP answer from {addr}");
}

/// A client-first opaque exchange: `hello` echoed back.
async fn client_first(ns: &str, addr: SocketAddr) {
    let mut conn = connect_in(ns, addr).await.unwrap();
    conn.write_all(b"hello, server\n").await.unwrap();
    let mut buf = vec![0u8; 14];
    tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut buf))
        .await
        .expect("the echo")
        .unwrap();
    assert_eq!(buf, b"hello, server\n");
}

async fn detect_count(pod: &Pod, direction: &str, result: &str) -> f64 {
    pod.metrics().await.get(
        "protocol_detect_total",
        &[("direction", direction), ("result", result)],
    )
}

async fn early_count(pod: &Pod, direction: &str, outcome: &str) -> f64 {
    pod.metrics().await.get(
        "protocol_detect_early_dial_total",
        &[("direction", direction), ("outcome", outcome)],
    )
}

/// Waits until `pod`'s counter reaches `want` (counters move as connections are handled).
async fn counted(pod: &Pod, direction: &str, result: &str, want: f64) {
    let ok = eventually(Duration::from_secs(10), || async {
        detect_count(pod, direction, result).await >= want
    })
    .await;
    assert!(
        ok,
        "protocol_detect_total{{direction={direction},result={result}}} < {want}:\n{}",
        pod.metrics().await.text
    );
}

const TIMEOUTS: [(&str, &str); 2] = [
    ("REMORA_INBOUND_DETECT_TIMEOUT", "10s"),
    ("REMORA_OUTBOUND_DETECT_TIMEOUT", "10s"),
];

#[tokio::test]
async fn netns_server_first_crosses_a_meshed_pair_at_once_and_http_is_unchanged() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let mut b = net
        .pod("b")
        .app(echo(ECHO))
        .app(test_server(HTTP, "b"))
        .control_plane(&east.cp, "srv", "shop")
        .meshed();
    let mut a = net.pod("a").control_plane(&east.cp, "web", "shop").meshed();
    for (k, v) in TIMEOUTS {
        b = b.env(k, v);
        a = a.env(k, v);
    }
    let b = b.start().await;
    let a = a.start().await;
    let _app = banner_app(&b.ns, BANNER);
    east.cp
        .apply(&[Service::new("srv", "shop")
            .vip("10.96.0.40")
            .port(BANNER)
            .port(ECHO)
            .port(HTTP)
            .endpoint(&b, "srv")])
        .await;
    let vip = |port| SocketAddr::from(([10, 96, 0, 40], port));

    for _ in 0..3 {
        let took = greeted(&a.ns, vip(BANNER)).await;
        assert!(took < PROMPT, "the greeting took {took:?} through the pair");
    }
    counted(&a, "outbound", "opaque_server_first", 3.0).await;
    assert!(early_count(&a, "outbound", "used").await >= 3.0);

    client_first(&a.ns, vip(ECHO)).await;
    counted(&a, "outbound", "opaque_client_first", 1.0).await;

    // HTTP through the pair: still routed as HTTP, per request, with the client's identity.
    let host = vip(HTTP).to_string();
    let mut h1 = http1(&a.ns, vip(HTTP)).await;
    let r = send1(&mut h1, get(&host, "/echo")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], "HTTP/1.1");
    assert_eq!(
        r.json()["headers"]["l5d-client-id"],
        east.cp.identity("web", "shop").as_str()
    );
    let mut h2 = http2(&a.ns, vip(HTTP)).await;
    let r = send2(&mut h2, get(&host, "/echo")).await.unwrap();
    assert_eq!(r.json()["version"], "HTTP/2.0");
    counted(&a, "outbound", "http1", 1.0).await;
    counted(&a, "outbound", "http2", 1.0).await;
    assert_eq!(detect_count(&a, "outbound", "timeout").await, 0.0);
}

/// Legacy mode (mTLS to the app port, no transport header): the server-side proxy sees a
/// silent meshed client after the handshake, and early-dials the app itself.
#[tokio::test]
async fn netns_server_first_crosses_a_legacy_mode_pair_at_once() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    east.cp.set_transport_mode("legacy");
    let mut b = net
        .pod("b")
        .app(echo(ECHO))
        .control_plane(&east.cp, "srv", "shop")
        .meshed();
    let mut a = net.pod("a").control_plane(&east.cp, "web", "shop").meshed();
    for (k, v) in TIMEOUTS {
        b = b.env(k, v);
        a = a.env(k, v);
    }
    let b = b.start().await;
    let a = a.start().await;
    let _app = banner_app(&b.ns, BANNER);
    east.cp
        .apply(&[Service::new("srv", "shop")
            .vip("10.96.0.41")
            .port(BANNER)
            .port(ECHO)
            .endpoint(&b, "srv")])
        .await;
    let vip = |port| SocketAddr::from(([10, 96, 0, 41], port));
    for _ in 0..3 {
        let took = greeted(&a.ns, vip(BANNER)).await;
        assert!(
            took < PROMPT,
            "the greeting took {took:?} through a legacy-mode pair"
        );
    }
    counted(&a, "outbound", "opaque_server_first", 3.0).await;
    counted(&b, "inbound", "opaque_server_first", 3.0).await;
    assert!(early_count(&b, "inbound", "used").await >= 3.0);
    // The inbound saw them over mTLS: the early dial followed the handshake.
    let m = b.metrics().await;
    let web_id = east.cp.identity("web", "shop");
    let from_a = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "true"),
        ("client_id", web_id.as_str()),
    ];
    assert!(m.get("tcp_open_total", &from_a) >= 3.0, "{}", m.text);

    client_first(&a.ns, vip(ECHO)).await;
    counted(&b, "inbound", "opaque_client_first", 1.0).await;
}

#[tokio::test]
async fn netns_server_first_to_and_from_unmeshed_pods_is_forwarded_at_once() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let east = ClusterPlane::east(&net, &pki).await;
    let mut m = net
        .pod("m")
        .app(echo(ECHO))
        .control_plane(&east.cp, "mesh", "shop")
        .meshed();
    for (k, v) in TIMEOUTS {
        m = m.env(k, v);
    }
    let m = m.start().await;
    let plain = net.pod("plain").start().await;
    let _on_m = banner_app(&m.ns, BANNER);
    let _on_plain = banner_app(&plain.ns, BANNER);

    // Outbound, to a destination discovery does not know (no mTLS).
    let took = greeted(&m.ns, plain.addr4(BANNER)).await;
    assert!(took < PROMPT, "outbound to an unmeshed pod: {took:?}");
    counted(&m, "outbound", "opaque_server_first", 1.0).await;

    // Inbound, from a client with no proxy.
    let took = greeted(&plain.ns, m.addr4(BANNER)).await;
    assert!(took < PROMPT, "inbound from an unmeshed pod: {took:?}");
    counted(&m, "inbound", "opaque_server_first", 1.0).await;
    assert!(early_count(&m, "inbound", "used").await >= 1.0);

    // An HTTP/1 client slow to speak (its destination dialled early) is served over the early
    // connection, which joined the HTTP pool.
    let _http_on_plain = http_app(&plain.ns, HTTP);
    // A first request learns the target (policy, discovery) before the slow client times it.
    warm(&m.ns, plain.addr4(HTTP)).await;
    let used = early_count(&m, "outbound", "used").await;
    let mut conn = connect_in(&m.ns, plain.addr4(HTTP)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", plain.addr4(HTTP));
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut buf))
        .await
        .expect("a response")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    counted(&m, "outbound", "http1", 2.0).await;
    assert_eq!(
        early_count(&m, "outbound", "used").await,
        used + 1.0,
        "{}",
        m.metrics().await.text
    );
    assert_eq!(early_count(&m, "outbound", "wasted").await, 0.0);

    // A client-first protocol from the unmeshed pod still reaches the app.
    client_first(&plain.ns, m.addr4(ECHO)).await;
    counted(&m, "inbound", "opaque_client_first", 1.0).await;
}

#[tokio::test]
async fn netns_server_first_under_linkerds_environment() {
    let Some(net) = Net::new() else { return };
    let plane = LinkerdPlane::start(&net, 1).await;
    // Linkerd's chart renders 10 s detection timeouts on both sides.
    let server = plane
        .workload(
            &net,
            WorkloadSpec::new("srv-0", "srv")
                .app(test_server(HTTP, "srv-0"), HTTP)
                // The banner app's container port: the direct path takes only declared ports
                // (proxy/src/inbound/ports.rs).
                .declare(BANNER)
                .env("LINKERD2_PROXY_LOG", "info,remora_proxy=debug"),
        )
        .await;
    let _app = banner_app(&server.pod.ns, BANNER);
    for port in [BANNER, HTTP] {
        plane.add_service(
            &server.pod.addr4(port).to_string(),
            vec![Endpoint {
                addr: server.pod.addr4(port),
                sa: "srv".into(),
                ns: "shop".into(),
                pod: server.pod.name.clone(),
                opaque: false,
            }],
        );
    }
    let client = plane
        .workload(
            &net,
            WorkloadSpec::new("client-0", "client")
                .env("LINKERD2_PROXY_LOG", "info,remora_proxy=debug"),
        )
        .await;
    // The first connection included: a target the policy controller does not know
    // (NotFound) is forwarded without waiting for the policy (proxy/src/policy/watch.rs).
    for _ in 0..4 {
        let took = greeted_or_logs(
            &client.pod.ns,
            server.pod.addr4(BANNER),
            &[&client.pod, &server.pod],
        )
        .await;
        assert!(
            took < PROMPT,
            "the greeting took {took:?} under Linkerd's environment\n{}",
            client.pod.proxy().log()
        );
    }
    counted(&client.pod, "outbound", "opaque_server_first", 4.0).await;

    // An unmeshed client straight to the server's inbound.
    let plain = net.pod("plain").start().await;
    // A fresh pod's first SYN may wait for the bridge's neighbour entries: an HTTP request to
    // the server's other port first, untimed.
    warm(&plain.ns, server.pod.addr4(HTTP)).await;
    let took = greeted_or_logs(&plain.ns, server.pod.addr4(BANNER), &[&server.pod]).await;
    assert!(
        took < PROMPT,
        "inbound under Linkerd's environment: {took:?}\n{}",
        server.pod.proxy().log()
    );
    counted(&server.pod, "inbound", "opaque_server_first", 1.0).await;

    let target = server.pod.addr4(HTTP);
    let mut h1 = http1(&client.pod.ns, target).await;
    let r = send1(&mut h1, get(&target.to_string(), "/echo"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    counted(&client.pod, "outbound", "http1", 1.0).await;
}

/// Median and 90th percentile of `samples`, in microseconds.
fn stats(mut samples: Vec<Duration>) -> (u128, u128) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_micros();
    (at(0.5), at(0.9))
}

/// One HTTP/1.1 `GET /echo` on a new connection; its time.
async fn http_once(ns: &str, addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut conn = connect_in(ns, addr).await.unwrap();
    let req = format!("GET /echo HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut rsp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rsp))
        .await
        .expect("a response")
        .unwrap();
    assert!(
        rsp.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&rsp)
    );
    started.elapsed()
}

/// The figures of BENCHMARKS.md ("Detection that never stalls"): time to a server-first
/// app's greeting directly and through a meshed pair (early dial after 1 ms, and at once), and
/// HTTP/1.1 with a new connection per request through the pair with the early dial on and
/// off, interleaved. `cargo test -p remora-tests --test netns_server_first -- --ignored
/// --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a test: run it with --ignored --nocapture"]
async fn netns_server_first_figures() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let b = net
        .pod("b")
        .app(test_server(HTTP, "b"))
        .control_plane(&east.cp, "srv", "shop")
        .meshed()
        .start()
        .await;
    let mut clients = Vec::new();
    for (name, early) in [("a1ms", "1ms"), ("a0", "0"), ("aoff", "off")] {
        clients.push(
            net.pod(name)
                .control_plane(&east.cp, "web", "shop")
                .meshed()
                .env("REMORA_DETECT_EARLY_DIAL", early)
                .start()
                .await,
        );
    }
    let plain = net.pod("plain").start().await;
    let server = net.pod("server").start().await;
    let _on_b = banner_app(&b.ns, BANNER);
    let _on_server = banner_app(&server.ns, BANNER);
    east.cp
        .apply(&[Service::new("srv", "shop")
            .vip("10.96.0.40")
            .port(BANNER)
            .port(HTTP)
            .endpoint(&b, "srv")])
        .await;
    let vip = |port| SocketAddr::from(([10, 96, 0, 40], port));
    // Warm up: certificates, discovery, policies.
    for c in &clients[..2] {
        for _ in 0..20 {
            greeted(&c.ns, vip(BANNER)).await;
        }
    }
    for c in &clients {
        for _ in 0..20 {
            http_once(&c.ns, vip(HTTP)).await;
        }
    }
    const N: usize = 300;
    let (mut direct, mut pair_1ms, mut pair_0) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..N {
        direct.push(greeted(&plain.ns, server.addr4(BANNER)).await);
        pair_1ms.push(greeted(&clients[0].ns, vip(BANNER)).await);
        pair_0.push(greeted(&clients[1].ns, vip(BANNER)).await);
    }
    let (mut h_on, mut h_zero, mut h_off) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..N {
        h_on.push(http_once(&clients[0].ns, vip(HTTP)).await);
        h_zero.push(http_once(&clients[1].ns, vip(HTTP)).await);
        h_off.push(http_once(&clients[2].ns, vip(HTTP)).await);
    }
    for (what, samples) in [
        ("greeting, direct", direct),
        ("greeting, through the pair, early dial after 1ms", pair_1ms),
        ("greeting, through the pair, early dial at once (0)", pair_0),
        (
            "HTTP/1.1 new connection per GET, pair, early dial 1ms",
            h_on,
        ),
        (
            "HTTP/1.1 new connection per GET, pair, early dial 0",
            h_zero,
        ),
        (
            "HTTP/1.1 new connection per GET, pair, early dial off",
            h_off,
        ),
    ] {
        let (p50, p90) = stats(samples);
        println!("{what}: p50 {p50} µs, p90 {p90} µs (n = {N})");
    }
    for c in &clients {
        let m = c.metrics().await;
        for outcome in ["used", "wasted", "failed"] {
            println!(
                "{}: early dials {outcome}: {}",
                c.name,
                m.get(
                    "protocol_detect_early_dial_total",
                    &[("direction", "outbound"), ("outcome", outcome)]
                )
            );
        }
    }
}
