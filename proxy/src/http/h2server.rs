//! HTTP/2 server connections on the `h2` crate, without hyper's server dispatch.
//!
//! hyper's HTTP/2 server sends a response body that waits for window as a 1-byte DATA frame
//! and then the rest (it asks `h2` for one byte of window per chunk). In a burst, a client
//! holds hundreds of those unread, past the budget its `h2` allows for small frames, and ends
//! the connection (GOAWAY, ENHANCE_YOUR_CALM): BENCHMARKS.md, "Stop 48". Here a body is sent
//! by [`send_body`], which asks for window for a chunk whole, and the budget for the frames we
//! receive is [`DATA_FRAME_BUDGET`].
//!
//! As hyper's server does (its `proto/h2/server.rs`):
//! - each stream is served by a task of its own, which calls the handler and sends its
//!   response; a stream the client resets drops the handler's future;
//! - a response loses the fields HTTP/2 forbids (`strip_connection_fields`; unlike
//!   `super::strip_hop_by_hop`, it keeps `trailer`), gains a `date` when it has none, and a
//!   `content-length` from its body's exact size;
//! - a body that fails resets its stream, with the `h2` reason the error carries, if any, else
//!   INTERNAL_ERROR;
//! - the settings are hyper's defaults unless `Http2Params` says otherwise: adaptive windows
//!   (from the spec's 64 KiB) unless fixed ones are set or adaptive flow control is off (then
//!   1 MiB), 16 KiB frames, 400 KiB of send buffer per stream, 1 024 locally reset streams;
//! - keepalive, when both its interval and timeout are set: a PING once the interval has
//!   passed since the last answer; none within the timeout closes the connection;
//! - `stop` sends GOAWAY and lets the streams in flight finish.
//!
//! A CONNECT (or extended CONNECT) stream is served as any other request: the proxy tunnels
//! CONNECT only over HTTP/1 (`super::upgrade`).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Body as _;
use tracing::debug;

use super::BoxError;
use super::h1server::{RequestBody, date_value};
use super::h2conn::{DATA_FRAME_BUDGET, Pings, Ponged, RecvBody, SPEC_WINDOW, Stopped, send_body};
use super::inflight::Held;
use super::record::Recorded;
use super::server::{HEADER_READ_TIMEOUT, Limits};
use crate::transport::io::BoxIo;

/// hyper's server defaults, kept so that the switch changes no setting on the wire.
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUF: usize = 400 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// The windows with adaptive flow control off and none set.
const FIXED_WINDOW: u32 = 1024 * 1024;

