//! Remora's own gRPC API, beside Linkerd's proxy API: `remora.multicluster.v1.Exports`, the
//! watch a linked control plane (or the cluster's gateway) keeps on a cluster's exported
//! services. Generated at build time from `proto/multicluster.proto`.

#![forbid(unsafe_code)]

/// `remora.multicluster.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used)]
pub mod multicluster {
    tonic::include_proto!("remora.multicluster.v1");
}
