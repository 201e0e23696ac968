//! Protocol detection outcomes and the early dials of server-speaks-first detection.
//!
//! `protocol_detect_total{direction,result}` counts each detected connection once, by what it
//! turned out to be; `protocol_detect_early_dial_total{direction,outcome}` counts the
//! connections dialled while the client was silent (`proxy/src/transport/early.rs`): `used`
//! (they carried the connection), `wasted` (closed unused) or `failed` (the dial failed). Both
//! label sets are fixed, so these are plain families, never growing past their variants.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::tcp::Direction;

/// What detection made of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectResult {
    Http1,
    Http2,
    /// The client spoke first, and not HTTP.
    OpaqueClientFirst,
    /// The server spoke first: forwarded as bytes at once.
    OpaqueServerFirst,
    /// Neither spoke within the detection timeout: forwarded as bytes.
    Timeout,
}

impl DetectResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectResult::Http1 => "http1",
            DetectResult::Http2 => "http2",
            DetectResult::OpaqueClientFirst => "opaque_client_first",
            DetectResult::OpaqueServerFirst => "opaque_server_first",
            DetectResult::Timeout => "timeout",
        }
    }
}

/// What became of an early dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyDial {
    /// The early connection carried the client's connection.
    Used,
    /// It was closed unused (the client spoke HTTP, or went away).
    Wasted,
    /// The dial failed.
    Failed,
}

impl EarlyDial {
    pub fn as_str(self) -> &'static str {
        match self {
            EarlyDial::Used => "used",
            EarlyDial::Wasted => "wasted",
            EarlyDial::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    direction: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EarlyLabels {
    direction: &'static str,
    outcome: &'static str,
}

/// The detection families.
#[derive(Clone, Debug, Default)]
pub struct DetectMetrics {
    results: Family<ResultLabels, Counter>,
    early: Family<EarlyLabels, Counter>,
}

impl DetectMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = DetectMetrics::default();
        registry.register(
            "protocol_detect",
            "Total count of protocol detections, by result",
            m.results.clone(),
        );
        registry.register(
            "protocol_detect_early_dial",
            "Total count of destinations dialled while waiting for a client's first bytes, by outcome",
            m.early.clone(),
        );
        m
    }

    pub fn detected(&self, direction: Direction, result: DetectResult) {
        self.results
            .get_or_create(&ResultLabels {
                direction: direction.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    pub fn early_dial(&self, direction: Direction, outcome: EarlyDial) {
        self.early
            .get_or_create(&EarlyLabels {
                direction: direction.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_direction_and_result() {
        let mut reg = Registry::default();
        let m = DetectMetrics::register(&mut reg);
        m.detected(Direction::Inbound, DetectResult::OpaqueServerFirst);
        m.detected(Direction::Inbound, DetectResult::OpaqueServerFirst);
        m.early_dial(Direction::Outbound, EarlyDial::Wasted);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains(
                r#"protocol_detect_total{direction="inbound",result="opaque_server_first"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"protocol_detect_early_dial_total{direction="outbound",outcome="wasted"} 1"#
            ),
            "{text}"
        );
    }
}
