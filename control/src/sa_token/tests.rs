//! The verifier against tokens made by [`super::mint`] (ring and base64, not jsonwebtoken):
//! each rule of the module doc, accepted and refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::jwks::Jwks;
use super::mint::{Minter, SaClaims};
use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn rules() -> Rules {
    Rules {
        audience: DEFAULT_AUDIENCE.into(),
        issuer: Some(DEFAULT_ISSUER.into()),
        trust_domain: "east.example".into(),
        control_plane_ns: "linkerd".into(),
    }
}

fn web() -> Name {
    "web.shop.serviceaccount.identity.linkerd.east.example"
        .parse()
        .unwrap()
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

struct Issuer {
    ec: Minter,
    rsa: Minter,
    jwks: Jwks,
}

fn issuer() -> Issuer {
    let ec = Minter::generate_es256("ec-1").unwrap();
    let rsa = Minter::rfc7515_rs256("rsa-1").unwrap();
    let jwks = Jwks::parse(Minter::jwks(&[&ec, &rsa]).as_bytes()).unwrap();
    Issuer { ec, rsa, jwks }
}

fn claims() -> SaClaims {
    SaClaims::new("shop", "web", now(), HOUR)
}

fn check(i: &Issuer, token: &str) -> Result<Verified, SaTokenError> {
    verify(&rules(), &i.jwks, token.as_bytes(), &web(), now())
}

#[test]
fn a_good_token_of_each_algorithm_names_its_service_account() {
    let i = issuer();
    for m in [&i.ec, &i.rsa, &Minter::rfc7515_es256("rfc-ec").unwrap()] {
        let jwks = Jwks::parse(Minter::jwks(&[m]).as_bytes()).unwrap();
        let token = m.token(&claims());
        let v = verify(&rules(), &jwks, token.as_bytes(), &web(), now())
            .unwrap_or_else(|e| panic!("{}: {e}", m.alg()));
        assert_eq!(v.identity, web());
        assert_eq!(
            (v.namespace.as_str(), v.service_account.as_str()),
            ("shop", "web")
        );
        assert_eq!(v.expires, now() + HOUR);
        // A token file's trailing newline is fine.
        let with_newline = format!("{token}\n");
        assert!(verify(&rules(), &jwks, with_newline.as_bytes(), &web(), now()).is_ok());
    }
    // Without a kid, each key of the algorithm is tried.
    let token =
        i.ec.sign_raw(&json!({ "alg": "ES256" }), &claims().to_json());
    assert!(check(&i, &token).is_ok());
    // An audience list with others in it, and no issuer rule.
    let mut c = claims();
    c.audience = vec![
        "https://kubernetes.default.svc".into(),
        DEFAULT_AUDIENCE.into(),
    ];
    assert!(check(&i, &i.rsa.token(&c)).is_ok());
    let open = Rules {
        issuer: None,
        ..rules()
    };
    c.issuer = "https://oidc.example".into();
    assert!(verify(&open, &i.jwks, i.ec.token(&c).as_bytes(), &web(), now()).is_ok());
}

#[test]
fn the_audience_must_include_linkerds() {
    let i = issuer();
    let mut c = claims();
    c.audience = vec!["https://kubernetes.default.svc".into()];
    assert_eq!(
        check(&i, &i.ec.token(&c)),
        Err(SaTokenError::Audience(DEFAULT_AUDIENCE.into()))
    );
    c.audience = Vec::new();
    assert!(matches!(
        check(&i, &i.ec.token(&c)),
        Err(SaTokenError::Audience(_))
    ));
    // No aud at all, or a single string that is another audience.
    let mut raw = claims().to_json();
    raw.as_object_mut().unwrap().remove("aud");
    assert!(matches!(
        check(&i, &i.ec.sign(&raw)),
        Err(SaTokenError::Audience(_))
    ));
    raw["aud"] = json!("other");
    assert!(matches!(
        check(&i, &i.ec.sign(&raw)),
        Err(SaTokenError::Audience(_))
    ));
    raw["aud"] = json!(DEFAULT_AUDIENCE);
    assert!(
        check(&i, &i.ec.sign(&raw)).is_ok(),
        "a single string is an audience too"
    );
}

#[test]
fn expired_tokens_are_refused_beyond_the_clock_skew() {
    let i = issuer();
    let mut c = claims();
    c.issued_at -= 7200;
    c.not_before -= 7200;
    c.expires = c.issued_at + 3600; // an hour ago
    assert_eq!(check(&i, &i.ec.token(&c)), Err(SaTokenError::Expired(3600)));
    c.expires = now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 30;
    assert!(
        check(&i, &i.ec.token(&c)).is_ok(),
        "30 s past exp is within the skew"
    );
    // exp that is not an integer is malformed, never "absent".
    let mut raw = claims().to_json();
    raw["exp"] = json!("never");
    assert!(matches!(
        check(&i, &i.ec.sign(&raw)),
        Err(SaTokenError::Malformed(_))
    ));
    raw.as_object_mut().unwrap().remove("exp");
    assert!(matches!(
        check(&i, &i.ec.sign(&raw)),
        Err(SaTokenError::Malformed(_))
    ));
}

#[test]
fn tokens_not_yet_valid_are_refused_beyond_the_clock_skew() {
    let i = issuer();
    let mut c = claims();
    c.not_before += 600;
    assert_eq!(
        check(&i, &i.ec.token(&c)),
        Err(SaTokenError::NotYetValid(600))
    );
    let mut c = claims();
    c.issued_at += 600;
    assert_eq!(
        check(&i, &i.ec.token(&c)),
        Err(SaTokenError::NotYetValid(600))
    );
    let mut c = claims();
    c.issued_at += 30;
    c.not_before += 30;
    assert!(
        check(&i, &i.ec.token(&c)).is_ok(),
        "30 s ahead is within the skew"
    );
    let mut raw = claims().to_json();
    raw["nbf"] = json!("later");
    assert!(matches!(
        check(&i, &i.ec.sign(&raw)),
        Err(SaTokenError::Malformed(_))
    ));
    let mut c = claims();
    c.expires = c.issued_at;
    assert!(matches!(
        check(&i, &i.ec.token(&c)),
        Err(SaTokenError::Times(_))
    ));
}

#[test]
fn a_wrong_signature_is_refused() {
    let i = issuer();
    let other = Minter::generate_es256("ec-1").unwrap();
    // Another key with the same kid.
    assert_eq!(
        check(&i, &other.token(&claims())),
        Err(SaTokenError::BadSignature)
    );
    // A claim changed after signing.
    for m in [&i.ec, &i.rsa] {
        let token = m.token(&claims());
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut forged = claims().to_json();
        forged["sub"] = json!("system:serviceaccount:shop:web");
        forged["exp"] = json!(4_000_000_000u64);
        let body =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string().as_bytes());
        let token = format!("{head}.{body}.{sig}");
        assert_eq!(
            check(&i, &token),
            Err(SaTokenError::BadSignature),
            "{}",
            m.alg()
        );
    }
    // An ES256 token whose header names the RSA key.
    let token = i.ec.sign_raw(
        &json!({ "alg": "ES256", "kid": "rsa-1" }),
        &claims().to_json(),
    );
    assert!(matches!(check(&i, &token), Err(SaTokenError::Algorithm(_))));
}

