//! The router between cluster networks, as the demo (`remora demo --netns`, cli/src/demo/) and
//! the tests' `Router` (tests/src/router.rs) build it in network namespaces: the `ip` commands that join each network's bridge
//! namespace to a router namespace on a /30 link and route the /24s both ways (no NAT), and the
//! router's `iptables` rules that isolate the networks (gateway mode) or open them.
//!
//! Every function returns the argument lists of `ip` commands (`iptables` runs as
//! `ip netns exec <router> iptables -w ...`) for the caller to run, so the two topologies share
//! one set of rules.

use std::net::Ipv4Addr;

/// The router's chain that [`isolate`] fills and [`open`] empties.
pub const ISOLATION: &str = "ISOLATION";

/// The arguments of one `ip` command.
pub type Cmd = Vec<String>;

fn cmd(args: &[&str]) -> Cmd {
    args.iter().map(|s| s.to_string()).collect()
}

fn iptables(router: &str, args: &[&str]) -> Cmd {
    let mut c = cmd(&["netns", "exec", router, "iptables", "-w"]);
    c.extend(args.iter().map(|s| s.to_string()));
    c
}

/// The two ends of link `i`: the bridge namespace's `10.255.<i>.1` and the router's
/// `10.255.<i>.2`.
pub fn link_addrs(i: u8) -> (Ipv4Addr, Ipv4Addr) {
    (Ipv4Addr::new(10, 255, i, 1), Ipv4Addr::new(10, 255, i, 2))
}

/// Turns IPv4 forwarding on in namespace `ns` (the setting is per namespace).
pub fn forward_ipv4(ns: &str) -> Cmd {
    cmd(&[
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])
}

/// Links bridge namespace `bridge` (its network is `subnet`/24) to `router` as link `i`, and
/// routes `subnet` through the link on the router and the `others` /24s through the router on
/// the bridge namespace.
pub fn link(router: &str, bridge: &str, i: u8, subnet: Ipv4Addr, others: &[Ipv4Addr]) -> Vec<Cmd> {
    let (ours, theirs) = (format!("net{i}"), format!("rt{i}"));
    let (bridge_end, router_end) = link_addrs(i);
    let (router_cidr, bridge_cidr) = (format!("{router_end}/30"), format!("{bridge_end}/30"));
    let (subnet, bridge_via, router_via) = (
        format!("{subnet}/24"),
        bridge_end.to_string(),
        router_end.to_string(),
    );
    let mut cmds = vec![
        cmd(&[
            "-n", router, "link", "add", &ours, "type", "veth", "peer", "name", &theirs, "netns",
            bridge,
        ]),
        cmd(&["-n", router, "addr", "add", &router_cidr, "dev", &ours]),
        cmd(&["-n", router, "link", "set", &ours, "up"]),
        cmd(&["-n", bridge, "addr", "add", &bridge_cidr, "dev", &theirs]),
        cmd(&["-n", bridge, "link", "set", &theirs, "up"]),
        forward_ipv4(bridge),
        cmd(&["-n", router, "route", "add", &subnet, "via", &bridge_via]),
    ];
    for other in others {
        let other = format!("{other}/24");
        cmds.push(cmd(&[
            "-n",
            bridge,
            "route",
            "add",
            &other,
            "via",
            &router_via,
        ]));
    }
    cmds
}

/// The router's firewall: `FORWARD` accepts what belongs to tracked connections, then consults
/// [`ISOLATION`] (empty while open). The conntrack rule is there from the start, so
/// connections made while open are tracked (a connection picked up mid-stream would count as
/// new).
pub fn firewall(router: &str) -> Vec<Cmd> {
    vec![
        forward_ipv4(router),
        iptables(router, &["-N", ISOLATION]),
        iptables(
            router,
            &[
                "-A",
                "FORWARD",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        ),
        iptables(router, &["-A", "FORWARD", "-j", ISOLATION]),
    ]
}

/// Gateway mode: between different networks of `subnets` only packets from or to one of
/// `allowed` cross (and those of connections already established). Replaces any earlier
/// isolation.
pub fn isolate(router: &str, allowed: &[Ipv4Addr], subnets: &[Ipv4Addr]) -> Vec<Cmd> {
    let mut cmds = open(router);
    for addr in allowed {
        let addr = addr.to_string();
        cmds.push(iptables(
            router,
            &["-A", ISOLATION, "-d", &addr, "-j", "ACCEPT"],
        ));
        cmds.push(iptables(
            router,
            &["-A", ISOLATION, "-s", &addr, "-j", "ACCEPT"],
        ));
    }
    for from in subnets {
        for to in subnets.iter().filter(|to| *to != from) {
            let (from, to) = (format!("{from}/24"), format!("{to}/24"));
            cmds.push(iptables(
                router,
                &["-A", ISOLATION, "-s", &from, "-d", &to, "-j", "DROP"],
            ));
        }
    }
    cmds
}

/// Lifts [`isolate`]: every pod reaches every other again.
pub fn open(router: &str) -> Vec<Cmd> {
    vec![iptables(router, &["-F", ISOLATION])]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_accepts_the_allowed_then_drops_between_networks() {
        let nets = [Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(10, 2, 0, 0)];
        let cmds = isolate("rt", &[Ipv4Addr::new(10, 1, 0, 5)], &nets);
        let rules: Vec<String> = cmds.iter().map(|c| c[5..].join(" ")).collect();
        assert_eq!(
            rules,
            [
                "-F ISOLATION",
                "-A ISOLATION -d 10.1.0.5 -j ACCEPT",
                "-A ISOLATION -s 10.1.0.5 -j ACCEPT",
                "-A ISOLATION -s 10.1.0.0/24 -d 10.2.0.0/24 -j DROP",
                "-A ISOLATION -s 10.2.0.0/24 -d 10.1.0.0/24 -j DROP",
            ]
        );
        assert!(
            cmds.iter()
                .all(|c| c[..5] == ["netns", "exec", "rt", "iptables", "-w"])
        );
    }

    #[test]
    fn a_link_routes_both_ways() {
        let cmds = link(
            "rt",
            "br",
            3,
            Ipv4Addr::new(10, 3, 0, 0),
            &[Ipv4Addr::new(10, 4, 0, 0)],
        );
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert!(text.contains(&"-n rt route add 10.3.0.0/24 via 10.255.3.1".to_string()));
        assert!(text.contains(&"-n br route add 10.4.0.0/24 via 10.255.3.2".to_string()));
    }
}
