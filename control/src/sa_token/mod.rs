//! Kubernetes projected service-account tokens, verified offline: what `remora control`
//! accepts as a Certify token from workloads of a real cluster (`[identity] token_auth =
//! ["kubernetes"]`), as Linkerd's identity controller accepts them through a TokenReview.
//!
//! A token is a JWT signed by the cluster's service-account issuer; its public keys are a JWKS
//! file ([`jwks`], reloaded when it changes). [`verify`] checks, in this order and without any
//! call to the API server:
//!
//! 1. size (at most [`MAX_TOKEN_BYTES`]) and form: three base64url parts, a JSON header
//!    without critical extensions;
//! 2. the algorithm: RS256, ES256 or ES384 (the ones the Kubernetes issuer signs with; `none`
//!    and the HMAC algorithms are refused before any key is looked at);
//! 3. the key: the JWKS key named by the header's `kid` (or, without a `kid`, each key of the
//!    algorithm), and the signature with it (ring, through jsonwebtoken: [`ring`]);
//! 4. the claims: `aud` contains the configured audience (`identity.l5d.io`), `iss` is the
//!    configured issuer when one is configured, `exp` is not past and `nbf` / `iat` are not
//!    ahead, each by more than [`CLOCK_SKEW`];
//! 5. the subject: `system:serviceaccount:<ns>:<sa>`, which names the identity
//!    `<sa>.<ns>.serviceaccount.identity.<cp-ns>.<trust-domain>`; that must be the identity
//!    the workload asked for.
//!
//! Offline verification cannot know that the pod a token is bound to was deleted (a
//! TokenReview would); the token stays good until it expires, as a certificate issued with it
//! does.
//!
//! # Layout
//! - this module: the rules and [`verify`].
//! - [`jwks`]: the issuer's keys and their file.
//! - [`ring`]: jsonwebtoken's signature checks on ring.
//! - [`mint`]: tokens made the way the Kubernetes issuer makes them (tests, fuzz seeds).

pub mod jwks;
pub mod mint;
pub mod ring;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use remora_identity::{Name, WorkloadId};
use serde::Deserialize;

use jwks::{Jwks, JwksStore};

/// The largest token looked at (Kubernetes' are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How far `exp`, `nbf` and `iat` may be off the control plane's clock, as the Kubernetes API
/// server allows.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The audience Linkerd's proxies' tokens are projected for.
pub const DEFAULT_AUDIENCE: &str = "identity.l5d.io";
/// The issuer of a cluster whose API server keeps the default `--service-account-issuer`.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What a token must say to be accepted by this cluster's control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Must be among the token's `aud`.
    pub audience: String,
    /// Must be the token's `iss`, when set.
    pub issuer: Option<String>,
    /// The identities' trust domain and control-plane namespace.
    pub trust_domain: String,
    pub control_plane_ns: String,
}

/// What a verified token established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub namespace: String,
    pub service_account: String,
    pub identity: Name,
    pub expires: SystemTime,
}

/// Why a token is refused. The messages never quote the token; a subject is quoted cut to 100
/// characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaTokenError {
    #[error("the token is {0} bytes, more than the {MAX_TOKEN_BYTES} accepted")]
    TooLarge(usize),
    #[error("the token is not a signed JWT: {0}")]
    Malformed(String),
    #[error("algorithm {0}: RS256, ES256 and ES384 are accepted")]
    Algorithm(String),
    #[error("no service-account key {0}")]
    UnknownKey(String),
    #[error("the signature does not verify with the service-account key")]
    BadSignature,
    #[error("the token's audience does not include {0:?}")]
    Audience(String),
    #[error("the token's issuer is not {0:?}")]
    Issuer(String),
    #[error("the token expired {0} s ago")]
    Expired(u64),
    #[error("the token is not valid for another {0} s")]
    NotYetValid(u64),
    #[error("the token's times are inconsistent: {0}")]
    Times(&'static str),
    #[error(
        "the subject {0:?} is not a service account (system:serviceaccount:<namespace>:<name>)"
    )]
    Subject(String),
    #[error("the token authenticates {token}, not {requested}")]
    WrongIdentity { token: Name, requested: Name },
}

