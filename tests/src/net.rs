//! [`Net`] (a cluster network: a bridge in its own namespace) and [`Pod`] (a namespace on it,
//! optionally meshed with `remora init` + `remora proxy` as uid 2102).
//!
//! Addresses: [`Net::new`]'s bridge is `10.213.0.1/24` and `fd00:5ee::1/64`; pod `n` (from 2)
//! gets `10.213.0.n` and `fd00:5ee::n`. [`Net::with_subnet(k)`](Net::with_subnet) uses
//! `10.k.0.0/24` and `fd00:5ee:<k in hex>::/64` instead (bridge `.1`, pods from `.2`), for tests
//! that join several networks with a [`Router`](crate::router::Router), which takes
//! `10.255.0.0/16` for its links (so `k` is never 255). Networks never share a bridge, so
//! parallel tests may reuse these addresses.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::admin::{self, Metrics};
use crate::apps::{App, AppHandle, connect_in};
use crate::{bin, eventually, netns};

/// uid the proxy runs as (what `remora init` exempts).
pub const PROXY_UID: u32 = 2102;
pub const ADMIN_PORT: u16 = 4191;

#[derive(Debug)]
struct NetInner {
    bridge_ns: String,
    /// `10.<octet>.0.0/24`.
    octet: u8,
    /// The IPv6 /64 (host part zero).
    prefix6: Ipv6Addr,
    next_host: AtomicU8,
    pods: Mutex<Vec<String>>,
}

impl NetInner {
    fn host4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 0, host)
    }

    /// Host `n`'s IPv6 address ends in the digits of `n` (pod 12 is `...::12`, as its IPv4
    /// address ends in `.12`).
    fn host6(&self, host: u8) -> Ipv6Addr {
        let digits = u16::from_str_radix(&host.to_string(), 16).unwrap_or(0);
        Ipv6Addr::from(u128::from(self.prefix6) | u128::from(digits))
    }
}

impl Drop for NetInner {
    fn drop(&mut self) {
        let pods = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        for ns in pods {
            netns::delete(&ns);
        }
        netns::delete(&self.bridge_ns);
    }
}

/// A cluster network. Deleted, with every pod on it, when the last handle goes.
#[derive(Clone, Debug)]
pub struct Net {
    inner: Arc<NetInner>,
}

impl Net {
    /// Makes a new network on `10.213.0.0/24` and `fd00:5ee::/64`, or returns `None` when
    /// namespaces are unavailable and not required (see [`netns::require`]).
    pub fn new() -> Option<Net> {
        Net::make(213, Ipv6Addr::new(0xfd00, 0x5ee, 0, 0, 0, 0, 0, 0))
    }

    /// Makes a new network on `10.<octet>.0.0/24` and `fd00:5ee:<octet in hex>::/64` (bridge
    /// `.1`, pods from `.2`), or `None` as [`Net::new`]. Panics on 255, which the
    /// [`Router`](crate::router::Router)'s links use.
    pub fn with_subnet(octet: u8) -> Option<Net> {
        assert_ne!(octet, 255, "10.255.0.0/16 is reserved for router links");
        Net::make(
            octet,
            Ipv6Addr::new(0xfd00, 0x5ee, u16::from(octet), 0, 0, 0, 0, 0),
        )
    }

    fn make(octet: u8, prefix6: Ipv6Addr) -> Option<Net> {
        if !netns::require() {
            return None;
        }
        let ns = netns::unique("br");
        let inner = Arc::new(NetInner {
            bridge_ns: ns.clone(),
            octet,
            prefix6,
            next_host: AtomicU8::new(2),
            pods: Mutex::new(Vec::new()),
        });
        let net = Net { inner };
        netns::ip(&["netns", "add", &ns]);
        netns::ip(&["-n", &ns, "link", "set", "lo", "up"]);
        netns::ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
        let gw4 = format!("{}/24", net.gateway4());
        netns::ip(&["-n", &ns, "addr", "add", &gw4, "dev", "br0"]);
        let gw6 = format!("{}/64", net.inner.host6(1));
        netns::ip(&["-n", &ns, "addr", "add", &gw6, "dev", "br0", "nodad"]);
        netns::ip(&["-n", &ns, "link", "set", "br0", "up"]);
        Some(net)
    }

