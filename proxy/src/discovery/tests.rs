//! The resolver against a scriptable Destination server on loopback: answers, changes, outages
//! and the fresh snapshot after one, unknown targets, and the cache's bound.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use linkerd2_proxy_api::net;
use remora_metrics::client::ControlClientMetrics;
use remora_runtime::channel::{ControlChannel, Instrumented};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::*;

/// What the fake control plane answers to `Get`.
#[derive(Clone, Debug)]
enum Script {
    /// A snapshot of these addresses, then whatever [`Fake::send`] adds.
    Endpoints(Vec<SocketAddr>),
    /// `NoEndpoints { exists: true }`.
    Empty,
    /// An error status with this code.
    Fail(tonic::Code),
    /// Accept the call and never answer.
    Silent,
    /// End the stream at once, with `OK` and no message.
    EndAtOnce,
}

type Stream = mpsc::Sender<Result<pb::Update, Status>>;

#[derive(Clone)]
struct Fake {
    script: Arc<Mutex<Script>>,
    /// Every open `Get` stream, to push later updates into.
    streams: Arc<Mutex<Vec<Stream>>>,
    /// `Get` calls received.
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

fn weighted(addr: SocketAddr) -> pb::WeightedAddr {
    pb::WeightedAddr {
        addr: Some(net::TcpAddress::from(addr)),
        weight: 10_000,
        ..Default::default()
    }
}

fn add(addrs: &[SocketAddr]) -> pb::Update {
    pb::Update {
        update: Some(pb::update::Update::Add(pb::WeightedAddrSet {
            addrs: addrs.iter().copied().map(weighted).collect(),
            metric_labels: Default::default(),
        })),
    }
}

fn remove(addrs: &[SocketAddr]) -> pb::Update {
    pb::Update {
        update: Some(pb::update::Update::Remove(pb::AddrSet {
            addrs: addrs.iter().copied().map(net::TcpAddress::from).collect(),
        })),
    }
}

#[tonic::async_trait]
impl Destination for Fake {
    type GetStream = ReceiverStream<Result<pb::Update, Status>>;
    type GetProfileStream = ReceiverStream<Result<pb::DestinationProfile, Status>>;

    async fn get(
        &self,
        _req: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let script = self.script.lock().unwrap().clone();
        let (tx, rx) = mpsc::channel(16);
        match script {
            Script::EndAtOnce => return Ok(Response::new(ReceiverStream::new(rx))),
            Script::Fail(code) => return Err(Status::new(code, "scripted")),
            Script::Endpoints(addrs) => {
                let _ = tx.send(Ok(add(&addrs))).await;
            }
            Script::Empty => {
                let none = pb::update::Update::NoEndpoints(pb::NoEndpoints { exists: true });
                let _ = tx.send(Ok(pb::Update { update: Some(none) })).await;
            }
            Script::Silent => {}
        }
        self.streams.lock().unwrap().push(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_profile(
        &self,
        _req: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        Err(Status::invalid_argument("no profiles here"))
    }
}

impl Fake {
    fn new(script: Script) -> Self {
        Fake {
            script: Arc::new(Mutex::new(script)),
            streams: Arc::default(),
            calls: Arc::default(),
        }
    }

    /// Pushes `update` into every open stream.
    async fn send(&self, update: pb::Update) {
        let streams = self.streams.lock().unwrap().clone();
        for s in streams {
            let _ = s.send(Ok(update.clone())).await;
        }
    }

    /// Serves on `listener`.
    fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let svc = DestinationServer::new(self.clone());
        let fake = self.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .serve_with_incoming(svc, incoming)
                .await;
            drop(fake);
        })
    }

    /// Ends every open stream (as a control plane going away does).
    fn hang_up(&self) {
        self.streams.lock().unwrap().clear();
    }
}

fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let l = remora_runtime::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn resolver(control: SocketAddr, max_entries: usize) -> Arc<Resolver> {
    let channel = ControlChannel::plaintext(control).unwrap();
    let channel = Instrumented::new(channel, "destination", ControlClientMetrics::default());
    let mut config = ResolverConfig::new(Duration::from_secs(60), max_entries, 7);
    config.context_token = "ctx".into();
    Resolver::new(channel, config)
}

