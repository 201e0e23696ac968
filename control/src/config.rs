//! `remora control`'s config file (TOML): one cluster's control plane.
//!
//! ```toml
//! [cluster]
//! name = "east"
//! trust_domain = "east.example"
//! control_plane_namespace = "linkerd"   # optional, default "linkerd"
//!
//! [server]
//! addr = "127.0.0.1:8086"               # gRPC; TLS whenever not loopback
//! admin_addr = "127.0.0.1:9990"         # /live, /ready, /metrics
//!
//! [identity]
//! trust_anchors = "root.pem"            # paths are relative to this file
//! issuer_cert = "issuer.pem"
//! issuer_key = "issuer.key"
//! token_key = "token.key"             # Remora's tokens (`remora control token`)
//! cert_lifetime = "24h"                 # optional, default 24h
//! token_auth = ["remora", "kubernetes"] # optional, default ["remora"]
//!
//! [identity.kubernetes]                 # with token_auth "kubernetes": see `sa_token`
//! jwks = "sa-keys.json"                 # the service-account issuer's public keys
//! issuer = "https://kubernetes.default.svc.cluster.local"   # optional: checked when set
//! audience = "identity.l5d.io"          # optional, the default
//!
//! [[services]]                          # what discovery serves: see `cluster` and `profile`
//!
//! [policy]                              # the policy APIs: see `policy`
//! ```
//!
//! The file is parsed into [`RawFile`] (what serde reads: [`RawConfig`] and the `[policy]`
//! section) and validated into [`Config`] (typed, paths resolved, policies compiled), so every
//! later stage works with checked values.

use crate::error::Invalid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use remora_identity::{Name, WorkloadId};
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterState, RawService};
use crate::policy::{Policies, RawPolicy};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub cluster: RawCluster,
    #[serde(default)]
    pub server: RawServer,
    pub identity: RawIdentity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicluster: Option<RawMulticluster>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<RawLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<RawService>,
}

impl RawConfig {
    /// The config as a file's text: what the demo, the tests and the benchmarks write, built as
    /// values instead of text.
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, bool, table or array of tables: serialising cannot
        // fail.
        toml::to_string(self).unwrap_or_default()
    }
}

/// The whole file as serde reads it: [`RawConfig`], the `[policy]` section and how Certify
/// authenticates (`identity.token_auth`, `[identity.kubernetes]`). (Those sit beside
/// `RawConfig` rather than in it, so code that builds a `RawConfig` as a value keeps
/// compiling.)
#[derive(Clone, Debug)]
pub struct RawFile {
    pub config: RawConfig,
    pub policy: RawPolicy,
    pub auth: RawTokenAuth,
}

/// How Certify authenticates workloads: `identity.token_auth` and `[identity.kubernetes]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct RawTokenAuth {
    /// `remora` (tokens from `remora control token`) and/or `kubernetes` (projected
    /// service-account tokens); none: `["remora"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_auth: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<RawKubernetesAuth>,
}

impl RawTokenAuth {
    fn is_default(&self) -> bool {
        *self == RawTokenAuth::default()
    }
}

/// `[identity.kubernetes]`: offline verification of service-account tokens.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetesAuth {
    /// The issuer's public keys (JWKS, as `/openid/v1/jwks` serves them); reloaded on change.
    pub jwks: PathBuf,
    /// The tokens' `iss`, checked when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Must be among the tokens' `aud`; default `identity.l5d.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// The `[identity]` table as the file has it: [`RawIdentity`]'s keys and [`RawTokenAuth`]'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityKeys {
    trust_anchors: PathBuf,
    issuer_cert: PathBuf,
    issuer_key: PathBuf,
    #[serde(default)]
    token_key: PathBuf,
    #[serde(default = "default_lifetime")]
    cert_lifetime: String,
    #[serde(default)]
    token_auth: Option<Vec<String>>,
    #[serde(default)]
    kubernetes: Option<RawKubernetesAuth>,
}

/// The file's top-level keys: [`RawConfig`]'s and `policy`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    cluster: RawCluster,
    #[serde(default)]
    server: RawServer,
    identity: IdentityKeys,
    #[serde(default)]
    multicluster: Option<RawMulticluster>,
    #[serde(default)]
    links: Vec<RawLink>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    policy: Option<RawPolicy>,
}

