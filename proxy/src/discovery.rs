//! Service discovery on the proxy side: `Destination/Get` and `GetProfile` streams per target,
//! cached, followed in the background, and dropped after an idle period.
//!
//! Each target (`IP:port` now; an HTTP authority once #6 exists) gets one entry with two
//! `watch` channels, endpoints and profile, fed by background tasks; the data path only reads
//! the channels, so it never blocks on the control plane. When the control plane goes away the
//! tasks keep the last-known state and reconnect with backoff; on reconnection the server's
//! fresh snapshot replaces the old set, so nothing is missed or duplicated.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::control_client::Instrumented;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use pb::update::Update as U;
use remora_identity::Name;
use remora_metrics::labels::DstLabels;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::balance::{Balancer, Picked, Weighted};
use crate::profile::{BudgetSlot, Profile};
use tracing::{Instrument, debug, info, info_span, warn};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After (re)connecting, messages arriving within this of each other form the initial snapshot.
const SNAPSHOT_QUIET: Duration = Duration::from_millis(100);
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How peers speak to an endpoint (the discovery hint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    Unknown,
    H2,
    Opaque,
}

/// One endpoint, with what is needed to dial it.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    /// The identity to require of the peer (mTLS, #5); `None` = plaintext.
    pub identity: Option<Name>,
    /// The SNI to send, when it differs from the identity.
    pub server_name: Option<Name>,
    pub hint: Hint,
    /// Opaque transport: dial the peer proxy's inbound port with a transport header.
    pub opaque_transport_port: Option<u16>,
    pub authority_override: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `labels` as metric labels (`dst_*`), built once.
    pub dst_labels: Arc<DstLabels>,
    /// `identity` as a metric label value (`server_id`), built once.
    pub server_id: Option<Arc<str>>,
}

impl Endpoint {
    fn from_proto(w: pb::WeightedAddr, set_labels: &HashMap<String, String>) -> Option<Endpoint> {
        let addr = SocketAddr::try_from(w.addr?).ok()?;
        let identity = w.tls_identity.as_ref().and_then(|t| match &t.strategy {
            Some(pb::tls_identity::Strategy::DnsLikeIdentity(d)) => d.name.parse().ok(),
            _ => None,
        });
        let server_name = w
            .tls_identity
            .as_ref()
            .and_then(|t| t.server_name.as_ref())
            .and_then(|s| s.name.parse().ok());
        let (hint, opaque_transport_port) = match &w.protocol_hint {
            Some(h) => (
                match h.protocol {
                    Some(pb::protocol_hint::Protocol::H2(_)) => Hint::H2,
                    Some(pb::protocol_hint::Protocol::Opaque(_)) => Hint::Opaque,
                    None => Hint::Unknown,
                },
                h.opaque_transport
                    .as_ref()
                    .and_then(|o| u16::try_from(o.inbound_port).ok()),
            ),
            None => (Hint::Unknown, None),
        };
        let mut labels: BTreeMap<String, String> = set_labels.clone().into_iter().collect();
        labels.extend(w.metric_labels);
        let dst_labels = Arc::new(DstLabels::new(
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
        let server_id = identity.as_ref().map(|i: &Name| Arc::from(i.as_str()));
        Some(Endpoint {
            addr,
            weight: w.weight,
            identity,
            server_name,
            hint,
            opaque_transport_port,
            authority_override: w.authority_override.map(|a| a.authority_override),
            labels,
            dst_labels,
            server_id,
        })
    }
}

/// What discovery says about a target.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// No answer yet.
    Pending,
    /// The control plane does not know the target: use the address itself.
    Unknown,
    /// The control plane could not be reached and nothing is known yet.
    Unavailable,
    /// The target's current endpoints (possibly none).
    Endpoints(Arc<Vec<Arc<Endpoint>>>),
}

/// One cached target.
#[derive(Debug)]
struct Entry {
    endpoints: watch::Receiver<Resolution>,
    profile: watch::Receiver<Option<Arc<Profile>>>,
    balancer: Arc<Balancer>,
    budget: Arc<BudgetSlot>,
    last_used: Mutex<Instant>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Entry {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A handle on one target's discovery state.
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoints: watch::Receiver<Resolution>,
    pub profile: watch::Receiver<Option<Arc<Profile>>>,
    pub balancer: Arc<Balancer>,
    pub budget: Arc<BudgetSlot>,
}

/// What the outbound should connect to.
#[derive(Debug)]
pub enum Pick {
    /// An endpoint, and the balancer's handle to report how the attempt went.
    Endpoint(Arc<Endpoint>, Picked),
    /// Forward to the original address (unknown to discovery, or discovery unavailable).
    AsIs,
    /// The target exists but has no endpoint (after waiting).
    NoEndpoints,
}

impl Weighted for Arc<Endpoint> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn weight(&self) -> u32 {
        self.weight
    }
}

impl Target {
    /// Waits up to `timeout` for an answer with an endpoint, then picks one with the balancer
    /// (power of two choices over peak-EWMA latency, skipping ejected endpoints). When every
    /// endpoint is ejected (and no probe is due) it answers `NoEndpoints` at once.
    pub async fn pick(&mut self, timeout: Duration) -> Pick {
        let deadline = Instant::now() + timeout;
        loop {
            let current = self.endpoints.borrow_and_update().clone();
            match &current {
                Resolution::Endpoints(eps) if !eps.is_empty() => {
                    return match self.balancer.pick(eps) {
                        Some(p) => Pick::Endpoint(eps[p.index].clone(), p),
                        // Every endpoint is ejected and none is due for a probe: fail fast
                        // rather than hold the request.
                        None => Pick::NoEndpoints,
                    };
                }
                Resolution::Unknown | Resolution::Unavailable => return Pick::AsIs,
                Resolution::Pending | Resolution::Endpoints(_) => {}
            }
            // No answer yet, or no endpoint: wait for a change, up to the deadline.
            let changed = tokio::time::timeout_at(deadline, self.endpoints.changed()).await;
            if matches!(changed, Ok(Err(_))) || Instant::now() >= deadline {
                return match current {
                    Resolution::Pending => Pick::AsIs,
                    _ => Pick::NoEndpoints,
                };
            }
        }
    }
}

/// The cache of resolutions.
#[derive(Debug)]
pub struct Resolver {
    client: DestinationClient<Instrumented>,
    context_token: String,
    idle: Duration,
    max_entries: usize,
    /// Consecutive failures that eject an endpoint.
    max_failures: u32,
    cache: Mutex<HashMap<String, Entry>>,
}

/// A per-target seed for the balancer's random draws.
fn seed(path: &str) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(path)
}

