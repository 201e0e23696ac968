//! A mesh PKI and `remora control` processes for tests, made with the `remora` CLI the way an
//! operator would: `remora certs root|issuer|token-key`, a config file, `remora control token`.
//!
//! Everything lives in a world-readable temporary directory (`rmt<pid>-<n>-pki`, swept like the
//! namespaces) so the proxies, running as uid 2102, can read the trust anchors and tokens.
//!
//! [`ClusterPlane::linkerd2_pod`] runs linkerd2-proxy itself under such a control plane: the
//! environment Linkerd's injector renders, its control-plane addresses pointed at
//! `remora control` by IP.
//!
//! A control plane may also accept Kubernetes service-account tokens
//! ([`ControlPlane::accept_sa_tokens`]): the test plays the cluster's service-account issuer
//! with a [`Minter`], whose public key is the JWKS file, and writes projected-token files
//! ([`ControlPlane::sa_token_file`]) as the kubelet would.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use remora_control::config::{
    RawCluster, RawConfig, RawFile, RawIdentity, RawKubernetesAuth, RawLink, RawMulticluster,
    RawServer, RawTokenAuth,
};
use remora_control::policy::RawPolicy;
use remora_control::sa_token::mint::{Minter, SaClaims};

use crate::admin;
use crate::apps::{App, connect_in};
use crate::inproc::InProcess;
use crate::net::{Process, Role};
use crate::{bin, eventually, netns};

/// A root CA shared by clusters, in its own directory.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

