//! The cluster's services as discovery serves them: the `[[services]]` of the config file,
//! validated into a [`ClusterState`] with lookups by name, virtual IP and pod IP, and turned
//! into Destination API messages.
//!
//! ```toml
//! [[services]]
//! name = "web"
//! namespace = "shop"
//! cluster_ip = "10.96.0.10"                       # the virtual IP
//! ports = [{ port = 80, target_port = 8080, name = "http" }, { port = 3306, opaque = true }]
//! failure_accrual = { kind = "consecutive", max_failures = 7 }   # optional: see CONFIG.md
//!
//! [[services.endpoints]]
//! pod = "web-0"
//! ip = "10.213.0.5"
//! service_account = "web"                          # identity web.shop.serviceaccount...
//! protocol = "h2"                                  # h2 (meshed, default) | opaque | none (unmeshed)
//! labels = { version = "v1" }
//! explicit = false                                 # true: the pod runs without iptables;
//!                                                  # peers use opaque transport on every port
//! ```

use crate::error::Invalid;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use serde::{Deserialize, Serialize};

use crate::policy::Policies;
use crate::policy::model::check_port_name;
use crate::profile::{Profile, RawBudget, RawOverride, RawRoute};

/// The inbound port proxies accept opaque transport on.
pub const INBOUND_PORT: u16 = 4143;
/// Default endpoint weight (Linkerd's).
pub const DEFAULT_WEIGHT: u32 = 10_000;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// Linked clusters may mirror this service.
    #[serde(default, skip_serializing_if = "is_false")]
    pub export: bool,
    /// How linked clusters reach it: "flat" or "gateway" (default: as each link says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_mode: Option<String>,
    pub ports: Vec<RawPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RawBudget>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<RawEndpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_overrides: Vec<RawOverride>,
    /// Outbound circuit breaking for clients of the service (Linkerd's
    /// `balancer.linkerd.io/failure-accrual` annotations), sent in its outbound policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_accrual: Option<RawFailureAccrual>,
}

/// Linkerd's consecutive-failures accrual: after `max_failures` failures in a row an endpoint
/// is shut for a backoff (from `min_penalty`, doubling to `max_penalty`, jittered).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailureAccrual {
    /// `consecutive`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_penalty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_penalty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ratio: Option<f32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub opaque: bool,
    /// The port's name, by which a policy server may name its target port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub pod: String,
    pub ip: String,
    #[serde(default = "default_sa")]
    pub service_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The pod's proxy runs in explicit mode (no iptables): peers must reach every port through
    /// its inbound port with a transport header.
    #[serde(default, skip_serializing_if = "is_false")]
    pub explicit: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_sa() -> String {
    "default".into()
}

impl RawEndpoint {
    /// An endpoint of pod `pod` at `ip`, workload `service_account`, with every other field at
    /// its default.
    pub fn new(pod: &str, ip: &str, service_account: &str) -> Self {
        RawEndpoint {
            pod: pod.into(),
            ip: ip.into(),
            service_account: service_account.into(),
            protocol: None,
            weight: None,
            explicit: false,
            labels: BTreeMap::new(),
        }
    }
}

/// For `skip_serializing_if`: leaves `false` flags out of a written config.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// How peers speak to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Meshed; HTTP may be upgraded to HTTP/2 between proxies.
    H2,
    /// Meshed; always opaque transport through the inbound port.
    Opaque,
    /// Not meshed: no identity, no hint.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SvcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub port: u16,
    pub target_port: u16,
    pub opaque: bool,
    pub name: Option<String>,
}

/// Consecutive-failures accrual, validated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailureAccrual {
    pub max_failures: u32,
    pub min_penalty: Duration,
    pub max_penalty: Duration,
    pub jitter_ratio: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub pod: String,
    pub ip: IpAddr,
    pub service_account: String,
    pub protocol: Protocol,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
    /// No iptables in this pod: opaque transport on every port.
    pub explicit: bool,
    /// The endpoint's full identity when it is not one of this cluster's (a mirrored pod).
    pub identity: Option<String>,
    /// Reached through a gateway: the service's name in its own cluster; the transport header
    /// names it with the requested port.
    pub authority_override: Option<String>,
    /// The port to dial whatever port is asked for (a gateway's inbound port).
    pub port: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub key: SvcKey,
    pub vip: Option<IpAddr>,
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
    pub profile: Profile,
    /// Linked clusters may mirror it.
    pub export: bool,
    /// How linked clusters reach it, when this cluster says: "flat" or "gateway".
    pub export_mode: Option<&'static str>,
    /// Outbound failure accrual for its clients.
    pub failure_accrual: Option<FailureAccrual>,
}

