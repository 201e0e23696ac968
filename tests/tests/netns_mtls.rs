//! Mutual TLS between proxies, with real interception: what crosses the wire, who is refused and
//! why, TLS that is not ours, opaque transport, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use remora_tests::apps::{echo, echo_roundtrip, name, tls_echo};
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::services::Service;
use remora_tests::tls::{
    TRANSPORT_ALPN, certify, client_hello, connect_tls, foreign_pki, mesh_configs,
    tls12_client_hello,
};
use remora_tests::{Net, Pod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOUR: Duration = Duration::from_secs(3600);

/// Connects, sends `msg`, and returns what comes back before the connection ends (empty when
/// the connection was refused).
async fn exchange(pod: &Pod, addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let Ok(mut conn) = pod.connect(addr).await else {
        return Vec::new();
    };
    let _ = conn.write_all(msg).await;
    let mut buf = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(15), conn.read_exact(&mut buf)).await {
        Ok(Ok(_)) => buf,
        _ => Vec::new(),
    }
}

async fn refused(pod: &Pod, reason: &str, direction: &str) -> f64 {
    pod.metrics().await.get(
        "tcp_refused_total",
        &[("direction", direction), ("reason", reason)],
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn netns_mtls_on_the_wire_carries_both_identities() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let b = net
        .pod("b")
        .app(echo(7000))
        .control_plane(&east.cp, "echo", "shop")
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
        .apply(&[Service::new("echo", "shop")
            .vip("10.96.0.10")
            .port(7000)
            .endpoint(&b, "echo")])
        .await;

    let capture = net.capture(&b, "tcp").await;
    let marker = b"REMORA-PLAINTEXT-MARKER-7d1f";
    for _ in 0..20 {
        assert_eq!(
            exchange(&a, "10.96.0.10:7000".parse().unwrap(), marker).await,
            marker
        );
    }
    let pcap = capture.finish().await;
    assert!(pcap.len() > 1000, "the capture saw the traffic");
    assert!(
        !contains(&pcap, marker),
        "the marker crossed the link in clear"
    );
    assert!(
        contains(&pcap, &[0x17, 0x03, 0x03]),
        "TLS application-data records on the link"
    );
    let echo_id = east.cp.identity("echo", "shop");
    assert!(
        contains(&pcap, echo_id.as_bytes()),
        "the ClientHello's SNI names B's identity"
    );

    let web_id = east.cp.identity("web", "shop");
    let bm = b.metrics().await;
    let inbound = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "true"),
        ("client_id", web_id.as_str()),
    ];
    assert_eq!(
        bm.get("tcp_open_total", &inbound),
        20.0,
        "B learnt A's identity:\n{}",
        bm.text
    );
    let am = a.metrics().await;
    let outbound = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", echo_id.as_str()),
    ];
    assert_eq!(am.get("tcp_open_total", &outbound), 20.0);
}

#[tokio::test]
async fn netns_inbound_refusals_are_logged_and_counted() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let west = ClusterPlane::start(&net, &pki, "west", "west.example", 8087).await;
    let db = east.cp.identity("db", "shop");
    let b = net
        .pod("b")
        .app(echo(7000))
        .app(echo(7001))
        .app(echo(7002))
        .app(echo(7003))
        .control_plane(&east.cp, "echo", "shop")
        .env(
            "REMORA_INBOUND_PORT_POLICIES",
            &format!("7001=all-authenticated; 7002=allow({db}); 7003=cluster-authenticated"),
        )
        .meshed()
        .start()
        .await;
    let web = net
        .pod("web")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let mut westie_env = west.cp.proxy_env("web", "shop");
    westie_env.extend(east.cp.discovery_env());
    let mut westie = net.pod("westie").meshed();
    for (k, v) in &westie_env {
        westie = westie.env(k, v);
    }
    let westie = westie.start().await;
    let u = net.pod("u").start().await;
    let svc = Service::new("echo", "shop")
        .port(7000)
        .port(7001)
        .port(7002)
        .port(7003)
        .endpoint(&b, "echo");
    east.cp.apply(&[svc]).await;
    let at = |port| b.addr4(port);
    let echo_id = east.cp.identity("echo", "shop");

    // Positive controls: mesh peers where policy admits them, plaintext where it is open.
    assert_eq!(exchange(&web, at(7001), b"ok").await, b"ok");
    assert_eq!(exchange(&web, at(7003), b"ok").await, b"ok");
    assert_eq!(exchange(&u, at(7000), b"ok").await, b"ok");

    // Plaintext and certificate-less TLS on an all-authenticated port.
    assert!(exchange(&u, at(7001), b"no").await.is_empty());
    let anon = remora_identity::tls::anonymous_client(&east.cp.anchors()).unwrap();
    let mut tls = connect_tls(&u.ns, at(7001), anon, &echo_id).await.unwrap();
    let _ = tls.write_all(b"no").await;
    let mut buf = [0u8; 2];
    assert!(!matches!(tls.read(&mut buf).await, Ok(n) if n > 0));
    assert_eq!(refused(&b, "policy_unauthenticated", "inbound").await, 2.0);

    // A client offering only TLS 1.2.
    let mut c = u.connect(at(7000)).await.unwrap();
    c.write_all(&tls12_client_hello(&echo_id)).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut reply)).await;
    assert!(
        !contains(&reply, &tls12_client_hello(&echo_id)),
        "not echoed: it was terminated"
    );
    assert_eq!(refused(&b, "tls_handshake", "inbound").await, 1.0);

    // An identity outside the allow-list; a peer of another trust domain.
    assert!(exchange(&web, at(7002), b"no").await.is_empty());
    assert_eq!(refused(&b, "policy_not_allowed", "inbound").await, 1.0);
    assert!(exchange(&westie, at(7003), b"no").await.is_empty());
    assert_eq!(
        refused(&b, "policy_foreign_trust_domain", "inbound").await,
        1.0
    );

    let log = b.proxy();
    for line in [
        "the port requires an authenticated (mTLS) peer",
        "the peer's identity is not on the port's allow-list",
        "the port requires a peer of this cluster's trust domain",
        "TLS handshake failed",
    ] {
        assert!(
            log.wait_log(line, Duration::from_secs(10)).await,
            "no log line {line:?}:\n{}",
            log.log()
        );
    }
    assert!(
        log.log().contains(&west.cp.identity("web", "shop")),
        "the refused peer is named"
    );
}

