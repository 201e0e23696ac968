//! The control plane's metrics: one struct of families per service (identity, destination
//! and the config reloader, policy).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

/// Metrics of the identity service.
#[derive(Clone, Debug, Default)]
pub struct IdentityMetrics {
    issued: Counter,
    refused: Family<Reason, Counter>,
    reloads: Family<Outcome, Counter>,
    issuer_expiry: Gauge,
    jwks_reloads: Family<Outcome, Counter>,
    jwks_keys: Gauge,
}

impl IdentityMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = IdentityMetrics::default();
        registry.register(
            "identity_certs_issued",
            "Certificates issued",
            m.issued.clone(),
        );
        registry.register(
            "identity_certs_refused",
            "Certify requests refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "identity_issuer_reloads",
            "Issuer reloads from disk, by result",
            m.reloads.clone(),
        );
        registry.register(
            "identity_issuer_expiration_timestamp_seconds",
            "When the current issuer certificate expires (Unix seconds)",
            m.issuer_expiry.clone(),
        );
        registry.register(
            "identity_jwks_reloads",
            "Service-account key (JWKS) reloads from disk, by result",
            m.jwks_reloads.clone(),
        );
        registry.register(
            "identity_jwks_keys",
            "Service-account keys (JWKS) in use",
            m.jwks_keys.clone(),
        );
        m
    }

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&Outcome { result }).inc();
    }

    /// A JWKS reload: `keys` is the number now in use (ignored on failure).
    pub fn jwks_reloaded(&self, ok: bool, keys: usize) {
        let result = if ok { "success" } else { "failure" };
        self.jwks_reloads.get_or_create(&Outcome { result }).inc();
        if ok {
            self.jwks_keys.set(keys as i64);
        }
    }

    /// The service-account keys loaded at start.
    pub fn jwks_keys(&self, keys: usize) {
        self.jwks_keys.set(keys as i64);
    }

    pub fn issuer_expiry(&self, at: SystemTime) {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        self.issuer_expiry.set(secs as i64);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    rpc: &'static str,
}

/// Metrics of the destination service and the config reloader.
#[derive(Clone, Debug, Default)]
pub struct DestinationMetrics {
    watches: Family<Rpc, Gauge>,
    updates: Family<Rpc, Counter>,
    reloads: Family<Outcome, Counter>,
}

/// Counts one open watch while it lives.
#[derive(Debug)]
pub struct Watching(Gauge);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl DestinationMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = DestinationMetrics::default();
        registry.register(
            "destination_watches",
            "Open discovery streams, by rpc (get, get_profile)",
            m.watches.clone(),
        );
        registry.register(
            "destination_updates",
            "Discovery messages sent, by rpc",
            m.updates.clone(),
        );
        registry.register(
            "config_reloads",
            "Config file reloads, by result (success, failure = rejected edit)",
            m.reloads.clone(),
        );
        m
    }

    pub fn watching(&self, rpc: &'static str) -> Watching {
        let g = self.watches.get_or_create_owned(&Rpc { rpc });
        g.inc();
        Watching(g)
    }

    pub fn sent(&self, rpc: &'static str) {
        self.updates.get_or_create(&Rpc { rpc }).inc();
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&Outcome { result }).inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Api {
    api: &'static str,
}

/// Metrics of the policy services.
#[derive(Clone, Debug, Default)]
pub struct PolicyMetrics {
    watches: Family<Api, Gauge>,
    updates: Family<Api, Counter>,
}

impl PolicyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = PolicyMetrics::default();
        registry.register(
            "policy_watches",
            "Open policy streams, by api (inbound: WatchPort, outbound: Watch)",
            m.watches.clone(),
        );
        registry.register(
            "policy_updates",
            "Policy messages sent on streams, by api",
            m.updates.clone(),
        );
        m
    }

    pub fn watching(&self, api: &'static str) -> Watching {
        let g = self.watches.get_or_create_owned(&Api { api });
        g.inc();
        Watching(g)
    }

    pub fn sent(&self, api: &'static str) {
        self.updates.get_or_create(&Api { api }).inc();
    }
}
