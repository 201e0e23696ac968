//! The inbound listener: other pods' connections to this pod.
//!
//! ```text
//! accept ─► original destination
//!   ├─ addressed to the inbound port itself: the DIRECT path
//!   │    mTLS for our identity, a client certificate, ALPN transport.l5d.io/v1, a transport
//!   │    header within the detection timeout → policy(header port, client) → the app at
//!   │    <pod address>:<header port> when the pod declares that port (`ports`); a header
//!   │    naming a service is a gateway request (refused unless this proxy is a gateway)
//!   ├─ not one of this pod's addresses → refused (not an open relay)
//!   ├─ one of the proxy's own listeners → refused (loop)
//!   └─ redirected to an app port: unless its policy says Opaque, read up to 8 KiB within
//!      the detection timeout (a `Detect` port whose client stays silent, and whose policy
//!      admits it as TCP, has the app dialled early: an app that speaks first is forwarded
//!      at once, `crate::transport::early`), then
//!        ClientHello, SNI = our identity → terminate mTLS (the client's identity, if any)
//!        other ClientHello / unreadable TLS → passed through untouched (the app's own TLS)
//!        anything else, or silence        → plaintext
//!      → the app at the original destination, as the port's policy says
//! ```
//!
//! The port's policy ([`policy`]) decides what the connection is, overriding detection (as
//! linkerd2-proxy's does): an `Opaque` port skips TLS detection; a `Tls` port is bytes after
//! mTLS termination; `Http2` and gRPC ports are HTTP/2 without detection; an `Http1` port is
//! HTTP/1 (detected only for meshed peers, which may upgrade to HTTP/2); a `Detect` port is
//! HTTP if HTTP is detected within its timeout, else bytes. Bytes are authorized once, at
//! accept, and again at every change of the port's policy; HTTP per request.
//!
//! # Layout
//! - this module: the listener, the decision per connection, detection and mTLS termination
//!   of redirected connections, the app side.
//! - [`direct`]: the direct path (mTLS with a transport header on the inbound port).
//! - [`ports`]: which ports the direct path may name (the pod's declared ports).
//! - [`http`]: requests to the app (`l5d-client-id`, `l5d-orig-proto`, the app pool).
//! - [`policy`]: each port's policy (from the policy service or `REMORA_INBOUND_*`) and its
//!   enforcement on connections and requests.
//! - [`gateway`]: gateway mode, through the outbound's router.

pub mod direct;
pub mod gateway;
pub mod http;
pub mod policy;
pub mod ports;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use remora_identity::Name;
use remora_metrics::detect::{DetectResult, EarlyDial};
use remora_metrics::inbound_policy::{ClientTls as TlsLabel, InboundPolicyMetrics};
use remora_metrics::tcp::{Direction, Peer as PeerSide, RefuseReason, TcpLabels, Tls};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info_span, warn};

use self::http::{HttpInbound, InboundConn};
use self::policy::{
    Client, ClientTls, ConnPolicy, Denied, InboundPolicy, PortPolicies, Protocol as Served,
};
use crate::http::detect::{self, DetectError, Protocol};
use crate::http::pool::Pool;
use crate::http::server::Limits;
use crate::inputs::ProxyInputs;
use crate::tls::detect::{self as tls_detect, Detected};
use crate::tls::mtls::{self, no_tls};
use crate::transport::early::{self, Early, First};
use crate::transport::forward::Counted;
use crate::transport::io::{BoxIo, PrefixedIo, read_prefix};
use crate::transport::listen::{AcceptCtx, serve};
use crate::transport::orig_dst::{OrigDst, original_dst};
use crate::transport::own::OwnAddrs;
use crate::transport::tcp::{TcpCtx, connect, proxy, proxy_to};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward to the app at this address (the pod's own address, the original port).
    Forward(SocketAddr),
    /// The direct path: mTLS with a transport header.
    Direct,
    Refuse(RefuseReason),
}

