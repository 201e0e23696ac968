//! Multicluster, gateway mode: east's pods cannot route to west's pods at all (the router
//! drops it); they reach west's exported services only through west's gateway, mTLS on each
//! hop. Serialized: each test builds two clusters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use remora_proxy::transport::header::{SessionProtocol, TransportHeader};
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::http::{get, grpc_channel, grpc_echo, http1, send1};
use remora_tests::router::Router;
use remora_tests::services::Service;
use remora_tests::tls::{certify, connect_tls, mesh_configs};
use remora_tests::{Net, Pod, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WEB_WEST: &str = "web-west.shop.svc.cluster.local:8080";
const WEB: &str = "web.shop.svc.cluster.local:8080";

struct Mesh {
    east: ClusterPlane,
    west: ClusterPlane,
    east_net: Net,
    west_net: Net,
    gateway: Pod,
    router: Router,
    pki: Pki,
}

/// East linked to west through west's gateway; west linked back to east (flat, so east's
/// control plane may watch west's exports); pods of the two clusters isolated from each other.
async fn mesh() -> Option<Mesh> {
    let east_net = Net::with_subnet(213)?;
    let west_net = Net::with_subnet(214)?;
    let router = Router::connect(&[&east_net, &west_net]);
    let pki = Pki::new();
    let mut east = ClusterPlane::create(&east_net, &pki, "east", "east.example", 8086).await;
    let mut west = ClusterPlane::create(&west_net, &pki, "west", "west.example", 8086).await;
    let gateway = west_net.pod("gw-west").start().await;
    let gw_id = west.cp.identity("remora-gateway", "linkerd");
    west.cp.set_multicluster(&format!(
        "[multicluster]\nmirror_cidr = \"10.98.0.0/24\"\ngateway_addr = \"{}:4143\"\n\
         gateway_identity = \"{gw_id}\"\n\n{}",
        gateway.ip4(),
        east.cp.link_stanza("flat")
    ));
    let west_link = west.cp.link_stanza("gateway");
    assert!(west_link.contains(&gw_id), "{west_link}");
    east.cp.set_multicluster(&format!(
        "[multicluster]\nmirror_cidr = \"10.97.0.0/24\"\n\n{west_link}"
    ));
    east.cp.start().await;
    west.cp.start().await;
    router.isolate(&[gateway.ip4(), east.pod.ip4(), west.pod.ip4()]);
    let mut gateway = gateway;
    gateway
        .run_gateway(&west.cp, "remora-gateway", "linkerd")
        .await;
    Some(Mesh {
        east,
        west,
        east_net,
        west_net,
        gateway,
        router,
        pki,
    })
}

fn exported(name: &str, vip: &str, pods: &[&Pod]) -> Service {
    let mut s = Service::new(name, "shop").vip(vip).port(8080).export();
    for p in pods {
        s = s.endpoint(p, "web");
    }
    s
}

/// The VIP of `name.shop` on `cp`, once it is served with `n` endpoints.
async fn vip(cp: &remora_tests::control::ControlPlane, name: &str, n: usize) -> String {
    cp.wait_service(name, "shop", |eps| eps.len() == n).await
}

#[tokio::test]
async fn netns_gateway_mode_reaches_remote_pods_through_the_gateway() {
    let _serial = SERIAL.lock().await;
    let Some(mut m) = mesh().await else { return };
    let w1 = m.west.test_pod(&m.west_net, "w1", "web").await;
    let w2 = m.west.test_pod(&m.west_net, "w2", "web").await;
    m.west
        .cp
        .apply(&[exported("web", "10.96.0.90", &[&w1, &w2])])
        .await;
    let a = m.east.client_pod(&m.east_net, "a").await;
    // Mirrored as one endpoint: the gateway.
    let vip = vip(&m.east.cp, "web-west", 1).await;
    let a_id = m.east.cp.identity("client", "shop");
    let gw_id = m.west.cp.identity("remora-gateway", "linkerd");
    // The pods really are out of reach from east (an unmeshed pod, so nothing intercepts).
    let probe = m.east_net.pod("probe").start().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), probe.connect(w1.addr4(8080)))
            .await
            .map(|r| r.is_err())
            .unwrap_or(true),
        "an east pod reached a west pod directly"
    );

    let addr = format!("{vip}:8080").parse().unwrap();
    let mut ok = false;
    for _ in 0..100 {
        let mut h1 = http1(&a.ns, addr).await;
        if let Ok(r) = send1(&mut h1, get(WEB_WEST, "/echo")).await
            && r.status == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "gateway: {}", m.gateway.proxy().log());
    let mut h1 = http1(&a.ns, addr).await;
    for _ in 0..10 {
        let r = send1(&mut h1, get(WEB_WEST, "/echo")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let echo = r.json();
        // The west app sees the gateway's identity; `forwarded` names the east caller.
        assert_eq!(echo["headers"]["l5d-client-id"], gw_id.as_str(), "{echo}");
        let fwd = echo["headers"]["forwarded"].as_str().unwrap_or_default();
        assert!(fwd.contains(&format!("for={a_id}")), "{fwd}");
        assert!(fwd.contains(&format!("by={gw_id}")), "{fwd}");
        assert!(fwd.contains(&format!("host={WEB}")), "{fwd}");
        assert!(fwd.contains("proto=https"), "{fwd}");
    }
    let channel = grpc_channel(&a.ns, addr).await;
    assert_eq!(
        grpc_echo(channel, "via gw", 0).await.unwrap().message,
        "via gw"
    );

    // East: the hop to the gateway, with the gateway's identity and the target cluster.
    let am = a.metrics().await;
    assert!(
        am.get(
            "response_total",
            &[
                ("direction", "outbound"),
                ("server_id", gw_id.as_str()),
                ("dst_target_cluster", "west"),
                ("classification", "success"),
            ]
        ) >= 11.0,
        "{}",
        am.text
    );
    // The gateway: the caller and the target on its inbound side, the pods on its outbound.
    let gm = m.gateway.metrics().await;
    assert!(
        gm.get(
            "response_total",
            &[
                ("direction", "inbound"),
                ("client_id", a_id.as_str()),
                ("authority", WEB),
                ("classification", "success"),
            ]
        ) >= 10.0,
        "{}",
        gm.text
    );
    assert!(
        gm.get(
            "response_total",
            &[
                ("direction", "outbound"),
                ("authority", WEB),
                ("tls", "true")
            ]
        ) >= 10.0
    );
}

