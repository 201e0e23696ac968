//! The `[policy]` section validated: typed values, names resolved, everything a proxy would
//! refuse rejected here instead (with the section, item and field in the message:
//! `policy.servers[shop/web-http].port: ...`). Servers are validated here, authorizations and
//! rate limits in [`super::authz`], routes in [`super::routes`].
//!
//! References are checked against the config's own services and policy resources, so a typo
//! is an error rather than a policy that silently matches nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use ipnet::IpNet;

use super::authz::{authz_at, validate_authorization, validate_rate_limit};
use super::raw::{RawExpression, RawPodSelector, RawPolicy, RawPolicyServer, RawPortRef};
use super::routes::{GrpcRule, HttpRule, Route, validate_routes};
use crate::cluster::{ClusterState, duration};
use crate::error::Invalid;

/// Protocol detection's default timeout (Linkerd's controller's `DETECT_TIMEOUT`).
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Linkerd's chart's `clusterNetworks`.
pub const DEFAULT_CLUSTER_NETWORKS: [&str; 5] = [
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fd00::/8",
];
/// Linkerd's chart's `policyController.probeNetworks`.
pub const DEFAULT_PROBE_NETWORKS: [&str; 2] = ["0.0.0.0/0", "::/0"];
/// The most items of each kind (servers, authorizations, ...) one config may hold.
pub const MAX_ITEMS: usize = 10_000;

/// An error at `at` (a field's path in the config).
pub(super) fn bad(at: &str, msg: impl std::fmt::Display) -> Invalid {
    Invalid(format!("{at}: {msg}"))
}

/// Linkerd's default policies: what a port allows when no server selects it (and, as a
/// server's `access_policy`, beyond its authorizations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    AllUnauthenticated,
    AllAuthenticated,
    ClusterUnauthenticated,
    ClusterAuthenticated,
    Audit,
    Deny,
}

impl DefaultPolicy {
    pub fn parse(s: &str) -> Option<DefaultPolicy> {
        Some(match s {
            "all-unauthenticated" => DefaultPolicy::AllUnauthenticated,
            "all-authenticated" => DefaultPolicy::AllAuthenticated,
            "cluster-unauthenticated" => DefaultPolicy::ClusterUnauthenticated,
            "cluster-authenticated" => DefaultPolicy::ClusterAuthenticated,
            "audit" => DefaultPolicy::Audit,
            "deny" => DefaultPolicy::Deny,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Audit => "audit",
            DefaultPolicy::Deny => "deny",
        }
    }

    fn parse_field(at: &str, s: &str) -> Result<DefaultPolicy, Invalid> {
        DefaultPolicy::parse(s).ok_or_else(|| {
            bad(
                at,
                format!(
                    "{s:?} is not all-unauthenticated, all-authenticated, \
                     cluster-unauthenticated, cluster-authenticated, audit or deny"
                ),
            )
        })
    }
}

/// The `[policy]` section, validated.
#[derive(Clone, Debug)]
pub struct Model {
    pub default_policy: DefaultPolicy,
    pub cluster_networks: Vec<IpNet>,
    pub probe_networks: Vec<IpNet>,
    pub detect_timeout: Duration,
    pub allow_l5d_request_headers: bool,
    /// In config order: the first server that selects a pod's port wins.
    pub servers: Vec<Server>,
    pub authorizations: Vec<Authorization>,
    pub rate_limits: Vec<RateLimit>,
    pub http_routes: Vec<Route<HttpRule>>,
    pub grpc_routes: Vec<Route<GrpcRule>>,
}

impl Default for Model {
    fn default() -> Self {
        let nets = |list: &[&str]| list.iter().filter_map(|n| n.parse().ok()).collect();
        Model {
            default_policy: DefaultPolicy::AllUnauthenticated,
            cluster_networks: nets(&DEFAULT_CLUSTER_NETWORKS),
            probe_networks: nets(&DEFAULT_PROBE_NETWORKS),
            detect_timeout: DEFAULT_DETECT_TIMEOUT,
            allow_l5d_request_headers: false,
            servers: Vec::new(),
            authorizations: Vec::new(),
            rate_limits: Vec::new(),
            http_routes: Vec::new(),
            grpc_routes: Vec::new(),
        }
    }
}

/// A Linkerd `Server`.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    pub name: String,
    pub namespace: String,
    pub selector: Selector,
    pub port: PortRef,
    pub protocol: ServerProtocol,
    pub access_policy: DefaultPolicy,
}

