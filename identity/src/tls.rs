//! rustls configurations for mesh TLS (docs/wire-protocol.md#tls): TLS 1.3 only; AES-128-GCM,
//! AES-256-GCM, ChaCha20-Poly1305; key exchange X25519MLKEM768 (post-quantum hybrid, offered and
//! preferred, as linkerd2-proxy does), then X25519 and P-256; our certificate presented on both
//! sides. The provider is aws-lc-rs.
//!
//! The client verifies the server's chain against the trust anchors and then requires the
//! expected identity — the `ServerName` the connection was opened with, which is also the SNI —
//! among its SANs; a mismatch is an error naming both. The server asks for a client certificate
//! but does not require one: an unauthenticated peer is for policy to judge.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, Error, ServerConfig, SignatureScheme};

use crate::name::Name;
use crate::verify::{TrustAnchors, VerifyError};

/// The crypto provider of mesh TLS.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        // First is preferred; a client sends key shares for the first and for X25519.
        kx_groups: vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ],
        ..default_provider()
    })
}

/// Verifies a server against the trust anchors and the identity we dialled.
#[derive(Debug)]
pub struct MeshServerVerifier {
    anchors: TrustAnchors,
    algs: WebPkiSupportedAlgorithms,
}

impl MeshServerVerifier {
    pub fn new(anchors: TrustAnchors, provider: &CryptoProvider) -> Self {
        MeshServerVerifier {
            anchors,
            algs: provider.signature_verification_algorithms,
        }
    }
}

/// The error a failed identity check surfaces in rustls, so callers can name both sides.
pub fn verify_error(e: VerifyError) -> Error {
    match e {
        VerifyError::Chain(webpki::Error::CertExpired { .. }) => {
            Error::InvalidCertificate(rustls::CertificateError::Expired)
        }
        VerifyError::Chain(webpki::Error::UnknownIssuer) => {
            Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        }
        other => Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(other),
        ))),
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let expected: Name = match server_name {
            ServerName::DnsName(n) => n
                .as_ref()
                .parse()
                .map_err(|_| Error::General(format!("{} is not an identity name", n.as_ref())))?,
            _ => {
                return Err(Error::General(
                    "mesh peers are named by identity, not IP".into(),
                ));
            }
        };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs());
        self.anchors
            .verify(end_entity, intermediates, &expected, now)
            .map_err(verify_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A workload's certified key: what both configs present.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    pub name: Name,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub expiry: SystemTime,
}

/// Server and client configs for one certified key.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// Accepts the `alpn` protocols (and clients offering none).
    pub server: Arc<ServerConfig>,
    /// Offers no ALPN.
    pub client: Arc<ClientConfig>,
    /// Offers the `alpn` protocols.
    pub client_alpn: Arc<ClientConfig>,
}

/// Builds the mesh server and client configs for `alpn` (see [`TlsConfigs`]).
pub fn configs(
    certified: &CertifiedKey,
    anchors: &TrustAnchors,
    alpn: &[&[u8]],
) -> Result<TlsConfigs, Error> {
    configs_with(certified, anchors, alpn, provider())
}

/// As [`configs`], with another crypto provider (tests use one with fewer key exchange groups,
/// as an older peer has).
pub fn configs_with(
    certified: &CertifiedKey,
    anchors: &TrustAnchors,
    alpn: &[&[u8]],
    provider: Arc<CryptoProvider>,
) -> Result<TlsConfigs, Error> {
    let client_verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(anchors.root_store()),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::General(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(certified.chain.clone(), certified.key.clone_key())?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;

    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(
            anchors.clone(),
            &provider,
        )))
        .with_client_auth_cert(certified.chain.clone(), certified.key.clone_key())?;
    client.resumption = rustls::client::Resumption::disabled();
    let mut client_alpn = client.clone();
    client_alpn.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsConfigs {
        server: Arc::new(server),
        client: Arc::new(client),
        client_alpn: Arc::new(client_alpn),
    })
}

/// A client config without a client certificate that verifies servers like the mesh does: for
/// talking to the control plane before we hold a certificate.
pub fn anonymous_client(anchors: &TrustAnchors) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(
            anchors.clone(),
            &provider,
        )))
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(client))
}
