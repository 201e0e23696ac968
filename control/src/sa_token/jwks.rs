//! The service-account issuer's public keys: a JWKS document as the Kubernetes API server
//! publishes it (`kubectl get --raw /openid/v1/jwks`), checked key by key when it is read, and
//! reloaded from its file when the file changes.
//!
//! Bounds: the file at most [`MAX_JWKS_BYTES`], at most [`MAX_KEYS`] keys. Every key must be
//! usable for signatures by the algorithms we verify (RSA ≥ 2048 bits for RS256; EC P-256 for
//! ES256, P-384 for ES384); a symmetric (`oct`) key, a key marked for encryption, an
//! algorithm we do not verify or two keys with one `kid` make the whole file invalid, so an
//! operator's mistake is reported instead of silently narrowing what verifies.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tracing::{info, warn};

use crate::metrics::IdentityMetrics;

/// The largest JWKS file read.
pub const MAX_JWKS_BYTES: u64 = 256 * 1024;
/// The most keys a JWKS may hold.
pub const MAX_KEYS: usize = 32;

/// One usable public key.
#[derive(Clone)]
pub struct Key {
    /// Its `kid`, when the document gives one (Kubernetes always does).
    pub kid: Option<String>,
    /// The one algorithm it verifies.
    pub alg: Algorithm,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// A checked JWKS.
#[derive(Clone, Debug, Default)]
pub struct Jwks {
    pub keys: Vec<Key>,
}

/// A key as the document gives it (only the members we look at).
#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Reads a JWKS document; the error names the key (by position and `kid`) and the problem.
    pub fn parse(bytes: &[u8]) -> Result<Jwks, String> {
        if bytes.len() as u64 > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        let raw: RawJwks =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
        if raw.keys.is_empty() {
            return Err("no keys".into());
        }
        if raw.keys.len() > MAX_KEYS {
            return Err(format!(
                "{} keys, more than the {MAX_KEYS} allowed",
                raw.keys.len()
            ));
        }
        let mut keys: Vec<Key> = Vec::with_capacity(raw.keys.len());
        for (i, value) in raw.keys.into_iter().enumerate() {
            let raw: RawKey =
                serde_json::from_value(value).map_err(|e| format!("keys[{i}]: {e}"))?;
            let name = match &raw.kid {
                Some(kid) => format!("keys[{i}] (kid {kid:?})"),
                None => format!("keys[{i}]"),
            };
            let key = parse_key(raw).map_err(|e| format!("{name}: {e}"))?;
            if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                return Err(format!("{name}: the kid is used twice"));
            }
            keys.push(key);
        }
        Ok(Jwks { keys })
    }
}

fn component(field: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("no {field}"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| format!("{field} is not base64url: {e}"))
}

fn parse_key(raw: RawKey) -> Result<Key, String> {
    if let Some(u) = &raw.key_use
        && u != "sig"
    {
        return Err(format!("use {u:?}: only signature keys (\"sig\") are read"));
    }
    let (alg, key) = match raw.kty.as_str() {
        "RSA" => {
            let mut n = component("n", raw.n.as_ref())?;
            let e = component("e", raw.e.as_ref())?;
            let zeros = n.iter().take_while(|b| **b == 0).count();
            n.drain(..zeros);
            if !(256..=1024).contains(&n.len()) {
                return Err(format!(
                    "an RSA modulus of {} bits: 2048 to 8192 are verified",
                    n.len() * 8
                ));
            }
            if e.is_empty() || e.len() > 4 {
                return Err("the RSA exponent is not a small integer".into());
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        "EC" => {
            let (alg, len) = match raw.crv.as_deref() {
                Some("P-256") => (Algorithm::ES256, 32),
                Some("P-384") => (Algorithm::ES384, 48),
                other => {
                    return Err(format!(
                        "curve {other:?}: P-256 (ES256) and P-384 (ES384) are verified"
                    ));
                }
            };
            let x = component("x", raw.x.as_ref())?;
            let y = component("y", raw.y.as_ref())?;
            if x.len() != len || y.len() != len {
                return Err(format!("x and y must be {len} bytes each"));
            }
            // The uncompressed point, as ring reads it.
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (alg, DecodingKey::from_ec_der(&point))
        }
        other => {
            return Err(format!(
                "key type {other:?}: only RSA and EC public keys are read (a symmetric key \
                 would let anyone holding it mint tokens)"
            ));
        }
    };
    if let Some(a) = &raw.alg {
        let want = format!("{alg:?}");
        if *a != want {
            return Err(format!(
                "alg {a:?} for this key: {want} is the algorithm verified with it"
            ));
        }
    }
    Ok(Key {
        kid: raw.kid,
        alg,
        key,
    })
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads and checks a JWKS file (at most [`MAX_JWKS_BYTES`]).
pub fn load(path: &Path) -> Result<Jwks, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Jwks::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The keys in use, and the file they come from.
#[derive(Debug)]
pub struct JwksStore {
    path: PathBuf,
    current: RwLock<Arc<Jwks>>,
    seen: Mutex<Stamp>,
}

/// What a reload attempt found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded(usize),
    Rejected(String),
}

impl JwksStore {
    /// Loads the file; it must be valid.
    pub fn load(path: &Path) -> Result<JwksStore, String> {
        let seen = stamp(path);
        let jwks = load(path)?;
        Ok(JwksStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(jwks)),
            seen: Mutex::new(seen),
        })
    }

    /// A store of fixed keys (no file).
    pub fn fixed(jwks: Jwks) -> JwksStore {
        JwksStore {
            path: PathBuf::new(),
            current: RwLock::new(Arc::new(jwks)),
            seen: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn current(&self) -> Arc<Jwks> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the keys if the file changed since the last look; an invalid file is rejected
    /// and the current keys stay.
    pub fn reload_if_changed(&self) -> Reload {
        if self.path.as_os_str().is_empty() {
            return Reload::Unchanged;
        }
        let now = stamp(&self.path);
        {
            let Ok(mut seen) = self.seen.lock() else {
                return Reload::Unchanged;
            };
            if *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match load(&self.path) {
            Ok(jwks) => {
                let n = jwks.keys.len();
                if let Ok(mut cur) = self.current.write() {
                    *cur = Arc::new(jwks);
                }
                Reload::Reloaded(n)
            }
            Err(e) => Reload::Rejected(e),
        }
    }
}

/// Watches the JWKS file every `every`, reloading it on change. Runs until the task is
/// dropped.
pub async fn watch(store: Arc<JwksStore>, metrics: IdentityMetrics, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.reload_if_changed() {
            Reload::Unchanged => {}
            Reload::Reloaded(keys) => {
                info!(keys, path = %store.path().display(), "service-account keys reloaded");
                metrics.jwks_reloaded(true, keys);
            }
            Reload::Rejected(error) => {
                warn!(%error, "the service-account keys on disk are invalid; keeping the current ones");
                metrics.jwks_reloaded(false, 0);
            }
        }
    }
}
