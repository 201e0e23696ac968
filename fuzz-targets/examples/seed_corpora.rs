//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/` (valid inputs the
//! fuzzers mutate from): `cargo run -p remora-fuzz-targets --example seed_corpora`. Campaigns
//! then grow the corpora, and `cargo +nightly fuzz cmin` minimises them before they are
//! committed (fuzz/README.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Writes seeds whose first byte is a pick (`h1_response`, `h1_request`): `seed-<i>`.
fn write_picked(dir: &Path, seeds: &[(u8, &[u8])]) {
    for (i, (pick, rest)) in seeds.iter().enumerate() {
        let mut input = vec![*pick];
        input.extend_from_slice(rest);
        write(dir, &format!("seed-{i}"), &input);
    }
}

fn client_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(remora_identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn main() {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let d = |t: &str| root.join(t);

    use remora_proxy::transport::header::{SessionProtocol, TransportHeader};
    for (i, h) in [
        TransportHeader {
            port: 8080,
            name: None,
            protocol: None,
        },
        TransportHeader {
            port: 8080,
            name: Some("web.shop.svc.cluster.local".into()),
            protocol: Some(SessionProtocol::Http2),
        },
        TransportHeader {
            port: 3306,
            name: None,
            protocol: Some(SessionProtocol::Http1),
        },
    ]
    .iter()
    .enumerate()
    {
        write(&d("transport_header"), &format!("seed-{i}"), &h.encode());
    }

    write(
        &d("client_hello"),
        "seed-name",
        &client_hello("web.shop.serviceaccount.identity.linkerd.cluster.local"),
    );
    write(&d("client_hello"), "seed-ip", &client_hello("10.0.0.1"));
    write(&d("client_hello"), "seed-plain", b"GET / HTTP/1.1\r\n\r\n");

    for (i, h) in [
        &b"GET /echo HTTP/1.1\r\nhost: web:8080\r\n\r\n"[..],
        b"POST http://web.shop.svc.cluster.local:8080/items HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc",
        b"CONNECT web:443 HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00",
    ]
    .iter()
    .enumerate()
    {
        write(&d("http_detect"), &format!("seed-{i}"), h);
    }

    // h1_response: the first byte picks the request (low two bits) and how many bytes the
    // peer writes at a time (the rest, plus one).
    write_picked(
        &d("h1_response"),
        &[
        (0u8, &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"[..]),
        (4 << 2, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-trailer: yes\r\n\r\n"),
        (2 | 3 << 2, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"),
        (1, b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"),
        (3 | 1 << 2, b"HTTP/1.0 200 OK\r\n\r\nuntil the end"),
        (0, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (0, b"HTTP/1.1 299 Fine Thanks\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"),
        ],
    );

    // h1_request: the first byte picks the answer (low two bits) and how many bytes the
    // client writes at a time (the rest, plus one).
    write_picked(
        &d("h1_request"),
        &[
        (0u8, &b"GET /a HTTP/1.1\r\nhost: web\r\n\r\nPOST /b HTTP/1.1\r\nhost: web\r\ncontent-length: 3\r\n\r\nabc"[..]),
        (1 | 4 << 2, b"POST /up HTTP/1.1\r\nhost: web\r\nte: trailers\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        (2 | 3 << 2, b"PUT /c HTTP/1.1\r\nhost: web\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\nokGET /d HTTP/1.1\r\n\r\n"),
        (3, b"GET /e HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /f HTTP/1.0\r\n\r\n"),
        (1 | 1 << 2, b"GET /g HTTP/1.0\r\n\r\n"),
        (0, b"POST /h HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\nGET /i HTTP/1.1\r\n\r\n"),
        (0, b"GET /j HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"),
        (0, b"CONNECT web:443 HTTP/1.1\r\nhost: web:443\r\n\r\nbytes after"),
        (0, b"GET /k HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\nf: 6\r\ng: 7\r\nh: 8\r\ni: 9\r\n\r\n"),
        (0, b"HEAD /l HTTP/1.1\r\nhost: web\r\n\r\nDELETE /m HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
        ],
    );

    // connection_memos: one request per line; `u` first names the authority in the URI.
    write(
        &d("connection_memos"),
        "seed-0",
        b"web.shop.svc.cluster.local:8080\nweb.shop.svc.cluster.local:8080\nuapi:81\nuser@web:82\nweb\n[fd00::1]\n[fd00::1]:8080\nweb",
    );
    write(
        &d("connection_memos"),
        "seed-1",
        b"ua.b:9\nua.b:9 c.d\nua.b:9 a.b:9\nu10.0.0.1\n10.0.0.1:80\nx.example\nx.example:443\nx.example",
    );

    // env targets: a first byte picks a variable, the rest of the line is its value.
    let remora_names: Vec<&str> = remora_proxy::config::VARS.iter().map(|v| v.name).collect();
    let pick = |names: &[&str], want: &str| names.iter().position(|n| *n == want).unwrap() as u8;
    let mut remora = Vec::new();
    for (var, value) in [
        (
            "REMORA_INBOUND_PORT_POLICIES",
            "8080=deny; 7000=allow(web.shop.serviceaccount.identity.linkerd.east.example, *.prod.example)",
        ),
        ("REMORA_OPAQUE_PORTS", "25,587,1000-1010"),
        (
            "REMORA_INBOUND_HTTP2_SERVER",
            "keep_alive_interval=10s,max_concurrent_streams=100",
        ),
        ("REMORA_DESTINATION_PROFILE_NETWORKS", "10.0.0.0/8,fd00::/8"),
        ("REMORA_INBOUND_DETECT_TIMEOUT", "365d"),
        (
            "REMORA_IDENTITY_ADDR",
            "linkerd-identity-headless.linkerd.svc.cluster.local.:8080",
        ),
    ] {
        remora.push(pick(&remora_names, var));
        remora.extend_from_slice(value.as_bytes());
        remora.push(b'\n');
    }
    write(&d("env_remora"), "seed-0", &remora);
    let l5d: Vec<String> = remora_proxy::config::linkerd::LINKERD_VARS
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    let l5d_names: Vec<&str> = l5d.iter().map(String::as_str).collect();
    let mut linkerd = Vec::new();
    for (var, value) in [
        ("INBOUND_PORTS", "8080,9000-9002"),
        ("LOG", "warn,linkerd=info,hickory=error,[{headers}]=off"),
        ("POLICY_WORKLOAD", "{\"ns\":\"shop\", \"pod\":\"web-0\"}\n"),
        ("CORES_MAX_RATIO", "0.5"),
        ("INBOUND_SERVER_HTTP2_MAX_FRAME_SIZE", "16384"),
        (
            "DESTINATION_SVC_ADDR",
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
        ),
    ] {
        linkerd.push(pick(&l5d_names, var));
        linkerd.extend_from_slice(value.as_bytes());
        linkerd.push(b'\n');
    }
    write(&d("env_linkerd"), "seed-0", &linkerd);

    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/control.toml"))
            .unwrap();
    write(&d("control_toml"), "seed-example", &example);

    use linkerd2_proxy_api::destination as pb;
    let profile = pb::DestinationProfile {
        fully_qualified_name: "web.shop.svc.cluster.local".into(),
        routes: vec![pb::Route {
            condition: Some(pb::RequestMatch {
                r#match: Some(pb::request_match::Match::Path(pb::PathMatch {
                    regex: "/api/.*".into(),
                })),
            }),
            is_retryable: true,
            ..Default::default()
        }],
        retry_budget: Some(pb::RetryBudget {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
        }),
        ..Default::default()
    };
    write(&d("profile"), "seed-0", &profile.encode_to_vec());

    let key = remora_identity::certs::generate_key().unwrap();
    let name: remora_identity::Name = "web.shop.serviceaccount.identity.linkerd.cluster.local"
        .parse()
        .unwrap();
    write(
        &d("csr"),
        "seed-good",
        &remora_identity::certs::csr(&key, &name).unwrap(),
    );
    let other: remora_identity::Name = "db.shop.serviceaccount.identity.linkerd.cluster.local"
        .parse()
        .unwrap();
    write(
        &d("csr"),
        "seed-other",
        &remora_identity::certs::csr(&key, &other).unwrap(),
    );

    let ca = remora_identity::certs::Ca::new_root("seed", Duration::from_secs(3600)).unwrap();
    write(&d("trust_anchors"), "seed-one", ca.cert_pem().as_bytes());
    let two = format!(
        "{}{}",
        ca.cert_pem(),
        remora_identity::certs::Ca::new_root("seed2", Duration::from_secs(3600))
            .unwrap()
            .cert_pem()
    );
    write(&d("trust_anchors"), "seed-two", two.as_bytes());
    // sa_token: tokens of the fixture's issuer at its clock, valid and near misses.
    {
        use remora_control::sa_token::mint::SaClaims;
        use remora_fuzz_targets::sa_token_fixture::{NOW_SECS, minters};
        let (rsa, ec) = minters();
        let now = std::time::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        let good = SaClaims::new("shop", "web", now, Duration::from_secs(3600));
        let seed = |name: &str, token: String| write(&d("sa_token"), name, token.as_bytes());
        seed("seed-rs256", rsa.token(&good));
        seed("seed-es256", ec.token(&good));
        seed(
            "seed-no-kid",
            rsa.sign_raw(&serde_json::json!({ "alg": "RS256" }), &good.to_json()),
        );
        let mut c = good.clone();
        c.audience = vec!["https://kubernetes.default.svc".into()];
        seed("seed-audience", rsa.token(&c));
        let mut c = good.clone();
        c.expires = NOW_SECS - 3600;
        c.issued_at = NOW_SECS - 7200;
        c.not_before = NOW_SECS - 7200;
        seed("seed-expired", rsa.token(&c));
        let mut c = good.clone();
        c.service_account = "db".into();
        seed("seed-other-identity", ec.token(&c));
        let mut raw = good.to_json();
        raw["sub"] = serde_json::json!("system:node:node-a");
        seed("seed-subject", ec.sign(&raw));
        seed(
            "seed-alg-none",
            rsa.sign_raw(&serde_json::json!({ "alg": "none" }), &good.to_json()),
        );
        seed(
            "seed-hs256",
            rsa.sign_raw(
                &serde_json::json!({ "alg": "HS256", "kid": "rfc7515-a2" }),
                &good.to_json(),
            ),
        );
        seed(
            "seed-crit",
            ec.sign_raw(
                &serde_json::json!({ "alg": "ES256", "kid": "rfc7515-a3", "crit": ["x"] }),
                &good.to_json(),
            ),
        );
        let t = rsa.token(&good);
        seed("seed-truncated", t[..t.len() - 10].to_string());
    }
    explicit_and_policy_seeds(&d);
    println!("seeded {}", root.display());
}

/// Seeds for explicit-mode requests, policy strings and the policy services' messages (built
/// with the test suite's builders, so they are the messages the tests send).
fn explicit_and_policy_seeds(d: &dyn Fn(&str) -> PathBuf) {
    for (i, r) in [
        "GET http://web.shop.svc.cluster.local:8080/a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://user:pw@10.0.0.1:80/ HTTP/1.1\r\n\r\n",
        "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
        "GET /origin HTTP/1.1\r\nHost: web\r\n\r\n",
        "GET https://web/ HTTP/1.1\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        write(&d("explicit_request"), &format!("seed-{i}"), r.as_bytes());
    }
    for (i, p) in [
        "all-unauthenticated",
        "all-authenticated",
        "cluster-unauthenticated",
        "deny",
        "audit",
        "8080=all-authenticated;9090=deny",
        "8080=identities:web.shop.serviceaccount.identity.linkerd.cluster.local",
    ]
    .iter()
    .enumerate()
    {
        write(&d("policy_strings"), &format!("seed-{i}"), p.as_bytes());
    }

    use remora_tests::inbound_servers as ib;
    let id = "client.shop.serviceaccount.identity.linkerd.cluster.local";
    let servers = [
        ib::server("all", ib::detect())
            .authz(ib::authz("all", ib::everywhere(), ib::unauthenticated()))
            .build(),
        ib::server("http", ib::http1())
            .authz(ib::authz("mtls", ib::everywhere(), ib::mesh_tls()))
            .route(ib::http_route("admin").prefix("/admin").authz(ib::authz(
                "ids",
                ib::everywhere(),
                ib::identities(&[id], &[&["shop"]]),
            )))
            .rate_limit("rl", 100, 10, &[(5, &[id])])
            .build(),
        ib::server("grpc", ib::grpc())
            .grpc_route("rpc", "remora.test.Test", "Echo", vec![ib::audit()])
            .build(),
        ib::server("net", ib::http2())
            .authz(ib::authz(
                "net",
                vec![ib::network("10.0.0.0/8", &["10.1.0.0/16"])],
                ib::unauthenticated(),
            ))
            .build(),
        ib::server("opaque", ib::opaque()).build(),
        ib::server("tls", ib::tls()).build(),
    ];
    for (i, s) in servers.iter().enumerate() {
        write(
            &d("inbound_policy"),
            &format!("seed-{i}"),
            &s.encode_to_vec(),
        );
    }

    use remora_tests::outbound_policies as ob;
    let mut retried = ob::rule(
        vec![ob::path_regex("^/api/v[0-9]+/.*$")],
        ob::random_available(&[("web-v1", 70), ("web-v2", 30)]),
    );
    retried.retry = Some(ob::retry_5xx(2, 4096));
    retried.filters = vec![ob::redirect("elsewhere", 301)];
    let policies = [
        ob::web_policy(vec![ob::http_route(
            "by-header",
            vec![
                ob::rule(
                    vec![ob::header("x-canary", "1")],
                    ob::first_available(&["web-v2"]),
                ),
                ob::rule(
                    vec![ob::path_prefix("/")],
                    ob::first_available(&["web-v1", "web-v2"]),
                ),
            ],
        )]),
        ob::web_policy(vec![ob::http_route("retried", vec![retried])]),
        ob::undefined_port(9999),
        ob::grpc_policy("web-v1", Default::default()),
    ];
    for (i, p) in policies.iter().enumerate() {
        write(
            &d("outbound_policy"),
            &format!("seed-{i}"),
            &p.encode_to_vec(),
        );
    }
}
