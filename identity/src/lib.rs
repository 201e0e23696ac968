//! Workload identity: identity names in Linkerd's form, ECDSA P-256 keys, CSRs, issuance,
//! certificate checks, and the rustls configurations built from them.
//!
//! Flow: a proxy generates a key once ([`certs::generate_key`]) and a CSR for its name
//! ([`certs::csr`]); the control plane's issuer ([`certs::Ca::issue`]) checks the CSR and signs a
//! leaf; the proxy checks the leaf ([`verify::TrustAnchors::verify`]) and builds its TLS configs
//! ([`tls::configs`]).
//!
//! # Layout
//! - [`name`]: DNS-like names and workload identities.
//! - [`certs`]: keys, CSRs, root and intermediate CAs, issuance with CSR validation.
//! - [`verify`]: trust anchors, chain and name checks, SAN extraction.
//! - [`tls`]: the mesh's rustls provider, server/client configs and server verifier.
//! - [`pem`]: PEM in and out.

#![forbid(unsafe_code)]

pub mod certs;
pub mod name;
pub mod pem;
pub mod tls;
pub mod verify;

pub use name::{Name, NameError, WorkloadId};
pub use verify::TrustAnchors;
