//! From scrapes to rows: a [`Snapshot`] keeps the counters of one scrape of one proxy that
//! matter to `top` (`response_total` and `response_latency_ms_bucket`; with `--routes`, the
//! outbound route families `outbound_{http,grpc}_route_request_statuses_total` and
//! `..._request_duration_seconds_bucket`), each tagged with the row it belongs to; an
//! [`Aggregate`] adds up the deltas between two snapshots of each proxy, and
//! [`Aggregate::rows`] turns the sums into rates, shares and quantiles.

use std::collections::HashMap;
use std::time::Instant;

use super::Direction;
use super::parse::{LineError, Sample, parse};

/// The most series kept from one scrape; the rest are ignored (and counted).
pub const MAX_SERIES: usize = 200_000;
/// The most rows kept; series of further rows are ignored (and counted).
pub const MAX_ROWS: usize = 10_000;

const RESPONSES: &str = "response_total";
const LATENCY_BUCKETS: &str = "response_latency_ms_bucket";
const ROUTE_STATUSES: [&str; 2] = [
    "outbound_http_route_request_statuses_total",
    "outbound_grpc_route_request_statuses_total",
];
const ROUTE_BUCKETS: [&str; 2] = [
    "outbound_http_route_request_duration_seconds_bucket",
    "outbound_grpc_route_request_duration_seconds_bucket",
];

/// What a row is: one direction and authority, and with `--by-caller` one caller identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub direction: String,
    pub authority: String,
    /// The inbound `client_id` (`-` when absent); `None` unless grouping by caller.
    pub caller: Option<String>,
}

/// How series are grouped into rows, and which are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    pub direction: Direction,
    pub by_caller: bool,
}

