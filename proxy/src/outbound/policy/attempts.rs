//! The attempts of one policy-routed request, as linkerd2-proxy's route stack makes them:
//!
//! ```text
//! request ─► l5d-* headers (when the rule allows) ─► for each attempt:
//!   route filters ─► distribution: a backend ─► backend filters ─► queue ─► endpoint (P2C,
//!   failure accrual) ─► send, the response headers due by min(request timeout, the attempt's
//!   timeout or the response timeout from the request's end)
//!   retryable (a listed status or gRPC code; a fail-fast; an attempt timeout)? retries left,
//!   body replayable, budget allowing: back off and go again
//! ─► response: response filters, its body under the request and response timeouts and the
//!    idle timeout, the route's and backend's metrics at its end
//! ```
//!
//! A request that no connection took (nothing was sent) is sent again to another endpoint of
//! the same backend (up to [`MAX_CONNECT_ATTEMPTS`]), as linkerd2-proxy's balancer keeps a
//! request queued until an endpoint is ready; those are not route retries.
//!
//! A request the peer never processed (`REFUSED_STREAM`, past a GOAWAY, a connection closed
//! before any byte of the response, or a meshed peer's `l5d-proxy-error` saying its app never
//! took it: [`crate::error::NOT_PROCESSED`]) is sent again whatever the route's retry policy
//! says, as the Destination path does (proxy/src/outbound/retry.rs): to another endpoint (or
//! forward backend) while one is available (a peer that answered so is not asked again: with
//! no other, its answer is the client's), within [`MAX_ATTEMPTS`] sends, without spending
//! the route's retries or its budget, counted in `retries_total{reason="refused"}`. Its body
//! must be replayable: empty, or kept by the route's retry policy; a streamed body that was
//! not kept is never sent twice.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Body as _;
use remora_metrics::http::HttpMetrics;
use remora_metrics::outbound_route::{
    BackendHandle, ObjectRef, Outcome, RouteFamilies, RouteHandle, StreamError,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::body::{
    self, Activity, AttemptBody, Deferred, Finish, Replay, RouteBody, StreamTimeout,
};
use super::{
    Backend, Dispatch, Distribution, GrpcFilter, HttpFilter, Retry, RouteBackend, RulePolicy,
    Timeouts, filters, l5d,
};
use crate::discovery::balance::{Accrual, Transition, xorshift};
use crate::discovery::{Pick, Resolution, Target};
use crate::error::{self, ProxyError, RouteError};
use crate::http::pool::SendError;
use crate::http::{Body, describe, grpc_status, orig_proto, watch_errors};
use crate::outbound::connect::{Destination, report as log_transition};
use crate::outbound::http::{Dispatched, HttpOutbound};
use crate::outbound::retry::{MAX_ATTEMPTS, Outcome as SendOutcome, Sent, clean};

/// Sends of one attempt at most when no connection takes the request.
pub const MAX_CONNECT_ATTEMPTS: u32 = 3;
/// How long a resend after a failed connect waits for another endpoint.
const REPICK_WAIT: Duration = Duration::from_millis(100);

/// The filters of one kind of route.
pub trait RouteFilter: Sized + Send + Sync + 'static {
    /// A gRPC route: its families are `outbound_grpc_route_*`, it retries gRPC statuses.
    const GRPC: bool;
    fn on_request<B>(
        filters: &[Self],
        req: &mut Request<B>,
        prefix: Option<usize>,
        draw: &mut dyn FnMut() -> u64,
    ) -> Result<(), RouteError>;
    fn on_response<B>(filters: &[Self], rsp: &mut Response<B>);
}

impl RouteFilter for HttpFilter {
    const GRPC: bool = false;
    fn on_request<B>(
        filters: &[Self],
        req: &mut Request<B>,
        prefix: Option<usize>,
        draw: &mut dyn FnMut() -> u64,
    ) -> Result<(), RouteError> {
        filters::apply_http_request(filters, req, prefix, draw)
    }
    fn on_response<B>(filters: &[Self], rsp: &mut Response<B>) {
        filters::apply_http_response(filters, rsp)
    }
}

impl RouteFilter for GrpcFilter {
    const GRPC: bool = true;
    fn on_request<B>(
        filters: &[Self],
        req: &mut Request<B>,
        _prefix: Option<usize>,
        draw: &mut dyn FnMut() -> u64,
    ) -> Result<(), RouteError> {
        filters::apply_grpc_request(filters, req, draw)
    }
    fn on_response<B>(_filters: &[Self], _rsp: &mut Response<B>) {}
}

