//! Linkerd's golden HTTP metrics: `request_total`, `response_total` and `response_latency_ms`,
//! labelled by target ([`TargetLabels`]) and, for responses, `status_code`, `classification`,
//! `grpc_status` and `error`.
//!
//! One bounded store ([`crate::bounded`]) holds a [`RouteMetrics`] per target label set; the
//! response counters and latency histograms of a target sit inside it, keyed by small `Copy`
//! values. Recording a request whose target exists: one hash lookup under a read lock, then
//! atomic adds: no allocation, no string formatting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::bounded::{Limits, Slot, Store};
use crate::histogram::LatencyHistogram;
use crate::labels::TargetLabels;
use crate::series::SeriesLimits;

/// Response kinds kept per target at most; beyond, responses count as `error="overflow"`.
const MAX_RESPONSE_KINDS: usize = 128;

/// What a response was: its status, its gRPC status if any, and the proxy's error if the proxy
/// made it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ResponseKey {
    /// The HTTP status (0 when no response was received).
    pub status: u16,
    pub grpc_status: Option<u16>,
    /// A failure the proxy itself answered (`no_endpoints`, `timeout`, ...), or `""`.
    pub error: &'static str,
}

impl ResponseKey {
    /// Linkerd's classification: a proxy error, a gRPC status other than 0, or a 5xx is a
    /// failure; anything else a success.
    pub fn is_success(&self) -> bool {
        if !self.error.is_empty() {
            return false;
        }
        match self.grpc_status {
            Some(code) => code == 0,
            None => self.status != 0 && self.status < 500,
        }
    }
}

