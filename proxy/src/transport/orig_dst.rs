//! Where an intercepted connection was going: `SO_ORIGINAL_DST` (IPv4) and
//! `IP6T_SO_ORIGINAL_DST` (IPv6), which netfilter answers for connections it redirected.
//!
//! Also the set of the pod's own addresses, which decides what "the pod's own address" means
//! for inbound and what "one of our listeners" means for loop protection.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
use tokio::net::TcpStream;

/// What the kernel says about a connection's original destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrigDst {
    /// Netfilter redirected the connection; it was addressed to this.
    Redirected(SocketAddr),
    /// The connection was addressed to the listener itself (no redirect happened), or the
    /// kernel tracks no original destination for it (no conntrack).
    NotRedirected,
}

/// Reads the original destination of an accepted connection.
pub fn original_dst(stream: &TcpStream) -> io::Result<OrigDst> {
    // An IPv4 connection to a dual-stack (`[::]`) listener has a mapped local address; its
    // conntrack entry is IPv4's.
    let local = unmap(stream.local_addr()?);
    let orig = match local {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst)
            .map(|sa| SocketAddr::from(SockaddrIn::from(sa))),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst)
            .map(|sa| SocketAddr::from(SockaddrIn6::from(sa))),
    };
    match orig {
        Ok(orig) if orig == local => Ok(OrigDst::NotRedirected),
        Ok(orig) => Ok(OrigDst::Redirected(unmap(orig))),
        // ENOENT: conntrack has no entry for this connection; nothing redirected it.
        Err(nix::errno::Errno::ENOENT) => Ok(OrigDst::NotRedirected),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Folds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) into plain IPv4.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The addresses of this host's (pod's) interfaces, re-read at most once a second when asked
/// about an address it does not know (so an address added after start is learnt, and a flood of
/// foreign addresses costs at most one interface dump a second).
#[derive(Debug)]
pub struct LocalIps {
    state: Mutex<LocalIpsState>,
    /// Given by the configuration (the pod's IPs): never re-read from the interfaces.
    fixed: bool,
}

#[derive(Debug)]
struct LocalIpsState {
    ips: HashSet<IpAddr>,
    read_at: Instant,
}

const REFRESH_EVERY: Duration = Duration::from_secs(1);

impl LocalIps {
    pub fn new() -> Self {
        LocalIps {
            state: Mutex::new(LocalIpsState {
                ips: read_interface_ips(),
                read_at: Instant::now(),
            }),
            fixed: false,
        }
    }

    /// Exactly `ips` (the pod's addresses, Linkerd's `INBOUND_IPS`) and loopback: an inbound
    /// connection to any other address of the host is refused.
    pub fn fixed(ips: &[IpAddr]) -> Self {
        let mut set: HashSet<IpAddr> = ips.iter().map(|ip| ip.to_canonical()).collect();
        set.insert(IpAddr::from([127, 0, 0, 1]));
        set.insert(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        LocalIps {
            state: Mutex::new(LocalIpsState {
                ips: set,
                read_at: Instant::now(),
            }),
            fixed: true,
        }
    }

    /// Whether `ip` is one of this host's addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.ips.contains(&ip) || (ip.is_loopback() && self.fixed) {
            return true;
        }
        if !self.fixed && state.read_at.elapsed() >= REFRESH_EVERY {
            state.ips = read_interface_ips();
            state.read_at = Instant::now();
            return state.ips.contains(&ip);
        }
        false
    }
}

impl Default for LocalIps {
    fn default() -> Self {
        Self::new()
    }
}

fn read_interface_ips() -> HashSet<IpAddr> {
    let mut ips = HashSet::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return ips;
    };
    for ifaddr in addrs {
        let Some(addr) = ifaddr.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            ips.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            ips.insert(IpAddr::V6(v6.ip()));
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local() {
        let ips = LocalIps::new();
        assert!(ips.contains("127.0.0.1".parse().unwrap()));
        assert!(!ips.contains("192.0.2.77".parse().unwrap()));
    }

    #[test]
    fn unmaps_v4_mapped() {
        let a: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(unmap(a), "10.1.2.3:80".parse::<SocketAddr>().unwrap());
        let b: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(unmap(b), b);
    }

    #[tokio::test]
    async fn plain_connection_is_not_redirected() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(original_dst(&s).unwrap(), OrigDst::NotRedirected);
    }
}
