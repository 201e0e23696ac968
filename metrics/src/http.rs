//! The HTTP families of one proxy: the golden request metrics ([`HttpGolden`]), responses the
//! proxy makes itself (errors) by direction and reason, retries, budget exhaustion, timeouts and
//! circuit-breaker transitions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::golden::HttpGolden;
use crate::series::SeriesLimits;
use crate::tcp::Direction;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    direction: &'static str,
    status: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug)]
pub struct HttpMetrics {
    pub golden: HttpGolden,
    errors: Family<ErrorLabels, Counter>,
    retries: Family<Reason, Counter>,
    budget_exhausted: Counter,
    timeouts: Counter,
    ejections: Counter,
    restorations: Counter,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry, series: &SeriesLimits) -> Self {
        let m = HttpMetrics {
            golden: HttpGolden::register(registry, series),
            errors: Family::default(),
            retries: Family::default(),
            budget_exhausted: Counter::default(),
            timeouts: Counter::default(),
            ejections: Counter::default(),
            restorations: Counter::default(),
        };
        registry.register(
            "http_proxy_errors",
            "HTTP responses the proxy synthesized, by direction, status and reason",
            m.errors.clone(),
        );
        registry.register(
            "retries",
            "Requests retried, by reason (status: a failure response class; connect: never sent; refused: never processed by the peer)",
            m.retries.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "Retries not made because the retry budget was spent",
            m.budget_exhausted.clone(),
        );
        registry.register(
            "request_timeouts",
            "Requests answered 504 because their timeout passed",
            m.timeouts.clone(),
        );
        registry.register(
            "endpoint_ejections",
            "Endpoints ejected from balancing after consecutive failures",
            m.ejections.clone(),
        );
        registry.register(
            "endpoint_restorations",
            "Ejected endpoints restored after a successful probe",
            m.restorations.clone(),
        );
        m
    }

    pub fn retried(&self, reason: &'static str) {
        self.retries.get_or_create(&Reason { reason }).inc();
    }

    /// The requests retried for `reason` so far.
    pub fn retries(&self, reason: &'static str) -> u64 {
        self.retries.get_or_create(&Reason { reason }).get()
    }

    pub fn budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    pub fn timed_out(&self) {
        self.timeouts.inc();
    }

    pub fn ejected(&self) {
        self.ejections.inc();
    }

    pub fn restored(&self) {
        self.restorations.inc();
    }

    pub fn error(&self, direction: Direction, status: u16, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                direction: direction.as_str(),
                status,
                reason,
            })
            .inc();
    }
}
