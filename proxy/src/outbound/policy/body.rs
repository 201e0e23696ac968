//! The bodies of policy-routed requests and responses.
//!
//! - [`Replay`]: a request body kept (up to a retry's `max_request_bytes`) while the first
//!   attempt streams it, so a retry can send it again and then read on where it left off. A
//!   body larger than the limit is not kept, and its request is not retried; neither is one
//!   whose previous attempt still holds the rest of the body.
//! - [`AttemptBody`]: one attempt's request body; it says when the request ended (response
//!   timeouts count from there) and notes activity for the idle timeout.
//! - [`RouteBody`]: the response body given to the app: the stream deadline (the request
//!   timeout, the response timeout) and the idle timeout, and at its end the route's and the
//!   backend's metrics, and the endpoint's outcome for failure accrual when it is only known
//!   from the trailers (gRPC).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body as _, Frame, SizeHint};
use remora_metrics::outbound_route::{BackendHandle, Outcome, RouteHandle, StreamError};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::discovery::balance::Picked;
use crate::http::{Body, BoxError, grpc_status};

/// When a policy-routed stream last moved a frame, either way (for the idle timeout).
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

// ---- replay ----

#[derive(Debug)]
struct Shared {
    /// The rest of the client's body; `None` while an attempt's body reads it.
    rest: Option<Body>,
    buf: Vec<Bytes>,
    len: usize,
    max: usize,
    trailers: Option<HeaderMap>,
    /// More than `max` bytes: nothing is kept.
    capped: bool,
    /// The client's body has ended.
    complete: bool,
}

/// A request body that can be sent again.
#[derive(Debug, Clone)]
pub struct Replay(Arc<Mutex<Shared>>);

impl Replay {
    /// Keeps `body` for retries, or gives it back when its known size exceeds `max`.
    pub fn new(body: Body, max: usize) -> Result<Self, Body> {
        if body.size_hint().lower() > max as u64 {
            return Err(body);
        }
        let complete = body.is_end_stream();
        Ok(Replay(Arc::new(Mutex::new(Shared {
            rest: Some(body),
            buf: Vec::new(),
            len: 0,
            max,
            trailers: None,
            capped: false,
            complete,
        }))))
    }

    /// Whether another attempt can send the body: nothing beyond the limit was read, and the
    /// previous attempt let go of the rest (or read it all).
    pub fn can_replay(&self) -> bool {
        self.0
            .lock()
            .map(|s| !s.capped && (s.complete || s.rest.is_some()))
            .unwrap_or(false)
    }

    /// The body for the next attempt.
    pub fn body(&self) -> Body {
        crate::http::boxed(ReplayBody {
            shared: self.0.clone(),
            replayed: 0,
            trailers_sent: false,
            rest: None,
        })
    }
}

struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    /// Chunks of the buffer replayed so far.
    replayed: usize,
    trailers_sent: bool,
    /// The rest of the client's body, while this attempt reads it.
    rest: Option<Body>,
}

impl Drop for ReplayBody {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take()
            && let Ok(mut s) = self.shared.lock()
        {
            s.rest = Some(rest);
        }
    }
}

impl hyper::body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Ok(mut s) = this.shared.lock() else {
            return Poll::Ready(Some(Err("the replay buffer is poisoned".into())));
        };
        // First what earlier attempts read.
        if !s.capped
            && let Some(chunk) = s.buf.get(this.replayed)
        {
            this.replayed += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if s.complete {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if this.rest.is_none() {
            this.rest = s.rest.take();
        }
        drop(s);
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(Some(Err(
                "the request body is still held by an earlier attempt".into(),
            )));
        };
        let next = Pin::new(rest).poll_frame(cx);
        let Ok(mut s) = this.shared.lock() else {
            return Poll::Ready(Some(Err("the replay buffer is poisoned".into())));
        };
        match &next {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !s.capped {
                        s.len += data.len();
                        if s.len > s.max {
                            s.capped = true;
                            s.buf = Vec::new();
                        } else {
                            s.buf.push(data.clone());
                            this.replayed += 1;
                        }
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                if this.rest.as_ref().is_some_and(|r| r.is_end_stream()) {
                    s.complete = true;
                }
            }
            Poll::Ready(None) => s.complete = true,
            Poll::Ready(Some(Err(_))) => s.capped = true,
            Poll::Pending => {}
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.shared
            .lock()
            .map(|s| {
                s.complete
                    && (s.capped || self.replayed >= s.buf.len())
                    && (self.trailers_sent || s.trailers.is_none())
            })
            .unwrap_or(false)
    }

    fn size_hint(&self) -> SizeHint {
        match self.shared.lock() {
            Ok(s) if s.complete && !s.capped => SizeHint::with_exact(s.len as u64),
            _ => SizeHint::default(),
        }
    }
}

