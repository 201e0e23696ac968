//! The compiled model and the per-request pieces, field by field: what each `OutboundPolicy`
//! field does, and what is refused.

use std::sync::Arc;
use std::time::Duration;

use ::http::Request;
use linkerd2_proxy_api::destination as dst;
use linkerd2_proxy_api::grpc_route as grpc_pb;
use linkerd2_proxy_api::http_route as http_pb;
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::outbound as pb;

use super::*;
use crate::policy::route;

// ---- builders of the protobuf, as Linkerd's controller sends it ----

pub(super) fn pd(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub(super) fn default_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.into())),
    }
}

pub(super) fn service_meta(name: &str, port: u32) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".into(),
            kind: "Service".into(),
            name: name.into(),
            namespace: "shop".into(),
            section: String::new(),
            port,
        })),
    }
}

pub(super) fn route_meta(name: &str) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "gateway.networking.k8s.io".into(),
            kind: "HTTPRoute".into(),
            name: name.into(),
            namespace: "shop".into(),
            section: String::new(),
            port: 0,
        })),
    }
}

pub(super) fn queue() -> pb::Queue {
    pb::Queue {
        capacity: 100,
        failfast_timeout: Some(pd(3000)),
    }
}

/// A backend balanced over `path`'s endpoints, named the service `name`.
pub(super) fn balancer(name: &str, path: &str) -> pb::Backend {
    use pb::backend::{BalanceP2c, EndpointDiscovery, Kind, balance_p2c, endpoint_discovery};
    pb::Backend {
        metadata: Some(service_meta(name, 8080)),
        queue: Some(queue()),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet { path: path.into() },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: Some(pd(30)),
                decay: Some(pd(10_000)),
            })),
        })),
    }
}

pub(super) fn forward(addr: std::net::SocketAddr) -> pb::Backend {
    pb::Backend {
        metadata: Some(default_meta("egress-fallback")),
        queue: Some(queue()),
        kind: Some(pb::backend::Kind::Forward(dst::WeightedAddr {
            addr: Some(addr.into()),
            weight: 1,
            ..Default::default()
        })),
    }
}

pub(super) fn http_backend(b: pb::Backend) -> pb::http_route::RouteBackend {
    #[allow(deprecated)]
    pb::http_route::RouteBackend {
        backend: Some(b),
        filters: vec![],
        request_timeout: None,
    }
}

pub(super) fn first_available(bs: Vec<pb::Backend>) -> pb::http_route::Distribution {
    use pb::http_route::distribution;
    pb::http_route::Distribution {
        kind: Some(distribution::Kind::FirstAvailable(
            distribution::FirstAvailable {
                backends: bs.into_iter().map(http_backend).collect(),
            },
        )),
    }
}

pub(super) fn random_available(bs: Vec<(pb::Backend, u32)>) -> pb::http_route::Distribution {
    use pb::http_route::distribution;
    pb::http_route::Distribution {
        kind: Some(distribution::Kind::RandomAvailable(
            distribution::RandomAvailable {
                backends: bs
                    .into_iter()
                    .map(|(b, weight)| pb::http_route::WeightedRouteBackend {
                        backend: Some(http_backend(b)),
                        weight,
                    })
                    .collect(),
            },
        )),
    }
}

pub(super) fn rule(
    matches: Vec<http_pb::HttpRouteMatch>,
    backends: pb::http_route::Distribution,
) -> pb::http_route::Rule {
    #[allow(deprecated)]
    pb::http_route::Rule {
        matches,
        filters: vec![],
        backends: Some(backends),
        request_timeout: None,
        timeouts: None,
        retry: None,
        allow_l5d_request_headers: false,
    }
}

pub(super) fn http_route(name: &str, rules: Vec<pb::http_route::Rule>) -> pb::HttpRoute {
    pb::HttpRoute {
        metadata: Some(route_meta(name)),
        hosts: vec![],
        rules,
    }
}

