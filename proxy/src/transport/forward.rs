//! Opaque byte forwarding between the two sides of a proxied connection.
//!
//! Both directions run concurrently in one task; a direction holds a buffer only while data
//! streams through it (64 KiB, so bulk transfers move four TLS records per syscall), none while
//! quiet. An EOF one way shuts down writing on the other side and the other way carries on
//! (half-close). Each side is wrapped in [`Counted`], which
//! adds the socket's bytes to its metrics as they move and notes activity for the optional idle
//! timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use remora_metrics::tcp::TcpConn;

use crate::transport::io::Io;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Bytes buffered per direction while data streams: four TLS records' worth of plaintext, so
/// one read and one (vectored) write move four records.
pub const BUF_SIZE: usize = 64 * 1024;
/// What a quiet direction reads into, on the stack; only a read that fills it (a stream, not a
/// message) makes the direction take a [`BUF_SIZE`] buffer.
const SMALL_READ: usize = 4 * 1024;

/// When either side of a connection last moved a byte, in milliseconds since `epoch` plus one
/// (0: no byte yet; the epoch stands for the last activity until one moves).
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        let ms = self.last_ms.load(Ordering::Relaxed).saturating_sub(1);
        self.epoch + Duration::from_millis(ms)
    }

    /// Whether either side moved a byte yet.
    fn moved(&self) -> bool {
        self.last_ms.load(Ordering::Relaxed) != 0
    }
}

/// A stream whose reads and writes are counted into one side's TCP metrics.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    metrics: TcpConn,
    activity: Option<Arc<Activity>>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, metrics: TcpConn, activity: Option<Arc<Activity>>) -> Self {
        Counted {
            inner,
            metrics,
            activity,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Records the error that ended this side, for `tcp_close_total{errno}`.
    pub fn record_error(&mut self, e: &io::Error) {
        if let Some(code) = e.raw_os_error() {
            self.metrics.set_errno(errno_name(code));
        }
    }

    #[inline]
    fn active(&self) {
        if let Some(a) = &self.activity {
            a.touch();
        }
    }

    /// Counts what a (plain or vectored) write wrote.
    #[inline]
    fn count_write(&self, res: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = res {
            self.metrics.wrote(n);
            self.active();
        }
        res
    }
}

impl<S: Io> Io for Counted<S> {
    fn reset(&self) {
        self.inner.reset();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let n = buf.filled().len() - before;
            if n > 0 {
                self.metrics.read(n);
                self.active();
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_write(res)
    }

    // Vectored writes pass through: h2 writes a frame head and its payload as two slices, and
    // over TLS they then become one record and one syscall instead of two of each.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_write(res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a forwarded connection ended.
#[derive(Debug)]
pub enum Ended {
    /// Both directions reached EOF: (bytes src → dst, bytes dst → src).
    Closed(u64, u64),
    /// Neither side moved a byte for the idle timeout.
    Idle,
    /// Neither side moved a byte within the first-byte timeout.
    Silent,
    /// A read or write failed.
    Error(io::Error),
}

/// One direction of a forwarded connection. It holds no buffer while waiting to read: a read
/// goes to a small stack buffer and only what it got is kept until written; a read that fills
/// it means data is streaming, and the next reads go to a [`BUF_SIZE`] buffer (uninitialised,
/// so taking one costs an allocation, not a memset), released whenever the source has nothing
/// more for now.
#[derive(Debug, Default)]
struct Half {
    buf: bytes::BytesMut,
    pos: usize,
    /// The last read filled its buffer: more is likely waiting.
    streaming: bool,
    read_done: bool,
    need_flush: bool,
    moved: u64,
}

impl Half {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            while self.pos < self.buf.len() {
                let n = std::task::ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.moved += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                std::task::ready!(w.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(self.moved));
            }
            self.pos = 0;
            let read = if self.streaming {
                self.buf.clear();
                self.buf.reserve(BUF_SIZE);
                tokio_util::io::poll_read_buf(r.as_mut(), cx, &mut self.buf)
            } else {
                let mut small = [0u8; SMALL_READ];
                let mut rb = ReadBuf::new(&mut small);
                let res = r.as_mut().poll_read(cx, &mut rb);
                if let Poll::Ready(Ok(())) = res {
                    self.buf = bytes::BytesMut::from(rb.filled());
                }
                res.map_ok(|()| rb.filled().len())
            };
            match read {
                Poll::Pending => {
                    // Nothing more to read for now: hold no buffer while waiting, and push
                    // out what was written.
                    self.buf = bytes::BytesMut::new();
                    if self.need_flush {
                        std::task::ready!(w.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    self.read_done = true;
                    self.buf = bytes::BytesMut::new();
                }
                Poll::Ready(Ok(n)) => {
                    self.streaming = if self.streaming {
                        n > SMALL_READ
                    } else {
                        n == SMALL_READ
                    };
                }
            }
        }
    }
}

/// Copies both ways until both directions are done; each direction shuts down writing on its
/// destination at its source's EOF (half-close). Returns the bytes moved each way.
async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut ab, mut ba) = (Half::default(), Half::default());
    let (mut ab_done, mut ba_done) = (None, None);
    std::future::poll_fn(|cx| {
        if ab_done.is_none()
            && let Poll::Ready(res) = ab.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))
        {
            ab_done = Some(res?);
        }
        if ba_done.is_none()
            && let Poll::Ready(res) = ba.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))
        {
            ba_done = Some(res?);
        }
        match (ab_done, ba_done) {
            (Some(x), Some(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Forwards bytes both ways between `src` and `dst` until both directions are done.
pub async fn forward<A, B>(src: &mut A, dst: &mut B, idle: Option<(Duration, &Activity)>) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    match idle {
        Some((timeout, activity)) => {
            // The idle clock starts now, whenever the activity was made.
            activity.touch();
            forward_with(src, dst, Some(timeout), None, Some(activity))
        }
        None => forward_with(src, dst, None, None, None),
    }
    .await
}

/// As [`forward`], also ending the connection when neither side moved a byte within
/// `first_byte` of the start. Both timers need `activity` (the counted sides' activity, new
/// at the start), and neither runs without it.
pub async fn forward_with<A, B>(
    src: &mut A,
    dst: &mut B,
    idle: Option<Duration>,
    first_byte: Option<Duration>,
    activity: Option<&Activity>,
) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let copy = copy_both(src, dst);
    let done = |res: io::Result<(u64, u64)>| match res {
        Ok((a, b)) => Ended::Closed(a, b),
        Err(e) => Ended::Error(e),
    };
    let Some(activity) = activity.filter(|_| idle.is_some() || first_byte.is_some()) else {
        return done(copy.await);
    };
    tokio::pin!(copy);
    // Both timers are bounded: each turn either ends or waits for the next deadline.
    loop {
        let silent_at = first_byte
            .filter(|_| !activity.moved())
            .map(|t| activity.epoch + t);
        let idle_at = idle.map(|t| activity.last() + t);
        let deadline = match (silent_at, idle_at) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return done(copy.await),
        };
        tokio::select! {
            res = &mut copy => return done(res),
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if first_byte.is_some_and(|t| !activity.moved() && activity.epoch + t <= now) {
                    return Ended::Silent;
                }
                if idle.is_some_and(|t| activity.last() + t <= now) {
                    return Ended::Idle;
                }
            }
        }
    }
}

