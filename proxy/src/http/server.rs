//! Serving a connection detected as HTTP: HTTP/1.1 (keep-alive, upgrades) with our own server
//! ([`super::h1server`]), HTTP/2 with ours on `h2` ([`super::h2server`]); with limits on header
//! size and count. Malformed requests are answered by the server (400, or 431 when the head is
//! too large).
//!
//! A handler closes its connection by marking a response with [`CloseConnection`]: HTTP/1
//! answers with `connection: close` and closes after it; HTTP/2 sends GOAWAY, so the client
//! opens no new stream there, while the streams in flight finish.
//!
//! When the process drains ([`Drain`]), every connection is told to close the same way: HTTP/1
//! answers the request in flight with `connection: close` (an idle connection closes at once),
//! HTTP/2 sends GOAWAY and finishes the streams it accepted; a client opens new streams on a
//! new connection, which the closed listener refuses, so its proxy picks another endpoint.
//!
//! An HTTP/1 request head must arrive whole within [`HEADER_READ_TIMEOUT`] of its first byte
//! (slow-header clients are cut off). The clock starts at that first byte, not when the
//! connection falls idle between requests: a timeout that also closed idle keep-alive
//! connections (as hyper's does) may close an app's pooled connection under it just as it
//! sends a request, and that request is lost.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use remora_runtime::drain::Drain;
use remora_runtime::wake::OnWake;
use tokio::sync::Notify;

use super::detect::Protocol;
use super::h1server::{self, RequestBody};
use super::h2server;
use super::inflight::{Gate, Held, hold};
use super::record::Recorded;
use crate::transport::io::BoxIo;

/// How long an HTTP/1 request head may take to arrive, from its first byte.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The default limit on the header fields of an HTTP/1 head: hyper's (`DEFAULT_MAX_HEADERS` in
/// its `proto/h1/role.rs`).
const DEFAULT_MAX_HEADERS: usize = 100;

/// Limits on what a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request head (HTTP/1 buffer, HTTP/2 header list), bytes.
    pub max_head: usize,
    /// The most header fields in an HTTP/1 request head.
    pub max_headers: usize,
    /// The most concurrent streams on one HTTP/2 connection.
    pub max_streams: u32,
    /// The rest of the HTTP/2 server settings.
    pub h2: Http2Params,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: DEFAULT_MAX_HEADERS,
            max_streams: 2048,
            h2: Http2Params::default(),
        }
    }
}

/// HTTP/2 settings of a server (or, for the windows, a client), as Linkerd names them: each
/// `None` keeps hyper's default. Written `name=value,...` (`keep_alive_interval=10s,
/// max_concurrent_streams=100`). The windows apply only together, as do the two keepalive
/// settings (linkerd2-proxy ignores one without the other too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Params {
    pub keep_alive_interval: Option<Duration>,
    pub keep_alive_timeout: Option<Duration>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    pub adaptive_flow_control: Option<bool>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
    pub max_pending_accept_reset_streams: Option<usize>,
    pub max_send_buf_size: Option<usize>,
}

