//! The proxy's configuration: every `REMORA_*` variable, parsed in one place into typed structs
//! before the runtime starts.
//!
//! [`VARS`] is the single table of variables, defaults and help texts: the parser reads defaults
//! from it, `remora proxy --help` prints it, and a test checks that CONFIG.md documents each one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use remora_identity::{Name, TrustAnchors};
use remora_runtime::duration::{parse_duration, parse_nonzero_duration, parse_optional_duration};
use remora_runtime::log::{LogConfig, parse_filter, parse_format};

use crate::http::server::Limits;
use crate::inbound::policy::{Policy, parse_policy, parse_port_policies};
use crate::tls::identity::IdentityConfig;

pub const OUTBOUND_ADDR: &str = "REMORA_OUTBOUND_ADDR";
pub const INBOUND_ADDR: &str = "REMORA_INBOUND_ADDR";
pub const ADMIN_ADDR: &str = "REMORA_ADMIN_ADDR";
pub const CONNECT_TIMEOUT: &str = "REMORA_CONNECT_TIMEOUT";
pub const TCP_IDLE_TIMEOUT: &str = "REMORA_TCP_IDLE_TIMEOUT";
pub const INBOUND_MAX_CONNECTIONS: &str = "REMORA_INBOUND_MAX_CONNECTIONS";
pub const OUTBOUND_MAX_CONNECTIONS: &str = "REMORA_OUTBOUND_MAX_CONNECTIONS";
pub const SHUTDOWN_GRACE: &str = "REMORA_SHUTDOWN_GRACE";
pub const WORKER_THREADS: &str = "REMORA_WORKER_THREADS";
pub const LOG: &str = "REMORA_LOG";
pub const METRICS_MAX_SERIES: &str = "REMORA_METRICS_MAX_SERIES";
pub const METRICS_IDLE_TIMEOUT: &str = "REMORA_METRICS_IDLE_TIMEOUT";
pub const ACCESS_LOG: &str = "REMORA_ACCESS_LOG";
pub const BREAKER_MAX_FAILURES: &str = "REMORA_BREAKER_MAX_FAILURES";
pub const HTTP_REQUEST_TIMEOUT: &str = "REMORA_HTTP_REQUEST_TIMEOUT";
pub const HTTP_POOL_IDLE_TIMEOUT: &str = "REMORA_HTTP_POOL_IDLE_TIMEOUT";
pub const INBOUND_DETECT_TIMEOUT: &str = "REMORA_INBOUND_DETECT_TIMEOUT";
pub const OUTBOUND_DETECT_TIMEOUT: &str = "REMORA_OUTBOUND_DETECT_TIMEOUT";
pub const OPAQUE_PORTS: &str = "REMORA_OPAQUE_PORTS";
pub const HTTP_MAX_HEADER_BYTES: &str = "REMORA_HTTP_MAX_HEADER_BYTES";
pub const HTTP_MAX_HEADERS: &str = "REMORA_HTTP_MAX_HEADERS";
pub const HTTP2_MAX_CONCURRENT_STREAMS: &str = "REMORA_HTTP2_MAX_CONCURRENT_STREAMS";
pub const INBOUND_DEFAULT_POLICY: &str = "REMORA_INBOUND_DEFAULT_POLICY";
pub const INBOUND_PORT_POLICIES: &str = "REMORA_INBOUND_PORT_POLICIES";
pub const IDENTITY_NAME: &str = "REMORA_IDENTITY_NAME";
pub const IDENTITY_TRUST_ANCHORS: &str = "REMORA_IDENTITY_TRUST_ANCHORS";
pub const IDENTITY_TOKEN_FILE: &str = "REMORA_IDENTITY_TOKEN_FILE";
pub const IDENTITY_ADDR: &str = "REMORA_IDENTITY_ADDR";
pub const IDENTITY_SVC_NAME: &str = "REMORA_IDENTITY_SVC_NAME";
pub const DESTINATION_ADDR: &str = "REMORA_DESTINATION_ADDR";
pub const DESTINATION_SVC_NAME: &str = "REMORA_DESTINATION_SVC_NAME";
pub const DESTINATION_CONTEXT: &str = "REMORA_DESTINATION_CONTEXT";
pub const DESTINATION_TIMEOUT: &str = "REMORA_DESTINATION_TIMEOUT";
pub const DESTINATION_IDLE_TIMEOUT: &str = "REMORA_DESTINATION_IDLE_TIMEOUT";
pub const DESTINATION_MAX_TARGETS: &str = "REMORA_DESTINATION_MAX_TARGETS";
pub const LOG_FORMAT: &str = "REMORA_LOG_FORMAT";

