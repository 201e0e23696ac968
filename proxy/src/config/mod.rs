//! The proxy's configuration, parsed in one place into typed structs before the runtime
//! starts, from either of two surfaces:
//!
//! - `REMORA_*` variables ([`vars`]: names, defaults and help in one table, which
//!   `remora proxy --help` prints and CONFIG.md documents);
//! - Linkerd's proxy environment, `LINKERD2_PROXY_*` ([`linkerd`]), as Linkerd's injector
//!   renders it for linkerd2-proxy: translated onto the same settings, an explicit `REMORA_*`
//!   variable winning.
//!
//! Every value is checked here; a bad one is a [`ConfigError`] naming the variable it came from
//! (exit 64). [`Config::sources`] says where each setting came from, for the start-up log.
//!
//! # Layout
//! - [`vars`]: the `REMORA_*` table.
//! - [`linkerd`]: the `LINKERD2_PROXY_*` table and its translation.
//! - [`parse`]: the value syntaxes both surfaces share.

pub mod linkerd;
pub mod parse;
pub mod vars;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use remora_identity::Name;
use remora_runtime::channel::ControlAddr;
use remora_runtime::duration::{parse_duration, parse_nonzero_duration, parse_optional_duration};
use remora_runtime::log::{LogConfig, parse_filter, parse_format};

use crate::http::server::{Http2Params, Limits};
use crate::inbound::policy::{Policy, parse_policy, parse_port_policies};
use crate::tls::identity::IdentityConfig;
pub use crate::transport::tcp::SocketOpts;
pub use parse::AccessLogFormat;
pub use vars::*;

/// The effective configuration of `remora proxy`.
#[derive(Clone, Debug)]
pub struct Config {
    pub outbound_addrs: Vec<SocketAddr>,
    pub inbound_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The outbound's connects to targets.
    pub connect_timeout: Duration,
    /// The inbound's connects to the app.
    pub inbound_connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub inbound_max_connections: usize,
    pub outbound_max_connections: usize,
    /// The share of the inbound's connection slots one client address may hold.
    pub inbound_peer_share: f64,
    /// Inbound: forwarded TCP connections silent both ways this long are closed.
    pub first_byte_timeout: Option<Duration>,
    pub inbound_max_in_flight: usize,
    pub outbound_max_in_flight: usize,
    pub shutdown_grace: Duration,
    /// Whether `POST /shutdown` drains the proxy.
    pub shutdown_endpoint: bool,
    pub worker_threads: usize,
    pub log: LogConfig,
    pub detect_timeout: Duration,
    pub outbound_detect_timeout: Duration,
    /// How long a silent client waits before its destination is dialled early (`None`:
    /// never), both directions.
    pub early_dial: Option<Duration>,
    pub opaque_ports: BTreeSet<u16>,
    /// What the inbound's HTTP server accepts from peers.
    pub inbound_http: Limits,
    /// What the outbound's HTTP server accepts from the app.
    pub outbound_http: Limits,
    /// HTTP/2 client settings (flow-control windows).
    pub http2_client: Http2Params,
    pub sockets: Sockets,
    pub request_timeout: Option<Duration>,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub metrics: remora_metrics::bounded::Limits,
    pub access_log: Option<AccessLogFormat>,
    /// Gateway mode (`remora gateway`, not a variable): direct-path connections naming an
    /// exported service are forwarded to it.
    pub gateway: bool,
    /// Ingress mode: outbound HTTP is routed by `l5d-dst-override` or the authority, and every
    /// port is detected.
    pub ingress: bool,
    /// The pod's own addresses, when given: inbound connections to others are refused.
    pub inbound_ips: Vec<IpAddr>,
    /// The ports the pod declares.
    pub inbound_ports: BTreeSet<u16>,
    /// The direct path may name any port, declared or not (`inbound/ports.rs`).
    pub direct_ports_unrestricted: bool,
    pub default_policy: Policy,
    pub port_policies: HashMap<u16, Policy>,
    /// The cluster's networks, for the `cluster-*` policies.
    pub cluster_networks: Vec<IpNet>,
    /// `None` when no identity is configured: the proxy then has no certificate.
    pub identity: Option<IdentityConfig>,
    /// `None` when no destination service is configured: every target is forwarded as-is.
    pub destination: Option<DestinationConfig>,
    /// `None` when no policy service is configured.
    pub policy: Option<PolicyConfig>,
    /// Watchdogs of the discovery and policy streams.
    pub control_streams: StreamLimits,
    /// `None` without a trace collector: no spans, and no per-request tracing work.
    pub trace: Option<crate::trace::TraceConfig>,
    /// Where each setting came from: `(REMORA_* setting, variable or default)`.
    pub sources: Vec<(&'static str, String)>,
    /// Linkerd's surface, when it was used: what it set that has no effect, and what Remora
    /// does not know, for warnings once logging runs.
    pub linkerd: Option<LinkerdNotes>,
}

/// What Linkerd's environment held that Remora does not act on.
#[derive(Clone, Debug, Default)]
pub struct LinkerdNotes {
    /// Known variables without effect, and why.
    pub unhonoured: Vec<(String, String)>,
    /// `LINKERD2_PROXY_*` variables Remora does not know.
    pub unknown: Vec<String>,
}

/// Socket options of each kind of connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sockets {
    pub inbound_accept: SocketOpts,
    pub outbound_accept: SocketOpts,
    pub inbound_connect: SocketOpts,
    pub outbound_connect: SocketOpts,
}