impl Grouping {
    fn row_key(&self, s: &Sample) -> Option<RowKey> {
        let direction = s.label("direction").unwrap_or("");
        let keep = match self.direction {
            Direction::All => true,
            Direction::Inbound => direction == "inbound",
            Direction::Outbound => direction == "outbound",
        };
        let or_dash = |v: Option<&str>| match v {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => "-".to_string(),
        };
        // Inbound series carry no `authority` (as linkerd2-proxy's do not): their row is the
        // port served, `target_addr`. An `authority` still wins where a proxy sets one.
        let authority = s.label("authority").filter(|a| !a.is_empty()).or_else(|| {
            (direction == "inbound")
                .then(|| s.label("target_addr"))
                .flatten()
        });
        keep.then(|| RowKey {
            direction: or_dash(Some(direction)),
            authority: or_dash(authority),
            caller: self.by_caller.then(|| or_dash(s.label("client_id"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A response count; `tls` is unknown for route rows.
    Response { success: bool, tls: Option<bool> },
    /// A latency bucket, its bound in milliseconds.
    Bucket { le: f64 },
}

/// A route row's key: `parent_name:parent_port/kind/route_name` (`-` for an unnamed part).
fn route_row(s: &Sample) -> RowKey {
    let v = |k: &str| s.label(k).filter(|v| !v.is_empty()).unwrap_or("-");
    RowKey {
        direction: "route".to_string(),
        authority: format!(
            "{}:{}/{}/{}",
            v("parent_name"),
            v("parent_port"),
            v("route_kind"),
            v("route_name")
        ),
        caller: None,
    }
}

#[derive(Debug, Clone)]
struct Point {
    row: RowKey,
    kind: Kind,
    value: f64,
}

/// A series' identity within one proxy: its name and its labels, sorted.
type SeriesId = (String, Vec<(String, String)>);

/// The counters of one scrape of one proxy that `top` uses.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    series: HashMap<SeriesId, Point>,
    /// Series ignored because [`MAX_SERIES`] was reached.
    pub dropped: usize,
    /// Lines that were not samples, and the first of them.
    pub bad_lines: usize,
    pub first_error: Option<LineError>,
}

impl Snapshot {
    /// Parses a scrape taken at `at`, keeping the series `grouping` wants.
    pub fn from_text(text: &str, at: Instant, grouping: Grouping) -> Self {
        let mut snap = Snapshot {
            at,
            series: HashMap::new(),
            dropped: 0,
            bad_lines: 0,
            first_error: None,
        };
        for result in parse(text) {
            match result {
                Ok(sample) => snap.insert(sample, grouping),
                Err(e) => {
                    snap.bad_lines += 1;
                    snap.first_error.get_or_insert(e);
                }
            }
        }
        snap
    }

    /// Parses a scrape taken at `at` for the route view (`remora top --routes`): one row per
    /// outbound policy route, from the route families.
    pub fn from_routes_text(text: &str, at: Instant) -> Self {
        let mut snap = Snapshot {
            at,
            series: HashMap::new(),
            dropped: 0,
            bad_lines: 0,
            first_error: None,
        };
        for result in parse(text) {
            match result {
                Ok(sample) => snap.insert_route(sample),
                Err(e) => {
                    snap.bad_lines += 1;
                    snap.first_error.get_or_insert(e);
                }
            }
        }
        snap
    }

    fn insert_route(&mut self, sample: Sample) {
        if !sample.value.is_finite() || sample.value < 0.0 {
            return;
        }
        let kind = if ROUTE_STATUSES.contains(&sample.name.as_str()) {
            let error = sample.label("error").is_some_and(|e| !e.is_empty());
            let ok = match sample.label("grpc_status") {
                Some(code) => code == "OK",
                None => sample
                    .label("http_status")
                    .and_then(|s| s.parse::<u16>().ok())
                    .is_some_and(|s| s < 500),
            };
            Kind::Response {
                success: ok && !error,
                tls: None,
            }
        } else if ROUTE_BUCKETS.contains(&sample.name.as_str()) {
            match sample.label("le").and_then(|le| le.parse::<f64>().ok()) {
                Some(le) if !le.is_nan() => Kind::Bucket { le: le * 1000.0 },
                _ => return,
            }
        } else {
            return;
        };
        let row = route_row(&sample);
        self.keep(sample, row, kind);
    }

    fn keep(&mut self, sample: Sample, row: RowKey, kind: Kind) {
        if self.series.len() >= MAX_SERIES {
            self.dropped += 1;
            return;
        }
        let mut labels = sample.labels;
        labels.sort();
        let value = sample.value;
        self.series
            .insert((sample.name, labels), Point { row, kind, value });
    }

    fn insert(&mut self, sample: Sample, grouping: Grouping) {
        // Counters are finite and never negative; anything else cannot be subtracted.
        if !sample.value.is_finite() || sample.value < 0.0 {
            return;
        }
        let kind = match sample.name.as_str() {
            RESPONSES => Kind::Response {
                success: sample.label("classification") == Some("success"),
                tls: Some(sample.label("tls") == Some("true")),
            },
            LATENCY_BUCKETS => match sample.label("le").and_then(|le| le.parse::<f64>().ok()) {
                Some(le) if !le.is_nan() => Kind::Bucket { le },
                _ => return,
            },
            _ => return,
        };
        let Some(row) = grouping.row_key(&sample) else {
            return;
        };
        self.keep(sample, row, kind);
    }
}

/// Sums of the deltas of one row over every proxy.
#[derive(Debug, Default, Clone)]
struct Acc {
    /// Responses per second, summed over proxies (each over its own interval).
    rate: f64,
    responses: f64,
    success: f64,
    tls: f64,
    /// Δcount per bucket upper bound (as `f64::to_bits`).
    buckets: HashMap<u64, f64>,
    /// Whether the row has any responses at all in the latest scrape.
    ever: bool,
    /// Whether its responses say if they were over mTLS (route rows do not).
    tls_known: bool,
}

/// The sums of one refresh, over every proxy that answered twice.
#[derive(Debug, Default)]
pub struct Aggregate {
    rows: HashMap<RowKey, Acc>,
    /// Series ignored because [`MAX_ROWS`] rows were already kept.
    pub dropped: usize,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: RowKey,
    /// Responses per second.
    pub rps: f64,
    /// Responses counted between the two scrapes.
    pub responses: f64,
    /// Share of responses classified `success`, 0..=1; `None` without traffic.
    pub success: Option<f64>,
    /// Share of responses over mTLS (`tls="true"`), 0..=1; `None` without traffic.
    pub mtls: Option<f64>,
    /// Latency quantiles in milliseconds; `None` when unknown.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Aggregate {
    /// Adds the deltas from `prev` to `cur`, two scrapes of the same proxy. A counter lower
    /// than before means the proxy restarted: its new value is the delta. So is the value of a
    /// series `prev` did not have.
    pub fn add(&mut self, prev: &Snapshot, cur: &Snapshot) {
        let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        for (id, point) in &cur.series {
            let delta = match prev.series.get(id) {
                Some(before) if point.value >= before.value => point.value - before.value,
                _ => point.value,
            };
            if self.rows.len() >= MAX_ROWS && !self.rows.contains_key(&point.row) {
                self.dropped += 1;
                continue;
            }
            let acc = self.rows.entry(point.row.clone()).or_default();
            match point.kind {
                Kind::Response { success, tls } => {
                    acc.ever |= point.value > 0.0;
                    acc.tls_known |= tls.is_some();
                    acc.rate += delta / secs;
                    acc.responses += delta;
                    acc.success += if success { delta } else { 0.0 };
                    acc.tls += if tls == Some(true) { delta } else { 0.0 };
                }
                Kind::Bucket { le } => *acc.buckets.entry(le.to_bits()).or_default() += delta,
            }
        }
    }

    /// The rows with any traffic in the latest scrapes (a row whose counters did not move shows
    /// rate 0), sorted by rate, highest first, then by key.
    pub fn rows(self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .rows
            .into_iter()
            .filter(|(_, acc)| acc.ever)
            .map(|(key, acc)| {
                let share = |part: f64| (acc.responses > 0.0).then(|| part / acc.responses);
                let mut buckets: Vec<(f64, f64)> = acc
                    .buckets
                    .iter()
                    .map(|(le, n)| (f64::from_bits(*le), *n))
                    .collect();
                let mut quantile =
                    |q| Some(histogram_quantile(q, &mut buckets)).filter(|v| !v.is_nan());
                Row {
                    p50: quantile(0.5),
                    p95: quantile(0.95),
                    p99: quantile(0.99),
                    rps: acc.rate,
                    responses: acc.responses,
                    success: share(acc.success),
                    mtls: share(acc.tls).filter(|_| acc.tls_known),
                    key,
                }
            })
            .collect();
        rows.sort_by(|a, b| b.rps.total_cmp(&a.rps).then_with(|| a.key.cmp(&b.key)));
        rows
    }
}

/// The `q`-quantile of cumulative `buckets` (upper bound, count), exactly as Prometheus's
/// `histogram_quantile`: linear interpolation within the bucket holding the rank (from 0 in the
/// lowest bucket); the upper bound of the second highest bucket when the rank falls in the
/// `+Inf` bucket; NaN without a `+Inf` bucket, with fewer than two buckets or no observations.
/// Buckets of equal bounds are summed and counts are made monotonic first.
pub fn histogram_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    buckets.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    let mut max = 0.0f64;
    for b in buckets.iter_mut() {
        max = max.max(b.1);
        b.1 = max;
    }
    let n = buckets.len();
    if n < 2 {
        return f64::NAN;
    }
    let observations = buckets[n - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..n - 1]
        .iter()
        .position(|bucket| bucket.1 >= rank)
        .unwrap_or(n - 1);
    if b == n - 1 {
        return buckets[n - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests;
