//! The `REMORA_INBOUND_*` policies, as compiled servers.

use super::*;
fn local(default: &str, ports: &str) -> InboundPolicy {
    InboundPolicy {
        default: parse_policy(default).unwrap(),
        ports: parse_port_policies(ports).unwrap(),
        trust_domain: Some("east.example".into()),
        cluster_networks: Vec::new(),
    }
}

const EAST: &str = "web.shop.serviceaccount.identity.linkerd.east.example";
const WEST: &str = "web.shop.serviceaccount.identity.linkerd.west.example";

fn check(p: &InboundPolicy, port: u16, tls: ClientTls, addr: &str) -> Result<(), Denied> {
    p.server(port, false, Duration::from_secs(5))
        .authorize_tcp(&client(addr, tls))
        .map(|_| ())
}

#[test]
fn local_policies_decide_as_before() {
    let p = local(
        "all-unauthenticated",
        "1=all-authenticated; 2=cluster-authenticated; 3=deny; 4=allow(db.shop.serviceaccount.identity.linkerd.east.example, *.prod.serviceaccount.identity.linkerd.east.example)",
    );
    let x = "10.9.9.9";
    let cases = [
        (80, ClientTls::None, Ok(())),
        (1, ClientTls::None, Err(Denied::Unauthenticated)),
        (
            1,
            ClientTls::Established(None),
            Err(Denied::Unauthenticated),
        ),
        (1, mtls(EAST), Ok(())),
        (2, mtls(EAST), Ok(())),
        (2, mtls(WEST), Err(Denied::ForeignTrustDomain)),
        (3, mtls(EAST), Err(Denied::Deny)),
        (3, ClientTls::None, Err(Denied::Deny)),
        (4, mtls(EAST), Err(Denied::NotAllowed)),
        (
            4,
            mtls("db.shop.serviceaccount.identity.linkerd.east.example"),
            Ok(()),
        ),
        (
            4,
            mtls("api.prod.serviceaccount.identity.linkerd.east.example"),
            Ok(()),
        ),
        (4, ClientTls::None, Err(Denied::Unauthenticated)),
        (
            4,
            mtls("api.xprod.serviceaccount.identity.linkerd.east.example"),
            Err(Denied::NotAllowed),
        ),
    ];
    for (port, tls, want) in cases {
        assert_eq!(check(&p, port, tls.clone(), x), want, "port {port} {tls:?}");
    }
    // Local deny has no localhost exception (as linkerd2-proxy's local defaults).
    assert_eq!(
        check(&p, 3, ClientTls::None, "127.0.0.1"),
        Err(Denied::Deny)
    );
    // Without an identity, no one is of our trust domain.
    let mut p = local("cluster-authenticated", "");
    p.trust_domain = None;
    assert_eq!(check(&p, 1, mtls(EAST), x), Err(Denied::ForeignTrustDomain));
}

#[test]
fn local_cluster_policies_check_the_client_address() {
    let mut p = local(
        "cluster-unauthenticated",
        "1=cluster-authenticated; 2=audit",
    );
    p.cluster_networks = vec!["10.42.0.0/16".parse().unwrap()];
    let (inside, outside) = ("10.42.3.4", "192.0.2.1");
    assert_eq!(check(&p, 80, ClientTls::None, inside), Ok(()));
    assert_eq!(check(&p, 80, mtls(WEST), inside), Ok(()), "any identity");
    assert_eq!(
        check(&p, 80, ClientTls::None, outside),
        Err(Denied::OutsideCluster)
    );
    assert_eq!(check(&p, 80, ClientTls::None, "::ffff:10.42.3.4"), Ok(()));
    assert_eq!(check(&p, 1, mtls(WEST), inside), Ok(()));
    assert_eq!(
        check(&p, 1, ClientTls::None, inside),
        Err(Denied::Unauthenticated)
    );
    assert_eq!(
        check(&p, 1, mtls(EAST), outside),
        Err(Denied::OutsideCluster)
    );
    // Audit admits everyone, from anywhere, by an authorization named audit.
    let s = p.server(2, false, Duration::from_secs(5));
    let a = s.authorize_tcp(&client(outside, ClientTls::None)).unwrap();
    assert!(a.is_audit());
}

#[test]
fn local_policies_are_servers_of_their_own() {
    let p = local("deny", "8080=all-unauthenticated");
    let s = p.server(8080, false, Duration::from_secs(7));
    assert_eq!(s.meta, Meta::default("all-unauthenticated"));
    assert!(
        matches!(s.protocol, Protocol::Detect { timeout, .. } if timeout == Duration::from_secs(7))
    );
    let s = p.server(3306, true, Duration::from_secs(7));
    assert_eq!((s.meta.name(), s.protocol.name()), ("deny", "opaque"));
    // HTTP on a deny port is answered 403 per request.
    let (c, _, _) = conn(
        p.server(80, false, Duration::from_secs(5)),
        client("10.1.1.1", ClientTls::None),
    );
    assert_eq!(
        c.admits(&mut req(Method::GET, "/")),
        Err(PolicyRefusal::Unauthorized(Denied::Deny))
    );
    // The store serves each port its compiled policy.
    let ports = PortPolicies::local(p, [3306].into(), Duration::from_secs(5));
    assert_eq!(ports.get(8080).borrow().meta.name(), "all-unauthenticated");
    assert_eq!(ports.get(3306).borrow().protocol.name(), "opaque");
    assert_eq!(ports.get(9999).borrow().meta.name(), "deny");
}

#[test]
fn every_linkerd_default_policy_parses() {
    for name in [
        "all-unauthenticated",
        "all-authenticated",
        "cluster-unauthenticated",
        "cluster-authenticated",
        "audit",
        "deny",
    ] {
        assert_eq!(parse_policy(name).unwrap().name(), name);
    }
}

#[test]
fn local_parse_errors() {
    assert!(parse_policy("open").is_err());
    assert!(parse_policy("allow()").is_err());
    assert!(parse_policy("allow(not a name)").is_err());
    assert!(parse_port_policies("8080").is_err());
    assert!(parse_port_policies("0=deny").is_err());
    assert!(parse_port_policies("1=deny;1=deny").is_err());
    assert_eq!(parse_port_policies(" ; ").unwrap().len(), 0);
}