pub fn decide(orig: OrigDst, own: &OwnAddrs) -> Decision {
    match orig {
        OrigDst::NotRedirected => Decision::Direct,
        OrigDst::Redirected(dst) if !own.ips.contains(dst.ip()) => {
            Decision::Refuse(RefuseReason::NotLocal)
        }
        OrigDst::Redirected(dst) if own.is_own_listener(dst) => {
            Decision::Refuse(RefuseReason::Loop)
        }
        OrigDst::Redirected(dst) => Decision::Forward(dst),
    }
}

/// The inbound's own settings, beside the inputs it shares with the outbound.
#[derive(Clone, Debug)]
pub struct InboundConfig {
    /// How long to wait for a client's first bytes (TLS or not) before treating it as
    /// plaintext; also bounds the handshake and the transport header.
    pub detect_timeout: Duration,
    /// How long a silent client of a detected port may wait before the app is dialled early
    /// (`REMORA_DETECT_EARLY_DIAL`; `None`: never).
    pub early_dial: Option<Duration>,
    /// The local policies (`REMORA_INBOUND_*`): the policy without a policy service, and each
    /// port's until the policy service answers.
    pub policy: InboundPolicy,
    /// The ports the pod declares, watched on the policy service from the start (with the
    /// admin port).
    pub ports: BTreeSet<u16>,
    pub admin_port: Option<u16>,
    /// Which ports the direct path may name.
    pub direct_ports: ports::DirectPorts,
    pub policy_metrics: InboundPolicyMetrics,
    /// What the inbound's HTTP server accepts from peers.
    pub http: Limits,
}

/// Everything the inbound needs per connection.
#[derive(Debug)]
pub struct InboundCtx {
    pub inputs: Arc<ProxyInputs>,
    pub config: InboundConfig,
    pub tcp: TcpCtx,
    /// Every port's policy.
    pub policies: PortPolicies,
    /// Gateway mode: direct-path connections naming a service are forwarded to it.
    pub gateway: Option<Arc<gateway::Gateway>>,
}

#[derive(Debug)]
pub struct Inbound {
    listeners: Vec<TcpListener>,
    accept: AcceptCtx,
    http: Arc<HttpInbound>,
}

impl Inbound {
    pub fn new(
        listeners: Vec<TcpListener>,
        accept: AcceptCtx,
        inputs: Arc<ProxyInputs>,
        config: InboundConfig,
        gateway: Option<Arc<gateway::Gateway>>,
    ) -> Self {
        let mut policies = PortPolicies::local(
            config.policy.clone(),
            inputs.opaque_ports.clone(),
            config.detect_timeout,
        );
        if let Some(service) = &inputs.policy {
            let mut pinned = config.ports.clone();
            pinned.extend(config.admin_port);
            policies = policies.watched(service, &pinned, config.policy_metrics.clone());
        }
        let ctx = InboundCtx {
            tcp: inputs.tcp(Direction::Inbound),
            inputs,
            config,
            policies,
            gateway,
        };
        Inbound {
            listeners,
            accept,
            http: Arc::new(HttpInbound {
                pool: Pool::with_evictor(ctx.inputs.pool()),
                ctx: Arc::new(ctx),
            }),
        }
    }

    pub async fn run(self) {
        let http = self.http;
        let (ports, pod) = (http.ctx.config.direct_ports.clone(), http.ctx.pod_policy());
        tokio::spawn(async move { ports.announce(pod, ANNOUNCE_WAIT).await });
        serve(self.listeners, self.accept, move |stream, client| {
            let http = http.clone();
            // One span per connection, the app recorded on it when known (as the outbound's).
            async move { handle(&http, stream).await }.instrument(info_span!(
                "inbound",
                %client,
                app = tracing::field::Empty
            ))
        })
        .await
    }
}

/// How long the start-up note on the direct path's ports waits for the policy service.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(30);

