//! Inbound authorization policy, per port.
//!
//! `REMORA_INBOUND_DEFAULT_POLICY` is one of Linkerd's default policies:
//! - `all-unauthenticated` (the default): everyone;
//! - `all-authenticated`: mTLS peers only;
//! - `cluster-unauthenticated`: peers in the cluster's networks
//!   (`REMORA_POLICY_CLUSTER_NETWORKS`, required for it), with or without mTLS;
//! - `cluster-authenticated`: mTLS peers in the cluster's networks; without cluster networks
//!   configured (Remora's own surface), mTLS peers of our trust domain;
//! - `audit`: everyone, each connection logged as allowed by the audit policy;
//! - `deny`: no one.
//!
//! `REMORA_INBOUND_PORT_POLICIES` overrides it per port, `;`-separated:
//!
//! ```text
//! 8080=all-authenticated; 9090=deny; 7000=allow(web.shop.serviceaccount.identity.linkerd.east.example, *.prod.serviceaccount.identity.linkerd.east.example)
//! ```
//!
//! `allow(...)` admits only mTLS peers whose identity matches one of the patterns: an exact name,
//! or `*.suffix` for any name under `suffix`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use remora_identity::Name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    AllUnauthenticated,
    AllAuthenticated,
    ClusterUnauthenticated,
    ClusterAuthenticated,
    Audit,
    Deny,
    Allow(Vec<Pattern>),
}

impl Policy {
    /// The policy's name, as Linkerd writes it (`allow` for an allow-list).
    pub fn name(&self) -> &'static str {
        match self {
            Policy::AllUnauthenticated => "all-unauthenticated",
            Policy::AllAuthenticated => "all-authenticated",
            Policy::ClusterUnauthenticated => "cluster-unauthenticated",
            Policy::ClusterAuthenticated => "cluster-authenticated",
            Policy::Audit => "audit",
            Policy::Deny => "deny",
            Policy::Allow(_) => "allow",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Exact(Name),
    Suffix(String),
}

impl Pattern {
    fn matches(&self, id: &Name) -> bool {
        match self {
            Pattern::Exact(n) => n == id,
            Pattern::Suffix(s) => {
                id.as_str().len() > s.len() + 1 && id.as_str().ends_with(&format!(".{s}"))
            }
        }
    }
}

/// Who is on the other end, as far as policy cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Plaintext, TLS for the app, or mTLS without a client certificate.
    Unauthenticated,
    Authenticated(Name),
}

/// Why policy refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    Unauthenticated,
    /// The client's address is outside the cluster's networks.
    OutsideCluster,
    ForeignTrustDomain,
    NotAllowed,
    Deny,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Unauthenticated => "policy_unauthenticated",
            Denied::OutsideCluster => "policy_outside_cluster",
            Denied::ForeignTrustDomain => "policy_foreign_trust_domain",
            Denied::NotAllowed => "policy_not_allowed",
            Denied::Deny => "policy_deny",
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denied::Unauthenticated => "the port requires an authenticated (mTLS) peer",
            Denied::OutsideCluster => "the port admits only clients in the cluster's networks",
            Denied::ForeignTrustDomain => "the port requires a peer of this cluster's trust domain",
            Denied::NotAllowed => "the peer's identity is not on the port's allow-list",
            Denied::Deny => "the port denies all connections",
        })
    }
}

/// The inbound policy of every port.
#[derive(Clone, Debug)]
pub struct InboundPolicy {
    pub default: Policy,
    pub ports: HashMap<u16, Policy>,
    /// Our trust domain, for `cluster-authenticated` without cluster networks (none without
    /// an identity).
    pub trust_domain: Option<String>,
    /// The cluster's networks, for the `cluster-*` policies (empty: not configured).
    pub cluster_networks: Vec<IpNet>,
}

impl InboundPolicy {
    pub fn for_port(&self, port: u16) -> &Policy {
        self.ports.get(&port).unwrap_or(&self.default)
    }

    /// Whether `client` is in the cluster's networks (`None`: unknown, so not).
    fn in_cluster(&self, client: Option<IpAddr>) -> bool {
        client.is_some_and(|ip| {
            let ip = ip.to_canonical();
            self.cluster_networks.iter().any(|n| n.contains(&ip))
        })
    }

