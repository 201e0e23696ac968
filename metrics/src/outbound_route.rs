//! Linkerd's outbound route families, for traffic routed by an outbound policy
//! (`OutboundPolicies`): per route, per route backend, and per opaque or TLS route.
//!
//! | Family | Labels |
//! |---|---|
//! | `outbound_{http,grpc}_route_request_duration_seconds` (0.05, 0.5, 1, 10) | parent, route, `hostname` |
//! | `outbound_{http,grpc}_route_request_statuses_total` | parent, route, `hostname`, `http_status` or `grpc_status`, `error` |
//! | `outbound_{http,grpc}_route_backend_requests_total` | parent, route, backend |
//! | `outbound_{http,grpc}_route_backend_response_duration_seconds` (0.025 … 10) | parent, route, backend |
//! | `outbound_{http,grpc}_route_backend_response_statuses_total` | parent, route, backend, status, `error` |
//! | `outbound_{http,grpc}_route_retry_{requests,successes,limit_exceeded,overflow}_total` | parent, route, `hostname` |
//! | `outbound_{tcp,tls}_route_open_total` | parent, route, `target_ip`, `target_port` |
//! | `outbound_{tcp,tls}_route_close_total` | parent, route, `target_ip`, `target_port`, `error` |
//!
//! Parent labels are `parent_group`, `parent_kind`, `parent_namespace`, `parent_name`,
//! `parent_port`, `parent_section_name`; route labels `route_group`, `route_kind`,
//! `route_namespace`, `route_name`; backend labels as the parent's with `backend_`. A default
//! object (`Default{name}`) has group `""` and kind `default`. `hostname` is always empty
//! (linkerd2-proxy fills it only with `OUTBOUND_METRICS_HOSTNAME_LABELS`).
//!
//! Every label set lives in a bounded store ([`crate::bounded`], `REMORA_METRICS_MAX_SERIES`);
//! the outbound resolves a route's or a backend's handle once per compiled policy and records
//! with atomic adds afterwards.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::{Registry, Unit};

use crate::bounded::{Slot, Store};
use crate::series::SeriesLimits;

/// Buckets of the route-level request duration, in seconds.
pub const REQUEST_BUCKETS: [f64; 4] = [0.05, 0.5, 1.0, 10.0];
/// Buckets of the backend-level response duration, in seconds.
pub const RESPONSE_BUCKETS: [f64; 7] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];
/// Outcome kinds kept per label set at most; beyond, outcomes count as `error="UNKNOWN"`.
const MAX_OUTCOMES: usize = 128;

/// A policy object as the route families name it: Linkerd's outbound `Meta`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ObjectRef {
    pub group: Arc<str>,
    pub kind: Arc<str>,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub port: Option<u16>,
    pub section: Arc<str>,
}

impl ObjectRef {
    /// A default the controller (or the proxy) made up: group `""`, kind `default`.
    pub fn default_named(name: &str) -> Self {
        ObjectRef {
            group: Arc::from(""),
            kind: Arc::from("default"),
            namespace: Arc::from(""),
            name: Arc::from(name),
            port: None,
            section: Arc::from(""),
        }
    }

    fn encode_meta(&self, scope: &str, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        for (key, value) in [
            ("group", &self.group),
            ("kind", &self.kind),
            ("namespace", &self.namespace),
            ("name", &self.name),
        ] {
            (Scoped(scope, key), &**value).encode(enc.encode_label())?;
        }
        Ok(())
    }