/// Opens mTLS to the gateway as `identity` (issued by east) and sends a transport header
/// naming `name:8080`; returns whether the gateway kept the connection to forward it.
async fn ask_gateway(m: &Mesh, from: &Pod, name: &str, identity: Option<&str>) -> bool {
    ask_gateway_port(m, from, name, 8080, identity).await
}

/// [`ask_gateway`] naming `name:port`.
async fn ask_gateway_port(
    m: &Mesh,
    from: &Pod,
    name: &str,
    port: u16,
    identity: Option<&str>,
) -> bool {
    let anchors = m.east.cp.anchors();
    let config = match identity {
        Some(id) => {
            let key = certify(&m.east.cp.issuer(), id, Duration::from_secs(3600));
            mesh_configs(&key, &anchors).client_alpn
        }
        None => remora_identity::tls::anonymous_client(&anchors)
            .map(|c| {
                let mut c = c.as_ref().clone();
                c.alpn_protocols = vec![remora_tests::tls::TRANSPORT_ALPN.to_vec()];
                std::sync::Arc::new(c)
            })
            .unwrap(),
    };
    let gw_id = m.west.cp.identity("remora-gateway", "linkerd");
    let Ok(mut tls) = connect_tls(&from.ns, m.gateway.addr4(4143), config, &gw_id).await else {
        return false;
    };
    let header = TransportHeader {
        port,
        name: Some(name.to_string()),
        protocol: Some(SessionProtocol::Http1),
    };
    if tls.write_all(&header.encode()).await.is_err() {
        return false;
    }
    let req = format!("GET /echo HTTP/1.1\r\nhost: {name}:{port}\r\nconnection: close\r\n\r\n");
    if tls.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn netns_the_gateway_is_not_an_open_relay() {
    let _serial = SERIAL.lock().await;
    let Some(mut m) = mesh().await else { return };
    let w1 = m.west.test_pod(&m.west_net, "w1", "web").await;
    m.west
        .cp
        .apply(&[
            exported("web", "10.96.0.90", &[&w1]),
            // Exists, but is not exported.
            Service::new("secret", "shop")
                .vip("10.96.0.91")
                .port(8080)
                .endpoint(&w1, "web"),
        ])
        .await;
    vip(&m.east.cp, "web-west", 1).await;
    let a = m.east_net.pod("a").start().await;
    let caller = m.east.cp.identity("client", "shop");
    // The exported service is forwarded (the gateway follows the exports within a moment).
    let allowed = eventually(Duration::from_secs(30), || async {
        ask_gateway(&m, &a, "web.shop.svc.cluster.local", Some(&caller)).await
    })
    .await;
    assert!(allowed, "{}", m.gateway.proxy().log());
    for name in [
        "secret.shop.svc.cluster.local",   // not exported
        "web-east.shop.svc.cluster.local", // a name of another cluster
        "example.com",                     // an external host
        "10.214.0.5",                      // an IP address
    ] {
        assert!(
            !ask_gateway(&m, &a, name, Some(&caller)).await,
            "the gateway forwarded {name}"
        );
    }
    // An exported service, on a port it does not declare (W2.12): refused.
    assert!(
        !ask_gateway_port(&m, &a, "web.shop.svc.cluster.local", 9090, Some(&caller)).await,
        "the gateway forwarded a port the service does not declare"
    );
    // Without a mesh identity: refused on the direct path.
    assert!(!ask_gateway(&m, &a, "web.shop.svc.cluster.local", None).await);
    let gm = m.gateway.metrics().await;
    let refused = |reason: &str| {
        gm.get(
            "tcp_refused_total",
            &[("direction", "inbound"), ("reason", reason)],
        )
    };
    assert_eq!(refused("gateway_not_exported"), 3.0, "{}", gm.text);
    assert_eq!(refused("gateway_ip_literal"), 1.0, "{}", gm.text);
    assert_eq!(refused("gateway_port_not_exported"), 1.0, "{}", gm.text);
    assert_eq!(refused("direct_not_mtls"), 1.0, "{}", gm.text);
    let log = m.gateway.proxy().log();
    for name in ["secret.shop", "web-east.shop", "example.com", "10.214.0.5"] {
        assert!(log.contains(name), "no log line names {name}");
    }
    assert!(
        log.lines().any(|l| l.contains("does not declare")
            && l.contains("port=9090")
            && l.contains(&caller)),
        "no log line names the undeclared port and the caller:\n{log}"
    );
}

#[tokio::test]
async fn netns_a_gateway_outage_fails_fast_and_spares_everything_else() {
    let _serial = SERIAL.lock().await;
    let Some(mut m) = mesh().await else { return };
    let w1 = m.west.test_pod(&m.west_net, "w1", "web").await;
    let e1 = m.east.test_pod(&m.east_net, "e1", "web").await;
    m.west
        .cp
        .apply(&[exported("web", "10.96.0.90", &[&w1])])
        .await;
    m.east
        .cp
        .apply(&[Service::new("web", "shop")
            .vip("10.96.0.90")
            .port(8080)
            .endpoint(&e1, "web")])
        .await;
    let a = m.east.client_pod(&m.east_net, "a").await;
    let vip = vip(&m.east.cp, "web-west", 1).await;
    let remote: std::net::SocketAddr = format!("{vip}:8080").parse().unwrap();
    let local: std::net::SocketAddr = "10.96.0.90:8080".parse().unwrap();
    let status = |addr: std::net::SocketAddr, host: &'static str| {
        let ns = a.ns.clone();
        async move {
            let mut c = http1(&ns, addr).await;
            let started = tokio::time::Instant::now();
            let r = send1(&mut c, get(host, "/echo")).await.unwrap();
            (
                r.status.as_u16(),
                r.headers.contains_key("l5d-proxy-error"),
                started.elapsed(),
            )
        }
    };
    let up = eventually(Duration::from_secs(30), || async {
        status(remote, WEB_WEST).await.0 == 200
    })
    .await;
    assert!(up);

    // The gateway goes down: local traffic is untouched; gateway-linked calls get 503 with
    // l5d-proxy-error, quickly, once the breaker has ejected the gateway.
    m.gateway
        .proxy_mut()
        .signal(nix::sys::signal::Signal::SIGKILL);
    let mut fast503 = false;
    for _ in 0..60 {
        let (s, annotated, took) = status(remote, WEB_WEST).await;
        assert_ne!(s, 200, "a request succeeded with the gateway down");
        assert!(annotated, "a {s} without l5d-proxy-error");
        if s == 503 && took < Duration::from_secs(1) {
            fast503 = true;
            break;
        }
    }
    assert!(fast503, "gateway-linked calls never failed fast with 503");
    for _ in 0..10 {
        assert_eq!(status(local, WEB).await.0, 200);
    }

    // It comes back: calls recover.
    m.gateway
        .run_gateway(&m.west.cp, "remora-gateway", "linkerd")
        .await;
    let back = eventually(Duration::from_secs(60), || async {
        status(remote, WEB_WEST).await.0 == 200
    })
    .await;
    assert!(back, "calls did not recover after the gateway returned");
    let _ = (&m.router, &m.pki);
}