impl RawFile {
    /// Reads a config file's text.
    pub fn from_toml(text: &str) -> Result<RawFile, Invalid> {
        let k: FileKeys = toml::from_str(text).map_err(|e| e.to_string())?;
        let id = k.identity;
        Ok(RawFile {
            config: RawConfig {
                cluster: k.cluster,
                server: k.server,
                identity: RawIdentity {
                    trust_anchors: id.trust_anchors,
                    issuer_cert: id.issuer_cert,
                    issuer_key: id.issuer_key,
                    token_key: id.token_key,
                    cert_lifetime: id.cert_lifetime,
                },
                multicluster: k.multicluster,
                links: k.links,
                services: k.services,
            },
            policy: k.policy.unwrap_or_default(),
            auth: RawTokenAuth {
                token_auth: id.token_auth,
                kubernetes: id.kubernetes,
            },
        })
    }

    /// The config as a file's text.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Section<'a> {
            policy: &'a RawPolicy,
        }
        let mut text = if self.auth.is_default() {
            self.config.to_toml()
        } else {
            // The auth keys go into the `[identity]` table.
            let value = toml::Value::try_from(&self.config).and_then(|mut v| {
                if let Some(id) = v.get_mut("identity").and_then(|i| i.as_table_mut())
                    && let toml::Value::Table(auth) = toml::Value::try_from(&self.auth)?
                {
                    id.extend(auth);
                }
                Ok(v)
            });
            value
                .ok()
                .and_then(|v| toml::to_string(&v).ok())
                .unwrap_or_default()
        };
        if !self.policy.is_empty() {
            // The `[policy]` table and its arrays of tables come after every other table, so
            // the two texts join into one document.
            text.push('\n');
            text.push_str(
                &toml::to_string(&Section {
                    policy: &self.policy,
                })
                .unwrap_or_default(),
            );
        }
        text
    }
}

/// What other clusters need to reach this one, and how mirrored services are addressed.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMulticluster {
    /// Where linked control planes reach this one (`server.addr` as seen from outside).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_addr: Option<String>,
    /// This cluster's gateway, for gateway-mode links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_identity: Option<String>,
    /// Virtual IPs for mirrored services are allocated from this IPv4 CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_cidr: Option<String>,
    /// How long mirrored endpoints outlive an unreachable remote control plane.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_grace: Option<String>,
}

/// A linked remote cluster (what `remora link` prints).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub cluster: String,
    pub trust_domain: String,
    pub control_addr: String,
    pub control_identity: String,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_identity: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: String,
    pub trust_domain: String,
    #[serde(default = "default_cp_ns")]
    pub control_plane_namespace: String,
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// How meshed HTTP reaches a pod (Linkerd's `proxy.outboundTransportMode`):
    /// `transport-header` (every meshed HTTP port through the pod's inbound port 4143 with the
    /// transport header naming the session protocol, as Linkerd's controller hints it since
    /// 2025) or `legacy` (HTTP to the app port, detected there).
    #[serde(default = "default_transport_mode")]
    pub outbound_transport_mode: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_addr")]
    pub addr: String,
    #[serde(default = "default_admin")]
    pub admin_addr: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            addr: default_addr(),
            admin_addr: default_admin(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub trust_anchors: PathBuf,
    pub issuer_cert: PathBuf,
    pub issuer_key: PathBuf,
    /// Remora's token key; needed when `token_auth` includes `remora` (the default).
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub token_key: PathBuf,
    #[serde(default = "default_lifetime")]
    pub cert_lifetime: String,
}

fn path_is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

fn default_cp_ns() -> String {
    "linkerd".into()
}
fn default_cluster_domain() -> String {
    "cluster.local".into()
}
pub fn default_transport_mode() -> String {
    "transport-header".into()
}
fn default_addr() -> String {
    "0.0.0.0:8086".into()
}
fn default_admin() -> String {
    "127.0.0.1:9990".into()
}
fn default_lifetime() -> String {
    "24h".into()
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub cluster: String,
    pub trust_domain: String,
    pub control_plane_ns: String,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub trust_anchors: PathBuf,
    pub issuer_cert: PathBuf,
    pub issuer_key: PathBuf,
    /// Remora's token key: set when Certify accepts Remora's tokens (`token_auth` "remora").
    pub token_key: Option<PathBuf>,
    /// Set when Certify accepts Kubernetes service-account tokens (`token_auth` "kubernetes").
    pub kubernetes: Option<KubernetesAuth>,
    pub cert_lifetime: Duration,
    pub cluster_domain: String,
    /// The services discovery serves, validated.
    pub state: Arc<ClusterState>,
    pub multicluster: Multicluster,
    pub links: Vec<Link>,
}