/// The rule a request took, and what it needs from its policy.
pub struct RuleCtx<'a, F> {
    pub parent: &'a Arc<ObjectRef>,
    pub route: &'a Arc<ObjectRef>,
    pub rule: &'a RulePolicy<F>,
    pub accrual: Accrual,
    /// The matched prefix's length, for redirects.
    pub prefix: Option<usize>,
    /// The request is gRPC (`application/grpc` over HTTP/2): synthetic answers are gRPC's.
    pub grpc_request: bool,
}

/// A copy of a request's head, for each attempt.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// A timeout that ended an attempt before its response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// The request timeout (the whole stream).
    Request(Duration),
    /// The attempt's timeout (retryable).
    Headers(Duration),
    /// The response timeout, from the request's end.
    Response(Duration),
}

impl Deadline {
    fn error(self) -> RouteError {
        let (kind, after) = match self {
            Deadline::Request(d) => ("request", d),
            Deadline::Headers(d) => ("response headers", d),
            Deadline::Response(d) => ("response", d),
        };
        RouteError::Timeout { kind, after }
    }

    fn label(self) -> StreamError {
        match self {
            Deadline::Request(_) => StreamError::RequestTimeout,
            Deadline::Headers(_) => StreamError::ResponseHeadersTimeout,
            Deadline::Response(_) => StreamError::ResponseStreamTimeout,
        }
    }
}

/// How an attempt ended.
enum Ended {
    /// Response headers (cleaned for the app, filters applied).
    Response(Box<Answer>),
    /// The proxy's own answer (or a failure), with its label for the route metrics; the
    /// backend's metrics already counted it.
    Failed(Failure),
}

/// A response, and what its body records at its end.
struct Answer {
    rsp: Response<Body>,
    backend: BackendHandle,
    request_end: Instant,
    status: u16,
    grpc_status: Option<u16>,
    /// The endpoint's outcome, when only the response's end tells it (gRPC trailers).
    deferred: Option<Deferred>,
}

impl Answer {
    /// Drops an answer the client will not get (the request goes again): its backend sees it
    /// end with its status.
    fn discard(self) {
        let outcome = Outcome {
            http_status: Some(self.status),
            grpc_status: self.grpc_status,
            error: None,
        };
        self.backend.done(outcome, self.request_end.elapsed());
    }
}

/// An attempt's result, and whether the route may retry it.
struct Attempt {
    ended: Ended,
    retryable: bool,
    /// The peer at this address never processed the request (see the module's doc): it may
    /// be sent again elsewhere whatever the route says.
    unprocessed: Option<SocketAddr>,
}

impl Attempt {
    fn failed(e: RouteError, retryable: bool) -> Self {
        Attempt {
            ended: Ended::Failed(Failure::Route(e)),
            retryable,
            unprocessed: None,
        }
    }
}

/// Whether `b` forwards to `avoid` (an address that never processed the request).
fn avoided(b: &Backend, avoid: Option<SocketAddr>) -> bool {
    matches!(&b.dispatch, Dispatch::Forward(ep) if Some(ep.addr) == avoid)
}

/// An answer the proxy makes itself.
enum Failure {
    Route(RouteError),
    Proxy(ProxyError, StreamError),
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Route(e) => route_outcome(e),
            Failure::Proxy(_, e) => Outcome {
                error: Some(*e),
                ..Outcome::default()
            },
        }
    }
}

/// What the route families record for the proxy's own answer.
fn route_outcome(e: &RouteError) -> Outcome {
    let error = |e| Outcome {
        error: Some(e),
        ..Outcome::default()
    };
    match e {
        RouteError::Redirect { status, .. } | RouteError::Injected { status, .. } => Outcome {
            http_status: Some(status.as_u16()),
            ..Outcome::default()
        },
        RouteError::GrpcInjected { code, .. } => Outcome {
            grpc_status: Some(*code),
            ..Outcome::default()
        },
        RouteError::FailFast(_) => error(StreamError::FailFast),
        RouteError::LoadShed => error(StreamError::LoadShed),
        RouteError::Timeout { kind, .. } => error(match *kind {
            "request" => StreamError::RequestTimeout,
            "response headers" => StreamError::ResponseHeadersTimeout,
            _ => StreamError::ResponseStreamTimeout,
        }),
        RouteError::NoRoute
        | RouteError::InvalidRedirect(_)
        | RouteError::InvalidPolicy(_)
        | RouteError::DispatcherFailed(_) => error(StreamError::Unknown),
    }
}

