//! Remora's metrics: Prometheus families in Linkerd's names and labels, so Linkerd's dashboards
//! and queries work unchanged against a Remora proxy.
//!
//! Each subsystem owns one struct of families, built by `register(&mut Registry)` from a
//! registry it is handed; there are no global statics. Hot paths resolve a label set once (per
//! connection, per request) into cheap handles and only touch atomics afterwards.
//!
//! # Layout
//! - [`tcp`]: connection and byte counters for the L4 path (`tcp_open_total`, `tcp_close_total`,
//!   `tcp_open_connections`, `tcp_read_bytes_total`, `tcp_write_bytes_total`) and refusals.
//! - [`golden`]: Linkerd's golden HTTP metrics (`request_total`, `response_total`,
//!   `response_latency_ms`).
//! - [`http`]: responses the proxy synthesizes (errors), retries, timeouts, breaker transitions.
//! - [`labels`]: the target labels shared by TCP and HTTP (`authority`, `target_addr`, `tls`,
//!   identities, `dst_*`).
//! - [`bounded`], [`series`]: label sets that expire when idle and are capped, with an overflow
//!   label set and counter.
//! - [`histogram`]: the latency histogram with Linkerd's bucket bounds.
//! - [`identity`]: certificate expiry and renewal outcomes.
//! - [`inbound_policy`]: Linkerd's inbound authorization, route-not-found, rate-limit and
//!   termination counters (`inbound_http_authz_*`, `inbound_tcp_authz_*`, ...).
//! - [`outbound_route`]: Linkerd's outbound route families for policy-routed traffic
//!   (`outbound_{http,grpc}_route_*`, `outbound_{tcp,tls}_route_*`).
//! - [`client`]: calls to the control plane (count by result, latency).
//! - [`trace`]: the span exporter's families, in linkerd2-proxy's names
//!   (`opentelemetry_span_export_requests_total`, `opentelemetry_span_exports_total`), and the
//!   spans it dropped (`opentelemetry_span_drops_total`, by reason).
//! - [`process`]: the standard `process_*` families (CPU, memory, descriptors, start time),
//!   read from `/proc/self` at each scrape.

#![forbid(unsafe_code)]

pub mod bounded;
pub mod client;
pub mod detect;
pub mod golden;
pub mod histogram;
pub mod http;
pub mod identity;
pub mod inbound_policy;
pub mod labels;
pub mod outbound_route;
pub mod process;
pub mod series;
pub mod tcp;
pub mod trace;

pub use prometheus_client::registry::Registry;

/// Renders a registry in the Prometheus text exposition format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
