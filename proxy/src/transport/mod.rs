//! Connections as bytes: the stream type every side of a proxied connection is, counted
//! two-way forwarding, connects with a timeout, original destinations, the proxy's own
//! addresses, the accept loop of the two proxy listeners, and the transport header that follows
//! an mTLS handshake between proxies.
//!
//! # Layout
//! - [`io`]: [`io::BoxIo`], replay of detected bytes ([`io::PrefixedIo`]), TLS read-ahead.
//! - [`early`]: the early dial of detection (server-speaks-first protocols).
//! - [`forward`]: both directions of a connection, each side [`forward::Counted`].
//! - [`tcp`]: connect with a timeout; connect-and-forward with metrics and logs.
//! - [`orig_dst`]: `SO_ORIGINAL_DST` and the pod's own addresses.
//! - [`own`]: the proxy's own listeners and addresses (loop protection).
//! - [`listen`]: the inbound and outbound accept loops (connection limit, drain, metrics).
//! - [`header`]: the transport header (`transport.l5d.io/v1`).

pub mod early;
pub mod forward;
pub mod header;
pub mod io;
pub mod listen;
pub mod orig_dst;
pub mod own;
pub mod tcp;
