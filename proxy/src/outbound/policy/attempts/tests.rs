//! Policy-routed requests against real HTTP servers on loopback (forward backends): route and
//! backend choice, retries and their limits, timeouts, filters, and the route families.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ::http::{HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd2_proxy_api::http_route as http_pb;
use linkerd2_proxy_api::outbound as pb;
use remora_metrics::Registry;
use remora_metrics::outbound_route::OutboundRouteMetrics;
use remora_metrics::series::SeriesLimits;

use crate::outbound::OutboundCtx;
use crate::outbound::http::{Dispatched, HttpOutbound};
use crate::outbound::policy::tests::*;
use crate::outbound::policy::{OutboundPolicy, compile};
use crate::testing::inputs;

/// A test app: `/status/N`, `/fail-first/N` (503 until N calls were made), `/delay/MS`;
/// gRPC-shaped `/pkg.Svc/CodeN` (trailers-only `grpc-status: N`) and `/pkg.Svc/TrailerN`
/// (status in the trailers). Every answer says who answered (`x-server`); it counts calls.
struct App {
    addr: SocketAddr,
    hits: Arc<AtomicU32>,
}

async fn app(name: &'static str, h2: bool) -> App {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { Ok::<_, std::convert::Infallible>(answer(name, n, req).await) }
                });
                let io = TokioIo::new(tcp);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    App { addr, hits }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn answer(name: &str, n: u32, req: Request<hyper::body::Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    let echoed = req.headers().get("x-a").cloned();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut status = StatusCode::OK;
    let mut grpc: Option<(u16, bool)> = None;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["status", code] => status = StatusCode::from_u16(code.parse().unwrap()).unwrap(),
        ["fail-first", k] if n <= k.parse().unwrap() => status = StatusCode::SERVICE_UNAVAILABLE,
        ["delay", ms] => tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await,
        ["pkg.Svc", m] if m.starts_with("Code") => grpc = Some((m[4..].parse().unwrap(), false)),
        ["pkg.Svc", m] if m.starts_with("Trailer") => grpc = Some((m[7..].parse().unwrap(), true)),
        _ => {}
    }
    let mut rsp = match grpc {
        Some((code, true)) => {
            let mut trailers = ::http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(code));
            let frames = vec![
                Ok(hyper::body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(hyper::body::Frame::trailers(trailers)),
            ];
            Response::new(BodyExt::boxed(http_body_util::StreamBody::new(
                tokio_stream::iter(frames),
            )))
        }
        Some((code, false)) => {
            let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            r
        }
        None => Response::new(BodyExt::boxed(Full::new(Bytes::from_static(b"ok")))),
    };
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert("x-server", HeaderValue::from_str(name).unwrap());
    h.insert("x-body-bytes", HeaderValue::from(bytes));
    if let Some(a) = echoed {
        h.insert("x-echo-a", a);
    }
    if grpc.is_some() {
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    rsp
}

/// A router without discovery whose route families are registered in `registry`.
fn router(registry: &mut Registry) -> HttpOutbound {
    let inputs = inputs();
    let series = SeriesLimits::register(registry, Default::default());
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
        routes: OutboundRouteMetrics::register(registry, &series),
    }))
}

fn with(p: pb::OutboundPolicy) -> Arc<OutboundPolicy> {
    Arc::new(compile(p).unwrap())
}

/// A policy with one rule (edited by `f`) routing everything to `backends`.
fn one_rule(
    backends: pb::http_route::Distribution,
    f: impl FnOnce(&mut pb::http_route::Rule),
) -> Arc<OutboundPolicy> {
    let mut r = rule(vec![prefix("/")], backends);
    f(&mut r);
    with(policy(vec![http_route("r", vec![r])]))
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "web.shop.svc.cluster.local:8080")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends `req` by `policy`; the response (its body read, so its metrics are recorded).
async fn send(
    router: &HttpOutbound,
    policy: &Arc<OutboundPolicy>,
    req: Request<Full<Bytes>>,
) -> (StatusCode, ::http::HeaderMap, Dispatched<'static>) {
    let mut done = Dispatched::default();
    let rsp = match router.route_by_policy(policy, req, &mut done).await {
        Ok(r) => r,
        Err(_) => panic!("the policy has no routes for the request"),
    };
    let (parts, body) = rsp.into_parts();
    let _ = body.collect().await;
    (parts.status, parts.headers, done)
}

