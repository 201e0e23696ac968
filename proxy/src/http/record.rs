//! Golden metrics and the access log of each HTTP request, in both directions.
//!
//! When the response's headers are ready ([`finish`]): `request_total` and
//! `response_latency_ms` (time to headers). The body is wrapped so that, at the end of the
//! stream (or when it is dropped early), `response_total` counts it with its final
//! classification: the `grpc-status` of its trailers (or of its headers, for a trailers-only
//! response), the HTTP status, or the proxy's own error ([`ErrorReason`]), and the access log
//! gets its line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Response;
use hyper::body::{Frame, SizeHint};
use remora_metrics::golden::{ResponseKey, RouteHandle};
use tokio::time::Instant;
use tracing::warn;

use super::{Body, BoxError, grpc_status};
use crate::error::ErrorReason;

/// Lines waiting for the writer at most; beyond, lines are dropped and counted.
const ACCESS_LOG_QUEUE: usize = 4096;

/// The access log: lines go through a bounded queue to a thread writing them to stdout, so a
/// slow terminal or pipe never holds a request (nor the runtime).
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: std::sync::mpsc::SyncSender<String>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    format: AccessLogFormat,
}

/// How access log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Apache's common log format, as linkerd2-proxy writes it: `client-id - [time]
    /// "METHOD path VERSION" status bytes`.
    Apache,
}

/// Where access log lines go (stdout unless the embedder says otherwise).
pub struct AccessLogOut(pub Box<dyn std::io::Write + Send>);

impl std::fmt::Debug for AccessLogOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLogOut")
    }
}

impl AccessLog {
    /// Starts the writer thread, writing lines in `format` to `out` (stdout when `None`).
    pub fn spawn(format: AccessLogFormat, out: Option<AccessLogOut>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(ACCESS_LOG_QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                use std::io::Write;
                let out = out.map_or_else(|| Box::new(std::io::stdout()) as _, |o| o.0);
                let mut out = std::io::BufWriter::new(out);
                while let Ok(line) = rx.recv() {
                    if out.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    // Flush once the queue is drained, not per line.
                    while let Ok(line) = rx.try_recv() {
                        if out.write_all(line.as_bytes()).is_err() {
                            return;
                        }
                    }
                    if out.flush().is_err() {
                        return;
                    }
                }
            })?;
        Ok(AccessLog {
            tx,
            dropped: Arc::default(),
            format,
        })
    }

    fn write(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!(
                    dropped = n + 1,
                    "access log lines dropped: the writer is behind"
                );
            }
        }
    }
}

/// What the access log says of a request, beyond its response.
#[derive(Debug)]
pub struct AccessEntry {
    pub log: AccessLog,
    pub time: SystemTime,
    pub direction: &'static str,
    pub client_id: Option<Arc<str>>,
    pub authority: Option<Arc<str>>,
    pub method: http::Method,
    pub version: http::Version,
    pub path: String,
    pub endpoint: Option<std::net::SocketAddr>,
    pub attempts: u32,
}

/// Records the request and its time to headers, and wraps the body to record the response at
/// its end (with no `route`, only its access log line).
pub fn finish(
    route: Option<RouteHandle>,
    start: Instant,
    mut rsp: Response<Body>,
    access: Option<Box<AccessEntry>>,
) -> Response<Recorded> {
    let status = rsp.status().as_u16();
    if let Some(route) = &route {
        route.request();
        route.latency(status, start.elapsed());
    }
    let key = ResponseKey {
        status,
        grpc_status: grpc_status(rsp.headers()),
        error: rsp
            .extensions_mut()
            .remove::<ErrorReason>()
            .map_or("", |e| e.0),
    };
    rsp.map(|inner| Recorded {
        inner,
        pending: Some(Pending {
            route,
            key,
            start,
            bytes: 0,
            access,
        }),
    })
}

struct Pending {
    /// `None`: the access log only.
    route: Option<RouteHandle>,
    key: ResponseKey,
    start: Instant,
    bytes: u64,
    access: Option<Box<AccessEntry>>,
}

impl Pending {
    fn done(self) {
        if let Some(route) = &self.route {
            route.response(self.key);
        }
        if let Some(a) = self.access {
            a.log
                .write(access_line(&a, self.key, self.start.elapsed(), self.bytes));
        }
    }
}

/// A response body that records its response when it ends ([`finish`]); from a [`Body`], one
/// that records nothing. Not boxed again: the HTTP server takes it as it is
/// (`crate::http::server::serve`), so a response from a pooled connection crosses a proxy
/// unboxed (see [`Body`]).
pub struct Recorded {
    inner: Body,
    pending: Option<Pending>,
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorded")
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl From<Body> for Recorded {
    fn from(inner: Body) -> Self {
        Recorded {
            inner,
            pending: None,
        }
    }
}

impl hyper::body::Body for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(p) = self.pending.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        p.bytes += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref()
                        && let Some(g) = grpc_status(trailers)
                    {
                        p.key.grpc_status = Some(g);
                    }
                }
                if self.inner.is_end_stream()
                    && let Some(p) = self.pending.take()
                {
                    p.done();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut p) = self.pending.take() {
                    if p.key.error.is_empty() {
                        p.key.error = "stream";
                    }
                    p.done();
                }
            }
            Poll::Ready(None) => {
                if let Some(p) = self.pending.take() {
                    p.done();
                }
            }
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // Never polled to its end: an empty body hyper did not read, or a client that left.
        if let Some(p) = self.pending.take() {
            p.done();
        }
    }
}

fn access_line(a: &AccessEntry, key: ResponseKey, elapsed: Duration, bytes: u64) -> String {
    if a.log.format == AccessLogFormat::Apache {
        return format!(
            "{} - [{}] \"{} {} {:?}\" {} {}\n",
            a.client_id.as_deref().unwrap_or("-"),
            rfc3339(a.time),
            a.method,
            a.path,
            a.version,
            key.status,
            bytes
        );
    }
    let mut line = serde_json::json!({
        "time": rfc3339(a.time),
        "direction": a.direction,
        "client_id": a.client_id.as_deref(),
        "authority": a.authority.as_deref(),
        "method": a.method.as_str(),
        "path": a.path,
        "status": key.status,
        "grpc_status": key.grpc_status,
        "classification": if key.is_success() { "success" } else { "failure" },
        "error": (!key.error.is_empty()).then_some(key.error),
        "duration_ms": elapsed.as_secs_f64() * 1000.0,
        "bytes": bytes,
        "endpoint": a.endpoint.map(|e| e.to_string()),
        "attempts": a.attempts,
    })
    .to_string();
    line.push('\n');
    line
}

/// `2026-11-21T10:29:47.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_257_387_123);
        assert_eq!(rfc3339(t), "2026-11-21T10:36:27.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