impl EncodeLabelSet for ResponseKey {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        if self.status != 0 {
            ("status_code", self.status).encode(encoder.encode_label())?;
        }
        let class = if self.is_success() {
            "success"
        } else {
            "failure"
        };
        ("classification", class).encode(encoder.encode_label())?;
        if let Some(g) = self.grpc_status {
            ("grpc_status", g).encode(encoder.encode_label())?;
        }
        if !self.error.is_empty() {
            ("error", self.error).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The metrics of one target label set.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    requests: AtomicU64,
    responses: RwLock<Vec<(ResponseKey, AtomicU64)>>,
    latency: RwLock<Vec<(u16, LatencyHistogram)>>,
}

impl RouteMetrics {
    fn response(&self, key: ResponseKey) {
        if let Ok(v) = self.responses.read()
            && let Some((_, n)) = v.iter().find(|(k, _)| *k == key)
        {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(mut v) = self.responses.write() else {
            return;
        };
        let key = if v.len() >= MAX_RESPONSE_KINDS {
            ResponseKey {
                status: 0,
                grpc_status: None,
                error: "overflow",
            }
        } else {
            key
        };
        match v.iter().find(|(k, _)| *k == key) {
            Some((_, n)) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            None => v.push((key, AtomicU64::new(1))),
        }
    }

    fn latency(&self, status: u16, elapsed: Duration) {
        if let Ok(v) = self.latency.read()
            && let Some((_, h)) = v.iter().find(|(s, _)| *s == status)
        {
            h.observe(elapsed);
            return;
        }
        let Ok(mut v) = self.latency.write() else {
            return;
        };
        // Statuses are at most a few hundred values, so this stays bounded.
        if let Some((_, h)) = v.iter().find(|(s, _)| *s == status) {
            h.observe(elapsed);
            return;
        }
        let h = LatencyHistogram::default();
        h.observe(elapsed);
        v.push((status, h));
    }
}

/// A handle on one target's metrics; cheap to clone, keeps the label set alive.
#[derive(Clone, Debug)]
pub struct RouteHandle(Arc<Slot<RouteMetrics>>);

impl RouteHandle {
    /// Counts a request.
    #[inline]
    pub fn request(&self) {
        self.0.value.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time to the response's headers.
    #[inline]
    pub fn latency(&self, status: u16, elapsed: Duration) {
        self.0.value.latency(status, elapsed);
    }

    /// Counts a finished response (at the end of its stream, when `grpc-status` is known).
    #[inline]
    pub fn response(&self, key: ResponseKey) {
        self.0.value.response(key);
    }
}

/// One connection's last golden-metrics handle and what it was for (`K`, the inbound's permit):
/// most requests of an inbound connection take the same route under the same authorization,
/// and then find their metrics by a comparison instead of building and hashing a label set
/// under the store's lock. A handle given back (its connection closed, or a request needed
/// another) marks its label set used at that moment, so the idle sweep counts from the last
/// request, not from the first; the overflow set's handle is never kept.
#[derive(Debug)]
pub struct LastRoute<K>(Mutex<Option<Kept<K>>>);

#[derive(Debug)]
struct Kept<K> {
    key: K,
    route: RouteHandle,
    golden: HttpGolden,
}

impl<K> Drop for Kept<K> {
    fn drop(&mut self) {
        self.golden.store.touch(&self.route.0);
    }
}

impl<K> Default for LastRoute<K> {
    fn default() -> Self {
        LastRoute(Mutex::new(None))
    }
}

impl<K> LastRoute<K> {
    /// The handle kept when `same(kept, &key)`; else `route(&key)` (a handle from `golden`),
    /// kept for `key`.
    pub fn get(
        &self,
        golden: &HttpGolden,
        key: K,
        same: impl FnOnce(&K, &K) -> bool,
        route: impl FnOnce(&K) -> RouteHandle,
    ) -> RouteHandle {
        // Nothing panics while the lock is held, so a poisoned lock holds a whole entry.
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = &*last
            && same(&k.key, &key)
        {
            return k.route.clone();
        }
        let route = route(&key);
        // The overflow set's handle is not kept: the next request asks the store again, and
        // gets its own label set once there is room.
        *last = (!golden.store.is_overflow(&route.0)).then(|| Kept {
            key,
            route: route.clone(),
            golden: golden.clone(),
        });
        route
    }
}

/// The golden HTTP families of one proxy (both directions).
#[derive(Clone, Debug)]
pub struct HttpGolden {
    store: Arc<Store<TargetLabels, RouteMetrics>>,
}

impl HttpGolden {
    pub fn register(registry: &mut Registry, series: &SeriesLimits) -> Self {
        let store = Arc::new(series.store("http", RouteMetrics::default));
        registry.register_collector(Box::new(Encoder(store.clone())));
        HttpGolden { store }
    }

    /// For tests and benches: a store outside any registry.
    pub fn standalone(limits: Limits) -> Self {
        HttpGolden {
            store: Arc::new(Store::new(limits, RouteMetrics::default)),
        }
    }

    /// The metrics of `labels`' target.
    #[inline]
    pub fn route(&self, labels: &TargetLabels) -> RouteHandle {
        RouteHandle(self.store.get(labels))
    }
}

/// The overflow label set: `overflow="true"` in place of the target labels.
struct Overflow;

impl EncodeLabelSet for Overflow {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        ("overflow", "true").encode(encoder.encode_label())
    }
}

/// The target's labels, or the overflow label set.
struct Target<'a>(Option<&'a TargetLabels>);

impl EncodeLabelSet for Target<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        match self.0 {
            Some(l) => l.encode(encoder),
            None => Overflow.encode(encoder),
        }
    }
}

#[derive(Debug)]
struct Encoder(Arc<Store<TargetLabels, RouteMetrics>>);

