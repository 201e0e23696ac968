//! Test apps that run "inside" a pod (their listening socket lives in the pod's namespace) and
//! the byte patterns the tests send through the mesh.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::netns;

/// An app to run in a pod.
#[derive(Clone, Debug)]
pub enum App {
    /// Writes back every byte it reads, then closes after the client's EOF.
    Echo(u16),
    /// Reads until the client's EOF, then sends `reply_len` pattern bytes and closes.
    ReplyAfterEof { port: u16, reply_len: u64 },
    /// An HTTP/1.1 server answering 200 with the peer address and the request head it got.
    Http(u16),
    /// Writes its name and a newline, then closes: tells a client which pod it reached.
    Name(u16, String),
    /// A TLS server (the app's own TLS) that echoes.
    TlsEcho(u16, std::sync::Arc<rustls::ServerConfig>),
    /// `remora test-server` (HTTP/1.1, HTTP/2, gRPC, WebSocket), reporting this name.
    Test(u16, String),
}

pub fn echo(port: u16) -> App {
    App::Echo(port)
}

pub fn reply_after_eof(port: u16, reply_len: u64) -> App {
    App::ReplyAfterEof { port, reply_len }
}

pub fn http(port: u16) -> App {
    App::Http(port)
}

pub fn tls_echo(port: u16, config: std::sync::Arc<rustls::ServerConfig>) -> App {
    App::TlsEcho(port, config)
}

/// `remora test-server` on `port`, reporting `name` (in `x-server` and `/echo`).
pub fn test_server(port: u16, name: &str) -> App {
    App::Test(port, name.to_string())
}

pub fn name(port: u16, name: &str) -> App {
    App::Name(port, name.to_string())
}

/// A running app. Aborted when dropped.
#[derive(Debug)]
pub struct AppHandle {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    /// The test server's state, for [`App::Test`] apps (to make it slow or broken).
    pub server: Option<Arc<remora_test_server::TestServer>>,
}

impl AppHandle {
    /// Connections the app has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for AppHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates a dual-stack listener on `[::]:port` inside namespace `ns`.
pub fn listen_in(ns: &str, port: u16) -> io::Result<TcpListener> {
    let std = netns::in_netns(ns, move || {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
        s.set_only_v6(false)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from(([0u16; 8], port)).into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        Ok(std::net::TcpListener::from(s))
    })?;
    TcpListener::from_std(std)
}

/// Connects to `addr` from inside namespace `ns`.
pub async fn connect_in(ns: &str, addr: SocketAddr) -> io::Result<TcpStream> {
    let std = netns::in_netns(ns, move || {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_nonblocking(true)?;
        Ok(std::net::TcpStream::from(s))
    })?;
    let stream = tokio::net::TcpSocket::from_std_stream(std)
        .connect(addr)
        .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl App {
    pub(crate) fn start(self, ns: &str) -> io::Result<AppHandle> {
        let listener = listen_in(ns, self.port())?;
        self.serve_on(listener)
    }

    /// Runs the app on `ip` (its port) in the test's own namespace: an app of an explicit-mode
    /// pod, which has a loopback address of its own instead of a namespace.
    pub fn start_on(self, ip: std::net::IpAddr) -> io::Result<AppHandle> {
        let std = std::net::TcpListener::bind((ip, self.port()))?;
        std.set_nonblocking(true)?;
        self.serve_on(TcpListener::from_std(std)?)
    }

    fn port(&self) -> u16 {
        match self {
            App::Echo(p)
            | App::Http(p)
            | App::Name(p, _)
            | App::TlsEcho(p, _)
            | App::Test(p, _)
            | App::ReplyAfterEof { port: p, .. } => *p,
        }
    }

    fn serve_on(self, listener: TcpListener) -> io::Result<AppHandle> {
        let port = self.port();
        if let App::Test(_, name) = &self {
            let server = remora_test_server::TestServer::new(name);
            let task = tokio::spawn(server.clone().run(listener));
            return Ok(AppHandle {
                port,
                accepted: Arc::new(AtomicUsize::new(0)),
                task,
                server: Some(server),
            });
        }
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let app = self.clone();
                tokio::spawn(async move {
                    let _ = app.serve(stream, peer).await;
                });
            }
        });
        Ok(AppHandle {
            port,
            accepted,
            task,
            server: None,
        })
    }

    async fn serve(self, mut stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        match self {
            App::Echo(_) => {
                let (mut r, mut w) = stream.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            }
            App::ReplyAfterEof { reply_len, .. } => {
                let mut sink = [0u8; 16 * 1024];
                while stream.read(&mut sink).await? > 0 {}
                write_pattern(&mut stream, reply_len).await?;
                stream.shutdown().await
            }
            App::TlsEcho(_, config) => {
                let tls = tokio_rustls::TlsAcceptor::from(config)
                    .accept(stream)
                    .await?;
                let (mut r, mut w) = tokio::io::split(tls);
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            }
            App::Test(..) => Ok(()),
            App::Name(_, name) => {
                stream.write_all(format!("{name}\n").as_bytes()).await?;
                stream.shutdown().await
            }
            App::Http(_) => {
                let head = read_head(&mut stream).await?;
                let body = format!("peer: {peer}\n{head}");
                let rsp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(rsp.as_bytes()).await?;
                stream.shutdown().await
            }
        }
    }
}

async fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Err(io::Error::other("request head too large"));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The test pattern's byte at `offset`: no short period, so reordered or repeated chunks show.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (offset >> 20) as u8
}

fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + i as u64);
    }
}

/// Writes `len` pattern bytes.
pub async fn write_pattern<W: AsyncWriteExt + Unpin>(w: &mut W, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(buf.len() as u64) as usize;
        fill_pattern(&mut buf[..n], sent);
        w.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    Ok(())
}

/// Reads to EOF, checking every byte against the pattern. Returns the count read, or an error
/// at the first wrong byte.
pub async fn read_pattern<R: AsyncReadExt + Unpin>(r: &mut R) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            if b != pattern_byte(got + i as u64) {
                return Err(io::Error::other(format!(
                    "byte {} differs from the pattern",
                    got + i as u64
                )));
            }
        }
        got += n as u64;
    }
}

/// Sends `len` pattern bytes, half-closes, and concurrently reads the echo to EOF. Returns the
/// number of bytes echoed back, verified against the pattern.
pub async fn echo_roundtrip(stream: TcpStream, len: u64) -> io::Result<u64> {
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        write_pattern(&mut w, len).await?;
        w.shutdown().await
    };
    let (wrote, read) = tokio::join!(writer, read_pattern(&mut r));
    wrote?;
    read
}

/// Connects, reads what a [`App::Name`] app says, and returns the name.
pub async fn ask_name(ns: &str, addr: SocketAddr) -> io::Result<String> {
    read_name(connect_in(ns, addr).await?).await
}

/// The name a `name` app writes on `conn` (10 s at most).
pub async fn read_name(mut conn: TcpStream) -> io::Result<String> {
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_string(&mut out),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no name"))??;
    match out.strip_suffix('\n') {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(io::Error::other(format!("not a name: {out:?}"))),
    }
}