/// Serves HTTP/2 on `io` until the client is done or `stop` fires and the streams in flight
/// have finished; `respond` answers each stream's request.
pub(super) async fn serve<R, F>(
    io: BoxIo,
    limits: &Limits,
    stop: impl Future<Output = ()>,
    respond: R,
) where
    R: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Result<Response<Held<Recorded>>, Infallible>> + Send + 'static,
{
    let params = &limits.h2;
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(limits.max_streams)
        .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX))
        .max_frame_size(params.max_frame_size.unwrap_or(MAX_FRAME_SIZE))
        .max_send_buffer_size(params.max_send_buf_size.unwrap_or(MAX_SEND_BUF))
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .data_frame_budget(DATA_FRAME_BUDGET);
    if let Some(n) = params.max_pending_accept_reset_streams {
        b.max_pending_accept_reset_streams(n);
    }
    let adaptive = match params.windows() {
        Some((stream, conn)) => {
            b.initial_window_size(stream)
                .initial_connection_window_size(conn);
            false
        }
        None if params.adaptive_flow_control == Some(false) => {
            b.initial_window_size(FIXED_WINDOW)
                .initial_connection_window_size(FIXED_WINDOW);
            false
        }
        None => {
            b.initial_window_size(SPEC_WINDOW)
                .initial_connection_window_size(SPEC_WINDOW);
            true
        }
    };
    // The client's preface was read to detect the protocol: only its SETTINGS may be slow.
    let mut conn =
        match tokio::time::timeout(HEADER_READ_TIMEOUT, b.handshake::<_, Bytes>(io)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!(error = %e, "HTTP/2 handshake failed");
                return;
            }
            Err(_) => {
                debug!("HTTP/2 handshake timed out");
                return;
            }
        };
    let pings = conn
        .ping_pong()
        .and_then(|p| Pings::new(p, adaptive, params.keep_alive()))
        .map(Arc::new);
    let mut stop = pin!(stop);
    let mut stopping = false;
    loop {
        let next = poll_fn(|cx| {
            if !stopping && stop.as_mut().poll(cx).is_ready() {
                stopping = true;
                conn.graceful_shutdown();
            }
            if let Some(pings) = &pings {
                match pings.poll(cx) {
                    Some(Ponged::Window(window)) => {
                        conn.set_target_window_size(window);
                        // Refused while our last SETTINGS is unacknowledged: the streams keep
                        // their windows until the next growth.
                        if let Err(e) = conn.set_initial_window_size(window) {
                            debug!(error = %e, window, "stream windows not grown");
                        }
                    }
                    Some(Ponged::TimedOut) => return Poll::Ready(None),
                    None => {}
                }
            }
            conn.poll_accept(cx).map(Some)
        })
        .await;
        match next {
            Some(Some(Ok((req, send)))) => {
                let (parts, recv) = req.into_parts();
                let body = if recv.is_end_stream() {
                    RequestBody::Empty
                } else {
                    RequestBody::H2(RecvBody::new(recv, &parts.headers, pings.clone(), None))
                };
                tokio::spawn(stream(respond(Request::from_parts(parts, body)), send));
            }
            Some(Some(Err(e))) => {
                debug!(error = %e, "HTTP/2 connection ended with an error");
                break;
            }
            Some(None) => break,
            None => {
                debug!("HTTP/2 keepalive timed out: the client did not answer a PING");
                conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                // Flushes the GOAWAY, then ends.
                let _ = poll_fn(|cx| conn.poll_closed(cx)).await;
                break;
            }
        }
    }
}

/// One stream: the handler's answer, then its response.
async fn stream<F>(answer: F, mut send: h2::server::SendResponse<Bytes>)
where
    F: Future<Output = Result<Response<Held<Recorded>>, Infallible>>,
{
    let answer = pin!(answer);
    let rsp = tokio::select! {
        rsp = answer => rsp,
        reason = poll_fn(|cx| send.poll_reset(cx)) => {
            debug!(reason = ?reason.ok(), "the client reset a stream before its response");
            return;
        }
    };
    let Ok(rsp) = rsp;
    let (mut head, mut body) = rsp.into_parts();
    strip_connection_fields(&mut head.headers);
    if !head.headers.contains_key(header::DATE) {
        head.headers.insert(header::DATE, date_value());
    }
    let eos = body.is_end_stream();
    if !eos
        && let Some(len) = body.size_hint().exact()
        && !head.headers.contains_key(header::CONTENT_LENGTH)
    {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let mut out = match send.send_response(Response::from_parts(head, ()), eos) {
        Ok(out) => out,
        Err(e) => {
            debug!(error = %e, "HTTP/2 response not sent");
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            return;
        }
    };
    if eos {
        return;
    }
    match send_body(&mut body, &mut out).await {
        Ok(()) | Err(Stopped::Reset) => {}
        Err(Stopped::Failed(e)) => {
            debug!(error = %e, "response body failed");
            out.send_reset(reason(&e));
        }
    }
}

/// Removes the fields HTTP/2 forbids (RFC 9113, 8.2.2), which `h2` refuses to send: those
/// `connection` names, itself, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`
/// and `te` (a response has no use for `te: trailers`). hyper's server removes the same.
fn strip_connection_fields(headers: &mut HeaderMap) {
    const FORBIDDEN: [&str; 6] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
    ];
    // Most responses carry none: one pass over the names present first.
    if !headers.keys().any(|n| FORBIDDEN.contains(&n.as_str())) {
        return;
    }
    super::remove_connection_named(headers);
    // `connection` went with the fields it names.
    for name in &FORBIDDEN[1..] {
        headers.remove(*name);
    }
}

