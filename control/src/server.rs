//! The control plane's servers: gRPC — Identity, Destination, the two policy APIs
//! (`InboundServerPolicies`, `OutboundPolicies`) and the multicluster Exports, on one port — (TLS
//! with the control plane's own identity unless it listens on loopback) and admin (`/live`,
//! `/ready`, `/metrics`, `/log-level`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use std::path::PathBuf;

use linkerd2_proxy_api::destination::destination_server::DestinationServer;
use linkerd2_proxy_api::identity::identity_server::IdentityServer;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPoliciesServer;
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPoliciesServer;
use remora_identity::{Name, TrustAnchors};
use remora_metrics::Registry;
use remora_runtime::admin::{self, AdminState};
use remora_runtime::drain::Drain;
use remora_runtime::listen::{accept_loop, bind};
use remora_runtime::log::LogLevel;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, info};

use crate::config::Config;
use crate::destination::DestinationService;
use crate::error::Error;
use crate::identity::{IdentityService, TokenAuth};
use crate::issuer::{IssuerStore, ServingCert, watch};
use crate::metrics::{DestinationMetrics, IdentityMetrics, PolicyMetrics};
use crate::multicluster::pb::exports_server::ExportsServer;
use crate::multicluster::{self, ExportsService, Mirrors, MulticlusterMetrics};
use crate::policy::service::{InboundService, OutboundService};
use crate::reload;
use crate::sa_token::jwks::{self, JwksStore};
use crate::sa_token::{Rules, SaTokenVerifier};
use crate::token::TokenKey;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the control plane holds open at once (each for its whole life, not only its
/// handshake); past it, new ones are closed at accept.
const MAX_CONNECTIONS: usize = 4096;
/// Connections one client address may hold open at once: a proxy holds a few (identity,
/// destination, policy), so one peer cannot take every slot of [`MAX_CONNECTIONS`].
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// Concurrent gRPC streams per connection (each a watch or a call), advertised in HTTP/2's
/// SETTINGS: a client past it gets `REFUSED_STREAM`. A proxy's discovery cache holds at most
/// a few thousand targets; one connection with thousands of watches and no certificate was
/// the abuse this bounds.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
const ISSUER_POLL: Duration = Duration::from_secs(1);
/// How often the config file is checked for edits (edits reach subscribers within this).
const CONFIG_POLL: Duration = Duration::from_millis(200);

/// Who is on the other end of a gRPC connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// The client's mesh identity, when it presented a certificate (TLS only).
    pub identity: Option<Name>,
}

/// A connection to the gRPC server (TLS, or plaintext on loopback), holding its slots in the
/// connection limits for its whole life.
#[derive(Debug)]
pub struct ControlIo {
    stream: Stream,
    _slots: Slots,
}

