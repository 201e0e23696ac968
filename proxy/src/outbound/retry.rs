//! The attempts of one outbound request: the profile route's timeout around all of them, and
//! retries on a newly balanced endpoint while the route and the target's budget allow.
//!
//! A request is sent again when it was never sent (no connection could take it: always safe),
//! when the peer never processed it (REFUSED_STREAM, past a GOAWAY, a connection closed before
//! any byte of the response, or a peer proxy's `l5d-proxy-error` saying its app never took it:
//! [`crate::error::NOT_PROCESSED`]; that one only when the target has another endpoint) whatever
//! its route says, provided its body is empty or was kept, or when a retryable route answered with one of its failure statuses and the body was
//! small enough to keep (at most [`MAX_REPLAY`] bytes). A retry goes to another endpoint of the
//! target when it has one. Each attempt's outcome feeds the balancer; the retry budget (a share
//! of the target's requests, plus a reserve) caps the retries of failure statuses per target,
//! while requests never processed are retried within [`MAX_ATTEMPTS`] only (a draining pod
//! refuses many at once, and the breaker ejects a peer that keeps refusing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use tracing::debug;

use super::connect::{Destination, report};
use super::http::{ConnMemo, Dispatched, HttpOutbound};
use crate::discovery::balance::Transition;
use crate::discovery::budget::RetryBudget;
use crate::discovery::profile::Route;
use crate::discovery::{Endpoint, Hint, Pick};
use crate::error::{ProxyError, RemoteClose};
use crate::http::pool::{Key, Kind, PoolBody, SendError};
use crate::http::{
    Body, BodyFailed, BoxError, L5D_PROXY_CONNECTION, L5D_PROXY_ERROR, boxed, describe,
    ensure_absolute, orig_proto, strip_hop_by_hop, watch_errors,
};
use crate::transport::header::SessionProtocol;

/// Requests with bodies up to this size are buffered so they can be retried.
pub const MAX_REPLAY: u64 = 64 * 1024;
/// Attempts per request at most (the budget usually says no sooner).
pub const MAX_ATTEMPTS: u32 = 3;
/// How long a retry waits for another endpoint before using the same one again.
const REPICK_WAIT: Duration = Duration::from_millis(100);

/// What the attempts of one request share.
#[derive(Debug)]
pub(super) struct Attempts {
    first: Destination,
    /// The profile route the request matched.
    route: Option<Route>,
    budget: Option<Arc<RetryBudget>>,
    /// Around all attempts, until response headers.
    timeout: Option<Duration>,
}

impl Attempts {
    /// The request's policy from its destination's profile: the matching route, the target's
    /// budget (credited with this request), and the timeout (the route's, else `default`).
    pub(super) fn new<B>(first: Destination, req: &Request<B>, default: Option<Duration>) -> Self {
        let profile = first
            .target
            .as_ref()
            .and_then(|t| t.profile.borrow().clone());
        let route = profile
            .as_ref()
            .and_then(|p| p.route(req.method(), req.uri().path()).cloned());
        let budget = first.target.as_ref().map(|t| {
            t.budget
                .get(profile.as_ref().and_then(|p| p.budget).unwrap_or_default())
        });
        if let Some(b) = &budget {
            b.deposit();
        }
        let timeout = route.as_ref().and_then(|r| r.timeout).or(default);
        Attempts {
            first,
            route,
            budget,
            timeout,
        }
    }
}

/// One attempt's result, and how it was sent.
#[derive(Debug)]
pub(super) struct Sent {
    pub result: Result<Response<PoolBody>, SendError>,
    /// Sent to a meshed peer (identity and HTTP/2 hint): its `l5d-proxy-*` headers are ours.
    pub meshed: bool,
    /// An HTTP/1 request carried as HTTP/2 with `l5d-orig-proto`.
    pub upgraded: bool,
}

/// How an attempt ended, as far as retrying cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// No connection took the request: nothing of it reached the target.
    NotSent,
    /// The request left but the peer never processed it (see the module's doc).
    Refused,
    /// The target answered with this status.
    Status(http::StatusCode),
    /// The exchange broke after the request left.
    Failed,
}

