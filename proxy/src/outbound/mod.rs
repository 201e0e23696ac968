//! The outbound listener: connections the pod's app opened, redirected here by iptables, or
//! addressed to the listener itself (explicit mode: the app uses it as its HTTP proxy).
//!
//! ```text
//! accept ─► original destination
//!   ├─ redirected (transparent): detect ─► HTTP: per request, by authority, else the original
//!   │                                      destination ([`http`])
//!   │                                    └ other: one endpoint of the original destination
//!   │      (while the app is silent, that endpoint, or the policy's opaque route, is dialled
//!   │       early: a server that speaks first is forwarded at once, `crate::transport::early`)
//!   ├─ addressed to the listener itself, or no conntrack entry (explicit): detect ─►
//!   │      HTTP: absolute-form requests by authority, CONNECT host:port as an opaque tunnel
//!   │            ([`explicit`]), origin-form requests 400
//!   │      other: 400 and close
//!   └─ one of the proxy's own listeners: refused (loop)
//! ```
//!
//! Both modes join the same per-request router and the same dial (discovery, balancing,
//! mTLS, retries, timeouts, metrics); explicit mode differs only in where the destination
//! comes from.
//!
//! # Layout
//! - this module: the listener, the decision per connection, opaque forwarding.
//! - [`connect`]: [`connect::Destination`] and the [`connect::Connector`] every dial uses.
//! - [`http`]: the per-request router (authority, discovery, split, balancing).
//! - [`retry`]: the attempts of one request (retries, budgets, timeouts).
//! - [`policy`]: the control plane's outbound policy (`OutboundPolicies`): routes, filters,
//!   backends, retries and timeouts as linkerd2-proxy applies them; targets without one are
//!   routed as above.
//! - [`explicit`]: requests to the listener used as an HTTP proxy, `CONNECT` tunnels.

pub mod connect;
pub mod explicit;
pub mod http;
pub mod policy;
pub mod retry;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use remora_metrics::detect::{DetectResult, EarlyDial};
use remora_metrics::outbound_route::OutboundRouteMetrics;
use remora_metrics::tcp::{Direction, Peer, RefuseReason, TcpLabels, Tls};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info, info_span, warn};

use self::connect::{Connection, Connector, Destination};
use self::http::{ConnMemo, HttpOutbound};
use self::policy::client::ConnPolicy;
use self::policy::http::{ConnPolicies, LastTarget};
use self::policy::{OutboundPolicy, PolicyClient, PolicyTarget, Protocol as PolicyProtocol};
use crate::discovery::Hint;
use crate::http::detect::{self, DetectError, Protocol};
use crate::http::server::Limits;
use crate::inputs::ProxyInputs;
use crate::tls::mtls::no_tls;
use crate::transport::early::{self, Early, First, Upstream};
use crate::transport::forward::Counted;
use crate::transport::io::{BoxIo, Io, PrefixedIo};
use crate::transport::listen::{AcceptCtx, serve};
use crate::transport::orig_dst::{LocalIps, OrigDst, original_dst};
use crate::transport::own::OwnAddrs;
use crate::transport::tcp::{TcpCtx, proxy};

/// What the outbound does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Forward(SocketAddr),
    /// The app addressed the listener itself: an HTTP proxy client.
    Explicit,
    Refuse(RefuseReason),
}

/// Decides from the original destination alone.
pub fn decide(orig: OrigDst, own: &OwnAddrs) -> Decision {
    match orig {
        OrigDst::NotRedirected => Decision::Explicit,
        OrigDst::Redirected(dst) if own.is_own_listener(dst) => {
            Decision::Refuse(RefuseReason::Loop)
        }
        OrigDst::Redirected(dst) => Decision::Forward(dst),
    }
}

