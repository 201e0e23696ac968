//! Retries, retry budgets and timeouts from the destination profile, with `remora test-server`
//! failing on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use remora_tests::Net;
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::http::{get, http1, send1};
use remora_tests::services::{RouteExt, Service, route};

const HOST: &str = "web.shop.svc.cluster.local:8080";
const STINGY: &str = "stingy.shop.svc.cluster.local:8080";

/// The profile routes of the services here.
fn routes(s: Service) -> Service {
    s.route(
        route("get-flaky", "/fail-first/.*")
            .method("GET")
            .retryable(),
    )
    .route(route("post-once", "/fail-first/[0-9]+/once").method("POST"))
    .route(
        route("post-flaky", "/fail-first/.*")
            .method("POST")
            .retryable(),
    )
    .route(route("slow", "/delay/.*").timeout("1s"))
}

#[tokio::test]
async fn netns_retries_budgets_and_timeouts_follow_the_profile() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let b = east.test_pod(&net, "b", "echo").await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    east.cp
        .apply(&[
            routes(
                Service::new("web", "shop")
                    .vip("10.96.0.60")
                    .port(8080)
                    .endpoint(&b, "echo"),
            ),
            routes(
                Service::new("stingy", "shop")
                    .vip("10.96.0.61")
                    .port(8080)
                    .endpoint(&b, "echo"),
            )
            .retry_budget(0.0, 0, "10s"),
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

/// Sends `n` GETs to `host` from `pod`, `parallel` at a time; returns who answered each
/// (`x-server`) and how many failed.
async fn spray(
    pod: &remora_tests::Pod,
    vip: &str,
    host: &str,
    n: usize,
    parallel: usize,
) -> (Vec<String>, usize) {
    let mut servers = Vec::new();
    let mut failed = 0;
    let mut conns = Vec::new();
    for _ in 0..parallel {
        conns.push(http1(&pod.ns, vip.parse().unwrap()).await);
    }
    let per = n / parallel;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let host = host.to_string();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..per {
                    out.push(match send1(&mut c, get(&host, "/echo")).await {
                        Ok(r) if r.status == 200 => {
                            Ok(r.headers["x-server"].to_str().unwrap().to_string())
                        }
                        Ok(r) => Err(r.status.as_u16()),
                        Err(_) => Err(0),
                    });
                }
                out
            })
        })
        .collect();
    for t in tasks {
        for r in t.await.unwrap() {
            match r {
                Ok(s) => servers.push(s),
                Err(_) => failed += 1,
            }
        }
    }
    (servers, failed)
}

#[tokio::test]
async fn netns_balancing_prefers_the_fast_and_follows_the_set() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let fast = east.test_pod(&net, "fast", "echo").await;
    let slow = east.test_pod(&net, "slow", "echo").await;
    let extra = east.test_pod(&net, "extra", "echo").await;
    slow.app(0)
        .server
        .as_ref()
        .unwrap()
        .delay_ms
        .store(50, std::sync::atomic::Ordering::Relaxed);
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let svc = |pods: &[&remora_tests::Pod]| {
        let mut s = Service::new("web", "shop").vip("10.96.0.70").port(8080);
        for p in pods {
            s = s.endpoint(p, "echo");
        }
        s
    };
    east.cp.apply(&[svc(&[&fast, &slow])]).await;
    let (servers, failed) = spray(&a, "10.96.0.70:8080", HOST, 1000, 10).await;
    assert_eq!(failed, 0);
    let on_fast = servers.iter().filter(|s| *s == "fast").count();
    assert!(on_fast > 650, "the fast endpoint got {on_fast} of 1000");

    // Add an endpoint while traffic flows, then remove one: no request fails, and the set is
    // followed.
    slow.app(0)
        .server
        .as_ref()
        .unwrap()
        .delay_ms
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let during = tokio::spawn({
        let ns = a.ns.clone();
        async move {
            let mut c = http1(&ns, "10.96.0.70:8080".parse().unwrap()).await;
            let mut seen = std::collections::BTreeMap::<String, usize>::new();
            let mut failed = 0;
            for _ in 0..600 {
                match send1(&mut c, get(HOST, "/echo")).await {
                    Ok(r) if r.status == 200 => {
                        *seen
                            .entry(r.headers["x-server"].to_str().unwrap().to_string())
                            .or_default() += 1
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (seen, failed)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    east.cp.apply(&[svc(&[&fast, &slow, &extra])]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    east.cp.apply(&[svc(&[&slow, &extra])]).await;
    let (seen, failed) = during.await.unwrap();
    assert_eq!(
        failed, 0,
        "no request failed while the set changed: {seen:?}"
    );
    assert!(
        seen.get("extra").copied().unwrap_or(0) > 0,
        "the added endpoint got traffic: {seen:?}"
    );
    let (servers, failed) = spray(&a, "10.96.0.70:8080", HOST, 200, 4).await;
    assert_eq!(failed, 0);
    assert!(
        !servers.iter().any(|s| s == "fast"),
        "the removed endpoint still got traffic"
    );
}

#[tokio::test]
async fn netns_a_failing_endpoint_is_ejected_and_restored() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let good = east.test_pod(&net, "good", "echo").await;
    let bad = east.test_pod(&net, "bad", "echo").await;
    let a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .meshed()
        .start()
        .await;
    east.cp
        .apply(&[Service::new("web", "shop")
            .vip("10.96.0.80")
            .port(8080)
            .endpoint(&good, "echo")
            .endpoint(&bad, "echo")])
        .await;
    let broken = bad.app(0).server.clone().unwrap();
    broken
        .fail_all
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Warm up until the breaker has ejected the broken endpoint.
    let _ = spray(&a, "10.96.0.80:8080", HOST, 60, 1).await;
    let m = a.metrics().await;
    assert!(m.get("endpoint_ejections_total", &[]) >= 1.0, "{}", m.text);
    // Ejected: the good endpoint serves everything.
    let (servers, failed) = spray(&a, "10.96.0.80:8080", HOST, 100, 1).await;
    assert_eq!(failed, 0, "{servers:?}");
    assert!(servers.iter().all(|s| s == "good"));
    // Healthy again: a probe restores it and it takes traffic again.
    broken
        .fail_all
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let restored = remora_tests::eventually(Duration::from_secs(30), || async {
        let (servers, _) = spray(&a, "10.96.0.80:8080", HOST, 20, 1).await;
        servers.iter().any(|s| s == "bad")
    })
    .await;
    assert!(restored, "the endpoint came back");
    assert!(a.metrics().await.get("endpoint_restorations_total", &[]) >= 1.0);
}
