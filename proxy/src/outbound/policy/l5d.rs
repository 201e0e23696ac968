//! The request headers a rule with `allow_l5d_request_headers` honours (and removes), as
//! linkerd2-proxy reads them: `l5d-retry-http`, `l5d-retry-grpc`, `l5d-retry-limit`,
//! `l5d-retry-timeout`, `l5d-timeout`, `l5d-request-timeout` (wins over `l5d-timeout`) and
//! `l5d-response-timeout`. A value that does not parse is ignored.
//!
//! With a rule's retry policy the headers override its timeout, statuses and limit (its body
//! limit and backoff stay); without one, any retry header makes a policy: limit 1, 64 KiB,
//! backoff 25 ms–250 ms with full jitter.

use std::time::Duration;

use http::HeaderMap;

use super::{GrpcCodes, Retry, StatusRanges, Timeouts};
use crate::discovery::balance::ExpBackoff;

/// Durations as the controller's annotations write them: `<digits><ms|s|m|h|d>`, or `0`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let offset = s.rfind(|c: char| c.is_ascii_digit())?;
    let (magnitude, unit) = s.split_at(offset + 1);
    let magnitude = magnitude.parse::<u64>().ok()?;
    let mul = match unit {
        "" if magnitude == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(magnitude.checked_mul(mul)?))
}

/// `5xx`, `gateway-error`, `NNN`, `NNN-MMM` (codes 100..=599), comma-separated.
pub fn parse_http_conditions(s: &str) -> StatusRanges {
    let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..600).contains(c));
    StatusRanges(
        s.split(',')
            .filter_map(|c| {
                if c.eq_ignore_ascii_case("5xx") {
                    return Some(500..=599);
                }
                if c.eq_ignore_ascii_case("gateway-error") {
                    return Some(502..=504);
                }
                if let Some(n) = code(c) {
                    return Some(n..=n);
                }
                let (a, b) = c.split_once('-')?;
                let (a, b) = (code(a)?, code(b)?);
                (a <= b).then_some(a..=b)
            })
            .collect(),
    )
}

/// `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`.
pub fn parse_grpc_conditions(s: &str) -> GrpcCodes {
    s.split(',').fold(GrpcCodes::default(), |codes, c| {
        let code = match c.to_ascii_lowercase().as_str() {
            "cancelled" => GrpcCodes::CANCELLED,
            "deadline-exceeded" => GrpcCodes::DEADLINE_EXCEEDED,
            "internal" => GrpcCodes::INTERNAL,
            "resource-exhausted" => GrpcCodes::RESOURCE_EXHAUSTED,
            "unavailable" => GrpcCodes::UNAVAILABLE,
            _ => return codes,
        };
        codes.with(code)
    })
}

fn take(headers: &mut HeaderMap, name: &'static str) -> Option<String> {
    let v = headers.remove(name)?;
    v.to_str().ok().map(str::to_string)
}

/// The retry policy and timeouts of a request on a rule that allows the headers: `rule`'s,
/// overridden by what the request's headers say (the headers are removed).
pub fn apply(
    headers: &mut HeaderMap,
    retry: Option<&Retry>,
    timeouts: Timeouts,
) -> (Option<Retry>, Timeouts) {
    let http = take(headers, "l5d-retry-http").map(|v| parse_http_conditions(&v));
    let grpc = take(headers, "l5d-retry-grpc").map(|v| parse_grpc_conditions(&v));
    let limit = take(headers, "l5d-retry-limit").and_then(|v| v.parse::<u32>().ok());
    let per_try = take(headers, "l5d-retry-timeout").and_then(|v| parse_duration(&v));
    let retry = match retry {
        Some(r) => Some(Retry {
            timeout: per_try.or(r.timeout),
            http: http.or_else(|| r.http.clone()),
            grpc: grpc.or(r.grpc),
            max_retries: limit.unwrap_or(r.max_retries),
            ..r.clone()
        }),
        None if http.is_none() && grpc.is_none() && limit.is_none() && per_try.is_none() => None,
        None => Some(Retry {
            max_retries: limit.unwrap_or(1),
            max_request_bytes: 64 * 1024,
            http,
            grpc,
            timeout: per_try,
            backoff: Some(ExpBackoff {
                min: Duration::from_millis(25),
                max: Duration::from_millis(250),
                jitter: 1.0,
            }),
        }),
    };
    let mut t = timeouts;
    if let Some(d) = take(headers, "l5d-timeout").and_then(|v| parse_duration(&v)) {
        t.request = Some(d);
    }
    if let Some(d) = take(headers, "l5d-request-timeout").and_then(|v| parse_duration(&v)) {
        t.request = Some(d);
    }
    if let Some(d) = take(headers, "l5d-response-timeout").and_then(|v| parse_duration(&v)) {
        t.response = Some(d);
    }
    (retry, t)
}
