//! Endpoint load balancing and circuit breaking.
//!
//! Power of two choices over peak-EWMA latency: two endpoints are drawn at random (in
//! proportion to their weights) and the one with the lower cost — its decayed peak latency
//! times its requests in flight, over its weight — wins. A latency above the average replaces it
//! at once (the peak); below, it decays toward the new value over [`DECAY`].
//!
//! Each endpoint also has a consecutive-failure breaker: after `max_failures` failures in a row
//! it is ejected for a backoff that doubles on each ejection (up to [`MAX_BACKOFF`]); then one
//! probe is let through, and a success restores it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How fast a latency peak decays.
pub const DECAY: Duration = Duration::from_secs(10);
/// The latency assumed of an endpoint with no observation yet.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Costs closer than this fraction are a tie.
const TIE: f64 = 0.25;
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A state change of an endpoint's breaker, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Ejected { backoff: Duration },
    Restored,
}

#[derive(Debug)]
enum BreakerState {
    Closed,
    Open {
        until: Instant,
        backoff: Duration,
    },
    /// The backoff passed: one probe is in flight.
    Probing {
        backoff: Duration,
    },
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    /// Whether the endpoint may take a request now (taking the probe slot if it is due).
    fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until, backoff } if now >= until => {
                self.state = BreakerState::Probing { backoff };
                true
            }
            _ => false,
        }
    }

    fn available(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until, .. } => now >= until,
            BreakerState::Probing { .. } => false,
        }
    }

    fn record(&mut self, success: bool, max_failures: u32, now: Instant) -> Option<Transition> {
        if success {
            self.failures = 0;
            return match std::mem::replace(&mut self.state, BreakerState::Closed) {
                BreakerState::Closed => None,
                _ => Some(Transition::Restored),
            };
        }
        self.failures = self.failures.saturating_add(1);
        let backoff = match self.state {
            BreakerState::Probing { backoff } => (backoff * 2).min(MAX_BACKOFF),
            BreakerState::Closed if self.failures >= max_failures => BASE_BACKOFF,
            _ => return None,
        };
        self.state = BreakerState::Open {
            until: now + backoff,
            backoff,
        };
        Some(Transition::Ejected { backoff })
    }
}

/// The load and health of one endpoint.
#[derive(Debug)]
pub struct EndpointLoad {
    ewma: Mutex<(f64, Instant)>,
    pending: AtomicUsize,
    breaker: Mutex<Breaker>,
}

impl EndpointLoad {
    fn new(now: Instant) -> Self {
        Self::with_rtt(DEFAULT_RTT.as_nanos() as f64, now)
    }

