//! gRPC channels to a control plane: plaintext when it is on loopback, otherwise TLS that
//! verifies the control plane's identity against the trust anchors (and presents no client
//! certificate: the proxy may not have one yet).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use remora_identity::{Name, TrustAnchors};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the control plane at {0} is not on loopback, so its identity must be configured")]
    NeedsIdentity(SocketAddr),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Endpoint(#[from] tonic::transport::Error),
}

/// A lazily connecting channel to the control plane at `addr`. A channel reconnects by itself
/// when the connection drops.
pub fn channel(
    addr: SocketAddr,
    identity: Option<&Name>,
    anchors: &TrustAnchors,
) -> Result<Channel, ChannelError> {
    let endpoint = |scheme: &str| {
        Endpoint::from_shared(format!("{scheme}://{addr}")).map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
        })
    };
    if addr.ip().is_loopback() && identity.is_none() {
        return Ok(endpoint("http")?.connect_lazy());
    }
    let identity = identity.ok_or(ChannelError::NeedsIdentity(addr))?.clone();
    let mut config = remora_identity::tls::anonymous_client(anchors)?
        .as_ref()
        .clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnect {
        addr,
        identity,
        tls: TlsConnector::from(Arc::new(config)),
    };
    Ok(endpoint("https")?.connect_with_connector_lazy(connector))
}

/// A plaintext channel (for a control plane on loopback).
pub fn plaintext_channel(addr: SocketAddr) -> Result<Channel, ChannelError> {
    if !addr.ip().is_loopback() {
        return Err(ChannelError::NeedsIdentity(addr));
    }
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Connects to one fixed address with TLS, whatever URI the channel asks for.
#[derive(Clone)]
struct TlsConnect {
    addr: SocketAddr,
    identity: Name,
    tls: TlsConnector,
}

impl tonic::codegen::Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(this.identity.to_string())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = this.tls.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