impl Resolver {
    pub fn new(
        channel: Instrumented,
        context_token: String,
        idle: Duration,
        max_entries: usize,
        max_failures: u32,
    ) -> Arc<Self> {
        let resolver = Arc::new(Resolver {
            client: DestinationClient::new(channel),
            context_token,
            idle,
            max_entries,
            max_failures,
            cache: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweep(Arc::downgrade(&resolver)));
        resolver
    }

    /// The discovery state of `path` (`host:port`), starting to follow it if needed.
    pub fn resolve(&self, path: &str) -> Target {
        let Ok(mut cache) = self.cache.lock() else {
            return self.follow(path).into_target();
        };
        if let Some(e) = cache.get(path) {
            if let Ok(mut t) = e.last_used.lock() {
                *t = Instant::now();
            }
            return Target {
                endpoints: e.endpoints.clone(),
                profile: e.profile.clone(),
                balancer: e.balancer.clone(),
                budget: e.budget.clone(),
            };
        }
        if cache.len() >= self.max_entries {
            evict_oldest(&mut cache);
        }
        let entry = self.follow(path);
        let target = Target {
            endpoints: entry.endpoints.clone(),
            profile: entry.profile.clone(),
            balancer: entry.balancer.clone(),
            budget: entry.budget.clone(),
        };
        cache.insert(path.to_string(), entry);
        target
    }

    fn follow(&self, path: &str) -> Entry {
        let (etx, erx) = watch::channel(Resolution::Pending);
        let (ptx, prx) = watch::channel(None);
        let req = pb::GetDestination {
            scheme: String::new(),
            path: path.to_string(),
            context_token: self.context_token.clone(),
        };
        let span = info_span!("discovery", target = %path);
        let get = tokio::spawn(
            follow_endpoints(self.client.clone(), req.clone(), etx).instrument(span.clone()),
        );
        let profile = tokio::spawn(follow_profile(self.client.clone(), req, ptx).instrument(span));
        Entry {
            endpoints: erx,
            profile: prx,
            balancer: Arc::new(Balancer::new(self.max_failures, seed(path))),
            budget: Arc::default(),
            last_used: Mutex::new(Instant::now()),
            tasks: [get, profile],
        }
    }

    /// Every cached target with its balancer's (ready, ejected) endpoint counts.
    pub fn balancer_counts(&self) -> Vec<(String, (usize, usize))> {
        let Ok(cache) = self.cache.lock() else {
            return Vec::new();
        };
        cache
            .iter()
            .map(|(k, e)| (k.clone(), e.balancer.counts()))
            .collect()
    }

    /// Every cached target and what is known of it.
    pub fn snapshot(&self) -> Vec<(String, Resolution, Option<Arc<Profile>>)> {
        let Ok(cache) = self.cache.lock() else {
            return Vec::new();
        };
        let mut out: Vec<_> = cache
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    e.endpoints.borrow().clone(),
                    e.profile.borrow().clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Entry {
    fn into_target(self) -> Target {
        Target {
            endpoints: self.endpoints.clone(),
            profile: self.profile.clone(),
            balancer: self.balancer.clone(),
            budget: self.budget.clone(),
        }
    }
}

fn evict_oldest(cache: &mut HashMap<String, Entry>) {
    let oldest = cache
        .iter()
        .min_by_key(|(_, e)| {
            e.last_used
                .lock()
                .map(|t| *t)
                .unwrap_or_else(|_| Instant::now())
        })
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        cache.remove(&k);
    }
}

async fn sweep(resolver: std::sync::Weak<Resolver>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let Some(r) = resolver.upgrade() else { return };
        if let Ok(mut cache) = r.cache.lock() {
            let before = cache.len();
            cache.retain(|_, e| {
                e.last_used
                    .lock()
                    .map(|t| t.elapsed() < r.idle)
                    .unwrap_or(false)
            });
            let dropped = before - cache.len();
            if dropped > 0 {
                debug!(dropped, "dropped idle discovery entries");
            }
        }
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
        *cur = next;
        true
    });
}