impl Outcome {
    pub(super) fn of(sent: &Sent) -> Self {
        match &sent.result {
            Err(SendError::Connect(..)) => Outcome::NotSent,
            Err(e) if e.never_processed() => Outcome::Refused,
            Ok(rsp)
                if sent.meshed
                    && rsp
                        .headers()
                        .get(L5D_PROXY_ERROR)
                        .is_some_and(crate::error::never_processed) =>
            {
                Outcome::Refused
            }
            Ok(rsp) => Outcome::Status(rsp.status()),
            Err(_) => Outcome::Failed,
        }
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Answer the client with this attempt's result.
    Answer,
    /// Send the request again, for this reason (`retries_total{reason}`).
    Retry(&'static str),
}

/// Whether an attempt's result calls for another: a request that was never sent always may be
/// (within [`MAX_ATTEMPTS`]); a failure status of a retryable route may be when the request can
/// be replayed. The budget is asked separately.
pub(super) fn next(
    outcome: Outcome,
    attempt: u32,
    replayable: bool,
    route: Option<&Route>,
) -> Next {
    if attempt >= MAX_ATTEMPTS {
        return Next::Answer;
    }
    match outcome {
        Outcome::NotSent => Next::Retry("connect"),
        Outcome::Refused if replayable => Next::Retry("refused"),
        Outcome::Status(s) if replayable && route.is_some_and(|r| r.is_failure(s)) => {
            Next::Retry("status")
        }
        _ => Next::Answer,
    }
}

impl HttpOutbound {
    /// Runs the attempts of `req` within its timeout (504 after it).
    pub(super) async fn run<B>(
        &self,
        req: Request<B>,
        a: Attempts,
        done: &mut Dispatched<'_>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(t) = a.timeout else {
            return self.attempts(req, a, done).await;
        };
        match tokio::time::timeout(t, self.attempts(req, a, done)).await {
            Ok(rsp) => rsp,
            Err(_) => {
                self.ctx.inputs.http_metrics.timed_out();
                self.fail(ProxyError::Timeout(t))
            }
        }
    }

    /// Sends a request, retrying what its route and the budget allow: failure responses of a
    /// retryable route (body buffered up to 64 KiB), and requests that were never sent.
    async fn attempts<B>(
        &self,
        req: Request<B>,
        a: Attempts,
        done: &mut Dispatched<'_>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let retryable = a.route.as_ref().is_some_and(|r| r.retryable);
        let (parts, body) = req.into_parts();
        let (mut body, body_failed) = watch_errors(body);
        // An empty body is replayed as it is; for a retryable route, a body small enough is
        // buffered so the request can be sent again.
        let replay = if body.is_end_stream() || body.size_hint().exact() == Some(0) {
            body = Body::Empty;
            Some(Bytes::new())
        } else if retryable && body.size_hint().exact().is_some_and(|n| n <= MAX_REPLAY) {
            match body.collect().await {
                Ok(b) => {
                    let bytes = b.to_bytes();
                    body = boxed(Full::new(bytes.clone()));
                    Some(bytes)
                }
                Err(_) => return self.fail(ProxyError::MalformedBody),
            }
        } else {
            None
        };
        // Only a replayable request needs its head kept, and only when it may be retried at
        // all: without a budget (no target) no attempt is repeated.
        let pristine = replay.as_ref().filter(|_| a.budget.is_some()).map(|_| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.version,
                parts.headers.clone(),
            )
        });
        let mut req = Request::from_parts(parts, body);
        let mut dest = a.first;
        let mut attempt = 1;
        loop {
            done.addr = Some(dest.addr);
            done.ep = dest.endpoint.clone();
            done.attempts = attempt;
            let sent = self
                .send_once(dest.addr, dest.endpoint.clone(), done.memo, req)
                .await;
            if let Some(p) = dest.picked.take() {
                let success = matches!(&sent.result, Ok(r) if !r.status().is_server_error());
                self.report(p.finish(success), dest.addr);
            }
            let outcome = Outcome::of(&sent);
            let reason = match next(outcome, attempt, replay.is_some(), a.route.as_ref()) {
                Next::Answer => return self.respond(sent, dest.addr, &body_failed),
                Next::Retry(reason) => reason,
            };
            let unprocessed = matches!(outcome, Outcome::NotSent | Outcome::Refused);
            let allowed = match &a.budget {
                // Never processed: only the attempt cap applies (see the module's doc).
                Some(_) if unprocessed => true,
                Some(b) => b.try_withdraw(),
                None => false,
            };
            if !allowed {
                self.ctx.inputs.http_metrics.budget_exhausted();
                return self.respond(sent, dest.addr, &body_failed);
            }
            let failed = dest.addr;
            let next_dest = match &dest.target {
                Some(t) => repick(t, failed).await,
                None => None,
            };
            // A peer whose app never took the request is not asked again: only another
            // endpoint may take it (a refused stream or a cut connection may go again on a
            // fresh connection to the same one).
            let peer_answered = outcome == Outcome::Refused && sent.result.is_ok();
            if peer_answered && next_dest.as_ref().is_none_or(|(e, _)| e.addr == failed) {
                return self.respond(sent, failed, &body_failed);
            }
            self.ctx.inputs.http_metrics.retried(reason);
            attempt += 1;
            req = match sent.result {
                Err(SendError::Connect(_, back)) => {
                    let mut back = *back;
                    orig_proto::downgrade(&mut back);
                    back
                }
                _ => match &pristine {
                    Some(head) => rebuild(head, replay.clone().unwrap_or_default()),
                    None => return self.fail(ProxyError::NotReplayable),
                },
            };
            dest = match next_dest {
                Some((e, p)) => Destination::picked(e, p, dest.target.clone()),
                None => Destination {
                    picked: None,
                    ..dest
                },
            };
            debug!(attempt, addr = %dest.addr, reason, "retrying");
        }
    }

    /// Sends one attempt to `addr` (as `ep`), upgrading HTTP/1 for a meshed peer (through
    /// `memo`, the client connection's, when there is one).
    pub(super) async fn send_once(
        &self,
        addr: SocketAddr,
        ep: Option<Arc<Endpoint>>,
        memo: Option<&ConnMemo>,
        mut req: Request<Body>,
    ) -> Sent {
        let meshed = ep
            .as_ref()
            .is_some_and(|e| e.identity.is_some() && e.hint == Hint::H2);
        strip_hop_by_hop(req.headers_mut());
        let h2 = meshed || req.version() == http::Version::HTTP_2;
        let upgraded = meshed && req.version() != http::Version::HTTP_2;
        if upgraded {
            match memo {
                Some(m) => orig_proto::upgrade_with(&mut req, &m.upgraded),
                None => orig_proto::upgrade(&mut req),
            }
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
        Sent {
            result: self.pool.send(&key, dial, req).await,
            meshed,
            upgraded,
        }
    }

    /// The client's response for the last attempt.
    pub(super) fn respond(
        &self,
        sent: Sent,
        addr: SocketAddr,
        body_failed: &BodyFailed,
    ) -> Response<Body> {
        match sent.result {
            Ok(rsp) => clean(rsp, sent.meshed, sent.upgraded),
            Err(_) if body_failed.get() => self.fail(ProxyError::MalformedBody),
            Err(SendError::Connect(failure, _)) => self.fail(ProxyError::Connect { addr, failure }),
            Err(e) => self.fail(ProxyError::Upstream {
                addr,
                detail: describe(&e),
            }),
        }
    }

    fn report(&self, transition: Option<Transition>, addr: SocketAddr) {
        let metrics = &self.ctx.inputs.http_metrics;
        match transition {
            Some(Transition::Ejected { .. }) => metrics.ejected(),
            Some(Transition::Restored) => metrics.restored(),
            None => {}
        }
        report(transition, addr);
    }
}

