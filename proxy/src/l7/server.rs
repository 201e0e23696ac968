//! Serving a connection detected as HTTP with hyper: HTTP/1.1 (keep-alive, upgrades) or HTTP/2,
//! with limits on header size and count. hyper answers malformed requests itself (400, or 431
//! when the head is too large).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use super::Body;
use super::detect::Protocol;
use crate::io::BoxIo;

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

/// Serves HTTP on `io` until the client is done, calling `handle` for each request.
pub async fn serve<H, F>(io: BoxIo, protocol: Protocol, limits: Limits, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // hyper keeps the slot for a connection's in-flight request future allocated for as long
    // as the connection lives. The routing future is several KiB; boxed per request, an idle
    // keep-alive connection holds a pointer instead.
    let service = hyper::service::service_fn(move |req| {
        let rsp = Box::pin(handle(req));
        async move { Ok::<_, Infallible>(rsp.await) }
    });
    let io = TokioIo::new(io);
    let res = match protocol {
        Protocol::Http1 => {
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(limits.max_head.max(8192))
                .max_headers(limits.max_headers)
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
        Protocol::Http2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_head).unwrap_or(u32::MAX))
                .max_concurrent_streams(limits.max_streams)
                .adaptive_window(true)
                .serve_connection(io, service)
                .await
        }
    };
    if let Err(e) = res {
        debug!(error = %e, "HTTP connection ended with an error");
    }
}
