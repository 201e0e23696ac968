//! TCP golden metrics, per connection side.
//!
//! Every proxied connection has two sides: the accepted socket (`peer="src"`) and the socket the
//! proxy opened (`peer="dst"`). Each side is opened with [`TcpMetrics::open`], which counts the
//! open and returns a [`TcpConn`] holding pre-resolved counter handles; reads and writes then
//! cost one atomic add each, and dropping the handle counts the close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::bounded::{Limits, Slot, Store};
use crate::labels::{DstLabels, TargetLabels};
use crate::series::SeriesLimits;

/// Which listener a connection belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which side of a proxied connection a socket is.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Peer {
    /// The connection the proxy accepted.
    Src,
    /// The connection the proxy opened.
    Dst,
}

impl Peer {
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Src => "src",
            Peer::Dst => "dst",
        }
    }
}

/// How a proxied connection is secured.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Tls {
    /// Mutual TLS between proxies.
    Established,
    /// Plaintext, and why (`no_tls_reason`).
    NoIdentity(&'static str),
    /// TLS the proxy passed through untouched (the app's own).
    Opaque,
}

/// Labels of one side of a TCP connection: Linkerd's `direction`, `peer`, and what the
/// connection targets ([`TargetLabels`]: `authority`, `target_addr`, `tls`, `no_tls_reason`,
/// `client_id` / `server_id`, `dst_*`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TcpLabels {
    pub peer: Peer,
    pub target: TargetLabels,
}

impl TcpLabels {
    pub fn new(direction: Direction, peer: Peer) -> Self {
        TcpLabels {
            peer,
            target: TargetLabels::new(direction),
        }
    }

    /// The same connection's labels for its other side.
    pub fn with_peer(&self, peer: Peer) -> Self {
        TcpLabels {
            peer,
            target: self.target.clone(),
        }
    }

    pub fn with_tls(mut self, tls: Tls, peer_id: Option<Arc<str>>) -> Self {
        self.target.tls = tls;
        self.target.peer_id = peer_id;
        self
    }

    /// Where the connection goes: the address, the logical destination, discovery's labels.
    pub fn with_target(
        mut self,
        addr: SocketAddr,
        authority: Option<Arc<str>>,
        dst: Option<Arc<DstLabels>>,
    ) -> Self {
        self.target.target_addr = Some(addr);
        self.target.authority = authority;
        self.target.dst = dst;
        self
    }
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("direction", self.target.direction.as_str()).encode(encoder.encode_label())?;
        ("peer", self.peer.as_str()).encode(encoder.encode_label())?;
        self.target.encode_rest(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    direction: &'static str,
    reason: &'static str,
}

/// Why a connection was refused before it was forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// The listener's concurrent-connection limit was reached.
    ConnectionLimit,
    /// The kernel could not say where the connection was going.
    NoOriginalDst,
    /// A connection addressed to the outbound listener itself (explicit mode) that does not
    /// speak HTTP: it was answered 400.
    ExplicitNotHttp,
    /// An explicit (HTTP proxy) connection from a client that is not on this pod: the outbound
    /// listener acts with the pod's identity, so only the pod's own apps may use it.
    ExplicitForeignClient,
    /// The target would loop back into one of the proxy's own listeners.
    Loop,
    /// Inbound: the original destination is not one of this pod's addresses.
    NotLocal,
    /// The proxy could not connect to the target.
    ConnectFailed,
    /// Discovery knows the target but it has no endpoint.
    NoEndpoints,
    /// A TLS handshake failed (a client offering only TLS 1.2, garbage, a timeout...).
    TlsHandshake,
    /// The peer's certificate names another identity than the one expected.
    TlsIdentityMismatch,
    /// The peer's certificate does not chain to our trust anchors.
    TlsUntrusted,
    /// The peer's certificate has expired.
    TlsExpired,
    /// The direct path got something other than mTLS with a transport header.
    DirectNotMtls,
    /// The direct path got a bad transport header.
    BadTransportHeader,
    /// The transport header names a service: a gateway request (not served here).
    GatewayUnsupported,
    /// Gateway: the transport header names an IP address (the gateway is not an open relay).
    GatewayIpLiteral,
    /// Gateway: the transport header names no exported service of this cluster.
    GatewayNotExported,
    /// Gateway: the exported service does not declare the port the transport header names.
    GatewayPortNotExported,
    /// The direct path: the transport header names a port the pod does not declare
    /// (`INBOUND_PORTS`, its services' ports, or a port a `Server` selects).
    PortNotDeclared,
    /// Inbound policy: the port requires an authenticated peer.
    PolicyUnauthenticated,
    /// Inbound policy: the peer is not of our trust domain.
    PolicyForeignTrustDomain,
    /// Inbound policy: the client's address is outside the cluster's networks.
    PolicyOutsideCluster,
    /// Inbound policy: the peer is not on the port's allow-list.
    PolicyNotAllowed,
    /// Inbound policy: the port denies everything.
    PolicyDeny,
    /// A malformed HTTP request answered by the proxy (e.g. an ambiguous body length).
    MalformedHttp,
    /// Inbound: the client's address already holds its share of the connection slots
    /// (`REMORA_INBOUND_PEER_CONNECTION_SHARE`).
    PeerConnectionLimit,
    /// Inbound: no byte moved either way within `REMORA_INBOUND_FIRST_BYTE_TIMEOUT` of
    /// forwarding (the connection was closed, after being forwarded).
    FirstByteTimeout,
}