#[test]
fn an_unknown_key_id_is_refused() {
    let i = issuer();
    let stranger = Minter::generate_es256("ec-2").unwrap();
    assert_eq!(
        check(&i, &stranger.token(&claims())),
        Err(SaTokenError::UnknownKey("with kid \"ec-2\"".into()))
    );
    let only_rsa = Jwks::parse(Minter::jwks(&[&i.rsa]).as_bytes()).unwrap();
    let token =
        i.ec.sign_raw(&json!({ "alg": "ES256" }), &claims().to_json());
    assert!(matches!(
        verify(&rules(), &only_rsa, token.as_bytes(), &web(), now()),
        Err(SaTokenError::UnknownKey(_))
    ));
}

#[test]
fn a_wrong_issuer_is_refused_when_one_is_configured() {
    let i = issuer();
    let mut c = claims();
    c.issuer = "https://evil.example".into();
    assert_eq!(
        check(&i, &i.ec.token(&c)),
        Err(SaTokenError::Issuer(DEFAULT_ISSUER.into()))
    );
    let mut raw = claims().to_json();
    raw.as_object_mut().unwrap().remove("iss");
    assert!(matches!(
        check(&i, &i.ec.sign(&raw)),
        Err(SaTokenError::Issuer(_))
    ));
}

