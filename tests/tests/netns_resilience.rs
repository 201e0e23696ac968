//! Retries, retry budgets and timeouts from the destination profile, with `remora test-server`
//! failing on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use remora_tests::Net;
use remora_tests::apps::test_server;
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::http::{get, http1, send1};
use remora_tests::services::Service;

const HOST: &str = "web.shop.svc.cluster.local:8080";
const STINGY: &str = "stingy.shop.svc.cluster.local:8080";

const ROUTES: &str = r#"
[[services.routes]]
name = "get-flaky"
method = "GET"
path = "/fail-first/.*"
retryable = true
[[services.routes]]
name = "post-once"
method = "POST"
path = "/fail-first/[0-9]+/once"
[[services.routes]]
name = "post-flaky"
method = "POST"
path = "/fail-first/.*"
retryable = true
[[services.routes]]
name = "slow"
path = "/delay/.*"
timeout = "1s"
"#;

#[tokio::test]
async fn netns_retries_budgets_and_timeouts_follow_the_profile() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::start(&net, &pki, "east", "east.example", 8086).await;
    let b = net
        .pod("b")
        .app(test_server(8080, "b"))
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
    let no_budget =
        "[services.retry_budget]\nretry_ratio = 0.0\nmin_retries_per_second = 0\nttl = \"10s\"\n";
    east.cp
        .apply(&[
            Service::new("web", "shop")
                .vip("10.96.0.60")
                .port(8080)
                .endpoint(&b, "echo")
                .with(ROUTES),
            Service::new("stingy", "shop")
                .vip("10.96.0.61")
                .port(8080)
                .endpoint(&b, "echo")
                .with(&format!("{ROUTES}{no_budget}")),
        ])
        .await;
    let mut h1 = http1(&a.ns, "10.96.0.60:8080".parse().unwrap()).await;
    // Warm up: the profile arrives alongside the endpoints.
    assert_eq!(
        send1(&mut h1, get(HOST, "/echo")).await.unwrap().status,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let retries = |m: &remora_tests::admin::Metrics, reason: &str| {
        m.get("retries_total", &[("reason", reason)])
    };

    // A GET on a retryable route failing twice, then succeeding: 200 after three hits.
    let r = send1(&mut h1, get(HOST, "/fail-first/2/get"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(retries(&a.metrics().await, "status"), 2.0);

    // A POST on a route that is not retryable is attempted once.
    let post = |path: &str, len: usize| {
        Request::post(path)
            .header("host", HOST)
            .body(Full::new(Bytes::from(vec![b'p'; len])))
            .unwrap()
    };
    let r = send1(&mut h1, post("/fail-first/1/once", 10))
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(retries(&a.metrics().await, "status"), 2.0);

    // A retryable POST with a 10 KiB body is retried; with 100 KiB it is not buffered, not retried.
    let r = send1(&mut h1, post("/fail-first/1/small", 10 * 1024))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(retries(&a.metrics().await, "status"), 3.0);
    let r = send1(&mut h1, post("/fail-first/1/large", 100 * 1024))
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(retries(&a.metrics().await, "status"), 3.0);

    // With the budget spent (none at all here), failures reach the client.
    let mut stingy = http1(&a.ns, "10.96.0.61:8080".parse().unwrap()).await;
    assert_eq!(
        send1(&mut stingy, get(STINGY, "/echo"))
            .await
            .unwrap()
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = send1(&mut stingy, get(STINGY, "/fail-first/1/stingy"))
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    let m = a.metrics().await;
    assert_eq!(
        m.get("retry_budget_exhausted_total", &[]),
        1.0,
        "{}",
        m.text
    );

    // A 1 s route timeout against a 3 s handler: 504 from the proxy, well before 3 s.
    let started = tokio::time::Instant::now();
    let r = send1(
        &mut http1(&a.ns, "10.96.0.60:8080".parse().unwrap()).await,
        get(HOST, "/delay/3000"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504);
    assert!(
        r.headers["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .contains("timed out")
    );
    assert!(
        started.elapsed() < Duration::from_millis(2800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.metrics().await.get("request_timeouts_total", &[]), 1.0);
}
