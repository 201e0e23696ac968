//! Requests and connections under compiled policies: routes, authorizations, filters, rate
//! limits, metrics, policy changes.

use super::*;

/// A Detect server with two routes: `/admin`, which `web` may use from anywhere, and the
/// rest; the server's authorization (mesh TLS from 10.0.0.0/8) applies to both, then
/// localhost's.
fn two_routes() -> ServerPolicy {
    let admin = http_route(
        "admin",
        vec![path_prefix("/admin")],
        vec![authz("admins", everywhere(), identities(&[WEB], &[]))],
        Vec::new(),
    );
    let rest = http_route("rest", vec![path_prefix("/")], Vec::new(), Vec::new());
    compiled(srv(
        detect(vec![admin, rest], None),
        vec![authz(
            "cluster",
            vec![network("10.0.0.0/8", &[])],
            mesh_tls_any(),
        )],
    ))
}

#[test]
fn requests_are_routed_then_authorized() {
    /// What, the client, its address, the request, the outcome.
    type Case = (
        &'static str,
        ClientTls,
        &'static str,
        Method,
        &'static str,
        Result<(), StatusCode>,
    );
    let cases: Vec<Case> = vec![
        (
            "the route's own authorization",
            mtls(WEB),
            "192.168.1.1",
            Method::GET,
            "/admin/x",
            Ok(()),
        ),
        (
            "the server's authorization on the route",
            mtls(BATCH),
            "10.1.1.1",
            Method::GET,
            "/admin",
            Ok(()),
        ),
        (
            "no authorization of the route",
            mtls(BATCH),
            "192.168.1.1",
            Method::GET,
            "/admin",
            Err(StatusCode::FORBIDDEN),
        ),
        (
            "plaintext on a mesh-TLS server",
            ClientTls::None,
            "10.1.1.1",
            Method::GET,
            "/",
            Err(StatusCode::FORBIDDEN),
        ),
        (
            "the other route",
            mtls(BATCH),
            "10.1.1.1",
            Method::POST,
            "/adminx",
            Ok(()),
        ),
        (
            "loopback, always",
            ClientTls::None,
            "127.0.0.1",
            Method::GET,
            "/admin",
            Ok(()),
        ),
    ];
    for (what, tls, addr, method, path, want) in cases {
        let (c, _, _) = conn(two_routes(), client(addr, tls));
        let got = c.admits(&mut req(method, path)).map_err(|r| r.status());
        assert_eq!(got, want, "{what}");
    }
    // No route: 404, counted.
    let only_admin = compiled(srv(
        detect(
            vec![http_route(
                "admin",
                vec![path_prefix("/admin")],
                Vec::new(),
                Vec::new(),
            )],
            None,
        ),
        vec![authz("all", everywhere(), unauthenticated())],
    ));
    let (c, registry, _) = conn(only_admin, client("10.1.1.1", ClientTls::None));
    assert_eq!(
        c.admits(&mut req(Method::GET, "/other")),
        Err(PolicyRefusal::RouteNotFound)
    );
    let text = remora_metrics::encode(&registry).unwrap();
    assert!(
        text.contains("inbound_http_route_not_found_total{target_addr=\"10.0.0.1:8080\""),
        "{text}"
    );
    // Opaque and TLS servers have no routes.
    let (c, _, _) = conn(
        compiled(srv(
            Kind::Tls(pb::proxy_protocol::Tls {}),
            vec![authz("all", everywhere(), unauthenticated())],
        )),
        client("10.1.1.1", ClientTls::None),
    );
    assert_eq!(
        c.admits(&mut req(Method::GET, "/")),
        Err(PolicyRefusal::RouteNotFound)
    );
}

