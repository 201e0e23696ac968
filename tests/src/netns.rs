//! Network-namespace plumbing for the harness.
//!
//! Every namespace the harness makes is named `rmt<pid>-<n>-<what>`, so a sweep at start can
//! find the leftovers of a run that was killed (Drop does not run after SIGKILL) by checking
//! whether `<pid>` is still alive; it kills any process still inside and deletes them.

use std::fs::File;
use std::io;
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Prefix of every name the harness creates.
pub const PREFIX: &str = "rmt";
/// With this set to 1 (CI sets it), a missing capability fails the test instead of skipping it.
pub const REQUIRE_VAR: &str = "REMORA_REQUIRE_NETNS";

static SWEEP: Once = Once::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this process and call: `rmt<pid>-<n>-<what>`.
pub fn unique(what: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}-{what}", std::process::id())
}

/// The names of this run's namespaces start with this.
pub fn run_prefix() -> String {
    format!("{PREFIX}{}-", std::process::id())
}

/// Runs a command, returning its stdout, or an error carrying its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip <args>`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    if let Err(e) = run("ip", args) {
        panic!("{e}");
    }
}

/// Whether namespaces can be made here: root, `ip`, `iptables`, and a namespace round trip.
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    for tool in ["iptables", "ip6tables", "setpriv"] {
        run("sh", &["-c", &format!("command -v {tool}")])
            .map_err(|_| format!("{tool} is not installed"))?;
    }
    let probe = unique("probe");
    run("ip", &["netns", "add", &probe])?;
    let _ = run("ip", &["netns", "del", &probe]);
    Ok(())
}

/// Decides whether a netns test runs: true to go ahead. Without the capability the test is
/// skipped with a message, or fails when [`REQUIRE_VAR`] is set.
pub fn require() -> bool {
    SWEEP.call_once(sweep);
    raise_nofile();
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") => {
            panic!("network namespaces are required ({REQUIRE_VAR}=1) but unavailable: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: network namespaces unavailable ({why}); set {REQUIRE_VAR}=1 to fail instead"
            );
            false
        }
    }
}

/// Test processes hold both ends of many connections; lift the usual 1024-descriptor cap.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Names of the namespaces that exist now.
pub fn list() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Kills whatever runs inside `ns` and deletes it, with its `/etc/netns/<ns>` files (a pod's
/// `/etc/hosts`). Quiet if it is already gone.
pub fn delete(ns: &str) {
    if !ns.is_empty() && !ns.contains('/') {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
    }
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// Removes what killed runs of the harness left behind.
fn sweep() {
    for ns in list() {
        let Some(pid) = owner_pid(&ns) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("harness: removing leftover namespace {ns} of a dead run (pid {pid})");
            delete(&ns);
        }
    }
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name)
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('-') {
        return None;
    }
    digits.parse().ok()
}

/// The test process's own network namespace (for explicit-mode tests, which need no root).
pub const HOST: &str = "";

/// Runs `f` on a fresh thread that has entered namespace `ns`; sockets it creates stay in `ns`.
/// With [`HOST`], runs `f` here.
pub fn in_netns<T, F>(ns: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    if ns == HOST {
        return f();
    }
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path)?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids() {
        assert_eq!(owner_pid("rmt123-4-br"), Some(123));
        assert_eq!(owner_pid("rmtx-4-br"), None);
        assert_eq!(owner_pid("rmt123"), None);
        assert_eq!(owner_pid("other"), None);
        assert!(unique("a").starts_with(&run_prefix()));
    }
}
