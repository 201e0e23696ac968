//! HTTP/1 server connections without hyper's server dispatch.
//!
//! hyper's HTTP/1 server cost ~12.4 k instructions per request at an app's side of a proxy
//! pair, against ~7 k for the equivalent work of our client (`super::h1client`; BENCHMARKS.md,
//! stop 39): it polls its connection three times per request while the response is in flight,
//! reallocates its 8 KiB read buffer for every keep-alive request, and allocates a header map
//! per request. Here one task per connection reads a request head, calls the handler, and
//! writes the response as its body arrives, with the request body, if any, fed to the handler
//! through a bounded channel ([`RequestBody`]). A response's emptied header map holds the
//! next request's fields. A connection waiting for a request with nothing buffered lends its
//! buffers and header map to the thread's spares (`Spares`), so an idle keep-alive connection
//! holds none, and a busy one takes a set back without allocating.
//!
//! What hyper's server does (its `proto/h1/role.rs`, `Server::parse` and `Server::encode`),
//! this does the same way:
//! - a request head is at most `Limits::max_head` bytes and `Limits::max_headers` fields
//!   (beyond: 431); a target longer than [`MAX_URI`] is 414; any other malformed head is 400.
//!   Each of these is answered with `connection: close`, and the connection closed;
//! - a request's framing: a `transfer-encoding` whose last coding is not `chunked`, or any
//!   `transfer-encoding` in an HTTP/1.0 request, is 400; `content-length` values that differ
//!   are 400; beside a `transfer-encoding`, a `content-length` is removed and the connection
//!   closed after the response;
//! - keep-alive: HTTP/1.1 unless a `Connection` field says `close`; HTTP/1.0 only when one
//!   says `keep-alive` (and the response then says it too); a response that says `close`, or
//!   whose body runs to the end of the connection, closes it. When it closes, an HTTP/1.1
//!   response says `connection: close`;
//! - `Expect: 100-continue` is answered `100 Continue` once the handler first reads the body
//!   (not when it answers without reading it);
//! - `Upgrade` (HTTP/1.1 only) and `CONNECT` requests carry an [`OnUpgrade`]: after a `101`
//!   (or a 2xx to `CONNECT`), the connection, with any bytes read past the head, goes to it
//!   ([`on_upgrade`]);
//! - a response's framing: its `content-length`, else its body's exact size, else chunked to
//!   HTTP/1.1 and to the end of the connection to HTTP/1.0; no body for `HEAD`, 1xx, 204, 304
//!   and a 2xx to `CONNECT`; a `date` when it has none; a body longer than its length is cut
//!   at it. A body that ends short of its length, or fails, is written as far as it got and
//!   the connection closed: the client sees a response cut short, never none (which it could
//!   take for a request not processed). Trailers go out only chunked, to a request that said
//!   `te: trailers`, and only the fields the response's `Trailer` names;
//! - a client that closes its end while its request is in flight is gone: the handler's
//!   future is dropped (hyper's default, without half-close);
//! - requests may be pipelined: the next one is read once the response before it is written.
//!
//! A request head must arrive whole within `super::server::HEADER_READ_TIMEOUT` of its first
//! byte. No clock runs while a connection is idle between requests, nor for a head that
//! arrives in one read (most do): the timer is armed only when a read leaves a head partial.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tracing::debug;

use super::h1client::{
    Chunk, Framing, KEEP_WRITE_BUF, Out, READ_MAX, READ_MIN, advance_body, content_length,
    decode_body, ends_chunked, field_span, poll_fill,
};
use super::{BoxError, connection_has, has_token};
use crate::transport::io::{BoxIo, PrefixedIo};

/// The longest request target: hyper's (`MAX_URI_LEN`).
pub const MAX_URI: usize = (u16::MAX - 1) as usize;

/// Header fields parsed on the stack; a larger limit parses into a vector.
const INLINE_FIELDS: usize = 100;

/// The most request body bytes queued for a handler that has not read them yet.
const BODY_QUEUE: usize = 64 * 1024;

/// What a connection accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_head: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
}

/// Serves HTTP/1 on `io` until the client is done, calling `handle` for each request. Once
/// `drain` fires, an idle connection closes; one with a request in flight closes after its
/// response (the handler marks that response `connection: close`, `super::server`).
///
/// The handler's future yields hyper's service shape, a `Result` that cannot fail, so that
/// `super::server` runs one future per request for either protocol (another around it, only to
/// add the `Ok` hyper wants, cost HTTP/2 a move of the response per request).
pub async fn serve<H, F, B>(io: BoxIo, limits: Limits, drain: impl Future<Output = ()>, handle: H)
where
    H: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Result<Response<B>, Infallible>>,
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut conn = Conn {
        io,
        rbuf: BytesMut::new(),
        read_size: READ_MIN,
        out: Out::default(),
        limits,
        fields: HeaderMap::new(),
        timer: None,
    };
    let mut drain = std::pin::pin!(remora_runtime::wake::OnWake::new(drain));
    // Bounded by the client: each turn serves one request it sent.
    loop {
        let head = match poll_fn(|cx| conn.poll_head(cx, drain.as_mut())).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(status) => return conn.refuse(status).await,
        };
        let Head {
            mut req,
            framing,
            mut keep_alive,
            expect_continue,
            upgrade,
            trailers,
        } = head;
        let method = Role::of(req.method());
        let mut inbound = None;
        if framing != Framing::Length(0) {
            let chan = Arc::new(Mutex::new(Chan::default()));
            let remaining = match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            };
            *req.body_mut() = RequestBody::H1(H1Body {
                chan: chan.clone(),
                remaining,
            });
            inbound = Some(Inbound {
                chan,
                framing,
                extensions: 0,
                expect_continue,
                abandoned: false,
                ended: false,
            });
        }
        let upgrade_tx = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut()
                .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        let version = req.version();
        let mut x = Exchange {
            rsp: std::pin::pin!(handle(req)),
            inbound,
            writing: None,
            dirty: false,
            method,
            version,
            trailers,
        };
        let ended = poll_fn(|cx| conn.poll_exchange(cx, &mut x, &mut keep_alive)).await;
        match ended {
            Ended::Done if keep_alive => {}
            Ended::Done => return conn.close().await,
            Ended::Upgraded => {
                let Some(tx) = upgrade_tx else {
                    return;
                };
                let pre = conn.rbuf.split().freeze();
                let _ = tx.send(PrefixedIo::new(pre, conn.io));
                return;
            }
            Ended::Aborted => return,
        }
    }
}

