//! `OutboundPolicies` answers, compiled once per served state (the config's services and the
//! mirrors of linked clusters): one `OutboundPolicy` per declared port of every service,
//! rendered as Linkerd's policy controller renders a `Service` port.
//!
//! ```text
//!  Addr(VIP:port) or Authority(<svc>.<ns>.svc.<domain>[:port, default 80])
//!     └► service known? ── no ──► NotFound (the proxy falls back to Destination and profiles)
//!          │ yes: port declared? ── no ──► Opaque [Default("undefined-port"): Forbidden]
//!          ▼ yes
//!   metadata core/Service <ns>/<svc>:<port>
//!   opaque port ─► Opaque [Default("opaq") ─► B]
//!   gRPC routes ─► Grpc [routes]
//!   otherwise ───► Detect(timeout) { opaque: [opaq ─► B], http1 = http2: [routes, or
//!                                    Default("http"): prefix / ─► B] }
//!   B = core/Service <ns>/<svc>:<port>, queue 100 / 3 s,
//!       P2C PeakEwma(30 ms, 10 s) over Dst{"<svc>.<ns>.svc.<domain>:<port>"}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use linkerd2_proxy_api::http_route;
use linkerd2_proxy_api::outbound as pb;

use super::model::Model;
use super::proto::{self, ROUTE_GROUP, prefix_match};
use super::routes::{Backend, GrpcRule, HttpRule, Parent, Retry, Route, Timeouts};
use crate::cluster::{ClusterState, FailureAccrual, Service, SvcKey};

/// The backend queue Linkerd's controller sends (informational for linkerd2-proxy).
const QUEUE_CAPACITY: u32 = 100;
const FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// The largest request body a retry may replay (the controller's constant).
const RETRY_MAX_REQUEST_BYTES: u32 = 64 * 1024;

/// Every outbound answer of one served state.
#[derive(Clone, Debug, Default)]
pub struct OutboundIndex {
    policies: BTreeMap<SvcKey, BTreeMap<u16, pb::OutboundPolicy>>,
}

impl OutboundIndex {
    pub fn build(model: &Model, state: &ClusterState) -> OutboundIndex {
        let b = Builder { model, state };
        let policies = state
            .services
            .values()
            .map(|svc| {
                let ports = svc
                    .ports
                    .iter()
                    .map(|p| (p.port, b.port_policy(svc, p.port, p.opaque)))
                    .collect();
                (svc.key.clone(), ports)
            })
            .collect();
        OutboundIndex { policies }
    }

    /// The policy for `port` of service `key`: its own, or Linkerd's forbidden opaque route
    /// for a port the service does not declare; `None` for an unknown service.
    pub fn policy(&self, key: &SvcKey, port: u16) -> Option<pb::OutboundPolicy> {
        let ports = self.policies.get(key)?;
        Some(match ports.get(&port) {
            Some(p) => p.clone(),
            None => undefined_port(key, port),
        })
    }

    /// How many service ports have a policy.
    pub fn port_count(&self) -> usize {
        self.policies.values().map(BTreeMap::len).sum()
    }
}

/// Linkerd's answer for a port a known service does not declare: every connection refused.
pub fn undefined_port(key: &SvcKey, port: u16) -> pb::OutboundPolicy {
    use pb::opaque_route::{Distribution, Filter, Rule, distribution, filter};
    pb::OutboundPolicy {
        metadata: Some(proto::service_meta(&key.namespace, &key.name, port)),
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Opaque(
                pb::proxy_protocol::Opaque {
                    routes: vec![pb::OpaqueRoute {
                        metadata: Some(proto::default_meta("undefined-port")),
                        rules: vec![Rule {
                            backends: Some(Distribution {
                                kind: Some(distribution::Kind::Empty(distribution::Empty {})),
                            }),
                            filters: vec![Filter {
                                kind: Some(filter::Kind::Forbidden(
                                    linkerd2_proxy_api::opaque_route::Forbidden {},
                                )),
                            }],
                        }],
                    }],
                },
            )),
        }),
    }
}

struct Builder<'a> {
    model: &'a Model,
    state: &'a ClusterState,
}