fn remora(args: &[&str]) -> String {
    let out = Command::new(bin::remora())
        .args(args)
        .output()
        .expect("run remora");
    assert!(
        out.status.success(),
        "remora {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn world_readable(path: &Path) {
    for entry in walk(path) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn walk(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(netns::unique("pki"));
        std::fs::create_dir_all(&dir).unwrap();
        remora(&["certs", "root", "--out", dir.to_str().unwrap()]);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Pki { dir }
    }

    pub fn root_pem(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    /// A control plane for a cluster under this root, not yet started.
    pub fn control(
        &self,
        cluster: &str,
        trust_domain: &str,
        addr: SocketAddr,
        admin: SocketAddr,
    ) -> ControlPlane {
        let dir = self.dir.join(cluster);
        let d = dir.to_str().unwrap();
        remora(&[
            "certs",
            "issuer",
            "--root",
            self.dir.to_str().unwrap(),
            "--trust-domain",
            trust_domain,
            "--out",
            d,
        ]);
        remora(&["certs", "token-key", "--out", d]);
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let config = RawConfig {
            cluster: RawCluster {
                name: cluster.into(),
                trust_domain: trust_domain.into(),
                control_plane_namespace: "linkerd".into(),
                cluster_domain: "cluster.local".into(),
                outbound_transport_mode: remora_control::config::default_transport_mode(),
            },
            server: RawServer {
                addr: addr.to_string(),
                admin_addr: admin.to_string(),
            },
            identity: RawIdentity {
                trust_anchors: self.root_pem(),
                issuer_cert: "issuer.pem".into(),
                issuer_key: "issuer.key".into(),
                token_key: "token.key".into(),
                cert_lifetime: "24h".into(),
            },
            multicluster: None,
            links: Vec::new(),
            services: Vec::new(),
        };
        let cp = ControlPlane {
            dir,
            root: self.root_pem(),
            cluster: cluster.to_string(),
            trust_domain: trust_domain.to_string(),
            addr,
            admin,
            ns: None,
            process: None,
            config,
            policy: RawPolicy::default(),
            auth: RawTokenAuth::default(),
        };
        cp.write_config();
        cp
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One cluster's `remora control`.
#[derive(Debug)]
pub struct ControlPlane {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub cluster: String,
    pub trust_domain: String,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    ns: Option<String>,
    process: Option<Role>,
    /// What is written to the config file, as values.
    config: RawConfig,
    /// Its `[policy]` section.
    policy: RawPolicy,
    /// Its `identity.token_auth` and `[identity.kubernetes]`.
    auth: RawTokenAuth,
}

impl ControlPlane {
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("control.toml")
    }

    fn write_config(&self) {
        let config = RawFile {
            config: self.config.clone(),
            policy: self.policy.clone(),
            auth: self.auth.clone(),
        }
        .to_toml();
        // Atomically, as editors and config-map updates do.
        let tmp = self.dir.join("control.toml.tmp");
        std::fs::write(&tmp, config).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// Sets the lifetime of the certificates it issues (takes effect at the next start).
    pub fn cert_lifetime(mut self, lifetime: &str) -> Self {
        self.config.identity.cert_lifetime = lifetime.to_string();
        self.write_config();
        self
    }

    /// Makes Certify accept the token kinds `kinds` (`remora`, `kubernetes`); with
    /// `kubernetes`, the service-account tokens `issuers` sign (their keys become the JWKS file
    /// `sa-keys.json`), for the audience `identity.l5d.io` and, when given, the issuer `iss`.
    /// Read at start.
    pub fn accept_sa_tokens(&mut self, kinds: &[&str], issuers: &[&Minter], iss: Option<&str>) {
        self.auth = RawTokenAuth {
            token_auth: Some(kinds.iter().map(|k| k.to_string()).collect()),
            kubernetes: kinds.contains(&"kubernetes").then(|| RawKubernetesAuth {
                jwks: "sa-keys.json".into(),
                issuer: iss.map(str::to_string),
                audience: None,
            }),
        };
        self.set_sa_keys(issuers);
        self.write_config();
    }

    /// Rewrites the JWKS file with the keys of `issuers` (a running control plane reloads it
    /// within a second).
    pub fn set_sa_keys(&self, issuers: &[&Minter]) {
        let tmp = self.dir.join("sa-keys.json.tmp");
        std::fs::write(&tmp, Minter::jwks(issuers)).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, self.dir.join("sa-keys.json")).unwrap();
    }

    /// Writes a projected service-account token for workload `sa` in namespace `ns`, signed by
    /// `issuer` (valid for an hour, audience `identity.l5d.io`, the default issuer), as the
    /// kubelet writes it (no newline); returns its path.
    pub fn sa_token_file(&self, issuer: &Minter, sa: &str, ns: &str) -> PathBuf {
        let claims = SaClaims::new(
            ns,
            sa,
            std::time::SystemTime::now(),
            Duration::from_secs(3600),
        );
        self.write_token_file(&format!("{sa}.{ns}.sa-token"), &issuer.token(&claims))
    }

    /// Writes `token` as token file `name`; returns its path.
    pub fn write_token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.join("tokens").join(name);
        std::fs::write(&path, token).unwrap();
        world_readable(&self.dir);
        path
    }

    /// Sets `cluster.outbound_transport_mode` (`transport-header`, the default, or `legacy`); a
    /// running control plane follows it with its next reload (e.g. [`apply`](Self::apply)).
    pub fn set_transport_mode(&mut self, mode: &str) {
        self.config.cluster.outbound_transport_mode = mode.to_string();
        self.write_config();
    }

    /// Replaces the `[[services]]` of the config file (a running control plane picks the edit
    /// up by itself).
    pub fn set_services(&mut self, services: &[crate::services::Service]) {
        self.config.services = crate::services::raw(services);
        self.write_config();
    }

    /// Applies `services` and waits until the running control plane has reloaded them.
    pub async fn apply(&mut self, services: &[crate::services::Service]) {
        self.reload(|cp| cp.set_services(services)).await;
    }

    /// Replaces the `[policy]` section with `toml` (the section's text, `[policy]` and its
    /// `[[policy.*]]` tables); a running control plane picks the edit up by itself.
    pub fn set_policy(&mut self, toml: &str) {
        #[derive(serde::Deserialize)]
        struct Section {
            #[serde(default)]
            policy: RawPolicy,
        }
        let s: Section = toml::from_str(toml).unwrap_or_else(|e| panic!("{e}:\n{toml}"));
        self.policy = s.policy;
        self.write_config();
    }

    /// Applies a `[policy]` section and waits until the running control plane has reloaded it.
    pub async fn apply_policy(&mut self, toml: &str) {
        self.reload(|cp| cp.set_policy(toml)).await;
    }

    /// Makes `edit` and waits until the running control plane has reloaded its config.
    async fn reload(&mut self, edit: impl FnOnce(&mut Self)) {
        let reloads =
            |m: crate::admin::Metrics| m.get("config_reloads_total", &[("result", "success")]);
        let before = reloads(self.metrics().await);
        edit(self);
        let reloaded = eventually(Duration::from_secs(15), || async {
            reloads(self.metrics().await) > before
        })
        .await;
        assert!(
            reloaded,
            "control plane {} did not reload:\n{}",
            self.cluster,
            self.process().log()
        );
    }

    /// Sets the `[multicluster]` and `[[links]]` of the config (read at start) from TOML, as
    /// `remora link` prints links.
    pub fn set_multicluster(&mut self, toml: &str) {
        #[derive(serde::Deserialize)]
        struct Multicluster {
            multicluster: Option<RawMulticluster>,
            #[serde(default)]
            links: Vec<RawLink>,
        }
        let m: Multicluster = toml::from_str(toml).unwrap_or_else(|e| panic!("{e}:\n{toml}"));
        self.config.multicluster = m.multicluster;
        self.config.links = m.links;
        self.write_config();
    }

    /// The `[[links]]` stanza that links another cluster to this one, from `remora link`.
    pub fn link_stanza(&self, mode: &str) -> String {
        remora(&[
            "link",
            "--config",
            self.config_path().to_str().unwrap(),
            "--mode",
            mode,
        ])
    }

    /// `GET /debug/services`: what this control plane's discovery serves, local and mirrored.
    pub async fn services(&self) -> serde_json::Value {
        let conn = match &self.ns {
            Some(ns) => connect_in(ns, self.admin).await.unwrap(),
            None => tokio::net::TcpStream::connect(self.admin).await.unwrap(),
        };
        let (status, body) = admin::request(conn, "GET", "/debug/services")
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The virtual IP and endpoint IPs of service `name.namespace`, if discovery serves it.
    pub async fn service(&self, name: &str, namespace: &str) -> Option<(String, Vec<String>)> {
        let all = self.services().await;
        let s = all["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name && s["namespace"] == namespace)?
            .clone();
        let mut eps: Vec<String> = s["endpoints"]
            .as_array()?
            .iter()
            .filter_map(|e| e["ip"].as_str().map(str::to_string))
            .collect();
        eps.sort();
        Some((s["vip"].as_str().unwrap_or_default().to_string(), eps))
    }

    /// Waits (up to 15 s) until this control plane serves `name.namespace` with endpoint IPs
    /// (sorted) that `want` accepts; returns its virtual IP. Panics with the last answer.
    pub async fn wait_service(
        &self,
        name: &str,
        namespace: &str,
        want: impl Fn(&[String]) -> bool,
    ) -> String {
        let mut last = None;
        for _ in 0..300 {
            last = self.service(name, namespace).await;
            if let Some((vip, eps)) = &last
                && want(eps)
            {
                return vip.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name}.{namespace} never served as wanted; last {last:?}");
    }

    /// Writes raw text as the config file: for testing rejected edits.
    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Runs the control plane inside namespace `ns` (default: the test's own).
    pub fn in_netns(mut self, ns: &str) -> Self {
        self.ns = Some(ns.to_string());
        self
    }

    /// The identity of workload `sa` in namespace `ns` of this cluster.
    pub fn identity(&self, sa: &str, ns: &str) -> String {
        format!(
            "{sa}.{ns}.serviceaccount.identity.linkerd.{}",
            self.trust_domain
        )
    }

    /// The cluster's issuer, as a CA that can sign test certificates.
    pub fn issuer(&self) -> remora_identity::certs::Ca {
        let cert = std::fs::read_to_string(self.dir.join("issuer.pem")).unwrap();
        let key = std::fs::read_to_string(self.dir.join("issuer.key")).unwrap();
        remora_identity::certs::Ca::from_pem(&cert, &key).unwrap()
    }

    /// The mesh's trust anchors.
    pub fn anchors(&self) -> remora_identity::TrustAnchors {
        remora_identity::TrustAnchors::from_pem(&std::fs::read(&self.root).unwrap()).unwrap()
    }

    /// The control plane's own identity.
    pub fn own_identity(&self) -> String {
        self.identity("remora-control", "linkerd")
    }

    /// Writes a token file for a workload and returns its path.
    pub fn token_file(&self, sa: &str, ns: &str) -> PathBuf {
        let identity = self.identity(sa, ns);
        let token = remora(&[
            "control",
            "token",
            "--config",
            self.config_path().to_str().unwrap(),
            "--identity",
            &identity,
        ]);
        let path = self.dir.join("tokens").join(format!("{sa}.{ns}.token"));
        std::fs::write(&path, token).unwrap();
        world_readable(&self.dir);
        path
    }

    /// The proxy environment for workload `sa` in namespace `ns`, with a Remora token.
    pub fn proxy_env(&self, sa: &str, ns: &str) -> Vec<(String, String)> {
        self.proxy_env_with_token(sa, ns, &self.token_file(sa, ns))
    }

    /// The proxy environment for workload `sa` in namespace `ns`, with the token file `token`.
    pub fn proxy_env_with_token(&self, sa: &str, ns: &str, token: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("REMORA_IDENTITY_NAME".to_string(), self.identity(sa, ns)),
            (
                "REMORA_IDENTITY_TRUST_ANCHORS".into(),
                self.root.display().to_string(),
            ),
            (
                "REMORA_IDENTITY_TOKEN_FILE".into(),
                token.display().to_string(),
            ),
            ("REMORA_IDENTITY_ADDR".into(), self.addr.to_string()),
        ];
        if !self.addr.ip().is_loopback() {
            env.push(("REMORA_IDENTITY_SVC_NAME".into(), self.own_identity()));
        }
        env
    }

    /// The proxy environment for discovery from this control plane.
    pub fn discovery_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("REMORA_DESTINATION_ADDR".to_string(), self.addr.to_string())];
        if !self.addr.ip().is_loopback() {
            env.push(("REMORA_DESTINATION_SVC_NAME".into(), self.own_identity()));
        }
        env
    }

    /// Starts `remora control` and waits until its admin port answers `/ready`.
    pub async fn start(&mut self) {
        world_readable(&self.dir);
        let bin = bin::remora().to_str().unwrap().to_string();
        let config = self.config_path().display().to_string();
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &bin]);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["control", "--config", &config])
            .env("REMORA_LOG", "info");
        self.process = Some(Role::Child(Process::spawn(
            &format!("control plane {}", self.cluster),
            cmd,
        )));
        self.wait_started().await;
    }

    /// Starts the control plane inside the test process (no namespace) and waits until its
    /// admin port answers `/ready`.
    pub async fn start_in_process(&mut self) {
        assert!(
            self.ns.is_none(),
            "an in-process control plane has no namespace"
        );
        world_readable(&self.dir);
        let name = format!("control@{}", self.addr);
        self.process = Some(Role::InProcess(InProcess::control(
            &name,
            &self.config_path(),
        )));
        self.wait_started().await;
    }

    async fn wait_started(&self) {
        let ready = eventually(Duration::from_secs(30), || async {
            self.admin_get("/ready").await == Some(200) || !self.process().is_running()
        })
        .await;
        assert!(
            ready && self.process().is_running(),
            "control plane {} did not start:\n{}",
            self.cluster,
            self.process().log()
        );
    }

    /// Kills the control plane.
    pub fn stop(&mut self) {
        self.process = None;
    }

    pub fn process(&self) -> &Role {
        self.process
            .as_ref()
            .expect("the control plane was started")
    }

    async fn admin_get(&self, path: &str) -> Option<u16> {
        let conn = match &self.ns {
            Some(ns) => connect_in(ns, self.admin).await.ok()?,
            None => tokio::net::TcpStream::connect(self.admin).await.ok()?,
        };
        admin::request(conn, "GET", path).await.ok().map(|(s, _)| s)
    }

    /// Scrapes the control plane's metrics.
    pub async fn metrics(&self) -> admin::Metrics {
        let conn = match &self.ns {
            Some(ns) => connect_in(ns, self.admin).await.unwrap(),
            None => tokio::net::TcpStream::connect(self.admin).await.unwrap(),
        };
        let (_, text) = admin::request(conn, "GET", "/metrics").await.unwrap();
        admin::Metrics { text }
    }
}

