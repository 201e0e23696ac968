//! Remora's data plane: the sidecar proxy and its pod setup.
//!
//! An app's outbound connections are redirected by iptables to the outbound listener, which
//! learns their original destination (`SO_ORIGINAL_DST`) and forwards them; other pods'
//! connections to this pod are redirected to the inbound listener, which forwards them to the
//! app at the pod's own address. The admin listener serves probes, metrics and shutdown.
//!
//! # Layout
//! - [`config`]: every `REMORA_*` variable, parsed once into [`config::Config`].
//! - [`app`]: binds the listeners and runs inbound, outbound and admin until drained.
//! - [`outbound`], [`inbound`]: per-connection decisions of each listener.
//! - [`gateway`]: gateway mode (`remora gateway`): forwards other clusters' mTLS connections
//!   naming an exported service.
//! - [`listen`]: binding and the shared accept loop (connection limit, drain).
//! - [`tcp`], [`forward`]: connect with a timeout, then counted two-way forwarding.
//! - [`orig_dst`], [`own`]: the original destination and the proxy's own addresses.
//! - [`identity`], [`control_client`]: the workload certificate from the control plane,
//!   renewed in the background and published as rustls configs.
//! - [`balance`]: power of two choices over peak-EWMA latency, and the circuit breaker.
//! - [`budget`]: retry budgets (ratio of retries to requests over a window, plus a reserve).
//! - [`discovery`]: Destination API streams per target, cached, followed in the background.
//! - [`admin`]: `/live`, `/ready`, `/metrics`, `/shutdown`, `/log-level`.
//! - [`drain`]: the process-wide two-phase shutdown signal.
//! - [`init`]: `remora init`, the iptables rules that redirect a pod's traffic.
//! - [`tls_detect`]: recognises a ClientHello and reads its SNI without consuming it.
//! - [`transport_header`]: the header after an mTLS handshake with ALPN `transport.l5d.io/v1`.
//! - [`l7`]: HTTP detection and proxying (HTTP/1, HTTP/2, gRPC, upgrades).
//! - [`mtls`]: mTLS between proxies: dialling endpoints, terminating inbound.
//! - [`io`]: the boxed stream type of every connection side, replay of detected bytes.
//! - [`profile`]: destination profiles compiled for the data path (routes, budgets).
//! - [`policy`]: inbound authorization per port.
//! - [`test_server`]: `remora test-server`, the HTTP/gRPC app of tests, demo and benchmarks.
//! - [`log`], [`rlimit`]: process setup; the log filter can be replaced at run time.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod balance;
pub mod budget;
pub mod config;
pub mod control_client;
pub mod discovery;
pub mod drain;
pub mod forward;
pub mod gateway;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod io;
pub mod l7;
pub mod listen;
pub mod log;
pub mod mtls;
pub mod orig_dst;
pub mod outbound;
pub mod own;
pub mod policy;
pub mod profile;
pub mod rlimit;
pub mod tcp;
pub mod test_server;
pub mod tls_detect;
pub mod transport_header;

pub use app::Proxy;
pub use config::Config;
