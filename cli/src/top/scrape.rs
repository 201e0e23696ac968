//! One scrape: `GET` a proxy's metrics URL over HTTP/1.1 (hyper over a tokio `TcpStream`), with
//! a deadline for the whole exchange and a cap on the body.

use std::fmt;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The deadline of one scrape: connect, request and the whole body.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest body read; a larger one fails the scrape.
pub const MAX_BODY: usize = 16 << 20;

/// Why a scrape failed, worded for the `stale:` line.
#[derive(Debug)]
pub enum ScrapeError {
    Timeout,
    Connect(std::io::Error),
    Http(hyper::Error),
    Status(StatusCode),
    TooLarge,
    Body(String),
}

impl fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => write!(f, "no answer within {}s", TIMEOUT.as_secs()),
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Http(e) => write!(f, "HTTP: {e}"),
            Self::Status(s) => write!(f, "HTTP status {s}"),
            Self::TooLarge => write!(f, "body larger than {} MiB", MAX_BODY >> 20),
            Self::Body(e) => write!(f, "body: {e}"),
        }
    }
}

/// Fetches `uri` (an `http://` URL with an authority) and returns its body as text (invalid
/// UTF-8 replaced).
pub async fn fetch(uri: &Uri) -> Result<String, ScrapeError> {
    tokio::time::timeout(TIMEOUT, exchange(uri))
        .await
        .unwrap_or(Err(ScrapeError::Timeout))
}

async fn exchange(uri: &Uri) -> Result<String, ScrapeError> {
    let authority = uri.authority().map_or("", |a| a.as_str());
    let addr = match uri.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:80", uri.host().unwrap_or("")),
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ScrapeError::Connect)?;
    exchange_over(stream, uri).await
}

/// `GET uri` over an already connected `stream`; the body of a 200 (at most [`MAX_BODY`]).
/// Without a deadline: callers bound it.
pub async fn exchange_over(stream: TcpStream, uri: &Uri) -> Result<String, ScrapeError> {
    let authority = uri.authority().map_or("", |a| a.as_str());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ScrapeError::Http)?;
    // The connection task ends with this function, also when its deadline drops it.
    let _conn = AbortOnDrop(tokio::spawn(conn));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "text/plain")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ScrapeError::Body(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(ScrapeError::Http)?;
    if response.status() != StatusCode::OK {
        return Err(ScrapeError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| match e.downcast::<LengthLimitError>() {
            Ok(_) => ScrapeError::TooLarge,
            Err(e) => ScrapeError::Body(e.to_string()),
        })?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