#[test]
fn only_service_account_subjects_are_accepted() {
    let i = issuer();
    for sub in [
        "system:node:node-a",
        "alice",
        "system:serviceaccount:shop",
        "system:serviceaccount:shop:web:extra",
        "system:serviceaccount::web",
        "system:serviceaccount:shop:web.v2",
        "system:serviceaccount:Shop:web",
        "system:serviceaccount:shop:-web",
    ] {
        let mut raw = claims().to_json();
        raw["sub"] = json!(sub);
        assert_eq!(
            check(&i, &i.ec.sign(&raw)),
            Err(SaTokenError::Subject(sub.into())),
            "{sub}"
        );
    }
}

#[test]
fn a_token_for_another_service_account_is_refused() {
    let i = issuer();
    for (ns, sa) in [("shop", "db"), ("other", "web")] {
        let c = SaClaims::new(ns, sa, now(), HOUR);
        let err = check(&i, &i.ec.token(&c)).unwrap_err();
        assert!(matches!(err, SaTokenError::WrongIdentity { .. }), "{err}");
        assert_eq!(err.reason(), "not_authenticated");
        assert!(!err.is_malformed());
    }
    // Another cluster's rules map the same subject elsewhere.
    let west = Rules {
        trust_domain: "west.example".into(),
        ..rules()
    };
    let token = i.ec.token(&claims());
    assert!(matches!(
        verify(&west, &i.jwks, token.as_bytes(), &web(), now()),
        Err(SaTokenError::WrongIdentity { .. })
    ));
}

#[test]
fn alg_none_and_hmac_are_refused_before_any_key() {
    let i = issuer();
    let body = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    let c = body(&claims().to_json());
    for (alg, sig) in [
        ("none", ""),
        ("HS256", "c2ln"),
        ("PS256", "c2ln"),
        ("EdDSA", "c2ln"),
    ] {
        let token = format!("{}.{c}.{sig}", body(&json!({ "alg": alg, "kid": "ec-1" })));
        let err = check(&i, &token).unwrap_err();
        assert!(matches!(err, SaTokenError::Algorithm(_)), "{alg}: {err}");
        assert!(!err.is_malformed());
    }
    // An HMAC token "signed" with the RSA key's public modulus as its secret (the classic
    // algorithm confusion) is refused the same way.
    let token = i.rsa.sign_raw(
        &json!({ "alg": "HS256", "kid": "rsa-1" }),
        &claims().to_json(),
    );
    assert!(matches!(check(&i, &token), Err(SaTokenError::Algorithm(_))));
}

