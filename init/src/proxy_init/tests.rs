//! Whole runs against a fake [`Exec`]: what gets run, in which order, and what gets logged.

use super::exec::{Exec, ExecError};
use super::*;

/// Records every command; save commands print `saved`, a command containing `fail_on` fails.
#[derive(Default)]
struct Fake {
    ran: Vec<String>,
    saved: Vec<u8>,
    fail_on: Option<&'static str>,
}

impl Exec for Fake {
    fn run(&mut self, argv: &[String]) -> Result<Vec<u8>, ExecError> {
        let line = argv.join(" ");
        self.ran.push(line.clone());
        if self.fail_on.is_some_and(|f| line.contains(f)) {
            return Err(ExecError {
                output: b"iptables: Chain already exists.\n".to_vec(),
                message: "exit status 1".to_string(),
            });
        }
        if argv.iter().any(|a| a.ends_with("-save")) {
            Ok(self.saved.clone())
        } else {
            Ok(Vec::new())
        }
    }
}

fn fixed_time() -> String {
    "2026-01-02T03:04:05Z".to_string()
}

fn logger() -> Logger<Vec<u8>> {
    let mut l = Logger::new(Vec::new());
    l.now = fixed_time;
    l
}

fn opts(args: &[&str]) -> Options {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    flags::parse(&args).unwrap()
}

/// Runs with the fake; returns (result, commands run, log).
fn run_with(args: &[&str], fake: &mut Fake) -> (Result<(), String>, String) {
    let mut log = logger();
    let result = run(&opts(args), fake, &mut log, &[]);
    (result, String::from_utf8(log.out).unwrap())
}

/// The arguments the chart renders by default (`_proxy-init.tpl` with the default values).
const CHART_DEFAULT: &[&str] = &[
    "--firewall-bin-path",
    "iptables-nft",
    "--firewall-save-bin-path",
    "iptables-nft-save",
    "--ipv6=false",
    "--incoming-proxy-port",
    "4143",
    "--outgoing-proxy-port",
    "4140",
    "--proxy-uid",
    "2102",
    "--inbound-ports-to-ignore",
    "4190,4191,4567,4568",
    "--outbound-ports-to-ignore",
    "4567,4568",
];

const CHART_DEFAULT_COMMANDS: &[&str] = &[
    "iptables-nft-save -t nat",
    "iptables-nft -t nat -N PROXY_INIT_REDIRECT",
    "iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4190,4191,4567,4568 -j RETURN -m comment --comment proxy-init/ignore-port-4190,4191,4567,4568",
    "iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-all-incoming-to-proxy-port",
    "iptables-nft -t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment proxy-init/install-proxy-init-prerouting",
    "iptables-nft -t nat -N PROXY_INIT_OUTPUT",
    "iptables-nft -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment proxy-init/ignore-proxy-user-id",
    "iptables-nft -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
    "iptables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp --match multiport --dports 4567,4568 -j RETURN -m comment --comment proxy-init/ignore-port-4567,4568",
    "iptables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 -m comment --comment proxy-init/redirect-all-outgoing-to-proxy-port",
    "iptables-nft -t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment proxy-init/install-proxy-init-output",
    "iptables-nft-save -t nat",
];

#[test]
fn the_charts_default_render() {
    let mut fake = Fake::default();
    let (result, log) = run_with(CHART_DEFAULT, &mut fake);
    assert_eq!(result, Ok(()));
    assert_eq!(fake.ran, CHART_DEFAULT_COMMANDS);
    // Each command is logged at info, in order, before it runs.
    let logged: Vec<String> = log
        .lines()
        .map(|l| {
            let msg = l
                .strip_prefix("time=\"2026-01-02T03:04:05Z\" level=info msg=")
                .unwrap();
            msg.trim_matches('"').to_string()
        })
        .collect();
    assert_eq!(logged, CHART_DEFAULT_COMMANDS);
}

#[test]
fn the_ipv6_pass_follows_with_the_same_options() {
    let mut args = CHART_DEFAULT.to_vec();
    args.retain(|a| *a != "--ipv6=false");
    args.extend(["--subnets-to-ignore", "fd00::/8"]);
    let mut fake = Fake::default();
    let (result, _) = run_with(&args, &mut fake);
    assert_eq!(result, Ok(()));
    assert_eq!(fake.ran.len(), 2 * (CHART_DEFAULT_COMMANDS.len() + 1));
    let (v4, v6) = fake.ran.split_at(fake.ran.len() / 2);
    assert!(v4.iter().all(|l| l.starts_with("iptables-nft")));
    assert!(v6.iter().all(|l| l.starts_with("ip6tables-nft")));
    for (a, b) in v4.iter().zip(v6) {
        assert_eq!(a.replacen("iptables", "ip6tables", 1), *b);
    }
    assert_eq!(v6[0], "ip6tables-nft-save -t nat");
    assert!(v6.contains(
        &"ip6tables-nft -t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s fd00::/8 -m comment --comment proxy-init/ignore-subnet-fd00::/8".to_string()
    ));
    // `--ipv6 false` (with a space) leaves IPv6 on.
    let mut args = CHART_DEFAULT.to_vec();
    args.retain(|a| *a != "--ipv6=false");
    args.extend(["--ipv6", "false"]);
    let mut fake = Fake::default();
    run_with(&args, &mut fake).0.unwrap();
    assert!(fake.ran.iter().any(|l| l.starts_with("ip6tables-nft")));
}

