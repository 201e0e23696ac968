//! The outbound's core types: a [`Destination`] (where a connection or request goes, and what
//! discovery said about it) and the [`Connector`], the one path by which the proxy dials an
//! endpoint: dial (mTLS when discovery names an identity) → report the connect to the balancer
//! when it holds a pick → the connection's metric labels → a failure counted as a refusal.
//!
//! Opaque connections, HTTP client connections, `CONNECT` tunnels and the gateway's opaque
//! forwarding all dial through it.

use std::net::SocketAddr;
use std::sync::Arc;

use remora_metrics::tcp::{Direction, Peer, TcpLabels};
use tracing::{info, warn};

use crate::discovery::balance::{Picked, Transition};
use crate::discovery::{Endpoint, Pick, Target};
use crate::inputs::ProxyInputs;
use crate::tls::mtls::{DialError, DialTarget, Dialled, dial};
use crate::transport::forward::{Activity, Counted};
use crate::transport::header::SessionProtocol;
use crate::transport::io::BoxIo;

/// Where a connection or a request goes.
#[derive(Debug)]
pub struct Destination {
    /// The address to reach: the endpoint's, or the original destination as it is.
    pub addr: SocketAddr,
    /// The endpoint discovery chose; `None` when the address is used as it is.
    pub endpoint: Option<Arc<Endpoint>>,
    /// The balancer's handle on the endpoint: the attempt's outcome is reported on it.
    pub picked: Option<Picked>,
    /// The discovery target the endpoint belongs to: its profile and retry budget govern
    /// requests, and retries pick again from it.
    pub target: Option<Target>,
}

impl Destination {
    /// An address used as it is (unknown to discovery, or no discovery).
    pub fn as_is(addr: SocketAddr) -> Self {
        Destination {
            addr,
            endpoint: None,
            picked: None,
            target: None,
        }
    }

    /// An endpoint the balancer picked from `target`.
    pub fn picked(endpoint: Arc<Endpoint>, picked: Picked, target: Option<Target>) -> Self {
        Destination {
            addr: endpoint.addr,
            endpoint: Some(endpoint),
            picked: Some(picked),
            target,
        }
    }

    /// What discovery's pick means for a connection to `dst`: an endpoint, `dst` itself when
    /// discovery does not know it, `None` when it has no endpoint.
    pub fn from_pick(pick: Pick, dst: SocketAddr, target: Option<Target>) -> Option<Self> {
        match pick {
            Pick::Endpoint(ep, picked) => Some(Destination::picked(ep, picked, target)),
            Pick::AsIs => Some(Destination::as_is(dst)),
            Pick::NoEndpoints => None,
        }
    }
}

/// A connection the [`Connector`] opened.
#[allow(missing_debug_implementations)]
pub struct Connection {
    pub io: BoxIo,
    /// Where the TCP connection went (the peer proxy's inbound port with opaque transport).
    pub addr: SocketAddr,
    /// Its metric labels (direction, TLS and server identity, target, `dst_*`), as the side the
    /// proxy opened.
    pub labels: TcpLabels,
}

impl Connection {
    /// The connection counted as the side the proxy opened, optionally noting activity for an
    /// idle timeout.
    pub fn counted(self, inputs: &ProxyInputs, activity: Option<Arc<Activity>>) -> Counted<BoxIo> {
        Counted::new(self.io, inputs.tcp_metrics.open(self.labels), activity)
    }
}

/// Dials endpoints for one direction.
#[derive(Clone, Debug)]
pub struct Connector {
    inputs: Arc<ProxyInputs>,
    direction: Direction,
}

impl Connector {
    pub fn new(inputs: Arc<ProxyInputs>, direction: Direction) -> Self {
        Connector { inputs, direction }
    }

    /// Dials `dst`, telling the peer `protocol` in the transport header when there is one.
    /// When `dst` holds a pick (an opaque connection or a tunnel, whose connect is the whole
    /// outcome), the balancer learns whether the dial worked. A failure is counted
    /// (`tcp_refused_total{reason}`) and returned.
    pub async fn connect(
        &self,
        dst: &mut Destination,
        protocol: Option<SessionProtocol>,
    ) -> Result<Connection, DialError> {
        let inputs = &*self.inputs;
        let target = DialTarget {
            addr: dst.addr,
            endpoint: dst.endpoint.as_deref(),
            protocol,
        };
        let dialled = dial(
            target,
            &inputs.tls,
            &inputs.own.ips,
            inputs.outbound_connect,
        )
        .await;
        if let Some(p) = dst.picked.take() {
            report(p.finish(dialled.is_ok()), dst.addr);
        }
        match dialled {
            Ok(d) => Ok(self.connection(d, dst)),
            Err(e) => {
                inputs.tcp_metrics.refused(self.direction, e.reason());
                Err(e)
            }
        }
    }

    fn connection(&self, d: Dialled, dst: &Destination) -> Connection {
        let labels = TcpLabels::new(self.direction, Peer::Dst)
            .with_tls(d.tls, d.server_id)
            .with_target(
                dst.addr,
                None,
                dst.endpoint.as_ref().map(|e| e.dst_labels.clone()),
            );
        Connection {
            io: d.io,
            addr: d.addr,
            labels,
        }
    }
}

/// Logs a breaker transition.
pub fn report(transition: Option<Transition>, addr: SocketAddr) {
    match transition {
        Some(Transition::Ejected { backoff }) => {
            warn!(endpoint = %addr, ?backoff, "endpoint ejected after consecutive failures")
        }
        Some(Transition::Restored) => info!(endpoint = %addr, "endpoint restored"),
        None => {}
    }
}