    /// The network's IPv4 subnet (a /24): `10.<octet>.0.0`.
    pub fn subnet4(&self) -> Ipv4Addr {
        self.inner.host4(0)
    }

    /// The bridge's IPv4 address, every pod's default gateway: `10.<octet>.0.1`.
    pub fn gateway4(&self) -> Ipv4Addr {
        self.inner.host4(1)
    }

    /// The namespace holding the bridge (and the pods' gateway addresses).
    pub fn bridge_ns(&self) -> &str {
        &self.inner.bridge_ns
    }

    /// Starts describing a pod on this network.
    pub fn pod(&self, name: &str) -> PodBuilder {
        PodBuilder {
            net: self.inner.clone(),
            name: name.to_string(),
            apps: Vec::new(),
            meshed: false,
            gateway: false,
            env: Vec::new(),
            init_args: Vec::new(),
            exact_env: false,
            hosts: Vec::new(),
            proxy_program: None,
            no_wait: false,
        }
    }

    /// The IPv4 and IPv6 addresses the next pod started on this network gets.
    pub fn next_addrs(&self) -> (Ipv4Addr, Ipv6Addr) {
        let host = self.inner.next_host.load(Ordering::Relaxed);
        (self.inner.host4(host), self.inner.host6(host))
    }

    /// Starts capturing what crosses `pod`'s link to the bridge, matching `filter` (tcpdump
    /// syntax). (Frames switched between bridge ports never reach the bridge device itself, so
    /// the capture sits on the pod's veth peer.)
    pub async fn capture(&self, pod: &Pod, filter: &str) -> Capture {
        let veth = format!("v{}", pod.ip4().octets()[3]);
        let file = std::env::temp_dir().join(format!("{}.pcap", netns::unique("cap")));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.inner.bridge_ns,
            "tcpdump",
            "--immediate-mode",
            "-i",
            &veth,
            "-U",
            "-s",
            "0",
            "-w",
        ])
        .arg(&file)
        .args(filter.split_whitespace());
        let process = Process::spawn("tcpdump", cmd);
        assert!(
            process
                .wait_log("listening on", Duration::from_secs(10))
                .await,
            "tcpdump did not start: {}",
            process.log()
        );
        Capture { process, file }
    }

    /// Every namespace this network made (the bridge's and its pods').
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = self
            .inner
            .pods
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        all.push(self.inner.bridge_ns.clone());
        all
    }
}

/// A pod being described; [`start`](PodBuilder::start) creates it.
#[derive(Debug)]
pub struct PodBuilder {
    net: Arc<NetInner>,
    name: String,
    apps: Vec<App>,
    meshed: bool,
    gateway: bool,
    env: Vec<(String, String)>,
    init_args: Vec<String>,
    /// The proxy gets exactly `env` (no `REMORA_*` defaults of the harness).
    exact_env: bool,
    hosts: Vec<(String, IpAddr)>,
    proxy_program: Option<PathBuf>,
    no_wait: bool,
}

/// Where `ip netns exec` finds a namespace's own `/etc/hosts`.
fn hosts_path(ns: &str) -> PathBuf {
    PathBuf::from(format!("/etc/netns/{ns}/hosts"))
}

