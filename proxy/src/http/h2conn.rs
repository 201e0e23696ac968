//! What our HTTP/2 client (`super::h2client`) and server (`super::h2server`) connections share,
//! both on the `h2` crate:
//! - [`send_body`], which sends a body on a stream, asking for window for each chunk whole;
//! - [`RecvBody`], a body received on a stream, which gives its window back as it is read;
//! - [`Pings`], the one PING in flight a connection allows, for adaptive windows (a sample of
//!   the bandwidth-delay product while data arrives) and for keepalive (a connection whose peer
//!   does not answer within a timeout is closed);
//! - the settings both keep: the spec's window, where adaptive windows start, and
//!   [`DATA_FRAME_BUDGET`].

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::BoxError;

/// The spec's initial window: where adaptive windows start.
pub(super) const SPEC_WINDOW: u32 = 65_535;
/// Adaptive windows grow to this at most.
pub(super) const MAX_WINDOW: u32 = 16 * 1024 * 1024;
/// What `h2` lets DATA frames under 256 bytes, received and not yet read, cost in all (each
/// costs 256 less its size; larger frames earn some back): past it, the connection ends with
/// GOAWAY (ENHANCE_YOUR_CALM). Its default, half the connection window, is spent by a burst
/// from hyper's HTTP/2 server or client (and so linkerd2-proxy's), which sends each body chunk
/// that waits for window as a 1-byte frame and then the rest: one such frame per stream
/// waiting. This allows 4 096 of them (a few hundred KiB buffered at most), twice the streams
/// our own server allows a connection.
pub(super) const DATA_FRAME_BUDGET: usize = 4096 * 256;

/// Why [`send_body`] stopped short of the body's end.
#[derive(Debug)]
pub(super) enum Stopped {
    /// The peer reset the stream, or the connection is gone: nothing more can be sent.
    Reset,
    /// The body failed.
    Failed(BoxError),
}

/// Sends each frame of `body` on `stream` as it comes. A data chunk asks for window for all of
/// itself and waits for the stream to be granted some (back-pressure on the body: `h2` buffers
/// the chunk and sends it as the windows open); the end of the body and its trailers never
/// wait.
///
/// Asking for the whole chunk, not a byte as hyper does, keeps the chunk in one frame unless
/// the connection's window runs out in it: `h2` grants window to the streams waiting in turn,
/// each what it asked for, and sends what a stream was granted, so one that asked for a byte
/// sends a 1-byte frame each time the window opens.
pub(super) async fn send_body<B>(
    body: &mut B,
    stream: &mut h2::SendStream<Bytes>,
) -> Result<(), Stopped>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        let next = poll_fn(|cx| match stream.poll_reset(cx) {
            Poll::Ready(reason) => {
                debug!(?reason, "the peer reset a body being sent");
                Poll::Ready(Err(Stopped::Reset))
            }
            Poll::Pending => Pin::new(&mut *body).poll_frame(cx).map(Ok),
        })
        .await?;
        let Some(frame) = next else {
            return stream
                .send_data(Bytes::new(), true)
                .map_err(|_| Stopped::Reset);
        };
        let frame = frame.map_err(|e| Stopped::Failed(e.into()))?;
        let frame = match frame.into_data() {
            Ok(data) => {
                let last = body.is_end_stream();
                if !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    // `poll_capacity` reports increases only: look first.
                    while stream.capacity() == 0 {
                        let granted = poll_fn(|cx| match stream.poll_reset(cx) {
                            Poll::Ready(_) => Poll::Ready(None),
                            Poll::Pending => stream.poll_capacity(cx),
                        })
                        .await;
                        if !matches!(granted, Some(Ok(_))) {
                            return Err(Stopped::Reset);
                        }
                    }
                }
                stream.send_data(data, last).map_err(|_| Stopped::Reset)?;
                if last {
                    return Ok(());
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            stream.reserve_capacity(0);
            return stream.send_trailers(trailers).map_err(|_| Stopped::Reset);
        }
    }
}

/// The value of a message's `content-length`, if it has one that parses.
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A body received on a stream (a response's at a client, a request's at a server); gives its
/// flow-control window back as data is read.
#[derive(Debug)]
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
    length: Option<u64>,
    pings: Option<std::sync::Arc<Pings>>,
    /// At a client, the request body's pipe, if any: stopped if this body is dropped before
    /// its end.
    cancel: Option<Cancel>,
}

