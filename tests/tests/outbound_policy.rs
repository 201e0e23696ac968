//! Outbound policy from the control plane (`OutboundPolicies/Watch`), end to end: a Remora
//! client pod given Linkerd's injected environment calls a service's virtual IP that only its
//! outbound policy knows, under the scriptable Linkerd-shaped plane
//! ([`remora_tests::linkerd`], [`remora_tests::outbound_policies`]); the policy's backends are
//! two server pods (the test server, reporting its name in `x-server`) found by their services'
//! destination paths.
//!
//! - a header match sends to backend B and the rest to A; route edits apply to new requests
//!   without a restart; malformed policies (a regex that does not compile, no backends, a
//!   filter of no known kind) are refused with a log line and the previous one kept; the route
//!   families count a scripted mix exactly;
//! - `RandomAvailable` follows its weights (70/30) and `FirstAvailable` fails over from a
//!   backend without endpoints;
//! - a route's retry turns two failures into a 200 and leaves a body over its limit alone; a
//!   request timeout answers 504; a redirect filter answers its redirect;
//! - a gRPC `UNAVAILABLE` is retried, `INTERNAL` only once configured;
//! - the forbidden opaque route of an undefined port resets the connection and counts it;
//! - the last good policy survives the control plane's outage;
//! - a request the backend's pod never processed (its inbound has no app to hand it to) is sent
//!   to the backend's other endpoint although the route has no retry policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use linkerd2_proxy_api::outbound as pb;
use remora_tests::apps::connect_in;
use remora_tests::eventually;
use remora_tests::http::{grpc_channel, grpc_echo};
use remora_tests::linkerd::{Endpoint, Workload, WorkloadSpec};
use remora_tests::outbound_policies::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn canary_policy(canary: &str, rest: &str) -> pb::OutboundPolicy {
    web_policy(vec![
        http_route("web-default", vec![rule(vec![], first_available(&[rest]))]),
        http_route(
            "web-canary",
            vec![rule(
                vec![header("x-canary", "1")],
                first_available(&[canary]),
            )],
        ),
    ])
}

const CANARY: [(&str, &str); 1] = [("x-canary", "1")];

