//! TLS for tests: certificates from a cluster's issuer (or from nowhere trusted), TLS servers
//! and clients on sockets inside pods, and hand-made ClientHellos for refusal tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use remora_identity::certs::{Ca, csr, generate_key, key_der};
use remora_identity::tls::{CertifiedKey, TlsConfigs, configs};
use remora_identity::{Name, TrustAnchors};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::apps::connect_in;

/// The ALPN of connections carrying a transport header.
pub const TRANSPORT_ALPN: &[u8] = b"transport.l5d.io/v1";

/// Issues a certificate for `name` from `ca`.
pub fn certify(ca: &Ca, name: &str, lifetime: Duration) -> CertifiedKey {
    let name: Name = name.parse().expect("identity name");
    let key = generate_key().unwrap();
    let issued = ca
        .issue(&csr(&key, &name).unwrap(), &name, lifetime)
        .unwrap();
    let mut chain = vec![issued.leaf];
    chain.extend(issued.intermediates);
    CertifiedKey {
        name,
        chain,
        key: Arc::new(PrivateKeyDer::Pkcs8(key_der(&key))),
        expiry: issued.valid_until,
    }
}

/// Mesh TLS configs for a certified key (servers accept, and `client_alpn` offers, the
/// transport ALPN).
pub fn mesh_configs(key: &CertifiedKey, anchors: &TrustAnchors) -> TlsConfigs {
    configs(key, anchors, &[TRANSPORT_ALPN]).unwrap()
}

/// A root (as trust anchors) and an issuer under it that nobody in the mesh trusts.
pub fn foreign_pki() -> (TrustAnchors, Ca) {
    let root = Ca::new_root("foreign root", Duration::from_secs(86_400)).unwrap();
    let issuer = root
        .new_intermediate("foreign issuer", Duration::from_secs(86_400))
        .unwrap();
    (
        TrustAnchors::from_der(vec![root.cert.clone()]).unwrap(),
        issuer,
    )
}

/// Opens a TLS connection from inside namespace `ns`.
pub async fn connect_tls(
    ns: &str,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = connect_in(ns, addr).await?;
    let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A ClientHello offering only TLS 1.2 (no supported_versions extension), with `sni`.
pub fn tls12_client_hello(sni: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]); // legacy_version TLS 1.2
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    let suites: [u16; 3] = [0xc02b, 0xc02f, 0xcca9]; // ECDHE AES-128-GCM / CHACHA20, TLS 1.2 only
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut exts = Vec::new();
    // server_name
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    exts.extend_from_slice(&0u16.to_be_bytes());
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sni_ext);
    // supported_groups: x25519, secp256r1
    exts.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    exts.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
    exts.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![22u8, 3, 1];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// A ClientHello (TLS 1.3, as rustls sends it) for `sni`.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(remora_identity::tls::provider())
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

/// How long until `key` expires.
pub fn remaining(key: &CertifiedKey) -> Duration {
    key.expiry
        .duration_since(SystemTime::now())
        .unwrap_or_default()
}
