//! Keys, CSRs, CA certificates and issuance.
//!
//! Workload keys are ECDSA P-256. A leaf has exactly one DNS SAN (the identity), the identity
//! as its subject's common name (as Linkerd's issuer writes it), a random 128-bit serial number
//! of its own (RFC 5280: one per certificate, so a renewal with the same key gets a new one),
//! key usage digitalSignature + keyEncipherment, extended key usage serverAuth + clientAuth,
//! and is signed ECDSA-SHA256 by the cluster's issuer, valid from a minute before issuance
//! (clock skew) until the requested lifetime or the issuer's own expiry, whichever comes first.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// A key pair (rcgen's), as issued keys and CAs hold them.
pub use rcgen::KeyPair;

use crate::name::Name;

/// Issued certificates start this long in the past, for peers whose clocks run behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("key generation failed: {0}")]
    Key(rcgen::Error),
    #[error("cannot build the certificate: {0}")]
    Build(rcgen::Error),
    #[error("the CSR is malformed or its signature does not verify: {0}")]
    BadCsr(rcgen::Error),
    #[error("the CSR's key is not ECDSA P-256")]
    WrongKeyType,
    #[error("the CSR names {found}, not the requested identity {expected}")]
    SanMismatch { expected: String, found: String },
    #[error("the CSR carries a forbidden {0} SAN (only one DNS SAN is allowed)")]
    ForbiddenSan(&'static str),
    #[error("the issuer has expired")]
    IssuerExpired,
    #[error("cannot read {what}: {why}")]
    Pem { what: String, why: String },
    #[error("the CSR carries a different public key than the workload key")]
    KeyMismatch,
}

/// Generates a workload key: ECDSA P-256.
pub fn generate_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertError::Key)
}

/// The key in PKCS#8 DER, as rustls takes it.
pub fn key_der(key: &KeyPair) -> PrivatePkcs8KeyDer<'static> {
    PrivatePkcs8KeyDer::from(key.serialize_der())
}

/// A workload key from PKCS#8 DER (an identity directory's `key.p8`): ECDSA P-256 only.
pub fn key_from_pkcs8(der: &[u8]) -> Result<KeyPair, CertError> {
    let key = PrivatePkcs8KeyDer::from(der.to_vec());
    KeyPair::from_pkcs8_der_and_sign_algo(&key, &PKCS_ECDSA_P256_SHA256).map_err(CertError::Key)
}

/// Checks a CSR (an identity directory's `csr.der`) before it is sent for `name` with `key`:
/// its signature verifies, it names exactly `name` (one DNS SAN, nothing else), and it carries
/// `key`'s public key, so the certificate issued for it is usable with the key.
pub fn check_csr(der: &[u8], name: &Name, key: &KeyPair) -> Result<(), CertError> {
    use rcgen::PublicKeyData;
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
        .map_err(CertError::BadCsr)?;
    if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CertError::WrongKeyType);
    }
    check_sans(&csr.params.subject_alt_names, name)?;
    if csr.public_key.der_bytes() != key.der_bytes() {
        return Err(CertError::KeyMismatch);
    }
    Ok(())
}

