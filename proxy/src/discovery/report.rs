//! What the resolver knows, for operators: `balancer_endpoints{authority, state}` at each scrape
//! and `GET /debug/destinations` as JSON.

use super::{Resolution, Resolver};

/// `balancer_endpoints{authority, state}`: each cached target's endpoints in balancing
/// (`ready`) and ejected by the circuit breaker (`ejected`), read at each scrape. Two series
/// per target, at most `max_series` in all (`REMORA_METRICS_MAX_SERIES`, as every family):
/// targets with endpoints first, then by authority; the rest are summed under
/// `overflow="true"`, so a scan of thousands of ports cannot grow `/metrics` without bound.
#[derive(Debug)]
pub struct BalancerCollector {
    pub resolver: std::sync::Weak<Resolver>,
    pub max_series: usize,
}

impl prometheus_client::collector::Collector for BalancerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let mut family = encoder.encode_descriptor(
            "balancer_endpoints",
            "Endpoints of each discovered target, by state: ready (balanced) or ejected (circuit \
             breaker open or probing)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        let Some(resolver) = self.resolver.upgrade() else {
            return Ok(());
        };
        let mut counts = resolver.balancer_counts();
        let targets = self.max_series / 2;
        if counts.len() > targets {
            counts.sort_unstable_by(|(a, (ra, ea)), (b, (rb, eb))| {
                (ra + ea == 0).cmp(&(rb + eb == 0)).then_with(|| a.cmp(b))
            });
        }
        let (mut rest_ready, mut rest_ejected, mut rest) = (0, 0, false);
        for (i, (authority, (ready, ejected))) in counts.into_iter().enumerate() {
            if i >= targets {
                (rest_ready, rest_ejected, rest) =
                    (rest_ready + ready, rest_ejected + ejected, true);
                continue;
            }
            for (state, n) in [("ready", ready), ("ejected", ejected)] {
                let labels = [("authority", authority.as_str()), ("state", state)];
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        if rest {
            for (state, n) in [("ready", rest_ready), ("ejected", rest_ejected)] {
                let labels = [("overflow", "true"), ("state", state)];
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The resolver's state as JSON, for `GET /debug/destinations`.
pub fn snapshot_json(resolver: &Resolver) -> String {
    use serde_json::json;
    let targets: Vec<_> = resolver
        .snapshot()
        .into_iter()
        .map(|(target, res, profile)| {
            let (state, endpoints) = match res {
                Resolution::Pending => ("pending", vec![]),
                Resolution::Unknown => ("unknown", vec![]),
                Resolution::Unavailable => ("unavailable", vec![]),
                Resolution::Endpoints(eps) => (
                    "resolved",
                    eps.iter()
                        .map(|e| {
                            json!({
                                "addr": e.addr.to_string(),
                                "weight": e.weight,
                                "identity": e.identity.as_ref().map(|n| n.to_string()),
                                "hint": format!("{:?}", e.hint).to_lowercase(),
                                "opaque_transport_port": e.opaque_transport_port,
                                "authority_override": e.authority_override,
                                "labels": e.labels,
                            })
                        })
                        .collect(),
                ),
            };
            json!({
                "target": target,
                "state": state,
                "endpoints": endpoints,
                "profile": profile.map(|p| json!({
                    "fully_qualified_name": p.proto.fully_qualified_name,
                    "opaque_protocol": p.proto.opaque_protocol,
                    "routes": p.routes.len(),
                })),
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({ "destinations": targets })).unwrap_or_default()
}
