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
use remora_metrics::client::ControlClientMetrics;
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
    if addr.ip().is_loopback() && identity.is_none() {
        return Ok(endpoint("http", addr)?.connect_lazy());
    }
    let identity = identity.ok_or(ChannelError::NeedsIdentity(addr))?.clone();
    let config = remora_identity::tls::anonymous_client(anchors)?
        .as_ref()
        .clone();
    tls_channel(addr, identity, config)
}

/// A lazily connecting TLS channel to `addr`, which must present `identity`, with `config`
/// (its verifier and client certificate; ALPN is set to h2 here).
pub fn tls_channel(
    addr: SocketAddr,
    identity: Name,
    mut config: rustls::ClientConfig,
) -> Result<Channel, ChannelError> {
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnect {
        addr,
        identity,
        tls: TlsConnector::from(Arc::new(config)),
    };
    Ok(endpoint("https", addr)?.connect_with_connector_lazy(connector))
}

fn endpoint(scheme: &str, addr: SocketAddr) -> Result<Endpoint, tonic::transport::Error> {
    Endpoint::from_shared(format!("{scheme}://{addr}")).map(|e| {
        e.connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
    })
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

/// A channel that counts each call to the control plane and its time to response headers
/// (`control_requests_total`, `control_response_latency_ms`).
#[derive(Clone, Debug)]
pub struct Instrumented {
    inner: Channel,
    service: &'static str,
    metrics: ControlClientMetrics,
}

impl Instrumented {
    pub fn new(inner: Channel, service: &'static str, metrics: ControlClientMetrics) -> Self {
        Instrumented {
            inner,
            service,
            metrics,
        }
    }
}

/// The RPC of a gRPC path, as a fixed name.
fn rpc(path: &str) -> &'static str {
    match path.rsplit('/').next() {
        Some("Get") => "Get",
        Some("GetProfile") => "GetProfile",
        Some("Certify") => "Certify",
        _ => "other",
    }
}

type Call = http::Request<tonic::body::Body>;
type Reply = http::Response<tonic::body::Body>;

impl tonic::codegen::Service<Call> for Instrumented {
    type Response = Reply;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tonic::codegen::Service::<Call>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: Call) -> Self::Future {
        let rpc = rpc(req.uri().path());
        let (service, metrics) = (self.service, self.metrics.clone());
        let start = tokio::time::Instant::now();
        let call = tonic::codegen::Service::<Call>::call(&mut self.inner, req);
        Box::pin(async move {
            let res = call.await;
            let result = match &res {
                Ok(rsp) if rsp.status() != http::StatusCode::OK => "http_error",
                // A trailers-only answer carries its status in the headers.
                Ok(rsp) => match rsp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                {
                    None | Some(0) => "ok",
                    Some(code) => grpc_code_name(code),
                },
                Err(_) => "transport_error",
            };
            metrics.record(service, rpc, result, start.elapsed());
            res
        })
    }
}

fn grpc_code_name(code: i32) -> &'static str {
    use tonic::Code;
    match Code::from_i32(code) {
        Code::Cancelled => "cancelled",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::Unauthenticated => "unauthenticated",
        _ => "other_error",
    }
}
