//! The background streams of one discovery target: `Destination/Get` into the endpoints
//! `watch`, `GetProfile` into the profile `watch`. Both keep the last-known state while the
//! control plane is away and reconnect with backoff; a fresh snapshot replaces the old state.
//! An endpoint that leaves the set (or whose address now names another identity) is announced
//! on the resolver's `removed` channel.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use pb::update::Update as U;
use remora_runtime::Backoff;
use remora_runtime::channel::Instrumented;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use super::profile::Profile;
use super::{Endpoint, Resolution};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After (re)connecting, messages arriving within this of each other form the initial snapshot.
const SNAPSHOT_QUIET: Duration = Duration::from_millis(100);

/// Applies one update to a set of endpoints; returns false for "the target does not exist".
fn apply(set: &mut BTreeMap<SocketAddr, Arc<Endpoint>>, update: pb::Update) -> bool {
    match update.update {
        Some(U::Add(add)) => {
            for w in add.addrs {
                if let Some(e) = Endpoint::from_proto(w, &add.metric_labels) {
                    set.insert(e.addr, Arc::new(e));
                }
            }
        }
        Some(U::Remove(rm)) => {
            for a in rm.addrs {
                if let Ok(addr) = SocketAddr::try_from(a) {
                    set.remove(&addr);
                }
            }
        }
        Some(U::NoEndpoints(n)) => {
            set.clear();
            return n.exists;
        }
        None => {}
    }
    true
}

fn publish(
    tx: &watch::Sender<Resolution>,
    set: &BTreeMap<SocketAddr, Arc<Endpoint>>,
    exists: bool,
    removed: &broadcast::Sender<SocketAddr>,
) {
    let next = if exists {
        Resolution::Endpoints(Arc::new(set.values().cloned().collect()))
    } else {
        Resolution::Unknown
    };
    tx.send_if_modified(|cur| {
        if *cur == next {
            return false;
        }
        if let Resolution::Endpoints(old) = cur {
            let gone = old.iter().filter(|e| {
                set.get(&e.addr)
                    .is_none_or(|now| now.identity != e.identity)
            });
            for gone in gone {
                // No subscriber is not an error.
                let _ = removed.send(gone.addr);
            }
        }
        *cur = next;
        true
    });
}

pub(super) async fn follow_endpoints(
    mut client: DestinationClient<Instrumented>,
    req: pb::GetDestination,
    tx: watch::Sender<Resolution>,
    removed: broadcast::Sender<SocketAddr>,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        let mut stream = match client.get(req.clone()).await {
            Ok(rsp) => rsp.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::InvalidArgument {
                    info!(error = %status.message(), "the control plane does not resolve this target");
                    tx.send_replace(Resolution::Unknown);
                    return;
                }
                warn!(error = %status, retry_in = ?backoff.peek(), "discovery unavailable; keeping the last-known endpoints");
                tx.send_if_modified(|cur| {
                    if *cur == Resolution::Pending {
                        *cur = Resolution::Unavailable;
                        return true;
                    }
                    false
                });
                backoff.wait().await;
                continue;
            }
        };
        // The fresh snapshot replaces whatever was known before, once it has begun: a stream
        // that says nothing leaves the last-known endpoints in place.
        let mut set = BTreeMap::new();
        let mut exists = true;
        let mut snapshot = true;
        let mut heard = false;
        loop {
            let next = if snapshot && heard {
                match tokio::time::timeout(SNAPSHOT_QUIET, stream.message()).await {
                    Ok(m) => m,
                    Err(_) => {
                        snapshot = false;
                        publish(&tx, &set, exists, &removed);
                        continue;
                    }
                }
            } else {
                stream.message().await
            };
            heard = true;
            match next {
                Ok(Some(update)) => {
                    exists = apply(&mut set, update);
                    if !snapshot {
                        publish(&tx, &set, exists, &removed);
                    }
                    backoff.reset();
                }
                Ok(None) | Err(_) => {
                    if snapshot && !set.is_empty() {
                        publish(&tx, &set, exists, &removed);
                    }
                    warn!(retry_in = ?backoff.peek(), "discovery stream ended; keeping the last-known endpoints");
                    break;
                }
            }
        }
        backoff.wait().await;
    }
}

pub(super) async fn follow_profile(
    mut client: DestinationClient<Instrumented>,
    req: pb::GetDestination,
    tx: watch::Sender<Option<Arc<Profile>>>,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        match client.get_profile(req.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                while let Ok(Some(profile)) = stream.message().await {
                    tx.send_replace(Some(Arc::new(Profile::compile(profile))));
                    backoff.reset();
                }
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::NotFound
                ) =>
            {
                debug!(code = ?status.code(), "no profile for this target");
                return;
            }
            Err(status) => debug!(error = %status, "profile unavailable"),
        }
        backoff.wait().await;
    }
}
