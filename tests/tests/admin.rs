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

/// Sends `raw` (a whole request) to the proxy's admin port and returns the status and body.
async fn raw_request(proxy: &LocalProxy, raw: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = TcpStream::connect(proxy.addr(4191)).await.unwrap();
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[tokio::test]
async fn env_json_answers_the_processs_environment_as_linkerds_tools_read_it() {
    let p = LocalProxy::start(94, &[("REMORA_METRICS_MAX_SERIES".into(), "500".into())]);
    assert!(p.wait_ready(READY).await, "{}", p.process.log());
    let (status, body) = p.get("/env.json").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(all["REMORA_METRICS_MAX_SERIES"], "500");
    // `?A&B` picks variables; an unset one is null.
    let (status, body) = p
        .get("/env.json?REMORA_METRICS_MAX_SERIES&REMORA_NOT_SET")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let picked: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        picked,
        serde_json::json!({"REMORA_METRICS_MAX_SERIES": "500", "REMORA_NOT_SET": null})
    );
    // NAME=VALUE is not a selection.
    let (status, _) = p.get("/env.json?A=1").await.unwrap();
    assert_eq!(status, 400);
    // An Accept that admits no JSON is refused; one that does is served.
    let ask = |accept: &str| {
        format!(
            "GET /env.json HTTP/1.1\r\nhost: admin\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
        )
    };
    assert_eq!(raw_request(&p, &ask("text/html")).await.0, 406);
    assert_eq!(
        raw_request(&p, &ask("text/html, application/*;q=0.8"))
            .await
            .0,
        200
    );
    let conn = TcpStream::connect(p.addr(4191)).await.unwrap();
    assert_eq!(request(conn, "POST", "/env.json").await.unwrap().0, 405);
}

#[tokio::test]
async fn proxy_log_level_is_linkerds_name_for_the_log_level() {
    let p = start(95);
    assert!(p.wait_ready(READY).await, "{}", p.process.log());
    assert_eq!(
        p.get("/proxy-log-level").await.unwrap(),
        (200, "info\n".into())
    );
    // Linkerd answers a successful PUT with 204 and no body.
    assert_eq!(
        put(&p, "/proxy-log-level", b"warn").await,
        (204, String::new())
    );
    assert_eq!(p.get("/log-level").await.unwrap(), (200, "warn\n".into()));
    assert_eq!(put(&p, "/proxy-log-level", b"not[a filter").await.0, 400);
}

#[tokio::test]
async fn shutdown_answers_404_unless_the_endpoint_is_enabled() {
    let p = LocalProxy::start(96, &[("REMORA_SHUTDOWN_ENDPOINT".into(), "false".into())]);
    assert!(p.wait_ready(READY).await, "{}", p.process.log());
    let conn = TcpStream::connect(p.addr(4191)).await.unwrap();
    let (status, body) = request(conn, "POST", "/shutdown").await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, "shutdown endpoint is not enabled\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.process.is_running());
    assert_eq!(p.get("/ready").await.unwrap().0, 200);
}
