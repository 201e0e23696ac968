//! The `REMORA_*` variables: names, defaults and help, in one table. The parser reads defaults
//! from it, `remora proxy --help` prints it, and a test checks that CONFIG.md documents each.

pub const OUTBOUND_ADDR: &str = "REMORA_OUTBOUND_ADDR";
pub const INBOUND_ADDR: &str = "REMORA_INBOUND_ADDR";
pub const ADMIN_ADDR: &str = "REMORA_ADMIN_ADDR";
pub const CONNECT_TIMEOUT: &str = "REMORA_CONNECT_TIMEOUT";
pub const INBOUND_CONNECT_TIMEOUT: &str = "REMORA_INBOUND_CONNECT_TIMEOUT";
pub const TCP_IDLE_TIMEOUT: &str = "REMORA_TCP_IDLE_TIMEOUT";
pub const INBOUND_MAX_CONNECTIONS: &str = "REMORA_INBOUND_MAX_CONNECTIONS";
pub const OUTBOUND_MAX_CONNECTIONS: &str = "REMORA_OUTBOUND_MAX_CONNECTIONS";
pub const INBOUND_PEER_CONNECTION_SHARE: &str = "REMORA_INBOUND_PEER_CONNECTION_SHARE";
pub const INBOUND_FIRST_BYTE_TIMEOUT: &str = "REMORA_INBOUND_FIRST_BYTE_TIMEOUT";
pub const INBOUND_MAX_IN_FLIGHT: &str = "REMORA_INBOUND_MAX_IN_FLIGHT";
pub const OUTBOUND_MAX_IN_FLIGHT: &str = "REMORA_OUTBOUND_MAX_IN_FLIGHT";
pub const SHUTDOWN_GRACE: &str = "REMORA_SHUTDOWN_GRACE";
pub const SHUTDOWN_ENDPOINT: &str = "REMORA_SHUTDOWN_ENDPOINT";
pub const WORKER_THREADS: &str = "REMORA_WORKER_THREADS";
pub const LOG: &str = "REMORA_LOG";
pub const LOG_FORMAT: &str = "REMORA_LOG_FORMAT";
pub const METRICS_MAX_SERIES: &str = "REMORA_METRICS_MAX_SERIES";
pub const METRICS_IDLE_TIMEOUT: &str = "REMORA_METRICS_IDLE_TIMEOUT";
pub const ACCESS_LOG: &str = "REMORA_ACCESS_LOG";
pub const BREAKER_MAX_FAILURES: &str = "REMORA_BREAKER_MAX_FAILURES";
pub const HTTP_REQUEST_TIMEOUT: &str = "REMORA_HTTP_REQUEST_TIMEOUT";
pub const HTTP_POOL_IDLE_TIMEOUT: &str = "REMORA_HTTP_POOL_IDLE_TIMEOUT";
pub const HTTP_POOL_MAX_IDLE: &str = "REMORA_HTTP_POOL_MAX_IDLE";
pub const INBOUND_DETECT_TIMEOUT: &str = "REMORA_INBOUND_DETECT_TIMEOUT";
pub const OUTBOUND_DETECT_TIMEOUT: &str = "REMORA_OUTBOUND_DETECT_TIMEOUT";
pub const DETECT_EARLY_DIAL: &str = "REMORA_DETECT_EARLY_DIAL";
pub const OPAQUE_PORTS: &str = "REMORA_OPAQUE_PORTS";
pub const HTTP_MAX_HEADER_BYTES: &str = "REMORA_HTTP_MAX_HEADER_BYTES";
pub const HTTP_MAX_HEADERS: &str = "REMORA_HTTP_MAX_HEADERS";
pub const HTTP2_MAX_CONCURRENT_STREAMS: &str = "REMORA_HTTP2_MAX_CONCURRENT_STREAMS";
pub const INBOUND_HTTP2_SERVER: &str = "REMORA_INBOUND_HTTP2_SERVER";
pub const OUTBOUND_HTTP2_SERVER: &str = "REMORA_OUTBOUND_HTTP2_SERVER";
pub const HTTP2_CLIENT: &str = "REMORA_HTTP2_CLIENT";
pub const INBOUND_ACCEPT_KEEPALIVE: &str = "REMORA_INBOUND_ACCEPT_KEEPALIVE";
pub const OUTBOUND_ACCEPT_KEEPALIVE: &str = "REMORA_OUTBOUND_ACCEPT_KEEPALIVE";
pub const INBOUND_CONNECT_KEEPALIVE: &str = "REMORA_INBOUND_CONNECT_KEEPALIVE";
pub const OUTBOUND_CONNECT_KEEPALIVE: &str = "REMORA_OUTBOUND_CONNECT_KEEPALIVE";
pub const INBOUND_ACCEPT_USER_TIMEOUT: &str = "REMORA_INBOUND_ACCEPT_USER_TIMEOUT";
pub const OUTBOUND_ACCEPT_USER_TIMEOUT: &str = "REMORA_OUTBOUND_ACCEPT_USER_TIMEOUT";
pub const INBOUND_CONNECT_USER_TIMEOUT: &str = "REMORA_INBOUND_CONNECT_USER_TIMEOUT";
pub const OUTBOUND_CONNECT_USER_TIMEOUT: &str = "REMORA_OUTBOUND_CONNECT_USER_TIMEOUT";
pub const INBOUND_IPS: &str = "REMORA_INBOUND_IPS";
pub const INBOUND_PORTS: &str = "REMORA_INBOUND_PORTS";
pub const INBOUND_DIRECT_PORTS_UNRESTRICTED: &str = "REMORA_INBOUND_DIRECT_PORTS_UNRESTRICTED";
pub const INBOUND_DEFAULT_POLICY: &str = "REMORA_INBOUND_DEFAULT_POLICY";
pub const INBOUND_PORT_POLICIES: &str = "REMORA_INBOUND_PORT_POLICIES";
pub const INBOUND_PORTS_REQUIRE_IDENTITY: &str = "REMORA_INBOUND_PORTS_REQUIRE_IDENTITY";
pub const INBOUND_PORTS_REQUIRE_TLS: &str = "REMORA_INBOUND_PORTS_REQUIRE_TLS";
pub const INGRESS_MODE: &str = "REMORA_INGRESS_MODE";
pub const IDENTITY_NAME: &str = "REMORA_IDENTITY_NAME";
pub const IDENTITY_TRUST_ANCHORS: &str = "REMORA_IDENTITY_TRUST_ANCHORS";
pub const IDENTITY_TOKEN_FILE: &str = "REMORA_IDENTITY_TOKEN_FILE";
pub const IDENTITY_DIR: &str = "REMORA_IDENTITY_DIR";
pub const IDENTITY_ADDR: &str = "REMORA_IDENTITY_ADDR";
pub const IDENTITY_SVC_NAME: &str = "REMORA_IDENTITY_SVC_NAME";
pub const IDENTITY_MIN_REFRESH: &str = "REMORA_IDENTITY_MIN_REFRESH";
pub const IDENTITY_MAX_REFRESH: &str = "REMORA_IDENTITY_MAX_REFRESH";
pub const DESTINATION_ADDR: &str = "REMORA_DESTINATION_ADDR";
pub const DESTINATION_SVC_NAME: &str = "REMORA_DESTINATION_SVC_NAME";
pub const DESTINATION_CONTEXT: &str = "REMORA_DESTINATION_CONTEXT";
pub const DESTINATION_TIMEOUT: &str = "REMORA_DESTINATION_TIMEOUT";
pub const DESTINATION_IDLE_TIMEOUT: &str = "REMORA_DESTINATION_IDLE_TIMEOUT";
pub const DESTINATION_MAX_TARGETS: &str = "REMORA_DESTINATION_MAX_TARGETS";
pub const DESTINATION_PROFILE_SUFFIXES: &str = "REMORA_DESTINATION_PROFILE_SUFFIXES";
pub const DESTINATION_PROFILE_NETWORKS: &str = "REMORA_DESTINATION_PROFILE_NETWORKS";
pub const POLICY_ADDR: &str = "REMORA_POLICY_ADDR";
pub const POLICY_SVC_NAME: &str = "REMORA_POLICY_SVC_NAME";
pub const POLICY_WORKLOAD: &str = "REMORA_POLICY_WORKLOAD";
pub const POLICY_CLUSTER_NETWORKS: &str = "REMORA_POLICY_CLUSTER_NETWORKS";
pub const POLICY_IDLE_TIMEOUT: &str = "REMORA_POLICY_IDLE_TIMEOUT";
pub const CONTROL_STREAM_INITIAL_TIMEOUT: &str = "REMORA_CONTROL_STREAM_INITIAL_TIMEOUT";
pub const CONTROL_STREAM_IDLE_TIMEOUT: &str = "REMORA_CONTROL_STREAM_IDLE_TIMEOUT";
pub const CONTROL_STREAM_LIFETIME: &str = "REMORA_CONTROL_STREAM_LIFETIME";
pub const TRACE_COLLECTOR_ADDR: &str = "REMORA_TRACE_COLLECTOR_ADDR";
pub const TRACE_COLLECTOR_SVC_NAME: &str = "REMORA_TRACE_COLLECTOR_SVC_NAME";
pub const TRACE_SERVICE_NAME: &str = "REMORA_TRACE_SERVICE_NAME";
pub const TRACE_ATTRIBUTES_PATH: &str = "REMORA_TRACE_ATTRIBUTES_PATH";
pub const TRACE_EXTRA_ATTRIBUTES: &str = "REMORA_TRACE_EXTRA_ATTRIBUTES";
pub const TRACE_PROTOCOL: &str = "REMORA_TRACE_PROTOCOL";
pub const TRACE_SAMPLE_RATIO: &str = "REMORA_TRACE_SAMPLE_RATIO";
pub const TRACE_QUEUE: &str = "REMORA_TRACE_QUEUE";

