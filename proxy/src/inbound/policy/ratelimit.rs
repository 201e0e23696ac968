//! Local rate limits of an HTTP server (Linkerd's `HTTPLocalRateLimitPolicy`), checked after a
//! request is authorized: a total rate for the server, a rate per client identity (every
//! client without one shares a bucket), and overrides, each a rate shared by a list of
//! identities that then skip the per-identity rate.
//!
//! Each rate is a GCRA (the generic cell rate algorithm, as linkerd2-proxy's `governor`
//! quotas are): `rps` requests per second, a burst of `rps`. One limiter is a single atomic
//! "theoretical arrival time", advanced by compare-and-swap: no lock and no allocation per
//! request. Per-identity state is bounded ([`MAX_IDENTITIES`]): an identity whose bucket has
//! refilled is indistinguishable from a new one and is forgotten first; beyond the bound, new
//! identities share one overflow bucket.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use remora_metrics::inbound_policy::{Object, RateLimitScope};
use tokio::time::Instant;

use crate::policy::Meta;

/// Client identities whose per-identity state one server keeps.
pub const MAX_IDENTITIES: usize = 4096;

/// One rate: `rps` per second, bursts of `rps`.
#[derive(Debug)]
pub struct Gcra {
    rps: u32,
    /// Nanoseconds between two requests at the steady rate.
    interval: u64,
    /// How far ahead of now the arrival time may run: the burst.
    tolerance: u64,
    /// The theoretical arrival time, in nanoseconds since `epoch`.
    tat: AtomicU64,
    epoch: Instant,
}

impl Gcra {
    pub fn new(rps: u32, epoch: Instant) -> Self {
        let rps = rps.max(1);
        let interval = 1_000_000_000 / u64::from(rps);
        Gcra {
            rps,
            interval,
            tolerance: interval * u64::from(rps),
            tat: AtomicU64::new(0),
            epoch,
        }
    }

    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// Takes one request's cell if the rate allows it.
    pub fn check(&self) -> bool {
        let now = self.now();
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            if next.saturating_sub(self.tolerance) > now {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(current) => tat = current,
            }
        }
    }

    /// Whether the bucket is full again (as good as new).
    fn refilled(&self, now: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now
    }
}

/// Per-identity rates.
#[derive(Debug)]
struct PerIdentity {
    rps: u32,
    epoch: Instant,
    /// Clients without an identity.
    anonymous: Gcra,
    known: Mutex<HashMap<Box<str>, Gcra>>,
    /// Identities beyond [`MAX_IDENTITIES`] whose buckets are all in use.
    overflow: Gcra,
}

impl PerIdentity {
    fn check(&self, id: Option<&str>) -> bool {
        let Some(id) = id else {
            return self.anonymous.check();
        };
        let Ok(mut known) = self.known.lock() else {
            return self.overflow.check();
        };
        if let Some(g) = known.get(id) {
            return g.check();
        }
        if known.len() >= MAX_IDENTITIES {
            let now = self.anonymous.now();
            known.retain(|_, g| !g.refilled(now));
        }
        if known.len() >= MAX_IDENTITIES {
            return self.overflow.check();
        }
        let g = Gcra::new(self.rps, self.epoch);
        let ok = g.check();
        known.insert(id.into(), g);
        ok
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    Total(u32),
    PerIdentity(u32),
    Override(u32),
}

impl Limited {
    pub fn scope(self) -> RateLimitScope {
        match self {
            Limited::Total(_) => RateLimitScope::Total,
            Limited::PerIdentity(_) | Limited::Override(_) => RateLimitScope::Identity,
        }
    }
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limited::Total(n) => write!(f, "total rate limit exceeded: {n}rps"),
            Limited::PerIdentity(n) => write!(f, "per-identity rate limit exceeded: {n}rps"),
            Limited::Override(n) => write!(f, "override rate limit exceeded: {n}rps"),
        }
    }
}

/// A server's local rate limit.
#[derive(Debug)]
pub struct LocalRateLimit {
    pub meta: Option<Meta>,
    /// `ratelimit_group`, `ratelimit_kind`, `ratelimit_name`, when it has a name.
    pub labels: Option<Arc<Object>>,
    total: Option<Gcra>,
    identity: Option<PerIdentity>,
    /// Identity → its override's limiter (shared by the override's identities).
    overrides: HashMap<String, Arc<Gcra>>,
}

impl LocalRateLimit {
    /// A limit of `total` and `identity` requests per second (0: none) and `overrides` (a
    /// rate and its identities). `None` when nothing is limited.
    pub fn new(
        meta: Option<Meta>,
        total: u32,
        identity: u32,
        overrides: Vec<(u32, Vec<String>)>,
    ) -> Option<Self> {
        let epoch = Instant::now();
        let mut by_id = HashMap::new();
        for (rps, ids) in overrides {
            if rps == 0 {
                continue;
            }
            let g = Arc::new(Gcra::new(rps, epoch));
            for id in ids {
                by_id.insert(id, g.clone());
            }
        }
        if total == 0 && identity == 0 && by_id.is_empty() {
            return None;
        }
        Some(LocalRateLimit {
            labels: meta
                .as_ref()
                .map(|m| Object::new(m.group(), m.kind(), m.name())),
            meta,
            total: (total > 0).then(|| Gcra::new(total, epoch)),
            identity: (identity > 0).then(|| PerIdentity {
                rps: identity,
                epoch,
                anonymous: Gcra::new(identity, epoch),
                known: Mutex::new(HashMap::new()),
                overflow: Gcra::new(identity, epoch),
            }),
            overrides: by_id,
        })
    }

    /// Checks a request of the client `id`: the total, then the client's override (which
    /// replaces the per-identity rate), then the per-identity rate.
    pub fn check(&self, id: Option<&str>) -> Result<(), Limited> {
        if let Some(t) = &self.total
            && !t.check()
        {
            return Err(Limited::Total(t.rps));
        }
        if let Some(g) = id.and_then(|id| self.overrides.get(id)) {
            return if g.check() {
                Ok(())
            } else {
                Err(Limited::Override(g.rps))
            };
        }
        if let Some(p) = &self.identity
            && !p.check(id)
        {
            return Err(Limited::PerIdentity(p.rps));
        }
        Ok(())
    }
}