pub(super) fn header_match(name: &str, value: &str) -> http_pb::HttpRouteMatch {
    http_pb::HttpRouteMatch {
        headers: vec![http_pb::HeaderMatch {
            name: name.into(),
            value: Some(http_pb::header_match::Value::Exact(
                value.as_bytes().to_vec(),
            )),
        }],
        ..Default::default()
    }
}

pub(super) fn prefix(p: &str) -> http_pb::HttpRouteMatch {
    http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch {
            kind: Some(http_pb::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

/// A Service's policy with these HTTP routes (on both HTTP versions, behind detection).
pub(super) fn policy(routes: Vec<pb::HttpRoute>) -> pb::OutboundPolicy {
    use pb::proxy_protocol::{Detect, Http1, Http2, Kind, Opaque};
    pb::OutboundPolicy {
        metadata: Some(service_meta("web", 8080)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(Kind::Detect(Detect {
                timeout: Some(pd(10_000)),
                opaque: Some(Opaque { routes: vec![] }),
                http1: Some(Http1 {
                    routes: routes.clone(),
                    failure_accrual: None,
                }),
                http2: Some(Http2 {
                    routes,
                    failure_accrual: None,
                }),
            })),
        }),
    }
}

fn web() -> pb::Backend {
    balancer("web", "web.shop.svc.cluster.local:8080")
}

fn with_rule(f: impl FnOnce(&mut pb::http_route::Rule)) -> pb::OutboundPolicy {
    let mut r = rule(vec![prefix("/")], first_available(vec![web()]));
    f(&mut r);
    policy(vec![http_route("r", vec![r])])
}

fn compiled(p: pb::OutboundPolicy) -> OutboundPolicy {
    compile(p).unwrap_or_else(|e| panic!("refused: {e}"))
}

fn http1(p: &OutboundPolicy) -> &HttpRoutes {
    match p.http(false) {
        Some(HttpOrGrpc::Http(r)) => r,
        other => panic!("no HTTP/1 routes: {other:?}"),
    }
}

fn first_rule(p: &OutboundPolicy) -> &RulePolicy<HttpFilter> {
    &http1(p).routes[0].rules[0].policy
}

// ---- refusals (linkerd2-proxy's ClientPolicy::try_from) ----

#[test]
fn malformed_policies_are_refused_with_a_reason() {
    let regex = http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch {
            kind: Some(http_pb::path_match::Kind::Regex("/(unclosed".into())),
        }),
        ..Default::default()
    };
    type Edit = Box<dyn Fn(&mut pb::OutboundPolicy)>;
    let rule_edit = |f: Box<dyn Fn(&mut pb::http_route::Rule)>| -> Edit {
        Box::new(move |p: &mut pb::OutboundPolicy| {
            if let Some(pb::proxy_protocol::Kind::Detect(d)) =
                p.protocol.as_mut().and_then(|p| p.kind.as_mut())
            {
                for h in [d.http1.as_mut(), None].into_iter().flatten() {
                    f(&mut h.routes[0].rules[0]);
                }
            }
        })
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("no metadata", Box::new(|p| p.metadata = None), "metadata"),
        ("no protocol", Box::new(|p| p.protocol = None), "protocol"),
        (
            "a resource without a namespace",
            Box::new(|p| {
                if let Some(meta::Metadata {
                    kind: Some(meta::metadata::Kind::Resource(r)),
                }) = p.metadata.as_mut()
                {
                    r.namespace.clear();
                }
            }),
            "namespace",
        ),
        (
            "detect without a timeout",
            Box::new(|p| {
                if let Some(pb::proxy_protocol::Kind::Detect(d)) =
                    p.protocol.as_mut().and_then(|p| p.kind.as_mut())
                {
                    d.timeout = None;
                }
            }),
            "detect timeout",
        ),
        (
            "a regex that does not compile",
            rule_edit(Box::new(move |r| r.matches = vec![regex.clone()])),
            "regex",
        ),
        (
            "a rule without backends",
            rule_edit(Box::new(|r| r.backends = None)),
            "distribution",
        ),
        (
            "an empty FirstAvailable",
            rule_edit(Box::new(|r| r.backends = Some(first_available(vec![])))),
            "empty FirstAvailable",
        ),
        (
            "an empty RandomAvailable",
            rule_edit(Box::new(|r| r.backends = Some(random_available(vec![])))),
            "empty RandomAvailable",
        ),
        (
            "an unknown filter",
            rule_edit(Box::new(|r| {
                r.filters = vec![pb::http_route::Filter { kind: None }]
            })),
            "no known kind",
        ),
        (
            "a retry without conditions",
            rule_edit(Box::new(|r| {
                r.retry = Some(pb::http_route::Retry {
                    max_retries: 2,
                    max_request_bytes: 1024,
                    conditions: None,
                    timeout: None,
                    backoff: None,
                })
            })),
            "conditions",
        ),
        (
            "a status range beyond 599",
            rule_edit(Box::new(|r| {
                r.retry = Some(pb::http_route::Retry {
                    max_retries: 2,
                    max_request_bytes: 1024,
                    conditions: Some(pb::http_route::retry::Conditions {
                        status_ranges: vec![pb::http_route::retry::conditions::StatusRange {
                            start: 500,
                            end: 600,
                        }],
                    }),
                    timeout: None,
                    backoff: None,
                })
            })),
            "status range",
        ),
        (
            "a backend without a queue",
            rule_edit(Box::new(|r| {
                let mut b = web();
                b.queue = None;
                r.backends = Some(first_available(vec![b]));
            })),
            "queue",
        ),
        (
            "a backend without metadata",
            rule_edit(Box::new(|r| {
                let mut b = web();
                b.metadata = None;
                r.backends = Some(first_available(vec![b]));
            })),
            "backend metadata",
        ),
        (
            "a discovery path that is not host:port",
            rule_edit(Box::new(|r| {
                r.backends = Some(first_available(vec![balancer("web", "web.shop")]))
            })),
            "host:port",
        ),
        (
            "a failure injector ratio over 1",
            rule_edit(Box::new(|r| {
                r.filters = vec![pb::http_route::Filter {
                    kind: Some(pb::http_route::filter::Kind::FailureInjector(
                        http_pb::HttpFailureInjector {
                            status: 500,
                            message: String::new(),
                            ratio: Some(http_pb::Ratio {
                                numerator: 2,
                                denominator: 1,
                            }),
                        },
                    )),
                }]
            })),
            "ratio",
        ),
        (
            "a relative redirect path",
            rule_edit(Box::new(|r| {
                r.filters = vec![pb::http_route::Filter {
                    kind: Some(pb::http_route::filter::Kind::Redirect(
                        http_pb::RequestRedirect {
                            path: Some(http_pb::PathModifier {
                                replace: Some(http_pb::path_modifier::Replace::Full("x".into())),
                            }),
                            ..Default::default()
                        },
                    )),
                }]
            })),
            "absolute",
        ),
    ];
    for (what, edit, want) in cases {
        let mut p = policy(vec![http_route(
            "r",
            vec![rule(vec![prefix("/")], first_available(vec![web()]))],
        )]);
        edit(&mut p);
        match compile(p) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => assert!(e.contains(want), "{what}: {e:?} does not mention {want:?}"),
        }
    }
}

