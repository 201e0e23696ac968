//! Linkerd's two policy APIs, served from the config file: `InboundServerPolicies` (what each
//! port of a pod admits, and how it speaks) and `OutboundPolicies` (how clients route to a
//! service), as Linkerd's policy controller answers them, so linkerd2-proxy runs under
//! `remora control` with the policy it would get in a Linkerd cluster.
//!
//! ```text
//!  [policy] + [[services]] ──► raw (serde) ──► model (validated; errors name the field)
//!                                                 │ once per config edit / mirror change
//!                                                 ▼
//!                          Policies { inbound: InboundIndex, outbound: OutboundIndex }
//!                          inside the ClusterState the reloader publishes (the watch
//!                          Destination follows)
//!                                                 │
//!  WatchPort(workload, port) ── service ──► lookup ─► Server      ─┐ each stream sends its
//!  Watch(VIP:port | authority) ────────────► lookup ─► OutboundPolicy ┘ answer when it changes
//! ```
//!
//! # Layout
//! - [`raw`]: the TOML schema of `[policy]`.
//! - [`model`], [`authz`], [`routes`], [`matches`], [`filters`]: validation into typed values.
//! - [`inbound`], [`outbound`]: the compiled answers and their lookups.
//! - [`proto`]: builders of the API's messages both use.
//! - [`workload`]: the workload string proxies send.
//! - [`service`]: the two gRPC services and their streams.

pub mod authz;
pub mod filters;
pub mod inbound;
pub mod matches;
pub mod model;
pub mod outbound;
pub mod proto;
pub mod raw;
pub mod routes;
pub mod service;
pub mod workload;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::cluster::ClusterState;
use crate::error::Invalid;

pub use inbound::{InboundIndex, PROXY_ADMIN_PORT};
pub use model::{DefaultPolicy, Model};
pub use outbound::OutboundIndex;
pub use raw::RawPolicy;

/// The compiled policy of one served state.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    pub model: Arc<Model>,
    pub inbound: Arc<InboundIndex>,
    pub outbound: Arc<OutboundIndex>,
}

impl Policies {
    /// Validates `raw` against the config's services (`state`) and compiles both APIs'
    /// answers.
    pub fn compile(raw: &RawPolicy, state: &ClusterState) -> Result<Policies, Invalid> {
        let model = Model::validate(raw, state)?;
        let inbound = InboundIndex::build(&model, state)?;
        let outbound = OutboundIndex::build(&model, state);
        Ok(Policies {
            model: Arc::new(model),
            inbound: Arc::new(inbound),
            outbound: Arc::new(outbound),
        })
    }

    /// The same policy for a served state with more services (linked clusters' mirrors): the
    /// outbound answers are rebuilt, the inbound ones (the config's own pods) kept.
    pub fn for_state(&self, state: &ClusterState) -> Policies {
        Policies {
            model: self.model.clone(),
            inbound: self.inbound.clone(),
            outbound: Arc::new(OutboundIndex::build(&self.model, state)),
        }
    }
}