// ---- one attempt's request body ----

/// One attempt's request body: sends the instant it ended on `ended`, touches `activity`.
pub struct AttemptBody {
    inner: Body,
    ended: Option<oneshot::Sender<Instant>>,
    activity: Option<Arc<Activity>>,
}

impl AttemptBody {
    pub fn wrap(
        inner: Body,
        activity: Option<Arc<Activity>>,
    ) -> (Body, oneshot::Receiver<Instant>) {
        let (tx, rx) = oneshot::channel();
        let mut b = AttemptBody {
            inner,
            ended: Some(tx),
            activity,
        };
        if b.inner.is_end_stream() {
            b.end();
        }
        (crate::http::boxed(b), rx)
    }

    fn end(&mut self) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

impl hyper::body::Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let next = Pin::new(&mut self.inner).poll_frame(cx);
        match &next {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(a) = &self.activity {
                    a.touch();
                }
                if self.inner.is_end_stream() {
                    self.end();
                }
            }
            Poll::Ready(None) => self.end(),
            _ => {}
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ---- the response body ----

/// A route timeout that ended a response stream.
#[derive(Debug, thiserror::Error)]
#[error("{kind} timeout after {after:?}")]
pub struct StreamTimeout {
    pub kind: &'static str,
    pub after: Duration,
    pub error: StreamError,
}

/// What is recorded when the response ends.
pub struct Finish {
    pub route: RouteHandle,
    pub backend: BackendHandle,
    /// The request's start (route duration).
    pub start: Instant,
    /// The request's end (backend duration).
    pub request_end: Instant,
    pub status: u16,
    pub grpc_status: Option<u16>,
    /// The endpoint's pick, when its outcome waits for the trailers.
    pub picked: Option<Deferred>,
}

/// An endpoint's outcome that is known only at the response's end.
pub struct Deferred {
    pub picked: Picked,
    pub addr: std::net::SocketAddr,
    pub metrics: remora_metrics::http::HttpMetrics,
}

impl Finish {
    fn done(mut self, error: Option<StreamError>) {
        let outcome = Outcome {
            http_status: Some(self.status),
            grpc_status: self.grpc_status,
            error,
        };
        let now = Instant::now();
        self.backend
            .done(outcome, now.saturating_duration_since(self.request_end));
        self.route
            .done(outcome, now.saturating_duration_since(self.start));
        if let Some(d) = self.picked.take() {
            let success = error.is_none() && grpc_success(self.grpc_status, self.status);
            super::attempts::report(&d.metrics, d.picked.finish(success), d.addr);
        }
    }
}

/// Failure accrual's gRPC classification: these codes are failures, as is an HTTP 5xx.
pub fn grpc_success(code: Option<u16>, status: u16) -> bool {
    match code {
        // UNKNOWN, DEADLINE_EXCEEDED, PERMISSION_DENIED, INTERNAL, UNAVAILABLE, DATA_LOSS.
        Some(2 | 4 | 7 | 13 | 14 | 15) => false,
        Some(_) => true,
        None => status < 500,
    }
}

/// The response body the app reads.
pub struct RouteBody {
    inner: Body,
    /// The stream's deadline: the request timeout, or the response timeout from the request's
    /// end, whichever comes first.
    deadline: Option<(Pin<Box<Sleep>>, StreamTimeout)>,
    idle: Option<(Duration, Arc<Activity>, Pin<Box<Sleep>>)>,
    finish: Option<Finish>,
}

impl RouteBody {
    /// `inner` under the stream's timeouts, recording `finish` at its end.
    pub fn wrap(
        inner: Body,
        deadline: Option<(Instant, StreamTimeout)>,
        idle: Option<(Duration, Arc<Activity>)>,
        finish: Finish,
    ) -> Body {
        let mut finish = Some(finish);
        if inner.is_end_stream()
            && let Some(f) = finish.take()
        {
            f.done(None);
        }
        crate::http::boxed(RouteBody {
            inner,
            deadline: deadline.map(|(at, e)| (Box::pin(tokio::time::sleep_until(at)), e)),
            idle: idle.map(|(d, a)| {
                let at = a.last() + d;
                (d, a, Box::pin(tokio::time::sleep_until(at)))
            }),
            finish,
        })
    }

