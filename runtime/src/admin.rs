//! The admin server of every role: `GET /live`, `GET /ready`, `GET /metrics`, `POST /shutdown`,
//! `GET`/`PUT /log-level` (also as `/proxy-log-level`, Linkerd's name), `GET /env.json`, and the
//! role's own JSON pages under `GET /debug/<name>` (the proxy's `destinations`, the control
//! plane's `services`).
//!
//! HTTP/1.1 only, a bounded number of concurrent connections, a short header-read timeout,
//! bounded request bodies. A flood of idle connections cannot lock out a probe: at the limit,
//! a new connection closes the oldest one with no request in flight and takes its place. `/live`, `/ready` and `/metrics` answer anyone (kubelet probes and Prometheus
//! reach the pod's address); everything else answers loopback peers only: the endpoints that
//! change the process (`/shutdown`, `/log-level`), the debug pages, and `/env.json`, which
//! linkerd2-proxy serves to anyone (Linkerd's tools read it through a port-forward, which
//! arrives on loopback). `POST /shutdown` answers 404 unless the role enables it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use remora_metrics::Registry;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::drain::Drain;
use crate::log::{LogLevel, MAX_FILTER_LEN};

const MAX_CONNECTIONS: usize = 64;
/// How long a request head may take, from the connection's start or the previous response:
/// kubelet and Prometheus send theirs at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request body (`PUT /log-level`) may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints report on and act on.
#[derive(Clone, Debug)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub ready: Arc<AtomicBool>,
    pub drain: Drain,
    /// The process's log filter, shown and replaced by `GET`/`PUT /log-level` (loopback peers
    /// only); `None` when logging was not set up through [`crate::log::init`].
    pub log_level: Option<LogLevel>,
    /// JSON reports under `GET /debug/<name>` (loopback peers only): the proxy adds
    /// `destinations`, the control plane `services`.
    pub debug: Vec<DebugReport>,
    /// Whether `POST /shutdown` drains the process (Linkerd's `SHUTDOWN_ENDPOINT_ENABLED`).
    pub shutdown_endpoint: bool,
}

/// A named JSON report for `GET /debug/<name>`.
#[derive(Clone)]
pub struct DebugReport {
    pub name: &'static str,
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl std::fmt::Debug for DebugReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugReport")
            .field("name", &self.name)
            .finish()
    }
}

/// Serves the admin API on `listener` for as long as the process runs (also while draining, so
/// metrics can still be scraped).
pub async fn serve(listener: TcpListener, state: AdminState) {
    let open = Conns::default();
    let mut full = false;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(conn) = open.admit() else {
            if !full {
                warn!(%peer, "admin connection limit reached, every connection busy; refusing");
                full = true;
            }
            continue;
        };
        full = false;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let busy = conn.busy.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let busy = busy.clone();
                async move {
                    busy.store(true, Ordering::Release);
                    let rsp = route(&state, peer, req).await;
                    busy.store(false, Ordering::Release);
                    Ok::<_, Infallible>(rsp)
                }
            });
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(http);
            let res = tokio::select! {
                res = http.as_mut() => res,
                _ = conn.evicted.notified() => {
                    debug!(%peer, "closing an idle admin connection for a new one");
                    http.as_mut().graceful_shutdown();
                    http.await
                }
            };
            if let Err(e) = res {
                debug!(%peer, error = %e, "admin connection error");
            }
            drop(conn);
        });
    }
}

/// The admin listener's open connections, oldest first.
#[derive(Clone, Debug, Default)]
struct Conns(Arc<Mutex<ConnTable>>);

#[derive(Debug, Default)]
struct ConnTable {
    next: u64,
    open: BTreeMap<u64, (Arc<AtomicBool>, Arc<Notify>)>,
}

/// One open admin connection: whether a request is in flight, and its eviction signal. Leaves
/// the table when dropped.
struct Conn {
    table: Conns,
    id: u64,
    busy: Arc<AtomicBool>,
    evicted: Arc<Notify>,
}

