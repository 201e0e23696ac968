//! Inbound authorization policy, per port.
//!
//! `REMORA_INBOUND_DEFAULT_POLICY` is one of `all-unauthenticated` (default),
//! `all-authenticated` (mTLS peers only), `cluster-authenticated` (mTLS peers of our trust
//! domain), `deny`. `REMORA_INBOUND_PORT_POLICIES` overrides it per port, `;`-separated:
//!
//! ```text
//! 8080=all-authenticated; 9090=deny; 7000=allow(web.shop.serviceaccount.identity.linkerd.east.example, *.prod.serviceaccount.identity.linkerd.east.example)
//! ```
//!
//! `allow(...)` admits only mTLS peers whose identity matches one of the patterns: an exact name,
//! or `*.suffix` for any name under `suffix`.

use std::collections::HashMap;
use std::fmt;

use remora_identity::Name;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    AllUnauthenticated,
    AllAuthenticated,
    ClusterAuthenticated,
    Deny,
    Allow(Vec<Pattern>),
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
    ForeignTrustDomain,
    NotAllowed,
    Deny,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Unauthenticated => "policy_unauthenticated",
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
    /// Our trust domain, for `cluster-authenticated` (none without an identity).
    pub trust_domain: Option<String>,
}

impl InboundPolicy {
    pub fn for_port(&self, port: u16) -> &Policy {
        self.ports.get(&port).unwrap_or(&self.default)
    }

    pub fn check(&self, port: u16, peer: &Peer) -> Result<(), Denied> {
        match (self.for_port(port), peer) {
            (Policy::AllUnauthenticated, _) => Ok(()),
            (Policy::Deny, _) => Err(Denied::Deny),
            (_, Peer::Unauthenticated) => Err(Denied::Unauthenticated),
            (Policy::AllAuthenticated, Peer::Authenticated(_)) => Ok(()),
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
        "deny" => return Ok(Policy::Deny),
        _ => {}
    }
    let inner = s
        .strip_prefix("allow(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            format!(
                "{s:?} is not a policy: all-unauthenticated, all-authenticated, \
                 cluster-authenticated, deny or allow(name, *.suffix, ...)"
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
        }
    }

    #[test]
    fn decisions() {
        let p = policy(
            "all-unauthenticated",
            "1=all-authenticated; 2=cluster-authenticated; 3=deny; 4=allow(db.shop.serviceaccount.identity.linkerd.east.example, *.prod.serviceaccount.identity.linkerd.east.example)",
        );
        assert_eq!(p.check(80, &Peer::Unauthenticated), Ok(()));
        assert_eq!(
            p.check(1, &Peer::Unauthenticated),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(p.check(1, &id(WEB)), Ok(()));
        assert_eq!(p.check(2, &id(WEB)), Ok(()));
        assert_eq!(p.check(2, &id(WEST)), Err(Denied::ForeignTrustDomain));
        assert_eq!(p.check(3, &id(WEB)), Err(Denied::Deny));
        assert_eq!(p.check(4, &id(WEB)), Err(Denied::NotAllowed));
        assert_eq!(
            p.check(
                4,
                &id("db.shop.serviceaccount.identity.linkerd.east.example")
            ),
            Ok(())
        );
        assert_eq!(
            p.check(
                4,
                &id("api.prod.serviceaccount.identity.linkerd.east.example")
            ),
            Ok(())
        );
        assert_eq!(
            p.check(4, &Peer::Unauthenticated),
            Err(Denied::Unauthenticated)
        );
        // A suffix matches below it, not a look-alike.
        assert_eq!(
            p.check(
                4,
                &id("api.xprod.serviceaccount.identity.linkerd.east.example")
            ),
            Err(Denied::NotAllowed)
        );
    }

    #[test]
    fn cluster_authenticated_needs_our_trust_domain() {
        let mut p = policy("cluster-authenticated", "");
        assert_eq!(p.check(1, &id(WEB)), Ok(()));
        assert_eq!(
            p.check(
                1,
                &id("web.shop.serviceaccount.identity.linkerd.xeast.example")
            ),
            Err(Denied::ForeignTrustDomain)
        );
        p.trust_domain = None;
        assert_eq!(p.check(1, &id(WEB)), Err(Denied::ForeignTrustDomain));
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
