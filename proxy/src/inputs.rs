//! What both directions of the proxy share, built once by [`crate::app`]: the proxy's own
//! addresses, its credentials, discovery, the metric families, and the limits and timeouts
//! every connection obeys. Each direction holds an `Arc` of it plus its own settings.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use remora_metrics::http::HttpMetrics;
use remora_metrics::tcp::{Direction, TcpMetrics};

use crate::discovery::Resolver;
use crate::http::record::AccessLog;
use crate::http::server::Http2Params;
use crate::tls::mtls::LocalTls;
use crate::transport::own::OwnAddrs;
use crate::transport::tcp::{Connect, TcpCtx};

/// Discovery as the proxy uses it: the resolver and how long a pick waits for an answer.
#[derive(Clone, Debug)]
pub struct Discovery {
    pub resolver: Arc<Resolver>,
    pub timeout: Duration,
}

/// The policy service and this workload as it knows it: what the inbound's and the
/// outbound's policy clients share.
#[derive(Clone, Debug)]
pub struct PolicyService {
    pub channel: remora_runtime::channel::Instrumented,
    /// Sent verbatim as `PortSpec.workload` and `TrafficSpec.source_workload`.
    pub workload: String,
    /// A policy watch unused this long is dropped.
    pub idle: Duration,
    pub limits: crate::policy::watch::StreamLimits,
}

/// The inputs shared by the inbound and the outbound.
#[derive(Debug)]
pub struct ProxyInputs {
    /// The proxy's listeners and the pod's addresses.
    pub own: OwnAddrs,
    /// This proxy's credentials (none without an identity).
    pub tls: LocalTls,
    /// `None` without a destination service: every target is used as-is.
    pub discovery: Option<Discovery>,
    pub tcp_metrics: TcpMetrics,
    pub http_metrics: HttpMetrics,
    /// The outbound's dials to targets (TLS handshake included).
    pub outbound_connect: Connect,
    /// The inbound's dials to the app.
    pub inbound_connect: Connect,
    /// Opaque connections idle this long in both directions are closed.
    pub idle_timeout: Option<Duration>,
    /// Ports never protocol-detected (server-speaks-first protocols).
    pub opaque_ports: HashSet<u16>,
    /// Pooled HTTP client connections unused this long are closed.
    pub pool_idle_timeout: Duration,
    /// Idle HTTP/1 client connections kept per endpoint.
    pub pool_max_idle: usize,
    /// HTTP/2 client settings (flow-control windows).
    pub http2_client: Http2Params,
    /// `None` without a policy service: policy comes from the configuration only.
    pub policy: Option<PolicyService>,
    /// One JSON line per HTTP request, when enabled.
    pub access_log: Option<AccessLog>,
    /// Spans of HTTP requests, when a trace collector is configured.
    pub tracer: Option<crate::trace::Tracer>,
    /// The process's drain: HTTP connections are told to close when it starts.
    pub drain: remora_runtime::drain::Drain,
    /// The caps on HTTP requests in flight: the inbound's, the outbound's (by direction:
    /// [`ProxyInputs::in_flight`]).
    pub in_flight: [crate::http::inflight::InFlight; 2],
    /// Inbound: opaque connections on which no byte moved either way this long are closed.
    pub first_byte_timeout: Option<Duration>,
}

impl ProxyInputs {
    /// The L4 settings of one direction.
    pub fn tcp(&self, direction: Direction) -> TcpCtx {
        TcpCtx {
            direction,
            connect: match direction {
                Direction::Inbound => self.inbound_connect,
                Direction::Outbound => self.outbound_connect,
            },
            idle_timeout: self.idle_timeout,
            first_byte_timeout: match direction {
                Direction::Inbound => self.first_byte_timeout,
                Direction::Outbound => None,
            },
            metrics: self.tcp_metrics.clone(),
        }
    }

    /// The cap on HTTP requests in flight of one direction's servers.
    pub fn in_flight(&self, direction: Direction) -> &crate::http::inflight::InFlight {
        match direction {
            Direction::Inbound => &self.in_flight[0],
            Direction::Outbound => &self.in_flight[1],
        }
    }

    /// [`in_flight`](Self::in_flight)`(direction)` as that direction's servers apply it, with
    /// no share per client address.
    pub fn gate(&self, direction: Direction) -> crate::http::inflight::Gate {
        self.in_flight(direction).gate(direction)
    }

    /// How the HTTP client pools keep and open connections.
    pub fn pool(&self) -> crate::http::pool::PoolConfig {
        crate::http::pool::PoolConfig {
            idle_timeout: self.pool_idle_timeout,
            max_idle_h1: self.pool_max_idle,
            h2: self.http2_client,
        }
    }

    /// Whether connections to `port` skip protocol detection.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.opaque_ports.contains(&port)
    }
}
