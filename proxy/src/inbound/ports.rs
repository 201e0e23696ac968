//! Which ports the direct path may name: the ports the pod declares, so that a meshed peer
//! cannot reach, through the inbound port, a port a NetworkPolicy would have closed to it.
//!
//! ```text
//! transport header names port P (the direct path, opaque transport included)
//!   ├─ REMORA_INBOUND_DIRECT_PORTS_UNRESTRICTED=true ──────────► admitted (the limit is off)
//!   ├─ P in INBOUND_PORTS, or named by a local per-port policy ─► admitted
//!   ├─ the pod's ports as the policy service declares them (the admin port's answer, watched
//!   │  from the start; `remora control` lists the pod's services' target ports) contain P
//!   │                                                            ─► admitted
//!   ├─ the pod declares no port at all (INBOUND_PORTS empty, none from the policy service)
//!   │                                                            ─► admitted (warned once)
//!   ├─ P's own answer from the policy service is a `Server` (not a default): a policy opens P
//!   │                                                            ─► admitted
//!   └─ otherwise ─► refused: port_not_declared, logged with the peer's identity
//! ```
//!
//! Waiting for the policy service is bounded by the detection timeout: without an answer in
//! time, only what the pod declares locally counts (a pod that declares nothing stays open, one
//! that declares ports is limited to them).

use std::collections::BTreeSet;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::policy::{PolicyRx, PortPolicies};

/// What the direct path may name.
#[derive(Clone, Debug, Default)]
pub struct DirectPorts {
    /// `INBOUND_PORTS`.
    pub declared: BTreeSet<u16>,
    /// Ports the local per-port policies name: declared too, once the limit is on.
    pub named: BTreeSet<u16>,
    /// `REMORA_INBOUND_DIRECT_PORTS_UNRESTRICTED`.
    pub unrestricted: bool,
}

/// The answer for one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The pod declares it (or a policy opens it).
    Declared,
    /// The limit is off: unrestricted, or the pod declares no port.
    Open,
    /// Refused.
    NotDeclared,
}

impl DirectPorts {
    /// Whether the direct path may name `port`. `pod` is the policy that carries what the
    /// policy service says of the pod's ports (the admin port's, watched from the start),
    /// `None` without a policy service.
    pub async fn check(
        &self,
        port: u16,
        policies: &PortPolicies,
        pod: Option<PolicyRx>,
        service: bool,
        wait: Duration,
    ) -> Verdict {
        if self.unrestricted {
            return Verdict::Open;
        }
        if self.declared.contains(&port) || self.named.contains(&port) {
            return Verdict::Declared;
        }
        let mut limited = !self.declared.is_empty();
        if !service {
            return if limited {
                Verdict::NotDeclared
            } else {
                Verdict::Open
            };
        }
        if let Some(mut pod) = pod
            && let Ok(Ok(p)) = tokio::time::timeout(wait, pod.wait_for(|p| p.from_service)).await
        {
            if p.pod_ports.contains(&port) {
                return Verdict::Declared;
            }
            limited |= !p.pod_ports.is_empty();
        }
        if !limited {
            return Verdict::Open;
        }
        let mut own = policies.get(port);
        let declared = match tokio::time::timeout(wait, own.wait_for(|p| p.from_service)).await {
            Ok(Ok(p)) => p.declares(port),
            _ => false,
        };
        if declared {
            Verdict::Declared
        } else {
            Verdict::NotDeclared
        }
    }

    /// The one warning of a pod that declares no port (or the note that the limit is off),
    /// at start; with a policy service, once the admin port's first answer says whether it
    /// declares the pod's ports (within `wait`).
    pub async fn announce(&self, pod: Option<PolicyRx>, wait: Duration) {
        if self.unrestricted {
            info!(
                "direct path: any port of the pod may be named \
                 (REMORA_INBOUND_DIRECT_PORTS_UNRESTRICTED)"
            );
            return;
        }
        if !self.declared.is_empty() {
            info!(
                ports = ?self.declared.iter().take(32).collect::<Vec<_>>(),
                "direct path: limited to the declared ports"
            );
            return;
        }
        if let Some(mut pod) = pod {
            match tokio::time::timeout(wait, pod.wait_for(|p| p.from_service)).await {
                Ok(Ok(p)) if !p.pod_ports.is_empty() => {
                    info!(
                        ports = ?p.pod_ports.iter().take(32).collect::<Vec<_>>(),
                        "direct path: limited to the ports the policy service declares"
                    );
                    return;
                }
                Ok(_) => {}
                Err(_) => debug!("direct path: no answer from the policy service in {wait:?}"),
            }
        }
        warn!(
            "direct path: the pod declares no ports (INBOUND_PORTS is empty), so a meshed peer \
             may name any port of the pod through the inbound port; declare the ports (or set \
             REMORA_INBOUND_DIRECT_PORTS_UNRESTRICTED=true to keep this on purpose)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::inbound::policy::{InboundPolicy, Policy};

    fn policies() -> PortPolicies {
        let local = InboundPolicy {
            default: Policy::AllUnauthenticated,
            ports: Default::default(),
            trust_domain: None,
            cluster_networks: Vec::new(),
        };
        PortPolicies::local(local, HashSet::new(), Duration::from_secs(1))
    }

    async fn verdict(ports: &DirectPorts, port: u16) -> Verdict {
        ports
            .check(port, &policies(), None, false, Duration::from_millis(10))
            .await
    }

    #[tokio::test]
    async fn declared_ports_only_once_the_pod_declares_any() {
        let mut ports = DirectPorts::default();
        assert_eq!(verdict(&ports, 7001).await, Verdict::Open);
        ports.declared = [7000].into();
        ports.named = [9000].into();
        assert_eq!(verdict(&ports, 7000).await, Verdict::Declared);
        assert_eq!(verdict(&ports, 9000).await, Verdict::Declared);
        assert_eq!(verdict(&ports, 7001).await, Verdict::NotDeclared);
        ports.unrestricted = true;
        assert_eq!(verdict(&ports, 7001).await, Verdict::Open);
    }

    #[tokio::test]
    async fn named_ports_alone_do_not_turn_the_limit_on() {
        let ports = DirectPorts {
            named: [9000].into(),
            ..DirectPorts::default()
        };
        assert_eq!(verdict(&ports, 7001).await, Verdict::Open);
    }

    #[tokio::test]
    async fn without_an_answer_in_time_only_local_declarations_count() {
        let ports = DirectPorts {
            declared: [7000].into(),
            ..DirectPorts::default()
        };
        let p = policies();
        let pod = Some(p.get(4191));
        let v = ports
            .check(7001, &p, pod, true, Duration::from_millis(10))
            .await;
        assert_eq!(v, Verdict::NotDeclared);
        let open = DirectPorts::default();
        let v = open
            .check(7001, &p, Some(p.get(4191)), true, Duration::from_millis(10))
            .await;
        assert_eq!(v, Verdict::Open);
    }
}
