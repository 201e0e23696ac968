use super::*;

fn req(method: Method, uri: &str) -> Request<()> {
    Request::builder().method(method).uri(uri).body(()).unwrap()
}

fn get(uri: &str) -> Request<()> {
    req(Method::GET, uri)
}

fn prefix(p: &str) -> HttpMatch {
    HttpMatch {
        path: Some(PathMatch::Prefix(p.trim_end_matches('/').to_string())),
        ..Default::default()
    }
}

fn route<M>(
    hosts: Vec<HostMatch>,
    rules: Vec<Vec<M>>,
    name: &'static str,
) -> Route<M, &'static str, usize> {
    Route {
        hosts,
        rules: rules
            .into_iter()
            .enumerate()
            .map(|(i, matches)| Rule { matches, policy: i })
            .collect(),
        route: name,
    }
}

fn pick<M: Match>(
    routes: &[Route<M, &'static str, usize>],
    r: &Request<()>,
) -> Option<(&'static str, usize)> {
    let host = request_host(r).unwrap_or("");
    find(routes, host, r).map(|(route, rule)| (route.route, rule.policy))
}

#[test]
fn prefixes_match_on_segment_boundaries() {
    let foo = PathMatch::Prefix("/foo".into());
    for p in ["/foo", "/foo/", "/foo/bar"] {
        assert!(foo.score(p).is_some(), "{p}");
    }
    assert!(foo.score("/foobar").is_none());
    assert_eq!(PathMatch::Prefix(String::new()).score("/anything"), Some(1));
    assert_eq!(PathMatch::Exact("/a".into()).score("/a"), Some(2));
    assert!(PathMatch::Exact("/a".into()).score("/a/").is_none());
    let r = PathMatch::Regex(Regex::new("/v[0-9]+/items").unwrap());
    assert!(r.score("/v2/items").is_some());
    assert!(
        r.score("/v2/items/1").is_none(),
        "a regex matches the whole path"
    );
}

#[test]
fn the_longer_path_then_more_headers_then_query_then_method_wins() {
    let api = prefix("/api");
    let api_v1 = prefix("/api/v1");
    let with_header = HttpMatch {
        headers: vec![HeaderMatch {
            name: HeaderName::from_static("x-canary"),
            value: ValueMatch::Exact(b"1".to_vec()),
        }],
        ..prefix("/api")
    };
    let with_method = HttpMatch {
        method: Some(Method::POST),
        ..prefix("/api")
    };
    let routes = vec![
        route(vec![], vec![vec![api], vec![with_method]], "a"),
        route(vec![], vec![vec![api_v1], vec![with_header]], "b"),
    ];
    assert_eq!(pick(&routes, &get("/api/v1/x")), Some(("b", 0)));
    assert_eq!(pick(&routes, &get("/api/x")), Some(("a", 0)));
    let mut canary = get("/api/x");
    canary
        .headers_mut()
        .insert("x-canary", "1".parse().unwrap());
    assert_eq!(pick(&routes, &canary), Some(("b", 1)));
    assert_eq!(pick(&routes, &req(Method::POST, "/api/x")), Some(("a", 1)));
    assert_eq!(pick(&routes, &get("/other")), None);
}

#[test]
fn ties_go_to_the_earlier_route_and_rule_and_empty_matches_match_everything() {
    let routes = vec![
        route(vec![], vec![vec![], vec![prefix("/")]], "first"),
        route(vec![], vec![vec![prefix("/")]], "second"),
    ];
    assert_eq!(pick(&routes, &get("/x")), Some(("first", 0)));
}

#[test]
fn hosts_exact_beats_suffix_beats_none() {
    let routes: Vec<Route<HttpMatch, _, _>> = vec![
        route(vec![], vec![vec![]], "any"),
        route(
            vec![HostMatch::Suffix(".example.com".into())],
            vec![vec![]],
            "suffix",
        ),
        route(
            vec![HostMatch::Exact("web.example.com".into())],
            vec![vec![]],
            "exact",
        ),
    ];
    assert_eq!(
        pick(&routes, &get("http://web.example.com/")),
        Some(("exact", 0))
    );
    assert_eq!(
        pick(&routes, &get("http://WEB.example.com./")),
        Some(("exact", 0))
    );
    assert_eq!(
        pick(&routes, &get("http://api.example.com:8080/")),
        Some(("suffix", 0))
    );
    // A suffix does not match the name itself, nor an IP address any name.
    assert_eq!(pick(&routes, &get("http://example.com/")), Some(("any", 0)));
    assert_eq!(pick(&routes, &get("http://10.0.0.1/")), Some(("any", 0)));
    // A route whose hosts do not match is skipped, even if it would match the path better.
    let only = vec![route(
        vec![HostMatch::Exact("other.example.com".into())],
        vec![vec![prefix("/x")]],
        "other",
    )];
    assert_eq!(pick(&only, &get("http://web.example.com/x")), None);
}

#[test]
fn headers_match_any_value_and_regexes_whole_values() {
    let m = HttpMatch {
        headers: vec![HeaderMatch {
            name: HeaderName::from_static("x-v"),
            value: ValueMatch::Regex(Regex::new("v[12]").unwrap()),
        }],
        ..Default::default()
    };
    let mut r = get("/");
    r.headers_mut().append("x-v", "v3".parse().unwrap());
    assert!(m.score(&r).is_none());
    r.headers_mut().append("x-v", "v2".parse().unwrap());
    assert!(m.score(&r).is_some());
    let mut long = get("/");
    long.headers_mut().insert("x-v", "v22".parse().unwrap());
    assert!(m.score(&long).is_none());
}

#[test]
fn query_parameters_are_decoded() {
    let m = HttpMatch {
        query: vec![QueryMatch {
            name: "user name".into(),
            value: ValueMatch::Exact(b"a b".to_vec()),
        }],
        ..Default::default()
    };
    assert!(m.score(&get("/?x=1&user+name=a%20b")).is_some());
    assert!(m.score(&get("/?user+name=ab")).is_none());
    assert!(m.score(&get("/")).is_none());
    assert_eq!(decode("%zz%4"), "%zz%4", "bad escapes are kept");
}

#[test]
fn grpc_matches_post_service_and_method() {
    let svc = GrpcMatch {
        service: Some("shop.Cart".into()),
        method: None,
        headers: vec![],
    };
    let exact = GrpcMatch {
        service: Some("shop.Cart".into()),
        method: Some("Add".into()),
        headers: vec![],
    };
    let routes = vec![route(vec![], vec![vec![svc], vec![exact]], "cart")];
    assert_eq!(
        pick(&routes, &req(Method::POST, "/shop.Cart/Add")),
        Some(("cart", 1))
    );
    assert_eq!(
        pick(&routes, &req(Method::POST, "/shop.Cart/Remove")),
        Some(("cart", 0))
    );
    assert_eq!(pick(&routes, &req(Method::GET, "/shop.Cart/Add")), None);
    assert_eq!(pick(&routes, &req(Method::POST, "/other.Svc/Add")), None);
}

#[test]
fn request_hosts_drop_the_port_and_userinfo() {
    assert_eq!(request_host(&get("http://a.b:8080/")), Some("a.b"));
    assert_eq!(request_host(&get("http://[fd00::1]:80/")), Some("fd00::1"));
    let r = Request::builder()
        .uri("/")
        .header("host", "u@web:81")
        .body(())
        .unwrap();
    assert_eq!(request_host(&r), Some("web"));
}

#[test]
fn protos_compile_and_bad_ones_are_refused() {
    use linkerd2_proxy_api::http_route as pb;
    let suffix = pb::HostMatch {
        r#match: Some(pb::host_match::Match::Suffix(pb::host_match::Suffix {
            reverse_labels: vec!["com".into(), "Example".into()],
        })),
    };
    match proto::host(&suffix).unwrap() {
        HostMatch::Suffix(s) => assert_eq!(s, ".example.com"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        proto::host(&pb::HostMatch { r#match: None }).unwrap_err(),
        proto::InvalidMatch::NoHost
    );
    let bad = pb::HttpRouteMatch {
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Regex("(".into())),
        }),
        ..Default::default()
    };
    assert!(matches!(
        proto::http(&bad),
        Err(proto::InvalidMatch::Regex(..))
    ));
    let bad_header = pb::HttpRouteMatch {
        headers: vec![pb::HeaderMatch {
            name: "bad header".into(),
            value: Some(pb::header_match::Value::Exact(b"x".to_vec())),
        }],
        ..Default::default()
    };
    assert!(matches!(
        proto::http(&bad_header),
        Err(proto::InvalidMatch::HeaderName(_))
    ));
    let prefix = pb::HttpRouteMatch {
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Prefix("/api/".into())),
        }),
        ..Default::default()
    };
    assert!(
        proto::http(&prefix)
            .unwrap()
            .score(&get("/api/x"))
            .is_some()
    );
}