/// The conventional name of an errno, for metric labels (a fixed set, so label values stay
/// bounded).
pub fn errno_name(code: i32) -> &'static str {
    use nix::errno::Errno;
    match Errno::from_raw(code) {
        Errno::ECONNRESET => "ECONNRESET",
        Errno::ECONNREFUSED => "ECONNREFUSED",
        Errno::ECONNABORTED => "ECONNABORTED",
        Errno::EPIPE => "EPIPE",
        Errno::ETIMEDOUT => "ETIMEDOUT",
        Errno::EHOSTUNREACH => "EHOSTUNREACH",
        Errno::ENETUNREACH => "ENETUNREACH",
        Errno::ENETDOWN => "ENETDOWN",
        Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        Errno::ENOBUFS => "ENOBUFS",
        Errno::ENOMEM => "ENOMEM",
        Errno::EMFILE => "EMFILE",
        _ => "EOTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_metrics::Registry;
    use remora_metrics::tcp::{Direction, Peer, TcpLabels, TcpMetrics};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sides(m: &TcpMetrics) -> (TcpConn, TcpConn) {
        (
            m.open(TcpLabels::new(Direction::Outbound, Peer::Src)),
            m.open(TcpLabels::new(Direction::Outbound, Peer::Dst)),
        )
    }

    #[tokio::test]
    async fn forwards_both_ways_with_half_close_and_counts() {
        let mut reg = Registry::default();
        let m = TcpMetrics::register(&mut reg);
        let (mut client, proxy_src) = tokio::io::duplex(64);
        let (proxy_dst, mut server) = tokio::io::duplex(64);
        let (s, d) = sides(&m);
        let task = tokio::spawn(async move {
            let mut src = Counted::new(proxy_src, s, None);
            let mut dst = Counted::new(proxy_dst, d, None);
            forward(&mut src, &mut dst, None).await
        });
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        // The proxy buffers little (back-pressure): the client writes while the server reads.
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        let mut client = writer.await.unwrap();
        // The other direction still works after the client's FIN.
        server.write_all(b"reply after eof").await.unwrap();
        server.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply after eof");
        match task.await.unwrap() {
            Ended::Closed(a, b) => assert_eq!((a, b), (10_000, 15)),
            other => panic!("unexpected end: {other:?}"),
        }
        let text = remora_metrics::encode(&reg).unwrap();
        assert!(text.contains(r#"tcp_read_bytes_total{direction="outbound",peer="src",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 10000"#));
        assert!(text.contains(r#"tcp_write_bytes_total{direction="outbound",peer="dst",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 10000"#));
        assert!(text.contains(r#"tcp_read_bytes_total{direction="outbound",peer="dst",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 15"#));
        assert!(text.contains(r#"tcp_write_bytes_total{direction="outbound",peer="src",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 15"#));
    }

    #[tokio::test]
    async fn streams_megabytes_byte_exact_and_holds_no_buffer_when_quiet() {
        let (mut client, mut proxy_src) = tokio::io::duplex(256 * 1024);
        let (mut proxy_dst, mut server) = tokio::io::duplex(256 * 1024);
        let mut half = Half::default();
        // A small message: copied, then the direction waits holding nothing.
        client.write_all(b"hello").await.unwrap();
        let waited = tokio::time::timeout(
            Duration::from_millis(20),
            std::future::poll_fn(|cx| {
                half.poll_copy(cx, Pin::new(&mut proxy_src), Pin::new(&mut proxy_dst))
            }),
        )
        .await;
        assert!(waited.is_err(), "no EOF yet");
        let mut five = [0u8; 5];
        server.read_exact(&mut five).await.unwrap();
        assert_eq!(&five, b"hello");
        assert_eq!(half.buf.capacity(), 0, "a quiet direction holds no buffer");
        // A stream: 4 MiB in uneven writes arrives byte-exact, then EOF carries through.
        let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(50_000) {
                client.write_all(chunk).await.unwrap();
            }
            client.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        let moved = std::future::poll_fn(|cx| {
            half.poll_copy(cx, Pin::new(&mut proxy_src), Pin::new(&mut proxy_dst))
        })
        .await
        .unwrap();
        writer.await.unwrap();
        drop(proxy_dst);
        assert_eq!(reader.await.unwrap(), payload);
        assert_eq!(moved, 5 + payload.len() as u64);
        assert_eq!(half.buf.capacity(), 0, "done: no buffer");
    }

    /// h2 writes a frame head and its payload as two slices: a wrapper that hid vectored writes
    /// made them two TLS records and two syscalls.
    #[tokio::test]
    async fn vectored_writes_pass_through_and_are_counted() {
        let mut reg = Registry::default();
        let m = TcpMetrics::register(&mut reg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (s, _d) = sides(&m);
        let mut counted = Counted::new(client, s, None);
        assert!(counted.is_write_vectored());
        let slices = [io::IoSlice::new(b"head:"), io::IoSlice::new(b"payload")];
        let n = std::future::poll_fn(|cx| Pin::new(&mut counted).poll_write_vectored(cx, &slices))
            .await
            .unwrap();
        assert_eq!(n, 12, "both slices in one write");
        drop(counted);
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"head:payload");
        let text = remora_metrics::encode(&reg).unwrap();
        assert!(text.contains(r#"tcp_write_bytes_total{direction="outbound",peer="src",tls="no_identity",no_tls_reason="not_provided_by_service_discovery"} 12"#), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_only_when_idle() {
        let mut reg = Registry::default();
        let m = TcpMetrics::register(&mut reg);
        let (mut client, proxy_src) = tokio::io::duplex(64);
        let (proxy_dst, mut server) = tokio::io::duplex(64);
        let (s, d) = sides(&m);
        let activity = Activity::new();
        let a2 = activity.clone();
        let task = tokio::spawn(async move {
            let mut src = Counted::new(proxy_src, s, Some(a2.clone()));
            let mut dst = Counted::new(proxy_dst, d, Some(a2.clone()));
            forward(&mut src, &mut dst, Some((Duration::from_secs(10), &a2))).await
        });
        // Activity every 6 s keeps it open past the 10 s timeout.
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
        }
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(matches!(task.await.unwrap(), Ended::Idle));
        drop(activity);
    }

    #[tokio::test(start_paused = true)]
    async fn first_byte_timeout_closes_only_silent_connections() {
        let mut reg = Registry::default();
        let m = TcpMetrics::register(&mut reg);
        // A client and a server end, and the forwarding between them with a 5 s first-byte
        // timeout.
        let relay = || {
            let (client, proxy_src) = tokio::io::duplex(64);
            let (proxy_dst, server) = tokio::io::duplex(64);
            let (s, d) = sides(&m);
            let forwarding = tokio::spawn(async move {
                let a = Activity::new();
                let mut src = Counted::new(proxy_src, s, Some(a.clone()));
                let mut dst = Counted::new(proxy_dst, d, Some(a.clone()));
                let first_byte = Some(Duration::from_secs(5));
                forward_with(&mut src, &mut dst, None, first_byte, Some(&a)).await
            });
            (client, server, forwarding)
        };
        // Silent both ways: closed after the first-byte timeout.
        let (_client, _server, silent) = relay();
        // The server speaks first, once: open long after the timeout.
        let (mut client, mut server, spoken) = relay();
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.write_all(b"220 hello").await.unwrap();
        let mut buf = [0u8; 9];
        client.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(matches!(silent.await.unwrap(), Ended::Silent));
        assert!(!spoken.is_finished(), "a byte moved: no first-byte timeout");
        drop((client, server));
        assert!(matches!(spoken.await.unwrap(), Ended::Closed(0, 9)));
    }

    #[test]
    fn errno_names_are_bounded() {
        assert_eq!(errno_name(nix::libc::ECONNRESET), "ECONNRESET");
        assert_eq!(errno_name(nix::libc::EPIPE), "EPIPE");
        assert_eq!(errno_name(9999), "EOTHER");
    }
}