/// A control plane running in a pod of its own on `net` (so proxies reach it over TLS).
#[derive(Debug)]
pub struct ClusterPlane {
    pub cp: ControlPlane,
    pub pod: crate::Pod,
}

impl ClusterPlane {
    /// The usual test cluster: `east`, trust domain `east.example`, gRPC on port 8086.
    pub async fn east(net: &crate::Net, pki: &Pki) -> Self {
        Self::start(net, pki, "east", "east.example", 8086).await
    }

    /// A meshed pod named `name` running `remora test-server` (reporting `name`) on port 8080,
    /// as workload `sa` in namespace `shop` of this cluster.
    pub async fn test_pod(&self, net: &crate::Net, name: &str, sa: &str) -> crate::Pod {
        net.pod(name)
            .app(crate::apps::test_server(8080, name))
            .control_plane(&self.cp, sa, "shop")
            .meshed()
            .start()
            .await
    }

    /// A meshed pod named `name` without an app, as workload `client` in namespace `shop`: the
    /// caller of the multicluster tests.
    pub async fn client_pod(&self, net: &crate::Net, name: &str) -> crate::Pod {
        net.pod(name)
            .control_plane(&self.cp, "client", "shop")
            .meshed()
            .start()
            .await
    }

    /// Starts cluster `name` (trust domain `td`) under `pki`, serving gRPC on `port` of its pod.
    pub async fn start(net: &crate::Net, pki: &Pki, name: &str, td: &str, port: u16) -> Self {
        let mut plane = Self::create(net, pki, name, td, port).await;
        plane.cp.start().await;
        plane
    }

