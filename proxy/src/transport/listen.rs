//! The accept loops of the inbound and outbound listeners: the runtime's bounded accept loop
//! (`remora_runtime::listen`), with refusals counted in the TCP metrics, accepting stopped by
//! the drain, and each accepted connection run as drain-tracked work.
//!
//! A listener may also give each client address at most a share of its connection slots
//! ([`PeerShare`], the inbound's `REMORA_INBOUND_PEER_CONNECTION_SHARE`), so one address cannot
//! take every slot: past its share, its new connections are closed at once, counted
//! (`tcp_refused_total{reason="peer_connection_limit"}`) and logged at most once per
//! [`LOG_EVERY`]. Addresses the exemption names (loopback, the pod's own) have no share.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora_metrics::tcp::{Direction, RefuseReason, TcpMetrics};
use remora_runtime::drain::Drain;
use remora_runtime::listen::accept_loop;
use remora_runtime::log::Throttle;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::transport::tcp::SocketOpts;

/// What an accept loop needs besides its listener.
#[derive(Clone, Debug)]
pub struct AcceptCtx {
    pub direction: Direction,
    pub limit: Arc<Semaphore>,
    pub metrics: TcpMetrics,
    pub drain: Drain,
    /// Set on every accepted connection (besides `TCP_NODELAY`, which every one gets).
    pub opts: SocketOpts,
    /// Each client address's share of the slots (`None`: no share).
    pub peers: Option<Arc<PeerShare>>,
}

/// How often a refusal past a peer's share is logged, at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether an address is exempt from the share.
pub type Exempt = Box<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// The connections each client address holds, and the most one may hold. The table has one
/// entry per address with a connection open, so it is bounded by the listener's slots.
pub struct PeerShare {
    max: usize,
    exempt: Exempt,
    held: Mutex<HashMap<IpAddr, usize>>,
    logged: Throttle,
}

/// One address's part of `total` for a `share` above 0 and below 1: rounded up, at least one;
/// `None` for a share of 1 or more (no share).
pub fn share_of(total: usize, share: f64) -> Option<usize> {
    (share < 1.0).then(|| ((total as f64 * share).ceil() as usize).clamp(1, total.max(1)))
}

impl std::fmt::Debug for PeerShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerShare").field("max", &self.max).finish()
    }
}

/// One connection's place in its address's share: given back when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    share: Arc<PeerShare>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let Ok(mut held) = self.share.held.lock() else {
            return;
        };
        if let Some(n) = held.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

impl PeerShare {
    /// At most `share` (above 0, up to 1) of `slots` per address, and at least one; `exempt`
    /// addresses have no share. `None` when the share is all the slots.
    pub fn new(slots: usize, share: f64, exempt: Exempt) -> Option<Arc<Self>> {
        let max = share_of(slots, share)?;
        Some(Arc::new(PeerShare {
            max,
            exempt,
            held: Mutex::new(HashMap::new()),
            logged: Throttle::new(LOG_EVERY),
        }))
    }

    /// The most connections one address may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for a connection from `ip`, unless it holds its share already. Exempt addresses
    /// always get one (checked only at the share: the check may read the interfaces).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        let over = {
            let mut held = self.held.lock().ok()?;
            let n = held.entry(ip).or_insert(0);
            if *n < self.max {
                *n += 1;
                false
            } else {
                true
            }
        };
        if over {
            if !(self.exempt)(ip) {
                self.log_refusal(ip);
                return None;
            }
            *self.held.lock().ok()?.entry(ip).or_insert(0) += 1;
        }
        Some(PeerSlot {
            share: self.clone(),
            ip,
        })
    }

    fn log_refusal(&self, ip: IpAddr) {
        if !self.logged.ready() {
            return;
        }
        warn!(
            client = %ip,
            max = self.max,
            "a client address holds its share of the connection slots; refusing its new \
             connections (logged once per {LOG_EVERY:?})"
        );
    }
}

/// Runs one accept loop per listener (e.g. an IPv4 and an IPv6 socket of one dual-stack
/// listener), all sharing `ctx`'s connection limit, until the drain is signalled. The listeners
/// are dropped on return, so later connection attempts are refused by the kernel.
pub async fn serve<H, F>(listeners: Vec<TcpListener>, ctx: AcceptCtx, handle: H)
where
    H: Fn(TcpStream, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let (ctx, handle) = (ctx.clone(), handle.clone());
        loops.spawn(async move {
            let (drain, metrics, direction) = (ctx.drain.clone(), &ctx.metrics, ctx.direction);
            accept_loop(
                listener,
                direction.as_str(),
                ctx.limit.clone(),
                drain.signaled(),
                |_| metrics.refused(direction, RefuseReason::ConnectionLimit),
                |stream, client, permit| {
                    let slot = match &ctx.peers {
                        None => None,
                        Some(share) => match share.admit(client.ip()) {
                            Some(slot) => Some(slot),
                            None => {
                                metrics.refused(direction, RefuseReason::PeerConnectionLimit);
                                drop((stream, permit));
                                return;
                            }
                        },
                    };
                    ctx.opts.apply(&stream);
                    // Boxed once, here: a connection's future is several KiB, and moved by
                    // value through the tracker, tokio's spawn and its task cell (whose every
                    // change of stage writes the whole cell) it was copied ~20 times per
                    // connection.
                    let work = Box::pin(handle(stream, client));
                    drain.spawn(async move {
                        work.await;
                        drop((permit, slot));
                    });
                },
            )
            .await
        });
    }
    while loops.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_share_and_others_still_get_in() {
        let exempt: Exempt = Box::new(|ip: IpAddr| ip.is_loopback());
        let share = PeerShare::new(4, 0.5, exempt).expect("a share");
        assert_eq!(share.max(), 2);
        let greedy: IpAddr = "10.0.0.1".parse().unwrap();
        let a = share.admit(greedy).expect("first");
        let _b = share.admit(greedy).expect("second");
        assert!(share.admit(greedy).is_none(), "beyond its share");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(
            share.admit(mapped).is_none(),
            "the same address, IPv4-mapped"
        );
        let _other = share
            .admit("10.0.0.2".parse().unwrap())
            .expect("another peer");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let _l: Vec<_> = (0..5).map(|_| share.admit(lo).expect("exempt")).collect();
        drop(a);
        assert!(
            share.admit(greedy).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_whole_share_is_no_share() {
        assert!(PeerShare::new(10, 1.0, Box::new(|_| false)).is_none());
        let tiny = PeerShare::new(1, 0.01, Box::new(|_| false)).expect("a share");
        assert_eq!(tiny.max(), 1, "at least one");
    }
}