    /// Whether `peer`, connecting from `client`, may use `port`.
    pub fn check(&self, port: u16, peer: &Peer, client: Option<IpAddr>) -> Result<(), Denied> {
        let policy = self.for_port(port);
        let cluster = !self.cluster_networks.is_empty();
        if matches!(
            policy,
            Policy::ClusterUnauthenticated | Policy::ClusterAuthenticated
        ) && cluster
            && !self.in_cluster(client)
        {
            return Err(Denied::OutsideCluster);
        }
        match (policy, peer) {
            (Policy::AllUnauthenticated | Policy::Audit, _) => Ok(()),
            (Policy::Deny, _) => Err(Denied::Deny),
            // The configuration requires cluster networks for it.
            (Policy::ClusterUnauthenticated, _) => Ok(()),
            (_, Peer::Unauthenticated) => Err(Denied::Unauthenticated),
            (Policy::AllAuthenticated, Peer::Authenticated(_)) => Ok(()),
            (Policy::ClusterAuthenticated, Peer::Authenticated(_)) if cluster => Ok(()),
            // Without cluster networks (Remora's own surface), the cluster is our trust domain.
            (Policy::ClusterAuthenticated, Peer::Authenticated(id)) => match &self.trust_domain {
                Some(td) if id.is_under(td) && id.as_str() != td => Ok(()),
                _ => Err(Denied::ForeignTrustDomain),
            },
            (Policy::Allow(patterns), Peer::Authenticated(id)) => {
                if patterns.iter().any(|p| p.matches(id)) {
                    Ok(())
                } else {
                    Err(Denied::NotAllowed)
                }
            }
        }
    }
}

