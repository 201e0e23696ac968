//! TCP golden metrics, per connection side.
//!
//! Every proxied connection has two sides: the accepted socket (`peer="src"`) and the socket the
//! proxy opened (`peer="dst"`). Each side is opened with [`TcpMetrics::open`], which counts the
//! open and returns a [`TcpConn`] holding pre-resolved counter handles; reads and writes then
//! cost one atomic add each, and dropping the handle counts the close.

use prometheus_client::encoding::EncodeLabelSet;
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

/// Labels of one side of a TCP connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: &'static str,
    pub peer: &'static str,
}

impl TcpLabels {
    pub fn new(direction: Direction, peer: Peer) -> Self {
        TcpLabels {
            direction: direction.as_str(),
            peer: peer.as_str(),
        }
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
    /// A connection addressed to the outbound listener itself (explicit mode).
    Explicit,
    /// A connection addressed to the inbound listener itself (the direct path).
    Direct,
    /// The target would loop back into one of the proxy's own listeners.
    Loop,
    /// Inbound: the original destination is not one of this pod's addresses.
    NotLocal,
    /// The proxy could not connect to the target.
    ConnectFailed,
    /// Discovery knows the target but it has no endpoint.
    NoEndpoints,
}

impl RefuseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::ConnectionLimit => "connection_limit",
            RefuseReason::NoOriginalDst => "no_original_dst",
            RefuseReason::Explicit => "explicit",
            RefuseReason::Direct => "direct",
            RefuseReason::Loop => "loop",
            RefuseReason::NotLocal => "not_local",
            RefuseReason::ConnectFailed => "connect_failed",
            RefuseReason::NoEndpoints => "no_endpoints",
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
        let mut conn = m.open(TcpLabels::new(Direction::Inbound, Peer::Src));
        conn.read(10);
        conn.wrote(7);
        let text = render(&reg);
        assert!(text.contains(r#"tcp_open_total{direction="inbound",peer="src"} 1"#));
        assert!(text.contains(r#"tcp_open_connections{direction="inbound",peer="src"} 1"#));
        assert!(text.contains(r#"tcp_read_bytes_total{direction="inbound",peer="src"} 10"#));
        assert!(text.contains(r#"tcp_write_bytes_total{direction="inbound",peer="src"} 7"#));
        conn.set_errno("ECONNRESET");
        drop(conn);
        let text = render(&reg);
        assert!(text.contains(r#"tcp_open_connections{direction="inbound",peer="src"} 0"#));
        assert!(
            text.contains(
                r#"tcp_close_total{direction="inbound",peer="src",errno="ECONNRESET"} 1"#
            )
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