/// Stops a client's request body pipe when dropped, unless defused (the response ended: a
/// server may answer in full and still read the rest of the request).
#[derive(Debug)]
pub(super) struct Cancel(pub(super) Option<tokio::sync::oneshot::Sender<()>>);

impl Cancel {
    fn defuse(&mut self) {
        // Dropped unsent: the pipe carries on.
        self.0 = None;
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl RecvBody {
    /// The body of a message whose head said `headers`; an empty body without a length is
    /// known to be empty.
    pub(super) fn new(
        recv: h2::RecvStream,
        headers: &HeaderMap,
        pings: Option<std::sync::Arc<Pings>>,
        cancel: Option<Cancel>,
    ) -> Self {
        let length = content_length(headers).or(recv.is_end_stream().then_some(0));
        RecvBody {
            recv,
            data_done: false,
            length,
            pings,
            cancel,
        }
    }

    /// The body is complete: a request body still being sent for it goes on.
    fn ended(
        &mut self,
        last: Option<Result<Frame<Bytes>, h2::Error>>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if let Some(c) = &mut self.cancel {
            c.defuse();
        }
        Poll::Ready(last)
    }
}

impl hyper::body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let n = data.len();
                    let _ = this.recv.flow_control().release_capacity(n);
                    if let Some(pings) = &this.pings {
                        pings.record(n);
                    }
                    if let Some(left) = &mut this.length {
                        *left = left.saturating_sub(n as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // A reset with NO_ERROR after the data is the peer closing its side cleanly.
                Poll::Ready(Some(Err(e))) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return this.ended(None);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => this.ended(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Ok(None)) => this.ended(None),
            Poll::Ready(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => this.ended(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A connection's PINGs: `h2` allows one in flight, which serves both uses.
///
/// Adaptive windows: while data arrives, a PING measures the round trip and the bytes received
/// during it (a sample of the bandwidth-delay product). A sample that fills two thirds of the
/// window doubles it (up to [`MAX_WINDOW`]), since the window then limits the transfer; samples
/// well below it space the pings out, up to one every 10 s.
///
/// Keepalive: a PING goes out once `interval` has passed since the last was answered; one
/// unanswered after `timeout` means the peer is gone ([`Ponged::TimedOut`]).
#[derive(Debug)]
pub(super) struct Pings {
    state: Mutex<PingState>,
}

#[derive(Debug)]
struct PingState {
    pings: h2::PingPong,
    /// The current adaptive window; `None` with fixed windows.
    window: Option<u32>,
    /// Bytes received since the ping in flight was sent.
    bytes: usize,
    /// When the ping in flight was sent.
    sent: Option<Instant>,
    /// No window sample before then.
    next: Instant,
    gap: Duration,
    keepalive: Option<KeepAlive>,
}

#[derive(Debug)]
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
    /// When the last ping was answered (or the connection began).
    answered: Instant,
    /// Wakes the connection's task when the next ping is due or the one in flight times out.
    timer: Pin<Box<Sleep>>,
}

/// What the connection's task learns from [`Pings::poll`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ponged {
    /// Grow the connection's and streams' windows to this.
    Window(u32),
    /// A keepalive ping went unanswered: close the connection.
    TimedOut,
}

impl Pings {
    const MIN_GAP: Duration = Duration::from_millis(100);
    const MAX_GAP: Duration = Duration::from_secs(10);

    /// `adaptive`: whether windows grow (from [`SPEC_WINDOW`]); `keepalive`: its interval and
    /// timeout. `None` when neither is wanted.
    pub(super) fn new(
        pings: h2::PingPong,
        adaptive: bool,
        keepalive: Option<(Duration, Duration)>,
    ) -> Option<Self> {
        if !adaptive && keepalive.is_none() {
            return None;
        }
        let now = Instant::now();
        Some(Pings {
            state: Mutex::new(PingState {
                pings,
                window: adaptive.then_some(SPEC_WINDOW),
                bytes: 0,
                sent: None,
                next: now,
                gap: Self::MIN_GAP,
                keepalive: keepalive.map(|(interval, timeout)| KeepAlive {
                    interval,
                    timeout,
                    answered: now,
                    timer: Box::pin(tokio::time::sleep_until(now + interval)),
                }),
            }),
        })
    }

    /// `n` bytes of data arrived: counted, and a ping sent if none is in flight and a window
    /// sample is due.
    pub(super) fn record(&self, n: usize) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.window.is_none_or(|w| w >= MAX_WINDOW) {
            return;
        }
        s.bytes += n;
        if s.sent.is_none() {
            let now = Instant::now();
            if now >= s.next && s.pings.send_ping(h2::Ping::opaque()).is_ok() {
                s.sent = Some(now);
                s.bytes = n;
            }
        }
    }

    /// On the connection's task: a pong's news, and the keepalive's next ping or deadline.
    pub(super) fn poll(&self, cx: &mut Context<'_>) -> Option<Ponged> {
        let mut guard = self.state.lock().ok()?;
        let s = &mut *guard;
        let now = Instant::now();
        let mut grown = None;
        if let Some(sent) = s.sent {
            match s.pings.poll_pong(cx) {
                Poll::Ready(Ok(_)) => {
                    s.sent = None;
                    if let Some(k) = &mut s.keepalive {
                        k.answered = now;
                    }
                    grown = s.sample(now, sent);
                }
                Poll::Ready(Err(_)) => {
                    // The connection is ending.
                    s.sent = None;
                    return None;
                }
                Poll::Pending => {
                    let k = s.keepalive.as_mut()?;
                    let deadline = sent + k.timeout;
                    if now >= deadline {
                        return Some(Ponged::TimedOut);
                    }
                    k.wake_at(deadline, cx);
                    return None;
                }
            }
        }
        if let Some(k) = &mut s.keepalive {
            let due = k.answered + k.interval;
            if now >= due {
                if s.pings.send_ping(h2::Ping::opaque()).is_ok() {
                    s.sent = Some(now);
                    s.bytes = 0;
                }
                k.wake_at(now + k.timeout, cx);
            } else {
                k.wake_at(due, cx);
            }
        }
        grown.map(Ponged::Window)
    }
}

impl KeepAlive {
    /// Wakes the connection's task at `at`. The connection's task polls on every wakeup, and
    /// the deadline moves only when a ping goes out or is answered: the timer is reset only
    /// then, not on each poll.
    fn wake_at(&mut self, at: Instant, cx: &mut Context<'_>) {
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        let _ = self.timer.as_mut().poll(cx);
    }
}

impl PingState {
    /// A pong for the ping sent at `sent`: a new window when the window limits the peer.
    fn sample(&mut self, now: Instant, sent: Instant) -> Option<u32> {
        let window = self.window?;
        let bytes = std::mem::take(&mut self.bytes);
        let grown = if bytes as u64 * 3 >= u64::from(window) * 2 {
            self.gap = Pings::MIN_GAP;
            let w = u32::try_from(bytes.saturating_mul(2))
                .unwrap_or(MAX_WINDOW)
                .clamp(window, MAX_WINDOW);
            self.window = Some(w);
            (w > window).then_some(w)
        } else {
            self.gap = (self.gap * 2).min(Pings::MAX_GAP);
            None
        };
        self.next = now + self.gap.max(now - sent);
        grown
    }
}

/// For tests: that `bodies`, each the frame sizes of a 1 KiB body, are whole and split into at
/// most 16 frames under 256 bytes that are not a body's last, in all (`h2` counts each of
/// those against its peer's budget for small frames). One asking a byte of window at a time
/// (hyper's way) sends about half of 256 such bodies as a 1-byte frame and then the rest.
/// Asking for all of a chunk's window, a body is split only where a window the receiver opens
/// runs out in it: the receiver gives back half its window (the spec's) at a time, so nine
/// windows carry 256 KiB, each with at most one split body.
#[cfg(test)]
pub(super) fn assert_few_small_frames(bodies: &[Vec<usize>]) {
    let mut small = 0;
    for sizes in bodies {
        assert_eq!(sizes.iter().sum::<usize>(), 1024, "{sizes:?}");
        let (_, rest) = sizes.split_last().expect("a frame");
        small += rest.iter().filter(|&&n| n < 256).count();
    }
    let split: Vec<_> = bodies.iter().filter(|s| s.len() > 1).collect();
    assert!(
        small <= 16,
        "{small} small frames; the bodies split: {split:?}"
    );
}