impl Http2Params {
    /// Parses `name=value,...`; an empty text sets nothing.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Http2Params::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not NAME=VALUE"))?;
            let (name, value) = (name.trim(), value.trim());
            let n32 = || {
                value
                    .parse::<u32>()
                    .map_err(|_| format!("{name}: {value:?} is not a number"))
            };
            let nsize = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{name}: {value:?} is not a number"))
            };
            let dur = || {
                remora_runtime::duration::parse_duration(value).map_err(|e| format!("{name}: {e}"))
            };
            match name {
                "keep_alive_interval" => p.keep_alive_interval = Some(dur()?),
                "keep_alive_timeout" => p.keep_alive_timeout = Some(dur()?),
                "max_concurrent_streams" => p.max_concurrent_streams = Some(n32()?),
                "initial_stream_window_size" => p.initial_stream_window_size = Some(n32()?),
                "initial_connection_window_size" => p.initial_connection_window_size = Some(n32()?),
                "adaptive_flow_control" => {
                    p.adaptive_flow_control = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("{name}: expected true or false")),
                    })
                }
                "max_frame_size" => {
                    let n = n32()?;
                    if !(16_384..=16_777_215).contains(&n) {
                        return Err(format!("{name}: must be 16384 to 16777215"));
                    }
                    p.max_frame_size = Some(n)
                }
                "max_header_list_size" => p.max_header_list_size = Some(n32()?),
                "max_pending_accept_reset_streams" => {
                    p.max_pending_accept_reset_streams = Some(nsize()?)
                }
                "max_send_buf_size" => p.max_send_buf_size = Some(nsize()?),
                _ => return Err(format!("{name:?} is not an HTTP/2 setting")),
            }
        }
        Ok(p)
    }

    /// The windows, when both are set and adaptive flow control is not on.
    pub(crate) fn windows(&self) -> Option<(u32, u32)> {
        if self.adaptive_flow_control == Some(true) {
            return None;
        }
        self.initial_stream_window_size
            .zip(self.initial_connection_window_size)
    }

    pub(crate) fn keep_alive(&self) -> Option<(Duration, Duration)> {
        self.keep_alive_interval.zip(self.keep_alive_timeout)
    }
}

/// Set on a response (`extensions_mut().insert(CloseConnection)`) to close the connection that
/// carries it once it is sent: `connection: close` on HTTP/1, GOAWAY on HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseConnection;