/// A connection between requests.
struct Conn {
    io: BoxIo,
    rbuf: BytesMut,
    read_size: usize,
    out: Out,
    limits: Limits,
    /// The last response's header map, emptied: the next request's fields go in it.
    fields: HeaderMap,
    /// The deadline of a head that arrived in part.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The most buffer sets a thread keeps spare; beyond, a shed connection's are freed.
const MAX_SPARES: usize = 16;

thread_local! {
    /// Buffers shed by this thread's idle connections, for the next that needs them.
    static SPARES: std::cell::RefCell<Spares> = const { std::cell::RefCell::new(Spares(Vec::new())) };
}

/// A bounded stack of spare buffer sets: a read buffer, a write buffer and a header map, each
/// empty. A read buffer has room for half of [`READ_MIN`] to [`READ_MAX`], a write buffer at
/// most [`KEEP_WRITE_BUF`], a header map room for `Limits::max_headers` fields: a thread's
/// spares hold about 1.5 MiB at most, 16 × 10 KiB in the common case.
struct Spares(Vec<(BytesMut, Vec<u8>, HeaderMap)>);

impl Spares {
    /// Keeps a set, each part already empty: a connection's write buffer is cleared as it
    /// drains (`Out::poll_drain`) and its header map as a response takes its fields.
    fn put(&mut self, rbuf: BytesMut, mut wbuf: Vec<u8>, fields: HeaderMap) {
        debug_assert!(rbuf.is_empty() && wbuf.is_empty() && fields.is_empty());
        // A read buffer is worth keeping only with room for a read: the small remnant of one
        // whose front went out as body data is dropped, and so is one grown for a large body.
        if self.0.len() < MAX_SPARES && (READ_MIN / 2..=READ_MAX).contains(&rbuf.capacity()) {
            if wbuf.capacity() > KEEP_WRITE_BUF {
                wbuf = Vec::new();
            }
            self.0.push((rbuf, wbuf, fields));
        }
    }

    fn take(&mut self) -> Option<(BytesMut, Vec<u8>, HeaderMap)> {
        self.0.pop()
    }
}

/// A request head, parsed.
struct Head {
    req: Request<RequestBody>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    /// The request said `te: trailers`.
    trailers: bool,
}

/// What a response's framing depends on in its request's method.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Head,
    Connect,
    Other,
}

impl Role {
    fn of(m: &Method) -> Role {
        if m == Method::HEAD {
            Role::Head
        } else if m == Method::CONNECT {
            Role::Connect
        } else {
            Role::Other
        }
    }
}

/// How an exchange ended.
enum Ended {
    /// The response is written: the connection may carry another (`keep_alive`).
    Done,
    /// The connection left HTTP.
    Upgraded,
    /// The client left, or the response could not be written whole: closed at once.
    Aborted,
}

/// One request and its response.
struct Exchange<'a, F, B> {
    rsp: Pin<&'a mut F>,
    inbound: Option<Inbound>,
    writing: Option<Writing<B>>,
    dirty: bool,
    method: Role,
    version: Version,
    trailers: bool,
}

/// The response body being written.
struct Writing<B> {
    body: Option<B>,
    send: Sending,
    /// The trailer fields the response declared, when they may be sent.
    allowed: Option<Vec<HeaderName>>,
    upgrade: bool,
    /// Why the body failed: what was queued before it still goes out, then the connection
    /// closes (the client sees a response cut short, not one never sent).
    failed: Option<io::Error>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    Length(u64),
    Chunked,
    /// To the end of the connection.
    Close,
}

