//! The attempts of one request against real HTTP servers on loopback: what is retried, on
//! which endpoint, within which budget and timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::destination as pb;
use remora_metrics::labels::DstLabels;
use tokio::sync::watch;

use super::*;
use crate::discovery::balance::Balancer;
use crate::discovery::profile::{BudgetSlot, Profile};
use crate::discovery::{Resolution, Target};
use crate::outbound::OutboundCtx;
use crate::testing::inputs;

/// An HTTP/1 server answering 503 to its first `failures` requests, then 200 after `delay`;
/// it counts the requests it saw.
async fn server(failures: u32, delay: Duration) -> (SocketAddr, Arc<AtomicU32>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = req.into_body().collect().await;
                        tokio::time::sleep(delay).await;
                        let status = if n < failures {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let mut rsp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *rsp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(rsp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn endpoint(addr: SocketAddr) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        addr,
        weight: 1,
        identity: None,
        server_name: None,
        hint: Hint::Unknown,
        opaque_transport_port: None,
        authority_override: None,
        labels: BTreeMap::new(),
        dst_labels: Arc::new(DstLabels::new(std::iter::empty())),
        server_id: None,
    })
}

/// A profile with one route matching everything.
fn profile(retryable: bool, timeout: Option<Duration>, budget: Option<(f32, u32)>) -> Profile {
    Profile::compile(pb::DestinationProfile {
        routes: vec![pb::Route {
            is_retryable: retryable,
            timeout: timeout.map(|t| prost_types::Duration {
                seconds: t.as_secs() as i64,
                nanos: t.subsec_nanos() as i32,
            }),
            ..Default::default()
        }],
        retry_budget: budget.map(|(ratio, min)| pb::RetryBudget {
            retry_ratio: ratio,
            min_retries_per_second: min,
            ttl: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
        }),
        ..Default::default()
    })
}

/// A discovery target with these endpoints and profile, as the resolver would hand out.
fn target(endpoints: &[SocketAddr], profile: Profile) -> Target {
    let eps = endpoints.iter().copied().map(endpoint).collect();
    let (etx, endpoints) = watch::channel(Resolution::Endpoints(Arc::new(eps)));
    let (ptx, profile) = watch::channel(Some(Arc::new(profile)));
    // The senders must outlive the test's requests.
    std::mem::forget((etx, ptx));
    Target {
        endpoints,
        profile,
        balancer: Arc::new(Balancer::new(7, 1)),
        budget: Arc::new(BudgetSlot::default()),
    }
}

fn router() -> HttpOutbound {
    let inputs = inputs();
    HttpOutbound::new(Arc::new(OutboundCtx {
        tcp: inputs.tcp(remora_metrics::tcp::Direction::Outbound),
        connector: crate::outbound::connect::Connector::new(
            inputs.clone(),
            remora_metrics::tcp::Direction::Outbound,
        ),
        inputs,
        config: crate::outbound::OutboundConfig {
            detect_timeout: Duration::from_secs(1),
            request_timeout: None,
            http: Default::default(),
            ingress: false,
            early_dial: None,
        },
        policy: None,
        routes: remora_metrics::outbound_route::OutboundRouteMetrics::standalone(Default::default()),
    }))
}

fn get(body: Bytes) -> Request<Full<Bytes>> {
    Request::post("http://web.shop.svc.cluster.local:8080/items")
        .header("host", "web.shop.svc.cluster.local:8080")
        .body(Full::new(body))
        .unwrap()
}

/// Sends `req` to the first endpoint `target` picks, as the router would.
async fn send(
    router: &HttpOutbound,
    target: &Target,
    req: Request<Full<Bytes>>,
) -> (StatusCode, Dispatched<'static>) {
    let first = match target.clone().pick(Duration::from_secs(1)).await {
        Pick::Endpoint(ep, picked) => Destination::picked(ep, picked, Some(target.clone())),
        other => panic!("no endpoint: {other:?}"),
    };
    let mut done = Dispatched::default();
    let attempts = Attempts::new(first, &req, None);
    let rsp = router.run(req, attempts, &mut done).await;
    (rsp.status(), done)
}

