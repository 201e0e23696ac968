//! Workload tokens: proof that a workload may obtain one identity's certificate, verified
//! without a database.
//!
//! A token is `rmt1.<identity>.<expiry-unix-seconds>.<hex HMAC-SHA256>`, the MAC taken with a
//! key only the control plane holds over everything before it. A workload holding its own token
//! can only ever obtain its own identity, and only until the token expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use remora_identity::Name;
use ring::hmac;

const PREFIX: &str = "rmt1";
/// Token keys are this many random bytes, stored hex-encoded.
pub const KEY_LEN: usize = 32;

/// The token-signing key.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token key file must hold {KEY_LEN} hex-encoded bytes")]
    BadKey,
}

/// A verified token's claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub identity: Name,
    pub expires: SystemTime,
}

impl TokenKey {
    /// Generates a fresh key, returned hex-encoded for the key file.
    pub fn generate_hex() -> Result<String, TokenError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| TokenError::BadKey)?;
        Ok(hex(&bytes))
    }

    /// Reads a key file's contents (hex, surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<TokenKey, TokenError> {
        let bytes = unhex(text.trim()).ok_or(TokenError::BadKey)?;
        if bytes.len() != KEY_LEN {
            return Err(TokenError::BadKey);
        }
        Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// Mints a token for `identity`, valid for `ttl`.
    pub fn mint(&self, identity: &Name, ttl: Duration) -> String {
        let expires = SystemTime::now()
            .checked_add(ttl)
            .unwrap_or(SystemTime::now())
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let body = format!("{PREFIX}.{identity}.{expires}");
        let tag = hmac::sign(&self.0, body.as_bytes());
        format!("{body}.{}", hex(tag.as_ref()))
    }

    /// Verifies a token's signature and expiry and returns its claims.
    pub fn verify(&self, token: &[u8], now: SystemTime) -> Result<Claims, TokenError> {
        let token = std::str::from_utf8(token)
            .map_err(|_| TokenError::Malformed)?
            .trim();
        let (body, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = unhex(tag).ok_or(TokenError::Malformed)?;
        hmac::verify(&self.0, body.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let rest = body
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or(TokenError::Malformed)?;
        let (identity, expires) = rest.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let identity: Name = identity.parse().map_err(|_| TokenError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let expires = UNIX_EPOCH + Duration::from_secs(expires);
        if expires <= now {
            return Err(TokenError::Expired);
        }
        Ok(Claims { identity, expires })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_hex(&TokenKey::generate_hex().unwrap()).unwrap()
    }

    fn web() -> Name {
        "web.shop.serviceaccount.identity.linkerd.east.example"
            .parse()
            .unwrap()
    }

    #[test]
    fn mints_and_verifies() {
        let k = key();
        let t = k.mint(&web(), Duration::from_secs(60));
        let claims = k.verify(t.as_bytes(), SystemTime::now()).unwrap();
        assert_eq!(claims.identity, web());
        // Trailing newline from a token file is fine.
        assert!(
            k.verify(format!("{t}\n").as_bytes(), SystemTime::now())
                .is_ok()
        );
    }

    #[test]
    fn refuses_expired_forged_and_foreign_tokens() {
        let k = key();
        let t = k.mint(&web(), Duration::from_secs(60));
        let later = SystemTime::now() + Duration::from_secs(120);
        assert_eq!(k.verify(t.as_bytes(), later), Err(TokenError::Expired));
        let forged = t.replace("web.shop", "db.shop");
        assert_eq!(
            k.verify(forged.as_bytes(), SystemTime::now()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            key().verify(t.as_bytes(), SystemTime::now()),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "rmt1", "a.b", "rmt1.x.y.zz", "\u{ff}"] {
            assert!(
                k.verify(junk.as_bytes(), SystemTime::now()).is_err(),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn keys_must_be_32_hex_bytes() {
        assert_eq!(TokenKey::from_hex("abcd").unwrap_err(), TokenError::BadKey);
        assert_eq!(
            TokenKey::from_hex(&"zz".repeat(32)).unwrap_err(),
            TokenError::BadKey
        );
        assert!(TokenKey::from_hex(&format!("{}\n", "ab".repeat(32))).is_ok());
    }
}
