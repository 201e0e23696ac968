//! gRPC channels to a control plane, at an IP address or at a DNS name.
//!
//! A control plane named by DNS (`linkerd-dst-headless.linkerd.svc.cluster.local.:8086`, a
//! headless service: one address per controller pod) is resolved with the system resolver,
//! re-resolved every [`REFRESH`] and at once after a failure, and requests are spread over every
//! address it returns, skipping for a while one that just failed. A controller pod that goes
//! away or moves is followed without a restart; what is in flight on it fails and is retried by
//! the caller on another. A caller waiting out a backoff after a failure waits on [`Moved`]
//! too: when the name's addresses change (a replica replaced), it retries at once, on the new
//! one.
//!
//! TLS: plaintext only on loopback; otherwise TLS 1.3 verifying the control plane's identity
//! (`*_SVC_NAME`, also the SNI; never the DNS name) against the trust anchors, presenting
//! whatever client certificate the configuration source gives at connect time (none before the
//! proxy holds one).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use remora_identity::{Name, TrustAnchors};
use remora_metrics::client::ControlClientMetrics;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a control plane's name is resolved again.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How long an address that just failed is skipped (while others remain).
const QUARANTINE: Duration = Duration::from_secs(5);
/// How long a call waits for a name's first resolution.
const FIRST_RESOLUTION: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a control-plane service listens: an IP and port, or a DNS name and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlAddr {
    Socket(SocketAddr),
    /// `host` as written (a trailing dot means an absolute name: no search domains).
    Name {
        host: String,
        port: u16,
    },
}

impl FromStr for ControlAddr {
    type Err = String;

    /// `10.0.0.1:8086`, `[fd00::1]:8086`, `linkerd-dst-headless.linkerd.svc.cluster.local.:8086`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ControlAddr::Socket(addr));
        }
        let bad = || format!("expected IP:port or host:port, got {s:?}");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(format!("{s:?}: port 0"));
        }
        let name = host.strip_suffix('.').unwrap_or(host);
        name.parse::<Name>().map_err(|e| format!("{s:?}: {e}"))?;
        if name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(format!("{s:?}: neither an IP address nor a DNS name"));
        }
        Ok(ControlAddr::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAddr::Socket(a) => write!(f, "{a}"),
            ControlAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl From<SocketAddr> for ControlAddr {
    fn from(a: SocketAddr) -> Self {
        ControlAddr::Socket(a)
    }
}

impl ControlAddr {
    /// On this host: a loopback IP, or the name `localhost` (as Linkerd's chart writes it for a
    /// controller's own proxy, `localhost.:8086`).
    pub fn is_loopback(&self) -> bool {
        match self {
            ControlAddr::Socket(a) => a.ip().to_canonical().is_loopback(),
            ControlAddr::Name { host, .. } => host.trim_end_matches('.') == "localhost",
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            ControlAddr::Socket(a) => a.port(),
            ControlAddr::Name { port, .. } => *port,
        }
    }
}

/// Why a channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the control plane at {0} is not on loopback, so its identity must be configured")]
    NeedsIdentity(ControlAddr),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Endpoint(#[from] tonic::transport::Error),
}

/// The client config for each new TLS connection (so a certificate obtained later is
/// presented from then on).
pub type ClientConfigFn = Arc<dyn Fn() -> Arc<rustls::ClientConfig> + Send + Sync>;

/// How a channel secures its connections.
#[derive(Clone)]
pub enum ChannelTls {
    /// Plaintext (only for a control plane on loopback).
    Plaintext,
    /// TLS verifying `server` (also the SNI), with the client config of the moment.
    Tls {
        server: Name,
        config: ClientConfigFn,
    },
}

impl fmt::Debug for ChannelTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelTls::Plaintext => f.write_str("Plaintext"),
            ChannelTls::Tls { server, .. } => write!(f, "Tls({server})"),
        }
    }
}

