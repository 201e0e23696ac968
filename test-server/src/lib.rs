//! `remora test-server`: an HTTP/1.1, HTTP/2 and gRPC server whose behaviour is chosen per
//! request by its path, for tests, the demo and the benchmarks.
//!
//! | Path | Answer |
//! |---|---|
//! | `/echo` (any method) | 200, JSON: server name, method, path, version, headers (so `l5d-client-id`), body size |
//! | `/status/CODE` | that status |
//! | `/fail-first/N/KEY` | 500 for the first N calls with that KEY, then 200 |
//! | `/fail-share/PERCENT` | 500 for that share of calls (deterministic: evenly spread) |
//! | `/delay/MS` | 200 after MS milliseconds |
//! | `/reset` | the connection is reset, no response |
//! | `/stream/BYTES` | 200 with a body of BYTES bytes, streamed in 64 KiB chunks |
//! | `/upload` | reads the whole body as it streams in; 200 with its size |
//! | `/trailers` | 200 with a body and the trailer `x-trailer: yes` |
//! | `/ws` | a WebSocket echo |
//! | gRPC `remora.test.Test/Echo`, `/Count` | unary (may fail with a chosen status) and server streaming |
//!
//! Every response carries `x-server: NAME`.

pub mod grpc;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::debug;

use remora_proxy::http::{Body, boxed, detect};

/// Shared state of one test server.
#[derive(Debug, Default)]
pub struct TestServer {
    pub name: String,
    fail_first: Mutex<HashMap<String, u64>>,
    share_calls: AtomicU64,
    pub requests: AtomicU64,
    /// Added to every HTTP answer (ms): a slow replica.
    pub delay_ms: AtomicU64,
    /// Answer every HTTP request 500: a broken replica.
    pub fail_all: std::sync::atomic::AtomicBool,
    /// `/fanout` calls each of these URLs (absolute, `http://`) once ...
    pub fanout: Vec<String>,
    /// ... through this HTTP proxy (the pod's Remora outbound listener in explicit mode) ...
    pub http_proxy: Option<std::net::SocketAddr>,
    /// ... or, without one, straight to these addresses by host name (in a pod whose traffic
    /// iptables redirects to its proxy, which routes by `Host`).
    pub resolve: HashMap<String, std::net::IpAddr>,
}

