//! `Identity/Certify` decisions and issuer reloading, with a PKI written to a temporary
//! directory the way `remora certs` writes it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use linkerd2_proxy_api::identity::CertifyRequest;
use remora_control::config::Config;
use remora_control::identity::IdentityService;
use remora_control::issuer::{IssuerStore, Reload};
use remora_control::metrics::IdentityMetrics;
use remora_control::token::TokenKey;
use remora_identity::certs::{Ca, csr, generate_key};
use remora_identity::{Name, TrustAnchors};
use tonic::Code;

const DAY: Duration = Duration::from_secs(86_400);

struct Fixture {
    dir: PathBuf,
    root: Ca,
    service: IdentityService,
    issuer: Arc<IssuerStore>,
    tokens: TokenKey,
    registry: remora_metrics::Registry,
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rmt{}-ctl{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_issuer(dir: &Path, issuer: &Ca) {
    std::fs::write(dir.join("issuer.pem"), issuer.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.key"), issuer.key_pem()).unwrap();
}

fn fixture() -> Fixture {
    let dir = tempdir();
    let root = Ca::new_root("root", 365 * DAY).unwrap();
    let issuer = root
        .new_intermediate("identity.east.example", 30 * DAY)
        .unwrap();
    std::fs::write(dir.join("root.pem"), root.cert_pem()).unwrap();
    write_issuer(&dir, &issuer);
    std::fs::write(dir.join("token.key"), TokenKey::generate_hex().unwrap()).unwrap();
    let toml = r#"
        [cluster]
        name = "east"
        trust_domain = "east.example"
        [server]
        addr = "127.0.0.1:0"
        admin_addr = "127.0.0.1:0"
        [identity]
        trust_anchors = "root.pem"
        issuer_cert = "issuer.pem"
        issuer_key = "issuer.key"
        token_key = "token.key"
        cert_lifetime = "1h"
    "#;
    let config = Config::parse(toml, &dir).unwrap();
    let tokens =
        TokenKey::from_hex(&std::fs::read_to_string(config.token_key.as_ref().unwrap()).unwrap())
            .unwrap();
    let issuer = Arc::new(IssuerStore::load(&config.issuer_cert, &config.issuer_key).unwrap());
    let mut registry = remora_metrics::Registry::default();
    let metrics = IdentityMetrics::register(&mut registry);
    let service = IdentityService::new(
        Arc::new(config),
        issuer.clone(),
        tokens.clone().into(),
        metrics,
    );
    Fixture {
        dir,
        root,
        service,
        issuer,
        tokens,
        registry,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn web() -> Name {
    "web.shop.serviceaccount.identity.linkerd.east.example"
        .parse()
        .unwrap()
}

fn db() -> Name {
    "db.shop.serviceaccount.identity.linkerd.east.example"
        .parse()
        .unwrap()
}

fn request(identity: &Name, token: String, csr_der: Vec<u8>) -> CertifyRequest {
    CertifyRequest {
        identity: identity.to_string(),
        token: token.into_bytes(),
        certificate_signing_request: csr_der,
    }
}

fn code(f: &Fixture, req: CertifyRequest) -> Code {
    f.service.certify_request(req).unwrap_err().code()
}

fn metrics(f: &Fixture) -> String {
    remora_metrics::encode(&f.registry).unwrap()
}

#[test]
fn valid_request_is_issued_a_chaining_leaf() {
    let f = fixture();
    let key = generate_key().unwrap();
    let rsp = f
        .service
        .certify_request(request(
            &web(),
            f.tokens.mint(&web(), DAY),
            csr(&key, &web()).unwrap(),
        ))
        .unwrap();
    let anchors = TrustAnchors::from_pem(f.root.cert_pem().as_bytes()).unwrap();
    let leaf = rsp.leaf_certificate.into();
    let chain: Vec<_> = rsp
        .intermediate_certificates
        .into_iter()
        .map(Into::into)
        .collect();
    anchors
        .verify(&leaf, &chain, &web(), SystemTime::now())
        .unwrap();
    let until = rsp.valid_until.unwrap().seconds;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (until - now - 3600).abs() < 5,
        "valid for the configured hour"
    );
    assert!(metrics(&f).contains("identity_certs_issued_total 1"));
}

#[test]
fn refusals_carry_the_wire_md_codes() {
    let f = fixture();
    let key = generate_key().unwrap();
    let good_csr = csr(&key, &web()).unwrap();
    let token = f.tokens.mint(&web(), DAY);

    // A CSR for another identity than the one requested.
    let other_csr = csr(&key, &db()).unwrap();
    assert_eq!(
        code(&f, request(&web(), token.clone(), other_csr)),
        Code::FailedPrecondition
    );

    // A CSR with an extra SAN.
    let mut p =
        rcgen::CertificateParams::new(vec![web().to_string(), "extra.example".into()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    let extra = p.serialize_request(&key).unwrap().der().to_vec();
    assert_eq!(
        code(&f, request(&web(), token.clone(), extra)),
        Code::FailedPrecondition
    );

    // A CSR whose signature does not verify.
    let mut bad_sig = good_csr.clone();
    let n = bad_sig.len();
    bad_sig[n - 3] ^= 0x01;
    assert_eq!(
        code(&f, request(&web(), token.clone(), bad_sig)),
        Code::InvalidArgument
    );

    // Another workload's token.
    let db_token = f.tokens.mint(&db(), DAY);
    assert_eq!(
        code(&f, request(&web(), db_token, good_csr.clone())),
        Code::FailedPrecondition
    );

    // An expired token.
    let expired = f.tokens.mint(&web(), Duration::ZERO);
    assert_eq!(
        code(&f, request(&web(), expired, good_csr.clone())),
        Code::InvalidArgument
    );

    // A token signed with another key.
    let foreign = TokenKey::from_hex(&TokenKey::generate_hex().unwrap())
        .unwrap()
        .mint(&web(), DAY);
    assert_eq!(
        code(&f, request(&web(), foreign, good_csr.clone())),
        Code::InvalidArgument
    );

    // Missing fields.
    assert_eq!(
        code(&f, request(&web(), String::new(), good_csr.clone())),
        Code::InvalidArgument
    );
    assert_eq!(
        code(&f, request(&web(), token.clone(), Vec::new())),
        Code::InvalidArgument
    );

    // An identity of another cluster, even with a token for it.
    let west: Name = "web.shop.serviceaccount.identity.linkerd.west.example"
        .parse()
        .unwrap();
    let west_csr = csr(&key, &west).unwrap();
    assert_eq!(
        code(&f, request(&west, f.tokens.mint(&west, DAY), west_csr)),
        Code::FailedPrecondition
    );

    let m = metrics(&f);
    for (reason, n) in [
        ("csr_mismatch", 2),
        ("bad_csr", 1),
        ("not_authenticated", 1),
        ("token_expired", 1),
        ("bad_token", 1),
        ("missing_field", 2),
        ("foreign_identity", 1),
    ] {
        let line = format!("identity_certs_refused_total{{reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "missing {line} in\n{m}");
    }
    assert!(m.contains("identity_certs_issued_total 0"));
}

#[test]
fn issuer_files_are_reloaded_and_bad_ones_rejected() {
    let f = fixture();
    assert!(matches!(f.issuer.reload_if_changed(), Reload::Unchanged));
    let new_issuer = f
        .root
        .new_intermediate("identity2.east.example", 30 * DAY)
        .unwrap();
    // Make sure the modification time moves even on coarse file systems.
    std::thread::sleep(Duration::from_millis(20));
    write_issuer(&f.dir, &new_issuer);
    assert!(matches!(f.issuer.reload_if_changed(), Reload::Reloaded));
    let key = generate_key().unwrap();
    let rsp = f
        .service
        .certify_request(request(
            &web(),
            f.tokens.mint(&web(), DAY),
            csr(&key, &web()).unwrap(),
        ))
        .unwrap();
    assert_eq!(rsp.intermediate_certificates[0], new_issuer.cert.to_vec());

    // A key that does not belong to the certificate is rejected; the new issuer stays.
    let other = f.root.new_intermediate("other", DAY).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(f.dir.join("issuer.key"), other.key_pem()).unwrap();
    assert!(matches!(f.issuer.reload_if_changed(), Reload::Rejected(_)));
    assert_eq!(f.issuer.current().cert, new_issuer.cert);
}

/// A control plane accepting both kinds of token: Remora's, and service-account tokens signed
/// by `issuer` (its JWKS written beside the config), for the audience `identity.l5d.io` and the
/// default issuer.
fn sa_fixture(issuer: &remora_control::sa_token::mint::Minter) -> Fixture {
    use remora_control::sa_token::jwks::JwksStore;
    use remora_control::sa_token::{Rules, SaTokenVerifier};
    let mut f = fixture();
    std::fs::write(
        f.dir.join("sa-keys.json"),
        remora_control::sa_token::mint::Minter::jwks(&[issuer]),
    )
    .unwrap();
    let toml = r#"
        [cluster]
        name = "east"
        trust_domain = "east.example"
        [identity]
        trust_anchors = "root.pem"
        issuer_cert = "issuer.pem"
        issuer_key = "issuer.key"
        token_key = "token.key"
        cert_lifetime = "1h"
        token_auth = ["remora", "kubernetes"]
        [identity.kubernetes]
        jwks = "sa-keys.json"
        issuer = "https://kubernetes.default.svc.cluster.local"
    "#;
    let config = Config::parse(toml, &f.dir).unwrap();
    let k = config.kubernetes.clone().unwrap();
    assert_eq!(k.audience, "identity.l5d.io");
    let rules = Rules {
        audience: k.audience,
        issuer: k.issuer,
        trust_domain: config.trust_domain.clone(),
        control_plane_ns: config.control_plane_ns.clone(),
    };
    let sa = SaTokenVerifier::new(rules, Arc::new(JwksStore::load(&k.jwks).unwrap()));
    let mut registry = remora_metrics::Registry::default();
    let metrics = IdentityMetrics::register(&mut registry);
    let auth = remora_control::identity::TokenAuth {
        remora: Some(f.tokens.clone()),
        kubernetes: Some(sa),
    };
    f.service = IdentityService::new(Arc::new(config), f.issuer.clone(), auth, metrics);
    f.registry = registry;
    f
}

#[test]
fn service_account_tokens_certify_their_own_identity_only() {
    use remora_control::sa_token::mint::{Minter, SaClaims};
    let issuer = Minter::generate_es256("sa-1").unwrap();
    let f = sa_fixture(&issuer);
    let key = generate_key().unwrap();
    let good_csr = csr(&key, &web()).unwrap();
    let claims = |sa: &str| SaClaims::new("shop", sa, SystemTime::now(), Duration::from_secs(600));

    // web's projected token, as linkerd2-proxy sends it (the file's bytes), and Remora's own
    // token beside it.
    let rsp = f
        .service
        .certify_request(request(
            &web(),
            issuer.token(&claims("web")),
            good_csr.clone(),
        ))
        .unwrap();
    assert!(!rsp.leaf_certificate.is_empty());
    assert!(
        f.service
            .certify_request(request(
                &web(),
                f.tokens.mint(&web(), DAY),
                good_csr.clone()
            ))
            .is_ok()
    );

    // db's token for web's identity; a token of another issuer; one expired; one for another
    // audience: all FailedPrecondition, none issued.
    let stranger = Minter::generate_es256("sa-1").unwrap();
    let mut expired = claims("web");
    expired.issued_at -= 7200;
    expired.not_before -= 7200;
    expired.expires -= 7200;
    let mut audience = claims("web");
    audience.audience = vec!["https://kubernetes.default.svc".into()];
    for (token, why) in [
        (issuer.token(&claims("db")), "another service account"),
        (stranger.token(&claims("web")), "another issuer's key"),
        (issuer.token(&expired), "expired"),
        (issuer.token(&audience), "another audience"),
    ] {
        let status = f
            .service
            .certify_request(request(&web(), token, good_csr.clone()))
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{why}: {status:?}");
    }
    // Not a JWT at all: InvalidArgument; and oversize: InvalidArgument, before any check.
    assert_eq!(
        code(&f, request(&web(), "not.a-jwt".into(), good_csr.clone())),
        Code::InvalidArgument
    );
    assert_eq!(
        code(&f, request(&web(), "x".repeat(20_000), good_csr.clone())),
        Code::InvalidArgument
    );
    let m = metrics(&f);
    for (reason, n) in [
        ("not_authenticated", 1),
        ("sa_token_signature", 1),
        ("token_expired", 1),
        ("sa_token_audience", 1),
        ("sa_token_malformed", 1),
        ("bad_token", 1),
    ] {
        let line = format!("identity_certs_refused_total{{reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "missing {line} in\n{m}");
    }
    assert!(m.contains("identity_certs_issued_total 2"), "{m}");
}
