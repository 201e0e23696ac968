//! Serving a connection detected as HTTP with hyper: HTTP/1.1 (keep-alive, upgrades) or HTTP/2,
//! with limits on header size and count. hyper answers malformed requests itself (400, or 431
//! when the head is too large).
//!
//! A handler closes its connection by marking a response with [`CloseConnection`]: HTTP/1
//! answers with `connection: close` and closes after it; HTTP/2 sends GOAWAY, so the client
//! opens no new stream there, while the streams in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;
use tracing::debug;

use super::Body;
use super::detect::Protocol;
use crate::transport::io::BoxIo;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits on what a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request head (HTTP/1 buffer, HTTP/2 header list), bytes.
    pub max_head: usize,
    /// The most header fields in an HTTP/1 request head.
    pub max_headers: usize,
    /// The most concurrent streams on one HTTP/2 connection.
    pub max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 * 1024,
            max_headers: 100,
            max_streams: 2048,
        }
    }
}

/// Set on a response (`extensions_mut().insert(CloseConnection)`) to close the connection that
/// carries it once it is sent: `connection: close` on HTTP/1, GOAWAY on HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseConnection;

/// Serves HTTP on `io` until the client is done, calling `handle` for each request.
pub async fn serve<H, F>(io: BoxIo, protocol: Protocol, limits: Limits, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let close = Arc::new(Notify::new());
    let closing = close.clone();
    // hyper keeps the slot for a connection's in-flight request future allocated for as long
    // as the connection lives. The routing future is several KiB; boxed per request, an idle
    // keep-alive connection holds a pointer instead.
    let service = hyper::service::service_fn(move |req| {
        let rsp = Box::pin(handle(req));
        let closing = closing.clone();
        async move {
            let mut rsp = rsp.await;
            if rsp.extensions_mut().remove::<CloseConnection>().is_some() {
                if rsp.version() < http::Version::HTTP_2 {
                    rsp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                closing.notify_one();
            }
            Ok::<_, Infallible>(rsp)
        }
    });
    let io = TokioIo::new(io);
    let res = match protocol {
        Protocol::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(limits.max_head.max(8192))
                .max_headers(limits.max_headers)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res,
                _ = close.notified() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        Protocol::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX))
                .max_concurrent_streams(limits.max_streams)
                .adaptive_window(true)
                .serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => res,
                _ = close.notified() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = res {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};

    /// Serves `protocol` on one end of a pipe; a request to `/close` asks to close the connection.
    fn server(protocol: Protocol) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(
            Box::new(server),
            protocol,
            Limits::default(),
            |req: Request<Incoming>| async move {
                let mut rsp = Response::new(super::super::boxed(Empty::<Bytes>::new()));
                if req.uri().path() == "/close" {
                    rsp.extensions_mut().insert(CloseConnection);
                }
                rsp
            },
        ));
        client
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
}
