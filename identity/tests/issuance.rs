//! Issuance, verification and handshakes with deterministic-shape test PKIs made by rcgen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P384_SHA384};
use remora_identity::certs::{
    Ca, CertError, check_csr, csr, generate_key, key_der, key_from_pkcs8,
};
use remora_identity::tls::{CertifiedKey, configs};
use remora_identity::verify::{VerifyError, peer_identity};
use remora_identity::{Name, TrustAnchors};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const DAY: Duration = Duration::from_secs(86_400);

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

fn web() -> Name {
    name("web.shop.serviceaccount.identity.linkerd.east.example")
}

fn pki() -> (Ca, Ca, TrustAnchors) {
    let root = Ca::new_root("root.example", 365 * DAY).unwrap();
    let issuer = root
        .new_intermediate("identity.east.example", 30 * DAY)
        .unwrap();
    let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
    (root, issuer, anchors)
}

#[test]
fn valid_csr_gets_a_leaf_that_chains_and_names_the_identity() {
    let (_root, issuer, anchors) = pki();
    let key = generate_key().unwrap();
    let issued = issuer
        .issue(&csr(&key, &web()).unwrap(), &web(), DAY)
        .unwrap();
    anchors
        .verify(
            &issued.leaf,
            &issued.intermediates,
            &web(),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(peer_identity(&issued.leaf), Some(web()));
    assert!(issued.valid_until <= SystemTime::now() + DAY);
    // The intermediates are the issuer, not the root.
    assert_eq!(issued.intermediates, vec![issuer.cert.clone()]);
    // Without the issuer in the chain it does not verify.
    assert!(
        anchors
            .verify(&issued.leaf, &[], &web(), SystemTime::now())
            .is_err()
    );
}

#[test]
fn leaf_has_the_wire_md_shape() {
    use x509_parser::prelude::*;
    let (_root, issuer, _) = pki();
    let key = generate_key().unwrap();
    let issued = issuer
        .issue(&csr(&key, &web()).unwrap(), &web(), DAY)
        .unwrap();
    let (_, cert) = parse_x509_certificate(&issued.leaf).unwrap();
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(
        cert.signature_algorithm.algorithm,
        oid_registry::OID_SIG_ECDSA_WITH_SHA256
    );
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(sans.len(), 1);
    // The identity is also the common name, as Linkerd's issuer writes it.
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(cn, [web().to_string()]);
    assert!(!cert.is_ca());
}

#[test]
fn every_leaf_gets_a_serial_of_its_own_even_for_the_same_key() {
    use x509_parser::prelude::*;
    let (_root, issuer, _) = pki();
    let key = generate_key().unwrap();
    let request = csr(&key, &web()).unwrap();
    let serials: std::collections::HashSet<Vec<u8>> = (0..20)
        .map(|_| {
            let issued = issuer.issue(&request, &web(), DAY).unwrap();
            let (_, cert) = parse_x509_certificate(&issued.leaf).unwrap();
            let serial = cert.raw_serial().to_vec();
            assert_eq!(serial.len(), 16, "128 bits, positive");
            assert!(serial[0] & 0x80 == 0);
            serial
        })
        .collect();
    assert_eq!(serials.len(), 20);
}

#[test]
fn lifetime_never_passes_the_issuer() {
    let root = Ca::new_root("root.example", 365 * DAY).unwrap();
    let issuer = root
        .new_intermediate("short.example", Duration::from_secs(3600))
        .unwrap();
    let key = generate_key().unwrap();
    let issued = issuer
        .issue(&csr(&key, &web()).unwrap(), &web(), DAY)
        .unwrap();
    assert!(issued.valid_until <= issuer.not_after);
    assert!(issued.valid_until <= SystemTime::now() + Duration::from_secs(3600));
}

#[test]
fn csr_for_another_identity_is_refused() {
    let (_, issuer, _) = pki();
    let key = generate_key().unwrap();
    let other = name("db.shop.serviceaccount.identity.linkerd.east.example");
    let err = issuer
        .issue(&csr(&key, &other).unwrap(), &web(), DAY)
        .unwrap_err();
    assert!(matches!(err, CertError::SanMismatch { .. }), "{err}");
    assert!(err.to_string().contains("db.shop"));
}

fn csr_with_sans(key: &KeyPair, sans: Vec<String>) -> Vec<u8> {
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.serialize_request(key).unwrap().der().to_vec()
}

#[test]
fn extra_or_forbidden_sans_are_refused() {
    let (_, issuer, _) = pki();
    let key = generate_key().unwrap();
    let two = csr_with_sans(&key, vec![web().to_string(), "evil.example".into()]);
    assert!(matches!(
        issuer.issue(&two, &web(), DAY),
        Err(CertError::SanMismatch { .. })
    ));
    let ip = csr_with_sans(&key, vec![web().to_string(), "10.0.0.1".into()]);
    assert!(matches!(
        issuer.issue(&ip, &web(), DAY),
        Err(CertError::ForbiddenSan("IP"))
    ));
    let mut p = CertificateParams::new(vec![web().to_string()]).unwrap();
    p.subject_alt_names
        .push(rcgen::SanType::URI("spiffe://east/web".try_into().unwrap()));
    let uri = p.serialize_request(&key).unwrap().der().to_vec();
    assert!(matches!(
        issuer.issue(&uri, &web(), DAY),
        Err(CertError::ForbiddenSan("URI"))
    ));
    let mut p = CertificateParams::new(vec![web().to_string()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
        "a@b.example".try_into().unwrap(),
    ));
    let email = p.serialize_request(&key).unwrap().der().to_vec();
    assert!(matches!(
        issuer.issue(&email, &web(), DAY),
        Err(CertError::ForbiddenSan("email"))
    ));
    let none = csr_with_sans(&key, vec![]);
    assert!(matches!(
        issuer.issue(&none, &web(), DAY),
        Err(CertError::SanMismatch { .. })
    ));
}

#[test]
fn bad_signature_and_garbage_are_refused() {
    let (_, issuer, _) = pki();
    let key = generate_key().unwrap();
    let mut der = csr(&key, &web()).unwrap();
    // The signature is at the end; flip a bit in it.
    let n = der.len();
    der[n - 5] ^= 0x40;
    assert!(matches!(
        issuer.issue(&der, &web(), DAY),
        Err(CertError::BadCsr(_))
    ));
    assert!(matches!(
        issuer.issue(b"garbage", &web(), DAY),
        Err(CertError::BadCsr(_))
    ));
    assert!(matches!(
        issuer.issue(&[], &web(), DAY),
        Err(CertError::BadCsr(_))
    ));
}

#[test]
fn non_p256_keys_are_refused() {
    let (_, issuer, _) = pki();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let der = csr_with_sans(&key, vec![web().to_string()]);
    assert!(matches!(
        issuer.issue(&der, &web(), DAY),
        Err(CertError::WrongKeyType)
    ));
}

#[test]
fn expired_and_foreign_certificates_do_not_verify() {
    let (_, issuer, anchors) = pki();
    let key = generate_key().unwrap();
    let issued = issuer
        .issue(&csr(&key, &web()).unwrap(), &web(), Duration::from_secs(30))
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let err = anchors
        .verify(&issued.leaf, &issued.intermediates, &web(), later)
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Chain(webpki::Error::CertExpired { .. })),
        "{err}"
    );
    let (_, _, other_anchors) = pki();
    let err = other_anchors
        .verify(
            &issued.leaf,
            &issued.intermediates,
            &web(),
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Chain(_)), "{err}");
    let wrong = name("db.shop.serviceaccount.identity.linkerd.east.example");
    let err = anchors
        .verify(
            &issued.leaf,
            &issued.intermediates,
            &wrong,
            SystemTime::now(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("expected identity db.shop"),
        "{err}"
    );
    assert!(err.to_string().contains("web.shop"), "{err}");
}

