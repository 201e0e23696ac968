//! The duration syntax of every variable and config file: `250ms`, `30s`, `5m`, `1h`, `365d`,
//! and a bare `0`; surrounding whitespace is ignored (Linkerd's chart renders `365d` to disable
//! detection timeouts, and `0` for "none").

use std::time::Duration;

/// Parses `250ms`, `30s`, `5m`, `1h`, `2d` (a unit is required, so `30` is not mistaken for ms;
/// only `0` may go without one).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("expected a duration such as 500ms, 30s, 5m, 1h or 1d, got {s:?}");
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(err()),
    };
    ms.map(Duration::from_millis).ok_or_else(err)
}

/// A duration that must not be zero.
pub fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_string()),
        d => Ok(d),
    }
}

/// Like [`parse_duration`], but `off` (or a zero duration) disables the timeout.
pub fn parse_optional_duration(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    Ok(Some(parse_duration(s)?).filter(|d| !d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(parse_optional_duration("off").unwrap(), None);
        assert_eq!(parse_optional_duration("0s").unwrap(), None);
        assert_eq!(
            parse_optional_duration("10s").unwrap(),
            Some(Duration::from_secs(10))
        );
        assert!(parse_nonzero_duration("0s").is_err());
        assert_eq!(
            parse_duration(" 365d ").unwrap(),
            Duration::from_secs(365 * 86_400)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(
            parse_duration("10").is_err(),
            "only a zero may go without a unit"
        );
        assert!(parse_duration("1 s").is_err());
        assert_eq!(parse_optional_duration(" 0 ").unwrap(), None);
    }
}