/// The outbound's own settings, beside the inputs it shares with the inbound.
#[derive(Clone, Copy, Debug)]
pub struct OutboundConfig {
    /// How long to wait for the app's first bytes before treating them as opaque TCP.
    pub detect_timeout: Duration,
    /// The default HTTP request timeout (a profile route's timeout overrides it).
    pub request_timeout: Option<Duration>,
    /// What the outbound's HTTP server accepts from the app.
    pub http: Limits,
    /// Ingress mode: HTTP is routed by `l5d-dst-override` or the authority, not the original
    /// destination, and every port is detected.
    pub ingress: bool,
    /// How long the app may stay silent before its destination is dialled early
    /// (`REMORA_DETECT_EARLY_DIAL`; `None`: never, wait for its bytes or the timeout).
    pub early_dial: Option<Duration>,
}

impl Upstream for Connection {
    fn io_mut(&mut self) -> &mut BoxIo {
        &mut self.io
    }
}

/// Everything the outbound needs per connection and per request.
#[derive(Debug)]
pub struct OutboundCtx {
    pub inputs: Arc<ProxyInputs>,
    pub config: OutboundConfig,
    pub tcp: TcpCtx,
    pub connector: Connector,
    /// The outbound policy client (with a policy service).
    pub policy: Option<PolicyClient>,
    /// Linkerd's outbound route families (policy-routed traffic only).
    pub routes: OutboundRouteMetrics,
}

/// How long a new target's first connection waits for its first policy answer without
/// discovery configured (with it: the discovery timeout).
const POLICY_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct Outbound {
    listeners: Vec<TcpListener>,
    accept: AcceptCtx,
    http: Arc<HttpOutbound>,
}

impl Outbound {
    /// The outbound on `listeners`; with a policy service in `inputs`, it watches its
    /// targets' outbound policies and records `routes`. Call within a runtime.
    pub fn new(
        listeners: Vec<TcpListener>,
        accept: AcceptCtx,
        inputs: Arc<ProxyInputs>,
        config: OutboundConfig,
        routes: OutboundRouteMetrics,
    ) -> Self {
        let wait = inputs.discovery.as_ref().map_or(POLICY_WAIT, |d| d.timeout);
        let ctx = Arc::new(OutboundCtx {
            tcp: inputs.tcp(Direction::Outbound),
            connector: Connector::new(inputs.clone(), Direction::Outbound),
            policy: inputs.policy.as_ref().map(|p| PolicyClient::new(p, wait)),
            inputs,
            config,
            routes,
        });
        Outbound {
            listeners,
            accept,
            http: Arc::new(HttpOutbound::new(ctx)),
        }
    }

    /// The HTTP router, which a gateway shares.
    pub fn http(&self) -> Arc<HttpOutbound> {
        self.http.clone()
    }

    pub async fn run(self) {
        let http = self.http;
        serve(self.listeners, self.accept, move |stream, client| {
            let http = http.clone();
            // One span per connection, entered at each poll of it: what is learnt later (the
            // destination, explicit mode) is recorded on it rather than in nested spans, each of
            // which would be entered too (~350 instructions a poll under Linkerd's default filter).
            async move { handle(&http, stream, client).await }.instrument(info_span!(
                "outbound",
                %client,
                dst = tracing::field::Empty,
                explicit = tracing::field::Empty
            ))
        })
        .await
    }
}

async fn handle(http: &Arc<HttpOutbound>, stream: TcpStream, client: SocketAddr) {
    let ctx = &*http.ctx;
    let orig = match original_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            warn!(error = %e, "cannot read the original destination; closing");
            ctx.tcp
                .metrics
                .refused(Direction::Outbound, RefuseReason::NoOriginalDst);
            return;
        }
    };
    match decide(orig, &ctx.inputs.own) {
        Decision::Forward(dst) => transparent(http, stream, dst).await,
        Decision::Explicit if !explicit_client_allowed(client.ip(), &ctx.inputs.own.ips) => {
            ctx.tcp
                .metrics
                .refused(Direction::Outbound, RefuseReason::ExplicitForeignClient);
            warn!(
                "refusing an explicit (HTTP proxy) connection from outside this pod: the \
                 outbound listener speaks with the pod's identity; bind it to a loopback or \
                 pod-private address"
            );
        }
        Decision::Explicit => {
            tracing::Span::current().record("explicit", true);
            explicit(http, stream).await
        }
        Decision::Refuse(reason) => {
            ctx.tcp.metrics.refused(Direction::Outbound, reason);
            warn!(
                ?orig,
                "refusing a connection whose destination is one of this proxy's own listeners"
            );
        }
    }
}

