//! Outbound HTTP: each request is routed by its authority (`Host` / `:authority`) through
//! discovery, falling back to the connection's original destination, and sent to one of the
//! target's endpoints. A meshed endpoint (identity + HTTP/2 hint) gets every request over one
//! mTLS HTTP/2 connection, HTTP/1 requests upgraded with `l5d-orig-proto`.
//!
//! ```text
//! handle ─► route: authority via discovery ─► split (dst_overrides) ─► balancer pick
//!               else the original destination; explicit names through DNS; never a loop
//!        ─► dispatch: the profile route's timeout around the attempts (super::retry)
//!        ─► golden metrics and the access log (crate::http::record)
//! ```

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::http::RequestBody;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, header};
use remora_metrics::labels::TargetLabels;
use remora_metrics::tcp::{Direction, Tls};
use tokio::time::Instant;
use tracing::debug;

use super::OutboundCtx;
use super::connect::Destination;
use super::policy::PolicyTarget;
use super::policy::http::ConnPolicies;
use super::retry::Attempts;
use crate::discovery::{Endpoint, Pick, Resolution, Target};
use crate::error::{self, ProxyError, RemoteClose};
use crate::http::Body;
use crate::http::memo::Memo;
use crate::http::pool::{DialFuture, Pool};
use crate::http::record::{self, AccessEntry, Recorded};
use crate::http::server::CloseConnection;
use crate::http::upgrade::{is_upgrade, tunnel};
use crate::inputs::Discovery;
use crate::tls::mtls::no_tls;
use crate::trace::Side;
use crate::transport::header::SessionProtocol;

/// The outbound HTTP router of one proxy.
#[derive(Debug)]
pub struct HttpOutbound {
    pub ctx: Arc<OutboundCtx>,
    pub pool: Arc<Pool>,
    /// The state of the traffic split's (and the route distributions') random draws.
    pub(super) rng: AtomicU64,
}

/// The socket address an authority names when its host is an IP literal.
fn literal(authority: &str) -> Option<SocketAddr> {
    authority.parse().ok()
}

/// The request's authority as `host:port` (port 80 when absent).
pub fn authority<B>(req: &Request<B>) -> Option<Arc<str>> {
    authority_with(req, &Memo::default())
}

/// As [`authority`], through the connection's memo of its last one.
pub fn authority_with<B>(req: &Request<B>, memo: &Memo<Arc<str>>) -> Option<Arc<str>> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    memo.get(raw, |raw| {
        let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
        Some(with_port(raw))
    })
}

/// What the requests of one client connection keep for the next: what it made of the last
/// authority (see `crate::http::memo`).
#[derive(Debug, Default)]
pub struct ConnMemo {
    /// The authority as `host:port`.
    pub(super) authority: Memo<Arc<str>>,
    /// An explicit request's `Host` value, from its absolute URI's authority.
    pub(super) host: Memo<HeaderValue>,
    /// The authority an HTTP/1 request upgraded for a meshed peer takes from its `Host`
    /// (`orig_proto::upgrade_with`).
    pub(super) upgraded: Memo<Authority>,
}

/// Ingress mode's routing header: the `host:port` a request is for, whatever its authority.
pub const DST_OVERRIDE: &str = "l5d-dst-override";

/// In ingress mode, the request's `l5d-dst-override` (removed from the request): `Ok(None)`
/// when there is none, `Err` when it is not a `host:port` authority.
fn take_dst_override<B>(req: &mut Request<B>) -> Result<Option<Arc<str>>, ProxyError> {
    let Some(v) = req.headers_mut().remove(DST_OVERRIDE) else {
        return Ok(None);
    };
    let bad = || ProxyError::BadRequest("l5d-dst-override is not a valid host:port");
    let s = v.to_str().map_err(|_| bad())?;
    let a: http::uri::Authority = s.parse().map_err(|_| bad())?;
    if a.port_u16().is_none() || a.as_str().contains('@') {
        return Err(bad());
    }
    Ok(Some(Arc::from(a.as_str())))
}

fn with_port(raw: &str) -> Arc<str> {
    if let Some((_, after)) = raw.strip_prefix('[').and_then(|r| r.split_once(']')) {
        return if after.starts_with(':') {
            Arc::from(raw)
        } else {
            Arc::from(format!("{raw}:80"))
        };
    }
    match raw.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => Arc::from(raw),
        _ => Arc::from(format!("{raw}:80")),
    }
}