/// The `Dst` path Destination answers for a service port.
pub fn authority(state: &ClusterState, namespace: &str, name: &str, port: u16) -> String {
    format!("{name}.{namespace}.svc.{}:{port}", state.cluster_domain)
}

fn queue() -> pb::Queue {
    pb::Queue {
        capacity: QUEUE_CAPACITY,
        failfast_timeout: Some(proto::duration(FAILFAST_TIMEOUT)),
    }
}

/// A service port balanced over Destination's endpoints.
fn balancer(state: &ClusterState, namespace: &str, name: &str, port: u16) -> pb::Backend {
    use pb::backend::{BalanceP2c, EndpointDiscovery, Kind, balance_p2c, endpoint_discovery};
    pb::Backend {
        metadata: Some(proto::service_meta(namespace, name, port)),
        queue: Some(queue()),
        kind: Some(Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: authority(state, namespace, name, port),
                    },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: Some(proto::duration(EWMA_DEFAULT_RTT)),
                decay: Some(proto::duration(EWMA_DECAY)),
            })),
        })),
    }
}

fn accrual(svc: &Service) -> Option<pb::FailureAccrual> {
    let FailureAccrual {
        max_failures,
        min_penalty,
        max_penalty,
        jitter_ratio,
    } = svc.failure_accrual?;
    Some(pb::FailureAccrual {
        kind: Some(pb::failure_accrual::Kind::ConsecutiveFailures(
            pb::failure_accrual::ConsecutiveFailures {
                max_failures,
                backoff: Some(backoff(min_penalty, max_penalty, jitter_ratio)),
            },
        )),
        ejection: None,
    })
}

fn backoff(min: Duration, max: Duration, jitter: f32) -> pb::ExponentialBackoff {
    pb::ExponentialBackoff {
        min_backoff: Some(proto::duration(min)),
        max_backoff: Some(proto::duration(max)),
        jitter_ratio: jitter,
        respect_retry_after_hint: false,
    }
}

fn timeouts(t: &Timeouts) -> http_route::Timeouts {
    http_route::Timeouts {
        response: t.response.map(proto::duration),
        request: t.request.map(proto::duration),
        idle: t.idle.map(proto::duration),
    }
}

fn attached<R>(route: &Route<R>, svc: &Service, port: u16) -> bool {
    route.namespace == svc.key.namespace
        && route.parents.iter().any(|p| match p {
            Parent::Service { name, port: p } => {
                *name == svc.key.name && p.is_none_or(|p| p == port)
            }
            Parent::Server(_) => false,
        })
}

/// A rule's backends as the `distribution` of its route type (HTTP's and gRPC's have the same
/// shape in different message types; the caller imports that type's `distribution`,
/// `RouteBackend` and `WeightedRouteBackend`): the parent's own backend when the rule names
/// none, else each named backend by weight, a missing one answering 500 through `$fail`.
macro_rules! distribution {
    ($this:expr, $rule:expr, $default:expr, $port:expr, $filter:ident, $fail:ident) => {
        match $rule.backends.is_empty() {
            true => distribution::Kind::FirstAvailable(distribution::FirstAvailable {
                backends: vec![RouteBackend {
                    backend: Some($default.clone()),
                    filters: Vec::new(),
                    ..Default::default()
                }],
            }),
            false => distribution::Kind::RandomAvailable(distribution::RandomAvailable {
                backends: $rule
                    .backends
                    .iter()
                    .map(|b| {
                        let (backend, missing) = $this.backend(b, $port);
                        let mut filters: Vec<_> =
                            b.filters.iter().filter_map(proto::$filter).collect();
                        if let Some(message) = missing {
                            filters = vec![$fail(500, message)];
                        }
                        WeightedRouteBackend {
                            weight: b.weight,
                            backend: Some(RouteBackend {
                                backend: Some(backend),
                                filters,
                                ..Default::default()
                            }),
                        }
                    })
                    .collect(),
            }),
        }
    };
}

