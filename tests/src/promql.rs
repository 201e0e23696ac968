//! The few PromQL answers Linkerd's viz computes for a workload, evaluated over two scrapes of
//! one proxy as Prometheus would over a window holding exactly those two samples:
//!
//! - success rate: `sum(rate(response_total{direction="inbound",classification="success"}[1m]))
//!   / sum(rate(response_total{direction="inbound"}[1m]))`;
//! - latency quantile: `histogram_quantile(q, sum(rate(response_latency_ms_bucket{direction="inbound"}[1m])) by (le))`.
//!
//! A rate is the series' delta over the interval (a counter lower than before restarted: its new
//! value is the delta; a series absent before counts from zero); both scrapes share the
//! interval, so ratios of rates are ratios of deltas. `histogram_quantile` follows Prometheus:
//! buckets sorted by `le`, the rank `q × count(+Inf)`, linear interpolation within the bucket
//! that holds it (from 0 for the lowest bucket when its bound is positive), the highest finite
//! bound when the rank falls in `+Inf`, NaN with fewer than two buckets or no observations.

use std::collections::BTreeMap;

use crate::admin::Metrics;

/// Whether a series' labels include every `(name, value)` of `filter` (an empty value matches
/// an absent label, as in PromQL).
fn matches(labels: &[(String, String)], filter: &[(&str, &str)]) -> bool {
    filter.iter().all(|(k, v)| {
        let got = labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map_or("", |(_, lv)| lv.as_str());
        got == *v
    })
}

/// The series of `name` matching `filter`, keyed by their labels (sorted).
fn series(
    m: &Metrics,
    name: &str,
    filter: &[(&str, &str)],
) -> BTreeMap<Vec<(String, String)>, f64> {
    m.series(name)
        .filter(|(l, _)| matches(l, filter))
        .map(|(mut l, v)| {
            l.sort();
            (l, v)
        })
        .collect()
}

/// Each matching series' increase from `before` to `after`.
fn increases(
    before: &Metrics,
    after: &Metrics,
    name: &str,
    filter: &[(&str, &str)],
) -> Vec<(Vec<(String, String)>, f64)> {
    let old = series(before, name, filter);
    series(after, name, filter)
        .into_iter()
        .map(|(l, now)| {
            let was = old.get(&l).copied().unwrap_or(0.0);
            let inc = if now < was { now } else { now - was };
            (l, inc)
        })
        .collect()
}

/// `sum(increase(name{filter}))` between the scrapes.
pub fn sum_increase(before: &Metrics, after: &Metrics, name: &str, filter: &[(&str, &str)]) -> f64 {
    increases(before, after, name, filter)
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// Linkerd viz's inbound success rate of a pod; `None` without traffic.
pub fn inbound_success_rate(
    before: &Metrics,
    after: &Metrics,
    extra: &[(&str, &str)],
) -> Option<f64> {
    let with = |more: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        let mut f: Vec<(&str, &str)> = vec![("direction", "inbound")];
        f.extend_from_slice(extra);
        f.extend_from_slice(more);
        f
    };
    let all = sum_increase(before, after, "response_total", &with(&[]));
    let ok = sum_increase(
        before,
        after,
        "response_total",
        &with(&[("classification", "success")]),
    );
    (all > 0.0).then(|| ok / all)
}

/// `histogram_quantile(q, sum(rate(response_latency_ms_bucket{direction="inbound",extra})) by (le))`.
pub fn inbound_latency_quantile(
    q: f64,
    before: &Metrics,
    after: &Metrics,
    extra: &[(&str, &str)],
) -> f64 {
    let mut filter: Vec<(&str, &str)> = vec![("direction", "inbound")];
    filter.extend_from_slice(extra);
    let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, inc) in increases(before, after, "response_latency_ms_bucket", &filter) {
        if let Some((_, le)) = labels.iter().find(|(k, _)| k == "le") {
            *by_le.entry(le.clone()).or_default() += inc;
        }
    }
    let mut buckets: Vec<(f64, f64)> = by_le
        .into_iter()
        .filter_map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, n))
        })
        .collect();
    histogram_quantile(q, &mut buckets)
}