/// A redirected connection to `dst`: by its outbound policy when the control plane has one
/// for it; otherwise HTTP per request, anything else forwarded to one endpoint of `dst`.
async fn transparent(http: &Arc<HttpOutbound>, stream: TcpStream, dst: SocketAddr) {
    let ctx = &*http.ctx;
    // Ingress mode's requests name their targets: their policy is looked up per request.
    let conn = match &ctx.policy {
        Some(client) if !ctx.config.ingress => client
            .addr(dst)
            .await
            .map(|rx| Arc::new(ConnPolicy::new(PolicyTarget::Addr(dst), rx))),
        _ => None,
    };
    if let (Some(client), Some(conn)) = (&ctx.policy, &conn)
        && let Some(policy) = conn.current(client)
    {
        return by_policy(http, stream, dst, policy, conn.clone()).await;
    }
    let policies = match conn {
        // A target whose first answer was refused: a later policy applies to its requests.
        Some(c) => ConnPolicies::Fixed(c),
        None if ctx.config.ingress && ctx.policy.is_some() => {
            ConnPolicies::ByTarget(Arc::new(LastTarget::default()))
        }
        None => ConnPolicies::None,
    };
    let route = resolve(ctx, dst).await;
    // Ingress mode detects every port: its requests name their targets.
    let opaque = !ctx.config.ingress
        && (ctx.inputs.is_opaque(dst.port())
            || route
                .as_ref()
                .and_then(|d| d.endpoint.as_ref())
                .is_some_and(|ep| ep.hint == Hint::Opaque));
    if opaque {
        let Some(dest) = route else {
            ctx.tcp
                .metrics
                .refused(Direction::Outbound, RefuseReason::NoEndpoints);
            return;
        };
        let span = info_span!("target", %dst, endpoint = %dest.addr);
        return forward(ctx, Box::new(stream), dest).instrument(span).await;
    }
    let target = EarlyTarget::Plain(route);
    let timeout = ctx.config.detect_timeout;
    detect_early(http, stream, dst, target, timeout, policies).await
}

/// Where a detected connection's bytes go: one endpoint of the original destination, or its
/// policy's opaque route.
enum EarlyTarget<'p> {
    /// The endpoint picked for the original destination (`None`: it has none).
    Plain(Option<Destination>),
    Policy(&'p Arc<OutboundPolicy>),
}