#[test]
fn a_second_run_flushes_and_keeps_the_jumps() {
    let mut fake = Fake {
        saved: b"*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :PROXY_INIT_OUTPUT - [0:0]\n:PROXY_INIT_REDIRECT - [0:0]\n\
                 -A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT\n\
                 -A OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT\n\
                 COMMIT\n"
            .to_vec(),
        ..Fake::default()
    };
    let (result, log) = run_with(CHART_DEFAULT, &mut fake);
    assert_eq!(result, Ok(()));
    let expected: Vec<String> = CHART_DEFAULT_COMMANDS
        .iter()
        .filter(|l| !l.contains("install-proxy-init"))
        .map(|l| l.replace("-N PROXY_INIT", "-F PROXY_INIT"))
        .collect();
    assert_eq!(fake.ran, expected);
    // The save output is logged too (quoted, newlines escaped).
    assert!(log.contains("level=info msg=\"*nat\\n:PREROUTING ACCEPT [0:0]\\n"));
}

#[test]
fn netns_wraps_every_command_and_wait_ends_the_modifying_ones() {
    let mut args = CHART_DEFAULT.to_vec();
    args.extend(["--netns", "/proc/42/ns/net", "-w"]);
    let mut fake = Fake::default();
    run_with(&args, &mut fake).0.unwrap();
    assert_eq!(fake.ran.len(), CHART_DEFAULT_COMMANDS.len());
    for (ran, plain) in fake.ran.iter().zip(CHART_DEFAULT_COMMANDS) {
        let wait = if plain.contains("-save") { "" } else { " -w" };
        assert_eq!(
            *ran,
            format!("nsenter --net=/proc/42/ns/net -- {plain}{wait}")
        );
    }
}

#[test]
fn simulate_runs_nothing_but_the_sysctl() {
    let mut args = CHART_DEFAULT.to_vec();
    args.extend(["--simulate", "--timeout-close-wait-secs", "3600"]);
    let mut fake = Fake::default();
    let (result, log) = run_with(&args, &mut fake);
    assert_eq!(result, Ok(()));
    assert_eq!(
        fake.ran,
        ["sysctl -w net.netfilter.nf_conntrack_tcp_timeout_close_wait=3600"]
    );
    let lines: Vec<&str> = log.lines().collect();
    // The sysctl printed nothing: an entry without msg, then the commands.
    assert_eq!(lines[0], "time=\"2026-01-02T03:04:05Z\" level=info");
    assert_eq!(lines.len(), 1 + CHART_DEFAULT_COMMANDS.len());
    assert!(lines[1].ends_with("msg=\"iptables-nft-save -t nat\""));
    // Simulated saves print nothing, so the chains are created.
    assert!(lines[2].ends_with("msg=\"iptables-nft -t nat -N PROXY_INIT_REDIRECT\""));
}

#[test]
fn sysctl_comes_first_and_its_failure_stops_the_run() {
    let mut args = CHART_DEFAULT.to_vec();
    args.extend(["--timeout-close-wait-secs", "60", "--log-level", "nope"]);
    let mut fake = Fake {
        fail_on: Some("sysctl"),
        ..Fake::default()
    };
    let (result, log) = run_with(&args, &mut fake);
    assert_eq!(result, Err("exit status 1".to_string()));
    assert_eq!(fake.ran.len(), 1);
    assert!(log.contains("level=error msg=\"iptables: Chain already exists.\\n\""));
    // With a working sysctl, the bad level is the error, and nothing else runs.
    let mut fake = Fake::default();
    let (result, _) = run_with(&args, &mut fake);
    assert_eq!(
        result,
        Err("not a valid logrus Level: \"nope\"".to_string())
    );
    assert_eq!(fake.ran.len(), 1);
}