#[tokio::test]
async fn netns_outbound_refuses_servers_that_fail_verification() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let anchors = east.cp.anchors();
    let echo_id = east.cp.identity("echo", "shop");
    let other_id = east.cp.identity("other", "shop");
    let wrong = mesh_configs(&certify(&east.cp.issuer(), &other_id, HOUR), &anchors).server;
    let (foreign_anchors, foreign) = foreign_pki();
    let untrusted = mesh_configs(&certify(&foreign, &echo_id, HOUR), &foreign_anchors).server;
    let expired = mesh_configs(
        &certify(&east.cp.issuer(), &echo_id, Duration::from_secs(1)),
        &anchors,
    )
    .server;
    // The server pod is not meshed: its apps terminate TLS themselves with these certificates.
    let s = net
        .pod("s")
        .app(tls_echo(8001, wrong))
        .app(tls_echo(8002, untrusted))
        .app(tls_echo(8003, expired))
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let svc = Service::new("echo", "shop")
        .port(8001)
        .port(8002)
        .port(8003)
        .endpoint(&s, "echo");
    // The apps hold the proxy's part here, on their own ports: no transport header to a 4143.
    east.cp.set_transport_mode("legacy");
    east.cp.apply(&[svc]).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the 1 s certificate expire

    for port in [8001, 8002, 8003] {
        assert!(
            exchange(&a, s.addr4(port), b"secret").await.is_empty(),
            "port {port} answered"
        );
    }
    assert_eq!(refused(&a, "tls_identity_mismatch", "outbound").await, 1.0);
    assert_eq!(refused(&a, "tls_untrusted", "outbound").await, 1.0);
    assert_eq!(refused(&a, "tls_expired", "outbound").await, 1.0);
    // Each refusal is counted before its line is logged: wait for every line.
    let expected = format!("expected identity {echo_id}, the certificate names {other_id}");
    for line in [
        expected.as_str(),
        "does not chain to our trust anchors",
        "has expired",
    ] {
        assert!(
            a.proxy().wait_log(line, Duration::from_secs(10)).await,
            "{line:?} never logged\n{}",
            a.proxy().log()
        );
    }
    // Nothing reached the apps in clear: each handshake failed before any byte was sent.
    assert_eq!(
        a.metrics()
            .await
            .get("tcp_open_total", &[("direction", "outbound")]),
        0.0
    );
}

#[tokio::test]
async fn netns_tls_for_the_app_passes_through() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let east = ClusterPlane::east(&net, &pki).await;
    let (app_anchors, app_ca) = foreign_pki();
    let app_cert = certify(&app_ca, "app.example", HOUR);
    let server = mesh_configs(&app_cert, &app_anchors).server;
    let b = net
        .pod("b")
        .app(tls_echo(8443, server))
        .control_plane(&east.cp, "echo", "shop")
        .meshed()
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let client = remora_identity::tls::anonymous_client(&app_anchors).unwrap();
    let mut tls = connect_tls(&a.ns, b.addr4(8443), client, "app.example")
        .await
        .unwrap();
    tls.write_all(b"end-to-end app TLS").await.unwrap();
    let mut buf = [0u8; 18];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"end-to-end app TLS");
    let m = b.metrics().await;
    assert_eq!(
        m.get(
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src"), ("tls", "opaque")]
        ),
        1.0
    );
}

