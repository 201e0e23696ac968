//! Client connections per endpoint: a pool of HTTP/1 connections (each carries one request at a
//! time) and one multiplexed HTTP/2 connection. Connections are dialled lazily through the
//! caller's dial function (plaintext or mTLS, counted in the TCP metrics), reused while open,
//! and dropped when the peer closes them.
//!
//! A peer that drains sends GOAWAY (HTTP/2) or `connection: close` (HTTP/1): the connection is
//! retired, never handed another request. A request the peer never processed (no connection
//! took it, the stream was refused or fell past a GOAWAY, the connection closed before any byte
//! of the response: [`SendError::never_processed`]) retires its HTTP/2 connection too, and the
//! caller may send it elsewhere. [`Pool::forget`] closes the connections to an address that
//! discovery removed, so a recycled address gets a fresh connection.

use foldhash::{HashMap, HashMapExt};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use http::{Request, Response};
use remora_identity::Name;

use super::h1client::{self, Idle};
use super::{Body, h2client, h2conn};
use crate::tls::mtls::DialError;
use crate::transport::io::BoxIo;

/// Idle HTTP/1 connections kept per endpoint, by default.
pub const MAX_IDLE_H1: usize = 256;

/// How a pool keeps and opens connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections unused this long are closed.
    pub idle_timeout: Duration,
    /// Idle HTTP/1 connections kept per endpoint.
    pub max_idle_h1: usize,
    /// HTTP/2 client settings of new connections.
    pub h2: super::server::Http2Params,
}

impl PoolConfig {
    pub fn new(idle_timeout: Duration) -> Self {
        PoolConfig {
            idle_timeout,
            max_idle_h1: MAX_IDLE_H1,
            h2: Default::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Http1,
    Http2,
}

/// What a client connection is to: an address, spoken with a protocol, as an identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub addr: SocketAddr,
    pub kind: Kind,
    pub identity: Option<Name>,
}

/// Dials a new connection for the pool (plaintext or mTLS, already counted in the TCP metrics).
pub type DialFuture = Pin<Box<dyn Future<Output = Result<BoxIo, DialError>> + Send>>;

/// Why no connection could carry a request.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The HTTP/2 handshake on a new connection failed.
    #[error("HTTP/2 handshake: {0}")]
    H2Handshake(h2::Error),
    /// The connection closed before it could take the request.
    #[error("the connection closed before the request was sent")]
    Closed,
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could take the request: it was never sent, and is handed back.
    #[error("{0}")]
    Connect(ConnectFailure, Box<Request<Body>>),
    /// The HTTP/1 connection failed while the request was in flight.
    #[error("{0}")]
    H1(#[from] h1client::Error),
    /// The HTTP/2 stream or connection failed while the request was in flight.
    #[error("{0}")]
    H2(#[from] h2::Error),
}

impl SendError {
    /// Whether the peer never processed the request, so that it may be sent again elsewhere
    /// whatever its route says: no connection took it, the peer refused its stream
    /// (`REFUSED_STREAM`) or excluded it with a GOAWAY, or the connection closed before any
    /// byte of the response.
    pub fn never_processed(&self) -> bool {
        match self {
            SendError::Connect(..) => true,
            SendError::H1(e) => e.never_processed(),
            SendError::H2(e) => refused_h2(e),
        }
    }
}

/// Whether an HTTP/2 error means the peer never processed the request: it refused the stream,
/// or a graceful GOAWAY excluded it (such a GOAWAY fails only the streams past its last stream
/// id), or the connection closed under it.
fn refused_h2(e: &h2::Error) -> bool {
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        return true;
    }
    if e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR) {
        return true;
    }
    e.get_io().is_some_and(closed)
}

/// The connection closed under the request (the peer closed or reset it).
pub(super) fn closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
    )
}

/// A response body from a pooled connection.
#[derive(Debug)]
pub enum PoolBody {
    H1(h1client::ResponseBody),
    H2(h2conn::RecvBody),
}

impl hyper::body::Body for PoolBody {
    type Data = bytes::Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            PoolBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(super::BoxError::from),
            PoolBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(super::BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PoolBody::H1(b) => b.is_end_stream(),
            PoolBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            PoolBody::H1(b) => b.size_hint(),
            PoolBody::H2(b) => b.size_hint(),
        }
    }
}

/// The HTTP/2 connection of a key, numbered so that a failed request retires only the
/// connection it failed on.
type H2Slot = Arc<tokio::sync::Mutex<Option<(u64, h2client::SendRequest)>>>;

