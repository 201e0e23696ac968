//! Listening sockets: binding, and the bounded accept loop every listener of every role uses
//! (the proxy's inbound and outbound, the admin servers, the control plane's gRPC server).
//!
//! The loop takes a permit of a semaphore for each connection (none left: the connection is
//! closed at once and the caller told, to count it), sets `TCP_NODELAY`, and hands the
//! connection with its permit to the caller, which decides how to run it. It backs off on
//! accept errors (EMFILE) instead of spinning, and stops when told to.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

const BACKLOG: i32 = 1024;

/// Binds a listening socket. IPv6 sockets are IPv6-only, so `0.0.0.0:P` and `[::]:P` can both
/// be bound for a dual-stack listener.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, true)
}

/// Binds each of one listener's addresses: an IPv4 and an IPv6 address sharing a port are two
/// IPv6-only sockets apart; `[::]:P` alone also takes IPv4 (Linkerd's dual-stack pods name
/// only `[::]:4143`, and expect IPv4 there too).
pub fn bind_group(addrs: &[SocketAddr]) -> Vec<(SocketAddr, io::Result<TcpListener>)> {
    let has_v4 = |port: u16| addrs.iter().any(|a| a.is_ipv4() && a.port() == port);
    addrs
        .iter()
        .map(|&a| {
            let v6_only = a.is_ipv6() && (has_v4(a.port()) || !a.ip().is_unspecified());
            (a, bind_with(a, v6_only))
        })
        .collect()
}

fn bind_with(addr: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections on `listener` until `stop` resolves. Each connection takes a permit of
/// `limit`; without one it is closed and `at_limit` is called with the peer's address.
/// `handle` gets every admitted connection with its permit (drop the permit when the
/// connection ends). `name` names the listener in log lines.
pub async fn accept_loop<S, L, H>(
    listener: TcpListener,
    name: &'static str,
    limit: Arc<Semaphore>,
    stop: S,
    mut at_limit: L,
    mut handle: H,
) where
    S: Future<Output = ()>,
    L: FnMut(SocketAddr),
    H: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
{
    tokio::pin!(stop);
    let mut full = false;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
            res = listener.accept() => res,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a listener that cannot
                // accept right now.
                warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            at_limit(peer);
            if !full {
                warn!(
                    listener = name,
                    "connection limit reached; refusing new connections"
                );
                full = true;
            }
            drop(stream);
            continue;
        };
        if full {
            debug!(listener = name, "below the connection limit again");
            full = false;
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set TCP_NODELAY failed");
        }
        handle(stream, peer, permit);
    }
    debug!(listener = name, "listener closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn refuses_beyond_the_limit_and_stops_when_told() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = Arc::new(Semaphore::new(1));
        let refused = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (refused, held) = (refused.clone(), held.clone());
            accept_loop(
                listener,
                "test",
                limit,
                async {
                    let _ = stop_rx.await;
                },
                move |_| {
                    refused.fetch_add(1, Ordering::Relaxed);
                },
                move |stream, _, permit| held.lock().unwrap().push((stream, permit)),
            )
        });
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let ok = tokio::time::timeout(Duration::from_secs(10), async {
            while refused.load(Ordering::Relaxed) < 1 || held.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(ok.is_ok(), "one admitted, one refused");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is gone"
        );
    }
}