#[test]
fn opaque_and_tls_routes_have_exactly_one_rule_and_opaque_at_most_one_route() {
    use pb::opaque_route::{Distribution as D, Rule as R, distribution};
    let opaque_rule = || R {
        backends: Some(D {
            kind: Some(distribution::Kind::Empty(distribution::Empty {})),
        }),
        filters: vec![],
    };
    let opaque = |routes: Vec<pb::OpaqueRoute>| pb::OutboundPolicy {
        metadata: Some(service_meta("web", 9999)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Opaque(
                pb::proxy_protocol::Opaque { routes },
            )),
        }),
    };
    let route = |rules| pb::OpaqueRoute {
        metadata: Some(default_meta("opaq")),
        rules,
    };
    assert!(compile(opaque(vec![route(vec![opaque_rule()])])).is_ok());
    assert!(
        compile(opaque(vec![])).is_ok(),
        "no route: connections fail"
    );
    let e = compile(opaque(vec![
        route(vec![opaque_rule()]),
        route(vec![opaque_rule()]),
    ]));
    assert!(e.unwrap_err().contains("at most one"));
    let e = compile(opaque(vec![route(vec![opaque_rule(), opaque_rule()])]));
    assert!(e.unwrap_err().contains("exactly one"));
}

// ---- what each field does ----