/// Which pods a server selects; every criterion must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    pub labels: BTreeMap<String, String>,
    pub expressions: Vec<Expression>,
    pub pods: Option<BTreeSet<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expression {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Whether the pod named `pod` with `labels` is selected.
    pub fn selects(&self, pod: &str, labels: &BTreeMap<String, String>) -> bool {
        self.pods.as_ref().is_none_or(|p| p.contains(pod))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e {
                Expression::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Expression::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Expression::Exists(k) => labels.contains_key(k),
                Expression::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// A port by number, or by the name of a service port the pod serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// A server's `proxyProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerProtocol {
    Detect,
    Http1,
    Http2,
    Grpc,
    Opaque,
    Tls,
}

impl ServerProtocol {
    /// Whether the protocol carries HTTP routes (and a rate limit).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ServerProtocol::Detect | ServerProtocol::Http1 | ServerProtocol::Http2
        )
    }
}

/// An authorization.
#[derive(Clone, Debug, PartialEq)]
pub struct Authorization {
    pub name: String,
    pub namespace: String,
    pub target: AuthzTarget,
    /// Empty: the cluster's networks.
    pub networks: Vec<Network>,
    pub authn: Authn,
    pub audit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthzTarget {
    Server(String),
    HttpRoute(String),
    GrpcRoute(String),
    /// Every server of the namespace.
    Namespace,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub net: IpNet,
    pub except: Vec<IpNet>,
}

/// How a client must authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    Unauthenticated,
    TlsUnauthenticated,
    /// Exact identities, and suffixes as labels (`[]` is any identity).
    TlsAuthenticated {
        identities: Vec<String>,
        suffixes: Vec<Vec<String>>,
    },
}

/// An `HTTPLocalRateLimitPolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    pub name: String,
    pub namespace: String,
    pub server: String,
    pub total: Option<u32>,
    pub identity: Option<u32>,
    /// Requests per second, and the identities that share it.
    pub overrides: Vec<(u32, Vec<String>)>,
}

/// What validation needs to know besides the section itself.
#[derive(Debug)]
pub(super) struct Context<'a> {
    pub state: &'a ClusterState,
}

impl Context<'_> {
    /// The identity of service account `sa` of namespace `ns`.
    pub fn identity(&self, sa: &str, ns: &str) -> String {
        format!(
            "{sa}.{ns}.serviceaccount.identity.{}.{}",
            self.state.control_plane_ns, self.state.trust_domain
        )
    }
}