/// Writes the `/etc/hosts` the pod's processes see under `ip netns exec`: localhost, and each
/// name (with and without its trailing dot, as resolvers differ on absolute names) with its
/// addresses (a name with several is a headless service: every address is returned).
fn write_hosts(ns: &str, entries: &[(String, IpAddr)]) {
    let path = hosts_path(ns);
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    for (name, ip) in entries {
        let name = name.trim_end_matches('.');
        text.push_str(&format!("{ip} {name} {name}.\n"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create /etc/netns/<ns>");
    }
    // Written whole, then renamed: a resolver never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the pod's hosts file");
    std::fs::rename(&tmp, &path).expect("install the pod's hosts file");
}

impl PodBuilder {
    /// Runs the proxy with exactly the variables given by [`env`](Self::env) (and `PATH`),
    /// without the harness's `REMORA_*` listener and log defaults: for pods given Linkerd's
    /// rendered environment.
    pub fn exact_env(mut self) -> Self {
        self.exact_env = true;
        self
    }

    /// Names the pod's processes resolve (its `/etc/hosts`, as `ip netns exec` mounts it).
    pub fn hosts(mut self, entries: &[(String, IpAddr)]) -> Self {
        self.hosts.extend_from_slice(entries);
        self
    }

    /// Runs `program` (with no arguments, as Linkerd's image runs its proxy) instead of
    /// `remora proxy`: a linkerd2-proxy binary, for the interop suite.
    pub fn proxy_program(mut self, program: PathBuf) -> Self {
        self.proxy_program = Some(program);
        self
    }

    /// Starts the proxy without waiting for it to report ready (see [`Pod::wait_ready`]).
    pub fn no_wait(mut self) -> Self {
        self.no_wait = true;
        self
    }

    pub fn app(mut self, app: App) -> Self {
        self.apps.push(app);
        self
    }

    /// Runs `remora init` and `remora proxy` (as uid 2102) in the pod.
    pub fn meshed(mut self) -> Self {
        self.meshed = true;
        self
    }

    /// Runs `remora gateway` (as uid 2102, no interception) in the pod: the cluster's gateway.
    pub fn gateway(mut self) -> Self {
        self.gateway = true;
        self
    }

    /// Sets a variable in the proxy's environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Gives the pod's proxy workload identity `sa` in namespace `ns` of `cp`'s cluster.
    pub fn identity(mut self, cp: &crate::control::ControlPlane, sa: &str, ns: &str) -> Self {
        self.env.extend(cp.proxy_env(sa, ns));
        self
    }

    /// Identity and discovery from `cp`, as workload `sa` in namespace `ns`.
    pub fn control_plane(mut self, cp: &crate::control::ControlPlane, sa: &str, ns: &str) -> Self {
        self.env.extend(cp.proxy_env(sa, ns));
        self.env.extend(cp.discovery_env());
        self
    }

    /// Extra arguments for `remora init`.
    pub fn init_args(mut self, args: &[&str]) -> Self {
        self.init_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub async fn start(self) -> Pod {
        let host = self.net.next_host.fetch_add(1, Ordering::Relaxed);
        assert!(host < 250, "too many pods on one network");
        let ns = netns::unique(&self.name);
        self.net.pods.lock().unwrap().push(ns.clone());
        let br = &self.net.bridge_ns;
        let veth = format!("v{host}");
        let ip4 = self.net.host4(host);
        let ip6 = self.net.host6(host);
        netns::ip(&["netns", "add", &ns]);
        netns::ip(&["-n", &ns, "link", "set", "lo", "up"]);
        netns::ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &veth, "netns", br,
        ]);
        netns::ip(&["-n", br, "link", "set", &veth, "master", "br0", "up"]);
        netns::ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip4}/24"),
            "dev",
            "eth0",
        ]);
        netns::ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        netns::ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        let gw4 = self.net.host4(1).to_string();
        netns::ip(&["-n", &ns, "route", "add", "default", "via", &gw4]);
        let gw6 = self.net.host6(1).to_string();
        netns::ip(&["-n", &ns, "-6", "route", "add", "default", "via", &gw6]);
        if !self.hosts.is_empty() {
            write_hosts(&ns, &self.hosts);
        }

        let apps = self
            .apps
            .into_iter()
            .map(|app| app.start(&ns).expect("start app"))
            .collect();
        let mut pod = Pod {
            _net: self.net.clone(),
            name: self.name,
            ns,
            ip4,
            ip6,
            apps,
            proxy: None,
            exact_env: self.exact_env,
            proxy_program: self.proxy_program,
            no_wait: self.no_wait,
        };
        if self.gateway {
            pod.run_proxy("gateway", &self.env).await;
        } else if self.meshed {
            pod.mesh(&self.init_args, &self.env).await;
        }
        pod
    }
}

