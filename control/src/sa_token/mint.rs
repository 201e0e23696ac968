//! Tokens made the way the Kubernetes service-account issuer makes them — a JWT with the
//! claims of a projected token, signed RS256 or ES256 — and the JWKS of their keys: for the
//! tests, the fuzz seeds, and trying `token_auth = ["kubernetes"]` without a cluster.
//!
//! It is written on ring and base64 directly, not on jsonwebtoken, so the tests check the
//! verifier against an independent implementation of the format. Keys are either generated
//! (ES256) or the published example keys of RFC 7515 (Appendix A.2, RSA; A.3, P-256), which
//! make deterministic tokens for fixed inputs (RS256 signatures are deterministic).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

/// RFC 7515 Appendix A.2's RSA key (2048 bits), as its JWK members.
const RFC7515_RSA: [(&str, &str); 8] = [
    (
        "n",
        "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
    ),
    ("e", "AQAB"),
    (
        "d",
        "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
    ),
    (
        "p",
        "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
    ),
    (
        "q",
        "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
    ),
    (
        "dp",
        "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
    ),
    (
        "dq",
        "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
    ),
    (
        "qi",
        "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U",
    ),
];

/// RFC 7515 Appendix A.3's P-256 key, as its JWK members.
const RFC7515_EC: [(&str, &str); 3] = [
    ("x", "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"),
    ("y", "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"),
    ("d", "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"),
];

/// Why a key cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a signing key: {0}")]
pub struct MintError(String);

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A service-account issuer's signing key, with its `kid`.
pub struct Minter {
    kid: String,
    signer: Signer,
    jwk: Value,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter").field("kid", &self.kid).finish()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(table: &[(&str, &str)], member: &str) -> Result<Vec<u8>, MintError> {
    let v = table
        .iter()
        .find(|(k, _)| *k == member)
        .map(|(_, v)| *v)
        .ok_or_else(|| MintError(format!("no {member}")))?;
    URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|e| MintError(format!("{member}: {e}")))
}

impl Minter {
    /// A new P-256 key (ES256).
    pub fn generate_es256(kid: &str) -> Result<Minter, MintError> {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|e| MintError(e.to_string()))?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|e| MintError(e.to_string()))?;
        Ok(Self::ec(kid, pair))
    }

    /// RFC 7515 A.3's P-256 key (ES256).
    pub fn rfc7515_es256(kid: &str) -> Result<Minter, MintError> {
        let (x, y, d) = (
            unb64(&RFC7515_EC, "x")?,
            unb64(&RFC7515_EC, "y")?,
            unb64(&RFC7515_EC, "d")?,
        );
        let point = [&[0x04][..], &x, &y].concat();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            &d,
            &point,
            &SystemRandom::new(),
        )
        .map_err(|e| MintError(e.to_string()))?;
        Ok(Self::ec(kid, pair))
    }

    fn ec(kid: &str, pair: EcdsaKeyPair) -> Minter {
        let point = pair.public_key().as_ref();
        let (x, y) = point.get(1..).unwrap_or_default().split_at(32);
        Minter {
            kid: kid.to_string(),
            jwk: json!({
                "use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                "x": b64(x), "y": b64(y),
            }),
            signer: Signer::Ec(pair),
        }
    }

    /// RFC 7515 A.2's RSA key (RS256).
    pub fn rfc7515_rs256(kid: &str) -> Result<Minter, MintError> {
        let m = |member| unb64(&RFC7515_RSA, member);
        let (n, e) = (m("n")?, m("e")?);
        let components = ring::rsa::KeyPairComponents {
            public_key: ring::rsa::PublicKeyComponents { n: &n, e: &e },
            d: m("d")?,
            p: m("p")?,
            q: m("q")?,
            dP: m("dp")?,
            dQ: m("dq")?,
            qInv: m("qi")?,
        };
        let pair =
            RsaKeyPair::from_components(&components).map_err(|e| MintError(e.to_string()))?;
        Ok(Minter {
            kid: kid.to_string(),
            jwk: json!({
                "use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                "n": b64(&n), "e": b64(&e),
            }),
            signer: Signer::Rsa(pair),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, as a JWKS member.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The JWKS document of these keys, as the API server serves it.
    pub fn jwks(minters: &[&Minter]) -> String {
        json!({ "keys": minters.iter().map(|m| m.jwk()).collect::<Vec<_>>() }).to_string()
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    /// The signature of `message` (a JWS signing input): ES256 or RS256. Empty if ring
    /// cannot sign (it always can with these keys), which no verifier accepts.
    pub fn sign_message(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ec(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Signer::Rsa(pair) => {
                let mut out = vec![0; pair.public().modulus_len()];
                match pair.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut out) {
                    Ok(()) => out,
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    /// Signs `header` and `claims` exactly as given (near misses: another `alg`, no `kid`).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.sign_message(message.as_bytes());
        format!("{message}.{}", b64(&signature))
    }

    /// A token with `claims`, its header as the Kubernetes issuer writes it (`alg`, `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_raw(&json!({ "alg": self.alg(), "kid": self.kid }), claims)
    }

    /// A projected token of `claims`.
    pub fn token(&self, claims: &SaClaims) -> String {
        self.sign(&claims.to_json())
    }
}

/// The claims of a projected service-account token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaClaims {
    pub issuer: String,
    pub audience: Vec<String>,
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    /// Unix seconds.
    pub issued_at: u64,
    pub not_before: u64,
    pub expires: u64,
}

impl SaClaims {
    /// A token for `sa` in `ns`, issued `now` and valid for `ttl`, for Linkerd's audience and
    /// the default issuer, bound to pod `<sa>-0`.
    pub fn new(ns: &str, sa: &str, now: SystemTime, ttl: Duration) -> SaClaims {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        SaClaims {
            issuer: super::DEFAULT_ISSUER.into(),
            audience: vec![super::DEFAULT_AUDIENCE.into()],
            namespace: ns.into(),
            service_account: sa.into(),
            pod: format!("{sa}-0"),
            issued_at: now,
            not_before: now,
            expires: now.saturating_add(ttl.as_secs()),
        }
    }

    /// The claims as the issuer writes them.
    pub fn to_json(&self) -> Value {
        json!({
            "aud": self.audience,
            "exp": self.expires,
            "iat": self.issued_at,
            "iss": self.issuer,
            "kubernetes.io": {
                "namespace": self.namespace,
                "pod": { "name": self.pod, "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427" },
                "serviceaccount": { "name": self.service_account, "uid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8" },
            },
            "nbf": self.not_before,
            "sub": format!("system:serviceaccount:{}:{}", self.namespace, self.service_account),
        })
    }
}