    fn end(&mut self, error: Option<StreamError>) {
        if let Some(f) = self.finish.take() {
            f.done(error);
        }
    }
}

impl Drop for RouteBody {
    fn drop(&mut self) {
        // Never read to its end: the client left.
        if self.finish.is_some() {
            self.end(Some(StreamError::Cancel));
        }
    }
}

/// The route families' label for an error that ended a stream.
pub fn stream_error(e: &(dyn std::error::Error + 'static)) -> StreamError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<StreamTimeout>() {
            return t.error;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let _ = io;
            return StreamError::Io;
        }
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("refused stream") || text.contains("refused_stream") {
            return StreamError::Refused;
        }
        if text.contains("enhance your calm") {
            return StreamError::EnhanceYourCalm;
        }
        if text.contains("go away") || text.contains("goaway") {
            return StreamError::GoAway;
        }
        if text.contains("cancel") {
            return StreamError::Cancel;
        }
        if text.contains("stream error") || text.contains("reset") {
            return StreamError::Reset;
        }
        cur = err.source();
    }
    StreamError::Unknown
}

impl hyper::body::Body for RouteBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.finish.is_none() && this.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some((_, a, _)) = &this.idle {
                    a.touch();
                }
                if let Some(t) = frame.trailers_ref()
                    && let Some(f) = this.finish.as_mut()
                    && let Some(g) = grpc_status(t)
                {
                    f.grpc_status = Some(g);
                }
                if this.inner.is_end_stream() {
                    this.end(None);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) => {
                this.end(None);
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                let kind = stream_error(&*e);
                this.end(Some(kind));
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Pending => {}
        }
        if let Some((sleep, _)) = this.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
            && let Some((_, e)) = this.deadline.take()
        {
            this.end(Some(e.error));
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        if let Some((d, a, sleep)) = this.idle.as_mut() {
            loop {
                let at = a.last() + *d;
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    break;
                }
                if Instant::now() >= a.last() + *d {
                    let after = *d;
                    this.idle = None;
                    this.end(Some(StreamError::IdleTimeout));
                    return Poll::Ready(Some(Err(Box::new(StreamTimeout {
                        kind: "idle",
                        after,
                        error: StreamError::IdleTimeout,
                    }))));
                }
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// ---- peeking at trailers ----

/// A body that first yields frames already read.
struct Peeked {
    frames: VecDeque<Frame<Bytes>>,
    inner: Body,
}

impl hyper::body::Body for Peeked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.inner.is_end_stream()
    }
}

/// Reads a response body's first frame, and its second if it is already there, as
/// linkerd2-proxy does to find a gRPC status in the trailers of a short response; returns the
/// body (unchanged for the reader) and the trailers if they were seen.
pub async fn peek_trailers(mut body: Body) -> (Body, Option<HeaderMap>) {
    use http_body_util::BodyExt;
    if body.is_end_stream() {
        return (body, None);
    }
    let mut frames = VecDeque::new();
    let mut trailers = None;
    match body.frame().await {
        None => {}
        Some(Err(e)) => {
            let failed = http_body_util::StreamBody::new(tokio_stream::iter([Err::<
                Frame<Bytes>,
                BoxError,
            >(e)]));
            return (crate::http::boxed(failed), None);
        }
        Some(Ok(f)) => {
            let first_is_data = f.is_data();
            trailers = f.trailers_ref().cloned();
            frames.push_back(f);
            if first_is_data {
                // A second frame already there, without waiting for it.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                if let Poll::Ready(Some(Ok(second))) = Pin::new(&mut body).poll_frame(&mut cx) {
                    trailers = second.trailers_ref().cloned();
                    frames.push_back(second);
                }
            }
        }
    }
    (
        crate::http::boxed(Peeked {
            frames,
            inner: body,
        }),
        trailers,
    )
}