/// Waits (up to 10 s) until `target`'s endpoints are exactly `want`.
async fn endpoints_become(target: &Target, want: &[SocketAddr]) -> bool {
    let mut rx = target.endpoints.clone();
    let matches = |r: &Resolution| match r {
        Resolution::Endpoints(eps) => {
            let mut got: Vec<_> = eps.iter().map(|e| e.addr).collect();
            got.sort();
            let mut want = want.to_vec();
            want.sort();
            got == want
        }
        _ => false,
    };
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(matches))
        .await
        .is_ok_and(|r| r.is_ok())
}

fn addrs(last: &[u8]) -> Vec<SocketAddr> {
    last.iter()
        .map(|n| SocketAddr::from(([192, 0, 2, *n], 8080)))
        .collect()
}

#[tokio::test]
async fn a_target_follows_its_endpoints_as_they_change() {
    let fake = Fake::new(Script::Endpoints(addrs(&[1, 2])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let mut web = r.resolve("web.shop.svc.cluster.local:8080");
    match web.pick(Duration::from_secs(10)).await {
        Pick::Endpoint(ep, _) => assert!(addrs(&[1, 2]).contains(&ep.addr), "{ep:?}"),
        other => panic!("expected an endpoint, got {other:?}"),
    }
    fake.send(remove(&addrs(&[1]))).await;
    assert!(endpoints_become(&web, &addrs(&[2])).await);
    fake.send(add(&addrs(&[3]))).await;
    assert!(endpoints_become(&web, &addrs(&[2, 3])).await);
}

#[tokio::test]
async fn removed_endpoints_are_announced() {
    let fake = Fake::new(Script::Endpoints(addrs(&[1, 2])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let mut removed = r.removed();
    let web = r.resolve("web.shop.svc.cluster.local:8080");
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);
    fake.send(add(&addrs(&[3]))).await;
    assert!(endpoints_become(&web, &addrs(&[1, 2, 3])).await);
    assert!(removed.try_recv().is_err(), "nothing was removed yet");
    fake.send(remove(&addrs(&[1]))).await;
    let gone = tokio::time::timeout(Duration::from_secs(10), removed.recv()).await;
    assert_eq!(gone.unwrap().unwrap(), addrs(&[1])[0]);
}

#[tokio::test]
async fn the_last_known_endpoints_outlive_an_outage_and_a_fresh_snapshot_replaces_them() {
    let fake = Fake::new(Script::Endpoints(addrs(&[1, 2])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let web = r.resolve("web.shop.svc.cluster.local:8080");
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);

    // The control plane ends the stream and then cannot answer: the endpoints stay.
    *fake.script.lock().unwrap() = Script::Fail(tonic::Code::Unavailable);
    fake.hang_up();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);

    // It comes back knowing other endpoints: its snapshot replaces the old set, nothing kept.
    *fake.script.lock().unwrap() = Script::Endpoints(addrs(&[7]));
    assert!(endpoints_become(&web, &addrs(&[7])).await);
}

#[tokio::test]
async fn a_stream_that_says_nothing_after_a_reconnect_keeps_the_last_known_endpoints() {
    let fake = Fake::new(Script::Endpoints(addrs(&[1, 2])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let web = r.resolve("web.shop.svc.cluster.local:8080");
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);
    // The next stream is accepted but never answers: what was known stays.
    *fake.script.lock().unwrap() = Script::Silent;
    fake.hang_up();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);
}

#[tokio::test]
async fn a_target_the_control_plane_does_not_know_is_used_as_it_is() {
    let fake = Fake::new(Script::Fail(tonic::Code::InvalidArgument));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let mut t = r.resolve("192.0.2.9:80");
    assert!(matches!(t.pick(Duration::from_secs(10)).await, Pick::AsIs));
    assert_eq!(*t.endpoints.borrow(), Resolution::Unknown);
}

#[tokio::test]
async fn an_unanswered_target_is_used_as_it_is_after_the_timeout() {
    let fake = Fake::new(Script::Silent);
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let mut t = r.resolve("web.shop.svc.cluster.local:8080");
    let start = tokio::time::Instant::now();
    assert!(matches!(
        t.pick(Duration::from_millis(300)).await,
        Pick::AsIs
    ));
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_known_target_without_endpoints_has_none_after_the_timeout() {
    let fake = Fake::new(Script::Empty);
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let mut t = r.resolve("web.shop.svc.cluster.local:8080");
    assert!(matches!(
        t.pick(Duration::from_millis(500)).await,
        Pick::NoEndpoints
    ));
    // Endpoints that arrive later are picked at once.
    fake.send(add(&addrs(&[4]))).await;
    match t.pick(Duration::from_secs(10)).await {
        Pick::Endpoint(ep, _) => assert_eq!(ep.addr, addrs(&[4])[0]),
        other => panic!("expected the new endpoint, got {other:?}"),
    }
}

#[tokio::test]
async fn the_cache_holds_at_most_its_bound_dropping_the_least_recently_used() {
    let fake = Fake::new(Script::Endpoints(addrs(&[1])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 2);
    let _a = r.resolve("a.shop.svc.cluster.local:80");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let _b = r.resolve("b.shop.svc.cluster.local:80");
    tokio::time::sleep(Duration::from_millis(5)).await;
    // `a` is used again, so `b` is the least recently used when `c` arrives.
    let _a = r.resolve("a.shop.svc.cluster.local:80");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let _c = r.resolve("c.shop.svc.cluster.local:80");
    let cached: Vec<String> = r.snapshot().into_iter().map(|(t, ..)| t).collect();
    assert_eq!(
        cached,
        ["a.shop.svc.cluster.local:80", "c.shop.svc.cluster.local:80"]
    );
}

#[test]
fn an_endpoint_keeps_what_discovery_says_of_it() {
    let mut w = weighted(addrs(&[5])[0]);
    w.tls_identity = Some(pb::TlsIdentity {
        strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
            pb::tls_identity::DnsLikeIdentity {
                name: "web.shop.serviceaccount.identity.linkerd.cluster.local".into(),
            },
        )),
        server_name: None,
    });
    w.protocol_hint = Some(pb::ProtocolHint {
        protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
        opaque_transport: Some(pb::protocol_hint::OpaqueTransport { inbound_port: 4143 }),
    });
    w.metric_labels.insert("pod".into(), "web-0".into());
    let set = [("namespace".to_string(), "shop".to_string())].into();
    let ep = Endpoint::from_proto(w, &set).unwrap();
    assert_eq!(ep.hint, Hint::H2);
    assert_eq!(ep.opaque_transport_port, Some(4143));
    assert_eq!(
        ep.server_id.as_deref(),
        Some("web.shop.serviceaccount.identity.linkerd.cluster.local")
    );
    assert_eq!(ep.labels["pod"], "web-0");
    assert_eq!(ep.labels["namespace"], "shop");
    // An address discovery cannot express is dropped, not guessed.
    let broken = pb::WeightedAddr::default();
    assert!(Endpoint::from_proto(broken, &set).is_none());
}

#[test]
fn profiles_are_asked_for_names_under_the_suffixes_and_addresses_in_the_networks() {
    let scope = ProfileScope {
        suffixes: vec!["svc.cluster.local".into()],
        networks: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
    };
    assert!(scope.wants("web.shop.svc.cluster.local:8080"));
    assert!(
        scope.wants("WEB.shop.svc.cluster.local.:8080"),
        "case and a trailing dot"
    );
    assert!(scope.wants("svc.cluster.local:80"));
    // On label boundaries only.
    assert!(!scope.wants("web.xsvc.cluster.local:8080"));
    assert!(!scope.wants("example.com:443"));
    assert!(scope.wants("10.42.0.7:8080"));
    assert!(scope.wants("[fd00::7]:8080"));
    assert!(
        scope.wants("[::ffff:10.1.2.3]:80"),
        "an IPv4-mapped address is IPv4"
    );
    assert!(!scope.wants("192.168.1.1:80"));
    // Linkerd's "." is every name; no networks is no address.
    let names_only = ProfileScope {
        suffixes: vec![String::new()],
        networks: Vec::new(),
    };
    assert!(names_only.wants("example.com:443"));
    assert!(!names_only.wants("10.42.0.7:8080"));
    let all = ProfileScope::all();
    assert!(all.wants("10.42.0.7:8080") && all.wants("[fd00::7]:1") && all.wants("a.b:1"));
}

#[tokio::test]
async fn balancer_endpoints_stay_under_the_series_cap() {
    // As a scan of many ports would: 300 targets cached, a cap of 100 series.
    let fake = Fake::new(Script::Endpoints(addrs(&[1])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 1000);
    let _targets: Vec<_> = (0..300)
        .map(|port| r.resolve(&format!("web.shop.svc.cluster.local:{}", 1000 + port)))
        .collect();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(super::report::BalancerCollector {
        resolver: Arc::downgrade(&r),
        max_series: 100,
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("balancer_endpoints{"))
        .collect();
    assert_eq!(series.len(), 102, "{text}");
    let overflow: Vec<&&str> = series
        .iter()
        .filter(|l| l.contains("overflow=\"true\""))
        .collect();
    assert_eq!(overflow.len(), 2, "{text}");
}

#[tokio::test]
async fn a_stream_that_never_answers_is_replaced_and_the_target_converges_without_a_restart() {
    let fake = Fake::new(Script::Endpoints(addrs(&[1, 2])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let channel = ControlChannel::plaintext(addr).unwrap();
    let channel = Instrumented::new(channel, "destination", ControlClientMetrics::default());
    let mut config = ResolverConfig::new(Duration::from_secs(60), 100, 7);
    config.streams = crate::policy::watch::StreamLimits {
        initial: Some(Duration::from_millis(500)),
        idle: None,
        lifetime: None,
    };
    let r = Resolver::new(channel, config);
    let web = r.resolve("web.shop.svc.cluster.local:8080");
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);
    // The control plane now accepts every call and never answers: each stream is replaced
    // after its initial timeout, and what was known stays meanwhile.
    *fake.script.lock().unwrap() = Script::Silent;
    fake.hang_up();
    let opened = || fake.streams.lock().unwrap().len();
    let before = opened();
    let mut replaced = false;
    for _ in 0..100 {
        if opened() >= before + 3 {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        replaced,
        "silent streams were not replaced: {} opened",
        opened()
    );
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);
    // A healthy control plane again: the next replacement converges on its answer.
    *fake.script.lock().unwrap() = Script::Endpoints(addrs(&[3]));
    assert!(endpoints_become(&web, &addrs(&[3])).await);
}

#[tokio::test]
async fn streams_that_end_at_once_with_ok_keep_the_last_known_endpoints_and_are_asked_again() {
    let fake = Fake::new(Script::Endpoints(addrs(&[1, 2])));
    let (l, addr) = listener();
    let _server = fake.serve(l);
    let r = resolver(addr, 100);
    let web = r.resolve("web.shop.svc.cluster.local:8080");
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);
    let mut seen = web.endpoints.clone();
    seen.borrow_and_update();
    // The control plane answers every call with an empty stream (OK, no message).
    *fake.script.lock().unwrap() = Script::EndAtOnce;
    fake.hang_up();
    let calls = || fake.calls.load(std::sync::atomic::Ordering::SeqCst);
    let before = calls();
    let mut asked = false;
    for _ in 0..100 {
        if calls() >= before + 3 {
            asked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        asked,
        "empty streams were not asked again: {} calls",
        calls()
    );
    // Nothing was wiped, nor even touched, meanwhile.
    assert!(!seen.has_changed().unwrap(), "{:?}", *seen.borrow());
    assert!(endpoints_become(&web, &addrs(&[1, 2])).await);
    // Healthy again: the next call converges on its answer.
    *fake.script.lock().unwrap() = Script::Endpoints(addrs(&[4]));
    assert!(endpoints_become(&web, &addrs(&[4])).await);
}