impl Conn {
    /// Reads until a request head is whole: `None` when the connection ends first (the client
    /// closed it, the drain closed it while idle, or a head took too long).
    fn poll_head<D: Future<Output = ()>>(
        &mut self,
        cx: &mut Context<'_>,
        mut drain: Pin<&mut D>,
    ) -> Poll<Result<Option<Head>, StatusCode>> {
        // Bounded: each turn parses what is buffered or reads more; the buffer is bounded by
        // the head limit.
        loop {
            if !self.rbuf.is_empty() {
                let fields = std::mem::take(&mut self.fields);
                match parse_head(&mut self.rbuf, &self.limits, fields)? {
                    Ok(head) => {
                        self.timer = None;
                        return Poll::Ready(Ok(Some(head)));
                    }
                    Err(fields) => self.fields = fields,
                }
                if self.rbuf.len() >= self.limits.max_head {
                    return Poll::Ready(Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
                }
                let timer = self.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep(self.limits.header_timeout))
                });
                if timer.as_mut().poll(cx).is_ready() {
                    debug!(timeout = ?self.limits.header_timeout, "no whole request head in time; closing");
                    return Poll::Ready(Ok(None));
                }
            } else if drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(None));
            }
            if self.rbuf.capacity() == 0 {
                self.unshed();
            }
            let Poll::Ready(read) = self.poll_fill(cx) else {
                if self.rbuf.is_empty() && self.out.is_empty() {
                    self.shed();
                }
                return Poll::Pending;
            };
            match read {
                Ok(0) => return Poll::Ready(Ok(None)),
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "HTTP/1 connection failed");
                    return Poll::Ready(Ok(None));
                }
            }
        }
    }

    /// Gives up the buffers of a connection waiting for a request with nothing buffered, to
    /// this thread's [`Spares`]: an idle keep-alive connection holds no read buffer (at least
    /// [`READ_MIN`]), write buffer (up to [`KEEP_WRITE_BUF`]) or header map, as nginx frees
    /// its buffers on keep-alive. A busy connection takes them back straight away, without the
    /// allocations that freeing them would cost (glibc's cache stops at 1 KiB).
    fn shed(&mut self) {
        self.read_size = READ_MIN;
        SPARES.with_borrow_mut(|spares| {
            spares.put(
                std::mem::take(&mut self.rbuf),
                std::mem::take(&mut self.out.buf),
                std::mem::take(&mut self.fields),
            )
        });
    }

    /// Takes back a shed connection's buffers, another connection's if need be; none when
    /// there are no spares (the read allocates).
    fn unshed(&mut self) {
        if let Some((rbuf, wbuf, fields)) = SPARES.with_borrow_mut(Spares::take) {
            self.rbuf = rbuf;
            self.out.buf = wbuf;
            self.fields = fields;
        }
    }

    /// Reads what the client has sent into the read buffer: the count read, 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.rbuf, &mut self.read_size, cx)
    }

    /// Drives one exchange: the request body to the handler, the response to the client, and
    /// a watch for the client leaving.
    fn poll_exchange<F, B>(
        &mut self,
        cx: &mut Context<'_>,
        x: &mut Exchange<'_, F, B>,
        keep_alive: &mut bool,
    ) -> Poll<Ended>
    where
        F: Future<Output = Result<Response<B>, Infallible>>,
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        if self.pump(cx, x).is_err() {
            return Poll::Ready(Ended::Aborted);
        }
        if x.writing.is_none()
            && let Poll::Ready(Ok(rsp)) = x.rsp.as_mut().poll(cx)
        {
            x.writing = Some(self.write_head(rsp, x, keep_alive));
        }
        let ended = match x.writing.as_mut() {
            Some(w) => match self.poll_write(cx, w, &mut x.dirty) {
                Poll::Ready(Ok(())) if w.upgrade => return Poll::Ready(Ended::Upgraded),
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "HTTP/1 response not written whole; closing");
                    return Poll::Ready(Ended::Aborted);
                }
                Poll::Pending => false,
            },
            None => {
                // A 100 Continue, or nothing.
                if !self.out.is_empty() {
                    match self.out.poll_drain(&mut self.io, cx) {
                        Poll::Ready(Ok(())) => x.dirty = true,
                        Poll::Ready(Err(_)) => return Poll::Ready(Ended::Aborted),
                        Poll::Pending => {}
                    }
                }
                if x.dirty && self.out.is_empty() {
                    match Pin::new(&mut self.io).poll_flush(cx) {
                        Poll::Ready(Ok(())) => x.dirty = false,
                        Poll::Ready(Err(_)) => return Poll::Ready(Ended::Aborted),
                        Poll::Pending => {}
                    }
                }
                false
            }
        };
        if ended {
            if let Some(inb) = &x.inbound
                && inb.framing != Framing::Done
            {
                // Bytes of its body may follow: not a next request's.
                *keep_alive = false;
            }
            return Poll::Ready(Ended::Done);
        }
        // While the request is in flight and its body read, a read finds out whether the
        // client left (0 bytes) or pipelined its next request (kept, unparsed).
        let body_read = x
            .inbound
            .as_ref()
            .is_none_or(|i| i.framing == Framing::Done);
        if body_read && self.rbuf.is_empty() {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    debug!("the client closed its connection with a request in flight");
                    return Poll::Ready(Ended::Aborted);
                }
                Poll::Ready(Err(e)) => {
                    debug!(error = %e, "HTTP/1 connection failed with a request in flight");
                    return Poll::Ready(Ended::Aborted);
                }
                // A next request's bytes, kept for after this response; or nothing yet.
                Poll::Ready(Ok(_)) | Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Feeds the request body to its channel, as far as the handler has room for it. `Err`:
    /// the client closed its end within the body.
    fn pump<F, B>(&mut self, cx: &mut Context<'_>, x: &mut Exchange<'_, F, B>) -> Result<(), ()> {
        let Some(inb) = x.inbound.as_mut() else {
            return Ok(());
        };
        // Bounded: each turn queues a frame, reads bytes, or returns.
        loop {
            if inb.ended || inb.abandoned || inb.framing == Framing::Failed {
                return Ok(());
            }
            if let Err(why) = advance_body(&mut inb.framing, &mut inb.extensions, &mut self.rbuf) {
                inb.fail(format!("malformed request body: {why}").into());
                return Ok(());
            }
            let mut chan = inb.chan.lock().unwrap_or_else(PoisonError::into_inner);
            if inb.framing == Framing::Done {
                // Its last frame is queued (the decoder or the line after it ended it).
                chan.end = true;
                chan.wake_rx();
                inb.ended = true;
                return Ok(());
            }
            if chan.dropped {
                inb.abandoned = true;
                return Ok(());
            }
            if inb.expect_continue {
                if !chan.polled {
                    chan.tx = Some(cx.waker().clone());
                    return Ok(());
                }
                inb.expect_continue = false;
                if x.writing.is_none() {
                    self.out
                        .buf
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
            }
            if chan.queued >= BODY_QUEUE {
                chan.tx = Some(cx.waker().clone());
                return Ok(());
            }
            match decode_body(&mut inb.framing, &mut self.rbuf) {
                Ok(Some(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        chan.queued += d.len();
                    }
                    chan.frames.push_back(frame);
                    chan.wake_rx();
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    drop(chan);
                    inb.fail(body_fault(e));
                    return Ok(());
                }
            }
            drop(chan);
            match self.poll_fill(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(res) => {
                    let why = match res {
                        Err(e) => format!("reading the request body: {e}"),
                        Ok(_) => "the client closed the connection within the request body".into(),
                    };
                    debug!("{why}");
                    inb.fail(why.into());
                    return Err(());
                }
            }
        }
    }

    /// Encodes the response head; what is left to write is its body.
    fn write_head<F, B>(
        &mut self,
        rsp: Response<B>,
        x: &Exchange<'_, F, B>,
        keep_alive: &mut bool,
    ) -> Writing<B>
    where
        B: hyper::body::Body<Data = Bytes>,
    {
        let (mut parts, body) = rsp.into_parts();
        let length = if body.is_end_stream() {
            Length::Empty
        } else {
            match body.size_hint().exact() {
                Some(n) => Length::Known(n),
                None => Length::Unknown,
            }
        };
        let status = parts.status;
        let upgrade = status == StatusCode::SWITCHING_PROTOCOLS
            || (x.method == Role::Connect && status.is_success());
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            debug!(%status, "a 1xx response cannot be sent as a final response; 500 instead");
            parts.status = StatusCode::INTERNAL_SERVER_ERROR;
            parts.headers.clear();
            *keep_alive = false;
        }
        if x.inbound
            .as_ref()
            .is_some_and(|i| i.expect_continue || i.framing == Framing::Failed)
        {
            // No 100 Continue went out: the client may send the body yet, or not; either way
            // its bytes cannot be told from a next request's.
            *keep_alive = false;
        }
        let enc = encode_head(
            &mut parts,
            x.method,
            x.version,
            length,
            x.trailers,
            keep_alive,
            &mut self.out.buf,
        );
        parts.headers.clear();
        self.fields = parts.headers;
        let body = (enc.send != Sending::Length(0) && !upgrade).then_some(body);
        if enc.close {
            *keep_alive = false;
        }
        Writing {
            body,
            send: enc.send,
            allowed: enc.allowed,
            upgrade,
            failed: None,
        }
    }

    /// Writes the response body as it comes; `Ready(Ok)` once all of it is written and
    /// flushed.
    fn poll_write<B>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut Writing<B>,
        dirty: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        // Bounded: each turn writes what was queued, or returns.
        loop {
            while let Some(body) = w.body.as_mut()
                && self.out.has_room()
            {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(e))) => {
                        let e: BoxError = e.into();
                        w.body = None;
                        w.failed = Some(io::Error::other(e));
                    }
                    Poll::Ready(None) => {
                        w.body = None;
                        self.end_body(w);
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        let end = body.is_end_stream();
                        match frame.into_data() {
                            Ok(data) => self.queue_data(w, data),
                            Err(frame) => {
                                if let Ok(trailers) = frame.into_trailers() {
                                    self.queue_trailers(w, trailers);
                                }
                            }
                        }
                        if end && w.body.is_some() {
                            w.body = None;
                            self.end_body(w);
                        }
                    }
                }
            }
            if !self.out.is_empty() {
                ready!(self.out.poll_drain(&mut self.io, cx))?;
                *dirty = true;
                continue;
            }
            if *dirty {
                ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                *dirty = false;
            }
            if self.out.buf.capacity() > KEEP_WRITE_BUF {
                self.out.buf = Vec::new();
            }
            return match (&w.body, w.failed.take()) {
                (_, Some(e)) => Poll::Ready(Err(e)),
                (None, None) => Poll::Ready(Ok(())),
                (Some(_), None) => Poll::Pending,
            };
        }
    }

    fn queue_data<B>(&mut self, w: &mut Writing<B>, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &mut w.send {
            Sending::Chunked => self.out.data(data, true),
            Sending::Close => self.out.data(data, false),
            Sending::Length(left) => {
                // Longer than its length: cut at it, as hyper's encoder does.
                let data = if data.len() as u64 > *left {
                    data.slice(..*left as usize)
                } else {
                    data
                };
                *left -= data.len() as u64;
                self.out.data(data, false);
                if *left == 0 {
                    w.body = None;
                }
            }
        }
    }

    fn queue_trailers<B>(&mut self, w: &mut Writing<B>, trailers: HeaderMap) {
        if w.send != Sending::Chunked {
            return;
        }
        let Some(allowed) = &w.allowed else {
            return;
        };
        let buf = &mut self.out.buf;
        buf.extend_from_slice(b"0\r\n");
        for (name, value) in &trailers {
            if allowed.contains(name) && trailer_field_allowed(name) {
                write_field(buf, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        buf.extend_from_slice(b"\r\n");
        w.body = None;
        // The last chunk is written: nothing more.
        w.send = Sending::Length(0);
    }

    /// The body's end: the last chunk, or a check that the length was reached.
    fn end_body<B>(&mut self, w: &mut Writing<B>) {
        match w.send {
            Sending::Chunked => self.out.buf.extend_from_slice(b"0\r\n\r\n"),
            Sending::Length(0) | Sending::Close => {}
            Sending::Length(left) => {
                w.failed = Some(io::Error::other(format!(
                    "the response body ended {left} bytes short of its content-length"
                )));
            }
        }
    }

    /// Answers a malformed head and closes.
    async fn refuse(mut self, status: StatusCode) {
        debug!(%status, "refusing a malformed HTTP/1 request head");
        self.out.buf.clear();
        let buf = &mut self.out.buf;
        buf.extend_from_slice(b"HTTP/1.1 ");
        buf.extend_from_slice(status.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        buf.extend_from_slice(b"\r\nconnection: close\r\ncontent-length: 0\r\n");
        date_field(buf);
        buf.extend_from_slice(b"\r\n");
        let written = poll_fn(|cx| {
            ready!(self.out.poll_drain(&mut self.io, cx))?;
            Pin::new(&mut self.io).poll_flush(cx)
        })
        .await;
        if written.is_ok() {
            self.close().await;
        }
    }

    /// Closes the connection after its last response: a clean end (TLS `close_notify`, FIN).
    async fn close(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

/// A response body's known length when its head is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Length {
    /// It has ended already.
    Empty,
    Known(u64),
    Unknown,
}

struct Encoded {
    send: Sending,
    /// The connection closes after the response.
    close: bool,
    allowed: Option<Vec<HeaderName>>,
}

/// Whether a response to `method` with `status` may carry a body (hyper's `can_chunked`).
fn can_have_body(method: Role, status: StatusCode) -> bool {
    !(method == Role::Head
        || (method == Role::Connect && status.is_success())
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Whether it may carry a `content-length` (a `HEAD` response may).
fn can_have_length(method: Role, status: StatusCode) -> bool {
    !(status.is_informational()
        || (method == Role::Connect && status.is_success())
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Writes a response head (see the module's notes for its framing). `keep_alive` is the
/// request's; the head says `connection: close` (HTTP/1.1) or `keep-alive` (HTTP/1.0) to
/// match it.
fn encode_head(
    parts: &mut http::response::Parts,
    method: Role,
    version: Version,
    length: Length,
    te_trailers: bool,
    keep_alive: &mut bool,
    out: &mut Vec<u8>,
) -> Encoded {
    let status = parts.status;
    let headers = &mut parts.headers;
    let http10 = version == Version::HTTP_10;
    let says_close = connection_has(headers, "close");
    if http10 {
        // An HTTP/1.0 client: keep-alive only when both sides say so.
        if !connection_has(headers, "keep-alive") {
            if *keep_alive && !says_close && parts.version != Version::HTTP_10 {
                headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            } else {
                *keep_alive = false;
            }
        }
    } else if !*keep_alive && !says_close {
        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut close = says_close || !*keep_alive;
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if !http10 && status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(r) => out.extend_from_slice(r.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
    let chunkable = !http10 && can_have_body(method, status);
    let body = can_have_body(method, status);
    let length_ok = can_have_length(method, status);
    let chunked = chunkable && headers.contains_key(header::TRANSFER_ENCODING);
    let mut send = None;
    let mut wrote_date = false;
    let mut allowed: Option<Vec<HeaderName>> = None;
    let mut coding: Option<&HeaderValue> = None;
    for (name, value) in headers.iter() {
        if name == header::CONTENT_LENGTH {
            if chunked || !length_ok || send.is_some() {
                continue;
            }
            match length {
                Length::Known(n) => {
                    write_length(out, n);
                    send = Some(Sending::Length(n));
                }
                Length::Unknown => {
                    // A length that is not one: the body is sent as if it had none.
                    if let Ok(Some(n)) = content_length(headers) {
                        write_length(out, n);
                        send = Some(Sending::Length(n));
                    }
                }
                // An ended body has no bytes, but a `HEAD` response's length is the
                // representation's.
                Length::Empty if method == Role::Head => {
                    write_field(out, b"content-length", value.as_bytes());
                    send = Some(Sending::Length(0));
                }
                Length::Empty => {}
            }
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            if chunked {
                coding = Some(value);
            }
            continue;
        }
        if name == header::TRAILER {
            if !chunkable {
                continue;
            }
            if te_trailers && let Ok(v) = value.to_str() {
                allowed.get_or_insert_with(Vec::new).extend(
                    v.split(',')
                        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
                );
            }
        } else if name == header::DATE {
            wrote_date = true;
        }
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if chunked {
        // Its last coding must be chunked; every other coding goes before it.
        out.extend_from_slice(b"transfer-encoding: ");
        let mut first = true;
        for v in headers.get_all(header::TRANSFER_ENCODING) {
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v.as_bytes());
            first = false;
        }
        if !coding.is_some_and(ends_chunked) {
            out.extend_from_slice(b", chunked");
        }
        out.extend_from_slice(b"\r\n");
        send = Some(Sending::Chunked);
    }
    let mut send = match send {
        Some(s) => s,
        None => match length {
            Length::Unknown if chunkable => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Sending::Chunked
            }
            Length::Unknown if body => {
                close = true;
                Sending::Close
            }
            Length::Unknown => Sending::Length(0),
            Length::Empty | Length::Known(0) => {
                if length_ok && method != Role::Head {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Sending::Length(0)
            }
            Length::Known(n) if length_ok => {
                write_length(out, n);
                Sending::Length(n)
            }
            Length::Known(_) => Sending::Length(0),
        },
    };
    if !body {
        send = Sending::Length(0);
    }
    if !wrote_date {
        date_field(out);
    }
    out.extend_from_slice(b"\r\n");
    Encoded {
        send,
        close,
        allowed,
    }
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_length(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    let _ = write!(out, "content-length: {n}\r\n");
}

/// Whether a field may be sent as a trailer (RFC 9110 §6.5.1: not framing, routing or
/// authentication).
fn trailer_field_allowed(name: &HeaderName) -> bool {
    ![
        header::AUTHORIZATION,
        header::CACHE_CONTROL,
        header::CONTENT_ENCODING,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
        header::HOST,
        header::MAX_FORWARDS,
        header::SET_COOKIE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ]
    .contains(name)
}

/// Writes a `date` field for now.
fn date_field(out: &mut Vec<u8>) {
    with_date(|date| write_field(out, b"date", date.as_bytes()));
}

/// A `date` field's value for now (for HTTP/2 responses: `super::h2server`).
pub(super) fn date_value() -> HeaderValue {
    with_date(HeaderValue::from_str).unwrap_or(HeaderValue::from_static(""))
}

/// `f` of the date now, formatted once a second per thread.
fn with_date<T>(f: impl FnOnce(&str) -> T) -> T {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        f(&c.1)
    })
}

/// Parses a request head from the front of `buf`, which it then drops, into `fields` (an
/// emptied map whose room is reused): `Err(fields)` back when the head is not all there yet.
fn parse_head(
    buf: &mut BytesMut,
    limits: &Limits,
    mut fields: HeaderMap,
) -> Result<Result<Head, HeaderMap>, StatusCode> {
    let max = limits.max_headers;
    let mut inline = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; INLINE_FIELDS];
    let mut spilled = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max <= INLINE_FIELDS {
        &mut inline[..max]
    } else {
        spilled.resize_with(max, MaybeUninit::uninit);
        &mut spilled
    };
    let mut spans_inline = [(0u32, 0u32, 0u32, 0u32); INLINE_FIELDS];
    let mut spans_spilled = Vec::new();
    let mut req = httparse::Request::new(&mut []);
    // Parsed within the limit, as `h1client` parses a response: a head over it is never
    // complete, however it arrived.
    let window = &buf[..buf.len().min(limits.max_head)];
    let (len, path, count, http11) = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, window, slots)
    {
        Ok(httparse::Status::Complete(len)) => {
            let base = buf.as_ptr() as usize;
            let count = req.headers.len();
            let spans: &mut [(u32, u32, u32, u32)] = if count <= INLINE_FIELDS {
                &mut spans_inline[..count]
            } else {
                spans_spilled.resize(count, (0, 0, 0, 0));
                &mut spans_spilled
            };
            for (span, h) in spans.iter_mut().zip(req.headers.iter()) {
                *span = field_span(h, base);
            }
            let path = req.path.unwrap_or("");
            if path.len() > MAX_URI {
                return Err(StatusCode::URI_TOO_LONG);
            }
            let start = path.as_ptr() as usize - base;
            let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
                .map_err(|_| StatusCode::BAD_REQUEST)?;
            (
                len,
                (method, start..start + path.len()),
                count,
                req.version == Some(1),
            )
        }
        Ok(httparse::Status::Partial) => return Ok(Err(fields)),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let spans: &[(u32, u32, u32, u32)] = if count <= INLINE_FIELDS {
        &spans_inline[..count]
    } else {
        &spans_spilled
    };
    let head = buf.split_to(len).freeze();
    let (method, path) = path;
    let uri =
        http::Uri::from_maybe_shared(head.slice(path)).map_err(|_| StatusCode::BAD_REQUEST)?;
    fields.reserve(count);
    let mut keep_alive = http11;
    let mut closed = false;
    let mut expect_continue = false;
    let mut upgrade = method == Method::CONNECT;
    let mut coding = false;
    let mut trailers = false;
    for &(ns, ne, vs, ve) in spans {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        if name == header::TRANSFER_ENCODING {
            if !http11 {
                debug!("an HTTP/1.0 request with a transfer-encoding");
                return Err(StatusCode::BAD_REQUEST);
            }
            coding = true;
        } else if name == header::CONNECTION {
            // Once a `Connection` field says close, a later keep-alive does not undo it.
            if closed || has_token(&value, b"close") {
                closed = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(&value, b"keep-alive");
            }
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::UPGRADE {
            upgrade = http11;
        } else if name == header::TE {
            trailers = has_token(&value, b"trailers");
        }
        fields.append(name, value);
    }
    let framing = if coding {
        let chunked = fields
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .is_some_and(ends_chunked);
        if !chunked {
            debug!("a request whose transfer-encoding does not end in chunked");
            return Err(StatusCode::BAD_REQUEST);
        }
        if fields.remove(header::CONTENT_LENGTH).is_some() {
            // RFC 9112 §6.1: a sign of smuggling; not kept open.
            keep_alive = false;
        }
        Framing::Chunked(Chunk::Size)
    } else {
        match content_length(&fields) {
            Ok(Some(n)) => Framing::Length(n),
            Ok(None) => Framing::Length(0),
            Err(()) => {
                debug!("a request with an invalid content-length");
                return Err(StatusCode::BAD_REQUEST);
            }
        }
    };
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    *req.headers_mut() = fields;
    Ok(Ok(Head {
        req,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
        trailers,
    }))
}

/// What a fault in a request body's framing says.
fn body_fault(e: super::h1client::Error) -> BoxError {
    use super::h1client::Error;
    match e {
        Error::Invalid(why) => format!("malformed request body: {why}").into(),
        Error::Parse(e) => format!("malformed request trailers: {e}").into(),
        other => other.into(),
    }
}

/// The request body on the connection's side.
struct Inbound {
    chan: Arc<Mutex<Chan>>,
    framing: Framing,
    extensions: usize,
    /// A `100 Continue` is owed once the handler reads the body.
    expect_continue: bool,
    /// The handler dropped the body: the rest is not read.
    abandoned: bool,
    /// The channel was told of the body's end.
    ended: bool,
}

impl Inbound {
    #[cold]
    fn fail(&mut self, why: BoxError) {
        debug!(error = %why, "request body failed");
        let mut chan = self.chan.lock().unwrap_or_else(PoisonError::into_inner);
        chan.error = Some(why);
        chan.wake_rx();
        drop(chan);
        // The connection is in an unknown state: it closes after the response.
        self.framing = Framing::Failed;
    }
}

impl Drop for Inbound {
    /// A body the connection stops reading before its end (the exchange ended, the client
    /// left) fails, so that a handler still reading it is not left waiting.
    fn drop(&mut self) {
        if self.framing == Framing::Done {
            return;
        }
        let mut chan = self.chan.lock().unwrap_or_else(PoisonError::into_inner);
        if !chan.end && chan.error.is_none() {
            chan.error = Some("the connection closed before the request body's end".into());
        }
        chan.wake_rx();
    }
}

/// A request body's frames between the connection and the handler.
#[derive(Default)]
struct Chan {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    /// Data bytes in `frames` (bounded by [`BODY_QUEUE`]).
    queued: usize,
    end: bool,
    error: Option<BoxError>,
    /// The handler, waiting for a frame.
    rx: Option<Waker>,
    /// The connection, waiting for room (or for the body's first read).
    tx: Option<Waker>,
    /// The handler has asked for the body.
    polled: bool,
    dropped: bool,
}

impl Chan {
    fn wake_rx(&mut self) {
        if let Some(w) = self.rx.take() {
            w.wake();
        }
    }

    fn wake_tx(&mut self) {
        if let Some(w) = self.tx.take() {
            w.wake();
        }
    }
}

/// A request body read from an HTTP/1 connection ([`serve`]).
pub struct H1Body {
    chan: Arc<Mutex<Chan>>,
    /// Bytes left by its `content-length`; `None` when chunked.
    remaining: Option<u64>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        let mut chan = self.chan.lock().unwrap_or_else(PoisonError::into_inner);
        chan.dropped = true;
        chan.wake_tx();
    }
}

impl hyper::body::Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut chan = this.chan.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(frame) = chan.frames.pop_front() {
            if let Some(d) = frame.data_ref() {
                chan.queued -= d.len();
                if let Some(r) = this.remaining.as_mut() {
                    *r = r.saturating_sub(d.len() as u64);
                }
            }
            chan.wake_tx();
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = chan.error.take() {
            chan.end = true;
            return Poll::Ready(Some(Err(e)));
        }
        if chan.end {
            return Poll::Ready(None);
        }
        chan.rx = Some(cx.waker().clone());
        if !chan.polled {
            chan.polled = true;
            chan.wake_tx();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let chan = self.chan.lock().unwrap_or_else(PoisonError::into_inner);
        chan.end && chan.frames.is_empty() && chan.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The body of a request a server hands its handler: none, an HTTP/1 body from our server,
/// or an HTTP/2 stream's (`super::h2server`).
#[derive(Debug, Default)]
pub enum RequestBody {
    #[default]
    Empty,
    H1(H1Body),
    H2(super::h2conn::RecvBody),
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::H1(b) => Pin::new(b).poll_frame(cx),
            RequestBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::H1(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::H1(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
        }
    }
}

/// Set on an HTTP/1 request that may upgrade: the connection, once its response (101, or a 2xx
/// to `CONNECT`) is written. Taken with [`on_upgrade`].
#[derive(Clone, Debug)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// An upgraded HTTP/1 connection of our server: the bytes read past its head, then the stream.
pub type Upgraded = PrefixedIo<BoxIo>;

/// What a request that asked to upgrade becomes: our server's connection, or hyper's upgraded
/// stream (HTTP/2 `CONNECT`).
#[derive(Debug)]
pub enum Upgrade {
    Own(Option<oneshot::Receiver<Upgraded>>),
    Hyper(hyper::upgrade::OnUpgrade),
}

/// The connection of an upgraded request, once its response is written.
pub fn on_upgrade<B>(req: &mut Request<B>) -> Upgrade {
    match req.extensions_mut().remove::<OnUpgrade>() {
        Some(OnUpgrade(rx)) => {
            Upgrade::Own(rx.lock().unwrap_or_else(PoisonError::into_inner).take())
        }
        None => Upgrade::Hyper(hyper::upgrade::on(req)),
    }
}

impl Upgrade {
    /// Waits for the response to be written; `Err` when the connection did not upgrade.
    pub async fn wait(self) -> Result<UpgradedIo, String> {
        match self {
            Upgrade::Own(Some(rx)) => rx
                .await
                .map(UpgradedIo::Own)
                .map_err(|_| "the connection did not upgrade".to_string()),
            Upgrade::Own(None) => Err("the upgrade was taken already".into()),
            Upgrade::Hyper(on) => on
                .await
                .map(|u| UpgradedIo::Hyper(hyper_util::rt::TokioIo::new(u)))
                .map_err(|e| e.to_string()),
        }
    }
}

/// An upgraded connection of either server.
#[derive(Debug)]
pub enum UpgradedIo {
    Own(Upgraded),
    Hyper(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
}

impl AsyncRead for UpgradedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Own(u) => Pin::new(u).poll_read(cx, buf),
            UpgradedIo::Hyper(u) => Pin::new(u).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpgradedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpgradedIo::Own(u) => Pin::new(u).poll_write(cx, buf),
            UpgradedIo::Hyper(u) => Pin::new(u).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpgradedIo::Own(u) => Pin::new(u).poll_write_vectored(cx, bufs),
            UpgradedIo::Hyper(u) => Pin::new(u).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpgradedIo::Own(u) => u.is_write_vectored(),
            UpgradedIo::Hyper(u) => u.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Own(u) => Pin::new(u).poll_flush(cx),
            UpgradedIo::Hyper(u) => Pin::new(u).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedIo::Own(u) => Pin::new(u).poll_shutdown(cx),
            UpgradedIo::Hyper(u) => Pin::new(u).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Body, boxed};
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const LIMITS: Limits = Limits {
        max_head: 64 * 1024,
        max_headers: 100,
        header_timeout: Duration::from_secs(30),
    };

    /// Serves one end of a pipe with `handle`; the other end is the client's.
    fn server<H, F>(handle: H) -> DuplexStream
    where
        H: Fn(Request<RequestBody>) -> F + Send + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let (client, srv) = tokio::io::duplex(256 * 1024);
        let handle = move |req| {
            let rsp = handle(req);
            async move { Ok::<_, Infallible>(rsp.await) }
        };
        tokio::spawn(serve(Box::new(srv), LIMITS, std::future::pending(), handle));
        client
    }

    /// Answers with the request's path and body length: `GET /x` → `/x 0`.
    fn echo() -> DuplexStream {
        server(|req: Request<RequestBody>| async move {
            let path = req.uri().path().to_string();
            let n = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len().to_string())
                .unwrap_or_else(|e| format!("error: {e}"));
            Response::new(boxed(Full::new(Bytes::from(format!("{path} {n}")))))
        })
    }

    /// Reads until `buf` holds `n` occurrences of `needle`, or the connection ends.
    async fn read_until(c: &mut DuplexStream, needle: &str, n: usize) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        for _ in 0..1000 {
            if String::from_utf8_lossy(&buf).matches(needle).count() >= n {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), c.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
                Err(_) => panic!("no answer: {:?}", String::from_utf8_lossy(&buf)),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Reads to the end of the connection.
    async fn read_to_end(c: &mut DuplexStream) -> String {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf))
            .await
            .expect("the connection closes")
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_on_one_connection() {
        let mut c = echo();
        c.write_all(
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nPOST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await
        .unwrap();
        let got = read_until(&mut c, "HTTP/1.1 200 OK", 3).await;
        let a = got.find("/a 0").expect(&got);
        let b = got.find("/b 3").expect(&got);
        let cc = got.find("/c 0").expect(&got);
        assert!(a < b && b < cc, "{got}");
        assert_eq!(got.matches("content-length: 4\r\n").count(), 3, "{got}");
        assert_eq!(got.matches("\r\ndate: ").count(), 3, "{got}");
        assert!(!got.contains("connection: close"), "{got}");
        // Still open for a fourth.
        c.write_all(b"GET /d HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_until(&mut c, "/d 0", 1).await.contains("/d 0"));
    }

    /// The spare buffer sets this thread holds.
    fn spares() -> usize {
        SPARES.with_borrow(|s| s.0.len())
    }

    /// Yields until this thread holds `n` spare buffer sets: false if it never does.
    async fn spares_reach(n: usize) -> bool {
        for _ in 0..1000 {
            if spares() == n {
                return true;
            }
            tokio::task::yield_now().await;
        }
        false
    }

    #[tokio::test]
    async fn an_idle_connection_lends_its_buffers_and_takes_them_back_for_a_request() {
        // A test's runtime runs on its own thread: these spares are this test's alone.
        assert_eq!(spares(), 0);
        let mut a = echo();
        let mut b = echo();
        // Waiting for their first requests, the two connections hold no buffers: the one set
        // the first read allocated is spare.
        assert!(spares_reach(1).await, "{} spares", spares());
        // A request in flight holds a set: the spare.
        a.write_all(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\na")
            .await
            .unwrap();
        assert!(spares_reach(0).await, "{} spares", spares());
        // Another connection's request needs one of its own, given back once answered.
        let long = "v".repeat(3000);
        for path in ["/b", "/c"] {
            let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nx-long: {long}\r\n\r\n");
            b.write_all(req.as_bytes()).await.unwrap();
            let want = format!("{path} 0");
            let got = read_until(&mut b, &want, 1).await;
            assert!(got.ends_with(&want), "{got}");
            assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 1, "{got}");
            assert!(spares_reach(1).await, "{} spares", spares());
        }
        // The first request, answered, gives its set back too.
        a.write_all(b"bc").await.unwrap();
        assert!(read_until(&mut a, "/a 3", 1).await.ends_with("/a 3"));
        assert!(spares_reach(2).await, "{} spares", spares());
        // What a connection took back serves its next request as it served the first.
        a.write_all(b"GET /d HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_until(&mut a, "/d 0", 1).await.ends_with("/d 0"));
        assert!(spares_reach(2).await, "{} spares", spares());
    }

    #[test]
    fn spares_are_bounded_in_count_and_size() {
        let mut s = Spares(Vec::new());
        for _ in 0..MAX_SPARES + 4 {
            s.put(
                BytesMut::with_capacity(READ_MIN),
                Vec::with_capacity(512),
                HeaderMap::new(),
            );
        }
        assert_eq!(s.0.len(), MAX_SPARES);
        let mut s = Spares(Vec::new());
        // Too small a read buffer to read into, or one grown past the largest read: dropped.
        s.put(BytesMut::with_capacity(64), Vec::new(), HeaderMap::new());
        s.put(
            BytesMut::with_capacity(2 * READ_MAX),
            Vec::new(),
            HeaderMap::new(),
        );
        assert!(s.take().is_none());
        // A write buffer grown past what a connection keeps is not kept.
        s.put(
            BytesMut::with_capacity(READ_MIN),
            Vec::with_capacity(2 * KEEP_WRITE_BUF),
            HeaderMap::with_capacity(8),
        );
        let (rbuf, wbuf, fields) = s.take().expect("a spare");
        assert!(rbuf.capacity() >= READ_MIN);
        assert_eq!(wbuf.capacity(), 0);
        assert!(fields.capacity() >= 8);
    }

    #[tokio::test]
    async fn a_chunked_request_body_is_decoded_however_it_is_split() {
        let mut c = echo();
        let req = b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
        for piece in req.chunks(7) {
            c.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        let got = read_until(&mut c, "/up ", 1).await;
        assert!(got.ends_with("/up 11"), "{got}");
        // A malformed chunk fails the body, and the connection closes after the answer.
        c.write_all(b"POST /bad HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut c).await;
        assert!(got.contains("/bad error: malformed request body"), "{got}");
        assert!(got.contains("connection: close"), "{got}");
    }

    #[tokio::test]
    async fn malformed_heads_are_refused_with_their_status_and_closed() {
        for (head, status) in [
            (
                &b"GET /a HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"[..],
                "400",
            ),
            (
                b"POST /a HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
                "400",
            ),
            (
                b"POST /a HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "400",
            ),
            (b"POST /a HTTP/1.1\r\ncontent-length: x\r\n\r\n", "400"),
            (b"G@T /a HTTP/1.1\r\n\r\n", "400"),
            (b"GET /a HTTP/3.0\r\n\r\n", "400"),
            (b"GET /a HTTP/1.1\r\nbad header\r\n\r\n", "400"),
        ] {
            let mut c = echo();
            c.write_all(head).await.unwrap();
            let got = read_to_end(&mut c).await;
            assert!(
                got.starts_with(&format!("HTTP/1.1 {status} ")),
                "{:?}: {got}",
                String::from_utf8_lossy(head)
            );
            assert!(got.contains("connection: close\r\n"), "{got}");
        }
        // Too large a head, whole or in pieces.
        let mut c = echo();
        let big = format!("GET /a HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(70 * 1024));
        c.write_all(big.as_bytes()).await.unwrap();
        assert!(read_to_end(&mut c).await.starts_with("HTTP/1.1 431 "));
    }

    #[tokio::test]
    async fn a_content_length_beside_a_transfer_encoding_is_dropped_and_the_connection_closed() {
        let seen = Arc::new(Mutex::new(None));
        let saw = seen.clone();
        let mut c = server(move |req: Request<RequestBody>| {
            *saw.lock().unwrap() = Some(req.headers().contains_key(header::CONTENT_LENGTH));
            async move {
                let n = req.into_body().collect().await.unwrap().to_bytes().len();
                Response::new(boxed(Full::new(Bytes::from(n.to_string()))))
            }
        });
        c.write_all(b"POST /a HTTP/1.1\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut c).await;
        assert!(got.ends_with("\r\n\r\n2"), "{got}");
        assert!(got.contains("connection: close"), "{got}");
        assert_eq!(*seen.lock().unwrap(), Some(false));
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_when_the_body_is_first_read() {
        let mut c = echo();
        c.write_all(b"POST /a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut c, "100 Continue", 1).await;
        assert_eq!(got, "HTTP/1.1 100 Continue\r\n\r\n");
        c.write_all(b"ok").await.unwrap();
        assert!(read_until(&mut c, "/a 2", 1).await.contains("/a 2"));
        // A handler that answers without reading: no 100, and the connection closes after
        // the answer (the body may still come).
        let mut c = server(|_req: Request<RequestBody>| async move {
            let mut rsp = Response::new(Body::Empty);
            *rsp.status_mut() = StatusCode::EXPECTATION_FAILED;
            rsp
        });
        c.write_all(b"POST /a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut c).await;
        assert!(got.starts_with("HTTP/1.1 417 "), "{got}");
        assert!(!got.contains("100 Continue"), "{got}");
        assert!(got.contains("connection: close"), "{got}");
    }

    #[tokio::test]
    async fn http10_keeps_alive_only_when_asked_and_gets_an_unknown_length_to_the_close() {
        let streaming = || {
            server(|_req: Request<RequestBody>| async move {
                let frames = unsized_body(vec![Bytes::from("ab"), Bytes::from("cd")]);
                Response::new(boxed(frames))
            })
        };
        let mut c = streaming();
        c.write_all(b"GET /a HTTP/1.0\r\n\r\n").await.unwrap();
        let got = read_to_end(&mut c).await;
        assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
        assert!(!got.contains("transfer-encoding"), "{got}");
        assert!(got.ends_with("\r\n\r\nabcd"), "{got}");
        // HTTP/1.1: chunked, and the connection stays.
        let mut c = streaming();
        c.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
        let got = read_until(&mut c, "0\r\n\r\n", 1).await;
        assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
        assert!(
            got.ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
            "{got}"
        );
        // HTTP/1.0 with keep-alive: said back, and kept.
        let mut c = echo();
        c.write_all(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut c, "/a 0", 1).await;
        assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
        assert!(got.contains("connection: keep-alive\r\n"), "{got}");
        c.write_all(b"GET /b HTTP/1.0\r\n\r\n").await.unwrap();
        let got = read_to_end(&mut c).await;
        assert!(got.ends_with("/b 0"), "{got}");
        // HTTP/1.1 asking to close: said back, and closed.
        let mut c = echo();
        c.write_all(b"GET /a HTTP/1.1\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut c).await;
        assert!(got.contains("connection: close\r\n"), "{got}");
    }

    type Frames = tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>;

    /// A body of `parts` that does not know its length.
    fn unsized_body(parts: Vec<Bytes>) -> StreamBody<Frames> {
        StreamBody::new(tokio_stream::iter(
            parts
                .into_iter()
                .map(|b| Ok(Frame::data(b)))
                .collect::<Vec<_>>(),
        ))
    }

    #[tokio::test]
    async fn head_204_and_304_responses_carry_no_body() {
        let mut c = server(|req: Request<RequestBody>| async move {
            let mut rsp = Response::new(boxed(Full::new(Bytes::from("abcd"))));
            match req.uri().path() {
                "/204" => *rsp.status_mut() = StatusCode::NO_CONTENT,
                "/304" => *rsp.status_mut() = StatusCode::NOT_MODIFIED,
                _ => {}
            }
            rsp
        });
        c.write_all(b"HEAD /a HTTP/1.1\r\n\r\nGET /204 HTTP/1.1\r\n\r\nGET /304 HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut c, "abcd", 1).await;
        let heads: Vec<&str> = got.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(heads.len(), 4, "{got}");
        assert!(
            heads[0].starts_with("200 OK\r\ncontent-length: 4\r\n"),
            "{got}"
        );
        assert!(heads[0].ends_with("\r\n\r\n"), "{got}");
        assert!(
            heads[1].starts_with("204 ") && !heads[1].contains("content-length"),
            "{got}"
        );
        assert!(
            heads[2].starts_with("304 ") && !heads[2].contains("content-length"),
            "{got}"
        );
        assert!(heads[3].ends_with("\r\n\r\nabcd"), "{got}");
    }

    #[tokio::test]
    async fn trailers_go_out_only_when_asked_for_and_declared() {
        let answer = |_req: Request<RequestBody>| async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-sum", HeaderValue::from_static("7"));
            trailers.insert("x-undeclared", HeaderValue::from_static("1"));
            let frames = vec![
                Ok(Frame::data(Bytes::from("ab"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body: StreamBody<_> = StreamBody::new(tokio_stream::iter(
                frames.into_iter().collect::<Vec<Result<_, BoxError>>>(),
            ));
            let mut rsp = Response::new(boxed(body));
            rsp.headers_mut()
                .insert(header::TRAILER, HeaderValue::from_static("x-sum"));
            rsp
        };
        let mut c = server(answer);
        c.write_all(b"GET /a HTTP/1.1\r\nte: trailers\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut c, "x-sum: 7\r\n\r\n", 1).await;
        assert!(got.ends_with("2\r\nab\r\n0\r\nx-sum: 7\r\n\r\n"), "{got}");
        let mut c = server(answer);
        c.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
        let got = read_until(&mut c, "\r\n0\r\n\r\n", 1).await;
        assert!(got.ends_with("2\r\nab\r\n0\r\n\r\n"), "{got}");
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_request_drops_its_handler() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let mut c = server(move |_req: Request<RequestBody>| {
            let f = Flag(flag.clone());
            async move {
                let _f = f;
                std::future::pending::<()>().await;
                Response::new(Body::Empty)
            }
        });
        c.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        c.shutdown().await.unwrap();
        for _ in 0..200 {
            if dropped.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            dropped.load(Ordering::SeqCst),
            "the handler's future was dropped"
        );
    }

    #[tokio::test]
    async fn a_response_body_short_of_its_length_closes_the_connection() {
        let mut c = server(|_req: Request<RequestBody>| async move {
            let body = unsized_body(vec![Bytes::from("ab")]);
            let mut rsp = Response::new(boxed(body));
            rsp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
            rsp
        });
        c.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut c).await;
        // What the body had goes out, and the connection closes: no second response.
        assert_eq!(got.matches("HTTP/1.1 200").count(), 1, "{got}");
        assert!(got.ends_with("\r\n\r\nab"), "{got}");
    }

    #[tokio::test]
    async fn a_response_body_that_fails_is_cut_short_and_the_connection_closed() {
        let mut c = server(|_req: Request<RequestBody>| async move {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(Bytes::from("ab"))),
                Err("the app broke".into()),
            ];
            Response::new(boxed(StreamBody::new(tokio_stream::iter(frames))))
        });
        c.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_end(&mut c).await;
        // The chunk sent before the failure, and no last chunk: the client sees it cut short.
        assert_eq!(got.matches("HTTP/1.1 200").count(), 1, "{got}");
        assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n2\r\nab\r\n"), "{got}");
    }

    #[tokio::test]
    async fn an_upgrade_hands_over_the_connection_with_the_bytes_read_past_its_head() {
        let mut c = server(|mut req: Request<RequestBody>| async move {
            let upgrade = on_upgrade(&mut req).wait();
            tokio::spawn(async move {
                let mut io = upgrade.await.expect("upgraded");
                let mut buf = [0u8; 5];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
                io.write_all(b"!").await.unwrap();
            });
            let mut rsp = Response::new(Body::Empty);
            *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            rsp.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("echo"));
            rsp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            rsp
        });
        // The first tunnel bytes arrive with the head.
        c.write_all(b"GET /a HTTP/1.1\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nhel")
            .await
            .unwrap();
        let got = read_until(&mut c, "\r\n\r\n", 1).await;
        assert!(
            got.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{got}"
        );
        assert!(!got.contains("content-length"), "{got}");
        c.write_all(b"lo").await.unwrap();
        let got = read_until(&mut c, "!", 1).await;
        assert_eq!(got, "hello!");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_and_not_finished_in_time_is_cut_off_but_an_idle_connection_is_not() {
        let mut c = echo();
        tokio::time::sleep(Duration::from_secs(300)).await;
        c.write_all(b"GET /a HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        c.write_all(b"host: x\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(read_to_end(&mut c).await, "", "closed without an answer");
    }
}
