//! Outbound HTTP: each request is routed by its authority (`Host` / `:authority`) through
//! discovery, falling back to the connection's original destination, and sent to one of the
//! target's endpoints. A meshed endpoint (identity + HTTP/2 hint) gets every request over one
//! mTLS HTTP/2 connection, HTTP/1 requests upgraded with `l5d-orig-proto`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use remora_metrics::labels::TargetLabels;
use remora_metrics::tcp::{Direction, Peer, TcpLabels, Tls};
use std::time::Duration;
use tokio::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use tracing::{debug, info, warn};

use super::pool::{DialFuture, Key, Kind, Pool, SendError};
use super::record::{self, AccessEntry, ProxyError};
use super::upgrade::{is_upgrade, tunnel};
use super::{
    Body, L5D_PROXY_CONNECTION, L5D_PROXY_ERROR, boxed, describe, ensure_absolute, error_response,
    orig_proto, strip_hop_by_hop, watch_errors,
};
use crate::balance::{Picked, Transition};
use crate::discovery::{Endpoint, Hint, Pick, Resolution, Target};
use crate::forward::Counted;
use crate::io::BoxIo;
use crate::mtls::{DialTarget, dial, no_tls};
use crate::outbound::Discovery;
use crate::outbound::OutboundCtx;
use crate::transport_header::SessionProtocol;

/// The outbound HTTP router of one proxy.
#[derive(Debug)]
pub struct HttpOutbound {
    pub ctx: Arc<OutboundCtx>,
    pub pool: Arc<Pool>,
    /// The state of the traffic split's random draws.
    pub rng: std::sync::atomic::AtomicU64,
}

/// Where a request goes: the address, the endpoint discovery chose, the balancer's handle on
/// it, and the discovery target (whose profile and budget govern the request).
pub(super) enum Route {
    To(
        SocketAddr,
        Option<Arc<Endpoint>>,
        Option<Picked>,
        Option<Target>,
    ),
    NoEndpoints(String),
    /// Explicit mode: a name neither discovery nor DNS could resolve.
    Unresolvable(String, String),
    /// The target is one of this proxy's own listeners.
    Loop(SocketAddr),
}

/// A routed request's destination: address, endpoint, balancer handle, discovery target.
pub(super) type Routed = (
    SocketAddr,
    Option<Arc<Endpoint>>,
    Option<Picked>,
    Option<Target>,
);

/// The socket address an authority names when its host is an IP literal.
fn literal(authority: &str) -> Option<SocketAddr> {
    authority.parse().ok()
}

/// Logs a breaker transition.
pub fn report(transition: Option<Transition>, addr: SocketAddr) {
    match transition {
        Some(Transition::Ejected { backoff }) => {
            warn!(endpoint = %addr, ?backoff, "endpoint ejected after consecutive failures")
        }
        Some(Transition::Restored) => info!(endpoint = %addr, "endpoint restored"),
        None => {}
    }
}

/// The request's authority as `host:port` (port 80 when absent).
pub(super) fn authority<B>(req: &Request<B>) -> Option<Arc<str>> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    Some(with_port(raw))
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

/// Where a request went, as far as it got: the last attempt's endpoint and the attempt count.
#[derive(Debug, Default)]
struct Dispatched {
    addr: Option<SocketAddr>,
    ep: Option<Arc<Endpoint>>,
    attempts: u32,
}

impl HttpOutbound {
    /// A response the proxy makes itself: logged, counted, annotated with `l5d-proxy-error`.
    pub(super) fn fail(
        &self,
        status: StatusCode,
        reason: &'static str,
        detail: &str,
    ) -> Response<Body> {
        warn!(
            status = status.as_u16(),
            reason, detail, "answering the app with an error"
        );
        self.ctx
            .http_metrics
            .error(Direction::Outbound, status.as_u16(), reason);
        let mut rsp = error_response(status, detail, true);
        rsp.extensions_mut().insert(ProxyError(reason));
        rsp
    }

