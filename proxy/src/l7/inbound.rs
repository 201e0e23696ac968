//! Inbound HTTP: requests to the app. The proxy sets `l5d-client-id` from the mTLS peer (and
//! removes one a client forged), restores HTTP/1 for requests a peer proxy upgraded, and sends
//! each request to the app on a pooled connection.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use remora_identity::Name;
use remora_metrics::tcp::{Direction, Peer, TcpLabels, Tls};
use tracing::warn;

use super::pool::{DialFuture, Key, Kind, Pool};
use super::upgrade::{is_upgrade, tunnel};
use super::{
    Body, L5D_CLIENT_ID, boxed, describe, ensure_absolute, error_response, orig_proto,
    strip_hop_by_hop, watch_errors,
};
use crate::forward::Counted;
use crate::inbound::InboundCtx;
use crate::io::BoxIo;
use crate::mtls::no_tls;
use crate::tcp::connect;

#[derive(Debug)]
pub struct HttpInbound {
    pub ctx: Arc<InboundCtx>,
    pub pool: Arc<Pool>,
}

impl HttpInbound {
    /// A response the proxy makes itself: logged, counted, and annotated with
    /// `l5d-proxy-error` only for an identified mesh peer.
    fn fail(
        &self,
        status: StatusCode,
        reason: &'static str,
        detail: &str,
        annotate: bool,
    ) -> Response<Body> {
        warn!(
            status = status.as_u16(),
            reason, detail, "answering the client with an error"
        );
        self.ctx
            .http_metrics
            .error(Direction::Inbound, status.as_u16(), reason);
        error_response(status, detail, annotate)
    }

    fn dial(&self, app: SocketAddr) -> DialFuture {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let io = connect(app, ctx.tcp.connect_timeout)
                .await
                .map_err(|e| e.to_string())?;
            let labels = TcpLabels::new(Direction::Inbound, Peer::Dst)
                .with_tls(Tls::NoIdentity(no_tls::LOOPBACK), None);
            let io: BoxIo = Box::new(Counted::new(
                Box::new(io) as BoxIo,
                ctx.tcp.metrics.open(labels),
                None,
            ));
            Ok(io)
        })
    }

    /// Handles one request for the app at `app`, from a peer identified as `client` (if it
    /// authenticated with mTLS).
    pub async fn handle(
        &self,
        app: SocketAddr,
        client: Option<&Name>,
        mut req: Request<Incoming>,
    ) -> Response<Body> {
        let headers = req.headers_mut();
        headers.remove(L5D_CLIENT_ID);
        if let Some(id) = client
            && let Ok(v) = HeaderValue::from_str(id.as_str())
        {
            headers.insert(L5D_CLIENT_ID, v);
        }
        let annotate = client.is_some();
        if is_upgrade(&req) {
            let io = match self.dial(app).await {
                Ok(io) => io,
                Err(e) => return self.fail(StatusCode::BAD_GATEWAY, "connect", &e, annotate),
            };
            return match tunnel(req, io).await {
                Ok(rsp) => rsp,
                Err(e) => self.fail(StatusCode::BAD_GATEWAY, "upgrade", &e, annotate),
            };
        }
        let downgraded = orig_proto::downgrade(&mut req);
        strip_hop_by_hop(req.headers_mut());
        let kind = if req.version() == Version::HTTP_2 {
            Kind::Http2
        } else {
            Kind::Http1
        };
        let key = Key {
            addr: app,
            kind,
            identity: None,
        };
        if kind == Kind::Http2 {
            ensure_absolute(&mut req, &app.to_string());
        }
        let (parts, body) = req.into_parts();
        let (body, body_failed) = watch_errors(body);
        let req = Request::from_parts(parts, body);
        match self.pool.send(&key, || self.dial(app), req).await {
            Ok(mut rsp) => {
                strip_hop_by_hop(rsp.headers_mut());
                if downgraded {
                    orig_proto::mark(&mut rsp);
                    *rsp.version_mut() = Version::HTTP_2;
                }
                let (parts, body) = rsp.into_parts();
                Response::from_parts(parts, boxed(body))
            }
            Err(_) if body_failed.load(std::sync::atomic::Ordering::Relaxed) => self.fail(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "malformed request body",
                annotate,
            ),
            Err(e) => self.fail(
                StatusCode::BAD_GATEWAY,
                "app",
                &format!("the app at {app}: {}", describe(&e)),
                annotate,
            ),
        }
    }
}