/// The `h2` reason an error carries (a peer's reset, passed on), else INTERNAL_ERROR.
fn reason(e: &BoxError) -> h2::Reason {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cause {
        if let Some(reason) = err.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        cause = err.source();
    }
    h2::Reason::INTERNAL_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::server::Http2Params;
    use http::header::HeaderName;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Answer = Response<Held<Recorded>>;

    fn answer(body: super::super::Body) -> Answer {
        Response::new(Held::free(Recorded::from(body)))
    }

    fn bytes(n: usize) -> super::super::Body {
        super::super::boxed(http_body_util::Full::new(Bytes::from(vec![b'x'; n])))
    }

    /// Serves HTTP/2 with `limits` on one end of a pipe, `handle` answering; stopped when
    /// `stop` is dropped or fires.
    fn server<H, F>(
        limits: Limits,
        stop: tokio::sync::oneshot::Receiver<()>,
        handle: H,
    ) -> tokio::io::DuplexStream
    where
        H: Fn(Request<RequestBody>) -> F + Send + 'static,
        F: Future<Output = Answer> + Send + 'static,
    {
        let (client, srv) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop.await;
            };
            serve(Box::new(srv), &limits, stop, move |req| {
                let rsp = handle(req);
                async move { Ok(rsp.await) }
            })
            .await;
        });
        client
    }

    async fn client(io: tokio::io::DuplexStream) -> h2::client::SendRequest<Bytes> {
        let (tx, conn) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(conn);
        tx
    }

    fn get(path: &str) -> Request<()> {
        Request::get(format!("http://a{path}")).body(()).unwrap()
    }

    fn within<F: Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(20), f)
    }

    #[tokio::test]
    async fn responses_that_wait_for_window_go_out_in_frames_of_useful_size() {
        // 256 responses of 1 KiB at once, four times what the client's connection window (the
        // spec's) holds; the client reads none for 100 ms, then all at once.
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let io = server(Limits::default(), stopped, |_req| async {
            answer(bytes(1024))
        });
        let mut tx = client(io).await;
        let mut pending = Vec::new();
        for _ in 0..256 {
            tx = tx.ready().await.unwrap();
            pending.push(tx.send_request(get("/"), true).unwrap().0);
        }
        let mut bodies = Vec::new();
        for rsp in pending {
            let rsp = within(rsp).await.expect("a response head").unwrap();
            assert_eq!(rsp.headers()[header::CONTENT_LENGTH], "1024");
            bodies.push(rsp.into_body());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reads = bodies.into_iter().map(|mut body| {
            tokio::spawn(async move {
                let mut sizes = Vec::new();
                while let Some(data) = body.data().await {
                    let n = data.unwrap().len();
                    let _ = body.flow_control().release_capacity(n);
                    sizes.push(n);
                }
                sizes
            })
        });
        let mut frames = Vec::new();
        for read in reads.collect::<Vec<_>>() {
            frames.push(within(read).await.expect("a body").unwrap());
        }
        super::super::h2conn::assert_few_small_frames(&frames);
    }

    #[tokio::test]
    async fn a_response_loses_connection_fields_and_gains_a_date() {
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let io = server(Limits::default(), stopped, |_req| async {
            let mut rsp = answer(bytes(3));
            let h = rsp.headers_mut();
            for (name, value) in [
                ("connection", "close, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("te", "trailers"),
                ("trailer", "grpc-status"),
                ("x-kept", "yes"),
            ] {
                h.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            rsp
        });
        let mut tx = client(io).await;
        let (rsp, _) = tx.send_request(get("/"), true).unwrap();
        let rsp = within(rsp).await.expect("answered").unwrap();
        let h = rsp.headers();
        for gone in [
            "connection",
            "x-hop",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "te",
        ] {
            assert!(!h.contains_key(gone), "{gone} in {h:?}");
        }
        assert_eq!(h["x-kept"], "yes");
        // Allowed in HTTP/2, and kept as hyper keeps it.
        assert_eq!(h["trailer"], "grpc-status");
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        assert!(httpdate::parse_http_date(h[header::DATE].to_str().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn a_stream_the_client_resets_drops_its_handler() {
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel::<()>();
        let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let io = server(Limits::default(), stopped, move |_req| {
            // Fires when the handler's future is dropped.
            struct Guard(Option<tokio::sync::oneshot::Sender<()>>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    if let Some(tx) = self.0.take() {
                        let _ = tx.send(());
                    }
                }
            }
            let guard = Guard(dropped_tx.lock().unwrap().take());
            async move {
                let _guard = guard;
                std::future::pending::<Answer>().await
            }
        });
        let mut tx = client(io).await;
        let (rsp, mut body) = tx.send_request(get("/"), false).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        body.send_reset(h2::Reason::CANCEL);
        drop(rsp);
        within(dropped)
            .await
            .expect("the handler was dropped")
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_response_body_resets_its_stream() {
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let io = server(Limits::default(), stopped, |_req| async {
            let fail = tokio_stream::iter([
                Ok(hyper::body::Frame::data(Bytes::from_static(b"part"))),
                Err::<_, BoxError>("the upstream went away".into()),
            ]);
            answer(super::super::boxed(http_body_util::StreamBody::new(fail)))
        });
        let mut tx = client(io).await;
        let (rsp, _) = tx.send_request(get("/"), true).unwrap();
        // The reset may overtake the head at the client.
        let mut error = None;
        match within(rsp).await.expect("answered") {
            Err(e) => error = Some(e),
            Ok(rsp) => {
                let mut body = rsp.into_body();
                while let Some(data) = within(body.data()).await.expect("a frame") {
                    if let Err(e) = data {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        let error = error.expect("the body failed");
        assert_eq!(error.reason(), Some(h2::Reason::INTERNAL_ERROR), "{error}");
    }

    fn keepalive() -> Limits {
        Limits {
            h2: Http2Params::parse("keep_alive_interval=1s,keep_alive_timeout=1s").unwrap(),
            ..Limits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_closes_a_connection_whose_client_does_not_answer_pings() {
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let mut io = server(keepalive(), stopped, |_req| async { answer(bytes(1)) });
        // The preface and an empty SETTINGS frame, then silence: no PING is answered.
        io.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = within(io.read(&mut buf)).await.expect("closed").unwrap();
            if n == 0 {
                break;
            }
            frames.extend_from_slice(&buf[..n]);
        }
        // Frame types in order (a 9-byte head each): a PING (6) went out, then GOAWAY (7).
        let mut types = Vec::new();
        let mut at = 0;
        while at + 9 <= frames.len() {
            let len = usize::from(frames[at]) << 16
                | usize::from(frames[at + 1]) << 8
                | usize::from(frames[at + 2]);
            types.push(frames[at + 3]);
            at += 9 + len;
        }
        assert!(types.contains(&6), "no PING: {types:?}");
        assert_eq!(types.last(), Some(&7), "no GOAWAY last: {types:?}");
        // Closed after the interval and the timeout, not before.
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_keeps_a_connection_whose_client_answers() {
        let (_stop, stopped) = tokio::sync::oneshot::channel();
        let io = server(keepalive(), stopped, |_req| async { answer(bytes(1)) });
        let mut tx = client(io).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (rsp, _) = tx.send_request(get("/"), true).unwrap();
        assert_eq!(within(rsp).await.expect("answered").unwrap().status(), 200);
    }
}
