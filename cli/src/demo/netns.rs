//! `remora demo --netns`: a bridge namespace per cluster, a router namespace between them (with
//! `remora_init::router`'s rules, the tests' too), a namespace per pod, and the observer pod the
//! demo drives and watches from.

use std::net::SocketAddr;
use std::time::Duration;

use remora_init::router;
use tokio::process::Command;

use super::Demo;
use super::topology::{CLUSTERS, PODS};

/// The network namespaces of `--netns`: a bridge per cluster, a router between them, a pod per
/// component, and an observer pod from which the demo drives and watches.
#[derive(Debug, Default)]
pub(super) struct Netns {
    pub(super) prefix: String,
    pub(super) made: Vec<String>,
}

impl Netns {
    pub(super) fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }
}

/// How the demo connects to its pods: directly (loopback addresses), or from inside the
/// observer pod's network namespace.
#[derive(Clone, Debug)]
pub(super) enum Dialer {
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
    pub(super) async fn get(&self, addr: SocketAddr, path: &str) -> Result<String, String> {
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

impl Demo {
    /// `--netns`: a bridge namespace per cluster (10.21C.0.0/24, the bridge at .254), a router
    /// namespace between them that drops pod traffic across clusters except to and from the
    /// control planes, gateways, flat-exported pods and the observer, and a namespace per pod.
    pub(super) async fn make_netns(&mut self) -> Result<(), String> {
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
        let subnet = |c: u8| std::net::Ipv4Addr::new(10, 210 + c, 0, 0);
        for (cluster, c) in CLUSTERS {
            let br = names(&format!("br-{cluster}"));
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
            steps.extend(router::link(&router, &br, c, subnet(c), &[subnet(3 - c)]));
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
        // Separate networks: only the control planes, gateways, flat-exported pods (east's api,
        // west's catalog) and the observer cross between the clusters.
        let allowed = [
            "10.211.0.1",
            "10.212.0.1",
            "10.211.0.2",
            "10.212.0.2",
            "10.211.0.250",
            "10.211.0.11",
            "10.212.0.12",
        ]
        .map(|a| a.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED));
        let mut rules = router::firewall(&router);
        rules.extend(router::isolate(&router, &allowed, &[subnet(1), subnet(2)]));
        for r in rules {
            run("ip", &r).await?;
        }
        Ok(())
    }
}

/// Runs a command to completion; its failure (with stderr) as an error.
pub(super) async fn run(program: &str, args: &[String]) -> Result<(), String> {
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
