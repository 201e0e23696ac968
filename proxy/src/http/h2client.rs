//! HTTP/2 client connections on the `h2` crate, without hyper's client dispatch.
//!
//! hyper's HTTP/2 client passes each request to its connection's task through a channel, and
//! spawns a task per request that waits for the response head and passes it back through
//! another: ~7 k instructions per request through a proxy pair (BENCHMARKS.md, "Instructions
//! per request"). Here the request's own task opens the stream and awaits its response; the
//! connection's task drives the connection and nothing else. As hyper's client does:
//! - requests wait their turn on one sending handle, so that at most one stream at a time is
//!   queued inside `h2` past the peer's stream limit (one that gives up while queued never
//!   reaches the peer);
//! - a request body still open when its head is sent is piped by a task of its own, which
//!   resets the stream (CANCEL) if the response is dropped before its end, and otherwise
//!   sends the body in full, end of stream and trailers without waiting for window;
//! - `content-length` is set from a body's exact size when the request has none;
//! - server push is refused;
//! - with adaptive windows (the default), the connection's and streams' receive windows grow
//!   from an estimate of the bandwidth-delay product, sampled with PINGs while data arrives
//!   ([`Pings`]).
//!
//! Connection-specific headers are the caller's to remove (`super::strip_hop_by_hop`): `h2`
//! refuses a request that carries them, before anything is sent.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Body as _;
use tracing::debug;

use super::Body;
use super::h2conn::{Cancel, DATA_FRAME_BUDGET, Pings, Ponged, RecvBody, SPEC_WINDOW, send_body};
use super::pool::{ConnectFailure, SendError};
use super::server::Http2Params;
use crate::transport::io::BoxIo;

/// hyper's client defaults, kept so that the switch changes no setting on the wire.
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUF: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The sending half of a client connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// One handle for every request: `h2` keeps one stream of each handle pending open (past
    /// the peer's stream limit) and a handle waits for it, so requests queue here, where one
    /// that gives up leaves the queue, not in `h2`, where a stream given up would still be
    /// opened and then reset (a burst of those looks like a rapid-reset attack to a server).
    tx: Arc<tokio::sync::Mutex<h2::client::SendRequest<Bytes>>>,
    closed: Arc<AtomicBool>,
    pings: Option<Arc<Pings>>,
}

/// The HTTP/2 client handshake on `io`; spawns the connection's task.
pub async fn handshake(
    addr: std::net::SocketAddr,
    io: BoxIo,
    params: &Http2Params,
) -> Result<SendRequest, h2::Error> {
    let mut b = h2::client::Builder::new();
    b.initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUF)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_frame_size(MAX_FRAME_SIZE)
        .data_frame_budget(DATA_FRAME_BUDGET)
        .enable_push(false);
    let adaptive = match params.windows() {
        Some((stream, conn)) => {
            b.initial_window_size(stream)
                .initial_connection_window_size(conn);
            false
        }
        None => {
            b.initial_window_size(SPEC_WINDOW)
                .initial_connection_window_size(SPEC_WINDOW);
            true
        }
    };
    let (tx, mut conn) = b.handshake::<_, Bytes>(io).await?;
    let closed = Arc::new(AtomicBool::new(false));
    let pings = conn
        .ping_pong()
        .and_then(|p| Pings::new(p, adaptive, None))
        .map(Arc::new);
    let (done, estimator) = (closed.clone(), pings.clone());
    tokio::spawn(async move {
        let ended = poll_fn(|cx| {
            if let Some(pings) = &estimator
                && let Some(Ponged::Window(window)) = pings.poll(cx)
            {
                conn.set_target_window_size(window);
                // Refused while our last SETTINGS is unacknowledged: the streams keep their
                // windows until the next growth.
                if let Err(e) = conn.set_initial_window_size(window) {
                    debug!(%addr, error = %e, window, "stream windows not grown");
                }
            }
            Pin::new(&mut conn).poll(cx)
        })
        .await;
        done.store(true, Ordering::Release);
        if let Err(e) = ended {
            debug!(%addr, error = %e, "HTTP/2 client connection ended");
        }
    });
    Ok(SendRequest {
        tx: Arc::new(tokio::sync::Mutex::new(tx)),
        closed,
        pings,
    })
}