/// Detection on a redirected connection to `dst` (not opaque), with the early dial
/// (`transport/early.rs`): while the app is silent, its destination is dialled, and a server
/// that speaks first is forwarded at once; an app that speaks first is detected as always, its
/// opaque bytes going over the early connection when there is one.
async fn detect_early(
    http: &Arc<HttpOutbound>,
    mut stream: TcpStream,
    dst: SocketAddr,
    mut target: EarlyTarget<'_>,
    timeout: Duration,
    policies: ConnPolicies,
) {
    let ctx = &*http.ctx;
    let metrics = &ctx.tcp.metrics.detect;
    let deadline = tokio::time::Instant::now() + timeout;
    // Without a destination there is nothing to dial (HTTP may still be routed).
    let delay = match &target {
        EarlyTarget::Plain(None) => None,
        _ => ctx.config.early_dial,
    };
    let mut peeked = [0u8; 1];
    let first = early::race(
        stream.peek(&mut peeked),
        delay,
        deadline,
        || {
            let dial = match &mut target {
                EarlyTarget::Plain(route) => EarlyDialOf::Plain(route.take()),
                EarlyTarget::Policy(policy) => EarlyDialOf::Policy(policy.clone()),
            };
            Box::pin(dial_early(http, dst, dial))
        },
        metrics,
        Direction::Outbound,
    )
    .await;
    let (io, early): (BoxIo, Early<'_, Connection>) = match first {
        First::ClientClosed => return,
        First::Server { first, mut conn } => {
            metrics.detected(Direction::Outbound, DetectResult::OpaqueServerFirst);
            metrics.early_dial(Direction::Outbound, EarlyDial::Used);
            debug!(%dst, "the server spoke first: forwarding as bytes");
            conn.io = Box::new(PrefixedIo::new(first, conn.io));
            return forward_early(http, Box::new(stream), dst, &target, conn).await;
        }
        First::Timeout(early) => {
            metrics.detected(Direction::Outbound, DetectResult::Timeout);
            (Box::new(stream), early)
        }
        First::Client(early, _) => {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match detect::read(&mut stream, left).await {
                Ok((Some(protocol), prefix)) => {
                    metrics.detected(Direction::Outbound, detected(protocol));
                    adopt_or_discard(http, early, protocol, &target).await;
                    let io = PrefixedIo::new(prefix, stream);
                    tracing::Span::current().record("dst", tracing::field::display(dst));
                    return serve_http(http, io, protocol, Some(dst), policies).await;
                }
                Ok((None, prefix)) => {
                    metrics.detected(Direction::Outbound, DetectResult::OpaqueClientFirst);
                    (Box::new(PrefixedIo::new(prefix, stream)), early)
                }
                Err(e) => {
                    early.discard(metrics, Direction::Outbound);
                    return detection_failed(ctx, &e);
                }
            }
        }
    };
    let started = early.started();
    if let Some(conn) = early.take().await {
        metrics.early_dial(Direction::Outbound, EarlyDial::Used);
        return forward_early(http, io, dst, &target, conn).await;
    }
    let route = match target {
        EarlyTarget::Plain(route) => route,
        // A failed early dial (or none) is dialled again by the route, which refuses as it
        // refuses any connection.
        EarlyTarget::Policy(policy) => return opaque_by_policy(http, io, dst, policy).await,
    };
    match route {
        Some(dest) => {
            let span = info_span!("target", %dst, endpoint = %dest.addr);
            forward(ctx, io, dest).instrument(span).await
        }
        None if started => {
            // The early dial failed (counted, and reported to the balancer, by the connector).
            warn!(%dst, "closing the client connection: the connect failed; nothing was sent");
            io.reset();
        }
        None => ctx
            .tcp
            .metrics
            .refused(Direction::Outbound, RefuseReason::NoEndpoints),
    }
}

/// An HTTP client spoke first over an early connection: a plaintext connection to the
/// original destination's endpoint is what its HTTP/1 requests would be dialled as, so it joins
/// the HTTP pool (the first request to that endpoint takes it); anything else (mTLS, where the
/// early dial's transport header said opaque; HTTP/2; a policy's route) is closed, wasted.
async fn adopt_or_discard(
    http: &Arc<HttpOutbound>,
    early: Early<'_, Connection>,
    protocol: Protocol,
    target: &EarlyTarget<'_>,
) {
    let ctx = &*http.ctx;
    let metrics = &ctx.tcp.metrics.detect;
    let plain = matches!(target, EarlyTarget::Plain(_)) && protocol == Protocol::Http1;
    let conn = match early {
        Early::Ready(conn) if plain && conn.labels.target.tls != Tls::Established => conn,
        other => return other.discard(metrics, Direction::Outbound),
    };
    let key = crate::http::pool::Key {
        addr: conn.addr,
        kind: crate::http::pool::Kind::Http1,
        identity: None,
    };
    let io: BoxIo = Box::new(conn.counted(&ctx.inputs, None));
    let outcome = if http.pool.adopt_h1(&key, io) {
        EarlyDial::Used
    } else {
        EarlyDial::Wasted
    };
    metrics.early_dial(Direction::Outbound, outcome);
}