impl Conns {
    /// A place for a new connection: free below [`MAX_CONNECTIONS`], else taken from the
    /// oldest connection with no request in flight (told to close). `None` when every
    /// connection is busy.
    fn admit(&self) -> Option<Conn> {
        let mut t = self.0.lock().ok()?;
        if t.open.len() >= MAX_CONNECTIONS {
            let idle = t
                .open
                .iter()
                .find(|(_, (busy, _))| !busy.load(Ordering::Acquire))
                .map(|(id, _)| *id)?;
            if let Some((_, evicted)) = t.open.remove(&idle) {
                evicted.notify_one();
            }
        }
        let id = t.next;
        t.next += 1;
        let (busy, evicted) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
        t.open.insert(id, (busy.clone(), evicted.clone()));
        Some(Conn {
            table: self.clone(),
            id,
            busy,
            evicted,
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.0.lock() {
            t.open.remove(&self.id);
        }
    }
}

async fn route(
    state: &AdminState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let loopback = peer.ip().to_canonical().is_loopback();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n".into()),
        (_, "/env.json") if !loopback => text(
            StatusCode::FORBIDDEN,
            "env.json is only served to loopback peers\n".into(),
        ),
        (&Method::GET, "/env.json") => env_json(&req),
        (&Method::GET, "/ready") => {
            if state.drain.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
            } else if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
            }
        }
        (&Method::GET, "/metrics") => match remora_metrics::encode(&state.registry) {
            Ok(body) => Response::builder()
                .status(StatusCode::OK)
                .header(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default(),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding failed\n".into(),
            ),
        },
        (&Method::GET, path)
            if path
                .strip_prefix("/debug/")
                .is_some_and(|n| state.debug.iter().any(|d| d.name == n)) =>
        {
            if !peer.ip().to_canonical().is_loopback() {
                return text(
                    StatusCode::FORBIDDEN,
                    "debug endpoints are loopback-only\n".into(),
                );
            }
            let name = &path["/debug/".len()..];
            let body = state
                .debug
                .iter()
                .find(|d| d.name == name)
                .map(|d| (d.render)())
                .unwrap_or_default();
            let mut rsp = text(StatusCode::OK, body);
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            rsp
        }
        (&Method::POST, "/shutdown") => {
            if !state.shutdown_endpoint {
                return text(
                    StatusCode::NOT_FOUND,
                    "shutdown endpoint is not enabled\n".into(),
                );
            }
            if !loopback {
                warn!(%peer, "refusing POST /shutdown from a non-loopback peer");
                return text(
                    StatusCode::FORBIDDEN,
                    "shutdown is only accepted from loopback\n".into(),
                );
            }
            info!(%peer, "shutdown requested through the admin API");
            state.drain.signal();
            text(StatusCode::OK, "shutdown\n".into())
        }
        (_, "/log-level") => log_level(state, peer, req, StatusCode::OK).await,
        // Linkerd's name; a successful PUT answers 204, as linkerd2-proxy does.
        (_, "/proxy-log-level") => log_level(state, peer, req, StatusCode::NO_CONTENT).await,
        (_, "/live" | "/ready" | "/metrics" | "/shutdown" | "/env.json") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// `GET /log-level` answers the current filter; `PUT /log-level` replaces it with the body
/// (`RUST_LOG` syntax, at most [`MAX_FILTER_LEN`] bytes). Loopback peers only.
async fn log_level(
    state: &AdminState,
    peer: SocketAddr,
    req: Request<Incoming>,
    put_ok: StatusCode,
) -> Response<Full<Bytes>> {
    if !peer.ip().to_canonical().is_loopback() {
        if req.method() == Method::PUT {
            warn!(%peer, "refusing PUT /log-level from a non-loopback peer");
        }
        return text(
            StatusCode::FORBIDDEN,
            "log-level is only accepted from loopback\n".into(),
        );
    }
    let Some(level) = &state.log_level else {
        return text(
            StatusCode::NOT_FOUND,
            "this process cannot change its log level\n".into(),
        );
    };
    match *req.method() {
        Method::GET => text(StatusCode::OK, format!("{}\n", level.get())),
        Method::PUT => {
            let mut rsp = put_log_level(level, peer, req).await;
            if rsp.status() == StatusCode::OK && put_ok == StatusCode::NO_CONTENT {
                rsp = Response::new(Full::new(Bytes::new()));
                *rsp.status_mut() = StatusCode::NO_CONTENT;
            }
            rsp
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
    }
}

async fn put_log_level(
    level: &LogLevel,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let read = Limited::new(req.into_body(), MAX_FILTER_LEN).collect();
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a log filter is at most {MAX_FILTER_LEN} bytes\n"),
            );
        }
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n".into(),
            );
        }
    };
    let Ok(filter) = std::str::from_utf8(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the log filter is not UTF-8\n".into(),
        );
    };
    match level.set(filter) {
        Ok(old) => {
            let new = filter.trim();
            info!(%peer, %old, %new, "log filter changed through the admin API");
            text(StatusCode::OK, format!("{new}\n"))
        }
        Err(reason) => text(StatusCode::BAD_REQUEST, format!("{reason}\n")),
    }
}

