//! `linkerd-await`: waits until the local proxy is ready, then runs a program (or just exits).
//!
//! Linkerd's chart runs `/usr/lib/linkerd/linkerd-await --timeout=2m --port=4191` as the proxy
//! container's postStart hook when the proxy is not a native sidecar: the kubelet starts the
//! app's containers only once the hook returns, so the app never runs before its proxy. Apps
//! can also wrap their own command, `linkerd-await --shutdown -- app args`, so that the proxy
//! is told to stop when the app is done (Jobs). This is the same program under the same name,
//! with the command line and exit codes of Linkerd's `linkerd-await` v0.3.3:
//!
//! - `GET http://localhost:PORT/ready` (127.0.0.1, then [::1]) until it answers 2xx, trying
//!   again `--backoff` after each failure;
//! - `--timeout` bounds the wait (unset or `0`: forever); when it passes, exit 69
//!   (EX_UNAVAILABLE), unless `--timeout-fatal=false`, which runs the command anyway;
//! - `LINKERD_AWAIT_DISABLED` or `LINKERD_DISABLED` set to anything but empty skips the wait
//!   (and the shutdown), with a message under `-v`;
//! - then, with no command, exit 0; with a command, exec it (so it keeps the hook's stdio and
//!   pid, gets signals directly, and its exit status is ours); with `--shutdown`, run it as a
//!   child instead, pass SIGTERM on to it, `POST /shutdown` to the proxy once it exits (a
//!   failure is ignored) and exit with its status (71, EX_OSERR, when it has none or cannot
//!   start);
//! - a bad command line exits 64 (EX_USAGE).
//!
//! The HTTP client is a few lines over a blocking `TcpStream`: one request per connection,
//! `Connection: close`, and only the status line is read.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser};
use remora_runtime::duration::parse_duration;

/// EX_UNAVAILABLE (sysexits.h): the proxy did not become ready in time.
const EXIT_UNAVAILABLE: u8 = 69;
/// EX_OSERR (sysexits.h): the command could not run, or ended without an exit code.
const EXIT_OSERR: u8 = 71;
/// How long one readiness check may take (connect, request, status line).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(
    name = "linkerd-await",
    version,
    about = "Wait for the local proxy to become ready, then run a program",
    long_about = "Wait for the local proxy to become ready, then run a program.\n\nPolls \
                  GET http://localhost:PORT/ready until it answers 2xx. Then, with no CMD, \
                  exits 0; with a CMD, execs it. LINKERD_AWAIT_DISABLED or LINKERD_DISABLED \
                  (any non-empty value) skips the wait. Exits 69 when the timeout passes \
                  first, 64 on a bad command line."
)]
struct AwaitArgs {
    /// The port of the local proxy's admin server.
    #[arg(short = 'p', long, default_value_t = 4191, value_name = "PORT")]
    port: u16,
    /// Time to wait after a failed readiness check.
    #[arg(short = 'b', long, default_value = "100ms", value_parser = parse_duration, value_name = "DUR")]
    backoff: Duration,
    /// Run CMD as a child and ask the proxy to shut down (POST /shutdown) once it exits;
    /// SIGTERM is passed on to CMD.
    #[arg(short = 'S', long, requires = "cmd")]
    shutdown: bool,
    /// Say so when the wait is disabled [env: LINKERD_AWAIT_VERBOSE].
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Give up waiting after DUR (e.g. 2m, 30s, 500ms; 0 or unset: wait forever).
    #[arg(short = 't', long, value_parser = parse_duration, value_name = "DUR")]
    timeout: Option<Duration>,
    /// Whether a timeout stops CMD from running (false: run it anyway).
    #[arg(
        long,
        default_value_t = true,
        default_missing_value = "true",
        num_args = 0..=1,
        require_equals = true,
        action = ArgAction::Set,
        requires = "cmd",
        value_name = "BOOL"
    )]
    timeout_fatal: bool,
    /// The command to run once the proxy is ready, and its arguments.
    #[arg(id = "cmd", value_name = "CMD", trailing_var_arg = true, num_args = 1..)]
    cmd: Vec<OsString>,
}

pub fn main(argv: Vec<OsString>) -> ExitCode {
    let mut args = match crate::parse::<AwaitArgs>(argv) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let verbose = args.verbose || env_flag("LINKERD_AWAIT_VERBOSE");
    let cmd = (!args.cmd.is_empty()).then(|| {
        let rest = args.cmd.split_off(1);
        (args.cmd.remove(0), rest)
    });
    if let Some((var, value)) = disabled() {
        if verbose {
            eprintln!("linkerd-await: readiness check skipped: {var}={value:?}");
        }
    } else {
        if let Err(timeout) = wait_ready(args.port, args.backoff, args.timeout) {
            eprintln!("linkerd-proxy failed to become ready within {timeout:?} timeout");
            if args.timeout_fatal {
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
        if args.shutdown
            && let Some((program, program_args)) = cmd
        {
            return run_then_shutdown(args.port, program, program_args);
        }
    }
    match cmd {
        Some((program, program_args)) => exec(program, program_args),
        None => ExitCode::SUCCESS,
    }
}

/// The variable that disables the wait, and its value.
fn disabled() -> Option<(&'static str, String)> {
    ["LINKERD_AWAIT_DISABLED", "LINKERD_DISABLED"]
        .into_iter()
        .find_map(|var| {
            let value = std::env::var_os(var)?;
            (!value.is_empty()).then(|| (var, value.to_string_lossy().into_owned()))
        })
}

/// A boolean variable: unset, empty, `0`, `false`, `f`, `no`, `n` or `off` is false.
fn env_flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "false" | "f" | "no" | "n" | "off")
    })
}

