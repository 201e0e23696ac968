//! The proxy's workload identity: one key for the process's lifetime, a certificate from the
//! control plane's Identity service, renewed at 70 % of its remaining validity (clamped to
//! 10 s..24 h) without a restart.
//!
//! key → CSR → `Identity/Certify` (with the token file, re-read each time) → check the answer
//! (chains to the trust anchors, names us, currently valid) → build rustls server and client
//! configs → publish them on a `watch` channel. Every TLS handshake reads the channel's current
//! value, so a renewal takes effect for new connections at once and drops none. On failure the
//! current certificate stays and the request is retried with exponential backoff.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use linkerd2_proxy_api::identity::CertifyRequest;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use remora_identity::certs::{KeyPair, csr, generate_key, key_der};
use remora_identity::tls::{CertifiedKey, TlsConfigs, configs};
use remora_identity::{Name, TrustAnchors};
use remora_metrics::identity::IdentityMetrics;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use remora_runtime::Backoff;
use remora_runtime::channel::{ChannelError, Instrumented, channel};

const MIN_REFRESH: Duration = Duration::from_secs(10);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom the proxy gets its certificate.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub name: Name,
    pub trust_anchors: TrustAnchors,
    pub token_file: PathBuf,
    pub addr: SocketAddr,
    /// The identity service's own identity (required unless it is on loopback).
    pub svc_name: Option<Name>,
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
    Timeout(SocketAddr),
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
    let key = generate_key().map_err(|e| IdentityError::BadCert(e.to_string()))?;
    let csr = csr(&key, &config.name).map_err(|e| IdentityError::BadCert(e.to_string()))?;
    let channel = channel(config.addr, config.svc_name.as_ref(), &config.trust_anchors)?;
    let (tx, rx) = watch::channel(None);
    let span = info_span!("identity", name = %config.name);
    tokio::spawn(
        renew(Renewer {
            config,
            key,
            csr,
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
    alpn: Alpn,
    metrics: IdentityMetrics,
    tx: watch::Sender<Option<Arc<Creds>>>,
}

/// When to renew a certificate valid until `until`: at 70 % of what remains, within bounds.
pub fn refresh_in(now: SystemTime, until: SystemTime) -> Duration {
    let remaining = until.duration_since(now).unwrap_or_default();
    remaining.mul_f64(0.7).clamp(MIN_REFRESH, MAX_REFRESH)
}

async fn renew(mut r: Renewer) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        match r.certify().await {
            Ok(creds) => {
                let expiry = creds.expiry;
                r.metrics.renewed(expiry);
                let wait = refresh_in(SystemTime::now(), expiry);
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
                backoff.wait().await;
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
            .map_err(|_| IdentityError::Timeout(self.config.addr))?
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

    #[test]
    fn refresh_at_seventy_percent_clamped() {
        let now = SystemTime::now();
        assert_eq!(
            refresh_in(now, now + Duration::from_secs(100)),
            Duration::from_secs(70)
        );
        assert_eq!(refresh_in(now, now + Duration::from_secs(5)), MIN_REFRESH);
        assert_eq!(refresh_in(now, now - Duration::from_secs(5)), MIN_REFRESH);
        assert_eq!(
            refresh_in(now, now + Duration::from_secs(30 * 86_400)),
            MAX_REFRESH
        );
    }
}
