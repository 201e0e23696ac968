//! Distributed tracing: a span per proxied HTTP request on each side (the outbound's a
//! client span, the inbound's a server span), exported over OTLP/gRPC to a collector.
//!
//! - [`context`]: W3C `traceparent`/`tracestate` and B3 propagation.
//! - [`export`]: the exporter task (batches, OpenTelemetry's protobuf messages, the collector).
//! - [`attributes`]: the resource attributes, read as linkerd2-proxy reads them.
//!
//! Sampling follows the parent: a request whose context says sampled gets a span, one that says
//! not gets none (its context still names the proxy's span as the next parent), and a request
//! with no context starts a trace only with a sampling ratio configured (Linkerd starts none).
//!
//! Without a collector there is no [`Tracer`] at all, and the per-request cost is one `None`
//! check. With one, a finished span goes into a bounded queue with `try_send`: when the
//! exporter is behind (the collector slow or down) the span is dropped and counted
//! (`opentelemetry_span_drops_total{reason="queue_full"}`), never waited for.

pub mod attributes;
pub mod context;
pub mod export;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use http::{Method, Request, Response};
use remora_identity::Name;
use remora_metrics::trace::{Drop as Dropped, TraceMetrics};
use remora_runtime::channel::ControlAddr;
use tokio::sync::mpsc;

use self::context::Sampled;
use crate::discovery::balance::xorshift;

/// Where and how spans are exported.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The collector's OTLP/gRPC address.
    pub addr: ControlAddr,
    /// The identity the collector must present (mTLS); `None` only on loopback.
    pub svc_name: Option<Name>,
    /// The resource's attributes: `service.name`, the attributes file, the extra attributes,
    /// `OTEL_RESOURCE_ATTRIBUTES`, `host.name` (later sources win, as in linkerd2-proxy).
    pub resource: BTreeMap<String, String>,
    /// Of requests with no trace context (or a B3 one deferring the decision), the share that
    /// starts a trace: 0 (Linkerd's behaviour) to 1.
    pub sample_ratio: f64,
    /// Finished spans waiting for the exporter at most; beyond, they are dropped and counted.
    pub queue: usize,
}

/// The side of the proxy a span is recorded on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A request from the app, leaving the pod: an OpenTelemetry client span.
    Outbound,
    /// A request from a peer, for the app: a server span.
    Inbound,
}

impl Side {
    /// Linkerd's `direction` span label.
    pub fn direction(self) -> &'static str {
        match self {
            Side::Outbound => "outbound",
            Side::Inbound => "inbound",
        }
    }
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// A finished span, as queued for the exporter.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for the root of a trace the proxy started.
    pub parent: Option<[u8; 8]>,
    /// The request's `tracestate`, passed on untouched.
    pub trace_state: String,
    pub side: Side,
    /// The request's path, as linkerd2-proxy names its spans.
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    /// A 5xx answer, or a proxy error: the span's status is an error.
    pub error: bool,
}

/// Starts the spans of requests and hands finished ones to the exporter. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<SpanRecord>,
    /// Ids and sampling draws: xorshift64*, seeded at random.
    rng: AtomicU64,
    /// A draw below this starts a trace (`ratio × u64::MAX`; 0: never).
    threshold: u64,
    metrics: TraceMetrics,
}

impl Tracer {
    /// A tracer whose spans go into a queue of `config.queue`; the receiver is the exporter's.
    pub fn new(config: &TraceConfig, metrics: TraceMetrics) -> (Self, mpsc::Receiver<SpanRecord>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let ratio = config.sample_ratio.clamp(0.0, 1.0);
        let threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * u64::MAX as f64) as u64
        };
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0x7ace_u16);
        let tracer = Tracer {
            inner: Arc::new(Inner {
                tx,
                rng: AtomicU64::new(seed | 1),
                threshold,
                metrics,
            }),
        };
        (tracer, rx)
    }

    fn id64(&self) -> [u8; 8] {
        loop {
            let v = xorshift(&self.inner.rng);
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    fn draw(&self) -> bool {
        let t = self.inner.threshold;
        t == u64::MAX || (t > 0 && xorshift(&self.inner.rng) < t)
    }

    /// Reads the request's trace context and, when it is sampled (or the proxy samples a
    /// request that had none), starts this side's span and rewrites the context so the next
    /// hop is its child. `None`: nothing to record (the context, if any, is still rewritten).
    pub fn start<B>(&self, req: &mut Request<B>, side: Side) -> Option<ActiveSpan> {
        let ctx = context::extract(req.headers());
        let span_id = self.id64();
        let (trace_id, parent) = match ctx {
            None => {
                if !self.draw() {
                    return None;
                }
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&self.id64());
                trace_id[8..].copy_from_slice(&self.id64());
                context::inject_new(req.headers_mut(), &trace_id, &span_id);
                (trace_id, None)
            }
            Some(ctx) => {
                let sampled = match ctx.sampled {
                    Sampled::Yes => true,
                    Sampled::No => false,
                    Sampled::Defer => self.draw(),
                };
                context::inject(req.headers_mut(), &ctx, span_id, sampled);
                if !sampled {
                    return None;
                }
                (ctx.trace_id, Some(ctx.parent))
            }
        };
        Some(ActiveSpan::new(
            self.clone(),
            side,
            trace_id,
            span_id,
            parent,
            req,
        ))
    }

    fn send(&self, span: SpanRecord) {
        if self.inner.tx.try_send(span).is_err() {
            self.inner.metrics.dropped(Dropped::QueueFull, 1);
        }
    }

    pub fn metrics(&self) -> &TraceMetrics {
        &self.inner.metrics
    }
}

