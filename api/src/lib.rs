//! Remora's own gRPC API, beside Linkerd's proxy API: `remora.multicluster.v1.Exports`, the
//! watch a linked control plane (or the cluster's gateway) keeps on a cluster's exported
//! services. Generated at build time from `proto/multicluster.proto`.
//!
//! And [`otlp`]: OpenTelemetry's trace messages and `TraceService` (the proxy's span exporter,
//! the tests' collector), generated at build time from the official OTLP descriptor set that
//! the opentelemetry-proto crate ships (`build.rs` says why not from its own modules).

#![forbid(unsafe_code)]

/// `remora.multicluster.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used)]
pub mod multicluster {
    tonic::include_proto!("remora.multicluster.v1");
}

/// OTLP's `opentelemetry.proto.*` packages the trace exporter uses, nested as their package
/// names (the generated code refers across them by relative paths).
#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used)]
pub mod otlp {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.common.v1");
        }
    }
    pub mod resource {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.resource.v1");
        }
    }
    pub mod trace {
        pub mod v1 {
            tonic::include_proto!("opentelemetry.proto.trace.v1");
        }
    }
    pub mod collector {
        pub mod trace {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
            }
        }
    }
}

use std::collections::BTreeMap;

impl multicluster::ExportedService {
    /// `name.namespace`: how updates name a service (`ExportUpdate::removed`).
    pub fn key(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl multicluster::ExportUpdate {
    /// Applies the update to `services`, keyed by [`ExportedService::key`]: a snapshot replaces
    /// them all, then upserts and removals.
    ///
    /// [`ExportedService::key`]: multicluster::ExportedService::key
    pub fn apply(self, services: &mut BTreeMap<String, multicluster::ExportedService>) {
        if self.snapshot {
            services.clear();
        }
        for s in self.upserts {
            services.insert(s.key(), s);
        }
        for r in &self.removed {
            services.remove(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::multicluster::{ExportUpdate, ExportedService};
    use std::collections::BTreeMap;

    fn svc(name: &str) -> ExportedService {
        ExportedService {
            name: name.into(),
            namespace: "shop".into(),
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_replace_and_changes_apply() {
        let mut m = BTreeMap::new();
        ExportUpdate {
            snapshot: true,
            upserts: vec![svc("web"), svc("api")],
            removed: vec![],
        }
        .apply(&mut m);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["api.shop", "web.shop"]);
        ExportUpdate {
            snapshot: false,
            upserts: vec![svc("db")],
            removed: vec!["web.shop".into()],
        }
        .apply(&mut m);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["api.shop", "db.shop"]);
        ExportUpdate {
            snapshot: true,
            upserts: vec![svc("web")],
            removed: vec![],
        }
        .apply(&mut m);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["web.shop"]);
    }
}