fn metrics(registry: &Registry) -> String {
    remora_metrics::encode(registry).unwrap()
}

/// The value of the series of `family` whose labels include all of `labels`.
fn value(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_header_match_sends_to_its_backend_and_the_rest_to_the_default() {
    let (a, b) = (app("a", false).await, app("b", false).await);
    let canary = rule(
        vec![header_match("x-canary", "1")],
        first_available(vec![forward(b.addr)]),
    );
    let p = with(policy(vec![
        http_route(
            "default",
            vec![rule(vec![], first_available(vec![forward(a.addr)]))],
        ),
        http_route("canary", vec![canary]),
    ]));
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let mut canary_req = get("/");
    canary_req
        .headers_mut()
        .insert("x-canary", HeaderValue::from_static("1"));
    let (status, headers, _) = send(&r, &p, canary_req).await;
    assert_eq!(
        (status, &headers["x-server"]),
        (StatusCode::OK, &HeaderValue::from_static("b"))
    );
    let (_, headers, done) = send(&r, &p, get("/")).await;
    assert_eq!(headers["x-server"], "a");
    assert_eq!(done.addr, Some(a.addr));
    let text = metrics(&reg);
    let ok = [("http_status", "200"), ("error", "")];
    assert_eq!(
        value(
            &text,
            "outbound_http_route_request_statuses_total",
            &[&[("route_name", "canary")][..], &ok].concat()
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "outbound_http_route_request_statuses_total",
            &[&[("route_name", "default")][..], &ok].concat()
        ),
        1.0
    );
}

#[tokio::test]
async fn random_available_follows_the_weights() {
    let (a, b) = (app("a", false).await, app("b", false).await);
    let p = one_rule(
        random_available(vec![(forward(a.addr), 70), (forward(b.addr), 30)]),
        |_| {},
    );
    let mut reg = Registry::default();
    let r = router(&mut reg);
    for _ in 0..1000 {
        send(&r, &p, get("/")).await;
    }
    let (na, nb) = (a.hits.load(Ordering::SeqCst), b.hits.load(Ordering::SeqCst));
    assert_eq!(na + nb, 1000);
    assert!((630..=770).contains(&na), "{na}/{nb}");
    // A backend of weight 0 is never chosen.
    let c = app("c", false).await;
    let p = one_rule(
        random_available(vec![(forward(a.addr), 1), (forward(c.addr), 0)]),
        |_| {},
    );
    for _ in 0..50 {
        send(&r, &p, get("/")).await;
    }
    assert_eq!(c.hits.load(Ordering::SeqCst), 0);
}

fn retry(max: u32, bytes: u32, statuses: &[(u32, u32)]) -> pb::http_route::Retry {
    pb::http_route::Retry {
        max_retries: max,
        max_request_bytes: bytes,
        conditions: Some(pb::http_route::retry::Conditions {
            status_ranges: statuses
                .iter()
                .map(|&(start, end)| pb::http_route::retry::conditions::StatusRange { start, end })
                .collect(),
        }),
        timeout: None,
        backoff: Some(pb::ExponentialBackoff {
            min_backoff: Some(pd(5)),
            max_backoff: Some(pd(20)),
            jitter_ratio: 0.0,
            respect_retry_after_hint: false,
        }),
    }
}

#[tokio::test]
async fn a_route_retry_turns_two_503s_into_a_200_within_its_body_limit() {
    let a = app("a", false).await;
    let p = one_rule(first_available(vec![forward(a.addr)]), |r| {
        r.retry = Some(retry(2, 1024, &[(500, 599)]))
    });
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let post = |path: &str, n: usize| {
        Request::post(path)
            .header("host", "web.shop.svc.cluster.local:8080")
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    let (status, headers, done) = send(&r, &p, post("/fail-first/2", 100)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-body-bytes"], "100",
        "the body was sent again whole"
    );
    assert_eq!(done.attempts, 3);
    assert_eq!(a.hits.load(Ordering::SeqCst), 3);
    let text = metrics(&reg);
    assert_eq!(
        value(&text, "outbound_http_route_retry_requests_total", &[]),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "outbound_http_route_retry_successes_total", &[]),
        1.0
    );
    assert_eq!(
        value(&text, "outbound_http_route_backend_requests_total", &[]),
        3.0
    );
    // Beyond the body limit: not retried.
    let before = a.hits.load(Ordering::SeqCst);
    let (status, _, done) = send(&r, &p, post("/status/503", 2000)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (done.attempts, a.hits.load(Ordering::SeqCst) - before),
        (1, 1)
    );
    // The limit: three attempts, then the last answer.
    let before = a.hits.load(Ordering::SeqCst);
    let (status, _, _) = send(&r, &p, get("/status/503")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.hits.load(Ordering::SeqCst) - before, 3);
    let text = metrics(&reg);
    assert_eq!(
        value(&text, "outbound_http_route_retry_limit_exceeded_total", &[]),
        1.0
    );
    // A status outside the conditions is not retried.
    let before = a.hits.load(Ordering::SeqCst);
    let (status, _, _) = send(&r, &p, get("/status/404")).await;
    assert_eq!(
        (status, a.hits.load(Ordering::SeqCst) - before),
        (StatusCode::NOT_FOUND, 1)
    );
}

#[tokio::test]
async fn the_request_timeout_answers_504_and_the_attempt_timeout_is_retried() {
    let a = app("a", false).await;
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let p = one_rule(first_available(vec![forward(a.addr)]), |r| {
        r.timeouts = Some(http_pb::Timeouts {
            request: Some(pd(200)),
            response: None,
            idle: None,
        })
    });
    let start = tokio::time::Instant::now();
    let (status, headers, _) = send(&r, &p, get("/delay/2000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert!(
        headers["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .contains("request timeout")
    );
    let text = metrics(&reg);
    assert_eq!(
        value(
            &text,
            "outbound_http_route_request_statuses_total",
            &[("error", "REQUEST_TIMEOUT"), ("http_status", "")]
        ),
        1.0,
        "{text}"
    );
    // Each attempt within 100 ms, twice retried: the third attempt (the last) has no attempt
    // timeout and gets its answer.
    let p = one_rule(first_available(vec![forward(a.addr)]), |r| {
        let mut rt = retry(2, 1024, &[(500, 599)]);
        rt.timeout = Some(pd(100));
        r.retry = Some(rt);
    });
    let before = a.hits.load(Ordering::SeqCst);
    let (status, _, done) = send(&r, &p, get("/delay/300")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (done.attempts, a.hits.load(Ordering::SeqCst) - before),
        (3, 3)
    );
}

#[tokio::test]
async fn redirects_failures_and_header_filters_answer_for_the_route() {
    let a = app("a", false).await;
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let p = one_rule(first_available(vec![forward(a.addr)]), |r| {
        r.filters = vec![pb::http_route::Filter {
            kind: Some(pb::http_route::filter::Kind::Redirect(
                http_pb::RequestRedirect {
                    host: "new.shop".into(),
                    status: 302,
                    ..Default::default()
                },
            )),
        }]
    });
    let (status, headers, _) = send(&r, &p, get("/items?a=1")).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "http://new.shop:8080/items?a=1");
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
    let p = one_rule(first_available(vec![forward(a.addr)]), |r| {
        r.filters = vec![pb::http_route::Filter {
            kind: Some(pb::http_route::filter::Kind::FailureInjector(
                http_pb::HttpFailureInjector {
                    status: 418,
                    message: "no coffee".into(),
                    ratio: None,
                },
            )),
        }]
    });
    let (status, headers, _) = send(&r, &p, get("/")).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert!(
        headers["l5d-proxy-error"]
            .to_str()
            .unwrap()
            .contains("no coffee")
    );
    let text = metrics(&reg);
    assert_eq!(
        value(
            &text,
            "outbound_http_route_request_statuses_total",
            &[("http_status", "302"), ("error", "")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "outbound_http_route_request_statuses_total",
            &[("http_status", "418"), ("error", "")]
        ),
        1.0
    );
    // Request headers are modified before the app sees them; response headers after.
    let p = one_rule(first_available(vec![forward(a.addr)]), |r| {
        let h = |k: &str, v: &str| linkerd2_proxy_api::http_types::Headers {
            headers: vec![linkerd2_proxy_api::http_types::headers::Header {
                name: k.into(),
                value: v.as_bytes().to_vec(),
            }],
        };
        r.filters = vec![
            pb::http_route::Filter {
                kind: Some(pb::http_route::filter::Kind::RequestHeaderModifier(
                    http_pb::RequestHeaderModifier {
                        add: None,
                        set: Some(h("x-a", "set")),
                        remove: vec![],
                    },
                )),
            },
            pb::http_route::Filter {
                kind: Some(pb::http_route::filter::Kind::ResponseHeaderModifier(
                    http_pb::ResponseHeaderModifier {
                        add: Some(h("x-route", "r")),
                        set: None,
                        remove: vec!["x-body-bytes".into()],
                    },
                )),
            },
        ]
    });
    let (status, headers, _) = send(&r, &p, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-echo-a"], "set");
    assert_eq!(headers["x-route"], "r");
    assert!(headers.get("x-body-bytes").is_none());
}

#[tokio::test]
async fn an_empty_distribution_sheds_and_a_backend_without_dispatcher_fails() {
    let mut reg = Registry::default();
    let r = router(&mut reg);
    use pb::http_route::distribution;
    let p = one_rule(
        pb::http_route::Distribution {
            kind: Some(distribution::Kind::Empty(distribution::Empty {})),
        },
        |_| {},
    );
    let (status, _, _) = send(&r, &p, get("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let mut b = balancer("gone", "gone.shop.svc.cluster.local:80");
    b.kind = None;
    let p = one_rule(first_available(vec![b]), |_| {});
    let (status, _, _) = send(&r, &p, get("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let text = metrics(&reg);
    assert_eq!(
        value(
            &text,
            "outbound_http_route_request_statuses_total",
            &[("error", "LOAD_SHED")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "outbound_http_route_backend_requests_total",
            &[("backend_name", "fail"), ("backend_kind", "default")]
        ),
        1.0
    );
}

fn grpc_policy(
    addr: SocketAddr,
    conditions: pb::grpc_route::retry::Conditions,
) -> Arc<OutboundPolicy> {
    #[allow(deprecated)]
    let rule = pb::grpc_route::Rule {
        matches: vec![],
        filters: vec![],
        backends: Some(pb::grpc_route::Distribution {
            kind: Some(pb::grpc_route::distribution::Kind::FirstAvailable(
                pb::grpc_route::distribution::FirstAvailable {
                    backends: vec![pb::grpc_route::RouteBackend {
                        backend: Some(forward(addr)),
                        filters: vec![],
                        request_timeout: None,
                    }],
                },
            )),
        }),
        request_timeout: None,
        timeouts: None,
        retry: Some(pb::grpc_route::Retry {
            max_retries: 2,
            max_request_bytes: 1024,
            conditions: Some(conditions),
            timeout: None,
            backoff: None,
        }),
        allow_l5d_request_headers: false,
    };
    with(pb::OutboundPolicy {
        metadata: Some(service_meta("api", 9090)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Grpc(pb::proxy_protocol::Grpc {
                routes: vec![pb::GrpcRoute {
                    metadata: Some(default_meta("grpc")),
                    hosts: vec![],
                    rules: vec![rule],
                }],
                failure_accrual: None,
            })),
        }),
    })
}

fn grpc_call(method: &str) -> Request<Full<Bytes>> {
    Request::post(format!(
        "http://api.shop.svc.cluster.local:9090/pkg.Svc/{method}"
    ))
    .version(::http::Version::HTTP_2)
    .header("content-type", "application/grpc")
    .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
    .unwrap()
}

#[tokio::test]
async fn grpc_unavailable_is_retried_and_internal_is_not_unless_configured() {
    let a = app("a", true).await;
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let p = grpc_policy(
        a.addr,
        pb::grpc_route::retry::Conditions {
            unavailable: true,
            ..Default::default()
        },
    );
    let hits = |a: &App| a.hits.load(Ordering::SeqCst);
    let (_, headers, _) = send(&r, &p, grpc_call("Code14")).await;
    assert_eq!(headers["grpc-status"], "14");
    assert_eq!(hits(&a), 3, "UNAVAILABLE: two retries");
    send(&r, &p, grpc_call("Code13")).await;
    assert_eq!(hits(&a), 4, "INTERNAL is not retried");
    // In the trailers of a short response, too.
    send(&r, &p, grpc_call("Trailer14")).await;
    assert_eq!(hits(&a), 7);
    let p = grpc_policy(
        a.addr,
        pb::grpc_route::retry::Conditions {
            internal: true,
            ..Default::default()
        },
    );
    send(&r, &p, grpc_call("Code13")).await;
    assert_eq!(hits(&a), 10, "INTERNAL, configured");
    let text = metrics(&reg);
    assert_eq!(
        value(
            &text,
            "outbound_grpc_route_request_statuses_total",
            &[("grpc_status", "UNAVAILABLE"), ("error", "")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "outbound_grpc_route_request_statuses_total",
            &[("grpc_status", "INTERNAL")]
        ),
        2.0
    );
    assert_eq!(
        value(&text, "outbound_grpc_route_retry_requests_total", &[]),
        6.0
    );
}

/// A peer that reads each request and closes its connection before any byte of a response
/// (a request it never processed); it counts the requests.
async fn closer() -> App {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Until the head's end (a bounded read: the tests' requests are small).
                for _ in 0..64 {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                // A body announced by content-length is read too, so the close is clean.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tcp.try_read(&mut chunk);
                drop(tcp);
            });
        }
    });
    App { addr, hits }
}

#[tokio::test]
async fn a_request_never_processed_goes_to_the_other_backend_whatever_its_route() {
    let (dead, live) = (closer().await, app("a", false).await);
    // No retry policy at all: the route itself never retries.
    let p = one_rule(
        random_available(vec![(forward(dead.addr), 1), (forward(live.addr), 1)]),
        |_| {},
    );
    let mut reg = Registry::default();
    let r = router(&mut reg);
    for i in 0..24 {
        let before = dead.hits.load(Ordering::SeqCst);
        let (status, headers, done) = send(&r, &p, get("/")).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(headers["x-server"], "a");
        assert_eq!(done.addr, Some(live.addr));
        let refused = dead.hits.load(Ordering::SeqCst) - before;
        assert!(refused <= 1, "the peer that refused is avoided");
        assert_eq!(done.attempts, 1 + refused);
    }
    let refused = dead.hits.load(Ordering::SeqCst);
    // 24 even draws all missing the closer: a chance of 2^-24.
    assert!(refused > 0, "the closer was never drawn");
    assert_eq!(live.hits.load(Ordering::SeqCst), 24);
    assert_eq!(
        r.ctx.inputs.http_metrics.retries("refused"),
        u64::from(refused)
    );
    let text = metrics(&reg);
    assert_eq!(
        value(&text, "outbound_http_route_retry_requests_total", &[]),
        0.0,
        "resends are not the route's retries: {text}"
    );
}

#[tokio::test]
async fn a_resend_keeps_the_route_budget_and_retries_and_replays_a_kept_body() {
    let (dead, live) = (closer().await, app("a", false).await);
    // A retry policy that allows no retries: the resend does not need one.
    let p = one_rule(
        first_available(vec![forward(dead.addr), forward(live.addr)]),
        |r| r.retry = Some(retry(0, 1024, &[(500, 599)])),
    );
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let req = Request::post("/")
        .header("host", "web.shop.svc.cluster.local:8080")
        .body(Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    let (status, headers, done) = send(&r, &p, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-body-bytes"], "100",
        "the kept body was sent again"
    );
    assert_eq!((done.attempts, done.addr), (2, Some(live.addr)));
    assert_eq!(
        (
            dead.hits.load(Ordering::SeqCst),
            live.hits.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    let text = metrics(&reg);
    assert_eq!(
        value(&text, "outbound_http_route_retry_requests_total", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "outbound_http_route_retry_limit_exceeded_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn a_body_not_kept_is_never_sent_twice_and_resends_are_bounded() {
    let (dead, live) = (closer().await, app("a", false).await);
    // No retry policy: a request with a body keeps none of it.
    let p = one_rule(
        first_available(vec![forward(dead.addr), forward(live.addr)]),
        |_| {},
    );
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let req = Request::post("/")
        .header("host", "web.shop.svc.cluster.local:8080")
        .body(Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    let (status, _, done) = send(&r, &p, req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(done.attempts, 1);
    assert_eq!(
        (
            dead.hits.load(Ordering::SeqCst),
            live.hits.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
    // Every backend refuses: the resends stop at the attempt limit.
    let other = closer().await;
    let p = one_rule(
        first_available(vec![forward(dead.addr), forward(other.addr)]),
        |_| {},
    );
    let before = dead.hits.load(Ordering::SeqCst);
    let (status, _, done) = send(&r, &p, get("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let sends = dead.hits.load(Ordering::SeqCst) - before + other.hits.load(Ordering::SeqCst);
    assert_eq!(
        (done.attempts, sends),
        (
            crate::outbound::retry::MAX_ATTEMPTS,
            crate::outbound::retry::MAX_ATTEMPTS
        )
    );
    assert_eq!(
        other.hits.load(Ordering::SeqCst),
        1,
        "the refusers alternate"
    );
}

#[tokio::test]
async fn a_peer_that_answered_never_processed_is_asked_again_only_when_there_is_elsewhere() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let mut reg = Registry::default();
    let r = router(&mut reg);
    let elsewhere = |p: &Arc<OutboundPolicy>, failed| match p.http(false) {
        Some(crate::outbound::policy::HttpOrGrpc::Http(routes)) => {
            r.elsewhere(&routes.routes[0].rules[0].policy.distribution, failed)
        }
        _ => panic!("no HTTP/1 routes"),
    };
    let alone = one_rule(first_available(vec![forward(a)]), |_| {});
    assert!(!elsewhere(&alone, a));
    assert!(elsewhere(&alone, b));
    let pair = one_rule(
        random_available(vec![(forward(a), 1), (forward(b), 1)]),
        |_| {},
    );
    assert!(elsewhere(&pair, a));
    // A backend that is never chosen is not elsewhere.
    let unweighted = one_rule(
        random_available(vec![(forward(a), 1), (forward(b), 0)]),
        |_| {},
    );
    assert!(!elsewhere(&unweighted, a));
}
