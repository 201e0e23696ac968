//! Client connections per endpoint: a pool of HTTP/1 connections (each carries one request at a
//! time) and one multiplexed HTTP/2 connection. Connections are dialled lazily through the
//! caller's dial function (plaintext or mTLS, counted in the TCP metrics), reused while open,
//! and dropped when the peer closes them.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use remora_identity::Name;
use tracing::debug;

use super::Body;
use crate::io::BoxIo;

/// Idle HTTP/1 connections kept per endpoint.
const MAX_IDLE_H1: usize = 32;

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

pub type DialFuture = Pin<Box<dyn Future<Output = Result<BoxIo, String>> + Send>>;

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: the request was never sent, and is handed back.
    #[error("{0}")]
    Connect(String, Box<Request<Body>>),
    /// The connection failed while the request was in flight.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

type H2Slot = Arc<tokio::sync::Mutex<Option<http2::SendRequest<Body>>>>;

#[derive(Debug, Default)]
pub struct Pool {
    h1: Mutex<HashMap<Key, Vec<http1::SendRequest<Body>>>>,
    h2: Mutex<HashMap<Key, H2Slot>>,
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
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
        conns.retain(|c| !c.is_closed());
        let i = conns.iter().position(|c| c.is_ready())?;
        Some(conns.swap_remove(i))
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
                    Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                };
                let (sender, conn) = match http1::Builder::new().handshake(TokioIo::new(io)).await {
                    Ok(h) => h,
                    Err(e) => return Err(SendError::Connect(e.to_string(), Box::new(req))),
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
        if let Err(e) = sender.ready().await {
            return Err(SendError::Connect(e.to_string(), Box::new(req)));
        }
        let rsp = sender.send_request(req).await;
        // Back to the pool: it is ready again once this response's body is done.
        if let Ok(mut map) = self.h1.lock() {
            let conns = map.entry(key.clone()).or_default();
            if conns.len() < MAX_IDLE_H1 && !sender.is_closed() {
                conns.push(sender);
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
            Ok(mut map) => map.entry(key.clone()).or_default().clone(),
            Err(_) => {
                return Err(SendError::Connect(
                    "pool lock poisoned".into(),
                    Box::new(req),
                ));
            }
        };
        let mut sender = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let io = match dial().await {
                        Ok(io) => io,
                        Err(e) => return Err(SendError::Connect(e, Box::new(req))),
                    };
                    let handshake = http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .adaptive_window(true)
                        .handshake(TokioIo::new(io))
                        .await;
                    let (sender, conn) = match handshake {
                        Ok(h) => h,
                        Err(e) => return Err(SendError::Connect(e.to_string(), Box::new(req))),
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
        if let Err(e) = sender.ready().await {
            return Err(SendError::Connect(e.to_string(), Box::new(req)));
        }
        Ok(sender.send_request(req).await?)
    }

    /// Open client connections (for tests and debugging).
    pub fn open_connections(&self) -> usize {
        let h1 = self
            .h1
            .lock()
            .map(|m| {
                m.values()
                    .map(|v| v.iter().filter(|c| !c.is_closed()).count())
                    .sum()
            })
            .unwrap_or(0);
        let h2 = self.h2.lock().map(|m| m.len()).unwrap_or(0);
        h1 + h2
    }
}