impl SaTokenError {
    /// The metric label of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            SaTokenError::TooLarge(_) | SaTokenError::Malformed(_) => "sa_token_malformed",
            SaTokenError::Algorithm(_) => "sa_token_algorithm",
            SaTokenError::UnknownKey(_) => "sa_token_unknown_key",
            SaTokenError::BadSignature => "sa_token_signature",
            SaTokenError::Audience(_) => "sa_token_audience",
            SaTokenError::Issuer(_) => "sa_token_issuer",
            SaTokenError::Expired(_) => "token_expired",
            SaTokenError::NotYetValid(_) | SaTokenError::Times(_) => "sa_token_not_yet_valid",
            SaTokenError::Subject(_) => "sa_token_subject",
            SaTokenError::WrongIdentity { .. } => "not_authenticated",
        }
    }

    /// Whether the request itself is malformed (`InvalidArgument`) rather than a token that
    /// does not authenticate the identity (`FailedPrecondition`).
    pub fn is_malformed(&self) -> bool {
        matches!(self, SaTokenError::TooLarge(_) | SaTokenError::Malformed(_))
    }
}

/// The verifier the identity service holds: the rules and the (reloaded) keys.
#[derive(Clone, Debug)]
pub struct SaTokenVerifier {
    rules: Rules,
    keys: Arc<JwksStore>,
}

impl SaTokenVerifier {
    pub fn new(rules: Rules, keys: Arc<JwksStore>) -> Self {
        ring::install();
        SaTokenVerifier { rules, keys }
    }

    pub fn keys(&self) -> &Arc<JwksStore> {
        &self.keys
    }

    /// Verifies `token` for `requested` with the current keys.
    pub fn verify(
        &self,
        token: &[u8],
        requested: &Name,
        now: SystemTime,
    ) -> Result<Verified, SaTokenError> {
        verify(&self.rules, &self.keys.current(), token, requested, now)
    }
}

/// The header members we read.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The claims we read beyond `aud` and `iss` (which jsonwebtoken checks). Typed, so an `exp`
/// that is not an integer is malformed, never "absent".
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

fn quote(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Checks `token` against `rules` and `keys` at `now`, for the identity `requested`.
pub fn verify(
    rules: &Rules,
    keys: &Jwks,
    token: &[u8],
    requested: &Name,
    now: SystemTime,
) -> Result<Verified, SaTokenError> {
    ring::install();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(SaTokenError::TooLarge(token.len()));
    }
    let token = token.trim_ascii();
    let text =
        std::str::from_utf8(token).map_err(|_| SaTokenError::Malformed("not ASCII".into()))?;
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 3 {
        return Err(SaTokenError::Malformed(format!(
            "{} dot-separated parts, not 3",
            parts.len()
        )));
    }
    let header = URL_SAFE_NO_PAD
        .decode(parts[0])
        .map_err(|_| SaTokenError::Malformed("the header is not base64url".into()))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|e| SaTokenError::Malformed(format!("the header: {e}")))?;
    if header.crit.is_some() {
        return Err(SaTokenError::Malformed(
            "critical header extensions (crit) are not understood".into(),
        ));
    }
    let alg = match header.alg.as_str() {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        other => return Err(SaTokenError::Algorithm(format!("{:?}", quote(other)))),
    };
    let candidates: Vec<&jwks::Key> = match &header.kid {
        Some(kid) => {
            let key = keys
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or_else(|| SaTokenError::UnknownKey(format!("with kid {:?}", quote(kid))))?;
            if key.alg != alg {
                return Err(SaTokenError::Algorithm(format!(
                    "{alg:?} with kid {:?}, a key for {:?}",
                    quote(kid),
                    key.alg
                )));
            }
            vec![key]
        }
        None => keys.keys.iter().filter(|k| k.alg == alg).collect(),
    };
    if candidates.is_empty() {
        return Err(SaTokenError::UnknownKey(format!("for {alg:?}")));
    }
    let claims = decode(rules, alg, &candidates, text)?;
    check_times(&claims, now)?;
    let (namespace, service_account) = service_account(&claims.sub)?;
    let identity = WorkloadId {
        service_account: service_account.clone(),
        namespace: namespace.clone(),
        control_plane_ns: rules.control_plane_ns.clone(),
        trust_domain: rules.trust_domain.clone(),
    }
    .name();
    if identity != *requested {
        return Err(SaTokenError::WrongIdentity {
            token: identity,
            requested: requested.clone(),
        });
    }
    Ok(Verified {
        namespace,
        service_account,
        identity,
        expires: UNIX_EPOCH + Duration::from_secs(claims.exp),
    })
}

