//! The policy service's `InboundServerPolicies/WatchPort`, as a [`Source`] of port policies:
//! one stream per port, asked with this workload (sent verbatim), each `Server` compiled
//! ([`super::proto`]) or refused.

use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::inbound::{PortSpec, Server};
use remora_metrics::inbound_policy::InboundPolicyMetrics;
use remora_runtime::channel::{Instrumented, Moved};

use super::server::ServerPolicy;
use crate::policy::watch::{OpenFuture, Source, Stream};

/// Watches ports' policies on the policy service.
#[derive(Debug)]
pub struct WatchPort {
    client: InboundServerPoliciesClient<Instrumented>,
    moved: Moved,
    workload: String,
    metrics: InboundPolicyMetrics,
}

impl WatchPort {
    pub fn new(channel: Instrumented, workload: String, metrics: InboundPolicyMetrics) -> Self {
        WatchPort {
            moved: channel.moved(),
            client: InboundServerPoliciesClient::new(channel),
            workload,
            metrics,
        }
    }
}

impl Source for WatchPort {
    type Key = u16;
    type Message = Server;
    type Policy = ServerPolicy;

    fn what(&self) -> &'static str {
        "inbound policy"
    }

    fn moved(&self) -> Moved {
        self.moved.clone()
    }

    fn open(&self, port: &u16) -> OpenFuture<Server> {
        let mut client = self.client.clone();
        let spec = PortSpec {
            workload: self.workload.clone(),
            port: u32::from(*port),
        };
        Box::pin(async move {
            let stream = client.watch_port(spec).await?.into_inner();
            Ok(Box::new(stream) as Box<dyn Stream<Server>>)
        })
    }

    fn compile(&self, port: &u16, msg: &Server) -> Result<ServerPolicy, String> {
        let policy = super::proto::server(msg).map_err(|e| e.to_string())?;
        tracing::info!(
            port,
            server = %policy.meta,
            protocol = policy.protocol.name(),
            "inbound policy: the policy service's server for the port"
        );
        Ok(policy)
    }

    fn refused(&self, _port: &u16) {
        self.metrics.refused();
    }

    /// As linkerd2-proxy's inbound: only `InvalidArgument` and `FailedPrecondition` end a
    /// port's watch (it keeps its local policy); `NotFound` and the rest are retried.
    fn is_final(&self, code: tonic::Code) -> bool {
        matches!(
            code,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
        )
    }
}