impl RefuseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::ConnectionLimit => "connection_limit",
            RefuseReason::NoOriginalDst => "no_original_dst",
            RefuseReason::ExplicitNotHttp => "explicit_not_http",
            RefuseReason::ExplicitForeignClient => "explicit_foreign_client",
            RefuseReason::Loop => "loop",
            RefuseReason::NotLocal => "not_local",
            RefuseReason::ConnectFailed => "connect_failed",
            RefuseReason::NoEndpoints => "no_endpoints",
            RefuseReason::TlsHandshake => "tls_handshake",
            RefuseReason::TlsIdentityMismatch => "tls_identity_mismatch",
            RefuseReason::TlsUntrusted => "tls_untrusted",
            RefuseReason::TlsExpired => "tls_expired",
            RefuseReason::DirectNotMtls => "direct_not_mtls",
            RefuseReason::BadTransportHeader => "bad_transport_header",
            RefuseReason::GatewayUnsupported => "gateway_unsupported",
            RefuseReason::GatewayIpLiteral => "gateway_ip_literal",
            RefuseReason::GatewayNotExported => "gateway_not_exported",
            RefuseReason::GatewayPortNotExported => "gateway_port_not_exported",
            RefuseReason::PortNotDeclared => "port_not_declared",
            RefuseReason::PolicyUnauthenticated => "policy_unauthenticated",
            RefuseReason::PolicyForeignTrustDomain => "policy_foreign_trust_domain",
            RefuseReason::PolicyOutsideCluster => "policy_outside_cluster",
            RefuseReason::PolicyNotAllowed => "policy_not_allowed",
            RefuseReason::PolicyDeny => "policy_deny",
            RefuseReason::MalformedHttp => "malformed_http",
            RefuseReason::PeerConnectionLimit => "peer_connection_limit",
            RefuseReason::FirstByteTimeout => "first_byte_timeout",
        }
    }
}

