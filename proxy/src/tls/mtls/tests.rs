//! `dial` and `accept` against each other and against hand-made servers on loopback: which
//! endpoints get mTLS, that each side learns the other's identity, that a wrong or untrusted
//! identity is refused before any byte is sent, and the transport header of opaque transport.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use remora_identity::certs::{Ca, csr, generate_key, key_der};
use remora_identity::tls::{CertifiedKey, configs};
use remora_identity::{Name, TrustAnchors};
use remora_metrics::labels::DstLabels;
use rustls::pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::*;
use crate::discovery::{Endpoint, Hint};
use crate::transport::orig_dst::LocalIps;

const WEB: &str = "web.shop.serviceaccount.identity.linkerd.cluster.local";
const CLIENT: &str = "client.shop.serviceaccount.identity.linkerd.cluster.local";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A root, an issuer under it, and the root as trust anchors.
fn mesh() -> (Ca, TrustAnchors) {
    let root = Ca::new_root("test root", Duration::from_secs(3600)).unwrap();
    let issuer = root
        .new_intermediate("identity.linkerd.cluster.local", Duration::from_secs(3600))
        .unwrap();
    (
        issuer,
        TrustAnchors::from_der(vec![root.cert.clone()]).unwrap(),
    )
}

fn creds(ca: &Ca, anchors: &TrustAnchors, name: &str) -> Arc<Creds> {
    let name: Name = name.parse().unwrap();
    let key = generate_key().unwrap();
    let issued = ca
        .issue(&csr(&key, &name).unwrap(), &name, Duration::from_secs(600))
        .unwrap();
    let mut chain = vec![issued.leaf];
    chain.extend(issued.intermediates);
    let certified = CertifiedKey {
        name: name.clone(),
        chain,
        key: Arc::new(PrivateKeyDer::Pkcs8(key_der(&key))),
        expiry: issued.valid_until,
    };
    Arc::new(Creds {
        tls: configs(&certified, anchors, &[header::ALPN]).unwrap(),
        name,
        expiry: SystemTime::now() + Duration::from_secs(600),
        anchors: anchors.clone(),
    })
}

fn local(creds: Option<Arc<Creds>>) -> (LocalTls, watch::Sender<Option<Arc<Creds>>>) {
    let (tx, rx) = watch::channel(creds);
    (LocalTls::new(Some(rx)), tx)
}

fn endpoint(addr: SocketAddr, identity: Option<&str>, transport: Option<u16>) -> Endpoint {
    let identity: Option<Name> = identity.map(|i| i.parse().unwrap());
    Endpoint {
        addr,
        weight: 1,
        server_id: identity.as_ref().map(|i| Arc::from(i.as_str())),
        identity,
        server_name: None,
        hint: Hint::H2,
        opaque_transport_port: transport,
        authority_override: None,
        labels: BTreeMap::new(),
        dst_labels: Arc::new(DstLabels::new(std::iter::empty())),
    }
}

/// A listener on 127.0.0.2, which is not one of this host's interface addresses, so the
/// proxy treats it as another pod.
async fn peer() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Accepts one mTLS connection as `server` and reports the client's identity, whether it
/// negotiated the transport ALPN, and the first bytes it sent.
fn serve_once(
    l: TcpListener,
    server: Arc<Creds>,
) -> tokio::task::JoinHandle<(Option<Name>, bool, Vec<u8>)> {
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let mut accepted = accept(tcp, &server, TIMEOUT).await.unwrap();
        let mut buf = vec![0; 64];
        let n = accepted.io.read(&mut buf).await.unwrap();
        buf.truncate(n);
        let _ = accepted.io.write_all(b"pong").await;
        (accepted.client_id, accepted.transport, buf)
    })
}

#[tokio::test]
async fn an_endpoint_without_an_identity_is_dialled_in_plaintext() {
    let (ca, anchors) = mesh();
    let (tls, _tx) = local(Some(creds(&ca, &anchors, CLIENT)));
    let (l, addr) = peer().await;
    let ep = endpoint(addr, None, None);
    let target = DialTarget {
        addr,
        endpoint: Some(&ep),
        protocol: None,
    };
    let d = dial(target, &tls, &LocalIps::new(), Connect::within(TIMEOUT))
        .await
        .unwrap();
    assert_eq!(d.tls, Tls::NoIdentity(no_tls::NOT_PROVIDED_BY_DISCOVERY));
    assert!(d.server_id.is_none());
    drop(l);
}

#[tokio::test]
async fn a_proxy_without_an_identity_dials_plaintext_even_to_meshed_endpoints() {
    let (l, addr) = peer().await;
    let ep = endpoint(addr, Some(WEB), None);
    let target = DialTarget {
        addr,
        endpoint: Some(&ep),
        protocol: None,
    };
    let d = dial(
        target,
        &LocalTls::new(None),
        &LocalIps::new(),
        Connect::within(TIMEOUT),
    )
    .await
    .unwrap();
    assert_eq!(d.tls, Tls::NoIdentity(no_tls::LOCAL_IDENTITY_DISABLED));
    drop(l);
}