/// One configuration variable: its name, its default and what it does.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Every variable `remora proxy` reads.
pub const VARS: &[Var] = &[
    Var {
        name: OUTBOUND_ADDR,
        default: "127.0.0.1:4140",
        help: "Outbound listener address(es), comma-separated (add [::1]:4140 for IPv6)",
    },
    Var {
        name: INBOUND_ADDR,
        default: "0.0.0.0:4143",
        help: "Inbound listener address(es), comma-separated (add [::]:4143 for IPv6)",
    },
    Var {
        name: ADMIN_ADDR,
        default: "127.0.0.1:4191",
        help: "Admin listener: /live, /ready, /metrics, POST /shutdown, GET/PUT /log-level \
               (/shutdown and /log-level accept loopback peers only)",
    },
    Var {
        name: CONNECT_TIMEOUT,
        default: "1s",
        help: "Timeout for the proxy's own connects to a target",
    },
    Var {
        name: TCP_IDLE_TIMEOUT,
        default: "off",
        help: "Close a proxied TCP connection idle this long in both directions (off = never)",
    },
    Var {
        name: INBOUND_MAX_CONNECTIONS,
        default: "20000",
        help: "Concurrent inbound connections; beyond it new ones are refused and counted",
    },
    Var {
        name: OUTBOUND_MAX_CONNECTIONS,
        default: "20000",
        help: "Concurrent outbound connections; beyond it new ones are refused and counted",
    },
    Var {
        name: SHUTDOWN_GRACE,
        default: "30s",
        help: "After SIGTERM or POST /shutdown, how long open connections may finish",
    },
    Var {
        name: WORKER_THREADS,
        default: "1",
        help: "Runtime worker threads (1 = a single-threaded runtime)",
    },
    Var {
        name: INBOUND_DETECT_TIMEOUT,
        default: "5s",
        help: "Inbound: how long to wait for a client's first bytes (TLS or not) before treating it as plaintext",
    },
    Var {
        name: OUTBOUND_DETECT_TIMEOUT,
        default: "5s",
        help: "Outbound: how long to wait for the app's first bytes before treating them as opaque TCP",
    },
    Var {
        name: OPAQUE_PORTS,
        default: "25,587,3306,4444,5432,6379,9300,11211",
        help: "Ports never protocol-detected (server-speaks-first protocols), comma-separated",
    },
    Var {
        name: HTTP_MAX_HEADER_BYTES,
        default: "65536",
        help: "Largest HTTP request head accepted, bytes (beyond: 431)",
    },
    Var {
        name: HTTP_MAX_HEADERS,
        default: "100",
        help: "Most header fields in an HTTP/1 request (beyond: 431)",
    },
    Var {
        name: HTTP2_MAX_CONCURRENT_STREAMS,
        default: "2048",
        help: "Most concurrent streams a client may open on one HTTP/2 connection",
    },
    Var {
        name: INBOUND_DEFAULT_POLICY,
        default: "all-unauthenticated",
        help: "Inbound policy: all-unauthenticated, all-authenticated, cluster-authenticated or deny",
    },
    Var {
        name: INBOUND_PORT_POLICIES,
        default: "",
        help: "Per-port policies: PORT=POLICY;... where POLICY may also be allow(id, *.suffix, ...)",
    },
    Var {
        name: IDENTITY_NAME,
        default: "",
        help: "This workload's identity; unset = no identity (plaintext only)",
    },
    Var {
        name: IDENTITY_TRUST_ANCHORS,
        default: "",
        help: "PEM file of the trust anchors (one or more roots); required with an identity",
    },
    Var {
        name: IDENTITY_TOKEN_FILE,
        default: "",
        help: "File holding the workload's token, re-read at every renewal",
    },
    Var {
        name: IDENTITY_ADDR,
        default: "",
        help: "The identity service (IP:port); required with an identity",
    },
    Var {
        name: IDENTITY_SVC_NAME,
        default: "",
        help: "The identity service's own identity; required unless it is on loopback",
    },
    Var {
        name: DESTINATION_ADDR,
        default: "",
        help: "The destination (discovery) service, IP:port; unset = no discovery",
    },
    Var {
        name: DESTINATION_SVC_NAME,
        default: "",
        help: "The destination service's identity; required unless it is on loopback",
    },
    Var {
        name: DESTINATION_CONTEXT,
        default: "",
        help: "Context token sent with every discovery request",
    },
    Var {
        name: DESTINATION_TIMEOUT,
        default: "3s",
        help: "How long a new connection waits for discovery's first answer or an endpoint",
    },
    Var {
        name: DESTINATION_IDLE_TIMEOUT,
        default: "60s",
        help: "Drop a cached resolution unused for this long",
    },
    Var {
        name: DESTINATION_MAX_TARGETS,
        default: "10000",
        help: "Most resolutions cached at once (least recently used dropped first)",
    },
    Var {
        name: HTTP_REQUEST_TIMEOUT,
        default: "off",
        help: "Default outbound HTTP request timeout (504 after it); a profile route's timeout overrides it",
    },
    Var {
        name: HTTP_POOL_IDLE_TIMEOUT,
        default: "90s",
        help: "Close pooled HTTP client connections (to peers and apps) unused this long",
    },
    Var {
        name: BREAKER_MAX_FAILURES,
        default: "7",
        help: "Consecutive failures after which an endpoint is ejected from balancing",
    },
    Var {
        name: METRICS_MAX_SERIES,
        default: "10000",
        help: "Most label sets per metric store (TCP, HTTP); beyond it new ones count under overflow=\"true\"",
    },
    Var {
        name: METRICS_IDLE_TIMEOUT,
        default: "10m",
        help: "Drop a metric label set unused this long (and held by no open connection)",
    },
    Var {
        name: ACCESS_LOG,
        default: "off",
        help: "Access log: off, or json (one JSON line per HTTP request on stdout)",
    },
    Var {
        name: LOG,
        default: "info",
        help: "Log filter, RUST_LOG syntax (e.g. warn,remora_proxy=debug)",
    },
    Var {
        name: LOG_FORMAT,
        default: "plain",
        help: "Log format: plain or json",
    },
];