impl Service {
    fn port(&self, port: u16) -> Port {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .cloned()
            .unwrap_or(Port {
                port,
                target_port: port,
                opaque: false,
                name: None,
            })
    }
}

/// What a `Get`/`GetProfile` path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A service (by name or virtual IP) and the port asked for.
    Service(SvcKey, u16),
    /// One pod (by IP) of a service, and the port asked for.
    Pod(SvcKey, IpAddr, u16),
    /// Not known here: the client may fall back to the address itself.
    Unknown,
}

/// Every service of the cluster, with lookups.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub cluster_domain: String,
    pub trust_domain: String,
    pub control_plane_ns: String,
    /// Linkerd's transport-header mode: meshed HTTP endpoints are hinted h2 through the pod's
    /// inbound port (`opaque_transport`), so the client sends the transport header naming the
    /// session protocol. Off, only opaque ports and explicit pods get `opaque_transport`.
    pub transport_header: bool,
    pub services: BTreeMap<SvcKey, Service>,
    /// Both policy APIs' answers, compiled for these services.
    pub policy: Policies,
    by_vip: HashMap<IpAddr, SvcKey>,
    by_pod: HashMap<IpAddr, SvcKey>,
}

impl ClusterState {
    /// Validates raw services. Errors name the service and field.
    pub fn build(
        raw: &[RawService],
        cluster_domain: &str,
        trust_domain: &str,
        control_plane_ns: &str,
    ) -> Result<ClusterState, Invalid> {
        let mut state = ClusterState {
            cluster_domain: cluster_domain.to_string(),
            trust_domain: trust_domain.to_string(),
            control_plane_ns: control_plane_ns.to_string(),
            ..Default::default()
        };
        for r in raw {
            let svc = validate(r)?;
            let key = svc.key.clone();
            if let Some(vip) = svc.vip
                && let Some(other) = state.by_vip.insert(vip, key.clone())
            {
                return Err(Invalid::from(format!(
                    "services {other} and {key} share cluster_ip {vip}"
                )));
            }
            for e in &svc.endpoints {
                state.by_pod.entry(e.ip).or_insert_with(|| key.clone());
            }
            if state.services.insert(key.clone(), svc).is_some() {
                return Err(Invalid::from(format!("service {key} is defined twice")));
            }
        }
        Ok(state)
    }

    /// This state with `extra` services added (the mirrors of linked clusters' exports). A
    /// service whose name or virtual IP is taken is skipped, with the reason.
    pub fn with_services(&self, extra: Vec<Service>) -> (ClusterState, Vec<String>) {
        let mut state = self.clone();
        let mut skipped = Vec::new();
        for svc in extra {
            let key = svc.key.clone();
            if state.services.contains_key(&key) {
                skipped.push(format!("{key}: a local service has this name"));
                continue;
            }
            if let Some(vip) = svc.vip
                && state.by_vip.contains_key(&vip)
            {
                skipped.push(format!("{key}: virtual IP {vip} is taken"));
                continue;
            }
            if let Some(vip) = svc.vip {
                state.by_vip.insert(vip, key.clone());
            }
            for e in &svc.endpoints {
                state.by_pod.entry(e.ip).or_insert_with(|| key.clone());
            }
            state.services.insert(key, svc);
        }
        state.policy = self.policy.for_state(&state);
        (state, skipped)
    }

    /// The service whose virtual IP is `ip`.
    pub fn service_by_vip(&self, ip: &IpAddr) -> Option<&SvcKey> {
        self.by_vip.get(ip)
    }

