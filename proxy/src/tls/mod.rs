//! TLS between proxies: the workload certificate from the control plane, mTLS dial and accept
//! with Linkerd's identities, and the ClientHello peek that tells mesh mTLS from an app's own
//! TLS.
//!
//! # Layout
//! - [`identity`]: key, CSR, `Identity/Certify`, renewal, the credentials `watch`.
//! - [`mtls`]: dialling an endpoint with mTLS (and the transport header), terminating inbound.
//! - [`detect`]: recognises a ClientHello and reads its SNI without consuming it.

pub mod detect;
pub mod identity;
pub mod mtls;