    fn with_rtt(rtt_ns: f64, now: Instant) -> Self {
        EndpointLoad {
            ewma: Mutex::new((rtt_ns, now)),
            pending: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker {
                failures: 0,
                state: BreakerState::Closed,
            }),
        }
    }

    /// The decayed peak latency, in nanoseconds.
    pub fn latency(&self, now: Instant) -> f64 {
        let Ok(g) = self.ewma.lock() else { return 0.0 };
        let (rtt, stamp) = *g;
        let elapsed = now.saturating_duration_since(stamp).as_nanos() as f64;
        rtt * (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    fn observe(&self, rtt: Duration, now: Instant) {
        let Ok(mut g) = self.ewma.lock() else { return };
        let (cur, stamp) = *g;
        let rtt = rtt.as_nanos() as f64;
        let next = if rtt > cur {
            rtt
        } else {
            let elapsed = now.saturating_duration_since(stamp).as_nanos() as f64;
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            cur * w + rtt * (1.0 - w)
        };
        *g = (next, now);
    }

    fn cost(&self, weight: u32, now: Instant) -> f64 {
        let pending = self.pending.load(Ordering::Relaxed) as f64;
        (self.latency(now) + 1.0) * (pending + 1.0) / f64::from(weight.max(1))
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// Something a balancer can pick: an address and a weight.
pub trait Weighted {
    fn addr(&self) -> SocketAddr;
    fn weight(&self) -> u32;
}

/// The balancer of one target.
#[derive(Debug)]
pub struct Balancer {
    loads: Mutex<HashMap<SocketAddr, Arc<EndpointLoad>>>,
    rng: AtomicU64,
    pub max_failures: u32,
}

/// A pick in progress: report how it went with [`Picked::finish`].
#[derive(Debug)]
pub struct Picked {
    pub index: usize,
    load: Arc<EndpointLoad>,
    start: Instant,
    max_failures: u32,
    done: bool,
}

impl Picked {
    /// Records the outcome: the latency since the pick, and success or failure for the breaker.
    pub fn finish(mut self, success: bool) -> Option<Transition> {
        self.done = true;
        let now = Instant::now();
        self.load.pending.fetch_sub(1, Ordering::Relaxed);
        self.load
            .observe(now.saturating_duration_since(self.start), now);
        self.load
            .breaker
            .lock()
            .ok()?
            .record(success, self.max_failures, now)
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if !self.done {
            self.load.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Balancer {
    pub fn new(max_failures: u32, seed: u64) -> Self {
        Balancer {
            loads: Mutex::new(HashMap::new()),
            rng: AtomicU64::new(seed | 1),
            max_failures,
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: cheap, and plenty for choosing between endpoints.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random index among `candidates`, in proportion to their weights.
    fn weighted<E: Weighted>(&self, endpoints: &[E], candidates: &[usize]) -> usize {
        let total: u64 = candidates
            .iter()
            .map(|&i| u64::from(endpoints[i].weight().max(1)))
            .sum();
        let mut r = self.next_random() % total.max(1);
        for &i in candidates {
            let w = u64::from(endpoints[i].weight().max(1));
            if r < w {
                return i;
            }
            r -= w;
        }
        candidates[candidates.len() - 1]
    }

    /// Whether any endpoint may take a request (none ejected, or a probe is due).
    pub fn any_available<E: Weighted>(&self, endpoints: &[E]) -> bool {
        let now = Instant::now();
        let Ok(loads) = self.loads.lock() else {
            return true;
        };
        endpoints.iter().any(|e| {
            loads
                .get(&e.addr())
                .is_none_or(|l| l.breaker.lock().map(|b| b.available(now)).unwrap_or(true))
        })
    }

    /// Picks an endpoint: `None` when every one is ejected.
    pub fn pick<E: Weighted>(&self, endpoints: &[E]) -> Option<Picked> {
        let now = Instant::now();
        let mut loads = self.loads.lock().ok()?;
        if loads.len() > endpoints.len() * 2 + 16 {
            // Forget endpoints that left the set.
            let live: std::collections::HashSet<SocketAddr> =
                endpoints.iter().map(|e| e.addr()).collect();
            loads.retain(|a, _| live.contains(a));
        }
        // A new endpoint starts as fast as the fastest one known, so it is tried at once
        // rather than starved by the default estimate.
        let start_rtt = loads
            .values()
            .map(|l| l.latency(now))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        let load_of = |loads: &mut HashMap<SocketAddr, Arc<EndpointLoad>>, e: &E| {
            loads
                .entry(e.addr())
                .or_insert_with(|| {
                    Arc::new(match start_rtt {
                        Some(rtt) => EndpointLoad::with_rtt(rtt, now),
                        None => EndpointLoad::new(now),
                    })
                })
                .clone()
        };
        let candidates: Vec<usize> = (0..endpoints.len())
            .filter(|&i| {
                load_of(&mut loads, &endpoints[i])
                    .breaker
                    .lock()
                    .map(|b| b.available(now))
                    .unwrap_or(true)
            })
            .collect();
        let index = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            _ => {
                let a = self.weighted(endpoints, &candidates);
                let mut b = self.weighted(endpoints, &candidates);
                if a == b {
                    b = candidates[(candidates.iter().position(|&c| c == a).unwrap_or(0) + 1)
                        % candidates.len()];
                }
                let ca = load_of(&mut loads, &endpoints[a]).cost(endpoints[a].weight(), now);
                let cb = load_of(&mut loads, &endpoints[b]).cost(endpoints[b].weight(), now);
                // Costs within a quarter of each other are a tie, won by the first (random)
                // draw: similar endpoints share the load instead of the marginally faster one
                // taking it all.
                if ca <= cb || ca - cb <= ca * TIE {
                    a
                } else {
                    b
                }
            }
        };
        let load = load_of(&mut loads, &endpoints[index]);
        if !load
            .breaker
            .lock()
            .map(|mut b| b.admit(now))
            .unwrap_or(true)
        {
            return None;
        }
        load.pending.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            index,
            load,
            start: now,
            max_failures: self.max_failures,
            done: false,
        })
    }
}

#[cfg(test)]
mod tests;
