//! The integration harness: pods in network namespaces, the `remora` binary, test apps.
//!
//! A "cluster network" is a Linux bridge in a namespace of its own; a "pod" is a namespace
//! joined to that bridge by a veth pair, with its own IPv4 and IPv6 address and a default route.
//! A meshed pod runs `remora init` and then `remora proxy` as uid 2102, exactly as in a real pod.
//! Test apps and clients run in the test process: their sockets are created on a thread that
//! entered the pod's namespace (a socket stays in the namespace it was created in), then driven
//! by the test's own runtime.
//!
//! ```no_run
//! # async fn f() {
//! use remora_tests::{Net, apps::echo};
//! let Some(net) = Net::new() else { return }; // skipped without root, unless required
//! let b = net.pod("b").app(echo(7000)).meshed().start().await;
//! let a = net.pod("a").meshed().start().await;
//! let mut conn = a.connect(b.addr4(7000)).await.unwrap();
//! # }
//! ```
//!
//! # Layout
//! - [`bin`]: builds (never reuses a stale) `remora` binary for the tests.
//! - [`netns`]: namespace plumbing, the capability check, the sweep of leftovers.
//! - [`control`]: a mesh PKI and `remora control` processes, made with the CLI.
//! - [`http`]: HTTP/1, HTTP/2 and gRPC clients inside pods.
//! - [`inproc`]: proxies and control planes inside the test process, each on a thread and a
//!   runtime of its own, with their logs captured.
//! - [`local`]: a proxy on its own loopback address, without namespaces or root, in-process or
//!   as a child process.
//! - [`explicit`]: explicit-mode pods on loopback addresses and a control plane for them.
//! - [`net`]: [`Net`] and [`Pod`], the prose-like builder API.
//! - [`router`]: [`Router`] joins networks on distinct subnets into several
//!   clusters, with gateway-mode isolation.
//! - [`apps`]: echo, reply-after-EOF and HTTP-reporting servers; byte patterns.
//! - [`services`]: builds the `[[services]]` of a cluster config.
//! - [`tls`]: test certificates, TLS clients and servers in pods, hand-made ClientHellos.
//! - [`admin`]: a tiny HTTP client for the proxies' admin endpoints, and a metrics reader.
//! - [`otlp`]: a small OTLP trace collector on OpenTelemetry's own `TraceService`.
//! - [`inbound_servers`]: `Server` messages (inbound policy) for the Linkerd-shaped plane.
//! - [`outbound_policies`]: `OutboundPolicy` messages and a client/two-servers mesh to try
//!   them in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod apps;
pub mod bin;
pub mod control;
pub mod explicit;
pub mod http;
pub mod image;
pub mod inbound_servers;
pub mod inproc;
pub mod linkerd;
pub mod local;
pub mod net;
pub mod netns;
pub mod otlp;
pub mod outbound_policies;
pub mod promql;
pub mod router;
pub mod services;
pub mod tls;

pub use net::{Net, Pod};
pub use router::Router;

use std::time::Duration;

/// Polls `cond` every 50 ms until it holds or `deadline` passes; returns whether it held.
pub async fn eventually<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
