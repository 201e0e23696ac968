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
//! - [`http`]: responses the proxy synthesizes (errors).
//! - [`identity`]: certificate expiry and renewal outcomes.

#![forbid(unsafe_code)]

pub mod http;
pub mod identity;
pub mod tcp;

pub use prometheus_client::registry::Registry;

/// Renders a registry in the Prometheus text exposition format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
