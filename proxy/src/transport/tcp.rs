//! The L4 path shared by inbound and outbound: connect to a target (with a timeout and the
//! direction's socket options), then forward bytes both ways with both sides counted, and log
//! how the connection ended.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use remora_metrics::tcp::{Direction, Peer, RefuseReason, TcpLabels, TcpMetrics};

use crate::transport::io::BoxIo;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::transport::forward::{Activity, Counted, Ended, forward_with};

/// Settings of the L4 path.
#[derive(Clone, Debug)]
pub struct TcpCtx {
    pub direction: Direction,
    pub connect: Connect,
    pub idle_timeout: Option<Duration>,
    /// Close a connection on which no byte moved either way this long after forwarding began
    /// (`REMORA_INBOUND_FIRST_BYTE_TIMEOUT`; the inbound only).
    pub first_byte_timeout: Option<Duration>,
    pub metrics: TcpMetrics,
}

/// Socket options of one kind of connection (`None`: the kernel's default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketOpts {
    /// TCP keepalive: idle time before the first probe (also the probe interval).
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged before the connection
    /// is dropped.
    pub user_timeout: Option<Duration>,
}

impl SocketOpts {
    /// Sets these options on `stream`; a failure is logged, not fatal.
    pub fn apply(&self, stream: &TcpStream) {
        let sock = socket2::SockRef::from(stream);
        if let Some(t) = self.keepalive {
            let ka = socket2::TcpKeepalive::new().with_time(t).with_interval(t);
            if let Err(e) = sock.set_tcp_keepalive(&ka) {
                debug!(error = %e, "set TCP keepalive failed");
            }
        }
        if let Some(t) = self.user_timeout
            && let Err(e) = sock.set_tcp_user_timeout(Some(t))
        {
            debug!(error = %e, "set TCP_USER_TIMEOUT failed");
        }
    }
}

/// How one direction connects: the timeout (TLS handshake included, where there is one) and
/// the socket options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connect {
    pub timeout: Duration,
    pub opts: SocketOpts,
}

impl Connect {
    /// A connect with `timeout` and the kernel's socket options.
    pub fn within(timeout: Duration) -> Self {
        Connect {
            timeout,
            opts: SocketOpts::default(),
        }
    }
}

/// Why a connect failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("connect to {addr} failed: {source}")]
    Io { addr: SocketAddr, source: io::Error },
}

/// Connects to `addr` within `how.timeout`, with `TCP_NODELAY` and `how`'s socket options.
pub async fn connect(addr: SocketAddr, how: Connect) -> Result<TcpStream, ConnectError> {
    let timeout = how.timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
        Ok(Err(source)) => return Err(ConnectError::Io { addr, source }),
        Ok(Ok(s)) => s,
    };
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "set TCP_NODELAY failed");
    }
    how.opts.apply(&stream);
    Ok(stream)
}

/// Connects to `target` in plaintext and forwards `client` to it, counting both sides under
/// the connection's `labels`. A failed connect is counted and resets the client.
pub async fn proxy_to(ctx: &TcpCtx, client: BoxIo, target: SocketAddr, labels: TcpLabels) {
    let upstream = match connect(target, ctx.connect).await {
        Ok(s) => s,
        Err(e) => {
            ctx.metrics
                .refused(ctx.direction, RefuseReason::ConnectFailed);
            warn!(error = %e, "closing the client connection");
            client.reset();
            return;
        }
    };
    proxy(ctx, client, Box::new(upstream), labels, target).await;
}

/// Forwards `src` and `dst` both ways until both directions are done, counting each side under
/// `labels` (the connection's labels; the `peer` is set per side).
pub async fn proxy(ctx: &TcpCtx, src: BoxIo, dst: BoxIo, labels: TcpLabels, target: SocketAddr) {
    let timed = ctx.idle_timeout.is_some() || ctx.first_byte_timeout.is_some();
    let activity = timed.then(Activity::new);
    let mut src = Counted::new(
        src,
        ctx.metrics.open(labels.with_peer(Peer::Src)),
        activity.clone(),
    );
    let mut dst = Counted::new(
        dst,
        ctx.metrics.open(labels.with_peer(Peer::Dst)),
        activity.clone(),
    );
    let (idle, first_byte) = (ctx.idle_timeout, ctx.first_byte_timeout);
    match forward_with(&mut src, &mut dst, idle, first_byte, activity.as_deref()).await {
        Ended::Closed(sent, received) => {
            debug!(%target, sent, received, "connection closed");
        }
        Ended::Idle => {
            info!(%target, timeout = ?ctx.idle_timeout, "closing idle connection");
        }
        Ended::Silent => {
            debug!(%target, timeout = ?first_byte, "no byte either way; closing the connection");
            ctx.metrics
                .refused(ctx.direction, RefuseReason::FirstByteTimeout);
        }
        Ended::Error(e) => {
            debug!(%target, error = %e, "connection ended with an error");
            src.record_error(&e);
            dst.record_error(&e);
            src.get_ref().reset();
            dst.get_ref().reset();
        }
    }
}
