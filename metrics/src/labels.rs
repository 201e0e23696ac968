//! Labels shared by the TCP and HTTP families: what a connection or request targets, in
//! Linkerd's names and order (`direction`, `authority`, `target_addr`, `target_ip`,
//! `target_port`, `tls`, `no_tls_reason`, `client_id` / `server_id`, the inbound policy's
//! `srv_*`, `route_*`, `authz_*`, the outbound's `dst_*`).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use crate::inbound_policy::Object;
use crate::tcp::{Direction, Tls};

/// What admitted an inbound request: the port's server, the route it took and the
/// authorization that allowed it, labelled as linkerd2-proxy labels them (`srv_group`,
/// `srv_kind`, `srv_name`, `srv_port`, `route_group`, `route_kind`, `route_name`,
/// `authz_group`, `authz_kind`, `authz_name`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PolicyLabels {
    pub server: Arc<Object>,
    pub port: u16,
    pub route: Arc<Object>,
    pub authz: Arc<Object>,
}

impl PolicyLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        let object = |o: &Object, [g, k, n]: [&str; 3], e: &mut LabelSetEncoder<'_>| {
            (g, &*o.group).encode(e.encode_label())?;
            (k, &*o.kind).encode(e.encode_label())?;
            (n, &*o.name).encode(e.encode_label())
        };
        object(&self.server, ["srv_group", "srv_kind", "srv_name"], encoder)?;
        ("srv_port", self.port).encode(encoder.encode_label())?;
        object(
            &self.route,
            ["route_group", "route_kind", "route_name"],
            encoder,
        )?;
        object(
            &self.authz,
            ["authz_group", "authz_kind", "authz_name"],
            encoder,
        )
    }
}

/// A destination's discovery labels as `dst_*` labels (`dst_service`, `dst_namespace`,
/// `dst_pod`, ...; the mirror's `target_cluster` becomes `dst_target_cluster`). Built once per
/// endpoint; hashing uses a hash computed at construction.
#[derive(Debug, Eq)]
pub struct DstLabels {
    pairs: Vec<(String, String)>,
    hash: u64,
}

impl DstLabels {
    /// Prefixes each key with `dst_` (characters a label name cannot hold become `_`) and sorts.
    pub fn new<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut pairs: Vec<(String, String)> = labels
            .into_iter()
            .map(|(k, v)| (format!("dst_{}", sanitize(k)), v.to_string()))
            .collect();
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pairs.hash(&mut h);
        DstLabels {
            hash: h.finish(),
            pairs,
        }
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl PartialEq for DstLabels {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.pairs == other.pairs
    }
}

impl Hash for DstLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A Prometheus label name: `[a-zA-Z0-9_]`, other characters replaced by `_`.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What a connection or request targets, and how it is secured.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TargetLabels {
    pub direction: Direction,
    /// The logical destination (`web.shop.svc.cluster.local:8080`) or the request's authority
    /// (outbound, and the gateway's inbound; linkerd2-proxy's inbound has none).
    pub authority: Option<Arc<str>>,
    /// The address connected to (outbound: the endpoint; inbound: the app), written as
    /// `target_addr`, `target_ip` and `target_port`.
    pub target_addr: Option<SocketAddr>,
    pub tls: Tls,
    /// The peer's identity: `client_id` inbound, `server_id` outbound.
    pub peer_id: Option<Arc<str>>,
    /// Inbound HTTP: the policy that admitted the request.
    pub policy: Option<Arc<PolicyLabels>>,
    pub dst: Option<Arc<DstLabels>>,
}

impl TargetLabels {
    pub fn new(direction: Direction) -> Self {
        TargetLabels {
            direction,
            authority: None,
            target_addr: None,
            tls: Tls::NoIdentity("not_provided_by_service_discovery"),
            peer_id: None,
            policy: None,
            dst: None,
        }
    }

    /// Encodes every label but `direction` (callers place it first).
    pub(crate) fn encode_rest(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        if let Some(a) = &self.authority {
            ("authority", a.as_ref()).encode(encoder.encode_label())?;
        }
        if let Some(addr) = self.target_addr {
            ("target_addr", addr.to_string()).encode(encoder.encode_label())?;
            ("target_ip", addr.ip().to_string()).encode(encoder.encode_label())?;
            ("target_port", addr.port()).encode(encoder.encode_label())?;
        }
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
        } else if self.direction == Direction::Inbound && self.tls == Tls::Established {
            // linkerd2-proxy writes an identity-less mTLS client as `client_id=""`.
            ("client_id", "").encode(encoder.encode_label())?;
        }
        if let Some(p) = &self.policy {
            p.encode(encoder)?;
        }
        if let Some(dst) = &self.dst {
            for (k, v) in dst.pairs() {
                (k.as_str(), v.as_str()).encode(encoder.encode_label())?;
            }
        }
        Ok(())
    }
}

impl EncodeLabelSet for TargetLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        ("direction", self.direction.as_str()).encode(encoder.encode_label())?;
        self.encode_rest(encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dst_labels_are_prefixed_sanitized_and_order_free() {
        let a = DstLabels::new([("service", "web"), ("app.kubernetes.io/name", "web")]);
        let b = DstLabels::new([("app.kubernetes.io/name", "web"), ("service", "web")]);
        assert_eq!(a, b);
        assert_eq!(a.get("dst_service"), Some("web"));
        assert_eq!(a.get("dst_app_kubernetes_io_name"), Some("web"));
    }
}
