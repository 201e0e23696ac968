//! End-to-end L4 tests with real interception: A's app → A's outbound → B's inbound → B's app,
//! each pod a network namespace with `remora init` rules and a `remora proxy` as uid 2102.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::time::Duration;

use nix::sys::signal::Signal;
use remora_tests::apps::{echo, echo_roundtrip, read_pattern, reply_after_eof, write_pattern};
use remora_tests::{Net, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: u16 = 7000;
const REPLY: u16 = 7001;
const MIB: u64 = 1024 * 1024;

async fn byte_exact(v6: bool) {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    let a = net.pod("a").meshed().start().await;
    let target = if v6 { b.addr6(ECHO) } else { b.addr4(ECHO) };
    let mut total = 0;
    for len in [1, 64 * 1024, 100 * MIB] {
        let conn = a.connect(target).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(240), echo_roundtrip(conn, len))
            .await
            .expect("transfer finished")
            .unwrap();
        assert_eq!(echoed, len, "{len} bytes sent to {target}");
        total += len;
    }
    // The bytes really went through both proxies.
    let family = if v6 { "IPv6" } else { "IPv4" };
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.metrics().await.get(
                "tcp_write_bytes_total",
                &[("direction", "outbound"), ("peer", "dst")],
            ) == total as f64
        })
        .await,
        "A's outbound forwarded all {family} bytes"
    );
    assert_eq!(
        b.metrics().await.get(
            "tcp_read_bytes_total",
            &[("direction", "inbound"), ("peer", "src")]
        ),
        total as f64
    );
}

#[tokio::test]
async fn netns_byte_exact_ipv4() {
    byte_exact(false).await;
}

#[tokio::test]
async fn netns_byte_exact_ipv6() {
    byte_exact(true).await;
}

#[tokio::test]
async fn netns_half_close_keeps_the_other_direction() {
    let Some(net) = Net::new() else { return };
    let b = net
        .pod("b")
        .app(reply_after_eof(REPLY, MIB))
        .meshed()
        .start()
        .await;
    let a = net.pod("a").meshed().start().await;
    for target in [b.addr4(REPLY), b.addr6(REPLY)] {
        let conn = a.connect(target).await.unwrap();
        let (mut r, mut w) = conn.into_split();
        write_pattern(&mut w, 10 * 1024).await.unwrap();
        // The client is done writing; the reply only starts after the server sees this FIN.
        w.shutdown().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), read_pattern(&mut r))
            .await
            .expect("reply arrived")
            .unwrap();
        assert_eq!(got, MIB, "whole reply after half-close via {target}");
    }
}

#[tokio::test]
async fn netns_500_concurrent_connections() {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    let a = net.pod("a").meshed().start().await;
    let target = b.addr4(ECHO);
    let mut conns = Vec::new();
    for _ in 0..500 {
        conns.push(a.connect(target).await.expect("connect"));
    }
    // All 500 are open at once before any data moves.
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(echo_roundtrip(c, 4096)))
        .collect();
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(4096))) {
            ok += 1;
        }
    }
    assert_eq!(ok, 500);
    assert_eq!(b.app(0).accepted(), 500);
    let m = a.metrics().await;
    assert_eq!(
        m.get(
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "src")]
        ),
        500.0
    );
}

#[tokio::test]
async fn netns_metrics_count_connections_and_bytes() {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    let a = net.pod("a").meshed().start().await;
    let sizes = [1000u64, 5000, 70_000];
    for len in sizes {
        let conn = a.connect(b.addr4(ECHO)).await.unwrap();
        assert_eq!(echo_roundtrip(conn, len).await.unwrap(), len);
    }
    let total: u64 = sizes.iter().sum();
    let n = sizes.len() as f64;
    for (pod, dir) in [(&a, "outbound"), (&b, "inbound")] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                let m = pod.metrics().await;
                m.get("tcp_close_total", &[("direction", dir)]) == 2.0 * n
            })
            .await,
            "{dir} connections all closed"
        );
        let m = pod.metrics().await;
        for peer in ["src", "dst"] {
            let l = [("direction", dir), ("peer", peer)];
            assert_eq!(m.get("tcp_open_total", &l), n, "{dir} {peer} opened");
            assert_eq!(m.get("tcp_close_total", &l), n, "{dir} {peer} closed");
            assert_eq!(m.get("tcp_open_connections", &l), 0.0, "{dir} {peer} open");
            assert_eq!(
                m.get("tcp_read_bytes_total", &l),
                total as f64,
                "{dir} {peer} read"
            );
            assert_eq!(
                m.get("tcp_write_bytes_total", &l),
                total as f64,
                "{dir} {peer} written"
            );
        }
        let other = if dir == "inbound" {
            "outbound"
        } else {
            "inbound"
        };
        assert_eq!(m.get("tcp_open_total", &[("direction", other)]), 0.0);
    }
}

