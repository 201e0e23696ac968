//! Pods given exactly the environment Linkerd's injector renders for linkerd2-proxy
//! (`tests/fixtures/linkerd-env/`), under a Linkerd-shaped control plane reachable only by DNS
//! names, two replicas behind each name ([`remora_tests::linkerd`]): certified with the
//! identity directory's key, ready only then, discovering, and meshing HTTP/1.1, HTTP/2, gRPC
//! and opaque TCP with mTLS; a dead control-plane replica followed without a restart; admin on
//! the pod's address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use remora_tests::apps::{connect_in, echo, echo_roundtrip, test_server};
use remora_tests::http::{get, grpc_channel, grpc_echo, http1, http2, send1, send2};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, Workload, WorkloadSpec, workload_identity};
use remora_tests::{Net, eventually};

const HTTP: u16 = 8080;
/// Opaque by the chart's default (`INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`).
const OPAQUE: u16 = 3306;

fn endpoint(w: &Workload, port: u16, sa: &str, opaque: bool) -> Endpoint {
    Endpoint {
        addr: w.pod.addr4(port),
        sa: sa.into(),
        ns: "shop".into(),
        pod: w.pod.name.clone(),
        opaque,
    }
}

/// A probe from outside the pod (the kubelet's view): `GET path` on the pod's address.
async fn probe(net: &Net, addr: SocketAddr, path: &str) -> Option<u16> {
    let conn = connect_in(net.bridge_ns(), addr).await.ok()?;
    remora_tests::admin::request(conn, "GET", path)
        .await
        .ok()
        .map(|(s, _)| s)
}

