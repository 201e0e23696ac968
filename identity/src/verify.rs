//! Certificate checks: chains to the trust anchors, names, validity.
//!
//! Verification follows docs/wire-protocol.md#tls: the chain is verified against the trust anchors (ordinary
//! hostname matching is skipped), then the expected identity must be among the leaf's DNS (or
//! URI) SANs. A peer's identity is the first DNS (or URI) SAN of its certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::name::Name;

/// A set of trust anchors (roots). Several roots may be trusted at once, for anchor rotation.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    pub(crate) certs: Arc<Vec<CertificateDer<'static>>>,
    pub(crate) anchors: Arc<Vec<TrustAnchor<'static>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the certificate does not parse: {0}")]
    Malformed(String),
    #[error("the certificate does not chain to a trust anchor, or is not valid now: {0}")]
    Chain(webpki::Error),
    #[error("expected identity {expected}, the certificate names {presented}")]
    WrongIdentity { expected: String, presented: String },
}

impl TrustAnchors {
    /// Reads every root in a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let certs = crate::pem::certs(pem)?;
        if certs.is_empty() {
            return Err("no CERTIFICATE block in the trust-anchor file".into());
        }
        Self::from_der(certs)
    }

    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let anchors = certs
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| format!("a trust anchor is not a usable CA certificate: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustAnchors {
            certs: Arc::new(certs),
            anchors: Arc::new(anchors),
        })
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// A rustls root store of these anchors.
    pub fn root_store(&self) -> rustls::RootCertStore {
        rustls::RootCertStore {
            roots: self.anchors.as_ref().clone(),
        }
    }

    /// Verifies that `leaf` chains to one of the anchors through `intermediates` and is valid at
    /// `now`, for server and client use.
    pub fn verify_chain(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let cert =
            EndEntityCert::try_from(leaf).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        for usage in [KeyUsage::server_auth(), KeyUsage::client_auth()] {
            cert.verify_for_usage(
                algs.all,
                &self.anchors,
                intermediates,
                time,
                usage,
                None,
                None,
            )
            .map_err(VerifyError::Chain)?;
        }
        Ok(())
    }

    /// Verifies the chain and that the leaf names `expected`: what a proxy checks of a
    /// certificate it receives for itself, and of a peer it dials.
    pub fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        expected: &Name,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        self.verify_chain(leaf, intermediates, now)?;
        check_names(leaf, expected)
    }
}

/// Requires `expected` among the leaf's DNS or URI SANs.
pub fn check_names(leaf: &CertificateDer<'_>, expected: &Name) -> Result<(), VerifyError> {
    let names = san_names(leaf).map_err(VerifyError::Malformed)?;
    if names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(expected.as_str()))
    {
        return Ok(());
    }
    Err(VerifyError::WrongIdentity {
        expected: expected.to_string(),
        presented: if names.is_empty() {
            "no identity".into()
        } else {
            names.join(", ")
        },
    })
}

/// The DNS and URI SANs of a certificate, in order.
pub fn san_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(n) | GeneralName::URI(n) => Some(n.to_string()),
            _ => None,
        })
        .collect())
}

/// A peer's identity: the first DNS (or URI) SAN of its certificate, if it is a valid name.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<Name> {
    san_names(cert)
        .ok()?
        .into_iter()
        .find_map(|n| n.parse().ok())
}

/// A certificate's NotAfter.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let ts = parsed.validity().not_after.timestamp();
    Ok(UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64))
}

/// A certificate's raw subject public key.
pub fn public_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(parsed.public_key().subject_public_key.data.to_vec())
}
