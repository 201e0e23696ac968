//! `remora control` holds against one greedy client (W2.8): connections per client address are
//! capped for their whole life (not only while handshaking), and one connection's concurrent
//! streams are capped, while other clients are still served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use remora_tests::control::{ControlPlane, Pki};
use remora_tests::local::loopback;
use tokio::net::{TcpSocket, TcpStream};

const MAX_PER_PEER: usize = 64;
const MAX_STREAMS: usize = 1024;

/// A control plane on its own loopback address `at`.
async fn control(at: u8) -> (Pki, ControlPlane) {
    let pki = Pki::new();
    let mut cp = pki.control(
        "east",
        "east.example",
        SocketAddr::new(loopback(at), 8086),
        SocketAddr::new(loopback(at), 9990),
    );
    cp.start_in_process().await;
    (pki, cp)
}

/// A connection from `from` (a loopback address, so each test client is its own peer). On
/// loopback `remora control` speaks plaintext; elsewhere TLS, behind the same limits
/// (control/src/server.rs, `incoming`).
async fn connect(cp: &ControlPlane, from: std::net::IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(cp.addr).await
}

/// Whether the server answers an HTTP/2 request on `tcp` (a connection closed at accept
/// does not).
async fn alive(tcp: TcpStream) -> bool {
    let Ok((mut sender, conn)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let (_pki, cp) = control(60).await;
    let greedy = loopback(61);
    let mut held = Vec::new();
    for i in 0..MAX_PER_PEER {
        let tcp = connect(&cp, greedy).await;
        held.push(tcp.unwrap_or_else(|e| panic!("connection {i}: {e}")));
    }
    // Each is accepted and held (and so holds its slot) before the next test.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The next one from the same address is closed at accept (its handshake fails, or the
    // connection is dead at once).
    let over = match connect(&cp, greedy).await {
        Ok(tcp) => alive(tcp).await,
        Err(_) => false,
    };
    assert!(
        !over,
        "a connection past {MAX_PER_PEER} from one address was served"
    );
    // Another address is served.
    let other = connect(&cp, loopback(62)).await.expect("another peer");
    assert!(alive(other).await, "another peer was not served");
    // A slot freed is a slot again.
    held.pop();
    let mut again = false;
    for _ in 0..50 {
        if let Ok(tcp) = connect(&cp, greedy).await
            && alive(tcp).await
        {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again, "a freed slot was never reused");
}

#[tokio::test]
async fn one_connection_cannot_open_unbounded_watches() {
    let (_pki, cp) = control(65).await;
    let tcp = connect(&cp, loopback(63)).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let get = linkerd2_proxy_api::destination::GetDestination {
        scheme: "k8s".into(),
        path: "web.shop.svc.cluster.local:8080".into(),
        context_token: String::new(),
    };
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(get.encoded_len() as u32).to_be_bytes());
    get.encode(&mut frame).unwrap();
    let frame = Bytes::from(frame);
    // More watches than one connection may hold, all at once: each that the server accepts
    // answers its headers at once and stays open.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let mut open = Vec::new();
    for _ in 0..MAX_STREAMS + 100 {
        let mut sender = sender.clone();
        let (frame, tx) = (frame.clone(), tx.clone());
        open.push(tokio::spawn(async move {
            let req = hyper::Request::post("/io.linkerd.proxy.destination.Destination/Get")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(frame))
                .unwrap();
            if let Ok(rsp) = sender.send_request(req).await {
                let _ = tx.send(()).await;
                // Hold the watch open.
                let mut body = rsp.into_body();
                while let Some(Ok(_)) = body.frame().await {}
            }
        }));
    }
    drop(tx);
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Count answers until none has come for 3 s (the ones past the limit never get a slot).
    while let Ok(Some(())) = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + Duration::from_secs(3)),
        rx.recv(),
    )
    .await
    {
        answered += 1;
    }
    assert_eq!(answered, MAX_STREAMS, "watches answered on one connection");
    // Another client is still served.
    let other = connect(&cp, loopback(64)).await.expect("another peer");
    assert!(alive(other).await, "another peer was not served");
    for t in open {
        t.abort();
    }
}