    /// Resolves a Destination path (`host:port`).
    pub fn target(&self, path: &str) -> Result<Target, Invalid> {
        let (host, port) = path
            .rsplit_once(':')
            .ok_or_else(|| format!("{path:?} is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{path:?} has no valid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            if let Some(key) = self.by_vip.get(&ip) {
                return Ok(Target::Service(key.clone(), port));
            }
            if let Some(key) = self.by_pod.get(&ip) {
                return Ok(Target::Pod(key.clone(), ip, port));
            }
            return Ok(Target::Unknown);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".svc.{}", self.cluster_domain);
        let Some(rest) = host.strip_suffix(&suffix) else {
            return Ok(Target::Unknown);
        };
        let Some((name, namespace)) = rest.split_once('.') else {
            return Ok(Target::Unknown);
        };
        let key = SvcKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        Ok(match self.services.contains_key(&key) {
            true => Target::Service(key, port),
            false => Target::Unknown,
        })
    }

    /// The endpoints `target` stands for, keyed by address. `None` if it is unknown.
    pub fn endpoints(&self, target: &Target) -> Option<BTreeMap<SocketAddr, pb::WeightedAddr>> {
        let (key, port, only) = match target {
            Target::Service(k, p) => (k, *p, None),
            Target::Pod(k, ip, p) => (k, *p, Some(*ip)),
            Target::Unknown => return None,
        };
        let svc = self.services.get(key)?;
        let port = svc.port(port);
        let target_port = if only.is_some() {
            port.port
        } else {
            port.target_port
        };
        Some(
            svc.endpoints
                .iter()
                .filter(|e| only.is_none_or(|ip| e.ip == ip))
                .map(|e| {
                    let addr = SocketAddr::new(e.ip, e.port.unwrap_or(target_port));
                    (addr, self.weighted_addr(svc, e, addr, &port))
                })
                .collect(),
        )
    }

    /// The identity a meshed endpoint of `svc` presents.
    pub fn endpoint_identity(&self, svc: &Service, e: &Endpoint) -> String {
        e.identity
            .clone()
            .unwrap_or_else(|| self.identity(&e.service_account, &svc.key.namespace))
    }

    fn identity(&self, sa: &str, ns: &str) -> String {
        format!(
            "{sa}.{ns}.serviceaccount.identity.{}.{}",
            self.control_plane_ns, self.trust_domain
        )
    }

    fn weighted_addr(
        &self,
        svc: &Service,
        e: &Endpoint,
        addr: SocketAddr,
        port: &Port,
    ) -> pb::WeightedAddr {
        let opaque_port = port.opaque;
        use pb::protocol_hint::{H2, Opaque, OpaqueTransport, Protocol as P};
        let mut labels: HashMap<String, String> = e.labels.clone().into_iter().collect();
        labels.insert("pod".into(), e.pod.clone());
        labels.insert("namespace".into(), svc.key.namespace.clone());
        labels.insert("service".into(), svc.key.name.clone());
        labels.insert("serviceaccount".into(), e.service_account.clone());
        let meshed = e.protocol != Protocol::None;
        let opaque = opaque_port || e.protocol == Protocol::Opaque;
        let tls_identity = meshed.then(|| {
            let name = self.endpoint_identity(svc, e);
            pb::TlsIdentity {
                strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
                    pb::tls_identity::DnsLikeIdentity { name: name.clone() },
                )),
                server_name: Some(pb::tls_identity::DnsLikeIdentity { name }),
            }
        });
        let protocol_hint = meshed.then(|| pb::ProtocolHint {
            protocol: Some(if opaque {
                P::Opaque(Opaque {})
            } else {
                P::H2(H2 {})
            }),
            // An explicit pod has no iptables to redirect an app port to its proxy: every port
            // is reached through the inbound port, HTTP still hinted h2 (the transport header
            // then names the session protocol). Transport-header mode does the same for every
            // meshed pod.
            opaque_transport: (opaque || e.explicit || self.transport_header).then_some(
                OpaqueTransport {
                    inbound_port: u32::from(INBOUND_PORT),
                },
            ),
        });
        pb::WeightedAddr {
            addr: Some(addr.into()),
            weight: e.weight,
            metric_labels: labels,
            tls_identity,
            protocol_hint,
            // A gateway is asked for the service by its own name and the port asked for here.
            authority_override: e
                .authority_override
                .as_ref()
                .map(|a| pb::AuthorityOverride {
                    authority_override: format!("{a}:{}", port.port),
                }),
            ..Default::default()
        }
    }

    /// The profile for `target`: routes and budget of its service, `opaque_protocol` for its
    /// port, and the `endpoint` itself for a pod target.
    pub fn profile(&self, target: &Target) -> pb::DestinationProfile {
        let (key, port) = match target {
            Target::Service(k, p) | Target::Pod(k, _, p) => (k, *p),
            Target::Unknown => return pb::DestinationProfile::default(),
        };
        let Some(svc) = self.services.get(key) else {
            return pb::DestinationProfile::default();
        };
        let mut profile = svc.profile.to_proto();
        profile.fully_qualified_name =
            format!("{}.{}.svc.{}", key.name, key.namespace, self.cluster_domain);
        profile.opaque_protocol = svc.port(port).opaque;
        if let Target::Pod(..) = target {
            profile.endpoint = self.endpoints(target).and_then(|m| m.into_values().next());
        }
        profile
    }
}

