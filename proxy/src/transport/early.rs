//! Detection that never stalls on a server-speaks-first protocol: while the client is silent,
//! dial its destination, and whichever side speaks first decides.
//!
//! ```text
//! client's first bytes within `delay`? ─ yes ─► Client (no dial: HTTP costs one timer)
//!   no ─► dial the destination; then the first of
//!           the client's bytes ─────────► Client, with the early connection (ready or dialling)
//!           the server's bytes ─────────► Server: forward as bytes at once, these first
//!           the deadline ───────────────► Timeout, with the early connection
//!           the client's EOF / error ───► ClientClosed
//!         (a failed dial, or a server that closes without a byte, leaves only the client
//!          and the deadline)
//! ```
//!
//! The client side is any future that completes when the client has bytes (`peek` on a socket
//! consumes nothing; a read into a caller's buffer keeps what it got), so the caller's
//! detection carries on exactly as without an early dial. Reading the server is cancel-safe
//! (`AsyncReadExt::read`): when the client wins, the early connection has lost no byte.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use remora_metrics::detect::{DetectMetrics, EarlyDial};
use remora_metrics::tcp::Direction;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::transport::io::BoxIo;

/// A connection dialled early: its byte stream is read for the server's first bytes.
pub trait Upstream: Send {
    fn io_mut(&mut self) -> &mut BoxIo;
}

impl Upstream for BoxIo {
    fn io_mut(&mut self) -> &mut BoxIo {
        self
    }
}

/// The most of the server's first bytes read before forwarding starts.
const FIRST_READ: usize = 4 * 1024;

/// A dial in flight.
pub type Dialling<'a, C> = Pin<Box<dyn Future<Output = Option<C>> + Send + 'a>>;

/// The early connection, when one was started.
#[allow(missing_debug_implementations)]
pub enum Early<'a, C> {
    /// None was dialled (the client spoke within the delay).
    None,
    Dialling(Dialling<'a, C>),
    Ready(C),
}

impl<'a, C> Early<'a, C> {
    /// The connection, waiting for a dial in flight; `None` when none was dialled or it failed.
    pub async fn take(self) -> Option<C> {
        match self {
            Early::None => None,
            Early::Dialling(d) => d.await,
            Early::Ready(c) => Some(c),
        }
    }

    /// Whether a dial was started.
    pub fn started(&self) -> bool {
        !matches!(self, Early::None)
    }

    /// Drops the connection unused, counting it wasted if one was started.
    pub fn discard(self, metrics: &DetectMetrics, direction: Direction) {
        if self.started() {
            metrics.early_dial(direction, EarlyDial::Wasted);
        }
    }
}

/// Which side spoke first.
#[allow(missing_debug_implementations)]
pub enum First<'a, C> {
    /// The client has bytes waiting: its future completed with this `n > 0`.
    Client(Early<'a, C>, usize),
    /// The server spoke first: `first` are its first bytes, read from `conn`.
    Server { first: Bytes, conn: C },
    /// Neither spoke before the deadline.
    Timeout(Early<'a, C>),
    /// The client closed or failed before sending a byte.
    ClientClosed,
}

/// Races the client's first bytes (`client`, completing with the bytes available, 0 at EOF)
/// against the server's: after `delay` of client silence, `dial` starts (`None` when the dial
/// fails), and the server's first bytes, once it is connected, win as the client's would.
/// `deadline` ends the wait. `dial` is never called when `delay` is `None`.
pub async fn race<'a, C, R, D>(
    client: R,
    delay: Option<Duration>,
    deadline: Instant,
    dial: D,
    metrics: &DetectMetrics,
    direction: Direction,
) -> First<'a, C>
where
    C: Upstream + 'a,
    R: Future<Output = io::Result<usize>>,
    D: FnOnce() -> Dialling<'a, C>,
{
    let mut client = std::pin::pin!(client);
    let spoke = |r: io::Result<usize>| r.ok().filter(|&n| n > 0);
    let Some(delay) = delay else {
        return match tokio::time::timeout_at(deadline, &mut client).await {
            Ok(r) => spoke(r).map_or(First::ClientClosed, |n| First::Client(Early::None, n)),
            Err(_) => First::Timeout(Early::None),
        };
    };
    // The client usually speaks at once (HTTP): then nothing is dialled.
    let grace = deadline.min(Instant::now() + delay);
    match tokio::time::timeout_at(grace, &mut client).await {
        Ok(r) => {
            return spoke(r).map_or(First::ClientClosed, |n| First::Client(Early::None, n));
        }
        Err(_) if Instant::now() >= deadline => return First::Timeout(Early::None),
        Err(_) => {}
    }
    let mut dialling = Some(dial());
    let mut conn: Option<C> = None;
    let mut buf = vec![0u8; FIRST_READ];
    loop {
        tokio::select! {
            biased;
            r = &mut client => {
                let Some(n) = spoke(r) else {
                    if dialling.is_some() || conn.is_some() {
                        metrics.early_dial(direction, EarlyDial::Wasted);
                    }
                    return First::ClientClosed;
                };
                return First::Client(early(dialling, conn), n);
            }
            n = read_first(&mut conn, &mut buf) => match n {
                Ok(n) if n > 0 => {
                    if let Some(conn) = conn {
                        buf.truncate(n);
                        return First::Server { first: Bytes::from(buf), conn };
                    }
                }
                // The server closed (or failed) without a byte: wait for the client alone.
                _ => {
                    conn = None;
                    metrics.early_dial(direction, EarlyDial::Wasted);
                }
            },
            c = dial_next(&mut dialling) => {
                dialling = None;
                match c {
                    Some(c) => conn = Some(c),
                    None => metrics.early_dial(direction, EarlyDial::Failed),
                }
            }
            _ = tokio::time::sleep_until(deadline) => return First::Timeout(early(dialling, conn)),
        }
    }
}

