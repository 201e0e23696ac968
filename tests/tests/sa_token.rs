//! Kubernetes service-account tokens end to end without root: `remora control` accepting
//! projected tokens (`token_auth = ["kubernetes"]`), verified offline against a JWKS file, and
//! a Remora proxy on a loopback address certifying with one as its token file. The test plays
//! the cluster's service-account issuer with its own key ([`Minter`]), whose public half is the
//! JWKS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use remora_control::sa_token::mint::{Minter, SaClaims};
use remora_tests::control::Pki;
use remora_tests::local::{LocalProxy, loopback};

#[tokio::test]
async fn a_proxy_certifies_with_a_projected_service_account_token() {
    let issuer = Minter::generate_es256("sa-key-1").unwrap();
    let pki = Pki::new();
    let mut cp = pki.control(
        "east",
        "east.example",
        SocketAddr::new(loopback(40), 8086),
        SocketAddr::new(loopback(40), 9990),
    );
    cp.accept_sa_tokens(
        &["kubernetes"],
        &[&issuer],
        Some("https://kubernetes.default.svc.cluster.local"),
    );
    cp.start_in_process().await;

    let token = cp.sa_token_file(&issuer, "web", "shop");
    let proxy = LocalProxy::in_process(41, &cp.proxy_env_with_token("web", "shop", &token));
    assert!(
        proxy.wait_ready(Duration::from_secs(60)).await,
        "ready with web's projected token:\n{}\n--- control plane ---\n{}",
        proxy.process.log(),
        cp.process().log()
    );
    // db's token, asking for web's identity: refused, never ready.
    let db = cp.sa_token_file(&issuer, "db", "shop");
    let impostor = LocalProxy::in_process(42, &cp.proxy_env_with_token("web", "shop", &db));
    assert!(
        impostor
            .process
            .wait_log("FailedPrecondition", Duration::from_secs(30))
            .await,
        "{}",
        impostor.process.log()
    );
    assert_eq!(impostor.get("/ready").await.unwrap().0, 503);
    let m = cp.metrics().await;
    assert!(
        m.get("identity_certs_issued_total", &[]) >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.get(
            "identity_certs_refused_total",
            &[("reason", "not_authenticated")]
        ) >= 1.0,
        "{}",
        m.text
    );
    assert_eq!(m.get("identity_jwks_keys", &[]), 1.0, "{}", m.text);
    // The control plane logged the refusal without the token.
    let log = cp.process().log();
    let jwt = std::fs::read_to_string(&db).unwrap();
    assert!(log.contains("certify refused"), "{log}");
    assert!(
        !log.contains(&jwt[jwt.len() - 20..]),
        "a token in the log:\n{log}"
    );
}

#[tokio::test]
async fn both_kinds_of_token_and_a_key_rotation() {
    let old = Minter::rfc7515_rs256("sa-rsa").unwrap();
    let new = Minter::generate_es256("sa-ec").unwrap();
    let pki = Pki::new();
    let mut cp = pki.control(
        "east",
        "east.example",
        SocketAddr::new(loopback(50), 8086),
        SocketAddr::new(loopback(50), 9990),
    );
    cp.accept_sa_tokens(&["remora", "kubernetes"], &[&old], None);
    cp.start_in_process().await;

    // One proxy with Remora's token, one with an RS256 projected token.
    let remora = LocalProxy::in_process(51, &cp.proxy_env("api", "shop"));
    let rs256 = cp.sa_token_file(&old, "web", "shop");
    let web = LocalProxy::in_process(52, &cp.proxy_env_with_token("web", "shop", &rs256));
    for (p, what) in [(&remora, "Remora's token"), (&web, "an RS256 token")] {
        assert!(
            p.wait_ready(Duration::from_secs(60)).await,
            "ready with {what}:\n{}\n{}",
            p.process.log(),
            cp.process().log()
        );
    }

    // The issuer rotates to a new key: the JWKS file now holds only that one. Tokens of the old
    // key are refused from then on; tokens of the new one certify.
    let reloads = |m: &remora_tests::admin::Metrics| {
        m.get("identity_jwks_reloads_total", &[("result", "success")])
    };
    cp.set_sa_keys(&[&new]);
    let reloaded = remora_tests::eventually(Duration::from_secs(15), || async {
        reloads(&cp.metrics().await) >= 1.0
    })
    .await;
    assert!(reloaded, "{}", cp.process().log());
    let stale = cp.write_token_file(
        "stale.sa-token",
        &old.token(&SaClaims::new(
            "shop",
            "db",
            std::time::SystemTime::now(),
            Duration::from_secs(600),
        )),
    );
    let refused = LocalProxy::in_process(53, &cp.proxy_env_with_token("db", "shop", &stale));
    assert!(
        refused
            .process
            .wait_log("FailedPrecondition", Duration::from_secs(30))
            .await,
        "{}",
        refused.process.log()
    );
    let fresh = cp.sa_token_file(&new, "db", "shop");
    let db = LocalProxy::in_process(54, &cp.proxy_env_with_token("db", "shop", &fresh));
    assert!(
        db.wait_ready(Duration::from_secs(60)).await,
        "ready with the new key's token:\n{}\n{}",
        db.process.log(),
        cp.process().log()
    );
    let m = cp.metrics().await;
    assert!(
        m.get(
            "identity_certs_refused_total",
            &[("reason", "sa_token_unknown_key")]
        ) >= 1.0,
        "{}",
        m.text
    );
    assert!(
        m.get("identity_certs_issued_total", &[]) >= 3.0,
        "{}",
        m.text
    );
}