impl ChannelTls {
    /// Plaintext on loopback without an identity to verify; otherwise TLS verifying `identity`
    /// against `anchors` without a client certificate.
    pub fn anonymous(
        addr: &ControlAddr,
        identity: Option<&Name>,
        anchors: &TrustAnchors,
    ) -> Result<Self, ChannelError> {
        match identity {
            None if addr.is_loopback() => Ok(ChannelTls::Plaintext),
            None => Err(ChannelError::NeedsIdentity(addr.clone())),
            Some(server) => {
                let config = remora_identity::tls::anonymous_client(anchors)?;
                Ok(ChannelTls::Tls {
                    server: server.clone(),
                    config: Arc::new(move || config.clone()),
                })
            }
        }
    }

    /// TLS verifying `server`, with a fixed client config (its verifier and client
    /// certificate).
    pub fn fixed(server: Name, config: rustls::ClientConfig) -> Self {
        let config = Arc::new(config);
        ChannelTls::Tls {
            server,
            config: Arc::new(move || config.clone()),
        }
    }
}

/// A channel to one control-plane address, connecting lazily and reconnecting by itself.
fn one(addr: SocketAddr, tls: &ChannelTls) -> Result<Channel, ChannelError> {
    match tls {
        ChannelTls::Plaintext => Ok(endpoint("http", addr)?.connect_lazy()),
        ChannelTls::Tls { server, config } => {
            let connector = TlsConnect {
                addr,
                server: server.clone(),
                config: config.clone(),
            };
            Ok(endpoint("https", addr)?.connect_with_connector_lazy(connector))
        }
    }
}

fn endpoint(scheme: &str, addr: SocketAddr) -> Result<Endpoint, tonic::transport::Error> {
    Endpoint::from_shared(format!("{scheme}://{addr}")).map(|e| {
        e.connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
    })
}

/// A channel to a control plane: one address, or every address its name resolves to.
#[derive(Clone, Debug)]
pub struct ControlChannel {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    One(Channel),
    Many(Arc<Pool>),
}

/// The addresses of a named control plane and a channel to each.
struct Pool {
    name: String,
    endpoints: watch::Receiver<Arc<Vec<Member>>>,
    next: AtomicUsize,
    /// Wakes the resolver early, after a failure.
    refresh: Arc<tokio::sync::Notify>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

#[derive(Clone, Debug)]
struct Member {
    addr: SocketAddr,
    channel: Channel,
    /// Skipped until then, after a failure.
    quarantined: Arc<Mutex<Option<Instant>>>,
}

impl ControlChannel {
    /// A channel to `addr` secured by `tls`. For a name, starts its resolver (call within a
    /// runtime); the resolver stops when the last clone of the channel is dropped.
    pub fn new(addr: &ControlAddr, tls: ChannelTls) -> Result<Self, ChannelError> {
        if !matches!(tls, ChannelTls::Tls { .. }) && !addr.is_loopback() {
            return Err(ChannelError::NeedsIdentity(addr.clone()));
        }
        match addr {
            ControlAddr::Socket(a) => Ok(ControlChannel {
                inner: Inner::One(one(*a, &tls)?),
            }),
            ControlAddr::Name { host, port } => {
                // Fail early on what would fail for every address.
                let _ = endpoint("http", SocketAddr::from(([127, 0, 0, 1], *port)))?;
                let (tx, rx) = watch::channel(Arc::new(Vec::new()));
                let refresh = Arc::new(tokio::sync::Notify::new());
                let pool = Arc::new(Pool {
                    name: format!("{host}:{port}"),
                    endpoints: rx,
                    next: AtomicUsize::new(0),
                    refresh: refresh.clone(),
                });
                let alive = Arc::downgrade(&pool);
                tokio::spawn(resolve(alive, refresh, host.clone(), *port, tls, tx));
                Ok(ControlChannel {
                    inner: Inner::Many(pool),
                })
            }
        }
    }

