//! A Linkerd-shaped control plane for tests, built on `linkerd2-proxy-api`, and pods that get
//! exactly the environment Linkerd's injector renders for linkerd2-proxy.
//!
//! The control plane answers as Linkerd's controllers do, in as much as the tests need:
//!
//! - **Identity**: `Certify` with a service-account-style token (a JWT-shaped string naming
//!   `system:serviceaccount:<ns>:<sa>`, checked against the tokens this plane minted, as a
//!   TokenReview would), the identity `<sa>.<ns>.serviceaccount.identity.linkerd.cluster.local`,
//!   and the CSR checked by the issuer; what it signed is recorded.
//! - **Destination**: `Get` answers the services the test adds, each endpoint with its
//!   identity and the hints Linkerd's controller gives meshed pods since 2025 (`h2` and
//!   `opaque_transport` to 4143); `GetProfile` answers a route-less profile for them (with
//!   the port's `opaque_protocol` and the default retry budget, an endpoint profile for a pod
//!   address) and `InvalidArgument` otherwise. Context tokens and profile lookups are recorded.
//! - **Policy**: `InboundServerPolicies` answers the default server (protocol detection, every
//!   client allowed); `OutboundPolicies` answers `NotFound`, so proxies fall back to
//!   Destination.
//!
//! It serves TLS with Linkerd's controller identities from replicas in pods of their own,
//! reachable **only by DNS names** (`linkerd-identity-headless.linkerd.svc.cluster.local.` and
//! the others, every replica behind each name), which [`LinkerdPlane::hosts`] lists for the
//! pods' `/etc/hosts`. A replica can be killed ([`LinkerdPlane::kill`]): its sockets close.
//! One can be made to misbehave on Destination and policy calls ([`LinkerdPlane::set_mode`]):
//! accept them and never answer, or answer each with a stream that ends at once with `OK` and
//! no message ([`Mode`]); and one can be added at a new address ([`LinkerdPlane::add_replica`]).
//! `Get` streams follow the services the test edits (adds and removes, as the controller's
//! diffs).
//!
//! It also answers DNS for those names as a cluster's DNS (CoreDNS) does for headless services:
//! `SRV` with one record per live replica (target `<a-b-c-d>.<name>`, the service's port) and
//! `A` with their addresses, `NXDOMAIN` for other names. linkerd2-proxy resolves a controller's
//! name with an `SRV` query before it looks at `/etc/hosts`; with no answer it would wait out
//! its resolver's timeouts (about 30 s) first. The pods' `resolv.conf` is the host's, so each
//! workload pod gets a responder of its own on the nameserver addresses listed there (on its
//! loopback device).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use linkerd2_proxy_api::destination as dst;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use linkerd2_proxy_api::identity as id;
use linkerd2_proxy_api::identity::identity_server::{Identity, IdentityServer};
use linkerd2_proxy_api::inbound;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::{
    InboundServerPolicies, InboundServerPoliciesServer,
};
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::net as pbnet;
use linkerd2_proxy_api::outbound;
use linkerd2_proxy_api::outbound::outbound_policies_server::{
    OutboundPolicies, OutboundPoliciesServer,
};
use remora_identity::certs::Ca;
use remora_identity::{Name, TrustAnchors};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::apps::{App, listen_in};
use crate::inproc::InProcess;
use crate::net::{Net, Pod};

/// The cluster domain, trust domain and control-plane namespace of Linkerd's default install.
pub const TRUST_DOMAIN: &str = "cluster.local";
pub const IDENTITY_NAME: &str = "linkerd-identity-headless.linkerd.svc.cluster.local.";
pub const DESTINATION_NAME: &str = "linkerd-dst-headless.linkerd.svc.cluster.local.";
pub const POLICY_NAME: &str = "linkerd-policy.linkerd.svc.cluster.local.";
pub const IDENTITY_PORT: u16 = 8080;
pub const DESTINATION_PORT: u16 = 8086;
pub const POLICY_PORT: u16 = 8090;
/// The identity Linkerd's identity controller serves with.
pub const IDENTITY_SVC: &str =
    "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";
/// The identity Linkerd's destination and policy controllers serve with.
pub const DESTINATION_SVC: &str =
    "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";

/// A workload's identity in the default install.
pub fn workload_identity(sa: &str, ns: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.linkerd.{TRUST_DOMAIN}")
}

/// One endpoint of a service: a pod's address and its workload.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub sa: String,
    pub ns: String,
    pub pod: String,
    /// The port is opaque (hint `opaque` instead of `h2`).
    pub opaque: bool,
}

/// What the plane knows and what it saw.
#[derive(Debug, Default)]
struct State {
    /// Token → (namespace, service account).
    tokens: HashMap<String, (String, String)>,
    /// Destination path (`host:port` or `ip:port`) → endpoints.
    services: BTreeMap<String, Vec<Endpoint>>,
    /// Every context token received, with the path.
    contexts: Vec<(String, String)>,
    /// Every `GetProfile` path asked.
    profiles: Vec<String>,
    /// Every identity certified, with the public key of its certificate.
    certified: Vec<(String, Vec<u8>)>,
    /// Every CSR certified, with its identity.
    csrs: Vec<(String, Vec<u8>)>,
    /// Every policy workload received.
    workloads: Vec<String>,
    /// The `Server` of a port (any workload), when a test set one; otherwise the default.
    servers: HashMap<u16, inbound::Server>,
    /// The `OutboundPolicy` of a target (`ip:port`, or an authority `name:port`), when a test
    /// set one; otherwise `NotFound`.
    outbound: HashMap<String, outbound::OutboundPolicy>,
    /// Bumped at every policy change; streams resend what changed.
    changes: Option<tokio::sync::watch::Sender<u64>>,
}

