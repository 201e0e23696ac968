//! Logging with `tracing`: a filter in `RUST_LOG` syntax, plain or JSON lines on stderr.
//!
//! The filter sits behind a reload layer, so it can be replaced while the process runs: [`init`]
//! returns a [`LogLevel`] handle, which the admin API's `PUT /log-level` uses.

use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// How a role logs: its filter and its line format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// `plain` or `json` (any case).
pub fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "plain" => Ok(LogFormat::Plain),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected plain or json".to_string()),
    }
}

/// A filter in `RUST_LOG` syntax, checked but kept as written.
pub fn parse_filter(s: &str) -> Result<String, String> {
    parse(s).map(|_| s.trim().to_string())
}

/// The longest filter [`LogLevel::set`] accepts, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;

/// A handle on the process's log filter. Clones share the one filter.
#[derive(Clone, Debug)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter as last set (the operator's text, not `EnvFilter`'s rendering of it). Held
    /// while the filter is swapped, so concurrent changes apply in one order.
    current: Arc<Mutex<String>>,
}

impl LogLevel {
    /// The filter layer to install and its handle; `text` is how `filter` was written.
    fn new(filter: EnvFilter, text: &str) -> (reload::Layer<EnvFilter, Registry>, LogLevel) {
        let (layer, handle) = reload::Layer::new(filter);
        let current = Arc::new(Mutex::new(text.trim().to_string()));
        (layer, LogLevel { handle, current })
    }

    /// The current filter, in `RUST_LOG` syntax.
    pub fn get(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the filter with `filter` (`RUST_LOG` syntax, e.g. `warn,remora_proxy=debug`) and
    /// returns the previous one. An invalid filter is refused with the reason and the current
    /// one stays.
    pub fn set(&self, filter: &str) -> Result<String, String> {
        let filter = filter.trim();
        let parsed = parse(filter)?;
        let hint = parsed.max_level_hint();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        self.handle
            .reload(parsed)
            .map_err(|e| format!("cannot replace the log filter: {e}"))?;
        // `log` records (rustls) below the filter's most verbose level are then not even built.
        log::set_max_level(log_level(hint));
        Ok(std::mem::replace(&mut *current, filter.to_string()))
    }
}

/// At most one log line per period: [`Throttle::ready`] says yes to the first call and then
/// once the period has passed since the last yes. Lock-free, for lines a flood of refusals
/// would otherwise repeat.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    epoch: std::time::Instant,
    /// When `ready` last said yes, in milliseconds since `epoch` plus one (0: never).
    last_ms: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Throttle {
            every,
            epoch: std::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether to log now.
    pub fn ready(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Relaxed);
        (last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64)
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

/// The `log` crate's cap for a `tracing` level hint (no hint: everything may pass).
fn log_level(hint: Option<tracing_subscriber::filter::LevelFilter>) -> log::LevelFilter {
    use tracing_subscriber::filter::LevelFilter as L;
    match hint {
        Some(L::OFF) => log::LevelFilter::Off,
        Some(L::ERROR) => log::LevelFilter::Error,
        Some(L::WARN) => log::LevelFilter::Warn,
        Some(L::INFO) => log::LevelFilter::Info,
        Some(L::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

fn parse(filter: &str) -> Result<EnvFilter, String> {
    if filter.trim().is_empty() {
        return Err("empty log filter".to_string());
    }
    if filter.len() > MAX_FILTER_LEN {
        return Err(format!("log filter longer than {MAX_FILTER_LEN} bytes"));
    }
    // Keeps the filter printable as is in a log line.
    if filter.chars().any(char::is_control) {
        return Err("control characters in the log filter".to_string());
    }
    EnvFilter::try_new(filter).map_err(|e| format!("not a valid log filter: {e}"))
}

/// Installs the global subscriber and returns the handle on its filter. Call once, before the
/// runtime starts.
pub fn init(config: &LogConfig) -> Result<LogLevel, String> {
    parse(&config.filter)?;
    // Records of the `log` crate (rustls) reach tracing through `LogTracer`, whose level cap
    // `try_init` sets once, from the filter installed at that moment; `LogLevel::set` moves the
    // cap with each new filter, so rustls's debug lines appear when asked for and cost nothing
    // otherwise.
    let (filter, level) = LogLevel::new(EnvFilter::new("trace"), "trace");
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    let res = match config.format {
        LogFormat::Plain => registry.with(stderr).try_init(),
        LogFormat::Json => registry.with(stderr.json().flatten_event(true)).try_init(),
    };
    res.map_err(|e| e.to_string())?;
    level.set(&config.filter)?;
    Ok(level)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_throttle_says_yes_once_per_period() {
        let t = Throttle::new(std::time::Duration::from_secs(3600));
        assert!(t.ready(), "the first line");
        assert!(!t.ready(), "within the period");
        let every = Throttle::new(std::time::Duration::ZERO);
        assert!(
            every.ready() && every.ready(),
            "a zero period never holds a line back"
        );
    }

    #[test]
    fn set_replaces_a_valid_filter_and_keeps_the_old_one_otherwise() {
        let (layer, level) = LogLevel::new(EnvFilter::new("info"), "info");
        // The handle only works while the layer is part of a live subscriber.
        let _subscriber = tracing_subscriber::registry().with(layer);
        assert_eq!(level.get(), "info");
        assert_eq!(level.set(" debug\n").unwrap(), "info");
        assert_eq!(level.get(), "debug");
        assert_eq!(
            level.clone().set("warn,remora_proxy=debug").unwrap(),
            "debug"
        );
        assert_eq!(level.get(), "warn,remora_proxy=debug");
        for bad in [
            "not[a filter",
            "info,[=",
            "info,a[{x=\n}]=debug",
            "",
            "  ",
            &"a".repeat(MAX_FILTER_LEN + 1),
        ] {
            assert!(level.set(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(level.get(), "warn,remora_proxy=debug");
    }
}