    /// A plaintext channel to a control plane on loopback.
    pub fn plaintext(addr: SocketAddr) -> Result<Self, ChannelError> {
        Self::new(&ControlAddr::Socket(addr), ChannelTls::Plaintext)
    }

    /// Fires when the addresses this channel uses change (never for a fixed address).
    pub fn moved(&self) -> Moved {
        match &self.inner {
            Inner::One(_) => Moved::never(),
            Inner::Many(p) => Moved::of(p.endpoints.clone()),
        }
    }

    /// The addresses currently in use (for tests and debugging).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match &self.inner {
            Inner::One(_) => Vec::new(),
            Inner::Many(p) => p.endpoints.borrow().iter().map(|m| m.addr).collect(),
        }
    }
}

/// Whether a control plane's addresses changed since the last look: after a failure, a
/// client that would wait out its backoff retries at once when the plane has moved (the backoff
/// grown against the old replica says nothing about the new one).
#[derive(Clone, Debug)]
pub struct Moved {
    addrs: Option<watch::Receiver<Arc<Vec<Member>>>>,
    /// Whether the name had resolved: its first addresses are where the plane is, not a move.
    resolved: bool,
}

impl Moved {
    /// For a fixed address, or a source with no channel (tests): never fires.
    pub fn never() -> Self {
        Moved {
            addrs: None,
            resolved: false,
        }
    }

    fn of(mut addrs: watch::Receiver<Arc<Vec<Member>>>) -> Self {
        let resolved = !addrs.borrow_and_update().is_empty();
        Moved {
            addrs: Some(addrs),
            resolved,
        }
    }

    /// Resolves when the addresses change (at once if they changed since the last call).
    pub async fn changed(&mut self) {
        if let Some(rx) = &mut self.addrs {
            // The resolver publishes only non-empty sets, each different from the last.
            while rx.changed().await.is_ok() {
                if std::mem::replace(&mut self.resolved, true) {
                    return;
                }
            }
        }
        // A fixed address, or a channel gone: nothing will move.
        std::future::pending::<()>().await
    }

    /// Waits out `backoff`'s next wait, or until the addresses change; then the backoff starts
    /// over (the next failure waits its minimum).
    pub async fn or_backoff(&mut self, backoff: &mut crate::backoff::Backoff) {
        tokio::select! {
            () = backoff.wait() => {}
            () = self.changed() => {
                debug!("the control plane's addresses changed; retrying now");
                backoff.reset();
            }
        }
    }
}