/// The signature (with the first candidate key that verifies it), `aud` and `iss`, and the
/// claims we read.
fn decode(
    rules: &Rules,
    alg: Algorithm,
    candidates: &[&jwks::Key],
    token: &str,
) -> Result<Claims, SaTokenError> {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.set_audience(&[&rules.audience]);
    let mut required: HashSet<String> = ["exp", "sub", "aud"].map(String::from).into();
    if let Some(iss) = &rules.issuer {
        v.set_issuer(&[iss]);
        required.insert("iss".into());
    }
    v.required_spec_claims = required;
    let mut last = SaTokenError::BadSignature;
    for key in candidates {
        match jsonwebtoken::decode::<Claims>(token, &key.key, &v) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                last = map_error(rules, e.kind());
                if last != SaTokenError::BadSignature {
                    break;
                }
            }
        }
    }
    Err(last)
}

fn map_error(rules: &Rules, kind: &ErrorKind) -> SaTokenError {
    let issuer = || SaTokenError::Issuer(rules.issuer.clone().unwrap_or_default());
    let audience = || SaTokenError::Audience(rules.audience.clone());
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_) => SaTokenError::BadSignature,
        ErrorKind::InvalidAudience => audience(),
        ErrorKind::InvalidIssuer => issuer(),
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "aud" => {
            audience()
        }
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "iss" => {
            issuer()
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            SaTokenError::Algorithm("not the key's".into())
        }
        ErrorKind::MissingRequiredClaim(c) => SaTokenError::Malformed(format!("no {c} claim")),
        ErrorKind::InvalidClaimFormat(c) => SaTokenError::Malformed(format!("the {c} claim")),
        ErrorKind::Json(e) => SaTokenError::Malformed(format!("the claims: {e}")),
        other => SaTokenError::Malformed(format!("{other:?}")),
    }
}

fn check_times(claims: &Claims, now: SystemTime) -> Result<(), SaTokenError> {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let skew = CLOCK_SKEW.as_secs();
    if now >= claims.exp.saturating_add(skew) {
        return Err(SaTokenError::Expired(now - claims.exp));
    }
    for t in [claims.nbf, claims.iat].into_iter().flatten() {
        if t > now.saturating_add(skew) {
            return Err(SaTokenError::NotYetValid(t - now));
        }
        if t >= claims.exp {
            return Err(SaTokenError::Times("exp is not after nbf or iat"));
        }
    }
    Ok(())
}

/// `system:serviceaccount:<ns>:<sa>`, each a DNS label (a service-account name with a dot
/// would make an ambiguous identity, and is refused).
fn service_account(sub: &str) -> Result<(String, String), SaTokenError> {
    let bad = || SaTokenError::Subject(quote(sub));
    let rest = sub.strip_prefix("system:serviceaccount:").ok_or_else(bad)?;
    let (ns, sa) = rest.split_once(':').ok_or_else(bad)?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !label(ns) || !label(sa) {
        return Err(bad());
    }
    Ok((ns.to_string(), sa.to_string()))
}
