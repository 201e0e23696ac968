//! Golden metrics without root: bounded cardinality, the JSON access log, and
//! `remora top --once` against real proxies under known traffic. Pods run in explicit mode on
//! loopback addresses (see `tests/explicit.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use remora_tests::apps::test_server;
use remora_tests::explicit::{Cluster, ExplicitPod, WEB, first_answer, proxy_get, web};
use remora_tests::http::{http1, send1};
use remora_tests::local::{LocalProxy, loopback};
use remora_tests::netns::HOST;
use remora_tests::services::{RouteExt, Service, route};

/// Waits until `web` answers through `pod`'s proxy.
async fn until_200(pod: &ExplicitPod) {
    let r = first_answer(pod, "/echo").await;
    assert_eq!(
        r.status,
        200,
        "web never answered through {}: {}",
        pod.name,
        r.text()
    );
}

#[tokio::test]
async fn ten_thousand_authorities_stay_under_the_cap_and_idle_series_go() {
    let p = LocalProxy::start(
        100,
        &[
            ("REMORA_METRICS_MAX_SERIES".into(), "1000".into()),
            // Longer than the burst takes even on a loaded machine: label sets swept during the
            // burst would make room (and lose their counts) instead of overflowing.
            ("REMORA_METRICS_IDLE_TIMEOUT".into(), "20s".into()),
        ],
    );
    assert!(p.wait_ready(Duration::from_secs(30)).await);
    // 10 000 distinct authorities: closed ports of an address nothing listens on, each
    // answered 502 by the proxy and counted under its own authority. Each answer closes its
    // connection (as linkerd2-proxy's does), so each request opens one.
    let nobody = loopback(101);
    for port in 20_000..30_000u16 {
        let target = SocketAddr::new(nobody, port).to_string();
        let mut h1 = http1(HOST, p.addr(4140)).await;
        let r = send1(&mut h1, proxy_get(&target, "/")).await.unwrap();
        assert_eq!(r.status, 502, "{target}: {}", r.text());
        assert_eq!(r.headers["connection"], "close", "{target}");
    }
    let m = p.metrics().await;
    if let Err(e) = m.validate() {
        panic!("{e}");
    }
    let series = m.series("request_total").count();
    assert!(series <= 1001, "{series} request_total series");
    assert_eq!(m.get("request_total", &[]), 10_000.0);
    assert_eq!(m.get("request_total", &[("overflow", "true")]), 9_000.0);
    assert_eq!(m.get("response_total", &[("overflow", "true")]), 9_000.0);
    assert_eq!(
        m.get("metrics_series_overflow_total", &[("family", "http")]),
        9_000.0
    );
    assert_eq!(
        m.get(
            "response_total",
            &[("classification", "failure"), ("error", "connect")]
        ),
        10_000.0
    );

    // Idle for longer than 20 s: the kept label sets are gone (the overflow set stays, its
    // counts are still owed to Prometheus).
    let gone = remora_tests::eventually(Duration::from_secs(90), || async {
        let m = p.metrics().await;
        m.series("request_total").count() == 1
    })
    .await;
    let m = p.metrics().await;
    assert!(gone, "{}", m.text);
    assert_eq!(m.get("request_total", &[("overflow", "true")]), 9_000.0);
    // And a new authority finds room again.
    let mut h1 = http1(HOST, p.addr(4140)).await;
    let r = send1(
        &mut h1,
        proxy_get(&SocketAddr::new(nobody, 1).to_string(), "/"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    let m = p.metrics().await;
    assert_eq!(
        m.get("request_total", &[("authority", &*format!("{nobody}:1"))]),
        1.0
    );
    assert_eq!(
        m.get("metrics_series_overflow_total", &[("family", "http")]),
        9_000.0
    );
}

/// A retryable GET route for `/fail-first/...`.
fn flaky(s: Service) -> Service {
    s.route(
        route("get-flaky", "/fail-first/.*")
            .method("GET")
            .retryable(),
    )
}

#[tokio::test]
async fn the_json_access_log_has_one_line_per_request() {
    let mut east = Cluster::start(110).await;
    let json = [("REMORA_ACCESS_LOG", "json")];
    let b = east
        .pod_with("b", 112, "web", vec![test_server(8080, "b")], &json)
        .await;
    let a = east.pod_with("a", 111, "client", vec![], &json).await;
    east.cp.apply(&[flaky(web(&[&b]))]).await;
    until_200(&a).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = |pod: &ExplicitPod| -> Vec<serde_json::Value> {
        pod.proxy
            .process
            .log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let before = (lines(&a).len(), lines(&b).len());
    let mut h1 = http1(HOST, a.proxy_addr()).await;
    for path in ["/echo", "/status/503", "/fail-first/1/log"] {
        send1(&mut h1, proxy_get(WEB, path)).await.unwrap();
    }
    // a logs 3 requests (the retried one once, with 2 attempts); b logs 4 (it saw both).
    let logged = remora_tests::eventually(Duration::from_secs(20), || async {
        lines(&a).len() == before.0 + 3 && lines(&b).len() == before.1 + 4
    })
    .await;
    let (al, bl) = (lines(&a), lines(&b));
    assert!(logged, "a:\n{al:#?}\nb:\n{bl:#?}");
    let out = &al[before.0..];
    let fields = [
        "time",
        "direction",
        "client_id",
        "authority",
        "method",
        "path",
        "status",
        "duration_ms",
        "bytes",
        "endpoint",
        "attempts",
    ];
    for line in out.iter().chain(&bl[before.1..]) {
        for f in fields {
            assert!(line.get(f).is_some(), "{f} missing in {line}");
        }
    }
    let b_endpoint = SocketAddr::new(b.ip(), 8080).to_string();
    assert_eq!(out[0]["direction"], "outbound");
    assert_eq!(out[0]["client_id"], a.identity.as_str());
    assert_eq!(out[0]["authority"], WEB);
    assert_eq!(out[0]["method"], "GET");
    assert_eq!(out[0]["path"], "/echo");
    assert_eq!(out[0]["status"], 200);
    assert_eq!(out[0]["endpoint"], b_endpoint.as_str());
    assert_eq!(out[0]["attempts"], 1);
    assert!(out[0]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(out[1]["status"], 503);
    assert_eq!(out[1]["classification"], "failure");
    assert_eq!(out[2]["path"], "/fail-first/1/log");
    assert_eq!(out[2]["status"], 200);
    assert_eq!(out[2]["attempts"], 2);
    let inb = &bl[before.1..];
    assert!(inb.iter().all(|l| l["direction"] == "inbound"));
    assert!(
        inb.iter().all(|l| l["client_id"] == a.identity.as_str()),
        "{inb:#?}"
    );
    assert_eq!(
        inb.iter()
            .filter(|l| l["path"] == "/fail-first/1/log")
            .count(),
        2
    );
}

#[tokio::test]
async fn top_once_reports_rates_and_success_of_real_proxies() {
    let mut east = Cluster::start(120).await;
    let b = east
        .pod("b", 122, "web", vec![test_server(8080, "b")])
        .await;
    let a = east.pod("a", 121, "client", vec![]).await;
    east.cp.apply(&[web(&[&b])]).await;
    until_200(&a).await;

    // 50 requests a second, one in ten a 500, for longer than `top` watches.
    let proxy = a.proxy_addr();
    let load = tokio::spawn(async move {
        let mut h1 = http1(HOST, proxy).await;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..400u32 {
            tick.tick().await;
            let path = if i % 10 == 9 { "/status/500" } else { "/echo" };
            send1(&mut h1, proxy_get(WEB, path)).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = tokio::process::Command::new(remora_tests::bin::remora())
        .args([
            "top",
            "--once",
            "--interval",
            "3s",
            &a.proxy.addr(4191).to_string(),
            &b.proxy.addr(4191).to_string(),
        ])
        .output()
        .await
        .unwrap();
    load.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The outbound row is the authority; the inbound one (inbound series carry no authority,
    // as linkerd2-proxy's do not) the port served, B's app.
    let served = format!(" {}:8080 ", b.proxy.addr(8080).ip());
    let row = |direction: &str| -> Vec<String> {
        let key = if direction == "inbound" {
            served.as_str()
        } else {
            WEB
        };
        stdout
            .lines()
            .find(|l| l.starts_with(direction) && l.contains(key))
            .unwrap_or_else(|| panic!("no {direction} row:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    for direction in ["outbound", "inbound"] {
        // DIRECTION AUTHORITY RPS SUCCESS P50 P95 P99 MTLS
        let r = row(direction);
        let rps: f64 = r[2].parse().unwrap();
        // The generator holds 50/s; a loaded machine may lag it, never exceed it by much.
        assert!(
            (35.0..=60.0).contains(&rps),
            "{direction} rps {rps}:\n{stdout}"
        );
        let success: f64 = r[3].trim_end_matches('%').parse().unwrap();
        // One in ten fails; the window holds ~150 requests, so the share is 90 % ± one request.
        assert!(
            (87.0..=93.0).contains(&success),
            "{direction} success {success}:\n{stdout}"
        );
        assert_eq!(r[7], "100.0%", "{direction} mTLS:\n{stdout}");
    }
}
