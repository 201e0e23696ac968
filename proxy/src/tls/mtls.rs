//! Mutual TLS between proxies (docs/wire-protocol.md#tls): dialling an endpoint and terminating inbound.
//!
//! Outbound, an endpoint with an identity is dialled with mTLS: TLS 1.3, SNI = its server name
//! or identity, our certificate presented, its chain verified against the trust anchors and the
//! identity required among its SANs; with opaque transport (or an authority override) the peer
//! proxy's inbound port is dialled, ALPN `transport.l5d.io/v1` offered, and the transport header
//! sent before any application byte. Anything else is plaintext with a recorded reason. Every
//! handshake reads the current credentials, so a rotation applies to the next connection and
//! drops none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use remora_identity::Name;
use remora_identity::verify::VerifyError;
use remora_metrics::tcp::{RefuseReason, Tls};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::discovery::Endpoint;
use crate::tls::identity::{Creds, CredsRx};
use crate::transport::header::{self, SessionProtocol, TransportHeader};
use crate::transport::io::{BoxIo, Io, ReadAhead};
use crate::transport::orig_dst::LocalIps;
use crate::transport::tcp::{Connect, ConnectError, connect};

/// Why a connection goes without TLS (Linkerd's `no_tls_reason` values).
pub mod no_tls {
    pub const NOT_PROVIDED_BY_DISCOVERY: &str = "not_provided_by_service_discovery";
    pub const LOOPBACK: &str = "loopback";
    pub const LOCAL_IDENTITY_DISABLED: &str = "local_identity_disabled";
    pub const NO_TLS_FROM_REMOTE: &str = "no_tls_from_remote";
}

/// This proxy's credentials, if it has an identity.
#[derive(Clone, Debug)]
pub struct LocalTls {
    creds: Option<CredsRx>,
}

impl LocalTls {
    pub fn new(creds: Option<CredsRx>) -> Self {
        LocalTls { creds }
    }

    pub fn enabled(&self) -> bool {
        self.creds.is_some()
    }

    /// The credentials in force now (`None` until the first certificate).
    pub fn now(&self) -> Option<Arc<Creds>> {
        self.creds.as_ref().and_then(|rx| rx.borrow().clone())
    }

    /// The credentials, waiting up to `wait` for the first certificate.
    pub async fn wait(&self, wait: Duration) -> Option<Arc<Creds>> {
        let mut rx = self.creds.clone()?;
        let got = tokio::time::timeout(wait, rx.wait_for(|c| c.is_some())).await;
        match got {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    }
}

/// How an mTLS handshake with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsFailure {
    #[error("{0}")]
    IdentityMismatch(String),
    #[error("its certificate does not chain to our trust anchors")]
    Untrusted,
    #[error("its certificate has expired")]
    Expired,
    #[error("{0}")]
    Other(String),
}