async fn follow_endpoints(
    mut client: DestinationClient<Instrumented>,
    req: pb::GetDestination,
    tx: watch::Sender<Resolution>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let mut stream = match client.get(req.clone()).await {
            Ok(rsp) => rsp.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::InvalidArgument {
                    info!(error = %status.message(), "the control plane does not resolve this target");
                    tx.send_replace(Resolution::Unknown);
                    return;
                }
                warn!(error = %status, retry_in = ?backoff, "discovery unavailable; keeping the last-known endpoints");
                tx.send_if_modified(|cur| {
                    if *cur == Resolution::Pending {
                        *cur = Resolution::Unavailable;
                        return true;
                    }
                    false
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // The fresh snapshot replaces whatever was known before.
        let mut set = BTreeMap::new();
        let mut exists = true;
        let mut snapshot = true;
        loop {
            let next = if snapshot {
                match tokio::time::timeout(SNAPSHOT_QUIET, stream.message()).await {
                    Ok(m) => m,
                    Err(_) => {
                        snapshot = false;
                        publish(&tx, &set, exists);
                        continue;
                    }
                }
            } else {
                stream.message().await
            };
            match next {
                Ok(Some(update)) => {
                    exists = apply(&mut set, update);
                    if !snapshot {
                        publish(&tx, &set, exists);
                    }
                    backoff = BACKOFF_START;
                }
                Ok(None) | Err(_) => {
                    if snapshot && !set.is_empty() {
                        publish(&tx, &set, exists);
                    }
                    warn!(retry_in = ?backoff, "discovery stream ended; keeping the last-known endpoints");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn follow_profile(
    mut client: DestinationClient<Instrumented>,
    req: pb::GetDestination,
    tx: watch::Sender<Option<Arc<Profile>>>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        match client.get_profile(req.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                while let Ok(Some(profile)) = stream.message().await {
                    tx.send_replace(Some(Arc::new(Profile::compile(profile))));
                    backoff = BACKOFF_START;
                }
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) =>
            {
                debug!("no profile for this target");
                return;
            }
            Err(status) => debug!(error = %status, "profile unavailable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// `balancer_endpoints{authority, state}`: each cached target's endpoints in balancing
/// (`ready`) and ejected by the circuit breaker (`ejected`), read at each scrape. Bounded by
/// the resolver's cache (`REMORA_DESTINATION_MAX_TARGETS`).
#[derive(Debug)]
pub struct BalancerCollector(pub std::sync::Weak<Resolver>);

impl prometheus_client::collector::Collector for BalancerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let mut family = encoder.encode_descriptor(
            "balancer_endpoints",
            "Endpoints of each discovered target, by state: ready (balanced) or ejected (circuit \
             breaker open or probing)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        let Some(resolver) = self.0.upgrade() else {
            return Ok(());
        };
        for (authority, (ready, ejected)) in resolver.balancer_counts() {
            for (state, n) in [("ready", ready), ("ejected", ejected)] {
                let labels = [("authority", authority.as_str()), ("state", state)];
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The resolver's state as JSON, for `GET /debug/destinations`.
pub fn snapshot_json(resolver: &Resolver) -> String {
    use serde_json::json;
    let targets: Vec<_> = resolver
        .snapshot()
        .into_iter()
        .map(|(target, res, profile)| {
            let (state, endpoints) = match res {
                Resolution::Pending => ("pending", vec![]),
                Resolution::Unknown => ("unknown", vec![]),
                Resolution::Unavailable => ("unavailable", vec![]),
                Resolution::Endpoints(eps) => (
                    "resolved",
                    eps.iter()
                        .map(|e| {
                            json!({
                                "addr": e.addr.to_string(),
                                "weight": e.weight,
                                "identity": e.identity.as_ref().map(|n| n.to_string()),
                                "hint": format!("{:?}", e.hint).to_lowercase(),
                                "opaque_transport_port": e.opaque_transport_port,
                                "authority_override": e.authority_override,
                                "labels": e.labels,
                            })
                        })
                        .collect(),
                ),
            };
            json!({
                "target": target,
                "state": state,
                "endpoints": endpoints,
                "profile": profile.map(|p| json!({
                    "fully_qualified_name": p.proto.fully_qualified_name,
                    "opaque_protocol": p.proto.opaque_protocol,
                    "routes": p.routes.len(),
                })),
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "destinations": targets })).unwrap_or_default()
}