/// Prometheus's `histogram_quantile` over cumulative `(upper bound, count)` buckets.
pub fn histogram_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if !(0.0..=1.0).contains(&q) {
        return if q < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Cumulative counts must not fall (Prometheus repairs small inconsistencies this way).
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let i = buckets
        .iter()
        .position(|b| b.1 >= rank)
        .unwrap_or(buckets.len() - 1);
    if i == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if i == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (start, below) = if i == 0 {
        (0.0, 0.0)
    } else {
        (buckets[i - 1].0, buckets[i - 1].1)
    };
    let (end, count) = buckets[i];
    start + (end - start) * (rank - below) / (count - below)
}

/// The bucket bounds `(lower, upper]` holding `value` among `bounds` (sorted upper bounds).
pub fn bucket_of(value: f64, bounds: &[f64]) -> (f64, f64) {
    let mut lower = 0.0;
    for &b in bounds {
        if value <= b {
            return (lower, b);
        }
        lower = b;
    }
    (lower, f64::INFINITY)
}

/// The names of the labels with a value (an empty label is no label, in PromQL) of every
/// series of `name` matching `filter`, but `le`.
pub fn label_names(
    m: &Metrics,
    name: &str,
    filter: &[(&str, &str)],
) -> std::collections::BTreeSet<String> {
    m.series(name)
        .filter(|(l, _)| matches(l, filter))
        .flat_map(|(l, _)| l.into_iter())
        .filter(|(k, v)| !v.is_empty() && k != "le")
        .map(|(k, _)| k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_as_prometheus_does() {
        let q = |q, b: &[(f64, f64)]| histogram_quantile(q, &mut b.to_vec());
        let inf = f64::INFINITY;
        // 100 observations: 50 in (0,10], 40 in (10,20], 10 in (20,+Inf).
        let b = [(10.0, 50.0), (20.0, 90.0), (inf, 100.0)];
        assert_eq!(q(0.5, &b), 10.0);
        assert_eq!(q(0.25, &b), 5.0);
        assert_eq!(q(0.7, &b), 15.0);
        // The rank in +Inf: the highest finite bound.
        assert_eq!(q(0.95, &b), 20.0);
        assert!(q(0.5, &[(inf, 3.0)]).is_nan());
        assert!(q(0.5, &[(10.0, 0.0), (inf, 0.0)]).is_nan());
        assert_eq!(bucket_of(15.0, &[10.0, 20.0]), (10.0, 20.0));
    }

    #[test]
    fn rates_come_from_deltas_between_two_scrapes() {
        let before = Metrics {
            text: "response_total{direction=\"inbound\",classification=\"success\"} 10\n\
                   response_total{direction=\"inbound\",classification=\"failure\"} 5\n\
                   response_latency_ms_bucket{direction=\"inbound\",le=\"10\"} 15\n\
                   response_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} 15\n"
                .into(),
        };
        let after = Metrics {
            text: "response_total{direction=\"inbound\",classification=\"success\"} 40\n\
                   response_total{direction=\"inbound\",classification=\"failure\"} 15\n\
                   response_total{direction=\"outbound\",classification=\"failure\"} 99\n\
                   response_latency_ms_bucket{direction=\"inbound\",le=\"10\"} 35\n\
                   response_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} 55\n"
                .into(),
        };
        assert_eq!(inbound_success_rate(&before, &after, &[]), Some(0.75));
        // 20 of 40 new observations under 10: the median is 10, p95 the highest finite bound.
        assert_eq!(inbound_latency_quantile(0.5, &before, &after, &[]), 10.0);
        assert_eq!(inbound_latency_quantile(0.95, &before, &after, &[]), 10.0);
        assert_eq!(inbound_success_rate(&after, &after, &[]), None);
    }
}