/// This cluster's multicluster settings.
#[derive(Clone, Debug)]
pub struct Multicluster {
    pub advertised_addr: Option<SocketAddr>,
    pub gateway: Option<(SocketAddr, Name)>,
    /// The network and prefix length mirrored services' virtual IPs come from.
    pub mirror_cidr: Option<(std::net::Ipv4Addr, u8)>,
    pub link_grace: Duration,
}

/// How a linked cluster's pods are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// One network: straight to the remote pods, keeping the caller's identity.
    Flat,
    /// Through the remote cluster's gateway.
    Gateway,
}

impl LinkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkMode::Flat => "flat",
            LinkMode::Gateway => "gateway",
        }
    }
}

/// A linked remote cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub cluster: String,
    pub trust_domain: String,
    pub control_addr: SocketAddr,
    pub control_identity: Name,
    pub mode: LinkMode,
    pub gateway: Option<(SocketAddr, Name)>,
}

/// `[identity.kubernetes]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesAuth {
    pub jwks: PathBuf,
    pub issuer: Option<String>,
    pub audience: String,
}

/// `identity.token_auth` and `[identity.kubernetes]`: Remora's token key (when "remora") and
/// the Kubernetes settings (when "kubernetes").
fn parse_token_auth(
    auth: RawTokenAuth,
    token_key: PathBuf,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<(Option<PathBuf>, Option<KubernetesAuth>), Invalid> {
    let kinds = auth.token_auth.unwrap_or_else(|| vec!["remora".into()]);
    if kinds.is_empty() {
        return Err(Invalid::from(
            "identity.token_auth: name at least one of \"remora\" and \"kubernetes\"",
        ));
    }
    let (mut remora, mut kubernetes) = (false, false);
    for k in &kinds {
        let seen = match k.as_str() {
            "remora" => &mut remora,
            "kubernetes" => &mut kubernetes,
            other => {
                return Err(Invalid(format!(
                    "identity.token_auth: {other:?} is neither \"remora\" nor \"kubernetes\""
                )));
            }
        };
        if *seen {
            return Err(Invalid(format!("identity.token_auth: {k:?} named twice")));
        }
        *seen = true;
    }
    let kubernetes = match (kubernetes, auth.kubernetes) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(Invalid::from(
                "identity.kubernetes is set but identity.token_auth does not include \"kubernetes\"",
            ));
        }
        (true, None) => {
            return Err(Invalid::from(
                "identity.token_auth includes \"kubernetes\": [identity.kubernetes] must name \
                 the service-account keys (jwks)",
            ));
        }
        (true, Some(k)) => {
            if path_is_empty(&k.jwks) {
                return Err(Invalid::from("identity.kubernetes.jwks: required"));
            }
            let text = |field: &str, v: Option<String>| match v {
                Some(v) if v.trim().is_empty() || v.trim() != v => Err(Invalid(format!(
                    "identity.kubernetes.{field}: {v:?} is empty or has surrounding spaces"
                ))),
                v => Ok(v),
            };
            Some(KubernetesAuth {
                jwks: resolve(k.jwks),
                issuer: text("issuer", k.issuer)?,
                audience: text("audience", k.audience)?
                    .unwrap_or_else(|| crate::sa_token::DEFAULT_AUDIENCE.to_string()),
            })
        }
    };
    let token_key = match (remora, path_is_empty(&token_key)) {
        (true, true) => {
            return Err(Invalid::from(
                "identity.token_key: required when identity.token_auth includes \"remora\"",
            ));
        }
        (true, false) => Some(resolve(token_key)),
        (false, _) => None,
    };
    Ok((token_key, kubernetes))
}

/// The default time mirrored endpoints outlive an unreachable remote control plane.
pub const DEFAULT_LINK_GRACE: Duration = Duration::from_secs(300);

fn parse_cidr(field: &str, v: &str) -> Result<(std::net::Ipv4Addr, u8), Invalid> {
    let bad = || format!("{field}: {v:?} is not an IPv4 CIDR (e.g. 10.97.0.0/16)");
    let (ip, len) = v.split_once('/').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(Invalid::from(format!(
            "{field}: prefix length must be 8 to 30"
        )));
    }
    let mask = u32::MAX << (32 - len);
    Ok((std::net::Ipv4Addr::from(u32::from(ip) & mask), len))
}

