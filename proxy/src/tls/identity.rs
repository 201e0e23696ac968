//! The proxy's workload identity: one key for the process's lifetime, a certificate from the
//! control plane's Identity service, renewed at 70 % of its remaining validity (clamped to
//! the configured 10 s..24 h by default) without a restart.
//!
//! The key and CSR come from the identity directory when one is configured (Linkerd's
//! `key.p8`, PKCS#8 DER, and `csr.der`): used exactly as they are after checking that they
//! belong together and name this workload, or generated there (mode 0600) when missing.
//! Without a directory the key lives in memory only.
//!
//! key → CSR → `Identity/Certify` (with the token file, re-read each time) → check the answer
//! (chains to the trust anchors, names us, currently valid) → build rustls server and client
//! configs → publish them on a `watch` channel. Every TLS handshake reads the channel's current
//! value, so a renewal takes effect for new connections at once and drops none. On failure the
//! current certificate stays and the request is retried with exponential backoff.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linkerd2_proxy_api::identity::CertifyRequest;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use remora_identity::certs::{
    CertError, KeyPair, check_csr, csr, generate_key, key_der, key_from_pkcs8,
};
use remora_identity::tls::{CertifiedKey, TlsConfigs, configs};
use remora_identity::{Name, TrustAnchors};
use remora_metrics::identity::IdentityMetrics;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use remora_runtime::Backoff;
use remora_runtime::channel::{
    ChannelError, ChannelTls, ControlAddr, ControlChannel, Instrumented, Moved,
};

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom the proxy gets its certificate.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub name: Name,
    pub trust_anchors: TrustAnchors,
    pub token_file: PathBuf,
    /// Where the key and CSR live (`key.p8`, `csr.der`); `None`: in memory only.
    pub dir: Option<PathBuf>,
    pub addr: ControlAddr,
    /// The identity service's own identity (required unless it is on loopback).
    pub svc_name: Option<Name>,
    /// Renewals happen no sooner than this after a certificate arrives...
    pub min_refresh: Duration,
    /// ...and no later.
    pub max_refresh: Duration,
}

/// The credentials currently in force.
#[derive(Clone, Debug)]
pub struct Creds {
    pub name: Name,
    pub tls: TlsConfigs,
    pub expiry: SystemTime,
    pub anchors: TrustAnchors,
}

/// The current credentials; `None` until the first certificate arrives.
pub type CredsRx = watch::Receiver<Option<Arc<Creds>>>;

/// Why one certify attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("the identity service refused: {0}")]
    Refused(String),
    #[error("the identity service at {0} did not answer in time")]
    Timeout(ControlAddr),
    #[error("the identity directory {dir}: {why}")]
    Dir { dir: String, why: String },
    #[error("the identity service returned an unusable certificate: {0}")]
    BadCert(String),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("cannot build TLS configs: {0}")]
    Tls(#[from] rustls::Error),
}

/// ALPN protocols the mesh configs offer and accept.
pub type Alpn = &'static [&'static [u8]];

/// Starts the renewal task; returns the credentials channel.
pub fn spawn(
    config: IdentityConfig,
    alpn: Alpn,
    metrics: IdentityMetrics,
    client_metrics: remora_metrics::client::ControlClientMetrics,
) -> Result<CredsRx, IdentityError> {
    let (key, csr) = match &config.dir {
        Some(dir) => documents(dir, &config.name)?,
        None => {
            let key = generate_key().map_err(|e| IdentityError::BadCert(e.to_string()))?;
            let csr = csr(&key, &config.name).map_err(|e| IdentityError::BadCert(e.to_string()))?;
            (key, csr)
        }
    };
    let tls = ChannelTls::anonymous(
        &config.addr,
        config.svc_name.as_ref(),
        &config.trust_anchors,
    )?;
    let channel = ControlChannel::new(&config.addr, tls)?;
    let (tx, rx) = watch::channel(None);
    let span = info_span!("identity", name = %config.name);
    tokio::spawn(
        renew(Renewer {
            config,
            key,
            csr,
            moved: channel.moved(),
            client: IdentityClient::new(Instrumented::new(channel, "identity", client_metrics)),
            alpn,
            metrics,
            tx,
        })
        .instrument(span),
    );
    Ok(rx)
}