#[test]
fn allowed_and_denied_requests_are_counted_with_linkerds_labels() {
    let (c, registry, _) = conn(two_routes(), client("10.1.1.1", mtls(BATCH)));
    for _ in 0..3 {
        c.admits(&mut req(Method::GET, "/admin")).unwrap();
    }
    c.admits(&mut req(Method::GET, "/")).unwrap();
    let (d, registry2, _) = conn(two_routes(), client("192.168.1.1", mtls(BATCH)));
    assert!(d.admits(&mut req(Method::GET, "/admin")).is_err());
    let text = remora_metrics::encode(&registry).unwrap();
    let target = r#"target_addr="10.0.0.1:8080",target_ip="10.0.0.1",target_port="8080",srv_group="policy.linkerd.io",srv_kind="server",srv_name="web-http",srv_port="8080""#;
    let tls = format!(r#"tls="true",client_id="{BATCH}""#);
    for want in [
        format!(
            r#"inbound_http_authz_allow_total{{{target},route_group="policy.linkerd.io",route_kind="HTTPRoute",route_name="admin",authz_group="policy.linkerd.io",authz_kind="AuthorizationPolicy",authz_name="cluster",{tls}}} 3"#
        ),
        format!(
            r#"inbound_http_authz_allow_total{{{target},route_group="policy.linkerd.io",route_kind="HTTPRoute",route_name="rest",authz_group="policy.linkerd.io",authz_kind="AuthorizationPolicy",authz_name="cluster",{tls}}} 1"#
        ),
    ] {
        assert!(text.contains(&want), "no {want} in\n{text}");
    }
    let text = remora_metrics::encode(&registry2).unwrap();
    let want = format!(
        r#"inbound_http_authz_deny_total{{{target},route_group="policy.linkerd.io",route_kind="HTTPRoute",route_name="admin",{tls}}} 1"#
    );
    assert!(text.contains(&want), "no {want} in\n{text}");
}

#[test]
fn a_policy_change_applies_to_the_next_request() {
    let open = || {
        compiled(srv(
            detect(Vec::new(), None),
            vec![authz("all", everywhere(), unauthenticated())],
        ))
    };
    let (c, _, tx) = conn(open(), client("10.1.1.1", ClientTls::None));
    assert_eq!(c.admits(&mut req(Method::GET, "/")), Ok(()));
    tx.send_replace(Arc::new(compiled(srv(
        detect(Vec::new(), None),
        Vec::new(),
    ))));
    assert_eq!(
        c.admits(&mut req(Method::GET, "/")).map_err(|r| r.status()),
        Err(StatusCode::FORBIDDEN)
    );
    tx.send_replace(Arc::new(open()));
    assert_eq!(c.admits(&mut req(Method::GET, "/")), Ok(()));
}

#[test]
fn grpc_routes_match_post_service_and_method() {
    let route = |name: &str, service: &str, method: &str, authzs| pb::GrpcRoute {
        metadata: resource("GRPCRoute", name),
        hosts: Vec::new(),
        authorizations: authzs,
        rules: vec![pb::grpc_route::Rule {
            matches: vec![grpc_pb::GrpcRouteMatch {
                rpc: Some(grpc_pb::GrpcRpcMatch {
                    service: service.into(),
                    method: method.into(),
                }),
                headers: Vec::new(),
            }],
            filters: Vec::new(),
        }],
    };
    let p = || {
        compiled(srv(
            Kind::Grpc(pb::proxy_protocol::Grpc {
                routes: vec![
                    route(
                        "echo",
                        "test.Echo",
                        "Echo",
                        vec![authz("web", everywhere(), identities(&[WEB], &[]))],
                    ),
                    route("any", "test.Echo", "", Vec::new()),
                ],
            }),
            vec![authz("batch", everywhere(), identities(&[BATCH], &[]))],
        ))
    };
    let call = |method: Method, path: &str| {
        let mut r = req(method, path);
        *r.version_mut() = http::Version::HTTP_2;
        r
    };
    let cases = [
        (WEB, Method::POST, "/test.Echo/Echo", Ok(())),
        (
            WEB,
            Method::POST,
            "/test.Echo/Count",
            Err(StatusCode::FORBIDDEN),
        ),
        (BATCH, Method::POST, "/test.Echo/Count", Ok(())),
        (
            BATCH,
            Method::GET,
            "/test.Echo/Echo",
            Err(StatusCode::NOT_FOUND),
        ),
        (
            BATCH,
            Method::POST,
            "/other.Svc/Echo",
            Err(StatusCode::NOT_FOUND),
        ),
    ];
    for (id, method, path, want) in cases {
        let (c, _, _) = conn(p(), client("10.1.1.1", mtls(id)));
        assert_eq!(
            c.admits(&mut call(method, path)).map_err(|r| r.status()),
            want,
            "{id} {path}"
        );
    }
}

#[test]
fn http_filters_modify_redirect_and_fail() {
    use pb::http_route::filter::Kind as F;
    let one = |filters: Vec<F>| {
        compiled(srv(
            detect(
                vec![http_route(
                    "r",
                    vec![path_prefix("/old")],
                    Vec::new(),
                    filters,
                )],
                None,
            ),
            vec![authz("all", everywhere(), unauthenticated())],
        ))
    };
    let header = |name: &str, value: &str| http_types::headers::Header {
        name: name.into(),
        value: value.as_bytes().to_vec(),
    };
    // Headers: added, then set, then removed.
    let p = one(vec![F::RequestHeaderModifier(
        route_pb::RequestHeaderModifier {
            add: Some(http_types::Headers {
                headers: vec![header("x-added", "1")],
            }),
            set: Some(http_types::Headers {
                headers: vec![header("x-set", "new")],
            }),
            remove: vec!["x-gone".into()],
        },
    )]);
    let (c, _, _) = conn(p, client("10.1.1.1", ClientTls::None));
    let mut r = req(Method::GET, "/old");
    r.headers_mut().insert("x-set", "old".parse().unwrap());
    r.headers_mut().insert("x-gone", "1".parse().unwrap());
    c.admits(&mut r).unwrap();
    assert_eq!(r.headers()["x-added"], "1");
    assert_eq!(r.headers()["x-set"], "new");
    assert!(!r.headers().contains_key("x-gone"));

    let redirect = |rr: route_pb::RequestRedirect, path: &str| {
        let (c, _, _) = conn(
            one(vec![F::Redirect(rr)]),
            client("10.1.1.1", ClientTls::None),
        );
        c.admits(&mut req(Method::GET, path))
    };
    let loc = |r: Result<(), PolicyRefusal>| match r {
        Err(PolicyRefusal::Redirect { status, location }) => {
            Some((status.as_u16(), location.to_string()))
        }
        _ => None,
    };
    let prefix = |p: &str| {
        Some(route_pb::PathModifier {
            replace: Some(route_pb::path_modifier::Replace::Prefix(p.into())),
        })
    };
    let cases = [
        (
            route_pb::RequestRedirect {
                host: "new.example".into(),
                ..Default::default()
            },
            "/old/x?q=1",
            Some((301, "http://new.example:8080/old/x?q=1".to_string())),
        ),
        (
            route_pb::RequestRedirect {
                path: prefix("/new"),
                status: 302,
                ..Default::default()
            },
            "/old/x?q=1",
            Some((
                302,
                "http://web.shop.svc.cluster.local:8080/new/x?q=1".to_string(),
            )),
        ),
        (
            route_pb::RequestRedirect {
                scheme: Some(http_types::Scheme {
                    r#type: Some(http_types::scheme::Type::Registered(
                        http_types::scheme::Registered::Https.into(),
                    )),
                }),
                port: 443,
                ..Default::default()
            },
            "/old",
            Some((301, "https://web.shop.svc.cluster.local/old".to_string())),
        ),
        // A redirect to the request's own URI is ignored.
        (route_pb::RequestRedirect::default(), "/old", None),
    ];
    for (rr, path, want) in cases {
        let got = redirect(rr, path);
        assert_eq!(loc(got.clone()), want, "{got:?}");
        if want.is_none() {
            assert_eq!(got, Ok(()));
        }
    }

    // Failures: every request without a ratio, none with 0/1.
    let fail = |ratio| {
        one(vec![F::FailureInjector(route_pb::HttpFailureInjector {
            status: 503,
            message: "injected".into(),
            ratio,
        })])
    };
    let (c, _, _) = conn(fail(None), client("10.1.1.1", ClientTls::None));
    for _ in 0..20 {
        assert_eq!(
            c.admits(&mut req(Method::GET, "/old")),
            Err(PolicyRefusal::Injected(
                StatusCode::SERVICE_UNAVAILABLE,
                Arc::from("injected")
            ))
        );
    }
    let (c, _, _) = conn(
        fail(Some(route_pb::Ratio {
            numerator: 0,
            denominator: 1,
        })),
        client("10.1.1.1", ClientTls::None),
    );
    assert_eq!(c.admits(&mut req(Method::GET, "/old")), Ok(()));
    let (c, _, _) = conn(
        fail(Some(route_pb::Ratio {
            numerator: 1,
            denominator: 2,
        })),
        client("10.1.1.1", ClientTls::None),
    );
    let failed = (0..2000)
        .filter(|_| c.admits(&mut req(Method::GET, "/old")).is_err())
        .count();
    assert!((800..1200).contains(&failed), "{failed} of 2000 at 1/2");

    // An unknown filter answers 500.
    let p = compiled(srv(
        detect(
            vec![pb::HttpRoute {
                rules: vec![pb::http_route::Rule {
                    matches: Vec::new(),
                    filters: vec![pb::http_route::Filter { kind: None }],
                }],
                ..http_route("r", Vec::new(), Vec::new(), Vec::new())
            }],
            None,
        ),
        vec![authz("all", everywhere(), unauthenticated())],
    ));
    let (c, _, _) = conn(p, client("10.1.1.1", ClientTls::None));
    let got = c.admits(&mut req(Method::GET, "/"));
    assert_eq!(
        got.as_ref().map_err(|r| r.status()),
        Err(StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert!(got.unwrap_err().closes());
}

#[test]
fn grpc_filters_fail_with_their_code() {
    let p = compiled(srv(
        Kind::Grpc(pb::proxy_protocol::Grpc {
            routes: vec![pb::GrpcRoute {
                metadata: resource("GRPCRoute", "g"),
                hosts: Vec::new(),
                authorizations: Vec::new(),
                rules: vec![pb::grpc_route::Rule {
                    matches: Vec::new(),
                    filters: vec![pb::grpc_route::Filter {
                        kind: Some(pb::grpc_route::filter::Kind::FailureInjector(
                            grpc_pb::GrpcFailureInjector {
                                code: 14,
                                message: "down".into(),
                                ratio: None,
                            },
                        )),
                    }],
                }],
            }],
        }),
        vec![authz("all", everywhere(), unauthenticated())],
    ));
    let (c, _, _) = conn(p, client("10.1.1.1", ClientTls::None));
    let got = c.admits(&mut req(Method::POST, "/a.B/C")).unwrap_err();
    assert_eq!((got.status(), got.grpc_status()), (StatusCode::OK, 14));
}

fn limited(total: u32, identity: u32, overrides: Vec<(u32, Vec<&str>)>) -> ServerPolicy {
    let limit = |rps| {
        Some(pb::http_local_rate_limit::Limit {
            requests_per_second: rps,
        })
    };
    compiled(srv(
        detect(
            Vec::new(),
            Some(pb::HttpLocalRateLimit {
                metadata: resource("HTTPLocalRateLimitPolicy", "rl"),
                total: limit(total),
                identity: limit(identity),
                overrides: overrides
                    .into_iter()
                    .map(|(rps, ids)| pb::http_local_rate_limit::Override {
                        limit: limit(rps),
                        clients: Some(pb::http_local_rate_limit::r#override::ClientIdentities {
                            identities: ids
                                .into_iter()
                                .map(|i| pb::Identity {
                                    name: i.to_string(),
                                })
                                .collect(),
                        }),
                    })
                    .collect(),
            }),
        ),
        vec![authz("all", everywhere(), unauthenticated())],
    ))
}