impl SendRequest {
    /// Whether the connection has ended (it takes no more requests).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req` and waits for its response head. A request the connection was gone for is
    /// handed back (`SendError::Connect`).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<RecvBody>, SendError> {
        let mut tx = self.tx.lock().await;
        if poll_fn(|cx| tx.poll_ready(cx)).await.is_err() {
            return Err(SendError::Connect(ConnectFailure::Closed, Box::new(req)));
        }
        let (mut parts, body) = req.into_parts();
        let eos = body.is_end_stream();
        // A length of 0 is written only for methods whose requests have a defined payload.
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || !matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE))
            && parts.method != Method::CONNECT
            && !parts.headers.contains_key(CONTENT_LENGTH)
        {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        let head = Request::from_parts(parts, ());
        let (response, stream) = tx.send_request(head, eos).map_err(SendError::H2)?;
        drop(tx);
        let cancel = if eos {
            None
        } else {
            let (cancel, cancelled) = tokio::sync::oneshot::channel();
            tokio::spawn(pipe(body, stream, cancelled));
            Some(Cancel(Some(cancel)))
        };
        let rsp = response.await.map_err(SendError::H2)?;
        let (parts, recv) = rsp.into_parts();
        let body = RecvBody::new(recv, &parts.headers, self.pings.clone(), cancel);
        Ok(Response::from_parts(parts, body))
    }
}

/// Sends `body` on `stream`, and resets the stream (CANCEL) if the body fails, the peer resets
/// the stream, or `cancelled` fires (the response was dropped before its end). A sender dropped
/// without firing means the response ended: the body is still sent in full.
async fn pipe(
    mut body: Body,
    mut stream: h2::SendStream<Bytes>,
    mut cancelled: tokio::sync::oneshot::Receiver<()>,
) {
    let reset = {
        let mut sent = std::pin::pin!(send_body(&mut body, &mut stream));
        tokio::select! {
            sent = &mut sent => sent.is_err(),
            cancel = &mut cancelled => match cancel {
                Ok(()) => true,
                Err(_) => sent.await.is_err(),
            },
        }
    };
    if reset {
        stream.send_reset(h2::Reason::CANCEL);
    }
}

#[cfg(test)]
mod tests {
    use super::super::BoxError;
    use super::*;
    use http::HeaderMap;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use hyper::body::Frame;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Duration;

