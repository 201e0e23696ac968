//! The control plane's errors: [`Invalid`] for a configuration value that cannot be used (the
//! message names the field), [`Error`] for why `remora control` cannot start or stopped.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use remora_runtime::channel::ChannelError;

use crate::config::ConfigError;

/// A configuration value that cannot be used; the message names the field and says why
/// (`links[west].mode: "mesh" is not flat or gateway`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(s: String) -> Self {
        Invalid(s)
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Self {
        Invalid(s.to_string())
    }
}

impl Invalid {
    /// Whether the message mentions `text` (for tests and log checks).
    pub fn contains(&self, text: &str) -> bool {
        self.0.contains(text)
    }
}

/// Why the issuer's files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Pem(String),
    #[error("cannot issue the control plane's certificate: {0}")]
    Issue(String),
}

/// Why `remora control` cannot start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("issuer: {0}")]
    Issuer(#[from] IssuerError),
    #[error("token key {path}: {reason}")]
    TokenKey { path: PathBuf, reason: String },
    #[error("service-account keys (identity.kubernetes.jwks) {0}")]
    Jwks(String),
    #[error("trust anchors {path}: {reason}")]
    TrustAnchors { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS setup: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("links need the control plane's TLS identity")]
    LinksNeedTls,
    #[error("link {cluster}: {source}")]
    Link {
        cluster: String,
        source: ChannelError,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}