/// Whether a result calls for a retry under `retry`.
fn retryable(retry: &Retry, rsp: &Response<Body>, trailers: Option<&HeaderMap>) -> bool {
    if let Some(codes) = &retry.grpc {
        let code = grpc_status(rsp.headers()).or_else(|| trailers.and_then(grpc_status));
        if code.is_some_and(|c| codes.contains(c)) {
            return true;
        }
    }
    retry
        .http
        .as_ref()
        .is_some_and(|s| s.contains(rsp.status().as_u16()))
}

/// Logs a breaker transition and counts it.
pub fn report(metrics: &HttpMetrics, t: Option<Transition>, addr: SocketAddr) {
    match t {
        Some(Transition::Ejected { .. }) => metrics.ejected(),
        Some(Transition::Restored) => metrics.restored(),
        None => {}
    }
    log_transition(t, addr);
}

/// A draw in `0..n` from a uniform `u64`, taken from its high bits (xorshift64*'s best).
pub fn below(draw: u64, n: u64) -> u64 {
    ((u128::from(draw) * u128::from(n)) >> 64) as u64
}

/// Whether a backend may take a request now: an endpoint the breaker admits, or still
/// resolving. (A forward backend, or one without a dispatcher, always may.)
fn available(target: Option<&Target>) -> bool {
    let Some(t) = target else { return true };
    match &*t.endpoints.borrow() {
        Resolution::Endpoints(eps) => !eps.is_empty() && t.balancer.any_available(eps),
        Resolution::Pending => true,
        Resolution::Unknown | Resolution::Unavailable => false,
    }
}

impl HttpOutbound {
    fn draw(&self) -> u64 {
        xorshift(&self.rng)
    }

    fn families(&self, grpc: bool) -> &RouteFamilies {
        let m = &self.ctx.routes;
        if grpc { &m.grpc } else { &m.http }
    }

    /// A balanced backend's discovery target (the resolver's cache keeps it alive).
    fn target_of(&self, b: &Backend) -> Option<Target> {
        match &b.dispatch {
            Dispatch::Balance { path } => self
                .ctx
                .inputs
                .discovery
                .as_ref()
                .map(|d| d.resolver.resolve(path)),
            Dispatch::Forward(_) | Dispatch::Fail(_) => None,
        }
    }