impl InboundCtx {
    /// The policy that carries what the policy service says of the pod's ports: the admin
    /// port's, watched from the start (`None` without a policy service or an admin port).
    fn pod_policy(&self) -> Option<policy::PolicyRx> {
        self.inputs.policy.as_ref()?;
        self.config.admin_port.map(|p| self.policies.get(p))
    }

    /// Whether the direct path may name `port` (`ports.rs`).
    async fn direct_port(&self, port: u16) -> ports::Verdict {
        self.config
            .direct_ports
            .check(
                port,
                &self.policies,
                self.pod_policy(),
                self.inputs.policy.is_some(),
                self.config.detect_timeout,
            )
            .await
    }

    fn refuse(&self, reason: RefuseReason) {
        self.tcp.metrics.refused(Direction::Inbound, reason);
    }

    fn local_id(&self) -> Option<Name> {
        self.inputs.tls.now().map(|c| c.name.clone())
    }

    /// The policy side of a connection to `target` from `client`.
    fn conn_policy(
        &self,
        target: SocketAddr,
        client: IpAddr,
        tls: ClientTls,
        label: TlsLabel,
    ) -> ConnPolicy {
        ConnPolicy::new(
            self.policies.get(target.port()),
            Client::new(client, tls),
            target,
            label,
            self.config.policy_metrics.clone(),
        )
    }

    /// Whether the port's policy admits the connection as TCP; a refusal is counted in
    /// `tcp_refused_total` too.
    fn authorize_tcp(&self, policy: &ConnPolicy) -> bool {
        match policy.authorize_tcp() {
            Ok(()) => true,
            Err(denied) => {
                self.refuse(refuse_reason(denied));
                false
            }
        }
    }

    /// The TLS label of a connection without TLS.
    fn no_tls(&self, reason: &'static str) -> TlsLabel {
        if self.inputs.tls.enabled() {
            TlsLabel::NoTls(reason)
        } else {
            TlsLabel::Disabled
        }
    }
}

fn refuse_reason(denied: Denied) -> RefuseReason {
    match denied {
        Denied::Unauthenticated => RefuseReason::PolicyUnauthenticated,
        Denied::OutsideCluster => RefuseReason::PolicyOutsideCluster,
        Denied::ForeignTrustDomain => RefuseReason::PolicyForeignTrustDomain,
        Denied::NotAllowed => RefuseReason::PolicyNotAllowed,
        Denied::Deny => RefuseReason::PolicyDeny,
    }
}

async fn handle(http: &Arc<HttpInbound>, stream: TcpStream) {
    let ctx = &*http.ctx;
    let orig = match original_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            warn!(error = %e, "cannot read the original destination; closing");
            ctx.refuse(RefuseReason::NoOriginalDst);
            return;
        }
    };
    match decide(orig, &ctx.inputs.own) {
        Decision::Forward(app) => {
            tracing::Span::current().record("app", tracing::field::display(app));
            redirected(http, stream, app).await
        }
        Decision::Direct => direct::serve(http, stream).await,
        Decision::Refuse(reason) => {
            ctx.refuse(reason);
            match reason {
                RefuseReason::NotLocal => warn!(
                    ?orig,
                    "refusing to forward: the original destination is not one of this pod's \
                     addresses (the inbound proxy is not a relay)"
                ),
                _ => warn!(
                    ?orig,
                    "refusing a connection whose destination is one of this proxy's own listeners"
                ),
            }
        }
    }
}

/// Reads the first bytes (up to 8 KiB, within the detection timeout) and classifies them.
async fn detect_tls(
    ctx: &InboundCtx,
    stream: &mut TcpStream,
) -> std::io::Result<(Detected, bytes::Bytes)> {
    let prefix = read_prefix(
        stream,
        tls_detect::MAX_DETECT,
        ctx.config.detect_timeout,
        |buf| tls_detect::detect(buf) != Detected::NeedMore,
    )
    .await?;
    let detected = match tls_detect::detect(&prefix) {
        // Silence, or a partial record when the timeout or EOF came: not TLS we can use.
        Detected::NeedMore if prefix.is_empty() => Detected::NotTls,
        Detected::NeedMore => Detected::TlsUnreadable,
        d => d,
    };
    Ok((detected, prefix))
}