/// `GET /env.json`: the process's environment as a JSON object; `?A&B` selects variables
/// (`null` for unset ones). An `Accept` header must admit JSON.
fn env_json(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(accept) = req.headers().get(header::ACCEPT) {
        let ok = accept.to_str().is_ok_and(|a| {
            a.split(',').any(|t| {
                let t = t.split(';').next().unwrap_or("").trim();
                matches!(t, "application/json" | "application/*" | "*/*")
            })
        });
        if !ok {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "env.json is served as application/json only\n".into(),
            );
        }
    }
    let body = match req.uri().query().filter(|q| !q.is_empty()) {
        None => {
            let all: serde_json::Map<String, serde_json::Value> = std::env::vars()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            serde_json::Value::Object(all)
        }
        Some(q) if q.contains('=') => {
            let mut rsp = json(
                serde_json::json!({"error": "env.json takes variable names (?A&B), not NAME=VALUE"})
                    .to_string(),
            );
            *rsp.status_mut() = StatusCode::BAD_REQUEST;
            return rsp;
        }
        Some(q) => {
            let picked: serde_json::Map<String, serde_json::Value> = q
                .split('&')
                .filter(|k| !k.is_empty())
                .map(|k| {
                    let v =
                        std::env::var(k).map_or(serde_json::Value::Null, serde_json::Value::String);
                    (k.to_string(), v)
                })
                .collect();
            serde_json::Value::Object(picked)
        }
    };
    json(body.to_string())
}

fn json(body: String) -> Response<Full<Bytes>> {
    let mut rsp = text(StatusCode::OK, body);
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    rsp
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_flood_of_idle_connections_cannot_lock_out_a_probe() {
        let listener = crate::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AdminState {
            registry: Arc::new(Registry::default()),
            ready: Arc::new(AtomicBool::new(true)),
            drain: Drain::new(),
            log_level: None,
            debug: Vec::new(),
            shutdown_endpoint: false,
        };
        tokio::spawn(serve(listener, state));
        // More idle connections than the limit, none sending a byte.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 16 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A probe is answered at once, well before any idle connection times out.
        let started = std::time::Instant::now();
        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 256];
        let n = tokio::time::timeout(Duration::from_secs(30), probe.read(&mut buf))
            .await
            .expect("the probe was answered")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert!(
            started.elapsed() < HEADER_READ_TIMEOUT,
            "the probe waited {:?} for an idle connection to time out",
            started.elapsed()
        );
    }

    #[test]
    fn a_busy_connection_is_never_evicted() {
        let conns = Conns::default();
        let held: Vec<Conn> = (0..MAX_CONNECTIONS)
            .map(|_| conns.admit().unwrap())
            .collect();
        for c in &held {
            c.busy.store(true, Ordering::Release);
        }
        assert!(conns.admit().is_none(), "every connection is busy");
        held[3].busy.store(false, Ordering::Release);
        let new = conns.admit().expect("the idle one makes way");
        assert_eq!(conns.0.lock().unwrap().open.len(), MAX_CONNECTIONS);
        assert!(!conns.0.lock().unwrap().open.contains_key(&held[3].id));
        drop(new);
        assert_eq!(conns.0.lock().unwrap().open.len(), MAX_CONNECTIONS - 1);
    }
}