    /// The backend a request goes to: the first available, or a weighted random choice
    /// among the available ones (weight 0: never chosen); `None` when none is available or
    /// the distribution is empty. A forward backend to `avoid` is chosen only when no other
    /// is available.
    pub(super) fn choose<'d, F>(
        &self,
        d: &'d Distribution<F>,
        avoid: Option<SocketAddr>,
    ) -> Option<(&'d RouteBackend<F>, Option<Target>)> {
        if avoid.is_some()
            && let Some(c) = self.choose_inner(d, avoid)
        {
            return Some(c);
        }
        self.choose_inner(d, None)
    }

    fn choose_inner<'d, F>(
        &self,
        d: &'d Distribution<F>,
        avoid: Option<SocketAddr>,
    ) -> Option<(&'d RouteBackend<F>, Option<Target>)> {
        match d {
            Distribution::Empty => None,
            Distribution::FirstAvailable(backends) => backends.iter().find_map(|rb| {
                if avoided(&rb.backend, avoid) {
                    return None;
                }
                let t = self.target_of(&rb.backend);
                available(t.as_ref()).then_some((rb, t))
            }),
            Distribution::RandomAvailable(backends) => {
                // The first 64 backends that turn out unavailable are left out of later draws.
                let mut out: u64 = 0;
                let left_out = |i: usize, out: u64| i < 64 && out & (1 << i) != 0;
                loop {
                    let total: u64 = backends
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !left_out(*i, out))
                        .map(|(_, (_, w))| u64::from(*w))
                        .sum();
                    if total == 0 {
                        return None;
                    }
                    let mut r = below(self.draw(), total);
                    let (i, rb) = backends.iter().enumerate().find_map(|(i, (rb, w))| {
                        let w = if left_out(i, out) { 0 } else { u64::from(*w) };
                        if r < w {
                            Some((i, rb))
                        } else {
                            r -= w;
                            None
                        }
                    })?;
                    let t = self.target_of(&rb.backend);
                    if !avoided(&rb.backend, avoid) && available(t.as_ref()) {
                        return Some((rb, t));
                    }
                    if i >= 64 {
                        return None;
                    }
                    out |= 1 << i;
                }
            }
        }
    }

    /// Whether `d` has somewhere other than `failed` to send a request: a forward backend to
    /// another address, or a balanced backend that knows another endpoint.
    pub(super) fn elsewhere<F>(&self, d: &Distribution<F>, failed: SocketAddr) -> bool {
        let other = |b: &Backend| match &b.dispatch {
            Dispatch::Forward(ep) => ep.addr != failed,
            Dispatch::Fail(_) => false,
            Dispatch::Balance { .. } => self.target_of(b).is_some_and(|t| {
                matches!(&*t.endpoints.borrow(), Resolution::Endpoints(eps)
                    if eps.iter().any(|e| e.addr != failed))
            }),
        };
        match d {
            Distribution::Empty => false,
            Distribution::FirstAvailable(bs) => bs.iter().any(|rb| other(&rb.backend)),
            Distribution::RandomAvailable(bs) => {
                bs.iter().any(|(rb, w)| *w > 0 && other(&rb.backend))
            }
        }
    }

    /// The endpoint a backend's request goes to: a pick of its balancer within its queue's
    /// failfast timeout (not `avoid` while another is available), or its forward address.
    pub(super) async fn dispatch_backend(
        &self,
        backend: &Backend,
        target: Option<Target>,
        accrual: Accrual,
        avoid: Option<SocketAddr>,
    ) -> Result<Destination, RouteError> {
        match &backend.dispatch {
            Dispatch::Fail(why) => Err(RouteError::DispatcherFailed(why.clone())),
            Dispatch::Forward(ep) => Ok(Destination {
                addr: ep.addr,
                endpoint: Some(ep.clone()),
                picked: None,
                target: None,
            }),
            Dispatch::Balance { path } => {
                let Some(mut target) = target else {
                    return Err(RouteError::FailFast(path.clone()));
                };
                let Some(_waiting) = backend.queue.enter() else {
                    return Err(RouteError::LoadShed);
                };
                match target
                    .pick_with_avoiding(backend.queue.failfast, accrual, avoid)
                    .await
                {
                    Pick::Endpoint(ep, picked) => Ok(Destination::picked(ep, picked, Some(target))),
                    Pick::NoEndpoints | Pick::AsIs => Err(RouteError::FailFast(path.clone())),
                }
            }
        }
    }

    /// Sends an attempt to `dest` within `deadlines`, resending to another endpoint of its
    /// target when no connection took it. Returns when the request ended, if it did.
    async fn send_attempt(
        &self,
        mut dest: Destination,
        mut req: Request<Body>,
        deadlines: Deadlines,
        ended: oneshot::Receiver<Instant>,
        accrual: Accrual,
        done: &mut Dispatched<'_>,
    ) -> (Result<(Sent, Destination), Deadline>, Option<Instant>) {
        let mut ended = Some(ended);
        let mut ended_at = None;
        let mut tries = 1;
        loop {
            done.addr = Some(dest.addr);
            done.ep = dest.endpoint.clone();
            // Pinned here and raced by reference (moved into `race`, it would be stored twice
            // in this future: as its argument and as its pinned local), in a block of its own so
            // that its state is gone before the repick below.
            let raced = {
                let send = std::pin::pin!(self.send_once(
                    dest.addr,
                    dest.endpoint.clone(),
                    done.memo,
                    req
                ));
                race(send, &mut ended, &mut ended_at, deadlines).await
            };
            let sent = match raced {
                Ok(s) => s,
                Err(d) => {
                    if let Some(p) = dest.picked.take() {
                        report(&self.ctx.inputs.http_metrics, p.finish(false), dest.addr);
                    }
                    return (Err(d), ended_at);
                }
            };
            let (meshed, upgraded) = (sent.meshed, sent.upgraded);
            let (failure, back) = match sent.result {
                Err(SendError::Connect(failure, back)) => (failure, back),
                result => {
                    let sent = Sent {
                        result,
                        meshed,
                        upgraded,
                    };
                    return (Ok((sent, dest)), ended_at);
                }
            };
            if let Some(p) = dest.picked.take() {
                report(&self.ctx.inputs.http_metrics, p.finish(false), dest.addr);
            }
            let target = match dest.target.clone() {
                Some(t) if tries < MAX_CONNECT_ATTEMPTS => t,
                _ => {
                    let sent = Sent {
                        result: Err(SendError::Connect(failure, back)),
                        meshed,
                        upgraded,
                    };
                    return (Ok((sent, dest)), ended_at);
                }
            };
            let mut back = *back;
            orig_proto::downgrade(&mut back);
            req = back;
            tries += 1;
            self.ctx.inputs.http_metrics.retried("connect");
            dest = match target.clone().pick_with(REPICK_WAIT, accrual).await {
                Pick::Endpoint(e, p) => Destination::picked(e, p, Some(target)),
                _ => Destination {
                    picked: None,
                    ..dest
                },
            };
            debug!(tries, addr = %dest.addr, "resending: no connection took the request");
        }
    }

    /// Runs the attempts of a request that took `cx`'s rule.
    pub(super) async fn run_rule<F: RouteFilter, B>(
        &self,
        cx: RuleCtx<'_, F>,
        mut req: Request<B>,
        done: &mut Dispatched<'_>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::http::BoxError>,
    {
        let start = Instant::now();
        let rule = cx.rule;
        let route_m = rule.route_metrics(self.families(F::GRPC), cx.parent, cx.route);
        let (retry, timeouts): (Option<Cow<'_, Retry>>, Timeouts) =
            if rule.allow_l5d_request_headers {
                let (r, t) = l5d::apply(req.headers_mut(), rule.retry.as_ref(), rule.timeouts);
                (r.map(Cow::Owned), t)
            } else {
                (rule.retry.as_ref().map(Cow::Borrowed), rule.timeouts)
            };
        let retry = retry.as_deref();
        let stream = Stream {
            start,
            limit: timeouts.request.map(|d| start + d),
            timeouts,
            activity: timeouts.idle.map(|_| Activity::new()),
        };
        if retry.is_some() {
            rule.budget.deposit();
        }
        let (parts, body) = req.into_parts();
        let (body, body_failed) = watch_errors(body);
        // A request with a retry policy keeps its body for retries (unless it is too large);
        // an empty one is always replayable (a resend of a request never processed).
        let empty = body.is_end_stream() || body.size_hint().exact() == Some(0);
        let (replay, mut first_body) = match retry {
            Some(r) => match Replay::new(body, r.max_request_bytes) {
                Ok(rp) => (Some(rp), None),
                Err(b) => (None, Some(b)),
            },
            None if empty => {
                let none = crate::http::Body::Empty;
                match Replay::new(none, 0) {
                    Ok(rp) => (Some(rp), None),
                    Err(b) => (None, Some(b)),
                }
            }
            None => (None, Some(body)),
        };
        let head = replay.as_ref().map(|_| Head {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        });
        let mut parts = Some(parts);
        let mut attempt: u32 = 1;
        // Resends of requests never processed (they do not count as the route's retries).
        let mut resends: u32 = 0;
        let mut avoid: Option<SocketAddr> = None;
        loop {
            let body = match (&replay, first_body.take()) {
                (Some(rp), _) => rp.body(),
                (None, Some(b)) => b,
                (None, None) => crate::http::Body::Empty,
            };
            let req = match (parts.take(), &head) {
                (Some(p), _) => Request::from_parts(p, body),
                (None, Some(h)) => h.request(body),
                (None, None) => Request::new(body),
            };
            done.attempts = attempt + resends;
            // Each attempt's response headers are due within the retry timeout, but the last
            // one's (when no retries remain) (linkerd2-proxy).
            let per_try = retry
                .and_then(|r| r.timeout)
                .filter(|_| attempt == 1 || attempt <= retry.map_or(0, |r| r.max_retries));
            let a = self
                .attempt(&cx, req, &stream, per_try, retry, avoid, done)
                .await;
            let finish = |ended| self.finish_rule(&cx, &route_m, ended, &stream, &body_failed);
            // A peer that answered (its app never took the request) is not asked again: only
            // another endpoint may take it. A refused stream or a cut connection may go again
            // on a fresh connection to the same one.
            let peer_answered = matches!(a.ended, Ended::Response(_));
            if let Some(failed) = a.unprocessed
                && resends + 1 < MAX_ATTEMPTS
                && replay.as_ref().is_some_and(Replay::can_replay)
                && (!peer_answered || self.elsewhere(&rule.distribution, failed))
            {
                if let Ended::Response(ans) = a.ended {
                    ans.discard();
                }
                resends += 1;
                avoid = Some(failed);
                self.ctx.inputs.http_metrics.retried("refused");
                debug!(resends, %failed, "resending: the peer never processed the request");
                continue;
            }
            let Some(policy) = retry.filter(|_| a.retryable) else {
                if attempt > 1 && matches!(a.ended, Ended::Response(_)) {
                    route_m.retry_success();
                }
                return finish(a.ended);
            };
            if !replay.as_ref().is_some_and(Replay::can_replay) {
                debug!("not retrying: the request body was not kept");
                return finish(a.ended);
            }
            if attempt > policy.max_retries {
                route_m.retry_limit_exceeded();
                return finish(a.ended);
            }
            if !rule.budget.try_withdraw() {
                route_m.retry_overflow();
                self.ctx.inputs.http_metrics.budget_exhausted();
                return finish(a.ended);
            }
            if let Ended::Response(ans) = a.ended {
                ans.discard();
            }
            if let Some(b) = policy.backoff {
                let u = (self.draw() >> 11) as f64 / (1u64 << 53) as f64;
                let wake = Instant::now() + b.delay(attempt - 1, u);
                if let Some(l) = stream.limit.filter(|l| *l <= wake) {
                    tokio::time::sleep_until(l).await;
                    let d = Deadline::Request(timeouts.request.unwrap_or_default());
                    return finish(Ended::Failed(Failure::Route(d.error())));
                }
                tokio::time::sleep_until(wake).await;
            }
            route_m.retry_request();
            self.ctx.inputs.http_metrics.retried("policy");
            attempt += 1;
            avoid = None;
            debug!(attempt, "retrying on the route's retry policy");
        }
    }

    /// One attempt: the route's filters, a backend, its filters, an endpoint (not `avoid`, an
    /// address that never processed the request, while another is available), the send.
    #[allow(clippy::too_many_arguments)]
    async fn attempt<F: RouteFilter>(
        &self,
        cx: &RuleCtx<'_, F>,
        mut req: Request<Body>,
        stream: &Stream,
        per_try: Option<Duration>,
        retry: Option<&Retry>,
        avoid: Option<SocketAddr>,
        done: &mut Dispatched<'_>,
    ) -> Attempt {
        let rule = cx.rule;
        let mut draw = || self.draw();
        if let Err(e) = F::on_request(&rule.filters, &mut req, cx.prefix, &mut draw) {
            return Attempt::failed(e, false);
        }
        let Some((rb, target)) = self.choose(&rule.distribution, avoid) else {
            return Attempt::failed(RouteError::LoadShed, false);
        };
        if let Err(e) = F::on_request(&rb.filters, &mut req, cx.prefix, &mut draw) {
            return Attempt::failed(e, false);
        }
        let bm = rb.backend_metrics(self.families(F::GRPC), cx.parent, cx.route);
        bm.request();
        let dispatched = Instant::now();
        let dest = match self
            .dispatch_backend(&rb.backend, target, cx.accrual, avoid)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                bm.done(route_outcome(&e), dispatched.elapsed());
                // A fail-fast backend may be avoided by another attempt.
                let again = matches!(e, RouteError::FailFast(_));
                return Attempt::failed(e, again);
            }
        };
        let (parts, body) = req.into_parts();
        let (body, ended) = AttemptBody::wrap(body, stream.activity.clone());
        let req = Request::from_parts(parts, body);
        let deadlines = Deadlines {
            limit: stream
                .limit
                .zip(stream.timeouts.request)
                .map(|(at, d)| (at, Deadline::Request(d))),
            headers: per_try,
            response: stream.timeouts.response,
        };
        let (sent, request_end) = self
            .send_attempt(dest, req, deadlines, ended, cx.accrual, done)
            .await;
        let request_end = request_end.unwrap_or_else(Instant::now);
        let (sent, mut dest) = match sent {
            Ok(s) => s,
            Err(d) => {
                let outcome = Outcome {
                    error: Some(d.label()),
                    ..Outcome::default()
                };
                bm.done(outcome, request_end.elapsed());
                return Attempt::failed(d.error(), matches!(d, Deadline::Headers(_)));
            }
        };
        let addr = dest.addr;
        // Refused or cut, or a meshed peer's never-processed `l5d-proxy-error` (a failed
        // connect is resent by `send_attempt`).
        let unprocessed = (SendOutcome::of(&sent) == SendOutcome::Refused).then_some(addr);
        let rsp = match sent.result {
            Ok(rsp) => clean(rsp, sent.meshed, sent.upgraded),
            Err(e) => {
                if let Some(p) = dest.picked.take() {
                    report(&self.ctx.inputs.http_metrics, p.finish(false), addr);
                }
                let (label, err) = match e {
                    SendError::Connect(failure, _) => {
                        (StreamError::Io, ProxyError::Connect { addr, failure })
                    }
                    SendError::H1(h) => (
                        body::stream_error(&h),
                        ProxyError::Upstream {
                            addr,
                            detail: describe(&h),
                        },
                    ),
                    SendError::H2(h) => (
                        body::stream_error(&h),
                        ProxyError::Upstream {
                            addr,
                            detail: describe(&h),
                        },
                    ),
                };
                let outcome = Outcome {
                    error: Some(label),
                    ..Outcome::default()
                };
                bm.done(outcome, request_end.elapsed());
                return Attempt {
                    ended: Ended::Failed(Failure::Proxy(err, label)),
                    // A stream the peer refused before processing it may be sent again.
                    retryable: label == StreamError::Refused,
                    unprocessed,
                };
            }
        };
        let mut a = self
            .answer::<F>(rsp, rb, rule, bm, request_end, dest, retry)
            .await;
        a.unprocessed = unprocessed;
        a
    }

    /// An attempt's response: whether it is retryable, the endpoint's outcome, the
    /// response filters.
    #[allow(clippy::too_many_arguments)]
    async fn answer<F: RouteFilter>(
        &self,
        mut rsp: Response<Body>,
        rb: &RouteBackend<F>,
        rule: &RulePolicy<F>,
        backend: BackendHandle,
        request_end: Instant,
        mut dest: Destination,
        retry: Option<&Retry>,
    ) -> Attempt {
        let addr = dest.addr;
        let status = rsp.status().as_u16();
        let header_code = grpc_status(rsp.headers());
        // A gRPC status in the trailers of a short response decides a retry too.
        let mut trailers = None;
        if retry.is_some_and(|r| r.grpc.is_some()) && header_code.is_none() {
            let (parts, b) = rsp.into_parts();
            let (b, t) = body::peek_trailers(b).await;
            trailers = t;
            rsp = Response::from_parts(parts, b);
        }
        let code = header_code.or_else(|| trailers.as_ref().and_then(grpc_status));
        let again = retry.is_some_and(|r| retryable(r, &rsp, trailers.as_ref()));
        // The endpoint's outcome: the status now, or the gRPC status at the response's end.
        let deferred = match dest.picked.take() {
            Some(p) if F::GRPC && code.is_none() => Some(Deferred {
                picked: p,
                addr,
                metrics: self.ctx.inputs.http_metrics.clone(),
            }),
            Some(p) => {
                let success = if F::GRPC {
                    body::grpc_success(code, status)
                } else {
                    status < 500
                };
                report(&self.ctx.inputs.http_metrics, p.finish(success), addr);
                None
            }
            None => None,
        };
        F::on_response(&rb.filters, &mut rsp);
        F::on_response(&rule.filters, &mut rsp);
        Attempt {
            ended: Ended::Response(Box::new(Answer {
                rsp,
                backend,
                request_end,
                status,
                grpc_status: code,
                deferred,
            })),
            retryable: again,
            unprocessed: None,
        }
    }

    /// The client's response for the last attempt: a response body that records the route's
    /// and the backend's metrics at its end, or the proxy's own answer.
    fn finish_rule<F: RouteFilter>(
        &self,
        cx: &RuleCtx<'_, F>,
        route_m: &RouteHandle,
        ended: Ended,
        stream: &Stream,
        body_failed: &crate::http::BodyFailed,
    ) -> Response<Body> {
        match ended {
            Ended::Response(a) => {
                let a = *a;
                let (parts, b) = a.rsp.into_parts();
                let finish = Finish {
                    route: route_m.clone(),
                    backend: a.backend,
                    start: stream.start,
                    request_end: a.request_end,
                    status: a.status,
                    grpc_status: a.grpc_status,
                    picked: a.deferred,
                };
                let deadline = stream_deadline(stream.limit, stream.timeouts, a.request_end);
                let idle = stream.timeouts.idle.zip(stream.activity.clone());
                Response::from_parts(parts, RouteBody::wrap(b, deadline, idle, finish))
            }
            Ended::Failed(f) => {
                route_m.done(f.outcome(), stream.start.elapsed());
                match f {
                    Failure::Route(e) => error::respond_route(
                        e,
                        &self.ctx.inputs.http_metrics,
                        cx.grpc_request,
                        true,
                    ),
                    Failure::Proxy(_, _) if body_failed.get() => {
                        self.fail(ProxyError::MalformedBody)
                    }
                    Failure::Proxy(e, _) => self.fail(e),
                }
            }
        }
    }
}