#[test]
fn the_parent_route_and_backend_names_are_linkerds_metas() {
    let p = compiled(with_rule(|_| {}));
    assert_eq!(
        (
            &*p.parent.group,
            &*p.parent.kind,
            &*p.parent.namespace,
            &*p.parent.name,
            p.parent.port
        ),
        ("core", "Service", "shop", "web", Some(8080))
    );
    let r = &http1(&p).routes[0];
    assert_eq!(&*r.route.kind, "HTTPRoute");
    let Distribution::FirstAvailable(b) = &r.rules[0].policy.distribution else {
        panic!()
    };
    assert_eq!(&*b[0].backend.meta.name, "web");
    assert!(matches!(
        &b[0].backend.dispatch,
        Dispatch::Balance { path } if path == "web.shop.svc.cluster.local:8080"
    ));
    assert_eq!(b[0].backend.queue.capacity, 100);
    assert_eq!(b[0].backend.queue.failfast, Duration::from_secs(3));
}

#[test]
fn protocols_select_their_routes() {
    let p = compiled(policy(vec![http_route(
        "r",
        vec![rule(vec![], first_available(vec![web()]))],
    )]));
    assert!(
        matches!(p.protocol, Protocol::Detect { timeout, .. } if timeout == Duration::from_secs(10))
    );
    assert!(p.http(false).is_some() && p.http(true).is_some());
    assert!(p.opaque().is_none(), "an empty opaque route list");
    let grpc = pb::OutboundPolicy {
        metadata: Some(service_meta("api", 9090)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Grpc(pb::proxy_protocol::Grpc {
                routes: vec![],
                failure_accrual: None,
            })),
        }),
    };
    let g = compiled(grpc);
    assert!(matches!(g.http(true), Some(HttpOrGrpc::Grpc(_))));
    assert!(g.opaque().is_none());
}

#[test]
fn timeouts_and_the_deprecated_request_timeout() {
    let p = compiled(with_rule(|r| {
        r.timeouts = Some(http_pb::Timeouts {
            request: Some(pd(5000)),
            response: Some(pd(2000)),
            idle: Some(pd(1000)),
        })
    }));
    let t = first_rule(&p).timeouts;
    assert_eq!(
        (t.request, t.response, t.idle),
        (
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(1))
        )
    );
    #[allow(deprecated)]
    let p = compiled(with_rule(|r| r.request_timeout = Some(pd(700))));
    assert_eq!(
        first_rule(&p).timeouts.request,
        Some(Duration::from_millis(700))
    );
}

