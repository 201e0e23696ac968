//! The admin API of a proxy (and of the control plane) on its own loopback address, without
//! root: the log filter read and replaced at run time (`/log-level`), and the process metrics on
//! `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use remora_tests::admin::{Metrics, request, request_with_body};
use remora_tests::control::Pki;
use remora_tests::local::{LocalProxy, loopback};
use tokio::net::TcpStream;

const READY: Duration = Duration::from_secs(30);

fn start(n: u8) -> LocalProxy {
    LocalProxy::start(n, &[("REMORA_LOG".into(), "info".into())])
}

async fn put(proxy: &LocalProxy, path: &str, body: &[u8]) -> (u16, String) {
    let conn = TcpStream::connect(proxy.addr(4191)).await.unwrap();
    request_with_body(conn, "PUT", path, body).await.unwrap()
}

#[tokio::test]
async fn log_level_is_read_and_replaced_at_run_time() {
    let p = start(90);
    assert!(p.wait_ready(READY).await, "{}", p.process.log());
    assert_eq!(p.get("/log-level").await.unwrap(), (200, "info\n".into()));
    assert!(!p.process.log().contains(" DEBUG "), "{}", p.process.log());

    assert_eq!(
        put(&p, "/log-level", b"debug").await,
        (200, "debug\n".into())
    );
    assert_eq!(p.get("/log-level").await.unwrap(), (200, "debug\n".into()));
    assert!(
        p.process
            .wait_log("log filter changed", Duration::from_secs(10))
            .await
    );
    let log = p.process.log();
    assert!(
        log.lines()
            .any(|l| l.contains("log filter changed") && l.contains("old=info new=debug")),
        "{log}"
    );

    // Invalid filters and oversized bodies are refused; the filter stays.
    let (status, body) = put(&p, "/log-level", b"not[a filter").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a valid log filter"), "{body}");
    let (status, body) = put(&p, "/log-level", &[b'a'; 5 * 1024]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(p.get("/log-level").await.unwrap(), (200, "debug\n".into()));
    let conn = TcpStream::connect(p.addr(4191)).await.unwrap();
    let (status, _) = request(conn, "POST", "/log-level").await.unwrap();
    assert_eq!(status, 405);

    // Debug events now reach the log: each listener logs its closing at debug level.
    let conn = TcpStream::connect(p.addr(4191)).await.unwrap();
    let (status, _) = request(conn, "POST", "/shutdown").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        p.process
            .wait_log("listener closed", Duration::from_secs(10))
            .await,
        "{}",
        p.process.log()
    );
    assert!(p.process.log().contains(" DEBUG "), "{}", p.process.log());
}

#[tokio::test]
async fn log_level_accepts_per_target_directives() {
    let p = start(91);
    assert!(p.wait_ready(READY).await, "{}", p.process.log());
    let filter = "warn,remora_proxy=debug";
    assert_eq!(
        put(&p, "/log-level", format!(" {filter}\n").as_bytes()).await,
        (200, format!("{filter}\n"))
    );
    assert_eq!(
        p.get("/log-level").await.unwrap(),
        (200, format!("{filter}\n"))
    );
}

#[tokio::test]
async fn metrics_report_the_process() {
    let p = start(92);
    assert!(p.wait_ready(READY).await, "{}", p.process.log());
    let open = process_metrics(&p.metrics().await);
    // stdin, stdout, stderr and three listeners at least.
    assert!(open >= 6.0, "open fds {open}");
}

#[tokio::test]
async fn the_control_plane_reports_the_process_and_changes_its_log_level() {
    let pki = Pki::new();
    let ip = loopback(93);
    let admin = SocketAddr::new(ip, 9990);
    let mut cp = pki.control("east", "east.example", SocketAddr::new(ip, 8086), admin);
    cp.start().await;
    // gRPC and admin listeners, stdio.
    assert!(process_metrics(&cp.metrics().await) >= 5.0);
    let conn = TcpStream::connect(admin).await.unwrap();
    assert_eq!(
        request_with_body(conn, "PUT", "/log-level", b"debug")
            .await
            .unwrap(),
        (200, "debug\n".into())
    );
    let conn = TcpStream::connect(admin).await.unwrap();
    assert_eq!(
        request(conn, "GET", "/log-level").await.unwrap(),
        (200, "debug\n".into())
    );
    assert!(
        cp.process()
            .wait_log("log filter changed", Duration::from_secs(10))
            .await
    );
}

/// Checks every `process_*` family of a scrape: its type and a plausible value. Returns the
/// number of open descriptors.
fn process_metrics(m: &Metrics) -> f64 {
    for (family, kind) in [
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            m.text.contains(&format!("# TYPE {family} {kind}\n")),
            "no {family} {kind} in\n{}",
            m.text
        );
    }
    let one = |name: &str| {
        let series: Vec<_> = m.series(name).collect();
        assert_eq!(series.len(), 1, "{name} in\n{}", m.text);
        series[0].1
    };
    assert!(one("process_cpu_seconds_total") >= 0.0);
    let rss = one("process_resident_memory_bytes");
    assert!(rss > 1024.0 * 1024.0, "rss {rss}");
    assert!(one("process_virtual_memory_bytes") >= rss);
    let open = one("process_open_fds");
    assert!(open >= 3.0, "open fds {open}");
    assert!(one("process_max_fds") >= open);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = one("process_start_time_seconds");
    assert!(
        start > now - 600.0 && start <= now + 1.0,
        "start {start}, now {now}"
    );
    open
}