/// A running pod. Its proxy is killed and its namespace deleted when it is dropped.
#[derive(Debug)]
pub struct Pod {
    _net: Arc<NetInner>,
    pub name: String,
    pub ns: String,
    ip4: Ipv4Addr,
    ip6: Ipv6Addr,
    apps: Vec<AppHandle>,
    proxy: Option<Process>,
    exact_env: bool,
    proxy_program: Option<PathBuf>,
    no_wait: bool,
}

impl Pod {
    /// Waits up to `deadline` for the proxy to report ready; false if it did not (or exited).
    pub async fn wait_ready(&self, deadline: Duration) -> bool {
        eventually(deadline, || async {
            matches!(self.admin("GET", "/ready").await, Ok((200, _))) || !self.proxy().is_running()
        })
        .await
            && self.proxy().is_running()
    }

    /// Replaces the names the pod's processes resolve (as DNS changes when a controller pod
    /// moves).
    pub fn set_hosts(&self, entries: &[(String, IpAddr)]) {
        write_hosts(&self.ns, entries);
    }

    pub fn ip4(&self) -> Ipv4Addr {
        self.ip4
    }

    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6
    }

    pub fn addr4(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip4, port))
    }

    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip6, port))
    }

    /// The `i`th app, in the order they were added.
    pub fn app(&self, i: usize) -> &AppHandle {
        &self.apps[i]
    }

    /// Opens a connection from inside the pod (as the app would, so it is intercepted when the
    /// pod is meshed).
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        connect_in(&self.ns, addr).await
    }

    /// Runs a command inside the pod's namespace (as root).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["netns", "exec", &self.ns, program];
        all.extend_from_slice(args);
        netns::run("ip", &all)
    }

    /// Runs `ip <args>` inside the pod.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.ns];
        all.extend_from_slice(args);
        netns::ip(&all);
    }

    /// The pod's proxy. Panics if the pod is not meshed.
    pub fn proxy(&self) -> &Process {
        self.proxy.as_ref().expect("the pod is meshed")
    }

    pub fn proxy_mut(&mut self) -> &mut Process {
        self.proxy.as_mut().expect("the pod is meshed")
    }

    /// Sends a request to the proxy's admin listener from inside the pod.
    pub async fn admin(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let conn = connect_in(&self.ns, SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT))).await?;
        admin::request(conn, method, path).await
    }

    /// The proxy's discovery cache (`GET /debug/destinations`).
    pub async fn destinations(&self) -> serde_json::Value {
        let (status, text) = self
            .admin("GET", "/debug/destinations")
            .await
            .expect("debug");
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("JSON")
    }

    /// The endpoint addresses the proxy currently knows for `target`.
    pub async fn known_endpoints(&self, target: &str) -> Option<Vec<String>> {
        let v = self.destinations().await;
        let t = v["destinations"]
            .as_array()?
            .iter()
            .find(|d| d["target"] == target)?;
        let mut addrs: Vec<String> = t["endpoints"]
            .as_array()?
            .iter()
            .filter_map(|e| e["addr"].as_str().map(str::to_string))
            .collect();
        addrs.sort();
        Some(addrs)
    }

    /// Scrapes the proxy's `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let (status, text) = self
            .admin("GET", "/metrics")
            .await
            .expect("scrape /metrics");
        assert_eq!(status, 200, "GET /metrics: {text}");
        Metrics { text }
    }

    async fn mesh(&mut self, init_args: &[String], env: &[(String, String)]) {
        let bin = bin::remora().to_str().expect("utf-8 path").to_string();
        let mut args: Vec<&str> = vec!["init"];
        args.extend(init_args.iter().map(String::as_str));
        if let Err(e) = self.exec(&bin, &args) {
            panic!("remora init in pod {}: {e}", self.name);
        }
        self.run_proxy("proxy", env).await;
    }

    /// Runs `remora gateway` in this pod as workload `sa` of namespace `ns` of `cp`'s cluster
    /// (replacing a gateway that ran before), and waits until it is ready.
    pub async fn run_gateway(&mut self, cp: &crate::control::ControlPlane, sa: &str, ns: &str) {
        let mut env = cp.proxy_env(sa, ns);
        env.extend(cp.discovery_env());
        self.proxy.take();
        self.run_proxy("gateway", &env).await;
    }

    /// Runs `remora <role>` (`proxy` or `gateway`) in the pod as uid 2102 and waits until ready.
    async fn run_proxy(&mut self, role: &str, env: &[(String, String)]) {
        let bin = bin::remora().to_str().expect("utf-8 path").to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "setpriv"])
            .arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            .arg("--");
        match &self.proxy_program {
            Some(program) => cmd.arg(program),
            None => cmd.args([bin.as_str(), role]),
        };
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        if !self.exact_env {
            cmd.env("REMORA_INBOUND_ADDR", "0.0.0.0:4143,[::]:4143")
                .env("REMORA_OUTBOUND_ADDR", "127.0.0.1:4140,[::1]:4140")
                .env("REMORA_LOG", "info,remora_proxy=debug");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proxy = Process::spawn(&format!("the proxy of pod {}", self.name), cmd);
        self.proxy = Some(proxy);
        if self.no_wait {
            return;
        }
        let ready = eventually(Duration::from_secs(30), || async {
            matches!(self.admin("GET", "/ready").await, Ok((200, _))) || !self.proxy().is_running()
        })
        .await;
        let proxy = self.proxy();
        assert!(
            ready && proxy.is_running(),
            "proxy of pod {} did not become ready; its log:\n{}",
            self.name,
            proxy.log()
        );
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(p) = &self.proxy
        {
            eprintln!("--- log of pod {}'s proxy ---\n{}", self.name, p.log());
        }
        self.proxy.take();
        self.apps.clear();
        netns::delete(&self.ns);
    }
}