    fn encode_service(&self, scope: &str, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.encode_meta(scope, enc)?;
        (Scoped(scope, "port"), Port(self.port)).encode(enc.encode_label())?;
        (Scoped(scope, "section_name"), &*self.section).encode(enc.encode_label())
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind.as_ref() == "default" && self.group.is_empty() {
            return write!(f, "default:{}", self.name);
        }
        write!(f, "{}/{}", self.kind, self.name)?;
        if !self.namespace.is_empty() {
            write!(f, ".{}", self.namespace)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// `parent_port`: the number, or empty.
struct Port(Option<u16>);

impl prometheus_client::encoding::EncodeLabelValue for Port {
    fn encode(
        &self,
        enc: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        use std::fmt::Write;
        match self.0 {
            Some(p) => write!(enc, "{p}"),
            None => Ok(()),
        }
    }
}

/// A label key `scope_key`.
struct Scoped<'a>(&'a str, &'a str);

impl prometheus_client::encoding::EncodeLabelKey for Scoped<'_> {
    fn encode(
        &self,
        enc: &mut prometheus_client::encoding::LabelKeyEncoder<'_>,
    ) -> std::fmt::Result {
        use std::fmt::Write;
        write!(enc, "{}_{}", self.0, self.1)
    }
}

/// A route of a parent (a Service, an EgressNetwork, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RouteLabels {
    pub parent: Arc<ObjectRef>,
    pub route: Arc<ObjectRef>,
}

impl EncodeLabelSet for RouteLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.parent.encode_service("parent", enc)?;
        self.route.encode_meta("route", enc)?;
        ("hostname", "").encode(enc.encode_label())
    }
}

/// A backend of a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct BackendLabels {
    pub parent: Arc<ObjectRef>,
    pub route: Arc<ObjectRef>,
    pub backend: Arc<ObjectRef>,
}

impl EncodeLabelSet for BackendLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.parent.encode_service("parent", enc)?;
        self.route.encode_meta("route", enc)?;
        self.backend.encode_service("backend", enc)
    }
}

/// An opaque or TLS route, and the connection's target.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TcpRouteLabels {
    pub parent: Arc<ObjectRef>,
    pub route: Arc<ObjectRef>,
    /// `None` for a named target.
    pub target_ip: Option<IpAddr>,
    pub target_port: u16,
}

impl EncodeLabelSet for TcpRouteLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.parent.encode_service("parent", enc)?;
        self.route.encode_meta("route", enc)?;
        ("target_ip", self.target_ip.map(|ip| ip.to_string())).encode(enc.encode_label())?;
        ("target_port", self.target_port).encode(enc.encode_label())
    }
}

/// Why a stream failed, as Linkerd's route families label it (`error`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StreamError {
    FailFast,
    LoadShed,
    RequestTimeout,
    ResponseHeadersTimeout,
    ResponseStreamTimeout,
    IdleTimeout,
    Cancel,
    Refused,
    EnhanceYourCalm,
    Reset,
    GoAway,
    Io,
    Unknown,
}

impl StreamError {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamError::FailFast => "FAIL_FAST",
            StreamError::LoadShed => "LOAD_SHED",
            StreamError::RequestTimeout => "REQUEST_TIMEOUT",
            StreamError::ResponseHeadersTimeout => "RESPONSE_HEADERS_TIMEOUT",
            StreamError::ResponseStreamTimeout => "RESPONSE_STREAM_TIMEOUT",
            StreamError::IdleTimeout => "IDLE_TIMEOUT",
            StreamError::Cancel => "CANCEL",
            StreamError::Refused => "REFUSED",
            StreamError::EnhanceYourCalm => "ENHANCE_YOUR_CALM",
            StreamError::Reset => "RESET",
            StreamError::GoAway => "GO_AWAY",
            StreamError::Io => "IO",
            StreamError::Unknown => "UNKNOWN",
        }
    }
}

/// How a stream ended: its HTTP status, its gRPC status, the error that ended it.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct Outcome {
    pub http_status: Option<u16>,
    pub grpc_status: Option<u16>,
    pub error: Option<StreamError>,
}

/// gRPC's status names, as the `grpc_status` label carries them (`UNKNOWN` when absent).
pub fn grpc_status_name(code: Option<u16>) -> &'static str {
    match code {
        Some(0) => "OK",
        Some(1) => "CANCELLED",
        Some(3) => "INVALID_ARGUMENT",
        Some(4) => "DEADLINE_EXCEEDED",
        Some(5) => "NOT_FOUND",
        Some(6) => "ALREADY_EXISTS",
        Some(7) => "PERMISSION_DENIED",
        Some(8) => "RESOURCE_EXHAUSTED",
        Some(9) => "FAILED_PRECONDITION",
        Some(10) => "ABORTED",
        Some(11) => "OUT_OF_RANGE",
        Some(12) => "UNIMPLEMENTED",
        Some(13) => "INTERNAL",
        Some(14) => "UNAVAILABLE",
        Some(15) => "DATA_LOSS",
        Some(16) => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// The outcome labels of one family kind.
#[derive(Clone, Copy)]
struct OutcomeLabels(Outcome, bool);

impl EncodeLabelSet for OutcomeLabels {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        let OutcomeLabels(o, grpc) = *self;
        if grpc {
            ("grpc_status", grpc_status_name(o.grpc_status)).encode(enc.encode_label())?;
        } else {
            ("http_status", o.http_status).encode(enc.encode_label())?;
        }
        ("error", o.error.map_or("", StreamError::as_str)).encode(enc.encode_label())
    }
}