/// Parses one policy value.
pub fn parse_policy(s: &str) -> Result<Policy, String> {
    let s = s.trim();
    match s {
        "all-unauthenticated" => return Ok(Policy::AllUnauthenticated),
        "all-authenticated" => return Ok(Policy::AllAuthenticated),
        "cluster-authenticated" => return Ok(Policy::ClusterAuthenticated),
        "cluster-unauthenticated" => return Ok(Policy::ClusterUnauthenticated),
        "audit" => return Ok(Policy::Audit),
        "deny" => return Ok(Policy::Deny),
        _ => {}
    }
    let inner = s
        .strip_prefix("allow(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            format!(
                "{s:?} is not a policy: all-unauthenticated, all-authenticated, \
                 cluster-unauthenticated, cluster-authenticated, audit, deny or \
                 allow(name, *.suffix, ...)"
            )
        })?;
    let patterns = inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix("*.") {
            Some(suffix) => suffix
                .parse::<Name>()
                .map(|n| Pattern::Suffix(n.to_string()))
                .map_err(|e| e.to_string()),
            None => p
                .parse::<Name>()
                .map(Pattern::Exact)
                .map_err(|e| e.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if patterns.is_empty() {
        return Err("allow() needs at least one identity or *.suffix".into());
    }
    Ok(Policy::Allow(patterns))
}

/// Parses `PORT=POLICY; PORT=POLICY ...`.
pub fn parse_port_policies(s: &str) -> Result<HashMap<u16, Policy>, String> {
    let mut out = HashMap::new();
    for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (port, policy) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not PORT=POLICY"))?;
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{port:?} is not a port"))?;
        if out.insert(port, parse_policy(policy)?).is_some() {
            return Err(format!("port {port} has two policies"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Peer {
        Peer::Authenticated(s.parse().unwrap())
    }

    const WEB: &str = "web.shop.serviceaccount.identity.linkerd.east.example";
    const WEST: &str = "web.shop.serviceaccount.identity.linkerd.west.example";

    fn policy(default: &str, ports: &str) -> InboundPolicy {
        InboundPolicy {
            default: parse_policy(default).unwrap(),
            ports: parse_port_policies(ports).unwrap(),
            trust_domain: Some("east.example".into()),
            cluster_networks: Vec::new(),
        }
    }

    #[test]
    fn decisions() {
        let p = policy(
            "all-unauthenticated",
            "1=all-authenticated; 2=cluster-authenticated; 3=deny; 4=allow(db.shop.serviceaccount.identity.linkerd.east.example, *.prod.serviceaccount.identity.linkerd.east.example)",
        );
        assert_eq!(p.check(80, &Peer::Unauthenticated, None), Ok(()));
        assert_eq!(
            p.check(1, &Peer::Unauthenticated, None),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(p.check(1, &id(WEB), None), Ok(()));
        assert_eq!(p.check(2, &id(WEB), None), Ok(()));
        assert_eq!(p.check(2, &id(WEST), None), Err(Denied::ForeignTrustDomain));
        assert_eq!(p.check(3, &id(WEB), None), Err(Denied::Deny));
        assert_eq!(p.check(4, &id(WEB), None), Err(Denied::NotAllowed));
        assert_eq!(
            p.check(
                4,
                &id("db.shop.serviceaccount.identity.linkerd.east.example"),
                None
            ),
            Ok(())
        );
        assert_eq!(
            p.check(
                4,
                &id("api.prod.serviceaccount.identity.linkerd.east.example"),
                None
            ),
            Ok(())
        );
        assert_eq!(
            p.check(4, &Peer::Unauthenticated, None),
            Err(Denied::Unauthenticated)
        );
        // A suffix matches below it, not a look-alike.
        assert_eq!(
            p.check(
                4,
                &id("api.xprod.serviceaccount.identity.linkerd.east.example"),
                None
            ),
            Err(Denied::NotAllowed)
        );
    }

    #[test]
    fn cluster_authenticated_needs_our_trust_domain() {
        let mut p = policy("cluster-authenticated", "");
        assert_eq!(p.check(1, &id(WEB), None), Ok(()));
        assert_eq!(
            p.check(
                1,
                &id("web.shop.serviceaccount.identity.linkerd.xeast.example"),
                None
            ),
            Err(Denied::ForeignTrustDomain)
        );
        p.trust_domain = None;
        assert_eq!(p.check(1, &id(WEB), None), Err(Denied::ForeignTrustDomain));
    }

    #[test]
    fn cluster_policies_with_cluster_networks_check_the_client_address() {
        let mut p = policy(
            "cluster-unauthenticated",
            "1=cluster-authenticated; 2=audit",
        );
        p.cluster_networks = vec!["10.42.0.0/16".parse().unwrap()];
        let inside = Some("10.42.3.4".parse().unwrap());
        let outside = Some("192.0.2.1".parse().unwrap());
        assert_eq!(p.check(80, &Peer::Unauthenticated, inside), Ok(()));
        assert_eq!(p.check(80, &id(WEST), inside), Ok(()), "any identity");
        assert_eq!(
            p.check(80, &Peer::Unauthenticated, outside),
            Err(Denied::OutsideCluster)
        );
        assert_eq!(
            p.check(80, &Peer::Unauthenticated, None),
            Err(Denied::OutsideCluster)
        );
        // An IPv4-mapped IPv6 client is its IPv4 address.
        assert_eq!(
            p.check(
                80,
                &Peer::Unauthenticated,
                Some("::ffff:10.42.3.4".parse().unwrap())
            ),
            Ok(())
        );
        assert_eq!(p.check(1, &id(WEST), inside), Ok(()));
        assert_eq!(
            p.check(1, &Peer::Unauthenticated, inside),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(p.check(1, &id(WEB), outside), Err(Denied::OutsideCluster));
        // Audit admits everyone, from anywhere.
        assert_eq!(p.check(2, &Peer::Unauthenticated, outside), Ok(()));
    }

    #[test]
    fn every_linkerd_default_policy_parses() {
        for name in [
            "all-unauthenticated",
            "all-authenticated",
            "cluster-unauthenticated",
            "cluster-authenticated",
            "audit",
            "deny",
        ] {
            assert_eq!(parse_policy(name).unwrap().name(), name);
        }
    }

    #[test]
    fn parse_errors() {
        assert!(parse_policy("open").is_err());
        assert!(parse_policy("allow()").is_err());
        assert!(parse_policy("allow(not a name)").is_err());
        assert!(parse_port_policies("8080").is_err());
        assert!(parse_port_policies("0=deny").is_err());
        assert!(parse_port_policies("1=deny;1=deny").is_err());
        assert_eq!(parse_port_policies(" ; ").unwrap().len(), 0);
    }
}
