//! The span exporter: one task draining the tracer's bounded queue into OTLP
//! `ExportTraceServiceRequest`s (OpenTelemetry's own messages, `remora_api::otlp`), sent to the
//! collector's `TraceService/Export` over the proxy's control-plane channel (mTLS verifying the
//! collector's identity, or plaintext on loopback).
//!
//! A batch is at most [`MAX_BATCH`] spans, sent once full or [`FLUSH`] after its first span.
//! An export that fails (or outlasts [`EXPORT_TIMEOUT`]) drops its batch, counted, and the next
//! waits [`BACKOFF`]: while the collector is down the queue fills and further spans are dropped
//! at the request (counted), so memory stays bounded at the queue plus one batch.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use remora_api::otlp::collector::trace::v1::ExportTraceServiceRequest;
use remora_api::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use remora_api::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use remora_api::otlp::resource::v1::Resource;
use remora_api::otlp::trace::v1::span::SpanKind;
use remora_api::otlp::trace::v1::status::StatusCode;
use remora_api::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use remora_metrics::trace::TraceMetrics;
use remora_runtime::channel::Instrumented;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{Side, SpanRecord, Value};

/// Most spans in one export request.
pub const MAX_BATCH: usize = 512;
/// A batch is sent at most this long after its first span.
pub const FLUSH: Duration = Duration::from_secs(1);
/// An export taking longer is abandoned (its batch dropped).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed export.
pub const BACKOFF: Duration = Duration::from_secs(1);

/// The resource every span is exported under: the configured attributes and `process.pid`.
pub fn resource(attributes: &BTreeMap<String, String>) -> Resource {
    let mut out: Vec<KeyValue> = attributes
        .iter()
        .map(|(k, v)| kv(k, Value::Str(v.clone())))
        .collect();
    out.push(kv("process.pid", Value::Int(i64::from(std::process::id()))));
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    out.push(kv("process.start_timestamp", Value::Int(start)));
    Resource {
        attributes: out,
        ..Default::default()
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(match value {
                Value::Str(s) => any_value::Value::StringValue(s),
                Value::Int(i) => any_value::Value::IntValue(i),
            }),
        }),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One span as OTLP has it.
pub fn to_otlp(s: SpanRecord) -> Span {
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state,
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        // W3C flags: sampled. Bits 8 and 9: whether the parent is remote is known, and it is
        // (the proxy never originates a span's parent in-process).
        flags: 0x1 | 0x100 | if s.parent.is_some() { 0x200 } else { 0 },
        name: s.name,
        kind: match s.side {
            Side::Outbound => SpanKind::Client,
            Side::Inbound => SpanKind::Server,
        } as i32,
        start_time_unix_nano: nanos(s.start),
        end_time_unix_nano: nanos(s.end),
        attributes: s.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(Status {
            code: if s.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            } as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// A request of `spans` under `resource`.
pub fn request(resource: &Resource, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "remora".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Drains `rx` into the collector until every tracer is gone.
pub async fn run(
    mut rx: mpsc::Receiver<SpanRecord>,
    channel: Instrumented,
    resource: Resource,
    metrics: TraceMetrics,
) {
    let mut client = TraceServiceClient::new(channel);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(to_otlp(first));
        let deadline = tokio::time::Instant::now() + FLUSH;
        let mut closed = false;
        while batch.len() < MAX_BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(s) => batch.push(to_otlp(s)),
                    None => {
                        closed = true;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let n = batch.len() as u64;
        let req = request(&resource, std::mem::take(&mut batch));
        let ok = match tokio::time::timeout(EXPORT_TIMEOUT, client.export(req)).await {
            Ok(Ok(rsp)) => {
                if let Some(p) = rsp.into_inner().partial_success
                    && p.rejected_spans > 0
                {
                    debug!(rejected = p.rejected_spans, error = %p.error_message,
                        "the trace collector rejected some spans");
                }
                true
            }
            Ok(Err(status)) => {
                info!(error = %status.message(), code = ?status.code(), spans = n,
                    "span export failed; spans dropped");
                false
            }
            Err(_) => {
                info!(spans = n, "span export timed out; spans dropped");
                false
            }
        };
        metrics.exported(ok, n);
        if closed {
            return;
        }
        if !ok {
            tokio::time::sleep(BACKOFF).await;
        }
    }
}