#[tokio::test]
async fn a_meshed_endpoint_gets_mtls_and_each_side_learns_the_other() {
    let (ca, anchors) = mesh();
    let (tls, _tx) = local(Some(creds(&ca, &anchors, CLIENT)));
    let (l, addr) = peer().await;
    let server = serve_once(l, creds(&ca, &anchors, WEB));
    let ep = endpoint(addr, Some(WEB), None);
    let target = DialTarget {
        addr,
        endpoint: Some(&ep),
        protocol: None,
    };
    let mut d = dial(target, &tls, &LocalIps::new(), Connect::within(TIMEOUT))
        .await
        .unwrap();
    assert_eq!(d.tls, Tls::Established);
    assert_eq!(d.server_id.as_deref(), Some(WEB));
    d.io.write_all(b"ping").await.unwrap();
    let mut pong = [0; 4];
    d.io.read_exact(&mut pong).await.unwrap();
    let (client_id, transport, first) = server.await.unwrap();
    assert_eq!(client_id.as_ref().map(Name::as_str), Some(CLIENT));
    assert!(!transport, "no transport header without opaque transport");
    assert_eq!(first, b"ping");
}

#[tokio::test]
async fn a_peer_with_another_identity_is_refused_before_any_byte() {
    let (ca, anchors) = mesh();
    let (tls, _tx) = local(Some(creds(&ca, &anchors, CLIENT)));
    let (l, addr) = peer().await;
    // The server holds a valid certificate, but for another workload.
    let impostor = creds(
        &ca,
        &anchors,
        "db.shop.serviceaccount.identity.linkerd.cluster.local",
    );
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let _ = accept(tcp, &impostor, TIMEOUT).await;
    });
    let ep = endpoint(addr, Some(WEB), None);
    let target = DialTarget {
        addr,
        endpoint: Some(&ep),
        protocol: None,
    };
    let err = dial(target, &tls, &LocalIps::new(), Connect::within(TIMEOUT))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            DialError::Tls {
                failure: TlsFailure::IdentityMismatch(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.reason(), RefuseReason::TlsIdentityMismatch);
}

#[tokio::test]
async fn a_peer_of_another_root_is_untrusted() {
    let (ca, anchors) = mesh();
    let (other_ca, other_anchors) = mesh();
    let (tls, _tx) = local(Some(creds(&ca, &anchors, CLIENT)));
    let (l, addr) = peer().await;
    let stranger = creds(&other_ca, &other_anchors, WEB);
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let _ = accept(tcp, &stranger, TIMEOUT).await;
    });
    let ep = endpoint(addr, Some(WEB), None);
    let target = DialTarget {
        addr,
        endpoint: Some(&ep),
        protocol: None,
    };
    let err = dial(target, &tls, &LocalIps::new(), Connect::within(TIMEOUT))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.reason(), RefuseReason::TlsUntrusted, "{err}");
}

#[tokio::test]
async fn opaque_transport_dials_the_peer_proxy_and_names_the_port_first() {
    let (ca, anchors) = mesh();
    let (tls, _tx) = local(Some(creds(&ca, &anchors, CLIENT)));
    let (l, inbound) = peer().await;
    let server = serve_once(l, creds(&ca, &anchors, WEB));
    // The app's port on the pod is 8080; its proxy's inbound port is where the dial goes.
    let app = SocketAddr::new(inbound.ip(), 8080);
    let ep = endpoint(app, Some(WEB), Some(inbound.port()));
    let target = DialTarget {
        addr: app,
        endpoint: Some(&ep),
        protocol: Some(SessionProtocol::Http2),
    };
    let mut d = dial(target, &tls, &LocalIps::new(), Connect::within(TIMEOUT))
        .await
        .unwrap();
    assert_eq!(d.addr, inbound);
    let mut pong = [0; 4];
    d.io.read_exact(&mut pong).await.unwrap();
    let (client_id, transport, first) = server.await.unwrap();
    assert_eq!(client_id.as_ref().map(Name::as_str), Some(CLIENT));
    assert!(transport, "ALPN transport.l5d.io/v1 negotiated");
    let (h, _) = TransportHeader::decode(&first).unwrap().unwrap();
    assert_eq!(h.port, 8080);
    assert_eq!(h.name, None);
    assert_eq!(h.protocol, Some(SessionProtocol::Http2));
}

#[tokio::test]
async fn without_a_certificate_yet_the_dial_waits_then_fails() {
    let (l, addr) = peer().await;
    let (tls, _tx) = local(None);
    let ep = endpoint(addr, Some(WEB), None);
    let target = DialTarget {
        addr,
        endpoint: Some(&ep),
        protocol: None,
    };
    let start = tokio::time::Instant::now();
    let err = dial(
        target,
        &tls,
        &LocalIps::new(),
        Connect::within(Duration::from_millis(200)),
    )
    .await
    .err()
    .expect("no credentials");
    assert!(matches!(err, DialError::NoCredentials { .. }), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(200));
    drop(l);
}

#[tokio::test]
async fn a_certificate_that_arrives_while_waiting_is_used() {
    let (ca, anchors) = mesh();
    let (l, addr) = peer().await;
    let server = serve_once(l, creds(&ca, &anchors, WEB));
    let (tls, tx) = local(None);
    let client = creds(&ca, &anchors, CLIENT);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send_replace(Some(client));
        // Keep the sender so the credentials stay published.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let ep = endpoint(addr, Some(WEB), None);
    let target = DialTarget {
        addr,
        endpoint: Some(&ep),
        protocol: None,
    };
    let mut d = dial(target, &tls, &LocalIps::new(), Connect::within(TIMEOUT))
        .await
        .unwrap();
    d.io.write_all(b"ping").await.unwrap();
    let (client_id, ..) = server.await.unwrap();
    assert_eq!(client_id.as_ref().map(Name::as_str), Some(CLIENT));
}
