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
        let families: &TcpRouteFamilies = if tls {
            &self.ctx.routes.tls
        } else {
            &self.ctx.routes.tcp
        };
        let m = route.route_metrics(families, &policy.parent, dst);
        m.open();
        let refused = |io: BoxIo, error: CloseError, why: &str| {
            info!(%dst, route = %route.meta, error = error.as_str(), "{why}; resetting the connection");
            io.reset();
            m.close(Some(error));
        };
        // Only a route's first filter applies (linkerd2-proxy).
        match route.filters.first() {
            Some(OpaqueFilter::Forbidden) => {
                return refused(io, CloseError::Forbidden, "the route forbids connections");
            }
            Some(OpaqueFilter::Invalid(msg)) => {
                warn!(%dst, message = %msg, "the route's backend is invalid");
                return refused(
                    io,
                    CloseError::InvalidBackend,
                    "the route's backend is invalid",
                );
            }
            None => {}
        }
        let Some((rb, target)) = self.choose(&route.distribution) else {
            return refused(
                io,
                CloseError::Unexpected,
                "no backend of the route is available",
            );
        };
        match rb.filters.first() {
            Some(OpaqueFilter::Forbidden) => {
                return refused(io, CloseError::Forbidden, "the backend forbids connections");
            }
            Some(OpaqueFilter::Invalid(msg)) => {
                warn!(%dst, message = %msg, "the route's backend is invalid");
                return refused(
                    io,
                    CloseError::InvalidBackend,
                    "the route's backend is invalid",
                );
            }
            None => {}
        }
        let mut dest = match self
            .dispatch_backend(
                &rb.backend,
                target,
                crate::discovery::balance::Accrual::never(),
            )
            .await
        {
            Ok(d) => d,
            Err(e) => return refused(io, CloseError::Unexpected, &e.to_string()),
        };
        let ctx = &self.ctx;
        match ctx.connector.connect(&mut dest, None).await {
            Ok(conn) => {
                debug!(%dst, endpoint = %conn.addr, backend = %rb.backend.meta, "forwarding by the opaque route");
                proxy(&ctx.tcp, io, conn.io, conn.labels, conn.addr).await;
                m.close(None);
            }
            Err(e) => {
                warn!(%dst, error = %e, "closing the client connection; nothing was sent");
                io.reset();
                m.close(Some(CloseError::Unexpected));
            }
        }
    }
}
