//! HTTP responses the proxy makes itself (errors), by direction and reason. Golden request
//! metrics come with #9.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::tcp::Direction;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    direction: &'static str,
    status: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct HttpMetrics {
    errors: Family<ErrorLabels, Counter>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = HttpMetrics::default();
        registry.register(
            "http_proxy_errors",
            "HTTP responses the proxy synthesized, by direction, status and reason",
            m.errors.clone(),
        );
        m
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