impl Model {
    /// Validates the `[policy]` section against the config's services (`state`).
    pub fn validate(raw: &RawPolicy, state: &ClusterState) -> Result<Model, Invalid> {
        let cx = Context { state };
        let mut model = Model::default();
        if let Some(p) = &raw.default_inbound_policy {
            model.default_policy = DefaultPolicy::parse_field("policy.default_inbound_policy", p)?;
        }
        if let Some(n) = &raw.cluster_networks {
            model.cluster_networks = networks("policy.cluster_networks", n)?;
        }
        if let Some(n) = &raw.probe_networks {
            model.probe_networks = networks("policy.probe_networks", n)?;
        }
        if model.cluster_networks.is_empty()
            && matches!(
                model.default_policy,
                DefaultPolicy::ClusterAuthenticated | DefaultPolicy::ClusterUnauthenticated
            )
        {
            return Err(bad(
                "policy.cluster_networks",
                "empty, but the default policy admits the cluster's networks",
            ));
        }
        if let Some(t) = &raw.detect_timeout {
            model.detect_timeout = duration("policy.detect_timeout", t)?;
            if model.detect_timeout.is_zero() {
                return Err(bad("policy.detect_timeout", "must not be 0"));
            }
        }
        model.allow_l5d_request_headers = raw.allow_l5d_request_headers;
        for (kind, n) in [
            ("servers", raw.servers.len()),
            ("authorizations", raw.authorizations.len()),
            ("rate_limits", raw.rate_limits.len()),
            ("http_routes", raw.http_routes.len()),
            ("grpc_routes", raw.grpc_routes.len()),
        ] {
            if n > MAX_ITEMS {
                return Err(bad(
                    &format!("policy.{kind}"),
                    format!("more than {MAX_ITEMS}"),
                ));
            }
        }
        let mut seen = HashSet::new();
        for s in &raw.servers {
            let server = validate_server(s)?;
            if !seen.insert((server.namespace.clone(), server.name.clone())) {
                return Err(bad(&server_at(s), "defined twice"));
            }
            model.servers.push(server);
        }
        (model.http_routes, model.grpc_routes) =
            validate_routes(&raw.http_routes, &raw.grpc_routes, &model.servers, &cx)?;
        let mut seen = HashSet::new();
        for a in &raw.authorizations {
            let authz = validate_authorization(a, &model, &cx)?;
            if !seen.insert((authz.namespace.clone(), authz.name.clone())) {
                return Err(bad(&authz_at(a), "defined twice"));
            }
            model.authorizations.push(authz);
        }
        let mut seen = HashSet::new();
        let mut limited = HashSet::new();
        for r in &raw.rate_limits {
            let limit = validate_rate_limit(r, &model, &cx)?;
            let at = format!("policy.rate_limits[{}/{}]", r.namespace, r.name);
            if !seen.insert((limit.namespace.clone(), limit.name.clone())) {
                return Err(bad(&at, "defined twice"));
            }
            if !limited.insert((limit.namespace.clone(), limit.server.clone())) {
                return Err(bad(
                    &format!("{at}.target_ref"),
                    format!("server {} already has a rate limit", limit.server),
                ));
            }
            model.rate_limits.push(limit);
        }
        Ok(model)
    }

    pub fn server(&self, namespace: &str, name: &str) -> Option<&Server> {
        self.servers
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }
}

/// A DNS label: a namespace, a label value-like name.
pub(super) fn check_label(at: &str, v: &str) -> Result<(), Invalid> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    match ok {
        true => Ok(()),
        false => Err(bad(at, format!("{v:?} is not a lowercase DNS label"))),
    }
}

/// A resource name: a DNS subdomain (labels joined by dots).
pub(super) fn check_name(at: &str, v: &str) -> Result<(), Invalid> {
    if v.is_empty() || v.len() > 253 || v.split('.').any(|l| check_label(at, l).is_err()) {
        return Err(bad(
            at,
            format!("{v:?} is not a valid name (a lowercase DNS name)"),
        ));
    }
    Ok(())
}

/// Checks a resource's name and namespace.
pub(super) fn check_meta(at: &str, name: &str, namespace: &str) -> Result<(), Invalid> {
    check_name(&format!("{at}.name"), name)?;
    check_label(&format!("{at}.namespace"), namespace)
}

fn networks(at: &str, list: &[String]) -> Result<Vec<IpNet>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, n)| cidr(&format!("{at}[{i}]"), n))
        .collect()
}

pub(super) fn cidr(at: &str, v: &str) -> Result<IpNet, Invalid> {
    v.parse::<IpNet>().map_err(|_| {
        bad(
            at,
            format!("{v:?} is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)"),
        )
    })
}

fn server_at(s: &RawPolicyServer) -> String {
    format!("policy.servers[{}/{}]", s.namespace, s.name)
}

