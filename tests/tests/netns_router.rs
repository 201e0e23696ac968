//! Two clusters, each a network on a subnet of its own, joined by a router namespace: pods reach
//! each other across it by their own addresses, gateway-mode isolation lets only the allowed
//! pods across, and nothing (namespace, link) outlives the test, even when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use remora_tests::apps::{echo, echo_roundtrip, http};
use remora_tests::{Net, Pod, Router, netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: u16 = 7000;
const HTTP: u16 = 7001;
/// How long a connection that should fail is given.
const BLOCKED: Duration = Duration::from_secs(2);
/// How long one that should work is given.
const WORKS: Duration = Duration::from_secs(10);

/// "east" on 10.213.0.0/24 and "west" on 10.214.0.0/24, joined by a router.
fn two_clusters() -> Option<(Net, Net, Router)> {
    let east = Net::with_subnet(213)?;
    let west = Net::with_subnet(214)?;
    let router = Router::connect(&[&east, &west]);
    Some((east, west, router))
}

/// Connects from `from` to an echo app at `to` and echoes 64 KiB, all within `limit`.
async fn roundtrip(from: &Pod, to: SocketAddr, limit: Duration) -> io::Result<u64> {
    let attempt = async {
        let conn = from.connect(to).await?;
        echo_roundtrip(conn, 64 * 1024).await
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| io::Error::new(ErrorKind::TimedOut, format!("{to}: no echo in {limit:?}")))?
}

async fn reaches(from: &Pod, to: &Pod) {
    let echoed = roundtrip(from, to.addr4(ECHO), WORKS).await;
    assert_eq!(
        echoed.as_ref().ok(),
        Some(&(64 * 1024)),
        "{} ({}) → {} ({}): {echoed:?}",
        from.name,
        from.ip4(),
        to.name,
        to.ip4()
    );
}

async fn blocked(from: &Pod, to: &Pod) {
    let res = roundtrip(from, to.addr4(ECHO), BLOCKED).await;
    assert!(
        res.is_err(),
        "{} ({}) → {} ({}) crossed an isolated router: {res:?}",
        from.name,
        from.ip4(),
        to.name,
        to.ip4()
    );
}

/// The peer address `to`'s HTTP app saw for a request from `from`.
async fn peer_seen(from: &Pod, to: &Pod) -> String {
    let mut conn = from.connect(to.addr4(HTTP)).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rsp = String::new();
    tokio::time::timeout(WORKS, conn.read_to_string(&mut rsp))
        .await
        .expect("HTTP answer")
        .unwrap();
    let line = rsp.lines().find_map(|l| l.strip_prefix("peer: "));
    line.unwrap_or_else(|| panic!("no peer in {rsp:?}"))
        .to_string()
}

fn rules(ns: &str) -> String {
    netns::run("ip", &["netns", "exec", ns, "iptables-save"]).unwrap()
}

#[tokio::test]
async fn netns_router_joins_two_clusters() {
    let Some((east, west, _router)) = two_clusters() else {
        return;
    };
    let a = east.pod("a").app(echo(ECHO)).app(http(HTTP)).start().await;
    let b = west.pod("b").app(echo(ECHO)).app(http(HTTP)).start().await;
    assert_eq!(a.ip4(), Ipv4Addr::new(10, 213, 0, 2));
    assert_eq!(b.ip4(), Ipv4Addr::new(10, 214, 0, 2));
    assert_eq!(west.gateway4(), Ipv4Addr::new(10, 214, 0, 1));
    assert_eq!(b.ip6().segments()[..3], [0xfd00, 0x5ee, 0xd6]);

    let capture = west.capture(&b, &format!("tcp port {ECHO}")).await;
    reaches(&a, &b).await;
    reaches(&b, &a).await;
    let pcap = capture.finish().await;
    assert!(
        pcap.len() > 24,
        "the capture on b's link (in west's bridge) saw nothing"
    );

    // Nothing on the way rewrites addresses: each app sees the other pod's own (as an
    // IPv4-mapped address: the apps listen on `[::]`).
    let seen = peer_seen(&a, &b).await;
    assert!(seen.contains(":10.213.0.2]:"), "{seen}");
    let seen = peer_seen(&b, &a).await;
    assert!(seen.contains(":10.214.0.2]:"), "{seen}");
    for net in [&east, &west] {
        let r = rules(net.bridge_ns());
        assert!(
            !r.contains("\n-A "),
            "bridge {} has rules:\n{r}",
            net.bridge_ns()
        );
    }
}

#[tokio::test]
async fn netns_router_isolation_lets_only_allowed_pods_across() {
    let Some((east, west, router)) = two_clusters() else {
        return;
    };
    let a = east.pod("a").app(echo(ECHO)).start().await;
    let b = west.pod("b").app(echo(ECHO)).start().await;
    let gateway = west.pod("gateway").app(echo(ECHO)).start().await;
    reaches(&a, &b).await;
    // A connection established before isolation stays up, as through any stateful firewall.
    let before = a.connect(b.addr4(ECHO)).await.unwrap();

    router.isolate(&[gateway.ip4()]);
    blocked(&a, &b).await;
    blocked(&b, &a).await;
    reaches(&a, &gateway).await;
    reaches(&gateway, &a).await;
    reaches(&b, &gateway).await; // within west: never through the router
    let echoed = tokio::time::timeout(WORKS, echo_roundtrip(before, 1024)).await;
    assert_eq!(echoed.expect("echo in time").unwrap(), 1024);

    // A new isolation replaces the old one.
    router.isolate(&[]);
    blocked(&a, &gateway).await;

    router.open();
    reaches(&a, &b).await;
    reaches(&b, &a).await;
    reaches(&a, &gateway).await;
    let r = rules(router.namespace());
    assert!(!r.contains("-A ISOLATION"), "{r}");
}

/// The namespaces of both clusters and the router.
fn all_namespaces(east: &Net, west: &Net, router: &Router) -> Vec<String> {
    let mut all = east.namespaces();
    all.extend(west.namespaces());
    all.push(router.namespace().to_string());
    all
}

fn assert_gone(namespaces: &[String]) {
    let now = netns::list();
    for ns in namespaces {
        assert!(!now.contains(ns), "namespace {ns} left behind");
    }
}

#[tokio::test]
async fn netns_router_nothing_outlives_the_test() {
    let Some((east, west, router)) = two_clusters() else {
        return;
    };
    let a = east.pod("a").app(echo(ECHO)).start().await;
    let b = west.pod("b").app(echo(ECHO)).start().await;
    reaches(&a, &b).await;
    let namespaces = all_namespaces(&east, &west, &router);
    assert_eq!(namespaces.len(), 5, "{namespaces:?}");

    // The router goes with its links, and the bridges' routes through them.
    drop(router);
    assert!(!netns::list().contains(&namespaces[4]));
    // The kernel tears a deleted namespace's veths down a moment later: poll, bounded.
    let gone = remora_tests::eventually(Duration::from_secs(10), || async {
        let links = netns::run("ip", &["-n", east.bridge_ns(), "-o", "link"]).unwrap();
        let routes = netns::run("ip", &["-n", east.bridge_ns(), "route"]).unwrap();
        !links.contains("rt0") && !routes.contains("10.214.0.0")
    })
    .await;
    let links = netns::run("ip", &["-n", east.bridge_ns(), "-o", "link"]).unwrap();
    let routes = netns::run("ip", &["-n", east.bridge_ns(), "route"]).unwrap();
    assert!(gone, "{links}\n{routes}");
    blocked(&a, &b).await;
    drop((a, b, east, west));
    assert_gone(&namespaces);

    // The same when the test fails with everything up.
    let made = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = made.clone();
    let failed = tokio::spawn(async move {
        let (east, west, router) = two_clusters().unwrap();
        let _a = east.pod("a").app(echo(ECHO)).start().await;
        let _b = west.pod("b").app(echo(ECHO)).start().await;
        router.isolate(&[]);
        *record.lock().unwrap() = all_namespaces(&east, &west, &router);
        panic!("a test failing with two clusters and an isolated router up");
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    let namespaces = made.lock().unwrap().clone();
    assert_eq!(namespaces.len(), 5, "{namespaces:?}");
    assert_gone(&namespaces);
}