#[tokio::test]
async fn netns_opaque_ports_cross_with_the_transport_header() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let b = net
        .pod("b")
        .app(echo(5000))
        .control_plane(&east.cp, "echo", "shop")
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
        .apply(&[Service::new("db", "shop")
            .vip("10.96.0.30")
            .opaque_port(5000)
            .endpoint(&b, "echo")])
        .await;
    let conn = a.connect("10.96.0.30:5000".parse().unwrap()).await.unwrap();
    assert_eq!(echo_roundtrip(conn, 1 << 20).await.unwrap(), 1 << 20);
    assert!(
        b.proxy()
            .wait_log("direct connection", Duration::from_secs(10))
            .await
    );
    let web_id = east.cp.identity("web", "shop");
    let m = b.metrics().await;
    let l = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "true"),
        ("client_id", web_id.as_str()),
    ];
    assert_eq!(m.get("tcp_open_total", &l), 1.0);
    assert_eq!(
        m.get(
            "tcp_read_bytes_total",
            &[("direction", "inbound"), ("peer", "dst")]
        ),
        (1 << 20) as f64
    );
}

/// A transport header with a raw protobuf body.
fn raw_header(body: &[u8], len: u32) -> Vec<u8> {
    let mut h = b"transport.l5d.io/v1\r\n\r\n".to_vec();
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(body);
    h
}

#[tokio::test]
async fn netns_bad_input_leaves_the_proxy_serving() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let b = net
        .pod("b")
        .app(echo(7000))
        .app(name(7001, "b"))
        .control_plane(&east.cp, "echo", "shop")
        .env("REMORA_INBOUND_DETECT_TIMEOUT", "1s")
        .meshed()
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let u = net.pod("u").start().await;
    east.cp
        .apply(&[Service::new("echo", "shop").port(7000).endpoint(&b, "echo")])
        .await;
    let echo_id = east.cp.identity("echo", "shop");

    // Random bytes, a truncated ClientHello and one split across records go to the app as they
    // are (they are not mTLS for us); none of them hurts the proxy.
    let random: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let hello = client_hello(&echo_id);
    let mut split = vec![22, 3, 1];
    let body = &hello[5..];
    split.extend_from_slice(&((body.len() / 2) as u16).to_be_bytes());
    split.extend_from_slice(&body[..body.len() / 2]);
    split.extend_from_slice(&[22, 3, 1]);
    split.extend_from_slice(&((body.len() - body.len() / 2) as u16).to_be_bytes());
    split.extend_from_slice(&body[body.len() / 2..]);
    for input in [random.clone(), hello[..60].to_vec(), split] {
        let mut c = u.connect(b.addr4(7000)).await.unwrap();
        c.write_all(&input).await.unwrap();
        let mut back = vec![0u8; input.len()];
        tokio::time::timeout(Duration::from_secs(15), c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, input);
    }
    // A silent client reaches its app after the detection timeout.
    let mut c = u.connect(b.addr4(7001)).await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(15), c.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "b\n");

    // The direct path: garbage, then mTLS with bad headers.
    let direct = b.addr4(4143);
    let mut c = u.connect(direct).await.unwrap();
    let _ = c.write_all(&random).await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut sink)).await;
    assert!(sink.is_empty());
    let probe = certify(&east.cp.issuer(), &east.cp.identity("probe", "shop"), HOUR);
    let client = mesh_configs(&probe, &east.cp.anchors()).client_alpn;
    let mut name_body = vec![0x08, 0x50, 0x12, 11];
    name_body.extend_from_slice(b"not a name!");
    for header in [
        raw_header(&[], u32::MAX),
        raw_header(&name_body, name_body.len() as u32),
        raw_header(&[0x08, 0x00], 2),
    ] {
        let mut tls = connect_tls(&u.ns, direct, client.clone(), &echo_id)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(TRANSPORT_ALPN));
        tls.write_all(&header).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut sink)).await;
        assert!(sink.is_empty());
    }
    assert_eq!(refused(&b, "direct_not_mtls", "inbound").await, 1.0);
    assert_eq!(refused(&b, "bad_transport_header", "inbound").await, 3.0);

    // Still serving.
    assert!(b.proxy().is_running());
    assert_eq!(
        exchange(&a, b.addr4(7000), b"still here").await,
        b"still here"
    );
}