/// What an early dial dials.
enum EarlyDialOf {
    Plain(Option<Destination>),
    Policy(Arc<OutboundPolicy>),
}

/// Dials early: the picked endpoint, or the policy's opaque route (its filters applied), or
/// an endpoint of `dst` for a policy without one. `None` when nothing was dialled.
async fn dial_early(
    http: &Arc<HttpOutbound>,
    dst: SocketAddr,
    of: EarlyDialOf,
) -> Option<Connection> {
    let ctx = &*http.ctx;
    let mut dest = match of {
        EarlyDialOf::Plain(dest) => dest?,
        EarlyDialOf::Policy(policy) => match policy.opaque() {
            Some(route) => return http.dial_by_route(dst, route).await.ok(),
            None => resolve(ctx, dst).await?,
        },
    };
    match ctx.connector.connect(&mut dest, None).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            debug!(error = %e, "the early dial failed");
            None
        }
    }
}

/// Forwards `io` over the early connection `conn`, by the policy's opaque route if it has one.
async fn forward_early(
    http: &Arc<HttpOutbound>,
    io: BoxIo,
    dst: SocketAddr,
    target: &EarlyTarget<'_>,
    conn: Connection,
) {
    let span = info_span!("target", %dst, endpoint = %conn.addr);
    if let EarlyTarget::Policy(policy) = target
        && let Some(route) = policy.opaque()
    {
        return http
            .forward_dialled(io, dst, policy, route, false, Ok(conn))
            .instrument(span)
            .await;
    }
    proxy(&http.ctx.tcp, io, conn.io, conn.labels, conn.addr)
        .instrument(span)
        .await
}

/// The `protocol_detect_total` result of an HTTP protocol.
fn detected(protocol: Protocol) -> DetectResult {
    match protocol {
        Protocol::Http1 => DetectResult::Http1,
        Protocol::Http2 => DetectResult::Http2,
    }
}

/// A redirected connection to `dst`, whose target has `policy`: its protocol decides (a port
/// configured opaque, or a profile saying so, is opaque whatever the policy).
async fn by_policy(
    http: &Arc<HttpOutbound>,
    stream: TcpStream,
    dst: SocketAddr,
    policy: Arc<OutboundPolicy>,
    conn: Arc<ConnPolicy>,
) {
    let ctx = &*http.ctx;
    let profile = ctx
        .inputs
        .discovery
        .as_ref()
        .map(|d| d.resolver.resolve(&dst.to_string()).profile);
    let profile_opaque = profile
        .as_ref()
        .is_some_and(|p| p.borrow().as_ref().is_some_and(|p| p.proto.opaque_protocol));
    let span = info_span!("policy", %dst, parent = %policy.parent);
    let timeout = match &policy.protocol {
        PolicyProtocol::Opaque(_) => {
            return opaque_by_policy(http, Box::new(stream), dst, &policy)
                .instrument(span)
                .await;
        }
        PolicyProtocol::Tls(routes) => {
            return tls_by_policy(http, stream, dst, &policy, routes)
                .instrument(span)
                .await;
        }
        PolicyProtocol::Detect { timeout, .. } => *timeout,
        PolicyProtocol::Http1(_) | PolicyProtocol::Http2(_) | PolicyProtocol::Grpc(_) => {
            ctx.config.detect_timeout
        }
    };
    if ctx.inputs.is_opaque(dst.port()) || profile_opaque {
        return opaque_by_policy(http, Box::new(stream), dst, &policy)
            .instrument(span)
            .await;
    }
    // The profile serves the connection's HTTP requests, if it turns out to be HTTP.
    if let Some(p) = profile {
        conn.set_profile(p);
    }
    let target = EarlyTarget::Policy(&policy);
    detect_early(
        http,
        stream,
        dst,
        target,
        timeout,
        ConnPolicies::Fixed(conn),
    )
    .instrument(span)
    .await
}

