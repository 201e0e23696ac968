//! Remora's data plane: the sidecar proxy.
//!
//! An app's outbound connections are redirected by iptables to the outbound listener, which
//! learns their original destination (`SO_ORIGINAL_DST`) and forwards them; other pods'
//! connections to this pod are redirected to the inbound listener, which forwards them to the
//! app at the pod's own address. The admin listener (from `remora-runtime`) serves probes,
//! metrics and shutdown.
//!
//! Data flows one way through the folders: [`app`] builds the [`inputs::ProxyInputs`] both
//! directions share and runs [`outbound`] and [`inbound`]; each direction decides per
//! connection and per request, and both build on the shared layers below, which know nothing of
//! directions: [`http`] (detection, hyper serving, client pools), [`tls`] (identity, mTLS),
//! [`discovery`] (resolution, balancing, profiles), [`transport`] (sockets, forwarding, the
//! transport header). The inbound uses the outbound's router for gateway mode; the outbound
//! never uses the inbound.
//!
//! # Layout
//! - [`config`]: every `REMORA_*` variable, parsed once into [`config::Config`].
//! - [`app`]: binds the listeners, builds the shared inputs, runs both directions until drained.
//! - [`inputs`]: what both directions share (addresses, credentials, metrics, limits).
//! - [`error`]: [`error::ProxyError`], every error the proxy answers a request with.
//! - [`outbound`]: the app's connections: transparent and explicit, opaque and HTTP routing,
//!   retries, split, the one connector to endpoints.
//! - [`inbound`]: other pods' connections: detection, mTLS termination, the direct path,
//!   policy, HTTP to the app, gateway mode.
//! - [`http`]: HTTP detection, serving with hyper, client pools, `l5d-orig-proto`, upgrades,
//!   per-request metrics and the access log.
//! - [`tls`]: the workload certificate, mTLS dial and accept, ClientHello detection.
//! - [`discovery`]: Destination API streams, the balancer and breaker, profiles, retry budgets.
//! - [`trace`]: trace context propagation (W3C, B3), a span per HTTP request on each side,
//!   the bounded queue and the OTLP/gRPC exporter.
//! - [`transport`]: connection I/O, counted forwarding, connects, original destinations, the
//!   proxy's own addresses, accept loops, the transport header.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod discovery;
pub mod error;
pub mod http;
pub mod inbound;
pub mod inputs;
pub mod outbound;
pub mod policy;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod trace;
pub mod transport;

pub use app::Proxy;
pub use config::Config;