fn parse_multicluster(raw: Option<RawMulticluster>) -> Result<Multicluster, Invalid> {
    let raw = raw.unwrap_or(RawMulticluster {
        advertised_addr: None,
        gateway_addr: None,
        gateway_identity: None,
        mirror_cidr: None,
        link_grace: None,
    });
    let addr = |field: &str, v: &str| {
        v.parse::<SocketAddr>()
            .map_err(|_| format!("{field}: {v:?} is not an IP:port address"))
    };
    let gateway = match (raw.gateway_addr, raw.gateway_identity) {
        (None, None) => None,
        (Some(a), Some(id)) => Some((
            addr("multicluster.gateway_addr", &a)?,
            id.parse::<Name>()
                .map_err(|e| format!("multicluster.gateway_identity: {e}"))?,
        )),
        _ => {
            return Err(Invalid::from(
                "multicluster.gateway_addr and gateway_identity go together".to_string(),
            ));
        }
    };
    Ok(Multicluster {
        advertised_addr: raw
            .advertised_addr
            .map(|a| addr("multicluster.advertised_addr", &a))
            .transpose()?,
        gateway,
        mirror_cidr: raw
            .mirror_cidr
            .map(|c| parse_cidr("multicluster.mirror_cidr", &c))
            .transpose()?,
        link_grace: match raw.link_grace {
            Some(g) => remora_runtime::duration::parse_duration(&g)
                .map_err(|e| format!("multicluster.link_grace: {e}"))?,
            None => DEFAULT_LINK_GRACE,
        },
    })
}

fn parse_link(raw: RawLink, local: &str) -> Result<Link, Invalid> {
    let field = |f: &str| format!("links[{}].{f}", raw.cluster);
    let cluster: Name = raw
        .cluster
        .parse()
        .map_err(|e| format!("{}: {e}", field("cluster")))?;
    if cluster.as_str() == local || cluster.as_str().contains('.') {
        return Err(Invalid::from(format!(
            "{}: must be a single label naming another cluster",
            field("cluster")
        )));
    }
    let name = |f: &str, v: &str| v.parse::<Name>().map_err(|e| format!("{}: {e}", field(f)));
    let addr = |f: &str, v: &str| {
        v.parse::<SocketAddr>()
            .map_err(|_| format!("{}: {v:?} is not an IP:port address", field(f)))
    };
    let mode = match raw.mode.as_str() {
        "flat" => LinkMode::Flat,
        "gateway" => LinkMode::Gateway,
        other => {
            return Err(Invalid::from(format!(
                "{}: {other:?} is not flat or gateway",
                field("mode")
            )));
        }
    };
    let gateway = match (raw.gateway_addr, raw.gateway_identity) {
        (None, None) => None,
        (Some(a), Some(id)) => Some((addr("gateway_addr", &a)?, name("gateway_identity", &id)?)),
        _ => {
            return Err(Invalid::from(format!(
                "{}: gateway_addr and gateway_identity go together",
                field("gateway")
            )));
        }
    };
    if mode == LinkMode::Gateway && gateway.is_none() {
        return Err(Invalid::from(format!(
            "{}: a gateway link needs gateway_addr and gateway_identity",
            field("mode")
        )));
    }
    Ok(Link {
        cluster: cluster.to_string(),
        trust_domain: name("trust_domain", &raw.trust_domain)?.to_string(),
        control_addr: addr("control_addr", &raw.control_addr)?,
        control_identity: name("control_identity", &raw.control_identity)?,
        mode,
        gateway,
    })
}

