//! Endpoint load balancing and circuit breaking.
//!
//! Power of two choices over peak-EWMA latency: two endpoints are drawn at random (in
//! proportion to their weights) and the one with the lower cost — its decayed peak latency
//! times its requests in flight, over its weight — wins. A latency above the average replaces it
//! at once (the peak); below, it decays toward the new value over [`DECAY`].
//!
//! Each endpoint also has a consecutive-failure breaker: after `max_failures` failures in a row
//! it is ejected for a backoff that doubles on each ejection (up to [`MAX_BACKOFF`]); then one
//! probe is let through, and a success restores it. A pick may carry its own [`Accrual`] (an
//! outbound policy's failure accrual: its threshold, its backoff bounds and jitter); a plain
//! [`Balancer::pick`] uses the balancer's `max_failures` and the default backoff.

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

/// Linkerd's jittered exponential backoff: `min × 2^n` capped at `max`, plus a uniform share
/// of up to `jitter` of it (never beyond `max`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExpBackoff {
    pub min: Duration,
    pub max: Duration,
    pub jitter: f32,
}

impl ExpBackoff {
    /// The `n`th delay (from 0), given a uniform random draw `u` in `[0, 1)`.
    pub fn delay(&self, n: u32, u: f64) -> Duration {
        let base = self
            .min
            .checked_mul(2u32.saturating_pow(n))
            .unwrap_or(self.max)
            .min(self.max);
        if self.jitter <= 0.0 {
            return base;
        }
        let extra = base.mul_f64((u * f64::from(self.jitter)).clamp(0.0, 100.0));
        base + extra.min(self.max.saturating_sub(base))
    }
}

/// How an endpoint's breaker trips and recovers: ejected after `max_failures` consecutive
/// failures, for the backoff's first delay, each failed probe moving to the next one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accrual {
    pub max_failures: u32,
    pub backoff: ExpBackoff,
}

impl Accrual {
    /// `max_failures` in a row, then [`BASE_BACKOFF`] doubling up to [`MAX_BACKOFF`].
    pub fn consecutive(max_failures: u32) -> Self {
        Accrual {
            max_failures,
            backoff: ExpBackoff {
                min: BASE_BACKOFF,
                max: MAX_BACKOFF,
                jitter: 0.0,
            },
        }
    }

