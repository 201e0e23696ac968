//! `remora init`: the iptables rules that send a pod's TCP traffic through its proxy, for IPv4
//! (`iptables`) and IPv6 (`ip6tables`), in the current network namespace.
//!
//! Inbound TCP (nat `PREROUTING`) is redirected to the inbound port, except the admin port and
//! the skipped inbound ports. Outbound TCP (nat `OUTPUT`) is redirected to the outbound port,
//! except packets of the proxy's own uid, packets leaving through loopback, and the skipped
//! ports and subnets. The rules live in chains of our own, jumped to from the built-in chains, so
//! removal deletes exactly what was added; applying first removes any earlier copy, so applying
//! twice leaves one copy.
//!
//! [`router`] has the rules of the router namespace between cluster networks that the demo and
//! the tests build.
//!
//! [`proxy_init`] is a drop-in for Linkerd's `linkerd2-proxy-init`, with Linkerd's chains and
//! command line; its binary is `init/src/bin/linkerd2-proxy-init.rs`.

pub mod proxy_init;
pub mod router;

use std::fmt;
use std::net::IpAddr;
use std::process::Command;

pub const INBOUND_CHAIN: &str = "REMORA_INBOUND";
pub const OUTBOUND_CHAIN: &str = "REMORA_OUTBOUND";
/// At most this many port "slots" fit one `multiport` match (a range takes two).
const MULTIPORT_SLOTS: usize = 15;
/// Bounds the loop deleting duplicate jump rules left by earlier runs.
const MAX_JUMP_COPIES: usize = 32;

/// A port or an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))
        };
        let (first, last) = match s.split_once(['-', ':']) {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("port range {s:?} runs backwards"));
        }
        Ok(PortRange { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// An IP network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("{s:?} is not a subnet such as 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err());
        }
        Ok(Subnet { addr, prefix })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What `remora init` sets up.
#[derive(Clone, Debug)]
pub struct InitConfig {
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub admin_port: u16,
    pub proxy_uid: u32,
    pub skip_inbound_ports: Vec<PortRange>,
    pub skip_outbound_ports: Vec<PortRange>,
    pub skip_subnets: Vec<Subnet>,
    pub ipv6: bool,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            proxy_uid: 2102,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_subnets: Vec::new(),
            ipv6: true,
        }
    }
}

/// IP family of a rule set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn binary(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// One iptables invocation. `may_fail` marks the clean-up of an earlier run, whose rules may not
/// exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub family: Family,
    pub args: Vec<String>,
    pub may_fail: bool,
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.family.binary(), self.args.join(" "))
    }
}

fn cmd(family: Family, may_fail: bool, args: &[&str]) -> Cmd {
    let mut all = vec!["-w".to_string(), "-t".to_string(), "nat".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    Cmd {
        family,
        args: all,
        may_fail,
    }
}

impl InitConfig {
    fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    /// The commands that remove our chains and the jumps to them. Each may fail (nothing to
    /// remove); the jump deletion is repeated until it fails, so duplicates go too.
    pub fn removal(&self) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        for family in self.families() {
            for (builtin, chain) in [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTBOUND_CHAIN)] {
                cmds.push(cmd(family, true, &["-D", builtin, "-j", chain]));
                cmds.push(cmd(family, true, &["-F", chain]));
                cmds.push(cmd(family, true, &["-X", chain]));
            }
        }
        cmds
    }

    /// The commands that install the rules (after [`removal`](Self::removal)).
    pub fn installation(&self) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        for family in self.families() {
            self.inbound_rules(family, &mut cmds);
            self.outbound_rules(family, &mut cmds);
        }
        cmds
    }

    fn inbound_rules(&self, family: Family, cmds: &mut Vec<Cmd>) {
        let chain = INBOUND_CHAIN;
        cmds.push(cmd(family, false, &["-N", chain]));
        let mut skip = vec![PortRange {
            first: self.admin_port,
            last: self.admin_port,
        }];
        skip.extend(self.skip_inbound_ports.iter().copied());
        for ports in multiport_groups(&skip) {
            cmds.push(cmd(
                family,
                false,
                &[
                    "-A",
                    chain,
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &ports,
                    "-j",
                    "RETURN",
                ],
            ));
        }
        let to = self.inbound_port.to_string();
        cmds.push(cmd(
            family,
            false,
            &[
                "-A",
                chain,
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &to,
            ],
        ));
        cmds.push(cmd(family, false, &["-A", "PREROUTING", "-j", chain]));
    }

    fn outbound_rules(&self, family: Family, cmds: &mut Vec<Cmd>) {
        let chain = OUTBOUND_CHAIN;
        cmds.push(cmd(family, false, &["-N", chain]));
        let uid = self.proxy_uid.to_string();
        cmds.push(cmd(
            family,
            false,
            &[
                "-A",
                chain,
                "-m",
                "owner",
                "--uid-owner",
                &uid,
                "-j",
                "RETURN",
            ],
        ));
        cmds.push(cmd(
            family,
            false,
            &["-A", chain, "-o", "lo", "-j", "RETURN"],
        ));
        for ports in multiport_groups(&self.skip_outbound_ports) {
            cmds.push(cmd(
                family,
                false,
                &[
                    "-A",
                    chain,
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &ports,
                    "-j",
                    "RETURN",
                ],
            ));
        }
        for subnet in &self.skip_subnets {
            if subnet.addr.is_ipv4() == (family == Family::V4) {
                let net = subnet.to_string();
                cmds.push(cmd(
                    family,
                    false,
                    &["-A", chain, "-d", &net, "-j", "RETURN"],
                ));
            }
        }
        let to = self.outbound_port.to_string();
        cmds.push(cmd(
            family,
            false,
            &[
                "-A",
                chain,
                "-p",
                "tcp",
                "-j",
                "REDIRECT",
                "--to-ports",
                &to,
            ],
        ));
        cmds.push(cmd(family, false, &["-A", "OUTPUT", "-j", chain]));
    }
}