impl Collector for Encoder {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let store = &self.0;
        {
            let mut family = encoder.encode_descriptor(
                "request",
                "Total count of HTTP requests",
                None,
                MetricType::Counter,
            )?;
            store.for_each(|labels, m| {
                let n = m.requests.load(Ordering::Relaxed);
                ConstCounter::new(n).encode(family.encode_family(&Target(labels))?)
            })?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "response",
                "Total count of HTTP responses",
                None,
                MetricType::Counter,
            )?;
            store.for_each(|labels, m| {
                let Ok(responses) = m.responses.read() else {
                    return Ok(());
                };
                for (key, n) in responses.iter() {
                    let n = n.load(Ordering::Relaxed);
                    let set = (Target(labels), *key);
                    ConstCounter::new(n).encode(family.encode_family(&set)?)?;
                }
                Ok(())
            })?;
        }
        let mut family = encoder.encode_descriptor(
            "response_latency_ms",
            "Elapsed times between a request's headers being received and its response's \
             headers being sent, in milliseconds",
            None,
            MetricType::Histogram,
        )?;
        store.for_each(|labels, m| {
            let Ok(latency) = m.latency.read() else {
                return Ok(());
            };
            for (status, h) in latency.iter() {
                let set = (Target(labels), Status(*status));
                h.encode(family.encode_family(&set)?)?;
            }
            Ok(())
        })
    }
}

struct Status(u16);

impl EncodeLabelSet for Status {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        if self.0 != 0 {
            ("status_code", self.0).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::{Direction, Tls};

    fn labels(authority: &str) -> TargetLabels {
        TargetLabels {
            authority: Some(Arc::from(authority)),
            target_addr: Some("10.0.0.5:8080".parse().unwrap()),
            tls: Tls::Established,
            peer_id: Some(Arc::from(
                "web.shop.serviceaccount.identity.linkerd.east.example",
            )),
            dst: Some(Arc::new(crate::labels::DstLabels::new([
                ("service", "web"),
                ("namespace", "shop"),
            ]))),
            ..TargetLabels::new(Direction::Outbound)
        }
    }

    /// `last`'s handle for `authority`'s labels, counting in `made` the store lookups it makes.
    fn kept(
        last: &LastRoute<TargetLabels>,
        golden: &HttpGolden,
        made: &std::cell::Cell<u32>,
        authority: &str,
    ) -> RouteHandle {
        last.get(
            golden,
            labels(authority),
            |a, b| a == b,
            |l| {
                made.set(made.get() + 1);
                golden.route(l)
            },
        )
    }

    #[test]
    fn a_connections_last_route_is_reused_and_marked_used_when_given_back() {
        let idle = Duration::from_millis(500);
        let golden = HttpGolden::standalone(Limits {
            max_series: 100,
            idle,
        });
        let last = LastRoute::default();
        let made = std::cell::Cell::new(0);
        let get = |authority| kept(&last, &golden, &made, authority);
        for a in ["web:80", "web:80", "api:80", "api:80", "api:80"] {
            get(a).request();
        }
        assert_eq!(made.get(), 2, "one lookup per run of the same labels");
        assert_eq!(golden.store.len(), 2);
        // api's handle is kept past the idle time; web's, given back, was marked used when it
        // was, and goes once idle for longer than that.
        std::thread::sleep(idle + Duration::from_millis(200));
        golden.store.sweep();
        assert_eq!(golden.store.len(), 1, "the kept one stays");
        drop(last);
        golden.store.sweep();
        assert_eq!(golden.store.len(), 1, "given back just now: used just now");
        std::thread::sleep(idle + Duration::from_millis(200));
        golden.store.sweep();
        assert_eq!(golden.store.len(), 0);
    }