impl TlsFailure {
    fn from_io(e: &std::io::Error) -> TlsFailure {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return TlsFailure::Other(e.to_string());
        };
        use rustls::CertificateError as C;
        match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => TlsFailure::Untrusted,
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                TlsFailure::Expired
            }
            rustls::Error::InvalidCertificate(C::Other(other)) => {
                let inner: &(dyn std::error::Error + 'static) = &*other.0;
                match inner.downcast_ref::<VerifyError>() {
                    Some(v @ VerifyError::WrongIdentity { .. }) => {
                        TlsFailure::IdentityMismatch(v.to_string())
                    }
                    Some(VerifyError::Chain(webpki::Error::CertExpired { .. })) => {
                        TlsFailure::Expired
                    }
                    Some(VerifyError::Chain(_)) => TlsFailure::Untrusted,
                    _ => TlsFailure::Other(tls.to_string()),
                }
            }
            other => TlsFailure::Other(other.to_string()),
        }
    }

    pub fn reason(&self) -> RefuseReason {
        match self {
            TlsFailure::IdentityMismatch(_) => RefuseReason::TlsIdentityMismatch,
            TlsFailure::Untrusted => RefuseReason::TlsUntrusted,
            TlsFailure::Expired => RefuseReason::TlsExpired,
            TlsFailure::Other(_) => RefuseReason::TlsHandshake,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("mTLS to {addr} expecting identity {expected} failed: {failure}")]
    Tls {
        addr: SocketAddr,
        expected: Name,
        failure: TlsFailure,
    },
    #[error("{addr} requires mTLS as {expected}, but this proxy has no certificate yet")]
    NoCredentials { addr: SocketAddr, expected: Name },
    #[error("{addr} did not negotiate {}", String::from_utf8_lossy(header::ALPN))]
    NoTransportAlpn { addr: SocketAddr },
    #[error("sending the transport header to {addr}: {source}")]
    Header {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl DialError {
    pub fn reason(&self) -> RefuseReason {
        match self {
            DialError::Tls { failure, .. } => failure.reason(),
            DialError::Connect(_) | DialError::Header { .. } => RefuseReason::ConnectFailed,
            DialError::NoCredentials { .. } | DialError::NoTransportAlpn { .. } => {
                RefuseReason::TlsHandshake
            }
        }
    }
}

/// A connection the outbound opened, and how it is secured.
#[allow(missing_debug_implementations)]
pub struct Dialled {
    pub io: BoxIo,
    pub tls: Tls,
    pub server_id: Option<Arc<str>>,
    /// Where the TCP connection went.
    pub addr: SocketAddr,
}

/// What to dial.
#[derive(Clone, Copy, Debug)]
pub struct DialTarget<'a> {
    /// The address to reach (the endpoint's, or the original destination).
    pub addr: SocketAddr,
    /// What discovery says about it.
    pub endpoint: Option<&'a Endpoint>,
    /// The HTTP version the connection will carry, for the transport header.
    pub protocol: Option<SessionProtocol>,
}

/// Dials `target`: mTLS when discovery gives it an identity, plaintext otherwise.
pub async fn dial(
    target: DialTarget<'_>,
    local: &LocalTls,
    own_ips: &LocalIps,
    how: Connect,
) -> Result<Dialled, DialError> {
    let plain = |reason: &'static str| async move {
        let io = connect(target.addr, how).await?;
        Ok::<_, DialError>(Dialled {
            io: Box::new(io),
            tls: Tls::NoIdentity(reason),
            server_id: None,
            addr: target.addr,
        })
    };
    let Some((ep, identity)) = target
        .endpoint
        .and_then(|e| e.identity.as_ref().map(|i| (e, i)))
    else {
        return plain(no_tls::NOT_PROVIDED_BY_DISCOVERY).await;
    };
    if own_ips.contains(target.addr.ip()) {
        return plain(no_tls::LOOPBACK).await;
    }
    if !local.enabled() {
        return plain(no_tls::LOCAL_IDENTITY_DISABLED).await;
    }
    let creds = local
        .wait(how.timeout)
        .await
        .ok_or_else(|| DialError::NoCredentials {
            addr: target.addr,
            expected: identity.clone(),
        })?;
    let transport = ep.opaque_transport_port.is_some() || ep.authority_override.is_some();
    let addr = match (ep.opaque_transport_port, &ep.authority_override) {
        (Some(port), None) => SocketAddr::new(target.addr.ip(), port),
        _ => target.addr,
    };
    let tcp = connect(addr, how).await?;
    let config = if transport {
        creds.tls.client_alpn.clone()
    } else {
        creds.tls.client.clone()
    };
    let sni = ep.server_name.as_ref().unwrap_or(identity);
    let name = ServerName::try_from(sni.to_string()).map_err(|e| DialError::Tls {
        addr,
        expected: identity.clone(),
        failure: TlsFailure::Other(e.to_string()),
    })?;
    let handshake = TlsConnector::from(config).connect(name, ReadAhead::new(tcp));
    let mut tls = match tokio::time::timeout(how.timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return Err(DialError::Tls {
                addr,
                expected: identity.clone(),
                failure: TlsFailure::from_io(&e),
            });
        }
        Err(_) => {
            return Err(DialError::Tls {
                addr,
                expected: identity.clone(),
                failure: TlsFailure::Other("the handshake timed out".into()),
            });
        }
    };
    tracing::debug!(
        server.id = %identity,
        kx = ?tls.get_ref().1.negotiated_key_exchange_group().map(|g| g.name()),
        "mTLS established"
    );
    if transport {
        if tls.get_ref().1.alpn_protocol() != Some(header::ALPN) {
            return Err(DialError::NoTransportAlpn { addr });
        }
        let header = match ep
            .authority_override
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
        {
            // Through a gateway: name the service and its port.
            Some((host, port)) => TransportHeader {
                port: port.parse().unwrap_or(target.addr.port()),
                name: Some(host.to_string()),
                protocol: target.protocol,
            },
            // Opaque transport: the port the client wanted on the pod.
            None => TransportHeader {
                port: target.addr.port(),
                name: None,
                protocol: target.protocol,
            },
        };
        tls.write_all(&header.encode())
            .await
            .map_err(|source| DialError::Header { addr, source })?;
    }
    Ok(Dialled {
        io: Box::new(tls),
        tls: Tls::Established,
        server_id: Some(Arc::from(identity.as_str())),
        addr,
    })
}

/// An inbound mTLS connection after the handshake.
#[allow(missing_debug_implementations)]
pub struct Accepted<T> {
    pub io: tokio_rustls::server::TlsStream<ReadAhead<T>>,
    /// The client's identity, when it presented a certificate.
    pub client_id: Option<Name>,
    /// Whether the client negotiated ALPN `transport.l5d.io/v1` (a transport header follows).
    pub transport: bool,
}

/// Terminates mTLS on `io` with the current credentials.
pub async fn accept<T: Io>(
    io: T,
    creds: &Creds,
    timeout: Duration,
) -> Result<Accepted<T>, TlsFailure> {
    let acceptor = TlsAcceptor::from(creds.tls.server.clone());
    let tls = match tokio::time::timeout(timeout, acceptor.accept(ReadAhead::new(io))).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(TlsFailure::from_io(&e)),
        Err(_) => return Err(TlsFailure::Other("the handshake timed out".into())),
    };
    let conn = tls.get_ref().1;
    let client_id = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(remora_identity::verify::peer_identity);
    let transport = conn.alpn_protocol() == Some(header::ALPN);
    tracing::debug!(
        client.id = ?client_id.as_ref().map(|n| n.as_str()),
        kx = ?conn.negotiated_key_exchange_group().map(|g| g.name()),
        "mTLS accepted"
    );
    Ok(Accepted {
        io: tls,
        client_id,
        transport,
    })
}

/// Boxes a TCP stream for the plaintext paths.
pub fn boxed(io: TcpStream) -> BoxIo {
    Box::new(io)
}

#[cfg(test)]
mod tests;
