//! The embedded control plane behind `remora control`: one cluster's Identity, Destination and
//! policy services (`InboundServerPolicies`, `OutboundPolicies`) and the service mirror,
//! serving Linkerd's proxy API from a config file.
//!
//! Data flow: the config file is validated into [`config::Config`] (services, and the policy
//! answers compiled from them); the issuer files are loaded into an [`issuer::IssuerStore`]
//! that a background task reloads when they change; the gRPC server ([`server`]) serves every
//! service on one port (TLS with the control plane's own identity unless it listens on
//! loopback) and an admin listener serves metrics and probes. Edits of the file reach every
//! stream through one `watch` of the served state ([`reload`]).
//!
//! # Layout
//! - [`config`]: the TOML schema and its validation.
//! - [`cluster`], [`profile`]: the services discovery serves, validated, as API messages.
//! - [`destination`]: `Destination/Get` and `GetProfile`, incremental streams.
//! - [`policy`]: the `[policy]` section and the two policy APIs.
//! - [`reload`]: follows the config file and publishes each valid edit.
//! - [`token`]: Remora's workload tokens (HMAC-signed, expiring).
//! - [`sa_token`]: Kubernetes service-account tokens, verified offline against the issuer's
//!   keys.
//! - [`issuer`]: issuer reloading and the control plane's serving certificate.
//! - [`identity`]: the `Identity/Certify` service.
//! - [`server`]: the gRPC and admin servers.
//! - [`metrics`]: the control plane's metric families.
//! - [`multicluster`]: the export watch, links and the service mirror.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod destination;
pub mod error;
pub mod identity;
pub mod issuer;
pub mod metrics;
pub mod multicluster;
pub mod policy;
pub mod profile;
pub mod reload;
pub mod sa_token;
pub mod server;
pub mod token;