#[tokio::test]
async fn netns_a_flat_service_and_a_gateway_service_work_side_by_side() {
    let _serial = SERIAL.lock().await;
    let Some(mut m) = mesh().await else { return };
    let w1 = m.west.test_pod(&m.west_net, "w1", "web").await;
    let c1 = m.west.test_pod(&m.west_net, "c1", "web").await;
    // catalog is exported for flat mode: its pod is reachable from east.
    m.router.isolate(&[
        m.gateway.ip4(),
        m.east.pod.ip4(),
        m.west.pod.ip4(),
        c1.ip4(),
    ]);
    let mut catalog = Service::new("catalog", "shop")
        .vip("10.96.0.92")
        .port(8080)
        .export_as("flat");
    catalog = catalog.endpoint(&c1, "web");
    m.west
        .cp
        .apply(&[exported("web", "10.96.0.90", &[&w1]), catalog])
        .await;
    let a = m.east.client_pod(&m.east_net, "a").await;
    let a_id = m.east.cp.identity("client", "shop");
    let gw_id = m.west.cp.identity("remora-gateway", "linkerd");
    let web_vip = vip(&m.east.cp, "web-west", 1).await;
    let cat_vip = vip(&m.east.cp, "catalog-west", 1).await;
    assert_eq!(
        m.east.cp.service("catalog-west", "shop").await.unwrap().1,
        vec![c1.ip4().to_string()],
        "the flat service mirrors the pod itself"
    );
    let call = |vip: String, host: &'static str| {
        let ns = a.ns.clone();
        async move {
            let mut c = http1(&ns, format!("{vip}:8080").parse().unwrap()).await;
            let r = send1(&mut c, get(host, "/echo")).await.unwrap();
            (r.status.as_u16(), r.json())
        }
    };
    let ready = eventually(Duration::from_secs(30), || async {
        call(web_vip.clone(), WEB_WEST).await.0 == 200
            && call(cat_vip.clone(), "catalog-west.shop.svc.cluster.local:8080")
                .await
                .0
                == 200
    })
    .await;
    assert!(ready);
    let gateway_requests =
        |mm: remora_tests::admin::Metrics| mm.get("request_total", &[("direction", "inbound")]);
    let before = gateway_requests(m.gateway.metrics().await);
    for _ in 0..5 {
        let (s, echo) = call(cat_vip.clone(), "catalog-west.shop.svc.cluster.local:8080").await;
        assert_eq!(s, 200);
        assert_eq!(
            echo["headers"]["l5d-client-id"],
            a_id.as_str(),
            "flat keeps the caller"
        );
    }
    assert_eq!(
        gateway_requests(m.gateway.metrics().await),
        before,
        "the gateway saw flat traffic"
    );
    for _ in 0..5 {
        let (s, echo) = call(web_vip.clone(), WEB_WEST).await;
        assert_eq!(s, 200);
        assert_eq!(echo["headers"]["l5d-client-id"], gw_id.as_str());
    }
    assert_eq!(gateway_requests(m.gateway.metrics().await), before + 5.0);
}