/// A histogram of durations with fixed bounds in seconds, in atomics.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// One per bound, then `+Inf`.
    buckets: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|&b| secs <= b).unwrap_or(N);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> std::fmt::Result {
        // Per-bucket counts (the encoder accumulates them); the count is their total, so the
        // two agree within one scrape.
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
                (bound, b.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Counts per outcome, bounded.
#[derive(Debug, Default)]
struct Outcomes(RwLock<Vec<(Outcome, AtomicU64)>>);

impl Outcomes {
    fn add(&self, o: Outcome) {
        if let Ok(v) = self.0.read()
            && let Some((_, n)) = v.iter().find(|(k, _)| *k == o)
        {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(mut v) = self.0.write() else { return };
        let o = if v.len() >= MAX_OUTCOMES {
            Outcome {
                error: Some(StreamError::Unknown),
                ..Outcome::default()
            }
        } else {
            o
        };
        match v.iter().find(|(k, _)| *k == o) {
            Some((_, n)) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            None => v.push((o, AtomicU64::new(1))),
        }
    }

    fn get(&self, o: &Outcome) -> u64 {
        self.0
            .read()
            .ok()
            .and_then(|v| {
                v.iter()
                    .find(|(k, _)| k == o)
                    .map(|(_, n)| n.load(Ordering::Relaxed))
            })
            .unwrap_or(0)
    }
}

/// The series of one route.
#[derive(Debug)]
pub struct RouteSeries {
    duration: Histogram<4>,
    statuses: Outcomes,
    retry_requests: AtomicU64,
    retry_successes: AtomicU64,
    retry_limit_exceeded: AtomicU64,
    retry_overflow: AtomicU64,
}

fn route_series() -> RouteSeries {
    RouteSeries {
        duration: Histogram::new(&REQUEST_BUCKETS),
        statuses: Outcomes::default(),
        retry_requests: AtomicU64::new(0),
        retry_successes: AtomicU64::new(0),
        retry_limit_exceeded: AtomicU64::new(0),
        retry_overflow: AtomicU64::new(0),
    }
}

/// The series of one route backend.
#[derive(Debug)]
pub struct BackendSeries {
    requests: AtomicU64,
    duration: Histogram<7>,
    statuses: Outcomes,
}

fn backend_series() -> BackendSeries {
    BackendSeries {
        requests: AtomicU64::new(0),
        duration: Histogram::new(&RESPONSE_BUCKETS),
        statuses: Outcomes::default(),
    }
}

/// A handle on one route's series; cheap to clone, keeps the label set alive.
#[derive(Clone, Debug)]
pub struct RouteHandle(Arc<Slot<RouteSeries>>);

impl RouteHandle {
    /// A request that ended (its response's end, or its error), `elapsed` after it began.
    pub fn done(&self, outcome: Outcome, elapsed: Duration) {
        self.0.value.duration.observe(elapsed);
        self.0.value.statuses.add(outcome);
    }

    /// A retry was sent.
    pub fn retry_request(&self) {
        self.0.value.retry_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A retry's answer was final and not an error.
    pub fn retry_success(&self) {
        self.0.value.retry_successes.fetch_add(1, Ordering::Relaxed);
    }

    /// A retryable answer was final because the route's retry limit was reached.
    pub fn retry_limit_exceeded(&self) {
        self.0
            .value
            .retry_limit_exceeded
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A retryable answer was final because the retry budget was spent.
    pub fn retry_overflow(&self) {
        self.0.value.retry_overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// For tests: how many requests ended with `outcome`.
    pub fn count(&self, outcome: &Outcome) -> u64 {
        self.0.value.statuses.get(outcome)
    }
}

/// A handle on one route backend's series.
#[derive(Clone, Debug)]
pub struct BackendHandle(Arc<Slot<BackendSeries>>);

impl BackendHandle {
    /// A request (one attempt) dispatched to the backend.
    pub fn request(&self) {
        self.0.value.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The backend's response ended, `elapsed` after the request did.
    pub fn done(&self, outcome: Outcome, elapsed: Duration) {
        self.0.value.duration.observe(elapsed);
        self.0.value.statuses.add(outcome);
    }

    /// For tests: requests dispatched so far.
    pub fn requests(&self) -> u64 {
        self.0.value.requests.load(Ordering::Relaxed)
    }
}

/// The HTTP or gRPC route families.
#[derive(Clone, Debug)]
pub struct RouteFamilies {
    routes: Arc<Store<RouteLabels, RouteSeries>>,
    backends: Arc<Store<BackendLabels, BackendSeries>>,
}

impl RouteFamilies {
    fn register(registry: &mut Registry, series: &SeriesLimits, kind: &'static str) -> Self {
        let (route_family, backend_family) = match kind {
            "grpc" => ("outbound_grpc_route", "outbound_grpc_route_backend"),
            _ => ("outbound_http_route", "outbound_http_route_backend"),
        };
        let f = RouteFamilies {
            routes: Arc::new(series.store(route_family, route_series)),
            backends: Arc::new(series.store(backend_family, backend_series)),
        };
        registry.register_collector(Box::new(Encoder {
            families: f.clone(),
            grpc: kind == "grpc",
        }));
        f
    }

    fn standalone(limits: crate::bounded::Limits) -> Self {
        RouteFamilies {
            routes: Arc::new(Store::new(limits, route_series)),
            backends: Arc::new(Store::new(limits, backend_series)),
        }
    }

    pub fn route(&self, labels: &RouteLabels) -> RouteHandle {
        RouteHandle(self.routes.get(labels))
    }

    pub fn backend(&self, labels: &BackendLabels) -> BackendHandle {
        BackendHandle(self.backends.get(labels))
    }
}

/// Why an opaque or TLS route closed a connection (`error`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CloseError {
    Forbidden,
    InvalidBackend,
    InvalidPolicy,
    Unexpected,
}

impl CloseError {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseError::Forbidden => "forbidden",
            CloseError::InvalidBackend => "invalid_backend",
            CloseError::InvalidPolicy => "invalid_policy",
            CloseError::Unexpected => "unexpected",
        }
    }
}

/// The connections of one opaque or TLS route and target.
#[derive(Debug, Default)]
pub struct TcpRouteSeries {
    open: AtomicU64,
    /// Closed without an error, then by [`CloseError`] in declaration order.
    close: [AtomicU64; 5],
}

const CLOSE_KINDS: [Option<CloseError>; 5] = [
    None,
    Some(CloseError::Forbidden),
    Some(CloseError::InvalidBackend),
    Some(CloseError::InvalidPolicy),
    Some(CloseError::Unexpected),
];

/// A handle on one opaque or TLS route's series.
#[derive(Clone, Debug)]
pub struct TcpRouteHandle(Arc<Slot<TcpRouteSeries>>);

impl TcpRouteHandle {
    pub fn open(&self) {
        self.0.value.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn close(&self, error: Option<CloseError>) {
        let i = CLOSE_KINDS.iter().position(|k| *k == error).unwrap_or(0);
        self.0.value.close[i].fetch_add(1, Ordering::Relaxed);
    }

    /// For tests: connections closed with `error`.
    pub fn closed(&self, error: Option<CloseError>) -> u64 {
        let i = CLOSE_KINDS.iter().position(|k| *k == error).unwrap_or(0);
        self.0.value.close[i].load(Ordering::Relaxed)
    }
}

/// The opaque (`tcp`) or TLS route families.
#[derive(Clone, Debug)]
pub struct TcpRouteFamilies(Arc<Store<TcpRouteLabels, TcpRouteSeries>>);

impl TcpRouteFamilies {
    pub fn route(&self, labels: &TcpRouteLabels) -> TcpRouteHandle {
        TcpRouteHandle(self.0.get(labels))
    }
}

/// Every outbound route family.
#[derive(Clone, Debug)]
pub struct OutboundRouteMetrics {
    pub http: RouteFamilies,
    pub grpc: RouteFamilies,
    pub tcp: TcpRouteFamilies,
    pub tls: TcpRouteFamilies,
}

impl OutboundRouteMetrics {
    pub fn register(registry: &mut Registry, series: &SeriesLimits) -> Self {
        let tcp = TcpRouteFamilies(Arc::new(
            series.store("outbound_tcp_route", TcpRouteSeries::default),
        ));
        let tls = TcpRouteFamilies(Arc::new(
            series.store("outbound_tls_route", TcpRouteSeries::default),
        ));
        registry.register_collector(Box::new(TcpEncoder(tcp.clone(), "outbound_tcp_route")));
        registry.register_collector(Box::new(TcpEncoder(tls.clone(), "outbound_tls_route")));
        OutboundRouteMetrics {
            http: RouteFamilies::register(registry, series, "http"),
            grpc: RouteFamilies::register(registry, series, "grpc"),
            tcp,
            tls,
        }
    }

    /// For tests and benches: families outside any registry.
    pub fn standalone(limits: crate::bounded::Limits) -> Self {
        OutboundRouteMetrics {
            http: RouteFamilies::standalone(limits),
            grpc: RouteFamilies::standalone(limits),
            tcp: TcpRouteFamilies(Arc::new(Store::new(limits, TcpRouteSeries::default))),
            tls: TcpRouteFamilies(Arc::new(Store::new(limits, TcpRouteSeries::default))),
        }
    }
}

/// The overflow label set: `overflow="true"` in place of a family's labels.
struct Labels<'a, L>(Option<&'a L>);

impl<L: EncodeLabelSet> EncodeLabelSet for Labels<'_, L> {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        match self.0 {
            Some(l) => l.encode(enc),
            None => ("overflow", "true").encode(enc.encode_label()),
        }
    }
}

#[derive(Debug)]
struct Encoder {
    families: RouteFamilies,
    grpc: bool,
}

impl Encoder {
    fn names(&self) -> (&'static str, &'static str) {
        if self.grpc {
            ("outbound_grpc_route", "outbound_grpc_route_backend")
        } else {
            ("outbound_http_route", "outbound_http_route_backend")
        }
    }
}

impl Collector for Encoder {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (route, backend) = self.names();
        let grpc = self.grpc;
        let routes = &self.families.routes;
        let backends = &self.families.backends;
        {
            let name = format!("{route}_request_duration");
            let mut family = encoder.encode_descriptor(
                &name,
                "The time between request initialization and response completion",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            routes
                .for_each(|labels, s| s.duration.encode(family.encode_family(&Labels(labels))?))?;
        }
        {
            let name = format!("{route}_request_statuses");
            let mut family = encoder.encode_descriptor(
                &name,
                "Completed request-response streams",
                None,
                MetricType::Counter,
            )?;
            routes.for_each(|labels, s| {
                let Ok(v) = s.statuses.0.read() else {
                    return Ok(());
                };
                for (o, n) in v.iter() {
                    let set = (Labels(labels), OutcomeLabels(*o, grpc));
                    ConstCounter::new(n.load(Ordering::Relaxed))
                        .encode(family.encode_family(&set)?)?;
                }
                Ok(())
            })?;
        }
        for (suffix, help, get) in [
            (
                "retry_limit_exceeded",
                "Retryable requests not sent due to retry limits",
                (|s: &RouteSeries| &s.retry_limit_exceeded) as fn(&RouteSeries) -> &AtomicU64,
            ),
            (
                "retry_overflow",
                "Retryable requests not sent due to circuit breakers",
                |s: &RouteSeries| &s.retry_overflow,
            ),
            (
                "retry_requests",
                "Retry requests emitted",
                |s: &RouteSeries| &s.retry_requests,
            ),
            (
                "retry_successes",
                "Successful responses to retry requests",
                |s: &RouteSeries| &s.retry_successes,
            ),
        ] {
            let name = format!("{route}_{suffix}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            routes.for_each(|labels, s| {
                ConstCounter::new(get(s).load(Ordering::Relaxed))
                    .encode(family.encode_family(&Labels(labels))?)
            })?;
        }
        {
            let name = format!("{backend}_requests");
            let mut family = encoder.encode_descriptor(
                &name,
                "The total number of requests dispatched",
                None,
                MetricType::Counter,
            )?;
            backends.for_each(|labels, s| {
                ConstCounter::new(s.requests.load(Ordering::Relaxed))
                    .encode(family.encode_family(&Labels(labels))?)
            })?;
        }
        {
            let name = format!("{backend}_response_duration");
            let mut family = encoder.encode_descriptor(
                &name,
                "The time between request completion and response completion",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            backends
                .for_each(|labels, s| s.duration.encode(family.encode_family(&Labels(labels))?))?;
        }
        let name = format!("{backend}_response_statuses");
        let mut family =
            encoder.encode_descriptor(&name, "Completed responses", None, MetricType::Counter)?;
        backends.for_each(|labels, s| {
            let Ok(v) = s.statuses.0.read() else {
                return Ok(());
            };
            for (o, n) in v.iter() {
                let set = (Labels(labels), OutcomeLabels(*o, grpc));
                ConstCounter::new(n.load(Ordering::Relaxed)).encode(family.encode_family(&set)?)?;
            }
            Ok(())
        })
    }
}

#[derive(Debug)]
struct TcpEncoder(TcpRouteFamilies, &'static str);

/// `error` of a close: empty when the connection closed without one.
struct CloseLabel(Option<CloseError>);

impl EncodeLabelSet for CloseLabel {
    fn encode(&self, enc: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        ("error", self.0.map_or("", CloseError::as_str)).encode(enc.encode_label())
    }
}

impl Collector for TcpEncoder {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let store = &(self.0).0;
        {
            let name = format!("{}_open", self.1);
            let mut family = encoder.encode_descriptor(
                &name,
                "The number of connections opened",
                None,
                MetricType::Counter,
            )?;
            store.for_each(|labels, s| {
                ConstCounter::new(s.open.load(Ordering::Relaxed))
                    .encode(family.encode_family(&Labels(labels))?)
            })?;
        }
        let name = format!("{}_close", self.1);
        let mut family = encoder.encode_descriptor(
            &name,
            "The number of connections closed",
            None,
            MetricType::Counter,
        )?;
        store.for_each(|labels, s| {
            for (i, kind) in CLOSE_KINDS.iter().enumerate() {
                let n = s.close[i].load(Ordering::Relaxed);
                // Linkerd creates every close series with the route; so do we, once it opened.
                if n == 0 && s.open.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let set = (Labels(labels), CloseLabel(*kind));
                ConstCounter::new(n).encode(family.encode_family(&set)?)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::Limits;

    fn service(name: &str, port: u16) -> Arc<ObjectRef> {
        Arc::new(ObjectRef {
            group: Arc::from("core"),
            kind: Arc::from("Service"),
            namespace: Arc::from("shop"),
            name: Arc::from(name),
            port: Some(port),
            section: Arc::from(""),
        })
    }

    fn route(name: &str) -> Arc<ObjectRef> {
        Arc::new(ObjectRef {
            group: Arc::from("gateway.networking.k8s.io"),
            kind: Arc::from("HTTPRoute"),
            namespace: Arc::from("shop"),
            name: Arc::from(name),
            port: None,
            section: Arc::from(""),
        })
    }

    #[test]
    fn encodes_linkerds_route_families() {
        let mut reg = Registry::default();
        let series = SeriesLimits::register(&mut reg, Limits::default());
        let m = OutboundRouteMetrics::register(&mut reg, &series);
        let labels = RouteLabels {
            parent: service("web", 8080),
            route: route("canary"),
        };
        let r = m.http.route(&labels);
        let ok = Outcome {
            http_status: Some(200),
            ..Outcome::default()
        };
        r.done(ok, Duration::from_millis(20));
        r.done(ok, Duration::from_millis(700));
        r.done(
            Outcome {
                error: Some(StreamError::RequestTimeout),
                ..Outcome::default()
            },
            Duration::from_secs(2),
        );
        r.retry_request();
        let b = m.http.backend(&BackendLabels {
            parent: labels.parent.clone(),
            route: labels.route.clone(),
            backend: service("web-v2", 8080),
        });
        b.request();
        b.done(ok, Duration::from_millis(30));
        let g = m.grpc.route(&RouteLabels {
            parent: service("api", 9090),
            route: Arc::new(ObjectRef::default_named("grpc")),
        });
        g.done(
            Outcome {
                http_status: Some(200),
                grpc_status: Some(14),
                error: None,
            },
            Duration::from_millis(1),
        );
        let t = m.tcp.route(&TcpRouteLabels {
            parent: service("web", 9999),
            route: Arc::new(ObjectRef::default_named("undefined-port")),
            target_ip: Some("10.96.0.10".parse().unwrap()),
            target_port: 9999,
        });
        t.open();
        t.close(Some(CloseError::Forbidden));
        let text = crate::encode(&reg).unwrap();
        let parent = r#"parent_group="core",parent_kind="Service",parent_namespace="shop",parent_name="web",parent_port="8080",parent_section_name="""#;
        let rl = format!(
            r#"{parent},route_group="gateway.networking.k8s.io",route_kind="HTTPRoute",route_namespace="shop",route_name="canary",hostname="""#
        );
        for want in [
            format!(r#"outbound_http_route_request_statuses_total{{{rl},http_status="200",error=""}} 2"#),
            format!(r#"outbound_http_route_request_statuses_total{{{rl},http_status="",error="REQUEST_TIMEOUT"}} 1"#),
            format!(r#"outbound_http_route_request_duration_seconds_bucket{{le="0.05",{rl}}} 1"#),
            format!(r#"outbound_http_route_request_duration_seconds_bucket{{le="1.0",{rl}}} 2"#),
            format!(r#"outbound_http_route_request_duration_seconds_count{{{rl}}} 3"#),
            format!(r#"outbound_http_route_retry_requests_total{{{rl}}} 1"#),
            format!(r#"outbound_http_route_retry_successes_total{{{rl}}} 0"#),
            format!(r#"outbound_http_route_backend_requests_total{{{parent},route_group="gateway.networking.k8s.io",route_kind="HTTPRoute",route_namespace="shop",route_name="canary",backend_group="core",backend_kind="Service",backend_namespace="shop",backend_name="web-v2",backend_port="8080",backend_section_name=""}} 1"#),
            r#"outbound_grpc_route_request_statuses_total{parent_group="core",parent_kind="Service",parent_namespace="shop",parent_name="api",parent_port="9090",parent_section_name="",route_group="",route_kind="default",route_namespace="",route_name="grpc",hostname="",grpc_status="UNAVAILABLE",error=""} 1"#.to_string(),
            r#"outbound_tcp_route_close_total{parent_group="core",parent_kind="Service",parent_namespace="shop",parent_name="web",parent_port="9999",parent_section_name="",route_group="",route_kind="default",route_namespace="",route_name="undefined-port",target_ip="10.96.0.10",target_port="9999",error="forbidden"} 1"#.to_string(),
            r#"outbound_tcp_route_open_total{parent_group="core""#.to_string(),
        ] {
            assert!(text.contains(&want), "missing {want}\n{text}");
        }
        assert!(
            text.contains("# TYPE outbound_http_route_backend_response_duration_seconds histogram")
        );
    }

    #[test]
    fn label_sets_are_capped() {
        let m = OutboundRouteMetrics::standalone(Limits {
            max_series: 2,
            idle: Duration::from_secs(60),
        });
        let handles: Vec<_> = (0..5)
            .map(|i| {
                m.http.route(&RouteLabels {
                    parent: service("web", 80),
                    route: route(&format!("r{i}")),
                })
            })
            .collect();
        for h in &handles {
            h.done(Outcome::default(), Duration::ZERO);
        }
        // Three routes share the overflow series.
        assert_eq!(handles[4].count(&Outcome::default()), 3);
        assert_eq!(handles[0].count(&Outcome::default()), 1);
    }
}
