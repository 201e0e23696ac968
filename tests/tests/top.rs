//! `remora top --once` against synthetic metrics endpoints in the test process: counters that
//! advance by known amounts per second give known rates, shares and latency quantiles; a target
//! that is not listening is listed as stale, and one that answers garbage changes nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use remora_tests::bin::remora;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OUTBOUND: &str = "web.shop.svc.cluster.local:8080";
const INBOUND: &str = "api.shop.svc.cluster.local:9090";
const CALLER_A: &str = "a.shop.serviceaccount.identity.linkerd.cluster.local";
const CALLER_B: &str = "b.shop.serviceaccount.identity.linkerd.cluster.local";
/// The synthetic counters advance 100 times a second.
const TICKS_PER_SEC: u128 = 100;
const LE: [&str; 26] = [
    "1", "2", "3", "4", "5", "10", "20", "30", "40", "50", "100", "200", "300", "400", "500",
    "1000", "2000", "3000", "4000", "5000", "10000", "20000", "30000", "40000", "50000", "+Inf",
];

#[derive(Clone, Copy)]
enum Answer {
    /// Golden metrics whose counters follow the time since this instant.
    Metrics(Instant),
    /// `200 OK` with a body that is not the text format.
    Garbage,
    /// Bytes that are not HTTP at all.
    NotHttp,
}

/// One series family per tick: `n` responses with these labels and a latency in `(lo, le]`.
struct Series {
    labels: String,
    per_tick: u128,
    latency_le: f64,
}

/// Per tick, outbound: 6 mTLS successes and 3 plaintext successes in (5, 10] ms and 1 mTLS
/// failure in (100, 200] ms (1 000 rps, 90 % success, 70 % mTLS, p50 in (5, 10], p99 in
/// (100, 200]); inbound: 2 calls from A and 1 from B (300 rps).
fn series() -> Vec<Series> {
    let out = |tls: &str, code: &str, class: &str| {
        format!(
            "tls=\"{tls}\",direction=\"outbound\",authority=\"{OUTBOUND}\",\
             target_addr=\"10.0.0.5:8080\",server_id=\"web.shop\",dst_service=\"web\",\
             status_code=\"{code}\",classification=\"{class}\",grpc_status=\"\",error=\"\""
        )
    };
    let inbound = |caller: &str| {
        format!(
            "direction=\"inbound\",client_id=\"{caller}\",authority=\"{INBOUND}\",tls=\"true\",\
             status_code=\"200\",classification=\"success\",extra=\"with \\\"quotes\\\"\""
        )
    };
    let s = |labels, per_tick, latency_le| Series {
        labels,
        per_tick,
        latency_le,
    };
    vec![
        s(out("true", "200", "success"), 6, 10.0),
        s(out("no_identity", "200", "success"), 3, 10.0),
        s(out("true", "500", "failure"), 1, 200.0),
        s(inbound(CALLER_A), 2, 1.0),
        s(inbound(CALLER_B), 1, 1.0),
    ]
}

fn metrics_text(start: Instant) -> String {
    let ticks = start.elapsed().as_millis() * TICKS_PER_SEC / 1000;
    let mut text =
        String::from("# HELP response_total Responses.\n# TYPE response_total counter\n");
    for s in series() {
        let n = ticks * s.per_tick;
        writeln!(text, "request_total{{{}}} {n}", s.labels).unwrap();
        writeln!(text, "response_total{{{}}} {n}", s.labels).unwrap();
        for le in LE {
            let bound: f64 = le.parse().unwrap();
            let count = if bound >= s.latency_le { n } else { 0 };
            writeln!(
                text,
                "response_latency_ms_bucket{{{},le=\"{le}\"}} {count}",
                s.labels
            )
            .unwrap();
        }
        writeln!(text, "response_latency_ms_sum{{{}}} {}.5", s.labels, n * 7).unwrap();
        writeln!(text, "response_latency_ms_count{{{}}} {n}", s.labels).unwrap();
    }
    text.push_str("# EOF\n");
    text
}

/// Serves `answer` to every connection on a fresh loopback port.
async fn serve(answer: Answer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = match answer {
                    Answer::Metrics(start) => metrics_text(start),
                    Answer::Garbage => "{\"not\": \"metrics\"}\n\u{0}\u{1}\\\"{}\nx{y=\"\n".into(),
                    Answer::NotHttp => {
                        let _ = conn.write_all(b"\x00\x01SSH-2.0-nope\r\n\r\n").await;
                        return;
                    }
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn top(args: &[String]) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(remora())
            .arg("top")
            .args(args)
            .output(),
    )
    .await
    .expect("remora top --once finishes")
    .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The table's rows as column name → cell, and the lines after the table.
fn table(stdout: &str) -> (Vec<HashMap<String, String>>, Vec<String>) {
    let mut lines = stdout.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        header.first().map(String::as_str),
        Some("DIRECTION"),
        "{stdout}"
    );
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    for line in lines {
        if line.starts_with("stale:") || line.starts_with("note:") {
            notes.push(line.to_string());
            continue;
        }
        let cells = line.split_whitespace().map(String::from);
        assert_eq!(line.split_whitespace().count(), header.len(), "{line}");
        rows.push(header.iter().cloned().zip(cells).collect());
    }
    (rows, notes)
}