    /// As [`ClusterPlane::start`], without starting the control plane (to configure links
    /// first).
    pub async fn create(net: &crate::Net, pki: &Pki, name: &str, td: &str, port: u16) -> Self {
        let pod = net.pod(&format!("cp-{name}")).start().await;
        let cp = pki
            .control(
                name,
                td,
                pod.addr4(port),
                SocketAddr::from(([127, 0, 0, 1], port + 1000)),
            )
            .in_netns(&pod.ns);
        ClusterPlane { cp, pod }
    }
}

/// A pod running linkerd2-proxy under a [`ClusterPlane`], and the files its volumes would
/// hold (removed with it).
#[derive(Debug)]
pub struct Linkerd2Pod {
    pub pod: crate::Pod,
    /// `sa.shop.serviceaccount.identity.linkerd.<trust domain>`.
    pub identity: String,
    files: PathBuf,
}

impl Drop for Linkerd2Pod {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

impl ClusterPlane {
    /// Starts pod `name` of namespace `shop` running `program` (a linkerd2-proxy binary) as
    /// workload `sa`, with `apps` on their ports, and waits until it is ready (certified by
    /// this plane). Its environment is the one Linkerd's injector renders
    /// ([`crate::linkerd::PodEnv`], `ipv4`), with the three control-plane addresses pointed
    /// at `remora control` by IP, this plane's identity as each `*_SVC_NAME`, its trust
    /// anchors inline, a token from `remora control token`, and the identity directory
    /// (`key.p8`, `csr.der`) written as Linkerd's image entrypoint does.
    pub async fn linkerd2_pod(
        &self,
        net: &crate::Net,
        program: &Path,
        name: &str,
        sa: &str,
        apps: Vec<(App, u16)>,
    ) -> Linkerd2Pod {
        let token = self.cp.token_file(sa, "shop");
        self.linkerd2_pod_with_token(net, program, name, sa, apps, &token)
            .await
    }