impl TestServer {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(TestServer {
            name: name.to_string(),
            ..Default::default()
        })
    }

    /// A front end: `/fanout` calls every upstream once through `http_proxy`.
    pub fn front_end(
        name: &str,
        fanout: Vec<String>,
        http_proxy: std::net::SocketAddr,
    ) -> Arc<Self> {
        Arc::new(TestServer {
            name: name.to_string(),
            fanout,
            http_proxy: Some(http_proxy),
            ..Default::default()
        })
    }

    /// A front end in a pod with interception: `/fanout` calls every upstream by connecting to
    /// the address `resolve` gives its host.
    pub fn front_end_direct(
        name: &str,
        fanout: Vec<String>,
        resolve: HashMap<String, std::net::IpAddr>,
    ) -> Arc<Self> {
        Arc::new(TestServer {
            name: name.to_string(),
            fanout,
            resolve,
            ..Default::default()
        })
    }

    /// Calls every upstream concurrently (through the HTTP proxy, or straight to the resolved
    /// address), passing on the request's trace context (`context`), as an instrumented app
    /// does; answers their statuses as JSON (0 when a call failed outright).
    async fn fanout(&self, context: Vec<(HeaderName, HeaderValue)>) -> Response<Body> {
        let context = Arc::new(context);
        if self.fanout.is_empty() {
            return text(StatusCode::NOT_FOUND, "no upstreams\n");
        }
        let resolve = Arc::new(self.resolve.clone());
        let proxy = self.http_proxy;
        let mut set = tokio::task::JoinSet::new();
        for (i, url) in self.fanout.iter().enumerate() {
            let url = url.clone();
            let resolve = resolve.clone();
            let context = context.clone();
            set.spawn(async move {
                let call = call(proxy, &resolve, &url, &context);
                let status = tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                (i, serde_json::json!({ "url": url, "status": status }))
            });
        }
        let mut results = Vec::new();
        while let Some(Ok(r)) = set.join_next().await {
            results.push(r);
        }
        results.sort_by_key(|r| r.0);
        let results: Vec<serde_json::Value> = results.into_iter().map(|r| r.1).collect();
        let json = serde_json::json!({ "server": self.name, "upstreams": results });
        text(StatusCode::OK, &json.to_string())
    }

    /// Serves every connection `listener` accepts, forever.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move { server.connection(stream, peer).await });
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        // A duplicate of the socket, to reset the connection when asked.
        let Ok(std) = stream.into_std() else { return };
        let Ok(dup) = std.try_clone() else { return };
        let Ok(mut stream) = TcpStream::from_std(std) else {
            return;
        };
        let Ok((protocol, prefix)) = detect::read(&mut stream, Duration::from_secs(10)).await
        else {
            return;
        };
        let Some(protocol) = protocol else {
            debug!(%peer, "not HTTP; closing");
            return;
        };
        let reset = Arc::new(Notify::new());
        let io = Box::new(remora_proxy::transport::io::PrefixedIo::new(prefix, stream));
        let server = self.clone();
        let reset_signal = reset.clone();
        let serve = remora_proxy::http::server::serve(
            io,
            protocol,
            Default::default(),
            Default::default(),
            None,
            move |req| {
                let server = server.clone();
                let reset = reset_signal.clone();
                async move { server.handle(req, reset).await.map(Into::into) }
            },
        );
        tokio::select! {
            _ = serve => {}
            _ = reset.notified() => {
                let _ = socket2::SockRef::from(&dup).set_linger(Some(Duration::ZERO));
            }
        }
    }

    async fn handle(
        &self,
        req: Request<remora_proxy::http::RequestBody>,
        reset: Arc<Notify>,
    ) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let is_grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut rsp = if is_grpc {
            grpc::handle(req).await
        } else if self.fail_all.load(Ordering::Relaxed) {
            text(StatusCode::INTERNAL_SERVER_ERROR, "failing everything\n")
        } else {
            self.route(req, reset).await
        };
        if let Ok(v) = HeaderValue::from_str(&self.name) {
            rsp.headers_mut().insert("x-server", v);
        }
        rsp
    }

    async fn route(
        &self,
        req: Request<remora_proxy::http::RequestBody>,
        reset: Arc<Notify>,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["echo"] => self.echo(req).await,
            ["status", code] => match code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(status) => text(status, &format!("status {status}\n")),
                None => text(StatusCode::BAD_REQUEST, "bad status\n"),
            },
            ["fail-first", n, key] => {
                let n: u64 = n.parse().unwrap_or(0);
                let calls = {
                    let mut map = self.fail_first.lock().unwrap_or_else(|p| p.into_inner());
                    let c = map.entry((*key).to_string()).or_insert(0);
                    *c += 1;
                    *c
                };
                if calls <= n {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("failing call {calls} of {n}\n"),
                    )
                } else {
                    text(StatusCode::OK, &format!("ok after {n} failures\n"))
                }
            }
            ["fail-share", pct] => {
                let pct: u64 = pct.parse::<u64>().unwrap_or(0).min(100);
                let i = self.share_calls.fetch_add(1, Ordering::Relaxed);
                // Fail when the running count of failures owed rises.
                if (i + 1) * pct / 100 > i * pct / 100 {
                    text(StatusCode::INTERNAL_SERVER_ERROR, "failing a share\n")
                } else {
                    text(StatusCode::OK, "ok\n")
                }
            }
            ["delay", ms] => {
                let ms: u64 = ms.parse().unwrap_or(0).min(600_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, &format!("after {ms} ms\n"))
            }
            ["reset"] => {
                reset.notify_one();
                std::future::pending::<()>().await;
                unreachable_response()
            }
            ["stream", bytes] => stream(bytes.parse().unwrap_or(0)),
            ["upload"] => {
                let mut body = req.into_body();
                let mut total = 0u64;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                        Err(_) => return text(StatusCode::BAD_REQUEST, "body failed\n"),
                    }
                }
                text(StatusCode::OK, &format!("{total}\n"))
            }
            ["trailers"] => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("x-trailer", HeaderValue::from_static("yes"));
                let frames = vec![
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"body\n"))),
                    Ok(Frame::trailers(trailers)),
                ];
                Response::new(boxed(StreamBody::new(tokio_stream::iter(frames))))
            }
            ["ws"] => ws::handle(req),
            ["fanout"] => self.fanout(trace_context(req.headers())).await,
            _ => text(StatusCode::NOT_FOUND, "no such route\n"),
        }
    }

    async fn echo(&self, req: Request<remora_proxy::http::RequestBody>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let size = match body.collect().await {
            Ok(b) => b.to_bytes().len(),
            Err(_) => return text(StatusCode::BAD_REQUEST, "body failed\n"),
        };
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::Value::from(v.to_str().unwrap_or("<binary>")),
                )
            })
            .collect();
        let json = serde_json::json!({
            "server": self.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "uri": parts.uri.to_string(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_bytes": size,
        });
        let mut rsp = text(StatusCode::OK, &json.to_string());
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        rsp
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut rsp = Response::new(boxed(Full::new(Bytes::from(body.to_string()))));
    *rsp.status_mut() = status;
    rsp
}

fn unreachable_response() -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, "reset\n")
}

/// A body of `len` pattern bytes, produced chunk by chunk as the client reads.
fn stream(len: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
        let n = CHUNK.min(len - i * CHUNK) as usize;
        Ok::<_, std::convert::Infallible>(Frame::data(chunk.slice(..n)))
    });
    let mut rsp = Response::new(boxed(StreamBody::new(tokio_stream::iter(chunks))));
    rsp.headers_mut().insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&len.to_string()).unwrap_or(HeaderValue::from_static("0")),
    );
    rsp
}

/// The trace context headers of a request (W3C and B3), to pass on to the calls it makes.
fn trace_context(headers: &http::HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    const NAMES: [&str; 7] = [
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
    ];
    NAMES
        .iter()
        .filter_map(|n| {
            let v = headers.get(*n)?;
            Some((HeaderName::from_static(n), v.clone()))
        })
        .collect()
}

/// One GET of absolute `url`: through the HTTP proxy at `proxy` (absolute-form), or without one
/// to the address `resolve` gives the URL's host (origin-form): the status, or `None`.
async fn call(
    proxy: Option<std::net::SocketAddr>,
    resolve: &HashMap<String, std::net::IpAddr>,
    url: &str,
    context: &[(HeaderName, HeaderValue)],
) -> Option<u16> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.authority()?.as_str().to_string();
    let (connect_to, target) = match proxy {
        Some(p) => (p, uri.clone()),
        None => {
            let ip = *resolve.get(uri.host()?)?;
            let addr = std::net::SocketAddr::new(ip, uri.port_u16().unwrap_or(80));
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            (addr, pq.parse().ok()?)
        }
    };
    let tcp = tokio::net::TcpStream::connect(connect_to).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::get(target)
        .header(header::HOST, host)
        .body(http_body_util::Empty::<Bytes>::new())
        .ok()?;
    for (k, v) in context {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let rsp = sender.send_request(req).await.ok()?;
    let status = rsp.status().as_u16();
    let _ = rsp.into_body().collect().await;
    Some(status)
}