struct Renewer {
    config: IdentityConfig,
    key: KeyPair,
    csr: Vec<u8>,
    client: IdentityClient<Instrumented>,
    /// The identity service's addresses changed: a failed renewal retries at once.
    moved: Moved,
    alpn: Alpn,
    metrics: IdentityMetrics,
    tx: watch::Sender<Option<Arc<Creds>>>,
}

/// The workload's key and CSR from `dir`: `key.p8` and `csr.der` as they are, after checking
/// that the CSR carries the key and names `name`; generated and written there (mode 0600) when
/// missing. A key without a CSR gets one; a CSR without its key is replaced.
pub fn documents(dir: &Path, name: &Name) -> Result<(KeyPair, Vec<u8>), IdentityError> {
    let fail = |why: String| IdentityError::Dir {
        dir: dir.display().to_string(),
        why,
    };
    let cert = |e: CertError| e.to_string();
    let (key_path, csr_path) = (dir.join("key.p8"), dir.join("csr.der"));
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(format!("cannot create it: {e}")))?;
    }
    let key_file = read_nonempty(&key_path).map_err(&fail)?;
    let csr_file = read_nonempty(&csr_path).map_err(&fail)?;
    match (key_file, csr_file) {
        (Some(k), Some(c)) => {
            let key = key_from_pkcs8(&k).map_err(|e| fail(format!("key.p8: {}", cert(e))))?;
            check_csr(&c, name, &key).map_err(|e| fail(format!("csr.der: {}", cert(e))))?;
            info!(dir = %dir.display(), "using the identity directory's key and CSR");
            Ok((key, c))
        }
        (Some(k), None) => {
            let key = key_from_pkcs8(&k).map_err(|e| fail(format!("key.p8: {}", cert(e))))?;
            let c = csr(&key, name).map_err(|e| fail(cert(e)))?;
            write_private(&csr_path, &c).map_err(&fail)?;
            info!(dir = %dir.display(), "wrote a CSR for the identity directory's key");
            Ok((key, c))
        }
        (None, _) => {
            let key = generate_key().map_err(|e| fail(cert(e)))?;
            let c = csr(&key, name).map_err(|e| fail(cert(e)))?;
            write_private(&key_path, key_der(&key).secret_pkcs8_der()).map_err(&fail)?;
            write_private(&csr_path, &c).map_err(&fail)?;
            info!(dir = %dir.display(), "generated a key and CSR in the identity directory");
            Ok((key, c))
        }
    }
}

/// A file's bytes; `None` when it is missing or empty.
fn read_nonempty(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `bytes` to `path`, readable and writable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let why = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(why)?;
    // An existing file keeps its mode on open: narrow it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(why)?;
    f.write_all(bytes).map_err(why)?;
    f.sync_all().map_err(why)
}

/// When to renew a certificate valid until `until`: at 70 % of what remains, within
/// `min..=max`.
pub fn refresh_in(now: SystemTime, until: SystemTime, min: Duration, max: Duration) -> Duration {
    let remaining = until.duration_since(now).unwrap_or_default();
    remaining.mul_f64(0.7).clamp(min, max.max(min))
}

async fn renew(mut r: Renewer) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        match r.certify().await {
            Ok(creds) => {
                let expiry = creds.expiry;
                r.metrics.renewed(expiry);
                let wait = refresh_in(
                    SystemTime::now(),
                    expiry,
                    r.config.min_refresh,
                    r.config.max_refresh,
                );
                info!(expires_in = ?expiry.duration_since(SystemTime::now()).unwrap_or_default(), renew_in = ?wait, "certified");
                if r.tx.send(Some(Arc::new(creds))).is_err() {
                    return;
                }
                backoff.reset();
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                r.metrics.failed();
                warn!(error = %e, retry_in = ?backoff.peek(), "certificate request failed; keeping the current certificate");
                r.moved.or_backoff(&mut backoff).await;
            }
        }
    }
}