#[tokio::test]
async fn netns_linkerd_env_ready_only_after_certifying_with_the_directorys_key() {
    let Some(net) = Net::new() else { return };
    let plane = LinkerdPlane::start(&net, 2).await;
    let mut spec = WorkloadSpec::new("web-0", "web").app(test_server(HTTP, "web"), HTTP);
    // No token yet: the proxy cannot certify.
    spec.token = false;
    spec.wait_ready = false;
    let w = plane.workload(&net, spec).await;
    let admin = w.pod.addr4(4191);
    // Admin answers on the pod's address (kubelet probes it there): live, not ready.
    assert!(
        eventually(Duration::from_secs(20), || async {
            probe(&net, admin, "/live").await == Some(200)
        })
        .await,
        "{}",
        w.pod.proxy().log()
    );
    for _ in 0..5 {
        assert_eq!(probe(&net, admin, "/ready").await, Some(503));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(plane.certified().is_empty());

    w.give_token(&plane);
    assert!(
        eventually(Duration::from_secs(60), || async {
            probe(&net, admin, "/ready").await == Some(200)
        })
        .await,
        "{}",
        w.pod.proxy().log()
    );
    // Certified with exactly the directory's key and CSR.
    let key = remora_identity::certs::key_from_pkcs8(w.key_der.as_ref().unwrap()).unwrap();
    let certified = plane.certified();
    assert_eq!(certified.len(), 1, "{certified:?}");
    assert_eq!(certified[0].0, w.identity);
    assert_eq!(
        certified[0].1,
        key.public_key_raw(),
        "the certificate carries key.p8's key"
    );
    let csr = std::fs::read(w.identity_dir.join("csr.der")).unwrap();
    assert_eq!(plane.csrs()[0].1, csr, "csr.der is sent as it is");
    // Linkerd's admin surface: the log level under Linkerd's name, /env.json and /shutdown
    // from loopback only, and /shutdown off (SHUTDOWN_ENDPOINT_ENABLED=false).
    let (status, level) = w.pod.admin("GET", "/proxy-log-level").await.unwrap();
    assert_eq!(status, 200);
    assert!(level.contains("remora=info"), "{level}");
    let (status, env) = w
        .pod
        .admin("GET", "/env.json?LINKERD2_PROXY_INBOUND_PORTS&UNSET")
        .await
        .unwrap();
    assert_eq!(status, 200, "{env}");
    let env: serde_json::Value = serde_json::from_str(&env).unwrap();
    assert_eq!(env["LINKERD2_PROXY_INBOUND_PORTS"], "8080");
    assert!(env["UNSET"].is_null());
    assert_eq!(probe(&net, admin, "/env.json").await, Some(403));
    let (status, body) = w.pod.admin("POST", "/shutdown").await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(w.pod.proxy().is_running());
}

#[tokio::test]
async fn netns_linkerd_env_a_generated_key_is_written_to_the_directory() {
    let Some(net) = Net::new() else { return };
    let plane = LinkerdPlane::start(&net, 1).await;
    let mut spec = WorkloadSpec::new("web-0", "web");
    spec.documents = false;
    let w = plane.workload(&net, spec).await;
    use std::os::unix::fs::MetadataExt;
    for f in ["key.p8", "csr.der"] {
        let meta = std::fs::metadata(w.identity_dir.join(f)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{f}");
        assert_eq!(meta.uid(), remora_tests::net::PROXY_UID, "{f}");
    }
    let der = std::fs::read(w.identity_dir.join("key.p8")).unwrap();
    let key = remora_identity::certs::key_from_pkcs8(&der).unwrap();
    assert_eq!(plane.certified()[0].1, key.public_key_raw());
}

struct Pair {
    net: Net,
    plane: LinkerdPlane,
    client: Workload,
    server: Workload,
}

/// A client pod and a server pod (test server on 8080, echo on 3306) under a two-replica
/// plane, the server's ports known to Destination by its pod address.
async fn pair(lifetime: Duration) -> Option<Pair> {
    let net = Net::new()?;
    let plane = LinkerdPlane::start_with(&net, 2, lifetime).await;
    let server = plane
        .workload(
            &net,
            WorkloadSpec::new("web-0", "web")
                .app(test_server(HTTP, "web-0"), HTTP)
                .app(echo(OPAQUE), OPAQUE),
        )
        .await;
    for (port, opaque) in [(HTTP, false), (OPAQUE, true)] {
        plane.add_service(
            &server.pod.addr4(port).to_string(),
            vec![endpoint(&server, port, "web", opaque)],
        );
    }
    let client = plane
        .workload(&net, WorkloadSpec::new("client-0", "client"))
        .await;
    Some(Pair {
        net,
        plane,
        client,
        server,
    })
}

#[tokio::test]
async fn netns_linkerd_env_pods_mesh_http_grpc_and_opaque_with_identities() {
    let Some(p) = pair(Duration::from_secs(3600)).await else {
        return;
    };
    let client_id = workload_identity("client", "shop");
    let target = p.server.pod.addr4(HTTP);
    let host = target.to_string();
    let ns = &p.client.pod.ns;

    let mut h1 = http1(ns, target).await;
    let r = send1(&mut h1, get(&host, "/echo")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], "HTTP/1.1");
    assert_eq!(r.json()["headers"]["l5d-client-id"], client_id.as_str());

    let mut h2 = http2(ns, target).await;
    let r = send2(&mut h2, get(&host, "/echo")).await.unwrap();
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["headers"]["l5d-client-id"], client_id.as_str());

    let reply = grpc_echo(grpc_channel(ns, target).await, "hi", 0)
        .await
        .unwrap();
    assert_eq!(reply.client_id, client_id);

    let conn = connect_in(ns, p.server.pod.addr4(OPAQUE)).await.unwrap();
    assert_eq!(echo_roundtrip(conn, 100_000).await.unwrap(), 100_000);

    // The server's inbound saw each of them over mTLS from the client's identity, and the
    // HTTP as Linkerd's transport-header mode sends it (to 4143, the session protocol named).
    let tls_from_client = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "true"),
        ("client_id", client_id.as_str()),
    ];
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.server
                .pod
                .metrics()
                .await
                .get("tcp_open_total", &tls_from_client)
                >= 2.0
        })
        .await,
        "{}",
        p.server.pod.metrics().await.text
    );
    // Discovery as Linkerd's controller is asked: the context token verbatim, a profile asked
    // for the pod address (inside the profile networks).
    let context = "{\"ns\":\"shop\", \"nodeName\":\"node-a\", \"pod\":\"client-0\"}\n";
    let contexts = p.plane.contexts();
    assert!(
        contexts
            .iter()
            .any(|(path, c)| *path == host && c == context),
        "{contexts:?}"
    );
    assert!(p.plane.profile_lookups().contains(&host));
    // The policy workload arrives verbatim (W2.5 consumes it; linkerd2-proxy already does).
    drop(p.net);
}

