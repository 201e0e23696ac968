//! The harness and `remora init` themselves: rules are idempotent and removable, and nothing a
//! test made outlives it, even when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use remora_tests::apps::echo;
use remora_tests::{Net, netns};

fn nat_rules(pod: &remora_tests::Pod, tool: &str) -> String {
    pod.exec(&format!("{tool}-save"), &["-t", "nat"]).unwrap()
}

fn count(haystack: &str, line: &str) -> usize {
    haystack.lines().filter(|l| l.trim() == line).count()
}

#[tokio::test]
async fn netns_init_is_idempotent_and_removes_exactly_its_rules() {
    let Some(net) = Net::new() else { return };
    let p = net.pod("p").start().await;
    let bin = remora_tests::bin::remora().to_str().unwrap().to_string();
    for tool in ["iptables", "ip6tables"] {
        p.exec(
            tool,
            &[
                "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN",
            ],
        )
        .unwrap();
    }
    // A dry run changes nothing.
    let dry = p.exec(&bin, &["init", "--dry-run"]).unwrap();
    assert!(dry.contains("iptables -w -t nat -A PREROUTING -j REMORA_INBOUND"));
    assert!(!nat_rules(&p, "iptables").contains("REMORA"));

    p.exec(&bin, &["init", "--skip-outbound-ports", "5432"])
        .unwrap();
    p.exec(&bin, &["init", "--skip-outbound-ports", "5432"])
        .unwrap();
    for tool in ["iptables", "ip6tables"] {
        let rules = nat_rules(&p, tool);
        assert_eq!(
            count(&rules, "-A PREROUTING -j REMORA_INBOUND"),
            1,
            "{tool}:\n{rules}"
        );
        assert_eq!(
            count(&rules, "-A OUTPUT -j REMORA_OUTBOUND"),
            1,
            "{tool}:\n{rules}"
        );
        assert_eq!(
            count(
                &rules,
                "-A REMORA_INBOUND -p tcp -j REDIRECT --to-ports 4143"
            ),
            1,
            "{tool}:\n{rules}"
        );
        assert_eq!(
            count(
                &rules,
                "-A REMORA_OUTBOUND -m owner --uid-owner 2102 -j RETURN"
            ),
            1,
            "{tool}:\n{rules}"
        );
        assert_eq!(
            count(
                &rules,
                "-A REMORA_OUTBOUND -p tcp -m multiport --dports 5432 -j RETURN"
            ),
            1,
            "{tool}:\n{rules}"
        );
    }
    p.exec(&bin, &["init", "--remove"]).unwrap();
    for tool in ["iptables", "ip6tables"] {
        let rules = nat_rules(&p, tool);
        assert!(!rules.contains("REMORA"), "{tool} after --remove:\n{rules}");
        assert_eq!(
            count(&rules, "-A OUTPUT -p tcp -m tcp --dport 9999 -j RETURN"),
            1,
            "{tool}: a rule that is not ours survives:\n{rules}"
        );
    }
}

#[tokio::test]
async fn netns_nothing_outlives_a_failed_test() {
    if !netns::require() {
        return;
    }
    let made = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), 0)));
    let record = made.clone();
    let failed = tokio::spawn(async move {
        let net = Net::new().unwrap();
        let b = net.pod("b").app(echo(7000)).meshed().start().await;
        *record.lock().unwrap() = (net.namespaces(), b.proxy().pid());
        panic!("a test failing with a meshed pod up");
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    let (namespaces, pid) = made.lock().unwrap().clone();
    assert_eq!(
        namespaces.len(),
        2,
        "bridge and pod namespaces were recorded"
    );
    let now = netns::list();
    for ns in &namespaces {
        assert!(!now.contains(ns), "namespace {ns} left behind");
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "proxy process {pid} left behind"
    );
    // `remora init` only ever ran inside pods: the host's own tables are untouched.
    let host = netns::run("iptables-save", &["-t", "nat"]).unwrap_or_default();
    assert!(!host.contains("REMORA"), "host nat table:\n{host}");
}