/// Polls `/ready` until it answers 2xx; `Err(timeout)` when `timeout` (if not zero) passes
/// first.
fn wait_ready(port: u16, backoff: Duration, timeout: Option<Duration>) -> Result<(), Duration> {
    let timeout = timeout.filter(|t| !t.is_zero());
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    loop {
        let attempt = left().map_or(ATTEMPT_TIMEOUT, |l| l.min(ATTEMPT_TIMEOUT));
        if !attempt.is_zero() && matches!(request(port, "GET", "/ready", attempt), Ok(200..=299)) {
            return Ok(());
        }
        match left() {
            Some(l) if l.is_zero() => return Err(timeout.unwrap_or_default()),
            Some(l) => std::thread::sleep(backoff.min(l)),
            None => std::thread::sleep(backoff),
        }
    }
}

/// `method path` on the admin server at localhost:`port`, within `timeout`: the response's
/// status code. 127.0.0.1 is tried first, then [::1] if nothing listens there.
fn request(port: u16, method: &str, path: &str, timeout: Duration) -> io::Result<u16> {
    let deadline = Instant::now() + timeout;
    let mut refused = None;
    for ip in [
        std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&SocketAddr::new(ip, port), left) {
            Ok(conn) => return exchange(conn, port, method, path, deadline),
            Err(e) => refused = Some(e),
        }
    }
    Err(refused.unwrap_or_else(|| io::ErrorKind::TimedOut.into()))
}

/// Sends one request on `conn` and reads the status line of the answer.
fn exchange(
    mut conn: TcpStream,
    port: u16,
    method: &str,
    path: &str,
    deadline: Instant,
) -> io::Result<u16> {
    let left = || {
        Some(deadline.saturating_duration_since(Instant::now()))
            .filter(|l| !l.is_zero())
            .ok_or(io::Error::from(io::ErrorKind::TimedOut))
    };
    let body = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    conn.set_write_timeout(Some(left()?))?;
    conn.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: linkerd-await\r\n\
             {body}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') {
        if head.len() > 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "status line too long",
            ));
        }
        conn.set_read_timeout(Some(left()?))?;
        match conn.read(&mut buf)? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    status(&head)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1 status line"))
}

/// The code of an HTTP/1 status line (`HTTP/1.1 200 OK`).
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// Replaces this process with `program`; returns only when that fails.
fn exec(program: OsString, args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&program).args(args).exec();
    eprintln!(
        "linkerd-await: failed to exec child program {}: {err}",
        program.to_string_lossy()
    );
    ExitCode::from(EXIT_OSERR)
}

/// `--shutdown`: runs `program` as a child, passing SIGTERM on to it, then asks the proxy to
/// shut down, and exits as the child did.
fn run_then_shutdown(port: u16, program: OsString, args: Vec<OsString>) -> ExitCode {
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run_child(program, args)),
        Err(e) => {
            eprintln!("linkerd-await: cannot start the runtime: {e}");
            None
        }
    };
    // The proxy may already be gone, or may not offer the endpoint: nothing to do about it.
    let _ = request(port, "POST", "/shutdown", Duration::from_secs(5));
    code.and_then(|c| u8::try_from(c).ok())
        .map_or(ExitCode::from(EXIT_OSERR), ExitCode::from)
}

/// The child's exit code; `None` when it could not start or was killed by a signal.
async fn run_child(program: OsString, args: Vec<OsString>) -> Option<i32> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use tokio::signal::unix::{SignalKind, signal};

    // Before the child starts, so no SIGTERM is missed in between.
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| eprintln!("linkerd-await: cannot watch for SIGTERM: {e}"))
        .ok();
    let mut child = match tokio::process::Command::new(&program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "linkerd-await: failed to fork child program {}: {e}",
                program.to_string_lossy()
            );
            return None;
        }
    };
    let terminated = async {
        match term.as_mut() {
            Some(t) => t.recv().await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        status = child.wait() => status,
        _ = terminated => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok())
                && let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM)
            {
                eprintln!("linkerd-await: failed to forward SIGTERM to the child: {e}");
            }
            child.wait().await
        }
    };
    status.ok()?.code()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 503 Service Unavailable\r\nx"), Some(503));
        assert_eq!(status(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(status(b""), None);
    }

    #[test]
    fn command_lines() {
        let parse = |args: &[&str]| {
            AwaitArgs::try_parse_from(std::iter::once("linkerd-await").chain(args.iter().copied()))
        };
        let a = parse(&["--timeout=2m", "--port=4191"]).unwrap();
        assert_eq!(a.timeout, Some(Duration::from_secs(120)));
        assert_eq!(a.port, 4191);
        assert!(a.cmd.is_empty() && a.timeout_fatal && !a.shutdown);
        let a = parse(&["-t", "30s", "-p", "1234", "-S", "--", "sh", "-c", "exit 3"]).unwrap();
        assert_eq!((a.port, a.shutdown), (1234, true));
        assert_eq!(a.cmd, ["sh", "-c", "exit 3"]);
        let a = parse(&["--timeout-fatal=false", "sh", "-c", "exit 3"]).unwrap();
        assert!(!a.timeout_fatal);
        assert_eq!(a.cmd, ["sh", "-c", "exit 3"]);
        assert!(
            parse(&["--shutdown"]).is_err(),
            "--shutdown needs a command"
        );
        assert!(parse(&["--timeout=1"]).is_err(), "a unit is required");
        assert!(parse(&["--port=http"]).is_err());
    }
}