impl State {
    fn changed(&mut self) {
        if let Some(tx) = &self.changes {
            tx.send_modify(|v| *v += 1);
        }
    }

    fn server(&self, port: u16) -> inbound::Server {
        self.servers
            .get(&port)
            .cloned()
            .unwrap_or_else(default_server)
    }
}

/// How a replica answers Destination (`Get`, `GetProfile`) and policy (`WatchPort`, `Watch`)
/// calls. (Identity always answers.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Healthy,
    /// Accepts every call and never answers it (no response headers); its open streams go
    /// silent.
    Silent,
    /// Answers every call with a stream that ends at once with `OK` and no message; its open
    /// streams end so.
    Empty,
}

/// What the test controls of one replica, and what it counts.
#[derive(Debug)]
struct Control {
    mode: tokio::sync::watch::Sender<Mode>,
    /// Destination and policy calls received, by method (`Get`, `GetProfile`, `WatchPort`,
    /// `Watch`).
    calls: Mutex<HashMap<&'static str, usize>>,
}

/// A Linkerd-shaped control plane.
#[derive(Debug)]
pub struct LinkerdPlane {
    pub root: Ca,
    issuer: Arc<Ca>,
    pub anchors: TrustAnchors,
    state: Arc<Mutex<State>>,
    replicas: Vec<Replica>,
    /// The live replicas' addresses, as the cluster's DNS answers them.
    dns_view: Arc<Mutex<Vec<Ipv4Addr>>>,
    /// Of the certificates Identity issues.
    lifetime: Duration,
}

#[derive(Debug)]
struct Replica {
    pod: Pod,
    /// `None` once killed.
    servers: Option<InProcess>,
    control: Arc<Control>,
}

impl LinkerdPlane {
    /// Starts `replicas` replicas, each in a pod of its own on `net`, issuing certificates
    /// valid for an hour.
    pub async fn start(net: &Net, replicas: usize) -> Self {
        Self::start_with(net, replicas, Duration::from_secs(3600)).await
    }

    /// As [`start`](Self::start), issuing certificates valid for `lifetime` (short ones make
    /// proxies renew during a test).
    pub async fn start_with(net: &Net, replicas: usize, lifetime: Duration) -> Self {
        let root = Ca::new_root("linkerd root", Duration::from_secs(86_400)).unwrap();
        let issuer = root
            .new_intermediate(
                "identity.linkerd.cluster.local",
                Duration::from_secs(86_400),
            )
            .unwrap();
        let anchors = TrustAnchors::from_der(vec![root.cert.clone()]).unwrap();
        let mut plane = LinkerdPlane {
            root,
            issuer: Arc::new(issuer),
            anchors,
            state: Arc::new(Mutex::new(State {
                changes: Some(tokio::sync::watch::channel(0).0),
                ..Default::default()
            })),
            replicas: Vec::new(),
            dns_view: Arc::default(),
            lifetime,
        };
        for _ in 0..replicas {
            plane.add_replica(net).await;
        }
        plane
    }

    /// Starts one more replica, healthy, in a pod of its own (a new address), and adds it to
    /// what DNS answers (pods' `/etc/hosts` are the test's to rewrite: [`Self::hosts`]).
    /// Returns its index.
    pub async fn add_replica(&mut self, net: &Net) -> usize {
        let i = self.replicas.len();
        let pod = net.pod(&format!("linkerd-{i}")).start().await;
        let control = Arc::new(Control {
            mode: tokio::sync::watch::channel(Mode::Healthy).0,
            calls: Default::default(),
        });
        let servers = self.serve(&pod, control.clone());
        self.dns_view.lock().unwrap().push(pod.ip4());
        self.replicas.push(Replica {
            pod,
            servers: Some(servers),
            control,
        });
        i
    }

    /// Makes replica `i` answer Destination and policy calls as `mode` says, its open streams
    /// included.
    pub fn set_mode(&self, i: usize, mode: Mode) {
        if let Some(r) = self.replicas.get(i) {
            r.control.mode.send_replace(mode);
        }
    }

    /// The calls of `method` (`Get`, `GetProfile`, `WatchPort`, `Watch`) replica `i` received.
    pub fn calls(&self, i: usize, method: &str) -> usize {
        self.replicas.get(i).map_or(0, |r| {
            r.control
                .calls
                .lock()
                .unwrap()
                .get(method)
                .copied()
                .unwrap_or(0)
        })
    }

    /// A trace collector ([`crate::otlp::Collector`]) in a pod of its own on `net`, serving
    /// OTLP/gRPC on `port` with mTLS as `identity` (certified by the plane's issuer), as
    /// Linkerd's `collector.linkerd-jaeger` does. Returns it and its address.
    pub async fn collector(
        &self,
        net: &Net,
        identity: &str,
        port: u16,
    ) -> (crate::otlp::Collector, Pod, SocketAddr) {
        let pod = net.pod("collector").start().await;
        let key = crate::tls::certify(&self.issuer, identity, Duration::from_secs(86_400));
        let tls = remora_identity::tls::configs(&key, &self.anchors, &[b"h2"])
            .unwrap()
            .server;
        let mut collector = crate::otlp::Collector::default();
        collector.serve_tls_in(&pod.ns, port, tls);
        let addr = SocketAddr::new(IpAddr::V4(pod.ip4()), port);
        (collector, pod, addr)
    }

