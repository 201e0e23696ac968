//! The background streams of one discovery target: `Destination/Get` into the endpoints
//! `watch`, `GetProfile` into the profile `watch`. Both keep the last-known state while the
//! control plane is away and reconnect with backoff; a fresh snapshot replaces the old state.
//! Each stream is watched as Linkerd's `CONTROL_STREAM_*` settings say: a call or stream that
//! gives no first message within `initial`, then none for `idle`, or that lives past
//! `lifetime`, is replaced without a restart (a control plane that accepts and never answers
//! cannot wedge a target), the last-known state kept meanwhile.
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
use remora_runtime::channel::{Instrumented, Moved};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::policy::watch::{StreamLimits, within};

use super::profile::Profile;
use super::{Endpoint, Resolution};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After (re)connecting, messages arriving within this of each other form the initial snapshot.
const SNAPSHOT_QUIET: Duration = Duration::from_millis(100);

/// Logs why a watched stream is being replaced.
fn replacing(what: &str, limits: StreamLimits, opened: Instant) {
    if limits.outlived(opened) {
        debug!("{what}: replacing the stream at the end of its lifetime");
    } else {
        warn!("{what}: the control plane went silent; replacing the stream");
    }
}

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
    mut moved: Moved,
    req: pb::GetDestination,
    tx: watch::Sender<Resolution>,
    limits: StreamLimits,
    removed: broadcast::Sender<SocketAddr>,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        let opened = Instant::now();
        let Some(called) = within(limits.deadline(opened, false), client.get(req.clone())).await
        else {
            replacing("discovery", limits, opened);
            moved.or_backoff(&mut backoff).await;
            continue;
        };
        let mut stream = match called {
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
                moved.or_backoff(&mut backoff).await;
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
            let watchdog = limits.deadline(opened, heard);
            let next = if snapshot && heard {
                let quiet = Instant::now() + SNAPSHOT_QUIET;
                match tokio::time::timeout_at(
                    watchdog.map_or(quiet, |w| w.min(quiet)),
                    stream.message(),
                )
                .await
                {
                    Ok(m) => m,
                    Err(_) => {
                        snapshot = false;
                        publish(&tx, &set, exists, &removed);
                        continue;
                    }
                }
            } else {
                match within(watchdog, stream.message()).await {
                    Some(m) => m,
                    None => {
                        replacing("discovery", limits, opened);
                        break;
                    }
                }
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
        moved.or_backoff(&mut backoff).await;
    }
}

pub(super) async fn follow_profile(
    mut client: DestinationClient<Instrumented>,
    mut moved: Moved,
    req: pb::GetDestination,
    tx: watch::Sender<Option<Arc<Profile>>>,
    limits: StreamLimits,
) {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        let opened = Instant::now();
        let Some(called) = within(
            limits.deadline(opened, false),
            client.get_profile(req.clone()),
        )
        .await
        else {
            replacing("profile", limits, opened);
            moved.or_backoff(&mut backoff).await;
            continue;
        };
        match called {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                let mut heard = false;
                loop {
                    match within(limits.deadline(opened, heard), stream.message()).await {
                        Some(Ok(Some(profile))) => {
                            heard = true;
                            tx.send_replace(Some(Arc::new(Profile::compile(profile))));
                            backoff.reset();
                        }
                        Some(_) => break,
                        None => {
                            replacing("profile", limits, opened);
                            break;
                        }
                    }
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
        moved.or_backoff(&mut backoff).await;
    }
}
