//! The proxy's identity metrics: when its certificate expires, and how renewals went.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct IdentityMetrics {
    expiry: Gauge,
    renewals: Family<Outcome, Counter>,
}

impl IdentityMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = IdentityMetrics::default();
        registry.register(
            "identity_cert_expiration_timestamp_seconds",
            "When the proxy's current certificate expires (Unix seconds)",
            m.expiry.clone(),
        );
        registry.register(
            "identity_cert_renewals",
            "Certificate requests to the identity service, by result",
            m.renewals.clone(),
        );
        m
    }

    pub fn renewed(&self, expiry: SystemTime) {
        let secs = expiry
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.expiry.set(secs as i64);
        self.renewals
            .get_or_create(&Outcome { result: "success" })
            .inc();
    }

    pub fn failed(&self) {
        self.renewals
            .get_or_create(&Outcome { result: "failure" })
            .inc();
    }
}