#[tokio::test]
async fn netns_linkerd_env_a_dead_control_plane_replica_is_followed_without_restart() {
    // Certificates of 20 s: each proxy renews every ~14 s, so renewals happen after the kill.
    let Some(mut p) = pair(Duration::from_secs(20)).await else {
        return;
    };
    let target = p.server.pod.addr4(HTTP);
    let host = target.to_string();
    let ns = p.client.pod.ns.clone();
    let mut h1 = http1(&ns, target).await;
    assert_eq!(
        send1(&mut h1, get(&host, "/echo")).await.unwrap().status,
        200
    );
    let pids = (p.client.pod.proxy().pid(), p.server.pod.proxy().pid());

    // Replica 0 dies; DNS still names it for a while.
    p.plane.kill(0);
    let client_id = p.client.identity.clone();
    let before = p.plane.certified_count(&client_id);
    // A new target is discovered through the survivor.
    p.plane.add_service(
        &p.server.pod.addr4(OPAQUE + 1).to_string(),
        vec![endpoint(&p.server, OPAQUE, "web", true)],
    );
    // (3307 exists only in discovery: it names the echo app on 3306, so an echo through it
    // shows the proxy asked the survivor.)
    let fresh = p.server.pod.addr4(OPAQUE + 1);
    let served = eventually(Duration::from_secs(30), || async {
        let Ok(conn) = connect_in(&ns, fresh).await else {
            return false;
        };
        let echoed = tokio::time::timeout(Duration::from_secs(5), echo_roundtrip(conn, 1000));
        matches!(echoed.await, Ok(Ok(1000)))
    })
    .await;
    assert!(served, "{}", p.client.pod.proxy().log());
    // The certificate is renewed through the survivor.
    assert!(
        eventually(Duration::from_secs(60), || async {
            p.plane.certified_count(&client_id) > before
        })
        .await,
        "no renewal after the kill:\n{}",
        p.client.pod.proxy().log()
    );
    // DNS catches up; everything carries on, and nothing restarted.
    p.client.pod.set_hosts(&p.plane.hosts());
    p.server.pod.set_hosts(&p.plane.hosts());
    let r = send1(&mut h1, get(&host, "/echo")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        pids,
        (p.client.pod.proxy().pid(), p.server.pod.proxy().pid())
    );
    assert!(p.client.pod.proxy().is_running() && p.server.pod.proxy().is_running());
    drop(p.net);
}