/// Packs port ranges into comma-separated `multiport` lists of at most 15 slots each.
pub(crate) fn multiport_groups(ports: &[PortRange]) -> Vec<String> {
    let mut groups = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut slots = 0;
    for p in ports {
        let need = if p.first == p.last { 1 } else { 2 };
        if slots + need > MULTIPORT_SLOTS {
            groups.push(current.join(","));
            current.clear();
            slots = 0;
        }
        current.push(p.to_string());
        slots += need;
    }
    if !current.is_empty() {
        groups.push(current.join(","));
    }
    groups
}

/// An iptables command that failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot run `{cmd}`: {source} (is iptables installed?)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Runs commands in order, stopping at the first failure of one that may not fail.
pub fn run(cmds: &[Cmd]) -> Result<(), InitError> {
    for c in cmds {
        let repeat = c.may_fail && c.args.iter().any(|a| a == "-D");
        let times = if repeat { MAX_JUMP_COPIES } else { 1 };
        for _ in 0..times {
            let out = Command::new(c.family.binary())
                .args(&c.args)
                .output()
                .map_err(|source| InitError::Spawn {
                    cmd: c.to_string(),
                    source,
                })?;
            if !out.status.success() {
                if c.may_fail {
                    break;
                }
                return Err(InitError::Failed {
                    cmd: c.to_string(),
                    status: out.status,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn default_rules() {
        let cfg = InitConfig {
            ipv6: false,
            ..Default::default()
        };
        assert_eq!(
            lines(&cfg.installation()),
            vec![
                "iptables -w -t nat -N REMORA_INBOUND",
                "iptables -w -t nat -A REMORA_INBOUND -p tcp -m multiport --dports 4191 -j RETURN",
                "iptables -w -t nat -A REMORA_INBOUND -p tcp -j REDIRECT --to-ports 4143",
                "iptables -w -t nat -A PREROUTING -j REMORA_INBOUND",
                "iptables -w -t nat -N REMORA_OUTBOUND",
                "iptables -w -t nat -A REMORA_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
                "iptables -w -t nat -A REMORA_OUTBOUND -o lo -j RETURN",
                "iptables -w -t nat -A REMORA_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
                "iptables -w -t nat -A OUTPUT -j REMORA_OUTBOUND",
            ]
        );
    }

    #[test]
    fn skips_and_families() {
        let cfg = InitConfig {
            skip_inbound_ports: vec!["22".parse().unwrap()],
            skip_outbound_ports: vec!["3306".parse().unwrap(), "8000-8100".parse().unwrap()],
            skip_subnets: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..Default::default()
        };
        let all = lines(&cfg.installation());
        assert!(all.contains(
            &"iptables -w -t nat -A REMORA_INBOUND -p tcp -m multiport --dports 4191,22 -j RETURN"
                .to_string()
        ));
        assert!(all.contains(
            &"ip6tables -w -t nat -A REMORA_OUTBOUND -p tcp -m multiport --dports 3306,8000:8100 -j RETURN"
                .to_string()
        ));
        assert!(all.contains(
            &"iptables -w -t nat -A REMORA_OUTBOUND -d 10.0.0.0/8 -j RETURN".to_string()
        ));
        assert!(
            all.contains(
                &"ip6tables -w -t nat -A REMORA_OUTBOUND -d fd00::/8 -j RETURN".to_string()
            )
        );
        // Subnets only go to their own family.
        assert!(
            !all.iter()
                .any(|l| l.starts_with("iptables") && l.contains("fd00::/8"))
        );
        assert!(
            !all.iter()
                .any(|l| l.starts_with("ip6tables") && l.contains("10.0.0.0/8"))
        );
    }

    #[test]
    fn removal_undoes_exactly_our_chains() {
        let cfg = InitConfig::default();
        let rm = lines(&cfg.removal());
        assert_eq!(rm.len(), 12);
        assert!(rm.iter().all(|l| l.contains("REMORA_")));
        assert!(cfg.removal().iter().all(|c| c.may_fail));
        assert!(cfg.installation().iter().all(|c| !c.may_fail));
    }

    #[test]
    fn multiport_groups_respect_the_slot_limit() {
        let ports: Vec<PortRange> = (1..=20).map(|p| format!("{p}").parse().unwrap()).collect();
        let groups = multiport_groups(&ports);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].split(',').count(), 15);
        let ranges: Vec<PortRange> = (0..8)
            .map(|i| {
                format!("{}-{}", 1000 + i * 10, 1005 + i * 10)
                    .parse()
                    .unwrap()
            })
            .collect();
        let groups = multiport_groups(&ranges);
        assert_eq!(
            groups
                .iter()
                .map(|g| g.split(',').count())
                .collect::<Vec<_>>(),
            [7, 1]
        );
    }

    #[test]
    fn parses_ports_and_subnets() {
        assert_eq!(
            "80".parse::<PortRange>().unwrap(),
            PortRange {
                first: 80,
                last: 80
            }
        );
        assert_eq!(
            "8000:8080".parse::<PortRange>().unwrap(),
            PortRange {
                first: 8000,
                last: 8080
            }
        );
        assert!("0".parse::<PortRange>().is_err());
        assert!("90-80".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        assert!("10.0.0.0/33".parse::<Subnet>().is_err());
        assert!("10.0.0.0".parse::<Subnet>().is_err());
        assert_eq!("fd00::/8".parse::<Subnet>().unwrap().prefix, 8);
    }
}
