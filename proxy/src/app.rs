//! Wiring: binds every listener, builds the metrics registry and the shared contexts, and runs
//! the inbound, outbound and admin servers until the drain completes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use remora_metrics::Registry;
use remora_metrics::tcp::{Direction, TcpMetrics};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::{self, Config};
use crate::drain::Drain;
use crate::inbound::Inbound;
use crate::listen::{AcceptCtx, bind};
use crate::orig_dst::LocalIps;
use crate::outbound::Outbound;
use crate::own::OwnAddrs;
use crate::tcp::TcpCtx;

/// A proxy whose listeners are bound, ready to [`run`](Proxy::run).
#[derive(Debug)]
pub struct Proxy {
    config: Config,
    outbound: Vec<TcpListener>,
    inbound: Vec<TcpListener>,
    admin: TcpListener,
    drain: Drain,
}

/// A bind failure, naming the variable that configured the address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({var}): {source}")]
pub struct BindError {
    pub var: &'static str,
    pub addr: SocketAddr,
    pub source: io::Error,
}

fn bind_all(var: &'static str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, BindError> {
    addrs
        .iter()
        .map(|&addr| bind(addr).map_err(|source| BindError { var, addr, source }))
        .collect()
}

fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}

impl Proxy {
    /// Binds the outbound, inbound and admin listeners.
    pub fn bind(config: Config) -> Result<Self, BindError> {
        Ok(Proxy {
            outbound: bind_all(config::OUTBOUND_ADDR, &config.outbound_addrs)?,
            inbound: bind_all(config::INBOUND_ADDR, &config.inbound_addrs)?,
            admin: bind_all(config::ADMIN_ADDR, &[config.admin_addr])?.remove(0),
            config,
            drain: Drain::new(),
        })
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
    pub async fn run(self) {
        let mut registry = Registry::default();
        let tcp_metrics = TcpMetrics::register(&mut registry);
        let registry = Arc::new(registry);
        let ready = Arc::new(AtomicBool::new(false));

        let mut own_listeners = self.outbound_addrs();
        own_listeners.extend(self.inbound_addrs());
        own_listeners.extend(self.admin_addr());
        let own = Arc::new(OwnAddrs::new(own_listeners, LocalIps::new()));

        let cfg = &self.config;
        let accept = |direction, max| AcceptCtx {
            direction,
            limit: Arc::new(Semaphore::new(max)),
            metrics: tcp_metrics.clone(),
            drain: self.drain.clone(),
        };
        let tcp = |direction| TcpCtx {
            direction,
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            metrics: tcp_metrics.clone(),
        };
        let outbound = Outbound::new(
            self.outbound,
            accept(Direction::Outbound, cfg.outbound_max_connections),
            tcp(Direction::Outbound),
            own.clone(),
        );
        let inbound = Inbound::new(
            self.inbound,
            accept(Direction::Inbound, cfg.inbound_max_connections),
            tcp(Direction::Inbound),
            own,
        );
        let admin_state = AdminState {
            registry,
            ready: ready.clone(),
            drain: self.drain.clone(),
        };
        let admin = tokio::spawn(admin::serve(self.admin, admin_state));
        let outbound = tokio::spawn(outbound.run());
        let inbound = tokio::spawn(inbound.run());

        ready.store(true, Ordering::Release);
        info!("proxy ready");
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
    }
}