/// What every attempt of a request shares: its start, its timeouts, its activity.
struct Stream {
    start: Instant,
    /// The request timeout's instant.
    limit: Option<Instant>,
    timeouts: Timeouts,
    activity: Option<Arc<Activity>>,
}

/// The response stream's deadline: the request timeout, or the response timeout from the
/// request's end, whichever is first.
fn stream_deadline(
    limit: Option<Instant>,
    t: Timeouts,
    request_end: Instant,
) -> Option<(Instant, StreamTimeout)> {
    let response = t.response.map(|d| {
        (
            request_end + d,
            StreamTimeout {
                kind: "response",
                after: d,
                error: StreamError::ResponseStreamTimeout,
            },
        )
    });
    let request = limit.zip(t.request).map(|(at, d)| {
        (
            at,
            StreamTimeout {
                kind: "request",
                after: d,
                error: StreamError::RequestTimeout,
            },
        )
    });
    match (response, request) {
        (Some(r), Some(q)) => Some(if r.0 < q.0 { r } else { q }),
        (r, q) => r.or(q),
    }
}

/// When an attempt's response headers are due.
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    /// The request timeout's instant.
    limit: Option<(Instant, Deadline)>,
    /// The attempt's timeout, from the request's end.
    headers: Option<Duration>,
    /// The response timeout, from the request's end.
    response: Option<Duration>,
}

