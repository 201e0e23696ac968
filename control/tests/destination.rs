//! `Destination/Get` and `GetProfile` over gRPC against a running control plane whose config
//! file the test edits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use pb::update::Update as U;
use remora_control::config::Config;
use remora_control::server::Control;
use remora_control::token::TokenKey;
use remora_identity::certs::Ca;
use tonic::transport::Channel;

const DAY: Duration = Duration::from_secs(86_400);

struct Cluster {
    dir: PathBuf,
    grpc: SocketAddr,
    admin: SocketAddr,
    drain: remora_runtime::drain::Drain,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.drain.signal();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn header() -> &'static str {
    r#"
[cluster]
name = "east"
trust_domain = "east.example"
[server]
addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
[identity]
trust_anchors = "root.pem"
issuer_cert = "issuer.pem"
issuer_key = "issuer.key"
token_key = "token.key"
"#
}

fn service(n: usize) -> String {
    let mut s = String::from(
        "[[services]]\nname = \"echo\"\nnamespace = \"shop\"\ncluster_ip = \"10.96.0.10\"\nports = [{ port = 7000 }]\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "[[services.endpoints]]\npod = \"echo-{i}\"\nip = \"10.{}.{}.{}\"\nservice_account = \"echo\"\nlabels = {{ zone = \"z{}\" }}\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255,
            i % 3
        ));
    }
    s
}

fn write(dir: &Path, services: &str) {
    // Write to a temporary file and rename, as editors and config-map updates do.
    let tmp = dir.join("control.toml.tmp");
    std::fs::write(&tmp, format!("{}\n{services}", header())).unwrap();
    std::fs::rename(&tmp, dir.join("control.toml")).unwrap();
}

async fn start(services: &str) -> Cluster {
    start_with(services, true).await
}

/// A control plane from `services`, following its file when `follow` (else from the config
/// alone, as an embedding program starts it: `Control::bind(config, None)`).
async fn start_with(services: &str, follow: bool) -> Cluster {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rmt{}-dst{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let root = Ca::new_root("root", DAY).unwrap();
    let issuer = root.new_intermediate("issuer", DAY).unwrap();
    std::fs::write(dir.join("root.pem"), root.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.pem"), issuer.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.key"), issuer.key_pem()).unwrap();
    std::fs::write(dir.join("token.key"), TokenKey::generate_hex().unwrap()).unwrap();
    write(&dir, services);
    let path = dir.join("control.toml");
    let config = Config::load(&path).unwrap();
    let control = Control::bind(config, follow.then_some(path)).unwrap();
    let grpc = control.grpc_addr().unwrap();
    let admin = control.admin_addr().unwrap();
    let drain = control.drain();
    tokio::spawn(control.run());
    Cluster {
        dir,
        grpc,
        admin,
        drain,
    }
}

async fn client(c: &Cluster) -> DestinationClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", c.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    DestinationClient::new(channel)
}

fn get(path: &str) -> pb::GetDestination {
    pb::GetDestination {
        path: path.into(),
        ..Default::default()
    }
}

/// Applies updates from `stream` to `set` until it equals `want` (or fails after a deadline).
async fn follow_until(
    stream: &mut tonic::Streaming<pb::Update>,
    set: &mut BTreeSet<SocketAddr>,
    want: &BTreeSet<SocketAddr>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while set != want {
        let update = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("set {set:?} never became {want:?}"))
            .unwrap()
            .unwrap();
        match update.update.unwrap() {
            U::Add(a) => set.extend(
                a.addrs
                    .into_iter()
                    .map(|w| SocketAddr::try_from(w.addr.unwrap()).unwrap()),
            ),
            U::Remove(r) => {
                for a in r.addrs {
                    set.remove(&SocketAddr::try_from(a).unwrap());
                }
            }
            U::NoEndpoints(_) => set.clear(),
        }
    }
}

fn addrs(n: usize) -> BTreeSet<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000)))
        .collect()
}

#[tokio::test]
async fn edits_stream_to_watchers_incrementally() {
    let c = start(&service(1)).await;
    let mut client = client(&c).await;
    let mut by_name = client
        .get(get("echo.shop.svc.cluster.local:7000"))
        .await
        .unwrap()
        .into_inner();
    let mut by_vip = client
        .get(get("10.96.0.10:7000"))
        .await
        .unwrap()
        .into_inner();
    let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
    for n in [1, 5, 2] {
        write(&c.dir, &service(n));
        follow_until(&mut by_name, &mut a, &addrs(n)).await;
        follow_until(&mut by_vip, &mut b, &addrs(n)).await;
    }
    // Exactly those sets: nothing else arrives while the config is unchanged.
    let extra = tokio::time::timeout(Duration::from_millis(700), by_name.message()).await;
    assert!(extra.is_err(), "unexpected update {extra:?}");
    // Scale to zero: the service exists with no endpoints.
    write(&c.dir, &service(0));
    follow_until(&mut by_name, &mut a, &BTreeSet::new()).await;
}