/// An opaque connection to a target with a policy: its opaque route, or (a policy without
/// one, e.g. `Http1`) one endpoint of `dst` as without a policy.
async fn opaque_by_policy(
    http: &Arc<HttpOutbound>,
    io: BoxIo,
    dst: SocketAddr,
    policy: &Arc<OutboundPolicy>,
) {
    let ctx = &*http.ctx;
    if let Some(route) = policy.opaque() {
        return http.forward_by_route(io, dst, policy, route, false).await;
    }
    let Some(dest) = resolve(ctx, dst).await else {
        ctx.tcp
            .metrics
            .refused(Direction::Outbound, RefuseReason::NoEndpoints);
        return;
    };
    forward(ctx, io, dest).await
}

/// A TLS connection to a target with a TLS policy: the route of the ClientHello's SNI.
async fn tls_by_policy(
    http: &Arc<HttpOutbound>,
    mut stream: TcpStream,
    dst: SocketAddr,
    policy: &Arc<OutboundPolicy>,
    routes: &policy::TlsRoutes,
) {
    use crate::tls::detect::{Detected, MAX_DETECT, detect as detect_tls};
    let ctx = &*http.ctx;
    let prefix = match crate::transport::io::read_prefix(
        &mut stream,
        MAX_DETECT,
        ctx.config.detect_timeout,
        |buf| !matches!(detect_tls(buf), Detected::NeedMore),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return debug!(error = %e, "closing"),
    };
    let sni = match detect_tls(&prefix) {
        Detected::ClientHello { sni } => sni,
        _ => None,
    };
    let io: BoxIo = Box::new(PrefixedIo::new(prefix, stream));
    match policy::opaque::tls_route(routes, sni.as_deref()) {
        Some(route) => http.forward_by_route(io, dst, policy, route, true).await,
        None => {
            info!(%dst, ?sni, "no TLS route matches the connection's SNI; resetting it");
            io.reset();
        }
    }
}

/// Counts and logs a detection that ended the connection.
fn detection_failed(ctx: &OutboundCtx, e: &DetectError) {
    match e {
        DetectError::AmbiguousLength => {
            ctx.tcp
                .metrics
                .refused(Direction::Outbound, RefuseReason::MalformedHttp);
            warn!("{e}");
        }
        DetectError::Io(_) => debug!(error = %e, "closing"),
    }
}

/// Whether `client` may use the outbound listener as its HTTP proxy: only the pod's own apps
/// (loopback, or one of the pod's addresses) may, as whatever it sends leaves with the pod's
/// identity.
fn explicit_client_allowed(client: IpAddr, own: &LocalIps) -> bool {
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    client.is_loopback() || own.contains(client)
}

/// An explicit connection: the app speaks to the proxy as to an HTTP proxy. Anything but HTTP
/// is answered 400.
async fn explicit(http: &Arc<HttpOutbound>, mut stream: TcpStream) {
    let ctx = &*http.ctx;
    match detect::read(&mut stream, ctx.config.detect_timeout).await {
        Ok((Some(protocol), prefix)) => {
            let policies = match ctx.policy {
                Some(_) => ConnPolicies::ByTarget(Arc::new(LastTarget::default())),
                None => ConnPolicies::None,
            };
            serve_http(
                http,
                PrefixedIo::new(prefix, stream),
                protocol,
                None,
                policies,
            )
            .await
        }
        Ok((None, prefix)) => {
            ctx.tcp
                .metrics
                .refused(Direction::Outbound, RefuseReason::ExplicitNotHttp);
            info!(
                read = prefix.len(),
                "a connection addressed to the outbound listener did not open with an HTTP \
                 request; answering 400 (use the listener as an HTTP proxy, or let iptables \
                 redirect connections to it)"
            );
            let _ = stream.write_all(detect::EXPLICIT_NOT_HTTP_RESPONSE).await;
            let _ = stream.shutdown().await;
        }
        Err(e) => detection_failed(ctx, &e),
    }
}

