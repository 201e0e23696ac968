//! One HTTP/1.1 request through an in-process proxy pair over loopback, as in the mesh: client →
//! proxy A's outbound (explicit mode, keep-alive) → mTLS HTTP/2 with a transport header → proxy
//! B's inbound → the app (`test-server`, `/echo`), and back. The control plane (identity and
//! discovery) runs in-process too; `direct` is the same request straight to the app.
//!
//! Tracing: `proxy_pair_get_echo` has no trace collector configured (tracing off);
//! `traced_pair_*` is a second pair of proxies exporting to an in-process OTLP collector, once
//! with requests that carry no trace context (nothing sampled: the cost of looking) and once
//! with a sampled `traceparent` (a span on each proxy, exported).
//!
//! Instruction counts (W2.10): `REMORA_BENCH_REQUESTS=<n>` makes this binary send `n` requests
//! (after a warm-up of its own) and exit instead of benchmarking, so valgrind can count them;
//! `REMORA_BENCH_PATH` is `pair` (through the proxies, the default) or `direct` (client and app
//! alone), `REMORA_BENCH_KIND` is `h1` (HTTP/1.1, one keep-alive connection), `h2` (HTTP/2,
//! one connection, requests one at a time) or `new_conn` (HTTP/1.1, a new client connection per
//! request). One request through the pair costs the proxies
//! `(pair(n2) - pair(n1) - (direct(n2) - direct(n1))) / (n2 - n1)` instructions: everything
//! else (setup, warm-up, the client and the app) cancels out. With `REMORA_BENCH_POLICY` set,
//! both proxies also follow the control plane's policies (outbound routes, inbound servers and
//! authorizations), as they do under Linkerd's control plane. `REMORA_BENCH_LOG=<filter>`
//! installs the proxies' logging under that filter (none is installed otherwise).
//! `benches/instr.sh` runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use remora_api::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use remora_api::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use remora_benches::config::{cluster, service};
use remora_control::cluster::RawEndpoint;
use remora_control::token::TokenKey;
use remora_identity::certs::Ca;

const WEB: &str = "web.shop.svc.cluster.local:8080";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A collector that accepts every export and counts its spans.
#[derive(Clone, Default)]
struct Sink(std::sync::Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = req
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector(addr: SocketAddr) -> Sink {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let svc = TraceServiceServer::new(sink.clone());
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(svc, incoming)
            .await;
    });
    sink
}

/// A control plane, two proxies and the app, on 127.77.N.{1,2,3}; returns the client's
/// connection target (A's outbound) and the app's address. With `collector`, both proxies
/// export spans there.
async fn mesh(dir: &Path, n: u8, collector: Option<SocketAddr>) -> (SocketAddr, SocketAddr) {
    std::fs::create_dir_all(dir).unwrap();
    let root = Ca::new_root("bench root", Duration::from_secs(86_400)).unwrap();
    let issuer = root
        .new_intermediate("identity.east.example", Duration::from_secs(86_400))
        .unwrap();
    let anchors = write(dir, "root.pem", &root.cert_pem());
    write(dir, "issuer.pem", &issuer.cert_pem());
    write(dir, "issuer.key", &issuer.key_pem());
    let token_key = TokenKey::generate_hex().unwrap();
    write(dir, "token.key", &token_key);
    let ip = |h: u8| std::net::IpAddr::from([127, 77, n, h]);
    let (cp, a, b) = (ip(1), ip(2), ip(3));
    let mut web = RawEndpoint::new("web-0", &b.to_string(), "web");
    web.explicit = true;
    let mut config = cluster("east", &format!("{cp}:8086"), &format!("{cp}:9990"));
    config
        .services
        .push(service("web", "shop", 8080, vec![web]));
    let config = config.to_toml();
    let config = remora_control::config::Config::parse(&config, dir).unwrap();
    let control = remora_control::server::Control::bind(config, None).unwrap();
    tokio::spawn(control.run());
    let app = SocketAddr::new(b, 8080);
    let server = remora_test_server::TestServer::new("web");
    tokio::spawn(server.run(remora_runtime::listen::bind(app).unwrap()));
    let keys = TokenKey::from_hex(&token_key).unwrap();
    for (ip, sa) in [(a, "client"), (b, "web")] {
        let id = format!("{sa}.shop.serviceaccount.identity.linkerd.east.example");
        let token = write(
            dir,
            &format!("{sa}.token"),
            &keys.mint(&id.parse().unwrap(), Duration::from_secs(3600)),
        );
        let mut env: HashMap<&str, String> = [
            ("REMORA_OUTBOUND_ADDR", format!("{ip}:4140")),
            ("REMORA_INBOUND_ADDR", format!("{ip}:4143")),
            ("REMORA_ADMIN_ADDR", format!("{ip}:4191")),
            ("REMORA_IDENTITY_NAME", id),
            ("REMORA_IDENTITY_TRUST_ANCHORS", anchors.clone()),
            ("REMORA_IDENTITY_TOKEN_FILE", token),
            ("REMORA_IDENTITY_ADDR", format!("{cp}:8086")),
            ("REMORA_DESTINATION_ADDR", format!("{cp}:8086")),
        ]
        .into();
        if let Some(c) = collector {
            env.insert("REMORA_TRACE_COLLECTOR_ADDR", c.to_string());
        }
        // Both proxies follow the control plane's policies, as under Linkerd's: the outbound
        // routes each request by its target's outbound policy, the inbound checks each
        // against its port's server and authorizations.
        if std::env::var_os("REMORA_BENCH_POLICY").is_some() {
            env.insert("REMORA_POLICY_ADDR", format!("{cp}:8086"));
            env.insert(
                "REMORA_POLICY_WORKLOAD",
                format!("{{\"ns\":\"shop\",\"pod\":\"{sa}-0\"}}"),
            );
        }
        let config = remora_proxy::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
        let proxy = remora_proxy::Proxy::bind(config).unwrap();
        tokio::spawn(proxy.run());
    }
    (SocketAddr::new(a, 4140), app)
}