#[test]
fn retries_read_limits_conditions_timeout_and_backoff() {
    let p = compiled(with_rule(|r| {
        r.retry = Some(pb::http_route::Retry {
            max_retries: 3,
            max_request_bytes: 4096,
            conditions: Some(pb::http_route::retry::Conditions {
                status_ranges: vec![pb::http_route::retry::conditions::StatusRange {
                    start: 502,
                    end: 504,
                }],
            }),
            timeout: Some(pd(250)),
            backoff: Some(pb::ExponentialBackoff {
                min_backoff: Some(pd(25)),
                max_backoff: Some(pd(250)),
                jitter_ratio: 1.0,
                respect_retry_after_hint: false,
            }),
        })
    }));
    let retry = first_rule(&p).retry.clone().unwrap();
    assert_eq!(retry.max_retries, 3);
    assert_eq!(retry.max_request_bytes, 4096);
    let ranges = retry.http.clone().unwrap();
    assert!(ranges.contains(503) && !ranges.contains(500));
    assert_eq!(retry.timeout, Some(Duration::from_millis(250)));
    let b = retry.backoff.unwrap();
    assert_eq!(
        (b.min, b.max),
        (Duration::from_millis(25), Duration::from_millis(250))
    );
    // Doubling, capped, jitter within the cap.
    assert_eq!(b.delay(0, 0.0), Duration::from_millis(25));
    assert_eq!(b.delay(1, 0.0), Duration::from_millis(50));
    assert_eq!(b.delay(9, 0.99), Duration::from_millis(250));
    assert!(b.delay(0, 0.5) > Duration::from_millis(25));
}

#[test]
fn the_five_grpc_conditions() {
    let retry = |c: pb::grpc_route::retry::Conditions| {
        let p = pb::OutboundPolicy {
            metadata: Some(service_meta("api", 9090)),
            protocol: Some(pb::ProxyProtocol {
                kind: Some(pb::proxy_protocol::Kind::Grpc(pb::proxy_protocol::Grpc {
                    #[allow(deprecated)]
                    routes: vec![pb::GrpcRoute {
                        metadata: Some(default_meta("grpc")),
                        hosts: vec![],
                        rules: vec![pb::grpc_route::Rule {
                            matches: vec![grpc_pb::GrpcRouteMatch::default()],
                            filters: vec![],
                            backends: Some(pb::grpc_route::Distribution {
                                kind: Some(pb::grpc_route::distribution::Kind::FirstAvailable(
                                    pb::grpc_route::distribution::FirstAvailable {
                                        backends: vec![pb::grpc_route::RouteBackend {
                                            backend: Some(web()),
                                            filters: vec![],
                                            request_timeout: None,
                                        }],
                                    },
                                )),
                            }),
                            request_timeout: None,
                            timeouts: None,
                            retry: Some(pb::grpc_route::Retry {
                                max_retries: 1,
                                max_request_bytes: 1024,
                                conditions: Some(c),
                                timeout: None,
                                backoff: None,
                            }),
                            allow_l5d_request_headers: false,
                        }],
                    }],
                    failure_accrual: None,
                })),
            }),
        };
        let p = compiled(p);
        let Some(HttpOrGrpc::Grpc(r)) = p.http(true) else {
            panic!()
        };
        r.routes[0].rules[0]
            .policy
            .retry
            .clone()
            .unwrap()
            .grpc
            .unwrap()
    };
    let none = pb::grpc_route::retry::Conditions::default();
    let codes = retry(pb::grpc_route::retry::Conditions {
        cancelled: true,
        deadine_exceeded: true,
        resource_exhausted: true,
        internal: true,
        unavailable: true,
    });
    for c in [1, 4, 8, 13, 14] {
        assert!(codes.contains(c), "{c}");
    }
    assert!(!codes.contains(2) && !codes.contains(0));
    let only = retry(pb::grpc_route::retry::Conditions {
        unavailable: true,
        ..none
    });
    assert!(only.contains(14) && !only.contains(13));
}