/// What is known of a connection's peer, and its policy.
struct Admitted {
    client_id: Option<Name>,
    labels: TcpLabels,
    policy: ConnPolicy,
}

async fn redirected(http: &Arc<HttpInbound>, mut stream: TcpStream, app: SocketAddr) {
    let ctx = &*http.ctx;
    let Ok(client) = stream.peer_addr().map(|a| a.ip()) else {
        return;
    };
    let plain = TcpLabels::new(Direction::Inbound, PeerSide::Src)
        .with_tls(Tls::NoIdentity(no_tls::NO_TLS_FROM_REMOTE), None);
    let port_policy = ctx.policies.get(app.port());
    let opaque = matches!(port_policy.borrow().protocol, Served::Opaque(_));
    let detected_port = matches!(port_policy.borrow().protocol, Served::Detect { .. });
    if opaque {
        // No TLS detection: mesh peers reach opaque ports through the direct path, so what
        // arrives here is bytes from a client the policy sees without TLS.
        let policy = ConnPolicy::new(
            port_policy,
            Client::new(client, ClientTls::None),
            app,
            ctx.no_tls("port_skipped"),
            ctx.config.policy_metrics.clone(),
        );
        return forward_tcp(ctx, Box::new(stream), app, plain, &policy).await;
    }
    drop(port_policy);
    // A server that speaks first is plaintext to a silent client: the app is dialled early
    // only when the port is detected and its policy admits a plaintext client as TCP, so no
    // byte of the app ever reaches a client the policy refuses.
    let plain_policy = || {
        ctx.conn_policy(
            app,
            client,
            ClientTls::None,
            ctx.no_tls(no_tls::NO_TLS_FROM_REMOTE),
        )
    };
    let metrics = &ctx.tcp.metrics.detect;
    let mut early = None;
    if detected_port && ctx.config.early_dial.is_some() {
        let policy = plain_policy();
        let delay = ctx.config.early_dial.filter(|_| policy.admits_tcp());
        let deadline = tokio::time::Instant::now() + ctx.config.detect_timeout;
        let mut peeked = [0u8; 1];
        let first = early::race(
            stream.peek(&mut peeked),
            delay,
            deadline,
            || Box::pin(dial_app(ctx, app)),
            metrics,
            Direction::Inbound,
        )
        .await;
        match first {
            First::ClientClosed => return,
            First::Server { first, conn } => {
                metrics.detected(Direction::Inbound, DetectResult::OpaqueServerFirst);
                debug!("the app spoke first: forwarding as bytes");
                let conn: BoxIo = Box::new(PrefixedIo::new(first, conn));
                let early = Early::Ready(conn);
                return forward_tcp_with(ctx, Box::new(stream), app, plain, &policy, early).await;
            }
            First::Timeout(e) => {
                metrics.detected(Direction::Inbound, DetectResult::Timeout);
                return forward_tcp_with(ctx, Box::new(stream), app, plain, &policy, e).await;
            }
            First::Client(e, _) => early = Some(e),
        }
    }
    let (detected, prefix) = match detect_tls(ctx, &mut stream).await {
        Ok(d) => d,
        Err(e) => {
            debug!(error = %e, "connection failed during detection");
            return;
        }
    };
    let io = PrefixedIo::new(prefix, stream);
    let for_us = matches!(&detected, Detected::ClientHello { sni: Some(sni) }
        if ctx.local_id().is_some_and(|id| id.as_str() == sni));
    let (io, admitted): (BoxIo, Admitted) = if for_us {
        if let Some(e) = early.take() {
            e.discard(metrics, Direction::Inbound);
        }
        let Some(creds) = ctx.inputs.tls.now() else {
            return;
        };
        let accepted = match mtls::accept(io, &creds, ctx.config.detect_timeout).await {
            Ok(a) => a,
            Err(failure) => {
                ctx.refuse(RefuseReason::TlsHandshake);
                warn!(error = %failure, "TLS handshake failed; closing");
                return;
            }
        };
        debug!(client.id = ?accepted.client_id.as_ref().map(|n| n.to_string()), "mTLS terminated");
        let id: Option<Arc<str>> = accepted.client_id.as_ref().map(|n| Arc::from(n.as_str()));
        let labels = TcpLabels::new(Direction::Inbound, PeerSide::Src)
            .with_tls(Tls::Established, id.clone());
        let admitted = Admitted {
            policy: ctx.conn_policy(
                app,
                client,
                ClientTls::Established(accepted.client_id.clone()),
                TlsLabel::Established(id),
            ),
            client_id: accepted.client_id,
            labels,
        };
        (Box::new(accepted.io), admitted)
    } else {
        let passthrough = matches!(
            detected,
            Detected::ClientHello { .. } | Detected::TlsUnreadable
        );
        if passthrough {
            // The app's own TLS: bytes only (never HTTP, so not detected).
            debug!("TLS not addressed to this proxy: passing it through to the app");
            let sni = match &detected {
                Detected::ClientHello { sni } => sni.as_deref().map(Arc::from),
                _ => None,
            };
            let labels =
                TcpLabels::new(Direction::Inbound, PeerSide::Src).with_tls(Tls::Opaque, None);
            let policy = ctx.conn_policy(app, client, ClientTls::Passthru, TlsLabel::Passthru(sni));
            let early = early.unwrap_or(Early::None);
            return forward_tcp_with(ctx, Box::new(io), app, labels, &policy, early).await;
        }
        let admitted = Admitted {
            client_id: None,
            labels: plain,
            policy: plain_policy(),
        };
        (Box::new(io), admitted)
    };
    serve_app_with(http, io, app, admitted, None, early).await;
}