/// A packet capture on a network's bridge.
#[derive(Debug)]
pub struct Capture {
    process: Process,
    file: std::path::PathBuf,
}

impl Capture {
    /// Stops the capture and returns the raw pcap bytes.
    pub async fn finish(mut self) -> Vec<u8> {
        // Let the last packets reach the file.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.process.signal(nix::sys::signal::Signal::SIGINT);
        let _ = self.process.wait_exit(Duration::from_secs(10)).await;
        let bytes = std::fs::read(&self.file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.file);
        if bytes.len() <= 24 {
            eprintln!(
                "capture {} is empty; tcpdump said:\n{}",
                self.file.display(),
                self.process.log()
            );
        }
        bytes
    }
}

/// A process (a `remora` proxy or control plane, tcpdump). Killed (SIGKILL) when dropped if
/// still running.
#[derive(Debug)]
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Process {
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        Process {
            child,
            log,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the proxy has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to `deadline` for a log line containing `needle` (logs arrive through a pipe,
    /// a moment after the proxy writes them).
    pub async fn wait_log(&self, needle: &str, deadline: Duration) -> bool {
        eventually(deadline, || async { self.log().contains(needle) }).await
    }

    pub fn is_running(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.pid())).exists() && self.zombie_free()
    }

    fn zombie_free(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal proxy");
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.status {
                return Some(s);
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                return Some(s);
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A role under test: a child process, or a role running inside the test process.
#[derive(Debug)]
pub enum Role {
    Child(Process),
    InProcess(crate::inproc::InProcess),
}

impl Role {
    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        match self {
            Role::Child(p) => p.log(),
            Role::InProcess(r) => r.log(),
        }
    }

    /// Waits up to `deadline` for a log line containing `needle`.
    pub async fn wait_log(&self, needle: &str, deadline: Duration) -> bool {
        match self {
            Role::Child(p) => p.wait_log(needle, deadline).await,
            Role::InProcess(r) => r.wait_log(needle, deadline).await,
        }
    }

    pub fn is_running(&self) -> bool {
        match self {
            Role::Child(p) => p.is_running(),
            Role::InProcess(r) => r.is_running(),
        }
    }
}
