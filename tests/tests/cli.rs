//! The `remora` command line as a user meets it, without root: help texts, configuration
//! errors, `init --dry-run`, and the refusals of connections that were not redirected; the
//! programs of Linkerd's proxy image that the binary is under other names (`linkerd2-proxy`,
//! `linkerd-await`, `linkerd2-network-validator`); `proxy --check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use remora_tests::bin::remora;
use remora_tests::local::LocalProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(remora())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn proxy_help_lists_every_variable_with_its_default() {
    let (code, out, _) = run(&["proxy", "--help"], &[]);
    assert_eq!(code, 0);
    for var in remora_proxy_vars() {
        assert!(out.contains(var), "--help lacks {var}:\n{out}");
    }
    assert!(out.contains("[127.0.0.1:4140]"));
}

fn remora_proxy_vars() -> Vec<&'static str> {
    vec![
        "REMORA_OUTBOUND_ADDR",
        "REMORA_INBOUND_ADDR",
        "REMORA_ADMIN_ADDR",
        "REMORA_CONNECT_TIMEOUT",
        "REMORA_TCP_IDLE_TIMEOUT",
        "REMORA_INBOUND_MAX_CONNECTIONS",
        "REMORA_OUTBOUND_MAX_CONNECTIONS",
        "REMORA_SHUTDOWN_GRACE",
        "REMORA_LOG",
        "REMORA_LOG_FORMAT",
    ]
}

#[test]
fn bad_configuration_exits_64_naming_the_variable() {
    for (var, value) in [
        ("REMORA_OUTBOUND_ADDR", "localhost"),
        ("REMORA_SHUTDOWN_GRACE", "soon"),
        ("REMORA_LOG", "info,[="),
        ("REMORA_LOG_FORMAT", "xml"),
    ] {
        let (code, _, err) = run(&["proxy"], &[(var, value)]);
        assert_eq!(code, 64, "{var}={value}: {err}");
        assert!(err.contains(var), "{var}: {err}");
    }
    let (code, _, _) = run(&["init", "--skip-subnets", "10.0.0.0/99"], &[]);
    assert_eq!(code, 64);
}

