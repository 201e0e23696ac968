//! The gRPC services: `io.linkerd.proxy.inbound.InboundServerPolicies` (`GetPort`,
//! `WatchPort`) and `io.linkerd.proxy.outbound.OutboundPolicies` (`Get`, `Watch`).
//!
//! Each watch is a task that follows the served state (the `watch` Destination's streams
//! follow too): it sends the answer it starts with, then a new answer only when an edit
//! changed it. Every well-formed workload has an inbound answer (see [`super::inbound`]). An
//! outbound target unknown at the start is `NotFound`; one that becomes unknown later gets
//! nothing more (its stream stays open and resumes if the target comes back), as Destination
//! keeps its streams open for a removed service.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPolicies;
use linkerd2_proxy_api::inbound::{PortSpec, Server};
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPolicies;
use linkerd2_proxy_api::outbound::{OutboundPolicy, TrafficSpec, traffic_spec};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;

use super::workload::Workload;
use crate::cluster::{ClusterState, SvcKey};
use crate::metrics::PolicyMetrics;

const STREAM_BUFFER: usize = 4;

/// `InboundServerPolicies`.
#[derive(Clone, Debug)]
pub struct InboundService {
    state: watch::Receiver<Arc<ClusterState>>,
    metrics: PolicyMetrics,
}

/// `OutboundPolicies`.
#[derive(Clone, Debug)]
pub struct OutboundService {
    state: watch::Receiver<Arc<ClusterState>>,
    metrics: PolicyMetrics,
}

impl InboundService {
    pub fn new(state: watch::Receiver<Arc<ClusterState>>, metrics: PolicyMetrics) -> Self {
        InboundService { state, metrics }
    }
}

impl OutboundService {
    pub fn new(state: watch::Receiver<Arc<ClusterState>>, metrics: PolicyMetrics) -> Self {
        OutboundService { state, metrics }
    }
}

fn workload(s: &str) -> Result<Workload, Status> {
    s.parse().map_err(Status::invalid_argument)
}

fn port_spec(spec: PortSpec) -> Result<(Workload, u16), Status> {
    let port = u16::try_from(spec.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Status::invalid_argument(format!("Invalid port: {}", spec.port)))?;
    Ok((workload(&spec.workload)?, port))
}

/// Sends `first`, then each different answer `answer` gives for a new state, until the
/// client goes away.
async fn follow<T, F>(
    mut state: watch::Receiver<Arc<ClusterState>>,
    first: T,
    answer: F,
    tx: mpsc::Sender<Result<T, Status>>,
    metrics: PolicyMetrics,
    api: &'static str,
) where
    T: Clone + PartialEq + Send + 'static,
    F: Fn(&ClusterState) -> Option<T> + Send + 'static,
{
    let _watching = metrics.watching(api);
    if tx.send(Ok(first.clone())).await.is_err() {
        return;
    }
    metrics.sent(api);
    let mut sent = first;
    loop {
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
        }
        let current = state.borrow_and_update().clone();
        let Some(next) = answer(&current) else {
            continue;
        };
        if next != sent {
            if tx.send(Ok(next.clone())).await.is_err() {
                return;
            }
            metrics.sent(api);
            sent = next;
        }
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for InboundService {
    type WatchPortStream = ReceiverStream<Result<Server, Status>>;

    async fn get_port(&self, request: Request<PortSpec>) -> Result<Response<Server>, Status> {
        let (w, port) = port_spec(request.into_inner())?;
        let current = self.state.borrow().clone();
        Ok(Response::new(current.policy.inbound.server(&w, port)))
    }

    async fn watch_port(
        &self,
        request: Request<PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let (w, port) = port_spec(request.into_inner())?;
        let mut state = self.state.clone();
        let current = state.borrow_and_update().clone();
        let first = current.policy.inbound.server(&w, port);
        debug!(namespace = %w.namespace, pod = %w.pod, port, "WatchPort");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let answer = move |s: &ClusterState| Some(s.policy.inbound.server(&w, port));
        tokio::spawn(follow(
            state,
            first,
            answer,
            tx,
            self.metrics.clone(),
            "inbound",
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What a `TrafficSpec` names.
#[derive(Clone, Debug)]
enum Target {
    Addr(IpAddr, u16),
    /// A host (lowercase, without a trailing dot) and port.
    Authority(String, u16),
}

fn target(spec: TrafficSpec) -> Result<Target, Status> {
    workload(&spec.source_workload)?;
    match spec.target {
        None => Err(Status::invalid_argument("target is required")),
        Some(traffic_spec::Target::Addr(addr)) => {
            let port = addr.port;
            let addr = SocketAddr::try_from(addr).map_err(|e| {
                Status::invalid_argument(format!("failed to parse target addr: {e}"))
            })?;
            match u16::try_from(port).ok().filter(|p| *p != 0) {
                Some(port) => Ok(Target::Addr(addr.ip(), port)),
                None => Err(Status::invalid_argument(format!("Invalid port: {port}"))),
            }
        }
        Some(traffic_spec::Target::Authority(a)) => {
            let auth: http::uri::Authority = a
                .parse()
                .map_err(|_| Status::invalid_argument(format!("invalid authority {a:?}")))?;
            let host = auth.host().trim_end_matches('.').to_ascii_lowercase();
            if host.is_empty() {
                return Err(Status::invalid_argument("authority must have a host"));
            }
            Ok(Target::Authority(host, auth.port_u16().unwrap_or(80)))
        }
    }
}

/// The service and port `target` names in `state`, or why there is none.
fn resolve(state: &ClusterState, target: &Target) -> Result<(SvcKey, u16), Status> {
    match target {
        Target::Addr(ip, port) => state
            .service_by_vip(ip)
            .map(|k| (k.clone(), *port))
            .ok_or_else(|| Status::not_found("No such service")),
        Target::Authority(host, port) => {
            let form = || {
                Status::not_found(format!(
                    "authority must be of the form <name>.<namespace>.svc.{}",
                    state.cluster_domain
                ))
            };
            let rest = host
                .strip_suffix(&format!(".svc.{}", state.cluster_domain))
                .ok_or_else(form)?;
            let (name, namespace) = rest.split_once('.').ok_or_else(form)?;
            if namespace.contains('.') {
                return Err(form());
            }
            let key = SvcKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            match state.services.contains_key(&key) {
                true => Ok((key, *port)),
                false => Err(Status::not_found(format!("No such service {key}"))),
            }
        }
    }
}

fn answer(state: &ClusterState, target: &Target) -> Result<OutboundPolicy, Status> {
    let (key, port) = resolve(state, target)?;
    state
        .policy
        .outbound
        .policy(&key, port)
        .ok_or_else(|| Status::not_found(format!("No such service {key}")))
}

#[tonic::async_trait]
impl OutboundPolicies for OutboundService {
    type WatchStream = ReceiverStream<Result<OutboundPolicy, Status>>;

    async fn get(&self, request: Request<TrafficSpec>) -> Result<Response<OutboundPolicy>, Status> {
        let target = target(request.into_inner())?;
        let current = self.state.borrow().clone();
        answer(&current, &target).map(Response::new)
    }

    async fn watch(
        &self,
        request: Request<TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let target = target(request.into_inner())?;
        let mut state = self.state.clone();
        let current = state.borrow_and_update().clone();
        let first = answer(&current, &target)?;
        debug!(?target, "Watch");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let next = move |s: &ClusterState| answer(s, &target).ok();
        tokio::spawn(follow(
            state,
            first,
            next,
            tx,
            self.metrics.clone(),
            "outbound",
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
