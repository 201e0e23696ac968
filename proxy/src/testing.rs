//! Helpers for the crate's unit tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use remora_metrics::Registry;
use remora_metrics::bounded::Limits;
use remora_metrics::http::HttpMetrics;
use remora_metrics::series::SeriesLimits;
use remora_metrics::tcp::TcpMetrics;

use crate::inputs::ProxyInputs;
use crate::tls::mtls::LocalTls;
use crate::transport::orig_dst::LocalIps;
use crate::transport::own::OwnAddrs;
use crate::transport::tcp::Connect;

/// Inputs of a proxy with no identity, no discovery and no listeners of its own.
pub fn inputs() -> Arc<ProxyInputs> {
    let mut registry = Registry::default();
    let series = SeriesLimits::register(
        &mut registry,
        Limits {
            max_series: 1000,
            idle: Duration::from_secs(600),
        },
    );
    let http_metrics = HttpMetrics::register(&mut registry, &series);
    Arc::new(ProxyInputs {
        own: OwnAddrs::new(Vec::new(), LocalIps::new()),
        tls: LocalTls::new(None),
        discovery: None,
        tcp_metrics: TcpMetrics::register_with(&mut registry, &series),
        in_flight: [
            crate::http::inflight::InFlight::new(10_000, http_metrics.clone()),
            crate::http::inflight::InFlight::new(10_000, http_metrics.clone()),
        ],
        first_byte_timeout: None,
        http_metrics,
        outbound_connect: Connect::within(Duration::from_secs(1)),
        inbound_connect: Connect::within(Duration::from_secs(1)),
        idle_timeout: None,
        opaque_ports: HashSet::new(),
        pool_idle_timeout: Duration::from_secs(90),
        pool_max_idle: 256,
        drain: Default::default(),
        http2_client: Default::default(),
        policy: None,
        access_log: None,
        tracer: None,
    })
}
