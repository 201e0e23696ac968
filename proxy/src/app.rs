//! Wiring: binds every listener, builds the metrics registry and the [`ProxyInputs`] both
//! directions share, and runs the inbound, outbound and admin servers until the drain completes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use remora_metrics::Registry;
use remora_metrics::client::ControlClientMetrics;
use remora_metrics::http::HttpMetrics;
use remora_metrics::identity::IdentityMetrics;
use remora_metrics::inbound_policy::InboundPolicyMetrics;
use remora_metrics::outbound_route::OutboundRouteMetrics;
use remora_metrics::series::SeriesLimits;
use remora_metrics::tcp::{Direction, TcpMetrics};
use remora_metrics::trace::TraceMetrics;
use remora_runtime::admin::{self, AdminState, DebugReport};
use remora_runtime::channel::{
    ChannelError, ChannelTls, ClientConfigFn, ControlChannel, Instrumented,
};
use remora_runtime::drain::Drain;
use remora_runtime::listen::bind_group;
use remora_runtime::log::LogLevel;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::config::{self, Config};
use crate::discovery::report::{BalancerCollector, snapshot_json};
use crate::discovery::{ProfileScope, Resolver, ResolverConfig};
use crate::http::inflight::InFlight;
use crate::http::record::{AccessLog, AccessLogOut};
use crate::inbound::gateway::{Gateway, watch_exports};
use crate::inbound::policy::InboundPolicy;
use crate::inbound::ports::DirectPorts;
use crate::inbound::{Inbound, InboundConfig};
use crate::inputs::{Discovery, PolicyService, ProxyInputs};
use crate::outbound::{Outbound, OutboundConfig};
use crate::tls::identity::{self, CredsRx, IdentityError};
use crate::tls::mtls::LocalTls;
use crate::trace::{Tracer, export};
use crate::transport::header::ALPN;
use crate::transport::listen::{AcceptCtx, PeerShare};
use crate::transport::orig_dst::LocalIps;
use crate::transport::own::OwnAddrs;
use crate::transport::tcp::Connect;

/// A proxy whose listeners are bound and whose identity is being fetched, ready to
/// [`run`](Proxy::run).
#[derive(Debug)]
pub struct Proxy {
    config: Config,
    outbound: Vec<TcpListener>,
    inbound: Vec<TcpListener>,
    admin: TcpListener,
    drain: Drain,
    registry: Registry,
    tcp_metrics: TcpMetrics,
    http_metrics: HttpMetrics,
    /// Linkerd's outbound route families (outbound policy).
    outbound_routes: OutboundRouteMetrics,
    /// Linkerd's inbound policy families (`inbound_http_authz_*`, `inbound_tcp_authz_*`, ...).
    inbound_policy_metrics: InboundPolicyMetrics,
    creds: Option<CredsRx>,
    resolver: Option<Arc<Resolver>>,
    /// The policy service, when configured.
    policy: Option<PolicyService>,
    log_level: Option<LogLevel>,
    access_log_out: Option<AccessLogOut>,
    /// Spans of HTTP requests, when a trace collector is configured (its exporter runs).
    tracer: Option<Tracer>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({var}): {source}")]
    Bind {
        var: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("destination service: {0}")]
    Destination(#[from] ChannelError),
    #[error("trace collector: {0}")]
    Collector(ChannelError),
}

impl StartError {
    /// The exit status: 64 (EX_USAGE) when the configuration is at fault (an identity
    /// directory whose key and CSR do not fit, a control-plane address that cannot be used),
    /// 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Identity(IdentityError::Dir { .. } | IdentityError::Channel(_))
            | StartError::Destination(_)
            | StartError::Collector(_) => remora_runtime::bootstrap::EXIT_USAGE,
            _ => 1,
        }
    }
}

fn bind_all(var: &'static str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, StartError> {
    bind_group(addrs)
        .into_iter()
        .map(|(addr, res)| res.map_err(|source| StartError::Bind { var, addr, source }))
        .collect()
}

fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