/// A config file that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |reason: Invalid| ConfigError {
            path: path.display().to_string(),
            reason: reason.0,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err(Invalid(format!("cannot read: {e}"))))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(err)
    }

    /// Parses and validates `text`; relative paths are resolved against `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Config, Invalid> {
        let RawFile {
            config: raw,
            policy,
            auth,
        } = RawFile::from_toml(text)?;
        let cluster = raw.cluster;
        let td: Name = cluster
            .trust_domain
            .parse()
            .map_err(|e| format!("cluster.trust_domain: {e}"))?;
        let cp: Name = cluster
            .control_plane_namespace
            .parse()
            .map_err(|e| format!("cluster.control_plane_namespace: {e}"))?;
        if cp.as_str().contains('.') {
            return Err(Invalid::from(
                "cluster.control_plane_namespace must be a single label",
            ));
        }
        let name: Name = cluster
            .name
            .parse()
            .map_err(|e| format!("cluster.name: {e}"))?;
        let addr = |field: &str, v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|_| format!("{field}: {v:?} is not an IP:port address"))
        };
        let domain: Name = cluster
            .cluster_domain
            .parse()
            .map_err(|e| format!("cluster.cluster_domain: {e}"))?;
        let mut state =
            ClusterState::build(&raw.services, domain.as_str(), td.as_str(), cp.as_str())?;
        state.transport_header = match cluster.outbound_transport_mode.as_str() {
            "transport-header" => true,
            "legacy" => false,
            other => {
                return Err(Invalid::from(format!(
                    "cluster.outbound_transport_mode: {other:?} is neither \"transport-header\" \
                     nor \"legacy\""
                )));
            }
        };
        state.policy = Policies::compile(&policy, &state)?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
        let id = raw.identity;
        let (token_key, kubernetes) = parse_token_auth(auth, id.token_key, resolve)?;
        let multicluster = parse_multicluster(raw.multicluster)?;
        let mut links = Vec::new();
        for l in raw.links {
            let link = parse_link(l, name.as_str())?;
            if links.iter().any(|x: &Link| x.cluster == link.cluster) {
                return Err(Invalid::from(format!(
                    "links: cluster {} is linked twice",
                    link.cluster
                )));
            }
            links.push(link);
        }
        if !links.is_empty() && multicluster.mirror_cidr.is_none() {
            return Err(Invalid::from(
                "links need multicluster.mirror_cidr (virtual IPs for mirrored services)",
            ));
        }
        Ok(Config {
            cluster: name.to_string(),
            trust_domain: td.to_string(),
            control_plane_ns: cp.to_string(),
            addr: addr("server.addr", &raw.server.addr)?,
            admin_addr: addr("server.admin_addr", &raw.server.admin_addr)?,
            cert_lifetime: remora_runtime::duration::parse_duration(&id.cert_lifetime)
                .map_err(|e| format!("identity.cert_lifetime: {e}"))
                .and_then(|d| {
                    if d < Duration::from_secs(10) {
                        Err("identity.cert_lifetime: at least 10s".to_string())
                    } else {
                        Ok(d)
                    }
                })?,
            trust_anchors: resolve(id.trust_anchors),
            issuer_cert: resolve(id.issuer_cert),
            issuer_key: resolve(id.issuer_key),
            token_key,
            kubernetes,
            cluster_domain: domain.to_string(),
            state: Arc::new(state),
            multicluster,
            links,
        })
    }

    /// Whether `name` is an identity this control plane may issue: a workload of our
    /// control-plane namespace's form under our trust domain.
    pub fn owns(&self, name: &Name) -> bool {
        match WorkloadId::try_from(name.clone()) {
            Ok(id) => {
                id.trust_domain == self.trust_domain && id.control_plane_ns == self.control_plane_ns
            }
            Err(_) => false,
        }
    }

    /// The control plane's own identity, which its TLS server presents.
    pub fn control_identity(&self) -> Name {
        WorkloadId {
            service_account: "remora-control".into(),
            namespace: self.control_plane_ns.clone(),
            control_plane_ns: self.control_plane_ns.clone(),
            trust_domain: self.trust_domain.clone(),
        }
        .name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/control.toml");

    #[test]
    fn the_example_parses() {
        let c = Config::parse(EXAMPLE, Path::new("/etc/remora")).unwrap();
        assert_eq!(c.cluster, "east");
        assert_eq!(c.trust_domain, "east.example");
        assert_eq!(c.control_plane_ns, "linkerd");
        assert_eq!(
            c.issuer_cert,
            Path::new("/etc/remora/certs/east/issuer.pem")
        );
        assert_eq!(c.cert_lifetime, Duration::from_secs(86_400));
        assert_eq!(
            c.control_identity().as_str(),
            "remora-control.linkerd.serviceaccount.identity.linkerd.east.example"
        );
        assert!(
            c.owns(
                &"web.shop.serviceaccount.identity.linkerd.east.example"
                    .parse()
                    .unwrap()
            )
        );
        assert!(
            !c.owns(
                &"web.shop.serviceaccount.identity.linkerd.west.example"
                    .parse()
                    .unwrap()
            )
        );
        assert!(
            !c.owns(
                &"web.shop.serviceaccount.identity.other.east.example"
                    .parse()
                    .unwrap()
            )
        );
    }

    #[test]
    fn a_config_written_as_values_reads_back_the_same() {
        let raw = RawFile::from_toml(EXAMPLE).unwrap();
        let text = raw.to_toml();
        let again = RawFile::from_toml(&text).unwrap();
        assert_eq!(again.to_toml(), text, "writing is stable");
        let a = Config::parse(EXAMPLE, Path::new("/etc/remora")).unwrap();
        let b = Config::parse(&text, Path::new("/etc/remora")).unwrap();
        assert_eq!(a.links, b.links);
        assert_eq!(
            (&a.cluster, &a.trust_domain, a.addr, a.cert_lifetime),
            (&b.cluster, &b.trust_domain, b.addr, b.cert_lifetime)
        );
        let services = |c: &Config| {
            let mut v: Vec<String> = c
                .state
                .services
                .values()
                .map(|s| format!("{}.{} {:?}", s.key.name, s.key.namespace, s.endpoints))
                .collect();
            v.sort();
            v
        };
        assert_eq!(services(&a), services(&b), "{text}");
    }

    #[test]
    fn token_auth_is_validated_and_written_back() {
        let base = EXAMPLE.replace("token_key = ", "# token_key = ");
        let with = |extra: &str| {
            let text = base.replacen("[identity]\n", &format!("[identity]\n{extra}\n"), 1);
            Config::parse(&text, Path::new("/etc/remora"))
        };
        // Kubernetes tokens only: no token key needed; the audience defaults to Linkerd's.
        let c = with(
            "token_auth = [\"kubernetes\"]\nkubernetes = { jwks = \"sa-keys.json\", issuer = \"https://k8s.example\" }",
        )
        .unwrap();
        assert_eq!(c.token_key, None);
        let k = c.kubernetes.unwrap();
        assert_eq!(k.jwks, Path::new("/etc/remora/sa-keys.json"));
        assert_eq!(k.issuer.as_deref(), Some("https://k8s.example"));
        assert_eq!(k.audience, "identity.l5d.io");
        for (extra, field) in [
            ("token_auth = []", "token_auth"),
            ("token_auth = [\"oidc\"]", "token_auth"),
            ("token_auth = [\"kubernetes\", \"kubernetes\"]", "twice"),
            ("token_auth = [\"remora\"]", "token_key"),
            ("token_auth = [\"kubernetes\"]", "jwks"),
            (
                "token_auth = [\"kubernetes\"]\nkubernetes = { jwks = \"k.json\", audience = \"\" }",
                "audience",
            ),
            (
                "token_auth = [\"kubernetes\"]\nkubernetes = { jwks = \"k.json\", bogus = 1 }",
                "bogus",
            ),
            ("kubernetes = { jwks = \"k.json\" }", "does not include"),
        ] {
            let e = with(extra).unwrap_err();
            assert!(e.contains(field), "{extra}: {e}");
        }
        // The default, Remora's tokens, still needs the token key.
        assert!(with("").unwrap_err().contains("token_key"));
        let c = Config::parse(EXAMPLE, Path::new("/etc/remora")).unwrap();
        assert!(c.token_key.is_some() && c.kubernetes.is_none());

        // Written as values, read back the same.
        let text = base.replacen(
            "[identity]\n",
            "[identity]\ntoken_key = \"t.key\"\ntoken_auth = [\"remora\", \"kubernetes\"]\nkubernetes = { jwks = \"sa.json\" }\n",
            1,
        );
        let raw = RawFile::from_toml(&text).unwrap();
        assert_eq!(
            raw.auth.token_auth.as_deref(),
            Some(&["remora".to_string(), "kubernetes".to_string()][..])
        );
        let again = RawFile::from_toml(&raw.to_toml()).unwrap();
        assert_eq!(again.auth, raw.auth);
        assert_eq!(again.to_toml(), raw.to_toml());
        let c = Config::parse(&raw.to_toml(), Path::new("/etc/remora")).unwrap();
        assert_eq!(c.token_key.as_deref(), Some(Path::new("/etc/remora/t.key")));
        assert!(c.kubernetes.is_some());
    }

    #[test]
    fn errors_name_the_field() {
        let bad = EXAMPLE.replace("east.example", "not a domain");
        assert!(
            Config::parse(&bad, Path::new("."))
                .unwrap_err()
                .contains("trust_domain")
        );
        let bad = EXAMPLE.replace("\"24h\"", "\"forever\"");
        assert!(
            Config::parse(&bad, Path::new("."))
                .unwrap_err()
                .contains("cert_lifetime")
        );
        let bad = format!("{EXAMPLE}\n[bogus]\nx = 1\n");
        assert!(
            Config::parse(&bad, Path::new("."))
                .unwrap_err()
                .contains("bogus")
        );
    }
}