/// The effective configuration of `remora proxy`.
#[derive(Clone, Debug)]
pub struct Config {
    pub outbound_addrs: Vec<SocketAddr>,
    pub inbound_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub inbound_max_connections: usize,
    pub outbound_max_connections: usize,
    pub shutdown_grace: Duration,
    pub worker_threads: usize,
    pub log: LogConfig,
    pub detect_timeout: Duration,
    pub outbound_detect_timeout: Duration,
    pub opaque_ports: HashSet<u16>,
    pub http_limits: Limits,
    pub request_timeout: Option<Duration>,
    pub pool_idle_timeout: Duration,
    pub metrics: remora_metrics::bounded::Limits,
    /// One JSON line per HTTP request on stdout.
    pub access_log: bool,
    /// Gateway mode (`remora gateway`, not a variable): direct-path connections naming an
    /// exported service are forwarded to it.
    pub gateway: bool,
    pub default_policy: Policy,
    pub port_policies: HashMap<u16, Policy>,
    /// `None` when no identity is configured: the proxy then has no certificate.
    pub identity: Option<IdentityConfig>,
    /// `None` when no destination service is configured: every target is forwarded as-is.
    pub destination: Option<DestinationConfig>,
}

/// Where and how the proxy discovers its targets' endpoints.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    pub addr: SocketAddr,
    pub svc_name: Option<Name>,
    pub context: String,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub max_targets: usize,
    pub max_failures: u32,
}