async fn connect(addr: SocketAddr) -> http1::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut http1::SendRequest<Empty<Bytes>>, uri: &str) -> u16 {
    get_with(sender, uri, None).await
}

async fn get_with(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    uri: &str,
    traceparent: Option<&str>,
) -> u16 {
    sender.ready().await.unwrap();
    let mut req = http::Request::get(uri)
        .header(http::header::HOST, WEB)
        .body(Empty::new())
        .unwrap();
    if let Some(tp) = traceparent {
        req.headers_mut()
            .insert("traceparent", http::HeaderValue::from_str(tp).unwrap());
    }
    let rsp = sender.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    rsp.into_body().collect().await.unwrap();
    status
}

fn http_pair(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("remora-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready = |proxy: SocketAddr| async move {
        // Until the proxies hold certificates and discovery answers.
        for _ in 0..200 {
            let mut s = connect(proxy).await;
            if get(&mut s, &format!("http://{WEB}/echo")).await == 200 {
                return connect(proxy).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the proxy pair never answered");
    };
    let sink_addr = SocketAddr::from(([127, 77, 1, 4], 4317));
    let (mut proxied, mut direct, traced, sink) = rt.block_on(async {
        let (proxy, app) = mesh(&dir, 0, None).await;
        let sink = collector(sink_addr).await;
        let (traced, _) = mesh(&dir.join("traced"), 1, Some(sink_addr)).await;
        ready(traced).await;
        (ready(proxy).await, connect(app).await, traced, sink)
    });
    let mut group = c.benchmark_group("http");
    group.bench_function("direct_get_echo", |b| {
        b.iter(|| assert_eq!(rt.block_on(get(&mut direct, "/echo")), 200))
    });
    let uri = format!("http://{WEB}/echo");
    group.bench_function("proxy_pair_get_echo", |b| {
        b.iter(|| assert_eq!(rt.block_on(get(&mut proxied, &uri)), 200))
    });
    // Each on a connection of its own, opened just before (an idle one may have been closed).
    let mut conn = rt.block_on(connect(traced));
    group.bench_function("traced_pair_get_echo_no_context", |b| {
        b.iter(|| assert_eq!(rt.block_on(get(&mut conn, &uri)), 200))
    });
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut conn = rt.block_on(connect(traced));
    group.bench_function("traced_pair_get_echo_sampled", |b| {
        b.iter(|| assert_eq!(rt.block_on(get_with(&mut conn, &uri, Some(tp))), 200))
    });
    group.finish();
    let exported = sink.0.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("spans exported to the collector: {exported}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tracer's own work per request, in isolation: reading the context, the span's attributes,
/// rewriting `traceparent`, the queue send; and the exporter's conversion of one span.
fn tracer(c: &mut Criterion) {
    use remora_proxy::trace::{Side, TraceConfig, Tracer, export};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let config = TraceConfig {
        addr: remora_runtime::channel::ControlAddr::Socket("127.0.0.1:4317".parse().unwrap()),
        svc_name: None,
        resource: Default::default(),
        sample_ratio: 0.0,
        queue: 1024,
    };
    let (t, mut rx) = Tracer::new(&config, remora_metrics::trace::TraceMetrics::default());
    let request = |tp: Option<&str>| {
        let mut b = http::Request::get("http://web.shop.svc.cluster.local:8080/echo")
            .header("host", WEB)
            .header("user-agent", "bench")
            .header("accept", "*/*");
        if let Some(tp) = tp {
            b = b.header("traceparent", tp);
        }
        b.body(()).unwrap()
    };
    let rsp = http::Response::new(());
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut group = c.benchmark_group("tracer");
    group.bench_function("no_context", |b| {
        b.iter_batched(
            || request(None),
            |mut req| assert!(t.start(&mut req, Side::Outbound).is_none()),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("sampled_span", |b| {
        b.iter_batched(
            || request(Some(tp)),
            |mut req| {
                let span = t.start(&mut req, Side::Outbound).unwrap();
                span.finish(&rsp, None);
                let _ = rx.try_recv();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut req = request(Some(tp));
    t.start(&mut req, Side::Outbound)
        .unwrap()
        .finish(&rsp, None);
    let record = rx.try_recv().unwrap();
    group.bench_function("export_convert_span", |b| {
        b.iter_batched(
            || record.clone(),
            export::to_otlp,
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A client of one kind, to the proxy pair's outbound or straight to the app.
enum Client {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    /// A new HTTP/1.1 connection per request, to this address.
    NewConn(SocketAddr),
}

async fn connect_h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

impl Client {
    async fn new(kind: &str, addr: SocketAddr) -> Self {
        match kind {
            "h1" => Client::H1(connect(addr).await),
            "h2" => Client::H2(connect_h2(addr).await),
            "new_conn" => Client::NewConn(addr),
            other => panic!("REMORA_BENCH_KIND: h1, h2 or new_conn, not {other:?}"),
        }
    }

    async fn get(&mut self, uri: &str) -> u16 {
        match self {
            Client::H1(s) => get(s, uri).await,
            Client::NewConn(addr) => {
                let mut s = connect(*addr).await;
                get(&mut s, uri).await
            }
            Client::H2(s) => {
                s.ready().await.unwrap();
                let req = http::Request::get(format!("http://{WEB}/echo"))
                    .body(Empty::new())
                    .unwrap();
                let rsp = s.send_request(req).await.unwrap();
                let status = rsp.status().as_u16();
                rsp.into_body().collect().await.unwrap();
                status
            }
        }
    }
}

/// `REMORA_BENCH_REQUESTS` mode (the module's doc): `n` requests of `kind` on `path`.
fn count(n: u32, kind: &str, path: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("remora-count-{}", std::process::id()));
    rt.block_on(async {
        let (proxy, app) = mesh(&dir, 0, None).await;
        let (target, uri) = match path {
            "pair" => (proxy, format!("http://{WEB}/echo")),
            "direct" => (app, "/echo".to_string()),
            other => panic!("REMORA_BENCH_PATH: pair or direct, not {other:?}"),
        };
        // Until the proxies hold certificates and discovery answers (the app answers at once).
        let mut up = false;
        for _ in 0..400 {
            let mut s = connect(proxy).await;
            if get(&mut s, &format!("http://{WEB}/echo")).await == 200 {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "the proxy pair never answered");
        let mut client = Client::new(kind, target).await;
        // The same warm-up before every count: pools, caches and metric series exist.
        for _ in 0..50 {
            assert_eq!(client.get(&uri).await, 200);
        }
        for _ in 0..n {
            assert_eq!(client.get(&uri).await, 200);
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, http_pair, tracer);

fn main() {
    if let Some(n) = std::env::var("REMORA_BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
    {
        let kind = std::env::var("REMORA_BENCH_KIND").unwrap_or_else(|_| "h1".into());
        let path = std::env::var("REMORA_BENCH_PATH").unwrap_or_else(|_| "pair".into());
        // The proxies' logging, as `remora proxy` installs it, under this filter (Linkerd's
        // injector default maps to `warn,remora=info,hickory=error`); none by default.
        if let Ok(filter) = std::env::var("REMORA_BENCH_LOG") {
            let config = remora_runtime::log::LogConfig {
                filter,
                format: remora_runtime::log::LogFormat::Plain,
            };
            remora_runtime::log::init(&config).expect("a valid REMORA_BENCH_LOG filter");
        }
        count(n, &kind, &path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
