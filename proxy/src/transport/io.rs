//! Connection I/O shared by every path: a boxed stream type that any side of a proxied
//! connection can be (TCP, TLS over TCP, with replayed bytes), and [`PrefixedIo`], which replays
//! bytes read during protocol detection before reading on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's byte stream, whatever it is layered on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Arms the socket so that closing it sends a RST (the peer sees an error, not a clean end).
    fn reset(&self);
}

pub type BoxIo = Box<dyn Io>;

impl Io for BoxIo {
    fn reset(&self) {
        (**self).reset();
    }
}

/// An in-memory pipe (tests, and the fuzz targets in `fuzz-targets/src/lib.rs`).
impl Io for tokio::io::DuplexStream {
    fn reset(&self) {}
}

impl Io for TcpStream {
    fn reset(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

impl<T: Io> Io for tokio_rustls::server::TlsStream<T> {
    fn reset(&self) {
        self.get_ref().0.reset();
    }
}

impl<T: Io> Io for tokio_rustls::client::TlsStream<T> {
    fn reset(&self) {
        self.get_ref().0.reset();
    }
}

/// A stream that first yields `prefix`, then reads from `inner`. Writes go straight to `inner`.
pub struct PrefixedIo<T> {
    prefix: Bytes,
    inner: T,
}

/// Without the stream's own `Debug`, which a boxed stream (`BoxIo`) has not.
impl<T> std::fmt::Debug for PrefixedIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixedIo")
            .field("prefix", &self.prefix.len())
            .finish_non_exhaustive()
    }
}

impl<T> PrefixedIo<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        PrefixedIo { prefix, inner }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: Io> Io for PrefixedIo<T> {
    fn reset(&self) {
        self.inner.reset();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Replayed: let the detection buffer go rather than hold it for the
                // connection's life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Writes on a read-side wrapper go straight to its `inner` stream, vectored writes included.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: AsyncWrite + Unpin> AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }
            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

write_through!(PrefixedIo);

/// Read-ahead under TLS: rustls reads at most 4 KiB per call, so a 16 KiB record would take
/// four `recv`s. While a connection streams (a read filled what was asked), this reads up to
/// 64 KiB per syscall and hands it out in the small pieces asked for. Otherwise reads go
/// straight to the caller's buffer, so a quiet or request/response connection allocates nothing
/// and holds no buffer; the read-ahead buffer is released while waiting for the peer and once
/// drained after a small read.
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    buf: bytes::BytesMut,
    /// The last read filled what it was given: more is likely waiting.
    streaming: bool,
}

/// The most read per syscall.
const READ_AHEAD: usize = 64 * 1024;
/// A read-ahead fill no larger than this does not keep the buffer.
const SMALL_FILL: usize = 4 * 1024;

impl<T> ReadAhead<T> {
    pub fn new(inner: T) -> Self {
        ReadAhead {
            inner,
            buf: bytes::BytesMut::new(),
            streaming: false,
        }
    }
}

impl<T: Io> Io for ReadAhead<T> {
    fn reset(&self) {
        self.inner.reset();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() {
            if !this.streaming || out.remaining() >= READ_AHEAD {
                let wanted = out.remaining();
                let before = out.filled().len();
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                let n = out.filled().len() - before;
                this.streaming = n > 0 && n == wanted;
                return Poll::Ready(Ok(()));
            }
            // Reuses the drained allocation when there is one (uninitialised: no memset).
            this.buf.reserve(READ_AHEAD);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf);
            let n = match read {
                Poll::Ready(Ok(n)) => n,
                other => {
                    // Waiting (or failed): hold no buffer meanwhile. Still streaming: the next
                    // read reads ahead again (an allocation, no memset).
                    this.buf = bytes::BytesMut::new();
                    return other.map_ok(|_| ());
                }
            };
            if n <= SMALL_FILL {
                this.streaming = false;
            }
            if n == 0 {
                this.buf = bytes::BytesMut::new();
                return Poll::Ready(Ok(()));
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        if this.buf.is_empty() && !this.streaming {
            this.buf = bytes::BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

write_through!(ReadAhead);

/// Reads from `io` into a buffer until `decide` stops answering "need more", `max` bytes are
/// held, the peer stops sending (EOF) or `timeout` passes. Returns the bytes read; nothing is
/// lost, the caller replays them with [`PrefixedIo`].
pub async fn read_prefix<T, D>(
    io: &mut T,
    max: usize,
    timeout: Duration,
    mut decided: D,
) -> io::Result<Bytes>
where
    T: AsyncRead + Unpin,
    D: FnMut(&[u8]) -> bool,
{
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = bytes::BytesMut::with_capacity(1024.min(max));
    while buf.len() < max && !decided(&buf) {
        if buf.capacity() == buf.len() {
            buf.reserve((buf.len()).min(max - buf.len()).max(1));
        }
        let mut limited = (&mut *io).take((max - buf.len()) as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Err(_) => break,    // timed out: decide on what we have
            Ok(Ok(0)) => break, // EOF
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_the_prefix_then_reads_on() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut p = PrefixedIo::new(Bytes::from_static(b"hello "), b);
        a.write_all(b"world").await.unwrap();
        a.shutdown().await.unwrap();
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn read_ahead_hands_out_small_pieces_byte_exact() {
        let (mut a, b) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // All of it waits in the pipe: reads fill what they ask for, so the reader streams.
        for chunk in data.chunks(7_000) {
            a.write_all(chunk).await.unwrap();
        }
        a.shutdown().await.unwrap();
        let mut r = ReadAhead::new(b);
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        let mut read_ahead = false;
        loop {
            let n = r.read(&mut piece).await.unwrap();
            read_ahead |= !r.buf.is_empty();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, data);
        assert!(read_ahead, "a streaming reader reads ahead");
        // Drained after EOF: nothing held.
        assert_eq!(r.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn read_ahead_releases_its_buffer_after_small_reads() {
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        let mut r = ReadAhead::new(b);
        a.write_all(b"ping").await.unwrap();
        let mut piece = [0u8; 4096];
        let n = r.read(&mut piece).await.unwrap();
        assert_eq!(&piece[..n], b"ping");
        assert_eq!(r.buf.capacity(), 0, "a quiet connection holds no buffer");
        // Waiting for the peer holds none either.
        let waited = tokio::time::timeout(Duration::from_millis(20), r.read(&mut piece)).await;
        assert!(waited.is_err(), "nothing to read");
        assert_eq!(r.buf.capacity(), 0, "no buffer while waiting");
    }

    #[tokio::test]
    async fn read_prefix_stops_when_decided_or_silent() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"abcdef").await.unwrap();
        let got = read_prefix(&mut b, 100, Duration::from_secs(5), |buf| buf.len() >= 3)
            .await
            .unwrap();
        assert!(got.len() >= 3 && got.starts_with(b"abc"));
        // A silent peer: the timeout ends detection with what there is.
        let (_a2, mut b2) = tokio::io::duplex(64);
        let start = tokio::time::Instant::now();
        let got = read_prefix(&mut b2, 100, Duration::from_millis(50), |_| false)
            .await
            .unwrap();
        assert!(got.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(50));
        // Never more than max.
        let (mut a3, mut b3) = tokio::io::duplex(1 << 16);
        a3.write_all(&[7u8; 10_000]).await.unwrap();
        let got = read_prefix(&mut b3, 4096, Duration::from_secs(5), |_| false)
            .await
            .unwrap();
        assert_eq!(got.len(), 4096);
    }
}