/// A target's response as the app gets it: the `l5d-proxy-*` headers removed (they are for
/// proxies, as linkerd2-proxy removes them from every response), `l5d-orig-proto` undone,
/// hop-by-hop headers removed. A meshed peer's `l5d-proxy-connection: close` marks the response
/// with [`RemoteClose`] (the handler decides whether the app's connection closes).
pub(super) fn clean<B: Into<Body>>(
    mut rsp: Response<B>,
    meshed: bool,
    upgraded: bool,
) -> Response<Body> {
    // Most responses carry neither: one pass over the names present is cheaper than two
    // hashed removals (BENCHMARKS.md, "Instructions per request").
    let mut close = false;
    if rsp
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("l5d-proxy-"))
    {
        if let Some(e) = rsp.headers_mut().remove(L5D_PROXY_ERROR) {
            debug!(error = %String::from_utf8_lossy(e.as_bytes()), "remote proxy error");
        }
        close = rsp
            .headers_mut()
            .remove(L5D_PROXY_CONNECTION)
            .is_some_and(|v| v == "close");
    }
    if upgraded {
        orig_proto::unmark(&mut rsp);
    }
    strip_hop_by_hop(rsp.headers_mut());
    let (parts, body) = rsp.into_parts();
    let mut rsp = Response::from_parts(parts, body.into());
    if close && meshed {
        rsp.extensions_mut().insert(RemoteClose);
    }
    rsp
}

/// An endpoint of `target` for a retry, other than `failed` while the balancer has another
/// available; `None` when it offers none.
async fn repick(
    target: &crate::discovery::Target,
    failed: SocketAddr,
) -> Option<(Arc<Endpoint>, crate::discovery::balance::Picked)> {
    match target.clone().pick_avoiding(REPICK_WAIT, failed).await {
        Pick::Endpoint(e, p) => Some((e, p)),
        _ => None,
    }
}

/// A fresh copy of a buffered request.
fn rebuild(
    (method, uri, version, headers): &(http::Method, http::Uri, http::Version, http::HeaderMap),
    body: Bytes,
) -> Request<Body> {
    let mut req = Request::new(boxed(Full::new(body)));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = *version;
    *req.headers_mut() = headers.clone();
    req
}

#[cfg(test)]
mod tests;
