//! Discovery at scale (not criterion: one timed run per scenario). The control plane runs in a
//! child process (this binary re-run with `--serve-control CONFIG`), so this process's memory is
//! the proxy-side resolver's.
//!
//! - 1 000 services × 10 endpoints: time until the resolver holds all of them; time from an edit
//!   (one more endpoint in every service) until every target shows it; resolver memory.
//! - 1 service scaled 0 → 10 000 endpoints by an edit: time from edit to delivery; memory.
//!
//! Run: `cargo bench -p remora-benches --bench discovery_scale`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remora_benches::config::{cluster, service};
use remora_control::cluster::RawEndpoint;
use remora_control::token::TokenKey;
use remora_identity::certs::Ca;
use remora_proxy::discovery::{Resolution, Resolver};

const ADDR: &str = "127.0.0.1:18086";

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

fn services(count: usize, per: usize) -> String {
    let mut config = cluster("bench", ADDR, "127.0.0.1:18090");
    for i in 0..count {
        let endpoints = (0..per)
            .map(|j| {
                let n = i * per + j;
                let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
                let mut e = RawEndpoint::new(&format!("p{n}"), &ip, &format!("s{i}"));
                e.labels.insert("zone".into(), format!("z{}", j % 3));
                e
            })
            .collect();
        let mut s = service(&format!("s{i}"), "bench", 80, endpoints);
        s.cluster_ip = Some(format!("10.96.{}.{}", i / 250, i % 250));
        config.services.push(s);
    }
    config.to_toml()
}

fn write(dir: &Path, text: &str) {
    let tmp = dir.join("control.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("control.toml")).unwrap();
}

fn setup() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmt{}-bench", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let root = Ca::new_root("root", Duration::from_secs(86_400)).unwrap();
    let issuer = root
        .new_intermediate("issuer", Duration::from_secs(86_400))
        .unwrap();
    std::fs::write(dir.join("root.pem"), root.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.pem"), issuer.cert_pem()).unwrap();
    std::fs::write(dir.join("issuer.key"), issuer.key_pem()).unwrap();
    std::fs::write(dir.join("token.key"), TokenKey::generate_hex().unwrap()).unwrap();
    dir
}

fn spawn_control(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--serve-control")
        .arg(dir.join("control.toml"))
        .spawn()
        .unwrap()
}

async fn wait_all(
    targets: &[remora_proxy::discovery::Target],
    want: usize,
    deadline: Duration,
) -> Duration {
    let start = Instant::now();
    for t in targets {
        let mut rx = t.endpoints.clone();
        loop {
            if matches!(&*rx.borrow_and_update(), Resolution::Endpoints(e) if e.len() == want) {
                break;
            }
            assert!(
                start.elapsed() < deadline,
                "not delivered within {deadline:?}"
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    }
    start.elapsed()
}

async fn many_services() {
    let dir = setup();
    write(&dir, &services(1000, 10));
    let mut control = spawn_control(&dir);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib();
    let channel =
        remora_runtime::channel::ControlChannel::plaintext(ADDR.parse().unwrap()).unwrap();
    let resolver: Arc<Resolver> = Resolver::new(
        remora_runtime::channel::Instrumented::new(channel, "destination", Default::default()),
        remora_proxy::discovery::ResolverConfig::new(Duration::from_secs(600), 100_000, 7),
    );

    let start = Instant::now();
    let targets: Vec<_> = (0..1000)
        .map(|i| resolver.resolve(&format!("10.96.{}.{}:80", i / 250, i % 250)))
        .collect();
    wait_all(&targets, 10, Duration::from_secs(60)).await;
    let initial = start.elapsed();
    let rss = rss_kib() - base;
    let edit = Instant::now();
    write(&dir, &services(1000, 11));
    wait_all(&targets, 11, Duration::from_secs(60)).await;
    let delivered = edit.elapsed();
    println!(
        "1000 services x 10 endpoints: initial resolution of all 1000 targets {initial:?}; \
         edit (+1 endpoint each) to delivery everywhere {delivered:?}; resolver RSS +{rss} KiB \
         ({:.1} KiB per target)",
        rss as f64 / 1000.0
    );
    let _ = control.kill();
    let _ = control.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn one_big_service() {
    let dir = setup();
    write(&dir, &services(1, 0));
    let mut control = spawn_control(&dir);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib();
    let channel =
        remora_runtime::channel::ControlChannel::plaintext(ADDR.parse().unwrap()).unwrap();
    let resolver = Resolver::new(
        remora_runtime::channel::Instrumented::new(channel, "destination", Default::default()),
        remora_proxy::discovery::ResolverConfig::new(Duration::from_secs(600), 100_000, 7),
    );
    let target = resolver.resolve("10.96.0.0:80");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let edit = Instant::now();
    write(&dir, &services(1, 10_000));
    let took = wait_all(
        std::slice::from_ref(&target),
        10_000,
        Duration::from_secs(60),
    )
    .await;
    let _ = edit;
    println!(
        "1 service, 0 -> 10000 endpoints: edit to delivery {took:?}; resolver RSS +{} KiB",
        rss_kib() - base
    );
    let _ = control.kill();
    let _ = control.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-control") {
        let path = PathBuf::from(&args[i + 1]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let config = remora_control::config::Config::load(&path).unwrap();
            let control = remora_control::server::Control::bind(config, Some(path)).unwrap();
            control.run().await.unwrap();
        });
        return;
    }
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        match args[i + 1].as_str() {
            "many" => rt().block_on(many_services()),
            _ => rt().block_on(one_big_service()),
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test` runs benches with no such flag: skip then.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    // Each scenario in a fresh process, so memory figures do not reuse the other's pages.
    for scenario in ["many", "big"] {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--scenario", scenario])
            .status()
            .unwrap();
        assert!(status.success());
    }
}
