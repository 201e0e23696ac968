//! Checks of the benchmark scripts under benches/ that can run here without their load
//! (the benchmarks themselves need minutes and a quiet machine): each script parses, the
//! soak's report turns samples into the verdict BENCHMARKS.md quotes, flat or not, and the
//! mesh load report shows the linkerd2-proxy setup exactly when the run had it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_benchmark_scripts_parse() {
    for script in [
        "benches/soak/run.sh",
        "benches/mesh-load/run.sh",
        "benches/instr.sh",
    ] {
        let out = Command::new("bash")
            .arg("-n")
            .arg(repo().join(script))
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Writes a soak run's samples (RSS in KiB per 10 s for each proxy, from `rss`) and its load
/// summaries into `dir`, then runs the report on them.
fn report(dir: &Path, rss: impl Fn(u32) -> u32, fds: impl Fn(u32) -> u32) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from("t_s,proxy,rss_kib,anon_kib,fds,cpu_s,open_conns\n");
    for i in 0..=60u32 {
        for proxy in ["client", "server"] {
            let r = rss(i);
            csv.push_str(&format!(
                "{},{proxy},{r},{},{},{:.2},40\n",
                i * 10,
                r * 3 / 4,
                fds(i),
                f64::from(i) * 1.5
            ));
        }
    }
    std::fs::write(dir.join("samples.csv"), csv).unwrap();
    let load = serde_json::json!({
        "summary": { "requestsPerSec": 1200.0 },
        "statusCodeDistribution": { "200": 720000 },
        "errorDistribution": { "aborted due to deadline": 12 },
        "latencyPercentiles": { "p99": 0.0021 },
    });
    std::fs::write(dir.join("load-http1.json"), load.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("benches/soak/report.py"))
        .arg(dir)
        .args(["10", "2000", "10"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("soak.svg").is_file());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_soak_report_tells_flat_from_growing() {
    let base = std::env::temp_dir().join(format!("remora-soak-report-{}", std::process::id()));
    // Warm-up to 30 MiB in the first minute, then ±3 %: flat.
    let flat = report(
        &base.join("flat"),
        |i| {
            if i < 6 {
                5_000 * i
            } else {
                30_000 + (i % 3) * 900
            }
        },
        |_| 40,
    );
    assert!(
        flat.contains("| client |") && flat.contains("flat"),
        "{flat}"
    );
    assert!(!flat.contains("RSS moves"), "{flat}");
    assert!(
        flat.contains("| http1 | 1200 | 720000 / 720000 | 0 | 12 | 2.10 |"),
        "{flat}"
    );
    // 30 MiB growing by 1 MiB a minute: not flat.
    let growing = report(&base.join("growing"), |i| 30_000 + i * 170, |_| 40);
    assert!(growing.contains("RSS moves more than 10 %"), "{growing}");
    // Flat memory, leaking descriptors.
    let leaking = report(&base.join("fds"), |_| 30_000, |i| 40 + i * 2);
    assert!(leaking.contains("fds grow"), "{leaking}");
    let _ = std::fs::remove_dir_all(&base);
}

/// Writes a mesh load run's results for `setups` (each figure derived from the setup's index,
/// so every row differs) into `dir` and runs the report on them: report.md and the plot.
fn mesh_report(dir: &Path, setups: &[&str]) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rows = Vec::new();
    for (i, s) in setups.iter().enumerate() {
        let k = i as f64 + 1.0;
        if *s != "direct" {
            for pid in [100 * i + 1, 100 * i + 2] {
                rows.push(
                    serde_json::json!({"setup": s, "scenario": "idle_rss", "pid": pid,
                    "rss_kib": 10240 * (i + 1), "anon_kib": 1024 * (i + 1)}),
                );
                rows.push(
                    serde_json::json!({"setup": s, "scenario": "idle_conns_proc", "pid": pid,
                    "conns": 500, "rss_delta_kib": 500 * (i + 1), "rss_kib": 20480}),
                );
            }
            rows.push(
                serde_json::json!({"setup": s, "scenario": "idle_conns", "conns": 500,
                "ok": 500 - i, "rss_delta_kib": 1000 * (i + 1), "rss_kib": 40960}),
            );
        }
        for rate in [500, 1000] {
            rows.push(
                serde_json::json!({"setup": s, "scenario": "rate", "rate": rate,
                "rps": f64::from(rate), "ok": rate * 3, "total": rate * 3,
                "p50": 0.0002 * k, "p90": 0.0004 * k, "p99": 0.0008 * k, "p999": 0.001 * k,
                "max": 0.002 * k, "cpu_ticks": 50 * i, "peak_rss_kib": 16384, "anon_kib": 4096}),
            );
        }
        rows.push(
            serde_json::json!({"setup": s, "scenario": "max", "rps": 20000.0 / k,
            "p50": 0.002 * k, "p99": 0.01 * k}),
        );
        rows.push(
            serde_json::json!({"setup": s, "scenario": "new_conn", "rps": 7000.0 / k,
            "p50": 0.001 * k, "p99": 0.009 * k, "errors": 0}),
        );
        rows.push(
            serde_json::json!({"setup": s, "scenario": "h2_100", "rps": 16000.0 / k,
            "p50": 0.005 * k, "p99": 0.016 * k}),
        );
        for streams in [1, 8] {
            rows.push(
                serde_json::json!({"setup": s, "scenario": "bulk", "streams": streams,
                "gbytes_per_s": 2.0 / k}),
            );
        }
    }
    let jsonl: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("results.jsonl"), jsonl).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("benches/mesh-load/report.py"))
        .arg(dir.join("results.jsonl"))
        .arg(dir)
        .args(["1", "test machine"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let svg = std::fs::read_to_string(dir.join("added-latency.svg")).unwrap();
    (md, svg)
}

#[test]
fn the_mesh_load_report_has_linkerd2_proxy_when_the_run_had_it() {
    let base = std::env::temp_dir().join(format!("remora-mesh-report-{}", std::process::id()));
    let (md, svg) = mesh_report(&base.join("without"), &["direct", "remora", "haproxy"]);
    assert!(!md.contains("linkerd2-proxy"), "{md}");
    assert!(!svg.contains("linkerd2-proxy"), "{svg}");
    assert!(md.contains("| haproxy | 6667 |"), "{md}");

    let (md, svg) = mesh_report(
        &base.join("with"),
        &["direct", "remora", "haproxy", "linkerd2-proxy"],
    );
    assert!(md.contains("Command: `sudo L2P="), "{md}");
    // Fixed rates: p50 0.8 ms, 0.6 ms above direct's; CPU 150 ticks over 1 500 requests.
    assert!(
        md.contains("| 500 | linkerd2-proxy | 500 | 1500/1500 | 0.800 |")
            && md.contains("| 0.600 | 2.400 | 1.000 | 16.0 | 4.0 |"),
        "{md}"
    );
    // Maximum rate and new connections; HTTP/2 and bulk; memory.
    assert!(
        md.contains("| linkerd2-proxy | 5000 | 8.000 | 40.000 | 1750 | 4.000 | 36.000 |"),
        "{md}"
    );
    assert!(
        md.contains("| linkerd2-proxy | 4000 | 20.000 | 64.000 | 0.50 | 0.50 |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| linkerd2-proxy | 40.0 (4.0), 40.0 (4.0) | 497 | 3.9 MiB | 8192 B | 4096 B, 4096 B |"
        ),
        "{md}"
    );
    // Its own lines in the plot, both percentiles.
    assert!(
        svg.contains("linkerd2-proxy p50") && svg.contains("linkerd2-proxy p99"),
        "{svg}"
    );
    assert_eq!(svg.matches("<polyline").count(), 6, "{svg}");
    let _ = std::fs::remove_dir_all(&base);
}

/// Runs `benches/instr.sh` with `env`, a stand-in `valgrind` (the script `valgrind`, which may
/// name its own directory as `{dir}`) first on the PATH, and `BENCH=/bin/true`: its stdout,
/// after checking that it succeeded.
fn instr_sh(name: &str, valgrind: &str, env: &[(&str, &str)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("remora-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stand_in = dir.join("valgrind");
    std::fs::write(
        &stand_in,
        valgrind.replace("{dir}", &dir.display().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(repo().join("benches/instr.sh"))
        .env("PATH", path)
        .env("BENCH", "/bin/true")
        .envs(env.iter().copied())
        .output()
        .expect("run instr.sh");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "instr.sh failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `benches/instr.sh` against a stand-in for valgrind that reports, for each run, a count that is
/// linear in the requests asked for (`REMORA_BENCH_REQUESTS`), steeper through the pair than
/// direct and steeper again with policies or logging (under Linkerd's default filter): the script
/// must pass each kind's settings to the bench and turn the four counts into the proxies' cost
/// per request.
#[test]
fn instr_sh_passes_each_kind_on_and_subtracts_client_and_app() {
    // pair: 1 000 000 + 300 n (+ 50 n with policies, + 7 n logging); direct: 900 000 + 100 n.
    // Kinds other than h1, or another filter, would not count.
    let stdout = instr_sh(
        "instr-sh",
        r#"#!/usr/bin/env bash
[ "$REMORA_BENCH_KIND" = h1 ] || { echo "unexpected kind $REMORA_BENCH_KIND" >&2; exit 1; }
n=$REMORA_BENCH_REQUESTS
case "$REMORA_BENCH_PATH" in
  pair) total=$((1000000 + 300 * n)); [ -n "${REMORA_BENCH_POLICY:-}" ] && total=$((total + 50 * n))
    case "${REMORA_BENCH_LOG-unset}" in
      unset) ;;
      warn,remora=info,hickory=error) total=$((total + 7 * n)) ;;
      *) echo "unexpected filter $REMORA_BENCH_LOG" >&2; exit 1 ;;
    esac ;;
  direct) total=$((900000 + 100 * n)) ;;
  *) exit 1 ;;
esac
echo "==1== Collected : $total"
"#,
        &[
            ("KINDS", "h1 h1_policy h1_log h1_policy_log"),
            ("N1", "10"),
            ("N2", "110"),
        ],
    );
    assert!(
        stdout.contains("h1: 200 instructions per request in the proxies (pair 300, client and app alone 100; n = 10 and 110)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("h1_policy: 250 instructions per request in the proxies (pair 350,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("h1_log: 207 instructions per request in the proxies (pair 307,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("h1_policy_log: 257 instructions per request in the proxies (pair 357,"),
        "{stdout}"
    );
}

/// `REPEAT=3` runs each kind's four counts three times and adds the median and spread: a
/// stand-in for valgrind whose direct counts drift from run to run (as timers make them) must
/// give three per-run lines and a median line over them.
#[test]
fn instr_sh_repeats_and_reports_the_median() {
    // pair: 1 000 000 + 300 n; direct: 900 000 + (100 + 10 k) n on its k-th n = 110 run
    // (k = 0, 1, 2), so the proxies' share is 200, 190, 180 per request.
    let stdout = instr_sh(
        "instr-repeat",
        r#"#!/usr/bin/env bash
n=$REMORA_BENCH_REQUESTS
case "$REMORA_BENCH_PATH" in
  pair) total=$((1000000 + 300 * n)) ;;
  direct)
    slope=100
    if [ "$n" = 110 ]; then
      k=$(cat "{dir}/k" 2>/dev/null || echo 0); echo $((k + 1)) > "{dir}/k"
      slope=$((100 + 10 * k))
    fi
    total=$((900000 + slope * n - (slope - 100) * 10)) ;;
  *) exit 1 ;;
esac
echo "==1== Collected : $total"
"#,
        &[
            ("KINDS", "h1"),
            ("REPEAT", "3"),
            ("N1", "10"),
            ("N2", "110"),
        ],
    );
    for per_run in [
        "h1: 200 instructions",
        "h1: 190 instructions",
        "h1: 180 instructions",
    ] {
        assert!(stdout.contains(per_run), "{per_run}: {stdout}");
    }
    assert!(
        stdout.contains(
            "h1: median 190 instructions per request in the proxies (min 180, max 200; \
             pair median 300, client and app alone median 110; 3 runs)"
        ),
        "{stdout}"
    );
    // A count that is not one is refused before any run.
    let out = Command::new("bash")
        .arg(repo().join("benches/instr.sh"))
        .env("BENCH", "/bin/true")
        .env("REPEAT", "0")
        .output()
        .expect("run instr.sh");
    assert_eq!(out.status.code(), Some(64));
}
