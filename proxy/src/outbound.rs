//! The outbound listener: connections the pod's app opened, redirected here by iptables, or
//! addressed to the listener itself (explicit mode: the app uses it as its HTTP proxy).
//!
//! ```text
//! accept ─► original destination
//!   ├─ redirected (transparent): detect ─► HTTP: per request, by authority, else the original
//!   │                                      destination ([`l7::outbound`])
//!   │                                    └ other: one endpoint of the original destination
//!   ├─ addressed to the listener itself, or no conntrack entry (explicit): detect ─►
//!   │      HTTP: absolute-form requests by authority, CONNECT host:port as an opaque tunnel
//!   │            ([`l7::explicit`]), origin-form requests 400
//!   │      other: 400 and close
//!   └─ one of the proxy's own listeners: refused (loop)
//! ```
//!
//! Both modes join the same per-request router and the same dial (discovery, balancing,
//! mTLS, retries, timeouts, metrics); explicit mode differs only in where the destination
//! comes from.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use remora_metrics::http::HttpMetrics;
use remora_metrics::tcp::{Direction, Peer, RefuseReason, TcpLabels, Tls};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

use tracing::{Instrument, debug, info, info_span, warn};

use std::collections::HashSet;

use tokio::io::AsyncWriteExt;

use crate::balance::Picked;
use crate::discovery::{Endpoint, Hint, Pick, Resolver};
use crate::forward::Counted;
use crate::io::{BoxIo, Io, PrefixedIo};
use crate::l7;
use crate::l7::outbound::HttpOutbound;
use crate::l7::pool::Pool;
use crate::mtls::{DialTarget, LocalTls, dial, no_tls};

use crate::listen::{AcceptCtx, serve};
use crate::orig_dst::{LocalIps, OrigDst, original_dst};
use crate::own::OwnAddrs;
use crate::tcp::{TcpCtx, proxy};

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

/// Discovery as the outbound uses it: the resolver and how long to wait for an answer.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub resolver: Arc<Resolver>,
    pub timeout: Duration,
}

/// Everything the outbound needs per connection.
#[derive(Debug)]
pub struct OutboundCtx {
    pub tcp: TcpCtx,
    pub own: Arc<OwnAddrs>,
    pub discovery: Option<Discovery>,
    pub tls: LocalTls,
    /// Ports never protocol-detected (server-speaks-first protocols).
    pub opaque_ports: Arc<HashSet<u16>>,
    pub detect_timeout: Duration,
    pub http_metrics: HttpMetrics,
    pub http_limits: l7::server::Limits,
    /// The default HTTP request timeout (a profile route's timeout overrides it).
    pub request_timeout: Option<Duration>,
    pub pool_idle_timeout: Duration,
    /// One JSON line per HTTP request, when enabled.
    pub access_log: Option<l7::record::AccessLog>,
}

#[derive(Debug)]
pub struct Outbound {
    listeners: Vec<TcpListener>,
    accept: AcceptCtx,
    ctx: Arc<OutboundCtx>,
    http: Arc<HttpOutbound>,
}

impl Outbound {
    pub fn new(listeners: Vec<TcpListener>, accept: AcceptCtx, ctx: OutboundCtx) -> Self {
        let ctx = Arc::new(ctx);
        Outbound {
            listeners,
            accept,
            http: Arc::new(HttpOutbound {
                ctx: ctx.clone(),
                pool: Pool::with_evictor(ctx.pool_idle_timeout),
                rng: std::sync::atomic::AtomicU64::new(
                    std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8) | 1,
                ),
            }),
            ctx,
        }
    }

    /// The HTTP router, which a gateway shares.
    pub fn http(&self) -> Arc<HttpOutbound> {
        self.http.clone()
    }

    pub async fn run(self) {
        let (ctx, http) = (self.ctx, self.http);
        serve(self.listeners, self.accept, move |stream, client| {
            let (ctx, http) = (ctx.clone(), http.clone());
            async move { handle(&ctx, &http, stream, client).await }
                .instrument(info_span!("outbound", %client))
        })
        .await
    }
}

