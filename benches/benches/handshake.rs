//! An mTLS handshake as between two proxies: TLS 1.3, P-256 certificates from a mesh issuer,
//! client certificate, ALPN `transport.l5d.io/v1`, identities verified against the trust
//! anchors; in memory (no sockets), both sides driven to completion.
//!
//! With `REMORA_BENCH_HANDSHAKES=<n>` it runs `n` handshakes and exits instead, for counting
//! instructions under valgrind (BENCHMARKS.md): the difference between two counts divided by
//! the difference in `n` is one handshake, free of the machine's noise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

type Configs = (
    remora_identity::tls::TlsConfigs,
    remora_identity::tls::TlsConfigs,
    ServerName<'static>,
);

fn configs() -> Configs {
    let (issuer, anchors) = remora_benches::pki::mesh();
    let server_id = "web.shop.serviceaccount.identity.linkerd.east.example";
    let client = remora_benches::pki::certify(
        &issuer,
        "client.shop.serviceaccount.identity.linkerd.east.example",
    );
    let server = remora_benches::pki::certify(&issuer, server_id);
    let alpn: &[&[u8]] = &[b"transport.l5d.io/v1"];
    let client = remora_identity::tls::configs(&client, &anchors, alpn).unwrap();
    let server = remora_identity::tls::configs(&server, &anchors, alpn).unwrap();
    let name = ServerName::try_from(server_id.to_string()).unwrap();
    (client, server, name)
}

/// One handshake, both sides to completion.
fn one((client, server, name): &Configs) {
    let mut cli = ClientConnection::new(Arc::clone(&client.client_alpn), name.clone()).unwrap();
    let mut srv = ServerConnection::new(Arc::clone(&server.server)).unwrap();
    let mut buf = Vec::with_capacity(8192);
    for _ in 0..10 {
        if !cli.is_handshaking() && !srv.is_handshaking() {
            break;
        }
        buf.clear();
        while cli.wants_write() {
            cli.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            srv.read_tls(&mut rd).unwrap();
        }
        srv.process_new_packets().unwrap();
        buf.clear();
        while srv.wants_write() {
            srv.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            cli.read_tls(&mut rd).unwrap();
        }
        cli.process_new_packets().unwrap();
    }
    assert!(!cli.is_handshaking() && !srv.is_handshaking());
    assert!(
        srv.peer_certificates().is_some(),
        "the client presented its certificate"
    );
}

fn handshake(c: &mut Criterion) {
    let configs = configs();
    let mut group = c.benchmark_group("tls");
    group.bench_function("mtls_handshake_tls13_p256", |b| b.iter(|| one(&configs)));
    group.finish();
}

criterion_group!(benches, handshake);

fn main() {
    if let Some(n) = std::env::var("REMORA_BENCH_HANDSHAKES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
    {
        let configs = configs();
        for _ in 0..n {
            one(&configs);
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
