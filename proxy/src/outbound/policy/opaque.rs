//! Opaque and TLS routes: a connection that is not HTTP takes its policy's opaque route (a
//! TLS policy's route whose SNIs match the ClientHello's), whose first filter may refuse it
//! (`Forbidden`, `Invalid`: the connection is reset, and counted in
//! `outbound_{tcp,tls}_route_close_total{error}`); otherwise it is forwarded to an endpoint of
//! the route's backend.

use std::net::SocketAddr;
use std::sync::Arc;

use remora_metrics::outbound_route::{CloseError, TcpRouteFamilies};
use tracing::{debug, info, warn};

use super::{OpaqueFilter, OpaqueRoute, OutboundPolicy, TlsRoute};
use crate::outbound::connect::Connection;
use crate::outbound::http::HttpOutbound;
use crate::policy::route::HostScore;
use crate::transport::io::BoxIo;
use crate::transport::tcp::proxy;

/// The TLS route for a ClientHello naming `sni`: the best SNI match (exact over suffix, longer
/// over shorter, a route without SNIs last), the first on a tie.
pub fn tls_route<'a>(routes: &'a [TlsRoute], sni: Option<&str>) -> Option<&'a OpaqueRoute> {
    let mut best: Option<(HostScore, &OpaqueRoute)> = None;
    for r in routes {
        let score = if r.snis.is_empty() {
            Some(HostScore::Any)
        } else {
            sni.and_then(|s| r.snis.iter().filter_map(|m| m.matches_host(s)).max())
        };
        if let Some(s) = score
            && best.as_ref().is_none_or(|(b, _)| s > *b)
        {
            best = Some((s, &r.route));
        }
    }
    best.map(|(_, r)| r)
}

/// Why a route refused a connection, or could not dial it.
#[derive(Debug)]
pub(in crate::outbound) struct Refusal {
    error: CloseError,
    why: std::borrow::Cow<'static, str>,
}

impl Refusal {
    fn new(error: CloseError, why: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Refusal {
            error,
            why: why.into(),
        }
    }
}

impl HttpOutbound {
    /// Forwards an opaque (or TLS) connection to `dst` by `route` of `policy`.
    pub(in crate::outbound) async fn forward_by_route(
        &self,
        io: BoxIo,
        dst: SocketAddr,
        policy: &Arc<OutboundPolicy>,
        route: &OpaqueRoute,
        tls: bool,
    ) {
        let dialled = self.dial_by_route(dst, route).await;
        self.forward_dialled(io, dst, policy, route, tls, dialled)
            .await
    }

    /// Applies `route`'s filters and dials an endpoint of its backend (the early dial of
    /// detection calls this before the client has spoken; nothing is counted here).
    pub(in crate::outbound) async fn dial_by_route(
        &self,
        dst: SocketAddr,
        route: &OpaqueRoute,
    ) -> Result<Connection, Refusal> {
        // Only a route's first filter applies (linkerd2-proxy).
        match route.filters.first() {
            Some(OpaqueFilter::Forbidden) => {
                return Err(Refusal::new(
                    CloseError::Forbidden,
                    "the route forbids connections",
                ));
            }
            Some(OpaqueFilter::Invalid(msg)) => {
                warn!(%dst, message = %msg, "the route's backend is invalid");
                return Err(Refusal::new(
                    CloseError::InvalidBackend,
                    "the route's backend is invalid",
                ));
            }
            None => {}
        }
        let Some((rb, target)) = self.choose(&route.distribution, None) else {
            return Err(Refusal::new(
                CloseError::Unexpected,
                "no backend of the route is available",
            ));
        };
        match rb.filters.first() {
            Some(OpaqueFilter::Forbidden) => {
                return Err(Refusal::new(
                    CloseError::Forbidden,
                    "the backend forbids connections",
                ));
            }
            Some(OpaqueFilter::Invalid(msg)) => {
                warn!(%dst, message = %msg, "the route's backend is invalid");
                return Err(Refusal::new(
                    CloseError::InvalidBackend,
                    "the route's backend is invalid",
                ));
            }
            None => {}
        }
        let mut dest = match self
            .dispatch_backend(
                &rb.backend,
                target,
                crate::discovery::balance::Accrual::never(),
                None,
            )
            .await
        {
            Ok(d) => d,
            Err(e) => return Err(Refusal::new(CloseError::Unexpected, e.to_string())),
        };
        match self.ctx.connector.connect(&mut dest, None).await {
            Ok(conn) => {
                debug!(%dst, endpoint = %conn.addr, backend = %rb.backend.meta, "forwarding by the opaque route");
                Ok(conn)
            }
            Err(e) => {
                warn!(%dst, error = %e, "the connect failed; nothing was sent");
                Err(Refusal::new(CloseError::Unexpected, "the connect failed"))
            }
        }
    }

    /// Forwards `io` over a connection [`Self::dial_by_route`] dialled (or resets it with the
    /// route's refusal), counting the route's connection.
    pub(in crate::outbound) async fn forward_dialled(
        &self,
        io: BoxIo,
        dst: SocketAddr,
        policy: &Arc<OutboundPolicy>,
        route: &OpaqueRoute,
        tls: bool,
        dialled: Result<Connection, Refusal>,
    ) {
        let families: &TcpRouteFamilies = if tls {
            &self.ctx.routes.tls
        } else {
            &self.ctx.routes.tcp
        };
        let m = route.route_metrics(families, &policy.parent, dst);
        m.open();
        match dialled {
            Ok(conn) => {
                proxy(&self.ctx.tcp, io, conn.io, conn.labels, conn.addr).await;
                m.close(None);
            }
            Err(refusal) => {
                info!(%dst, route = %route.meta, error = refusal.error.as_str(), "{}; resetting the connection", refusal.why);
                io.reset();
                m.close(Some(refusal.error));
            }
        }
    }
}
