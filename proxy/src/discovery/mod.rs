//! Service discovery on the proxy side: `Destination/Get` and `GetProfile` streams per target,
//! cached, followed in the background, and dropped after an idle period.
//!
//! Each target (`IP:port`, or an HTTP authority `host:port`) gets one entry with two `watch`
//! channels, endpoints and profile, fed by background tasks ([`follow`]); the data path only
//! reads the channels, so it never blocks on the control plane. When the control plane goes
//! away the tasks keep the last-known state and reconnect with backoff; on reconnection the
//! server's fresh snapshot replaces the old set, so nothing is missed or duplicated.
//!
//! # Layout
//! - this module: [`Endpoint`], [`Resolution`], [`Target`] and its [`Target::pick`], the
//!   [`Resolver`] cache.
//! - [`follow`]: the background streams per target.
//! - [`balance`]: power of two choices over peak-EWMA latency, and the circuit breaker.
//! - [`profile`]: destination profiles compiled for the data path (routes, budgets, split).
//! - [`budget`]: retry budgets.
//! - [`report`]: `balancer_endpoints` and `GET /debug/destinations`.

pub mod balance;
pub mod budget;
mod follow;
pub mod profile;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use remora_identity::Name;
use remora_metrics::labels::DstLabels;
use remora_runtime::channel::{Instrumented, Moved};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use balance::{Balancer, Picked, Weighted};
use follow::{follow_endpoints, follow_profile};
use profile::{BudgetSlot, Profile};

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
    /// The identity to require of the peer (mTLS); `None` = plaintext.
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
    pub(crate) fn from_proto(
        w: pb::WeightedAddr,
        set_labels: &HashMap<String, String>,
    ) -> Option<Endpoint> {
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
    /// Following the endpoints, and the profile when it is asked for.
    tasks: (JoinHandle<()>, Option<JoinHandle<()>>),
    /// Held when no profile is asked for, so the profile channel stays open (and empty).
    _no_profile: Option<watch::Sender<Option<Arc<Profile>>>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.tasks.0.abort();
        if let Some(t) = &self.tasks.1 {
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
        let accrual = balance::Accrual::consecutive(self.balancer.max_failures);
        self.pick_with(timeout, accrual).await
    }

    /// As [`pick`](Self::pick), never the endpoint at `avoid` while another is available (a
    /// retry of a request it refused).
    pub async fn pick_avoiding(&mut self, timeout: Duration, avoid: SocketAddr) -> Pick {
        let accrual = balance::Accrual::consecutive(self.balancer.max_failures);
        self.pick_inner(timeout, accrual, Some(avoid)).await
    }

    /// As [`pick`](Self::pick), the attempt's outcome feeding the breaker by `accrual` (an
    /// outbound policy's failure accrual).
    pub async fn pick_with(&mut self, timeout: Duration, accrual: balance::Accrual) -> Pick {
        self.pick_inner(timeout, accrual, None).await
    }

    /// As [`pick_with`](Self::pick_with), never the endpoint at `avoid` (when given) while
    /// another is available: a policy route's resend of a request that endpoint never
    /// processed.
    pub async fn pick_with_avoiding(
        &mut self,
        timeout: Duration,
        accrual: balance::Accrual,
        avoid: Option<SocketAddr>,
    ) -> Pick {
        self.pick_inner(timeout, accrual, avoid).await
    }

    async fn pick_inner(
        &mut self,
        timeout: Duration,
        accrual: balance::Accrual,
        avoid: Option<SocketAddr>,
    ) -> Pick {
        let deadline = Instant::now() + timeout;
        loop {
            let current = self.endpoints.borrow_and_update().clone();
            match &current {
                Resolution::Endpoints(eps) if !eps.is_empty() => {
                    return match self.balancer.pick_avoiding(eps, accrual, avoid) {
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

/// Which targets' profiles are asked for (Linkerd's `DESTINATION_PROFILE_SUFFIXES` and
/// `_NETWORKS`): names under one of the suffixes (`""` is every name), IP addresses in one of
/// the networks. Others get endpoints only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileScope {
    /// Lowercase, without a trailing dot.
    pub suffixes: Vec<String>,
    pub networks: Vec<IpNet>,
}

impl ProfileScope {
    /// Every name and every address.
    pub fn all() -> Self {
        ProfileScope {
            suffixes: vec![String::new()],
            // 0.0.0.0/0 and ::/0.
            networks: vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())],
        }
    }

    /// Whether the profile of `path` (`host:port`) is asked for.
    pub fn wants(&self, path: &str) -> bool {
        let host = path.rsplit_once(':').map_or(path, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            let ip = ip.to_canonical();
            return self.networks.iter().any(|n| n.contains(&ip));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.suffixes.iter().any(|s| {
            s.is_empty()
                || name == *s
                || (name.len() > s.len()
                    && name.ends_with(s.as_str())
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.')
        })
    }
}

/// How the resolver asks and what it keeps.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Sent verbatim with every request (Linkerd's `{"ns":...,"nodeName":...,"pod":...}`).
    pub context_token: String,
    /// A target unused this long is dropped.
    pub idle: Duration,
    /// The most targets cached at once (least recently used dropped first).
    pub max_entries: usize,
    /// Consecutive failures that eject an endpoint.
    pub max_failures: u32,
    pub profiles: ProfileScope,
    /// Watchdogs of each `Get` and `GetProfile` stream (Linkerd's `CONTROL_STREAM_*`).
    pub streams: crate::policy::watch::StreamLimits,
}

impl ResolverConfig {
    /// Every profile asked for, no context token: Remora's own control plane's defaults.
    pub fn new(idle: Duration, max_entries: usize, max_failures: u32) -> Self {
        ResolverConfig {
            context_token: String::new(),
            idle,
            max_entries,
            max_failures,
            profiles: ProfileScope::all(),
            streams: Default::default(),
        }
    }
}

/// The cache of resolutions.
#[derive(Debug)]
pub struct Resolver {
    client: DestinationClient<Instrumented>,
    /// The destination service's addresses changed: streams waiting out a backoff retry now.
    moved: Moved,
    config: ResolverConfig,
    /// foldhash: looked up on every request; capped by `max_entries`.
    cache: Mutex<foldhash::HashMap<String, Entry>>,
    /// Endpoints that left a target's set (pools close their connections to them).
    removed: tokio::sync::broadcast::Sender<SocketAddr>,
}

/// Removed endpoints queued per subscriber; one that falls further behind misses some (its
/// connections to them then close when idle, or when the peer closes them).
const REMOVED_QUEUE: usize = 1024;

/// A per-target seed for the balancer's random draws.
fn seed(path: &str) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(path)
}

impl Resolver {
    pub fn new(channel: Instrumented, config: ResolverConfig) -> Arc<Self> {
        let resolver = Arc::new(Resolver {
            moved: channel.moved(),
            client: DestinationClient::new(channel),
            config,
            cache: Mutex::new(foldhash::HashMap::default()),
            removed: tokio::sync::broadcast::channel(REMOVED_QUEUE).0,
        });
        tokio::spawn(sweep(Arc::downgrade(&resolver)));
        resolver
    }

    /// Endpoint addresses as they leave any target's set: a subscriber closes its pooled
    /// connections to them, so that an address recycled for another pod is dialled afresh.
    pub fn removed(&self) -> tokio::sync::broadcast::Receiver<SocketAddr> {
        self.removed.subscribe()
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
        if cache.len() >= self.config.max_entries {
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
            context_token: self.config.context_token.clone(),
        };
        let span = info_span!("discovery", target = %path);
        let get = tokio::spawn(
            follow_endpoints(
                self.client.clone(),
                self.moved.clone(),
                req.clone(),
                etx,
                self.config.streams,
                self.removed.clone(),
            )
            .instrument(span.clone()),
        );
        // Outside the profile scope no profile is asked for: the target has none.
        let (profile, no_profile) = if self.config.profiles.wants(path) {
            let task = follow_profile(
                self.client.clone(),
                self.moved.clone(),
                req,
                ptx,
                self.config.streams,
            )
            .instrument(span);
            (Some(tokio::spawn(task)), None)
        } else {
            (None, Some(ptx))
        };
        Entry {
            endpoints: erx,
            profile: prx,
            balancer: Arc::new(Balancer::new(self.config.max_failures, seed(path))),
            budget: Arc::default(),
            last_used: Mutex::new(Instant::now()),
            tasks: (get, profile),
            _no_profile: no_profile,
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

fn evict_oldest(cache: &mut foldhash::HashMap<String, Entry>) {
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
                    .map(|t| t.elapsed() < r.config.idle)
                    .unwrap_or(false)
            });
            let dropped = before - cache.len();
            if dropped > 0 {
                debug!(dropped, "dropped idle discovery entries");
            }
        }
    }
}

#[cfg(test)]
mod tests;