#[tokio::test]
async fn netns_inbound_is_not_an_open_relay() {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    // C owns 10.213.0.250 and would echo; A routes that address through B.
    let c = net.pod("c").app(echo(ECHO)).start().await;
    c.ip(&["addr", "add", "10.213.0.250/32", "dev", "eth0"]);
    let a = net.pod("a").start().await;
    a.ip(&[
        "route",
        "add",
        "10.213.0.250/32",
        "via",
        &b.ip4().to_string(),
    ]);

    let outcome = async {
        let mut conn = a.connect("10.213.0.250:7000".parse().unwrap()).await?;
        conn.write_all(b"relay me").await?;
        let mut buf = [0u8; 8];
        conn.read(&mut buf).await
    };
    match tokio::time::timeout(Duration::from_secs(20), outcome).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("B relayed to a foreign address: {other:?}"),
    }
    assert_eq!(c.app(0).accepted(), 0, "C must never see the connection");
    assert_eq!(b.app(0).accepted(), 0);
    let m = b.metrics().await;
    assert_eq!(
        m.get(
            "tcp_refused_total",
            &[("direction", "inbound"), ("reason", "not_local")]
        ),
        1.0
    );
    assert!(
        b.proxy()
            .wait_log("not one of this pod's addresses", Duration::from_secs(10))
            .await
    );
}

/// Writes `chunks` × 64 KiB with a pause between chunks and reads the echo concurrently.
async fn slow_echo(
    conn: tokio::net::TcpStream,
    chunks: u64,
    pause: Duration,
) -> std::io::Result<u64> {
    let (mut r, mut w) = conn.into_split();
    let writer = async move {
        let chunk = 64 * 1024u64;
        let mut buf = vec![0u8; chunk as usize];
        for i in 0..chunks {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = remora_tests::apps::pattern_byte(i * chunk + j as u64);
            }
            w.write_all(&buf).await?;
            tokio::time::sleep(pause).await;
        }
        w.shutdown().await
    };
    let (wrote, read) = tokio::join!(writer, read_pattern(&mut r));
    wrote?;
    read
}