/// Dials the destination (mTLS when discovery names its identity) and forwards.
async fn forward(ctx: &OutboundCtx, client: BoxIo, mut dest: Destination) {
    match ctx.connector.connect(&mut dest, None).await {
        Ok(conn) => proxy(&ctx.tcp, client, conn.io, conn.labels, conn.addr).await,
        Err(e) => {
            warn!(error = %e, "closing the client connection; nothing was sent");
            client.reset();
        }
    }
}

/// Serves an HTTP connection from the app: each request is routed on its own. `dst` is the
/// original destination of a redirected connection, `None` for an explicit one.
async fn serve_http(
    http: &Arc<HttpOutbound>,
    io: PrefixedIo<TcpStream>,
    protocol: Protocol,
    dst: Option<SocketAddr>,
    policies: ConnPolicies,
) {
    let ctx = &*http.ctx;
    let mut labels = TcpLabels::new(Direction::Outbound, Peer::Src)
        .with_tls(Tls::NoIdentity(no_tls::LOOPBACK), None);
    if let Some(dst) = dst {
        labels = labels.with_target(dst, None, None);
    }
    let io: BoxIo = Box::new(Counted::new(io, ctx.tcp.metrics.open(labels), None));
    let http = http.clone();
    let drain = ctx.inputs.drain.clone();
    let gate = ctx.inputs.gate(Direction::Outbound);
    let memo = Arc::new(ConnMemo::default());
    crate::http::server::serve(
        io,
        protocol,
        ctx.config.http,
        drain,
        Some(gate),
        move |req| {
            let (http, policies, memo) = (http.clone(), policies.clone(), memo.clone());
            async move {
                match dst {
                    Some(dst) => http.handle_with(Some(dst), &policies, &memo, req).await,
                    None => http.handle_explicit_with(&policies, &memo, req).await,
                }
            }
        },
    )
    .await
}

/// Where an opaque connection to original destination `dst` goes: one of its discovered
/// endpoints, or `dst` itself when discovery does not know it. `None` when it has no endpoint
/// (refused, counted).
async fn resolve(ctx: &OutboundCtx, dst: SocketAddr) -> Option<Destination> {
    let Some(d) = &ctx.inputs.discovery else {
        return Some(Destination::as_is(dst));
    };
    let pick = d.resolver.resolve(&dst.to_string()).pick(d.timeout).await;
    let dest = Destination::from_pick(pick, dst, None);
    match &dest {
        Some(Destination {
            endpoint: Some(ep), ..
        }) => {
            debug!(%dst, endpoint = %ep.addr, identity = ?ep.identity, hint = ?ep.hint, "resolved")
        }
        Some(_) => {}
        None => warn!(%dst, waited = ?d.timeout, "no endpoints for this destination"),
    }
    dest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pods_own_apps_may_use_explicit_mode() {
        let own = LocalIps::new();
        for ok in ["127.0.0.1", "127.88.3.4", "::1", "::ffff:127.0.0.1"] {
            assert!(explicit_client_allowed(ok.parse().unwrap(), &own), "{ok}");
        }
        for no in ["192.0.2.7", "2001:db8::7", "::ffff:192.0.2.7"] {
            assert!(!explicit_client_allowed(no.parse().unwrap(), &own), "{no}");
        }
    }

    #[test]
    fn decisions() {
        let own = OwnAddrs::new(
            vec![
                "127.0.0.1:4140".parse().unwrap(),
                "0.0.0.0:4143".parse().unwrap(),
                "127.0.0.1:4191".parse().unwrap(),
            ],
            LocalIps::new(),
        );
        assert_eq!(decide(OrigDst::NotRedirected, &own), Decision::Explicit);
        let remote = "192.0.2.10:8080".parse().unwrap();
        assert_eq!(
            decide(OrigDst::Redirected(remote), &own),
            Decision::Forward(remote)
        );
        for own_addr in ["127.0.0.1:4191", "127.0.0.1:4143"] {
            assert_eq!(
                decide(OrigDst::Redirected(own_addr.parse().unwrap()), &own),
                Decision::Refuse(RefuseReason::Loop)
            );
        }
    }
}
