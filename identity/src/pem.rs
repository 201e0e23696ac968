//! PEM in and out, via rustls' pki-types.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Every CERTIFICATE block in `pem`, in order.
pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))
}

/// Encodes one DER object as a PEM block.
pub fn encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let der = CertificateDer::from((0..=255u8).collect::<Vec<_>>());
        let pem = encode("CERTIFICATE", &der);
        assert_eq!(certs(pem.as_bytes()).unwrap(), vec![der]);
    }
}