#[tokio::test]
async fn netns_graceful_shutdown_finishes_in_flight_and_refuses_new() {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    let mut a = net.pod("a").meshed().start().await;
    let conn = a.connect(b.addr4(ECHO)).await.unwrap();
    // About 4 s of transfer: 80 chunks of 64 KiB, 50 ms apart.
    let transfer = tokio::spawn(slow_echo(conn, 80, Duration::from_millis(50)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.proxy().signal(Signal::SIGTERM);
    assert!(
        a.proxy()
            .wait_log("draining", Duration::from_secs(10))
            .await,
        "proxy started draining:\n{}",
        a.proxy().log()
    );
    assert!(
        !transfer.is_finished(),
        "the transfer is still in flight while draining"
    );
    // New connections are refused: nothing listens on the outbound port any more.
    let err = a
        .connect(b.addr4(ECHO))
        .await
        .expect_err("connect after SIGTERM");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let echoed = tokio::time::timeout(Duration::from_secs(60), transfer)
        .await
        .expect("transfer completes")
        .unwrap()
        .unwrap();
    assert_eq!(echoed, 80 * 64 * 1024);
    let status = a
        .proxy_mut()
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("proxy exits after draining");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn netns_grace_period_closes_what_remains() {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    let mut a = net
        .pod("a")
        .meshed()
        .env("REMORA_SHUTDOWN_GRACE", "1s")
        .start()
        .await;
    let mut conn = a.connect(b.addr4(ECHO)).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    a.proxy().signal(Signal::SIGTERM);
    let status = a
        .proxy_mut()
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("proxy exits after the grace period");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        a.proxy()
            .wait_log("grace period over", Duration::from_secs(10))
            .await
    );
    // The idle connection was closed when the proxy exited.
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}

#[tokio::test]
async fn netns_admin_shutdown_only_from_loopback() {
    let Some(net) = Net::new() else { return };
    let mut b = net
        .pod("b")
        .meshed()
        .env("REMORA_ADMIN_ADDR", "0.0.0.0:4191")
        .start()
        .await;
    let a = net.pod("a").start().await;
    let conn = a.connect(b.addr4(4191)).await.unwrap();
    let (status, body) = remora_tests::admin::request(conn, "POST", "/shutdown")
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    // Reading or replacing the log filter is refused the same way; the filter stays.
    let conn = a.connect(b.addr4(4191)).await.unwrap();
    let (status, body) = remora_tests::admin::request(conn, "GET", "/log-level")
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let conn = a.connect(b.addr4(4191)).await.unwrap();
    let (status, body) =
        remora_tests::admin::request_with_body(conn, "PUT", "/log-level", b"trace")
            .await
            .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = b.admin("GET", "/log-level").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("trace"), "{body}");
    // Probes still work from outside.
    let conn = a.connect(b.addr4(4191)).await.unwrap();
    assert_eq!(
        remora_tests::admin::request(conn, "GET", "/ready")
            .await
            .unwrap()
            .0,
        200
    );
    let (status, _) = b.admin("POST", "/shutdown").await.unwrap();
    assert_eq!(status, 200);
    let exit = b.proxy_mut().wait_exit(Duration::from_secs(20)).await;
    assert!(exit.expect("proxy exits").success());
}

#[tokio::test]
async fn netns_connection_limit_refuses_and_counts() {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    let a = net
        .pod("a")
        .meshed()
        .env("REMORA_OUTBOUND_MAX_CONNECTIONS", "3")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = a.connect(b.addr4(ECHO)).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await.unwrap();
        held.push(c);
    }
    let mut extra = a.connect(b.addr4(ECHO)).await.unwrap();
    let _ = extra.write_all(b"x").await;
    let mut one = [0u8; 1];
    let res = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut one)).await;
    assert!(
        matches!(res, Ok(Ok(0)) | Ok(Err(_))),
        "fourth connection refused: {res:?}"
    );
    let m = a.metrics().await;
    assert_eq!(
        m.get(
            "tcp_refused_total",
            &[("direction", "outbound"), ("reason", "connection_limit")]
        ),
        1.0
    );
    drop(held.pop());
    // Once one closes, a new connection is served again.
    assert!(
        eventually(Duration::from_secs(10), || async {
            match a.connect(b.addr4(ECHO)).await {
                Ok(c) => matches!(echo_roundtrip(c, 10).await, Ok(10)),
                Err(_) => false,
            }
        })
        .await
    );
}

#[tokio::test]
async fn netns_idle_timeout_closes_idle_connections() {
    let Some(net) = Net::new() else { return };
    let b = net.pod("b").app(echo(ECHO)).meshed().start().await;
    let a = net
        .pod("a")
        .meshed()
        .env("REMORA_TCP_IDLE_TIMEOUT", "1s")
        .start()
        .await;
    let mut conn = a.connect(b.addr4(ECHO)).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(15), conn.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(
        a.proxy()
            .wait_log("closing idle connection", Duration::from_secs(10))
            .await
    );
}

#[tokio::test]
async fn netns_connect_timeout_is_a_clear_error() {
    let Some(net) = Net::new() else { return };
    let a = net
        .pod("a")
        .meshed()
        .env("REMORA_CONNECT_TIMEOUT", "300ms")
        .start()
        .await;
    // Nobody answers ARP for .99, so the connect can only time out.
    let mut conn = a
        .connect("10.213.0.99:7000".parse().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let res = tokio::time::timeout(Duration::from_secs(15), conn.read(&mut buf)).await;
    assert!(matches!(res, Ok(Ok(0)) | Ok(Err(_))), "{res:?}");
    assert!(
        a.proxy()
            .wait_log(
                "connect to 10.213.0.99:7000 timed out after 300ms",
                Duration::from_secs(10)
            )
            .await,
        "{}",
        a.proxy().log()
    );
    let m = a.metrics().await;
    assert_eq!(
        m.get(
            "tcp_refused_total",
            &[("direction", "outbound"), ("reason", "connect_failed")]
        ),
        1.0
    );
}
