//! The `linkerd2-proxy-init` binary run as a program (`init/src/bin/linkerd2-proxy-init.rs`).
//!
//! Without root: `--simulate` runs, runs against fake `iptables-nft` scripts put first in
//! `PATH`, and the error exits. As root with `unshare`: the chart's default arguments in a fresh
//! network namespace with the real `iptables-nft`, twice (the second run must converge), and,
//! when `setcap` and `setpriv` exist, the Kubernetes setting: uid 65534, `no_new_privs`, only
//! NET_ADMIN and NET_RAW in the bounding set, and file capabilities on a copy of the binary.
//! The root tests skip when they cannot run, unless `REMORA_REQUIRE_NETNS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_linkerd2-proxy-init");

/// The arguments the chart renders by default.
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

/// What those arguments run, with `<dir>/` before each program found there.
fn chart_default_commands(dir: &str) -> Vec<String> {
    [
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
    ]
    .iter()
    .map(|c| format!("{dir}{c}"))
    .collect()
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("remora-proxy-init-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str], path: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The `msg` of each plain log line, after checking the line's shape.
fn messages(stdout: &[u8]) -> Vec<(String, String)> {
    text(stdout)
        .lines()
        .map(|line| {
            let rest = line
                .strip_prefix("time=\"")
                .unwrap_or_else(|| panic!("{line}"));
            let (time, rest) = rest.split_once("\" level=").unwrap();
            assert_eq!(time.len(), 20, "{time}");
            assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
            let (level, msg) = rest.split_once(" msg=").unwrap_or((rest, ""));
            let msg = msg
                .strip_prefix('"')
                .and_then(|m| m.strip_suffix('"'))
                .unwrap_or(msg)
                .replace("\\n", "\n")
                .replace("\\\"", "\"");
            (level.to_string(), msg)
        })
        .collect()
}

#[test]
fn simulate_logs_the_charts_default_commands() {
    let empty = scratch("simulate");
    let mut args = CHART_DEFAULT.to_vec();
    args.push("--simulate");
    let out = run(&args, &empty);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let logged = messages(&out.stdout);
    assert!(logged.iter().all(|(level, _)| level == "info"));
    let logged: Vec<String> = logged.into_iter().map(|(_, msg)| msg).collect();
    assert_eq!(logged, chart_default_commands(""));

    // The same as JSON objects with level, msg and time.
    args.extend(["--log-format", "json"]);
    let out = run(&args, &empty);
    assert!(out.status.success());
    let logged: Vec<String> = text(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let obj = v.as_object().unwrap();
            assert_eq!(obj.len(), 3, "{line}");
            assert_eq!(obj["level"], "info");
            assert!(obj["time"].as_str().unwrap().ends_with('Z'));
            obj["msg"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(logged, chart_default_commands(""));
    let _ = std::fs::remove_dir_all(&empty);
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn runs_the_commands_found_in_path() {
    let dir = scratch("fake-iptables");
    let record = dir.join("record");
    let rec = record.display();
    script(
        &dir.join("iptables-nft"),
        &format!("echo \"iptables-nft $*\" >> {rec}\n"),
    );
    script(
        &dir.join("iptables-nft-save"),
        &format!("echo \"iptables-nft-save $*\" >> {rec}\necho '*nat'\necho 'COMMIT' >&2\n"),
    );
    let out = run(CHART_DEFAULT, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&std::fs::read(&record).unwrap())
            .lines()
            .collect::<Vec<_>>(),
        chart_default_commands("")
    );
    // Logged with the path found; the save's output (stdout and stderr) after it.
    let logged: Vec<String> = messages(&out.stdout).into_iter().map(|(_, m)| m).collect();
    let prefix = format!("{}/", dir.display());
    let mut expected = chart_default_commands(&prefix);
    expected.insert(1, "*nat\nCOMMIT\n".to_string());
    expected.push("*nat\nCOMMIT\n".to_string());
    assert_eq!(logged, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_command_exits_1() {
    let dir = scratch("failing-iptables");
    script(&dir.join("iptables-nft-save"), "echo '*nat'\n");
    script(
        &dir.join("iptables-nft"),
        "case \"$*\" in *'-N PROXY_INIT_OUTPUT'*) echo 'iptables: Chain already exists.'; exit 1;; esac\n",
    );
    let out = run(CHART_DEFAULT, &dir);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("Error: exit status 1\nUsage:\n  proxy-init [flags]\n"),
        "{stderr}"
    );
    let logged = messages(&out.stdout);
    assert_eq!(
        logged.last().unwrap(),
        &(
            "info".to_string(),
            "iptables: Chain already exists.\n".to_string()
        )
    );
    assert!(
        logged[logged.len() - 2]
            .1
            .ends_with("iptables-nft -t nat -N PROXY_INIT_OUTPUT")
    );

    // No iptables at all: the first save fails.
    let empty = scratch("no-iptables");
    let out = run(CHART_DEFAULT, &empty);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(
            "Error: exec: \"iptables-nft-save\": executable file not found in $PATH\n"
        )
    );
    let logged = messages(&out.stdout);
    assert_eq!(
        logged,
        [
            ("info".to_string(), "iptables-nft-save -t nat".to_string()),
            (
                "error".to_string(),
                "aborting firewall configuration".to_string()
            ),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn flag_errors_and_help() {
    let empty = scratch("flags");
    let out = run(&["--bogus"], &empty);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("Error: unknown flag: --bogus\nUsage:\n"));
    assert!(out.stdout.is_empty());

    let out = run(&["-p", "4143", "-o", "4140", "--log-level", "loud"], &empty);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("Error: not a valid logrus Level: \"loud\"\n"));
    assert!(out.stdout.is_empty());

    let out = run(&["--ipv6=false", "-o", "4140"], &empty);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .starts_with("Error: --incoming-proxy-port must be a valid TCP port number\n")
    );

    for help in ["--help", "-h"] {
        let out = run(&[help], &empty);
        assert!(out.status.success());
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("Usage:\n  proxy-init [flags]\n"),
            "{stdout}"
        );
        assert!(stdout.contains("--incoming-proxy-port int"));
        assert!(out.stderr.is_empty());
    }
    let _ = std::fs::remove_dir_all(&empty);
}

/// The first of `names` found in the usual system directories.
fn system_tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether a root test can run here; if not, fails under `REMORA_REQUIRE_NETNS=1` and
/// otherwise says why it skips.
fn netns_available(test: &str) -> bool {
    let missing: Vec<&str> = ["unshare", "iptables-nft", "iptables-nft-save"]
        .into_iter()
        .filter(|t| system_tool(t).is_none())
        .collect();
    let why = if !is_root() {
        Some("not root".to_string())
    } else if !missing.is_empty() {
        Some(format!("missing {}", missing.join(", ")))
    } else if !Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        Some("unshare -n does not work".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var("REMORA_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("{test}: REMORA_REQUIRE_NETNS=1 but {why}")
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Runs `script` under `sh -c` in a new network namespace, with `$@` = `args`.
fn in_new_netns(script: &str, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["-n", "--", "sh", "-c", script, "sh"])
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap()
}

/// The `-A` lines of an `iptables-save` output.
fn rules(saved: &str) -> Vec<&str> {
    saved.lines().filter(|l| l.starts_with("-A ")).collect()
}

const INSTALLED: &[&str] = &[
    "-A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT",
    "-A OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT",
    "-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment \"proxy-init/ignore-proxy-user-id\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -o lo -m comment --comment \"proxy-init/ignore-loopback\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -p tcp -m multiport --dports 4567,4568 -m comment --comment \"proxy-init/ignore-port-4567,4568\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -p tcp -m comment --comment \"proxy-init/redirect-all-outgoing-to-proxy-port\" -j REDIRECT --to-ports 4140",
    "-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191,4567,4568 -m comment --comment \"proxy-init/ignore-port-4190,4191,4567,4568\" -j RETURN",
    "-A PROXY_INIT_REDIRECT -p tcp -m comment --comment \"proxy-init/redirect-all-incoming-to-proxy-port\" -j REDIRECT --to-ports 4143",
];

#[test]
fn real_iptables_in_a_netns_and_a_second_run_converges() {
    if !netns_available("real_iptables_in_a_netns_and_a_second_run_converges") {
        return;
    }
    let mut args = vec![BIN];
    args.extend_from_slice(CHART_DEFAULT);
    let out = in_new_netns(
        "\"$@\" >/dev/null || exit 10; \"$@\" >/dev/null || exit 11; iptables-nft-save -t nat",
        &args,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(rules(&text(&out.stdout)), INSTALLED);
}

#[test]
fn as_uid_65534_with_file_capabilities_and_no_new_privs() {
    let test = "as_uid_65534_with_file_capabilities_and_no_new_privs";
    if !netns_available(test) {
        return;
    }
    let (Some(setcap), Some(_)) = (system_tool("setcap"), system_tool("setpriv")) else {
        eprintln!("skipping {test}: needs setcap and setpriv");
        return;
    };
    let dir = scratch("caps");
    let with_caps = dir.join("linkerd2-proxy-init");
    let without_caps = dir.join("no-caps");
    std::fs::copy(BIN, &with_caps).unwrap();
    std::fs::copy(BIN, &without_caps).unwrap();
    let set = Command::new(setcap)
        .arg("cap_net_admin,cap_net_raw+ep")
        .arg(&with_caps)
        .output()
        .unwrap();
    if !set.status.success() {
        eprintln!("skipping {test}: setcap failed: {}", text(&set.stderr));
        return;
    }
    // What Kubernetes sets up for the chart's linkerd-init container.
    let script = "setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
                  --bounding-set=-all,+net_admin,+net_raw -- \"$@\"; rc=$?; \
                  iptables-nft-save -t nat; exit $rc";
    // File capabilities are ignored on a nosuid mount: find out first.
    let probe = in_new_netns(
        script,
        &[
            with_caps.to_str().unwrap(),
            "-p",
            "1",
            "-o",
            "1",
            "--simulate",
            "--log-level",
            "debug",
        ],
    );
    if !text(&probe.stdout).contains("raised CAP_NET_ADMIN") {
        eprintln!(
            "skipping {test}: file capabilities do not apply under {}",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let mut args = vec![with_caps.to_str().unwrap()];
    args.extend_from_slice(CHART_DEFAULT);
    args.extend(["--log-level", "debug"]);
    let out = in_new_netns(script, &args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("raised CAP_NET_ADMIN as an ambient capability"),
        "{stdout}"
    );
    assert!(
        stdout.contains("raised CAP_NET_RAW as an ambient capability"),
        "{stdout}"
    );
    assert_eq!(rules(&stdout), INSTALLED);

    // Without the file capabilities there is nothing to raise, and iptables says why it fails.
    let mut args = vec![without_caps.to_str().unwrap()];
    args.extend_from_slice(CHART_DEFAULT);
    args.extend(["--log-level", "debug"]);
    let out = in_new_netns(script, &args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "not raising CAP_NET_ADMIN as an ambient capability: it is not in the permitted set"
        ),
        "{stdout}"
    );
    assert!(rules(&stdout).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
