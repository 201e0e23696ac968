//! Client connections per endpoint: a pool of HTTP/1 connections (each carries one request at a
//! time) and one multiplexed HTTP/2 connection. Connections are dialled lazily through the
//! caller's dial function (plaintext or mTLS, counted in the TCP metrics), reused while open,
//! and dropped when the peer closes them.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use remora_identity::Name;
use tracing::debug;

use super::Body;
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
    /// The HTTP handshake on a new connection failed.
    #[error("HTTP handshake: {0}")]
    Handshake(hyper::Error),
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
    /// The connection failed while the request was in flight.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// An HTTP/1 connection and when it was last used.
type IdleH1 = (http1::SendRequest<Body>, Instant);
type H2Slot = Arc<tokio::sync::Mutex<Option<http2::SendRequest<Body>>>>;

#[derive(Debug)]
pub struct Pool {
    h1: Mutex<HashMap<Key, Vec<IdleH1>>>,
    h2: Mutex<HashMap<Key, (H2Slot, Instant)>>,
    idle_timeout: Duration,
    config: PoolConfig,
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
        }
    }

    /// Closes connections idle longer than the idle timeout (dropping the last handle of a
    /// connection closes it once its in-flight requests are done).
    pub fn evict_idle(&self) {
        let now = Instant::now();
        if let Ok(mut map) = self.h1.lock() {
            for conns in map.values_mut() {
                conns.retain(|(c, used)| {
                    !c.is_closed() && now.duration_since(*used) < self.idle_timeout
                });
            }
            map.retain(|_, conns| !conns.is_empty());
        }
        if let Ok(mut map) = self.h2.lock() {
            map.retain(|_, (_, used)| now.duration_since(*used) < self.idle_timeout);
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
    ) -> Result<Response<Incoming>, SendError>
    where
        D: FnOnce() -> DialFuture,
    {
        match key.kind {
            Kind::Http1 => self.send_h1(key, dial, req).await,
            Kind::Http2 => self.send_h2(key, dial, req).await,
        }
    }

    fn idle_h1(&self, key: &Key) -> Option<http1::SendRequest<Body>> {
        let mut map = self.h1.lock().ok()?;
        let conns = map.get_mut(key)?;
        conns.retain(|(c, _)| !c.is_closed());
        let i = conns.iter().position(|(c, _)| c.is_ready())?;
        Some(conns.swap_remove(i).0)
    }

    async fn send_h1<D: FnOnce() -> DialFuture>(
        &self,
        key: &Key,
        dial: D,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut sender = match self.idle_h1(key) {
            Some(s) => s,
            None => {
                let io = match dial().await {
                    Ok(io) => io,
                    Err(e) => return Err(SendError::Connect(e.into(), Box::new(req))),
                };
                let (sender, conn) = match http1::Builder::new().handshake(TokioIo::new(io)).await {
                    Ok(h) => h,
                    Err(e) => {
                        return Err(SendError::Connect(
                            ConnectFailure::Handshake(e),
                            Box::new(req),
                        ));
                    }
                };
                let addr = key.addr;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%addr, error = %e, "HTTP/1 client connection ended");
                    }
                });
                sender
            }
        };
        if sender.ready().await.is_err() {
            return Err(SendError::Connect(ConnectFailure::Closed, Box::new(req)));
        }
        let rsp = sender.send_request(req).await;
        // Back to the pool: it is ready again once this response's body is done.
        if let Ok(mut map) = self.h1.lock() {
            let conns = map.entry(key.clone()).or_default();
            if conns.len() < self.config.max_idle_h1 && !sender.is_closed() {
                conns.push((sender, Instant::now()));
            }
        }
        Ok(rsp?)
    }

    async fn send_h2<D: FnOnce() -> DialFuture>(
        &self,
        key: &Key,
        dial: D,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
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
        let mut sender = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let io = match dial().await {
                        Ok(io) => io,
                        Err(e) => return Err(SendError::Connect(e.into(), Box::new(req))),
                    };
                    let mut builder = http2::Builder::new(TokioExecutor::new());
                    builder.timer(TokioTimer::new());
                    self.config.h2.client(&mut builder);
                    let handshake = builder.handshake(TokioIo::new(io)).await;
                    let (sender, conn) = match handshake {
                        Ok(h) => h,
                        Err(e) => {
                            return Err(SendError::Connect(
                                ConnectFailure::Handshake(e),
                                Box::new(req),
                            ));
                        }
                    };
                    let addr = key.addr;
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(%addr, error = %e, "HTTP/2 client connection ended");
                        }
                    });
                    *guard = Some(sender.clone());
                    sender
                }
            }
        };
        if sender.ready().await.is_err() {
            return Err(SendError::Connect(ConnectFailure::Closed, Box::new(req)));
        }
        Ok(sender.send_request(req).await?)
    }

    /// Takes `io`, an HTTP/1 connection to `key` dialled for another purpose (detection's
    /// early dial, `transport/early.rs`), as an idle connection of the pool: the next request
    /// for `key` uses it. Dropped when the pool holds enough idle ones, or the handshake fails.
    pub async fn adopt_h1(&self, key: &Key, io: BoxIo) -> bool {
        if key.kind != Kind::Http1 {
            return false;
        }
        let full = |map: &HashMap<Key, Vec<IdleH1>>| {
            map.get(key)
                .is_some_and(|c| c.len() >= self.config.max_idle_h1)
        };
        if self.h1.lock().map_or(true, |m| full(&m)) {
            return false;
        }
        let Ok((sender, conn)) = http1::Builder::new().handshake(TokioIo::new(io)).await else {
            return false;
        };
        let addr = key.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "HTTP/1 client connection ended");
            }
        });
        match self.h1.lock() {
            Ok(mut map) if !full(&map) => {
                map.entry(key.clone())
                    .or_default()
                    .push((sender, Instant::now()));
                true
            }
            _ => false,
        }
    }

    /// Open client connections (for tests and debugging).
    pub fn open_connections(&self) -> usize {
        let h1 = self
            .h1
            .lock()
            .map(|m| {
                m.values()
                    .map(|v| v.iter().filter(|(c, _)| !c.is_closed()).count())
                    .sum()
            })
            .unwrap_or(0);
        let h2 = self.h2.lock().map(|m| m.len()).unwrap_or(0);
        h1 + h2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;

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
