//! The proxy's calls to its control plane: `control_requests_total{service, rpc, result}` and
//! `control_response_latency_ms{service, rpc}` (time to the response headers: for a streaming
//! call, until the stream is established). Every label is a fixed name, so the families stay
//! small.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::time::Duration;

use crate::histogram::LatencyHistogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    service: &'static str,
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    service: &'static str,
    rpc: &'static str,
    /// `ok`, a gRPC code name (`unavailable`, ...), or `transport_error`.
    result: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct ControlClientMetrics {
    requests: Family<Outcome, Counter>,
    latency: Family<Call, LatencyHistogram>,
}

impl ControlClientMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ControlClientMetrics::default();
        registry.register(
            "control_requests",
            "Calls to the control plane, by service, RPC and result",
            m.requests.clone(),
        );
        registry.register(
            "control_response_latency_ms",
            "Time from a call to the control plane to its response headers, in milliseconds",
            m.latency.clone(),
        );
        m
    }

    pub fn record(
        &self,
        service: &'static str,
        rpc: &'static str,
        result: &'static str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&Outcome {
                service,
                rpc,
                result,
            })
            .inc();
        self.latency
            .get_or_create(&Call { service, rpc })
            .observe(elapsed);
    }
}