fn early<'a, C>(dialling: Option<Dialling<'a, C>>, conn: Option<C>) -> Early<'a, C> {
    match (conn, dialling) {
        (Some(c), _) => Early::Ready(c),
        (None, Some(d)) => Early::Dialling(d),
        (None, None) => Early::None,
    }
}

/// Reads the server's first bytes; pending forever without a connection.
async fn read_first<C: Upstream>(conn: &mut Option<C>, buf: &mut [u8]) -> io::Result<usize> {
    match conn {
        Some(c) => c.io_mut().read(buf).await,
        None => std::future::pending().await,
    }
}

/// The dial in flight; pending forever without one.
async fn dial_next<C>(dialling: &mut Option<Dialling<'_, C>>) -> Option<C> {
    match dialling {
        Some(d) => d.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn metrics() -> DetectMetrics {
        DetectMetrics::default()
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn a_client_that_speaks_at_once_dials_nothing() {
        let (mut c, mut s) = tokio::io::duplex(64);
        c.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        let first = race::<BoxIo, _, _>(
            s.read(&mut buf),
            Some(Duration::from_millis(50)),
            deadline(),
            || panic!("dialled"),
            &metrics(),
            Direction::Outbound,
        )
        .await;
        assert!(matches!(first, First::Client(Early::None, _)));
        assert_eq!(&buf[..3], b"GET");
    }

    #[tokio::test]
    async fn a_server_that_speaks_first_wins_long_before_the_deadline() {
        let (_c, mut s) = tokio::io::duplex(64);
        let (mut app, up) = tokio::io::duplex(64);
        app.write_all(b"220 smtp ready\r\n").await.unwrap();
        let mut buf = [0u8; 8];
        let started = std::time::Instant::now();
        let first = race::<BoxIo, _, _>(
            s.read(&mut buf),
            Some(Duration::ZERO),
            deadline(),
            move || Box::pin(async move { Some(Box::new(up) as BoxIo) }),
            &metrics(),
            Direction::Inbound,
        )
        .await;
        let First::Server { first, .. } = first else {
            panic!("the server spoke first");
        };
        assert_eq!(&first[..], b"220 smtp ready\r\n");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_silent_pair_times_out_with_the_early_connection() {
        let (_c, mut s) = tokio::io::duplex(64);
        let (_app, up) = tokio::io::duplex(64);
        let mut buf = [0u8; 8];
        let first = race::<BoxIo, _, _>(
            s.read(&mut buf),
            Some(Duration::ZERO),
            Instant::now() + Duration::from_millis(50),
            move || Box::pin(async move { Some(Box::new(up) as BoxIo) }),
            &metrics(),
            Direction::Inbound,
        )
        .await;
        assert!(matches!(first, First::Timeout(Early::Ready(_))));
    }

    #[tokio::test]
    async fn a_client_that_speaks_late_keeps_the_early_connection() {
        let (mut c, mut s) = tokio::io::duplex(64);
        let (_app, up) = tokio::io::duplex(64);
        let mut buf = [0u8; 8];
        let speak = async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(b"hello").await.unwrap();
            c
        };
        let m = metrics();
        let (first, _c) = tokio::join!(
            race::<BoxIo, _, _>(
                s.read(&mut buf),
                Some(Duration::ZERO),
                deadline(),
                move || Box::pin(async move { Some(Box::new(up) as BoxIo) }),
                &m,
                Direction::Inbound,
            ),
            speak
        );
        let First::Client(early, 5) = first else {
            panic!("the client spoke first");
        };
        assert!(early.started());
        assert!(early.take().await.is_some());
        assert_eq!(&buf[..5], b"hello");
    }

    #[tokio::test]
    async fn a_failed_dial_leaves_the_client_to_decide() {
        let (mut c, mut s) = tokio::io::duplex(64);
        let mut buf = [0u8; 8];
        let speak = async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(b"x").await.unwrap();
            c
        };
        let m = metrics();
        let (first, _c) = tokio::join!(
            race::<BoxIo, _, _>(
                s.read(&mut buf),
                Some(Duration::ZERO),
                deadline(),
                || Box::pin(async { None }),
                &m,
                Direction::Outbound,
            ),
            speak
        );
        assert!(matches!(first, First::Client(Early::None, _)));
    }
}
