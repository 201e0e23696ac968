//! [`Router`]: several cluster networks ([`Net`]s on distinct subnets) joined through a router
//! namespace, for multicluster tests.
//!
//! Net `i` (in the order given to [`Router::connect`]) is linked to the router by a veth pair on
//! `10.255.<i>.0/30`: its bridge namespace holds `10.255.<i>.1` (interface `rt<i>`), the router
//! `10.255.<i>.2` (interface `net<i>`). Each bridge namespace, already every pod's default
//! gateway, routes the other nets' /24s via the router, and the router routes each /24 back via
//! its net's link. All of them forward IPv4 and none NATs or filters, so pods see each other's
//! own addresses. Only IPv4 is routed between nets.
//!
//! [`Router::isolate`] models gateway mode: only traffic to or from the allowed addresses (the
//! gateways, the control planes) crosses between nets; [`Router::open`] lifts it. Both edit the
//! router's own iptables chain `ISOLATION`, which its `FORWARD` chain consults after accepting
//! tracked connections.
//!
//! The router's namespace is named with [`netns::unique`], so Drop deletes it and, after a
//! killed run, the start-up sweep does. Its veths and their routes live only in the router's and
//! the bridges' namespaces and go with whichever is deleted first: nothing touches the host's.

use std::net::Ipv4Addr;

use crate::{Net, netns};

/// The router's iptables chain (in `FORWARD`) holding the isolation rules.
const ISOLATION: &str = "ISOLATION";

/// A router namespace joining networks. Deleted, with its links, when dropped. A network joins
/// at most one router.
#[derive(Debug)]
pub struct Router {
    ns: String,
    /// Each joined network's `/24`, in link order.
    subnets: Vec<Ipv4Addr>,
    /// Keeps the bridges (and so the routes through this router) alive as long as it is.
    nets: Vec<Net>,
}

impl Router {
    /// Joins `nets`, which must be on distinct subnets (see [`Net::with_subnet`]): afterwards
    /// every pod of each reaches every pod of the others by IPv4.
    pub fn connect(nets: &[&Net]) -> Router {
        let subnets: Vec<Ipv4Addr> = nets.iter().map(|n| n.subnet4()).collect();
        for (i, s) in subnets.iter().enumerate() {
            assert!(!subnets[..i].contains(s), "two networks are both on {s}/24");
        }
        assert!(nets.len() < 256, "at most 256 networks per router");
        // Made before the first command, so a failure part-way still deletes what exists.
        let router = Router {
            ns: netns::unique("rt"),
            subnets,
            nets: nets.iter().map(|n| (*n).clone()).collect(),
        };
        netns::ip(&["netns", "add", &router.ns]);
        netns::ip(&["-n", &router.ns, "link", "set", "lo", "up"]);
        forward_ipv4(&router.ns);
        router.firewall();
        for i in 0..router.nets.len() {
            router.link(i);
        }
        router
    }

    /// The router's namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Gateway mode: from now on, between different networks the router forwards only packets
    /// from or to one of `allowed` (and those of connections already established, as a stateful
    /// firewall would). Traffic within a network never crosses the router. Replaces any earlier
    /// isolation.
    pub fn isolate(&self, allowed: &[Ipv4Addr]) {
        self.open();
        for addr in allowed {
            let addr = addr.to_string();
            self.iptables(&["-A", ISOLATION, "-d", &addr, "-j", "ACCEPT"]);
            self.iptables(&["-A", ISOLATION, "-s", &addr, "-j", "ACCEPT"]);
        }
        for from in &self.subnets {
            for to in self.subnets.iter().filter(|to| *to != from) {
                let (from, to) = (format!("{from}/24"), format!("{to}/24"));
                self.iptables(&["-A", ISOLATION, "-s", &from, "-d", &to, "-j", "DROP"]);
            }
        }
    }

    /// Lifts [`isolate`](Router::isolate): every pod reaches every other again.
    pub fn open(&self) {
        self.iptables(&["-F", ISOLATION]);
    }

    /// `FORWARD` accepts what belongs to tracked connections, then consults [`ISOLATION`]
    /// (empty while open). The conntrack rule stays from the start, so connections made while
    /// open are tracked (connection tracking runs in a namespace only while a rule needs it; one
    /// picked up mid-stream would count as new).
    fn firewall(&self) {
        self.iptables(&["-N", ISOLATION]);
        self.iptables(&[
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        self.iptables(&["-A", "FORWARD", "-j", ISOLATION]);
    }

    /// Links network `i` on `10.255.<i>.0/30` and routes its subnet both ways.
    fn link(&self, i: usize) {
        let net = &self.nets[i];
        let br = net.bridge_ns();
        let (ours, theirs) = (format!("net{i}"), format!("rt{i}"));
        let (bridge_end, router_end) = link_addrs(i);
        netns::ip(&[
            "-n", &self.ns, "link", "add", &ours, "type", "veth", "peer", "name", &theirs, "netns",
            br,
        ]);
        let ours_cidr = format!("{router_end}/30");
        netns::ip(&["-n", &self.ns, "addr", "add", &ours_cidr, "dev", &ours]);
        netns::ip(&["-n", &self.ns, "link", "set", &ours, "up"]);
        let theirs_cidr = format!("{bridge_end}/30");
        netns::ip(&["-n", br, "addr", "add", &theirs_cidr, "dev", &theirs]);
        netns::ip(&["-n", br, "link", "set", &theirs, "up"]);
        forward_ipv4(br);
        let subnet = format!("{}/24", net.subnet4());
        let via = bridge_end.to_string();
        netns::ip(&["-n", &self.ns, "route", "add", &subnet, "via", &via]);
        let via = router_end.to_string();
        for other in self.subnets.iter().filter(|s| **s != net.subnet4()) {
            let other = format!("{other}/24");
            netns::ip(&["-n", br, "route", "add", &other, "via", &via]);
        }
    }

    fn iptables(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.ns, "iptables", "-w"];
        all.extend_from_slice(args);
        if let Err(e) = netns::run("ip", &all) {
            panic!("router {}: {e}", self.ns);
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let routes = netns::run("ip", &["-n", &self.ns, "route"]).unwrap_or_default();
            let rules = netns::run("ip", &["netns", "exec", &self.ns, "iptables", "-S"])
                .unwrap_or_default();
            eprintln!(
                "--- router {} ---\nroutes:\n{routes}rules:\n{rules}",
                self.ns
            );
        }
        // The veths go with the namespace, and the bridges' routes through them with the veths.
        netns::delete(&self.ns);
    }
}

/// The bridge's and the router's ends of link `i`: `10.255.<i>.1` and `10.255.<i>.2`.
fn link_addrs(i: usize) -> (Ipv4Addr, Ipv4Addr) {
    let i = u8::try_from(i).expect("at most 256 links");
    (Ipv4Addr::new(10, 255, i, 1), Ipv4Addr::new(10, 255, i, 2))
}

/// Turns IPv4 forwarding on in namespace `ns` (the setting is per namespace).
fn forward_ipv4(ns: &str) {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let on = netns::in_netns(ns, || {
        std::fs::write(PATH, "1")?;
        std::fs::read_to_string(PATH)
    });
    match on {
        Ok(v) if v.trim() == "1" => {}
        other => panic!("cannot turn on IPv4 forwarding in {ns}: {other:?}"),
    }
}