    /// Traffic split and failover, from the target's profile (`dst_overrides`): a backend of
    /// weight > 0 is chosen in proportion to its weight among those that may take a request
    /// (an available endpoint, or still resolving); when none may, the weight-0 backends are
    /// tried in their listed order. `None` when the profile splits nothing.
    async fn split(&self, d: &Discovery, apex: &str, target: &Target) -> Option<Route> {
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
            let mut r = crate::balance::xorshift(&self.rng) % total.max(1);
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
            return Some(Route::NoEndpoints(apex.to_string()));
        };
        let mut backend = backend.clone();
        Some(match backend.pick(d.timeout).await {
            Pick::Endpoint(ep, picked) => Route::To(ep.addr, Some(ep), Some(picked), Some(backend)),
            Pick::NoEndpoints | Pick::AsIs => Route::NoEndpoints(authority.to_string()),
        })
    }

    /// The destination of a route, or the error response when there is none.
    // The error is the response itself, returned to hyper at once; boxing it would only add an
    // allocation on the error path.
    #[allow(clippy::result_large_err)]
    pub(super) fn routed(&self, route: Route) -> Result<Routed, Response<Body>> {
        match route {
            Route::To(addr, ep, picked, target) => Ok((addr, ep, picked, target)),
            Route::NoEndpoints(target) => Err(self.fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_endpoints",
                &format!("no endpoints for {target}"),
            )),
            Route::Unresolvable(name, why) => Err(self.fail(
                StatusCode::BAD_GATEWAY,
                "unresolvable",
                &format!("cannot resolve {name}: {why}"),
            )),
            Route::Loop(addr) => Err(self.fail(
                StatusCode::BAD_GATEWAY,
                "loop",
                &format!("{addr} is one of this proxy's own listeners"),
            )),
        }
    }

    /// Where a request (or CONNECT tunnel) for `authority` goes: discovery by name (not an IP
    /// literal), then discovery by `orig` (the original destination, or an explicit request's IP
    /// literal), then `orig` itself; with neither, the name through DNS (explicit mode). Never
    /// one of the proxy's own listeners.
    pub(super) async fn route(&self, orig: Option<SocketAddr>, authority: Option<&str>) -> Route {
        let route = self.resolve(orig, authority).await;
        match route {
            Route::To(addr, ..) if self.ctx.own.is_own_listener(addr) => Route::Loop(addr),
            route => route,
        }
    }

    async fn resolve(&self, orig: Option<SocketAddr>, authority: Option<&str>) -> Route {
        // An explicit request naming an IP literal is addressed to it, as a redirected one is.
        let orig = orig.or_else(|| authority.and_then(literal));
        // By authority first (a name, not an IP literal), then by the original destination.
        let by_name = authority.filter(|a| literal(a).is_none());
        if let Some(d) = &self.ctx.discovery {
            let orig_target = orig.map(|o| o.to_string());
            for target in by_name.into_iter().chain(orig_target.as_deref()) {
                let mut resolved = d.resolver.resolve(target);
                if let Some(route) = self.split(d, target, &resolved).await {
                    return route;
                }
                match resolved.pick(d.timeout).await {
                    Pick::Endpoint(ep, picked) => {
                        return Route::To(ep.addr, Some(ep), Some(picked), Some(resolved));
                    }
                    Pick::NoEndpoints => return Route::NoEndpoints(target.to_string()),
                    Pick::AsIs => continue,
                }
            }
        }
        if let Some(orig) = orig {
            return Route::To(orig, None, None, None);
        }
        let Some(name) = by_name else {
            return Route::Unresolvable(String::new(), "no authority".into());
        };
        let lookup = tokio::net::lookup_host(name);
        match tokio::time::timeout(self.ctx.tcp.connect_timeout, lookup).await {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(addr) => Route::To(addr, None, None, None),
                None => Route::Unresolvable(name.into(), "no addresses".into()),
            },
            Ok(Err(e)) => Route::Unresolvable(name.into(), e.to_string()),
            Err(_) => Route::Unresolvable(name.into(), "DNS lookup timed out".into()),
        }
    }

    fn dial(
        &self,
        addr: SocketAddr,
        ep: Option<Arc<Endpoint>>,
        protocol: Option<SessionProtocol>,
    ) -> DialFuture {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let target = DialTarget {
                addr,
                endpoint: ep.as_deref(),
                protocol,
            };
            match dial(target, &ctx.tls, &ctx.own.ips, ctx.tcp.connect_timeout).await {
                Ok(d) => {
                    let dst = ep.as_ref().map(|e| e.dst_labels.clone());
                    let labels = TcpLabels::new(Direction::Outbound, Peer::Dst)
                        .with_tls(d.tls, d.server_id)
                        .with_target(addr, None, dst);
                    let io: BoxIo =
                        Box::new(Counted::new(d.io, ctx.tcp.metrics.open(labels), None));
                    Ok(io)
                }
                Err(e) => {
                    ctx.tcp.metrics.refused(Direction::Outbound, e.reason());
                    Err(e.to_string())
                }
            }
        })
    }

    /// Handles one request of a connection whose original destination is `orig` (`None` for an
    /// explicit connection, whose requests name their target).
    pub async fn handle(&self, orig: Option<SocketAddr>, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let authority = authority(&req);
        let mut access = self.ctx.access_log.as_ref().map(|log| {
            Box::new(AccessEntry {
                log: log.clone(),
                time: std::time::SystemTime::now(),
                direction: "outbound",
                client_id: self.ctx.tls.now().map(|c| Arc::from(c.name.as_str())),
                authority: authority.clone(),
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                endpoint: None,
                attempts: 0,
            })
        });
        let mut done = Dispatched::default();
        let rsp = self
            .dispatch(orig, authority.as_deref(), req, &mut done)
            .await;
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
        let route = self.ctx.http_metrics.golden.route(&labels);
        if let Some(a) = access.as_mut() {
            a.endpoint = done.addr;
            a.attempts = done.attempts;
        }
        record::finish(route, start, rsp, access)
    }

    async fn dispatch(
        &self,
        orig: Option<SocketAddr>,
        authority: Option<&str>,
        req: Request<Incoming>,
        done: &mut Dispatched,
    ) -> Response<Body> {
        let route = match orig {
            // A CONNECT that was redirected here is for the upstream proxy the app dialled.
            Some(orig) if req.method() == http::Method::CONNECT => {
                Route::To(orig, None, None, None)
            }
            _ => self.route(orig, authority).await,
        };
        let (addr, ep, picked, target) = match self.routed(route) {
            Ok(r) => r,
            Err(rsp) => return rsp,
        };
        done.addr = Some(addr);
        done.ep = ep.clone();
        done.attempts = 1;
        if is_upgrade(&req) {
            let io = match self.dial(addr, ep, Some(SessionProtocol::Http1)).await {
                Ok(io) => io,
                Err(e) => return self.fail(StatusCode::BAD_GATEWAY, "connect", &e),
            };
            return match tunnel(req, io).await {
                Ok(rsp) => rsp,
                Err(e) => self.fail(StatusCode::BAD_GATEWAY, "upgrade", &e),
            };
        }
        // The policy of the request's route, from the target's profile.
        let profile = target.as_ref().and_then(|t| t.profile.borrow().clone());
        let route = profile
            .as_ref()
            .and_then(|p| p.route(req.method(), req.uri().path()).cloned());
        let budget = target.as_ref().map(|t| {
            t.budget
                .get(profile.as_ref().and_then(|p| p.budget).unwrap_or_default())
        });
        if let Some(b) = &budget {
            b.deposit();
        }
        let timeout = route
            .as_ref()
            .and_then(|r| r.timeout)
            .or(self.ctx.request_timeout);
        let attempts = Attempts {
            first: (addr, ep, picked),
            target,
            route,
            budget,
        };
        let run = self.attempts(req, attempts, done);
        match timeout {
            None => run.await,
            Some(t) => match tokio::time::timeout(t, run).await {
                Ok(rsp) => rsp,
                Err(_) => {
                    self.ctx.http_metrics.timed_out();
                    self.fail(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        &format!("request timed out after {t:?}"),
                    )
                }
            },
        }
    }

    /// Sends a request, retrying what its route and the budget allow: failure responses of a
    /// retryable route (body buffered up to 64 KiB), and requests that were never sent.
    async fn attempts(
        &self,
        req: Request<Incoming>,
        a: Attempts,
        done: &mut Dispatched,
    ) -> Response<Body> {
        let retryable = a.route.as_ref().is_some_and(|r| r.retryable);
        let (parts, body) = req.into_parts();
        let (mut body, body_failed) = watch_errors(body);
        // A body small enough is buffered so the request can be sent again.
        let replay = if retryable && body.size_hint().exact().is_some_and(|n| n <= MAX_REPLAY) {
            match body.collect().await {
                Ok(b) => {
                    let bytes = b.to_bytes();
                    body = boxed(Full::new(bytes.clone()));
                    Some(bytes)
                }
                Err(_) => {
                    return self.fail(
                        StatusCode::BAD_REQUEST,
                        "malformed_request",
                        "malformed request body",
                    );
                }
            }
        } else {
            None
        };
        // Only a replayable request needs its head kept.
        let pristine = replay.as_ref().map(|_| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.version,
                parts.headers.clone(),
            )
        });
        let mut req = Request::from_parts(parts, body);
        let (mut addr, mut ep, mut picked) = a.first;
        let mut attempt = 1;
        loop {
            done.addr = Some(addr);
            done.ep = ep.clone();
            done.attempts = attempt;
            let (sent, meshed, upgraded) = self.send_once(addr, ep.clone(), req).await;
            if let Some(p) = picked.take() {
                let success = matches!(&sent, Ok(r) if !r.status().is_server_error());
                self.report(p.finish(success), addr);
            }
            let retry = match &sent {
                Ok(rsp) => {
                    replay.is_some()
                        && a.route.as_ref().is_some_and(|r| r.is_failure(rsp.status()))
                        && attempt < MAX_ATTEMPTS
                }
                Err(SendError::Connect(..)) => attempt < MAX_ATTEMPTS,
                Err(_) => false,
            };
            let reason = if sent.is_ok() { "status" } else { "connect" };
            if retry && !a.budget.as_ref().is_some_and(|b| b.try_withdraw()) {
                self.ctx.http_metrics.budget_exhausted();
            } else if retry {
                self.ctx.http_metrics.retried(reason);
                attempt += 1;
                req = match sent {
                    Err(SendError::Connect(_, back)) => {
                        let mut back = *back;
                        orig_proto::downgrade(&mut back);
                        back
                    }
                    _ => match &pristine {
                        Some(head) => rebuild(head, replay.clone().unwrap_or_default()),
                        None => {
                            return self.fail(StatusCode::BAD_GATEWAY, "upstream", "cannot replay");
                        }
                    },
                };
                (addr, ep, picked) = match &a.target {
                    Some(t) => match t.clone().pick(Duration::from_millis(100)).await {
                        Pick::Endpoint(e, p) => (e.addr, Some(e), Some(p)),
                        _ => (addr, ep, None),
                    },
                    None => (addr, ep, None),
                };
                debug!(attempt, %addr, reason, "retrying");
                continue;
            }
            return self.respond(sent, addr, meshed, upgraded, &body_failed);
        }
    }

    /// Sends one attempt to `addr` (as `ep`), upgrading HTTP/1 for a meshed peer.
    async fn send_once(
        &self,
        addr: SocketAddr,
        ep: Option<Arc<Endpoint>>,
        mut req: Request<Body>,
    ) -> (Result<Response<Incoming>, SendError>, bool, bool) {
        let meshed = ep
            .as_ref()
            .is_some_and(|e| e.identity.is_some() && e.hint == Hint::H2);
        strip_hop_by_hop(req.headers_mut());
        let h2 = meshed || req.version() == http::Version::HTTP_2;
        let upgraded = meshed && req.version() != http::Version::HTTP_2;
        if upgraded {
            orig_proto::upgrade(&mut req);
        }
        let kind = if h2 { Kind::Http2 } else { Kind::Http1 };
        if kind == Kind::Http2 {
            ensure_absolute(&mut req, addr);
        }
        let protocol = Some(if h2 {
            SessionProtocol::Http2
        } else {
            SessionProtocol::Http1
        });
        let key = Key {
            addr,
            kind,
            identity: ep.as_ref().and_then(|e| e.identity.clone()),
        };
        let dial = || self.dial(addr, ep.clone(), protocol);
        (self.pool.send(&key, dial, req).await, meshed, upgraded)
    }

    fn respond(
        &self,
        sent: Result<Response<Incoming>, SendError>,
        addr: SocketAddr,
        meshed: bool,
        upgraded: bool,
        body_failed: &std::sync::atomic::AtomicBool,
    ) -> Response<Body> {
        match sent {
            Ok(mut rsp) => {
                if meshed {
                    // A peer proxy's annotations are for us, not the app.
                    rsp.headers_mut().remove(L5D_PROXY_ERROR);
                    rsp.headers_mut().remove(L5D_PROXY_CONNECTION);
                }
                if upgraded {
                    orig_proto::unmark(&mut rsp);
                }
                strip_hop_by_hop(rsp.headers_mut());
                let (parts, body) = rsp.into_parts();
                Response::from_parts(parts, boxed(body))
            }
            Err(_) if body_failed.load(std::sync::atomic::Ordering::Relaxed) => self.fail(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "malformed request body",
            ),
            Err(SendError::Connect(e, _)) => {
                self.fail(StatusCode::BAD_GATEWAY, "connect", &format!("{addr}: {e}"))
            }
            Err(e) => self.fail(
                StatusCode::BAD_GATEWAY,
                "upstream",
                &format!("{addr}: {}", describe(&e)),
            ),
        }
    }

    fn report(&self, transition: Option<Transition>, addr: SocketAddr) {
        match transition {
            Some(Transition::Ejected { .. }) => self.ctx.http_metrics.ejected(),
            Some(Transition::Restored) => self.ctx.http_metrics.restored(),
            None => {}
        }
        report(transition, addr);
    }
}

/// Requests with bodies up to this size are buffered so they can be retried.
pub const MAX_REPLAY: u64 = 64 * 1024;
/// Attempts per request at most (the budget usually says no sooner).
pub const MAX_ATTEMPTS: u32 = 3;

/// What the attempts of one request share.
struct Attempts {
    first: (SocketAddr, Option<Arc<Endpoint>>, Option<Picked>),
    target: Option<Target>,
    route: Option<crate::profile::Route>,
    budget: Option<Arc<crate::budget::RetryBudget>>,
}

/// A fresh copy of a buffered request.
fn rebuild(
    (method, uri, version, headers): &(http::Method, http::Uri, http::Version, http::HeaderMap),
    body: bytes::Bytes,
) -> Request<Body> {
    let mut req = Request::new(boxed(Full::new(body)));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = *version;
    *req.headers_mut() = headers.clone();
    req
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
