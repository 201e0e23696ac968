//! Opaque TCP forwarding through the proxy's L4 path (`tcp::proxy_to`): client → proxy →
//! echo server and back, over loopback, on one connection; `direct` is the same without the
//! proxy, for the added cost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use remora_benches::echo_server;
use remora_metrics::Registry;
use remora_metrics::tcp::{Direction, Peer, TcpLabels, TcpMetrics};
use remora_proxy::transport::tcp::{Connect, TcpCtx, proxy_to};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn forward(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut direct, mut client) = rt.block_on(async {
        let echo = echo_server().await;
        let mut registry = Registry::default();
        let ctx = TcpCtx {
            direction: Direction::Outbound,
            connect: Connect::within(Duration::from_secs(1)),
            idle_timeout: None,
            first_byte_timeout: None,
            metrics: TcpMetrics::register(&mut registry),
        };
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = proxy.accept().await {
                s.set_nodelay(true).unwrap();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let labels = TcpLabels::new(Direction::Outbound, Peer::Src);
                    proxy_to(&ctx, Box::new(s), echo, labels).await
                });
            }
        });
        let client = TcpStream::connect(proxy_addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        let direct = TcpStream::connect(echo).await.unwrap();
        direct.set_nodelay(true).unwrap();
        (direct, client)
    });

    let mut group = c.benchmark_group("forward");
    for size in [1024usize, 1024 * 1024] {
        let payload = vec![0x5au8; size];
        let mut back = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        for (name, conn) in [("direct", &mut direct), ("proxied", &mut client)] {
            group.bench_function(format!("{name}_echo_{size}B"), |b| {
                b.iter(|| rt.block_on(roundtrip(conn, &payload, &mut back)))
            });
        }
    }
    group.finish();
}

async fn roundtrip(conn: &mut TcpStream, payload: &[u8], back: &mut [u8]) {
    let (mut r, mut w) = conn.split();
    let (w, r) = tokio::join!(w.write_all(payload), r.read_exact(back));
    w.unwrap();
    r.unwrap();
}

criterion_group!(benches, forward);
criterion_main!(benches);
