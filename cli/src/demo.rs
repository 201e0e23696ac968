//! `remora demo`: the whole mesh on one machine, without root: two clusters in explicit mode on
//! loopback addresses, every piece a separate process, with traffic, a live `top` view and a
//! summary.
//!
//! ```text
//!  east (127.X.1.0/24, east.example)                 west (127.X.2.0/24, west.example)
//!  control .1  gateway .2                            control .1  gateway .2
//!  web .10 ─► api .11          (local)               web .10 ─► api-east  (direct, flat)
//!         ─► flaky .12         (retries hide it)     api .11      exported for the gateway
//!         ─► slow .13          (timeouts bound it)   catalog .12  exported flat
//!         ─► api-west          (via west's gateway)
//!         ─► catalog-west      (direct, flat)
//! load: GET web/fanout on both front ends, `--rate` per second each
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::process::{Child, Command};

use crate::EXIT_USAGE;
use crate::top::Direction;
use crate::top::stats::{Aggregate, Grouping, Row, Snapshot};

#[derive(Debug, Args)]
#[command(
    about = "Run the whole mesh locally: two clusters, gateway and flat links, traffic, live view",
    long_about = "Runs two clusters, east and west, on this machine without root or Kubernetes: \
                  per cluster a control plane (own issuer and trust domain under one shared \
                  root) and a gateway, and pods, each a demo app plus its own proxy in explicit \
                  mode on a loopback address of its own, every one a separate process. East's \
                  web front end calls api locally, api-west through west's gateway, \
                  catalog-west directly (flat), a flaky service (retries hide its failures) and \
                  a slow one (timeouts bound it); west's front end calls back into east over the \
                  flat link. Traffic generators drive both front ends while a live view shows \
                  the golden metrics; at the end (--duration, or Ctrl-C) every process is \
                  stopped, the temporary directory removed, and a summary printed."
)]
pub struct DemoArgs {
    /// Stop by itself after this long (e.g. 30s); without it, run until Ctrl-C.
    #[arg(long, value_parser = remora_runtime::duration::parse_duration)]
    duration: Option<Duration>,
    /// Requests per second sent to each front end.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Run in network namespaces with transparent interception (`remora init`), and genuinely
    /// separate networks for the gateway link (root only).
    #[arg(long)]
    netns: bool,
}

