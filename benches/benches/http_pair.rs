//! One HTTP/1.1 request through an in-process proxy pair over loopback, as in the mesh: client →
//! proxy A's outbound (explicit mode, keep-alive) → mTLS HTTP/2 with a transport header → proxy
//! B's inbound → the app (`test-server`, `/echo`), and back. The control plane (identity and
//! discovery) runs in-process too; `direct` is the same request straight to the app.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
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

/// A control plane, two proxies and the app, on 127.77.0.{1,2,3}; returns the client's
/// connection target (A's outbound) and the app's address.
async fn mesh(dir: &Path) -> (SocketAddr, SocketAddr) {
    let root = Ca::new_root("bench root", Duration::from_secs(86_400)).unwrap();
    let issuer = root
        .new_intermediate("identity.east.example", Duration::from_secs(86_400))
        .unwrap();
    let anchors = write(dir, "root.pem", &root.cert_pem());
    write(dir, "issuer.pem", &issuer.cert_pem());
    write(dir, "issuer.key", &issuer.key_pem());
    let token_key = TokenKey::generate_hex().unwrap();
    write(dir, "token.key", &token_key);
    let (cp, a, b) = (
        "127.77.0.1".parse::<std::net::IpAddr>().unwrap(),
        "127.77.0.2".parse::<std::net::IpAddr>().unwrap(),
        "127.77.0.3".parse::<std::net::IpAddr>().unwrap(),
    );
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
        let env: HashMap<&str, String> = [
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
    sender.ready().await.unwrap();
    let req = http::Request::get(uri)
        .header(http::header::HOST, WEB)
        .body(Empty::new())
        .unwrap();
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
    let (mut proxied, mut direct) = rt.block_on(async {
        let (proxy, app) = mesh(&dir).await;
        // Until the proxies hold certificates and discovery answers.
        let mut ok = false;
        for _ in 0..200 {
            let mut s = connect(proxy).await;
            if get(&mut s, &format!("http://{WEB}/echo")).await == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "the proxy pair never answered");
        (connect(proxy).await, connect(app).await)
    });
    let mut group = c.benchmark_group("http");
    group.bench_function("direct_get_echo", |b| {
        b.iter(|| assert_eq!(rt.block_on(get(&mut direct, "/echo")), 200))
    });
    let uri = format!("http://{WEB}/echo");
    group.bench_function("proxy_pair_get_echo", |b| {
        b.iter(|| assert_eq!(rt.block_on(get(&mut proxied, &uri)), 200))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, http_pair);
criterion_main!(benches);
