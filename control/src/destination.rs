//! `io.linkerd.proxy.destination.Destination`: `Get` streams a target's endpoints as incremental
//! `Add` / `Remove` / `NoEndpoints` updates; `GetProfile` streams its profile. Both follow the
//! cluster state (a `watch` the config reloader publishes to), so every edit reaches every
//! subscriber.
//!
//! Each stream is a task that keeps what it last sent and, on each new state, sends only the
//! difference. Large sets go out in several `Add` messages to stay far below gRPC's message size
//! limit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::Destination;
use pb::update::Update as U;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::cluster::{ClusterState, Target};
use crate::metrics::DestinationMetrics;

/// Addresses per `Add` message: a WeightedAddr with labels and identity is a few hundred bytes,
/// so a message stays well under 1 MiB.
pub const ADD_CHUNK: usize = 1000;
const STREAM_BUFFER: usize = 16;

type Addrs = BTreeMap<SocketAddr, pb::WeightedAddr>;

#[derive(Clone, Debug)]
pub struct DestinationService {
    state: watch::Receiver<Arc<ClusterState>>,
    metrics: DestinationMetrics,
}

impl DestinationService {
    pub fn new(state: watch::Receiver<Arc<ClusterState>>, metrics: DestinationMetrics) -> Self {
        DestinationService { state, metrics }
    }

    fn check(&self, path: &str) -> Result<(), Status> {
        self.state
            .borrow()
            .target(path)
            .map(|_| ())
            .map_err(|e| Status::invalid_argument(e.0))
    }
}

/// What a `Get` stream has told its client so far.
#[derive(Clone, Debug, PartialEq)]
pub enum Sent {
    Nothing,
    Unknown,
    Known(Addrs),
}

/// The updates that take a client from `prev` to `next` (`None` = the target is unknown).
pub fn diff(prev: &Sent, next: Option<&Addrs>) -> Vec<pb::Update> {
    let wrap = |u| pb::Update { update: Some(u) };
    let mut out = Vec::new();
    let empty = Addrs::new();
    let prev_addrs = match prev {
        Sent::Known(a) => a,
        _ => &empty,
    };
    let Some(next) = next else {
        if !prev_addrs.is_empty() {
            out.push(wrap(remove(prev_addrs.keys())));
        }
        if *prev != Sent::Unknown {
            out.push(wrap(U::NoEndpoints(pb::NoEndpoints { exists: false })));
        }
        return out;
    };
    let gone: Vec<&SocketAddr> = prev_addrs
        .keys()
        .filter(|a| !next.contains_key(a))
        .collect();
    if !gone.is_empty() {
        out.push(wrap(remove(gone.into_iter())));
    }
    let changed: Vec<pb::WeightedAddr> = next
        .iter()
        .filter(|(a, w)| prev_addrs.get(a) != Some(w))
        .map(|(_, w)| w.clone())
        .collect();
    for chunk in changed.chunks(ADD_CHUNK) {
        out.push(wrap(U::Add(pb::WeightedAddrSet {
            addrs: chunk.to_vec(),
            metric_labels: Default::default(),
        })));
    }
    let became_empty =
        next.is_empty() && (!prev_addrs.is_empty() || !matches!(prev, Sent::Known(_)));
    if became_empty {
        out.push(wrap(U::NoEndpoints(pb::NoEndpoints { exists: true })));
    }
    out
}

fn remove<'a>(addrs: impl Iterator<Item = &'a SocketAddr>) -> U {
    U::Remove(pb::AddrSet {
        addrs: addrs.map(|a| (*a).into()).collect(),
    })
}