fn parse_access_log(s: &str) -> Result<bool, String> {
    match s {
        "off" => Ok(false),
        "json" => Ok(true),
        _ => Err("expected off or json".into()),
    }
}

/// A variable whose value could not be used. Displays as `REMORA_X="value": reason`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub var: &'static str,
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
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; unset or empty variables take their default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env { lookup: &lookup };
        Ok(Config {
            outbound_addrs: env.parse(OUTBOUND_ADDR, parse_addrs)?,
            inbound_addrs: env.parse(INBOUND_ADDR, parse_addrs)?,
            admin_addr: env.parse(ADMIN_ADDR, parse_addr)?,
            connect_timeout: env.parse(CONNECT_TIMEOUT, parse_nonzero_duration)?,
            idle_timeout: env.parse(TCP_IDLE_TIMEOUT, parse_optional_duration)?,
            inbound_max_connections: env.parse(INBOUND_MAX_CONNECTIONS, parse_positive)?,
            outbound_max_connections: env.parse(OUTBOUND_MAX_CONNECTIONS, parse_positive)?,
            shutdown_grace: env.parse(SHUTDOWN_GRACE, parse_duration)?,
            worker_threads: env.parse(WORKER_THREADS, parse_positive)?,
            log: LogConfig {
                filter: env.parse(LOG, parse_filter)?,
                format: env.parse(LOG_FORMAT, parse_format)?,
            },
            detect_timeout: env.parse(INBOUND_DETECT_TIMEOUT, parse_nonzero_duration)?,
            outbound_detect_timeout: env.parse(OUTBOUND_DETECT_TIMEOUT, parse_nonzero_duration)?,
            opaque_ports: env.parse(OPAQUE_PORTS, parse_ports)?,
            request_timeout: env.parse(HTTP_REQUEST_TIMEOUT, parse_optional_duration)?,
            pool_idle_timeout: env.parse(HTTP_POOL_IDLE_TIMEOUT, parse_nonzero_duration)?,
            metrics: remora_metrics::bounded::Limits {
                max_series: env.parse(METRICS_MAX_SERIES, parse_positive)?,
                idle: env.parse(METRICS_IDLE_TIMEOUT, parse_nonzero_duration)?,
            },
            access_log: env.parse(ACCESS_LOG, parse_access_log)?,
            gateway: false,
            http_limits: Limits {
                max_head: env.parse(HTTP_MAX_HEADER_BYTES, parse_positive)?,
                max_headers: env.parse(HTTP_MAX_HEADERS, parse_positive)?,
                max_streams: env.parse(HTTP2_MAX_CONCURRENT_STREAMS, parse_positive)? as u32,
            },
            default_policy: env.parse(INBOUND_DEFAULT_POLICY, parse_policy)?,
            port_policies: env
                .optional(INBOUND_PORT_POLICIES, parse_port_policies)?
                .unwrap_or_default(),
            identity: identity_config(&env)?,
            destination: destination_config(&env)?,
        })
    }
}

