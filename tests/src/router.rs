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
//! tracked connections. The commands are `remora_init::router`'s, which the demo uses too.
//!
//! The router's namespace is named with [`netns::unique`], so Drop deletes it and, after a
//! killed run, the start-up sweep does. Its veths and their routes live only in the router's and
//! the bridges' namespaces and go with whichever is deleted first: nothing touches the host's.

use std::net::Ipv4Addr;

use remora_init::router;

use crate::{Net, netns};

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
        router.run(router::firewall(&router.ns));
        for (i, net) in router.nets.iter().enumerate() {
            let i = u8::try_from(i).expect("at most 256 links");
            let others: Vec<Ipv4Addr> = router
                .subnets
                .iter()
                .copied()
                .filter(|s| *s != net.subnet4())
                .collect();
            router.run(router::link(
                &router.ns,
                net.bridge_ns(),
                i,
                net.subnet4(),
                &others,
            ));
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
        self.run(router::isolate(&self.ns, allowed, &self.subnets));
    }

    /// Lifts [`isolate`](Router::isolate): every pod reaches every other again.
    pub fn open(&self) {
        self.run(router::open(&self.ns));
    }

    fn run(&self, cmds: Vec<router::Cmd>) {
        for c in cmds {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            if let Err(e) = netns::run("ip", &args) {
                panic!("router {}: {e}", self.ns);
            }
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
