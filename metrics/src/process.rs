//! The standard Prometheus process metrics, read from `/proc/self` at each scrape.
//!
//! A [`Collector`] rather than families updated in the background: nothing runs between
//! scrapes, and each scrape sees the current values. `/proc/self/stat` gives CPU time, memory and
//! the start time (in clock ticks since boot, turned into Unix seconds with `btime` from
//! `/proc/stat`), `/proc/self/fd` the open descriptors, `/proc/self/limits` their limit. A value
//! that cannot be read (another OS, a restricted `/proc`) is left out of that scrape; the scrape
//! itself never fails because of it.

use std::fmt;

use nix::unistd::{SysconfVar, sysconf};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::debug;

/// Registers the process collector: `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds` and `process_start_time_seconds`.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector::new()));
}

/// Reads `/proc/self` at each scrape.
#[derive(Debug)]
struct ProcessCollector {
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of CPU and start times.
    clk_tck: Option<f64>,
    /// Bytes per page, the unit of the resident set size.
    page_size: Option<u64>,
}

impl ProcessCollector {
    fn new() -> Self {
        let var = |v| sysconf(v).ok().flatten().filter(|&n| n > 0);
        ProcessCollector {
            clk_tck: var(SysconfVar::CLK_TCK).map(|n| n as f64),
            page_size: var(SysconfVar::PAGE_SIZE).and_then(|n| u64::try_from(n).ok()),
        }
    }
}

/// The fields of `/proc/self/stat` reported here (see proc(5)).
#[derive(Debug, PartialEq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
    /// Virtual memory size, in bytes.
    vsize: u64,
    /// Resident set size, in pages.
    rss_pages: u64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stat = read("/proc/self/stat").and_then(|t| parse_stat(&t));
        let clk_tck = self.clk_tck;
        let cpu = stat
            .as_ref()
            .zip(clk_tck)
            .map(|(s, hz)| s.cpu_ticks as f64 / hz);
        counter(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            cpu,
        )?;
        let rss = stat
            .as_ref()
            .zip(self.page_size)
            .map(|(s, page)| s.rss_pages.saturating_mul(page));
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            rss,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            stat.as_ref().map(|s| s.vsize),
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            open_fds(),
        )?;
        let max_fds = read("/proc/self/limits").and_then(|t| parse_max_fds(&t));
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            max_fds,
        )?;
        let start = match (stat, clk_tck) {
            (Some(s), Some(hz)) => read("/proc/stat")
                .and_then(|t| parse_btime(&t))
                .map(|boot| boot as f64 + s.start_ticks as f64 / hz),
            _ => None,
        };
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            start,
        )
    }
}

fn counter<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<N>,
) -> Result<(), fmt::Error>
where
    N: EncodeCounterValue + Send + Sync + fmt::Debug,
{
    let Some(value) = value else { return Ok(()) };
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<N>,
) -> Result<(), fmt::Error>
where
    N: EncodeGaugeValue + Send + Sync + fmt::Debug,
{
    let Some(value) = value else { return Ok(()) };
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .map_err(|e| debug!(path, error = %e, "process metrics: cannot read"))
        .ok()
}

/// Counts the entries of `/proc/self/fd` (including the one reading it, as other clients do).
fn open_fds() -> Option<u64> {
    match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => Some(dir.count() as u64),
        Err(e) => {
            debug!(error = %e, "process metrics: cannot read /proc/self/fd");
            None
        }
    }
}

/// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time (Unix seconds) from the `btime` line of `/proc/stat`.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`None` when unlimited).
fn parse_max_fds(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    fn value(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let text = "42 (a) b (c) R 1 1 1 0 -1 4194304 98 0 0 0 7 5 0 0 20 0 1 0 1138726 \
                    3133440 353 18446744073709551615 0 0 0\n";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            Stat {
                cpu_ticks: 12,
                start_ticks: 1138726,
                vsize: 3133440,
                rss_pages: 353,
            }
        );
        assert_eq!(parse_stat("42 (truncated) R 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn parses_btime_and_limits() {
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1700000000)
        );
        assert_eq!(parse_btime("cpu 1 2 3\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
    }

    #[test]
    fn scrapes_plausible_values_of_this_process() {
        let mut registry = Registry::default();
        register(&mut registry);
        // Hold a few descriptors open beyond stdio.
        let _files: Vec<_> = (0..3)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let text = crate::encode(&registry).unwrap();
        for (family, kind) in [
            ("process_cpu_seconds", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family} {kind} missing in\n{text}"
            );
        }
        assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
        let rss = value(&text, "process_resident_memory_bytes");
        assert!(rss > 0.0);
        assert!(value(&text, "process_virtual_memory_bytes") >= rss);
        let open = value(&text, "process_open_fds");
        assert!(open >= 3.0, "{open}");
        assert!(value(&text, "process_max_fds") >= open);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value(&text, "process_start_time_seconds");
        // Ticks are 10 ms: allow a little rounding past now.
        assert!(
            start > now - 86_400.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
    }
}