#[tokio::test]
async fn a_retryable_route_turns_two_failures_into_a_success() {
    let (addr, hits) = server(2, Duration::ZERO).await;
    let t = target(&[addr], profile(true, None, None));
    let (status, done) = send(&router(), &t, get(Bytes::from_static(b"body"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done.attempts, 3);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_route_that_is_not_retryable_is_attempted_once() {
    let (addr, hits) = server(2, Duration::ZERO).await;
    let t = target(&[addr], profile(false, None, None));
    let (status, done) = send(&router(), &t, get(Bytes::from_static(b"body"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((done.attempts, hits.load(Ordering::SeqCst)), (1, 1));
}

#[tokio::test]
async fn a_body_too_large_to_keep_is_not_retried() {
    let (addr, hits) = server(1, Duration::ZERO).await;
    let t = target(&[addr], profile(true, None, None));
    let big = Bytes::from(vec![b'x'; MAX_REPLAY as usize + 1]);
    let (status, _) = send(&router(), &t, get(big)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_empty_budget_lets_the_failure_through() {
    let (addr, hits) = server(1, Duration::ZERO).await;
    let t = target(&[addr], profile(true, None, Some((0.0, 0))));
    let (status, _) = send(&router(), &t, get(Bytes::from_static(b"body"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_never_sent_is_retried_on_another_endpoint_whatever_its_route() {
    let (live, hits) = server(0, Duration::ZERO).await;
    // A port nothing listens on: the connect is refused, nothing of the request leaves.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = target(&[live], profile(false, None, None));
    let first = Destination {
        addr: dead,
        endpoint: Some(endpoint(dead)),
        picked: None,
        target: Some(t.clone()),
    };
    let req = get(Bytes::from_static(b"body"));
    let mut done = Dispatched::default();
    let attempts = Attempts::new(first, &req, None);
    let rsp = router().run(req, attempts, &mut done).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(done.addr, Some(live));
    assert_eq!((done.attempts, hits.load(Ordering::SeqCst)), (2, 1));
}

#[tokio::test]
async fn the_route_timeout_answers_504_around_all_attempts() {
    let (addr, _) = server(0, Duration::from_secs(5)).await;
    let t = target(
        &[addr],
        profile(true, Some(Duration::from_millis(200)), None),
    );
    let start = tokio::time::Instant::now();
    let (status, _) = send(&router(), &t, get(Bytes::new())).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn what_calls_for_another_attempt() {
    let retryable = profile(true, None, None);
    let route = retryable.routes.first();
    let s = |code: u16| Outcome::Status(StatusCode::from_u16(code).unwrap());
    let cases = [
        // Never sent: retried on any route, within the attempt limit.
        (Outcome::NotSent, 1, false, None, Next::Retry("connect")),
        (Outcome::NotSent, 2, true, route, Next::Retry("connect")),
        (Outcome::NotSent, MAX_ATTEMPTS, false, None, Next::Answer),
        // A failure status of a retryable route, when the request can be sent again.
        (s(503), 1, true, route, Next::Retry("status")),
        (s(503), 1, false, route, Next::Answer),
        (s(503), 1, true, None, Next::Answer),
        (s(503), MAX_ATTEMPTS, true, route, Next::Answer),
        (s(404), 1, true, route, Next::Answer),
        (s(200), 1, true, route, Next::Answer),
        // Broken after it left: it may have been processed.
        (Outcome::Failed, 1, true, route, Next::Answer),
        // Never processed by the peer: retried on any route when the body can be sent again.
        (Outcome::Refused, 1, true, None, Next::Retry("refused")),
        (Outcome::Refused, 2, true, route, Next::Retry("refused")),
        (Outcome::Refused, 1, false, None, Next::Answer),
        (Outcome::Refused, MAX_ATTEMPTS, true, None, Next::Answer),
    ];
    for (outcome, attempt, replayable, route, want) in cases {
        assert_eq!(
            next(outcome, attempt, replayable, route),
            want,
            "{outcome:?} attempt {attempt} replayable {replayable} route {}",
            route.is_some()
        );
    }
}