#[tokio::test]
async fn netns_outbound_policy_routes_by_header_follows_edits_and_refuses_malformed_policies() {
    let Some(m) =
        PolicyMesh::start(1, ClientProxy::Remora, Some(canary_policy(WEB_B, WEB_A))).await
    else {
        return;
    };
    assert_eq!(m.who("/echo", &CANARY).await, "web-b", "{}", m.logs());
    assert_eq!(m.who("/echo", &[]).await, "web-a", "{}", m.logs());

    // The route families, exactly, over a scripted mix.
    let before = m.client.pod.metrics().await;
    for _ in 0..5 {
        assert_eq!(m.who("/echo", &[]).await, "web-a");
    }
    for _ in 0..3 {
        assert_eq!(m.who("/echo", &CANARY).await, "web-b");
    }
    for _ in 0..2 {
        let r = m.get("/status/503", &[]).await.unwrap();
        assert_eq!(r.status, 503);
    }
    let after = m.client.pod.metrics().await;
    let delta = |family: &str, labels: &[(&str, &str)]| {
        after.get(family, labels) - before.get(family, labels)
    };
    let statuses = "outbound_http_route_request_statuses_total";
    let parent = [
        ("parent_kind", "Service"),
        ("parent_name", "web"),
        ("parent_port", "8080"),
    ];
    let default_ok = [
        &parent[..],
        &[
            ("route_name", "web-default"),
            ("http_status", "200"),
            ("error", ""),
        ],
    ]
    .concat();
    assert_eq!(delta(statuses, &default_ok), 5.0, "{}", after.text);
    let canary_ok = [
        &parent[..],
        &[("route_name", "web-canary"), ("http_status", "200")],
    ]
    .concat();
    assert_eq!(delta(statuses, &canary_ok), 3.0);
    let failed = [("route_name", "web-default"), ("http_status", "503")];
    assert_eq!(delta(statuses, &failed), 2.0);
    let backend = "outbound_http_route_backend_requests_total";
    assert_eq!(
        delta(
            backend,
            &[("route_name", "web-default"), ("backend_name", "web-a")]
        ),
        7.0
    );
    assert_eq!(
        delta(
            backend,
            &[
                ("route_name", "web-canary"),
                ("backend_name", "web-b"),
                ("backend_kind", "Service")
            ]
        ),
        3.0
    );
    let duration = "outbound_http_route_request_duration_seconds_count";
    assert_eq!(delta(duration, &[("route_name", "web-canary")]), 3.0);
    let backend_statuses = "outbound_http_route_backend_response_statuses_total";
    assert_eq!(
        delta(
            backend_statuses,
            &[("backend_name", "web-a"), ("http_status", "503")]
        ),
        2.0
    );
    // `remora top --routes` shows them per route.
    let bin = remora_tests::bin::remora().to_str().unwrap().to_string();
    let top = m
        .client
        .pod
        .exec(
            &bin,
            &[
                "top",
                "--routes",
                "--once",
                "--interval",
                "250ms",
                "127.0.0.1:4191",
            ],
        )
        .unwrap();
    for row in [
        "web:8080/HTTPRoute/web-canary",
        "web:8080/HTTPRoute/web-default",
    ] {
        assert!(
            top.lines()
                .any(|l| l.starts_with("route") && l.contains(row)),
            "{row}:\n{top}"
        );
    }

    // An edit: the canary goes to web-a now, without a restart.
    let pid = m.client.pod.proxy().pid();
    m.plane
        .set_outbound(&vip().to_string(), Some(canary_policy(WEB_A, WEB_B)));
    assert!(m.until("/echo", &CANARY, "web-a").await, "{}", m.logs());
    assert_eq!(m.who("/echo", &[]).await, "web-b");
    assert_eq!(m.client.pod.proxy().pid(), pid);

    // Malformed policies: refused, logged, the last good one kept.
    let mut bad_regex = canary_policy(WEB_B, WEB_A);
    let mut no_backends = canary_policy(WEB_B, WEB_A);
    let mut unknown_filter = canary_policy(WEB_B, WEB_A);
    if let Some(pb::proxy_protocol::Kind::Detect(d)) =
        bad_regex.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        for h in [
            &mut d.http1.as_mut().unwrap().routes,
            &mut d.http2.as_mut().unwrap().routes,
        ] {
            h[1].rules[0].matches.push(path_regex("/(unclosed"));
        }
    }
    if let Some(pb::proxy_protocol::Kind::Detect(d)) =
        no_backends.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        d.http1.as_mut().unwrap().routes[0].rules[0].backends = None;
    }
    if let Some(pb::proxy_protocol::Kind::Detect(d)) = unknown_filter
        .protocol
        .as_mut()
        .and_then(|p| p.kind.as_mut())
    {
        d.http1.as_mut().unwrap().routes[1].rules[0].filters =
            vec![pb::http_route::Filter { kind: None }];
    }
    for (what, bad) in [
        ("regex", bad_regex),
        ("distribution", no_backends),
        ("no known kind", unknown_filter),
    ] {
        m.plane.set_outbound(&vip().to_string(), Some(bad));
        let logged = eventually(Duration::from_secs(10), || async {
            m.client
                .pod
                .proxy()
                .log()
                .lines()
                .any(|l| l.contains("refusing an invalid policy") && l.contains(what))
        })
        .await;
        assert!(logged, "no refusal logged for {what}\n{}", m.logs());
        assert_eq!(
            m.who("/echo", &CANARY).await,
            "web-a",
            "the last good policy ({what})"
        );
        assert_eq!(m.who("/echo", &[]).await, "web-b");
    }

    // A target without a policy (the plane answers NotFound): routed as always.
    let direct = m.web_a.pod.addr4(PORT);
    let mut conn = remora_tests::http::http1(&m.client.pod.ns, direct).await;
    let r = remora_tests::http::send1(
        &mut conn,
        remora_tests::http::get(&direct.to_string(), "/echo"),
    )
    .await
    .unwrap();
    assert_eq!(r.headers["x-server"], "web-a");
    println!(
        "outbound policy: x-canary: 1 -> web-b, else web-a; edited without a restart; 3 malformed \
         policies refused, last good kept; exact route metrics after 5 + 3 + 2 requests"
    );
}

