//! The span exporter's metrics: export requests and spans sent to the collector, in
//! linkerd2-proxy's names, and the spans dropped on the way (a full queue, a failed export):
//! tracing never holds a request, so what cannot be exported is counted instead.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Why a span was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The export queue was full (the collector is slow or down).
    QueueFull,
    /// Its batch could not be exported (the collector refused it or was unreachable).
    ExportFailed,
}

#[derive(Clone, Debug, Default)]
pub struct TraceMetrics {
    requests: Family<Outcome, Counter>,
    spans: Counter,
    drops: Family<Reason, Counter>,
    queue_full: Counter,
}

impl TraceMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let mut m = TraceMetrics::default();
        // The hot path's counter is resolved once.
        m.queue_full = m
            .drops
            .get_or_create(&Reason {
                reason: "queue_full",
            })
            .clone();
        registry.register(
            "opentelemetry_span_export_requests",
            "Export requests sent to the trace collector, by result (ok, error)",
            m.requests.clone(),
        );
        registry.register(
            "opentelemetry_span_exports",
            "Spans the trace collector accepted",
            m.spans.clone(),
        );
        registry.register(
            "opentelemetry_span_drops",
            "Spans dropped instead of exported, by reason (queue_full, export_failed)",
            m.drops.clone(),
        );
        m
    }

    pub fn dropped(&self, why: Drop, n: u64) {
        match why {
            Drop::QueueFull => {
                self.queue_full.inc_by(n);
            }
            Drop::ExportFailed => {
                self.drops
                    .get_or_create(&Reason {
                        reason: "export_failed",
                    })
                    .inc_by(n);
            }
        }
    }

    /// An export request and its outcome (`spans` accepted when `ok`).
    pub fn exported(&self, ok: bool, spans: u64) {
        let result = if ok { "ok" } else { "error" };
        self.requests.get_or_create(&Outcome { result }).inc();
        if ok {
            self.spans.inc_by(spans);
        } else {
            self.dropped(Drop::ExportFailed, spans);
        }
    }

    /// Spans dropped so far, all reasons (for tests and the demo).
    pub fn drops(&self) -> u64 {
        self.queue_full.get()
            + self
                .drops
                .get_or_create(&Reason {
                    reason: "export_failed",
                })
                .get()
    }
}
