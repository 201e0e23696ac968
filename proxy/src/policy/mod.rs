//! What inbound and outbound policy share: the names of policy objects ([`meta`]), route
//! matching ([`route`]), and the watched, last-known-good policy of each port or target
//! ([`watch`]). The two directions' policies themselves live in `inbound/policy/` and
//! `outbound/policy/`; `docs/policy.md` describes the protocol.

pub mod meta;
pub mod route;
pub mod watch;

pub use meta::Meta;
