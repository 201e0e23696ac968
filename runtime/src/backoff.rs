//! The exponential backoff of every client that reconnects: identity renewal, discovery and
//! policy watches, the gateway's and the mirror's export watches.
//!
//! Each wait doubles the next, from `min` up to `max`; a success resets it. An optional jitter
//! spreads the waits of many proxies that lost the same control plane at the same moment, so
//! they do not come back in one burst.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// The fraction of each wait that is randomised (0 = none).
    jitter: f64,
    rng: u64,
}

impl Backoff {
    /// Waits of `min`, `2 × min`, ... up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Backoff {
            min,
            max,
            next: min,
            jitter: 0.0,
            rng: seed(),
        }
    }

    /// Shortens each wait by a random fraction of up to `jitter` (clamped to 0..=1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The wait before the next attempt; the one after is twice as long, up to the maximum.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter == 0.0 {
            return wait;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        wait.mul_f64(1.0 - self.jitter * unit)
    }

    /// What [`next_wait`](Self::next_wait) would answer (without jitter), for log lines.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Sleeps for the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }

    /// After a success: the next failure waits the minimum again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let waits: Vec<_> = (0..5).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(200));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).with_jitter(0.25);
        for _ in 0..1000 {
            let w = b.next_wait();
            assert!(
                w <= Duration::from_secs(1) && w >= Duration::from_millis(750),
                "{w:?}"
            );
        }
    }
}