impl Renewer {
    async fn certify(&mut self) -> Result<Creds, IdentityError> {
        let token = tokio::fs::read(&self.config.token_file)
            .await
            .map_err(|source| IdentityError::Token {
                path: self.config.token_file.display().to_string(),
                source,
            })?;
        let req = CertifyRequest {
            identity: self.config.name.to_string(),
            token,
            certificate_signing_request: self.csr.clone(),
        };
        let rsp = tokio::time::timeout(CERTIFY_TIMEOUT, self.client.certify(req))
            .await
            .map_err(|_| IdentityError::Timeout(self.config.addr.clone()))?
            .map_err(|s| IdentityError::Refused(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let leaf = CertificateDer::from(rsp.leaf_certificate);
        let intermediates: Vec<CertificateDer<'static>> = rsp
            .intermediate_certificates
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let now = SystemTime::now();
        self.config
            .trust_anchors
            .verify(&leaf, &intermediates, &self.config.name, now)
            .map_err(|e| IdentityError::BadCert(e.to_string()))?;
        let not_after =
            remora_identity::verify::not_after(&leaf).map_err(IdentityError::BadCert)?;
        let expiry = match rsp.valid_until {
            Some(t) if t.seconds > 0 => {
                (UNIX_EPOCH + Duration::from_secs(t.seconds as u64)).min(not_after)
            }
            _ => not_after,
        };
        let mut chain = vec![leaf];
        chain.extend(intermediates);
        let certified = CertifiedKey {
            name: self.config.name.clone(),
            chain,
            key: Arc::new(PrivateKeyDer::Pkcs8(key_der(&self.key))),
            expiry,
        };
        let tls = configs(&certified, &self.config.trust_anchors, self.alpn)?;
        Ok(Creds {
            name: self.config.name.clone(),
            tls,
            expiry,
            anchors: self.config.trust_anchors.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn refresh_at_seventy_percent_clamped() {
        let now = SystemTime::now();
        let at = |secs| refresh_in(now, now + Duration::from_secs(secs), MIN, MAX);
        assert_eq!(at(100), Duration::from_secs(70));
        assert_eq!(at(5), MIN);
        assert_eq!(refresh_in(now, now - Duration::from_secs(5), MIN, MAX), MIN);
        assert_eq!(at(30 * 86_400), MAX);
        // Configured bounds apply.
        let short = Duration::from_secs(2);
        assert_eq!(
            refresh_in(now, now + Duration::from_secs(100), short, short),
            short
        );
    }

    fn web() -> Name {
        "web.shop.serviceaccount.identity.linkerd.cluster.local"
            .parse()
            .unwrap()
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("remora-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_missing_directory_gets_a_key_and_csr_readable_by_the_owner_only() {
        let dir = tempdir("new");
        let (key, csr) = documents(&dir, &web()).unwrap();
        for f in ["key.p8", "csr.der"] {
            let meta = std::fs::metadata(dir.join(f)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        }
        assert_eq!(std::fs::read(dir.join("csr.der")).unwrap(), csr);
        // Read back, they are the same key and CSR.
        let (again, csr2) = documents(&dir, &web()).unwrap();
        assert_eq!(csr2, csr);
        assert_eq!(again.public_key_raw(), key.public_key_raw());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directorys_documents_are_used_as_they_are_or_refused() {
        let dir = tempdir("given");
        std::fs::create_dir_all(&dir).unwrap();
        let key = generate_key().unwrap();
        std::fs::write(dir.join("key.p8"), key_der(&key).secret_pkcs8_der()).unwrap();
        let given = csr(&key, &web()).unwrap();
        std::fs::write(dir.join("csr.der"), &given).unwrap();
        let (used, c) = documents(&dir, &web()).unwrap();
        assert_eq!(c, given, "the CSR is sent exactly as given");
        assert_eq!(used.public_key_raw(), key.public_key_raw());
        // A CSR for another workload, or another key, is refused: never sent.
        let db: Name = "db.shop.serviceaccount.identity.linkerd.cluster.local"
            .parse()
            .unwrap();
        assert!(matches!(
            documents(&dir, &db),
            Err(IdentityError::Dir { .. })
        ));
        let other = generate_key().unwrap();
        std::fs::write(dir.join("csr.der"), csr(&other, &web()).unwrap()).unwrap();
        let e = documents(&dir, &web()).unwrap_err();
        assert!(e.to_string().contains("csr.der"), "{e}");
        // A garbage key is refused too.
        std::fs::write(dir.join("key.p8"), b"garbage").unwrap();
        let e = documents(&dir, &web()).unwrap_err();
        assert!(e.to_string().contains("key.p8"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
