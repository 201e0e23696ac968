//! A small OTLP trace collector for the tests: OpenTelemetry's own `TraceService` server (the
//! code generated from the official protos, `remora_api::otlp`), keeping every span it
//! receives with its resource's attributes. One collector may serve on several sockets (one
//! per pod, on its loopback) into one store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use remora_api::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use remora_api::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use remora_api::otlp::common::v1::KeyValue;
use remora_api::otlp::common::v1::any_value;
use remora_api::otlp::trace::v1::Span;
use tonic::{Request, Response, Status};

use crate::apps::listen_in;
use crate::inproc::InProcess;

/// A span as the collector received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub resource: BTreeMap<String, String>,
    pub span: Span,
}

impl Received {
    /// An attribute of the span, as text (integers in decimal).
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Debug, Default)]
struct Store(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let resource: BTreeMap<String, String> = rs
                .resource
                .map(|r| {
                    r.attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), attr(&r.attributes, &kv.key)?)))
                        .collect()
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push(Received {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The collector: its store and the servers feeding it (stopped when dropped).
#[derive(Debug, Default)]
pub struct Collector {
    store: Store,
    servers: Vec<InProcess>,
}

impl Collector {
    /// Serves plaintext OTLP/gRPC on `port` (every address) in the network namespace `ns`.
    pub fn serve_in(&mut self, ns: &str, port: u16) {
        let listener = listen_in(ns, port).unwrap().into_std().unwrap();
        let store = self.store.clone();
        self.servers.push(InProcess::run(
            &format!("otlp@{ns}:{port}"),
            move |_| async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming(TraceServiceServer::new(store), incoming)
                    .await;
            },
        ));
    }

    /// Serves OTLP/gRPC over TLS with `tls` (the collector's certificate; client certificates
    /// as it asks for them) on `port` in `ns`.
    pub fn serve_tls_in(&mut self, ns: &str, port: u16, tls: Arc<rustls::ServerConfig>) {
        let listener = listen_in(ns, port).unwrap().into_std().unwrap();
        let store = self.store.clone();
        self.servers.push(InProcess::run(
            &format!("otlps@{ns}:{port}"),
            move |_| async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = crate::linkerd::tls_incoming(listener, tls);
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming(TraceServiceServer::new(store), incoming)
                    .await;
            },
        ));
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.store.0.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id` (hex).
    pub fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id() == trace_id)
            .collect()
    }
}