#[derive(Debug)]
pub struct Pool {
    // foldhash maps (looked up on every request): the keys are endpoints that discovery, with
    // its caps, gave, and idle ones are dropped.
    h1: Mutex<HashMap<Key, Arc<Idle>>>,
    h2: Mutex<HashMap<Key, (H2Slot, Instant)>>,
    idle_timeout: Duration,
    config: PoolConfig,
    /// Numbers HTTP/2 connections.
    next_h2: std::sync::atomic::AtomicU64,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(DEFAULT_IDLE_TIMEOUT)
    }
}

/// Pooled connections unused this long are closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

impl Pool {
    pub fn new(idle_timeout: Duration) -> Self {
        Self::with_config(PoolConfig::new(idle_timeout))
    }

    pub fn with_config(config: PoolConfig) -> Self {
        Pool {
            h1: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            idle_timeout: config.idle_timeout,
            config,
            next_h2: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Closes connections idle longer than the idle timeout (dropping the last handle of a
    /// connection closes it once its in-flight requests are done).
    pub fn evict_idle(&self) {
        let now = Instant::now();
        if let Ok(mut map) = self.h1.lock() {
            for idle in map.values() {
                idle.evict(now, self.idle_timeout);
            }
            // A list a response body will give its connection back to is kept.
            map.retain(|_, idle| !idle.is_empty() || Arc::strong_count(idle) > 1);
        }
        if let Ok(mut map) = self.h2.lock() {
            map.retain(|_, (_, used)| now.duration_since(*used) < self.idle_timeout);
        }
    }

    /// Closes every pooled connection to `addr` (discovery removed it): the requests in flight
    /// on them finish; the next request to `addr`, if any, dials afresh.
    pub fn forget(&self, addr: SocketAddr) {
        if let Ok(mut map) = self.h1.lock() {
            map.retain(|k, idle| {
                if k.addr == addr {
                    idle.forget();
                }
                k.addr != addr
            });
        }
        if let Ok(mut map) = self.h2.lock() {
            map.retain(|k, _| k.addr != addr);
        }
    }

    /// A pool whose idle connections are evicted in the background (call within a runtime).
    pub fn with_evictor(config: PoolConfig) -> Arc<Self> {
        let pool = Arc::new(Pool::with_config(config));
        pool.spawn_evictor();
        pool
    }

    /// Evicts idle connections every few seconds for as long as the pool lives.
    pub fn spawn_evictor(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        let every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.evict_idle();
            }
        });
    }

    /// Sends `req` on a connection for `key`, dialling one with `dial` if none is ready.
    pub async fn send<D>(
        &self,
        key: &Key,
        dial: D,
        req: Request<Body>,
    ) -> Result<Response<PoolBody>, SendError>
    where
        D: FnOnce() -> DialFuture,
    {
        match key.kind {
            Kind::Http1 => Ok(self.send_h1(key, dial, req).await?.map(PoolBody::H1)),
            Kind::Http2 => Ok(self.send_h2(key, dial, req).await?.map(PoolBody::H2)),
        }
    }

    /// The idle list of `key`, made when it has none.
    fn idle_h1(&self, key: &Key) -> Option<Arc<Idle>> {
        let mut map = self.h1.lock().ok()?;
        // Looked up by reference first: the key is cloned only for a new peer.
        if let Some(idle) = map.get(key) {
            return Some(idle.clone());
        }
        let idle = Arc::new(Idle::new(self.config.max_idle_h1));
        map.insert(key.clone(), idle.clone());
        Some(idle)
    }

    async fn send_h1<D: FnOnce() -> DialFuture>(
        &self,
        key: &Key,
        dial: D,
        req: Request<Body>,
    ) -> Result<Response<h1client::ResponseBody>, SendError> {
        let Some(idle) = self.idle_h1(key) else {
            return Err(SendError::Connect(ConnectFailure::Closed, Box::new(req)));
        };
        // A new connection's dial is boxed: its state stays out of every request's future,
        // which is most of the time sent on a pooled connection.
        let conn = match idle.take() {
            Some(conn) => conn,
            None => match Box::pin(dial()).await {
                Ok(io) => h1client::Conn::new(key.addr, io),
                Err(e) => return Err(SendError::Connect(e.into(), Box::new(req))),
            },
        };
        conn.send(req, idle).await
    }