impl Proxy {
    /// Binds the outbound, inbound and admin listeners and, with an identity configured,
    /// starts fetching its certificate. Call within a runtime.
    pub fn bind(config: Config) -> Result<Self, StartError> {
        let mut registry = Registry::default();
        let series = SeriesLimits::register(&mut registry, config.metrics);
        let tcp_metrics = TcpMetrics::register_with(&mut registry, &series);
        let http_metrics = HttpMetrics::register(&mut registry, &series);
        let outbound_routes = OutboundRouteMetrics::register(&mut registry, &series);
        let inbound_policy_metrics = InboundPolicyMetrics::register(&mut registry, &series);
        let identity_metrics = IdentityMetrics::register(&mut registry);
        let client_metrics = ControlClientMetrics::register(&mut registry);
        let trace_metrics = config
            .trace
            .as_ref()
            .map(|_| TraceMetrics::register(&mut registry));
        remora_metrics::process::register(&mut registry);
        let creds = match &config.identity {
            Some(id) => Some(identity::spawn(
                id.clone(),
                &[ALPN],
                identity_metrics,
                client_metrics.clone(),
            )?),
            None => None,
        };
        let resolver = match &config.destination {
            Some(d) => {
                let tls = control_tls(&d.addr, d.svc_name.as_ref(), &config, creds.as_ref())?;
                let channel = ControlChannel::new(&d.addr, tls)?;
                Some(Resolver::new(
                    Instrumented::new(channel, "destination", client_metrics.clone()),
                    ResolverConfig {
                        context_token: d.context.clone(),
                        idle: d.idle_timeout,
                        max_entries: d.max_targets,
                        max_failures: d.max_failures,
                        profiles: ProfileScope {
                            suffixes: d.profile_suffixes.clone(),
                            networks: d.profile_networks.clone(),
                        },
                        streams: crate::policy::watch::StreamLimits {
                            initial: config.control_streams.initial,
                            idle: config.control_streams.idle,
                            lifetime: config.control_streams.lifetime,
                        },
                    },
                ))
            }
            None => None,
        };
        if let Some(r) = &resolver {
            registry.register_collector(Box::new(BalancerCollector {
                resolver: Arc::downgrade(r),
                max_series: config.metrics.max_series,
            }));
        }
        let tracer = match (&config.trace, trace_metrics) {
            (Some(t), Some(metrics)) => {
                let tls = control_tls(&t.addr, t.svc_name.as_ref(), &config, creds.as_ref())
                    .map_err(StartError::Collector)?;
                let channel = ControlChannel::new(&t.addr, tls).map_err(StartError::Collector)?;
                let (tracer, rx) = Tracer::new(t, metrics.clone());
                tokio::spawn(export::run(
                    rx,
                    Instrumented::new(channel, "trace", client_metrics.clone()),
                    export::resource(&t.resource),
                    metrics,
                ));
                Some(tracer)
            }
            _ => None,
        };
        let policy = match &config.policy {
            Some(p) => {
                let tls = control_tls(&p.addr, p.svc_name.as_ref(), &config, creds.as_ref())?;
                let channel = ControlChannel::new(&p.addr, tls)?;
                Some(PolicyService {
                    channel: Instrumented::new(channel, "policy", client_metrics),
                    workload: p.workload.clone(),
                    idle: p.idle_timeout,
                    limits: crate::policy::watch::StreamLimits {
                        initial: config.control_streams.initial,
                        idle: config.control_streams.idle,
                        lifetime: config.control_streams.lifetime,
                    },
                })
            }
            None => None,
        };
        Ok(Proxy {
            outbound: bind_all(config::OUTBOUND_ADDR, &config.outbound_addrs)?,
            inbound: bind_all(config::INBOUND_ADDR, &config.inbound_addrs)?,
            admin: bind_all(config::ADMIN_ADDR, &[config.admin_addr])?.remove(0),
            config,
            drain: Drain::new(),
            registry,
            tcp_metrics,
            http_metrics,
            outbound_routes,
            inbound_policy_metrics,
            creds,
            resolver,
            policy,
            log_level: None,
            access_log_out: None,
            tracer,
        })
    }

    /// Lets the admin API show and replace the log filter (`GET`/`PUT /log-level`).
    pub fn with_log_level(mut self, log_level: LogLevel) -> Self {
        self.log_level = Some(log_level);
        self
    }

    /// Writes the access log (when `REMORA_ACCESS_LOG` enables it) to `out` instead of stdout.
    pub fn with_access_log_to(mut self, out: AccessLogOut) -> Self {
        self.access_log_out = Some(out);
        self
    }

    /// The current credentials, when the proxy has an identity.
    pub fn creds(&self) -> Option<CredsRx> {
        self.creds.clone()
    }

    pub fn outbound_addrs(&self) -> Vec<SocketAddr> {
        local_addrs(&self.outbound)
    }

