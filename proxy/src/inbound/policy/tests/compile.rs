//! Compiling `Server` messages: what is honoured, what is refused; authorizing clients.

use super::*;
#[test]
fn every_protocol_compiles_and_overrides_detection() {
    let cases: Vec<(Kind, &str)> = vec![
        (detect(Vec::new(), None), "detect"),
        (
            Kind::Http1(pb::proxy_protocol::Http1 {
                routes: Vec::new(),
                local_rate_limit: None,
            }),
            "http/1",
        ),
        (
            Kind::Http2(pb::proxy_protocol::Http2 {
                routes: Vec::new(),
                local_rate_limit: None,
            }),
            "http/2",
        ),
        (
            Kind::Grpc(pb::proxy_protocol::Grpc { routes: Vec::new() }),
            "grpc",
        ),
        (Kind::Opaque(pb::proxy_protocol::Opaque {}), "opaque"),
        (Kind::Tls(pb::proxy_protocol::Tls {}), "tls"),
    ];
    for (kind, name) in cases {
        let p = compiled(srv(
            kind,
            vec![authz("all", everywhere(), unauthenticated())],
        ));
        assert_eq!(p.protocol.name(), name);
        assert_eq!(p.meta.to_string(), "policy.linkerd.io/server/web-http");
        // TCP authorizations exist only where connections may be TCP; the server's own
        // authorization first, then the implicit localhost one.
        let tcp: Vec<String> = p.tcp_authzs().iter().map(|a| a.meta.to_string()).collect();
        match name {
            "detect" | "opaque" | "tls" => assert_eq!(
                tcp,
                [
                    "policy.linkerd.io/AuthorizationPolicy/all",
                    "default:localhost"
                ],
                "{name}"
            ),
            _ => assert!(tcp.is_empty(), "{name}"),
        }
        // Opaque and TLS servers have no routes; the others a default route when none.
        match p.routes() {
            None => assert!(matches!(name, "opaque" | "tls")),
            Some(Routes::Http(r)) => assert_eq!(r[0].route.meta, Meta::default("default")),
            Some(Routes::Grpc(r)) => assert_eq!(r[0].route.meta, Meta::default("default")),
        }
    }
    let p = compiled(srv(
        Kind::Detect(pb::proxy_protocol::Detect {
            timeout: Some(prost_types::Duration {
                seconds: 3,
                nanos: 500_000_000,
            }),
            http_routes: Vec::new(),
            http_local_rate_limit: None,
        }),
        Vec::new(),
    ));
    assert!(
        matches!(p.protocol, Protocol::Detect { timeout, .. } if timeout == Duration::from_millis(3500))
    );
}