/// Watchdogs of long-lived control-plane streams (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {
    pub initial: Option<Duration>,
    pub idle: Option<Duration>,
    pub lifetime: Option<Duration>,
}

/// Where and how the proxy discovers its targets' endpoints.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    pub addr: ControlAddr,
    pub svc_name: Option<Name>,
    /// Sent verbatim with every request.
    pub context: String,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub max_targets: usize,
    pub max_failures: u32,
    /// Names whose profiles are asked for (`""` is every name).
    pub profile_suffixes: Vec<String>,
    /// Addresses whose profiles are asked for.
    pub profile_networks: Vec<IpNet>,
}

/// The policy service, and this workload as it knows it.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub addr: ControlAddr,
    pub svc_name: Option<Name>,
    /// Sent verbatim (Linkerd's `{"ns":"...","pod":"..."}`, maybe with a trailing newline).
    pub workload: String,
    /// A port's watch unused this long is closed.
    pub idle_timeout: Duration,
}

/// A variable whose value could not be used. Displays as `NAME="value": reason`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.var, self.value, self.reason)
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads these variables (the whole environment, so unknown Linkerd ones can be noted).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let map: HashMap<String, String> = vars.into_iter().collect();
        let names: Vec<String> = map.keys().cloned().collect();
        Self::read(&|name| map.get(name).cloned(), Some(&names))
    }

    /// Reads variables through `lookup`; unset or empty variables take their default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&lookup, None)
    }

    fn read(
        lookup: &dyn Fn(&str) -> Option<String>,
        names: Option<&[String]>,
    ) -> Result<Self, ConfigError> {
        let surface = linkerd::read(lookup, names)?;
        let env = Env {
            lookup,
            linkerd: surface.as_ref(),
            sources: RefCell::default(),
        };
        let mut config = env.config()?;
        env.cluster_rules(&config, surface.is_some())?;
        if surface.is_some() {
            env.linkerd_rules(&config)?;
        }
        config.sources = env.sources.into_inner().into_iter().collect();
        config.linkerd = surface.map(|s| LinkerdNotes {
            unhonoured: s.unhonoured,
            unknown: s.unknown,
        });
        Ok(config)
    }

    /// This configuration in gateway mode (`remora gateway`), which needs an identity (it
    /// terminates other clusters' mTLS) and discovery with the control plane's identity (it
    /// watches the cluster's exports as itself).
    pub fn gateway(self) -> Result<Self, ConfigError> {
        let missing = |var: &str, reason: &str| ConfigError {
            var: var.to_string(),
            value: String::new(),
            reason: format!("required in gateway mode: {reason}"),
        };
        if self.identity.is_none() {
            return Err(missing(
                IDENTITY_NAME,
                "the gateway terminates other clusters' mTLS with its own identity",
            ));
        }
        match &self.destination {
            None => Err(missing(
                DESTINATION_ADDR,
                "the gateway resolves exported services through discovery",
            )),
            Some(d) if d.svc_name.is_none() => Err(missing(
                DESTINATION_SVC_NAME,
                "the gateway authenticates its control plane to watch the exports",
            )),
            Some(_) => Ok(Config {
                gateway: true,
                ..self
            }),
        }
    }

    /// The effective configuration, one line per setting that is not at Remora's default:
    /// `REMORA_X=value (from NAME)`. Trust anchors and tokens are summarised, never printed.
    pub fn describe(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|(setting, from)| format!("{setting} (from {from})"))
            .collect()
    }
}