/// The target whose policy a request of an explicit or ingress connection follows: ingress
/// mode's `l5d-dst-override`, else the original destination; explicit mode's authority (an IP
/// literal is an address).
fn policy_target(
    orig: Option<SocketAddr>,
    authority: Option<&Arc<str>>,
    overridden: bool,
    ingress: bool,
) -> Option<PolicyTarget> {
    if ingress {
        return match (overridden, authority, orig) {
            (true, Some(a), _) => Some(PolicyTarget::Authority(a.clone())),
            (_, _, Some(o)) => Some(PolicyTarget::Addr(o)),
            _ => None,
        };
    }
    if let Some(o) = orig {
        return Some(PolicyTarget::Addr(o));
    }
    let a = authority?;
    Some(match literal(a) {
        Some(addr) => PolicyTarget::Addr(addr),
        None => PolicyTarget::Authority(a.clone()),
    })
}

/// Closes the pooled connections to each endpoint discovery removes, for as long as the pool
/// lives: a connection to a removed pod is never reused for the address's next owner.
fn forget_removed(pool: &Arc<Pool>, mut removed: tokio::sync::broadcast::Receiver<SocketAddr>) {
    let pool = Arc::downgrade(pool);
    tokio::spawn(async move {
        loop {
            let addr = match removed.recv().await {
                Ok(addr) => addr,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    debug!(missed = n, "fell behind discovery's removed endpoints");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(pool) = pool.upgrade() else { return };
            debug!(%addr, "discovery removed the endpoint; closing its pooled connections");
            pool.forget(addr);
        }
    });
}

/// Where a request went, as far as it got: the last attempt's endpoint and the attempt count.
#[derive(Debug, Default)]
pub(super) struct Dispatched<'a> {
    /// The client connection's memo, when the request came on one.
    pub memo: Option<&'a ConnMemo>,
    pub addr: Option<SocketAddr>,
    pub ep: Option<Arc<Endpoint>>,
    pub attempts: u32,
    /// Whether the request is traced: then the policy route it took is kept in `route`.
    pub traced: bool,
    pub route: Option<Arc<remora_metrics::outbound_route::ObjectRef>>,
}

