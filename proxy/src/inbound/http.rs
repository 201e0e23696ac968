//! Inbound HTTP: requests to the app. Each request is checked against its port's current
//! policy first (its route, authorization, filters and rate limit: `policy::conn`); the proxy
//! then sets `l5d-client-id` from the mTLS peer (and removes one a client forged), restores
//! HTTP/1 for requests a peer proxy upgraded, and sends each request to the app on a pooled
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::RequestBody;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use remora_identity::Name;
use remora_metrics::golden::{HttpGolden, LastRoute, RouteHandle};
use remora_metrics::labels::{PolicyLabels, TargetLabels};
use remora_metrics::tcp::{Direction, Peer, TcpLabels, Tls};
use tokio::time::Instant;

use super::InboundCtx;
use super::policy::ConnPolicy;
use super::policy::conn::Permit;
use crate::error::{self, ProxyError};
use crate::http::memo::Memo;
use crate::http::pool::{ConnectFailure, DialFuture, Key, Kind, Pool, SendError};
use crate::http::record::{self, AccessEntry, Recorded};
use crate::http::upgrade::{is_upgrade, tunnel};
use crate::http::{
    Body, L5D_CLIENT_ID, describe, ensure_absolute, orig_proto, strip_hop_by_hop, watch_errors,
};
use crate::outbound::http::authority;
use crate::tls::mtls::{DialError, no_tls};
use crate::trace::Side;
use crate::transport::forward::Counted;
use crate::transport::io::BoxIo;
use crate::transport::tcp::{ConnectError, connect};

/// What every request of one inbound HTTP connection shares.
#[derive(Debug)]
pub struct InboundConn {
    pub app: SocketAddr,
    /// The mTLS peer's identity.
    pub client: Option<Name>,
    /// `client` as the `l5d-client-id` value every request to the app carries (built once; a
    /// clone shares its bytes).
    client_id: Option<HeaderValue>,
    /// The port's policy, checked per request.
    pub policy: ConnPolicy,
    /// The connection's metric labels (inbound, the app's address, TLS, `client_id`).
    pub labels: TargetLabels,
    /// The last request's permit and its metrics: most requests of a connection take the same
    /// route under the same authorization, so most find their label set without building a
    /// key.
    last: LastRoute<Permit>,
    /// The `Host` value an upgraded request's authority last gave (`crate::http::memo`).
    hosts: Memo<HeaderValue>,
}

impl InboundConn {
    pub fn new(
        app: SocketAddr,
        client: Option<Name>,
        policy: ConnPolicy,
        labels: TargetLabels,
    ) -> Self {
        let client_id = client
            .as_ref()
            .and_then(|id| HeaderValue::from_str(id.as_str()).ok());
        InboundConn {
            app,
            client,
            client_id,
            policy,
            labels,
            last: LastRoute::default(),
            hosts: Memo::default(),
        }
    }

    /// The golden metrics of a request `permit` admitted, labelled as linkerd2-proxy's inbound
    /// labels them: the target, the client's TLS, the server, route and authorization (no
    /// `authority`).
    fn route(&self, golden: &HttpGolden, permit: Permit) -> RouteHandle {
        let same = |a: &Permit, b: &Permit| {
            Arc::ptr_eq(&a.server, &b.server)
                && Arc::ptr_eq(&a.route, &b.route)
                && Arc::ptr_eq(&a.authz, &b.authz)
        };
        self.last.get(golden, permit, same, |permit| {
            golden.route(&TargetLabels {
                policy: Some(Arc::new(PolicyLabels {
                    server: permit.server.clone(),
                    port: self.policy.target.port(),
                    route: permit.route.clone(),
                    authz: permit.authz.clone(),
                })),
                ..self.labels.clone()
            })
        })
    }
}

#[derive(Debug)]
pub struct HttpInbound {
    pub ctx: Arc<InboundCtx>,
    pub pool: Arc<Pool>,
}

impl HttpInbound {
    /// The response the client gets for `err`: logged, counted, and annotated with
    /// `l5d-proxy-error` only for an identified mesh peer.
    fn fail(&self, err: ProxyError, annotate: bool) -> Response<Body> {
        error::respond(
            err,
            Direction::Inbound,
            &self.ctx.inputs.http_metrics,
            annotate,
        )
    }