    #[test]
    fn the_overflow_sets_handle_is_not_kept() {
        let golden = HttpGolden::standalone(Limits {
            max_series: 1,
            idle: Duration::ZERO,
        });
        let full = golden.route(&labels("other:80"));
        let last = LastRoute::default();
        let made = std::cell::Cell::new(0);
        let get = || kept(&last, &golden, &made, "web:80");
        assert!(golden.store.is_overflow(&get().0));
        assert!(golden.store.is_overflow(&get().0));
        assert_eq!(made.get(), 2, "asked again, not kept");
        // Room again: the connection's next request gets its own label set, and keeps it.
        drop(full);
        golden.store.sweep();
        assert!(!golden.store.is_overflow(&get().0));
        assert!(!golden.store.is_overflow(&get().0));
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn classification_follows_linkerd() {
        let k = |status, grpc_status, error| ResponseKey {
            status,
            grpc_status,
            error,
        };
        assert!(k(200, None, "").is_success());
        assert!(k(404, None, "").is_success());
        assert!(!k(503, None, "").is_success());
        assert!(k(200, Some(0), "").is_success());
        assert!(!k(200, Some(14), "").is_success());
        assert!(!k(504, None, "timeout").is_success());
        assert!(!k(0, None, "").is_success());
    }

    #[test]
    fn encodes_linkerds_families() {
        let mut reg = Registry::default();
        let series = SeriesLimits::register(&mut reg, Limits::default());
        let m = HttpGolden::register(&mut reg, &series);
        let r = m.route(&labels("web.shop.svc.cluster.local:8080"));
        for _ in 0..3 {
            r.request();
            r.latency(200, Duration::from_millis(7));
            r.response(ResponseKey {
                status: 200,
                grpc_status: Some(14),
                error: "",
            });
        }
        let text = crate::encode(&reg).unwrap();
        let base = r#"direction="outbound",authority="web.shop.svc.cluster.local:8080",target_addr="10.0.0.5:8080",target_ip="10.0.0.5",target_port="8080",tls="true",server_id="web.shop.serviceaccount.identity.linkerd.east.example",dst_namespace="shop",dst_service="web""#;
        assert!(
            text.contains(&format!("request_total{{{base}}} 3")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_total{{{base},status_code=\"200\",classification=\"failure\",grpc_status=\"14\"}} 3"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_latency_ms_bucket{{le=\"10.0\",{base},status_code=\"200\"}} 3"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "response_latency_ms_count{{{base},status_code=\"200\"}} 3"
            )),
            "{text}"
        );
        assert!(text.contains("# TYPE response_latency_ms histogram"));
    }

    #[test]
    fn inbound_families_carry_linkerds_inbound_labels_and_no_authority() {
        use crate::inbound_policy::Object;
        use crate::labels::PolicyLabels;
        let mut reg = Registry::default();
        let series = SeriesLimits::register(&mut reg, Limits::default());
        let m = HttpGolden::register(&mut reg, &series);
        let inbound = |client: Option<&str>| TargetLabels {
            target_addr: Some("10.0.0.5:8080".parse().unwrap()),
            tls: Tls::Established,
            peer_id: client.map(Arc::from),
            policy: Some(Arc::new(PolicyLabels {
                server: Object::new("policy.linkerd.io", "server", "web-http"),
                port: 8080,
                route: Object::new("", "default", "default"),
                authz: Object::new("", "default", "all-unauthenticated"),
            })),
            ..TargetLabels::new(Direction::Inbound)
        };
        let r = m.route(&inbound(Some(
            "client.shop.serviceaccount.identity.linkerd.cluster.local",
        )));
        r.request();
        r.latency(500, Duration::from_millis(3));
        r.response(ResponseKey {
            status: 500,
            grpc_status: None,
            error: "",
        });
        m.route(&inbound(None)).request();
        let text = crate::encode(&reg).unwrap();
        let target = r#"direction="inbound",target_addr="10.0.0.5:8080",target_ip="10.0.0.5",target_port="8080",tls="true""#;
        let policy = r#"srv_group="policy.linkerd.io",srv_kind="server",srv_name="web-http",srv_port="8080",route_group="",route_kind="default",route_name="default",authz_group="",authz_kind="default",authz_name="all-unauthenticated""#;
        let id = r#"client_id="client.shop.serviceaccount.identity.linkerd.cluster.local""#;
        for line in [
            format!("request_total{{{target},{id},{policy}}} 1"),
            format!("request_total{{{target},client_id=\"\",{policy}}} 1"),
            format!(
                "response_total{{{target},{id},{policy},status_code=\"500\",classification=\"failure\"}} 1"
            ),
            format!(
                "response_latency_ms_bucket{{le=\"10.0\",{target},{id},{policy},status_code=\"500\"}} 1"
            ),
        ] {
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(!text.contains("authority="), "{text}");
    }
}
