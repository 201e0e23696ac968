//! HTTP and gRPC clients that run inside a pod (so the pod's proxy intercepts them).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::apps::connect_in;

pub type Body = Full<Bytes>;

/// An HTTP/1.1 connection from inside `ns` to `addr`.
pub async fn http1(ns: &str, addr: SocketAddr) -> http1::SendRequest<Body> {
    let stream = connect_in(ns, addr).await.expect("connect");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1 handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// An HTTP/2 (prior knowledge) connection from inside `ns` to `addr`.
pub async fn http2(ns: &str, addr: SocketAddr) -> http2::SendRequest<Body> {
    let stream = connect_in(ns, addr).await.expect("connect");
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

async fn read(rsp: http::Response<hyper::body::Incoming>) -> hyper::Result<Reply> {
    let (parts, body) = rsp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Sends `req` on an HTTP/1 connection.
pub async fn send1(
    sender: &mut http1::SendRequest<Body>,
    req: Request<Body>,
) -> hyper::Result<Reply> {
    sender.ready().await?;
    read(sender.send_request(req).await?).await
}

/// Sends `req` on an HTTP/2 connection.
pub async fn send2(
    sender: &mut http2::SendRequest<Body>,
    req: Request<Body>,
) -> hyper::Result<Reply> {
    sender.ready().await?;
    read(sender.send_request(req).await?).await
}

/// `GET path` with a `Host` header.
pub fn get(host: &str, path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A tonic channel whose connections are made from inside `ns` to `addr`.
pub async fn grpc_channel(ns: &str, addr: SocketAddr) -> tonic::transport::Channel {
    grpc_channel_via(ns, addr, &addr.to_string()).await
}

/// A tonic channel for `authority` whose connections go to `addr` (an explicit-mode proxy).
pub async fn grpc_channel_via(
    ns: &str,
    addr: SocketAddr,
    authority: &str,
) -> tonic::transport::Channel {
    let connector = NsConnector {
        ns: ns.to_string(),
        addr,
    };
    tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .expect("gRPC channel")
}

#[derive(Clone)]
struct NsConnector {
    ns: String,
    addr: SocketAddr,
}

impl tonic::codegen::Service<http::Uri> for NsConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (ns, addr) = (self.ns.clone(), self.addr);
        Box::pin(async move { Ok(TokioIo::new(connect_in(&ns, addr).await?)) })
    }
}

/// Calls `remora.test.Test/Echo`.
pub async fn grpc_echo(
    channel: tonic::transport::Channel,
    message: &str,
    fail_with: i32,
) -> Result<remora_test_server::grpc::EchoReply, tonic::Status> {
    use remora_test_server::grpc::{ECHO_PATH, EchoReply, EchoRequest};
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default();
    let req = tonic::Request::new(EchoRequest {
        message: message.into(),
        fail_with,
    });
    client
        .unary(req, http::uri::PathAndQuery::from_static(ECHO_PATH), codec)
        .await
        .map(|r| r.into_inner())
}

/// Calls `remora.test.Test/Count` and collects the stream.
pub async fn grpc_count(
    channel: tonic::transport::Channel,
    n: u32,
) -> Result<Vec<u32>, tonic::Status> {
    use remora_test_server::grpc::{COUNT_PATH, CountReply, CountRequest};
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<CountRequest, CountReply>::default();
    let mut stream = client
        .server_streaming(
            tonic::Request::new(CountRequest { n }),
            http::uri::PathAndQuery::from_static(COUNT_PATH),
            codec,
        )
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(reply) = stream.message().await? {
        out.push(reply.i);
    }
    Ok(out)
}

/// What the app saw of a request its proxy answered for a peer whose app is down.
#[derive(Debug)]
pub struct ClosedAnswer {
    pub status: StatusCode,
    /// The `connection` header (HTTP/1).
    pub connection: Option<String>,
    /// `l5d-proxy-*` headers that reached the app (there should be none).
    pub l5d_headers: Vec<String>,
    pub body_len: usize,
    /// Whether the client connection ended (HTTP/1 closed, HTTP/2 GOAWAY) within the deadline.
    pub closed: bool,
}

impl std::fmt::Display for ClosedAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connection={} l5d-headers={:?} body={} bytes, client connection {}",
            self.status.as_u16(),
            self.connection.as_deref().unwrap_or("-"),
            self.l5d_headers,
            self.body_len,
            if self.closed { "closed" } else { "kept open" }
        )
    }
}

/// Sends `GET /` for `host` over a fresh HTTP/1.1 (`h2 = false`) or HTTP/2 connection from
/// inside `ns` to `addr`, and reports the answer and whether the connection then ended within
/// `wait` (the server closed it, or sent GOAWAY and closed it when no stream was left).
pub async fn answer_and_close(
    ns: &str,
    addr: SocketAddr,
    host: &str,
    h2: bool,
    wait: std::time::Duration,
) -> Result<ClosedAnswer, String> {
    let stream = connect_in(ns, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let io = TokioIo::new(stream);
    let req = get(host, "/");
    // The senders are kept until the wait is over: dropping one would end the connection
    // from this side.
    let (rsp, conn, _h1, _h2) = if h2 {
        let (mut tx, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let rsp = send2(&mut tx, req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        (rsp, conn, None, Some(tx))
    } else {
        let (mut tx, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1 handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let rsp = send1(&mut tx, req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        (rsp, conn, Some(tx), None)
    };
    let closed = tokio::time::timeout(wait, conn).await.is_ok();
    Ok(ClosedAnswer {
        status: rsp.status,
        connection: rsp
            .headers
            .get(http::header::CONNECTION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        l5d_headers: rsp
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("l5d-proxy"))
            .map(|k| k.to_string())
            .collect(),
        body_len: rsp.body.len(),
        closed,
    })
}