impl Config {
    /// This configuration in gateway mode (`remora gateway`), which needs an identity (it
    /// terminates other clusters' mTLS) and discovery with the control plane's identity (it
    /// watches the cluster's exports as itself).
    pub fn gateway(self) -> Result<Self, ConfigError> {
        let missing = |var: &'static str, reason: &str| ConfigError {
            var,
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
}

fn identity_config(env: &Env<'_>) -> Result<Option<IdentityConfig>, ConfigError> {
    let Some(name) = env.optional(IDENTITY_NAME, parse_name)? else {
        return Ok(None);
    };
    let anchors_path = env.required(IDENTITY_TRUST_ANCHORS, |s| Ok(PathBuf::from(s)))?;
    let trust_anchors = std::fs::read(&anchors_path)
        .map_err(|e| e.to_string())
        .and_then(|pem| TrustAnchors::from_pem(&pem))
        .map_err(|reason| ConfigError {
            var: IDENTITY_TRUST_ANCHORS,
            value: anchors_path.display().to_string(),
            reason,
        })?;
    let addr = env.required(IDENTITY_ADDR, parse_addr)?;
    let svc_name = env.optional(IDENTITY_SVC_NAME, parse_name)?;
    if svc_name.is_none() && !addr.ip().is_loopback() {
        return Err(ConfigError {
            var: IDENTITY_SVC_NAME,
            value: String::new(),
            reason: format!(
                "required: the identity service at {addr} is not on loopback, so the proxy must \
                 know the identity it presents"
            ),
        });
    }
    Ok(Some(IdentityConfig {
        name,
        trust_anchors,
        token_file: env.required(IDENTITY_TOKEN_FILE, |s| Ok(PathBuf::from(s)))?,
        addr,
        svc_name,
    }))
}

fn destination_config(env: &Env<'_>) -> Result<Option<DestinationConfig>, ConfigError> {
    let Some(addr) = env.optional(DESTINATION_ADDR, parse_addr)? else {
        return Ok(None);
    };
    let svc_name = env.optional(DESTINATION_SVC_NAME, parse_name)?;
    if svc_name.is_none() && !addr.ip().is_loopback() {
        return Err(ConfigError {
            var: DESTINATION_SVC_NAME,
            value: String::new(),
            reason: format!("required: the destination service at {addr} is not on loopback"),
        });
    }
    if svc_name.is_some()
        && env
            .optional(IDENTITY_TRUST_ANCHORS, |s| Ok(s.to_string()))?
            .is_none()
    {
        return Err(ConfigError {
            var: IDENTITY_TRUST_ANCHORS,
            value: String::new(),
            reason: format!("required to verify {DESTINATION_SVC_NAME}"),
        });
    }
    Ok(Some(DestinationConfig {
        addr,
        svc_name,
        context: env
            .optional(DESTINATION_CONTEXT, |s| Ok(s.to_string()))?
            .unwrap_or_default(),
        timeout: env.parse(DESTINATION_TIMEOUT, parse_nonzero_duration)?,
        idle_timeout: env.parse(DESTINATION_IDLE_TIMEOUT, parse_nonzero_duration)?,
        max_targets: env.parse(DESTINATION_MAX_TARGETS, parse_positive)?,
        max_failures: env.parse(BREAKER_MAX_FAILURES, parse_positive)? as u32,
    }))
}

fn parse_name(s: &str) -> Result<Name, String> {
    s.parse()
        .map_err(|e: remora_identity::NameError| e.to_string())
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// An optional variable: `None` when unset or empty.
    fn optional<T>(
        &self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match (self.lookup)(var).filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(value) => {
                parse(value.trim())
                    .map(Some)
                    .map_err(|reason| ConfigError { var, value, reason })
            }
        }
    }

    /// A variable that must be set (given what else is configured).
    fn required<T>(
        &self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.optional(var, parse)?.ok_or_else(|| ConfigError {
            var,
            value: String::new(),
            reason: format!("required when {IDENTITY_NAME} is set"),
        })
    }

    fn parse<T>(
        &self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = (self.lookup)(var)
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default_of(var).to_string());
        parse(value.trim()).map_err(|reason| ConfigError { var, value, reason })
    }
}

/// The documented default of a variable in [`VARS`].
pub fn default_of(var: &str) -> &'static str {
    VARS.iter()
        .find(|v| v.name == var)
        .map(|v| v.default)
        .unwrap_or("")
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "expected an IP:port address, e.g. 127.0.0.1:4140 or [::1]:4140".to_string())
}