async fn handle(
    ctx: &OutboundCtx,
    http: &Arc<HttpOutbound>,
    mut stream: TcpStream,
    client: SocketAddr,
) {
    let tcp = &ctx.tcp;
    let orig = match original_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            warn!(error = %e, "cannot read the original destination; closing");
            tcp.metrics
                .refused(Direction::Outbound, RefuseReason::NoOriginalDst);
            return;
        }
    };
    match decide(orig, &ctx.own) {
        Decision::Forward(dst) => {
            let route = endpoint(ctx.discovery.as_ref(), dst).await;
            let opaque = ctx.opaque_ports.contains(&dst.port())
                || matches!(&route, Some((_, Some(ep), _)) if ep.hint == Hint::Opaque);
            let io: BoxIo = if opaque {
                Box::new(stream)
            } else {
                match l7::detect::read(&mut stream, ctx.detect_timeout).await {
                    Ok((Some(protocol), prefix)) => {
                        if protocol == l7::detect::Protocol::Http1
                            && l7::detect::ambiguous_length(&prefix)
                        {
                            tcp.metrics
                                .refused(Direction::Outbound, RefuseReason::MalformedHttp);
                            warn!(
                                "request with both content-length and transfer-encoding; answering 400"
                            );
                            let _ = stream
                                .write_all(l7::detect::AMBIGUOUS_LENGTH_RESPONSE)
                                .await;
                            return;
                        }
                        let io = PrefixedIo::new(prefix, stream);
                        return serve_http(ctx, http, io, protocol, Some(dst))
                            .instrument(info_span!("http", %dst))
                            .await;
                    }
                    Ok((None, prefix)) => Box::new(PrefixedIo::new(prefix, stream)),
                    Err(e) => {
                        debug!(error = %e, "connection failed during detection");
                        return;
                    }
                }
            };
            let Some((addr, ep, picked)) = route else {
                tcp.metrics
                    .refused(Direction::Outbound, RefuseReason::NoEndpoints);
                return;
            };
            let span = info_span!("target", %dst, endpoint = %addr);
            forward(ctx, io, addr, ep.as_deref(), picked)
                .instrument(span)
                .await
        }
        Decision::Explicit if !explicit_client_allowed(client.ip(), &ctx.own.ips) => {
            tcp.metrics
                .refused(Direction::Outbound, RefuseReason::ExplicitForeignClient);
            warn!(
                "refusing an explicit (HTTP proxy) connection from outside this pod: the \
                 outbound listener speaks with the pod's identity; bind it to a loopback or \
                 pod-private address"
            );
        }
        Decision::Explicit => {
            explicit(ctx, http, stream)
                .instrument(info_span!("explicit"))
                .await
        }
        Decision::Refuse(reason) => {
            tcp.metrics.refused(Direction::Outbound, reason);
            warn!(
                ?orig,
                "refusing a connection whose destination is one of this proxy's own listeners"
            );
        }
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
async fn explicit(ctx: &OutboundCtx, http: &Arc<HttpOutbound>, mut stream: TcpStream) {
    let tcp = &ctx.tcp;
    match l7::detect::read(&mut stream, ctx.detect_timeout).await {
        Ok((Some(protocol), prefix)) => {
            if protocol == l7::detect::Protocol::Http1 && l7::detect::ambiguous_length(&prefix) {
                tcp.metrics
                    .refused(Direction::Outbound, RefuseReason::MalformedHttp);
                warn!("request with both content-length and transfer-encoding; answering 400");
                let _ = stream
                    .write_all(l7::detect::AMBIGUOUS_LENGTH_RESPONSE)
                    .await;
                return;
            }
            serve_http(ctx, http, PrefixedIo::new(prefix, stream), protocol, None).await
        }
        Ok((None, prefix)) => {
            tcp.metrics
                .refused(Direction::Outbound, RefuseReason::ExplicitNotHttp);
            info!(
                read = prefix.len(),
                "a connection addressed to the outbound listener did not open with an HTTP \
                 request; answering 400 (use the listener as an HTTP proxy, or let iptables \
                 redirect connections to it)"
            );
            let _ = stream
                .write_all(l7::detect::EXPLICIT_NOT_HTTP_RESPONSE)
                .await;
            let _ = stream.shutdown().await;
        }
        Err(e) => debug!(error = %e, "connection failed during detection"),
    }
}

/// Dials the target (mTLS when discovery names its identity) and forwards.
async fn forward(
    ctx: &OutboundCtx,
    client: BoxIo,
    addr: SocketAddr,
    ep: Option<&Endpoint>,
    picked: Option<Picked>,
) {
    let target = DialTarget {
        addr,
        endpoint: ep,
        protocol: None,
    };
    let dialled = dial(target, &ctx.tls, &ctx.own.ips, ctx.tcp.connect_timeout).await;
    // Opaque connections are balanced on connect: the connect is the outcome.
    if let Some(p) = picked {
        crate::l7::outbound::report(p.finish(dialled.is_ok()), addr);
    }
    let dialled = match dialled {
        Ok(d) => d,
        Err(e) => {
            ctx.tcp.metrics.refused(Direction::Outbound, e.reason());
            warn!(error = %e, "closing the client connection; nothing was sent");
            client.reset();
            return;
        }
    };
    let labels = TcpLabels::new(Direction::Outbound, Peer::Src)
        .with_tls(dialled.tls, dialled.server_id)
        .with_target(addr, None, ep.map(|e| e.dst_labels.clone()));
    proxy(&ctx.tcp, client, dialled.io, labels, dialled.addr).await
}

/// Serves an HTTP connection from the app: each request is routed on its own. `dst` is the
/// original destination of a redirected connection, `None` for an explicit one.
async fn serve_http(
    ctx: &OutboundCtx,
    http: &Arc<HttpOutbound>,
    io: PrefixedIo<TcpStream>,
    protocol: l7::detect::Protocol,
    dst: Option<SocketAddr>,
) {
    let mut labels = TcpLabels::new(Direction::Outbound, Peer::Src)
        .with_tls(Tls::NoIdentity(no_tls::LOOPBACK), None);
    if let Some(dst) = dst {
        labels = labels.with_target(dst, None, None);
    }
    let io: BoxIo = Box::new(Counted::new(io, ctx.tcp.metrics.open(labels), None));
    let http = http.clone();
    l7::server::serve(io, protocol, ctx.http_limits, move |req| {
        let http = http.clone();
        async move {
            match dst {
                Some(dst) => http.handle(Some(dst), req).await,
                None => http.handle_explicit(req).await,
            }
        }
    })
    .await
}

/// Where to connect for original destination `dst`: one of its discovered endpoints, or `dst`
/// itself when discovery does not know it. `None` when it has no endpoint (refused, counted).
async fn endpoint(discovery: Option<&Discovery>, dst: SocketAddr) -> Option<Route> {
    let Some(d) = discovery else {
        return Some((dst, None, None));
    };
    match d.resolver.resolve(&dst.to_string()).pick(d.timeout).await {
        Pick::Endpoint(ep, picked) => {
            debug!(%dst, endpoint = %ep.addr, identity = ?ep.identity, hint = ?ep.hint, "resolved");
            Some((ep.addr, Some(ep), Some(picked)))
        }
        Pick::AsIs => Some((dst, None, None)),
        Pick::NoEndpoints => {
            warn!(%dst, waited = ?d.timeout, "no endpoints for this destination");
            None
        }
    }
}

/// Where a connection goes: the address, the endpoint discovery chose, and the balancer's
/// handle to report on it.
type Route = (SocketAddr, Option<Arc<Endpoint>>, Option<Picked>);

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