#[test]
fn malformed_servers_are_refused() {
    let ok = || {
        srv(
            detect(Vec::new(), None),
            vec![authz("a", everywhere(), unauthenticated())],
        )
    };
    let mut cases: Vec<(&str, pb::Server)> = Vec::new();
    let mut s = ok();
    s.protocol = None;
    cases.push(("no protocol", s));
    let mut s = ok();
    s.protocol = Some(pb::ProxyProtocol { kind: None });
    cases.push(("an unknown protocol", s));
    let mut s = ok();
    s.protocol = Some(pb::ProxyProtocol {
        kind: Some(Kind::Detect(pb::proxy_protocol::Detect {
            timeout: None,
            http_routes: Vec::new(),
            http_local_rate_limit: None,
        })),
    });
    cases.push(("detect without a timeout", s));
    let mut s = ok();
    s.protocol = Some(pb::ProxyProtocol {
        kind: Some(Kind::Detect(pb::proxy_protocol::Detect {
            timeout: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            http_routes: Vec::new(),
            http_local_rate_limit: None,
        })),
    });
    cases.push(("a negative detect timeout", s));
    let mut s = ok();
    s.labels.remove("name");
    cases.push(("a server without a name", s));
    let with_authz = |a: pb::Authz| srv(detect(Vec::new(), None), vec![a]);
    cases.push((
        "an authorization without networks",
        with_authz(authz("a", Vec::new(), unauthenticated())),
    ));
    cases.push((
        "a network without an address",
        with_authz(authz(
            "a",
            vec![pb::Network {
                net: None,
                except: Vec::new(),
            }],
            unauthenticated(),
        )),
    ));
    let bad_prefix = pbnet::IpNetwork {
        ip: Some("10.0.0.0".parse::<std::net::IpAddr>().unwrap().into()),
        prefix_len: 40,
    };
    cases.push((
        "a bad network",
        with_authz(authz(
            "a",
            vec![pb::Network {
                net: Some(bad_prefix),
                except: Vec::new(),
            }],
            unauthenticated(),
        )),
    ));
    cases.push((
        "a bad except",
        with_authz(authz(
            "a",
            vec![pb::Network {
                net: Some(net("10.0.0.0/8")),
                except: vec![pbnet::IpNetwork {
                    ip: None,
                    prefix_len: 8,
                }],
            }],
            unauthenticated(),
        )),
    ));
    let mut a = authz("a", everywhere(), unauthenticated());
    a.authentication = None;
    cases.push(("an authorization without authentication", with_authz(a)));
    let mut a = authz("a", everywhere(), unauthenticated());
    a.authentication = Some(pb::Authn { permit: None });
    cases.push(("an authentication without a permit", with_authz(a)));
    let mut a = authz("a", everywhere(), unauthenticated());
    a.authentication = Some(pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: None,
        })),
    });
    cases.push(("mesh TLS without clients", with_authz(a)));
    let mut a = authz("a", everywhere(), unauthenticated());
    a.metadata = Some(meta::Metadata { kind: None });
    cases.push(("an authorization with empty metadata", with_authz(a)));
    let mut a = authz("a", everywhere(), unauthenticated());
    a.metadata = None;
    cases.push(("an authorization with no name at all", with_authz(a)));
    let mut r = http_route("r", vec![path_prefix("/")], Vec::new(), Vec::new());
    r.metadata = None;
    cases.push((
        "a route without metadata",
        srv(detect(vec![r], None), Vec::new()),
    ));
    let mut r = http_route("r", vec![path_prefix("/")], Vec::new(), Vec::new());
    r.hosts = vec![route_pb::HostMatch { r#match: None }];
    cases.push((
        "a route with an empty host match",
        srv(detect(vec![r], None), Vec::new()),
    ));
    let regex = route_pb::HttpRouteMatch {
        path: Some(route_pb::PathMatch {
            kind: Some(route_pb::path_match::Kind::Regex("(".into())),
        }),
        ..Default::default()
    };
    cases.push((
        "a route with a bad regex",
        srv(
            detect(
                vec![http_route("r", vec![regex], Vec::new(), Vec::new())],
                None,
            ),
            Vec::new(),
        ),
    ));
    let a = authz("a", Vec::new(), unauthenticated());
    cases.push((
        "a route with a bad authorization",
        srv(
            detect(
                vec![http_route("r", vec![path_prefix("/")], vec![a], Vec::new())],
                None,
            ),
            Vec::new(),
        ),
    ));
    let filter = |k| {
        srv(
            detect(
                vec![http_route("r", vec![path_prefix("/")], Vec::new(), vec![k])],
                None,
            ),
            Vec::new(),
        )
    };
    use pb::http_route::filter::Kind as F;
    cases.push((
        "a failure ratio over 1",
        filter(F::FailureInjector(route_pb::HttpFailureInjector {
            status: 503,
            message: String::new(),
            ratio: Some(route_pb::Ratio {
                numerator: 2,
                denominator: 1,
            }),
        })),
    ));
    cases.push((
        "a failure status that is not one",
        filter(F::FailureInjector(route_pb::HttpFailureInjector {
            status: 70_000,
            message: String::new(),
            ratio: None,
        })),
    ));
    cases.push((
        "a relative redirect path",
        filter(F::Redirect(route_pb::RequestRedirect {
            path: Some(route_pb::PathModifier {
                replace: Some(route_pb::path_modifier::Replace::Full("x".into())),
            }),
            ..Default::default()
        })),
    ));
    cases.push((
        "a redirect to a port that is not one",
        filter(F::Redirect(route_pb::RequestRedirect {
            port: 70_000,
            ..Default::default()
        })),
    ));
    cases.push((
        "a header modifier with a bad name",
        filter(F::RequestHeaderModifier(route_pb::RequestHeaderModifier {
            remove: vec!["bad name".into()],
            ..Default::default()
        })),
    ));
    cases.push((
        "a rate limit with empty metadata",
        srv(
            detect(
                Vec::new(),
                Some(pb::HttpLocalRateLimit {
                    metadata: Some(meta::Metadata { kind: None }),
                    ..Default::default()
                }),
            ),
            Vec::new(),
        ),
    ));
    for (what, s) in cases {
        assert!(server(&s).is_err(), "{what} was accepted");
    }
    assert!(server(&ok()).is_ok());
    let e: InvalidServer =
        server(&with_authz(authz("a", Vec::new(), unauthenticated()))).unwrap_err();
    assert_eq!(e.to_string(), "authorization 0: it has no networks");
}

#[test]
fn authorizations_admit_by_network_and_authentication() {
    let authz_of = |networks, authn| {
        compiled(srv(
            Kind::Opaque(pb::proxy_protocol::Opaque {}),
            vec![authz("a", networks, authn)],
        ))
    };
    let id_or_suffix = || {
        identities(
            &[WEB],
            &[&[
                "prod",
                "serviceaccount",
                "identity",
                "linkerd",
                "cluster",
                "local",
            ]],
        )
    };
    /// What, the authorization's networks and authentication, the client, admitted.
    type Case = (
        &'static str,
        Vec<pb::Network>,
        pb::Authn,
        &'static str,
        ClientTls,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "unauthenticated, plaintext",
            everywhere(),
            unauthenticated(),
            "10.1.1.1",
            ClientTls::None,
            true,
        ),
        (
            "unauthenticated, app TLS",
            everywhere(),
            unauthenticated(),
            "10.1.1.1",
            ClientTls::Passthru,
            true,
        ),
        (
            "unauthenticated, mesh TLS",
            everywhere(),
            unauthenticated(),
            "10.1.1.1",
            mtls(WEB),
            true,
        ),
        (
            "mesh TLS, plaintext",
            everywhere(),
            mesh_tls_any(),
            "10.1.1.1",
            ClientTls::None,
            false,
        ),
        (
            "mesh TLS, app TLS",
            everywhere(),
            mesh_tls_any(),
            "10.1.1.1",
            ClientTls::Passthru,
            false,
        ),
        (
            "mesh TLS, no certificate",
            everywhere(),
            mesh_tls_any(),
            "10.1.1.1",
            ClientTls::Established(None),
            true,
        ),
        (
            "mesh TLS, an identity",
            everywhere(),
            mesh_tls_any(),
            "10.1.1.1",
            mtls(BATCH),
            true,
        ),
        (
            "identities, the one",
            everywhere(),
            id_or_suffix(),
            "10.1.1.1",
            mtls(WEB),
            true,
        ),
        (
            "identities, another",
            everywhere(),
            id_or_suffix(),
            "10.1.1.1",
            mtls(BATCH),
            false,
        ),
        (
            "identities, under the suffix",
            everywhere(),
            id_or_suffix(),
            "10.1.1.1",
            mtls("api.prod.serviceaccount.identity.linkerd.cluster.local"),
            true,
        ),
        (
            "identities, a look-alike of the suffix",
            everywhere(),
            id_or_suffix(),
            "10.1.1.1",
            mtls("api.xprod.serviceaccount.identity.linkerd.cluster.local"),
            false,
        ),
        (
            "identities, no certificate",
            everywhere(),
            id_or_suffix(),
            "10.1.1.1",
            ClientTls::Established(None),
            false,
        ),
        (
            "identities, plaintext",
            everywhere(),
            id_or_suffix(),
            "10.1.1.1",
            ClientTls::None,
            false,
        ),
        (
            "the empty suffix: any identity",
            everywhere(),
            identities(&[], &[&[]]),
            "10.1.1.1",
            mtls(BATCH),
            true,
        ),
        (
            "the empty suffix, no identity",
            everywhere(),
            identities(&[], &[&[]]),
            "10.1.1.1",
            ClientTls::Established(None),
            false,
        ),
        (
            "in the network",
            vec![network("10.1.0.0/16", &[])],
            unauthenticated(),
            "10.1.1.1",
            ClientTls::None,
            true,
        ),
        (
            "outside the network",
            vec![network("10.1.0.0/16", &[])],
            unauthenticated(),
            "10.2.1.1",
            ClientTls::None,
            false,
        ),
        (
            "in an except",
            vec![network("10.1.0.0/16", &["10.1.1.0/24"])],
            unauthenticated(),
            "10.1.1.1",
            ClientTls::None,
            false,
        ),
        (
            "beside the except",
            vec![network("10.1.0.0/16", &["10.1.1.0/24"])],
            unauthenticated(),
            "10.1.2.1",
            ClientTls::None,
            true,
        ),
        (
            "an IPv4-mapped IPv6 client is its IPv4 address",
            vec![network("10.1.0.0/16", &[])],
            unauthenticated(),
            "::ffff:10.1.1.1",
            ClientTls::None,
            true,
        ),
        (
            "IPv6",
            vec![network("fd00::/8", &[])],
            unauthenticated(),
            "fd00::1",
            ClientTls::None,
            true,
        ),
    ];
    for (what, networks, authn, addr, tls, admitted) in cases {
        let p = authz_of(networks, authn);
        let c = client(addr, tls);
        let got = p.authorize_tcp(&c).map(|a| a.meta.to_string());
        if admitted {
            assert_eq!(
                got,
                Ok("policy.linkerd.io/AuthorizationPolicy/a".to_string()),
                "{what}"
            );
        } else {
            assert!(got.is_err(), "{what}: {got:?}");
        }
    }
    // Loopback clients are always admitted by the implicit localhost authorization.
    let p = authz_of(vec![network("10.1.0.0/16", &[])], id_or_suffix());
    for lo in ["127.0.0.1", "::1"] {
        let got = p
            .authorize_tcp(&client(lo, ClientTls::None))
            .map(|a| a.meta.clone());
        assert_eq!(got, Ok(Meta::default("localhost")), "{lo}");
    }
    // A server without authorizations admits loopback only.
    let p = compiled(srv(Kind::Opaque(pb::proxy_protocol::Opaque {}), Vec::new()));
    assert_eq!(
        p.authorize_tcp(&client("10.1.1.1", mtls(WEB))).unwrap_err(),
        Denied::Deny
    );
}

