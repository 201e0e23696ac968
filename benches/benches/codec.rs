//! The per-connection parsers: the transport header (encode, decode), a ClientHello's SNI
//! (`tls_detect::detect` on a real rustls ClientHello), and HTTP protocol detection (an
//! HTTP/1 request head, the HTTP/2 preface).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use remora_proxy::transport::header::{SessionProtocol, TransportHeader};

/// The bytes a rustls client sends first (a TLS 1.3 ClientHello) for `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let (issuer, anchors) = remora_benches::pki::mesh();
    let key = remora_benches::pki::certify(
        &issuer,
        "web.shop.serviceaccount.identity.linkerd.east.example",
    );
    let configs = remora_identity::tls::configs(&key, &anchors, &[b"transport.l5d.io/v1"]).unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::clone(&configs.client_alpn), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let header = TransportHeader {
        port: 8080,
        name: Some("web.shop.svc.cluster.local".into()),
        protocol: Some(SessionProtocol::Http2),
    };
    let encoded = header.encode();
    group.bench_function("transport_header_encode", |b| {
        b.iter(|| black_box(&header).encode())
    });
    group.bench_function("transport_header_decode", |b| {
        b.iter(|| TransportHeader::decode(black_box(&encoded)).unwrap())
    });
    let hello = client_hello("web.shop.serviceaccount.identity.linkerd.east.example");
    group.bench_function(format!("client_hello_sni_{}B", hello.len()), |b| {
        b.iter(|| remora_proxy::tls::detect::detect(black_box(&hello)))
    });
    let request = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: web.shop.svc.cluster.local:8080\r\n\
        User-Agent: bench/1.0\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\n\r\n";
    group.bench_function("detect_http1_request", |b| {
        b.iter(|| remora_proxy::http::detect::detect(black_box(request)))
    });
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    group.bench_function("detect_http2_preface", |b| {
        b.iter(|| remora_proxy::http::detect::detect(black_box(preface)))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