/// What happened first while an attempt was out.
enum Event {
    Sent(Sent),
    RequestEnded(Instant),
    Timeout,
}

/// Awaits `send` until its deadline: the request timeout, and once the request ended, the
/// attempt's timeout (else the response timeout) counted from its end, if sooner.
async fn race<F: std::future::Future<Output = Sent>>(
    mut send: std::pin::Pin<&mut F>,
    ended: &mut Option<oneshot::Receiver<Instant>>,
    ended_at: &mut Option<Instant>,
    d: Deadlines,
) -> Result<Sent, Deadline> {
    let after_end = |t: Instant| -> Option<(Instant, Deadline)> {
        match (d.headers, d.response) {
            (Some(h), _) => Some((t + h, Deadline::Headers(h))),
            (None, Some(r)) => Some((t + r, Deadline::Response(r))),
            (None, None) => None,
        }
    };
    let sooner = |a: Option<(Instant, Deadline)>, b: Option<(Instant, Deadline)>| match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    let mut deadline = sooner(d.limit, ended_at.and_then(after_end));
    loop {
        let waiting = ended.is_some();
        let event = {
            let sleep = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let end = async {
                match ended.as_mut() {
                    Some(rx) => rx.await.unwrap_or_else(|_| Instant::now()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                sent = send.as_mut() => Event::Sent(sent),
                t = end, if waiting => Event::RequestEnded(t),
                () = sleep => Event::Timeout,
            }
        };
        match event {
            Event::Sent(s) => return Ok(s),
            Event::RequestEnded(t) => {
                *ended = None;
                *ended_at = Some(t);
                deadline = sooner(deadline, after_end(t));
            }
            Event::Timeout => {
                return Err(deadline.map_or(Deadline::Request(Duration::ZERO), |d| d.1));
            }
        }
    }
}

#[cfg(test)]
mod tests;