#[tokio::test]
async fn invalid_edits_are_rejected_and_the_last_good_config_serves() {
    let c = start(&service(2)).await;
    let mut client = client(&c).await;
    let mut stream = client
        .get(get("10.96.0.10:7000"))
        .await
        .unwrap()
        .into_inner();
    let mut set = BTreeSet::new();
    follow_until(&mut stream, &mut set, &addrs(2)).await;
    write(&c.dir, &service(3).replace("10.0.0.2", "10.0.0.999"));
    // Wait for the reloader to see and reject it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = admin_metrics(c.admin).await;
        if m.contains("config_reloads_total{result=\"failure\"} 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad edit was not rejected:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        quiet.is_err(),
        "a rejected edit changed the endpoints: {quiet:?}"
    );
    // A new watch also sees the last good config.
    let mut fresh = client
        .get(get("10.96.0.10:7000"))
        .await
        .unwrap()
        .into_inner();
    let mut set2 = BTreeSet::new();
    follow_until(&mut fresh, &mut set2, &addrs(2)).await;
    // And a later good edit goes through.
    write(&c.dir, &service(4));
    follow_until(&mut stream, &mut set, &addrs(4)).await;
}

async fn admin_metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn large_sets_arrive_in_several_messages() {
    let c = start(&service(10_000)).await;
    let mut client = client(&c).await;
    let mut stream = client
        .get(get("10.96.0.10:7000"))
        .await
        .unwrap()
        .into_inner();
    let mut messages = 0;
    let mut set = BTreeSet::new();
    while set.len() < 10_000 {
        let u = stream.message().await.unwrap().unwrap();
        messages += 1;
        if let Some(U::Add(a)) = u.update {
            set.extend(
                a.addrs
                    .into_iter()
                    .map(|w| SocketAddr::try_from(w.addr.unwrap()).unwrap()),
            );
        }
    }
    assert_eq!(set, addrs(10_000));
    assert!(messages >= 10, "{messages} messages");
}

#[tokio::test]
async fn endpoints_carry_identity_hints_and_labels_and_pods_resolve() {
    let c = start(&service(2)).await;
    let mut client = client(&c).await;
    let mut stream = client
        .get(get("10.96.0.10:7000"))
        .await
        .unwrap()
        .into_inner();
    let Some(U::Add(add)) = stream.message().await.unwrap().unwrap().update else {
        panic!("expected an Add");
    };
    let w = &add.addrs[0];
    let id = w.tls_identity.as_ref().unwrap();
    match id.strategy.as_ref().unwrap() {
        pb::tls_identity::Strategy::DnsLikeIdentity(d) => {
            assert_eq!(
                d.name,
                "echo.shop.serviceaccount.identity.linkerd.east.example"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.protocol_hint.as_ref().unwrap().protocol,
        Some(pb::protocol_hint::Protocol::H2(_))
    ));
    for (k, v) in [
        ("pod", "echo-0"),
        ("namespace", "shop"),
        ("service", "echo"),
        ("serviceaccount", "echo"),
        ("zone", "z0"),
    ] {
        assert_eq!(
            w.metric_labels.get(k).map(String::as_str),
            Some(v),
            "label {k}"
        );
    }
    // A pod IP resolves to that pod, and its profile carries the endpoint.
    let mut pod = client.get(get("10.0.0.1:7000")).await.unwrap().into_inner();
    let mut set = BTreeSet::new();
    follow_until(
        &mut pod,
        &mut set,
        &[SocketAddr::from(([10, 0, 0, 1], 7000))].into(),
    )
    .await;
    let mut profile = client
        .get_profile(get("10.0.0.1:7000"))
        .await
        .unwrap()
        .into_inner();
    let p = profile.message().await.unwrap().unwrap();
    assert_eq!(p.fully_qualified_name, "echo.shop.svc.cluster.local");
    assert!(p.endpoint.is_some());
    // An unknown address: the service does not exist here.
    let mut unknown = client.get(get("192.0.2.1:80")).await.unwrap().into_inner();
    let u = unknown.message().await.unwrap().unwrap();
    assert_eq!(
        u.update,
        Some(U::NoEndpoints(pb::NoEndpoints { exists: false }))
    );
    // A path that is not host:port is refused.
    let err = client.get(get("nonsense")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn without_a_file_to_follow_streams_stay_open() {
    // A control plane started from a config alone once dropped its state's sender: every
    // stream ended after its first message, and proxies reopened theirs five times a second.
    let c = start_with(&service(2), false).await;
    let mut dst = client(&c).await;
    let mut stream = dst
        .get(get("echo.shop.svc.cluster.local:7000"))
        .await
        .unwrap()
        .into_inner();
    let mut set = BTreeSet::new();
    let want: BTreeSet<SocketAddr> = ["10.0.0.0:7000", "10.0.0.1:7000"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    follow_until(&mut stream, &mut set, &want).await;
    let next = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
    assert!(next.is_err(), "the stream ended or moved: {next:?}");
}