#[test]
fn init_dry_run_prints_the_commands() {
    let (code, out, _) = run(
        &[
            "init",
            "--dry-run",
            "--skip-inbound-ports",
            "22",
            "--skip-subnets",
            "10.96.0.0/12",
        ],
        &[],
    );
    assert_eq!(code, 0);
    for line in [
        "iptables -w -t nat -A REMORA_INBOUND -p tcp -m multiport --dports 4191,22 -j RETURN",
        "iptables -w -t nat -A REMORA_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
        "iptables -w -t nat -A REMORA_OUTBOUND -d 10.96.0.0/12 -j RETURN",
        "ip6tables -w -t nat -A REMORA_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
}

#[tokio::test]
async fn unredirected_connections_without_http_or_mtls_are_refused_and_counted() {
    let p = LocalProxy::start(1, &[]);
    assert!(
        p.wait_ready(Duration::from_secs(30)).await,
        "proxy became ready"
    );
    // Straight to the outbound listener, saying something that is not HTTP: explicit mode
    // answers 400. Straight to the inbound listener: the direct path, which needs mTLS.
    let mut conn = TcpStream::connect(p.addr(4140)).await.unwrap();
    conn.write_all(b"hello\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    let res = tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut answer)).await;
    assert!(matches!(res, Ok(Ok(_))), "{res:?}");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let mut conn = TcpStream::connect(p.addr(4143)).await.unwrap();
    let mut buf = [0u8; 1];
    let res = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
    assert!(matches!(res, Ok(Ok(0)) | Ok(Err(_))), "{res:?}");
    let m = p.metrics().await;
    assert_eq!(
        m.get(
            "tcp_refused_total",
            &[("direction", "outbound"), ("reason", "explicit_not_http")]
        ),
        1.0
    );
    assert_eq!(
        m.get(
            "tcp_refused_total",
            &[("direction", "inbound"), ("reason", "direct_not_mtls")]
        ),
        1.0
    );
    assert_eq!(m.get("tcp_open_total", &[]), 0.0);
    assert_eq!(p.get("/live").await.unwrap().0, 200);
    assert_eq!(p.get("/nope").await.unwrap().0, 404);
}

#[test]
fn link_prints_the_stanza_or_says_what_is_missing() {
    let dir = std::env::temp_dir().join(remora_tests::netns::unique("link"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |extra: &str| {
        let path = dir.join("west.toml");
        std::fs::write(
            &path,
            format!(
                "[cluster]\nname = \"west\"\ntrust_domain = \"west.example\"\n\n[server]\n\
                 addr = \"127.0.0.1:8086\"\n\n[identity]\ntrust_anchors = \"root.pem\"\n\
                 issuer_cert = \"i.pem\"\nissuer_key = \"i.key\"\ntoken_key = \"t.key\"\n\n{extra}"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    // Loopback and no advertised address: nothing another cluster could reach.
    let (code, _, err) = run(&["link", "--config", &config(""), "--mode", "flat"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("multicluster.advertised_addr"), "{err}");
    let advertised = "[multicluster]\nadvertised_addr = \"10.214.0.2:8086\"\n";
    let (code, out, err) = run(
        &["link", "--config", &config(advertised), "--mode", "flat"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "[[links]]\ncluster = \"west\"\ntrust_domain = \"west.example\"\n\
         control_addr = \"10.214.0.2:8086\"\ncontrol_identity = \
         \"remora-control.linkerd.serviceaccount.identity.linkerd.west.example\"\nmode = \"flat\"\n"
    );
    // A gateway link needs the remote gateway.
    let (code, _, err) = run(
        &["link", "--config", &config(advertised), "--mode", "gateway"],
        &[],
    );
    assert_eq!(code, 64);
    assert!(err.contains("gateway_addr"), "{err}");
    let with_gw = format!(
        "{advertised}gateway_addr = \"10.214.0.3:4143\"\n\
         gateway_identity = \"remora-gateway.linkerd.serviceaccount.identity.linkerd.west.example\"\n"
    );
    let (code, out, err) = run(
        &["link", "--config", &config(&with_gw), "--mode", "gateway"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mode = \"gateway\"\ngateway_addr = \"10.214.0.3:4143\"\n"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the programs of Linkerd's proxy image: one binary, told apart by argv[0] ----

/// A folder of symlinks to the binary under the names Linkerd's chart runs.
fn linkerd_names() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(remora_tests::netns::unique("argv0"));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "linkerd-await",
        "linkerd2-network-validator",
        "linkerd2-proxy",
    ] {
        std::os::unix::fs::symlink(remora(), dir.join(name)).unwrap();
    }
    dir
}

/// Runs `program` (a path) with `args` and exactly the environment `env`.
fn run_clean(
    program: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String, Duration) {
    let start = std::time::Instant::now();
    let out = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny admin server on 127.0.0.1: `/ready` answers 503 `not_ready` times, then 200; every
/// request line is recorded.
fn fake_admin(not_ready: usize) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The rest of the head.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let n = {
                let mut seen = log.lock().unwrap();
                seen.push(line.trim_end().to_string());
                seen.iter().filter(|l| l.starts_with("GET /ready ")).count()
            };
            let status = if line.starts_with("GET /ready ") && n <= not_ready {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = (&conn).write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, seen)
}

#[test]
fn linkerd_await_gives_up_with_69_when_the_proxy_never_gets_ready() {
    let dir = linkerd_names();
    let port = closed_port().to_string();
    let (code, _, err, took) = run_clean(
        &dir.join("linkerd-await"),
        &["--timeout=1s", &format!("--port={port}")],
        &[],
    );
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("linkerd-proxy failed to become ready within 1s timeout"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The chart's postStart form, short options, and a CMD that never runs.
    let (code, _, err, _) = run_clean(
        &dir.join("linkerd-await"),
        &["-t", "500ms", "-p", &port, "--", "/bin/sh", "-c", "exit 3"],
        &[],
    );
    assert_eq!(code, 69, "{err}");
    // Unless timeouts are not fatal.
    let (code, _, err, _) = run_clean(
        &dir.join("linkerd-await"),
        &[
            "-t",
            "300ms",
            "-p",
            &port,
            "--timeout-fatal=false",
            "--",
            "/bin/sh",
            "-c",
            "exit 3",
        ],
        &[],
    );
    assert_eq!(code, 3, "{err}");
    // Bad command lines: 64.
    for args in [
        &["--timeout=2"][..],
        &["--port=http"],
        &["--shutdown"],
        &["--nope"],
    ] {
        let (code, _, err, _) = run_clean(&dir.join("linkerd-await"), args, &[]);
        assert_eq!(code, 64, "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn linkerd_await_waits_for_ready_then_runs_the_command_and_exits_with_its_status() {
    let dir = linkerd_names();
    let (port, seen) = fake_admin(2);
    let port_arg = format!("--port={port}");
    let (code, _, err, _) = run_clean(
        &dir.join("linkerd-await"),
        &["--timeout=10s", &port_arg, "--", "/bin/sh", "-c", "exit 3"],
        &[],
    );
    assert_eq!(code, 3, "{err}");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(
        requests, ["GET /ready HTTP/1.1"; 3],
        "two 503s, then the 200"
    );
    // No command: exit 0 once ready (the chart's postStart hook).
    let (code, _, err, _) = run_clean(
        &dir.join("linkerd-await"),
        &["--timeout=2m", &port_arg],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    // --shutdown: the command runs as a child, then the proxy is told to shut down.
    let (port, seen) = fake_admin(0);
    let port_arg = format!("--port={port}");
    let (code, out, err, _) = run_clean(
        &dir.join("linkerd-await"),
        &[
            &port_arg,
            "--shutdown",
            "--",
            "/bin/sh",
            "-c",
            "echo done; exit 7",
        ],
        &[],
    );
    assert_eq!((code, out.as_str()), (7, "done\n"), "{err}");
    assert_eq!(
        *seen.lock().unwrap(),
        ["GET /ready HTTP/1.1", "POST /shutdown HTTP/1.1"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn linkerd_await_does_not_wait_when_linkerd_is_disabled() {
    let dir = linkerd_names();
    let port = format!("--port={}", closed_port());
    for var in ["LINKERD_AWAIT_DISABLED", "LINKERD_DISABLED"] {
        // No timeout: without the variable this would wait forever.
        let (code, _, err, took) = run_clean(
            &dir.join("linkerd-await"),
            &[&port, "-v", "--", "/bin/sh", "-c", "exit 4"],
            &[(var, "1")],
        );
        assert_eq!(code, 4, "{var}: {err}");
        assert!(err.contains(var), "-v says why: {err}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let (code, _, err, _) = run_clean(&dir.join("linkerd-await"), &[&port], &[(var, "yes")]);
        assert_eq!(code, 0, "{var}: {err}");
    }
    // Empty means not disabled.
    let (code, _, _, _) = run_clean(
        &dir.join("linkerd-await"),
        &[&port, "--timeout=200ms"],
        &[("LINKERD_AWAIT_DISABLED", "")],
    );
    assert_eq!(code, 69);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn network_validator_succeeds_when_connections_reach_its_listener_and_fails_with_95() {
    let dir = linkerd_names();
    let validator = dir.join("linkerd2-network-validator");
    // Connecting straight to its own listener is what a working redirect amounts to.
    let p = closed_port();
    let own = format!("127.0.0.1:{p}");
    let (code, _, err, _) = run_clean(
        &validator,
        &[
            "--log-format",
            "plain",
            "--log-level",
            "debug",
            "--listen-addr",
            &own,
            "--connect-addr",
            &own,
            "--timeout",
            "2s",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Validated"), "{err}");
    // Nothing where it connects: no redirect.
    let other = format!("127.0.0.1:{}", closed_port());
    let (code, _, err, _) = run_clean(
        &validator,
        &[
            "--listen-addr",
            &format!("127.0.0.1:{}", closed_port()),
            "--connect-addr",
            &other,
            "--timeout",
            "2s",
        ],
        &[],
    );
    assert_eq!(code, 95, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    // Someone else answers: not our listener.
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stranger.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in stranger.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &conn, b"SSH-2.0-elsewhere\r\n");
        }
    });
    let (code, _, err, took) = run_clean(
        &validator,
        &[
            "--log-format",
            "json",
            "--listen-addr",
            &format!("127.0.0.1:{}", closed_port()),
            "--connect-addr",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    assert_eq!(code, 95, "{err}");
    assert!(err.contains("did not reach"), "{err}");
    assert!(err.trim_start().starts_with('{'), "JSON lines: {err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A listener that accepts but never answers: the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, _, err, _) = run_clean(
        &validator,
        &[
            "--listen-addr",
            &format!("127.0.0.1:{}", closed_port()),
            "--connect-addr",
            &silent.local_addr().unwrap().to_string(),
            "--timeout",
            "500ms",
        ],
        &[],
    );
    assert_eq!(code, 95, "{err}");
    // The listen address taken: 95 too.
    let (code, _, err, _) = run_clean(
        &validator,
        &[
            "--listen-addr",
            &silent.local_addr().unwrap().to_string(),
            "--connect-addr",
            &own,
        ],
        &[],
    );
    assert_eq!(code, 95, "{err}");
    let (code, _, _, _) = run_clean(&validator, &["--log-format", "xml"], &[]);
    assert_eq!(code, 64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the child when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn linkerd2_proxy_is_the_proxy_with_no_arguments() {
    use std::os::unix::process::CommandExt;
    let dir = linkerd_names();
    let ip = remora_tests::local::loopback(2);
    let admin = std::net::SocketAddr::new(ip, 4191);
    let child = Child(
        Command::new(dir.join("linkerd2-proxy"))
            .env_clear()
            .env("REMORA_OUTBOUND_ADDR", format!("{ip}:4140"))
            .env("REMORA_INBOUND_ADDR", format!("{ip}:4143"))
            .env("REMORA_ADMIN_ADDR", admin.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = remora_tests::eventually(Duration::from_secs(30), || async {
        match TcpStream::connect(admin).await {
            Ok(conn) => matches!(
                remora_tests::admin::request(conn, "GET", "/ready").await,
                Ok((200, _))
            ),
            Err(_) => false,
        }
    })
    .await;
    assert!(ready, "linkerd2-proxy became ready on {admin}");
    assert!(
        TcpStream::connect((ip, 4140)).await.is_ok(),
        "outbound bound"
    );
    drop(child);

    // A bad Linkerd variable: exit 64, naming it, as `remora proxy` does.
    let (code, _, err, _) = run_clean(
        &dir.join("linkerd2-proxy"),
        &[],
        &[("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "nowhere")],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("invalid configuration: LINKERD2_PROXY_INBOUND_LISTEN_ADDR=\"nowhere\""),
        "{err}"
    );
    // Linkerd's entrypoint execs the proxy with an empty argv, which Linux turns into one
    // empty argv[0]: the proxy too, whatever the file is called.
    let out = Command::new(remora())
        .arg0("")
        .env_clear()
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "nowhere")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("invalid configuration: LINKERD2_PROXY_INBOUND_LISTEN_ADDR=\"nowhere\""),
        "{err}"
    );
    // Given a subcommand, that subcommand: an image whose ENTRYPOINT is linkerd2-proxy runs
    // `args: ["init"]` and the like.
    let (code, out, err, _) = run_clean(&dir.join("linkerd2-proxy"), &["init", "--dry-run"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("# remora init --dry-run"), "{out}");
    let (code, out, err, _) = run_clean(&dir.join("linkerd2-proxy"), &["--check-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("remora proxy: the configuration is valid\n"),
        "{out}"
    );
    // `remora` itself still wants a subcommand.
    let (code, _, err, _) = run_clean(remora(), &[], &[]);
    assert_eq!(code, 64);
    assert!(err.contains("Usage: remora <COMMAND>"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- remora proxy --check-config ----

/// A pod's identity files: an identity directory, a token file, trust anchors (PEM).
struct IdentityFiles {
    dir: std::path::PathBuf,
    identity_dir: std::path::PathBuf,
    token: std::path::PathBuf,
    anchors_pem: String,
}

impl IdentityFiles {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(remora_tests::netns::unique("check-config"));
        let identity_dir = dir.join("end-entity");
        std::fs::create_dir_all(&identity_dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "a.service.account.token").unwrap();
        let root = remora_identity::certs::Ca::new_root(
            "root.linkerd.cluster.local",
            Duration::from_secs(86_400),
        )
        .unwrap();
        IdentityFiles {
            dir,
            identity_dir,
            token,
            anchors_pem: root.cert_pem(),
        }
    }

    /// Linkerd's injected environment for pod `web-0` in `shop`, with these files.
    fn linkerd_env(&self) -> Vec<(String, String)> {
        remora_tests::linkerd::PodEnv {
            variant: "ipv4",
            name: "web-0",
            ns: "shop",
            sa: "web",
            ips: vec!["10.42.0.7".parse().unwrap()],
            ports: "8080",
            anchors_pem: &self.anchors_pem,
            identity_dir: &self.identity_dir,
            token_file: &self.token,
        }
        .render()
    }
}

impl Drop for IdentityFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check_config(
    role: &str,
    env: &[(String, String)],
    change: &[(&str, &str)],
) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| !change.iter().any(|(c, _)| c == k))
        .chain(change.iter().copied())
        .collect();
    let (code, out, err, _) = run_clean(remora(), &[role, "--check-config"], &env);
    (code, out, err)
}

#[test]
fn check_config_prints_the_effective_configuration_and_binds_nothing() {
    let files = IdentityFiles::new();
    // Linkerd's environment, as injected; the admin port is already taken here.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let mut env = files.linkerd_env();
    env.push(("LINKERD2_PROXY_ADMIN_LISTEN_ADDR".into(), taken.clone()));
    let (code, out, err) = check_config("proxy", &env, &[]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "remora proxy: the configuration is valid",
        "surface: LINKERD2_PROXY_* (Linkerd's proxy environment)",
        &format!("admin: {taken}"),
        "identity: web.shop.serviceaccount.identity.linkerd.cluster.local from \
         linkerd-identity-headless.linkerd.svc.cluster.local.:8080 (presenting \
         linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local)",
        "destination: linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
        "trust anchors: 1 certificate(s)",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    assert!(
        out.contains("REMORA_IDENTITY_DIR") && out.contains("LINKERD2_PROXY_IDENTITY_DIR"),
        "{out}"
    );
    assert!(
        out.contains("the proxy will generate key.p8 and csr.der"),
        "{out}"
    );
    assert!(
        !out.contains("a.service.account.token"),
        "the token is never printed"
    );
    assert!(!out.contains("BEGIN CERTIFICATE"), "nor the anchors");
    assert!(
        std::fs::read_dir(&files.identity_dir)
            .unwrap()
            .next()
            .is_none(),
        "nothing written"
    );
    // A matching key and CSR (as linkerd2-proxy-identity writes them) are checked and kept.
    remora_tests::linkerd::write_identity_documents(
        &files.identity_dir,
        "web.shop.serviceaccount.identity.linkerd.cluster.local",
    );
    let (code, out, err) = check_config("proxy", &env, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key.p8 and csr.der belong together"), "{out}");

    // Remora's own surface, with the anchors in a file.
    let anchors = files.dir.join("anchors.pem");
    std::fs::write(&anchors, &files.anchors_pem).unwrap();
    let remora_env: Vec<(String, String)> = [
        ("REMORA_ADMIN_ADDR", taken.as_str()),
        (
            "REMORA_IDENTITY_NAME",
            "web.shop.serviceaccount.identity.linkerd.cluster.local",
        ),
        ("REMORA_IDENTITY_TRUST_ANCHORS", anchors.to_str().unwrap()),
        ("REMORA_IDENTITY_ADDR", "127.0.0.1:8080"),
        ("REMORA_IDENTITY_TOKEN_FILE", files.token.to_str().unwrap()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (code, out, err) = check_config("proxy", &remora_env, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l == "surface: REMORA_*"), "{out}");
    assert!(out.contains("REMORA_IDENTITY_ADDR"), "{out}");
    assert!(
        out.contains("identity directory: none; the key lives in memory only"),
        "{out}"
    );
    // The gateway needs discovery too.
    let (code, _, err) = check_config("gateway", &remora_env, &[]);
    assert_eq!(code, 64);
    assert!(
        err.starts_with("remora gateway: invalid configuration: REMORA_DESTINATION_ADDR="),
        "{err}"
    );
    let (code, out, _) = run(&["proxy", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--check-config"), "{out}");
}

#[test]
fn check_config_exits_64_naming_the_variable_whose_files_are_wrong() {
    let files = IdentityFiles::new();
    let env = files.linkerd_env();
    let missing = files.dir.join("no-such-token");
    let empty = files.dir.join("empty-token");
    std::fs::write(&empty, "").unwrap();
    let not_a_dir = files.token.to_str().unwrap().to_string();
    for (var, value, why) in [
        (
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
            missing.to_str().unwrap(),
            "cannot read the token file",
        ),
        (
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE",
            empty.to_str().unwrap(),
            "the token file is empty",
        ),
        (
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            "",
        ),
        ("LINKERD2_PROXY_IDENTITY_DIR", &not_a_dir, "not a directory"),
    ] {
        let (code, out, err) = check_config("proxy", &env, &[(var, value)]);
        assert_eq!(code, 64, "{var}={value}: {out}{err}");
        assert!(
            err.starts_with(&format!("remora proxy: invalid configuration: {var}=")),
            "{var}: {err}"
        );
        assert!(err.contains(why), "{var}: {err}");
        assert!(out.is_empty(), "{out}");
    }
    // A CSR that is not the key's.
    let other = files.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let identity = "web.shop.serviceaccount.identity.linkerd.cluster.local";
    remora_tests::linkerd::write_identity_documents(&files.identity_dir, identity);
    remora_tests::linkerd::write_identity_documents(&other, identity);
    std::fs::copy(other.join("csr.der"), files.identity_dir.join("csr.der")).unwrap();
    let (code, _, err) = check_config("proxy", &env, &[]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.starts_with("remora proxy: invalid configuration: LINKERD2_PROXY_IDENTITY_DIR="),
        "{err}"
    );
    assert!(err.contains("csr.der"), "{err}");
    // A key that is not PKCS#8.
    std::fs::write(files.identity_dir.join("key.p8"), b"not a key").unwrap();
    let (code, _, err) = check_config("proxy", &env, &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("key.p8"), "{err}");
    // Under Remora's surface the variable is Remora's.
    let (code, _, err) = check_config(
        "proxy",
        &[],
        &[
            ("REMORA_IDENTITY_NAME", identity),
            ("REMORA_IDENTITY_TRUST_ANCHORS", &files.anchors_pem),
            ("REMORA_IDENTITY_ADDR", "127.0.0.1:8080"),
            ("REMORA_IDENTITY_TOKEN_FILE", missing.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.starts_with("remora proxy: invalid configuration: REMORA_IDENTITY_TOKEN_FILE="),
        "{err}"
    );
}
