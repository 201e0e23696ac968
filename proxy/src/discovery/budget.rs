//! Retry budgets with Linkerd's semantics: over a sliding `ttl` window, retries may not exceed
//! `ratio` × original requests, plus `min_per_second` × `ttl` retries allowed regardless (so a
//! quiet service can still retry). Defaults: 20 %, 10 per second, 10 s.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window is kept in this many buckets.
const BUCKETS: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetConfig {
    pub ratio: f32,
    pub min_per_second: u32,
    pub ttl: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    requests: u64,
    retries: u64,
}

#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    buckets: Mutex<VecDeque<Bucket>>,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig) -> Self {
        RetryBudget {
            config,
            buckets: Mutex::new(VecDeque::new()),
        }
    }

    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    fn with_current<T>(&self, f: impl FnOnce(&mut VecDeque<Bucket>) -> T) -> Option<T> {
        let now = Instant::now();
        let width = (self.config.ttl / BUCKETS).max(Duration::from_millis(1));
        let mut buckets = self.buckets.lock().ok()?;
        while buckets
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.start) >= self.config.ttl)
        {
            buckets.pop_front();
        }
        if buckets
            .back()
            .is_none_or(|b| now.saturating_duration_since(b.start) >= width)
        {
            buckets.push_back(Bucket {
                start: now,
                requests: 0,
                retries: 0,
            });
        }
        Some(f(&mut buckets))
    }

    /// Counts an original request.
    pub fn deposit(&self) {
        self.with_current(|b| {
            if let Some(last) = b.back_mut() {
                last.requests += 1;
            }
        });
    }

    /// Takes one retry from the budget if it allows one now.
    pub fn try_withdraw(&self) -> bool {
        let (ratio, reserve) = (
            f64::from(self.config.ratio),
            f64::from(self.config.min_per_second) * self.config.ttl.as_secs_f64(),
        );
        self.with_current(|b| {
            let requests: u64 = b.iter().map(|x| x.requests).sum();
            let retries: u64 = b.iter().map(|x| x.retries).sum();
            let allowed = reserve + ratio * requests as f64;
            if (retries as f64) + 1.0 <= allowed {
                if let Some(last) = b.back_mut() {
                    last.retries += 1;
                }
                true
            } else {
                false
            }
        })
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(ratio: f32, min: u32, ttl_s: u64) -> RetryBudget {
        RetryBudget::new(BudgetConfig {
            ratio,
            min_per_second: min,
            ttl: Duration::from_secs(ttl_s),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_and_reserve() {
        let b = budget(0.2, 1, 10);
        // The reserve: 1/s × 10 s.
        assert_eq!((0..20).filter(|_| b.try_withdraw()).count(), 10);
        // 100 requests earn 20 more.
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!((0..50).filter(|_| b.try_withdraw()).count(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let b = budget(0.0, 1, 10);
        assert_eq!((0..20).filter(|_| b.try_withdraw()).count(), 10);
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(b.try_withdraw(), "old retries left the window");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_budget_retries_nothing() {
        let b = budget(0.0, 0, 10);
        for _ in 0..100 {
            b.deposit();
        }
        assert!(!b.try_withdraw());
    }

    proptest! {
        #[test]
        fn never_more_than_allowed(ratio in 0.0f32..2.0, min in 0u32..20, ops in prop::collection::vec(any::<bool>(), 0..400)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let b = budget(ratio, min, 10);
                let (mut requests, mut retries) = (0u64, 0u64);
                for deposit in ops {
                    if deposit {
                        b.deposit();
                        requests += 1;
                    } else if b.try_withdraw() {
                        retries += 1;
                    }
                    let allowed = f64::from(min) * 10.0 + f64::from(ratio) * requests as f64;
                    prop_assert!(retries as f64 <= allowed + 1e-9, "{retries} > {allowed}");
                }
                Ok(())
            })?;
        }
    }
}