fn validate(r: &RawService) -> Result<Service, Invalid> {
    let key = SvcKey {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    };
    let ctx = |field: &str| format!("service {key}: {field}");
    for label in [&r.name, &r.namespace] {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(Invalid::from(ctx(&format!(
                "{label:?} is not a valid name (lowercase DNS label)"
            ))));
        }
    }
    let vip = match &r.cluster_ip {
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| ctx(&format!("cluster_ip {ip:?} is not an IP")))?,
        ),
        None => None,
    };
    if r.ports.is_empty() {
        return Err(Invalid::from(ctx("ports: at least one port")));
    }
    let mut ports = Vec::new();
    for p in &r.ports {
        if p.port == 0 || p.target_port == Some(0) {
            return Err(Invalid::from(ctx("ports: port 0")));
        }
        if ports.iter().any(|q: &Port| q.port == p.port) {
            return Err(Invalid::from(ctx(&format!(
                "ports: {} listed twice",
                p.port
            ))));
        }
        if let Some(name) = &p.name {
            check_port_name(&ctx("ports: name"), name)?;
            if ports.iter().any(|q: &Port| q.name.as_ref() == Some(name)) {
                return Err(Invalid::from(ctx(&format!(
                    "ports: name {name} used twice"
                ))));
            }
        }
        ports.push(Port {
            port: p.port,
            target_port: p.target_port.unwrap_or(p.port),
            opaque: p.opaque,
            name: p.name.clone(),
        });
    }
    let mut endpoints = Vec::new();
    for e in &r.endpoints {
        let ip: IpAddr =
            e.ip.parse()
                .map_err(|_| ctx(&format!("endpoint {}: ip {:?} is not an IP", e.pod, e.ip)))?;
        let protocol = match e.protocol.as_deref() {
            None | Some("h2") => Protocol::H2,
            Some("opaque") => Protocol::Opaque,
            Some("none") => Protocol::None,
            Some(other) => {
                return Err(Invalid::from(ctx(&format!(
                    "endpoint {}: protocol {other:?} is not h2, opaque or none",
                    e.pod
                ))));
            }
        };
        if e.explicit && protocol == Protocol::None {
            return Err(Invalid::from(ctx(&format!(
                "endpoint {}: explicit = true needs a meshed endpoint (protocol h2 or opaque)",
                e.pod
            ))));
        }
        if endpoints.iter().any(|x: &Endpoint| x.ip == ip) {
            return Err(Invalid::from(ctx(&format!(
                "endpoint ip {ip} listed twice"
            ))));
        }
        endpoints.push(Endpoint {
            pod: e.pod.clone(),
            ip,
            service_account: e.service_account.clone(),
            protocol,
            labels: e.labels.clone(),
            weight: e.weight.unwrap_or(DEFAULT_WEIGHT),
            explicit: e.explicit,
            identity: None,
            authority_override: None,
            port: None,
        });
    }
    Ok(Service {
        key: key.clone(),
        vip,
        ports,
        endpoints,
        profile: Profile::validate(&r.routes, r.retry_budget.as_ref(), &r.dst_overrides)
            .map_err(|e| ctx(&e.0))?,
        export: r.export,
        export_mode: match r.export_mode.as_deref() {
            None => None,
            Some("flat") => Some("flat"),
            Some("gateway") => Some("gateway"),
            Some(other) => {
                return Err(Invalid::from(ctx(&format!(
                    "export_mode {other:?} is not flat or gateway"
                ))));
            }
        },
        failure_accrual: r
            .failure_accrual
            .as_ref()
            .map(|f| failure_accrual(f).map_err(|e| ctx(&format!("failure_accrual.{}", e.0))))
            .transpose()?,
    })
}