    /// No breaker: failures never eject (an outbound policy without failure accrual).
    pub fn never() -> Self {
        Accrual::consecutive(u32::MAX)
    }
}

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
        /// Which delay of the backoff this is (0: the first).
        step: u32,
    },
    /// The backoff passed: one probe is in flight.
    Probing {
        step: u32,
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
            BreakerState::Open { until, step } if now >= until => {
                self.state = BreakerState::Probing { step };
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

    /// Records an outcome; `u` is a uniform random draw in `[0, 1)` for the backoff's jitter.
    fn record(
        &mut self,
        success: bool,
        accrual: &Accrual,
        now: Instant,
        u: f64,
    ) -> Option<Transition> {
        if success {
            self.failures = 0;
            return match std::mem::replace(&mut self.state, BreakerState::Closed) {
                BreakerState::Closed => None,
                _ => Some(Transition::Restored),
            };
        }
        self.failures = self.failures.saturating_add(1);
        let step = match self.state {
            BreakerState::Probing { step } => step.saturating_add(1),
            BreakerState::Closed if self.failures >= accrual.max_failures => 0,
            _ => return None,
        };
        let backoff = accrual.backoff.delay(step, u);
        self.state = BreakerState::Open {
            until: now + backoff,
            step,
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
    state: Mutex<State>,
    rng: AtomicU64,
    pub max_failures: u32,
}

/// Per-endpoint loads (kept across endpoint-set changes by address) and, for the current set,
/// the loads and cumulative weights in the set's order, so a pick costs two binary searches.
#[derive(Debug, Default)]
struct State {
    by_addr: HashMap<SocketAddr, Arc<EndpointLoad>>,
    /// The endpoint set the vectors below were built for; holding it keeps its address from
    /// being reused, so a pointer comparison tells whether the set changed.
    set: Option<Arc<dyn std::any::Any + Send + Sync>>,
    loads: Vec<Arc<EndpointLoad>>,
    cumulative: Vec<u64>,
}

impl State {
    fn sync<E: Weighted + Send + Sync + 'static>(&mut self, set: &Arc<Vec<E>>, now: Instant) {
        let same = self
            .set
            .as_ref()
            .is_some_and(|s| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(set)));
        if same {
            return;
        }
        let endpoints: &[E] = set;
        // A new endpoint starts as fast as the fastest one known, so it is tried at once
        // rather than starved by the default estimate.
        let start_rtt = self
            .by_addr
            .values()
            .map(|l| l.latency(now))
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        let live: std::collections::HashSet<SocketAddr> =
            endpoints.iter().map(|e| e.addr()).collect();
        self.by_addr.retain(|a, _| live.contains(a));
        self.loads = endpoints
            .iter()
            .map(|e| {
                self.by_addr
                    .entry(e.addr())
                    .or_insert_with(|| {
                        Arc::new(match start_rtt {
                            Some(rtt) => EndpointLoad::with_rtt(rtt, now),
                            None => EndpointLoad::new(now),
                        })
                    })
                    .clone()
            })
            .collect();
        let mut total = 0u64;
        self.cumulative = endpoints
            .iter()
            .map(|e| {
                total += u64::from(e.weight().max(1));
                total
            })
            .collect();
        self.set = Some(set.clone() as Arc<dyn std::any::Any + Send + Sync>);
    }
}

/// The next draw of the xorshift64* generator whose state is `state` (seed it odd): cheap,
/// and plenty for choosing between endpoints and backends.
pub fn xorshift(state: &AtomicU64) -> u64 {
    let mut x = state.load(Ordering::Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.store(x, Ordering::Relaxed);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Draws before falling back to scanning every endpoint (when many are ejected).
const DRAWS: usize = 8;

impl Balancer {
    pub fn new(max_failures: u32, seed: u64) -> Self {
        Balancer {
            state: Mutex::new(State::default()),
            rng: AtomicU64::new(seed | 1),
            max_failures,
        }
    }

    fn next_random(&self) -> u64 {
        xorshift(&self.rng)
    }

    /// A random index, in proportion to the weights.
    fn draw(&self, cumulative: &[u64]) -> usize {
        let total = cumulative.last().copied().unwrap_or(1).max(1);
        let r = self.next_random() % total;
        cumulative
            .partition_point(|&c| c <= r)
            .min(cumulative.len() - 1)
    }

    /// Endpoints of the current set that are in balancing, and those ejected by the breaker
    /// (including one whose probe is in flight).
    pub fn counts(&self) -> (usize, usize) {
        let Ok(state) = self.state.lock() else {
            return (0, 0);
        };
        let ejected = state
            .loads
            .iter()
            .filter(|l| {
                l.breaker
                    .lock()
                    .map(|b| !matches!(b.state, BreakerState::Closed))
                    .unwrap_or(false)
            })
            .count();
        (state.loads.len() - ejected, ejected)
    }

    /// Whether any endpoint may take a request (none ejected, or a probe is due).
    pub fn any_available<E: Weighted + Send + Sync + 'static>(
        &self,
        endpoints: &Arc<Vec<E>>,
    ) -> bool {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        state.sync(endpoints, now);
        state.loads.iter().any(|l| available(l, now))
    }

    /// Picks an endpoint: `None` when every one is ejected.
    pub fn pick<E: Weighted + Send + Sync + 'static>(
        &self,
        endpoints: &Arc<Vec<E>>,
    ) -> Option<Picked> {
        self.pick_with(endpoints, Accrual::consecutive(self.max_failures))
    }

    /// As [`pick`](Self::pick), the outcome feeding the breaker by `accrual`.
    pub fn pick_with<E: Weighted + Send + Sync + 'static>(
        &self,
        endpoints: &Arc<Vec<E>>,
        accrual: Accrual,
    ) -> Option<Picked> {
        self.pick_avoiding(endpoints, accrual, None)
    }

    /// As [`pick_with`](Self::pick_with), never choosing the endpoint at `avoid` while another
    /// one is available (a retry of a request that endpoint refused).
    pub fn pick_avoiding<E: Weighted + Send + Sync + 'static>(
        &self,
        endpoints: &Arc<Vec<E>>,
        accrual: Accrual,
        avoid: Option<SocketAddr>,
    ) -> Option<Picked> {
        if endpoints.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut state = self.state.lock().ok()?;
        state.sync(endpoints, now);
        let others = avoid.is_some_and(|a| {
            endpoints
                .iter()
                .enumerate()
                .any(|(i, e)| e.addr() != a && available(&state.loads[i], now))
        });
        let allowed = |i: usize| {
            available(&state.loads[i], now) && !(others && Some(endpoints[i].addr()) == avoid)
        };
        let draw_available = || {
            (0..DRAWS)
                .map(|_| self.draw(&state.cumulative))
                .find(|&i| allowed(i))
        };
        let first = match draw_available() {
            Some(i) => i,
            None => {
                // Many are ejected: choose among those that are not.
                let up: Vec<usize> = (0..endpoints.len()).filter(|&i| allowed(i)).collect();
                if up.is_empty() {
                    return None;
                }
                up[(self.next_random() % up.len() as u64) as usize]
            }
        };
        let index = match draw_available().filter(|&b| b != first) {
            None => first,
            Some(second) => {
                let (la, lb) = (&state.loads[first], &state.loads[second]);
                let ca = la.cost(endpoints[first].weight(), now);
                let cb = lb.cost(endpoints[second].weight(), now);
                // Costs within a quarter of each other are a tie, won by the first (random)
                // draw: similar endpoints share the load instead of the marginally faster one
                // taking it all.
                if ca <= cb || ca - cb <= ca * TIE {
                    first
                } else {
                    second
                }
            }
        };
        let load = state.loads[index].clone();
        drop(state);
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
            accrual,
            jitter: (self.next_random() >> 11) as f64 / (1u64 << 53) as f64,
            done: false,
        })
    }
}

fn available(load: &EndpointLoad, now: Instant) -> bool {
    load.breaker
        .lock()
        .map(|b| b.available(now))
        .unwrap_or(true)
}

/// A pick in progress: report how it went with [`Picked::finish`].
#[derive(Debug)]
pub struct Picked {
    pub index: usize,
    load: Arc<EndpointLoad>,
    start: Instant,
    accrual: Accrual,
    /// A uniform draw in `[0, 1)` for the backoff's jitter, should this outcome eject.
    jitter: f64,
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
            .record(success, &self.accrual, now, self.jitter)
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        if !self.done {
            self.load.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
