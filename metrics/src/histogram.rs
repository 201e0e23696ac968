//! A latency histogram with Linkerd's fixed bucket bounds, in atomics: observing is a short scan
//! of 25 bounds and three atomic adds, no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

/// Linkerd's `response_latency_ms` bucket bounds, in milliseconds.
pub const LATENCY_BOUNDS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1_000, 2_000, 3_000, 4_000, 5_000,
    10_000, 20_000, 30_000, 40_000, 50_000,
];

const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Counts of observations per bucket (the last is `+Inf`), their sum and count.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| us <= b * 1_000)
            .unwrap_or(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Encodes as a Prometheus histogram in milliseconds.
    pub fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); BUCKETS];
        for (i, b) in buckets.iter_mut().enumerate() {
            let bound = LATENCY_BOUNDS_MS
                .get(i)
                .map_or(f64::INFINITY, |&ms| ms as f64);
            *b = (bound, self.buckets[i].load(Ordering::Relaxed));
        }
        // The count is the buckets' total, so the two always agree within one scrape.
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1_000.0;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

impl prometheus_client::metrics::TypedMetric for LatencyHistogram {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for LatencyHistogram {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        LatencyHistogram::encode(self, encoder)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_linkerds_buckets() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(500)); // le 1
        h.observe(Duration::from_millis(1)); // le 1 (bounds are inclusive)
        h.observe(Duration::from_micros(1_001)); // le 2
        h.observe(Duration::from_millis(75)); // le 100
        h.observe(Duration::from_secs(60)); // +Inf
        let counts: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[10], 1);
        assert_eq!(counts[25], 1);
        assert_eq!(h.count(), 5);
    }
}