/// A CSR (DER) for `name`, signed by `key`.
pub fn csr(key: &KeyPair, name: &Name) -> Result<Vec<u8>, CertError> {
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(CertError::Build)?;
    params.distinguished_name = DistinguishedName::new();
    let req = params.serialize_request(key).map_err(CertError::Build)?;
    Ok(req.der().to_vec())
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn ca_params(
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    path_len: Option<u8>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    params
}

/// A CA certificate and its key, able to sign certificates.
#[derive(Debug)]
pub struct Ca {
    pub cert: CertificateDer<'static>,
    pub key: KeyPair,
    /// Certificates between this CA and the root (empty for a root; for a cluster issuer, none
    /// unless it was signed by an intermediate).
    pub chain: Vec<CertificateDer<'static>>,
    pub not_after: SystemTime,
}

impl Ca {
    /// A self-signed root CA (the trust anchor).
    pub fn new_root(common_name: &str, lifetime: Duration) -> Result<Ca, CertError> {
        let key = generate_key()?;
        let now = SystemTime::now();
        let not_after = now + lifetime;
        let params = ca_params(common_name, now - CLOCK_SKEW, not_after, None);
        let cert = params.self_signed(&key).map_err(CertError::Build)?;
        Ok(Ca {
            cert: cert.der().clone(),
            key,
            chain: Vec::new(),
            not_after,
        })
    }

    /// An intermediate CA (a cluster's issuer) signed by this CA, valid for `lifetime` but never
    /// past this CA's own expiry.
    pub fn new_intermediate(&self, common_name: &str, lifetime: Duration) -> Result<Ca, CertError> {
        let key = generate_key()?;
        let now = SystemTime::now();
        let not_after = (now + lifetime).min(self.not_after);
        let params = ca_params(common_name, now - CLOCK_SKEW, not_after, Some(0));
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(CertError::Build)?;
        let mut chain = vec![self.cert.clone()];
        chain.extend(self.chain.iter().cloned());
        // A root does not belong in the chain a peer is sent.
        if self.chain.is_empty() {
            chain.clear();
        }
        Ok(Ca {
            cert: cert.der().clone(),
            key,
            chain,
            not_after,
        })
    }

    /// Loads a CA from PEM: `cert_pem` holds the CA certificate first, then any intermediates
    /// up to (not including) the root.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let mut certs = crate::pem::certs(cert_pem.as_bytes()).map_err(|why| CertError::Pem {
            what: "the issuer certificate".into(),
            why,
        })?;
        if certs.is_empty() {
            return Err(CertError::Pem {
                what: "the issuer certificate".into(),
                why: "no CERTIFICATE block".into(),
            });
        }
        let cert = certs.remove(0);
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Pem {
            what: "the issuer key".into(),
            why: e.to_string(),
        })?;
        let not_after = crate::verify::not_after(&cert).map_err(|why| CertError::Pem {
            what: "the issuer certificate".into(),
            why,
        })?;
        if crate::verify::public_key(&cert).as_deref() != Some(key.public_key_raw()) {
            return Err(CertError::Pem {
                what: "the issuer key".into(),
                why: "it does not match the issuer certificate".into(),
            });
        }
        Ok(Ca {
            cert,
            key,
            chain: certs,
            not_after,
        })
    }

    /// The certificate (and its chain) as PEM.
    pub fn cert_pem(&self) -> String {
        std::iter::once(&self.cert)
            .chain(self.chain.iter())
            .map(|c| crate::pem::encode("CERTIFICATE", c))
            .collect()
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn issuer(&self) -> Result<rcgen::Issuer<'static, &KeyPair>, CertError> {
        rcgen::Issuer::from_ca_cert_der(&self.cert, &self.key).map_err(CertError::Build)
    }

    /// Signs a leaf for `identity` from a DER CSR, after checking the CSR: its signature, a
    /// P-256 key, exactly one DNS SAN equal to `identity`, and no URI, email or IP SANs.
    pub fn issue(
        &self,
        csr_der: &[u8],
        identity: &Name,
        lifetime: Duration,
    ) -> Result<Issued, CertError> {
        let now = SystemTime::now();
        if self.not_after <= now {
            return Err(CertError::IssuerExpired);
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(CertError::BadCsr)?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CertError::WrongKeyType);
        }
        check_sans(&csr.params.subject_alt_names, identity)?;
        let not_after = (now + lifetime).min(self.not_after);
        let mut params =
            CertificateParams::new(vec![identity.to_string()]).map_err(CertError::Build)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.as_str());
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(now - CLOCK_SKEW);
        params.not_after = offset(not_after);
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(CertError::Build)?;
        let mut intermediates = vec![self.cert.clone()];
        intermediates.extend(self.chain.iter().cloned());
        Ok(Issued {
            leaf: leaf.der().clone(),
            intermediates,
            valid_until: not_after,
        })
    }
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<rcgen::SerialNumber, CertError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CertError::Build(rcgen::Error::RingUnspecified))?;
    // Positive, and 16 bytes long whatever the draw (no leading zero byte to drop).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

fn check_sans(sans: &[SanType], identity: &Name) -> Result<(), CertError> {
    let mut dns = Vec::new();
    for san in sans {
        match san {
            SanType::DnsName(n) => dns.push(n.as_str().to_string()),
            SanType::URI(_) => return Err(CertError::ForbiddenSan("URI")),
            SanType::Rfc822Name(_) => return Err(CertError::ForbiddenSan("email")),
            SanType::IpAddress(_) => return Err(CertError::ForbiddenSan("IP")),
            _ => return Err(CertError::ForbiddenSan("other")),
        }
    }
    match dns.as_slice() {
        [one] if one.eq_ignore_ascii_case(identity.as_str()) => Ok(()),
        _ => Err(CertError::SanMismatch {
            expected: identity.to_string(),
            found: if dns.is_empty() {
                "no DNS SAN".into()
            } else {
                dns.join(", ")
            },
        }),
    }
}

/// An issued leaf and the chain to send with it (issuer first, root excluded).
#[derive(Clone, Debug)]
pub struct Issued {
    pub leaf: CertificateDer<'static>,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub valid_until: SystemTime,
}