/// One configuration variable: its name, its default and what it does.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

const fn var(name: &'static str, default: &'static str, help: &'static str) -> Var {
    Var {
        name,
        default,
        help,
    }
}

/// Every variable `remora proxy` reads.
pub const VARS: &[Var] = &[
    var(
        OUTBOUND_ADDR,
        "127.0.0.1:4140",
        "Outbound listener address(es), comma-separated (add [::1]:4140 for IPv6)",
    ),
    var(
        INBOUND_ADDR,
        "0.0.0.0:4143",
        "Inbound listener address(es), comma-separated (add [::]:4143 for IPv6)",
    ),
    var(
        ADMIN_ADDR,
        "127.0.0.1:4191",
        "Admin listener: /live, /ready, /metrics, /env.json, POST /shutdown, GET/PUT /log-level (all but the probes and /metrics answer loopback peers only)",
    ),
    var(
        CONNECT_TIMEOUT,
        "1s",
        "Timeout for the outbound's connects to a target, TLS handshake included",
    ),
    var(
        INBOUND_CONNECT_TIMEOUT,
        "1s",
        "Timeout for the inbound's connects to the app",
    ),
    var(
        TCP_IDLE_TIMEOUT,
        "off",
        "Close a proxied TCP connection idle this long in both directions (off = never)",
    ),
    var(
        INBOUND_MAX_CONNECTIONS,
        "20000",
        "Concurrent inbound connections; beyond it new ones are refused and counted",
    ),
    var(
        OUTBOUND_MAX_CONNECTIONS,
        "20000",
        "Concurrent outbound connections; beyond it new ones are refused and counted",
    ),
    var(
        INBOUND_PEER_CONNECTION_SHARE,
        "0.5",
        "The share (above 0, up to 1) of REMORA_INBOUND_MAX_CONNECTIONS one client address may hold; beyond it its new connections are refused and counted (1 = no share; loopback and the pod's own addresses are exempt)",
    ),
    var(
        INBOUND_FIRST_BYTE_TIMEOUT,
        "10s",
        "Inbound: close a forwarded TCP connection on which no byte moved either way this long after forwarding began (off = never)",
    ),
    var(
        INBOUND_MAX_IN_FLIGHT,
        "10000",
        "Inbound HTTP requests (HTTP/2 streams) in flight across all connections; beyond it new ones are answered 503 and counted",
    ),
    var(
        OUTBOUND_MAX_IN_FLIGHT,
        "10000",
        "Outbound HTTP requests (HTTP/2 streams) in flight across all connections; beyond it new ones are answered 503 and counted",
    ),
    var(
        SHUTDOWN_GRACE,
        "30s",
        "After SIGTERM or POST /shutdown, how long open connections may finish",
    ),
    var(
        SHUTDOWN_ENDPOINT,
        "true",
        "Whether POST /shutdown (from loopback) drains the proxy: true or false",
    ),
    var(
        WORKER_THREADS,
        "1",
        "Runtime worker threads (1 = a single-threaded runtime)",
    ),
    var(
        INBOUND_DETECT_TIMEOUT,
        "5s",
        "Inbound: how long to wait for a client's first bytes (TLS or not) before treating it as plaintext",
    ),
    var(
        OUTBOUND_DETECT_TIMEOUT,
        "5s",
        "Outbound: how long to wait for the app's first bytes before treating them as opaque TCP",
    ),
    var(
        DETECT_EARLY_DIAL,
        "1ms",
        "Both directions: how long a client on a detected port may stay silent before its destination is dialled, so a server that speaks first is forwarded at once (0 = at once, off = never: wait for the detection timeout)",
    ),
    var(
        OPAQUE_PORTS,
        "25,587,3306,4444,5432,6379,9300,11211",
        "Ports never protocol-detected (server-speaks-first protocols): ports and ranges, comma-separated",
    ),
    var(
        HTTP_MAX_HEADER_BYTES,
        "65536",
        "Largest HTTP request head accepted, bytes (beyond: 431)",
    ),
    var(
        HTTP_MAX_HEADERS,
        "100",
        "Most header fields in an HTTP/1 request (beyond: 431)",
    ),
    var(
        HTTP2_MAX_CONCURRENT_STREAMS,
        "2048",
        "Most concurrent streams a client may open on one HTTP/2 connection",
    ),
    var(
        INBOUND_HTTP2_SERVER,
        "",
        "Inbound HTTP/2 server parameters, NAME=VALUE,...: keep_alive_interval, keep_alive_timeout, max_concurrent_streams, initial_stream_window_size, initial_connection_window_size, adaptive_flow_control, max_frame_size, max_header_list_size, max_pending_accept_reset_streams, max_send_buf_size",
    ),
    var(
        OUTBOUND_HTTP2_SERVER,
        "",
        "Outbound HTTP/2 server parameters (toward the app), as for the inbound",
    ),
    var(
        HTTP2_CLIENT,
        "",
        "HTTP/2 client parameters, NAME=VALUE,...: initial_stream_window_size, initial_connection_window_size",
    ),
    var(
        INBOUND_ACCEPT_KEEPALIVE,
        "off",
        "TCP keepalive on accepted inbound connections",
    ),
    var(
        OUTBOUND_ACCEPT_KEEPALIVE,
        "off",
        "TCP keepalive on accepted outbound connections (from the app)",
    ),
    var(
        INBOUND_CONNECT_KEEPALIVE,
        "off",
        "TCP keepalive on the inbound's connections to the app",
    ),
    var(
        OUTBOUND_CONNECT_KEEPALIVE,
        "off",
        "TCP keepalive on the outbound's connections to targets",
    ),
    var(
        INBOUND_ACCEPT_USER_TIMEOUT,
        "off",
        "TCP_USER_TIMEOUT on accepted inbound connections",
    ),
    var(
        OUTBOUND_ACCEPT_USER_TIMEOUT,
        "off",
        "TCP_USER_TIMEOUT on accepted outbound connections",
    ),
    var(
        INBOUND_CONNECT_USER_TIMEOUT,
        "off",
        "TCP_USER_TIMEOUT on the inbound's connections to the app",
    ),
    var(
        OUTBOUND_CONNECT_USER_TIMEOUT,
        "off",
        "TCP_USER_TIMEOUT on the outbound's connections to targets",
    ),
    var(
        INBOUND_IPS,
        "",
        "The pod's IP addresses, comma-separated; inbound connections to other addresses are refused (unset: the interfaces' addresses)",
    ),
    var(
        INBOUND_PORTS,
        "",
        "The ports the pod's containers declare: ports and ranges, comma-separated; with a policy service, their inbound policy is watched from the start; the direct path and opaque transport may name only these (with those the policy service declares)",
    ),
    var(
        INBOUND_DIRECT_PORTS_UNRESTRICTED,
        "false",
        "Whether the direct path (a transport header on the inbound port) may name any port of the pod, not only the declared ones: true or false",
    ),
    var(
        INBOUND_DEFAULT_POLICY,
        "all-unauthenticated",
        "Inbound policy: all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, audit or deny",
    ),
    var(
        INBOUND_PORT_POLICIES,
        "",
        "Per-port policies: PORT=POLICY;... where POLICY may also be allow(id, *.suffix, ...)",
    ),
    var(
        INBOUND_PORTS_REQUIRE_IDENTITY,
        "",
        "Ports (and ranges) that admit only mTLS peers with a client certificate",
    ),
    var(
        INBOUND_PORTS_REQUIRE_TLS,
        "",
        "Ports (and ranges) that admit only mesh TLS connections",
    ),
    var(
        INGRESS_MODE,
        "false",
        "Ingress mode: outbound HTTP is routed by l5d-dst-override or Host, every port detected",
    ),
    var(
        IDENTITY_NAME,
        "",
        "This workload's identity; unset = no identity (plaintext only)",
    ),
    var(
        IDENTITY_TRUST_ANCHORS,
        "",
        "The trust anchors (one or more roots): a PEM file, or the PEM text itself; required with an identity",
    ),
    var(
        IDENTITY_TOKEN_FILE,
        "",
        "File holding the workload's token, re-read at every renewal",
    ),
    var(
        IDENTITY_DIR,
        "",
        "Directory of the workload's key.p8 (PKCS#8 DER) and csr.der; generated there (mode 0600) when missing; unset = a key in memory only",
    ),
    var(
        IDENTITY_ADDR,
        "",
        "The identity service: IP:port or host:port (a DNS name); required with an identity",
    ),
    var(
        IDENTITY_SVC_NAME,
        "",
        "The identity service's own identity; required unless it is on loopback",
    ),
    var(
        IDENTITY_MIN_REFRESH,
        "10s",
        "Renew the certificate no sooner than this after it arrives",
    ),
    var(
        IDENTITY_MAX_REFRESH,
        "24h",
        "Renew the certificate at least this often",
    ),
    var(
        DESTINATION_ADDR,
        "",
        "The destination (discovery) service: IP:port or host:port; unset = no discovery",
    ),
    var(
        DESTINATION_SVC_NAME,
        "",
        "The destination service's identity; required unless it is on loopback",
    ),
    var(
        DESTINATION_CONTEXT,
        "",
        "Context token sent with every discovery request, verbatim",
    ),
    var(
        DESTINATION_TIMEOUT,
        "3s",
        "How long a new connection waits for discovery's first answer or an endpoint",
    ),
    var(
        DESTINATION_IDLE_TIMEOUT,
        "60s",
        "Drop a cached resolution unused for this long",
    ),
    var(
        DESTINATION_MAX_TARGETS,
        "10000",
        "Most resolutions cached at once (least recently used dropped first)",
    ),
    var(
        DESTINATION_PROFILE_SUFFIXES,
        ".",
        "Names whose profiles are asked for (DNS suffixes, comma-separated; . = every name)",
    ),
    var(
        DESTINATION_PROFILE_NETWORKS,
        "0.0.0.0/0,::/0",
        "IP addresses whose profiles are asked for (CIDRs, comma-separated)",
    ),
    var(
        POLICY_ADDR,
        "",
        "The policy service: IP:port or host:port; each inbound port's policy is watched on it (unset: REMORA_INBOUND_* only)",
    ),
    var(
        POLICY_SVC_NAME,
        "",
        "The policy service's identity; required unless it is on loopback",
    ),
    var(
        POLICY_WORKLOAD,
        "",
        "This workload as the policy service knows it, sent verbatim (Linkerd: {\"ns\":\"...\",\"pod\":\"...\"})",
    ),
    var(
        POLICY_CLUSTER_NETWORKS,
        "",
        "The cluster's networks (CIDRs, comma-separated), for the cluster-* policies",
    ),
    var(
        POLICY_IDLE_TIMEOUT,
        "90s",
        "Drop a port's policy watch unused (and held by no connection) for this long",
    ),
    var(
        CONTROL_STREAM_INITIAL_TIMEOUT,
        "off",
        "Replace a discovery or policy stream whose first answer takes longer than this",
    ),
    var(
        CONTROL_STREAM_IDLE_TIMEOUT,
        "off",
        "Replace a discovery or policy stream silent for longer than this",
    ),
    var(
        CONTROL_STREAM_LIFETIME,
        "off",
        "Replace discovery and policy streams older than this",
    ),
    var(
        TRACE_COLLECTOR_ADDR,
        "",
        "The trace collector (OTLP/gRPC): IP:port or host:port; unset = no spans exported",
    ),
    var(
        TRACE_COLLECTOR_SVC_NAME,
        "",
        "The trace collector's identity (mTLS); required unless it is on loopback",
    ),
    var(
        TRACE_SERVICE_NAME,
        "",
        "The spans' service.name resource attribute (unset: none, as linkerd2-proxy)",
    ),
    var(
        TRACE_ATTRIBUTES_PATH,
        "",
        "A file of key=\"value\" lines (the pod's labels, by the downward API) added to the spans' resource",
    ),
    var(
        TRACE_EXTRA_ATTRIBUTES,
        "",
        "More key=value resource attributes, one per line (OTEL_RESOURCE_ATTRIBUTES is read too, and wins)",
    ),
    var(
        TRACE_PROTOCOL,
        "opentelemetry",
        "The export protocol: opentelemetry (OTLP/gRPC), the only one",
    ),
    var(
        TRACE_SAMPLE_RATIO,
        "0",
        "Of requests with no trace context, the share that starts a trace (0 to 1; a parent's decision always wins)",
    ),
    var(
        TRACE_QUEUE,
        "1024",
        "Finished spans waiting for the exporter at most; beyond, they are dropped and counted",
    ),
    var(
        HTTP_REQUEST_TIMEOUT,
        "off",
        "Default outbound HTTP request timeout (504 after it); a profile route's timeout overrides it",
    ),
    var(
        HTTP_POOL_IDLE_TIMEOUT,
        "90s",
        "Close pooled HTTP client connections (to peers and apps) unused this long",
    ),
    var(
        HTTP_POOL_MAX_IDLE,
        "256",
        "Idle HTTP/1 client connections kept per endpoint",
    ),
    var(
        BREAKER_MAX_FAILURES,
        "7",
        "Consecutive failures after which an endpoint is ejected from balancing",
    ),
    var(
        METRICS_MAX_SERIES,
        "10000",
        "Most label sets per metric store (TCP, HTTP); beyond it new ones count under overflow=\"true\"",
    ),
    var(
        METRICS_IDLE_TIMEOUT,
        "10m",
        "Drop a metric label set unused this long (and held by no open connection)",
    ),
    var(
        ACCESS_LOG,
        "off",
        "Access log: off, json (one JSON line per HTTP request on stdout) or apache (Apache's common log format)",
    ),
    var(
        LOG,
        "info",
        "Log filter, RUST_LOG syntax (e.g. warn,remora_proxy=debug)",
    ),
    var(LOG_FORMAT, "plain", "Log format: plain or json"),
];

/// The documented default of a variable in [`VARS`].
pub fn default_of(var: &str) -> &'static str {
    VARS.iter()
        .find(|v| v.name == var)
        .map(|v| v.default)
        .unwrap_or("")
}