#[tokio::test]
async fn netns_outbound_policy_splits_by_weight_and_first_available_fails_over() {
    let split = web_policy(vec![http_route(
        "web-split",
        vec![rule(vec![], random_available(&[(WEB_A, 70), (WEB_B, 30)]))],
    )]);
    let Some(m) = PolicyMesh::start(1, ClientProxy::Remora, Some(split)).await else {
        return;
    };
    let (mut a, mut b) = (0, 0);
    for _ in 0..200 {
        match m.who("/echo", &[]).await.as_str() {
            "web-a" => a += 1,
            "web-b" => b += 1,
            other => panic!("{other}\n{}", m.logs()),
        }
    }
    // 140 expected; the binomial's standard deviation is 6.5.
    assert!((110..=170).contains(&a), "web-a {a}, web-b {b}");
    let metrics = m.client.pod.metrics().await;
    let backend = "outbound_http_route_backend_requests_total";
    assert_eq!(
        metrics.get(backend, &[("backend_name", "web-a")]),
        f64::from(a)
    );
    assert_eq!(
        metrics.get(backend, &[("backend_name", "web-b")]),
        f64::from(b)
    );

    let failover = web_policy(vec![http_route(
        "web-failover",
        vec![rule(vec![], first_available(&[WEB_EMPTY, WEB_B]))],
    )]);
    m.plane.set_outbound(&vip().to_string(), Some(failover));
    // The old split also answers web-b now and then: wait for ten in a row. (Like
    // linkerd2-proxy, the first request may wait out the empty backend's failfast timeout
    // while it still resolves: 504.)
    let all_b = eventually(Duration::from_secs(30), || async {
        for _ in 0..10 {
            if m.who("/echo", &[]).await != "web-b" {
                return false;
            }
        }
        true
    })
    .await;
    assert!(all_b, "{}", m.logs());
    let preferred = web_policy(vec![http_route(
        "web-failover",
        vec![rule(vec![], first_available(&[WEB_A, WEB_B]))],
    )]);
    m.plane.set_outbound(&vip().to_string(), Some(preferred));
    assert!(m.until("/echo", &[], "web-a").await, "{}", m.logs());
    println!(
        "outbound policy: RandomAvailable 70/30 -> web-a {a}, web-b {b} of 200; FirstAvailable [empty, web-b] -> web-b; [web-a, web-b] -> web-a"
    );
}

