//! The inbound listener: connections from other pods to this pod's app, redirected here by
//! iptables.
//!
//! accept → original destination → decide → connect to the app at the pod's own address on the
//! original port → forward. The inbound is not an open relay: an original destination that is
//! not one of the pod's addresses is refused. A connection addressed to the inbound port itself
//! is the direct path (mTLS + transport header, #5), refused for now.

use std::net::SocketAddr;
use std::sync::Arc;

use remora_metrics::tcp::{Direction, RefuseReason};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, info, info_span, warn};

use crate::listen::{AcceptCtx, serve};
use crate::orig_dst::{OrigDst, original_dst};
use crate::own::OwnAddrs;
use crate::tcp::{TcpCtx, proxy_to};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward to the app at this address (the pod's own address, the original port).
    Forward(SocketAddr),
    Refuse(RefuseReason),
}

pub fn decide(orig: OrigDst, own: &OwnAddrs) -> Decision {
    match orig {
        OrigDst::NotRedirected => Decision::Refuse(RefuseReason::Direct),
        OrigDst::Redirected(dst) if !own.ips.contains(dst.ip()) => {
            Decision::Refuse(RefuseReason::NotLocal)
        }
        OrigDst::Redirected(dst) if own.is_own_listener(dst) => {
            Decision::Refuse(RefuseReason::Loop)
        }
        OrigDst::Redirected(dst) => Decision::Forward(dst),
    }
}

#[derive(Debug)]
pub struct Inbound {
    listeners: Vec<TcpListener>,
    accept: AcceptCtx,
    tcp: TcpCtx,
    own: Arc<OwnAddrs>,
}

impl Inbound {
    pub fn new(
        listeners: Vec<TcpListener>,
        accept: AcceptCtx,
        tcp: TcpCtx,
        own: Arc<OwnAddrs>,
    ) -> Self {
        Inbound {
            listeners,
            accept,
            tcp,
            own,
        }
    }

    pub async fn run(self) {
        let shared = Arc::new((self.tcp, self.own));
        serve(self.listeners, self.accept, move |stream, client| {
            let shared = shared.clone();
            async move { handle(&shared.0, &shared.1, stream).await }
                .instrument(info_span!("inbound", %client))
        })
        .await
    }
}

async fn handle(tcp: &TcpCtx, own: &OwnAddrs, stream: TcpStream) {
    let orig = match original_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            warn!(error = %e, "cannot read the original destination; closing");
            tcp.metrics
                .refused(Direction::Inbound, RefuseReason::NoOriginalDst);
            return;
        }
    };
    match decide(orig, own) {
        Decision::Forward(app) => {
            proxy_to(tcp, stream, app)
                .instrument(info_span!("app", %app))
                .await
        }
        Decision::Refuse(reason) => {
            tcp.metrics.refused(Direction::Inbound, reason);
            match reason {
                RefuseReason::Direct => info!(
                    "refusing a direct connection to the inbound port: the direct path needs \
                     mTLS with a transport header, which this proxy does not support yet"
                ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orig_dst::LocalIps;

    #[test]
    fn decisions() {
        let own = OwnAddrs::new(
            vec![
                "0.0.0.0:4143".parse().unwrap(),
                "127.0.0.1:4191".parse().unwrap(),
            ],
            LocalIps::new(),
        );
        assert_eq!(
            decide(OrigDst::NotRedirected, &own),
            Decision::Refuse(RefuseReason::Direct)
        );
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
