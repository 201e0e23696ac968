//! The proxy's own addresses: its listeners and its pod's IPs. Used so the inbound forwards only
//! to its own pod and the outbound never dials one of the proxy's own listeners.

use std::net::SocketAddr;

use crate::transport::orig_dst::LocalIps;

#[derive(Debug)]
pub struct OwnAddrs {
    listeners: Vec<SocketAddr>,
    /// Shared: the connection and in-flight shares' exemptions ([`OwnAddrs::local_peers`])
    /// read them too.
    pub ips: std::sync::Arc<LocalIps>,
}

impl OwnAddrs {
    pub fn new(listeners: Vec<SocketAddr>, ips: LocalIps) -> Self {
        OwnAddrs {
            listeners,
            ips: std::sync::Arc::new(ips),
        }
    }

    /// Loopback and the pod's own addresses: the peers no per-address share binds (the
    /// inbound's connection share and its in-flight share).
    pub fn local_peers(&self) -> crate::transport::listen::Exempt {
        let ips = self.ips.clone();
        Box::new(move |ip| ip.is_loopback() || ips.contains(ip))
    }

    /// Whether a connection to `addr` would reach one of this proxy's listeners.
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        self.listeners.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    // An unspecified address listens on every local address (of both
                    // families, for a dual-stack `[::]`).
                    || (l.ip().is_unspecified()
                        && (addr.ip().is_unspecified() || self.ips.contains(addr.ip()))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_own_listeners() {
        let own = OwnAddrs::new(
            vec![
                "127.0.0.1:4140".parse().unwrap(),
                "0.0.0.0:4143".parse().unwrap(),
            ],
            LocalIps::new(),
        );
        assert!(own.is_own_listener("127.0.0.1:4140".parse().unwrap()));
        // 0.0.0.0:4143 listens on every local address.
        assert!(own.is_own_listener("127.0.0.1:4143".parse().unwrap()));
        assert!(!own.is_own_listener("127.0.0.1:4141".parse().unwrap()));
        // A remote pod's inbound port is not ours.
        assert!(!own.is_own_listener("192.0.2.9:4143".parse().unwrap()));
        // 0.0.0.0 listens on IPv4 only, but a local address on the port is ours either way.
        assert!(own.is_own_listener("[::1]:4143".parse().unwrap()));
        assert!(!own.is_own_listener("[::1]:4144".parse().unwrap()));
    }
}