#[test]
fn failure_accrual_is_off_unless_configured() {
    let mut p = with_rule(|_| {});
    let p0 = compiled(p.clone());
    assert_eq!(http1(&p0).accrual.max_failures, u32::MAX);
    if let Some(pb::proxy_protocol::Kind::Detect(d)) =
        p.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        d.http1.as_mut().unwrap().failure_accrual = Some(pb::FailureAccrual {
            kind: Some(pb::failure_accrual::Kind::ConsecutiveFailures(
                pb::failure_accrual::ConsecutiveFailures {
                    max_failures: 7,
                    backoff: Some(pb::ExponentialBackoff {
                        min_backoff: Some(pd(1000)),
                        max_backoff: Some(pd(60_000)),
                        jitter_ratio: 0.5,
                        respect_retry_after_hint: false,
                    }),
                },
            )),
            ejection: None,
        });
    }
    let p1 = compiled(p.clone());
    let a = http1(&p1).accrual;
    assert_eq!(a.max_failures, 7);
    assert_eq!(a.backoff.min, Duration::from_secs(1));
    assert_eq!(a.backoff.max, Duration::from_secs(60));
    // The backoff is required.
    if let Some(pb::proxy_protocol::Kind::Detect(d)) =
        p.protocol.as_mut().and_then(|p| p.kind.as_mut())
        && let Some(pb::FailureAccrual {
            kind: Some(pb::failure_accrual::Kind::ConsecutiveFailures(c)),
            ..
        }) = d.http1.as_mut().unwrap().failure_accrual.as_mut()
    {
        c.backoff = None;
    }
    assert!(compile(p).unwrap_err().contains("backoff"));
}

#[test]
fn forward_and_dispatcherless_backends() {
    let addr: std::net::SocketAddr = "192.0.2.10:443".parse().unwrap();
    let p = compiled(with_rule(|r| {
        r.backends = Some(first_available(vec![forward(addr)]))
    }));
    let Distribution::FirstAvailable(b) = &first_rule(&p).distribution else {
        panic!()
    };
    assert!(matches!(&b[0].backend.dispatch, Dispatch::Forward(ep) if ep.addr == addr));
    assert_eq!(&*b[0].backend.metrics_ref.name, "unknown");
    let mut none = web();
    none.kind = None;
    let p = compiled(with_rule(|r| {
        r.backends = Some(first_available(vec![none]))
    }));
    let Distribution::FirstAvailable(b) = &first_rule(&p).distribution else {
        panic!()
    };
    assert!(matches!(&b[0].backend.dispatch, Dispatch::Fail(m) if m.contains("no dispatcher")));
    assert_eq!(&*b[0].backend.metrics_ref.name, "fail");
}

// ---- filters ----

