//! Process plumbing shared by every long-running role of the `remora` binary: the proxy, the
//! gateway and the control plane. Nothing here knows about proxying; each role builds its own
//! work on top.
//!
//! A role starts through [`bootstrap`] (logging, the open-file limit, the Tokio runtime, the
//! signals that start the drain), binds its sockets with [`listen`], serves its admin API with
//! [`admin`] (adding its own debug pages), reaches its control plane through [`channel`], and
//! shuts down through one [`drain`].
//!
//! # Layout
//! - [`bootstrap`]: the common `main` of a role, exit codes, signal handling.
//! - [`admin`]: `/live`, `/ready`, `/metrics`, `/shutdown`, `/log-level`, `/debug/<page>`.
//! - [`drain`]: the process-wide two-phase shutdown signal.
//! - [`log`]: `tracing` setup with a filter that can be replaced at run time.
//! - [`listen`]: binding sockets and the bounded accept loop every listener uses.
//! - [`channel`]: gRPC channels to a control plane at an IP or a DNS name (plaintext on
//!   loopback, TLS otherwise),
//!   instrumented with the control-client metrics.
//! - [`duration`]: the duration syntax of every variable and config file.
//! - [`backoff`]: the one exponential backoff of every reconnecting client.
//! - [`rlimit`]: raising the open-file limit.
//! - [`wake`]: a future polled only when it was woken (watchers raced against busy work).

#![forbid(unsafe_code)]

pub mod admin;
pub mod backoff;
pub mod bootstrap;
pub mod channel;
pub mod drain;
pub mod duration;
pub mod listen;
pub mod log;
pub mod rlimit;
pub mod wake;

pub use backoff::Backoff;
pub use drain::Drain;
