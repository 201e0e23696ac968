//! Listeners: binding, and the accept loop every listener shares.
//!
//! The accept loop bounds concurrent connections with a semaphore (refusing and counting the
//! excess), stops accepting when the drain is signalled, and runs each accepted connection as
//! drain-tracked work.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use remora_metrics::tcp::{Direction, RefuseReason, TcpMetrics};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::drain::Drain;

const BACKLOG: i32 = 1024;

/// Binds a listening socket. IPv6 sockets are IPv6-only, so `0.0.0.0:P` and `[::]:P` can both
/// be bound for a dual-stack listener.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// What an accept loop needs besides its listener.
#[derive(Clone, Debug)]
pub struct AcceptCtx {
    pub direction: Direction,
    pub limit: Arc<Semaphore>,
    pub metrics: TcpMetrics,
    pub drain: Drain,
}

/// Accepts connections until the drain is signalled, handing each to `handle` as drain-tracked
/// work. The listener is dropped on return, so later connection attempts are refused by the
/// kernel.
pub async fn accept_loop<H, F>(listener: TcpListener, ctx: AcceptCtx, handle: H)
where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut at_limit = false;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.drain.signaled() => break,
            res = listener.accept() => res,
        };
        let (stream, client) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a listener that cannot
                // accept right now.
                warn!(direction = ctx.direction.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.limit.clone().try_acquire_owned() else {
            ctx.metrics
                .refused(ctx.direction, RefuseReason::ConnectionLimit);
            if !at_limit {
                warn!(
                    direction = ctx.direction.as_str(),
                    "connection limit reached; refusing new connections"
                );
                at_limit = true;
            }
            drop(stream);
            continue;
        };
        if at_limit {
            debug!(
                direction = ctx.direction.as_str(),
                "below the connection limit again"
            );
            at_limit = false;
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set TCP_NODELAY failed");
        }
        let work = handle(stream, client);
        ctx.drain.spawn(async move {
            work.await;
            drop(permit);
        });
    }
    debug!(direction = ctx.direction.as_str(), "listener closed");
}

/// Runs one accept loop per listener (e.g. an IPv4 and an IPv6 socket of one dual-stack
/// listener), all sharing `ctx`'s connection limit, until the drain is signalled.
pub async fn serve<H, F>(listeners: Vec<TcpListener>, ctx: AcceptCtx, handle: H)
where
    H: Fn(TcpStream, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, ctx.clone(), handle.clone()));
    }
    while loops.join_next().await.is_some() {}
}
