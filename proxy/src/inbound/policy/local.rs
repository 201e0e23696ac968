//! The `REMORA_INBOUND_*` policies: what a port allows until the policy service answers, or
//! for good without one. Each compiles to the same [`ServerPolicy`] a `Server` from the policy
//! service does, so one evaluation path serves both.
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
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use remora_identity::Name;
use remora_metrics::inbound_policy::Object;

use super::proto::default_route;
use super::server::{Authn, Authz, Network, Protocol, ServerPolicy};
use crate::policy::Meta;

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

/// The inbound policy of every port, as configured.
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

    /// The cluster's networks, or every address when none are configured.
    fn cluster(&self) -> Vec<Network> {
        if self.cluster_networks.is_empty() {
            return Network::all();
        }
        self.cluster_networks
            .iter()
            .map(|&net| Network {
                net,
                except: Vec::new(),
            })
            .collect()
    }

    /// The one authorization `policy` makes (none for `deny`), named after the policy as
    /// linkerd2-proxy names its local defaults.
    fn authz(&self, policy: &Policy) -> Option<Authz> {
        let any_identity = || Authn::TlsAuthenticated {
            identities: Default::default(),
            suffixes: vec![String::new()],
        };
        let (networks, authn) = match policy {
            Policy::Deny => return None,
            Policy::AllUnauthenticated | Policy::Audit => (Network::all(), Authn::Unauthenticated),
            Policy::AllAuthenticated => (Network::all(), any_identity()),
            Policy::ClusterUnauthenticated => (self.cluster(), Authn::Unauthenticated),
            Policy::ClusterAuthenticated if !self.cluster_networks.is_empty() => {
                (self.cluster(), any_identity())
            }
            // Without cluster networks (Remora's own surface), the cluster is our trust
            // domain; without an identity, no one is of it.
            Policy::ClusterAuthenticated => (
                Network::all(),
                Authn::TlsAuthenticated {
                    identities: Default::default(),
                    suffixes: self
                        .trust_domain
                        .iter()
                        .map(|td| format!(".{}", td.trim_end_matches('.')))
                        .collect(),
                },
            ),
            Policy::Allow(patterns) => (
                Network::all(),
                Authn::TlsAuthenticated {
                    identities: patterns
                        .iter()
                        .filter_map(|p| match p {
                            Pattern::Exact(n) => Some(n.to_string()),
                            Pattern::Suffix(_) => None,
                        })
                        .collect(),
                    suffixes: patterns
                        .iter()
                        .filter_map(|p| match p {
                            Pattern::Suffix(s) => Some(format!(".{s}")),
                            Pattern::Exact(_) => None,
                        })
                        .collect(),
                },
            ),
        };
        let meta = Meta::default(policy.name());
        Some(Authz {
            labels: Object::new(meta.group(), meta.kind(), meta.name()),
            meta,
            networks,
            authn,
        })
    }

    /// The policy of `port` as a server: detection within `detect_timeout` (or, for an opaque
    /// port, none), the policy's authorization for its connections and for its one route,
    /// which matches every request. No implicit `localhost` authorization: like
    /// linkerd2-proxy's local defaults, `deny` denies loopback clients too.
    pub fn server(&self, port: u16, opaque: bool, detect_timeout: Duration) -> ServerPolicy {
        let policy = self.for_port(port);
        let authzs: Arc<[Authz]> = self.authz(policy).into_iter().collect();
        let meta = Meta::default(policy.name());
        let protocol = if opaque {
            Protocol::Opaque(authzs)
        } else {
            Protocol::Detect {
                timeout: detect_timeout,
                http: Arc::from([default_route(authzs.clone())]),
                tcp: authzs,
            }
        };
        ServerPolicy {
            labels: Object::new(meta.group(), meta.kind(), meta.name()),
            meta,
            protocol,
            rate_limit: None,
            from_service: false,
            pod_ports: Arc::default(),
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
