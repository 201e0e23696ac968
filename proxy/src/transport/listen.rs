//! The accept loops of the inbound and outbound listeners: the runtime's bounded accept loop
//! (`remora_runtime::listen`), with refusals counted in the TCP metrics, accepting stopped by
//! the drain, and each accepted connection run as drain-tracked work.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use remora_metrics::tcp::{Direction, RefuseReason, TcpMetrics};
use remora_runtime::drain::Drain;
use remora_runtime::listen::accept_loop;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::transport::tcp::SocketOpts;

/// What an accept loop needs besides its listener.
#[derive(Clone, Debug)]
pub struct AcceptCtx {
    pub direction: Direction,
    pub limit: Arc<Semaphore>,
    pub metrics: TcpMetrics,
    pub drain: Drain,
    /// Set on every accepted connection (besides `TCP_NODELAY`, which every one gets).
    pub opts: SocketOpts,
}

/// Runs one accept loop per listener (e.g. an IPv4 and an IPv6 socket of one dual-stack
/// listener), all sharing `ctx`'s connection limit, until the drain is signalled. The listeners
/// are dropped on return, so later connection attempts are refused by the kernel.
pub async fn serve<H, F>(listeners: Vec<TcpListener>, ctx: AcceptCtx, handle: H)
where
    H: Fn(TcpStream, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let (ctx, handle) = (ctx.clone(), handle.clone());
        loops.spawn(async move {
            let (drain, metrics, direction) = (ctx.drain.clone(), &ctx.metrics, ctx.direction);
            accept_loop(
                listener,
                direction.as_str(),
                ctx.limit.clone(),
                drain.signaled(),
                |_| metrics.refused(direction, RefuseReason::ConnectionLimit),
                |stream, client, permit| {
                    ctx.opts.apply(&stream);
                    let work = handle(stream, client);
                    drain.spawn(async move {
                        work.await;
                        drop(permit);
                    });
                },
            )
            .await
        });
    }
    while loops.join_next().await.is_some() {}
}