/// How many of `n` requests at one instant pass.
fn passed(c: &ConnPolicy, n: usize) -> usize {
    (0..n)
        .filter(|_| c.admits(&mut req(Method::GET, "/")).is_ok())
        .count()
}

#[tokio::test(start_paused = true)]
async fn rate_limits_refuse_past_their_rate_and_refill() {
    // Total: 5 a second, shared by everyone.
    let p = Arc::new(limited(5, 0, Vec::new()));
    let (a, registry, tx) = conn(limited(0, 0, Vec::new()), client("10.1.1.1", mtls(WEB)));
    tx.send_replace(p.clone());
    let (b, _, btx) = conn(
        limited(0, 0, Vec::new()),
        client("10.1.1.2", ClientTls::None),
    );
    btx.send_replace(p);
    assert_eq!(passed(&a, 3) + passed(&b, 5), 5);
    let refused = b.admits(&mut req(Method::GET, "/")).unwrap_err();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.to_string(), "total rate limit exceeded: 5rps");
    tokio::time::advance(Duration::from_millis(400)).await;
    assert_eq!(passed(&a, 5), 2, "two cells back after 400 ms");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(passed(&a, 10), 5, "a full burst, no more");
    let _ = registry;

    // Per identity: each identity its own 2; every client without one shares 2; an override
    // gives its identities 4 between them, instead of their own.
    let p = Arc::new(limited(
        0,
        2,
        vec![(
            4,
            vec![
                BATCH,
                "api.shop.serviceaccount.identity.linkerd.cluster.local",
            ],
        )],
    ));
    let with = |addr: &str, tls: ClientTls| {
        let (c, r, tx) = conn(limited(0, 0, Vec::new()), client(addr, tls));
        tx.send_replace(p.clone());
        (c, r, tx)
    };
    let (web, web_metrics, _t1) = with("10.1.1.1", mtls(WEB));
    let (other, _, _t2) = with(
        "10.1.1.2",
        mtls("other.shop.serviceaccount.identity.linkerd.cluster.local"),
    );
    let (anon1, _, _t3) = with("10.1.1.3", ClientTls::None);
    let (anon2, _, _t4) = with("10.1.1.4", ClientTls::None);
    let (batch, _, _t5) = with("10.1.1.5", mtls(BATCH));
    let (api, _, _t6) = with(
        "10.1.1.6",
        mtls("api.shop.serviceaccount.identity.linkerd.cluster.local"),
    );
    assert_eq!(passed(&web, 5), 2);
    assert_eq!(passed(&other, 5), 2);
    assert_eq!(
        passed(&anon1, 1) + passed(&anon2, 5),
        2,
        "one bucket without identities"
    );
    assert_eq!(
        passed(&batch, 3) + passed(&api, 3),
        4,
        "the override's 4, shared"
    );
    let refused = web.admits(&mut req(Method::GET, "/")).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "per-identity rate limit exceeded: 2rps"
    );
    assert_eq!(
        batch
            .admits(&mut req(Method::GET, "/"))
            .unwrap_err()
            .to_string(),
        "override rate limit exceeded: 4rps"
    );
    let text = remora_metrics::encode(&web_metrics).unwrap();
    assert!(
        text.contains(r#"ratelimit_group="policy.linkerd.io",ratelimit_kind="HTTPLocalRateLimitPolicy",ratelimit_name="rl",ratelimit_scope="identity",tls="true""#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn per_identity_state_is_bounded() {
    let rl = ratelimit::LocalRateLimit::new(None, 0, 1, Vec::new()).unwrap();
    let id = |i: usize| format!("sa{i}.shop.serviceaccount.identity.linkerd.cluster.local");
    for i in 0..ratelimit::MAX_IDENTITIES {
        assert!(rl.check(Some(&id(i))).is_ok());
    }
    // Full, and every bucket in use: new identities share the overflow bucket.
    assert!(rl.check(Some(&id(100_000))).is_ok());
    assert!(rl.check(Some(&id(100_001))).is_err());
    // Refilled buckets are forgotten to make room.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(rl.check(Some(&id(100_002))).is_ok());
    assert!(rl.check(Some(&id(100_002))).is_err(), "its own bucket now");
}

#[tokio::test]
async fn open_connections_are_closed_when_a_change_denies_them() {
    let opaque = |authzs| compiled(srv(Kind::Opaque(pb::proxy_protocol::Opaque {}), authzs));
    let (c, registry, tx) = conn(
        opaque(vec![authz("web", everywhere(), identities(&[WEB], &[]))]),
        client("10.1.1.1", mtls(WEB)),
    );
    assert!(c.authorize_tcp().is_ok());
    let revoked = c.revoked();
    tokio::pin!(revoked);
    // A change that still admits it: nothing happens.
    tx.send_replace(Arc::new(opaque(vec![authz(
        "web2",
        everywhere(),
        identities(&[WEB, BATCH], &[]),
    )])));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut revoked)
            .await
            .is_err()
    );
    tx.send_replace(Arc::new(opaque(vec![authz(
        "batch",
        everywhere(),
        identities(&[BATCH], &[]),
    )])));
    tokio::time::timeout(Duration::from_secs(1), &mut revoked)
        .await
        .expect("revoked");
    let text = remora_metrics::encode(&registry).unwrap();
    assert!(
        text.contains("inbound_tcp_authz_allow_total{target_addr=\"10.0.0.1:8080\""),
        "{text}"
    );
    assert!(
        text.contains("inbound_tcp_authz_terminate_total{target_addr=\"10.0.0.1:8080\""),
        "{text}"
    );
}

