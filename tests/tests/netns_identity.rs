//! Certificate rotation under mTLS traffic, with the control plane in a pod of its own (so
//! proxies reach it over TLS, verifying its identity): handshakes pick up each new certificate
//! and established connections are untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use remora_tests::apps::{echo, echo_roundtrip};
use remora_tests::control::Pki;
use remora_tests::services::Service;
use remora_tests::{Net, Pod};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: u16 = 7000;

async fn expiry(pod: &Pod) -> u64 {
    pod.metrics()
        .await
        .get("identity_cert_expiration_timestamp_seconds", &[]) as u64
}

#[tokio::test]
async fn netns_certificates_rotate_under_traffic() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let cp_pod = net.pod("control").start().await;
    let mut cp = pki
        .control(
            "east",
            "east.example",
            cp_pod.addr4(8086),
            "127.0.0.1:9990".parse().unwrap(),
        )
        .cert_lifetime("30s")
        .in_netns(&cp_pod.ns);
    cp.start().await;
    let b = net
        .pod("b")
        .app(echo(ECHO))
        .control_plane(&cp, "echo", "shop")
        .meshed()
        .start()
        .await;
    let a = net
        .pod("a")
        .control_plane(&cp, "web", "shop")
        .meshed()
        .start()
        .await;
    // Discovery gives B's identity, so every connection is mTLS.
    cp.set_services(&[Service::new("echo", "shop").port(ECHO).endpoint(&b, "echo")]);
    assert!(
        cp.process()
            .wait_log("config reloaded", Duration::from_secs(15))
            .await
    );

    // Traffic: a new connection every 100 ms, and one long-lived connection pinged twice a
    // second, all through both proxies.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let target = b.addr4(ECHO);
    let mut long = a.connect(target).await.unwrap();
    let ns = a.ns.clone();
    let traffic = {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match remora_tests::apps::connect_in(&ns, target).await {
                    Ok(c) => matches!(echo_roundtrip(c, 1024).await, Ok(1024)),
                    Err(_) => false,
                };
                let counter = if ok { &done } else { &failures };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let pinger = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 4];
            let mut pings = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ok = long.write_all(b"ping").await.is_ok()
                    && long.read_exact(&mut buf).await.is_ok()
                    && &buf == b"ping";
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                pings += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            pings
        })
    };

    // Each renewal moves the expiry forward; wait for three renewals on both sides.
    let mut seen_a = BTreeSet::new();
    let mut seen_b = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while (seen_a.len() < 4 || seen_b.len() < 4) && tokio::time::Instant::now() < deadline {
        seen_a.insert(expiry(&a).await);
        seen_b.insert(expiry(&b).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let pings = pinger.await.unwrap();
    seen_a.remove(&0);
    seen_b.remove(&0);
    assert!(
        seen_a.len() >= 4,
        "A renewed 3 times: expiries {seen_a:?}\n{}",
        a.proxy().log()
    );
    assert!(seen_b.len() >= 4, "B renewed 3 times: expiries {seen_b:?}");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no failed connection during rotation"
    );
    assert!(done.load(Ordering::Relaxed) > 100, "traffic flowed");
    assert!(
        pings > 100,
        "the long-lived connection stayed up: {pings} pings"
    );
    let renewals = a
        .metrics()
        .await
        .get("identity_cert_renewals_total", &[("result", "success")]);
    assert!(renewals >= 4.0);
    // The control plane served TLS with its own identity (proxies verified it to get here).
    assert!(cp.process().log().contains("tls=true"));
    // All that traffic was mutual TLS, and none was plaintext.
    let m = a.metrics().await;
    let mtls = m.get(
        "tcp_open_total",
        &[("direction", "outbound"), ("peer", "dst"), ("tls", "true")],
    );
    assert!(mtls > 100.0, "{mtls} mTLS connections:\n{}", m.text);
    assert_eq!(
        m.get(
            "tcp_open_total",
            &[("direction", "outbound"), ("tls", "no_identity")]
        ),
        0.0
    );
}
