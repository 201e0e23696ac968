//! The `remora` command line as a user meets it, without root: help texts, configuration
//! errors, `init --dry-run`, and the refusals of connections that were not redirected.

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