#[tokio::test]
async fn netns_outbound_policy_retries_times_out_and_redirects() {
    let mut retried = rule(vec![path_prefix("/fail-first")], first_available(&[WEB_A]));
    retried.retry = Some(retry_5xx(2, 1024));
    let mut timed = rule(vec![path_prefix("/delay")], first_available(&[WEB_A]));
    timed.timeouts = Some(linkerd2_proxy_api::http_route::Timeouts {
        request: Some(duration(300)),
        response: None,
        idle: None,
    });
    let mut moved = rule(vec![path_prefix("/moved")], first_available(&[WEB_A]));
    moved.filters = vec![redirect("new.shop", 301)];
    let p = web_policy(vec![http_route(
        "web",
        vec![
            retried,
            timed,
            moved,
            rule(vec![], first_available(&[WEB_A])),
        ],
    )]);
    let Some(m) = PolicyMesh::start(1, ClientProxy::Remora, Some(p)).await else {
        return;
    };
    let served = || {
        m.web_a
            .pod
            .app(0)
            .server
            .as_ref()
            .unwrap()
            .requests
            .load(Ordering::SeqCst)
    };
    // The test server fails its first two calls of a key (500), then answers 200.
    let before = served();
    let r = m.get("/fail-first/2/one", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), m.logs());
    assert_eq!(served() - before, 3);
    let metrics = m.client.pod.metrics().await;
    assert_eq!(
        metrics.get(
            "outbound_http_route_retry_requests_total",
            &[("route_name", "web")]
        ),
        2.0
    );
    assert_eq!(
        metrics.get(
            "outbound_http_route_retry_successes_total",
            &[("route_name", "web")]
        ),
        1.0
    );
    // A body over the retry's 1024 bytes: sent once, its failure answered.
    let post = http::Request::post("/fail-first/1/two")
        .header("host", "web.shop.svc.cluster.local:8080")
        .body(http_body_util::Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    let before = served();
    let r = m.send(post).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), served() - before),
        (500, 1),
        "{}",
        r.text()
    );
    // The request timeout: 504 after 300 ms.
    let start = std::time::Instant::now();
    let r = m.get("/delay/3000", &[]).await.unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(start.elapsed() < Duration::from_millis(2500));
    let metrics = m.client.pod.metrics().await;
    assert_eq!(
        metrics.get(
            "outbound_http_route_request_statuses_total",
            &[("route_name", "web"), ("error", "REQUEST_TIMEOUT")]
        ),
        1.0,
        "{}",
        metrics.text
    );
    // The redirect.
    let before = served();
    let r = m.get("/moved/here?x=1", &[]).await.unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "http://new.shop:8080/moved/here?x=1");
    assert_eq!(served(), before, "a redirect never reaches the app");
    println!(
        "outbound policy: retry 2 x 500 -> 200 (3 calls), 4 KiB body over the 1 KiB limit not retried, request timeout 300 ms -> 504, redirect -> 301 http://new.shop:8080/moved/here?x=1"
    );
}

#[tokio::test]
async fn netns_outbound_policy_retries_grpc_unavailable_but_not_internal_unless_configured() {
    use linkerd2_proxy_api::outbound::grpc_route::retry::Conditions;
    let unavailable = Conditions {
        unavailable: true,
        ..Default::default()
    };
    let Some(m) = PolicyMesh::start(
        1,
        ClientProxy::Remora,
        Some(grpc_policy(WEB_A, unavailable)),
    )
    .await
    else {
        return;
    };
    let served = || {
        m.web_a
            .pod
            .app(0)
            .server
            .as_ref()
            .unwrap()
            .requests
            .load(Ordering::SeqCst)
    };
    let channel = grpc_channel(&m.client.pod.ns, vip()).await;
    let before = served();
    let e = grpc_echo(channel.clone(), "x", 14).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}\n{}", m.logs());
    assert_eq!(served() - before, 3, "UNAVAILABLE: retried twice");
    let before = served();
    let e = grpc_echo(channel.clone(), "x", 13).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    assert_eq!(served() - before, 1, "INTERNAL: not retried");
    let ok = grpc_echo(channel.clone(), "hello", 0).await.unwrap();
    assert_eq!(ok.message, "hello");
    let internal = Conditions {
        internal: true,
        ..Default::default()
    };
    m.plane
        .set_outbound(&vip().to_string(), Some(grpc_policy(WEB_A, internal)));
    let retried = eventually(Duration::from_secs(10), || async {
        let before = served();
        let _ = grpc_echo(channel.clone(), "x", 13).await;
        served() - before == 3
    })
    .await;
    assert!(
        retried,
        "INTERNAL, once configured, is retried\n{}",
        m.logs()
    );
    let metrics = m.client.pod.metrics().await;
    assert!(
        metrics.get(
            "outbound_grpc_route_request_statuses_total",
            &[("route_name", "echo"), ("grpc_status", "UNAVAILABLE")]
        ) >= 1.0,
        "{}",
        metrics.text
    );
    println!(
        "outbound policy: gRPC UNAVAILABLE retried (3 calls), INTERNAL not (1 call), INTERNAL after an edit: retried (3 calls)"
    );
}

