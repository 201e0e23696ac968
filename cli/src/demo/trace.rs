//! `remora demo --trace`: a small OTLP collector in the demo's own process (OpenTelemetry's
//! `TraceService`, `remora_api::otlp`) that every Remora proxy exports to, one `GET /fanout`
//! sent with a sampled `traceparent` once the traffic has run, and its trace printed as a tree:
//! the front end's app passes the context on to each call it makes, so every hop's proxies
//! (the front end's outbound, the gateway's, the servers' inbound) add their spans.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora_api::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use remora_api::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use remora_api::otlp::common::v1::{KeyValue, any_value};
use remora_api::otlp::trace::v1::Span;

/// A span as the demo's collector received it, with its proxy's `service.name`.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

#[derive(Clone, Debug, Default)]
struct Store(Arc<Mutex<Vec<Received>>>);

/// Spans kept at most (the demo samples only its one request; the rest is a bound).
const MAX_SPANS: usize = 10_000;

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Ok(mut got) = self.0.lock() {
            for rs in req.into_inner().resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                    if got.len() < MAX_SPANS {
                        got.push(Received {
                            service: service.clone(),
                            span,
                        });
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The demo's collector, serving until dropped.
#[derive(Debug)]
pub(super) struct Collector {
    store: Store,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    pub(super) async fn start(addr: SocketAddr) -> Result<Self, String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("trace collector at {addr}: {e}"))?;
        let store = Store::default();
        let svc = TraceServiceServer::new(store.clone());
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(svc, incoming)
                .await;
        });
        Ok(Collector { store, addr, task })
    }

    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.store
            .0
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|r| hex(&r.span.trace_id) == trace_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `GET /fanout` to the front end's app at `front_end` with a new sampled trace and
    /// waits (at most 15 s) for its spans to settle; the trace, rendered.
    pub(super) async fn trace_one(&self, front_end: SocketAddr) -> String {
        let seed = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 1u8);
        let trace_id = format!("{seed:016x}{:016x}", seed.rotate_left(29) | 1);
        let root = format!("{:016x}", seed.rotate_left(13) | 1);
        let status = get(front_end, &format!("00-{trace_id}-{root}-01")).await;
        // Until the number of spans stops changing for 2 s (the exporters flush every second).
        let mut last = (0, tokio::time::Instant::now());
        for _ in 0..150 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n = self.trace(&trace_id).len();
            if n != last.0 {
                last = (n, tokio::time::Instant::now());
            } else if n > 0 && last.1.elapsed() >= Duration::from_secs(2) {
                break;
            }
        }
        render(&trace_id, &root, status, &self.trace(&trace_id))
    }
}

/// `GET /fanout` with `traceparent`; the status (0 on failure).
async fn get(addr: SocketAddr, traceparent: &str) -> u16 {
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/fanout")
            .header(hyper::header::HOST, addr.to_string())
            .header("traceparent", traceparent)
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .ok()?;
        let rsp = sender.send_request(req).await.ok()?;
        let status = rsp.status().as_u16();
        let _ = http_body_util::BodyExt::collect(rsp.into_body()).await;
        Some(status)
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The trace as a tree under the demo's root span `root`.
fn render(trace_id: &str, root: &str, status: u16, spans: &[Received]) -> String {
    let mut children: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for s in spans {
        children
            .entry(hex(&s.span.parent_span_id))
            .or_default()
            .push(s);
    }
    for v in children.values_mut() {
        v.sort_by_key(|s| (s.span.start_time_unix_nano, s.service.clone()));
    }
    let mut out = format!(
        "\none traced request: GET /fanout on east's web, answered {status}\n\
         trace {trace_id}, {} spans (the demo's own span {root} is the root)\n",
        spans.len()
    );
    let mut shown = 0;
    walk(&children, root, 1, &mut out, &mut shown);
    if shown < spans.len() {
        out.push_str(&format!(
            "  ({} spans not under the root)\n",
            spans.len() - shown
        ));
    }
    out
}

fn walk(
    children: &BTreeMap<String, Vec<&Received>>,
    parent: &str,
    depth: usize,
    out: &mut String,
    shown: &mut usize,
) {
    // The mesh is a few hops deep; the bound keeps a malformed trace from recursing for long.
    if depth > 16 {
        return;
    }
    for s in children.get(parent).into_iter().flatten() {
        *shown += 1;
        let a = |k: &str| attr(&s.span.attributes, k).unwrap_or_else(|| "-".into());
        let took = s
            .span
            .end_time_unix_nano
            .saturating_sub(s.span.start_time_unix_nano) as f64
            / 1e6;
        let peer = match a("direction").as_str() {
            "outbound" => format!("→ {}", a("l5d.server_id")),
            _ => format!("← {}", a("l5d.client_id")),
        };
        out.push_str(&format!(
            "{:indent$}{} {:<8} {} {} {} {:.1} ms  {}\n",
            "",
            s.service,
            a("direction"),
            a("server.address"),
            s.span.name,
            a("http.response.status_code"),
            took,
            peer,
            indent = depth * 2
        ));
        walk(children, &hex(&s.span.span_id), depth + 1, out, shown);
    }
}