    /// Serves one request of `conn`: policy, the app, and the request's golden metrics and
    /// access log line.
    pub async fn serve(
        &self,
        conn: &InboundConn,
        mut req: Request<RequestBody>,
    ) -> Response<Recorded> {
        let start = Instant::now();
        let mut span = self
            .ctx
            .inputs
            .tracer
            .as_ref()
            .and_then(|t| t.start(&mut req, Side::Inbound));
        let access = self.ctx.inputs.access_log.as_ref().map(|log| {
            Box::new(AccessEntry {
                log: log.clone(),
                time: std::time::SystemTime::now(),
                direction: "inbound",
                client_id: conn.labels.peer_id.clone(),
                authority: authority(&req),
                method: req.method().clone(),
                version: req.version(),
                path: req.uri().path().to_string(),
                endpoint: Some(conn.app),
                attempts: 1,
            })
        });
        let grpc = is_grpc(&req);
        let (rsp, route, matched) = match conn.policy.check(&mut req) {
            Ok(permit) => {
                let matched = span.as_ref().map(|_| permit.route.clone());
                let route = conn.route(&self.ctx.inputs.http_metrics.golden, permit);
                let rsp = self.handle(conn, req).await;
                (rsp, Some(route), matched)
            }
            // As in linkerd2-proxy, what the policy answers is not in the golden metrics
            // (`inbound_http_authz_deny_total`, `inbound_http_route_not_found_total`,
            // `inbound_http_local_ratelimit_total` and `http_proxy_errors_total` count it).
            Err(refusal) => {
                let rsp = error::respond_refusal(
                    refusal,
                    &self.ctx.inputs.http_metrics,
                    grpc,
                    conn.client.is_some(),
                );
                (rsp, None, None)
            }
        };
        if let Some(mut span) = span.take() {
            if let Some(id) = &conn.client {
                span.set_str("l5d.client_id", id.as_str());
            }
            span.set_str("network.peer.address", &conn.policy.client.addr.to_string());
            if let Some(r) = &matched {
                span.route(&r.kind, &r.name);
            }
            let error = rsp
                .extensions()
                .get::<crate::error::ErrorReason>()
                .map(|e| e.0);
            span.finish(&rsp, error);
        }
        record::finish(route, start, rsp, access)
    }

    fn dial(&self, app: SocketAddr) -> DialFuture {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let io = connect(app, ctx.inputs.inbound_connect)
                .await
                .map_err(DialError::Connect)?;
            let labels = TcpLabels::new(Direction::Inbound, Peer::Dst)
                .with_tls(Tls::NoIdentity(no_tls::LOOPBACK), None)
                .with_target(app, None, None);
            let io: BoxIo = Box::new(Counted::new(
                Box::new(io) as BoxIo,
                ctx.tcp.metrics.open(labels),
                None,
            ));
            Ok(io)
        })
    }

    /// Handles one request of `conn` for its app, from a peer whose identity is
    /// `conn.client_id` (the `l5d-client-id` value, if it authenticated with mTLS).
    pub async fn handle(
        &self,
        conn: &InboundConn,
        mut req: Request<RequestBody>,
    ) -> Response<Body> {
        let (app, client_id) = (conn.app, conn.client_id.as_ref());
        let headers = req.headers_mut();
        match client_id {
            Some(v) => {
                headers.insert(L5D_CLIENT_ID, v.clone());
            }
            None => {
                headers.remove(L5D_CLIENT_ID);
            }
        }
        let annotate = client_id.is_some();
        if is_upgrade(&req) {
            let io = match self.dial(app).await {
                Ok(io) => io,
                Err(e) => {
                    let failure = e.into();
                    return self.fail(ProxyError::Connect { addr: app, failure }, annotate);
                }
            };
            return match tunnel(req, io).await {
                Ok(rsp) => rsp,
                Err(e) => self.fail(ProxyError::Upgrade(e), annotate),
            };
        }
        let downgraded = orig_proto::downgrade_with(&mut req, &conn.hosts);
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
            ensure_absolute(&mut req, app);
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
                Response::from_parts(parts, body.into())
            }
            Err(_) if body_failed.get() => self.fail(ProxyError::MalformedBody, annotate),
            Err(e) => {
                let detail = describe(&e);
                // linkerd2-proxy answers a connect timeout 504, any other failure 502.
                let err = if connect_timed_out(&e) {
                    ProxyError::AppTimeout { addr: app, detail }
                } else if e.never_processed() {
                    // The app never took it (refused, reset, closed before answering): the
                    // peer's proxy may send it to another replica.
                    ProxyError::AppNotReached { addr: app, detail }
                } else {
                    ProxyError::App { addr: app, detail }
                };
                self.fail(err, annotate)
            }
        }
    }
}

/// Whether no connection to the app could be made within the connect timeout.
fn connect_timed_out(e: &SendError) -> bool {
    matches!(
        e,
        SendError::Connect(
            ConnectFailure::Dial(DialError::Connect(ConnectError::Timeout { .. })),
            _
        )
    )
}

/// Whether a request is gRPC (HTTP/2 with a `application/grpc*` content type): refusals are
/// then answered in gRPC's terms.
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