pub fn main(args: DemoArgs) -> ExitCode {
    if args.netns && !nix::unistd::Uid::effective().is_root() {
        eprintln!("remora demo: --netns needs root (network namespaces and iptables)");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.rate == 0 || args.rate > 1000 {
        eprintln!("remora demo: --rate must be 1 to 1000");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("remora demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut demo = match Demo::new(args.netns) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("remora demo: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = demo.run(&args).await;
        demo.stop().await;
        match result {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("remora demo: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A pod or component of the demo: its name, address and process.
struct Proc {
    name: String,
    child: Child,
}

/// The demo's processes and its temporary directory (removed on drop).
struct Demo {
    exe: PathBuf,
    dir: PathBuf,
    /// 127.X.0.0: X from the process id, so two demos on one machine do not collide.
    base: u8,
    procs: Vec<Proc>,
    /// How the demo itself reaches the pods.
    dialer: Dialer,
    /// With `--netns`: the namespaces made (deleted at the end).
    netns: Option<Netns>,
}

/// The network namespaces of `--netns`: a bridge per cluster, a router between them, a pod per
/// component, and an observer pod from which the demo drives and watches.
#[derive(Debug, Default)]
struct Netns {
    prefix: String,
    made: Vec<String>,
}

impl Netns {
    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.start_kill();
        }
        if let Some(n) = self.netns.take() {
            for ns in n.made.iter().rev() {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How the demo connects to its pods: directly (loopback addresses), or from inside the
/// observer pod's network namespace.
#[derive(Clone, Debug)]
enum Dialer {
    Host,
    Netns(std::sync::Arc<str>),
}

impl Dialer {
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Dialer::Host => tokio::net::TcpStream::connect(addr).await,
            Dialer::Netns(ns) => {
                let path = format!("/run/netns/{ns}");
                let std = std::thread::spawn(move || {
                    let file = std::fs::File::open(&path)?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                    let s = socket2::Socket::new(
                        socket2::Domain::for_address(addr),
                        socket2::Type::STREAM,
                        None,
                    )?;
                    s.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>(std::net::TcpStream::from(s))
                })
                .join()
                .map_err(|_| std::io::Error::other("netns thread panicked"))??;
                tokio::net::TcpSocket::from_std_stream(std)
                    .connect(addr)
                    .await
            }
        }
    }

    /// `GET path` from `addr`: the body of a 200 (at most 16 MiB), within 5 s.
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<String, String> {
        let uri: hyper::Uri = format!("http://{addr}{path}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let exchange = async {
            let tcp = self.connect(addr).await.map_err(|e| e.to_string())?;
            crate::top::scrape::exchange_over(tcp, &uri)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| format!("{addr}{path}: timed out"))?
    }
}

/// The clusters: name, third octet of its addresses.
const CLUSTERS: [(&str, u8); 2] = [("east", 1), ("west", 2)];

/// Pods: cluster, name, last octet, workload (service account).
const PODS: [(&str, &str, u8); 7] = [
    ("east", "web", 10),
    ("east", "api", 11),
    ("east", "flaky", 12),
    ("east", "slow", 13),
    ("west", "web", 10),
    ("west", "api", 11),
    ("west", "catalog", 12),
];

fn svc(name: &str, port: u16) -> String {
    format!("http://{name}.shop.svc.cluster.local:{port}")
}

impl Demo {
    fn new(netns: bool) -> Result<Demo, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find my binary: {e}"))?;
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("remora-demo-{pid}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Readable by the proxies (uid 2102 in --netns).
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
        let netns = netns.then(|| Netns {
            prefix: format!("rmd{pid}"),
            made: Vec::new(),
        });
        let dialer = match &netns {
            Some(n) => Dialer::Netns(n.name("observer").into()),
            None => Dialer::Host,
        };
        Ok(Demo {
            exe,
            dir,
            base: 100 + (pid % 100) as u8,
            procs: Vec::new(),
            dialer,
            netns,
        })
    }

    fn ip(&self, cluster: u8, host: u8) -> IpAddr {
        match self.netns {
            None => IpAddr::V4(Ipv4Addr::new(127, self.base, cluster, host)),
            Some(_) => IpAddr::V4(Ipv4Addr::new(10, 210 + cluster, 0, host)),
        }
    }

    fn cluster_octet(name: &str) -> u8 {
        CLUSTERS.iter().find(|c| c.0 == name).map_or(1, |c| c.1)
    }

    /// Runs `remora ARGS` to completion; its stdout.
    async fn remora(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.exe)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("remora {}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "remora {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `remora ARGS` as a long-running part of the demo, its output in `<name>.log`; with
    /// `--netns`, inside pod namespace `pod`, as uid 2102 when `proxy` (the uid `remora init`
    /// exempts from interception).
    fn spawn_in(
        &mut self,
        name: &str,
        pod: Option<&str>,
        proxy: bool,
        args: &[&str],
        env: &[(String, String)],
    ) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(|e| format!("{name}.log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match (&self.netns, pod) {
            (Some(n), Some(pod)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.name(pod)]);
                if proxy {
                    c.args([
                        "setpriv",
                        "--reuid=2102",
                        "--regid=2102",
                        "--clear-groups",
                        "--",
                    ]);
                }
                c.arg(&self.exe);
                c
            }
            _ => Command::new(&self.exe),
        };
        let child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
        });
        Ok(())
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    fn config(&self, cluster: &str, links: &str) -> String {
        let c = Self::cluster_octet(cluster);
        let cp = self.ip(c, 1);
        let gw = self.ip(c, 2);
        let pod = |name: &str| {
            let host = PODS
                .iter()
                .find(|p| p.0 == cluster && p.1 == name)
                .map_or(0, |p| p.2);
            self.ip(c, host)
        };
        let endpoint = |name: &str| {
            format!(
                "[[services.endpoints]]\npod = \"{name}-0\"\nip = \"{}\"\nservice_account = \"{name}\"\nexplicit = {}\n",
                pod(name),
                self.netns.is_none()
            )
        };
        // A service of one explicit-mode pod; `head` goes before its endpoint (export flags),
        // `tail` after it (routes).
        let service = |name: &str, vip: u8, head: &str, tail: &str| {
            format!(
                "[[services]]\nname = \"{name}\"\nnamespace = \"shop\"\ncluster_ip = \"10.{c}.0.{vip}\"\nports = [{{ port = 8080 }}]\n{head}\n{}{tail}\n",
                endpoint(name)
            )
        };
        let services = match cluster {
            "east" => [
                service("web", 10, "", ""),
                service("api", 11, "export = true\nexport_mode = \"flat\"", ""),
                service(
                    "flaky",
                    12,
                    "",
                    "[[services.routes]]\nname = \"flaky\"\nmethod = \"GET\"\npath = \"/fail-share/.*\"\nretryable = true\n",
                ),
                service(
                    "slow",
                    13,
                    "",
                    "[[services.routes]]\nname = \"slow\"\npath = \"/delay/.*\"\ntimeout = \"200ms\"\n",
                ),
            ]
            .join("\n"),
            _ => [
                service("web", 10, "", ""),
                service("api", 11, "export = true\nexport_mode = \"gateway\"", ""),
                service("catalog", 12, "export = true\nexport_mode = \"flat\"", ""),
            ]
            .join("\n"),
        };
        format!(
            "[cluster]\nname = \"{cluster}\"\ntrust_domain = \"{cluster}.example\"\n\n\
             [server]\naddr = \"{cp}:8086\"\nadmin_addr = \"{cp}:9990\"\n\n\
             [identity]\ntrust_anchors = \"{root}\"\nissuer_cert = \"{dir}/issuer.pem\"\n\
             issuer_key = \"{dir}/issuer.key\"\ntoken_key = \"{dir}/token.key\"\n\n\
             [multicluster]\nadvertised_addr = \"{cp}:8086\"\nmirror_cidr = \"10.9{c}.0.0/24\"\n\
             gateway_addr = \"{gw}:4143\"\n\
             gateway_identity = \"remora-gateway.linkerd.serviceaccount.identity.linkerd.{cluster}.example\"\n\n\
             {links}\n{services}",
            root = self.path("certs/root.pem"),
            dir = self.path(&format!("certs/{cluster}")),
        )
    }

    /// The environment of a proxy (or gateway) of `cluster` at `ip`, as workload `sa`/`ns`.
    async fn proxy_env(
        &self,
        cluster: &str,
        ip: IpAddr,
        sa: &str,
        ns: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let c = Self::cluster_octet(cluster);
        let cp = SocketAddr::new(self.ip(c, 1), 8086).to_string();
        let id = format!("{sa}.{ns}.serviceaccount.identity.linkerd.{cluster}.example");
        let control =
            format!("remora-control.linkerd.serviceaccount.identity.linkerd.{cluster}.example");
        let token = self
            .remora(&[
                "control",
                "token",
                "--config",
                &self.path(&format!("{cluster}.toml")),
                "--identity",
                &id,
            ])
            .await?;
        let token_file = self.path(&format!("{cluster}-{sa}.token"));
        std::fs::write(&token_file, token.trim()).map_err(|e| e.to_string())?;
        let (outbound, inbound, admin) = match self.netns {
            None => (
                format!("{ip}:4140"),
                format!("{ip}:4143"),
                format!("{ip}:4191"),
            ),
            // The pod's own namespace: iptables redirects to these.
            Some(_) => (
                "127.0.0.1:4140".to_string(),
                "0.0.0.0:4143".to_string(),
                "0.0.0.0:4191".to_string(),
            ),
        };
        Ok([
            ("REMORA_OUTBOUND_ADDR", outbound),
            ("REMORA_INBOUND_ADDR", inbound),
            ("REMORA_ADMIN_ADDR", admin),
            ("REMORA_IDENTITY_NAME", id),
            ("REMORA_IDENTITY_TRUST_ANCHORS", self.path("certs/root.pem")),
            ("REMORA_IDENTITY_TOKEN_FILE", token_file),
            ("REMORA_IDENTITY_ADDR", cp.clone()),
            ("REMORA_IDENTITY_SVC_NAME", control.clone()),
            ("REMORA_DESTINATION_ADDR", cp),
            ("REMORA_DESTINATION_SVC_NAME", control),
            ("REMORA_LOG", "warn".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }

    /// `--netns`: a bridge namespace per cluster (10.21C.0.0/24, the bridge at .254), a router
    /// namespace between them that drops pod traffic across clusters except to and from the
    /// control planes, gateways, flat-exported pods and the observer, and a namespace per pod.
    async fn make_netns(&mut self) -> Result<(), String> {
        let Some(n) = self.netns.as_ref() else {
            return Ok(());
        };
        sweep_dead_demos().await;
        let names = |w: &str| n.name(w);
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut steps: Vec<Vec<String>> = Vec::new();
        let mut made = Vec::new();
        let router = names("router");
        for ns in [names("br-east"), names("br-west"), router.clone()] {
            steps.push(v(&["netns", "add", &ns]));
            made.push(ns.clone());
            steps.push(v(&["-n", &ns, "link", "set", "lo", "up"]));
        }
        for (cluster, c) in CLUSTERS {
            let br = names(&format!("br-{cluster}"));
            let (l, r) = (format!("l{c}"), format!("r{c}"));
            let other = 3 - c;
            steps.push(v(&["-n", &br, "link", "add", "br0", "type", "bridge"]));
            steps.push(v(&[
                "-n",
                &br,
                "addr",
                "add",
                &format!("10.21{c}.0.254/24"),
                "dev",
                "br0",
            ]));
            steps.push(v(&["-n", &br, "link", "set", "br0", "up"]));
            steps.push(v(&[
                "-n", &router, "link", "add", &l, "type", "veth", "peer", "name", &r, "netns", &br,
            ]));
            steps.push(v(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("10.255.{c}.2/30"),
                "dev",
                &l,
            ]));
            steps.push(v(&["-n", &router, "link", "set", &l, "up"]));
            steps.push(v(&[
                "-n",
                &br,
                "addr",
                "add",
                &format!("10.255.{c}.1/30"),
                "dev",
                &r,
            ]));
            steps.push(v(&["-n", &br, "link", "set", &r, "up"]));
            steps.push(v(&[
                "-n",
                &router,
                "route",
                "add",
                &format!("10.21{c}.0.0/24"),
                "via",
                &format!("10.255.{c}.1"),
            ]));
            steps.push(v(&[
                "-n",
                &br,
                "route",
                "add",
                &format!("10.21{other}.0.0/24"),
                "via",
                &format!("10.255.{c}.2"),
            ]));
        }
        let mut pods: Vec<(String, u8, u8)> = vec![
            ("east-control".into(), 1, 1),
            ("east-gateway".into(), 1, 2),
            ("west-control".into(), 2, 1),
            ("west-gateway".into(), 2, 2),
            ("observer".into(), 1, 250),
        ];
        for (cluster, name, host) in PODS {
            pods.push((
                format!("{cluster}-{name}"),
                Self::cluster_octet(cluster),
                host,
            ));
        }
        for (pod, c, host) in &pods {
            let ns = names(pod);
            let br = names(if *c == 1 { "br-east" } else { "br-west" });
            let veth = format!("v{host}");
            steps.push(v(&["netns", "add", &ns]));
            made.push(ns.clone());
            steps.push(v(&["-n", &ns, "link", "set", "lo", "up"]));
            steps.push(v(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &veth, "netns",
                &br,
            ]));
            steps.push(v(&["-n", &br, "link", "set", &veth, "master", "br0", "up"]));
            steps.push(v(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.21{c}.0.{host}/24"),
                "dev",
                "eth0",
            ]));
            steps.push(v(&["-n", &ns, "link", "set", "eth0", "up"]));
            steps.push(v(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("10.21{c}.0.254"),
            ]));
        }
        // Recorded before anything exists, so a failure halfway still cleans up.
        if let Some(n) = self.netns.as_mut() {
            n.made = made;
        }
        for step in steps {
            run("ip", &step).await?;
        }
        for ns in [
            names_of(&self.netns, "br-east"),
            names_of(&self.netns, "br-west"),
            router.clone(),
        ] {
            run(
                "ip",
                &v(&[
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ]),
            )
            .await?;
        }
        // Separate networks: only the control planes, gateways, flat-exported pods (east's api,
        // west's catalog) and the observer cross between the clusters.
        let ipt = |a: &[&str]| {
            let mut args = v(&["netns", "exec", &router, "iptables", "-w"]);
            args.extend(a.iter().map(|s| s.to_string()));
            args
        };
        let mut rules = vec![ipt(&[
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ])];
        for allowed in [
            "10.211.0.1",
            "10.212.0.1",
            "10.211.0.2",
            "10.212.0.2",
            "10.211.0.250",
            "10.211.0.11",
            "10.212.0.12",
        ] {
            rules.push(ipt(&["-A", "FORWARD", "-d", allowed, "-j", "ACCEPT"]));
            rules.push(ipt(&["-A", "FORWARD", "-s", allowed, "-j", "ACCEPT"]));
        }
        for (from, to) in [
            ("10.211.0.0/24", "10.212.0.0/24"),
            ("10.212.0.0/24", "10.211.0.0/24"),
        ] {
            rules.push(ipt(&["-A", "FORWARD", "-s", from, "-d", to, "-j", "DROP"]));
        }
        for r in rules {
            run("ip", &r).await?;
        }
        Ok(())
    }

    /// Sets everything up and drives traffic until the duration passes or Ctrl-C; returns the
    /// summary.
    async fn run(&mut self, args: &DemoArgs) -> Result<String, String> {
        eprintln!("remora demo: state in {}", self.dir.display());
        if let Some(n) = &self.netns {
            eprintln!("remora demo: network namespaces {}-*", n.prefix);
        }
        self.make_netns().await?;
        // One root, an issuer and a token key per cluster.
        self.remora(&["certs", "root", "--out", &self.path("certs")])
            .await?;
        for (cluster, _) in CLUSTERS {
            let out = self.path(&format!("certs/{cluster}"));
            self.remora(&[
                "certs",
                "issuer",
                "--root",
                &self.path("certs"),
                "--trust-domain",
                &format!("{cluster}.example"),
                "--out",
                &out,
            ])
            .await?;
            self.remora(&["certs", "token-key", "--out", &out]).await?;
        }
        // Configs, then the links from each other's configs, with `remora link`.
        for (cluster, _) in CLUSTERS {
            let text = self.config(cluster, "");
            std::fs::write(self.dir.join(format!("{cluster}.toml")), text)
                .map_err(|e| e.to_string())?;
        }
        let west_link = self
            .remora(&[
                "link",
                "--config",
                &self.path("west.toml"),
                "--mode",
                "flat",
            ])
            .await?;
        let east_link = self
            .remora(&[
                "link",
                "--config",
                &self.path("east.toml"),
                "--mode",
                "flat",
            ])
            .await?;
        for (cluster, link) in [("east", &west_link), ("west", &east_link)] {
            let text = self.config(cluster, link);
            std::fs::write(self.dir.join(format!("{cluster}.toml")), text)
                .map_err(|e| e.to_string())?;
        }
        for (cluster, c) in CLUSTERS {
            let config = self.path(&format!("{cluster}.toml"));
            let name = format!("{cluster}-control");
            self.spawn_in(
                &name,
                Some(&name),
                false,
                &["control", "--config", &config],
                &[("REMORA_LOG".into(), "warn".into())],
            )?;
            self.wait_ready(SocketAddr::new(self.ip(c, 1), 9990), "control plane")
                .await?;
        }
        // Gateways, apps and their proxies.
        for (cluster, c) in CLUSTERS {
            let ip = self.ip(c, 2);
            let env = self
                .proxy_env(cluster, ip, "remora-gateway", "linkerd")
                .await?;
            let name = format!("{cluster}-gateway");
            self.spawn_in(&name, Some(&name), true, &["gateway"], &env)?;
        }
        for (cluster, name, host) in PODS {
            let c = Self::cluster_octet(cluster);
            let ip = self.ip(c, host);
            let listen = SocketAddr::new(ip, 8080).to_string();
            let proxy = SocketAddr::new(ip, 4140).to_string();
            let mut app: Vec<String> = vec![
                "test-server".into(),
                "--listen".into(),
                listen,
                "--name".into(),
                format!("{name}.{cluster}"),
            ];
            if name == "web" {
                let upstreams: Vec<String> = match cluster {
                    "east" => vec![
                        format!("{}/echo", svc("api", 8080)),
                        format!("{}/echo", svc("api-west", 8080)),
                        format!("{}/echo", svc("catalog-west", 8080)),
                        format!("{}/fail-share/20", svc("flaky", 8080)),
                        // Longer than the route's 200 ms timeout: the proxy answers 504 at 200 ms.
                        format!("{}/delay/300", svc("slow", 8080)),
                    ],
                    _ => vec![format!("{}/echo", svc("api-east", 8080))],
                };
                for u in upstreams {
                    app.push("--fanout".into());
                    if self.netns.is_some() {
                        // Any address the pod's iptables redirects: the proxy routes by Host.
                        let host = u
                            .split('/')
                            .nth(2)
                            .unwrap_or("")
                            .split(':')
                            .next()
                            .unwrap_or("")
                            .to_string();
                        app.push(u);
                        app.push("--resolve".into());
                        app.push(format!("{host}=10.250.0.1"));
                    } else {
                        app.push(u);
                    }
                }
                if self.netns.is_none() {
                    app.push("--http-proxy".into());
                    app.push(proxy);
                }
            }
            let pod = format!("{cluster}-{name}");
            if let Some(n) = &self.netns {
                let ns = n.name(&pod);
                let exe = self.exe.display().to_string();
                run(
                    "ip",
                    &["netns", "exec", &ns, &exe, "init"].map(String::from),
                )
                .await?;
            }
            let app: Vec<&str> = app.iter().map(String::as_str).collect();
            self.spawn_in(&format!("{pod}-app"), Some(&pod), false, &app, &[])?;
            let env = self.proxy_env(cluster, ip, name, "shop").await?;
            self.spawn_in(&format!("{pod}-proxy"), Some(&pod), true, &["proxy"], &env)?;
        }
        let mut admins: Vec<(String, SocketAddr)> = CLUSTERS
            .iter()
            .map(|(cluster, c)| {
                (
                    format!("{cluster}-gateway"),
                    SocketAddr::new(self.ip(*c, 2), 4191),
                )
            })
            .collect();
        for (cluster, name, host) in PODS {
            let c = Self::cluster_octet(cluster);
            admins.push((
                format!("{cluster}-{name}"),
                SocketAddr::new(self.ip(c, host), 4191),
            ));
        }
        for (name, admin) in &admins {
            self.wait_ready(*admin, name).await?;
        }
        let pids: Vec<String> = self
            .procs
            .iter()
            .filter_map(|p| p.child.id().map(|id| id.to_string()))
            .collect();
        eprintln!(
            "remora demo: {} processes up (pids {}); traffic starts",
            self.procs.len(),
            pids.join(" ")
        );
        let east_web = SocketAddr::new(self.ip(1, 10), 8080);
        let west_web = SocketAddr::new(self.ip(2, 10), 8080);
        let load = [east_web, west_web]
            .map(|addr| tokio::spawn(drive(self.dialer.clone(), addr, args.rate)));
        // The mirrors and the first certificates settle; then measure.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let web_proxies = [
            ("east", SocketAddr::new(self.ip(1, 10), 4191)),
            ("west", SocketAddr::new(self.ip(2, 10), 4191)),
        ];
        let start = self.scrape_all(&web_proxies).await;
        let counters = |texts: Vec<Result<String, String>>| {
            texts.iter().flatten().fold((0.0, 0.0), |(r, t), text| {
                (
                    r + sum(text, "retries_total"),
                    t + sum(text, "request_timeouts_total"),
                )
            })
        };
        let mut texts = Vec::new();
        for (_, addr) in &web_proxies {
            texts.push(self.dialer.get(*addr, "/metrics").await);
        }
        let before = counters(texts);
        let started = Instant::now();
        let deadline = args
            .duration
            .map(|d| started + d.saturating_sub(Duration::from_secs(3)));
        let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut prev = self.scrape_all(&admins).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    eprintln!("remora demo: stopping");
                    break;
                }
                _ = tick.tick() => {}
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                break;
            }
            let cur = self.scrape_all(&admins).await;
            if live {
                let mut agg = Aggregate::default();
                for ((_, a), (_, b)) in prev.iter().zip(&cur) {
                    if let (Some(a), Some(b)) = (a, b) {
                        agg.add(a, b);
                    }
                }
                let rows: Vec<Row> = agg.rows();
                print!(
                    "\x1b[H\x1b[2Jremora demo: {} processes, {:.0}s; Ctrl-C to stop\n\n{}",
                    self.procs.len(),
                    started.elapsed().as_secs_f64(),
                    crate::top::table::render(&rows, false)
                );
            }
            prev = cur;
        }
        for l in load {
            l.abort();
        }
        let end = self.scrape_all(&web_proxies).await;
        let mut texts = Vec::new();
        for (_, addr) in &web_proxies {
            texts.push(self.dialer.get(*addr, "/metrics").await);
        }
        let after = counters(texts);
        Ok(summary(
            &start,
            &end,
            after.0 - before.0,
            after.1 - before.1,
        ))
    }

    async fn scrape_all(
        &self,
        admins: &[(impl AsRef<str>, SocketAddr)],
    ) -> Vec<(String, Option<Snapshot>)> {
        let grouping = Grouping {
            direction: Direction::Outbound,
            by_caller: false,
        };
        let mut out = Vec::new();
        for (name, addr) in admins {
            let snap = self
                .dialer
                .get(*addr, "/metrics")
                .await
                .ok()
                .map(|t| Snapshot::from_text(&t, Instant::now(), grouping));
            out.push((name.as_ref().to_string(), snap));
        }
        out
    }

    async fn wait_ready(&self, admin: SocketAddr, what: &str) -> Result<(), String> {
        for _ in 0..300 {
            if self.dialer.get(admin, "/ready").await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "{what} at {admin} did not become ready in 30 s; logs in {}",
            self.dir.display()
        ))
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s) and removes the directory.
    async fn stop(&mut self) {
        for p in &self.procs {
            if let Some(pid) = p.child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for p in &mut self.procs {
            match tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("remora demo: {} did not stop; killing it", p.name);
                    let _ = p.child.kill().await;
                }
            }
        }
        self.procs.clear();
        if let Some(n) = self.netns.take() {
            for ns in n.made.iter().rev() {
                let _ = run("ip", &["netns".to_string(), "del".into(), ns.clone()]).await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command to completion; its failure (with stderr) as an error.
async fn run(program: &str, args: &[String]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The sum of every sample of `name`.
fn sum(text: &str, name: &str) -> f64 {
    crate::top::parse::parse(text)
        .flatten()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// Drives `GET /fanout` at `rate` per second, each request on a fresh connection.
async fn drive(dialer: Dialer, front_end: SocketAddr, rate: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dialer = dialer.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), dialer.get(front_end, "/fanout"))
                .await;
        });
    }
}

