//! Remora's image as Linkerd's chart uses it, and the manifests in `deploy/`, checked here
//! without a cluster (no daemon, no image runtime): `deploy/image/assemble.sh` builds the
//! image's tree into a folder, and every command of Linkerd's pod contract runs from it as the
//! kubelet would run it ([`remora_tests::image::Container`]: a read-only root, the uid the
//! chart gives, only the capabilities it adds, `no_new_privs`, `/run` an emptyDir):
//!
//! - `linkerd-init`: `/usr/lib/linkerd/linkerd2-proxy-init` with the chart's arguments, as uid
//!   65534 with only `NET_ADMIN` and `NET_RAW`, for the nft and the legacy backends, installs
//!   rules whose traffic is that of `remora init` (an app's connection intercepted, uid 2102's
//!   and ignored ports' not, inbound to 4143 except the ignored ports, loopback left alone);
//! - `linkerd-proxy`: the ENTRYPOINT with no arguments, as uid 2102 with every capability
//!   dropped, becomes ready under a Linkerd-shaped control plane and meshes;
//! - `linkerd-await --timeout=2m --port=4191`, `/bin/sleep`, and, for Linkerd's CNI mode,
//!   `linkerd2-network-validator` with the chart's arguments;
//! - every manifest validates against the Kubernetes schema (`kubernetes-validate --strict`),
//!   every proxy container's environment passes `--check-config` from the image, and one pod of
//!   each example starts from its manifest until `/ready`.
//!
//! Needs root (namespaces, mounts, file capabilities): the tests are `netns_*` and skip
//! without it unless `REMORA_REQUIRE_NETNS=1`, which also makes a missing `kubernetes-validate`
//! or PyYAML a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use remora_tests::apps::{connect_in, listen_in, test_server};
use remora_tests::http::{get, http1, send1};
use remora_tests::image::{Container, PodFacts, containers, expand_env, tree, yaml_documents};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, WorkloadSpec, proxy_dir, workload_identity};
use remora_tests::net::Process;
use remora_tests::{Net, Pod, eventually, netns};

