//! The cluster's issuer, reloaded from disk when its files change, and the control plane's own
//! serving certificate, issued from it.

use crate::error::IssuerError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use remora_identity::Name;
use remora_identity::certs::{Ca, csr, generate_key, key_der};
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The current issuer, and where it comes from.
#[derive(Debug)]
pub struct IssuerStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<Ca>>,
    seen: Mutex<Stamp>,
}

/// What a reload attempt found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded,
    Rejected(IssuerError),
}

fn load(cert: &Path, key: &Path) -> Result<Ca, IssuerError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| IssuerError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    Ca::from_pem(&cert_pem, &key_pem).map_err(|e| IssuerError::Pem(e.to_string()))
}

impl IssuerStore {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, IssuerError> {
        let seen = stamp(&[cert_path, key_path]);
        let ca = load(cert_path, key_path)?;
        Ok(IssuerStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(ca)),
            seen: Mutex::new(seen),
        })
    }

    pub fn current(&self) -> Arc<Ca> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the issuer if either file changed since the last look. An invalid pair is
    /// rejected and the current issuer stays.
    pub fn reload_if_changed(&self) -> Reload {
        let now = stamp(&[&self.cert_path, &self.key_path]);
        {
            let Ok(mut seen) = self.seen.lock() else {
                return Reload::Unchanged;
            };
            if *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match load(&self.cert_path, &self.key_path) {
            Ok(ca) => {
                if let Ok(mut cur) = self.current.write() {
                    *cur = Arc::new(ca);
                }
                Reload::Reloaded
            }
            Err(e) => Reload::Rejected(e),
        }
    }
}

/// The control plane's own TLS certificate, re-issued from the current issuer as it nears
/// expiry or when the issuer changes.
#[derive(Debug)]
pub struct ServingCert {
    name: Name,
    lifetime: Duration,
    current: RwLock<Option<Serving>>,
}

/// The key in use, when to renew it, and the issuer certificate that signed it.
type Serving = (Arc<CertifiedKey>, SystemTime, Vec<u8>);

impl ServingCert {
    pub fn new(name: Name, lifetime: Duration) -> Self {
        ServingCert {
            name,
            lifetime,
            current: RwLock::new(None),
        }
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Issues a new certificate if there is none, it is past 70 % of its life, or `issuer`
    /// is not the one that signed it.
    pub fn refresh(&self, issuer: &Ca) -> Result<(), IssuerError> {
        let issue = |e: &dyn std::fmt::Display| IssuerError::Issue(e.to_string());
        let now = SystemTime::now();
        if let Ok(cur) = self.current.read()
            && let Some((_, renew_at, signer)) = cur.as_ref()
            && *renew_at > now
            && *signer == issuer.cert.to_vec()
        {
            return Ok(());
        }
        let key = generate_key().map_err(|e| issue(&e))?;
        let issued = issuer
            .issue(
                &csr(&key, &self.name).map_err(|e| issue(&e))?,
                &self.name,
                self.lifetime,
            )
            .map_err(|e| issue(&e))?;
        let mut chain = vec![issued.leaf];
        chain.extend(issued.intermediates);
        let provider = remora_identity::tls::provider();
        let signing = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key_der(&key)))
            .map_err(|e| issue(&e))?;
        let remaining = issued.valid_until.duration_since(now).unwrap_or_default();
        let renew_at = now + remaining.mul_f64(0.7);
        if let Ok(mut cur) = self.current.write() {
            *cur = Some((
                Arc::new(CertifiedKey::new(chain, signing)),
                renew_at,
                issuer.cert.to_vec(),
            ));
        }
        info!(identity = %self.name, "issued the control plane's serving certificate");
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .ok()?
            .as_ref()
            .map(|(k, _, _)| k.clone())
    }
}

/// The same certificate as a client's: a control plane presents it to the linked control
/// planes whose exports it watches.
impl rustls::client::ResolvesClientCert for ServingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .ok()?
            .as_ref()
            .map(|(k, _, _)| k.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Watches the issuer files every `every`, reloading on change and keeping the serving
/// certificate fresh. Runs until the task is dropped.
pub async fn watch(
    store: Arc<IssuerStore>,
    serving: Option<Arc<ServingCert>>,
    metrics: crate::metrics::IdentityMetrics,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.reload_if_changed() {
            Reload::Unchanged => {}
            Reload::Reloaded => {
                info!("issuer reloaded from disk");
                metrics.reloaded(true);
                metrics.issuer_expiry(store.current().not_after);
            }
            Reload::Rejected(e) => {
                warn!(error = %e, "the issuer on disk is invalid; keeping the current one");
                metrics.reloaded(false);
            }
        }
        if let Some(s) = &serving
            && let Err(e) = s.refresh(&store.current())
        {
            warn!(error = %e, "cannot issue the control plane's serving certificate");
        }
    }
}
