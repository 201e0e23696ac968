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
//!
//! With `--linkerd2-proxy PATH` some of those pods run linkerd2-proxy instead of Remora
//! ([`linkerd2`]), under the same control planes.

//!
//! # Layout
//! - this module: the command, the demo's processes and directory, start and stop.
//! - [`topology`]: the clusters and pods, their configs (as the control plane's config
//!   values) and the proxies' environments; starting every process.
//! - [`netns`]: `--netns`: the namespaces, the router (with `remora_init::router`'s rules)
//!   and how the demo reaches the pods.
//! - [`watch`]: traffic, the live view and the summary.
//! - [`linkerd2`]: `--linkerd2-proxy`: which pods run it, and their environment.
//! - [`trace`]: `--trace`: the demo's OTLP collector and the trace of one request.

mod linkerd2;
mod netns;
mod topology;
mod trace;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::process::{Child, Command};

use crate::EXIT_USAGE;
use netns::{Dialer, Netns, run};

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
                  stopped, the temporary directory removed, and a summary printed. With \
                  --linkerd2-proxy PATH, the server pods every path ends at (east's api, west's \
                  api and catalog) run that linkerd2-proxy binary instead of Remora, under the \
                  same remora control; the summary lists which proxy each pod runs. It implies \
                  --netns (root): linkerd2-proxy needs every accepted connection's original \
                  destination, which only iptables' conntrack in a pod's namespace gives."
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
    /// Run the server pods east/api, west/api and west/catalog on this linkerd2-proxy binary
    /// instead of Remora; implies --netns (root).
    #[arg(long, value_name = "PATH")]
    linkerd2_proxy: Option<PathBuf>,
    /// Export every proxy's spans to a collector in the demo itself, and at the end send one
    /// traced request through the mesh and print its trace (not with --netns).
    #[arg(long)]
    trace: bool,
}

pub fn main(mut args: DemoArgs) -> ExitCode {
    if args.linkerd2_proxy.is_some() {
        // linkerd2-proxy reads each accepted connection's SO_ORIGINAL_DST, which only a
        // namespace with iptables' nat rules (conntrack) has.
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!(
                "remora demo: --linkerd2-proxy needs root: linkerd2-proxy runs only with \
                 transparent interception (iptables in network namespaces, as --netns)"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        args.netns = true;
    }
    if args.netns && !nix::unistd::Uid::effective().is_root() {
        eprintln!("remora demo: --netns needs root (network namespaces and iptables)");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(p) = &args.linkerd2_proxy
        && !p.is_file()
    {
        eprintln!(
            "remora demo: --linkerd2-proxy {}: no such file (a linkerd2-proxy binary)",
            p.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if args.trace && args.netns {
        eprintln!(
            "remora demo: --trace runs without --netns (the demo's collector is on loopback)"
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
        let mut demo = match Demo::new(args.netns, args.linkerd2_proxy.clone()) {
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
    /// With `--linkerd2-proxy`: the binary some pods run.
    linkerd2: Option<PathBuf>,
    /// With `--trace`: the collector every proxy exports to.
    collector: Option<trace::Collector>,
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

impl Demo {
    fn new(netns: bool, linkerd2: Option<PathBuf>) -> Result<Demo, String> {
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
            linkerd2,
            collector: None,
        })
    }

    /// Sets everything up and drives traffic until the duration passes or Ctrl-C; returns the
    /// summary.
    async fn run(&mut self, args: &DemoArgs) -> Result<String, String> {
        eprintln!("remora demo: state in {}", self.dir.display());
        if let Some(n) = &self.netns {
            eprintln!("remora demo: network namespaces {}-*", n.prefix);
        }
        self.make_netns().await?;
        if args.trace {
            let addr = SocketAddr::new(self.ip(0, 5), 4317);
            self.collector = Some(trace::Collector::start(addr).await?);
            eprintln!("remora demo: trace collector (OTLP/gRPC) at {addr}");
        }
        let admins = self.start().await?;
        self.watch(args, &admins).await
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
        let exe = self.exe.clone();
        self.spawn_program(name, pod, proxy, &exe, args, env)
    }

    /// As [`Demo::spawn_in`], running `program` instead of `remora`.
    fn spawn_program(
        &mut self,
        name: &str,
        pod: Option<&str>,
        proxy: bool,
        program: &std::path::Path,
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
                c.arg(program);
                c
            }
            _ => Command::new(program),
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
        self.collector = None;
        if let Some(n) = self.netns.take() {
            for ns in n.made.iter().rev() {
                let _ = run("ip", &["netns".to_string(), "del".into(), ns.clone()]).await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