/// Serves HTTP on `io` until the client is done, calling `handle` for each request; once `drain`
/// starts, the connection closes gracefully (see the module's doc).
///
/// With a `gate`, each request takes a permit of its cap on requests in flight
/// (`super::inflight`), held by its response body; without one it is answered 503 and
/// `handle` never sees it.
///
/// A handler answers with the proxy's recording body ([`Recorded`]; any
/// [`Body`](super::Body) converts into one that records nothing), which goes out as it is, in
/// the permit's wrapper ([`Held`]): no box per layer.
pub async fn serve<H, F>(
    io: BoxIo,
    protocol: Protocol,
    limits: Limits,
    drain: Drain,
    gate: Option<Gate>,
    handle: H,
) where
    H: Fn(Request<RequestBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Recorded>> + Send + 'static,
{
    let close = Arc::new(Notify::new());
    let closing = close.clone();
    let draining = drain.clone();
    // The routing future is several KiB: boxed per request, so that a connection's own
    // future (and an idle keep-alive connection) holds a pointer instead.
    let respond = move |req: Request<RequestBody>| {
        let admitted = match &gate {
            Some(gate) => gate
                .try_acquire()
                .map(Some)
                .map_err(|r| gate.refusal(r).map(|b| Held::free(Recorded::from(b)))),
            None => Ok(None),
        }
        .map(|permit| (permit, boxed_in_place(|| handle(req))));
        let (closing, draining) = (closing.clone(), draining.clone());
        async move {
            let mut rsp = match admitted {
                Ok((Some(permit), rsp)) => hold(rsp.await, permit),
                Ok((None, rsp)) => rsp.await.map(Held::free),
                Err(refused) => refused,
            };
            let close = rsp.extensions_mut().remove::<CloseConnection>().is_some();
            if close || draining.is_draining() {
                // By the connection's protocol, not the response's version: a response to an
                // HTTP/1 request a peer proxy upgraded goes out on HTTP/2, where GOAWAY says it.
                if protocol == Protocol::Http1 {
                    rsp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                } else if close {
                    closing.notify_one();
                }
            }
            Ok::<_, Infallible>(rsp)
        }
    };
    match protocol {
        Protocol::Http1 => {
            let limits = h1server::Limits {
                max_head: limits.max_head,
                max_headers: limits.max_headers,
                header_timeout: HEADER_READ_TIMEOUT,
            };
            // The drain closes an idle connection; one with a request in flight closes after
            // its response, which says `connection: close` (above).
            let signaled = async move { drain.signaled().await };
            // Each protocol's connection future in its own box, sized for that protocol: this
            // future, inline in the connection's (several KiB larger when both protocols' were
            // inline), is what an idle keep-alive connection holds.
            boxed_in_place(|| h1server::serve(io, limits, signaled, respond)).await;
        }
        Protocol::Http2 => {
            boxed_in_place(|| serve_h2(io, &limits, close, drain, respond)).await;
        }
    }
}

/// An HTTP/2 connection, served by `super::h2server`: `respond` answers each stream's
/// request. A handler's CloseConnection (`close`) or the process's drain sends GOAWAY, and the
/// streams in flight finish.
async fn serve_h2<R, F>(io: BoxIo, limits: &Limits, close: Arc<Notify>, drain: Drain, respond: R)
where
    R: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Result<Response<Held<Recorded>>, Infallible>> + Send + 'static,
{
    // The watchers are polled only when they fire, not on each of the connection's wakeups
    // (`OnWake`).
    let stop = OnWake::new(async move {
        tokio::select! {
            _ = close.notified() => {}
            _ = drain.signaled() => {}
        }
    });
    h2server::serve(io, limits, stop, respond).await;
}

/// `make()`'s future, written straight into its box: built on the stack and then moved there
/// (`Box::pin(make())`), the routing future, several KiB, was copied whole on every request.
fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use remora_metrics::tcp::Direction;

    /// Serves `protocol` on one end of a pipe; a request to `/close` asks to close the connection.
    fn server(protocol: Protocol) -> tokio::io::DuplexStream {
        draining_server(protocol, Drain::new())
    }

    /// As [`server`], draining with `drain`; a request to `/slow` is answered after 200 ms.
    fn draining_server(protocol: Protocol, drain: Drain) -> tokio::io::DuplexStream {
        limited_server(protocol, Limits::default(), drain)
    }

    /// As [`draining_server`], under `limits`.
    fn limited_server(protocol: Protocol, limits: Limits, drain: Drain) -> tokio::io::DuplexStream {
        serving(
            protocol,
            limits,
            drain,
            |req: Request<RequestBody>| async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let mut rsp = Response::new(super::super::Body::Empty.into());
                if req.uri().path() == "/close" {
                    rsp.extensions_mut().insert(CloseConnection);
                }
                rsp
            },
        )
    }

    /// Serves `protocol` on one end of a pipe, `handle` answering, under `limits`.
    fn serving<H, F>(
        protocol: Protocol,
        limits: Limits,
        drain: Drain,
        handle: H,
    ) -> tokio::io::DuplexStream
    where
        H: Fn(Request<RequestBody>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Recorded>> + Send + 'static,
    {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(
            Box::new(server),
            protocol,
            limits,
            drain,
            Some(crate::testing::inputs().gate(Direction::Inbound)),
            handle,
        ));
        client
    }

    #[tokio::test]
    async fn on_drain_http1_finishes_the_request_in_flight_with_connection_close() {
        let drain = Drain::new();
        let io = TokioIo::new(draining_server(Protocol::Http1, drain.clone()));
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let conn = tokio::spawn(conn);
        let rsp = tx.send_request(get("/keep")).await.unwrap();
        assert!(rsp.headers().get(header::CONNECTION).is_none());
        rsp.into_body().collect().await.unwrap();
        let slow = tx.send_request(get("/slow"));
        let signal = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drain.signal();
        };
        let (rsp, ()) = tokio::join!(slow, signal);
        let rsp = rsp.unwrap();
        assert_eq!(rsp.status(), 200, "the request in flight is answered");
        assert_eq!(rsp.headers()[header::CONNECTION], "close");
        rsp.into_body().collect().await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(ended.is_ok(), "the connection ended after the response");
    }

    #[tokio::test]
    async fn on_drain_http2_sends_goaway_and_finishes_its_streams() {
        let drain = Drain::new();
        let io = TokioIo::new(draining_server(Protocol::Http2, drain.clone()));
        let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let slow = tx.send_request(get("/slow"));
        let signal = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drain.signal();
        };
        let (rsp, ()) = tokio::join!(slow, signal);
        let rsp = rsp.unwrap();
        assert_eq!(rsp.status(), 200, "the stream in flight is answered");
        rsp.into_body().collect().await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(ended.is_ok(), "the connection ended after GOAWAY");
        assert!(tx.is_closed(), "no new stream is opened on it");
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(format!("http://a{path}"))
            .body(Empty::new())
            .unwrap()
    }

    #[tokio::test]
    async fn an_http1_handler_closes_its_connection_after_the_response() {
        let io = TokioIo::new(server(Protocol::Http1));
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let conn = tokio::spawn(conn);
        let rsp = tx.send_request(get("/keep")).await.unwrap();
        assert!(rsp.headers().get(header::CONNECTION).is_none());
        rsp.into_body().collect().await.unwrap();
        let rsp = tx.send_request(get("/close")).await.unwrap();
        assert_eq!(rsp.headers()[header::CONNECTION], "close");
        rsp.into_body().collect().await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(
            ended.is_ok(),
            "the connection ended after the close response"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_body_is_not_a_slow_head() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = serving(
            Protocol::Http1,
            Limits::default(),
            Drain::new(),
            |req: Request<RequestBody>| async move {
                let n = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0);
                let body =
                    super::super::boxed(http_body_util::Full::new(Bytes::from(n.to_string())));
                Response::new(body.into())
            },
        );
        c.write_all(b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\na")
            .await
            .unwrap();
        // Body bytes trickle in for longer than the header timeout.
        for part in [&b"b"[..], b"c", b"d"] {
            tokio::time::sleep(HEADER_READ_TIMEOUT / 2 + Duration::from_secs(1)).await;
            c.write_all(part).await.unwrap();
        }
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_stays_open_but_a_slow_head_is_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = server(Protocol::Http1);
        c.write_all(b"GET /a HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        assert!(c.read(&mut buf).await.unwrap() > 0);
        // Idle for ten times the header timeout: still open.
        tokio::time::sleep(HEADER_READ_TIMEOUT * 10).await;
        c.write_all(b"GET /b HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // A head begun and never finished is cut off after the timeout.
        c.write_all(b"GET /c HTTP/1.1\r\nhost:").await.unwrap();
        tokio::time::sleep(HEADER_READ_TIMEOUT + Duration::from_secs(1)).await;
        assert_eq!(c.read(&mut buf).await.unwrap(), 0, "closed");
    }

    /// The status an HTTP/1 request with `fields` header fields gets from a server with `limits`.
    async fn status_with_fields(limits: Limits, fields: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = limited_server(Protocol::Http1, limits, Drain::new());
        let mut head = String::from("GET /a HTTP/1.1\r\nhost: a\r\n");
        for i in 1..fields {
            head.push_str(&format!("x-{i}: {i}\r\n"));
        }
        head.push_str("\r\n");
        c.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        String::from_utf8_lossy(&buf[..n.min(12)]).into_owned()
    }

    #[tokio::test]
    async fn an_http1_head_with_more_header_fields_than_the_limit_is_refused() {
        // The default (hyper's own, set by not setting it) and a configured limit.
        let default = Limits::default();
        assert_eq!(status_with_fields(default, 100).await, "HTTP/1.1 200");
        assert_eq!(status_with_fields(default, 101).await, "HTTP/1.1 431");
        let ten = Limits {
            max_headers: 10,
            ..default
        };
        assert_eq!(status_with_fields(ten, 10).await, "HTTP/1.1 200");
        assert_eq!(status_with_fields(ten, 11).await, "HTTP/1.1 431");
        let more = Limits {
            max_headers: 200,
            ..default
        };
        assert_eq!(status_with_fields(more, 200).await, "HTTP/1.1 200");
        assert_eq!(status_with_fields(more, 201).await, "HTTP/1.1 431");
    }

    #[tokio::test]
    async fn an_http2_handler_closes_its_connection_with_goaway() {
        let io = TokioIo::new(server(Protocol::Http2));
        let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        assert_eq!(tx.send_request(get("/keep")).await.unwrap().status(), 200);
        assert_eq!(tx.send_request(get("/close")).await.unwrap().status(), 200);
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(ended.is_ok(), "GOAWAY ended the client connection");
        assert!(tx.send_request(get("/after")).await.is_err());
    }

    /// A burst of `streams` requests on one HTTP/2 connection from our client, each answered 1
    /// KiB at once; the client reads none of the responses until every head has arrived. Returns
    /// how many bodies arrived whole, and the errors of those that failed.
    async fn burst_through_our_client(streams: usize) -> (usize, Vec<String>) {
        use super::super::h2client;
        let client = serving(
            Protocol::Http2,
            Limits::default(),
            Drain::new(),
            |_req: Request<RequestBody>| async move {
                let body =
                    super::super::boxed(http_body_util::Full::new(Bytes::from(vec![b'x'; 1024])));
                Response::new(body.into())
            },
        );
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let tx = h2client::handshake(addr, Box::new(client), &Http2Params::default())
            .await
            .unwrap();
        let heads = (0..streams).map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let req = Request::get("http://a/")
                    .body(super::super::boxed(Empty::<Bytes>::new()))
                    .unwrap();
                tx.send(req).await
            })
        });
        let mut bodies = Vec::new();
        for head in heads.collect::<Vec<_>>() {
            bodies.push(head.await.unwrap().expect("a response head").into_body());
        }
        // The client starts reading the responses a batch at a time, so what the windows its
        // reads open let through waits in the client, unread, while it reads the batches before.
        let reads = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50 * (1 + i as u64 / 64))).await;
                    body.collect().await
                })
            })
            .collect::<Vec<_>>();
        let (mut whole, mut errors) = (0, Vec::new());
        for read in reads {
            match read.await.unwrap() {
                Ok(body) => whole += usize::from(body.to_bytes().len() == 1024),
                Err(e) => errors.push(e.to_string()),
            }
        }
        (whole, errors)
    }

    #[tokio::test]
    async fn a_burst_of_http2_responses_read_late_arrives_whole() {
        // hyper's server (our inbound's until stop 48, and linkerd2-proxy's), waiting for
        // window, sent most of these bodies as a 1-byte DATA frame and then the rest: a few
        // hundred small frames the client held unread, past what `h2` allows by default before
        // it sends GOAWAY (ENHANCE_YOUR_CALM). Our client allows more (`DATA_FRAME_BUDGET`),
        // and our server sends no such frames (`super::h2server`).
        let (whole, errors) =
            tokio::time::timeout(Duration::from_secs(30), burst_through_our_client(512))
                .await
                .expect("the burst ended");
        assert_eq!(whole, 512, "errors: {errors:?}");
    }

    #[test]
    fn http2_parameters_parse_as_linkerd_names_them() {
        let p = Http2Params::parse(
            "keep_alive_interval=10s, keep_alive_timeout=3s,max_concurrent_streams=100,\
             initial_stream_window_size=65535,initial_connection_window_size=1048576,\
             adaptive_flow_control=false,max_frame_size=16384,max_header_list_size=8192,\
             max_pending_accept_reset_streams=20,max_send_buf_size=409600,",
        )
        .unwrap();
        assert_eq!(p.keep_alive_interval, Some(Duration::from_secs(10)));
        assert_eq!(
            p.keep_alive(),
            Some((Duration::from_secs(10), Duration::from_secs(3)))
        );
        assert_eq!(p.windows(), Some((65_535, 1_048_576)));
        assert_eq!(p.max_send_buf_size, Some(409_600));
        assert_eq!(Http2Params::parse("").unwrap(), Http2Params::default());
        // Adaptive flow control wins over fixed windows; one keepalive setting alone is none.
        let p = Http2Params::parse(
            "initial_stream_window_size=1,initial_connection_window_size=2,adaptive_flow_control=true,keep_alive_interval=1s",
        )
        .unwrap();
        assert_eq!(p.windows(), None);
        assert_eq!(p.keep_alive(), None);
        for bad in [
            "max_frame_size=100",
            "keep_alive_interval=soon",
            "adaptive_flow_control=yes",
            "max_concurrent_streams=-1",
            "window=1",
            "max_frame_size",
        ] {
            assert!(Http2Params::parse(bad).is_err(), "{bad}");
        }
    }
}