fn validate_server(s: &RawPolicyServer) -> Result<Server, Invalid> {
    let at = server_at(s);
    check_meta(&at, &s.name, &s.namespace)?;
    let port = match &s.port {
        RawPortRef::Number(n) => match u16::try_from(*n) {
            Ok(p) if p != 0 => PortRef::Number(p),
            _ => {
                return Err(bad(
                    &format!("{at}.port"),
                    format!("{n} is not a port (1-65535)"),
                ));
            }
        },
        RawPortRef::Name(name) => {
            check_port_name(&format!("{at}.port"), name)?;
            PortRef::Name(name.clone())
        }
    };
    let protocol = match s
        .proxy_protocol
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("unknown") => ServerProtocol::Detect,
        Some("http/1") => ServerProtocol::Http1,
        Some("http/2") => ServerProtocol::Http2,
        Some("grpc") => ServerProtocol::Grpc,
        Some("opaque") => ServerProtocol::Opaque,
        Some("tls") => ServerProtocol::Tls,
        Some(_) => {
            return Err(bad(
                &format!("{at}.proxy_protocol"),
                format!(
                    "{:?} is not unknown, HTTP/1, HTTP/2, gRPC, opaque or TLS",
                    s.proxy_protocol.as_deref().unwrap_or_default()
                ),
            ));
        }
    };
    let access_policy = match &s.access_policy {
        Some(p) => DefaultPolicy::parse_field(&format!("{at}.access_policy"), p)?,
        None => DefaultPolicy::Deny,
    };
    Ok(Server {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        selector: selector(&format!("{at}.pod_selector"), &s.pod_selector)?,
        port,
        protocol,
        access_policy,
    })
}

/// A port name as Kubernetes has them (IANA service names): up to 15 lowercase letters,
/// digits and inner single dashes, with a letter.
pub fn check_port_name(at: &str, v: &str) -> Result<(), Invalid> {
    let ok = !v.is_empty()
        && v.len() <= 15
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && v.bytes().any(|b| b.is_ascii_lowercase())
        && !v.starts_with('-')
        && !v.ends_with('-')
        && !v.contains("--");
    match ok {
        true => Ok(()),
        false => Err(bad(
            at,
            format!("{v:?} is not a port name (up to 15 lowercase letters, digits and dashes)"),
        )),
    }
}

fn selector(at: &str, raw: &RawPodSelector) -> Result<Selector, Invalid> {
    for (k, v) in &raw.match_labels {
        check_label_pair(&format!("{at}.match_labels"), k, Some(v))?;
    }
    let mut expressions = Vec::new();
    for (i, e) in raw.match_expressions.iter().enumerate() {
        expressions.push(expression(&format!("{at}.match_expressions[{i}]"), e)?);
    }
    let pods = match &raw.pods {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(bad(
                &format!("{at}.pods"),
                "lists no pod (leave it out for any pod)",
            ));
        }
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                check_name(&format!("{at}.pods[{i}]"), p)?;
            }
            Some(list.iter().cloned().collect())
        }
    };
    Ok(Selector {
        labels: raw.match_labels.clone(),
        expressions,
        pods,
    })
}

fn check_label_pair(at: &str, key: &str, value: Option<&str>) -> Result<(), Invalid> {
    let ok_key = !key.is_empty() && key.len() <= 317 && !key.contains(char::is_whitespace);
    if !ok_key {
        return Err(bad(at, format!("{key:?} is not a label key")));
    }
    if let Some(v) = value
        && (v.len() > 63 || v.contains(char::is_whitespace))
    {
        return Err(bad(at, format!("{v:?} is not a label value")));
    }
    Ok(())
}

fn expression(at: &str, e: &RawExpression) -> Result<Expression, Invalid> {
    check_label_pair(&format!("{at}.key"), &e.key, None)?;
    for v in &e.values {
        check_label_pair(&format!("{at}.values"), &e.key, Some(v))?;
    }
    let values: BTreeSet<String> = e.values.iter().cloned().collect();
    let key = e.key.clone();
    let needs_values = |x: Expression| match values.is_empty() {
        true => Err(bad(
            &format!("{at}.values"),
            format!("{} needs values", e.operator),
        )),
        false => Ok(x),
    };
    let no_values = |x: Expression| match values.is_empty() {
        true => Ok(x),
        false => Err(bad(
            &format!("{at}.values"),
            format!("{} takes no values", e.operator),
        )),
    };
    match e.operator.as_str() {
        "In" => needs_values(Expression::In(key, values.clone())),
        "NotIn" => needs_values(Expression::NotIn(key, values.clone())),
        "Exists" => no_values(Expression::Exists(key)),
        "DoesNotExist" => no_values(Expression::DoesNotExist(key)),
        other => Err(bad(
            &format!("{at}.operator"),
            format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
        )),
    }
}
