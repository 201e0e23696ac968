//! Greedy peers (W2.8 item 3): one client address cannot take what the others need.
//!
//! - In-flight requests: a peer opening many HTTP/2 streams the app answers slowly gets only
//!   its share of `REMORA_INBOUND_MAX_IN_FLIGHT` (the rest answered 503 at once, counted as
//!   `peer_in_flight_limit`), and another client is still answered promptly; two greedy peers
//!   together fill the proxy's cap (`in_flight_limit`), and their streams' permits come back
//!   when they go away.
//! - Connections: a peer opening silent connections gets only its share of
//!   `REMORA_INBOUND_MAX_CONNECTIONS` (`peer_connection_limit`), another client still connects
//!   and is served, and the silent ones are closed after `REMORA_INBOUND_FIRST_BYTE_TIMEOUT`
//!   (`first_byte_timeout`).
//!
//! Each check prints one `greedy-peer: ...` line. `REMORA_GREEDY_PEER_PROXY=<path>` runs the
//! server pod's proxy as that program (a script running an earlier commit's `remora proxy`):
//! both tests fail against `c49b206`, which has none of these limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use http::StatusCode;
use remora_tests::apps::{connect_in, echo, test_server};
use remora_tests::http::{get, http1, http2, send1, send2};
use remora_tests::{Net, Pod, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HTTP: u16 = 8080;
const ECHO: u16 = 7000;
/// The inbound's cap in the tests: a peer's share (0.5) is 8.
const MAX_IN_FLIGHT: usize = 16;
const SHARE: usize = MAX_IN_FLIGHT / 2;
/// More streams than a share.
const STREAMS: usize = 30;
/// Well within what a test waits, far beyond a prompt answer.
const PROMPT: Duration = Duration::from_secs(3);

/// The server pod, its proxy from `REMORA_GREEDY_PEER_PROXY` when set.
fn server_pod(net: &Net) -> remora_tests::net::PodBuilder {
    let pod = net.pod("server");
    match std::env::var_os("REMORA_GREEDY_PEER_PROXY") {
        Some(path) => pod.proxy_program(path.into()),
        None => pod,
    }
}

/// Opens `STREAMS` streams from `pod` on one HTTP/2 connection to a slow path; returns the
/// statuses answered within `PROMPT` (the rest are still pending at the app) and the
/// connection, whose drop resets the pending streams.
async fn flood(
    pod: &Pod,
    addr: std::net::SocketAddr,
) -> (Vec<StatusCode>, Vec<tokio::task::JoinHandle<()>>) {
    let sender = http2(&pod.ns, addr).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(STREAMS);
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let (mut sender, tx) = (sender.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            if let Ok(r) = send2(&mut sender, get("web", "/delay/120000")).await {
                let _ = tx.send(r.status).await;
            }
        }));
    }
    drop((tx, sender));
    let mut answered = Vec::new();
    let deadline = tokio::time::Instant::now() + PROMPT;
    while let Ok(Some(status)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        answered.push(status);
    }
    (answered, tasks)
}

/// One prompt `GET /echo` from `pod` on a new HTTP/1.1 connection: its status and how long it took.
async fn prompt_get(pod: &Pod, addr: std::net::SocketAddr) -> (StatusCode, Duration) {
    let start = Instant::now();
    let mut sender = tokio::time::timeout(PROMPT, http1(&pod.ns, addr))
        .await
        .expect("connected promptly");
    let r = tokio::time::timeout(PROMPT, send1(&mut sender, get("web", "/echo")))
        .await
        .expect("answered promptly")
        .expect("a response");
    (r.status, start.elapsed())
}

