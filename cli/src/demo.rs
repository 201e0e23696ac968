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
use hyper::Uri;
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
    #[arg(long, value_parser = remora_proxy::config::parse_duration)]
    duration: Option<Duration>,
    /// Requests per second sent to each front end.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Run in network namespaces with transparent interception (root). Not available yet.
    #[arg(long)]
    netns: bool,
}

pub fn main(args: DemoArgs) -> ExitCode {
    if args.netns {
        eprintln!(
            "remora demo: --netns is not available yet; run without it (no root needed), or see \
             tests/netns_*.rs for the same topologies in network namespaces"
        );
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
        let mut demo = match Demo::new() {
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
}

impl Drop for Demo {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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
    fn new() -> Result<Demo, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find my binary: {e}"))?;
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("remora-demo-{pid}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Demo {
            exe,
            dir,
            base: 100 + (pid % 100) as u8,
            procs: Vec::new(),
        })
    }

    fn ip(&self, cluster: u8, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.base, cluster, host))
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

    /// Starts `remora ARGS` as a long-running part of the demo, its output in `<name>.log`.
    fn spawn(&mut self, name: &str, args: &[&str], env: &[(String, String)]) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(|e| format!("{name}.log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
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
                "[[services.endpoints]]\npod = \"{name}-0\"\nip = \"{}\"\nservice_account = \"{name}\"\nexplicit = true\n",
                pod(name)
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
        Ok([
            ("REMORA_OUTBOUND_ADDR", format!("{ip}:4140")),
            ("REMORA_INBOUND_ADDR", format!("{ip}:4143")),
            ("REMORA_ADMIN_ADDR", format!("{ip}:4191")),
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

    /// Sets everything up and drives traffic until the duration passes or Ctrl-C; returns the
    /// summary.
    async fn run(&mut self, args: &DemoArgs) -> Result<String, String> {
        eprintln!("remora demo: state in {}", self.dir.display());
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
            self.spawn(
                &format!("{cluster}-control"),
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
            self.spawn(&format!("{cluster}-gateway"), &["gateway"], &env)?;
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
                    app.push(u);
                }
                app.push("--http-proxy".into());
                app.push(proxy);
            }
            let app: Vec<&str> = app.iter().map(String::as_str).collect();
            self.spawn(&format!("{cluster}-{name}-app"), &app, &[])?;
            let env = self.proxy_env(cluster, ip, name, "shop").await?;
            self.spawn(&format!("{cluster}-{name}-proxy"), &["proxy"], &env)?;
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
        let load = [east_web, west_web].map(|addr| tokio::spawn(drive(addr, args.rate)));
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
            texts.push(fetch(*addr).await);
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
            texts.push(fetch(*addr).await);
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
            let snap = fetch(*addr)
                .await
                .ok()
                .map(|t| Snapshot::from_text(&t, Instant::now(), grouping));
            out.push((name.as_ref().to_string(), snap));
        }
        out
    }

    async fn wait_ready(&self, admin: SocketAddr, what: &str) -> Result<(), String> {
        let uri: Uri = format!("http://{admin}/ready")
            .parse()
            .map_err(|e| format!("{e}"))?;
        for _ in 0..300 {
            if crate::top::scrape::fetch(&uri).await.is_ok() {
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /metrics` of the admin listener at `addr`.
async fn fetch(addr: SocketAddr) -> Result<String, String> {
    let uri: Uri = format!("http://{addr}/metrics")
        .parse()
        .map_err(|e| format!("{e}"))?;
    crate::top::scrape::fetch(&uri)
        .await
        .map_err(|e| e.to_string())
}

/// The sum of every sample of `name`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Drives `GET /fanout` at `rate` per second, each request on a fresh connection.
async fn drive(front_end: SocketAddr, rate: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        tokio::spawn(async move {
            let uri: Uri = match format!("http://{front_end}/fanout").parse() {
                Ok(u) => u,
                Err(_) => return,
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), crate::top::scrape::fetch(&uri))
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