#[tokio::test]
async fn netns_outbound_policy_resets_and_counts_a_forbidden_port() {
    let Some(m) = PolicyMesh::start(1, ClientProxy::Remora, None).await else {
        return;
    };
    let target: std::net::SocketAddr = format!("{VIP}:9999").parse().unwrap();
    m.plane
        .set_outbound(&target.to_string(), Some(undefined_port(9999)));
    let mut conn = connect_in(&m.client.pod.ns, target).await.unwrap();
    let _ = conn.write_all(b"hello").await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(read, Err(_) | Ok(0)),
        "the connection is refused: {read:?}"
    );
    let counted = eventually(Duration::from_secs(5), || async {
        let metrics = m.client.pod.metrics().await;
        metrics.get(
            "outbound_tcp_route_close_total",
            &[
                ("route_name", "undefined-port"),
                ("error", "forbidden"),
                ("target_port", "9999"),
            ],
        ) == 1.0
    })
    .await;
    let metrics = m.client.pod.metrics().await;
    assert!(counted, "{}\n{}", metrics.text, m.logs());
    assert_eq!(
        metrics.get(
            "outbound_tcp_route_open_total",
            &[("route_name", "undefined-port")]
        ),
        1.0
    );
    println!(
        "outbound policy: undefined port 9999 -> reset; outbound_tcp_route_close_total{{error=\"forbidden\"}} = 1"
    );
}

#[tokio::test]
async fn netns_outbound_policy_keeps_the_last_good_policy_through_an_outage() {
    let Some(mut m) =
        PolicyMesh::start(1, ClientProxy::Remora, Some(canary_policy(WEB_B, WEB_A))).await
    else {
        return;
    };
    assert_eq!(m.who("/echo", &CANARY).await, "web-b", "{}", m.logs());
    assert_eq!(m.who("/echo", &[]).await, "web-a", "{}", m.logs());
    m.plane.kill(0);
    // New connections, new requests: still routed by the policy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        assert_eq!(m.who("/echo", &CANARY).await, "web-b", "{}", m.logs());
        assert_eq!(m.who("/echo", &[]).await, "web-a");
    }
    assert!(
        m.client
            .pod
            .proxy()
            .wait_log(
                "outbound policy: policy unavailable; keeping the last known",
                Duration::from_secs(20)
            )
            .await,
        "{}",
        m.logs()
    );
    println!(
        "outbound policy: control plane killed; x-canary: 1 still -> web-b, the rest -> web-a"
    );
}

#[tokio::test]
async fn netns_outbound_policy_sends_a_request_never_processed_to_another_endpoint() {
    const PAIR: &str = "web-pair.shop.svc.cluster.local:8080";
    // No retry policy: only the never-processed resend may save a request.
    let pair = web_policy(vec![http_route(
        "web-pair",
        vec![rule(vec![], first_available(&[PAIR]))],
    )]);
    let Some(m) = PolicyMesh::start(1, ClientProxy::Remora, None).await else {
        return;
    };
    // A meshed pod whose app is gone: its inbound answers `l5d-proxy-error: request not
    // processed` (tests/tests/netns_not_processed.rs).
    let down = m
        .plane
        .workload(
            &m.net,
            WorkloadSpec::new("web-down-0", "web-down").declare(PORT),
        )
        .await;
    let endpoint = |w: &Workload, sa: &str| Endpoint {
        addr: w.pod.addr4(PORT),
        sa: sa.into(),
        ns: "shop".into(),
        pod: w.pod.name.clone(),
        opaque: false,
    };
    m.plane.add_service(
        PAIR,
        vec![endpoint(&m.web_a, "web-a"), endpoint(&down, "web-down")],
    );
    m.plane.set_outbound(&vip().to_string(), Some(pair));
    let refused = |metrics: remora_tests::admin::Metrics| {
        metrics
            .get("retries_total", &[("reason", "refused")])
            .max(0.0)
    };
    let answers = std::cell::RefCell::new(Vec::new());
    let met = eventually(Duration::from_secs(30), || async {
        for _ in 0..10 {
            let who = m.who("/echo", &[]).await;
            answers.borrow_mut().push(who);
        }
        refused(m.client.pod.metrics().await) > 0.0
    })
    .await;
    let answers = answers.into_inner();
    let resent = refused(m.client.pod.metrics().await);
    println!(
        "outbound policy: {} requests over [web-a, web-down (no app)], no retry policy: {} \
         answered by web-a; {resent} resent as never processed",
        answers.len(),
        answers.iter().filter(|a| *a == "web-a").count()
    );
    assert!(
        met,
        "no request met the pod without an app: {answers:?}\n{}",
        m.logs()
    );
    assert!(
        answers.iter().all(|a| a == "web-a"),
        "{answers:?}\n{}\n--- web-down ---\n{}",
        m.logs(),
        down.pod.proxy().log()
    );
}

