//! proxy-init's log output, on stdout, one entry a line.
//!
//! proxy-init logs through logrus, and people (and `kubectl logs` scrapers) read that output,
//! so we write the same two shapes:
//!
//! - plain (the default, and any `--log-format` other than `json`): logfmt,
//!   `time="2026-01-02T03:04:05Z" level=info msg="iptables-nft -t nat -N PROXY_INIT_REDIRECT"`;
//!   a value is quoted (Go `%q`) unless it is made only of letters, digits and `-._/@^+`, and an
//!   empty message leaves out `msg`;
//! - `json`: `{"level":"info","msg":"…","time":"…"}`, keys in that (sorted) order.
//!
//! Times are RFC 3339 in UTC, to the second. Levels are logrus's: `panic`, `fatal`, `error`,
//! `warning` (also read as `warn`), `info`, `debug`, `trace`, case-insensitive; an entry is
//! written when its level is at or above the configured severity.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::gostr;

/// Severity, most severe first (so `<=` means "at least as severe").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Panic,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// logrus's `ParseLevel`, error text included.
    pub fn parse(s: &str) -> Result<Level, String> {
        Ok(match s.to_lowercase().as_str() {
            "panic" => Level::Panic,
            "fatal" => Level::Fatal,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => {
                return Err(format!(
                    "not a valid logrus Level: {}",
                    gostr::quote(s.as_bytes())
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Panic => "panic",
            Level::Fatal => "fatal",
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

impl Format {
    /// `json` is JSON; everything else is plain, as in proxy-init.
    pub fn parse(s: &str) -> Format {
        if s == "json" {
            Format::Json
        } else {
            Format::Plain
        }
    }
}

/// Writes log entries to `out`. Write errors are ignored: logging must not fail the run.
#[derive(Debug)]
pub struct Logger<W> {
    pub format: Format,
    pub level: Level,
    pub out: W,
    /// The timestamp of an entry; tests pin it.
    pub now: fn() -> String,
}

impl<W: Write> Logger<W> {
    /// proxy-init's starting state: plain, info.
    pub fn new(out: W) -> Self {
        Logger {
            format: Format::Plain,
            level: Level::Info,
            out,
            now: rfc3339_now,
        }
    }

    pub fn log(&mut self, level: Level, msg: &[u8]) {
        if level > self.level {
            return;
        }
        let time = (self.now)();
        let line = match self.format {
            Format::Json => format!(
                "{{\"level\":\"{}\",\"msg\":{},\"time\":{}}}\n",
                level.name(),
                gostr::json_string(msg),
                gostr::json_string(time.as_bytes())
            ),
            Format::Plain => {
                let mut line = format!(
                    "time={} level={}",
                    logfmt_value(time.as_bytes()),
                    level.name()
                );
                if !msg.is_empty() {
                    line.push_str(" msg=");
                    line.push_str(&logfmt_value(msg));
                }
                line.push('\n');
                line
            }
        };
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.flush();
    }

    pub fn error(&mut self, msg: impl AsRef<[u8]>) {
        self.log(Level::Error, msg.as_ref());
    }

    pub fn info(&mut self, msg: impl AsRef<[u8]>) {
        self.log(Level::Info, msg.as_ref());
    }

    pub fn debug(&mut self, msg: impl AsRef<[u8]>) {
        self.log(Level::Debug, msg.as_ref());
    }
}

/// A logfmt value: bare when it is only letters, digits and `-._/@^+`, else Go-quoted.
fn logfmt_value(v: &[u8]) -> String {
    let bare = v
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || b"-._/@^+".contains(&c));
    if bare {
        String::from_utf8_lossy(v).into_owned()
    } else {
        gostr::quote(v)
    }
}

/// The current time as RFC 3339 UTC, e.g. `2026-01-02T03:04:05Z`.
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC (days to a civil date by Howard Hinnant's method).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> String {
        "2026-01-02T03:04:05Z".to_string()
    }

    fn logger(format: Format, level: Level) -> Logger<Vec<u8>> {
        Logger {
            format,
            level,
            out: Vec::new(),
            now: fixed,
        }
    }

    #[test]
    fn plain_lines() {
        let mut l = logger(Format::Plain, Level::Info);
        l.info("iptables-nft-save -t nat");
        l.info("ok");
        l.info("");
        l.debug("hidden");
        l.error("a\"b\n");
        assert_eq!(
            String::from_utf8(l.out).unwrap(),
            "time=\"2026-01-02T03:04:05Z\" level=info msg=\"iptables-nft-save -t nat\"\n\
             time=\"2026-01-02T03:04:05Z\" level=info msg=ok\n\
             time=\"2026-01-02T03:04:05Z\" level=info\n\
             time=\"2026-01-02T03:04:05Z\" level=error msg=\"a\\\"b\\n\"\n"
        );
    }

    #[test]
    fn json_lines() {
        let mut l = logger(Format::Json, Level::Debug);
        l.debug("x <y>");
        l.log(Level::Trace, b"hidden");
        assert_eq!(
            String::from_utf8(l.out).unwrap(),
            "{\"level\":\"debug\",\"msg\":\"x \\u003cy\\u003e\",\"time\":\"2026-01-02T03:04:05Z\"}\n"
        );
    }

    #[test]
    fn levels() {
        assert_eq!(Level::parse("WARN"), Ok(Level::Warn));
        assert_eq!(Level::parse("warning"), Ok(Level::Warn));
        assert_eq!(Level::parse("panic"), Ok(Level::Panic));
        assert_eq!(
            Level::parse("loud"),
            Err("not a valid logrus Level: \"loud\"".to_string())
        );
        assert_eq!(Format::parse("JSON"), Format::Plain);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
    }
}