#[test]
fn trust_anchor_file_with_two_roots_verifies_both() {
    let (root_a, issuer_a, _) = pki();
    let (root_b, issuer_b, _) = pki();
    let bundle = format!("{}{}", root_a.cert_pem(), root_b.cert_pem());
    let anchors = TrustAnchors::from_pem(bundle.as_bytes()).unwrap();
    assert_eq!(anchors.certs().len(), 2);
    for issuer in [&issuer_a, &issuer_b] {
        let key = generate_key().unwrap();
        let issued = issuer
            .issue(&csr(&key, &web()).unwrap(), &web(), DAY)
            .unwrap();
        anchors
            .verify(
                &issued.leaf,
                &issued.intermediates,
                &web(),
                SystemTime::now(),
            )
            .unwrap();
    }
}

#[test]
fn a_ca_whose_key_does_not_match_is_refused() {
    let (_, issuer, _) = pki();
    let (_, other, _) = pki();
    let err = Ca::from_pem(&issuer.cert_pem(), &other.key_pem()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn pem_roundtrip_of_a_ca() {
    let (_, issuer, _) = pki();
    let loaded = Ca::from_pem(&issuer.cert_pem(), &issuer.key_pem()).unwrap();
    assert_eq!(loaded.cert, issuer.cert);
    let diff = loaded
        .not_after
        .duration_since(issuer.not_after)
        .unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(2));
}

fn certified(issuer: &Ca, id: &Name) -> CertifiedKey {
    let key = generate_key().unwrap();
    let issued = issuer.issue(&csr(&key, id).unwrap(), id, DAY).unwrap();
    let mut chain = vec![issued.leaf];
    chain.extend(issued.intermediates);
    CertifiedKey {
        name: id.clone(),
        chain,
        key: Arc::new(PrivateKeyDer::Pkcs8(key_der(&key))),
        expiry: issued.valid_until,
    }
}

/// Runs a handshake in memory; returns the client identity the server saw.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    sni: &Name,
) -> Result<Option<Name>, rustls::Error> {
    let mut c =
        rustls::ClientConnection::new(client, ServerName::try_from(sni.to_string()).unwrap())?;
    let mut s = rustls::ServerConnection::new(server)?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(s
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c: &CertificateDer<'_>| peer_identity(c)));
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn mutual_tls_handshake_carries_both_identities() {
    let (_, issuer, anchors) = pki();
    let db = name("db.shop.serviceaccount.identity.linkerd.east.example");
    let client = configs(&certified(&issuer, &web()), &anchors, &[]).unwrap();
    let server = configs(&certified(&issuer, &db), &anchors, &[]).unwrap();
    let seen = handshake(client.client.clone(), server.server.clone(), &db).unwrap();
    assert_eq!(seen, Some(web()));
    // Dialling expecting another identity fails, naming both.
    let err = handshake(client.client, server.server, &web()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("WrongIdentity") && msg.contains("web.shop") && msg.contains("db.shop"),
        "{msg}"
    );
}

#[test]
fn server_accepts_unauthenticated_clients_and_rejects_foreign_ones() {
    let (_, issuer, anchors) = pki();
    let db = name("db.shop.serviceaccount.identity.linkerd.east.example");
    let server = configs(&certified(&issuer, &db), &anchors, &[]).unwrap();
    let anon = remora_identity::tls::anonymous_client(&anchors).unwrap();
    assert_eq!(handshake(anon, server.server.clone(), &db).unwrap(), None);
    let (_, foreign_issuer, foreign_anchors) = pki();
    // A client under another root: the server refuses its certificate.
    let foreign = configs(&certified(&foreign_issuer, &web()), &anchors, &[]).unwrap();
    assert!(handshake(foreign.client, server.server.clone(), &db).is_err());
    // And a client trusting only another root refuses our server.
    let distrustful = configs(&certified(&foreign_issuer, &web()), &foreign_anchors, &[]).unwrap();
    assert!(handshake(distrustful.client, server.server, &db).is_err());
}

#[test]
fn an_identity_directorys_key_and_csr_are_checked_together() {
    let key = generate_key().unwrap();
    let der = key_der(&key).secret_pkcs8_der().to_vec();
    let loaded = key_from_pkcs8(&der).unwrap();
    let request = csr(&loaded, &web()).unwrap();
    check_csr(&request, &web(), &loaded).unwrap();
    // The same CSR with another key, or for another name, is refused before it is sent.
    let other = generate_key().unwrap();
    assert!(matches!(
        check_csr(&request, &web(), &other),
        Err(CertError::KeyMismatch)
    ));
    let db = name("db.shop.serviceaccount.identity.linkerd.east.example");
    assert!(matches!(
        check_csr(&request, &db, &loaded),
        Err(CertError::SanMismatch { .. })
    ));
    assert!(matches!(
        check_csr(b"garbage", &web(), &loaded),
        Err(CertError::BadCsr(_))
    ));
    // key.p8 must be a P-256 PKCS#8 key.
    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    assert!(key_from_pkcs8(&p384.serialize_der()).is_err());
    assert!(key_from_pkcs8(b"not a key").is_err());
}

/// The key exchange group a client and a server settle on.
fn negotiated(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    sni: &Name,
) -> String {
    let mut c =
        rustls::ClientConnection::new(client, ServerName::try_from(sni.to_string()).unwrap())
            .unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets().unwrap();
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets().unwrap();
        if !c.is_handshaking() && !s.is_handshaking() {
            return format!("{:?}", s.negotiated_key_exchange_group().unwrap().name());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn mesh_tls_prefers_post_quantum_key_exchange_and_falls_back() {
    let (_, issuer, anchors) = pki();
    let db = name("db.shop.serviceaccount.identity.linkerd.east.example");
    let client = configs(&certified(&issuer, &web()), &anchors, &[]).unwrap();
    let server = configs(&certified(&issuer, &db), &anchors, &[]).unwrap();
    assert_eq!(
        negotiated(client.client.clone(), server.server.clone(), &db),
        "X25519MLKEM768"
    );
    // A peer without ML-KEM (an older linkerd2-proxy) gets X25519, or P-256.
    for group in [
        rustls::crypto::aws_lc_rs::kx_group::X25519,
        rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
    ] {
        let mut provider = (*remora_identity::tls::provider()).clone();
        provider.kx_groups = vec![group];
        let provider = Arc::new(provider);
        let classic = |id: &Name| {
            remora_identity::tls::configs_with(
                &certified(&issuer, id),
                &anchors,
                &[],
                provider.clone(),
            )
            .unwrap()
        };
        let want = format!("{:?}", group.name());
        assert_eq!(
            negotiated(classic(&web()).client, server.server.clone(), &db),
            want
        );
        assert_eq!(
            negotiated(client.client.clone(), classic(&db).server, &db),
            want
        );
    }
}