/// Connects to the app early (`transport/early.rs`); `None` when the connect fails.
async fn dial_app(ctx: &InboundCtx, app: SocketAddr) -> Option<BoxIo> {
    match connect(app, ctx.tcp.connect).await {
        Ok(s) => Some(Box::new(s) as BoxIo),
        Err(e) => {
            debug!(error = %e, "the early dial of the app failed");
            None
        }
    }
}

/// What a connection turned out to be, by its port's policy and, where the policy asks for
/// it, detection.
enum Carry<'a> {
    Http(Protocol),
    /// Bytes, over the early connection to the app when there is one.
    Tcp(Early<'a, BoxIo>),
}

/// How the port's policy has `io` served: HTTP without detection, detection within a
/// timeout, or bytes; with `io` again (the bytes detection read replayed). `None` when the
/// connection ended (or was refused) meanwhile.
///
/// `early` is the accept stage's early connection (a plaintext client, which spoke first);
/// a meshed client of a detected port, silent after the handshake, gets its own early dial
/// here (the client-side proxy dialled early because its app was silent: the app's first
/// bytes cross both proxies without either waiting for its timeout).
async fn carry<'a>(
    ctx: &'a InboundCtx,
    mut io: BoxIo,
    app: SocketAddr,
    admitted: &Admitted,
    early: Option<Early<'a, BoxIo>>,
) -> Option<(Carry<'a>, BoxIo)> {
    let meshed = admitted.labels.target.tls == Tls::Established;
    let metrics = &ctx.tcp.metrics.detect;
    let discard = |early: Option<Early<'a, BoxIo>>| {
        if let Some(e) = early {
            e.discard(metrics, Direction::Inbound);
        }
    };
    let timeout = match &admitted.policy.policy.borrow().protocol {
        Served::Opaque(_) | Served::Tls(_) => {
            return Some((Carry::Tcp(early.unwrap_or(Early::None)), io));
        }
        Served::Http2(_) | Served::Grpc(_) => {
            discard(early);
            return Some((Carry::Http(Protocol::Http2), io));
        }
        Served::Http1(_) if !meshed => {
            discard(early);
            return Some((Carry::Http(Protocol::Http1), io));
        }
        // A meshed peer may have upgraded HTTP/1 to HTTP/2.
        Served::Http1(_) => None,
        Served::Detect { timeout, .. } => Some(*timeout),
    };
    let detect_timeout = timeout.unwrap_or(ctx.config.detect_timeout);
    let deadline = tokio::time::Instant::now() + detect_timeout;
    let mut early = early;
    if meshed && timeout.is_some() && early.is_none() {
        let delay = ctx
            .config
            .early_dial
            .filter(|_| admitted.policy.admits_tcp());
        let mut buf = [0u8; 1024];
        let first = early::race(
            io.read(&mut buf),
            delay,
            deadline,
            || Box::pin(dial_app(ctx, app)),
            metrics,
            Direction::Inbound,
        )
        .await;
        match first {
            First::ClientClosed => return None,
            First::Server { first, conn } => {
                metrics.detected(Direction::Inbound, DetectResult::OpaqueServerFirst);
                debug!("the app spoke first: forwarding as bytes");
                let conn: BoxIo = Box::new(PrefixedIo::new(first, conn));
                return Some((Carry::Tcp(Early::Ready(conn)), io));
            }
            First::Timeout(e) => {
                metrics.detected(Direction::Inbound, DetectResult::Timeout);
                return Some((Carry::Tcp(e), io));
            }
            First::Client(e, n) => {
                io = Box::new(PrefixedIo::new(
                    bytes::Bytes::copy_from_slice(&buf[..n]),
                    io,
                ));
                early = Some(e);
            }
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let (detected, prefix) = match detect::read(&mut io, left).await {
        Ok(d) => d,
        Err(e @ DetectError::AmbiguousLength) => {
            discard(early);
            ctx.refuse(RefuseReason::MalformedHttp);
            warn!("{e}");
            return None;
        }
        Err(DetectError::Io(_)) => {
            discard(early);
            return None;
        }
    };
    let silent = matches!(detect::detect(&prefix), detect::Detected::NeedMore);
    let io: BoxIo = Box::new(PrefixedIo::new(prefix, io));
    let carried = match detected {
        Some(p) => {
            discard(early);
            metrics.detected(Direction::Inbound, detected_result(p));
            Carry::Http(p)
        }
        // An HTTP/1 port's peer that sent nothing detectable in time is taken for HTTP/1.
        None if timeout.is_none() && silent => {
            discard(early);
            Carry::Http(Protocol::Http1)
        }
        None => {
            let result = if silent {
                DetectResult::Timeout
            } else {
                DetectResult::OpaqueClientFirst
            };
            metrics.detected(Direction::Inbound, result);
            Carry::Tcp(early.unwrap_or(Early::None))
        }
    };
    Some((carried, io))
}

/// The `protocol_detect_total` result of an HTTP protocol.
fn detected_result(protocol: Protocol) -> DetectResult {
    match protocol {
        Protocol::Http1 => DetectResult::Http1,
        Protocol::Http2 => DetectResult::Http2,
    }
}

/// Serves a connection for the app: HTTP per request when it is HTTP (or `protocol` says so),
/// bytes otherwise.
async fn serve_app(
    http: &Arc<HttpInbound>,
    io: BoxIo,
    app: SocketAddr,
    admitted: Admitted,
    protocol: Option<Protocol>,
) {
    serve_app_with(http, io, app, admitted, protocol, None).await
}

/// [`serve_app`], with the accept stage's early connection to the app, if any.
async fn serve_app_with(
    http: &Arc<HttpInbound>,
    io: BoxIo,
    app: SocketAddr,
    mut admitted: Admitted,
    protocol: Option<Protocol>,
    early: Option<Early<'_, BoxIo>>,
) {
    let ctx = &*http.ctx;
    admitted.labels = admitted.labels.with_target(app, None, None);
    let (carried, io) = match protocol {
        Some(p) => {
            if let Some(e) = early {
                e.discard(&ctx.tcp.metrics.detect, Direction::Inbound);
            }
            (Carry::Http(p), io)
        }
        None => match carry(ctx, io, app, &admitted, early).await {
            Some(c) => c,
            None => return,
        },
    };
    match carried {
        Carry::Http(protocol) => {
            let io: BoxIo = Box::new(Counted::new(
                io,
                ctx.tcp.metrics.open(admitted.labels.clone()),
                None,
            ));
            let http = http.clone();
            let gate = ctx
                .inputs
                .in_flight(Direction::Inbound)
                .gate_for(admitted.policy.client.addr, admitted.client_id.is_some());
            let conn = Arc::new(InboundConn::new(
                app,
                admitted.client_id,
                admitted.policy,
                admitted.labels.target.clone(),
            ));
            let drain = ctx.inputs.drain.clone();
            crate::http::server::serve(
                io,
                protocol,
                ctx.config.http,
                drain,
                Some(gate),
                move |req| {
                    let (http, conn) = (http.clone(), conn.clone());
                    async move { http.serve(&conn, req).await }
                },
            )
            .await
        }
        Carry::Tcp(early) => {
            forward_tcp_with(ctx, io, app, admitted.labels, &admitted.policy, early).await
        }
    }
}

/// Forwards a TCP connection to the app if its port's policy admits it, for as long as the
/// policy does.
async fn forward_tcp(
    ctx: &InboundCtx,
    client: BoxIo,
    app: SocketAddr,
    labels: TcpLabels,
    policy: &ConnPolicy,
) {
    forward_tcp_with(ctx, client, app, labels, policy, Early::None).await
}

/// [`forward_tcp`] over the early connection to the app when there is one (a failed early
/// dial is dialled again).
async fn forward_tcp_with(
    ctx: &InboundCtx,
    client: BoxIo,
    app: SocketAddr,
    labels: TcpLabels,
    policy: &ConnPolicy,
    early: Early<'_, BoxIo>,
) {
    if !ctx.authorize_tcp(policy) {
        early.discard(&ctx.tcp.metrics.detect, Direction::Inbound);
        return;
    }
    tokio::select! {
        _ = to_app(ctx, client, app, labels, early) => {}
        // Dropping the forwarding closes both sides.
        _ = policy.revoked() => {}
    }
}

/// Connects to the app (or takes the early connection) and forwards.
async fn to_app(
    ctx: &InboundCtx,
    client: BoxIo,
    app: SocketAddr,
    labels: TcpLabels,
    early: Early<'_, BoxIo>,
) {
    let labels = labels.with_target(app, None, None);
    match early.take().await {
        Some(conn) => {
            ctx.tcp
                .metrics
                .detect
                .early_dial(Direction::Inbound, EarlyDial::Used);
            proxy(&ctx.tcp, client, conn, labels, app).await
        }
        None => proxy_to(&ctx.tcp, client, app, labels).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::orig_dst::LocalIps;

    #[test]
    fn decisions() {
        let own = OwnAddrs::new(
            vec![
                "0.0.0.0:4143".parse().unwrap(),
                "127.0.0.1:4191".parse().unwrap(),
            ],
            LocalIps::new(),
        );
        assert_eq!(decide(OrigDst::NotRedirected, &own), Decision::Direct);
        assert_eq!(
            decide(
                OrigDst::Redirected("192.0.2.10:8080".parse().unwrap()),
                &own
            ),
            Decision::Refuse(RefuseReason::NotLocal)
        );
        let app = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            decide(OrigDst::Redirected(app), &own),
            Decision::Forward(app)
        );
        assert_eq!(
            decide(OrigDst::Redirected("127.0.0.1:4191".parse().unwrap()), &own),
            Decision::Refuse(RefuseReason::Loop)
        );
    }
}