/// Where a value came from.
#[derive(Clone, Debug)]
enum Origin {
    Remora,
    /// A Linkerd variable (its full name and its own value), or Linkerd's default (`var` "").
    Linkerd {
        var: String,
        raw: String,
    },
}

/// The variables, as the parser reads them: an explicit `REMORA_*` value, else Linkerd's
/// translation.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    linkerd: Option<&'a linkerd::Surface>,
    sources: RefCell<BTreeMap<&'static str, String>>,
}

impl Env<'_> {
    /// The value of `var` as set, with where it came from; `None` when unset or empty.
    fn get(&self, var: &'static str) -> Option<(String, Origin)> {
        if let Some(v) = (self.lookup)(var).filter(|v| !v.trim().is_empty()) {
            return Some((v, Origin::Remora));
        }
        let t = self.linkerd?.values.get(var)?;
        if t.value.trim().is_empty() {
            // Linkerd's default is "nothing" (e.g. no profile networks): an empty list.
            return Some((String::new(), self.origin(t)));
        }
        Some((t.value.clone(), self.origin(t)))
    }

    fn origin(&self, t: &linkerd::Translated) -> Origin {
        Origin::Linkerd {
            var: t.from.clone(),
            raw: t.raw.clone(),
        }
    }

    fn note(&self, var: &'static str, value: &str, origin: &Origin) {
        let shown = match var {
            IDENTITY_TRUST_ANCHORS if value.trim_start().starts_with("-----BEGIN") => {
                format!("<{} PEM certificates>", value.matches("-----BEGIN").count())
            }
            _ => value.trim_end().to_string(),
        };
        let from = match origin {
            Origin::Remora => var.to_string(),
            Origin::Linkerd { var, .. } if var.is_empty() => "Linkerd's default".to_string(),
            Origin::Linkerd { var, .. } => var.clone(),
        };
        self.sources
            .borrow_mut()
            .insert(var, format!("{shown:?}, {from}"));
    }

    fn error(
        &self,
        var: &'static str,
        value: String,
        origin: &Origin,
        reason: String,
    ) -> ConfigError {
        match origin {
            Origin::Linkerd { var: from, raw } if !from.is_empty() => ConfigError {
                var: from.clone(),
                value: raw.clone(),
                reason,
            },
            _ => ConfigError {
                var: var.to_string(),
                value,
                reason,
            },
        }
    }

    /// An optional variable: `None` when unset or empty. Parsed trimmed.
    fn optional<T>(
        &self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((value, origin)) = self.get(var) else {
            return Ok(None);
        };
        self.note(var, &value, &origin);
        parse(value.trim())
            .map(Some)
            .map_err(|reason| self.error(var, value, &origin, reason))
    }

    /// An optional variable whose value is kept exactly as set (a JSON value with its trailing
    /// newline).
    fn verbatim<T>(
        &self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((value, origin)) = self.get(var) else {
            return Ok(None);
        };
        self.note(var, &value, &origin);
        parse(&value)
            .map(Some)
            .map_err(|reason| self.error(var, value, &origin, reason))
    }

    /// A variable that must be set, given what else is configured (`why`).
    fn required<T>(
        &self,
        var: &'static str,
        why: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.optional(var, parse)?.ok_or_else(|| ConfigError {
            var: self.name_for(var),
            value: String::new(),
            reason: format!("required {why}"),
        })
    }

    /// A variable with a default.
    fn parse<T>(
        &self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.optional(var, &parse)? {
            Some(v) => Ok(v),
            None => {
                let value = default_of(var);
                parse(value.trim()).map_err(|reason| ConfigError {
                    var: var.to_string(),
                    value: value.to_string(),
                    reason,
                })
            }
        }
    }

    /// The name to give for `var` in a message: under Linkerd's surface, the Linkerd variable
    /// that feeds it.
    fn name_for(&self, var: &'static str) -> String {
        if self.linkerd.is_none() {
            return var.to_string();
        }
        linkerd::LINKERD_VARS
            .iter()
            .find(|v| v.remora == var)
            .map_or(var.to_string(), |v| {
                format!("{}{}", linkerd::PREFIX, v.name)
            })
    }

    fn config(&self) -> Result<Config, ConfigError> {
        let limits = |h2: &'static str| -> Result<Limits, ConfigError> {
            let mut l = Limits {
                max_head: self.parse(HTTP_MAX_HEADER_BYTES, parse::positive)?,
                max_headers: self.parse(HTTP_MAX_HEADERS, parse::positive)?,
                max_streams: self.parse(HTTP2_MAX_CONCURRENT_STREAMS, parse::positive)? as u32,
                h2: self.parse(h2, Http2Params::parse)?,
            };
            if let Some(n) = l.h2.max_concurrent_streams {
                l.max_streams = n;
            }
            if let Some(n) = l.h2.max_header_list_size {
                l.max_head = n as usize;
            }
            Ok(l)
        };
        let opts = |keepalive, user_timeout| -> Result<SocketOpts, ConfigError> {
            Ok(SocketOpts {
                keepalive: self.parse(keepalive, parse_optional_duration)?,
                user_timeout: self.parse(user_timeout, parse_optional_duration)?,
            })
        };
        let mut port_policies = self
            .optional(INBOUND_PORT_POLICIES, parse_port_policies)?
            .unwrap_or_default();
        for (var, policy) in [
            (INBOUND_PORTS_REQUIRE_IDENTITY, Policy::AllAuthenticated),
            (INBOUND_PORTS_REQUIRE_TLS, Policy::AllAuthenticated),
        ] {
            for port in self.optional(var, parse::ports)?.unwrap_or_default() {
                port_policies.entry(port).or_insert_with(|| policy.clone());
            }
        }
        Ok(Config {
            outbound_addrs: self.parse(OUTBOUND_ADDR, parse::addrs)?,
            inbound_addrs: self.parse(INBOUND_ADDR, parse::addrs)?,
            admin_addr: self.parse(ADMIN_ADDR, parse::addr)?,
            connect_timeout: self.parse(CONNECT_TIMEOUT, parse_nonzero_duration)?,
            inbound_connect_timeout: self.parse(INBOUND_CONNECT_TIMEOUT, parse_nonzero_duration)?,
            idle_timeout: self.parse(TCP_IDLE_TIMEOUT, parse_optional_duration)?,
            inbound_max_connections: self.parse(INBOUND_MAX_CONNECTIONS, parse::positive)?,
            outbound_max_connections: self.parse(OUTBOUND_MAX_CONNECTIONS, parse::positive)?,
            inbound_peer_share: self.parse(INBOUND_PEER_CONNECTION_SHARE, parse::share)?,
            first_byte_timeout: self.parse(INBOUND_FIRST_BYTE_TIMEOUT, parse_optional_duration)?,
            inbound_max_in_flight: self.parse(INBOUND_MAX_IN_FLIGHT, parse::positive)?,
            outbound_max_in_flight: self.parse(OUTBOUND_MAX_IN_FLIGHT, parse::positive)?,
            shutdown_grace: self.parse(SHUTDOWN_GRACE, parse_duration)?,
            shutdown_endpoint: self.parse(SHUTDOWN_ENDPOINT, parse::boolean)?,
            worker_threads: self.parse(WORKER_THREADS, parse::positive)?,
            log: LogConfig {
                filter: self.parse(LOG, parse_filter)?,
                format: self.parse(LOG_FORMAT, parse_format)?,
            },
            detect_timeout: self.parse(INBOUND_DETECT_TIMEOUT, parse_nonzero_duration)?,
            outbound_detect_timeout: self.parse(OUTBOUND_DETECT_TIMEOUT, parse_nonzero_duration)?,
            early_dial: self.parse(DETECT_EARLY_DIAL, parse_early_dial)?,
            opaque_ports: self.parse(OPAQUE_PORTS, parse::ports)?,
            inbound_http: limits(INBOUND_HTTP2_SERVER)?,
            outbound_http: limits(OUTBOUND_HTTP2_SERVER)?,
            http2_client: self.parse(HTTP2_CLIENT, Http2Params::parse)?,
            sockets: Sockets {
                inbound_accept: opts(INBOUND_ACCEPT_KEEPALIVE, INBOUND_ACCEPT_USER_TIMEOUT)?,
                outbound_accept: opts(OUTBOUND_ACCEPT_KEEPALIVE, OUTBOUND_ACCEPT_USER_TIMEOUT)?,
                inbound_connect: opts(INBOUND_CONNECT_KEEPALIVE, INBOUND_CONNECT_USER_TIMEOUT)?,
                outbound_connect: opts(OUTBOUND_CONNECT_KEEPALIVE, OUTBOUND_CONNECT_USER_TIMEOUT)?,
            },
            request_timeout: self.parse(HTTP_REQUEST_TIMEOUT, parse_optional_duration)?,
            pool_idle_timeout: self.parse(HTTP_POOL_IDLE_TIMEOUT, parse_nonzero_duration)?,
            pool_max_idle: self.parse(HTTP_POOL_MAX_IDLE, parse::positive)?,
            metrics: remora_metrics::bounded::Limits {
                max_series: self.parse(METRICS_MAX_SERIES, parse::positive)?,
                idle: self.parse(METRICS_IDLE_TIMEOUT, parse_nonzero_duration)?,
            },
            access_log: self.parse(ACCESS_LOG, parse::access_log)?,
            gateway: false,
            ingress: self.parse(INGRESS_MODE, parse::boolean)?,
            inbound_ips: self.optional(INBOUND_IPS, parse::ips)?.unwrap_or_default(),
            inbound_ports: self
                .optional(INBOUND_PORTS, parse::ports)?
                .unwrap_or_default(),
            direct_ports_unrestricted: self
                .parse(INBOUND_DIRECT_PORTS_UNRESTRICTED, parse::boolean)?,
            default_policy: self.parse(INBOUND_DEFAULT_POLICY, parse_policy)?,
            port_policies,
            cluster_networks: self
                .optional(POLICY_CLUSTER_NETWORKS, parse::networks)?
                .unwrap_or_default(),
            identity: self.identity()?,
            destination: self.destination()?,
            policy: self.policy()?,
            control_streams: self.stream_limits()?,
            trace: self.trace()?,
            sources: Vec::new(),
            linkerd: None,
        })
    }

    fn identity(&self) -> Result<Option<IdentityConfig>, ConfigError> {
        let Some(name) = self.optional(IDENTITY_NAME, parse::name)? else {
            return Ok(None);
        };
        let why = "with an identity";
        let trust_anchors = self.required(IDENTITY_TRUST_ANCHORS, why, parse::trust_anchors)?;
        let addr = self.required(IDENTITY_ADDR, why, parse::control_addr)?;
        let svc_name = self.svc_name(IDENTITY_SVC_NAME, &addr, "identity")?;
        let min_refresh = self.parse(IDENTITY_MIN_REFRESH, parse_nonzero_duration)?;
        let max_refresh = self.parse(IDENTITY_MAX_REFRESH, parse_nonzero_duration)?;
        if max_refresh < min_refresh {
            return Err(ConfigError {
                var: IDENTITY_MAX_REFRESH.into(),
                value: format!("{max_refresh:?}"),
                reason: format!("less than {IDENTITY_MIN_REFRESH} ({min_refresh:?})"),
            });
        }
        Ok(Some(IdentityConfig {
            name,
            trust_anchors,
            token_file: self.required(IDENTITY_TOKEN_FILE, why, parse::path)?,
            dir: self.optional(IDENTITY_DIR, parse::path)?,
            addr,
            svc_name,
            min_refresh,
            max_refresh,
        }))
    }

    /// The identity a control-plane service must present: required unless it is on loopback.
    fn svc_name(
        &self,
        var: &'static str,
        addr: &ControlAddr,
        what: &str,
    ) -> Result<Option<Name>, ConfigError> {
        let name = self.optional(var, parse::name)?;
        if name.is_none() && !addr.is_loopback() {
            return Err(ConfigError {
                var: self.name_for(var),
                value: String::new(),
                reason: format!(
                    "required: the {what} service at {addr} is not on loopback, so the proxy \
                     must know the identity it presents"
                ),
            });
        }
        Ok(name)
    }

    fn destination(&self) -> Result<Option<DestinationConfig>, ConfigError> {
        let Some(addr) = self.optional(DESTINATION_ADDR, parse::control_addr)? else {
            return Ok(None);
        };
        let svc_name = self.svc_name(DESTINATION_SVC_NAME, &addr, "destination")?;
        if svc_name.is_some() && self.get(IDENTITY_TRUST_ANCHORS).is_none() {
            return Err(ConfigError {
                var: IDENTITY_TRUST_ANCHORS.into(),
                value: String::new(),
                reason: format!("required to verify {DESTINATION_SVC_NAME}"),
            });
        }
        Ok(Some(DestinationConfig {
            addr,
            svc_name,
            context: self
                .verbatim(DESTINATION_CONTEXT, |s| Ok(s.to_string()))?
                .unwrap_or_default(),
            timeout: self.parse(DESTINATION_TIMEOUT, parse_nonzero_duration)?,
            idle_timeout: self.parse(DESTINATION_IDLE_TIMEOUT, parse_nonzero_duration)?,
            max_targets: self.parse(DESTINATION_MAX_TARGETS, parse::positive)?,
            max_failures: self.parse(BREAKER_MAX_FAILURES, parse::positive)? as u32,
            profile_suffixes: self.parse_or_empty(DESTINATION_PROFILE_SUFFIXES, parse::suffixes)?,
            profile_networks: self.parse_or_empty(DESTINATION_PROFILE_NETWORKS, parse::networks)?,
        }))
    }

    /// A list with a default, where an explicitly empty value (Linkerd's default of "none")
    /// means an empty list.
    fn parse_or_empty<T>(
        &self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<Vec<T>, String>,
    ) -> Result<Vec<T>, ConfigError> {
        match self.get(var) {
            Some((v, _)) if v.trim().is_empty() => Ok(Vec::new()),
            _ => self.parse(var, parse),
        }
    }

    fn policy(&self) -> Result<Option<PolicyConfig>, ConfigError> {
        let Some(addr) = self.optional(POLICY_ADDR, parse::control_addr)? else {
            return Ok(None);
        };
        let svc_name = self.svc_name(POLICY_SVC_NAME, &addr, "policy")?;
        let workload = self
            .verbatim(POLICY_WORKLOAD, parse::workload)?
            .ok_or_else(|| ConfigError {
                var: self.name_for(POLICY_WORKLOAD),
                value: String::new(),
                reason: "required with a policy service".into(),
            })?;
        Ok(Some(PolicyConfig {
            addr,
            svc_name,
            workload,
            idle_timeout: self.parse(POLICY_IDLE_TIMEOUT, parse_nonzero_duration)?,
        }))
    }

    /// The trace collector and the spans' resource, read as linkerd2-proxy reads them
    /// (`OTEL_RESOURCE_ATTRIBUTES` and `HOSTNAME` too); `None` without a collector.
    fn trace(&self) -> Result<Option<crate::trace::TraceConfig>, ConfigError> {
        let protocol = self.parse(TRACE_PROTOCOL, |s| match s {
            "opentelemetry" => Ok(()),
            other => Err(format!(
                "unknown protocol {other:?}: spans are exported as opentelemetry (OTLP/gRPC)"
            )),
        });
        let Some(addr) = self.optional(TRACE_COLLECTOR_ADDR, parse::control_addr)? else {
            protocol?;
            return Ok(None);
        };
        protocol?;
        let svc_name = self.svc_name(TRACE_COLLECTOR_SVC_NAME, &addr, "trace collector")?;
        if svc_name.is_some() && self.get(IDENTITY_NAME).is_none() {
            return Err(ConfigError {
                var: self.name_for(IDENTITY_NAME),
                value: String::new(),
                reason: format!(
                    "required to reach the trace collector with mTLS ({})",
                    self.name_for(TRACE_COLLECTOR_SVC_NAME)
                ),
            });
        }
        let text = |var| self.verbatim(var, |s| Ok(s.to_string()));
        let service_name = self.optional(TRACE_SERVICE_NAME, |s| Ok(s.to_string()))?;
        let file = self.optional(TRACE_ATTRIBUTES_PATH, |s| Ok(s.to_string()))?;
        let extra = text(TRACE_EXTRA_ATTRIBUTES)?;
        let otel = (self.lookup)("OTEL_RESOURCE_ATTRIBUTES");
        let hostname = (self.lookup)("HOSTNAME");
        let resource = crate::trace::attributes::resource(
            service_name.as_deref(),
            file.as_deref(),
            extra.as_deref(),
            otel.as_deref(),
            hostname.as_deref(),
        );
        Ok(Some(crate::trace::TraceConfig {
            addr,
            svc_name,
            resource,
            sample_ratio: self.parse(TRACE_SAMPLE_RATIO, parse::ratio)?,
            queue: self.parse(TRACE_QUEUE, parse::positive)?,
        }))
    }

    fn stream_limits(&self) -> Result<StreamLimits, ConfigError> {
        let limits = StreamLimits {
            initial: self.parse(CONTROL_STREAM_INITIAL_TIMEOUT, parse_optional_duration)?,
            idle: self.parse(CONTROL_STREAM_IDLE_TIMEOUT, parse_optional_duration)?,
            lifetime: self.parse(CONTROL_STREAM_LIFETIME, parse_optional_duration)?,
        };
        let le = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => a <= b,
            _ => true,
        };
        for (ok, var, other) in [
            (
                le(limits.initial, limits.idle),
                CONTROL_STREAM_INITIAL_TIMEOUT,
                CONTROL_STREAM_IDLE_TIMEOUT,
            ),
            (
                le(limits.initial, limits.lifetime),
                CONTROL_STREAM_INITIAL_TIMEOUT,
                CONTROL_STREAM_LIFETIME,
            ),
            (
                le(limits.idle, limits.lifetime),
                CONTROL_STREAM_IDLE_TIMEOUT,
                CONTROL_STREAM_LIFETIME,
            ),
        ] {
            if !ok {
                let (value, origin) = self.get(var).unwrap_or_default_pair();
                return Err(self.error(var, value, &origin, format!("longer than {other}")));
            }
        }
        Ok(limits)
    }

    /// The `cluster-*` policies need the cluster's networks (under Linkerd's surface both, as
    /// linkerd2-proxy has it; under Remora's, `cluster-authenticated` falls back to the trust
    /// domain).
    fn cluster_rules(&self, c: &Config, linkerd: bool) -> Result<(), ConfigError> {
        if !c.cluster_networks.is_empty() {
            return Ok(());
        }
        let needs = |p: &Policy| match p {
            Policy::ClusterUnauthenticated => true,
            Policy::ClusterAuthenticated => linkerd,
            _ => false,
        };
        let var = if needs(&c.default_policy) {
            INBOUND_DEFAULT_POLICY
        } else if c.port_policies.values().any(needs) {
            INBOUND_PORT_POLICIES
        } else {
            return Ok(());
        };
        let (value, origin) = self.get(var).unwrap_or_default_pair();
        Err(self.error(
            var,
            value,
            &origin,
            format!(
                "the cluster-* policies need the cluster's networks ({})",
                self.name_for(POLICY_CLUSTER_NETWORKS)
            ),
        ))
    }

    /// Checks what Linkerd's surface requires of a proxy (as linkerd2-proxy does): an identity,
    /// discovery and policy, and cluster networks for the cluster-* default policies.
    fn linkerd_rules(&self, c: &Config) -> Result<(), ConfigError> {
        let need = |ok: bool, var: &str, why: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    var: format!("LINKERD2_PROXY_{var}"),
                    value: String::new(),
                    reason: format!("required: {why}"),
                })
            }
        };
        need(
            c.identity.is_some(),
            "IDENTITY_LOCAL_NAME",
            "under Linkerd's environment the proxy always has an identity; it never runs \
             meshed without one",
        )?;
        need(
            c.destination.is_some(),
            "DESTINATION_SVC_ADDR",
            "no destination service configured",
        )?;
        need(
            c.policy.is_some(),
            "POLICY_SVC_ADDR",
            "no policy service configured",
        )?;
        Ok(())
    }
}

trait PairDefault {
    fn unwrap_or_default_pair(self) -> (String, Origin);
}

impl PairDefault for Option<(String, Origin)> {
    fn unwrap_or_default_pair(self) -> (String, Origin) {
        self.unwrap_or((String::new(), Origin::Remora))
    }
}

#[cfg(test)]
mod tests;

/// `off` (never dial early) or a duration, `0` included (dial at once).
fn parse_early_dial(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}
