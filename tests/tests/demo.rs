//! `remora demo` as a user runs it: the built binary, no root needed. Exit status 0; the
//! summary shows successful traffic on every path (local, through the gateway, direct) in both
//! directions where the demo configures them, all of it over mTLS, retries and timeouts at work;
//! and afterwards none of its processes and no temporary directory remain.
//!
//! With `REMORA_LINKERD2_PROXY` naming a linkerd2-proxy binary (and root, as `--netns`), the
//! same with `--linkerd2-proxy`: the summary lists the pods that ran linkerd2-proxy, and every
//! path, those pods' included, is 100 % successful and mTLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use remora_tests::bin::remora;

#[tokio::test]
async fn the_demo_runs_both_clusters_and_leaves_nothing_behind() {
    demo(&["demo", "--duration", "20s"]).await;
}

#[tokio::test]
async fn the_demo_prints_the_trace_of_one_request() {
    let (stdout, _) = demo(&["demo", "--trace", "--duration", "20s"]).await;
    let section = stdout
        .split("one traced request: GET /fanout on east's web, answered 200")
        .nth(1)
        .unwrap_or_else(|| panic!("no trace:\n{stdout}"));
    let count: usize = section
        .split(" spans (")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no span count:\n{section}"));
    // Five calls, each an outbound span; their servers' inbound spans (slow's too: its
    // cancelled request still ends its span), and the gateway's hop to west's api.
    assert!(count >= 11, "{section}");
    let lines: Vec<&str> = section.lines().skip(1).collect();
    let has = |pod: &str, direction: &str, depth: usize| {
        lines.iter().any(|l| {
            l.starts_with(&format!(
                "{:depth$}{pod} {direction}",
                "",
                depth = depth * 2
            ))
        })
    };
    assert!(has("east-web", "outbound", 1), "{section}");
    assert!(has("east-api", "inbound", 2), "{section}");
    assert!(has("west-remora-gateway", "outbound", 2), "{section}");
    assert!(has("west-api", "inbound", 3), "{section}");
    assert!(has("west-catalog", "inbound", 2), "{section}");
    assert!(!section.contains("not under the root"), "{section}");
}

#[tokio::test]
async fn the_netns_demo_runs_both_clusters_and_leaves_nothing_behind() {
    if !remora_tests::netns::require() {
        return;
    }
    let (_, stderr) = demo(&["demo", "--netns", "--duration", "20s"]).await;
    no_namespaces_left(&stderr);
}

#[tokio::test]
async fn the_demo_runs_pods_on_linkerd2_proxy_under_remora_control() {
    let Some(program) = std::env::var_os("REMORA_LINKERD2_PROXY") else {
        eprintln!(
            "demo: REMORA_LINKERD2_PROXY is not set; skipping (build linkerd2-proxy by hand and \
             point it there)"
        );
        return;
    };
    // linkerd2-proxy runs only with transparent interception: the demo puts it in network
    // namespaces, which need root.
    if !remora_tests::netns::require() {
        return;
    }
    let program = program.to_str().expect("a UTF-8 path").to_string();
    let (stdout, stderr) = demo(&["demo", "--linkerd2-proxy", &program, "--duration", "20s"]).await;
    // The pods and their proxies: the three servers on linkerd2-proxy, the rest on Remora.
    let proxy_of = |pod: &str| -> String {
        let section = stdout
            .split("pods and their proxies")
            .nth(1)
            .unwrap_or_else(|| panic!("no pods section:\n{stdout}"));
        section
            .lines()
            .find(|l| l.split_whitespace().next() == Some(pod))
            .unwrap_or_else(|| panic!("no {pod} in:\n{section}"))
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    for pod in ["east-api", "west-api", "west-catalog"] {
        assert_eq!(proxy_of(pod), "linkerd2-proxy", "{stdout}");
    }
    for pod in ["east-web", "west-web", "east-flaky", "east-slow"] {
        assert_eq!(proxy_of(pod), "remora", "{stdout}");
    }
    no_namespaces_left(&stderr);
    println!("{stdout}");
}

/// The network namespaces a `--netns` demo named on stderr are all gone.
fn no_namespaces_left(stderr: &str) {
    let prefix = stderr
        .lines()
        .find_map(|l| l.strip_prefix("remora demo: network namespaces "))
        .and_then(|p| p.strip_suffix("-*"))
        .unwrap_or_else(|| panic!("no namespaces named in:\n{stderr}"))
        .to_string();
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.lines().any(|l| l.starts_with(&format!("{prefix}-"))),
        "namespaces remain:\n{list}"
    );
}

/// Runs `remora ARGS` (a demo) and checks its summary and cleanup; returns its stdout and
/// stderr.
async fn demo(args: &[&str]) -> (String, String) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(240),
        tokio::process::Command::new(remora())
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the demo stopped by itself")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // Rows: FROM PATH... TO REQUESTS SUCCESS P50 P99 MTLS (PATH may be two words).
    let row = |from: &str, to: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.starts_with(from) && l.contains(&format!(" {to}.shop.svc.cluster.local")))
            .unwrap_or_else(|| panic!("no {from} → {to} row:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    for (from, to, path) in [
        ("east", "api", "local"),
        ("east", "api-west", "via gateway"),
        ("east", "catalog-west", "direct (flat)"),
        ("west", "api-east", "direct (flat)"),
    ] {
        let r = row(from, to);
        let line = r.join(" ");
        assert!(line.contains(path), "{line}");
        let n = r.len();
        let (requests, success, mtls) = (&r[n - 5], &r[n - 4], &r[n - 1]);
        assert!(requests.parse::<u64>().unwrap() > 50, "{line}");
        assert_eq!(success, "100.0%", "{line}");
        assert_eq!(mtls, "100.0%", "{line}");
    }
    // Every meshed row is over mTLS, flaky's failures are hidden, slow's are bounded.
    // (The summary's rows: a trace printed after them names services too.)
    let rows = stdout.split("one traced request").next().unwrap_or(&stdout);
    for line in rows.lines().filter(|l| l.contains(".svc.cluster.local")) {
        assert!(line.trim_end().ends_with("100.0%"), "not all mTLS: {line}");
    }
    let flaky = row("east", "flaky");
    assert_eq!(flaky[flaky.len() - 4], "100.0%", "{}", flaky.join(" "));
    let number = |label: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label}:\n{stdout}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(number("retries made:") > 0.0, "{stdout}");
    assert!(number("timeouts fired:") > 0.0, "{stdout}");

    // Nothing left: every process it started is gone, and its directory too.
    let pids: Vec<u32> = stderr
        .lines()
        .find_map(|l| l.split("(pids ").nth(1))
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no pids in:\n{stderr}"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 18, "{stderr}");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived the demo"
        );
    }
    let dir = stderr
        .lines()
        .find_map(|l| l.strip_prefix("remora demo: state in "))
        .unwrap_or_else(|| panic!("no state directory in:\n{stderr}"));
    assert!(!std::path::Path::new(dir.trim()).exists(), "{dir} remains");
    (stdout.into_owned(), stderr.into_owned())
}