#[tokio::test]
async fn netns_greedy_peer_gets_its_share_of_in_flight_requests_and_others_are_served() {
    let Some(net) = Net::new() else { return };
    let server = server_pod(&net)
        .app(test_server(HTTP, "server"))
        .meshed()
        .env("REMORA_INBOUND_MAX_IN_FLIGHT", &MAX_IN_FLIGHT.to_string())
        .env("REMORA_INBOUND_PEER_CONNECTION_SHARE", "0.5")
        .start()
        .await;
    let greedy = net.pod("greedy").start().await;
    let greedy2 = net.pod("greedy2").start().await;
    let other = net.pod("other").start().await;
    let addr = server.addr4(HTTP);
    let logs = || format!("--- server proxy ---\n{}", server.proxy().log());
    let (status, _) = prompt_get(&other, addr).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "served before the flood\n{}",
        logs()
    );

    // One greedy peer: its share reaches the app, the rest is answered 503 at once.
    let (answered, tasks) = flood(&greedy, addr).await;
    println!(
        "greedy-peer: one peer, {STREAMS} slow streams: {} answered at once ({:?})",
        answered.len(),
        answered.first()
    );
    assert_eq!(answered.len(), STREAMS - SHARE, "{answered:?}\n{}", logs());
    assert!(
        answered
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answered:?}"
    );
    let (status, took) = prompt_get(&other, addr).await;
    println!("greedy-peer: another client meanwhile: {status} in {took:?}");
    assert_eq!(status, StatusCode::OK, "{}", logs());
    let m = server.metrics().await;
    let peer_refused = m.get(
        "http_proxy_errors_total",
        &[("direction", "inbound"), ("reason", "peer_in_flight_limit")],
    );
    assert_eq!(peer_refused, (STREAMS - SHARE) as f64, "{}", m.text);

    // A second greedy peer fills the proxy's cap: now everyone waits for a permit...
    let (answered2, tasks2) = flood(&greedy2, addr).await;
    assert_eq!(
        answered2.len(),
        STREAMS - SHARE,
        "{answered2:?}\n{}",
        logs()
    );
    let (status, _) = prompt_get(&other, addr).await;
    println!("greedy-peer: two greedy peers hold the cap: another client gets {status}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", logs());
    // Once the cap is full, refusals count as the cap's (checked first), not the share's.
    let m = server.metrics().await;
    let [at_cap, at_share] = ["in_flight_limit", "peer_in_flight_limit"].map(|reason| {
        m.get(
            "http_proxy_errors_total",
            &[("direction", "inbound"), ("reason", reason)],
        )
    });
    assert!(at_cap >= 1.0, "{}", m.text);
    assert_eq!(
        at_cap + at_share,
        (2 * (STREAMS - SHARE) + 1) as f64,
        "{}",
        m.text
    );

    // ...until one goes away: its reset streams give their permits back.
    for t in tasks {
        t.abort();
    }
    let freed = eventually(Duration::from_secs(20), || async {
        prompt_get(&other, addr).await.0 == StatusCode::OK
    })
    .await;
    assert!(
        freed,
        "permits came back when the streams went away\n{}",
        logs()
    );
    for t in tasks2 {
        t.abort();
    }
}

#[tokio::test]
async fn netns_greedy_peer_gets_its_share_of_connections_and_silent_ones_are_closed() {
    let Some(net) = Net::new() else { return };
    let server = server_pod(&net)
        .app(echo(ECHO))
        .meshed()
        .env("REMORA_INBOUND_MAX_CONNECTIONS", "10")
        .env("REMORA_INBOUND_PEER_CONNECTION_SHARE", "0.5")
        .env("REMORA_INBOUND_DETECT_TIMEOUT", "1s")
        .env("REMORA_INBOUND_FIRST_BYTE_TIMEOUT", "2s")
        .start()
        .await;
    let greedy = net.pod("greedy").start().await;
    let other = net.pod("other").start().await;
    let addr = server.addr4(ECHO);
    let logs = || format!("--- server proxy ---\n{}", server.proxy().log());

    // The greedy peer opens as many silent connections as the whole limit.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(connect_in(&greedy.ns, addr).await.expect("connect"));
    }
    let refused = eventually(Duration::from_secs(10), || async {
        server.metrics().await.get(
            "tcp_refused_total",
            &[
                ("direction", "inbound"),
                ("reason", "peer_connection_limit"),
            ],
        ) == 5.0
    })
    .await;
    assert!(
        refused,
        "half of them refused\n{}\n{}",
        server.metrics().await.text,
        logs()
    );

    // Another peer still gets in and is served promptly.
    let start = Instant::now();
    let mut conn = connect_in(&other.ns, addr).await.expect("connect");
    conn.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(PROMPT, conn.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("echoed promptly\n{}", logs()))
        .unwrap();
    assert_eq!(&buf, b"hello");
    println!(
        "greedy-peer: 10 silent connections from one peer, limit 10: another client served in {:?}",
        start.elapsed()
    );

    // Every silent connection is closed: the refused ones at once, the others after detection
    // (1 s) and the first-byte timeout (2 s).
    let start = Instant::now();
    for (i, c) in idle.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(20), c.read(&mut b)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "silent connection {i} closed: {closed:?}\n{}",
            logs()
        );
    }
    println!(
        "greedy-peer: the silent connections closed within {:?}",
        start.elapsed()
    );
    let m = server.metrics().await;
    assert_eq!(
        m.get(
            "tcp_refused_total",
            &[("direction", "inbound"), ("reason", "first_byte_timeout")],
        ),
        5.0,
        "{}",
        m.text
    );
    // The other client's connection moved bytes: still open.
    conn.write_all(b"again").await.unwrap();
    tokio::time::timeout(PROMPT, conn.read_exact(&mut buf))
        .await
        .expect("still served")
        .unwrap();
    assert_eq!(&buf, b"again");
}