#[derive(Debug)]
enum Stream {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// A connection's place in the global limit and in its peer's.
#[derive(Debug)]
struct Slots {
    _global: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// Open connections per client address.
#[derive(Clone, Debug, Default)]
struct PeerCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl PeerCounts {
    /// A slot for one more connection from `ip`, unless it holds `max` already.
    fn take(&self, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut counts = self.0.lock().ok()?;
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// Frees its connection's place in its peer's count when dropped.
#[derive(Debug)]
struct PeerSlot {
    counts: PeerCounts,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.0.lock()
            && let Some(n) = counts.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Connected for ControlIo {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        match &self.stream {
            Stream::Tls(tls) => {
                let (tcp, tls) = tls.get_ref();
                PeerInfo {
                    addr: tcp.peer_addr().ok(),
                    identity: tls
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(remora_identity::verify::peer_identity),
                }
            }
            Stream::Plain(tcp) => PeerInfo {
                addr: tcp.peer_addr().ok(),
                identity: None,
            },
        }
    }
}

impl AsyncRead for ControlIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ControlIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A control plane whose listeners are bound and whose files are loaded.
#[derive(Debug)]
pub struct Control {
    config: Arc<Config>,
    grpc: TcpListener,
    admin: TcpListener,
    issuer: Arc<IssuerStore>,
    tokens: TokenAuth,
    anchors: TrustAnchors,
    drain: Drain,
    /// The config file, followed for edits (none: the config is fixed).
    path: Option<PathBuf>,
    log_level: Option<LogLevel>,
}

impl Control {
    /// Loads the issuer, the token key and/or the service-account keys, and the trust anchors,
    /// and binds both listeners. With a `path`, edits of that file are followed.
    pub fn bind(config: Config, path: Option<PathBuf>) -> Result<Control, Error> {
        let issuer = IssuerStore::load(&config.issuer_cert, &config.issuer_key)?;
        let tokens = token_auth(&config)?;
        let anchors = |reason: String| Error::TrustAnchors {
            path: config.trust_anchors.clone(),
            reason,
        };
        let anchors_pem =
            std::fs::read(&config.trust_anchors).map_err(|e| anchors(e.to_string()))?;
        let anchors = TrustAnchors::from_pem(&anchors_pem).map_err(anchors)?;
        let listen = |addr: SocketAddr| bind(addr).map_err(|source| Error::Bind { addr, source });
        let grpc = listen(config.addr)?;
        let admin = listen(config.admin_addr)?;
        Ok(Control {
            config: Arc::new(config),
            grpc,
            admin,
            issuer: Arc::new(issuer),
            tokens,
            anchors,
            drain: Drain::new(),
            path,
            log_level: None,
        })
    }

    /// Lets the admin API show and replace the log filter (`GET`/`PUT /log-level`).
    pub fn with_log_level(mut self, log_level: LogLevel) -> Self {
        self.log_level = Some(log_level);
        self
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Serves until the drain is signalled.
    pub async fn run(self) -> Result<(), Error> {
        let grpc_addr = self.grpc_addr();
        let mut registry = Registry::default();
        let metrics = IdentityMetrics::register(&mut registry);
        let dst_metrics = DestinationMetrics::register(&mut registry);
        let policy_metrics = PolicyMetrics::register(&mut registry);
        remora_metrics::process::register(&mut registry);
        let mc_metrics = MulticlusterMetrics::register(&mut registry);
        // The config's services (what this cluster exports) ...
        let (state_tx, local_rx) = watch::channel(self.config.state.clone());
        // Without a file to follow, the state never changes, but its sender must live as long
        // as the server: once it is dropped, every discovery and policy stream ends after its
        // first message, and each proxy reopens its streams again and again.
        let (reloader, _fixed_state) = match self.path.clone() {
            Some(p) => (
                Some(tokio::spawn(reload::follow(
                    p,
                    state_tx,
                    dst_metrics.clone(),
                    CONFIG_POLL,
                ))),
                None,
            ),
            None => (None, Some(state_tx)),
        };
        metrics.issuer_expiry(self.issuer.current().not_after);
        // Linked control planes reach this one from elsewhere, so it speaks TLS with its
        // identity whenever it is not on loopback or takes part in multicluster.
        let multicluster =
            self.config.multicluster.advertised_addr.is_some() || !self.config.links.is_empty();
        let tls = !self.config.addr.ip().is_loopback() || multicluster;
        let serving = if tls {
            let s = Arc::new(ServingCert::new(
                self.config.control_identity(),
                self.config.cert_lifetime,
            ));
            s.refresh(&self.issuer.current())?;
            Some(s)
        } else {
            None
        };
        let watcher = tokio::spawn(watch(
            self.issuer.clone(),
            serving.clone(),
            metrics.clone(),
            ISSUER_POLL,
        ));
        let jwks_watcher = self.tokens.kubernetes.as_ref().map(|sa| {
            metrics.jwks_keys(sa.keys().current().keys.len());
            tokio::spawn(jwks::watch(sa.keys().clone(), metrics.clone(), ISSUER_POLL))
        });
        let identity = IdentityServer::new(IdentityService::new(
            self.config.clone(),
            self.issuer.clone(),
            self.tokens.clone(),
            metrics,
        ));
        // ... and, with links, those plus the mirrored ones (what discovery serves).
        let mut tasks = Vec::new();
        let served_rx = if self.config.links.is_empty() {
            local_rx.clone()
        } else {
            let (mirrors_tx, mirrors_rx) = watch::channel(Mirrors::new());
            let (served_tx, served_rx) = watch::channel(self.config.state.clone());
            tasks.push(tokio::spawn(multicluster::combine(
                local_rx.clone(),
                mirrors_rx,
                self.config.links.clone(),
                self.config.multicluster.mirror_cidr,
                served_tx,
            )));
            let Some(cert) = serving.clone() else {
                return Err(Error::LinksNeedTls);
            };
            for link in &self.config.links {
                let tls = remora_runtime::channel::ChannelTls::fixed(
                    link.control_identity.clone(),
                    link_client_config(cert.clone(), &self.anchors)?,
                );
                let channel =
                    remora_runtime::channel::ControlChannel::new(&link.control_addr.into(), tls)
                        .map_err(|source| Error::Link {
                            cluster: link.cluster.clone(),
                            source,
                        })?;
                tasks.push(tokio::spawn(multicluster::run_link(
                    link.clone(),
                    self.config.cluster.clone(),
                    channel,
                    self.config.multicluster.link_grace,
                    mirrors_tx.clone(),
                    mc_metrics.clone(),
                )));
            }
            served_rx
        };
        let admin_state = AdminState {
            shutdown_endpoint: true,
            registry: Arc::new(registry),
            ready: Arc::new(AtomicBool::new(true)),
            drain: self.drain.clone(),
            log_level: self.log_level.clone(),
            debug: vec![admin::DebugReport {
                name: "services",
                render: Arc::new({
                    let served = served_rx.clone();
                    move || services_json(&served.borrow())
                }),
            }],
        };
        let admin = tokio::spawn(admin::serve(self.admin, admin_state));
        let inbound = InboundServerPoliciesServer::new(InboundService::new(
            served_rx.clone(),
            policy_metrics.clone(),
        ));
        let outbound =
            OutboundPoliciesServer::new(OutboundService::new(served_rx.clone(), policy_metrics));
        let destination = DestinationServer::new(DestinationService::new(served_rx, dst_metrics));
        let exports = ExportsServer::new(ExportsService::new(
            local_rx,
            &self.config.links,
            self.config.multicluster.gateway.as_ref().map(|(_, id)| id),
            mc_metrics,
        ));
        let routes = Routes {
            identity,
            destination,
            inbound,
            outbound,
            exports,
        };
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
        let drain = self.drain.clone();
        info!(
            cluster = %self.config.cluster,
            addr = ?grpc_addr,
            tls,
            identity = %self.config.control_identity(),
            "control plane serving"
        );
        let acceptor = match serving {
            Some(cert) => Some(TlsAcceptor::from(server_config(cert, &self.anchors)?)),
            None => None,
        };
        let incoming = incoming(self.grpc, acceptor, self.drain.clone());
        let serve = server.serve_with_incoming_shutdown(routes, incoming, drain.signaled());
        let res = bounded_shutdown(serve, &drain).await;
        watcher.abort();
        if let Some(w) = jwks_watcher {
            w.abort();
        }
        admin.abort();
        for t in tasks {
            t.abort();
        }
        if let Some(r) = reloader {
            r.abort();
        }
        Ok(res?)
    }
}

/// The token verifiers `config` asks for, their keys loaded.
fn token_auth(config: &Config) -> Result<TokenAuth, Error> {
    let remora = match &config.token_key {
        Some(path) => {
            let err = |reason: String| Error::TokenKey {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            Some(TokenKey::from_hex(&text).map_err(|e| err(e.to_string()))?)
        }
        None => None,
    };
    let kubernetes = match &config.kubernetes {
        Some(k) => {
            let store = JwksStore::load(&k.jwks).map_err(Error::Jwks)?;
            let rules = Rules {
                audience: k.audience.clone(),
                issuer: k.issuer.clone(),
                trust_domain: config.trust_domain.clone(),
                control_plane_ns: config.control_plane_ns.clone(),
            };
            Some(SaTokenVerifier::new(rules, Arc::new(store)))
        }
        None => None,
    };
    Ok(TokenAuth { remora, kubernetes })
}

/// How long open streams (discovery watches, linked control planes' export watches, which never
/// end by themselves) may hold a shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs the server until it finishes, or until `SHUTDOWN_GRACE` after the drain signal.
async fn bounded_shutdown<F>(serve: F, drain: &Drain) -> Result<(), tonic::transport::Error>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    tokio::pin!(serve);
    tokio::select! {
        res = &mut serve => res,
        _ = async {
            drain.signaled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            info!("streams still open after the shutdown grace; closing them");
            Ok(())
        }
    }
}

/// Dispatches gRPC requests to the services by path (`/<package>.<Service>/<Method>`), so one
/// server serves them all without a routing framework.
#[derive(Clone, Debug)]
struct Routes {
    identity: IdentityServer<IdentityService>,
    destination: DestinationServer<DestinationService>,
    inbound: InboundServerPoliciesServer<InboundService>,
    outbound: OutboundPoliciesServer<OutboundService>,
    exports: ExportsServer<ExportsService>,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Routes {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path();
        if path.starts_with("/io.linkerd.proxy.identity.Identity/") {
            return self.identity.call(req);
        }
        if path.starts_with("/io.linkerd.proxy.destination.Destination/") {
            return self.destination.call(req);
        }
        if path.starts_with("/io.linkerd.proxy.inbound.InboundServerPolicies/") {
            return self.inbound.call(req);
        }
        if path.starts_with("/io.linkerd.proxy.outbound.OutboundPolicies/") {
            return self.outbound.call(req);
        }
        if path.starts_with("/remora.multicluster.v1.Exports/") {
            return self.exports.call(req);
        }
        let status = tonic::Status::unimplemented(format!("no service serves {path}"));
        Box::pin(async move { Ok(status.into_http()) })
    }
}

/// `GET /debug/services`: what discovery serves (local and mirrored services, their virtual IPs
/// and endpoints), as JSON.
fn services_json(state: &crate::cluster::ClusterState) -> String {
    let services: Vec<_> = state
        .services
        .values()
        .map(|s| {
            serde_json::json!({
                "name": s.key.name,
                "namespace": s.key.namespace,
                "vip": s.vip.map(|v| v.to_string()),
                "export": s.export,
                "ports": s.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
                "endpoints": s.endpoints.iter().map(|e| serde_json::json!({
                    "pod": e.pod,
                    "ip": e.ip.to_string(),
                    "identity": match e.protocol {
                        crate::cluster::Protocol::None => None,
                        _ => Some(state.endpoint_identity(s, e)),
                    },
                    "labels": e.labels,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "services": services }).to_string()
}

/// The client side of a link: our serving certificate as the client certificate, and the
/// remote control plane verified against the trust anchors and the link's identity.
fn link_client_config(
    cert: Arc<ServingCert>,
    anchors: &TrustAnchors,
) -> Result<rustls::ClientConfig, Error> {
    let provider = remora_identity::tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(remora_identity::tls::MeshServerVerifier::new(
            anchors.clone(),
            &provider,
        )))
        .with_client_cert_resolver(cert);
    Ok(config)
}

fn server_config(
    cert: Arc<ServingCert>,
    anchors: &TrustAnchors,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = remora_identity::tls::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(anchors.root_store()),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections within the connection limits (in all and per peer) and, with an
/// acceptor, completes their TLS handshakes concurrently (with a timeout), yielding the
/// established connections.
fn incoming(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    drain: Drain,
) -> tokio_stream::wrappers::ReceiverStream<Result<ControlIo, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let peers = PeerCounts::default();
    tokio::spawn(async move {
        accept_loop(
            listener,
            "control",
            limit,
            drain.signaled(),
            |peer| debug!(%peer, "control connection limit reached"),
            |tcp, peer, permit| {
                let Some(slot) = peers.take(peer.ip(), MAX_CONNECTIONS_PER_PEER) else {
                    debug!(%peer, max = MAX_CONNECTIONS_PER_PEER, "closing a connection: its peer holds as many as it may");
                    return;
                };
                let slots = Slots {
                    _global: permit,
                    _peer: slot,
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let stream = match acceptor {
                        None => Stream::Plain(tcp),
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => return debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    };
                    let _ = tx
                        .send(Ok(ControlIo {
                            stream,
                            _slots: slots,
                        }))
                        .await;
                });
            },
        )
        .await
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