    /// Starts the three services on `pod`'s sockets, each with its controller's identity.
    fn serve(&self, pod: &Pod, control: Arc<Control>) -> InProcess {
        let listeners: Vec<(std::net::TcpListener, &'static str)> = [
            (IDENTITY_PORT, IDENTITY_SVC),
            (DESTINATION_PORT, DESTINATION_SVC),
            (POLICY_PORT, DESTINATION_SVC),
        ]
        .into_iter()
        .map(|(port, name)| {
            let l = listen_in(&pod.ns, port).expect("listen in the control plane's pod");
            (l.into_std().expect("a std listener"), name)
        })
        .collect();
        let services = Services {
            state: self.state.clone(),
            issuer: self.issuer.clone(),
            lifetime: self.lifetime,
            control,
        };
        let certs: Vec<_> = listeners
            .iter()
            .map(|(_, name)| {
                let key = crate::tls::certify(&self.issuer, name, Duration::from_secs(86_400));
                remora_identity::tls::configs(&key, &self.anchors, &[b"h2"])
                    .unwrap()
                    .server
            })
            .collect();
        InProcess::run(&format!("linkerd@{}", pod.ip4()), move |_| async move {
            let mut tasks = tokio::task::JoinSet::new();
            for ((listener, _), tls) in listeners.into_iter().zip(certs) {
                let services = services.clone();
                tasks.spawn(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let incoming = tls_incoming(listener, tls);
                    let _ = tonic::transport::Server::builder()
                        .serve_with_incoming(services.router(), incoming)
                        .await;
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    }

    /// The names a pod's `/etc/hosts` needs, each with the address of every live replica (a
    /// headless service's DNS answer).
    pub fn hosts(&self) -> Vec<(String, IpAddr)> {
        self.hosts_of(self.replicas.iter().filter(|r| r.servers.is_some()))
    }

    /// As [`hosts`](Self::hosts), killed replicas included (DNS that has not caught up).
    pub fn all_hosts(&self) -> Vec<(String, IpAddr)> {
        self.hosts_of(self.replicas.iter())
    }

    fn hosts_of<'a>(&self, replicas: impl Iterator<Item = &'a Replica>) -> Vec<(String, IpAddr)> {
        let mut out = Vec::new();
        for r in replicas {
            for name in [IDENTITY_NAME, DESTINATION_NAME, POLICY_NAME] {
                out.push((name.to_string(), IpAddr::V4(r.pod.ip4())));
            }
        }
        out
    }

    /// The address of replica `i`.
    pub fn replica_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.replicas[i].pod.ip4())
    }

    /// Kills replica `i`: its servers stop, their connections close and new ones are refused.
    pub fn kill(&mut self, i: usize) {
        if let Some(r) = self.replicas.get_mut(i) {
            r.servers.take();
            let ip = r.pod.ip4();
            self.dns_view.lock().unwrap().retain(|a| *a != ip);
        }
    }

    /// Certificates issued so far, per identity.
    pub fn certified_count(&self, identity: &str) -> usize {
        self.certified()
            .iter()
            .filter(|(n, _)| n == identity)
            .count()
    }

    /// A projected service-account token for `sa` in `ns` (JWT-shaped), accepted by Identity.
    pub fn token(&self, sa: &str, ns: &str) -> String {
        use std::hash::{BuildHasher, RandomState};
        let nonce = RandomState::new().hash_one((sa, ns));
        let b64 = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        let token = format!(
            "{}.{}.{nonce:016x}",
            b64("{\"alg\":\"RS256\"}"),
            b64(&format!(
                "{{\"sub\":\"system:serviceaccount:{ns}:{sa}\",\"aud\":[\"identity.l5d.io\"]}}"
            ))
        );
        self.state
            .lock()
            .unwrap()
            .tokens
            .insert(token.clone(), (ns.to_string(), sa.to_string()));
        token
    }

    /// Serves `endpoints` for the destination path `path` (`web.shop.svc.cluster.local:8080`,
    /// or a virtual `ip:port`).
    /// Open `Get` streams for it get the difference.
    pub fn add_service(&self, path: &str, endpoints: Vec<Endpoint>) {
        let mut state = self.state.lock().unwrap();
        state.services.insert(path.to_string(), endpoints);
        state.changed();
    }

    /// The context tokens received, with the path asked.
    pub fn contexts(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().contexts.clone()
    }

    /// The paths profiles were asked for.
    pub fn profile_lookups(&self) -> Vec<String> {
        self.state.lock().unwrap().profiles.clone()
    }

    /// The identities certified, with their certificates' public keys.
    pub fn certified(&self) -> Vec<(String, Vec<u8>)> {
        self.state.lock().unwrap().certified.clone()
    }

    /// Serves `server` for `port` of every workload (`None`: the default again); open
    /// `WatchPort` streams get it at once.
    pub fn set_server(&self, port: u16, server: Option<inbound::Server>) {
        let mut state = self.state.lock().unwrap();
        match server {
            Some(s) => state.servers.insert(port, s),
            None => state.servers.remove(&port),
        };
        state.changed();
    }

    /// Serves `policy` for `target` (`ip:port` or `name:port`; `None`: `NotFound` for new
    /// watches); open `Watch` streams get it at once.
    pub fn set_outbound(&self, target: &str, policy: Option<outbound::OutboundPolicy>) {
        let mut state = self.state.lock().unwrap();
        match policy {
            Some(p) => state.outbound.insert(target.to_string(), p),
            None => state.outbound.remove(target),
        };
        state.changed();
    }

    /// The CSRs certified, with their identities.
    pub fn csrs(&self) -> Vec<(String, Vec<u8>)> {
        self.state.lock().unwrap().csrs.clone()
    }

    /// The policy workloads received.
    pub fn workloads(&self) -> Vec<String> {
        self.state.lock().unwrap().workloads.clone()
    }

    /// The root, as the injector renders it inline: PEM with one trailing newline.
    pub fn anchors_pem(&self) -> String {
        format!("{}\n", self.root.cert_pem().trim_end())
    }
}

/// The environment of a pod's proxy, as Linkerd's injector renders it (the fixture
/// `tests/fixtures/linkerd-env/<variant>.json`, `ipv4` or `dual-stack`), for pod `name` of
/// namespace `ns` running as service account `sa` at `ips` with `ports` declared. The
/// chart's identity paths become `identity_dir` and `token_file`, as the volumes would.
#[derive(Debug)]
pub struct PodEnv<'a> {
    pub variant: &'a str,
    pub name: &'a str,
    pub ns: &'a str,
    pub sa: &'a str,
    pub ips: Vec<IpAddr>,
    pub ports: &'a str,
    pub anchors_pem: &'a str,
    pub identity_dir: &'a Path,
    pub token_file: &'a Path,
}

