//! Golden metrics with transparent interception: after a scripted mix through A → B, every
//! counter on both proxies equals the truth, and `/metrics` parses with a Prometheus text-format
//! parser and is well-formed OpenMetrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use remora_tests::Net;
use remora_tests::admin::Metrics;
use remora_tests::apps::{echo, echo_roundtrip, test_server};
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::http::{get, grpc_channel, grpc_echo, http1, send1};
use remora_tests::services::Service;

const HOST: &str = "web.shop.svc.cluster.local:8080";
const VIP: &str = "10.96.0.80";

/// Polls until `f(metrics)` holds (the last response of a stream is counted when its proxy
/// finishes sending it, a moment after the client read it).
async fn settled(pod: &remora_tests::Pod, f: impl Fn(&Metrics) -> bool) -> Metrics {
    for _ in 0..100 {
        let m = pod.metrics().await;
        if f(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pod.metrics().await
}

/// `base` and `extra` labels together.
fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

#[tokio::test]
async fn netns_golden_metrics_equal_the_truth_on_both_proxies() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let b = net
        .pod("b")
        .app(test_server(8080, "b"))
        .app(echo(7000))
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "client", "shop")
        .meshed()
        .start()
        .await;
    east.cp
        .apply(&[Service::new("web", "shop")
            .vip(VIP)
            .port(8080)
            .opaque_port(7000)
            .endpoint(&b, "web")])
        .await;
    let a_id = east.cp.identity("client", "shop");
    let b_id = east.cp.identity("web", "shop");
    let http_addr = format!("{VIP}:8080").parse().unwrap();

    // The truth: N successes, M 500s, K gRPC calls answered 200 + grpc-status 14, L opaque
    // connections of X bytes each way.
    let (n, m, k, l, x) = (20u64, 5u64, 4u64, 3u64, 100_000u64);
    let mut h1 = http1(&a.ns, http_addr).await;
    for _ in 0..n {
        let r = send1(&mut h1, get(HOST, "/echo")).await.unwrap();
        assert_eq!(r.status, 200);
    }
    for _ in 0..m {
        let r = send1(&mut h1, get(HOST, "/status/500")).await.unwrap();
        assert_eq!(r.status, 500);
    }
    let channel = grpc_channel(&a.ns, http_addr).await;
    for _ in 0..k {
        let status = grpc_echo(channel.clone(), "x", 14).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    for _ in 0..l {
        let conn = a
            .connect(format!("{VIP}:7000").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(echo_roundtrip(conn, x).await.unwrap(), x);
    }
    let grpc_authority = format!("{VIP}:8080");
    let b_7000 = format!("{}:7000", b.ip4());

    // A, outbound.
    let total = (n + m + k) as f64;
    let am = settled(&a, |mm| {
        mm.get("response_total", &[("direction", "outbound")]) >= total
            && mm.get(
                "tcp_close_total",
                &[("direction", "outbound"), ("peer", "src")],
            ) >= l as f64
    })
    .await;
    let out_base = [
        ("direction", "outbound"),
        ("tls", "true"),
        ("server_id", b_id.as_str()),
        ("dst_service", "web"),
        ("dst_namespace", "shop"),
        ("dst_serviceaccount", "web"),
    ];
    let web = [("authority", HOST)];
    let grpc = [("authority", grpc_authority.as_str())];
    assert_eq!(
        am.get("request_total", &with(&out_base, &web)),
        (n + m) as f64,
        "{}",
        am.text
    );
    assert_eq!(am.get("request_total", &with(&out_base, &grpc)), k as f64);
    assert_eq!(am.get("request_total", &[("direction", "outbound")]), total);
    let ok = [
        ("authority", HOST),
        ("status_code", "200"),
        ("classification", "success"),
    ];
    let failed = [
        ("authority", HOST),
        ("status_code", "500"),
        ("classification", "failure"),
    ];
    assert_eq!(
        am.get("response_total", &with(&out_base, &ok)),
        n as f64,
        "{}",
        am.text
    );
    assert_eq!(
        am.get("response_total", &with(&out_base, &failed)),
        m as f64
    );
    let grpc_failed = [
        ("authority", grpc_authority.as_str()),
        ("status_code", "200"),
        ("grpc_status", "14"),
        ("classification", "failure"),
    ];
    assert_eq!(
        am.get("response_total", &with(&out_base, &grpc_failed)),
        k as f64
    );
    assert_eq!(
        am.get("response_total", &[("direction", "outbound")]),
        total
    );
    assert_eq!(
        am.get("response_latency_ms_count", &[("direction", "outbound")]),
        total,
        "each histogram's count equals its request count"
    );
    assert_eq!(
        am.get(
            "response_latency_ms_bucket",
            &[("direction", "outbound"), ("le", "+Inf")]
        ),
        total
    );
    // Opaque TCP: byte counts per side.
    let tcp_src = [
        ("direction", "outbound"),
        ("peer", "src"),
        ("target_addr", b_7000.as_str()),
        ("tls", "true"),
        ("server_id", b_id.as_str()),
        ("dst_service", "web"),
    ];
    assert_eq!(am.get("tcp_open_total", &tcp_src), l as f64, "{}", am.text);
    assert_eq!(am.get("tcp_close_total", &tcp_src), l as f64);
    assert_eq!(am.get("tcp_read_bytes_total", &tcp_src), (l * x) as f64);
    assert_eq!(am.get("tcp_write_bytes_total", &tcp_src), (l * x) as f64);
    let tcp_dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("target_addr", b_7000.as_str()),
    ];
    assert_eq!(am.get("tcp_open_total", &tcp_dst), l as f64);
    // An mTLS side counts the stream it carries (the plaintext), so it equals the app's side.
    assert_eq!(am.get("tcp_write_bytes_total", &tcp_dst), (l * x) as f64);
    assert_eq!(am.get("tcp_read_bytes_total", &tcp_dst), (l * x) as f64);
    assert_eq!(am.get("tcp_open_connections", &tcp_src), 0.0);

    // B, inbound: the caller's identity on every series.
    let bm = settled(&b, |mm| {
        mm.get("response_total", &[("direction", "inbound")]) >= total
            && mm.get(
                "tcp_close_total",
                &[("direction", "inbound"), ("peer", "dst")],
            ) >= l as f64
    })
    .await;
    // Linkerd's inbound labels: the target, the caller, the server, route and authorization
    // that admitted the request (here the plane's default policy); no `authority`.
    let b_8080 = format!("{}:8080", b.ip4());
    let b_ip = b.ip4().to_string();
    let in_base = [
        ("direction", "inbound"),
        ("target_addr", b_8080.as_str()),
        ("target_ip", b_ip.as_str()),
        ("target_port", "8080"),
        ("tls", "true"),
        ("client_id", a_id.as_str()),
        ("srv_port", "8080"),
    ];
    let inbound_names: std::collections::BTreeSet<String> = [
        "direction",
        "target_addr",
        "target_ip",
        "target_port",
        "tls",
        "client_id",
        "srv_group",
        "srv_kind",
        "srv_name",
        "srv_port",
        "route_group",
        "route_kind",
        "route_name",
        "authz_group",
        "authz_kind",
        "authz_name",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let inbound_series: Vec<_> = bm
        .series("request_total")
        .filter(|(l, _)| l.iter().any(|(k, v)| k == "direction" && v == "inbound"))
        .collect();
    assert!(!inbound_series.is_empty(), "{}", bm.text);
    for (labels, _) in &inbound_series {
        let names: std::collections::BTreeSet<String> =
            labels.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            names, inbound_names,
            "inbound request_total labels\n{}",
            bm.text
        );
    }
    let in_ok = [("status_code", "200"), ("classification", "success")];
    let in_failed = [("status_code", "500"), ("classification", "failure")];
    let in_grpc_failed = [
        ("status_code", "200"),
        ("grpc_status", "14"),
        ("classification", "failure"),
    ];
    assert_eq!(bm.get("request_total", &in_base), total, "{}", bm.text);
    assert_eq!(bm.get("request_total", &[("direction", "inbound")]), total);
    assert_eq!(bm.get("response_total", &with(&in_base, &in_ok)), n as f64);
    assert_eq!(
        bm.get("response_total", &with(&in_base, &in_failed)),
        m as f64
    );
    assert_eq!(
        bm.get("response_total", &with(&in_base, &in_grpc_failed)),
        k as f64
    );
    assert!(
        !bm.text
            .lines()
            .any(|l| l.contains("direction=\"inbound\"") && l.contains("authority=")),
        "no inbound series carries authority\n{}",
        bm.text
    );
    assert_eq!(
        bm.get("response_latency_ms_count", &[("direction", "inbound")]),
        total
    );
    let app_side = [
        ("direction", "inbound"),
        ("peer", "dst"),
        ("target_addr", b_7000.as_str()),
    ];
    assert_eq!(bm.get("tcp_open_total", &app_side), l as f64, "{}", bm.text);
    assert_eq!(bm.get("tcp_read_bytes_total", &app_side), (l * x) as f64);
    assert_eq!(bm.get("tcp_write_bytes_total", &app_side), (l * x) as f64);
    let peer_side = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", a_id.as_str()),
        ("peer", "src"),
        ("target_addr", b_7000.as_str()),
        ("target_port", "7000"),
    ];
    assert_eq!(bm.get("tcp_open_total", &peer_side), l as f64);
    assert_eq!(bm.get("tcp_read_bytes_total", &peer_side), (l * x) as f64);
    assert_eq!(bm.get("tcp_write_bytes_total", &peer_side), (l * x) as f64);

    // Both expositions parse (prometheus-parse) and are well-formed OpenMetrics.
    for (who, m) in [("a", &am), ("b", &bm)] {
        if let Err(e) = m.validate() {
            panic!("{who}'s /metrics is not valid: {e}\n{}", m.text);
        }
    }
}