    const ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    /// A client connection to an `h2` server on the other end of a pipe, which `serve` answers.
    async fn client<F, Fut>(params: Http2Params, serve: F) -> SendRequest
    where
        F: Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (c, s) = tokio::io::duplex(1024 * 1024);
        tokio::spawn(async move {
            let mut conn = h2::server::handshake(s).await.unwrap();
            let serve = Arc::new(serve);
            while let Some(Ok((req, rsp))) = conn.accept().await {
                tokio::spawn(serve(req, rsp));
            }
        });
        handshake(ADDR, Box::new(c), &params).await.unwrap()
    }

    fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(20), f)
    }

    /// A request body fed through the returned sender (`cap` frames buffered).
    fn streamed(
        cap: usize,
    ) -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
        Body,
    ) {
        let (frames, rx) = tokio::sync::mpsc::channel(cap);
        let body = super::super::boxed(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        (frames, body)
    }

    fn get() -> Request<Body> {
        Request::get("http://a/")
            .body(super::super::boxed(Empty::<Bytes>::new()))
            .unwrap()
    }

    /// What a server handler reports once, from whichever of its clones gets there first.
    #[derive(Clone)]
    struct Once<T>(Arc<Mutex<Option<tokio::sync::oneshot::Sender<T>>>>);

    impl<T> Once<T> {
        fn send(&self, v: T) {
            if let Some(t) = self.0.lock().unwrap().take() {
                let _ = t.send(v);
            }
        }
    }

    fn once<T>() -> (Once<T>, tokio::sync::oneshot::Receiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Once(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    #[tokio::test]
    async fn a_streamed_request_body_and_its_trailers_go_and_come_back() {
        // The server echoes the body and the trailers.
        let tx = client(Http2Params::default(), |req, mut rsp| async move {
            let mut recv = req.into_body();
            let mut send = rsp.send_response(Response::new(()), false).unwrap();
            while let Some(data) = recv.data().await {
                let data = data.unwrap();
                let _ = recv.flow_control().release_capacity(data.len());
                send.send_data(data, false).unwrap();
            }
            let trailers = recv.trailers().await.unwrap().unwrap_or_default();
            send.send_trailers(trailers).unwrap();
        })
        .await;
        let (frames, body) = streamed(4);
        let req = Request::post("http://a/echo").body(body).unwrap();
        let feed = async {
            for chunk in ["one ", "two ", "three"] {
                frames
                    .send(Ok(Frame::data(Bytes::from(chunk))))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            frames.send(Ok(Frame::trailers(t))).await.unwrap();
        };
        let (rsp, ()) = tokio::join!(within(tx.send(req)), feed);
        let rsp = rsp.expect("answered").unwrap();
        let collected = within(rsp.into_body().collect()).await.unwrap().unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "one two three");
    }

    #[tokio::test]
    async fn uploads_that_wait_for_window_go_out_in_frames_of_useful_size() {
        // 256 uploads of 1 KiB at once, four times what the server's connection window (the
        // spec's) holds; the server reads none for 100 ms, then all at once.
        let frames = Arc::new(Mutex::new(Vec::new()));
        let seen = frames.clone();
        let tx = client(Http2Params::default(), move |req, mut rsp| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut recv = req.into_body();
                let mut sizes = Vec::new();
                while let Some(data) = recv.data().await {
                    let n = data.unwrap().len();
                    let _ = recv.flow_control().release_capacity(n);
                    sizes.push(n);
                }
                seen.lock().unwrap().push(sizes);
                let _ = rsp.send_response(Response::new(()), true);
            }
        })
        .await;
        let uploads = (0..256).map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let body =
                    super::super::boxed(http_body_util::Full::new(Bytes::from(vec![b'x'; 1024])));
                let req = Request::post("http://a/up").body(body).unwrap();
                tx.send(req).await.map(|rsp| rsp.status())
            })
        });
        for upload in uploads.collect::<Vec<_>>() {
            let status = within(upload).await.expect("answered").unwrap();
            assert_eq!(status.unwrap(), 200);
        }
        let frames = frames.lock().unwrap();
        assert_eq!(frames.len(), 256);
        super::super::h2conn::assert_few_small_frames(&frames);
    }

    #[tokio::test]
    async fn an_upload_larger_than_the_windows_arrives_whole() {
        // The server counts what it reads, slowly at first, and answers the total.
        let tx = client(Http2Params::default(), |req, mut rsp| async move {
            let mut recv = req.into_body();
            let mut total = 0usize;
            while let Some(data) = recv.data().await {
                let data = data.unwrap();
                total += data.len();
                if total < 256 * 1024 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let _ = recv.flow_control().release_capacity(data.len());
            }
            let mut send = rsp.send_response(Response::new(()), false).unwrap();
            send.send_data(Bytes::from(total.to_string()), true)
                .unwrap();
        })
        .await;
        let (frames, body) = streamed(2);
        let feed = async move {
            for _ in 0..64 {
                let chunk = Bytes::from(vec![7u8; 64 * 1024]);
                frames.send(Ok(Frame::data(chunk))).await.unwrap();
            }
        };
        let req = Request::post("http://a/upload").body(body).unwrap();
        let (rsp, ()) = tokio::join!(within(tx.send(req)), feed);
        let rsp = rsp.expect("answered").unwrap();
        let got = within(rsp.into_body().collect()).await.unwrap().unwrap();
        assert_eq!(got.to_bytes(), (64 * 64 * 1024).to_string());
    }

    #[tokio::test]
    async fn the_end_of_a_body_does_not_wait_for_window() {
        // The server gives no window back until the request has ended.
        let tx = client(Http2Params::default(), |req, mut rsp| async move {
            let mut recv = req.into_body();
            let mut total = 0usize;
            while let Some(data) = recv.data().await {
                total += data.unwrap().len();
            }
            let mut send = rsp.send_response(Response::new(()), false).unwrap();
            send.send_data(Bytes::from(total.to_string()), true)
                .unwrap();
        })
        .await;
        // One chunk that fills the stream's window exactly, then the end.
        let (frames, body) = streamed(2);
        frames
            .send(Ok(Frame::data(Bytes::from(vec![1u8; 65_535]))))
            .await
            .unwrap();
        drop(frames);
        let rsp = within(tx.send(Request::post("http://a/").body(body).unwrap()))
            .await
            .expect("answered")
            .unwrap();
        let got = within(rsp.into_body().collect()).await.unwrap().unwrap();
        assert_eq!(got.to_bytes(), "65535");
    }

    #[tokio::test]
    async fn requests_that_give_up_past_the_stream_limit_never_reach_the_server() {
        // One stream at a time; the first request is slow.
        let (c, s) = tokio::io::duplex(1024 * 1024);
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = seen.clone();
        tokio::spawn(async move {
            let mut conn = h2::server::Builder::new()
                .max_concurrent_streams(1)
                .handshake::<_, Bytes>(s)
                .await
                .unwrap();
            while let Some(Ok((_req, mut rsp))) = conn.accept().await {
                let slow = counted.fetch_add(1, Ordering::Relaxed) == 0;
                tokio::spawn(async move {
                    if slow {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    let _ = rsp.send_response(Response::new(()), true);
                });
            }
        });
        let tx = handshake(ADDR, Box::new(c), &Http2Params::default())
            .await
            .unwrap();
        let first = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(get()).await.map(|r| r.status()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Forty that give up after 5 ms, while the first holds the only stream.
        for _ in 0..40 {
            let _ = tokio::time::timeout(Duration::from_millis(5), tx.send(get())).await;
        }
        let last = within(tx.send(get())).await.expect("answered");
        assert_eq!(last.map(|r| r.status()).ok(), Some(http::StatusCode::OK));
        assert_eq!(
            first.await.unwrap().ok(),
            Some(http::StatusCode::OK),
            "the slow request"
        );
        // The first, the last, and at most the one that was queued inside h2 when it gave up.
        let n = seen.load(Ordering::Relaxed);
        assert!(n <= 3, "the server saw {n} streams");
    }

    #[tokio::test]
    async fn a_response_that_ends_first_lets_the_upload_finish() {
        // The server answers in full after the first chunk, then reads the rest.
        let (total_tx, total_rx) = once::<Result<usize, String>>();
        let tx = client(Http2Params::default(), move |req, mut rsp| {
            let total_tx = total_tx.clone();
            async move {
                let mut recv = req.into_body();
                let mut total = 0usize;
                let mut answered = false;
                let outcome = loop {
                    match recv.data().await {
                        Some(Ok(d)) => {
                            total += d.len();
                            let _ = recv.flow_control().release_capacity(d.len());
                            if !answered {
                                answered = true;
                                let mut send = rsp.send_response(Response::new(()), false).unwrap();
                                send.send_data(Bytes::from("done"), true).unwrap();
                            }
                        }
                        Some(Err(e)) => break Err(e.to_string()),
                        None => break Ok(total),
                    }
                };
                total_tx.send(outcome);
            }
        })
        .await;
        let (frames, body) = streamed(1);
        frames
            .send(Ok(Frame::data(Bytes::from("a"))))
            .await
            .unwrap();
        let rsp = within(tx.send(Request::post("http://a/").body(body).unwrap()))
            .await
            .expect("answered")
            .unwrap();
        let got = within(rsp.into_body().collect()).await.unwrap().unwrap();
        assert_eq!(got.to_bytes(), "done");
        // The response is over and dropped; the rest of the upload still goes.
        for _ in 0..3 {
            frames
                .send(Ok(Frame::data(Bytes::from("bc"))))
                .await
                .unwrap();
        }
        drop(frames);
        let total = within(total_rx).await.expect("the upload ended").unwrap();
        assert_eq!(total, Ok(7));
    }

    #[tokio::test]
    async fn a_dropped_response_resets_a_request_body_still_being_sent() {
        let (reset_tx, reset_rx) = once::<Option<h2::Reason>>();
        let tx = client(Http2Params::default(), move |req, mut rsp| {
            let reset_tx = reset_tx.clone();
            async move {
                let mut recv = req.into_body();
                let _send = rsp.send_response(Response::new(()), false).unwrap();
                let reason = loop {
                    match recv.data().await {
                        Some(Ok(d)) => {
                            let _ = recv.flow_control().release_capacity(d.len());
                        }
                        Some(Err(e)) => break e.reason(),
                        None => break None,
                    }
                };
                reset_tx.send(reason);
            }
        })
        .await;
        // A body that sends one chunk and then never ends.
        let (frames, body) = streamed(1);
        frames
            .send(Ok(Frame::data(Bytes::from("x"))))
            .await
            .unwrap();
        let rsp = within(tx.send(Request::post("http://a/").body(body).unwrap()))
            .await
            .expect("answered")
            .unwrap();
        drop(rsp);
        let reason = within(reset_rx)
            .await
            .expect("the server saw the stream end")
            .unwrap();
        assert_eq!(reason, Some(h2::Reason::CANCEL));
        drop(frames);
    }

    /// The largest send capacity the server is granted while it sends `total` bytes to a client
    /// with `params`, which reads them all.
    async fn largest_grant(params: Http2Params, total: usize) -> usize {
        let (grant_tx, grant_rx) = once::<usize>();
        let tx = client(params, move |_req, mut rsp| {
            let grant_tx = grant_tx.clone();
            async move {
                let mut send = rsp.send_response(Response::new(()), false).unwrap();
                let (mut left, mut largest) = (total, 0);
                while left > 0 {
                    send.reserve_capacity(left);
                    let Some(Ok(n)) = poll_fn(|cx| send.poll_capacity(cx)).await else {
                        break;
                    };
                    largest = largest.max(n);
                    let n = n.min(left);
                    left -= n;
                    send.send_data(Bytes::from(vec![0u8; n]), left == 0)
                        .unwrap();
                }
                grant_tx.send(largest);
            }
        })
        .await;
        let rsp = within(tx.send(get())).await.expect("answered").unwrap();
        let got = within(rsp.into_body().collect()).await.unwrap().unwrap();
        assert_eq!(got.to_bytes().len(), total);
        within(grant_rx).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn adaptive_windows_grow_past_the_initial_window_and_fixed_ones_do_not() {
        let adaptive = largest_grant(Http2Params::default(), 16 * 1024 * 1024).await;
        assert!(adaptive > SPEC_WINDOW as usize, "largest grant {adaptive}");
        let fixed = Http2Params::parse(
            "initial_stream_window_size=65535,initial_connection_window_size=65535",
        )
        .unwrap();
        let fixed = largest_grant(fixed, 4 * 1024 * 1024).await;
        assert!(fixed <= SPEC_WINDOW as usize, "largest grant {fixed}");
    }

    #[tokio::test]
    async fn a_connection_that_ends_is_closed_and_hands_requests_back() {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(s).await.unwrap();
            // Answer nothing; go away at once.
            conn.graceful_shutdown();
            let _ = poll_fn(|cx| conn.poll_closed(cx)).await;
        });
        let tx = handshake(ADDR, Box::new(c), &Http2Params::default())
            .await
            .unwrap();
        within(server).await.unwrap().unwrap();
        let closed = within(async {
            while !tx.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "the client never saw its connection end");
        match tx.send(get()).await {
            Err(SendError::Connect(ConnectFailure::Closed, req)) => {
                assert_eq!(req.uri(), "http://a/")
            }
            other => panic!("{other:?}"),
        }
    }
}