    pub fn inbound_addrs(&self) -> Vec<SocketAddr> {
        local_addrs(&self.inbound)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// The process's drain signal: signalling it shuts the proxy down gracefully.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Serves until the drain is signalled, then gives open connections the configured grace
    /// period. Returns when they have finished or the grace period is over.
    pub async fn run(mut self) {
        let mut own_listeners = self.outbound_addrs();
        own_listeners.extend(self.inbound_addrs());
        own_listeners.extend(self.admin_addr());
        let admin_port = self.admin_addr().map(|a| a.port());
        let registry = Arc::new(self.registry);
        let ready = Arc::new(AtomicBool::new(false));
        let cfg = &self.config;
        let accept = |direction, max, opts| AcceptCtx {
            direction,
            limit: Arc::new(Semaphore::new(max)),
            metrics: self.tcp_metrics.clone(),
            drain: self.drain.clone(),
            opts,
            peers: None,
        };
        let tls = LocalTls::new(self.creds.clone());
        let pod_ips = if cfg.inbound_ips.is_empty() {
            LocalIps::new()
        } else {
            LocalIps::fixed(&cfg.inbound_ips)
        };
        let own = OwnAddrs::new(own_listeners, pod_ips);
        let local_peers = own.local_peers();
        let inputs = Arc::new(ProxyInputs {
            own,
            tls: tls.clone(),
            discovery: self.resolver.clone().map(|resolver| Discovery {
                resolver,
                timeout: cfg
                    .destination
                    .as_ref()
                    .map(|d| d.timeout)
                    .unwrap_or_default(),
            }),
            tcp_metrics: self.tcp_metrics.clone(),
            http_metrics: self.http_metrics.clone(),
            outbound_connect: Connect {
                timeout: cfg.connect_timeout,
                opts: cfg.sockets.outbound_connect,
            },
            inbound_connect: Connect {
                timeout: cfg.inbound_connect_timeout,
                opts: cfg.sockets.inbound_connect,
            },
            idle_timeout: cfg.idle_timeout,
            opaque_ports: cfg.opaque_ports.iter().copied().collect(),
            pool_idle_timeout: cfg.pool_idle_timeout,
            pool_max_idle: cfg.pool_max_idle,
            http2_client: cfg.http2_client,
            policy: self.policy.clone(),
            access_log: access_log(cfg.access_log, self.access_log_out.take()),
            tracer: self.tracer.clone(),
            drain: self.drain.clone(),
            in_flight: [
                InFlight::with_share(
                    cfg.inbound_max_in_flight,
                    cfg.inbound_peer_share,
                    local_peers,
                    self.http_metrics.clone(),
                ),
                InFlight::new(cfg.outbound_max_in_flight, self.http_metrics.clone()),
            ],
            first_byte_timeout: cfg.first_byte_timeout,
        });
        let outbound = Outbound::new(
            self.outbound,
            accept(
                Direction::Outbound,
                cfg.outbound_max_connections,
                cfg.sockets.outbound_accept,
            ),
            inputs.clone(),
            OutboundConfig {
                detect_timeout: cfg.outbound_detect_timeout,
                request_timeout: cfg.request_timeout,
                http: cfg.outbound_http,
                ingress: cfg.ingress,
                early_dial: cfg.early_dial,
            },
            self.outbound_routes.clone(),
        );
        let trust_domain = cfg.identity.as_ref().and_then(|i| {
            remora_identity::WorkloadId::try_from(i.name.clone())
                .ok()
                .map(|w| w.trust_domain)
        });
        let gateway = match (cfg.gateway, &cfg.identity, &cfg.destination) {
            (true, Some(id), Some(d)) => {
                let (tx, exports) = tokio::sync::watch::channel(Arc::default());
                match &d.svc_name {
                    Some(control) => {
                        tokio::spawn(watch_exports(
                            d.addr.clone(),
                            control.clone(),
                            tls.clone(),
                            tx,
                        ));
                    }
                    None => warn!(
                        "gateway: REMORA_DESTINATION_SVC_NAME is unset, so the gateway cannot \
                         authenticate to its control plane for the exports; refusing everything"
                    ),
                }
                Some(Arc::new(Gateway::new(
                    outbound.http(),
                    exports,
                    id.name.clone(),
                )))
            }
            (true, _, _) => {
                warn!(
                    "gateway mode needs an identity and discovery; refusing every gateway request"
                );
                None
            }
            (false, _, _) => None,
        };
        let mut inbound_accept = accept(
            Direction::Inbound,
            cfg.inbound_max_connections,
            cfg.sockets.inbound_accept,
        );
        inbound_accept.peers = PeerShare::new(
            cfg.inbound_max_connections,
            cfg.inbound_peer_share,
            inputs.own.local_peers(),
        );
        let inbound = Inbound::new(
            self.inbound,
            inbound_accept,
            inputs,
            InboundConfig {
                detect_timeout: cfg.detect_timeout,
                early_dial: cfg.early_dial,
                policy: InboundPolicy {
                    default: cfg.default_policy.clone(),
                    ports: cfg.port_policies.clone(),
                    trust_domain,
                    cluster_networks: cfg.cluster_networks.clone(),
                },
                ports: cfg.inbound_ports.clone(),
                admin_port,
                direct_ports: DirectPorts {
                    declared: cfg.inbound_ports.clone(),
                    named: cfg.port_policies.keys().copied().collect(),
                    unrestricted: cfg.direct_ports_unrestricted,
                },
                policy_metrics: self.inbound_policy_metrics.clone(),
                http: cfg.inbound_http,
            },
            gateway,
        );
        let mut debug = Vec::new();
        if let Some(resolver) = self.resolver.clone() {
            debug.push(DebugReport {
                name: "destinations",
                render: Arc::new(move || snapshot_json(&resolver)),
            });
        }
        let admin_state = AdminState {
            registry,
            ready: ready.clone(),
            drain: self.drain.clone(),
            log_level: self.log_level.clone(),
            debug,
            shutdown_endpoint: cfg.shutdown_endpoint,
        };
        let admin = tokio::spawn(admin::serve(self.admin, admin_state));
        let outbound = tokio::spawn(outbound.run());
        let inbound = tokio::spawn(inbound.run());

        // Ready once the listeners are up and, with an identity, once it holds a certificate.
        let readiness = tokio::spawn(mark_ready(ready, self.creds.clone()));
        self.drain.signaled().await;
        let _ = tokio::join!(outbound, inbound);
        let open = self.drain.in_flight();
        info!(
            open,
            grace = ?cfg.shutdown_grace,
            "draining: listeners closed, waiting for open connections"
        );
        if self.drain.wait(cfg.shutdown_grace).await {
            info!("drained");
        } else {
            warn!(
                open = self.drain.in_flight(),
                "grace period over; closing the remaining connections"
            );
        }
        admin.abort();
        readiness.abort();
    }
}

/// How the proxy reaches a control-plane service at `addr` that must present `svc_name`:
/// TLS presenting the proxy's certificate once it has one (anonymous before), or plaintext on
/// loopback without a name to verify.
fn control_tls(
    addr: &remora_runtime::channel::ControlAddr,
    svc_name: Option<&remora_identity::Name>,
    config: &Config,
    creds: Option<&CredsRx>,
) -> Result<ChannelTls, ChannelError> {
    let (Some(server), Some(id)) = (svc_name, &config.identity) else {
        return if addr.is_loopback() {
            Ok(ChannelTls::Plaintext)
        } else {
            Err(ChannelError::NeedsIdentity(addr.clone()))
        };
    };
    let anonymous = remora_identity::tls::anonymous_client(&id.trust_anchors)?;
    let creds = creds.cloned();
    let config: ClientConfigFn = Arc::new(move || {
        creds
            .as_ref()
            .and_then(|c| c.borrow().as_ref().map(|c| c.tls.client.clone()))
            .unwrap_or_else(|| anonymous.clone())
    });
    Ok(ChannelTls::Tls {
        server: server.clone(),
        config,
    })
}

/// The access log writer, when enabled.
fn access_log(
    format: Option<crate::config::AccessLogFormat>,
    out: Option<AccessLogOut>,
) -> Option<AccessLog> {
    let format = format?;
    match AccessLog::spawn(format, out) {
        Ok(log) => Some(log),
        Err(e) => {
            warn!(error = %e, "cannot start the access log writer; access log off");
            None
        }
    }
}

async fn mark_ready(ready: Arc<AtomicBool>, creds: Option<CredsRx>) {
    if let Some(mut creds) = creds {
        info!("waiting for an identity certificate before reporting ready");
        if creds.wait_for(|c| c.is_some()).await.is_err() {
            return;
        }
    }
    ready.store(true, Ordering::Release);
    info!("proxy ready");
}