#[test]
fn audit_authorizations_allow_and_count_what_would_be_denied() {
    // The controller's `audit` default: an authorization named Default{"audit"}.
    let mut a = authz("x", everywhere(), unauthenticated());
    a.metadata = default_meta("audit");
    let p = compiled(srv(detect(Vec::new(), None), vec![a]));
    let (c, registry, _) = conn(p, client("192.0.2.7", ClientTls::None));
    assert_eq!(c.admits(&mut req(Method::GET, "/")), Ok(()));
    assert!(c.authorize_tcp().is_ok());
    let text = remora_metrics::encode(&registry).unwrap();
    for family in [
        "inbound_http_authz_allow_total",
        "inbound_tcp_authz_allow_total",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(family))
            .unwrap_or_else(|| panic!("no {family} in\n{text}"));
        assert!(
            line.contains(r#"authz_group="",authz_kind="default",authz_name="audit""#)
                && line.ends_with(" 1"),
            "{line}"
        );
    }
}

#[test]
fn refusals_are_answered_as_linkerd2_proxy_answers_them() {
    use crate::error::respond_refusal;
    use crate::http::{L5D_PROXY_CONNECTION, L5D_PROXY_ERROR};
    let mut registry = Registry::default();
    let series = SeriesLimits::register(&mut registry, Limits::default());
    let metrics = remora_metrics::http::HttpMetrics::register(&mut registry, &series);
    let denied = || PolicyRefusal::Unauthorized(Denied::NotAllowed);
    // HTTP: the status, empty, the reason only to meshed peers.
    let r = respond_refusal(denied(), &metrics, false, false);
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-length"], "0");
    assert!(r.headers().get(L5D_PROXY_ERROR).is_none());
    let r = respond_refusal(denied(), &metrics, false, true);
    assert!(
        r.headers()[L5D_PROXY_ERROR]
            .to_str()
            .unwrap()
            .starts_with("unauthorized request on route")
    );
    // gRPC: trailers-only, HTTP 200 with the gRPC status in the headers.
    let cases = [
        (denied(), 7),
        (PolicyRefusal::RouteNotFound, 5),
        (PolicyRefusal::RateLimited(ratelimit::Limited::Total(5)), 8),
        (PolicyRefusal::InvalidPolicy("x"), 13),
    ];
    for (refusal, code) in cases {
        let r = respond_refusal(refusal, &metrics, true, false);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], code.to_string().as_str());
        assert!(r.headers().get("grpc-message").is_none());
    }
    let r = respond_refusal(
        PolicyRefusal::RateLimited(ratelimit::Limited::Total(5)),
        &metrics,
        false,
        true,
    );
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()[L5D_PROXY_ERROR],
        "total rate limit exceeded: 5rps"
    );
    // A redirect carries its location; a broken policy closes the connection.
    let r = respond_refusal(
        PolicyRefusal::Redirect {
            status: StatusCode::FOUND,
            location: "http://new.example/x".parse().unwrap(),
        },
        &metrics,
        false,
        false,
    );
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://new.example/x");
    let r = respond_refusal(PolicyRefusal::InvalidPolicy("x"), &metrics, false, true);
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()[L5D_PROXY_CONNECTION], "close");
    assert!(
        r.extensions()
            .get::<crate::http::server::CloseConnection>()
            .is_some()
    );
    let text = remora_metrics::encode(&registry).unwrap();
    assert!(
        text.contains(r#"http_proxy_errors_total{direction="inbound",status="403",reason="policy_not_allowed"} 2"#),
        "{text}"
    );
}
