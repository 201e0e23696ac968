//! Workload identity: identity names in Linkerd's form, ECDSA P-256 keys, CSRs, issuance,
//! chain checks, and the rustls configurations built from them.
//!
//! This crate is filled in by issue #3; the workspace carries it from the start so the tree
//! shows the architecture.

#![forbid(unsafe_code)]
