//! Multicluster: the export watch (server side), the links (client side) and the service mirror.
//! The API is `remora.multicluster.v1` (`api/proto/multicluster.proto`).
//!
//! ```text
//!  west control plane                                east control plane
//!  config: web export = true                         config: [[links]] west, mode flat
//!  ExportsService::watch ◄──── mTLS, east's ──────── run_link (backoff, grace)
//!    (only identities of         control identity          │ ExportUpdate: snapshot, then
//!     linked clusters)                                      ▼ upserts / removals
//!    snapshot + per-service diffs ─────────────────► Mirrors (per link) ──► combine ──► state
//!                                                    web-west.shop: VIP from mirror_cidr,
//!                                                    flat: west pods (IPs, identities, hints)
//!                                                    gateway: west's gateway, authority override
//! ```
//!
//! The combined state (local services + mirrors) is what Destination serves, so a mirrored
//! service resolves by name, by virtual IP and by pod IP like a local one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::cluster::{ClusterState, Endpoint, Port, Protocol, Service, SvcKey};
use crate::config::{Link, LinkMode};
use crate::server::PeerInfo;

/// The generated API (`api/proto/multicluster.proto`).
pub use remora_api::multicluster as pb;

const STREAM_BUFFER: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The multicluster families of a control plane.
#[derive(Clone, Debug, Default)]
pub struct MulticlusterMetrics {
    link_up: Family<ClusterLabel, Gauge>,
    mirrored: Family<ClusterLabel, Gauge>,
    refused: Counter,
    watches: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

impl MulticlusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = MulticlusterMetrics::default();
        registry.register(
            "multicluster_link_up",
            "1 while the linked cluster's export watch is connected, 0 otherwise",
            m.link_up.clone(),
        );
        registry.register(
            "multicluster_mirrored_services",
            "Services mirrored from each linked cluster",
            m.mirrored.clone(),
        );
        registry.register(
            "multicluster_export_watches_refused",
            "Export watches refused: the peer is not a linked cluster's control plane",
            m.refused.clone(),
        );
        registry.register(
            "multicluster_export_watches",
            "Export watches being served now",
            m.watches.clone(),
        );
        m
    }

    fn link(&self, cluster: &str) -> ClusterLabel {
        ClusterLabel {
            cluster: cluster.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: what this cluster exports.

/// The services of `state` marked `export`, as API messages (with their endpoints when asked).
/// Mirrored services are never exported again.
pub fn exports(state: &ClusterState, endpoints: bool) -> BTreeMap<SvcKey, pb::ExportedService> {
    state
        .services
        .values()
        .filter(|s| s.export)
        .map(|svc| {
            let msg = pb::ExportedService {
                name: svc.key.name.clone(),
                namespace: svc.key.namespace.clone(),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| pb::Port {
                        port: u32::from(p.port),
                        target_port: u32::from(p.target_port),
                        opaque: p.opaque,
                    })
                    .collect(),
                endpoints: if svc.export_mode == Some("flat")
                    || (svc.export_mode.is_none() && endpoints)
                {
                    svc.endpoints
                        .iter()
                        .map(|e| pb::Endpoint {
                            pod: e.pod.clone(),
                            ip: e.ip.to_string(),
                            identity: match e.protocol {
                                Protocol::None => String::new(),
                                _ => state.endpoint_identity(svc, e),
                            },
                            protocol: match e.protocol {
                                Protocol::H2 => "h2",
                                Protocol::Opaque => "opaque",
                                Protocol::None => "none",
                            }
                            .to_string(),
                            labels: e.labels.clone().into_iter().collect(),
                            weight: e.weight,
                            explicit: e.explicit,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                fqdn: format!(
                    "{}.{}.svc.{}",
                    svc.key.name, svc.key.namespace, state.cluster_domain
                ),
                mode: svc.export_mode.unwrap_or_default().to_string(),
            };
            (svc.key.clone(), msg)
        })
        .collect()
}

/// The update from `prev` to `next`: changed or new services in full, removed ones by name.
pub fn export_diff(
    prev: &BTreeMap<SvcKey, pb::ExportedService>,
    next: &BTreeMap<SvcKey, pb::ExportedService>,
) -> pb::ExportUpdate {
    pb::ExportUpdate {
        snapshot: false,
        upserts: next
            .iter()
            .filter(|(k, v)| prev.get(k) != Some(v))
            .map(|(_, v)| v.clone())
            .collect(),
        removed: prev
            .keys()
            .filter(|k| !next.contains_key(k))
            .map(|k| k.to_string())
            .collect(),
    }
}

/// `remora.multicluster.v1.Exports`: answers only the control planes of linked clusters.
#[derive(Clone, Debug)]
pub struct ExportsService {
    state: watch::Receiver<Arc<ClusterState>>,
    /// The control-plane identities allowed to watch, by cluster.
    linked: Arc<HashMap<String, String>>,
    metrics: MulticlusterMetrics,
}

impl ExportsService {
    /// `state` must be the local services only (the config's), never the mirrored ones.
    /// `gateway` is this cluster's own gateway identity, which may watch too (it forwards only
    /// to exported services).
    pub fn new(
        state: watch::Receiver<Arc<ClusterState>>,
        links: &[Link],
        gateway: Option<&remora_identity::Name>,
        metrics: MulticlusterMetrics,
    ) -> Self {
        let mut linked: HashMap<String, String> = links
            .iter()
            .map(|l| (l.control_identity.to_string(), l.cluster.clone()))
            .collect();
        if let Some(g) = gateway {
            linked.insert(g.to_string(), "this cluster's gateway".to_string());
        }
        ExportsService {
            state,
            linked: Arc::new(linked),
            metrics,
        }
    }
}

#[tonic::async_trait]
impl pb::exports_server::Exports for ExportsService {
    type WatchStream = ReceiverStream<Result<pb::ExportUpdate, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let identity = peer
            .as_ref()
            .and_then(|p| p.identity.as_ref())
            .map(|n| n.to_string());
        let addr = peer.as_ref().and_then(|p| p.addr);
        let Some(cluster) = identity
            .as_ref()
            .and_then(|id| self.linked.get(id))
            .cloned()
        else {
            self.metrics.refused.inc();
            warn!(
                peer = ?addr,
                identity = identity.as_deref().unwrap_or("none (no client certificate)"),
                "refusing an export watch: not the control plane of a linked cluster"
            );
            return Err(Status::permission_denied(
                "only the control planes of linked clusters may watch exports",
            ));
        };
        let req = request.into_inner();
        info!(%cluster, peer = ?addr, endpoints = req.endpoints, "export watch opened");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut state = self.state.clone();
        let watches = self.metrics.watches.clone();
        tokio::spawn(async move {
            watches.inc();
            let mut sent = BTreeMap::new();
            let mut first = true;
            loop {
                let next = exports(&state.borrow_and_update(), req.endpoints);
                let mut update = export_diff(&sent, &next);
                if first {
                    update = pb::ExportUpdate {
                        snapshot: true,
                        upserts: next.values().cloned().collect(),
                        removed: Vec::new(),
                    };
                }
                if (first || !update.upserts.is_empty() || !update.removed.is_empty())
                    && tx.send(Ok(update)).await.is_err()
                {
                    break;
                }
                first = false;
                sent = next;
                tokio::select! {
                    changed = state.changed() => if changed.is_err() { break },
                    _ = tx.closed() => break,
                }
            }
            watches.dec();
            info!(%cluster, "export watch closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

// ---------------------------------------------------------------------------------------------
// Client side: links and the mirror.

/// What each link currently mirrors: the remote cluster's exported services, by cluster and
/// then by `name.namespace`.
pub type Mirrors = BTreeMap<String, Arc<BTreeMap<String, pb::ExportedService>>>;

/// Follows one linked cluster's exports for as long as the task runs: connects with mTLS (our
/// control identity; the remote must present `link.control_identity`), applies the snapshot and
/// changes to `mirrors`, reconnects with backoff, and withdraws the link's services once it has
/// been unreachable for `grace`.
pub async fn run_link(
    link: Link,
    local_cluster: String,
    channel: remora_runtime::channel::ControlChannel,
    grace: Duration,
    mirrors: watch::Sender<Mirrors>,
    metrics: MulticlusterMetrics,
) {
    let up = metrics
        .link_up
        .get_or_create(&metrics.link(&link.cluster))
        .clone();
    let mirrored = metrics
        .mirrored
        .get_or_create(&metrics.link(&link.cluster))
        .clone();
    let mut client = pb::exports_client::ExportsClient::new(channel);
    let mut backoff = BACKOFF_MIN;
    // Since when the link has been down (from the start: nothing is known yet).
    let mut down_since = Some(Instant::now());
    let mut withdrawn = true;
    loop {
        let req = pb::WatchRequest {
            cluster: local_cluster.clone(),
            endpoints: link.mode == LinkMode::Flat,
        };
        match client.watch(req).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                let mut services = BTreeMap::new();
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => {
                            update.apply(&mut services);
                            if down_since.take().is_some() {
                                up.set(1);
                                info!(cluster = %link.cluster, mode = link.mode.as_str(), "link up");
                            }
                            withdrawn = false;
                            backoff = BACKOFF_MIN;
                            mirrored.set(services.len() as i64);
                            let snapshot = Arc::new(services.clone());
                            mirrors.send_modify(|m| {
                                m.insert(link.cluster.clone(), snapshot);
                            });
                        }
                        Ok(None) => {
                            warn!(cluster = %link.cluster, "the export watch ended");
                            break;
                        }
                        Err(status) => {
                            warn!(cluster = %link.cluster, error = %status, "the export watch failed");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                warn!(
                    cluster = %link.cluster,
                    addr = %link.control_addr,
                    code = ?status.code(),
                    error = %status.message(),
                    "cannot watch the linked cluster's exports"
                );
            }
        }
        if down_since.is_none() {
            up.set(0);
            warn!(
                cluster = %link.cluster,
                grace = ?grace,
                "link down; keeping its mirrored services for the grace period"
            );
            down_since = Some(Instant::now());
        }
        let since = down_since.unwrap_or_else(Instant::now);
        if !withdrawn && since.elapsed() >= grace {
            mirrors.send_modify(|m| {
                m.remove(&link.cluster);
            });
            mirrored.set(0);
            withdrawn = true;
            warn!(cluster = %link.cluster, "link down for longer than the grace period: its mirrored services are withdrawn");
        }
        // Sleep until the next attempt, waking for the grace deadline if it comes first.
        let until_grace = (since + grace).saturating_duration_since(Instant::now());
        let nap = if withdrawn {
            backoff
        } else {
            backoff.min(until_grace.max(Duration::from_millis(10)))
        };
        tokio::time::sleep(nap).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Virtual IPs of mirrored services, kept across rebuilds so a service keeps its address.
#[derive(Debug)]
pub struct VipAlloc {
    network: u32,
    size: u32,
    given: HashMap<SvcKey, Ipv4Addr>,
}

impl VipAlloc {
    pub fn new((network, prefix): (Ipv4Addr, u8)) -> Self {
        VipAlloc {
            network: u32::from(network),
            size: 1u32 << (32 - u32::from(prefix)),
            given: HashMap::new(),
        }
    }

    /// The address of `key`: the one it had, or a free one chosen from a hash of its name (so
    /// a restarted control plane tends to give the same), skipping `taken`. `None` when the
    /// range is full.
    fn get(&mut self, key: &SvcKey, taken: &HashSet<IpAddr>) -> Option<Ipv4Addr> {
        if let Some(ip) = self.given.get(key) {
            return Some(*ip);
        }
        let used: HashSet<Ipv4Addr> = self.given.values().copied().collect();
        // Hosts 1 ..= size - 2 (not the network or broadcast address).
        let hosts = self.size.saturating_sub(2).max(1);
        let start = fnv(&key.to_string()) % hosts;
        for i in 0..hosts {
            let ip = Ipv4Addr::from(self.network + 1 + (start + i) % hosts);
            if !used.contains(&ip) && !taken.contains(&IpAddr::V4(ip)) {
                self.given.insert(key.clone(), ip);
                return Some(ip);
            }
        }
        None
    }

    fn retain(&mut self, live: &HashSet<SvcKey>) {
        self.given.retain(|k, _| live.contains(k));
    }
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The local services that mirror `exports` of `link`: `<svc>-<cluster>` in the same namespace.
pub fn mirror_services(
    link: &Link,
    exports: &BTreeMap<String, pb::ExportedService>,
    vips: &mut VipAlloc,
    taken: &HashSet<IpAddr>,
) -> Vec<Service> {
    let mut out = Vec::new();
    for svc in exports.values() {
        let key = SvcKey {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
        };
        let mirror = SvcKey {
            name: format!("{}-{}", key.name, link.cluster),
            namespace: key.namespace.clone(),
        };
        let labels = |extra: &std::collections::HashMap<String, String>| {
            let mut l: BTreeMap<String, String> = extra.clone().into_iter().collect();
            l.insert("target_cluster".into(), link.cluster.clone());
            l.insert("target_service".into(), key.name.clone());
            l.insert("target_service_namespace".into(), key.namespace.clone());
            l
        };
        // The exporting cluster may say how this service is reached; else the link does.
        let mode = match svc.mode.as_str() {
            "flat" => LinkMode::Flat,
            "gateway" => LinkMode::Gateway,
            _ => link.mode,
        };
        let endpoints = match (mode, &link.gateway) {
            (LinkMode::Flat, _) => svc
                .endpoints
                .iter()
                .filter_map(|e| {
                    let protocol = match e.protocol.as_str() {
                        "opaque" => Protocol::Opaque,
                        "none" => Protocol::None,
                        _ => Protocol::H2,
                    };
                    Some(Endpoint {
                        pod: e.pod.clone(),
                        ip: e.ip.parse().ok()?,
                        service_account: String::new(),
                        protocol,
                        labels: labels(&e.labels),
                        weight: e.weight,
                        explicit: e.explicit,
                        identity: (!e.identity.is_empty()).then(|| e.identity.clone()),
                        authority_override: None,
                        port: None,
                    })
                })
                .collect(),
            (LinkMode::Gateway, Some((addr, identity))) => vec![Endpoint {
                pod: format!("gateway-{}", link.cluster),
                ip: addr.ip(),
                service_account: String::new(),
                protocol: Protocol::H2,
                labels: labels(&Default::default()),
                weight: crate::cluster::DEFAULT_WEIGHT,
                explicit: false,
                identity: Some(identity.to_string()),
                authority_override: Some(svc.fqdn.clone()),
                port: Some(addr.port()),
            }],
            (LinkMode::Gateway, None) => {
                warn!(service = %key, cluster = %link.cluster, "exported for gateway mode, but the link names no gateway");
                Vec::new()
            }
        };
        let Some(vip) = vips.get(&mirror, taken) else {
            warn!(service = %mirror, "mirror_cidr is full: the mirrored service has no virtual IP");
            continue;
        };
        out.push(Service {
            key: mirror,
            vip: Some(IpAddr::V4(vip)),
            ports: svc
                .ports
                .iter()
                .map(|p| Port {
                    port: p.port as u16,
                    target_port: p.target_port as u16,
                    opaque: p.opaque,
                    name: None,
                })
                .collect(),
            endpoints,
            profile: Default::default(),
            export: false,
            export_mode: None,
            failure_accrual: None,
        });
    }
    out
}

/// Publishes, on `out`, the local state with every link's mirrored services, whenever either
/// changes. Runs until both inputs are gone.
pub async fn combine(
    mut local: watch::Receiver<Arc<ClusterState>>,
    mut mirrors: watch::Receiver<Mirrors>,
    links: Vec<Link>,
    cidr: Option<(Ipv4Addr, u8)>,
    out: watch::Sender<Arc<ClusterState>>,
) {
    let Some(cidr) = cidr else {
        return;
    };
    let mut vips = VipAlloc::new(cidr);
    loop {
        let state = local.borrow_and_update().clone();
        let all = mirrors.borrow_and_update().clone();
        let taken: HashSet<IpAddr> = state.services.values().filter_map(|s| s.vip).collect();
        let mut extra = Vec::new();
        for link in &links {
            if let Some(exports) = all.get(&link.cluster) {
                extra.extend(mirror_services(link, exports, &mut vips, &taken));
            }
        }
        vips.retain(&extra.iter().map(|s| s.key.clone()).collect());
        let (combined, skipped) = state.with_services(extra);
        for s in skipped {
            warn!("not mirrored: {s}");
        }
        out.send_replace(Arc::new(combined));
        tokio::select! {
            r = local.changed() => if r.is_err() { return },
            r = mirrors.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, n: usize) -> pb::ExportedService {
        pb::ExportedService {
            name: name.into(),
            namespace: "shop".into(),
            ports: vec![pb::Port {
                port: 8080,
                target_port: 8080,
                opaque: false,
            }],
            endpoints: (0..n)
                .map(|i| pb::Endpoint {
                    pod: format!("{name}-{i}"),
                    ip: format!("10.214.0.{}", i + 2),
                    identity: "web.shop.serviceaccount.identity.linkerd.west.example".into(),
                    protocol: "h2".into(),
                    labels: Default::default(),
                    weight: 10_000,
                    explicit: false,
                })
                .collect(),
            fqdn: format!("{name}.shop.svc.cluster.local"),
            mode: String::new(),
        }
    }

    fn key(name: &str) -> SvcKey {
        SvcKey {
            name: name.into(),
            namespace: "shop".into(),
        }
    }

    #[test]
    fn diffs_carry_changed_services_whole_and_removals_by_name() {
        let a: BTreeMap<_, _> = [(key("web"), svc("web", 2)), (key("api"), svc("api", 1))].into();
        let b: BTreeMap<_, _> = [(key("web"), svc("web", 3))].into();
        let d = export_diff(&a, &b);
        assert_eq!(d.upserts, vec![svc("web", 3)]);
        assert_eq!(d.removed, vec!["api.shop".to_string()]);
        assert_eq!(export_diff(&b, &b), pb::ExportUpdate::default());
    }

    #[test]
    fn vips_are_stable_unique_and_skip_taken_addresses() {
        let mut v = VipAlloc::new(("10.97.0.0".parse().unwrap(), 29)); // 6 hosts
        let taken: HashSet<IpAddr> = ["10.97.0.1".parse().unwrap()].into();
        let mut seen = HashSet::new();
        for i in 0..5 {
            let ip = v.get(&key(&format!("s{i}")), &taken).unwrap();
            assert!(seen.insert(ip), "{ip} given twice");
            assert_ne!(ip, "10.97.0.1".parse::<Ipv4Addr>().unwrap());
            assert!(u32::from(ip) > u32::from(Ipv4Addr::new(10, 97, 0, 0)));
            assert!(u32::from(ip) < u32::from(Ipv4Addr::new(10, 97, 0, 7)));
        }
        assert_eq!(v.get(&key("s9"), &taken), None, "full");
        let again = v.get(&key("s2"), &taken);
        assert!(again.is_some() && seen.contains(&again.unwrap()));
    }
}
