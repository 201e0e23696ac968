//! Builds the `[[services]]` of a cluster config for tests, as the control plane's own config
//! values (`remora_control::cluster::RawService`), never as text.
//!
//! ```no_run
//! # fn f(b: &remora_tests::Pod) {
//! use remora_tests::services::{RouteExt, Service, route};
//! let echo = Service::new("echo", "shop")
//!     .vip("10.96.0.10")
//!     .port(7000)
//!     .endpoint(b, "echo")
//!     .route(route("get-flaky", "/fail-first/.*").method("GET").retryable());
//! # }
//! ```

use remora_control::cluster::{RawEndpoint, RawPort, RawService};
use remora_control::profile::{RawBudget, RawOverride, RawRoute};

use crate::net::Pod;

/// A service of a cluster config.
#[derive(Clone, Debug)]
pub struct Service(RawService);

impl Service {
    pub fn new(name: &str, namespace: &str) -> Self {
        Service(RawService {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        })
    }

    pub fn vip(mut self, ip: &str) -> Self {
        self.0.cluster_ip = Some(ip.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.0.ports.push(RawPort {
            port,
            ..Default::default()
        });
        self
    }

    /// A port marked opaque (no detection; opaque transport between proxies).
    pub fn opaque_port(mut self, port: u16) -> Self {
        self.0.ports.push(RawPort {
            port,
            opaque: true,
            ..Default::default()
        });
        self
    }

    fn push(mut self, pod: &str, ip: String, sa: &str, protocol: &str, explicit: bool) -> Self {
        let mut e = RawEndpoint::new(pod, &ip, sa);
        e.protocol = Some(protocol.into());
        e.explicit = explicit;
        self.0.endpoints.push(e);
        self
    }

    /// A meshed endpoint: `pod` with service account `sa`.
    pub fn endpoint(self, pod: &Pod, sa: &str) -> Self {
        self.push(&pod.name, pod.ip4().to_string(), sa, "h2", false)
    }

    /// A meshed endpoint with metric labels.
    pub fn labelled_endpoint(self, pod: &Pod, sa: &str, labels: &[(&str, &str)]) -> Self {
        let mut s = self.endpoint(pod, sa);
        if let Some(e) = s.0.endpoints.last_mut() {
            e.labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        s
    }

    /// A meshed endpoint whose proxy runs in explicit mode (no iptables) at `ip`.
    pub fn explicit_endpoint(self, pod: &str, ip: std::net::IpAddr, sa: &str) -> Self {
        self.push(pod, ip.to_string(), sa, "h2", true)
    }

    /// An endpoint that is not meshed (no identity, no hint).
    pub fn unmeshed_endpoint(self, pod: &Pod) -> Self {
        self.push(&pod.name, pod.ip4().to_string(), "default", "none", false)
    }

    /// Exported to linked clusters.
    pub fn export(mut self) -> Self {
        self.0.export = true;
        self
    }

    /// Exported, to be reached in `mode` (`flat` or `gateway`) whatever the link says.
    pub fn export_as(mut self, mode: &'static str) -> Self {
        self.0.export = true;
        self.0.export_mode = Some(mode.into());
        self
    }

    /// A route of the service's profile.
    pub fn route(mut self, route: RawRoute) -> Self {
        self.0.routes.push(route);
        self
    }

    /// The service's retry budget.
    pub fn retry_budget(mut self, ratio: f32, min_per_second: u32, ttl: &str) -> Self {
        self.0.retry_budget = Some(RawBudget {
            retry_ratio: ratio,
            min_retries_per_second: min_per_second,
            ttl: ttl.into(),
        });
        self
    }

    /// A traffic-split backend (`dst_overrides`).
    pub fn dst_override(mut self, authority: &str, weight: u32) -> Self {
        self.0.dst_overrides.push(RawOverride {
            authority: authority.into(),
            weight,
        });
        self
    }

    /// The config value.
    pub fn raw(&self) -> RawService {
        self.0.clone()
    }
}

/// A profile route matching `path` (a regex), every method, not retryable, no timeout.
pub fn route(name: &str, path: &str) -> RawRoute {
    RawRoute {
        name: name.into(),
        path: path.into(),
        ..Default::default()
    }
}

/// Builder steps for [`route`].
pub trait RouteExt {
    fn method(self, method: &str) -> Self;
    fn retryable(self) -> Self;
    fn timeout(self, timeout: &str) -> Self;
}

impl RouteExt for RawRoute {
    fn method(mut self, method: &str) -> Self {
        self.method = Some(method.into());
        self
    }

    fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    fn timeout(mut self, timeout: &str) -> Self {
        self.timeout = Some(timeout.into());
        self
    }
}

/// The config values of `services`.
pub fn raw(services: &[Service]) -> Vec<RawService> {
    services.iter().map(Service::raw).collect()
}