impl Builder<'_> {
    fn port_policy(&self, svc: &Service, port: u16, opaque: bool) -> pb::OutboundPolicy {
        use pb::proxy_protocol::{Detect, Grpc, Http1, Http2, Kind, Opaque};
        let (ns, name) = (&svc.key.namespace, &svc.key.name);
        let backend = balancer(self.state, ns, name, port);
        let opaq = Opaque {
            routes: vec![opaq_route(backend.clone())],
        };
        let accrual = accrual(svc);
        let kind = if opaque {
            Kind::Opaque(opaq)
        } else {
            let grpc: Vec<_> = self
                .model
                .grpc_routes
                .iter()
                .filter(|r| attached(r, svc, port))
                .map(|r| self.grpc_route(r, &backend, port))
                .collect();
            if !grpc.is_empty() {
                Kind::Grpc(Grpc {
                    routes: grpc,
                    failure_accrual: accrual,
                })
            } else {
                let mut http: Vec<_> = self
                    .model
                    .http_routes
                    .iter()
                    .filter(|r| attached(r, svc, port))
                    .map(|r| self.http_route(r, &backend, port))
                    .collect();
                if http.is_empty() {
                    http.push(default_http_route(backend.clone()));
                }
                Kind::Detect(Detect {
                    timeout: Some(proto::duration(self.model.detect_timeout)),
                    opaque: Some(opaq),
                    http1: Some(Http1 {
                        routes: http.clone(),
                        failure_accrual: accrual,
                    }),
                    http2: Some(Http2 {
                        routes: http,
                        failure_accrual: accrual,
                    }),
                })
            }
        };
        pb::OutboundPolicy {
            metadata: Some(proto::service_meta(ns, name, port)),
            protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
        }
    }

    /// A route backend: a balancer over the service's endpoints, or, for a service this
    /// state does not have, Linkerd's invalid backend (a 500 naming it).
    fn backend(&self, b: &Backend, parent_port: u16) -> (pb::Backend, Option<String>) {
        let port = b.port.unwrap_or(parent_port);
        let key = SvcKey {
            namespace: b.namespace.clone(),
            name: b.name.clone(),
        };
        match self.state.services.contains_key(&key) {
            true => (balancer(self.state, &b.namespace, &b.name, port), None),
            false => (
                pb::Backend {
                    metadata: Some(proto::service_meta(&b.namespace, &b.name, port)),
                    queue: Some(queue()),
                    kind: None,
                },
                Some(format!("Service not found {}", b.name)),
            ),
        }
    }

    fn http_route(&self, r: &Route<HttpRule>, default: &pb::Backend, port: u16) -> pb::HttpRoute {
        use pb::http_route::{
            Distribution, RouteBackend, Rule, WeightedRouteBackend, distribution,
        };
        let rules = r
            .rules
            .iter()
            .map(|rule| {
                let dist = distribution!(self, rule, default, port, outbound_http_filter, failure);
                #[allow(deprecated)]
                Rule {
                    matches: match rule.matches.is_empty() {
                        true => vec![prefix_match()],
                        false => rule.matches.clone(),
                    },
                    filters: rule
                        .filters
                        .iter()
                        .filter_map(proto::outbound_http_filter)
                        .collect(),
                    backends: Some(Distribution { kind: Some(dist) }),
                    request_timeout: rule.timeouts.request.map(proto::duration),
                    timeouts: Some(timeouts(&rule.timeouts)),
                    retry: rule.retry.as_ref().map(http_retry),
                    allow_l5d_request_headers: self.model.allow_l5d_request_headers,
                }
            })
            .collect();
        pb::HttpRoute {
            metadata: Some(proto::resource_meta(
                ROUTE_GROUP,
                "HTTPRoute",
                &r.namespace,
                &r.name,
                0,
            )),
            hosts: r.hosts.clone(),
            rules,
        }
    }

    fn grpc_route(&self, r: &Route<GrpcRule>, default: &pb::Backend, port: u16) -> pb::GrpcRoute {
        use pb::grpc_route::{
            Distribution, RouteBackend, Rule, WeightedRouteBackend, distribution,
        };
        let rules = r
            .rules
            .iter()
            .map(|rule| {
                let dist = distribution!(
                    self,
                    rule,
                    default,
                    port,
                    outbound_grpc_filter,
                    grpc_failure
                );
                #[allow(deprecated)]
                Rule {
                    matches: rule.matches.clone(),
                    filters: rule
                        .filters
                        .iter()
                        .filter_map(proto::outbound_grpc_filter)
                        .collect(),
                    backends: Some(Distribution { kind: Some(dist) }),
                    request_timeout: rule.timeouts.request.map(proto::duration),
                    timeouts: Some(timeouts(&rule.timeouts)),
                    retry: rule.retry.as_ref().map(grpc_retry),
                    allow_l5d_request_headers: self.model.allow_l5d_request_headers,
                }
            })
            .collect();
        pb::GrpcRoute {
            metadata: Some(proto::resource_meta(
                ROUTE_GROUP,
                "GRPCRoute",
                &r.namespace,
                &r.name,
                0,
            )),
            hosts: r.hosts.clone(),
            rules,
        }
    }
}