#[test]
fn header_modifiers_add_then_set_then_remove() {
    let hs = |kv: &[(&str, &str)]| linkerd2_proxy_api::http_types::Headers {
        headers: kv
            .iter()
            .map(|(k, v)| linkerd2_proxy_api::http_types::headers::Header {
                name: k.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect(),
    };
    let p = compiled(with_rule(|r| {
        r.filters = vec![
            pb::http_route::Filter {
                kind: Some(pb::http_route::filter::Kind::RequestHeaderModifier(
                    http_pb::RequestHeaderModifier {
                        add: Some(hs(&[("x-a", "1")])),
                        set: Some(hs(&[("x-b", "2")])),
                        remove: vec!["x-c".into()],
                    },
                )),
            },
            pb::http_route::Filter {
                kind: Some(pb::http_route::filter::Kind::ResponseHeaderModifier(
                    http_pb::ResponseHeaderModifier {
                        add: None,
                        set: Some(hs(&[("x-r", "yes")])),
                        remove: vec![],
                    },
                )),
            },
        ]
    }));
    let filters = &first_rule(&p).filters;
    let mut req = Request::builder()
        .header("x-a", "0")
        .header("x-b", "0")
        .header("x-c", "0")
        .body(())
        .unwrap();
    filters::apply_http_request(filters, &mut req, None, || 0).unwrap();
    let a: Vec<_> = req.headers().get_all("x-a").iter().collect();
    assert_eq!(a, ["0", "1"]);
    assert_eq!(req.headers()["x-b"], "2");
    assert!(req.headers().get("x-c").is_none());
    assert!(
        req.headers().get("x-r").is_none(),
        "a response filter leaves requests alone"
    );
    let mut rsp = ::http::Response::new(());
    filters::apply_http_response(filters, &mut rsp);
    assert_eq!(rsp.headers()["x-r"], "yes");
}

fn redirect(r: http_pb::RequestRedirect) -> filters::Redirect {
    let p = compiled(with_rule(|rule| {
        rule.filters = vec![pb::http_route::Filter {
            kind: Some(pb::http_route::filter::Kind::Redirect(r)),
        }]
    }));
    match &first_rule(&p).filters[0] {
        HttpFilter::Redirect(r) => r.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn redirects_as_linkerd_builds_them() {
    let uri = |s: &str| s.parse::<::http::Uri>().unwrap();
    let https = http_pb::RequestRedirect {
        scheme: Some("https".into()),
        status: 302,
        ..Default::default()
    };
    let r = redirect(https);
    assert_eq!(
        r.apply(&uri("http://web.shop:8080/a?b=1"), Some(1))
            .unwrap(),
        Some((
            ::http::StatusCode::FOUND,
            uri("https://web.shop:8080/a?b=1")
        ))
    );
    // Host only: keeps a port that is not the scheme's default.
    let host = redirect(http_pb::RequestRedirect {
        host: "other.shop".into(),
        ..Default::default()
    });
    assert_eq!(
        host.apply(&uri("http://web.shop:8080/a"), None)
            .unwrap()
            .unwrap(),
        (
            ::http::StatusCode::MOVED_PERMANENTLY,
            uri("http://other.shop:8080/a")
        )
    );
    // A prefix replacement needs a prefix match.
    let pfx = redirect(http_pb::RequestRedirect {
        path: Some(http_pb::PathModifier {
            replace: Some(http_pb::path_modifier::Replace::Prefix("/v2".into())),
        }),
        ..Default::default()
    });
    assert_eq!(
        pfx.apply(&uri("http://web/v1/items?x"), Some(3))
            .unwrap()
            .unwrap()
            .1,
        uri("http://web/v2/items?x")
    );
    assert!(pfx.apply(&uri("http://web/v1/items"), None).is_err());
    // A redirect to the same URI is no redirect.
    let same = redirect(http_pb::RequestRedirect {
        port: 8080,
        ..Default::default()
    });
    assert_eq!(same.apply(&uri("http://web:8080/"), None).unwrap(), None);
}

#[test]
fn failure_injection_follows_its_ratio() {
    let ratio = Ratio {
        numerator: 1,
        denominator: 4,
    };
    // Draws spread evenly over u64: exactly a quarter fall in.
    let step = u64::MAX / 4000 + 1;
    let hits = (0..4000u64)
        .filter(|i| filters::sample(ratio, i * step))
        .count();
    assert_eq!(hits, 1000);
    assert!(filters::sample(
        Ratio {
            numerator: 1,
            denominator: 1
        },
        12345
    ));
    let mut req = Request::new(());
    let inject = [HttpFilter::Inject {
        status: ::http::StatusCode::IM_A_TEAPOT,
        message: Arc::from("tea"),
        ratio: Ratio {
            numerator: 1,
            denominator: 1,
        },
    }];
    match filters::apply_http_request(&inject, &mut req, None, || 7) {
        Err(crate::error::RouteError::Injected { status, message }) => {
            assert_eq!((status.as_u16(), &*message), (418, "tea"))
        }
        other => panic!("{other:?}"),
    }
}

// ---- the l5d-* request headers ----

#[test]
fn l5d_headers_override_the_rule_when_allowed() {
    use super::l5d::*;
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration("1.5s"), None);
    let h = parse_http_conditions("5xx,429,gateway-error,400-404,bad,700");
    assert!(h.contains(599) && h.contains(429) && h.contains(402) && !h.contains(405));
    let g = parse_grpc_conditions("Unavailable,internal,nope");
    assert!(g.contains(14) && g.contains(13) && !g.contains(4));

    let mut headers = ::http::HeaderMap::new();
    for (k, v) in [
        ("l5d-retry-http", "503"),
        ("l5d-retry-limit", "4"),
        ("l5d-retry-timeout", "100ms"),
        ("l5d-timeout", "1s"),
        ("l5d-request-timeout", "2s"),
        ("l5d-response-timeout", "500ms"),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    let (retry, t) = apply(&mut headers, None, Timeouts::default());
    assert!(
        headers.is_empty(),
        "every l5d header is removed: {headers:?}"
    );
    let retry = retry.unwrap();
    assert_eq!(retry.max_retries, 4);
    assert_eq!(retry.max_request_bytes, 64 * 1024);
    assert!(retry.http.unwrap().contains(503));
    assert_eq!(retry.timeout, Some(Duration::from_millis(100)));
    assert_eq!(
        t.request,
        Some(Duration::from_secs(2)),
        "l5d-request-timeout wins"
    );
    assert_eq!(t.response, Some(Duration::from_millis(500)));
    // No headers: the rule's own.
    let (none, _) = apply(&mut ::http::HeaderMap::new(), None, Timeouts::default());
    assert!(none.is_none());
}

// ---- route selection over compiled routes ----

#[test]
fn a_header_match_beats_the_catch_all_route() {
    let canary = rule(
        vec![header_match("x-canary", "1")],
        first_available(vec![balancer(
            "web-v2",
            "web-v2.shop.svc.cluster.local:8080",
        )]),
    );
    let p = compiled(policy(vec![
        http_route("default", vec![rule(vec![], first_available(vec![web()]))]),
        http_route("canary", vec![canary]),
    ]));
    let routes = &http1(&p).routes;
    let req = |h: Option<&str>| {
        let mut b = Request::builder()
            .uri("/items")
            .header("host", "web.shop:8080");
        if let Some(v) = h {
            b = b.header("x-canary", v);
        }
        b.body(()).unwrap()
    };
    let (r, _) = route::find(routes, "web.shop", &req(Some("1"))).unwrap();
    assert_eq!(&*r.route.name, "canary");
    let (r, _) = route::find(routes, "web.shop", &req(None)).unwrap();
    assert_eq!(&*r.route.name, "default");
    let (r, _) = route::find(routes, "web.shop", &req(Some("2"))).unwrap();
    assert_eq!(&*r.route.name, "default");
}

#[test]
fn tls_routes_match_the_sni() {
    let mk = |snis: &[&str], name: &str| TlsRoute {
        snis: snis
            .iter()
            .map(|s| match s.strip_prefix("*.") {
                Some(suffix) => route::HostMatch::Suffix(format!(".{suffix}")),
                None => route::HostMatch::Exact(s.to_string()),
            })
            .collect(),
        route: OpaqueRoute {
            meta: Arc::new(remora_metrics::outbound_route::ObjectRef::default_named(
                name,
            )),
            filters: vec![],
            distribution: Distribution::Empty,
            metrics: OnceLock::new(),
        },
    };
    let routes = vec![
        mk(&[], "any"),
        mk(&["*.example.com"], "suffix"),
        mk(&["api.example.com"], "exact"),
    ];
    let name = |sni| opaque::tls_route(&routes, sni).map(|r| r.meta.name.to_string());
    assert_eq!(name(Some("api.example.com")).as_deref(), Some("exact"));
    assert_eq!(name(Some("www.example.com")).as_deref(), Some("suffix"));
    assert_eq!(name(Some("other.org")).as_deref(), Some("any"));
    assert_eq!(name(None).as_deref(), Some("any"));
    assert!(opaque::tls_route(&routes[1..], Some("other.org")).is_none());
}

#[test]
fn a_full_queue_sheds() {
    let q = Queue::new(2, Duration::from_secs(1));
    let a = q.enter().unwrap();
    let _b = q.enter().unwrap();
    assert!(q.enter().is_none());
    drop(a);
    assert!(q.enter().is_some());
}