#[tokio::test]
async fn netns_linkerd_env_dual_stack_pods_mesh_over_ipv6() {
    let Some(net) = Net::new() else { return };
    let plane = LinkerdPlane::start(&net, 1).await;
    let mut spec = WorkloadSpec::new("web-0", "web").app(test_server(HTTP, "web-0"), HTTP);
    spec.variant = "dual-stack";
    let server = plane.workload(&net, spec).await;
    let target = server.pod.addr6(HTTP);
    plane.add_service(
        &target.to_string(),
        vec![Endpoint {
            addr: target,
            sa: "web".into(),
            ns: "shop".into(),
            pod: "web-0".into(),
            opaque: false,
        }],
    );
    let mut spec = WorkloadSpec::new("client-0", "client");
    spec.variant = "dual-stack";
    let client = plane.workload(&net, spec).await;
    let mut h2 = http2(&client.pod.ns, target).await;
    let r = send2(&mut h2, get(&target.to_string(), "/echo"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let client_id = workload_identity("client", "shop");
    assert_eq!(r.json()["headers"]["l5d-client-id"], client_id.as_str());
    // IPv4 reaches the same pod through its one `[::]:4143` listener.
    let v4 = server.pod.addr4(HTTP);
    plane.add_service(&v4.to_string(), vec![endpoint(&server, HTTP, "web", false)]);
    let mut h1 = http1(&client.pod.ns, v4).await;
    let r = send1(&mut h1, get(&v4.to_string(), "/echo")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["l5d-client-id"], client_id.as_str());
}

/// Linkerd's rendered environment for a pod (no control plane needed: these proxies exit
/// before they would reach one).
fn rendered() -> Vec<(String, String)> {
    let root = remora_identity::certs::Ca::new_root("root", Duration::from_secs(3600)).unwrap();
    let pem = format!("{}\n", root.cert_pem().trim_end());
    remora_tests::linkerd::PodEnv {
        variant: "ipv4",
        name: "web-0",
        ns: "shop",
        sa: "web",
        ips: vec!["10.42.0.7".parse().unwrap()],
        ports: "8080",
        anchors_pem: &pem,
        identity_dir: std::path::Path::new("/nonexistent/end-entity"),
        token_file: std::path::Path::new("/nonexistent/token"),
    }
    .render()
}

/// Runs `remora proxy` with `env`; its exit status and stderr (it must exit on its own).
fn proxy_exit(env: &[(String, String)]) -> (i32, String) {
    let mut child = std::process::Command::new(remora_tests::bin::remora())
        .arg("proxy")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("remora proxy did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn linkerd_env_bad_values_of_each_kind_exit_64_naming_the_variable() {
    let base = rendered();
    let cases: &[(&str, &str)] = &[
        ("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "100"),
        ("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", "soon"),
        ("LINKERD2_PROXY_INBOUND_PORTS", "8080,70000"),
        (
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            "9-3",
        ),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "nonsense"),
        ("LINKERD2_PROXY_INBOUND_IPS", "10.42.0.7,not-an-ip"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "yes"),
        ("LINKERD2_PROXY_POLICY_WORKLOAD", "{\"ns\":"),
        ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.0"),
        ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", "not a name"),
        (
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
        ),
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "linkerd-dst:http"),
        ("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "open"),
        ("LINKERD2_PROXY_CORES_MAX_RATIO", "2"),
        ("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_FRAME_SIZE", "big"),
        ("LINKERD2_PROXY_LOG_FORMAT", "xml"),
        ("LINKERD2_PROXY_ACCESS_LOG", "xml"),
        // Routing variables Remora does not implement are refused, never ignored.
        (
            "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
            "svc.cluster.local.",
        ),
        ("LINKERD2_PROXY_IDENTITY_DISABLED", "true"),
        // An explicit REMORA_* value wins, and is named when it is the bad one.
        ("REMORA_INBOUND_CONNECT_TIMEOUT", "1 second"),
    ];
    for (var, bad) in cases {
        let mut env = base.clone();
        env.retain(|(k, _)| k != var);
        env.push((var.to_string(), bad.to_string()));
        let (code, stderr) = proxy_exit(&env);
        assert_eq!(code, 64, "{var}={bad:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{var}=")),
            "{var}={bad:?}: {stderr}"
        );
    }
    // Without an identity, a Linkerd pod never runs: exit 64 naming what is missing.
    let env: Vec<_> = base
        .iter()
        .filter(|(k, _)| k != "LINKERD2_PROXY_IDENTITY_LOCAL_NAME")
        .cloned()
        .collect();
    let (code, stderr) = proxy_exit(&env);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("LINKERD2_PROXY_IDENTITY_LOCAL_NAME"),
        "{stderr}"
    );
}
