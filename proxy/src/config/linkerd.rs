//! Linkerd's proxy environment (`LINKERD2_PROXY_*`), as Linkerd's injector renders it for
//! linkerd2-proxy, read as Remora's configuration.
//!
//! Each Linkerd variable is translated onto the `REMORA_*` setting that means the same thing
//! ([`LINKERD_VARS`] says which, and whether Remora honours it); the `REMORA_*` parser then
//! reads the result, so both surfaces share one set of syntaxes and checks. Precedence: an
//! explicit `REMORA_*` variable, then the Linkerd variable, then Linkerd's default (where
//! linkerd2-proxy's differs from Remora's), then Remora's. An error names the variable the
//! value came from.
//!
//! `""` means unset, as the chart renders optional values. Variables Remora does not know are
//! ignored (logged at debug); a variable that would change routing and that Remora does not
//! implement is refused (exit 64), never silently ignored.

use std::collections::HashMap;

use super::ConfigError;
use super::vars::*;

/// Whether Remora honours a Linkerd variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Honoured {
    Yes,
    /// Honoured, with this difference.
    Partly(&'static str),
    /// Read and checked, but without effect, and why (a warning at start when set to anything
    /// but linkerd2-proxy's default).
    No(&'static str),
    /// Read and checked; it configures something Remora does not have, whose absence changes
    /// nothing for the pod's traffic (no warning), and why.
    Inert(&'static str),
    /// Any value but empty is refused (exit 64), and why.
    Refused(&'static str),
}

/// One of Linkerd's proxy variables and what Remora does with it.
#[derive(Clone, Copy, Debug)]
pub struct LinkerdVar {
    /// Without the `LINKERD2_PROXY_` prefix.
    pub name: &'static str,
    pub meaning: &'static str,
    /// The `REMORA_*` setting it feeds ("" when none).
    pub remora: &'static str,
    /// linkerd2-proxy's default (what applies when the variable is unset).
    pub default: &'static str,
    pub honoured: Honoured,
}

/// The prefix of every Linkerd proxy variable.
pub const PREFIX: &str = "LINKERD2_PROXY_";

const fn lv(
    name: &'static str,
    meaning: &'static str,
    remora: &'static str,
    default: &'static str,
    honoured: Honoured,
) -> LinkerdVar {
    LinkerdVar {
        name,
        meaning,
        remora,
        default,
        honoured,
    }
}

use Honoured::{Inert, No, Partly, Refused, Yes};

/// Every variable of linkerd2-proxy's environment (`linkerd/app/src/env.rs`, `env/`) and what
/// Remora does with it. CONFIG.md renders this table; a test keeps the two in step.
pub const LINKERD_VARS: &[LinkerdVar] = &[
    lv(
        "INBOUND_LISTEN_ADDR",
        "inbound listener",
        INBOUND_ADDR,
        "0.0.0.0:4143",
        Yes,
    ),
    lv(
        "OUTBOUND_LISTEN_ADDRS",
        "outbound listeners (one or two addresses)",
        OUTBOUND_ADDR,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_LISTEN_ADDR",
        "outbound listener (older; OUTBOUND_LISTEN_ADDRS wins)",
        OUTBOUND_ADDR,
        "127.0.0.1:4140",
        Yes,
    ),
    lv(
        "ADMIN_LISTEN_ADDR",
        "admin listener (probes, metrics)",
        ADMIN_ADDR,
        "127.0.0.1:4191",
        Yes,
    ),
    lv(
        "CONTROL_LISTEN_ADDR",
        "tap server listener",
        "",
        "0.0.0.0:4190",
        Inert("checked; Remora has no tap server"),
    ),
    lv(
        "IDENTITY_DIR",
        "directory of key.p8 and csr.der",
        IDENTITY_DIR,
        "",
        Yes,
    ),
    lv(
        "IDENTITY_TRUST_ANCHORS",
        "trust anchors, inline PEM",
        IDENTITY_TRUST_ANCHORS,
        "",
        Yes,
    ),
    lv(
        "IDENTITY_TOKEN_FILE",
        "service-account token file, re-read at each renewal",
        IDENTITY_TOKEN_FILE,
        "",
        Yes,
    ),
    lv(
        "IDENTITY_SVC_ADDR",
        "identity controller (host:port)",
        IDENTITY_ADDR,
        "",
        Yes,
    ),
    lv(
        "IDENTITY_SVC_NAME",
        "identity controller's identity",
        IDENTITY_SVC_NAME,
        "",
        Yes,
    ),
    lv(
        "IDENTITY_LOCAL_NAME",
        "this workload's identity",
        IDENTITY_NAME,
        "",
        Yes,
    ),
    lv(
        "IDENTITY_SERVER_ID",
        "this workload's identity (with IDENTITY_SERVER_NAME)",
        IDENTITY_NAME,
        "",
        Partly("DNS names only, equal to IDENTITY_SERVER_NAME"),
    ),
    lv(
        "IDENTITY_SERVER_NAME",
        "the SNI this proxy answers to",
        IDENTITY_NAME,
        "",
        Partly("must equal IDENTITY_SERVER_ID"),
    ),
    lv(
        "IDENTITY_MIN_REFRESH",
        "earliest renewal",
        IDENTITY_MIN_REFRESH,
        "10s",
        Yes,
    ),
    lv(
        "IDENTITY_MAX_REFRESH",
        "latest renewal",
        IDENTITY_MAX_REFRESH,
        "1d",
        Yes,
    ),
    lv(
        "IDENTITY_DISABLED",
        "turns identity off (no longer supported)",
        "",
        "",
        Refused("identity is mandatory"),
    ),
    lv(
        "IDENTITY_SPIRE_WORKLOAD_API_ADDRESS",
        "SPIRE workload API",
        "",
        "",
        Refused("Remora certifies with Linkerd's identity controller only"),
    ),
    lv(
        "IDENTITY_SPIRE_SOCKET",
        "SPIRE workload API (older name)",
        "",
        "",
        Refused("Remora certifies with Linkerd's identity controller only"),
    ),
    lv(
        "DESTINATION_SVC_ADDR",
        "destination controller (host:port)",
        DESTINATION_ADDR,
        "",
        Yes,
    ),
    lv(
        "DESTINATION_SVC_NAME",
        "destination controller's identity",
        DESTINATION_SVC_NAME,
        "",
        Yes,
    ),
    lv(
        "DESTINATION_CONTEXT",
        "context token, sent verbatim",
        DESTINATION_CONTEXT,
        "",
        Yes,
    ),
    lv(
        "DESTINATION_PROFILE_SUFFIXES",
        "names whose profiles are asked for",
        DESTINATION_PROFILE_SUFFIXES,
        "svc.cluster.local.",
        Yes,
    ),
    lv(
        "DESTINATION_PROFILE_NETWORKS",
        "addresses whose profiles are asked for",
        DESTINATION_PROFILE_NETWORKS,
        "",
        Yes,
    ),
    lv(
        "DESTINATION_PROFILE_INITIAL_TIMEOUT",
        "inbound wait for a profile",
        "",
        "500ms",
        No("Remora's inbound does not use profiles"),
    ),
    lv(
        "POLICY_SVC_ADDR",
        "policy controller (host:port)",
        POLICY_ADDR,
        "",
        Yes,
    ),
    lv(
        "POLICY_SVC_NAME",
        "policy controller's identity",
        POLICY_SVC_NAME,
        "",
        Yes,
    ),
    lv(
        "POLICY_WORKLOAD",
        "this workload for the policy controller, verbatim",
        POLICY_WORKLOAD,
        "",
        Yes,
    ),
    lv(
        "POLICY_CLUSTER_NETWORKS",
        "the cluster's networks",
        POLICY_CLUSTER_NETWORKS,
        "",
        Yes,
    ),
    lv(
        "INBOUND_IPS",
        "the pod's IPs (status.podIPs)",
        INBOUND_IPS,
        "",
        Yes,
    ),
    lv(
        "INBOUND_PORTS",
        "the ports the pod declares",
        INBOUND_PORTS,
        "",
        Yes,
    ),
    lv(
        "INBOUND_DEFAULT_POLICY",
        "inbound default policy",
        INBOUND_DEFAULT_POLICY,
        "all-unauthenticated",
        Yes,
    ),
    lv(
        "INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
        "opaque ports",
        OPAQUE_PORTS,
        "",
        Partly("opaque in both directions"),
    ),
    lv(
        "INBOUND_PORTS_REQUIRE_IDENTITY",
        "ports that require an mTLS identity",
        INBOUND_PORTS_REQUIRE_IDENTITY,
        "",
        Partly("enforced (linkerd2-proxy reads but ignores it)"),
    ),
    lv(
        "INBOUND_PORTS_REQUIRE_TLS",
        "ports that require mesh TLS",
        INBOUND_PORTS_REQUIRE_TLS,
        "",
        Partly("enforced (linkerd2-proxy reads but ignores it)"),
    ),
    lv(
        "INBOUND_CONNECT_TIMEOUT",
        "inbound connect to the app",
        INBOUND_CONNECT_TIMEOUT,
        "300ms",
        Yes,
    ),
    lv(
        "OUTBOUND_CONNECT_TIMEOUT",
        "outbound connect",
        CONNECT_TIMEOUT,
        "1s",
        Yes,
    ),
    lv(
        "INBOUND_DETECT_TIMEOUT",
        "inbound protocol detection",
        INBOUND_DETECT_TIMEOUT,
        "10s",
        Yes,
    ),
    lv(
        "OUTBOUND_DETECT_TIMEOUT",
        "outbound protocol detection",
        OUTBOUND_DETECT_TIMEOUT,
        "10s",
        Yes,
    ),
    lv(
        "INBOUND_ACCEPT_KEEPALIVE",
        "TCP keepalive, accepted inbound",
        INBOUND_ACCEPT_KEEPALIVE,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_ACCEPT_KEEPALIVE",
        "TCP keepalive, accepted outbound",
        OUTBOUND_ACCEPT_KEEPALIVE,
        "",
        Yes,
    ),
    lv(
        "INBOUND_CONNECT_KEEPALIVE",
        "TCP keepalive, inbound connects",
        INBOUND_CONNECT_KEEPALIVE,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_CONNECT_KEEPALIVE",
        "TCP keepalive, outbound connects",
        OUTBOUND_CONNECT_KEEPALIVE,
        "",
        Yes,
    ),
    lv(
        "INBOUND_ACCEPT_USER_TIMEOUT",
        "TCP_USER_TIMEOUT, accepted inbound",
        INBOUND_ACCEPT_USER_TIMEOUT,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_ACCEPT_USER_TIMEOUT",
        "TCP_USER_TIMEOUT, accepted outbound",
        OUTBOUND_ACCEPT_USER_TIMEOUT,
        "",
        Yes,
    ),
    lv(
        "INBOUND_CONNECT_USER_TIMEOUT",
        "TCP_USER_TIMEOUT, inbound connects",
        INBOUND_CONNECT_USER_TIMEOUT,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_CONNECT_USER_TIMEOUT",
        "TCP_USER_TIMEOUT, outbound connects",
        OUTBOUND_CONNECT_USER_TIMEOUT,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_DISCOVERY_IDLE_TIMEOUT",
        "outbound discovery cache idle",
        DESTINATION_IDLE_TIMEOUT,
        "5s",
        Yes,
    ),
    lv(
        "INBOUND_DISCOVERY_IDLE_TIMEOUT",
        "inbound policy cache idle",
        POLICY_IDLE_TIMEOUT,
        "90s",
        Yes,
    ),
    lv(
        "OUTBOUND_HTTP_FAILFAST_TIMEOUT",
        "outbound wait before failing fast",
        DESTINATION_TIMEOUT,
        "3s",
        Partly("how long a request waits for an endpoint"),
    ),
    lv(
        "OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
        "HTTP/1 pool idle",
        HTTP_POOL_IDLE_TIMEOUT,
        "3s",
        Partly("one idle timeout for every pool"),
    ),
    lv(
        "OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT",
        "idle HTTP/1 connections per endpoint",
        HTTP_POOL_MAX_IDLE,
        "10000",
        Partly("one bound for both directions"),
    ),
    lv(
        "CONTROL_STREAM_INITIAL_TIMEOUT",
        "first answer on a control stream",
        CONTROL_STREAM_INITIAL_TIMEOUT,
        "",
        Yes,
    ),
    lv(
        "CONTROL_STREAM_IDLE_TIMEOUT",
        "silence on a control stream",
        CONTROL_STREAM_IDLE_TIMEOUT,
        "",
        Yes,
    ),
    lv(
        "CONTROL_STREAM_LIFETIME",
        "life of a control stream",
        CONTROL_STREAM_LIFETIME,
        "",
        Yes,
    ),
    lv(
        "SHUTDOWN_ENDPOINT_ENABLED",
        "enables POST /shutdown",
        SHUTDOWN_ENDPOINT,
        "false",
        Yes,
    ),
    lv(
        "SHUTDOWN_GRACE_PERIOD",
        "drain grace period",
        SHUTDOWN_GRACE,
        "2m",
        Yes,
    ),
    lv(
        "CORES",
        "worker threads (with CORES_MIN)",
        WORKER_THREADS,
        "1",
        Yes,
    ),
    lv(
        "CORES_MIN",
        "least worker threads",
        WORKER_THREADS,
        "1",
        Yes,
    ),
    lv("CORES_MAX", "most worker threads", WORKER_THREADS, "", Yes),
    lv(
        "CORES_MAX_RATIO",
        "most worker threads, as a share of the CPUs",
        WORKER_THREADS,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
        "inbound HTTP/2 keepalive interval",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
        "inbound HTTP/2 keepalive timeout",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
        "inbound HTTP/2 streams",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
        "inbound HTTP/2 stream window",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
        "inbound HTTP/2 connection window",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_ADAPTIVE_FLOW_CONTROL",
        "inbound HTTP/2 adaptive windows",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_MAX_FRAME_SIZE",
        "inbound HTTP/2 frame size",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_MAX_HEADER_LIST_SIZE",
        "inbound HTTP/2 header list",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS",
        "inbound HTTP/2 reset streams",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "INBOUND_SERVER_HTTP2_MAX_SEND_BUF_SIZE",
        "inbound HTTP/2 send buffer",
        INBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
        "outbound HTTP/2 keepalive interval",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
        "outbound HTTP/2 keepalive timeout",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
        "outbound HTTP/2 streams",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
        "outbound HTTP/2 stream window",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
        "outbound HTTP/2 connection window",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_ADAPTIVE_FLOW_CONTROL",
        "outbound HTTP/2 adaptive windows",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_MAX_FRAME_SIZE",
        "outbound HTTP/2 frame size",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_MAX_HEADER_LIST_SIZE",
        "outbound HTTP/2 header list",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS",
        "outbound HTTP/2 reset streams",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "OUTBOUND_SERVER_HTTP2_MAX_SEND_BUF_SIZE",
        "outbound HTTP/2 send buffer",
        OUTBOUND_HTTP2_SERVER,
        "",
        Yes,
    ),
    lv(
        "HTTP2_INITIAL_STREAM_WINDOW_SIZE",
        "HTTP/2 client stream window",
        HTTP2_CLIENT,
        "65535",
        Yes,
    ),
    lv(
        "HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
        "HTTP/2 client connection window",
        HTTP2_CLIENT,
        "1048576",
        Yes,
    ),
    lv(
        "LOG",
        "log filter (a `linkerd` target means Remora's crates)",
        LOG,
        "warn,linkerd=info,hickory=error",
        Yes,
    ),
    lv(
        "LOG_FORMAT",
        "log format: plain or json",
        LOG_FORMAT,
        "plain",
        Yes,
    ),
    lv(
        "ACCESS_LOG",
        "access log: apache or json",
        ACCESS_LOG,
        "",
        Yes,
    ),
    lv(
        "METRICS_RETAIN_IDLE",
        "metric series idle",
        METRICS_IDLE_TIMEOUT,
        "10m",
        Yes,
    ),
    lv(
        "INGRESS_MODE",
        "ingress: route by l5d-dst-override or Host",
        INGRESS_MODE,
        "false",
        Yes,
    ),
    lv(
        "INBOUND_GATEWAY_SUFFIXES",
        "names a multicluster gateway forwards to",
        "",
        "",
        Refused("run the gateway as `remora gateway` under `remora control`"),
    ),
    lv(
        "TAP_SVC_NAME",
        "the tap client's identity",
        "",
        "",
        Inert("Remora has no tap server"),
    ),
    lv(
        "TRACE_COLLECTOR_SVC_ADDR",
        "trace collector (OTLP/gRPC, host:port)",
        TRACE_COLLECTOR_ADDR,
        "",
        Yes,
    ),
    lv(
        "TRACE_COLLECTOR_SVC_NAME",
        "trace collector's identity (mTLS)",
        TRACE_COLLECTOR_SVC_NAME,
        "",
        Yes,
    ),
    lv(
        "TRACE_SERVICE_NAME",
        "the spans' service.name",
        TRACE_SERVICE_NAME,
        "",
        Yes,
    ),
    lv(
        "TRACE_ATTRIBUTES_PATH",
        "trace attributes file (the pod's labels)",
        TRACE_ATTRIBUTES_PATH,
        "",
        Yes,
    ),
    lv(
        "TRACE_EXTRA_ATTRIBUTES",
        "extra trace attributes, key=value lines",
        TRACE_EXTRA_ATTRIBUTES,
        "",
        Yes,
    ),
    lv(
        "TRACE_PROTOCOL",
        "trace protocol (no longer read by linkerd2-proxy)",
        "",
        "",
        Inert(
            "linkerd2-proxy ignores it too: spans are OpenTelemetry (OTLP/gRPC) whatever it says",
        ),
    ),
    lv(
        "INBOUND_MAX_IN_FLIGHT",
        "inbound requests in flight",
        INBOUND_MAX_IN_FLIGHT,
        "100000",
        Partly("beyond it a request is answered 503 at once; Remora's default is 10000"),
    ),
    lv(
        "OUTBOUND_MAX_IN_FLIGHT",
        "outbound requests in flight",
        OUTBOUND_MAX_IN_FLIGHT,
        "100000",
        Partly("beyond it a request is answered 503 at once; Remora's default is 10000"),
    ),
    lv(
        "INBOUND_HTTP_QUEUE_CAPACITY",
        "inbound request queue",
        "",
        "10000",
        No("Remora queues no requests"),
    ),
    lv(
        "OUTBOUND_HTTP_QUEUE_CAPACITY",
        "outbound request queue",
        "",
        "10000",
        No("Remora queues no requests"),
    ),
    lv(
        "OUTBOUND_TCP_QUEUE_CAPACITY",
        "outbound connection queue",
        "",
        "10000",
        No("Remora queues no connections"),
    ),
    lv(
        "INBOUND_HTTP_FAILFAST_TIMEOUT",
        "inbound fail-fast",
        "",
        "1s",
        No("the inbound has one endpoint, the app"),
    ),
    lv(
        "OUTBOUND_TCP_FAILFAST_TIMEOUT",
        "outbound TCP fail-fast",
        "",
        "3s",
        No("REMORA_DESTINATION_TIMEOUT bounds both"),
    ),
    lv(
        "MAX_IDLE_CONNS_PER_ENDPOINT",
        "inbound idle connections per endpoint",
        "",
        "10000",
        No("one bound: OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT"),
    ),
    lv(
        "INBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
        "inbound HTTP/1 pool idle",
        "",
        "3s",
        No("one idle timeout: OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT"),
    ),
    lv(
        "INBOUND_CONNECT_EXP_BACKOFF_MIN",
        "connect backoff",
        "",
        "100ms",
        No("Remora fails a connect at once"),
    ),
    lv(
        "INBOUND_CONNECT_EXP_BACKOFF_MAX",
        "connect backoff",
        "",
        "10s",
        No("Remora fails a connect at once"),
    ),
    lv(
        "INBOUND_CONNECT_EXP_BACKOFF_JITTER",
        "connect backoff",
        "",
        "0.1",
        No("Remora fails a connect at once"),
    ),
    lv(
        "OUTBOUND_CONNECT_EXP_BACKOFF_MIN",
        "connect backoff",
        "",
        "100ms",
        No("Remora fails a connect at once"),
    ),
    lv(
        "OUTBOUND_CONNECT_EXP_BACKOFF_MAX",
        "connect backoff",
        "",
        "60s",
        No("Remora fails a connect at once"),
    ),
    lv(
        "OUTBOUND_CONNECT_EXP_BACKOFF_JITTER",
        "connect backoff",
        "",
        "0.1",
        No("Remora fails a connect at once"),
    ),
    lv(
        "INBOUND_TCP_LISTEN_BACKLOG",
        "listen backlog",
        "",
        "",
        No("the backlog is 1024"),
    ),
    lv(
        "OUTBOUND_TCP_LISTEN_BACKLOG",
        "listen backlog",
        "",
        "",
        No("the backlog is 1024"),
    ),
    lv(
        "DNS_MIN_TTL",
        "least DNS re-resolution interval",
        "",
        "",
        No("control planes are re-resolved every 10 s and after failures"),
    ),
    lv(
        "DNS_MAX_TTL",
        "most DNS re-resolution interval",
        "",
        "",
        No("control planes are re-resolved every 10 s and after failures"),
    ),
    lv(
        "INBOUND_METRICS_AUTHORITY_LABELS",
        "authority labels on inbound metrics",
        "",
        "",
        No("Remora's inbound HTTP metrics never carry authority (linkerd2-proxy's default)"),
    ),
    lv(
        "OUTBOUND_METRICS_HOSTNAME_LABELS",
        "hostname labels on outbound metrics",
        "",
        "false",
        No("not yet"),
    ),
    lv(
        "OUTBOUND_DISABLE_INFORMATIONAL_HEADERS",
        "no l5d-* informational headers",
        "",
        "false",
        No("Remora adds none"),
    ),
];

/// A setting translated from a Linkerd variable.
#[derive(Clone, Debug)]
pub(super) struct Translated {
    /// The value in the `REMORA_*` syntax.
    pub value: String,
    /// The Linkerd variable it came from (full name), or `""` for Linkerd's default.
    pub from: String,
    /// The Linkerd variable's own value, for error messages.
    pub raw: String,
}

/// Linkerd's environment, translated.
#[derive(Debug, Default)]
pub(super) struct Surface {
    pub values: HashMap<&'static str, Translated>,
    /// Known variables set but without effect, with why, for a warning at start.
    pub unhonoured: Vec<(String, String)>,
    /// `LINKERD2_PROXY_*` variables Remora does not know (logged at debug).
    pub unknown: Vec<String>,
}

fn full(name: &str) -> String {
    format!("{PREFIX}{name}")
}

impl Surface {
    fn set(&mut self, remora: &'static str, value: String, from: String, raw: String) {
        self.values.insert(remora, Translated { value, from, raw });
    }
}

/// Reads Linkerd's surface through `get` (which answers a variable's value as set, empty
/// included). `names` lists every variable of the environment, when known, to report unknown
/// Linkerd ones. `None` when no Linkerd variable is set.
pub(super) fn read(
    get: &dyn Fn(&str) -> Option<String>,
    names: Option<&[String]>,
) -> Result<Option<Surface>, ConfigError> {
    let known = |n: &str| LINKERD_VARS.iter().any(|v| full(v.name) == n);
    let present = LINKERD_VARS.iter().any(|v| get(&full(v.name)).is_some())
        || names.is_some_and(|ns| ns.iter().any(|n| n.starts_with(PREFIX)));
    if !present {
        return Ok(None);
    }
    let mut s = Surface::default();
    if let Some(ns) = names {
        s.unknown = ns
            .iter()
            .filter(|n| n.starts_with(PREFIX) && !known(n))
            .cloned()
            .collect();
    }
    // Non-empty values (the chart renders optional values as "").
    let value = |name: &str| get(&full(name)).filter(|v| !v.trim().is_empty());
    let bad = |name: &str, raw: &str, reason: String| ConfigError {
        var: full(name),
        value: raw.to_string(),
        reason,
    };
    for v in LINKERD_VARS {
        let Some(raw) = value(v.name) else {
            // Linkerd's default where it differs from Remora's.
            if LINKERD_DEFAULTS.contains(&v.name) && !v.remora.is_empty() {
                let d = translate_default(v.name, v.default);
                s.values.entry(v.remora).or_insert(Translated {
                    value: d,
                    from: String::new(),
                    raw: v.default.to_string(),
                });
            }
            continue;
        };
        match v.honoured {
            Refused(why) => {
                return Err(bad(v.name, &raw, format!("not supported by Remora: {why}")));
            }
            // Set to linkerd2-proxy's default, it asks for what Remora does anyway (the chart
            // renders several such values): nothing to warn about.
            No(_) if raw.trim() == v.default => {}
            No(why) => s.unhonoured.push((full(v.name), why.to_string())),
            Yes | Partly(_) | Inert(_) => {}
        }
        if SPECIAL.contains(&v.name) || v.remora.is_empty() {
            continue;
        }
        // The Remora syntaxes are supersets of Linkerd's: the value passes as it is.
        s.set(v.remora, raw.clone(), full(v.name), raw);
    }
    special(&mut s, &value, &bad)?;
    Ok(Some(s))
}

/// Variables whose Linkerd default applies under Linkerd's surface (linkerd2-proxy's defaults
/// where they differ from Remora's).
const LINKERD_DEFAULTS: &[&str] = &[
    "INBOUND_CONNECT_TIMEOUT",
    "INBOUND_DETECT_TIMEOUT",
    "OUTBOUND_DETECT_TIMEOUT",
    "OUTBOUND_DISCOVERY_IDLE_TIMEOUT",
    "DESTINATION_PROFILE_SUFFIXES",
    "DESTINATION_PROFILE_NETWORKS",
    "SHUTDOWN_ENDPOINT_ENABLED",
    "SHUTDOWN_GRACE_PERIOD",
    "LOG",
];

fn translate_default(name: &str, default: &str) -> String {
    match name {
        "LOG" => log_filter(default).0,
        "DESTINATION_PROFILE_NETWORKS" => String::new(),
        _ => default.to_string(),
    }
}

/// Variables translated by [`special`] rather than passed on as they are.
const SPECIAL: &[&str] = &[
    "OUTBOUND_LISTEN_ADDRS",
    "OUTBOUND_LISTEN_ADDR",
    "CONTROL_LISTEN_ADDR",
    "IDENTITY_LOCAL_NAME",
    "IDENTITY_SERVER_ID",
    "IDENTITY_SERVER_NAME",
    "SHUTDOWN_ENDPOINT_ENABLED",
    "INGRESS_MODE",
    "CORES",
    "CORES_MIN",
    "CORES_MAX",
    "CORES_MAX_RATIO",
    "LOG",
    "HTTP2_INITIAL_STREAM_WINDOW_SIZE",
    "HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
];

type Get<'a> = &'a dyn Fn(&str) -> Option<String>;
type Bad<'a> = &'a dyn Fn(&str, &str, String) -> ConfigError;

fn special(s: &mut Surface, value: Get<'_>, bad: Bad<'_>) -> Result<(), ConfigError> {
    // Listeners: OUTBOUND_LISTEN_ADDRS (one or two) wins over the older OUTBOUND_LISTEN_ADDR.
    for name in ["OUTBOUND_LISTEN_ADDR", "OUTBOUND_LISTEN_ADDRS"] {
        if let Some(raw) = value(name) {
            if name == "OUTBOUND_LISTEN_ADDRS" && raw.split(',').count() > 2 {
                return Err(bad(name, &raw, "at most two addresses".into()));
            }
            s.set(OUTBOUND_ADDR, raw.trim().to_string(), full(name), raw);
        }
    }
    if let Some(raw) = value("CONTROL_LISTEN_ADDR") {
        super::parse::addr(&raw).map_err(|e| bad("CONTROL_LISTEN_ADDR", &raw, e))?;
    }
    // The workload's identity: LOCAL_NAME, else SERVER_ID and SERVER_NAME, which must agree.
    match (
        value("IDENTITY_LOCAL_NAME"),
        value("IDENTITY_SERVER_ID"),
        value("IDENTITY_SERVER_NAME"),
    ) {
        (Some(local), _, _) => s.set(
            IDENTITY_NAME,
            local.trim().to_string(),
            full("IDENTITY_LOCAL_NAME"),
            local,
        ),
        (None, Some(id), Some(name)) => {
            if id.trim() != name.trim().trim_end_matches('.') {
                return Err(bad(
                    "IDENTITY_SERVER_ID",
                    &id,
                    format!("must equal LINKERD2_PROXY_IDENTITY_SERVER_NAME ({name:?})"),
                ));
            }
            s.set(
                IDENTITY_NAME,
                id.trim().to_string(),
                full("IDENTITY_SERVER_ID"),
                id,
            );
        }
        (None, Some(id), None) => {
            return Err(bad(
                "IDENTITY_SERVER_ID",
                &id,
                "needs LINKERD2_PROXY_IDENTITY_SERVER_NAME".into(),
            ));
        }
        (None, None, Some(name)) => {
            return Err(bad(
                "IDENTITY_SERVER_NAME",
                &name,
                "needs LINKERD2_PROXY_IDENTITY_SERVER_ID".into(),
            ));
        }
        (None, None, None) => {}
    }
    for (name, remora) in [
        ("SHUTDOWN_ENDPOINT_ENABLED", SHUTDOWN_ENDPOINT),
        ("INGRESS_MODE", INGRESS_MODE),
    ] {
        if let Some(raw) = value(name) {
            let b = super::parse::boolean(&raw).map_err(|e| bad(name, &raw, e))?;
            s.set(remora, b.to_string(), full(name), raw);
        }
    }
    if let Some((threads, from, raw)) = cores(value, bad)? {
        s.set(WORKER_THREADS, threads.to_string(), from, raw);
    }
    if let Some(raw) = value("LOG") {
        let (filter, dropped) = log_filter(&raw);
        for d in dropped {
            s.unhonoured.push((
                full("LOG"),
                format!("directive {d:?} dropped: not a valid filter"),
            ));
        }
        s.set(LOG, filter, full("LOG"), raw);
    }
    http2_params(s, value, bad)?;
    Ok(())
}

/// Worker threads as linkerd2-proxy chooses them: `CORES_MAX`, else `CORES_MAX_RATIO` of the
/// CPUs available (cgroup quotas included), else the minimum; never under `CORES_MIN` (or
/// `CORES`, or 1) nor over the CPUs available.
fn cores(value: Get<'_>, bad: Bad<'_>) -> Result<Option<(usize, String, String)>, ConfigError> {
    let count = |name: &str| -> Result<Option<(usize, String)>, ConfigError> {
        match value(name) {
            None => Ok(None),
            Some(raw) => super::parse::positive(&raw)
                .map(|n| Some((n, raw.clone())))
                .map_err(|e| bad(name, &raw, e)),
        }
    };
    let ratio = match value("CORES_MAX_RATIO") {
        None => None,
        Some(raw) => match raw.trim().parse::<f64>() {
            Ok(r) if r > 0.0 && r <= 1.0 => Some((r, raw)),
            _ => {
                return Err(bad(
                    "CORES_MAX_RATIO",
                    &raw,
                    "expected a number in (0, 1]".into(),
                ));
            }
        },
    };
    let (min, max) = (count("CORES_MIN")?.or(count("CORES")?), count("CORES_MAX")?);
    if min.is_none() && max.is_none() && ratio.is_none() {
        return Ok(None);
    }
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let floor = min.as_ref().map_or(1, |m| m.0);
    let ceiling = match (&max, &ratio) {
        (Some((m, _)), _) => *m,
        (None, Some((r, _))) => ((available as f64) * r).round() as usize,
        (None, None) => floor,
    };
    let threads = ceiling.max(floor).min(available).max(1);
    let raw = [min.map(|m| m.1), max.map(|m| m.1), ratio.map(|r| r.1)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(",");
    Ok(Some((threads, full("CORES*"), raw)))
}

/// Linkerd's log filter for Remora: a `linkerd` target (`linkerd=info`, `linkerd_app=debug`)
/// means Remora's crates; directives the filter syntax refuses are dropped (linkerd2-proxy
/// parses its filter leniently too) and returned.
pub(super) fn log_filter(raw: &str) -> (String, Vec<String>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for d in raw.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d = match d.split_once('=') {
            Some((target, level))
                if target == "linkerd"
                    || target.starts_with("linkerd_")
                    || target.starts_with("linkerd::") =>
            {
                format!("remora={level}")
            }
            _ => d.to_string(),
        };
        if remora_runtime::log::parse_filter(&d).is_ok() {
            kept.push(d);
        } else {
            dropped.push(d);
        }
    }
    if kept.is_empty() {
        kept.push("warn".into());
    }
    (kept.join(","), dropped)
}

/// HTTP/2 parameters: `{IN,OUT}BOUND_SERVER_HTTP2_*` into one `REMORA_*_HTTP2_SERVER` list per
/// direction, `HTTP2_INITIAL_*_WINDOW_SIZE` into `REMORA_HTTP2_CLIENT`.
fn http2_params(s: &mut Surface, value: Get<'_>, bad: Bad<'_>) -> Result<(), ConfigError> {
    const PARAMS: [&str; 10] = [
        "KEEP_ALIVE_INTERVAL",
        "KEEP_ALIVE_TIMEOUT",
        "MAX_CONCURRENT_STREAMS",
        "INITIAL_STREAM_WINDOW_SIZE",
        "INITIAL_CONNECTION_WINDOW_SIZE",
        "ADAPTIVE_FLOW_CONTROL",
        "MAX_FRAME_SIZE",
        "MAX_HEADER_LIST_SIZE",
        "MAX_PENDING_ACCEPT_RESET_STREAMS",
        "MAX_SEND_BUF_SIZE",
    ];
    let groups: [(&str, &[&str], &'static str); 3] = [
        ("INBOUND_SERVER_HTTP2_", &PARAMS, INBOUND_HTTP2_SERVER),
        ("OUTBOUND_SERVER_HTTP2_", &PARAMS, OUTBOUND_HTTP2_SERVER),
        (
            "HTTP2_",
            &[
                "INITIAL_STREAM_WINDOW_SIZE",
                "INITIAL_CONNECTION_WINDOW_SIZE",
            ],
            HTTP2_CLIENT,
        ),
    ];
    for (prefix, params, remora) in groups {
        let mut pairs = Vec::new();
        let mut from = Vec::new();
        for p in params {
            let name = format!("{prefix}{p}");
            if let Some(raw) = value(&name) {
                let pair = format!("{}={}", p.to_ascii_lowercase(), raw.trim());
                crate::http::server::Http2Params::parse(&pair).map_err(|e| bad(&name, &raw, e))?;
                pairs.push(pair);
                from.push(full(&name));
            }
        }
        if !pairs.is_empty() {
            let joined = pairs.join(",");
            s.set(remora, joined.clone(), from.join(","), joined);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkerds_default_log_filter_parses_and_means_remora() {
        let (f, dropped) =
            log_filter("warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off");
        assert!(f.starts_with("warn,remora=info,hickory=error"), "{f}");
        assert!(remora_runtime::log::parse_filter(&f).is_ok(), "{f}");
        assert!(dropped.is_empty(), "{dropped:?}");
        let (f, dropped) = log_filter("info,[=");
        assert_eq!(f, "info");
        assert_eq!(dropped, ["[="]);
    }

    #[test]
    fn every_variable_is_listed_once() {
        let mut names: Vec<&str> = LINKERD_VARS.iter().map(|v| v.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a Linkerd variable is listed twice");
        for v in LINKERD_VARS {
            if !v.remora.is_empty() {
                assert!(
                    super::super::vars::VARS.iter().any(|r| r.name == v.remora),
                    "{} feeds {}, which is not a REMORA_* variable",
                    v.name,
                    v.remora
                );
            }
        }
    }
}