#[test]
fn older_controllers_name_authorizations_by_labels() {
    let mut a = authz("x", everywhere(), unauthenticated());
    a.metadata = None;
    a.labels = [("name".to_string(), "web-clients".to_string())].into();
    let p = compiled(srv(Kind::Opaque(pb::proxy_protocol::Opaque {}), vec![a]));
    assert_eq!(
        p.tcp_authzs()[0].meta.to_string(),
        "policy.linkerd.io/serverauthorization/web-clients"
    );
    let mut s = srv(Kind::Opaque(pb::proxy_protocol::Opaque {}), Vec::new());
    s.labels = [("name".to_string(), "default:deny".to_string())].into();
    assert_eq!(compiled(s).meta, Meta::default("deny"));
}

#[test]
fn servers_declare_their_port_and_carry_the_pods_declared_ports() {
    use super::server::DECLARED_PORTS_LABEL;
    // A Server of its own declares whatever port it answers for.
    let own = compiled(srv(detect(Vec::new(), None), Vec::new()));
    assert!(own.from_service && own.pod_ports.is_empty());
    assert!(own.declares(7001));
    // The controller's default declares only the pod's listed ports.
    let mut default = srv(detect(Vec::new(), None), Vec::new());
    default.labels = [
        ("group".to_string(), String::new()),
        ("kind".to_string(), "default".to_string()),
        ("name".to_string(), "all-unauthenticated".to_string()),
    ]
    .into();
    assert!(!compiled(default.clone()).declares(7001));
    default
        .labels
        .insert(DECLARED_PORTS_LABEL.into(), "7000,9000-9001".into());
    let p = compiled(default.clone());
    assert_eq!(
        p.pod_ports.iter().copied().collect::<Vec<_>>(),
        [7000, 9000, 9001]
    );
    assert!(p.declares(9001) && !p.declares(7001));
    // A label that is not a port list refuses the message (the previous policy is kept).
    for bad in ["7000,x", "0", "9-1", &"1,".repeat(40_000)] {
        default
            .labels
            .insert(DECLARED_PORTS_LABEL.into(), bad.into());
        assert!(
            matches!(server(&default), Err(InvalidServer::DeclaredPorts(_))),
            "{}",
            &bad[..bad.len().min(20)]
        );
    }
    // A local policy never declares anything.
    let local = InboundPolicy {
        default: Policy::AllUnauthenticated,
        ports: Default::default(),
        trust_domain: None,
        cluster_networks: Vec::new(),
    };
    assert!(
        !local
            .server(7000, false, Duration::from_secs(1))
            .declares(7000)
    );
}