/// Linkerd's defaults: 7 failures, 1 s doubling to 60 s, jitter 0.5.
fn failure_accrual(f: &RawFailureAccrual) -> Result<FailureAccrual, Invalid> {
    if f.kind != "consecutive" {
        return Err(Invalid(format!("kind: {:?} is not consecutive", f.kind)));
    }
    let max_failures = f.max_failures.unwrap_or(7);
    if max_failures == 0 {
        return Err(Invalid::from("max_failures: at least 1"));
    }
    let min_penalty = duration("min_penalty", f.min_penalty.as_deref().unwrap_or("1s"))?;
    let max_penalty = duration("max_penalty", f.max_penalty.as_deref().unwrap_or("60s"))?;
    if max_penalty.is_zero() || min_penalty > max_penalty {
        return Err(Invalid::from(
            "max_penalty: must be more than 0 and at least min_penalty",
        ));
    }
    let jitter_ratio = f.jitter_ratio.unwrap_or(0.5);
    if !(0.0..=100.0).contains(&jitter_ratio) {
        return Err(Invalid::from("jitter_ratio: must be between 0 and 100"));
    }
    Ok(FailureAccrual {
        max_failures,
        min_penalty,
        max_penalty,
        jitter_ratio,
    })
}

/// Parses a duration field of the config.
pub fn duration(field: &str, s: &str) -> Result<Duration, Invalid> {
    remora_runtime::duration::parse_duration(s).map_err(|e| Invalid(format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(toml_text: &str) -> Result<ClusterState, Invalid> {
        #[derive(Deserialize)]
        struct Raw {
            services: Vec<RawService>,
        }
        let raw: Raw = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        ClusterState::build(&raw.services, "cluster.local", "east.example", "linkerd")
    }

    const WEB: &str = r#"
[[services]]
name = "web"
namespace = "shop"
ports = [{ port = 8080 }, { port = 3306, opaque = true }]
[[services.endpoints]]
pod = "web-0"
ip = "127.0.10.2"
explicit = true
[[services.endpoints]]
pod = "web-1"
ip = "127.0.10.3"
"#;

    fn hint(s: &ClusterState, port: u16, ip: [u8; 4]) -> pb::ProtocolHint {
        let target = s
            .target(&format!("web.shop.svc.cluster.local:{port}"))
            .unwrap();
        let eps = s.endpoints(&target).unwrap();
        eps[&SocketAddr::from((ip, port))].protocol_hint.unwrap()
    }

    #[test]
    fn explicit_pods_get_opaque_transport_on_every_port() {
        use pb::protocol_hint::Protocol as P;
        let s = state(WEB).unwrap();
        // HTTP port: still hinted h2, but through the inbound port for the explicit pod only.
        let explicit = hint(&s, 8080, [127, 0, 10, 2]);
        assert!(matches!(explicit.protocol, Some(P::H2(_))));
        assert_eq!(explicit.opaque_transport.unwrap().inbound_port, 4143);
        let transparent = hint(&s, 8080, [127, 0, 10, 3]);
        assert!(matches!(transparent.protocol, Some(P::H2(_))));
        assert!(transparent.opaque_transport.is_none());
        // An opaque port is opaque transport for both.
        for ip in [[127, 0, 10, 2], [127, 0, 10, 3]] {
            let h = hint(&s, 3306, ip);
            assert!(matches!(h.protocol, Some(P::Opaque(_))));
            assert_eq!(h.opaque_transport.unwrap().inbound_port, 4143);
        }
    }

    #[test]
    fn transport_header_mode_sends_every_meshed_port_through_the_inbound_port() {
        use pb::protocol_hint::Protocol as P;
        let mut s = state(WEB).unwrap();
        s.transport_header = true;
        for ip in [[127, 0, 10, 2], [127, 0, 10, 3]] {
            let h = hint(&s, 8080, ip);
            assert!(
                matches!(h.protocol, Some(P::H2(_))),
                "HTTP is still hinted h2"
            );
            assert_eq!(h.opaque_transport.unwrap().inbound_port, 4143);
        }
    }

    #[test]
    fn explicit_needs_a_meshed_endpoint() {
        let err = state(&WEB.replace("explicit = true", "explicit = true\nprotocol = \"none\""))
            .unwrap_err();
        assert!(
            err.contains("explicit = true needs a meshed endpoint"),
            "{err}"
        );
    }
}
