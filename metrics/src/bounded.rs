//! Bounded label sets: a store of per-label-set metrics that drops label sets left idle and caps
//! how many exist at once, so no input (10 000 authorities, a port scan) grows a family without
//! bound.
//!
//! - A label set untouched for the idle time, and held by no live handle (an open connection
//!   keeps its series), is dropped at the next scrape or insertion.
//! - At the cap, a new label set is counted under the store's single overflow label set
//!   (`overflow="true"`), and the overflow counter of its family moves
//!   (`metrics_series_overflow_total{family}`).
//! - Looking up an existing label set takes a read lock, hashes the key and clones an `Arc`:
//!   no allocation. The hash is foldhash (a label set is ~100 bytes of strings, hashed on every
//!   request: SipHash took ~1.5 k instructions), seeded per process; the cap bounds a map that
//!   colliding keys could slow.

use foldhash::{HashMap, HashMapExt};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How many label sets a store keeps and for how long an idle one survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_series: usize,
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: 10_000,
            idle: Duration::from_secs(600),
        }
    }
}

/// One label set's metrics, and when it was last used.
#[derive(Debug)]
pub struct Slot<V> {
    pub value: V,
    last_ms: AtomicU64,
}

/// Label sets `K` and their metrics `V`, bounded by [`Limits`].
#[derive(Debug)]
pub struct Store<K, V> {
    map: RwLock<HashMap<K, Arc<Slot<V>>>>,
    overflow: Arc<Slot<V>>,
    overflow_used: AtomicBool,
    overflowed: AtomicU64,
    limits: Limits,
    epoch: Instant,
    make: fn() -> V,
    overflow_counter: Option<prometheus_client::metrics::counter::Counter>,
}

impl<K: Hash + Eq + Clone, V> Store<K, V> {
    pub fn new(limits: Limits, make: fn() -> V) -> Self {
        Store {
            map: RwLock::new(HashMap::new()),
            overflow: Arc::new(Slot {
                value: make(),
                last_ms: AtomicU64::new(0),
            }),
            overflow_used: AtomicBool::new(false),
            overflowed: AtomicU64::new(0),
            limits,
            epoch: Instant::now(),
            make,
            overflow_counter: None,
        }
    }

    /// Also counts overflows in `counter` (a family's `metrics_series_overflow_total`).
    pub fn with_overflow_counter(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.overflow_counter = Some(counter);
        self
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks `slot` used now: a holder that reuses a slot without [`get`](Self::get) (a
    /// connection's last one) calls this when it lets go, so the slot's idle time counts from
    /// its last use.
    pub fn touch(&self, slot: &Slot<V>) {
        slot.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether `slot` is the overflow label set's (what [`get`](Self::get) gives at the cap).
    pub fn is_overflow(&self, slot: &Arc<Slot<V>>) -> bool {
        Arc::ptr_eq(slot, &self.overflow)
    }

    /// The metrics of `key`, created if needed (or the overflow set's, at the cap).
    pub fn get(&self, key: &K) -> Arc<Slot<V>> {
        let now = self.now_ms();
        if let Ok(map) = self.map.read()
            && let Some(slot) = map.get(key)
        {
            slot.last_ms.store(now, Ordering::Relaxed);
            return slot.clone();
        }
        self.insert(key, now)
    }

    #[cold]
    fn insert(&self, key: &K, now: u64) -> Arc<Slot<V>> {
        let Ok(mut map) = self.map.write() else {
            return self.overflow.clone();
        };
        if let Some(slot) = map.get(key) {
            slot.last_ms.store(now, Ordering::Relaxed);
            return slot.clone();
        }
        if map.len() >= self.limits.max_series {
            self.sweep_locked(&mut map, now);
        }
        if map.len() >= self.limits.max_series {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = &self.overflow_counter {
                c.inc();
            }
            self.overflow_used.store(true, Ordering::Relaxed);
            return self.overflow.clone();
        }
        let slot = Arc::new(Slot {
            value: (self.make)(),
            last_ms: AtomicU64::new(now),
        });
        map.insert(key.clone(), slot.clone());
        slot
    }

    fn sweep_locked(&self, map: &mut HashMap<K, Arc<Slot<V>>>, now: u64) {
        let idle = self.limits.idle.as_millis() as u64;
        map.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || now.saturating_sub(slot.last_ms.load(Ordering::Relaxed)) < idle
        });
    }

    /// Drops label sets idle for longer than the idle time and held by no handle.
    pub fn sweep(&self) {
        let now = self.now_ms();
        if let Ok(mut map) = self.map.write() {
            self.sweep_locked(&mut map, now);
        }
    }

    /// Calls `f` for each label set (sweeping first), then for the overflow set (`None`) if it
    /// was ever used. For encoding.
    pub fn for_each<E>(&self, mut f: impl FnMut(Option<&K>, &V) -> Result<(), E>) -> Result<(), E> {
        self.sweep();
        if let Ok(map) = self.map.read() {
            for (k, slot) in map.iter() {
                f(Some(k), &slot.value)?;
            }
        }
        if self.overflow_used.load(Ordering::Relaxed) {
            f(None, &self.overflow.value)?;
        }
        Ok(())
    }

    /// Label sets currently kept (without the overflow set).
    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Label sets refused at the cap so far.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn store(max: usize, idle: Duration) -> Store<u32, AtomicU64> {
        Store::new(
            Limits {
                max_series: max,
                idle,
            },
            || AtomicU64::new(0),
        )
    }

    #[test]
    fn caps_label_sets_and_counts_the_overflow() {
        let s = store(3, Duration::from_secs(60));
        for k in 0..10 {
            s.get(&k).value.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.overflowed(), 7);
        let mut seen = Vec::new();
        s.for_each::<()>(|k, v| {
            seen.push((k.copied(), v.load(Ordering::Relaxed)));
            Ok(())
        })
        .unwrap();
        seen.sort();
        assert_eq!(
            seen,
            vec![(None, 7), (Some(0), 1), (Some(1), 1), (Some(2), 1)]
        );
        // An existing label set is still found at the cap.
        s.get(&1).value.fetch_add(1, Ordering::Relaxed);
        assert_eq!(s.overflowed(), 7);
    }

    #[test]
    fn idle_label_sets_go_unless_held() {
        let s = store(100, Duration::from_millis(50));
        let held = s.get(&1);
        let _ = s.get(&2);
        std::thread::sleep(Duration::from_millis(80));
        s.sweep();
        assert_eq!(s.len(), 1, "the held one stays");
        drop(held);
        s.sweep();
        assert_eq!(s.len(), 0);
        // Idle ones make room at the cap instead of overflowing.
        let s = store(2, Duration::from_millis(50));
        let _ = (s.get(&1), s.get(&2));
        std::thread::sleep(Duration::from_millis(80));
        let _ = s.get(&3);
        assert_eq!((s.len(), s.overflowed()), (1, 0));
    }
}
