//! Inbound policy: who may use each of the pod's ports, and how.
//!
//! ```text
//!  REMORA_INBOUND_* (local.rs) ──compile──┐
//!                                          ├─► ServerPolicy (server.rs): protocol, authorizations,
//!  WatchPort(workload, port) ──proto.rs───┘     routes and filters (filter.rs), rate limit
//!   (api.rs, one stream per port)                (ratelimit.rs)
//!                                          │ watch::Receiver per port ([`PortPolicies`])
//!                                          ▼
//!  each connection: ConnPolicy (conn.rs) ── TCP: authorize at accept, re-check at every change
//!                                        └─ HTTP: route → authorization → filters → rate limit,
//!                                           per request, against the port's current policy
//! ```
//!
//! With a policy service, every port's policy is watched on it: the ports the pod declares
//! (`INBOUND_PORTS`) and the admin port from the start and for good, any other port from its
//! first connection until it is idle for `REMORA_POLICY_IDLE_TIMEOUT`; at most
//! [`MAX_WATCHED_PORTS`] at once (the least recently used unpinned port makes room; beyond
//! that, a port gets its local policy without a watch). A port has its local policy until the
//! first answer, then the last good answer through outages; an invalid answer is refused and
//! counted (`inbound_policy_refused_total`), the previous policy kept. Without a policy
//! service, the local policies are the policy, compiled once.
//!
//! # Layout
//! - [`server`]: the compiled policy of a port and the authorization of a client.
//! - [`proto`]: `Server` messages → [`ServerPolicy`], by linkerd2-proxy's rules.
//! - [`local`]: the `REMORA_INBOUND_*` policies → [`ServerPolicy`].
//! - [`filter`]: route filters (headers, redirects, injected failures).
//! - [`ratelimit`]: local rate limits (GCRA, bounded per-identity state).
//! - [`conn`]: enforcing the policy on a connection and its requests.
//! - `api`: the `WatchPort` client.

mod api;
pub mod conn;
pub mod filter;
mod local;
pub mod proto;
pub mod ratelimit;
pub mod server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use remora_metrics::inbound_policy::InboundPolicyMetrics;
use tokio::sync::watch;
use tracing::{info, warn};

pub use self::conn::ConnPolicy;
pub use self::local::{InboundPolicy, Pattern, Policy, parse_policy, parse_port_policies};
pub use self::server::{Client, ClientTls, Denied, Protocol, ServerPolicy};
use crate::inputs::PolicyService;
use crate::policy::watch::Watches;

/// Ports whose policy is watched at once.
pub const MAX_WATCHED_PORTS: usize = 1024;

/// A port's policy, as it changes.
pub type PolicyRx = watch::Receiver<Arc<ServerPolicy>>;

/// The local policies, compiled: one receiver per distinct (policy, opaque) pair, whose
/// senders are kept so the receivers never see their watch end.
#[derive(Debug)]
struct Compiled {
    policies: Vec<(Policy, bool, PolicyRx)>,
    _senders: Vec<watch::Sender<Arc<ServerPolicy>>>,
}

/// The policy of every inbound port.
#[derive(Debug)]
pub struct PortPolicies {
    local: InboundPolicy,
    opaque: HashSet<u16>,
    detect_timeout: Duration,
    compiled: Compiled,
    /// With a policy service.
    watches: Option<Arc<Watches<api::WatchPort>>>,
}

impl PortPolicies {
    /// The local policies only (no policy service).
    pub fn local(local: InboundPolicy, opaque: HashSet<u16>, detect_timeout: Duration) -> Self {
        let mut combos: Vec<(Policy, bool)> = Vec::new();
        let ports: BTreeSet<u16> = local
            .ports
            .keys()
            .copied()
            .chain(opaque.iter().copied())
            .collect();
        for opaque_port in [false, true] {
            combos.push((local.default.clone(), opaque_port));
        }
        for port in ports {
            let combo = (local.for_port(port).clone(), opaque.contains(&port));
            if !combos.contains(&combo) {
                combos.push(combo);
            }
        }
        let mut policies = Vec::new();
        let mut senders = Vec::new();
        for (policy, opaque_port) in combos {
            let probe = InboundPolicy {
                default: policy.clone(),
                ports: HashMap::new(),
                ..local.clone()
            };
            let (tx, rx) = watch::channel(Arc::new(probe.server(0, opaque_port, detect_timeout)));
            policies.push((policy, opaque_port, rx));
            senders.push(tx);
        }
        PortPolicies {
            local,
            opaque,
            detect_timeout,
            compiled: Compiled {
                policies,
                _senders: senders,
            },
            watches: None,
        }
    }

    /// Watches ports on `service`, starting now with `pinned` (the pod's declared ports and the
    /// admin port). Call within a runtime.
    pub fn watched(
        self,
        service: &PolicyService,
        pinned: &BTreeSet<u16>,
        metrics: InboundPolicyMetrics,
    ) -> Self {
        let source =
            api::WatchPort::new(service.channel.clone(), service.workload.clone(), metrics);
        let watches = Watches::new(source, MAX_WATCHED_PORTS, service.idle, service.limits);
        for (pinned_now, &port) in pinned.iter().enumerate() {
            if pinned_now >= MAX_WATCHED_PORTS {
                warn!(
                    ports = pinned.len(),
                    max = MAX_WATCHED_PORTS,
                    "inbound policy: more declared ports than watches; the rest are watched on \
                     their first connection"
                );
                break;
            }
            let _ = watches.pin(&port, || self.local_server(port));
        }
        info!(
            ports = ?pinned.iter().take(32).collect::<Vec<_>>(),
            workload = %service.workload.trim_end(),
            "inbound policy: watching the declared ports on the policy service"
        );
        PortPolicies {
            watches: Some(watches),
            ..self
        }
    }

    /// The local policy of `port`, compiled afresh.
    fn local_server(&self, port: u16) -> ServerPolicy {
        self.local
            .server(port, self.opaque.contains(&port), self.detect_timeout)
    }

    /// The policy of `port`.
    pub fn get(&self, port: u16) -> PolicyRx {
        if let Some(w) = &self.watches {
            return w.get(&port, || self.local_server(port));
        }
        let policy = self.local.for_port(port);
        let opaque = self.opaque.contains(&port);
        self.compiled
            .policies
            .iter()
            .find(|(p, o, _)| *o == opaque && p == policy)
            .map(|(_, _, rx)| rx.clone())
            .unwrap_or_else(|| watch::channel(Arc::new(self.local_server(port))).1)
    }
}