impl PodEnv<'_> {
    pub fn render(&self) -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/linkerd-env/");
        let text = std::fs::read_to_string(format!("{path}{}.json", self.variant))
            .expect("the Linkerd environment fixture");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
        let ips: Vec<String> = self.ips.iter().map(|i| i.to_string()).collect();
        let subst = |v: &str| {
            v.replace("${POD_NAME}", self.name)
                .replace("${POD_NS}", self.ns)
                .replace("${POD_SA}", self.sa)
                .replace("${POD_UID}", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
                .replace("${POD_IP}", &ips[0])
                .replace("${POD_IPS}", &ips.join(","))
                .replace("${POD_PORTS}", self.ports)
                .replace("${NODE_NAME}", "node-a")
                .replace("${TRUST_ANCHORS_PEM}", self.anchors_pem)
                .replace(
                    "/var/run/linkerd/identity/end-entity",
                    &self.identity_dir.display().to_string(),
                )
                .replace(
                    "/var/run/secrets/tokens/linkerd-identity-token",
                    &self.token_file.display().to_string(),
                )
        };
        doc["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|kv| {
                (
                    kv[0].as_str().unwrap_or_default().to_string(),
                    subst(kv[1].as_str().unwrap_or_default()),
                )
            })
            .collect()
    }
}

/// A workload pod under the plane, described before it starts.
#[derive(Debug)]
pub struct WorkloadSpec {
    pub name: String,
    pub ns: String,
    pub sa: String,
    pub apps: Vec<App>,
    /// The ports its containers declare (`INBOUND_PORTS`).
    pub ports: String,
    /// `ipv4` or `dual-stack`.
    pub variant: &'static str,
    /// A linkerd2-proxy binary to run instead of `remora proxy`.
    pub program: Option<PathBuf>,
    /// Write `key.p8` and `csr.der` before the proxy starts, as Linkerd's image entrypoint
    /// does (linkerd2-proxy needs them; Remora generates them when they are missing).
    pub documents: bool,
    /// Write the service-account token before the proxy starts (else [`Workload::give_token`]).
    pub token: bool,
    /// Wait until the proxy reports ready.
    pub wait_ready: bool,
    /// Variables set after the chart's (overriding them).
    pub env: Vec<(String, String)>,
    /// Name the plane's replicas in the pod's `/etc/hosts` (the default). Without, the pod
    /// finds them by the cluster DNS alone, which follows [`LinkerdPlane::add_replica`] and
    /// [`LinkerdPlane::kill`] (a running process keeps the hosts file it started with:
    /// `ip netns exec` bind-mounts it).
    pub plane_in_hosts: bool,
}

impl WorkloadSpec {
    /// Pod `name` of namespace `shop`, service account `sa`, IPv4, a Remora proxy with the
    /// identity documents pre-written and the token in place, started until ready.
    pub fn new(name: &str, sa: &str) -> Self {
        WorkloadSpec {
            name: name.to_string(),
            ns: "shop".to_string(),
            sa: sa.to_string(),
            apps: Vec::new(),
            ports: String::new(),
            variant: "ipv4",
            program: None,
            documents: true,
            token: true,
            wait_ready: true,
            env: Vec::new(),
            plane_in_hosts: true,
        }
    }

    pub fn app(mut self, app: App, port: u16) -> Self {
        self.apps.push(app);
        self.declare(port)
    }