/// Keeps one `Get` stream up to date until its client goes away.
async fn follow_endpoints(
    path: String,
    mut state: watch::Receiver<Arc<ClusterState>>,
    tx: mpsc::Sender<Result<pb::Update, Status>>,
    metrics: DestinationMetrics,
) {
    let _watch = metrics.watching("get");
    let mut sent = Sent::Nothing;
    loop {
        let current = state.borrow_and_update().clone();
        let target = current.target(&path).unwrap_or(Target::Unknown);
        let next = current.endpoints(&target);
        for update in diff(&sent, next.as_ref()) {
            if tx.send(Ok(update)).await.is_err() {
                return;
            }
            metrics.sent("get");
        }
        sent = match next {
            Some(addrs) => Sent::Known(addrs),
            None => Sent::Unknown,
        };
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}

/// Keeps one `GetProfile` stream up to date until its client goes away.
async fn follow_profile(
    path: String,
    mut state: watch::Receiver<Arc<ClusterState>>,
    tx: mpsc::Sender<Result<pb::DestinationProfile, Status>>,
    metrics: DestinationMetrics,
) {
    let _watch = metrics.watching("get_profile");
    let mut sent: Option<pb::DestinationProfile> = None;
    loop {
        let current = state.borrow_and_update().clone();
        let target = current.target(&path).unwrap_or(Target::Unknown);
        let profile = current.profile(&target);
        if sent.as_ref() != Some(&profile) {
            if tx.send(Ok(profile.clone())).await.is_err() {
                return;
            }
            metrics.sent("get_profile");
            sent = Some(profile);
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = ReceiverStream<Result<pb::Update, Status>>;
    type GetProfileStream = ReceiverStream<Result<pb::DestinationProfile, Status>>;

    async fn get(
        &self,
        request: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let path = request.into_inner().path;
        self.check(&path)?;
        debug!(%path, "Get");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(follow_endpoints(
            path,
            self.state.clone(),
            tx,
            self.metrics.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let path = request.into_inner().path;
        self.check(&path)?;
        debug!(%path, "GetProfile");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(follow_profile(
            path,
            self.state.clone(),
            tx,
            self.metrics.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: std::ops::Range<u8>) -> Addrs {
        n.map(|i| {
            let a: SocketAddr = format!("10.0.0.{i}:80").parse().unwrap();
            (
                a,
                pb::WeightedAddr {
                    addr: Some(a.into()),
                    weight: 10_000,
                    ..Default::default()
                },
            )
        })
        .collect()
    }

    fn kinds(updates: &[pb::Update]) -> Vec<String> {
        updates
            .iter()
            .map(|u| match u.update.as_ref().unwrap() {
                U::Add(s) => format!("add{}", s.addrs.len()),
                U::Remove(s) => format!("remove{}", s.addrs.len()),
                U::NoEndpoints(n) => format!("none(exists={})", n.exists),
            })
            .collect()
    }

    #[test]
    fn diffs() {
        assert_eq!(kinds(&diff(&Sent::Nothing, Some(&addrs(1..3)))), ["add2"]);
        assert_eq!(
            kinds(&diff(&Sent::Nothing, Some(&Addrs::new()))),
            ["none(exists=true)"]
        );
        assert_eq!(kinds(&diff(&Sent::Nothing, None)), ["none(exists=false)"]);
        assert!(diff(&Sent::Unknown, None).is_empty());
        let two = Sent::Known(addrs(1..3));
        assert!(diff(&two, Some(&addrs(1..3))).is_empty());
        assert_eq!(kinds(&diff(&two, Some(&addrs(2..6)))), ["remove1", "add3"]);
        assert_eq!(
            kinds(&diff(&two, Some(&Addrs::new()))),
            ["remove2", "none(exists=true)"]
        );
        assert_eq!(kinds(&diff(&two, None)), ["remove2", "none(exists=false)"]);
        assert!(diff(&Sent::Known(Addrs::new()), Some(&Addrs::new())).is_empty());
        // A changed endpoint (same address, new metadata) is re-added.
        let mut changed = addrs(1..3);
        changed.values_mut().next().unwrap().weight = 1;
        assert_eq!(kinds(&diff(&two, Some(&changed))), ["add1"]);
    }

    #[test]
    fn large_sets_are_chunked() {
        let big: Addrs = (0..2500u32)
            .map(|i| {
                let a = SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 80));
                (
                    a,
                    pb::WeightedAddr {
                        addr: Some(a.into()),
                        ..Default::default()
                    },
                )
            })
            .collect();
        assert_eq!(
            kinds(&diff(&Sent::Nothing, Some(&big))),
            ["add1000", "add1000", "add500"]
        );
    }
}