    /// As [`ClusterPlane::linkerd2_pod`], with the token file `token_file` (e.g. a projected
    /// service-account token from [`ControlPlane::sa_token_file`], whose bytes linkerd2-proxy
    /// sends as its token, as in Kubernetes).
    pub async fn linkerd2_pod_with_token(
        &self,
        net: &crate::Net,
        program: &Path,
        name: &str,
        sa: &str,
        apps: Vec<(App, u16)>,
        token_file: &Path,
    ) -> Linkerd2Pod {
        let cp = &self.cp;
        let ns = "shop";
        let files = std::env::temp_dir().join(netns::unique(&format!("l2p-{name}")));
        std::fs::create_dir_all(&files).unwrap();
        std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o755)).unwrap();
        let identity = cp.identity(sa, ns);
        let identity_dir = crate::linkerd::proxy_dir(&files, "end-entity");
        crate::linkerd::write_identity_documents(&identity_dir, &identity);
        let anchors = format!(
            "{}\n",
            std::fs::read_to_string(&cp.root).unwrap().trim_end()
        );
        let ports: Vec<String> = apps.iter().map(|(_, p)| p.to_string()).collect();
        let ports = ports.join(",");
        // The pod's address is known once it exists: the builder takes the network's next.
        let (ip4, _) = net.next_addrs();
        let mut env = crate::linkerd::PodEnv {
            variant: "ipv4",
            name,
            ns,
            sa,
            ips: vec![IpAddr::V4(ip4)],
            ports: &ports,
            anchors_pem: &anchors,
            identity_dir: &identity_dir,
            token_file,
        }
        .render();
        let addr = cp.addr.to_string();
        let svc = cp.own_identity();
        for (k, v) in [
            ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", &addr),
            ("LINKERD2_PROXY_IDENTITY_SVC_NAME", &svc),
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &addr),
            ("LINKERD2_PROXY_DESTINATION_SVC_NAME", &svc),
            ("LINKERD2_PROXY_POLICY_SVC_ADDR", &addr),
            ("LINKERD2_PROXY_POLICY_SVC_NAME", &svc),
            ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", &identity),
        ] {
            env.retain(|(n, _)| n != k);
            env.push((k.to_string(), v.clone()));
        }
        let mut b = net
            .pod(name)
            .exact_env()
            .meshed()
            .proxy_program(program.to_path_buf())
            .no_wait();
        for (app, _) in apps {
            b = b.app(app);
        }
        for (k, v) in &env {
            b = b.env(k, v);
        }
        let pod = b.start().await;
        assert_eq!(
            pod.ip4(),
            ip4,
            "the pod got the address its environment names"
        );
        assert!(
            pod.wait_ready(Duration::from_secs(30)).await,
            "linkerd2-proxy of pod {name} did not become ready; its log:\n{}\n--- control plane ---\n{}",
            pod.proxy().log(),
            cp.process().log()
        );
        Linkerd2Pod {
            pod,
            identity,
            files,
        }
    }
}