/// `remora` under the name Linkerd's image gives the proxy (`linkerd2-proxy`), in a directory
/// the proxy's user can read.
fn remora_as_linkerd2_proxy() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(remora_tests::netns::unique("remora-as-l2p"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.join("linkerd2-proxy");
    std::os::unix::fs::symlink(remora_tests::bin::remora(), &link).unwrap();
    link
}

#[tokio::test]
async fn netns_outbound_policy_under_remora_control_follows_an_httproute() {
    use remora_tests::control::{ClusterPlane, Pki};
    use remora_tests::services::Service;
    let Some(net) = remora_tests::Net::new() else {
        return;
    };
    let pki = Pki::new();
    let mut plane = ClusterPlane::east(&net, &pki).await;
    let web = plane.test_pod(&net, "web-0", "web").await;
    let web_v2 = plane.test_pod(&net, "web-v2-0", "web").await;
    plane
        .cp
        .apply(&[
            Service::new("web", "shop")
                .vip("10.96.0.10")
                .port(8080)
                .endpoint(&web, "web"),
            Service::new("web-v2", "shop")
                .vip("10.96.0.11")
                .port(8080)
                .endpoint(&web_v2, "web"),
        ])
        .await;
    let program = remora_as_linkerd2_proxy();
    let client = plane
        .linkerd2_pod(&net, &program, "client-0", "client", Vec::new())
        .await;
    let who = |canary: bool| {
        let ns = client.pod.ns.clone();
        async move {
            let mut req = remora_tests::http::get("web.shop.svc.cluster.local:8080", "/echo");
            if canary {
                req.headers_mut().insert("x-canary", "1".parse().unwrap());
            }
            let call = async {
                let mut conn = remora_tests::http::http1(&ns, vip()).await;
                remora_tests::http::send1(&mut conn, req).await
            };
            match tokio::time::timeout(Duration::from_secs(15), call).await {
                Ok(Ok(r)) => r
                    .headers
                    .get("x-server")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                other => format!("{other:?}"),
            }
        }
    };
    assert!(
        eventually(Duration::from_secs(20), || async {
            who(true).await == "web-0"
        })
        .await,
        "{}\n--- remora control ---\n{}",
        client.pod.proxy().log(),
        plane.cp.process().log()
    );
    let pid = client.pod.proxy().pid();
    plane
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
    assert!(
        eventually(Duration::from_secs(20), || async {
            who(true).await == "web-v2-0"
        })
        .await,
        "{}\n--- remora control ---\n{}",
        client.pod.proxy().log(),
        plane.cp.process().log()
    );
    assert_eq!(who(false).await, "web-0");
    assert_eq!(client.pod.proxy().pid(), pid, "no restart");
    let metrics = client.pod.metrics().await;
    let routed = metrics.get(
        "outbound_http_route_backend_requests_total",
        &[("route_name", "web-canary"), ("backend_name", "web-v2")],
    );
    assert!(routed >= 1.0, "{}", metrics.text);
    println!(
        "outbound policy under remora control: HTTPRoute web-canary (x-canary: 1 -> web-v2) \
         followed without a restart; outbound_http_route_backend_requests_total{{route_name=\"web-canary\",backend_name=\"web-v2\"}} = {routed}"
    );
}
