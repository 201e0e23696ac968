//! The outbound listener: connections the pod's app opened, redirected here by iptables.
//!
//! accept → original destination → decide (forward / explicit / loop) → connect → forward.
//! Explicit mode (a connection addressed to the listener itself, #8) is refused for now.

use std::net::SocketAddr;
use std::sync::Arc;

use remora_metrics::tcp::{Direction, RefuseReason};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

use tracing::{Instrument, debug, info, info_span, warn};

use crate::discovery::{Pick, Resolver};

use crate::listen::{AcceptCtx, serve};
use crate::orig_dst::{OrigDst, original_dst};
use crate::own::OwnAddrs;
use crate::tcp::{TcpCtx, proxy_to};

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

#[derive(Debug)]
pub struct Outbound {
    listeners: Vec<TcpListener>,
    accept: AcceptCtx,
    tcp: TcpCtx,
    own: Arc<OwnAddrs>,
    discovery: Option<Discovery>,
}

impl Outbound {
    pub fn new(
        listeners: Vec<TcpListener>,
        accept: AcceptCtx,
        tcp: TcpCtx,
        own: Arc<OwnAddrs>,
        discovery: Option<Discovery>,
    ) -> Self {
        Outbound {
            listeners,
            accept,
            tcp,
            own,
            discovery,
        }
    }

    pub async fn run(self) {
        let shared = Arc::new((self.tcp, self.own, self.discovery));
        serve(self.listeners, self.accept, move |stream, client| {
            let shared = shared.clone();
            async move { handle(&shared.0, &shared.1, shared.2.as_ref(), stream).await }
                .instrument(info_span!("outbound", %client))
        })
        .await
    }
}

async fn handle(tcp: &TcpCtx, own: &OwnAddrs, discovery: Option<&Discovery>, stream: TcpStream) {
    let orig = match original_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            warn!(error = %e, "cannot read the original destination; closing");
            tcp.metrics
                .refused(Direction::Outbound, RefuseReason::NoOriginalDst);
            return;
        }
    };
    match decide(orig, own) {
        Decision::Forward(dst) => {
            let Some(addr) = endpoint(tcp, discovery, dst).await else {
                return;
            };
            proxy_to(tcp, stream, addr)
                .instrument(info_span!("target", %dst, endpoint = %addr))
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

/// Where to connect for original destination `dst`: one of its discovered endpoints, or `dst`
/// itself when discovery does not know it. `None` when it has no endpoint (refused, counted).
async fn endpoint(
    tcp: &TcpCtx,
    discovery: Option<&Discovery>,
    dst: SocketAddr,
) -> Option<SocketAddr> {
    let Some(d) = discovery else {
        return Some(dst);
    };
    match d.resolver.resolve(&dst.to_string()).pick(d.timeout).await {
        Pick::Endpoint(ep) => {
            debug!(%dst, endpoint = %ep.addr, identity = ?ep.identity, hint = ?ep.hint, "resolved");
            Some(ep.addr)
        }
        Pick::AsIs => Some(dst),
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