/// A request's span, from its arrival to its response's headers. Dropped unfinished (the
/// client went away, or a peer's timeout cancelled the request), it is still exported, with
/// `error.type="cancelled"`.
#[derive(Debug)]
pub struct ActiveSpan {
    tracer: Tracer,
    /// `None` once sent.
    record: Option<SpanRecord>,
}

impl Drop for ActiveSpan {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.end = SystemTime::now();
            r.error = true;
            r.attributes
                .push(("error.type", Value::Str("cancelled".to_string())));
            self.tracer.send(r);
        }
    }
}

impl ActiveSpan {
    fn new<B>(
        tracer: Tracer,
        side: Side,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        req: &Request<B>,
    ) -> Self {
        let trace_state = req
            .headers()
            .get(&context::TRACESTATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        ActiveSpan {
            tracer,
            record: Some(SpanRecord {
                trace_id,
                span_id,
                parent,
                trace_state,
                side,
                name: req.uri().path().to_string(),
                start: SystemTime::now(),
                end: SystemTime::now(),
                attributes: request_attributes(req, side),
                error: false,
            }),
        }
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.record.as_ref().map_or([0; 16], |r| r.trace_id)
    }

    pub fn set(&mut self, key: &'static str, value: Value) {
        if let Some(r) = self.record.as_mut() {
            r.attributes.push((key, value));
        }
    }

    pub fn set_str(&mut self, key: &'static str, value: &str) {
        self.set(key, Value::Str(value.to_string()));
    }

    /// The peer's address (the endpoint dialled, or the client).
    pub fn peer_addr(&mut self, addr: SocketAddr) {
        self.set("network.peer.address", Value::Str(addr.ip().to_string()));
        self.set("network.peer.port", Value::Int(i64::from(addr.port())));
    }

    /// The policy route the request took: `http.route` (its name) and `l5d.route.kind`.
    pub fn route(&mut self, kind: &str, name: &str) {
        self.set_str("http.route", name);
        self.set_str("l5d.route.kind", kind);
    }

    /// Ends the span at the response's headers and queues it.
    pub fn finish<B>(mut self, rsp: &Response<B>, proxy_error: Option<&'static str>) {
        let status = rsp.status();
        self.set(
            "http.response.status_code",
            Value::Int(i64::from(status.as_u16())),
        );
        if let Some(code) = rsp
            .headers()
            .get(crate::http::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            self.set("rpc.grpc.status_code", Value::Int(code));
        }
        if let Some(e) = proxy_error.filter(|e| !e.is_empty()) {
            self.set_str("error.type", e);
        }
        if let Some(mut r) = self.record.take() {
            r.end = SystemTime::now();
            r.error = status.is_server_error() || proxy_error.is_some_and(|e| !e.is_empty());
            self.tracer.send(r);
        }
    }
}

/// The request's attributes, in linkerd2-proxy's names (OpenTelemetry's HTTP semantic
/// conventions; `linkerd/trace-context/src/service.rs` in its tree) plus `direction`.
fn request_attributes<B>(req: &Request<B>, side: Side) -> Vec<(&'static str, Value)> {
    let mut a = Vec::with_capacity(16);
    let s = |v: &str| Value::Str(v.to_string());
    a.push(("direction", s(side.direction())));
    a.push(("http.request.method", s(method(req.method()))));
    let uri = req.uri();
    if let Some(scheme) = uri.scheme_str() {
        a.push(("url.scheme", s(scheme)));
    }
    a.push(("url.path", s(uri.path())));
    if let Some(q) = uri.query() {
        a.push(("url.query", s(q)));
    }
    a.push(("url.full", s(&url_full(uri))));
    a.push(("network.transport", s("tcp")));
    let host = req
        .headers()
        .get("x-forwarded-host")
        .or_else(|| req.headers().get(http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .or_else(|| uri.authority().cloned());
    if let Some(h) = host {
        a.push(("server.address", s(h.host())));
        if let Some(p) = h.port_u16() {
            a.push(("server.port", Value::Int(i64::from(p))));
        }
    }
    for (header, key) in [
        ("user-agent", "user_agent.original"),
        ("content-length", "http.request.header.content-length"),
        ("content-type", "http.request.header.content-type"),
        ("l5d-orig-proto", "http.request.header.l5d-orig-proto"),
    ] {
        if let Some(v) = req.headers().get(header) {
            a.push((
                key,
                Value::Str(String::from_utf8_lossy(v.as_bytes()).into()),
            ));
        }
    }
    a
}

fn method(m: &Method) -> &str {
    m.as_str()
}

/// The URL with any credentials redacted, as linkerd2-proxy writes `url.full`.
fn url_full(uri: &http::Uri) -> String {
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(a) = uri.authority() {
        if let Some((creds, _)) = a.as_str().split_once('@') {
            out.push_str(if creds.contains(':') {
                "REDACTED:REDACTED@"
            } else {
                "REDACTED@"
            });
        }
        out.push_str(a.host());
        if let Some(p) = a.port_u16() {
            out.push(':');
            out.push_str(&p.to_string());
        }
    }
    out.push_str(uri.path());
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ratio: f64, queue: usize) -> TraceConfig {
        TraceConfig {
            addr: ControlAddr::Socket("127.0.0.1:4317".parse().unwrap()),
            svc_name: None,
            resource: BTreeMap::new(),
            sample_ratio: ratio,
            queue,
        }
    }

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("http://user:pw@web.shop:8080/a/b?c=d");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn a_sampled_parent_gets_a_child_span() {
        let (t, mut rx) = Tracer::new(&config(0.0, 4), TraceMetrics::default());
        let mut req = request(&[("traceparent", TP), ("tracestate", "k=v")]);
        let span = t.start(&mut req, Side::Outbound).unwrap();
        let next = context::extract(req.headers()).unwrap();
        assert_eq!(next.trace_id, span.trace_id());
        let rsp = Response::builder().status(503).body(()).unwrap();
        span.finish(&rsp, Some("connect"));
        let rec = rx.try_recv().unwrap();
        assert_eq!(
            rec.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(
            rec.span_id, next.parent,
            "the next hop's parent is our span"
        );
        assert_eq!(rec.trace_state, "k=v");
        assert_eq!(rec.name, "/a/b");
        assert!(rec.error);
        let get = |k: &str| {
            rec.attributes
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("direction"), Some(Value::Str("outbound".into())));
        assert_eq!(
            get("url.full"),
            Some(Value::Str(
                "http://REDACTED:REDACTED@web.shop:8080/a/b?c=d".into()
            ))
        );
        assert_eq!(get("http.response.status_code"), Some(Value::Int(503)));
        assert_eq!(get("error.type"), Some(Value::Str("connect".into())));
    }

    #[tokio::test]
    async fn unsampled_parents_and_no_context_record_nothing() {
        let (t, mut rx) = Tracer::new(&config(0.0, 4), TraceMetrics::default());
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut req = request(&[("traceparent", unsampled)]);
        assert!(t.start(&mut req, Side::Inbound).is_none());
        let next = context::extract(req.headers()).unwrap();
        assert_ne!(
            next.parent,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
            "still re-parented"
        );
        assert_eq!(next.sampled, Sampled::No);
        let mut bare = request(&[]);
        assert!(t.start(&mut bare, Side::Inbound).is_none());
        assert!(bare.headers().get("traceparent").is_none(), "untouched");
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_sampling_ratio_starts_traces() {
        let (t, mut rx) = Tracer::new(&config(1.0, 4), TraceMetrics::default());
        let mut bare = request(&[]);
        let span = t.start(&mut bare, Side::Outbound).unwrap();
        let ctx = context::extract(bare.headers()).unwrap();
        assert_eq!(ctx.trace_id, span.trace_id());
        span.finish(&Response::new(()), None);
        assert_eq!(rx.try_recv().unwrap().parent, None);
    }

    #[tokio::test]
    async fn a_cancelled_request_still_ends_its_span() {
        let (t, mut rx) = Tracer::new(&config(0.0, 4), TraceMetrics::default());
        let mut req = request(&[("traceparent", TP)]);
        drop(t.start(&mut req, Side::Inbound).unwrap());
        let rec = rx.try_recv().unwrap();
        assert!(rec.error);
        assert!(
            rec.attributes
                .contains(&("error.type", Value::Str("cancelled".into())))
        );
        assert!(rx.try_recv().is_err(), "sent once");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let metrics = TraceMetrics::default();
        let (t, _rx) = Tracer::new(&config(0.0, 2), metrics.clone());
        for _ in 0..5 {
            let mut req = request(&[("traceparent", TP)]);
            let span = t.start(&mut req, Side::Outbound).unwrap();
            span.finish(&Response::new(()), None);
        }
        assert_eq!(metrics.drops(), 3);
    }
}