#[test]
fn oversize_and_malformed_tokens_are_malformed() {
    let i = issuer();
    let big = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(
        check(&i, &big),
        Err(SaTokenError::TooLarge(MAX_TOKEN_BYTES + 1))
    );
    let mut padded = claims().to_json();
    padded["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
    let err = check(&i, &i.ec.sign(&padded)).unwrap_err();
    assert!(matches!(err, SaTokenError::TooLarge(_)), "{err}");
    let good = i.ec.token(&claims());
    for junk in [
        "",
        "rmt1.web.1.aa",
        "a.b",
        "a.b.c.d.e",
        "!!.!!.!!",
        "e30.e30.e30",
        &good.replacen('.', "..", 1),
        &good[..good.len() / 2],
    ] {
        let err = check(&i, junk).unwrap_err();
        assert!(
            err.is_malformed()
                || matches!(err, SaTokenError::BadSignature | SaTokenError::Algorithm(_)),
            "{junk:?}: {err:?}"
        );
    }
    let crit = i.ec.sign_raw(
        &json!({ "alg": "ES256", "kid": "ec-1", "crit": ["exp"] }),
        &claims().to_json(),
    );
    assert!(check(&i, &crit).unwrap_err().is_malformed());
    assert!(check(&i, "\u{ff}.a.b").unwrap_err().is_malformed());
}

#[test]
fn a_jwks_is_checked_key_by_key() {
    let ec = Minter::generate_es256("a").unwrap();
    let rsa = Minter::rfc7515_rs256("b").unwrap();
    let keys = |ks: serde_json::Value| Jwks::parse(json!({ "keys": ks }).to_string().as_bytes());
    assert_eq!(keys(json!([ec.jwk(), rsa.jwk()])).unwrap().keys.len(), 2);
    let with = |base: &Minter, k: &str, v: serde_json::Value| {
        let mut j = base.jwk();
        j[k] = v;
        j
    };
    for (bad, why) in [
        (json!([]), "no keys"),
        (json!([ec.jwk(), ec.jwk()]), "twice"),
        (json!([{ "kty": "oct", "k": "c2VjcmV0" }]), "symmetric"),
        (json!([with(&ec, "use", json!("enc"))]), "use"),
        (json!([with(&ec, "alg", json!("ES384"))]), "alg"),
        (json!([with(&ec, "crv", json!("P-521"))]), "curve"),
        (json!([with(&ec, "x", json!("AAAA"))]), "bytes"),
        (json!([with(&rsa, "n", json!("AQAB"))]), "modulus"),
        (json!([with(&rsa, "alg", json!("PS256"))]), "alg"),
        (json!([{ "kty": "RSA", "e": "AQAB" }]), "no n"),
    ] {
        let err = keys(bad.clone()).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
    let many: Vec<_> = (0..=jwks::MAX_KEYS)
        .map(|n| with(&ec, "kid", json!(n.to_string())))
        .collect();
    assert!(keys(json!(many)).unwrap_err().contains("more than"));
    assert!(
        Jwks::parse(&vec![b' '; jwks::MAX_JWKS_BYTES as usize + 1])
            .unwrap_err()
            .contains("larger")
    );
    assert!(Jwks::parse(b"{\"keys\": 3}").is_err());
}

#[test]
fn a_jwks_file_is_reloaded_when_it_changes_and_a_bad_edit_is_kept_out() {
    let dir = std::env::temp_dir().join(format!("rmt{}-jwks", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sa-keys.json");
    let (a, b) = (
        Minter::generate_es256("a").unwrap(),
        Minter::generate_es256("b").unwrap(),
    );
    std::fs::write(&path, Minter::jwks(&[&a])).unwrap();
    let store = std::sync::Arc::new(jwks::JwksStore::load(&path).unwrap());
    let v = SaTokenVerifier::new(rules(), store.clone());
    let token_b = b.token(&claims());
    assert!(matches!(
        v.verify(token_b.as_bytes(), &web(), now()),
        Err(SaTokenError::UnknownKey(_))
    ));
    assert!(matches!(store.reload_if_changed(), jwks::Reload::Unchanged));
    std::fs::write(&path, Minter::jwks(&[&a, &b])).unwrap();
    assert!(matches!(
        store.reload_if_changed(),
        jwks::Reload::Reloaded(2)
    ));
    assert!(v.verify(token_b.as_bytes(), &web(), now()).is_ok());
    std::fs::write(&path, "{\"keys\": [{\"kty\": \"oct\", \"k\": \"eA\"}]}").unwrap();
    assert!(matches!(
        store.reload_if_changed(),
        jwks::Reload::Rejected(_)
    ));
    assert!(
        v.verify(token_b.as_bytes(), &web(), now()).is_ok(),
        "the last good keys stay"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// RFC 7515 Appendix A.2: the signing input and the signature its key must make.
const RFC7515_A2_INPUT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const RFC7515_A2_SIGNATURE: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

#[test]
fn the_rfc_7515_rsa_vector_is_reproduced_and_verified() {
    let m = Minter::rfc7515_rs256("a2").unwrap();
    let sig = m.sign_message(RFC7515_A2_INPUT.as_bytes());
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&sig),
        RFC7515_A2_SIGNATURE
    );
    let jwks = Jwks::parse(Minter::jwks(&[&m]).as_bytes()).unwrap();
    super::ring::install();
    assert!(
        jsonwebtoken::crypto::verify(
            RFC7515_A2_SIGNATURE,
            RFC7515_A2_INPUT.as_bytes(),
            &jwks.keys[0].key,
            Algorithm::RS256
        )
        .unwrap()
    );
    assert!(
        !jsonwebtoken::crypto::verify(
            RFC7515_A2_SIGNATURE,
            b"eyJhbGciOiJSUzI1NiJ9.e30",
            &jwks.keys[0].key,
            Algorithm::RS256
        )
        .unwrap()
    );
}