/// Which path a front end's upstream takes.
fn path_of(cluster: &str, authority: &str) -> &'static str {
    match (cluster, authority.split('.').next().unwrap_or("")) {
        ("east", "api-west") => "via gateway",
        ("east", "catalog-west") | ("west", "api-east") => "direct (flat)",
        _ => "local",
    }
}

fn summary(
    start: &[(String, Option<Snapshot>)],
    end: &[(String, Option<Snapshot>)],
    retries: f64,
    timeouts: f64,
) -> String {
    let mut out = String::from(
        "\nremora demo summary (each front end's outbound calls)\n\
         FROM  PATH           TO                                          REQUESTS  SUCCESS    P50    P99   MTLS\n",
    );
    for ((cluster, a), (_, b)) in start.iter().zip(end) {
        let (Some(a), Some(b)) = (a, b) else {
            out.push_str(&format!("{cluster}: no metrics\n"));
            continue;
        };
        let mut agg = Aggregate::default();
        agg.add(a, b);
        let mut rows = agg.rows();
        rows.sort_by(|x, y| x.key.authority.cmp(&y.key.authority));
        for r in rows {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
            out.push_str(&format!(
                "{cluster:<5} {:<14} {:<43} {:>8} {:>8} {:>6} {:>6} {:>6}\n",
                path_of(cluster, &r.key.authority),
                r.key.authority,
                r.responses as u64,
                pct(r.success),
                ms(r.p50),
                ms(r.p99),
                pct(r.mtls),
            ));
        }
    }
    out.push_str(&format!(
        "retries made: {retries}\ntimeouts fired: {timeouts}\n"
    ));
    out
}

/// The namespace named `what` of `netns` (empty without).
fn names_of(netns: &Option<Netns>, what: &str) -> String {
    netns.as_ref().map(|n| n.name(what)).unwrap_or_default()
}

/// Deletes the namespaces of earlier `--netns` demos that were killed before cleaning up
/// (`rmd<pid>-*` whose process is gone).
async fn sweep_dead_demos() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output().await else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let pid = name
            .strip_prefix("rmd")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run("ip", &["netns".to_string(), "del".into(), name.to_string()]).await;
        }
    }
}