    async fn send_h2<D: FnOnce() -> DialFuture>(
        &self,
        key: &Key,
        dial: D,
        req: Request<Body>,
    ) -> Result<Response<h2conn::RecvBody>, SendError> {
        let slot = match self.h2.lock() {
            // Looked up by reference first: the key (and its identity) is cloned only when a
            // new peer is added, not per request.
            Ok(mut map) => match map.get_mut(key) {
                Some(entry) => {
                    entry.1 = Instant::now();
                    entry.0.clone()
                }
                None => {
                    let slot = H2Slot::default();
                    map.insert(key.clone(), (slot.clone(), Instant::now()));
                    slot
                }
            },
            Err(_) => return Err(SendError::Connect(ConnectFailure::Closed, Box::new(req))),
        };
        let (id, sender) = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some((id, s)) if !s.is_closed() => (*id, s.clone()),
                _ => {
                    let sender = match Box::pin(self.new_h2(key.addr, dial)).await {
                        Ok(s) => s,
                        Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                    };
                    let id = self
                        .next_h2
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    *guard = Some((id, sender.clone()));
                    (id, sender)
                }
            }
        };
        match sender.send(req).await {
            Ok(rsp) => Ok(rsp),
            Err(err) => {
                // Refused, past a GOAWAY or cut: this connection takes no more requests.
                if err.never_processed() {
                    retire(&slot, id).await;
                }
                Err(err)
            }
        }
    }

    /// A new HTTP/2 connection to `addr` through `dial`, its connection task spawned.
    async fn new_h2<D: FnOnce() -> DialFuture>(
        &self,
        addr: SocketAddr,
        dial: D,
    ) -> Result<h2client::SendRequest, ConnectFailure> {
        let io = dial().await?;
        h2client::handshake(addr, io, &self.config.h2)
            .await
            .map_err(ConnectFailure::H2Handshake)
    }

    /// Takes `io`, an HTTP/1 connection to `key` dialled for another purpose (detection's
    /// early dial, `transport/early.rs`), as an idle connection of the pool: the next request
    /// for `key` uses it. Dropped when the pool holds enough idle ones.
    pub fn adopt_h1(&self, key: &Key, io: BoxIo) -> bool {
        if key.kind != Kind::Http1 {
            return false;
        }
        match self.idle_h1(key) {
            Some(idle) => idle.put(h1client::Conn::new(key.addr, io)),
            None => false,
        }
    }

    /// Open client connections (for tests and debugging).
    pub fn open_connections(&self) -> usize {
        let h1 = self
            .h1
            .lock()
            .map(|m| m.values().map(|idle| idle.len()).sum())
            .unwrap_or(0);
        let h2 = self.h2.lock().map(|m| m.len()).unwrap_or(0);
        h1 + h2
    }
}