fn parse_addrs(s: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs = s
        .split(',')
        .map(|a| parse_addr(a.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let ports: std::collections::HashSet<u16> = addrs.iter().map(|a| a.port()).collect();
    if ports.len() != 1 {
        return Err("all addresses of one listener must share one port".to_string());
    }
    Ok(addrs)
}

fn parse_ports(s: &str) -> Result<HashSet<u16>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{p:?} is not a port"))
        })
        .collect()
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number greater than zero".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = config(&[]).unwrap();
        assert_eq!(c.outbound_addrs, vec!["127.0.0.1:4140".parse().unwrap()]);
        assert_eq!(c.inbound_addrs, vec!["0.0.0.0:4143".parse().unwrap()]);
        assert_eq!(c.admin_addr, "127.0.0.1:4191".parse().unwrap());
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.log.format, remora_runtime::log::LogFormat::Plain);
    }

    #[test]
    fn dual_stack_lists() {
        let c = config(&[(INBOUND_ADDR, "0.0.0.0:4143, [::]:4143")]).unwrap();
        assert_eq!(c.inbound_addrs.len(), 2);
        let e = config(&[(INBOUND_ADDR, "0.0.0.0:4143,[::]:4144")]).unwrap_err();
        assert_eq!(e.var, INBOUND_ADDR);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = config(&[(OUTBOUND_ADDR, "nonsense")]).unwrap_err();
        assert_eq!(e.var, OUTBOUND_ADDR);
        assert!(
            e.to_string()
                .starts_with("REMORA_OUTBOUND_ADDR=\"nonsense\"")
        );
        assert_eq!(
            config(&[(SHUTDOWN_GRACE, "30")]).unwrap_err().var,
            SHUTDOWN_GRACE
        );
        assert_eq!(config(&[(LOG_FORMAT, "xml")]).unwrap_err().var, LOG_FORMAT);
        assert_eq!(config(&[(LOG, "info,[=")]).unwrap_err().var, LOG);
        assert_eq!(
            config(&[(CONNECT_TIMEOUT, "0s")]).unwrap_err().var,
            CONNECT_TIMEOUT
        );
        assert_eq!(
            config(&[(INBOUND_MAX_CONNECTIONS, "0")]).unwrap_err().var,
            INBOUND_MAX_CONNECTIONS
        );
    }

    #[test]
    fn identity_is_optional_but_complete_when_set() {
        assert!(config(&[]).unwrap().identity.is_none());
        let name = "web.shop.serviceaccount.identity.linkerd.east.example";
        let e = config(&[(IDENTITY_NAME, name)]).unwrap_err();
        assert_eq!(e.var, IDENTITY_TRUST_ANCHORS);
        let e = config(&[(IDENTITY_NAME, "not a name")]).unwrap_err();
        assert_eq!(e.var, IDENTITY_NAME);
        let e = config(&[
            (IDENTITY_NAME, name),
            (IDENTITY_TRUST_ANCHORS, "/nonexistent.pem"),
        ])
        .unwrap_err();
        assert_eq!(e.var, IDENTITY_TRUST_ANCHORS);
    }

    #[test]
    fn policies() {
        let c = config(&[(
            INBOUND_PORT_POLICIES,
            "8080=deny; 7000=allow(*.east.example)",
        )])
        .unwrap();
        assert_eq!(c.port_policies.len(), 2);
        assert_eq!(c.default_policy, Policy::AllUnauthenticated);
        assert_eq!(
            config(&[(INBOUND_DEFAULT_POLICY, "open")]).unwrap_err().var,
            INBOUND_DEFAULT_POLICY
        );
        assert_eq!(
            config(&[(INBOUND_PORT_POLICIES, "x=deny")])
                .unwrap_err()
                .var,
            INBOUND_PORT_POLICIES
        );
    }

    #[test]
    fn config_md_documents_every_variable() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../CONFIG.md"))
            .expect("CONFIG.md at the workspace root");
        for var in VARS {
            assert!(
                doc.contains(var.name),
                "CONFIG.md does not document {}",
                var.name
            );
            assert!(
                doc.contains(&format!("`{}`", var.default)),
                "CONFIG.md does not give {}'s default `{}`",
                var.name,
                var.default
            );
        }
    }
}