/// The counters of one side's label set.
#[derive(Debug, Default)]
pub struct TcpSeries {
    opened: AtomicU64,
    open: AtomicI64,
    read: AtomicU64,
    write: AtomicU64,
    /// Closes by errno name (`""` when no error ended the connection).
    closed: RwLock<Vec<(&'static str, AtomicU64)>>,
}

impl TcpSeries {
    fn close(&self, errno: &'static str) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Ok(v) = self.closed.read()
            && let Some((_, n)) = v.iter().find(|(e, _)| *e == errno)
        {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // errno names are a fixed set, so this stays bounded.
        if let Ok(mut v) = self.closed.write() {
            match v.iter().find(|(e, _)| *e == errno) {
                Some((_, n)) => {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                None => v.push((errno, AtomicU64::new(1))),
            }
        }
    }
}

/// The TCP families of one proxy.
#[derive(Clone, Debug)]
pub struct TcpMetrics {
    store: Arc<Store<TcpLabels, TcpSeries>>,
    refused: Family<RefusedLabels, Counter>,
    /// Protocol detection's outcomes (`detect.rs`).
    pub detect: crate::detect::DetectMetrics,
}

impl TcpMetrics {
    /// Registers with the default series limits.
    pub fn register(registry: &mut Registry) -> Self {
        let series = SeriesLimits::register(registry, Limits::default());
        Self::register_with(registry, &series)
    }

    pub fn register_with(registry: &mut Registry, series: &SeriesLimits) -> Self {
        let m = TcpMetrics {
            store: Arc::new(series.store("tcp", TcpSeries::default)),
            refused: Family::default(),
            detect: crate::detect::DetectMetrics::register(registry),
        };
        registry.register_collector(Box::new(Encoder(m.store.clone())));
        registry.register(
            "tcp_refused",
            "Total count of connections refused before forwarding, by reason",
            m.refused.clone(),
        );
        m
    }

    /// Counts one opened socket and returns the handle that counts its bytes and its close.
    pub fn open(&self, labels: TcpLabels) -> TcpConn {
        let slot = self.store.get(&labels);
        slot.value.opened.fetch_add(1, Ordering::Relaxed);
        slot.value.open.fetch_add(1, Ordering::Relaxed);
        TcpConn { slot, errno: "" }
    }

    /// Counts a connection refused before it was forwarded.
    pub fn refused(&self, direction: Direction, reason: RefuseReason) {
        self.refused
            .get_or_create(&RefusedLabels {
                direction: direction.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// One open socket's counters. Dropping it counts the close.
#[derive(Debug)]
pub struct TcpConn {
    slot: Arc<Slot<TcpSeries>>,
    errno: &'static str,
}

impl TcpConn {
    #[inline]
    pub fn read(&self, n: usize) {
        self.slot.value.read.fetch_add(n as u64, Ordering::Relaxed);
    }

    #[inline]
    pub fn wrote(&self, n: usize) {
        self.slot.value.write.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records that an error closed this connection; `errno` is the error's name (e.g.
    /// `ECONNRESET`).
    pub fn set_errno(&mut self, errno: &'static str) {
        self.errno = errno;
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        self.slot.value.close(self.errno);
    }
}

/// A side's labels, or the overflow label set.
struct Side<'a>(Option<&'a TcpLabels>);

impl EncodeLabelSet for Side<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        match self.0 {
            Some(l) => l.encode(encoder),
            None => ("overflow", "true").encode(encoder.encode_label()),
        }
    }
}

#[derive(Debug)]
struct Encoder(Arc<Store<TcpLabels, TcpSeries>>);

impl Encoder {
    fn counter(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: fn(&TcpSeries) -> u64,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        self.0.for_each(|labels, s| {
            ConstCounter::new(value(s)).encode(family.encode_family(&Side(labels))?)
        })
    }
}

impl Collector for Encoder {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.counter(
            &mut encoder,
            "tcp_open",
            "Total count of opened connections",
            |s| s.opened.load(Ordering::Relaxed),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "tcp_close",
                "Total count of closed connections",
                None,
                MetricType::Counter,
            )?;
            self.0.for_each(|labels, s| {
                let Ok(closed) = s.closed.read() else {
                    return Ok(());
                };
                for (errno, n) in closed.iter() {
                    let set = (Side(labels), [("errno", *errno)]);
                    ConstCounter::new(n.load(Ordering::Relaxed))
                        .encode(family.encode_family(&set)?)?;
                }
                Ok(())
            })?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "tcp_open_connections",
                "Number of currently-open connections",
                None,
                MetricType::Gauge,
            )?;
            self.0.for_each(|labels, s| {
                ConstGauge::new(s.open.load(Ordering::Relaxed))
                    .encode(family.encode_family(&Side(labels))?)
            })?;
        }
        self.counter(
            &mut encoder,
            "tcp_read_bytes",
            "Total count of bytes read from peers",
            |s| s.read.load(Ordering::Relaxed),
        )?;
        self.counter(
            &mut encoder,
            "tcp_write_bytes",
            "Total count of bytes written to peers",
            |s| s.write.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(reg: &Registry) -> String {
        crate::encode(reg).unwrap()
    }

    #[test]
    fn counts_open_bytes_and_close() {
        let mut reg = Registry::default();
        let m = TcpMetrics::register(&mut reg);
        let id: Arc<str> = Arc::from("web.shop.serviceaccount.identity.linkerd.east.example");
        let labels =
            TcpLabels::new(Direction::Inbound, Peer::Src).with_tls(Tls::Established, Some(id));
        let mut conn = m.open(labels);
        conn.read(10);
        conn.wrote(7);
        let text = render(&reg);
        let l = r#"direction="inbound",peer="src",tls="true",client_id="web.shop.serviceaccount.identity.linkerd.east.example""#;
        assert!(text.contains(&format!("tcp_open_total{{{l}}} 1")), "{text}");
        assert!(text.contains(&format!("tcp_open_connections{{{l}}} 1")));
        assert!(text.contains(&format!("tcp_read_bytes_total{{{l}}} 10")));
        assert!(text.contains(&format!("tcp_write_bytes_total{{{l}}} 7")));
        conn.set_errno("ECONNRESET");
        drop(conn);
        let text = render(&reg);
        assert!(text.contains(&format!("tcp_open_connections{{{l}}} 0")));
        assert!(
            text.contains(&format!("tcp_close_total{{{l},errno=\"ECONNRESET\"}} 1")),
            "{text}"
        );
        // Plaintext outbound: the reason, and no identity label.
        let _c = m.open(
            TcpLabels::new(Direction::Outbound, Peer::Dst)
                .with_tls(Tls::NoIdentity("loopback"), None),
        );
        let text = render(&reg);
        assert!(
            text.contains(r#"tcp_open_total{direction="outbound",peer="dst",tls="no_identity",no_tls_reason="loopback"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn counts_refusals_by_reason() {
        let mut reg = Registry::default();
        let m = TcpMetrics::register(&mut reg);
        m.refused(Direction::Outbound, RefuseReason::ConnectionLimit);
        m.refused(Direction::Outbound, RefuseReason::ConnectionLimit);
        let text = render(&reg);
        assert!(
            text.contains(r#"tcp_refused_total{direction="outbound",reason="connection_limit"} 2"#)
        );
    }
}