fn number(cell: &str) -> f64 {
    cell.trim_end_matches('%').parse().unwrap_or(f64::NAN)
}

fn row<'a>(
    rows: &'a [HashMap<String, String>],
    col: &str,
    value: &str,
) -> &'a HashMap<String, String> {
    rows.iter()
        .find(|r| r[col] == value)
        .unwrap_or_else(|| panic!("no row with {col} = {value} in {rows:?}"))
}

fn assert_rps(r: &HashMap<String, String>, want: f64) {
    let rps = number(&r["RPS"]);
    assert!(
        (rps - want).abs() <= want * 0.15,
        "RPS {rps}, expected {want} ± 15 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_rates_shares_and_latency_and_lists_stale_targets() {
    remora();
    let good = serve(Answer::Metrics(Instant::now())).await;
    let garbage = serve(Answer::Garbage).await;
    let not_http = serve(Answer::NotHttp).await;
    let dead = dead_addr().await;
    let args = [
        "--once".to_string(),
        "--interval".into(),
        "1s".into(),
        good.to_string(),
        format!("http://{garbage}/metrics"),
        not_http.to_string(),
        dead.to_string(),
    ];
    let run = top(&args).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (rows, notes) = table(&run.stdout);
    assert_eq!(rows.len(), 2, "{}", run.stdout);

    // Sorted by rate: outbound (1 000 rps) before inbound (300 rps).
    assert_eq!(rows[0]["DIRECTION"], "outbound");
    let out = row(&rows, "AUTHORITY", OUTBOUND);
    assert_rps(out, 1000.0);
    assert_eq!(out["SUCCESS"], "90.0%");
    assert_eq!(out["MTLS"], "70.0%");
    let p50 = number(&out["P50"]);
    assert!(p50 > 5.0 && p50 <= 10.0, "p50 {p50}");
    let p99 = number(&out["P99"]);
    assert!(p99 > 100.0 && p99 <= 200.0, "p99 {p99}");
    let inbound = row(&rows, "AUTHORITY", INBOUND);
    assert_eq!(inbound["DIRECTION"], "inbound");
    assert_rps(inbound, 300.0);
    assert_eq!(
        (inbound["SUCCESS"].as_str(), inbound["MTLS"].as_str()),
        ("100.0%", "100.0%")
    );
    assert!(number(&inbound["P50"]) <= 1.0);

    let stale = |addr: &SocketAddr| {
        notes.iter().any(|n| {
            n.starts_with(&format!("stale: http://{addr}/metrics (")) && n.ends_with("never seen)")
        })
    };
    assert!(stale(&dead), "{notes:?}");
    assert!(stale(&not_http), "{notes:?}");
    assert!(!stale(&good) && !stale(&garbage), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("note: http://{garbage}/metrics: "))),
        "{notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_caller_splits_inbound_rows_per_client_identity() {
    remora();
    let good = serve(Answer::Metrics(Instant::now())).await;
    let args = [
        "--once",
        "--interval",
        "1s",
        "--by-caller",
        "--direction",
        "inbound",
    ]
    .map(String::from)
    .into_iter()
    .chain([good.to_string()])
    .collect::<Vec<_>>();
    let run = top(&args).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (rows, notes) = table(&run.stdout);
    assert!(notes.is_empty(), "{notes:?}");
    let callers: Vec<&str> = rows.iter().map(|r| r["CALLER"].as_str()).collect();
    assert_eq!(callers, [CALLER_A, CALLER_B], "sorted by rate");
    assert!(
        rows.iter()
            .all(|r| r["DIRECTION"] == "inbound" && r["AUTHORITY"] == INBOUND)
    );
    assert_rps(row(&rows, "CALLER", CALLER_A), 200.0);
    assert_rps(row(&rows, "CALLER", CALLER_B), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_fails_when_no_target_ever_answers() {
    remora();
    let dead = dead_addr().await;
    let run = top(&[
        "--once".into(),
        "--interval".into(),
        "250ms".into(),
        dead.to_string(),
    ])
    .await;
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("no target answered"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("stale: http://{dead}/metrics")),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_arguments_exit_64() {
    for args in [
        vec!["top"],
        vec!["top", "--interval", "0s", "127.0.0.1:1"],
        vec!["top", "--direction", "sideways", "127.0.0.1:1"],
        vec!["top", "https://127.0.0.1:1/metrics"],
    ] {
        let out = std::process::Command::new(remora())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
    }
}
