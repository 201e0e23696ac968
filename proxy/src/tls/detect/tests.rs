use std::sync::Arc;

use proptest::prelude::*;
use rustls::pki_types::ServerName;

use super::*;

/// A real ClientHello, as rustls sends it, for `sni` (an IP literal sends no SNI).
fn rustls_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(sni.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

#[test]
fn reads_the_sni_of_a_real_client_hello() {
    let hello = rustls_hello("web.shop.serviceaccount.identity.linkerd.east.example");
    assert_eq!(
        detect(&hello),
        Detected::ClientHello {
            sni: Some("web.shop.serviceaccount.identity.linkerd.east.example".into())
        }
    );
    // Every strict prefix needs more.
    for cut in 1..hello.len() {
        assert_eq!(detect(&hello[..cut]), Detected::NeedMore, "cut at {cut}");
    }
    assert_eq!(
        detect(&rustls_hello("10.0.0.1")),
        Detected::ClientHello { sni: None }
    );
}

#[test]
fn plaintext_is_not_tls() {
    for p in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"PRI * HTTP/2.0",
        b"\x00",
        b"hello",
        b"\x16\x01",
    ] {
        assert_eq!(detect(p), Detected::NotTls, "{p:?}");
    }
    assert_eq!(detect(b""), Detected::NeedMore);
}

#[test]
fn a_client_hello_split_across_records_is_unreadable() {
    let hello = rustls_hello("a.example");
    // Re-frame the handshake message into two records.
    let body = &hello[5..];
    let (first, second) = body.split_at(body.len() / 2);
    let mut split = vec![22, 3, 1];
    split.extend_from_slice(&(first.len() as u16).to_be_bytes());
    split.extend_from_slice(first);
    split.extend_from_slice(&[22, 3, 1]);
    split.extend_from_slice(&(second.len() as u16).to_be_bytes());
    split.extend_from_slice(second);
    assert_eq!(detect(&split), Detected::TlsUnreadable);
}

#[test]
fn oversized_and_malformed_records_are_unreadable() {
    assert_eq!(detect(&[22, 3, 1, 0x40, 0x00]), Detected::TlsUnreadable);
    assert_eq!(detect(&[22, 3, 1, 0, 0]), Detected::TlsUnreadable);
    // A record that is not a ClientHello (a ServerHello).
    assert_eq!(
        detect(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
        Detected::TlsUnreadable
    );
    // A ClientHello whose body is garbage.
    let mut junk = vec![22, 3, 1, 0, 10, 1, 0, 0, 6];
    junk.extend_from_slice(&[0xff; 6]);
    assert_eq!(detect(&junk), Detected::TlsUnreadable);
}

proptest! {
    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = detect(&bytes);
        let mut tls = vec![22u8, 3, 1];
        tls.extend_from_slice(&bytes);
        let _ = detect(&tls);
    }

    #[test]
    fn finds_any_sni(labels in prop::collection::vec("[a-z][a-z0-9-]{0,12}[a-z0-9]", 1..5)) {
        let name = labels.join(".");
        let hello = rustls_hello(&name);
        prop_assert_eq!(detect(&hello), Detected::ClientHello { sni: Some(name) });
    }

    #[test]
    fn decisions_are_stable_as_bytes_arrive(flip in 0usize..400, bit in 0u8..8, extra in prop::collection::vec(any::<u8>(), 0..40)) {
        let mut hello = rustls_hello("y.example");
        let i = flip % hello.len();
        hello[i] ^= 1 << bit;
        hello.extend_from_slice(&extra);
        let full = detect(&hello);
        for cut in 0..hello.len() {
            let partial = detect(&hello[..cut]);
            if partial != Detected::NeedMore {
                prop_assert_eq!(partial, full.clone(), "decided at {}", cut);
            }
        }
    }

    #[test]
    fn mutations_never_panic(flip in 0usize..400, bit in 0u8..8) {
        let mut hello = rustls_hello("x.example");
        let i = flip % hello.len();
        hello[i] ^= 1 << bit;
        let _ = detect(&hello);
    }
}

#[tokio::test]
async fn a_post_quantum_client_hello_in_three_segments_is_read_whole() {
    use tokio::io::AsyncWriteExt;
    // The mesh's own ClientHello: an X25519MLKEM768 key share (1 216 bytes) and an X25519 one.
    let config = rustls::ClientConfig::builder_with_provider(remora_identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let sni = "web.shop.serviceaccount.identity.linkerd.east.example";
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(sni).unwrap())
            .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 1200, "{} bytes", hello.len());
    let (mut client, mut server) = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map(|l| async move {
            let addr = l.local_addr().unwrap();
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            (c, s)
        })
        .unwrap()
        .await;
    client.set_nodelay(true).unwrap();
    let third = hello.len() / 3;
    let pieces = [
        &hello[..third],
        &hello[third..2 * third],
        &hello[2 * third..],
    ];
    let writer = async {
        for p in pieces {
            client.write_all(p).await.unwrap();
            client.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let reader = crate::transport::io::read_prefix(
        &mut server,
        MAX_DETECT,
        std::time::Duration::from_secs(5),
        |buf| detect(buf) != Detected::NeedMore,
    );
    let ((), prefix) = tokio::join!(writer, reader);
    let prefix = prefix.unwrap();
    assert_eq!(
        detect(&prefix),
        Detected::ClientHello {
            sni: Some(sni.into())
        }
    );
    assert_eq!(&prefix[..], &hello[..]);
}

#[test]
fn a_record_too_short_for_a_handshake_header_is_unreadable_not_a_panic() {
    // Found by fuzzing (fuzz/corpus/client_hello/crash-short-record): a record of 1 to 3
    // bytes, read whole, was indexed as if it held the 4-byte handshake header.
    for len in 1..4u8 {
        let mut buf = vec![22, 3, 1, 0, len, 1];
        buf.resize(5 + usize::from(len), 0);
        assert_eq!(detect(&buf), Detected::TlsUnreadable, "record of {len}");
    }
    let found = [22, 3, 3, 0, 3, 1, 0, 193];
    assert_eq!(detect(&found), Detected::TlsUnreadable);
}
