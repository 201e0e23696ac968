//! Workload identity end to end without root: `remora certs`, `remora control` and a proxy on
//! loopback addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use remora_tests::bin::remora;
use remora_tests::control::Pki;
use remora_tests::local::{LocalProxy, loopback};

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn certs_writes_keys_private_and_certs_public() {
    let pki = Pki::new();
    let mode = |f: &str| {
        std::fs::metadata(pki.dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("root.key"), 0o600);
    let out = Command::new(remora())
        .args(["certs", "issuer", "--root", pki.dir.to_str().unwrap()])
        .args(["--trust-domain", "east.example", "--out"])
        .arg(pki.dir.join("east"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(mode("east/issuer.key"), 0o600);
    assert_eq!(mode("east/issuer.pem") & 0o044, 0o044);
    for help in [
        &["certs", "--help"][..],
        &["control", "--help"],
        &["certs", "issuer", "--help"],
    ] {
        let out = Command::new(remora()).args(help).output().unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).len() > 200,
            "{help:?} says little"
        );
    }
}

#[tokio::test]
async fn proxy_is_ready_only_once_it_holds_a_certificate() {
    let pki = Pki::new();
    let cp_addr = SocketAddr::new(loopback(20), 8086);
    let mut cp = pki.control(
        "east",
        "east.example",
        cp_addr,
        SocketAddr::new(loopback(20), 9990),
    );
    let proxy = LocalProxy::in_process(21, &cp.proxy_env("web", "shop"));
    // The control plane is down: the proxy answers probes but is not ready.
    let mut seen = 0;
    for _ in 0..20 {
        if let Some((status, _)) = proxy.get("/ready").await {
            assert_eq!(status, 503, "ready without a certificate");
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(seen > 0, "the admin listener never answered");
    assert!(matches!(proxy.get("/live").await, Some((200, _))));

    cp.start_in_process().await;
    assert!(
        proxy.wait_ready(Duration::from_secs(90)).await,
        "ready after the control plane came up:\n{}",
        proxy.process.log()
    );
    let m = proxy.metrics().await;
    let expiry = m.get("identity_cert_expiration_timestamp_seconds", &[]);
    assert!(
        expiry > now_secs() + 23.0 * 3600.0,
        "a 24 h certificate: {expiry}"
    );
    assert!(m.get("identity_cert_renewals_total", &[("result", "success")]) >= 1.0);
    assert!(m.get("identity_cert_renewals_total", &[("result", "failure")]) >= 1.0);
    let cm = cp.metrics().await;
    assert!(cm.get("identity_certs_issued_total", &[]) >= 1.0);
}

#[tokio::test]
async fn a_proxy_with_the_wrong_token_never_becomes_ready() {
    let pki = Pki::new();
    let cp_addr = SocketAddr::new(loopback(30), 8086);
    let mut cp = pki.control(
        "east",
        "east.example",
        cp_addr,
        SocketAddr::new(loopback(30), 9990),
    );
    cp.start_in_process().await;
    // db's token, but asking for web's identity.
    let mut env = cp.proxy_env("web", "shop");
    let db_token = cp.token_file("db", "shop");
    for (k, v) in env.iter_mut() {
        if k == "REMORA_IDENTITY_TOKEN_FILE" {
            *v = db_token.display().to_string();
        }
    }
    let proxy = LocalProxy::in_process(31, &env);
    assert!(
        proxy
            .process
            .wait_log("FailedPrecondition", Duration::from_secs(30))
            .await,
        "{}",
        proxy.process.log()
    );
    assert_eq!(proxy.get("/ready").await.unwrap().0, 503);
    let cm = cp.metrics().await;
    assert!(
        cm.get(
            "identity_certs_refused_total",
            &[("reason", "not_authenticated")]
        ) >= 1.0
    );
    assert_eq!(cm.get("identity_certs_issued_total", &[]), 0.0);
}

#[test]
fn identity_configuration_errors_exit_64() {
    let out = Command::new(remora())
        .arg("proxy")
        .env(
            "REMORA_IDENTITY_NAME",
            "web.shop.serviceaccount.identity.linkerd.east.example",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REMORA_IDENTITY_TRUST_ANCHORS"));
}