/// The chart's `linkerd-init` arguments with its defaults (iptables-nft, IPv4 only).
const INIT_ARGS_NFT: &[&str] = &[
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

/// `proxyInit.iptablesMode: legacy`: the chart drops the four backend arguments.
fn init_args_legacy() -> Vec<&'static str> {
    INIT_ARGS_NFT[4..].to_vec()
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `linkerd-init` as the chart runs it.
fn init_container() -> Container {
    Container::as_user(65534).caps(&["NET_ADMIN", "NET_RAW"])
}

/// Runs `cmd` to completion within `deadline`; its output.
async fn run(mut cmd: std::process::Command, deadline: Duration) -> Output {
    let child = tokio::task::spawn_blocking(move || cmd.output());
    tokio::time::timeout(deadline, child)
        .await
        .expect("the command finished in time")
        .unwrap()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn netns_image_tree_has_every_path_the_chart_runs() {
    if !netns::require() {
        return;
    }
    let root = tree();
    let l = root.join("usr/lib/linkerd");
    for (path, target) in [
        ("linkerd-await", Some("linkerd2-proxy")),
        ("linkerd2-network-validator", Some("linkerd2-proxy")),
        ("linkerd2-proxy", None),
        ("linkerd2-proxy-init", None),
    ] {
        let p = l.join(path);
        match target {
            Some(t) => assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(t), "{path}"),
            None => assert!(p.is_file(), "{path}"),
        }
    }
    assert!(root.join("usr/bin/remora").exists());
    assert!(l.join("linkerd2-proxy-version.txt").is_file());
    // Only init carries file capabilities: an effective file capability the proxy container
    // cannot grant would make its exec fail with EPERM.
    let getcap = |p: &Path| {
        let out = std::process::Command::new("getcap")
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(getcap(&l.join("linkerd2-proxy")), "");
    let init_caps = getcap(&l.join("linkerd2-proxy-init"));
    assert!(
        init_caps.ends_with("cap_net_admin,cap_net_raw=ep"),
        "{init_caps}"
    );
    // Both are stripped.
    for b in ["linkerd2-proxy", "linkerd2-proxy-init"] {
        let out = std::process::Command::new("readelf")
            .args(["-S", "-W"])
            .arg(l.join(b))
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(".symtab"),
            "{b} has a symbol table"
        );
    }
}

/// Accepts connections on `port` of every address of `ns` and counts them.
fn counter(ns: &str, port: u16) -> Arc<AtomicUsize> {
    let listener = listen_in(ns, port).unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    n
}

/// Connects from inside `pod` as `uid` (through bash's /dev/tcp) and reports whether the
/// connection opened.
async fn connect_as(pod: &Pod, uid: u32, addr: SocketAddr) -> bool {
    let host = addr.ip().to_string();
    let script = format!("exec 3<>/dev/tcp/{host}/{}", addr.port());
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &pod.ns, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args([
            "--clear-groups",
            "--",
            "timeout",
            "5",
            "bash",
            "-c",
            &script,
        ]);
    run(cmd, Duration::from_secs(20)).await.status.success()
}

/// What interception does to a pod's traffic, checked by traffic: `pod`'s app connects out
/// (as root, so not exempt), the proxy's uid 2102 connects out, ignored ports, loopback, and
/// a peer connects in.
async fn traffic_is_intercepted_as_proxy_init_does(pod: &Pod, peer: &Pod) {
    let outbound = counter(&pod.ns, 4140);
    let inbound = counter(&pod.ns, 4143);
    let app = counter(&pod.ns, 8080);
    let admin = counter(&pod.ns, 4191);
    let peer_http = counter(&peer.ns, 80);
    let peer_ignored = counter(&peer.ns, 4567);
    let settle = || tokio::time::sleep(Duration::from_millis(200));

    // The app's connection out is redirected to the outbound listener.
    connect_in(&pod.ns, peer.addr4(80)).await.unwrap();
    settle().await;
    assert_eq!(
        (
            outbound.load(Ordering::SeqCst),
            peer_http.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
    // The proxy's own (uid 2102) is not.
    assert!(connect_as(pod, 2102, peer.addr4(80)).await);
    settle().await;
    assert_eq!(
        (
            outbound.load(Ordering::SeqCst),
            peer_http.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    // Another uid is.
    assert!(connect_as(pod, 1000, peer.addr4(80)).await);
    settle().await;
    assert_eq!(outbound.load(Ordering::SeqCst), 2);
    // An ignored outbound port is not.
    connect_in(&pod.ns, peer.addr4(4567)).await.unwrap();
    settle().await;
    assert_eq!(
        (
            outbound.load(Ordering::SeqCst),
            peer_ignored.load(Ordering::SeqCst)
        ),
        (2, 1)
    );
    // Loopback is left alone.
    connect_in(&pod.ns, SocketAddr::from(([127, 0, 0, 1], 8080)))
        .await
        .unwrap();
    settle().await;
    assert_eq!(
        (outbound.load(Ordering::SeqCst), app.load(Ordering::SeqCst)),
        (2, 1)
    );
    // Inbound: an app port goes to the inbound listener, an ignored one (admin) does not.
    connect_in(&peer.ns, pod.addr4(8080)).await.unwrap();
    connect_in(&peer.ns, pod.addr4(4191)).await.unwrap();
    settle().await;
    assert_eq!(
        (
            inbound.load(Ordering::SeqCst),
            app.load(Ordering::SeqCst),
            admin.load(Ordering::SeqCst)
        ),
        (1, 1, 1)
    );
}

async fn pods(net: &Net) -> (Pod, Pod) {
    let pod = net.pod("pod").start().await;
    let peer = net.pod("peer").start().await;
    (pod, peer)
}

/// The nat rules `ns` holds, as `iptables-<backend>-save` prints them.
async fn nat_rules(ns: &str, backend: &str) -> String {
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        &format!("iptables-{backend}-save"),
        "-t",
        "nat",
    ]);
    let out = run(cmd, Duration::from_secs(20)).await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(|l| format!("{l}\n"))
        .collect()
}

async fn linkerd_init_redirects_like_remora_init(backend: &str, args: &[&str]) {
    let Some(net) = Net::new() else { return };
    let (pod, peer) = pods(&net).await;
    let mut argv = vec!["/usr/lib/linkerd/linkerd2-proxy-init"];
    argv.extend_from_slice(args);
    let out = run(
        init_container().command(&pod.ns, &argv),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "linkerd-init: {}", text(&out));
    let rules = nat_rules(&pod.ns, backend).await;
    assert!(rules.contains("-j PROXY_INIT_REDIRECT"), "{rules}");
    assert!(rules.contains("-j PROXY_INIT_OUTPUT"), "{rules}");
    // An init container that restarts runs again: same rules, no duplicate jumps.
    let again = run(
        init_container().command(&pod.ns, &argv),
        Duration::from_secs(60),
    )
    .await;
    assert!(again.status.success(), "second run: {}", text(&again));
    assert_eq!(nat_rules(&pod.ns, backend).await, rules);
    traffic_is_intercepted_as_proxy_init_does(&pod, &peer).await;

    // remora init with the same ports gives the same traffic.
    let (pod, peer) = pods(&net).await;
    let bin = remora_tests::bin::remora().to_str().unwrap().to_string();
    pod.exec(
        &bin,
        &[
            "init",
            "--no-ipv6",
            "--skip-inbound-ports",
            "4190,4567,4568",
            "--skip-outbound-ports",
            "4567,4568",
        ],
    )
    .unwrap();
    traffic_is_intercepted_as_proxy_init_does(&pod, &peer).await;
}

#[tokio::test]
async fn netns_image_linkerd_init_nft_as_65534_with_net_admin_and_net_raw() {
    linkerd_init_redirects_like_remora_init("nft", INIT_ARGS_NFT).await;
}

#[tokio::test]
async fn netns_image_linkerd_init_legacy_as_65534_with_net_admin_and_net_raw() {
    linkerd_init_redirects_like_remora_init("legacy", &init_args_legacy()).await;
}

#[tokio::test]
async fn netns_image_init_needs_its_capabilities_and_the_proxy_binary_none() {
    let Some(net) = Net::new() else { return };
    let pod = net.pod("pod").start().await;
    let mut argv = vec!["/usr/lib/linkerd/linkerd2-proxy-init"];
    argv.extend_from_slice(INIT_ARGS_NFT);
    // A container that does not add NET_ADMIN and NET_RAW cannot even exec init: its file
    // capabilities are effective ones the container cannot grant (EPERM).
    let out = run(
        Container::as_user(65534).command(&pod.ns, &argv),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.status.code(), Some(126), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out)
    );
    assert!(!nat_rules(&pod.ns, "nft").await.contains("PROXY_INIT"));
    // Which is why the proxy binary carries none: it runs with every capability dropped.
    let out = run(
        Container::as_user(2102)
            .command(&pod.ns, &["/usr/lib/linkerd/linkerd2-proxy", "--version"]),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
}

/// The Linkerd workload manifest's proxy container (`deploy/kubernetes/linkerd/
/// workload.injected.yaml`, what the injector returns): its spec and environment as the
/// kubelet gives it to pod `facts`.
fn injected_proxy(facts: &PodFacts) -> (serde_json::Value, Vec<(String, String)>) {
    let docs = yaml_documents(&deploy().join("kubernetes/linkerd/workload.injected.yaml"))
        .expect("PyYAML");
    let (proxy, _) = containers(&docs)
        .into_iter()
        .find(|(c, _)| c["name"] == "linkerd-proxy")
        .expect("a linkerd-proxy container");
    let env = expand_env(&proxy["env"], facts);
    (proxy, env)
}

fn facts(name: &str, ips: &[String]) -> PodFacts {
    PodFacts {
        name: name.into(),
        namespace: "shop".into(),
        uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        ips: ips.to_vec(),
        node: "node-a".into(),
        service_account: "web".into(),
    }
}

#[tokio::test]
async fn netns_image_the_injected_proxy_runs_from_the_tree_and_meshes() {
    let Some(net) = Net::new() else { return };
    let plane = LinkerdPlane::start(&net, 1).await;
    let (ip4, _) = net.next_addrs();
    let pod = net
        .pod("web-0")
        .app(test_server(8080, "web-0"))
        .hosts(&plane.hosts())
        .start()
        .await;
    assert_eq!(pod.ip4(), ip4);
    let (spec, mut env) = injected_proxy(&facts("web-0", &[ip4.to_string()]));
    // The cluster's own root, as the injector would write it.
    for (k, v) in &mut env {
        if k == "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS" {
            *v = plane.anchors_pem();
        }
    }
    // Its volumes: the identity directory (an emptyDir the proxy owns) and the projected
    // token.
    let files = std::env::temp_dir().join(netns::unique("image-web"));
    std::fs::create_dir_all(&files).unwrap();
    let end_entity = proxy_dir(&files, "end-entity");
    let tokens = files.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(
        tokens.join("linkerd-identity-token"),
        plane.token("web", "shop"),
    )
    .unwrap();
    let mut container = Container::as_user(2102).env(&env);
    for m in spec["volumeMounts"].as_array().unwrap() {
        let host = match m["name"].as_str().unwrap() {
            "linkerd-identity-end-entity" => end_entity.clone(),
            "linkerd-identity-token" => tokens.clone(),
            other => panic!("unexpected volume {other}"),
        };
        container = container.volume(&host, m["mountPath"].as_str().unwrap(), false);
    }
    // linkerd-init first, as the chart orders them.
    let mut argv = vec!["/usr/lib/linkerd/linkerd2-proxy-init"];
    argv.extend_from_slice(INIT_ARGS_NFT);
    let out = run(
        init_container().command(&pod.ns, &argv),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // The chart gives the proxy no command and no arguments: the ENTRYPOINT alone.
    assert!(spec.get("command").is_none() && spec.get("args").is_none());
    let proxy = Process::spawn(
        "the proxy from the image",
        container.command(&pod.ns, &["/usr/lib/linkerd/linkerd2-proxy"]),
    );
    // linkerd-await, as the chart's postStart runs it, returns once the proxy is ready.
    let waited = run(
        Container::as_user(2102).command(
            &pod.ns,
            &[
                "/usr/lib/linkerd/linkerd-await",
                "--timeout=2m",
                "--port=4191",
            ],
        ),
        Duration::from_secs(150),
    )
    .await;
    assert!(
        waited.status.success(),
        "{}\nproxy:\n{}",
        text(&waited),
        proxy.log()
    );
    assert_eq!(pod.admin("GET", "/ready").await.unwrap().0, 200);
    assert_eq!(plane.certified_count(&workload_identity("web", "shop")), 1);
    // preStop's sleep is in the image too.
    let slept = run(
        Container::as_user(2102).command(&pod.ns, &["/bin/sleep", "0"]),
        Duration::from_secs(20),
    )
    .await;
    assert!(slept.status.success(), "{}", text(&slept));

    // A meshed client reaches its app over mTLS.
    plane.add_service(
        &pod.addr4(8080).to_string(),
        vec![Endpoint {
            addr: pod.addr4(8080),
            sa: "web".into(),
            ns: "shop".into(),
            pod: "web-0".into(),
            opaque: false,
        }],
    );
    let client = plane
        .workload(&net, WorkloadSpec::new("client-0", "client"))
        .await;
    let target = pod.addr4(8080);
    let mut h1 = http1(&client.pod.ns, target).await;
    let r = send1(&mut h1, get(&target.to_string(), "/echo"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}\nproxy:\n{}", r.text(), proxy.log());
    assert_eq!(
        r.json()["headers"]["l5d-client-id"],
        workload_identity("client", "shop").as_str()
    );
    assert!(proxy.is_running(), "{}", proxy.log());
    drop(proxy);
    let _ = std::fs::remove_dir_all(&files);
}

#[tokio::test]
async fn netns_image_network_validator_passes_only_when_the_rules_redirect() {
    let Some(net) = Net::new() else { return };
    let validator = |timeout: &'static str| {
        vec![
            "/usr/lib/linkerd/linkerd2-network-validator",
            "--log-format",
            "plain",
            "--log-level",
            "debug",
            "--connect-addr",
            "1.1.1.1:20001",
            "--listen-addr",
            "0.0.0.0:4140",
            "--timeout",
            timeout,
        ]
    };
    // What the chart gives it: uid 65534, every capability dropped.
    let without = net.pod("plain").start().await;
    let out = run(
        Container::as_user(65534).command(&without.ns, &validator("2s")),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.status.code(), Some(95), "{}", text(&out));
    let with = net.pod("redirected").start().await;
    let mut argv = vec!["/usr/lib/linkerd/linkerd2-proxy-init"];
    argv.extend_from_slice(INIT_ARGS_NFT);
    let init = run(
        init_container().command(&with.ns, &argv),
        Duration::from_secs(60),
    )
    .await;
    assert!(init.status.success(), "{}", text(&init));
    let out = run(
        Container::as_user(65534).command(&with.ns, &validator("10s")),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Every Kubernetes manifest in `deploy/`.
fn manifests() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![deploy().join("kubernetes")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn netns_image_every_manifest_validates_against_the_kubernetes_schema() {
    if !netns::require() {
        return;
    }
    // As a module, so a fresh pip install needs no shim on PATH.
    let validate = || {
        let mut c = std::process::Command::new("python3");
        c.args(["-m", "kubernetes_validate"]);
        c
    };
    let found = validate().arg("--version").output();
    if !found.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os(netns::REQUIRE_VAR).is_none(),
            "kubernetes-validate is missing (pip install kubernetes-validate)"
        );
        eprintln!("SKIPPED: kubernetes-validate is not installed");
        return;
    }
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let out = validate().arg("--strict").args(&files).output().unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    // Every resource of every file was checked.
    for f in &files {
        let docs = yaml_documents(f).expect("PyYAML");
        let passed = report.matches(&format!("{} passed", f.display())).count();
        assert_eq!(passed, docs.len(), "{}: {report}", f.display());
    }
    // The Helm values name the chart's proxy image settings.
    let values = yaml_documents(&deploy().join("helm/linkerd-values.yaml")).unwrap();
    assert!(values[0]["proxy"]["image"]["name"].is_string());
    assert!(values[0]["proxy"]["image"]["version"].is_string());
}

/// `GET /ready` on `addr` from outside the pod, as the kubelet probes it.
async fn probe(net: &Net, addr: SocketAddr) -> Option<u16> {
    let conn = connect_in(net.bridge_ns(), addr).await.ok()?;
    remora_tests::admin::request(conn, "GET", "/ready")
        .await
        .ok()
        .map(|r| r.0)
}

/// Files a test puts in each named volume of a pod (a Secret's or ConfigMap's keys, the
/// projected token).
type Contents = Vec<(&'static str, Vec<(&'static str, Vec<u8>)>)>;

/// The container's volumes as the kubelet would mount them: each a fresh directory under
/// `base` holding `contents` for its name; Secret and ConfigMap files root-owned with the
/// volume's `defaultMode` (0644 when unset), their group the pod's `fsGroup` when it has one;
/// an emptyDir writable by all.
fn provision(
    base: &Path,
    pod_spec: &serde_json::Value,
    container: &serde_json::Value,
    contents: &Contents,
) -> Vec<(PathBuf, String)> {
    use std::os::unix::fs::PermissionsExt;
    let fs_group = pod_spec["securityContext"]["fsGroup"]
        .as_u64()
        .map(|g| g as u32);
    let mut out = Vec::new();
    for m in container["volumeMounts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = m["name"].as_str().unwrap();
        let volume = pod_spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let files = contents
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        let mode = volume
            .as_object()
            .and_then(|o| o.values().find_map(|v| v["defaultMode"].as_u64()))
            .unwrap_or(0o644) as u32;
        if volume.get("emptyDir").is_some() {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        } else {
            assert!(
                !files.is_empty(),
                "the test gives no files for volume {name}"
            );
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for (file, bytes) in files {
            let p = dir.join(file);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            if let Some(g) = fs_group {
                nix::unistd::chown(&p, None, Some(nix::unistd::Gid::from_raw(g))).unwrap();
            }
        }
        out.push((dir, m["mountPath"].as_str().unwrap().to_string()));
    }
    out
}

/// The container of a manifest's pod spec as the kubelet runs it: its user, capabilities,
/// `no_new_privs`, environment and volumes.
fn kubelet_container(
    container: &serde_json::Value,
    env: Vec<(String, String)>,
    volumes: &[(PathBuf, String)],
) -> Container {
    let sc = &container["securityContext"];
    let uid = sc["runAsUser"]
        .as_u64()
        .expect("every container names its user") as u32;
    let gid = sc["runAsGroup"].as_u64().map_or(uid, |g| g as u32);
    let caps: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    let mut c = Container::as_user(uid).caps(&caps).env(&env);
    c.gid = gid;
    c.no_new_privs = sc["allowPrivilegeEscalation"] == false;
    for (host, path) in volumes {
        let read_only = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == path.as_str() && m["readOnly"] == true);
        c = c.volume(host, path, read_only);
    }
    c
}

/// The command line of a container: its `command`, or the image's ENTRYPOINT, then its
/// `args`.
fn argv(container: &serde_json::Value, extra: &[&str]) -> Vec<String> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = strings(&container["command"]);
    if out.is_empty() {
        out.push("/usr/lib/linkerd/linkerd2-proxy".into());
    }
    out.extend(strings(&container["args"]));
    out.extend(extra.iter().map(|s| s.to_string()));
    out
}

/// A root, an issuer and a token key as the control-plane example's comments make them, and
/// a token for workload `web.shop`, from `remora` itself.
struct ExamplePki {
    dir: PathBuf,
}

impl ExamplePki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(netns::unique("image-pki"));
        let bin = remora_tests::bin::remora();
        let certs = |args: &[&str]| {
            let out = std::process::Command::new(bin).args(args).output().unwrap();
            assert!(out.status.success(), "{}", text(&out));
        };
        let d = dir.to_str().unwrap().to_string();
        let east = format!("{d}/east");
        certs(&["certs", "root", "--out", &d]);
        certs(&[
            "certs",
            "issuer",
            "--root",
            &d,
            "--trust-domain",
            "east.example",
            "--out",
            &east,
        ]);
        certs(&["certs", "token-key", "--out", &east]);
        ExamplePki { dir }
    }

    fn file(&self, name: &str) -> Vec<u8> {
        let direct = self.dir.join(name);
        std::fs::read(if direct.exists() {
            direct
        } else {
            self.dir.join("east").join(name)
        })
        .unwrap()
    }

    /// The control plane's config from the example, its paths pointing at this PKI, for
    /// `remora control token`.
    fn token(&self, config: &str, identity: &str) -> Vec<u8> {
        let local = config
            .replace("/var/run/remora/issuer/root.pem", &self.path("root.pem"))
            .replace(
                "/var/run/remora/issuer/",
                &format!("{}/east/", self.dir.display()),
            );
        let path = self.dir.join("control.toml");
        std::fs::write(&path, local).unwrap();
        let out = std::process::Command::new(remora_tests::bin::remora())
            .args(["control", "token", "--config"])
            .arg(&path)
            .args(["--identity", identity])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        out.stdout
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for ExamplePki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const WEB_ID: &str = "web.shop.serviceaccount.identity.linkerd.east.example";

fn example(path: &str) -> Vec<serde_json::Value> {
    yaml_documents(&deploy().join(path)).expect("PyYAML")
}

/// The control plane's config (its ConfigMap's `control.toml`).
fn example_control_toml(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["control.toml"].as_str())
        .expect("the control plane's ConfigMap")
        .to_string()
}

#[tokio::test]
async fn netns_image_every_proxy_containers_environment_passes_check_config() {
    let Some(net) = Net::new() else { return };
    let pki = ExamplePki::new();
    let control = example("kubernetes/control-plane.yaml");
    let token = pki.token(&example_control_toml(&control), WEB_ID);
    let plane_pem = {
        let root = remora_identity::certs::Ca::new_root("root", Duration::from_secs(3600)).unwrap();
        format!("{}\n", root.cert_pem().trim_end())
    };
    let contents: Contents = vec![
        ("remora-token", vec![("token", token)]),
        ("remora-anchors", vec![("root.pem", pki.file("root.pem"))]),
        (
            "linkerd-identity-token",
            vec![("linkerd-identity-token", b"a.b.c".to_vec())],
        ),
    ];
    let pod = net.pod("check").start().await;
    let mut checked = 0;
    for file in manifests() {
        let docs = yaml_documents(&file).expect("PyYAML");
        for (container, pod_spec) in containers(&docs) {
            let mut env = expand_env(&container["env"], &facts("web-0", &[pod.ip4().to_string()]));
            let proxy = env
                .iter()
                .any(|(k, _)| k.starts_with("REMORA_") || k.starts_with("LINKERD2_PROXY_"));
            if !proxy {
                continue;
            }
            for (k, v) in &mut env {
                if k == "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS" {
                    // The injected manifest's example root has expired by the time someone
                    // reads this in a year; check with a fresh one.
                    *v = plane_pem.clone();
                }
            }
            let base = std::env::temp_dir().join(netns::unique("image-vol"));
            let volumes = provision(&base, &pod_spec, &container, &contents);
            let argv = argv(&container, &["--check-config"]);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = run(
                kubelet_container(&container, env, &volumes).command(&pod.ns, &argv),
                Duration::from_secs(60),
            )
            .await;
            let _ = std::fs::remove_dir_all(&base);
            assert!(
                out.status.success(),
                "{} container {}: {}",
                file.display(),
                container["name"],
                text(&out)
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 2,
        "the standalone proxy and the Linkerd-injected one"
    );
}

#[tokio::test]
async fn netns_image_the_standalone_example_starts_from_its_manifests() {
    let Some(net) = Net::new() else { return };
    let pki = ExamplePki::new();
    let control_docs = example("kubernetes/control-plane.yaml");
    let app_docs = example("kubernetes/meshed-app.yaml");
    let control_toml = example_control_toml(&control_docs);
    let token = pki.token(&control_toml, WEB_ID);

    // remora control, from its Deployment: config and issuer volumes, uid 2102, read-only.
    let cp_pod = net.pod("remora-control").start().await;
    let (cp_container, cp_spec) = containers(&control_docs).remove(0);
    let base = std::env::temp_dir().join(netns::unique("image-cp"));
    let contents: Contents = vec![
        (
            "config",
            vec![("control.toml", control_toml.clone().into_bytes())],
        ),
        (
            "issuer",
            vec![
                ("root.pem", pki.file("root.pem")),
                ("issuer.pem", pki.file("issuer.pem")),
                ("issuer.key", pki.file("issuer.key")),
                ("token.key", pki.file("token.key")),
            ],
        ),
    ];
    let volumes = provision(&base, &cp_spec, &cp_container, &contents);
    let cmd = argv(&cp_container, &[]);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let control = Process::spawn(
        "remora control from the image",
        kubelet_container(&cp_container, Vec::new(), &volumes).command(&cp_pod.ns, &cmd),
    );
    let admin = SocketAddr::new(cp_pod.ip4().into(), 9990);
    assert!(
        eventually(Duration::from_secs(60), || async {
            probe(&net, admin).await == Some(200)
        })
        .await,
        "{}",
        control.log()
    );

    // The meshed app: its init container (root, NET_ADMIN) and its proxy (2102), reaching
    // the control plane by the Service's DNS name.
    let hosts = vec![(
        "remora-control.linkerd.svc.cluster.local".to_string(),
        std::net::IpAddr::V4(cp_pod.ip4()),
    )];
    let app = net
        .pod("web-0")
        .app(test_server(8080, "web"))
        .hosts(&hosts)
        .start()
        .await;
    let all = containers(&app_docs);
    let (init, app_spec) = all
        .iter()
        .find(|(c, _)| c["name"] == "remora-init")
        .unwrap();
    let cmd = argv(init, &[]);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = run(
        kubelet_container(init, Vec::new(), &[]).command(&app.ns, &cmd),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "remora-init: {}", text(&out));
    let (proxy_c, _) = all
        .iter()
        .find(|(c, _)| c["name"] == "remora-proxy")
        .unwrap();
    let env = expand_env(&proxy_c["env"], &facts("web-0", &[app.ip4().to_string()]));
    let app_base = std::env::temp_dir().join(netns::unique("image-app"));
    let contents: Contents = vec![
        ("remora-token", vec![("token", token)]),
        ("remora-anchors", vec![("root.pem", pki.file("root.pem"))]),
    ];
    let volumes = provision(&app_base, app_spec, proxy_c, &contents);
    let cmd = argv(proxy_c, &[]);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let proxy = Process::spawn(
        "the standalone proxy from the image",
        kubelet_container(proxy_c, env, &volumes).command(&app.ns, &cmd),
    );
    // Its probes, as the kubelet sends them to the pod's address.
    let ready = SocketAddr::new(app.ip4().into(), 4191);
    assert!(
        eventually(Duration::from_secs(60), || async {
            probe(&net, ready).await == Some(200)
        })
        .await,
        "proxy:\n{}\ncontrol:\n{}",
        proxy.log(),
        control.log()
    );
    assert!(proxy.is_running() && control.is_running());
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_dir_all(&app_base);
}
