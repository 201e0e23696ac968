//! The embedded control plane behind `remora control`: the identity issuer (#3), the destination
//! service (#4) and the service mirror (#10), serving Linkerd's proxy API from a config file.
//!
//! This crate is filled in by those issues; the workspace carries it from the start so the tree
//! shows the architecture.

#![forbid(unsafe_code)]
