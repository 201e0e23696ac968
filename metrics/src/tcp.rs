//! TCP golden metrics, per connection side.
//!
//! Every proxied connection has two sides: the accepted socket (`peer="src"`) and the socket the
//! proxy opened (`peer="dst"`). Each side is opened with [`TcpMetrics::open`], which counts the
//! open and returns a [`TcpConn`] holding pre-resolved counter handles; reads and writes then
//! cost one atomic add each, and dropping the handle counts the close.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

/// Labels of one side of a TCP connection: Linkerd's `direction`, `peer`, `tls`,
/// `no_tls_reason`, and the peer's identity as `client_id` (inbound) or `server_id` (outbound).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TcpLabels {
    pub direction: Direction,
    pub peer: Peer,
    pub tls: Tls,
    pub peer_id: Option<Arc<str>>,
}

impl TcpLabels {
    pub fn new(direction: Direction, peer: Peer) -> Self {
        TcpLabels {
            direction,
            peer,
            tls: Tls::NoIdentity("not_provided_by_service_discovery"),
            peer_id: None,
        }
    }

    /// The same connection's labels for its other side.
    pub fn with_peer(&self, peer: Peer) -> Self {
        TcpLabels {
            peer,
            ..self.clone()
        }
    }

    pub fn with_tls(mut self, tls: Tls, peer_id: Option<Arc<str>>) -> Self {
        self.tls = tls;
        self.peer_id = peer_id;
        self
    }
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("direction", self.direction.as_str()).encode(encoder.encode_label())?;
        ("peer", self.peer.as_str()).encode(encoder.encode_label())?;
        match &self.tls {
            Tls::Established => ("tls", "true").encode(encoder.encode_label())?,
            Tls::Opaque => ("tls", "opaque").encode(encoder.encode_label())?,
            Tls::NoIdentity(reason) => {
                ("tls", "no_identity").encode(encoder.encode_label())?;
                ("no_tls_reason", *reason).encode(encoder.encode_label())?;
            }
        }
        if let Some(id) = &self.peer_id {
            let key = match self.direction {
                Direction::Inbound => "client_id",
                Direction::Outbound => "server_id",
            };
            (key, id.as_ref()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    #[prometheus(flatten)]
    conn: TcpLabels,
    /// The errno name when an error closed the connection, empty otherwise.
    errno: &'static str,
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
    /// Inbound policy: the port requires an authenticated peer.
    PolicyUnauthenticated,
    /// Inbound policy: the peer is not of our trust domain.
    PolicyForeignTrustDomain,
    /// Inbound policy: the peer is not on the port's allow-list.
    PolicyNotAllowed,
    /// Inbound policy: the port denies everything.
    PolicyDeny,
    /// A malformed HTTP request answered by the proxy (e.g. an ambiguous body length).
    MalformedHttp,
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
            RefuseReason::PolicyUnauthenticated => "policy_unauthenticated",
            RefuseReason::PolicyForeignTrustDomain => "policy_foreign_trust_domain",
            RefuseReason::PolicyNotAllowed => "policy_not_allowed",
            RefuseReason::PolicyDeny => "policy_deny",
            RefuseReason::MalformedHttp => "malformed_http",
        }
    }
}

/// The TCP families of one proxy.
#[derive(Clone, Debug, Default)]
pub struct TcpMetrics {
    open_total: Family<TcpLabels, Counter>,
    close_total: Family<CloseLabels, Counter>,
    open_connections: Family<TcpLabels, Gauge>,
    read_bytes: Family<TcpLabels, Counter>,
    write_bytes: Family<TcpLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
}

impl TcpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = TcpMetrics::default();
        registry.register(
            "tcp_open",
            "Total count of opened connections",
            m.open_total.clone(),
        );
        registry.register(
            "tcp_close",
            "Total count of closed connections",
            m.close_total.clone(),
        );
        registry.register(
            "tcp_open_connections",
            "Number of currently-open connections",
            m.open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Total count of bytes read from peers",
            m.read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Total count of bytes written to peers",
            m.write_bytes.clone(),
        );
        registry.register(
            "tcp_refused",
            "Total count of connections refused before forwarding, by reason",
            m.refused.clone(),
        );
        m
    }

    /// Counts one opened socket and returns the handle that counts its bytes and its close.
    pub fn open(&self, labels: TcpLabels) -> TcpConn {
        self.open_total.get_or_create(&labels).inc();
        let open = self.open_connections.get_or_create_owned(&labels);
        open.inc();
        TcpConn {
            read: self.read_bytes.get_or_create_owned(&labels),
            write: self.write_bytes.get_or_create_owned(&labels),
            open,
            close_total: self.close_total.clone(),
            labels,
            errno: "",
        }
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
    read: Counter,
    write: Counter,
    open: Gauge,
    close_total: Family<CloseLabels, Counter>,
    labels: TcpLabels,
    errno: &'static str,
}

impl TcpConn {
    #[inline]
    pub fn read(&self, n: usize) {
        self.read.inc_by(n as u64);
    }

    #[inline]
    pub fn wrote(&self, n: usize) {
        self.write.inc_by(n as u64);
    }

    /// Records that an error closed this connection; `errno` is the error's name (e.g.
    /// `ECONNRESET`).
    pub fn set_errno(&mut self, errno: &'static str) {
        self.errno = errno;
    }
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        self.open.dec();
        self.close_total
            .get_or_create(&CloseLabels {
                conn: self.labels.clone(),
                errno: self.errno,
            })
            .inc();
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
