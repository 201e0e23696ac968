//! Checks of the benchmark scripts under benches/ that can run here without their load
//! (the benchmarks themselves need minutes and a quiet machine): each script parses, and the
//! soak's report turns samples into the verdict BENCHMARKS.md quotes, flat or not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_benchmark_scripts_parse() {
    for script in ["benches/soak/run.sh", "benches/mesh-load/run.sh"] {
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