impl HttpOutbound {
    pub fn new(ctx: Arc<OutboundCtx>) -> Self {
        let pool = Pool::with_evictor(ctx.inputs.pool());
        if let Some(d) = &ctx.inputs.discovery {
            forget_removed(&pool, d.resolver.removed());
        }
        HttpOutbound {
            pool,
            rng: AtomicU64::new(
                std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8) | 1,
            ),
            ctx,
        }
    }

    /// The response the app gets for `err`: logged, counted, annotated with `l5d-proxy-error`.
    pub(super) fn fail(&self, err: ProxyError) -> Response<Body> {
        error::respond(
            err,
            Direction::Outbound,
            &self.ctx.inputs.http_metrics,
            true,
        )
    }

    /// Traffic split and failover, from the target's profile (`dst_overrides`): a backend of
    /// weight > 0 is chosen in proportion to its weight among those that may take a request
    /// (an available endpoint, or still resolving); when none may, the weight-0 backends are
    /// tried in their listed order. `None` when the profile splits nothing.
    async fn split(
        &self,
        d: &Discovery,
        apex: &str,
        target: &Target,
    ) -> Option<Result<Destination, ProxyError>> {
        let profile = target.profile.borrow().clone()?;
        if profile.backends.is_empty() {
            return None;
        }
        let backends: Vec<(Target, &str, u32)> = profile
            .backends
            .iter()
            .map(|(a, w)| (d.resolver.resolve(a), a.as_str(), *w))
            .collect();
        let usable = |t: &Target| match &*t.endpoints.borrow() {
            Resolution::Endpoints(eps) => !eps.is_empty() && t.balancer.any_available(eps),
            Resolution::Pending => true,
            Resolution::Unknown | Resolution::Unavailable => false,
        };
        let weighted: Vec<&(Target, &str, u32)> = backends
            .iter()
            .filter(|b| b.2 > 0 && usable(&b.0))
            .collect();
        let chosen = if weighted.is_empty() {
            let failover = backends.iter().find(|b| b.2 == 0 && usable(&b.0));
            if let Some(f) = failover {
                debug!(%apex, backend = f.1, "no weighted backend is healthy: failing over");
            }
            failover
        } else {
            let total: u64 = weighted.iter().map(|b| u64::from(b.2)).sum();
            let mut r = crate::discovery::balance::xorshift(&self.rng) % total.max(1);
            weighted
                .iter()
                .find(|b| {
                    let w = u64::from(b.2);
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
                .copied()
        };
        let Some((backend, authority, _)) = chosen else {
            return Some(Err(ProxyError::NoEndpoints(apex.to_string())));
        };
        let mut backend = backend.clone();
        Some(match backend.pick(d.timeout).await {
            Pick::Endpoint(ep, picked) => Ok(Destination::picked(ep, picked, Some(backend))),
            Pick::NoEndpoints | Pick::AsIs => Err(ProxyError::NoEndpoints(authority.to_string())),
        })
    }

    /// Where a request (or CONNECT tunnel) for `authority` goes: discovery by name (not an IP
    /// literal), then discovery by `orig` (the original destination, or an explicit request's IP
    /// literal), then `orig` itself; with neither, the name through DNS (explicit mode). Never
    /// one of the proxy's own listeners.
    pub(super) async fn route(
        &self,
        orig: Option<SocketAddr>,
        authority: Option<&str>,
    ) -> Result<Destination, ProxyError> {
        let dest = self.resolve(orig, authority).await?;
        if self.ctx.inputs.own.is_own_listener(dest.addr) {
            return Err(ProxyError::Loop(dest.addr));
        }
        Ok(dest)
    }

    async fn resolve(
        &self,
        orig: Option<SocketAddr>,
        authority: Option<&str>,
    ) -> Result<Destination, ProxyError> {
        // An explicit request naming an IP literal is addressed to it, as a redirected one is.
        let authority_addr = authority.and_then(literal);
        let orig = orig.or(authority_addr);
        // By authority first (a name, not an IP literal), then by the original destination
        // (written out only when the name did not resolve: most requests stop at their name).
        let by_name = authority.filter(|_| authority_addr.is_none());
        if let Some(d) = &self.ctx.inputs.discovery {
            let targets = (by_name.map(Cow::Borrowed).into_iter())
                .chain(orig.into_iter().map(|o| Cow::Owned(o.to_string())));
            for target in targets {
                let mut resolved = d.resolver.resolve(&target);
                if let Some(dest) = self.split(d, &target, &resolved).await {
                    return dest;
                }
                match resolved.pick(d.timeout).await {
                    Pick::Endpoint(ep, picked) => {
                        return Ok(Destination::picked(ep, picked, Some(resolved)));
                    }
                    Pick::NoEndpoints => return Err(ProxyError::NoEndpoints(target.into_owned())),
                    Pick::AsIs => continue,
                }
            }
        }
        if let Some(orig) = orig {
            return Ok(Destination::as_is(orig));
        }
        let Some(name) = by_name else {
            return Err(ProxyError::Unresolvable {
                name: String::new(),
                why: "no authority".into(),
            });
        };
        let unresolvable = |why: String| ProxyError::Unresolvable {
            name: name.to_string(),
            why,
        };
        let lookup = tokio::net::lookup_host(name);
        match tokio::time::timeout(self.ctx.inputs.outbound_connect.timeout, lookup).await {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(addr) => Ok(Destination::as_is(addr)),
                None => Err(unresolvable("no addresses".into())),
            },
            Ok(Err(e)) => Err(unresolvable(e.to_string())),
            Err(_) => Err(unresolvable("DNS lookup timed out".into())),
        }
    }

    /// A new client connection to `addr` (as `ep`) for the pool, through the connector.
    pub(super) fn dial(
        &self,
        addr: SocketAddr,
        ep: Option<Arc<Endpoint>>,
        protocol: Option<SessionProtocol>,
    ) -> DialFuture {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let mut dest = Destination {
                addr,
                endpoint: ep,
                picked: None,
                target: None,
            };
            let conn = ctx.connector.connect(&mut dest, protocol).await?;
            Ok(Box::new(conn.counted(&ctx.inputs, None)) as crate::transport::io::BoxIo)
        })
    }

    /// Handles one request of a connection whose original destination is `orig` (`None` for an
    /// explicit connection, whose requests name their target).
    pub async fn handle(
        &self,
        orig: Option<SocketAddr>,
        req: Request<RequestBody>,
    ) -> Response<Recorded> {
        self.handle_with(orig, &ConnPolicies::None, &ConnMemo::default(), req)
            .await
    }

    /// As [`handle`](Self::handle), routing by the outbound policy `policies` finds for the
    /// request, if any; `memo` is the connection's.
    pub async fn handle_with(
        &self,
        orig: Option<SocketAddr>,
        policies: &ConnPolicies,
        memo: &ConnMemo,
        mut req: Request<RequestBody>,
    ) -> Response<Recorded> {
        let start = Instant::now();
        let mut overridden = false;
        let authority = if self.ctx.config.ingress {
            match take_dst_override(&mut req) {
                Ok(Some(target)) => {
                    overridden = true;
                    Some(target)
                }
                Ok(None) => authority_with(&req, &memo.authority),
                Err(e) => return self.fail(e).map(Recorded::from),
            }
        } else {
            authority_with(&req, &memo.authority)
        };
        let policy = match policies {
            ConnPolicies::None => None,
            ConnPolicies::Fixed(conn) if conn.profile_overrides() => None,
            _ => {
                let named = policy_target(
                    orig,
                    authority.as_ref(),
                    overridden,
                    self.ctx.config.ingress,
                );
                policies.policy(self.ctx.policy.as_ref(), named).await
            }
        };
        let inputs = &self.ctx.inputs;
        let span = inputs
            .tracer
            .as_ref()
            .and_then(|t| t.start(&mut req, Side::Outbound));
        let mut access = inputs.access_log.as_ref().map(|log| {
            Box::new(AccessEntry {
                log: log.clone(),
                time: std::time::SystemTime::now(),
                direction: "outbound",
                client_id: inputs.tls.now().map(|c| Arc::from(c.name.as_str())),
                authority: authority.clone(),
                method: req.method().clone(),
                version: req.version(),
                path: req.uri().path().to_string(),
                endpoint: None,
                attempts: 0,
            })
        });
        let mut done = Dispatched {
            memo: Some(memo),
            traced: span.is_some(),
            ..Dispatched::default()
        };
        let rsp = match policy {
            // Upgrades and CONNECT keep their own path (a tunnel after the answer).
            Some(p) if !is_upgrade(&req) && req.method() != http::Method::CONNECT => {
                match self.route_by_policy(&p, req, &mut done).await {
                    Ok(rsp) => rsp,
                    Err(req) => {
                        self.dispatch(orig, authority.as_deref(), req, &mut done)
                            .await
                    }
                }
            }
            _ => {
                self.dispatch(orig, authority.as_deref(), req, &mut done)
                    .await
            }
        };
        let rsp = close_after_remote(rsp, orig, authority.as_deref(), &done);
        let ep = done.ep.as_deref();
        let labels = TargetLabels {
            authority,
            target_addr: done.addr,
            tls: match ep.and_then(|e| e.server_id.as_ref()) {
                Some(_) => Tls::Established,
                None => Tls::NoIdentity(no_tls::NOT_PROVIDED_BY_DISCOVERY),
            },
            peer_id: ep.and_then(|e| e.server_id.clone()),
            dst: ep.map(|e| e.dst_labels.clone()),
            ..TargetLabels::new(Direction::Outbound)
        };
        // Looked up for every request, not kept per connection as the inbound's is: the label
        // set names the endpoint, which the balancer changes from request to request.
        let route = inputs.http_metrics.golden.route(&labels);
        if let Some(a) = access.as_mut() {
            a.endpoint = done.addr;
            a.attempts = done.attempts;
        }
        if let Some(mut span) = span {
            if let Some(id) = ep.and_then(|e| e.server_id.as_deref()) {
                span.set_str("l5d.server_id", id);
            }
            if let Some(addr) = done.addr {
                span.peer_addr(addr);
            }
            if let Some(r) = &done.route {
                span.route(&r.kind, &r.name);
            }
            let error = rsp
                .extensions()
                .get::<crate::error::ErrorReason>()
                .map(|e| e.0);
            span.finish(&rsp, error);
        }
        record::finish(Some(route), start, rsp, access)
    }

    async fn dispatch(
        &self,
        orig: Option<SocketAddr>,
        authority: Option<&str>,
        req: Request<RequestBody>,
        done: &mut Dispatched<'_>,
    ) -> Response<Body> {
        let dest = match orig {
            // A CONNECT that was redirected here is for the upstream proxy the app dialled.
            Some(orig) if req.method() == http::Method::CONNECT => Ok(Destination::as_is(orig)),
            _ => self.route(orig, authority).await,
        };
        let dest = match dest {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        done.addr = Some(dest.addr);
        done.ep = dest.endpoint.clone();
        done.attempts = 1;
        if is_upgrade(&req) {
            let addr = dest.addr;
            let io = match self
                .dial(addr, dest.endpoint, Some(SessionProtocol::Http1))
                .await
            {
                Ok(io) => io,
                Err(e) => {
                    return self.fail(ProxyError::Connect {
                        addr,
                        failure: e.into(),
                    });
                }
            };
            return match tunnel(req, io).await {
                Ok(rsp) => rsp,
                Err(e) => self.fail(ProxyError::Upgrade(e)),
            };
        }
        let attempts = Attempts::new(dest, &req, self.ctx.config.request_timeout);
        self.run(req, attempts, done).await
    }
}