/// Resolves `host:port` now and every [`REFRESH`] (or when woken), keeping a channel per
/// address: new addresses get one, gone addresses lose theirs, unchanged ones keep theirs (and
/// their connections).
async fn resolve(
    pool: std::sync::Weak<Pool>,
    refresh: Arc<tokio::sync::Notify>,
    host: String,
    port: u16,
    tls: ChannelTls,
    tx: watch::Sender<Arc<Vec<Member>>>,
) {
    let target = format!("{host}:{port}");
    loop {
        let found =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(&target)).await {
                Ok(Ok(addrs)) => {
                    let mut v: Vec<SocketAddr> = addrs.collect();
                    v.sort();
                    v.dedup();
                    Ok(v)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
        match found {
            Ok(addrs) if !addrs.is_empty() => {
                let current = tx.borrow().clone();
                let unchanged = current.len() == addrs.len()
                    && current.iter().zip(&addrs).all(|(m, a)| m.addr == *a);
                if !unchanged {
                    let members: Vec<Member> = addrs
                        .iter()
                        .filter_map(|a| match current.iter().find(|m| m.addr == *a) {
                            Some(m) => Some(m.clone()),
                            None => one(*a, &tls).ok().map(|channel| Member {
                                addr: *a,
                                channel,
                                quarantined: Arc::default(),
                            }),
                        })
                        .collect();
                    info!(control_plane = %target, addresses = ?addrs, "resolved the control plane");
                    tx.send_replace(Arc::new(members));
                }
            }
            // Keep what was known: a resolver hiccup must not cut the control plane off.
            Ok(_) => {
                warn!(control_plane = %target, "the control plane's name has no addresses; keeping the last known")
            }
            Err(e) => {
                warn!(control_plane = %target, error = %e, "cannot resolve the control plane; keeping the last known addresses")
            }
        }
        if pool.strong_count() == 0 {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = refresh.notified() => {
                // Debounce a burst of failures into one lookup.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if pool.strong_count() == 0 {
            return;
        }
    }
}

impl Pool {
    /// The next usable member, round robin, skipping quarantined ones while others remain;
    /// waits for the first resolution.
    async fn pick(&self) -> Option<Member> {
        let mut rx = self.endpoints.clone();
        let members =
            match tokio::time::timeout(FIRST_RESOLUTION, rx.wait_for(|m| !m.is_empty())).await {
                Ok(Ok(m)) => m.clone(),
                _ => return None,
            };
        let now = Instant::now();
        let usable = |m: &Member| {
            m.quarantined
                .lock()
                .map(|q| q.is_none_or(|until| until <= now))
                .unwrap_or(true)
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = members.len();
        (0..n)
            .map(|i| &members[(start + i) % n])
            .find(|m| usable(m))
            .or_else(|| members.get(start % n))
            .cloned()
    }
}

type Call = http::Request<tonic::body::Body>;
type Reply = http::Response<tonic::body::Body>;

impl tonic::codegen::Service<Call> for ControlChannel {
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.inner {
            Inner::One(c) => tonic::codegen::Service::<Call>::poll_ready(c, cx).map_err(Into::into),
            // Each call picks its address; tonic's channels buffer, so they are always ready.
            Inner::Many(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Call) -> Self::Future {
        match &mut self.inner {
            Inner::One(c) => {
                let call = tonic::codegen::Service::<Call>::call(c, req);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Inner::Many(pool) => {
                let pool = pool.clone();
                Box::pin(async move {
                    let Some(member) = pool.pick().await else {
                        pool.refresh.notify_one();
                        return Err(
                            format!("no address for the control plane {}", pool.name).into()
                        );
                    };
                    let mut channel = member.channel.clone();
                    // tonic's channel is a buffer: a call needs a reserved slot first.
                    let res = match std::future::poll_fn(|cx| {
                        tonic::codegen::Service::<Call>::poll_ready(&mut channel, cx)
                    })
                    .await
                    {
                        Ok(()) => tonic::codegen::Service::<Call>::call(&mut channel, req).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = &res {
                        debug!(control_plane = %pool.name, addr = %member.addr, error = %e, "control plane address failed; trying others next");
                        if let Ok(mut q) = member.quarantined.lock() {
                            *q = Some(Instant::now() + QUARANTINE);
                        }
                        pool.refresh.notify_one();
                    } else if let Ok(mut q) = member.quarantined.lock() {
                        *q = None;
                    }
                    res.map_err(Into::into)
                })
            }
        }
    }
}

/// Connects to one fixed address with TLS, whatever URI the channel asks for.
#[derive(Clone)]
struct TlsConnect {
    addr: SocketAddr,
    server: Name,
    config: ClientConfigFn,
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
            let name = ServerName::try_from(this.server.to_string())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut config = (this.config)().as_ref().clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let tls = TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A channel that counts each call to the control plane and its time to response headers
/// (`control_requests_total`, `control_response_latency_ms`).
#[derive(Clone, Debug)]
pub struct Instrumented {
    inner: ControlChannel,
    service: &'static str,
    metrics: ControlClientMetrics,
}

impl Instrumented {
    /// See [`ControlChannel::moved`].
    pub fn moved(&self) -> Moved {
        self.inner.moved()
    }

    pub fn new(
        inner: ControlChannel,
        service: &'static str,
        metrics: ControlClientMetrics,
    ) -> Self {
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
        Some("GetPort") => "GetPort",
        Some("WatchPort") => "WatchPort",
        Some("Watch") => "Watch",
        Some("Export") => "Export",
        _ => "other",
    }
}

impl tonic::codegen::Service<Call> for Instrumented {
    type Response = Reply;
    type Error = BoxError;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ips_or_names() {
        let a: ControlAddr = "10.0.0.1:8086".parse().unwrap();
        assert_eq!(a, ControlAddr::Socket("10.0.0.1:8086".parse().unwrap()));
        let a: ControlAddr = "[fd00::1]:8086".parse().unwrap();
        assert!(matches!(a, ControlAddr::Socket(_)));
        let a: ControlAddr = "linkerd-dst-headless.linkerd.svc.cluster.local.:8086"
            .parse()
            .unwrap();
        assert_eq!(
            a,
            ControlAddr::Name {
                host: "linkerd-dst-headless.linkerd.svc.cluster.local.".into(),
                port: 8086
            }
        );
        assert_eq!(
            a.to_string(),
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086"
        );
        assert!(!a.is_loopback());
        assert!(
            "localhost.:8086"
                .parse::<ControlAddr>()
                .unwrap()
                .is_loopback()
        );
        assert!(
            "127.0.0.1:8086"
                .parse::<ControlAddr>()
                .unwrap()
                .is_loopback()
        );
        for bad in [
            "",
            "host",
            "host:",
            "host:x",
            "host:0",
            ":80",
            "a b:80",
            "1.2.3:80",
            "1.2.3.4.5:80",
        ] {
            assert!(bad.parse::<ControlAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn a_name_resolves_to_every_address_and_calls_spread_over_them() {
        // `localhost` resolves through /etc/hosts on every machine (the absolute `localhost.`
        // does not always: glibc's files backend matches names as written).
        let addr: ControlAddr = "localhost:1".parse().unwrap();
        let ch = ControlChannel::new(&addr, ChannelTls::Plaintext).unwrap();
        let ok = tokio::time::timeout(Duration::from_secs(10), async {
            while ch.addresses().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(ok.is_ok(), "localhost never resolved");
        assert!(
            ch.addresses()
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backoff_ends_early_and_starts_over_when_the_addresses_change() {
        use crate::backoff::Backoff;
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        let mut moved = Moved::of(rx);
        let addrs = || {
            let channel = endpoint("http", SocketAddr::from(([127, 0, 0, 1], 1)))
                .unwrap()
                .connect_lazy();
            let member = |port| Member {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                channel: channel.clone(),
                quarantined: Arc::default(),
            };
            (Arc::new(vec![member(1)]), Arc::new(vec![member(2)]))
        };
        let (first, second) = addrs();
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(5));
        let mut backoff = Backoff::new(min, max);
        for _ in 0..6 {
            backoff.next_wait();
        }
        assert_eq!(backoff.peek(), max);
        // Unchanged, or resolved for the first time: the whole wait.
        let start = Instant::now();
        let first_resolution = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send_replace(first);
        };
        tokio::join!(moved.or_backoff(&mut backoff), first_resolution);
        assert_eq!(start.elapsed(), max);
        // The addresses change a second into the wait: it ends then, and starts over.
        let start = Instant::now();
        let change = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send_replace(second);
        };
        tokio::join!(moved.or_backoff(&mut backoff), change);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(backoff.peek(), min);
        // A change seen is not seen again, and a fixed address never moves.
        let start = Instant::now();
        moved.or_backoff(&mut backoff).await;
        assert_eq!(start.elapsed(), min);
        let start = Instant::now();
        Moved::never().or_backoff(&mut backoff).await;
        assert_eq!(start.elapsed(), min * 2);
    }

    #[test]
    fn plaintext_is_only_for_loopback() {
        let far: ControlAddr = "10.0.0.1:8086".parse().unwrap();
        assert!(matches!(
            ControlChannel::new(&far, ChannelTls::Plaintext),
            Err(ChannelError::NeedsIdentity(_))
        ));
    }
}