#[test]
fn bad_options_fail_before_any_command() {
    for (extra, error) in [
        (
            &["--iptables-mode", "ebtables"][..],
            "--iptables-mode valid values are only \"legacy\", \"nft\" and \"plain\"",
        ),
        (
            &["--log-level", "loud"],
            "not a valid logrus Level: \"loud\"",
        ),
        (
            &["--subnets-to-ignore", "10.0.0.0/8,not-a-cidr"],
            "not-a-cidr is not a valid CIDR address",
        ),
    ] {
        let mut args = CHART_DEFAULT.to_vec();
        args.extend_from_slice(extra);
        let mut fake = Fake::default();
        let (result, _) = run_with(&args, &mut fake);
        assert_eq!(result, Err(error.to_string()), "{extra:?}");
        assert!(fake.ran.is_empty(), "{extra:?}");
    }
    let mut fake = Fake::default();
    let (result, _) = run_with(
        &["--firewall-bin-path", "/sbin/iptables", "-p", "1"],
        &mut fake,
    );
    assert_eq!(
        result,
        Err("--firewall-bin-path valid values are only \"iptables-legacy\", \"iptables-nft\" and \"iptables\"".to_string())
    );
    let (result, _) = run_with(&["-o", "4140"], &mut fake);
    assert_eq!(
        result,
        Err("--incoming-proxy-port must be a valid TCP port number".to_string())
    );
    let (result, _) = run_with(&["-p", "4143"], &mut fake);
    assert_eq!(
        result,
        Err("--outgoing-proxy-port must be a valid TCP port number".to_string())
    );
    assert!(fake.ran.is_empty());
}

#[test]
fn a_failing_command_stops_the_run() {
    let mut fake = Fake {
        fail_on: Some("-N PROXY_INIT_OUTPUT"),
        ..Fake::default()
    };
    let (result, log) = run_with(CHART_DEFAULT, &mut fake);
    assert_eq!(result, Err("exit status 1".to_string()));
    assert_eq!(fake.ran.len(), 6);
    assert!(fake.ran[5].ends_with("-N PROXY_INIT_OUTPUT"));
    // Its output is logged before the error is returned.
    assert!(log.ends_with("level=info msg=\"iptables: Chain already exists.\\n\"\n"));

    // A failing first save aborts the pass.
    let mut fake = Fake {
        fail_on: Some("-save"),
        ..Fake::default()
    };
    let (result, log) = run_with(CHART_DEFAULT, &mut fake);
    assert_eq!(result, Err("exit status 1".to_string()));
    assert_eq!(fake.ran, ["iptables-nft-save -t nat"]);
    assert!(log.ends_with("level=error msg=\"aborting firewall configuration\"\n"));
}

#[test]
fn invalid_port_items_are_logged_and_skipped() {
    let mut fake = Fake::default();
    let (result, log) = run_with(
        &[
            "-p",
            "4143",
            "-o",
            "4140",
            "--inbound-ports-to-ignore",
            "4190, 4191,abc",
        ],
        &mut fake,
    );
    assert_eq!(result, Ok(()));
    assert!(fake.ran.contains(
        &"ip6tables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4190 -j RETURN -m comment --comment proxy-init/ignore-port-4190".to_string()
    ));
    assert!(log.contains(
        "level=error msg=\"invalid port configuration of \\\" 4191\\\": \\\" 4191\\\" is not a valid lower-bound\""
    ));
    assert!(log.contains("invalid port configuration of \\\"abc\\\""));
}

#[test]
fn debug_and_json_logging() {
    let mut args = CHART_DEFAULT.to_vec();
    args.extend(["--log-format", "json", "--log-level", "debug", "-w"]);
    let mut fake = Fake {
        saved: b"*nat\n".to_vec(),
        ..Fake::default()
    };
    let mut log = logger();
    let notes = vec!["raised CAP_NET_ADMIN as an ambient capability".to_string()];
    run(&opts(&args), &mut fake, &mut log, &notes).unwrap();
    let out = String::from_utf8(log.out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "{\"level\":\"debug\",\"msg\":\"raised CAP_NET_ADMIN as an ambient capability\",\"time\":\"2026-01-02T03:04:05Z\"}"
    );
    assert!(lines[1].starts_with("{\"level\":\"debug\",\"msg\":\"tracing script execution as ["));
    assert_eq!(
        lines[2],
        "{\"level\":\"debug\",\"msg\":\"using 'iptables-nft' to set-up firewall rules\",\"time\":\"2026-01-02T03:04:05Z\"}"
    );
    assert_eq!(
        lines[4],
        "{\"level\":\"info\",\"msg\":\"iptables-nft-save -t nat\",\"time\":\"2026-01-02T03:04:05Z\"}"
    );
    assert_eq!(
        lines[5],
        "{\"level\":\"info\",\"msg\":\"*nat\\n\",\"time\":\"2026-01-02T03:04:05Z\"}"
    );
    assert!(lines[6].contains("'useWaitFlag' set"));
    assert!(lines.iter().all(|l| l.starts_with("{\"level\":")));
    // At the default level the debug notes are not shown.
    let mut log = logger();
    run(&opts(CHART_DEFAULT), &mut Fake::default(), &mut log, &notes).unwrap();
    assert!(!String::from_utf8(log.out).unwrap().contains("ambient"));
}