/// Closes the app's connection after a meshed peer's `l5d-proxy-connection: close`
/// ([`RemoteClose`]) when the request went to the endpoint the app addressed itself (its
/// original destination, or an explicit request's IP literal): the app chose that replica
/// and should choose again. A request the proxy balanced over a service's endpoints keeps the
/// connection, as linkerd2-proxy's balancer does (the balancer picks again).
fn close_after_remote(
    mut rsp: Response<Body>,
    orig: Option<SocketAddr>,
    authority: Option<&str>,
    done: &Dispatched<'_>,
) -> Response<Body> {
    if rsp.extensions_mut().remove::<RemoteClose>().is_none() {
        return rsp;
    }
    let addressed = orig.or_else(|| authority.and_then(literal));
    if done.addr.is_some() && done.addr == addressed {
        debug!(endpoint = ?done.addr, "the peer proxy asked to close: closing the app's connection");
        rsp.extensions_mut().insert(CloseConnection);
    } else {
        debug!(endpoint = ?done.addr, "the peer proxy asked to close; the request was balanced: keeping the app's connection");
    }
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_response(close: &str) -> Response<Body> {
        Response::builder()
            .status(502)
            .header(
                crate::http::L5D_PROXY_ERROR,
                "the app at 10.0.0.5:8080: refused",
            )
            .header(crate::http::L5D_PROXY_CONNECTION, close)
            .body(crate::http::boxed(http_body_util::Full::new(
                bytes::Bytes::new(),
            )))
            .unwrap()
    }

    fn dispatched(addr: &str) -> Dispatched<'static> {
        Dispatched {
            addr: Some(addr.parse().unwrap()),
            attempts: 1,
            ..Dispatched::default()
        }
    }

    #[test]
    fn a_peers_close_closes_the_apps_connection_only_to_an_endpoint_it_addressed() {
        use super::super::retry::clean;
        let pod: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let closes = |rsp: &Response<Body>| rsp.extensions().get::<CloseConnection>().is_some();
        // The headers never reach the app, meshed or not.
        for meshed in [true, false] {
            let rsp = clean(peer_response("close"), meshed, false);
            assert!(rsp.headers().get(crate::http::L5D_PROXY_ERROR).is_none());
            assert!(
                rsp.headers()
                    .get(crate::http::L5D_PROXY_CONNECTION)
                    .is_none()
            );
            assert_eq!(rsp.extensions().get::<RemoteClose>().is_some(), meshed);
        }
        // The app dialled the pod: its connection closes.
        let rsp = clean(peer_response("close"), true, false);
        let rsp = close_after_remote(rsp, Some(pod), None, &dispatched("10.0.0.5:8080"));
        assert!(closes(&rsp));
        assert!(rsp.extensions().get::<RemoteClose>().is_none());
        // An explicit request naming the pod's address: the same.
        let rsp = clean(peer_response("close"), true, false);
        let rsp = close_after_remote(
            rsp,
            None,
            Some("10.0.0.5:8080"),
            &dispatched("10.0.0.5:8080"),
        );
        assert!(closes(&rsp));
        // Balanced over a service's endpoints: the connection stays.
        let rsp = clean(peer_response("close"), true, false);
        let vip: SocketAddr = "10.96.0.80:80".parse().unwrap();
        let rsp = close_after_remote(rsp, Some(vip), Some("web:80"), &dispatched("10.0.0.5:8080"));
        assert!(!closes(&rsp));
        // Another value than `close`, or an unmeshed server: nothing to do.
        let rsp = clean(peer_response("keep-alive"), true, false);
        let rsp = close_after_remote(rsp, Some(pod), None, &dispatched("10.0.0.5:8080"));
        assert!(!closes(&rsp));
        let rsp = clean(peer_response("close"), false, false);
        let rsp = close_after_remote(rsp, Some(pod), None, &dispatched("10.0.0.5:8080"));
        assert!(!closes(&rsp));
    }

    #[test]
    fn each_proxy_header_is_removed_alone_and_the_apps_headers_stay() {
        use super::super::retry::clean;
        use crate::http::{L5D_PROXY_CONNECTION, L5D_PROXY_ERROR};
        let with = |headers: &[(&http::HeaderName, &str)]| {
            let mut rsp = Response::new(Body::Empty);
            for (name, value) in headers {
                rsp.headers_mut()
                    .append((*name).clone(), value.parse().unwrap());
            }
            rsp.headers_mut()
                .insert("l5d-app-header", "kept".parse().unwrap());
            rsp.headers_mut()
                .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
            rsp
        };
        for headers in [
            &[(&L5D_PROXY_ERROR, "refused")][..],
            &[(&L5D_PROXY_CONNECTION, "close")][..],
            &[][..],
        ] {
            let rsp = clean(with(headers), true, false);
            assert!(rsp.headers().get(L5D_PROXY_ERROR).is_none());
            assert!(rsp.headers().get(L5D_PROXY_CONNECTION).is_none());
            assert_eq!(rsp.headers()["l5d-app-header"], "kept");
            assert_eq!(rsp.headers()[header::CONTENT_TYPE], "text/plain");
            assert_eq!(rsp.headers().len(), 2);
            let closed = headers.iter().any(|(n, _)| **n == L5D_PROXY_CONNECTION);
            assert_eq!(rsp.extensions().get::<RemoteClose>().is_some(), closed);
        }
    }

    #[test]
    fn authorities_get_a_port() {
        assert_eq!(
            &*with_port("web.shop.svc.cluster.local"),
            "web.shop.svc.cluster.local:80"
        );
        assert_eq!(&*with_port("web:8080"), "web:8080");
        assert_eq!(&*with_port("[fd00::1]"), "[fd00::1]:80");
        assert_eq!(&*with_port("[fd00::1]:81"), "[fd00::1]:81");
        let req = Request::builder()
            .uri("/")
            .header("host", "user@a.b:9")
            .body(())
            .unwrap();
        assert_eq!(&*authority(&req).unwrap(), "a.b:9");
    }

    #[test]
    fn a_connections_requests_get_the_authority_each_names() {
        // One memo, as on one client connection: the URI's authority wins over `Host`.
        let memo = Memo::default();
        for (uri, host, want) in [
            ("/", Some("web"), "web:80"),
            ("/", Some("web"), "web:80"),
            ("http://api:8080/", Some("web"), "api:8080"),
            ("/", Some("user@web:81"), "web:81"),
            ("/", Some("web"), "web:80"),
        ] {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let req = b.body(()).unwrap();
            assert_eq!(
                authority_with(&req, &memo).as_deref(),
                Some(want),
                "{uri} {host:?}"
            );
        }
        let none = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(authority_with(&none, &memo), None);
    }

    #[test]
    fn ingress_mode_takes_its_target_from_l5d_dst_override() {
        let mut req = Request::builder()
            .uri("/")
            .header("host", "ingress.example.com")
            .header(DST_OVERRIDE, "web.shop.svc.cluster.local:8080")
            .body(())
            .unwrap();
        let target = take_dst_override(&mut req).unwrap();
        assert_eq!(target.as_deref(), Some("web.shop.svc.cluster.local:8080"));
        assert!(
            req.headers().get(DST_OVERRIDE).is_none(),
            "removed before forwarding"
        );
        let mut plain = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(take_dst_override(&mut plain).unwrap(), None);
        for bad in [
            "web.shop.svc.cluster.local",
            "user@web:80",
            "web:http",
            "a b:80",
        ] {
            let mut req = Request::builder()
                .uri("/")
                .header(DST_OVERRIDE, bad)
                .body(())
                .unwrap();
            assert!(take_dst_override(&mut req).is_err(), "{bad}");
        }
    }
}
