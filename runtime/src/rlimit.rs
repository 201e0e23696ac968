//! Raises the open-file soft limit to the hard limit: a proxy holds two descriptors per
//! connection, and the usual soft limit of 1024 would cap it at a few hundred connections.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Returns the new soft limit.
pub fn raise_nofile() -> Result<u64, nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}