    /// Declares `port` in `INBOUND_PORTS`, as a container port of an app started elsewhere.
    pub fn declare(mut self, port: u16) -> Self {
        if !self.ports.is_empty() {
            self.ports.push(',');
        }
        self.ports.push_str(&port.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

/// A workload pod: its pod, and the files its volumes would hold (identity directory, token).
#[derive(Debug)]
pub struct Workload {
    pub pod: Pod,
    pub identity: String,
    pub identity_dir: PathBuf,
    pub token_file: PathBuf,
    /// `key.p8` as written before the start, when it was.
    pub key_der: Option<Vec<u8>>,
    files: PathBuf,
    /// The pod's cluster DNS.
    dns: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Puts the projected service-account token in place (the proxy reads it at its next
    /// attempt).
    pub fn give_token(&self, plane: &LinkerdPlane) {
        write_token(&self.token_file, &plane.token(&self.sa(), &self.ns()));
    }

    fn ns(&self) -> String {
        self.identity
            .split('.')
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    fn sa(&self) -> String {
        self.identity
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for task in &self.dns {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl LinkerdPlane {
    /// Starts a workload pod on `net` with exactly the environment Linkerd's injector renders
    /// for linkerd2-proxy (the fixture, expanded as the kubelet would), `remora init`'s
    /// interception (as `linkerd-init` installs it), and `/etc/hosts` naming the plane.
    pub async fn workload(&self, net: &Net, spec: WorkloadSpec) -> Workload {
        let files = std::env::temp_dir().join(crate::netns::unique(&format!("l5d-{}", spec.name)));
        std::fs::create_dir_all(&files).unwrap();
        let identity_dir = proxy_dir(&files, "end-entity");
        let token_file = files.join("token");
        let identity = workload_identity(&spec.sa, &spec.ns);
        let key_der = spec
            .documents
            .then(|| write_identity_documents(&identity_dir, &identity));
        if spec.token {
            write_token(&token_file, &self.token(&spec.sa, &spec.ns));
        }
        // The pod's addresses are known only once it exists: the builder takes them from the
        // network's next host.
        let (ip4, ip6) = net.next_addrs();
        let ips = match spec.variant {
            "dual-stack" => vec![IpAddr::V4(ip4), IpAddr::V6(ip6)],
            _ => vec![IpAddr::V4(ip4)],
        };
        let anchors = self.anchors_pem();
        let mut env = PodEnv {
            variant: spec.variant,
            name: &spec.name,
            ns: &spec.ns,
            sa: &spec.sa,
            ips,
            ports: &spec.ports,
            anchors_pem: &anchors,
            identity_dir: &identity_dir,
            token_file: &token_file,
        }
        .render();
        for (k, v) in &spec.env {
            env.retain(|(n, _)| n != k);
            env.push((k.clone(), v.clone()));
        }
        let hosts = if spec.plane_in_hosts {
            self.hosts()
        } else {
            Vec::new()
        };
        let mut b = net
            .pod(&spec.name)
            .exact_env()
            .hosts(&hosts)
            .meshed()
            // Readiness is awaited below, once the pod's DNS answers.
            .no_wait();
        if let Some(p) = &spec.program {
            b = b.proxy_program(p.clone());
        }
        for app in spec.apps {
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
        let dns = serve_dns(&pod, &self.dns_view);
        if spec.wait_ready {
            assert!(
                pod.wait_ready(Duration::from_secs(30)).await,
                "proxy of pod {} did not become ready; its log:\n{}",
                pod.name,
                pod.proxy().log()
            );
        }
        Workload {
            pod,
            identity,
            identity_dir,
            token_file,
            key_der,
            files,
            dns,
        }
    }
}

/// A directory the proxy (uid 2102) owns, as an `emptyDir` volume would be: for the identity
/// directory.
pub fn proxy_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let uid = nix::unistd::Uid::from_raw(crate::net::PROXY_UID);
    let gid = nix::unistd::Gid::from_raw(crate::net::PROXY_UID);
    nix::unistd::chown(&dir, Some(uid), Some(gid)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Writes `key.p8` and `csr.der` for `identity` into `dir`, as Linkerd's image entrypoint
/// (`linkerd2-proxy-identity`) does before starting linkerd2-proxy; returns the key's DER.
pub fn write_identity_documents(dir: &Path, identity: &str) -> Vec<u8> {
    use remora_identity::certs::{csr, generate_key, key_der};
    let name: Name = identity.parse().unwrap();
    let key = generate_key().unwrap();
    let der = key_der(&key).secret_pkcs8_der().to_vec();
    std::fs::write(dir.join("key.p8"), &der).unwrap();
    std::fs::write(dir.join("csr.der"), csr(&key, &name).unwrap()).unwrap();
    let uid = nix::unistd::Uid::from_raw(crate::net::PROXY_UID);
    for f in ["key.p8", "csr.der"] {
        nix::unistd::chown(&dir.join(f), Some(uid), None).unwrap();
    }
    der
}

// ---- the cluster's DNS ----

/// The nameservers the pods' processes are told of: the host's `/etc/resolv.conf` (`ip netns
/// exec` bind-mounts only what `/etc/netns/<ns>/` holds, and the harness puts no
/// `resolv.conf` there).
fn nameservers() -> Vec<IpAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().split('%').next()?.parse().ok())
        .collect()
}

/// Answers DNS in `pod` on every nameserver address, from the plane's live replicas
/// (`view`). A nameserver address that is not a loopback one is added to the pod's loopback
/// device, so the pod's queries stay in the pod.
fn serve_dns(pod: &Pod, view: &Arc<Mutex<Vec<Ipv4Addr>>>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for ip in nameservers() {
        if !ip.is_loopback() {
            let cidr = match ip {
                IpAddr::V4(_) => format!("{ip}/32"),
                IpAddr::V6(_) => format!("{ip}/128"),
            };
            pod.ip(&["addr", "add", &cidr, "dev", "lo"]);
        }
        let addr = SocketAddr::new(ip, 53);
        let socket = crate::netns::in_netns(&pod.ns, move || {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .and_then(tokio::net::UdpSocket::from_std)
        .unwrap_or_else(|e| panic!("the cluster DNS of pod {} on {addr}: {e}", pod.name));
        let view = view.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let replicas = view.lock().map(|v| v.clone()).unwrap_or_default();
                if let Some(reply) = dns_answer(&buf[..n], &replicas) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        }));
    }
    tasks
}

/// The record TTL, CoreDNS's default for cluster records.
const DNS_TTL: u32 = 5;

/// The reply to one DNS query, as CoreDNS's kubernetes plugin gives for the plane's headless
/// services (each name's port is the one its Linkerd service declares); `None` for what is not
/// a query.
fn dns_answer(query: &[u8], replicas: &[Ipv4Addr]) -> Option<Vec<u8>> {
    const A: u16 = 1;
    const SRV: u16 = 33;
    let header = query.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if flags & 0x8000 != 0 {
        return None;
    }
    // The question: labels (no compression in a query's question), type, class.
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        let label = std::str::from_utf8(query.get(i..i + len)?).ok()?;
        labels.push(label.to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = query.get(12..i + 4)?;
    let name = labels.join(".");
    let services = [
        (IDENTITY_NAME, IDENTITY_PORT),
        (DESTINATION_NAME, DESTINATION_PORT),
        (POLICY_NAME, POLICY_PORT),
    ];
    let service = |n: &str| {
        services
            .iter()
            .find(|(s, _)| s.trim_end_matches('.') == n)
            .map(|(s, port)| (s.trim_end_matches('.'), *port))
    };
    let dashed = |ip: &Ipv4Addr| ip.to_string().replace('.', "-");
    let encode = |name: &str| {
        let mut out = Vec::new();
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    };
    // (type, rdata) of each answer.
    let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut rcode = 0u16;
    let opcode = (flags >> 11) & 0xf;
    let count = u16::from_be_bytes([header[4], header[5]]);
    if opcode != 0 || count != 1 {
        rcode = 4; // NOTIMP
    } else if let Some((svc, port)) = service(&name) {
        for ip in replicas {
            match qtype {
                A => answers.push((A, ip.octets().to_vec())),
                SRV => {
                    let weight = (100 / replicas.len().max(1)) as u16;
                    let mut rdata = Vec::new();
                    rdata.extend_from_slice(&0u16.to_be_bytes());
                    rdata.extend_from_slice(&weight.to_be_bytes());
                    rdata.extend_from_slice(&port.to_be_bytes());
                    rdata.extend(encode(&format!("{}.{svc}", dashed(ip))));
                    answers.push((SRV, rdata));
                }
                _ => {}
            }
        }
    } else if let Some((host, svc)) = name.split_once('.')
        && service(svc).is_some()
        && let Some(ip) = replicas.iter().find(|ip| dashed(ip) == host)
    {
        // A replica's own name (an SRV record's target).
        if qtype == A {
            answers.push((A, ip.octets().to_vec()));
        }
    } else {
        rcode = 3; // NXDOMAIN
    }
    // QR, the opcode, AA, RD as asked, RA, the rcode.
    let flags = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&header[..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (rtype, rdata) in answers {
        // The name: a pointer to the question's.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&DNS_TTL.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend(rdata);
    }
    Some(out)
}

// ---- the services ----

#[derive(Clone, Debug)]
struct Services {
    state: Arc<Mutex<State>>,
    issuer: Arc<Ca>,
    lifetime: Duration,
    control: Arc<Control>,
}

impl Services {
    /// Counts a Destination or policy call of `method`, and answers it as the replica's mode says: `None`
    /// to answer it normally (through [`Self::guard`]), else an empty stream; never, when
    /// silent (the call waits until the client leaves).
    async fn misbehave<T: Send + 'static>(&self, method: &'static str) -> Option<Stream<T>> {
        *self
            .control
            .calls
            .lock()
            .unwrap()
            .entry(method)
            .or_default() += 1;
        let mode = *self.control.mode.borrow();
        match mode {
            Mode::Healthy => None,
            Mode::Silent => std::future::pending().await,
            Mode::Empty => Some(ReceiverStream::new(tokio::sync::mpsc::channel(1).1)),
        }
    }

    /// `inner` while the replica is healthy: once it is not, the stream goes silent (until the
    /// client leaves) or ends at once with `OK`, as its mode says.
    fn guard<T: Send + 'static>(&self, inner: Stream<T>) -> Stream<T> {
        let mut mode = self.control.mode.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut inner = inner.into_inner();
            loop {
                tokio::select! {
                    m = inner.recv() => match m {
                        Some(m) => if tx.send(m).await.is_err() { return },
                        None => return,
                    },
                    changed = mode.changed() => {
                        if changed.is_err() { return }
                        match *mode.borrow_and_update() {
                            Mode::Healthy => {}
                            Mode::Empty => return,
                            Mode::Silent => break,
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
            tx.closed().await;
        });
        ReceiverStream::new(rx)
    }

    fn router(self) -> Router {
        Router {
            identity: IdentityServer::new(self.clone()),
            destination: DestinationServer::new(self.clone()),
            inbound: InboundServerPoliciesServer::new(self.clone()),
            outbound: OutboundPoliciesServer::new(self),
        }
    }

    fn weighted(e: &Endpoint) -> dst::WeightedAddr {
        let identity = workload_identity(&e.sa, &e.ns);
        dst::WeightedAddr {
            addr: Some(pbnet::TcpAddress::from(e.addr)),
            weight: 10_000,
            metric_labels: [("pod".to_string(), e.pod.clone())].into(),
            tls_identity: Some(dst::TlsIdentity {
                strategy: Some(dst::tls_identity::Strategy::DnsLikeIdentity(
                    dst::tls_identity::DnsLikeIdentity {
                        name: identity.clone(),
                    },
                )),
                server_name: Some(dst::tls_identity::DnsLikeIdentity { name: identity }),
            }),
            protocol_hint: Some(dst::ProtocolHint {
                protocol: Some(if e.opaque {
                    dst::protocol_hint::Protocol::Opaque(dst::protocol_hint::Opaque {})
                } else {
                    dst::protocol_hint::Protocol::H2(dst::protocol_hint::H2 {})
                }),
                opaque_transport: Some(dst::protocol_hint::OpaqueTransport { inbound_port: 4143 }),
            }),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl Identity for Services {
    async fn certify(
        &self,
        req: Request<id::CertifyRequest>,
    ) -> Result<Response<id::CertifyResponse>, Status> {
        let req = req.into_inner();
        let token = String::from_utf8(req.token).unwrap_or_default();
        let Some((ns, sa)) = self.state.lock().unwrap().tokens.get(&token).cloned() else {
            return Err(Status::failed_precondition(
                "the token is not a known service account's",
            ));
        };
        let want = workload_identity(&sa, &ns);
        if req.identity != want {
            return Err(Status::failed_precondition(format!(
                "the token authenticates {want}, not {}",
                req.identity
            )));
        }
        let name: Name = want
            .parse()
            .map_err(|_| Status::invalid_argument("identity"))?;
        let issued = self
            .issuer
            .issue(&req.certificate_signing_request, &name, self.lifetime)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let key = remora_identity::verify::public_key(&issued.leaf).unwrap_or_default();
        let mut state = self.state.lock().unwrap();
        state
            .csrs
            .push((want.clone(), req.certificate_signing_request));
        state.certified.push((want, key));
        drop(state);
        let until = issued
            .valid_until
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Response::new(id::CertifyResponse {
            leaf_certificate: issued.leaf.to_vec(),
            intermediate_certificates: issued.intermediates.iter().map(|c| c.to_vec()).collect(),
            valid_until: Some(prost_types::Timestamp {
                seconds: until.as_secs() as i64,
                nanos: 0,
            }),
        }))
    }
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// A stream that sends `first` and then stays open until the client leaves.
fn open_stream<T: Send + 'static>(first: T) -> Stream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let _ = tx.send(Ok(first)).await;
        tx.closed().await;
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl Destination for Services {
    type GetStream = Stream<dst::Update>;
    type GetProfileStream = Stream<dst::DestinationProfile>;

    async fn get(
        &self,
        req: Request<dst::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let req = req.into_inner();
        if let Some(s) = self.misbehave("Get").await {
            return Ok(Response::new(s));
        }
        {
            let mut state = self.state.lock().unwrap();
            state
                .contexts
                .push((req.path.clone(), req.context_token.clone()));
            if !state.services.contains_key(&req.path) {
                return Err(Status::invalid_argument(format!("unknown {}", req.path)));
            }
        }
        let stream = following_endpoints(self.state.clone(), req.path);
        Ok(Response::new(self.guard(stream)))
    }

    async fn get_profile(
        &self,
        req: Request<dst::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let req = req.into_inner();
        if let Some(s) = self.misbehave("GetProfile").await {
            return Ok(Response::new(s));
        }
        let mut state = self.state.lock().unwrap();
        state.profiles.push(req.path.clone());
        state
            .contexts
            .push((req.path.clone(), req.context_token.clone()));
        let Some(eps) = state.services.get(&req.path) else {
            return Err(Status::invalid_argument(format!(
                "no profile for {}",
                req.path
            )));
        };
        // A pod's address gets an endpoint profile (the pod itself, with its identity and
        // hints), as Linkerd's controller answers for pod IPs; a name gets its service's.
        let pod = req.path.parse::<SocketAddr>().ok();
        let endpoint = match (pod, eps.as_slice()) {
            (Some(addr), [e]) if e.addr == addr => Some(Services::weighted(e)),
            _ => None,
        };
        // As the controller's profile translators do, the port's opaqueness and the default
        // retry budget (10 retries a second, 20 %, a 10 s window) come with every profile.
        let profile = dst::DestinationProfile {
            fully_qualified_name: match pod {
                Some(_) => String::new(),
                None => req
                    .path
                    .rsplit_once(':')
                    .map_or(String::new(), |(h, _)| h.to_string()),
            },
            opaque_protocol: eps.iter().any(|e| e.opaque),
            retry_budget: Some(dst::RetryBudget {
                retry_ratio: 0.2,
                min_retries_per_second: 10,
                ttl: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
            }),
            endpoint,
            ..Default::default()
        };
        Ok(Response::new(self.guard(open_stream(profile))))
    }
}

/// A `Get` stream for `path`: its endpoints now, then what changes (`Add` for a new or changed
/// endpoint, `Remove` for a gone one), until the client leaves.
fn following_endpoints(state: Arc<Mutex<State>>, path: String) -> Stream<dst::Update> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut changes = state
        .lock()
        .unwrap()
        .changes
        .as_ref()
        .map(|c| c.subscribe());
    tokio::spawn(async move {
        let mut last: BTreeMap<SocketAddr, dst::WeightedAddr> = BTreeMap::new();
        let mut first = true;
        loop {
            let now: BTreeMap<SocketAddr, dst::WeightedAddr> = state
                .lock()
                .unwrap()
                .services
                .get(&path)
                .map(|eps| {
                    eps.iter()
                        .map(|e| (e.addr, Services::weighted(e)))
                        .collect()
                })
                .unwrap_or_default();
            let gone: Vec<pbnet::TcpAddress> = last
                .keys()
                .filter(|a| !now.contains_key(a))
                .map(|a| pbnet::TcpAddress::from(*a))
                .collect();
            let added: Vec<dst::WeightedAddr> = now
                .iter()
                .filter(|(a, w)| last.get(a) != Some(w))
                .map(|(_, w)| w.clone())
                .collect();
            let mut updates = Vec::new();
            if !gone.is_empty() {
                updates.push(dst::update::Update::Remove(dst::AddrSet { addrs: gone }));
            }
            if !added.is_empty() || first {
                updates.push(dst::update::Update::Add(dst::WeightedAddrSet {
                    addrs: added,
                    metric_labels: [("namespace".to_string(), "shop".to_string())].into(),
                }));
            }
            first = false;
            for u in updates {
                if tx.send(Ok(dst::Update { update: Some(u) })).await.is_err() {
                    return;
                }
            }
            last = now;
            if !changed(&mut changes, &tx).await {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Waits for the next change of the control plane's state: false once the client left (or,
/// for a state that never changes, only then).
async fn changed<T>(
    changes: &mut Option<tokio::sync::watch::Receiver<u64>>,
    tx: &tokio::sync::mpsc::Sender<T>,
) -> bool {
    let Some(ch) = changes.as_mut() else {
        tx.closed().await;
        return false;
    };
    tokio::select! {
        r = ch.changed() => r.is_ok(),
        _ = tx.closed() => false,
    }
}

/// A stream that sends `current()` now and again whenever it changes, until the client
/// leaves.
fn following<T, F>(state: Arc<Mutex<State>>, current: F) -> Stream<T>
where
    T: Clone + PartialEq + Send + 'static,
    F: Fn(&State) -> Option<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut changes = state
        .lock()
        .unwrap()
        .changes
        .as_ref()
        .map(|c| c.subscribe());
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            let now = current(&state.lock().unwrap());
            if let Some(now) = now
                && last.as_ref() != Some(&now)
            {
                if tx.send(Ok(now.clone())).await.is_err() {
                    return;
                }
                last = Some(now);
            }
            if !changed(&mut changes, &tx).await {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The default server Linkerd's policy controller sends for a port with no Server:
/// detection (10 s), and every client allowed (`all-unauthenticated`).
pub fn default_server() -> inbound::Server {
    let all = |net: pbnet::IpNetwork| inbound::Network {
        net: Some(net),
        except: Vec::new(),
    };
    let v4: ipnet::IpNet = "0.0.0.0/0".parse().unwrap();
    let v6: ipnet::IpNet = "::/0".parse().unwrap();
    inbound::Server {
        protocol: Some(inbound::ProxyProtocol {
            kind: Some(inbound::proxy_protocol::Kind::Detect(
                inbound::proxy_protocol::Detect {
                    timeout: Some(prost_types::Duration {
                        seconds: 10,
                        nanos: 0,
                    }),
                    http_routes: Vec::new(),
                    http_local_rate_limit: None,
                },
            )),
        }),
        server_ips: Vec::new(),
        authorizations: vec![inbound::Authz {
            networks: vec![all(v4.into()), all(v6.into())],
            authentication: Some(inbound::Authn {
                permit: Some(inbound::authn::Permit::Unauthenticated(
                    inbound::authn::PermitUnauthenticated {},
                )),
            }),
            labels: Default::default(),
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default("all-unauthenticated".into())),
            }),
        }],
        labels: [
            ("group".to_string(), String::new()),
            ("kind".to_string(), "default".to_string()),
            ("name".to_string(), "all-unauthenticated".to_string()),
        ]
        .into(),
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for Services {
    type WatchPortStream = Stream<inbound::Server>;

    async fn get_port(
        &self,
        req: Request<inbound::PortSpec>,
    ) -> Result<Response<inbound::Server>, Status> {
        let req = req.into_inner();
        let mut state = self.state.lock().unwrap();
        state.workloads.push(req.workload);
        Ok(Response::new(state.server(req.port as u16)))
    }

    async fn watch_port(
        &self,
        req: Request<inbound::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let req = req.into_inner();
        self.state.lock().unwrap().workloads.push(req.workload);
        if let Some(s) = self.misbehave("WatchPort").await {
            return Ok(Response::new(s));
        }
        let port = req.port as u16;
        Ok(Response::new(
            self.guard(following(self.state.clone(), move |s| Some(s.server(port)))),
        ))
    }
}

#[tonic::async_trait]
impl OutboundPolicies for Services {
    type WatchStream = Stream<outbound::OutboundPolicy>;

    async fn get(
        &self,
        req: Request<outbound::TrafficSpec>,
    ) -> Result<Response<outbound::OutboundPolicy>, Status> {
        let req = req.into_inner();
        let mut state = self.state.lock().unwrap();
        state.workloads.push(req.source_workload.clone());
        let key = target_key(&req).ok_or_else(|| Status::invalid_argument("no target"))?;
        state
            .outbound
            .get(&key)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no policy for this target"))
    }

    async fn watch(
        &self,
        req: Request<outbound::TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let key = target_key(&req).ok_or_else(|| Status::invalid_argument("no target"))?;
        {
            let mut state = self.state.lock().unwrap();
            state.workloads.push(req.source_workload.clone());
            if !state.outbound.contains_key(&key) {
                return Err(Status::not_found("no policy for this target"));
            }
        }
        if let Some(s) = self.misbehave("Watch").await {
            return Ok(Response::new(s));
        }
        Ok(Response::new(
            self.guard(following(self.state.clone(), move |s| {
                s.outbound.get(&key).cloned()
            })),
        ))
    }
}

/// A `TrafficSpec`'s target as the plane keys it: `ip:port` or the authority.
fn target_key(spec: &outbound::TrafficSpec) -> Option<String> {
    use outbound::traffic_spec::Target;
    match spec.target.as_ref()? {
        Target::Addr(a) => std::net::SocketAddr::try_from(*a)
            .ok()
            .map(|a| a.to_string()),
        Target::Authority(a) => Some(a.clone()),
    }
}

/// Routes gRPC requests to the four services by path.
#[derive(Clone, Debug)]
struct Router {
    identity: IdentityServer<Services>,
    destination: DestinationServer<Services>,
    inbound: InboundServerPoliciesServer<Services>,
    outbound: OutboundPoliciesServer<Services>,
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path();
        if path.starts_with("/io.linkerd.proxy.identity.Identity/") {
            return self.identity.call(req);
        }
        if path.starts_with("/io.linkerd.proxy.destination.Destination/") {
            return self.destination.call(req);
        }
        if path.starts_with("/io.linkerd.proxy.inbound.InboundServerPolicies/") {
            return self.inbound.call(req);
        }
        if path.starts_with("/io.linkerd.proxy.outbound.OutboundPolicies/") {
            return self.outbound.call(req);
        }
        let status = Status::unimplemented(format!("no service serves {path}"));
        Box::pin(async move { Ok(status.into_http()) })
    }
}

/// A TLS connection to the plane.
#[derive(Debug)]
pub(crate) struct TlsIo(TlsStream<TcpStream>);

impl Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

pub(crate) fn tls_incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<TlsIo, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                {
                    let _ = tx.send(Ok(TlsIo(tls))).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