/// Empties `slot` if it still holds connection `id`.
async fn retire(slot: &H2Slot, id: u64) {
    let mut guard = slot.lock().await;
    if guard.as_ref().is_some_and(|(held, _)| *held == id) {
        *guard = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;

    /// A pool whose connections go to an in-memory HTTP/1 server.
    fn dial_memory() -> DialFuture {
        Box::pin(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        Empty::<bytes::Bytes>::new(),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), service)
                    .await;
            });
            Ok(Box::new(client) as BoxIo)
        })
    }

    fn req() -> Request<Body> {
        Request::get("/")
            .body(crate::http::boxed(Empty::<bytes::Bytes>::new()))
            .unwrap()
    }

    /// Dials an in-memory HTTP/2 server of our own (`http::server::serve`) with a drain of its
    /// own, counting the dials and keeping each connection's drain.
    fn dial_h2(
        drains: &Arc<Mutex<Vec<remora_runtime::drain::Drain>>>,
    ) -> impl FnOnce() -> DialFuture + use<> {
        let drains = drains.clone();
        move || {
            Box::pin(async move {
                let (client, server) = tokio::io::duplex(64 * 1024);
                let drain = remora_runtime::drain::Drain::new();
                drains.lock().unwrap().push(drain.clone());
                tokio::spawn(crate::http::server::serve(
                    Box::new(server),
                    crate::http::detect::Protocol::Http2,
                    Default::default(),
                    drain,
                    None,
                    |_req| async { http::Response::new(crate::http::Body::Empty.into()) },
                ));
                Ok(Box::new(client) as BoxIo)
            })
        }
    }

    #[tokio::test]
    async fn a_draining_http2_peer_is_retired_and_what_it_refused_may_go_again() {
        let pool = Pool::new(Duration::from_secs(90));
        let key = Key {
            addr: "10.0.0.2:80".parse().unwrap(),
            kind: Kind::Http2,
            identity: None,
        };
        let drains = Arc::new(Mutex::new(Vec::new()));
        let req = || {
            let mut r = req();
            *r.uri_mut() = "http://a/".parse().unwrap();
            r
        };
        let rsp = pool.send(&key, dial_h2(&drains), req()).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert_eq!(drains.lock().unwrap().len(), 1);
        // The peer drains: GOAWAY.
        drains.lock().unwrap()[0].signal();
        let mut answered = false;
        for _ in 0..50 {
            match pool.send(&key, dial_h2(&drains), req()).await {
                Ok(rsp) => {
                    assert_eq!(rsp.status(), 200);
                    // Streams the peer accepted before its last GOAWAY are still answered.
                    if drains.lock().unwrap().len() == 2 {
                        answered = true;
                        break;
                    }
                }
                Err(e) => assert!(e.never_processed(), "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(answered, "a new connection took a request");
        assert_eq!(
            drains.lock().unwrap().len(),
            2,
            "the draining connection was retired and one new one dialled"
        );
    }

    #[tokio::test]
    async fn forgetting_an_address_closes_its_connections() {
        let pool = Pool::new(Duration::from_secs(90));
        let key = Key {
            addr: "10.0.0.3:80".parse().unwrap(),
            kind: Kind::Http1,
            identity: None,
        };
        let rsp = pool.send(&key, dial_memory, req()).await.unwrap();
        drop(rsp);
        tokio::task::yield_now().await;
        assert_eq!(pool.open_connections(), 1);
        pool.forget("10.0.0.4:80".parse().unwrap());
        assert_eq!(pool.open_connections(), 1, "another address is kept");
        pool.forget(key.addr);
        assert_eq!(pool.open_connections(), 0);
    }

    /// Dials an in-memory HTTP/1 server that answers one request and then closes without
    /// saying so (as an app whose keep-alive timeout passed), reporting each close on `closed`.
    fn dial_one_shot(
        dials: &Arc<std::sync::atomic::AtomicUsize>,
        closed: &tokio::sync::mpsc::UnboundedSender<()>,
    ) -> impl FnOnce() -> DialFuture + use<> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (dials, closed) = (dials.clone(), closed.clone());
        move || {
            dials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(async move {
                let (client, mut server) = tokio::io::duplex(64 * 1024);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match server.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = server
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    drop(server);
                    let _ = closed.send(());
                });
                Ok(Box::new(client) as BoxIo)
            })
        }
    }

    #[tokio::test]
    async fn an_idle_http1_connection_its_app_closed_is_not_used_again() {
        use http_body_util::BodyExt;
        let pool = Pool::new(Duration::from_secs(90));
        let key = Key {
            addr: "10.0.0.5:80".parse().unwrap(),
            kind: Kind::Http1,
            identity: None,
        };
        let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..3 {
            let rsp = pool
                .send(&key, dial_one_shot(&dials, &closed_tx), req())
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            // Kept: the app did not say it would close.
            assert_eq!(pool.open_connections(), 1);
            tokio::time::timeout(Duration::from_secs(10), closed.recv())
                .await
                .expect("the app closes its connection")
                .unwrap();
        }
        assert_eq!(
            dials.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "each closed connection was dropped when next handed out, and a new one dialled"
        );
        pool.evict_idle();
        assert_eq!(pool.open_connections(), 0, "the closed one is evicted");
    }

    #[tokio::test(start_paused = true)]
    async fn reuses_connections_and_evicts_idle_ones() {
        let pool = Pool::new(Duration::from_secs(10));
        let key = Key {
            addr: "10.0.0.1:80".parse().unwrap(),
            kind: Kind::Http1,
            identity: None,
        };
        for _ in 0..3 {
            let rsp = pool.send(&key, dial_memory, req()).await.unwrap();
            assert_eq!(rsp.status(), 200);
            drop(rsp);
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.open_connections(), 1, "one connection, reused");
        tokio::time::advance(Duration::from_secs(5)).await;
        pool.evict_idle();
        assert_eq!(pool.open_connections(), 1, "not idle long enough");
        tokio::time::advance(Duration::from_secs(6)).await;
        pool.evict_idle();
        assert_eq!(pool.open_connections(), 0, "idle connections are closed");
    }
}