fn failure(status: u32, message: String) -> pb::http_route::Filter {
    pb::http_route::Filter {
        kind: Some(pb::http_route::filter::Kind::FailureInjector(
            http_route::HttpFailureInjector {
                status,
                message,
                ratio: None,
            },
        )),
    }
}

fn grpc_failure(code: u32, message: String) -> pb::grpc_route::Filter {
    pb::grpc_route::Filter {
        kind: Some(pb::grpc_route::filter::Kind::FailureInjector(
            linkerd2_proxy_api::grpc_route::GrpcFailureInjector {
                code,
                message,
                ratio: None,
            },
        )),
    }
}

fn http_retry(r: &Retry) -> pb::http_route::Retry {
    use pb::http_route::retry::{Conditions, conditions::StatusRange};
    pb::http_route::Retry {
        max_retries: r.limit,
        max_request_bytes: RETRY_MAX_REQUEST_BYTES,
        conditions: Some(Conditions {
            status_ranges: r
                .statuses
                .iter()
                .map(|(start, end)| StatusRange {
                    start: u32::from(*start),
                    end: u32::from(*end),
                })
                .collect(),
        }),
        timeout: r.timeout.map(proto::duration),
        backoff: Some(backoff(r.backoff.0, r.backoff.1, r.backoff.2)),
    }
}

fn grpc_retry(r: &Retry) -> pb::grpc_route::Retry {
    pb::grpc_route::Retry {
        max_retries: r.limit,
        max_request_bytes: RETRY_MAX_REQUEST_BYTES,
        conditions: Some(r.codes),
        timeout: r.timeout.map(proto::duration),
        backoff: Some(backoff(r.backoff.0, r.backoff.1, r.backoff.2)),
    }
}

/// Linkerd's default opaque route: straight to the backend.
fn opaq_route(backend: pb::Backend) -> pb::OpaqueRoute {
    use pb::opaque_route::{Distribution, RouteBackend, Rule, distribution};
    pb::OpaqueRoute {
        metadata: Some(proto::default_meta("opaq")),
        rules: vec![Rule {
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(backend),
                            filters: Vec::new(),
                        }],
                    },
                )),
            }),
            filters: Vec::new(),
        }],
    }
}

/// Linkerd's default HTTP route of a service port without routes: every request to it.
fn default_http_route(backend: pb::Backend) -> pb::HttpRoute {
    use pb::http_route::{Distribution, RouteBackend, Rule, distribution};
    #[allow(deprecated)]
    let rule = Rule {
        matches: vec![prefix_match()],
        filters: Vec::new(),
        backends: Some(Distribution {
            kind: Some(distribution::Kind::FirstAvailable(
                distribution::FirstAvailable {
                    backends: vec![RouteBackend {
                        backend: Some(backend),
                        filters: Vec::new(),
                        ..Default::default()
                    }],
                },
            )),
        }),
        request_timeout: None,
        timeouts: Some(http_route::Timeouts::default()),
        retry: None,
        allow_l5d_request_headers: false,
    };
    pb::HttpRoute {
        metadata: Some(proto::default_meta("http")),
        hosts: Vec::new(),
        rules: vec![rule],
    }
}
