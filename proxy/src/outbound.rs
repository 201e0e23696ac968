//! The outbound listener: connections the pod's app opened, redirected here by iptables.
//!
//! accept → original destination → decide (forward / explicit / loop) → connect → forward.
//! Explicit mode (a connection addressed to the listener itself, #8) is refused for now.

use std::net::SocketAddr;
use std::sync::Arc;

use remora_metrics::tcp::{Direction, Peer, RefuseReason, TcpLabels};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

use tracing::{Instrument, debug, info, info_span, warn};

use crate::discovery::{Endpoint, Pick, Resolver};
use crate::io::Io;
use crate::mtls::{DialTarget, LocalTls, dial};

use crate::listen::{AcceptCtx, serve};
use crate::orig_dst::{OrigDst, original_dst};
use crate::own::OwnAddrs;
use crate::tcp::{TcpCtx, proxy};

/// What the outbound does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Forward(SocketAddr),
    Refuse(RefuseReason),
}

/// Decides from the original destination alone.
pub fn decide(orig: OrigDst, own: &OwnAddrs) -> Decision {
    match orig {
        OrigDst::NotRedirected => Decision::Refuse(RefuseReason::Explicit),
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
}

#[derive(Debug)]
pub struct Outbound {
    listeners: Vec<TcpListener>,
    accept: AcceptCtx,
    ctx: Arc<OutboundCtx>,
}

impl Outbound {
    pub fn new(listeners: Vec<TcpListener>, accept: AcceptCtx, ctx: OutboundCtx) -> Self {
        Outbound {
            listeners,
            accept,
            ctx: Arc::new(ctx),
        }
    }

    pub async fn run(self) {
        let ctx = self.ctx;
        serve(self.listeners, self.accept, move |stream, client| {
            let ctx = ctx.clone();
            async move { handle(&ctx, stream).await }.instrument(info_span!("outbound", %client))
        })
        .await
    }
}

async fn handle(ctx: &OutboundCtx, stream: TcpStream) {
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
            let Some((addr, ep)) = endpoint(tcp, ctx.discovery.as_ref(), dst).await else {
                return;
            };
            let span = info_span!("target", %dst, endpoint = %addr);
            forward(ctx, stream, addr, ep.as_deref())
                .instrument(span)
                .await
        }
        Decision::Refuse(reason) => {
            tcp.metrics.refused(Direction::Outbound, reason);
            match reason {
                RefuseReason::Explicit => info!(
                    "refusing a connection addressed to the outbound listener itself: explicit \
                     (HTTP proxy) mode is not supported yet; connect to the destination and let \
                     iptables redirect it"
                ),
                _ => warn!(
                    ?orig,
                    "refusing a connection whose destination is one of this proxy's own listeners"
                ),
            }
        }
    }
}

/// Dials the target (mTLS when discovery names its identity) and forwards.
async fn forward(ctx: &OutboundCtx, client: TcpStream, addr: SocketAddr, ep: Option<&Endpoint>) {
    let target = DialTarget {
        addr,
        endpoint: ep,
        protocol: None,
    };
    let dialled = match dial(target, &ctx.tls, &ctx.own.ips, ctx.tcp.connect_timeout).await {
        Ok(d) => d,
        Err(e) => {
            ctx.tcp.metrics.refused(Direction::Outbound, e.reason());
            warn!(error = %e, "closing the client connection; nothing was sent");
            client.reset();
            return;
        }
    };
    let labels =
        TcpLabels::new(Direction::Outbound, Peer::Src).with_tls(dialled.tls, dialled.server_id);
    proxy(&ctx.tcp, Box::new(client), dialled.io, labels, dialled.addr).await
}

/// Where to connect for original destination `dst`: one of its discovered endpoints, or `dst`
/// itself when discovery does not know it. `None` when it has no endpoint (refused, counted).
async fn endpoint(
    tcp: &TcpCtx,
    discovery: Option<&Discovery>,
    dst: SocketAddr,
) -> Option<(SocketAddr, Option<Arc<Endpoint>>)> {
    let Some(d) = discovery else {
        return Some((dst, None));
    };
    match d.resolver.resolve(&dst.to_string()).pick(d.timeout).await {
        Pick::Endpoint(ep) => {
            debug!(%dst, endpoint = %ep.addr, identity = ?ep.identity, hint = ?ep.hint, "resolved");
            Some((ep.addr, Some(ep)))
        }
        Pick::AsIs => Some((dst, None)),
        Pick::NoEndpoints => {
            tcp.metrics
                .refused(Direction::Outbound, RefuseReason::NoEndpoints);
            warn!(%dst, waited = ?d.timeout, "no endpoints for this destination; closing");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orig_dst::LocalIps;

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
        assert_eq!(
            decide(OrigDst::NotRedirected, &own),
            Decision::Refuse(RefuseReason::Explicit)
        );
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
