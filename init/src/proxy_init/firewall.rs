//! What proxy-init checks and which iptables commands it runs, as argument vectors.
//!
//! [`Firewall::new`] checks the options in proxy-init's order (mode, `--firewall-bin-path`,
//! the two proxy ports, the CIDRs) and picks the binaries for one address family.
//! [`Firewall::commands`] builds the commands that follow the first `<save> -t nat`, given what
//! that printed; [`super::configure`] runs them.
//!
//! All rules go in the nat table, in two chains of their own: `PROXY_INIT_REDIRECT`, jumped to
//! from `PREROUTING`, and `PROXY_INIT_OUTPUT`, jumped to from `OUTPUT`. In order:
//!
//! - inbound: create the chain (`-N`), or flush it (`-F`) if the save output lists it; one
//!   `RETURN` rule per batch of ignored inbound ports; one `RETURN` per ignored subnet, matched
//!   on the *source* address (it is only in the inbound chain); then either one `REDIRECT` of
//!   all TCP to the incoming port, or, with `--ports-to-redirect`, one `REDIRECT` per listed
//!   destination port; finally the jump from `PREROUTING`, unless the save output already has
//!   a `-A PREROUTING … -j PROXY_INIT_REDIRECT` line;
//! - outbound: create or flush the chain; `RETURN` for the proxy's uid and then gid, each only
//!   when it is above 0; `RETURN` for anything leaving through `lo`; one `RETURN` per batch of
//!   ignored outbound ports; `REDIRECT` of all TCP to the outgoing port; the jump from
//!   `OUTPUT` unless one is there.
//!
//! Every rule carries a comment `proxy-init/<what>`, which people and Linkerd's tools grep for.
//! With `--use-wait-flag` each of these commands ends in `-w` (the save commands do not).
//!
//! Ignored-port items are `N` or `LO-HI` (0 to 65535, read with `Atoi`, so no spaces); an item
//! that does not read is logged and skipped. The rest are packed into `--dports` lists of at
//! most 15 ports, a range counting two and written `LO:HI` (the packing is
//! [`crate::multiport_groups`], shared with `remora init` in `init/src/lib.rs`). A quirk kept
//! from proxy-init: a non-empty list in which no item reads still yields one rule, with an
//! empty port list, which iptables then rejects.
//!
//! The same options serve both families: the IPv6 pass gets the same ports and subnets, so an
//! IPv4 CIDR with IPv6 on makes ip6tables fail, as it does under proxy-init.

use std::net::IpAddr;

use super::flags::Options;
use crate::PortRange;

pub const REDIRECT_CHAIN: &str = "PROXY_INIT_REDIRECT";
pub const OUTPUT_CHAIN: &str = "PROXY_INIT_OUTPUT";

/// Which iptables variant runs the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Legacy,
    Nft,
    Plain,
}

impl Mode {
    /// `--iptables-mode` when given, else `--firewall-bin-path` read as a mode name (empty
    /// meaning legacy).
    pub fn from_options(opts: &Options) -> Result<Mode, String> {
        match opts.iptables_mode.as_str() {
            "legacy" => Ok(Mode::Legacy),
            "nft" => Ok(Mode::Nft),
            "plain" => Ok(Mode::Plain),
            "" => match opts.firewall_bin_path.as_str() {
                "" | "iptables-legacy" => Ok(Mode::Legacy),
                "iptables-nft" => Ok(Mode::Nft),
                "iptables" => Ok(Mode::Plain),
                _ => Err(
                    "--firewall-bin-path valid values are only \"iptables-legacy\", \
                          \"iptables-nft\" and \"iptables\""
                        .to_string(),
                ),
            },
            _ => Err(
                "--iptables-mode valid values are only \"legacy\", \"nft\" and \"plain\"".into(),
            ),
        }
    }

    /// The (rules, save) binaries, looked up in `PATH` when run.
    pub fn binaries(self, ipv6: bool) -> (&'static str, &'static str) {
        match (self, ipv6) {
            (Mode::Legacy, false) => ("iptables-legacy", "iptables-legacy-save"),
            (Mode::Legacy, true) => ("ip6tables-legacy", "ip6tables-legacy-save"),
            (Mode::Nft, false) => ("iptables-nft", "iptables-nft-save"),
            (Mode::Nft, true) => ("ip6tables-nft", "ip6tables-nft-save"),
            (Mode::Plain, false) => ("iptables", "iptables-save"),
            (Mode::Plain, true) => ("ip6tables", "ip6tables-save"),
        }
    }
}

/// One address family's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firewall {
    pub bin: &'static str,
    pub save_bin: &'static str,
    pub incoming_port: i64,
    pub outgoing_port: i64,
    pub proxy_uid: i64,
    pub proxy_gid: i64,
    /// Empty: redirect all inbound TCP.
    pub ports_to_redirect: Vec<i64>,
    pub inbound_ports_to_ignore: Vec<String>,
    pub outbound_ports_to_ignore: Vec<String>,
    /// Trimmed and checked, otherwise as given.
    pub subnets_to_ignore: Vec<String>,
    pub simulate: bool,
    pub netns: String,
    pub use_wait_flag: bool,
}

fn is_valid_port(p: i64) -> bool {
    (0..=65535).contains(&p)
}

/// What Go's `net.ParseCIDR` accepts: an address without zone, `/`, and a decimal prefix length
/// no longer than the address.
pub fn is_valid_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let bits = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => 32,
        Ok(IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u32>().is_ok_and(|n| n <= bits)
}

/// A port item, `N` or `LO-HI`, with proxy-init's error texts.
pub fn parse_port_item(item: &str) -> Result<PortRange, String> {
    let bounds: Vec<&str> = item.split('-').collect();
    if bounds.len() > 2 {
        return Err("ranges expected as <lower>-<upper>".to_string());
    }
    let read = |s: &str| {
        s.parse::<i64>()
            .ok()
            .filter(|&p| is_valid_port(p))
            .and_then(|p| u16::try_from(p).ok())
    };
    let (lo, hi) = (bounds[0], *bounds.last().unwrap_or(&bounds[0]));
    let first = read(lo).ok_or_else(|| format!("\"{lo}\" is not a valid lower-bound"))?;
    let last = read(hi).ok_or_else(|| format!("\"{hi}\" is not a valid upper-bound"))?;
    if last < first {
        return Err(format!(
            "\"{item}\": upper-bound must be greater than or equal to lower-bound"
        ));
    }
    Ok(PortRange { first, last })
}

/// The `--dports` lists for some port items, and the log lines for the items skipped.
pub fn multiport_lists(items: &[String]) -> (Vec<String>, Vec<String>) {
    let mut ranges = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        match parse_port_item(item) {
            Ok(r) => ranges.push(r),
            Err(e) => errors.push(format!("invalid port configuration of \"{item}\": {e}")),
        }
    }
    let mut lists = crate::multiport_groups(&ranges);
    if lists.is_empty() && !items.is_empty() {
        lists.push(String::new());
    }
    (lists, errors)
}

/// Lines of `text`, for matching as a `(?m)^…` regular expression would.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n')
}

/// Whether the save output declares `chain` (a line `:<chain> …`).
pub fn has_chain(saved: &[u8], chain: &str) -> bool {
    let head = format!(":{chain} ");
    lines(saved).any(|l| l.starts_with(head.as_bytes()))
}

/// Whether the save output has a rule in `from` jumping to `to`: a line starting
/// `-A <from> ` whose remainder is `-j <to>…`, or contains ` -j <to>…` after at least one
/// other character (proxy-init's `^-A <from> (.+ )?-j <to>`).
pub fn has_jump(saved: &[u8], from: &str, to: &str) -> bool {
    let head = format!("-A {from} ");
    let jump = format!("-j {to}");
    lines(saved).any(|l| {
        let Some(rest) = l.strip_prefix(head.as_bytes()) else {
            return false;
        };
        (0..rest.len()).any(|k| {
            rest[k..].starts_with(jump.as_bytes()) && (k == 0 || (k >= 2 && rest[k - 1] == b' '))
        })
    })
}

impl Firewall {
    /// Checks the options and sets up one family's pass.
    pub fn new(opts: &Options, ipv6: bool) -> Result<Firewall, String> {
        let (bin, save_bin) = Mode::from_options(opts)?.binaries(ipv6);
        if !is_valid_port(opts.incoming_proxy_port) {
            return Err("--incoming-proxy-port must be a valid TCP port number".to_string());
        }
        if !is_valid_port(opts.outgoing_proxy_port) {
            return Err("--outgoing-proxy-port must be a valid TCP port number".to_string());
        }
        let mut subnets = Vec::new();
        for subnet in &opts.subnets_to_ignore {
            let subnet = subnet.trim();
            if !is_valid_cidr(subnet) {
                return Err(format!("{subnet} is not a valid CIDR address"));
            }
            subnets.push(subnet.to_string());
        }
        Ok(Firewall {
            bin,
            save_bin,
            incoming_port: opts.incoming_proxy_port,
            outgoing_port: opts.outgoing_proxy_port,
            proxy_uid: opts.proxy_uid,
            proxy_gid: opts.proxy_gid,
            ports_to_redirect: opts.ports_to_redirect.clone(),
            inbound_ports_to_ignore: opts.inbound_ports_to_ignore.clone(),
            outbound_ports_to_ignore: opts.outbound_ports_to_ignore.clone(),
            subnets_to_ignore: subnets,
            simulate: opts.simulate,
            netns: opts.netns.clone(),
            use_wait_flag: opts.use_wait_flag,
        })
    }

    /// `<save> -t nat`, run before (to read the state) and after (to log it).
    pub fn save_command(&self) -> Vec<String> {
        vec![self.save_bin.into(), "-t".into(), "nat".into()]
    }

    /// Runs a command inside `--netns` when one is given: `nsenter --net=<ns> -- <cmd…>` (the
    /// `--` is for BusyBox's nsenter).
    pub fn in_netns(&self, argv: Vec<String>) -> Vec<String> {
        if self.netns.is_empty() {
            return argv;
        }
        let mut wrapped = vec![
            "nsenter".to_string(),
            format!("--net={}", self.netns),
            "--".to_string(),
        ];
        wrapped.extend(argv);
        wrapped
    }

    /// `<bin> -t nat <args…> [-w]`.
    fn ipt(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.bin.to_string(), "-t".into(), "nat".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        if self.use_wait_flag {
            argv.push("-w".into());
        }
        argv
    }

    /// `-A <chain> <args…> -m comment --comment proxy-init/<comment>`.
    fn rule(&self, chain: &str, args: &[&str], comment: &str) -> Vec<String> {
        let comment = format!("proxy-init/{comment}");
        let mut all = vec!["-A", chain];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-m", "comment", "--comment", &comment]);
        self.ipt(&all)
    }

    fn create_or_flush(&self, saved: &[u8], chain: &str) -> Vec<String> {
        let op = if has_chain(saved, chain) { "-F" } else { "-N" };
        self.ipt(&[op, chain])
    }

    fn ignore_ports(&self, chain: &str, items: &[String], out: &mut Commands) {
        let (lists, errors) = multiport_lists(items);
        out.skipped_ports.extend(errors);
        for list in lists {
            out.commands.push(self.rule(
                chain,
                &[
                    "-p",
                    "tcp",
                    "--match",
                    "multiport",
                    "--dports",
                    &list,
                    "-j",
                    "RETURN",
                ],
                &format!("ignore-port-{list}"),
            ));
        }
    }

    /// The commands after the first save, given its output (empty when simulating).
    pub fn commands(&self, saved: &[u8]) -> Commands {
        let mut out = Commands::default();

        let chain = REDIRECT_CHAIN;
        out.commands.push(self.create_or_flush(saved, chain));
        self.ignore_ports(chain, &self.inbound_ports_to_ignore, &mut out);
        for subnet in &self.subnets_to_ignore {
            out.commands.push(self.rule(
                chain,
                &["-p", "all", "-j", "RETURN", "-s", subnet],
                &format!("ignore-subnet-{subnet}"),
            ));
        }
        let incoming = self.incoming_port.to_string();
        if self.ports_to_redirect.is_empty() {
            out.commands.push(self.rule(
                chain,
                &["-p", "tcp", "-j", "REDIRECT", "--to-port", &incoming],
                "redirect-all-incoming-to-proxy-port",
            ));
        }
        for port in &self.ports_to_redirect {
            let port = port.to_string();
            out.commands.push(self.rule(
                chain,
                &[
                    "-p",
                    "tcp",
                    "--destination-port",
                    &port,
                    "-j",
                    "REDIRECT",
                    "--to-port",
                    &incoming,
                ],
                &format!("redirect-port-{port}-to-proxy-port"),
            ));
        }
        if !has_jump(saved, "PREROUTING", chain) {
            out.commands.push(self.rule(
                "PREROUTING",
                &["-j", chain],
                "install-proxy-init-prerouting",
            ));
        }

        let chain = OUTPUT_CHAIN;
        out.commands.push(self.create_or_flush(saved, chain));
        if self.proxy_uid > 0 {
            let uid = self.proxy_uid.to_string();
            out.commands.push(self.rule(
                chain,
                &["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"],
                "ignore-proxy-user-id",
            ));
        }
        if self.proxy_gid > 0 {
            let gid = self.proxy_gid.to_string();
            out.commands.push(self.rule(
                chain,
                &["-m", "owner", "--gid-owner", &gid, "-j", "RETURN"],
                "ignore-proxy-group-id",
            ));
        }
        out.commands
            .push(self.rule(chain, &["-o", "lo", "-j", "RETURN"], "ignore-loopback"));
        self.ignore_ports(chain, &self.outbound_ports_to_ignore, &mut out);
        let outgoing = self.outgoing_port.to_string();
        out.commands.push(self.rule(
            chain,
            &["-p", "tcp", "-j", "REDIRECT", "--to-port", &outgoing],
            "redirect-all-outgoing-to-proxy-port",
        ));
        if !has_jump(saved, "OUTPUT", chain) {
            out.commands
                .push(self.rule("OUTPUT", &["-j", chain], "install-proxy-init-output"));
        }
        out
    }
}

/// The commands of one pass, and the port items skipped while building them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands {
    pub commands: Vec<Vec<String>>,
    /// `invalid port configuration of "<item>": <why>`, logged at error.
    pub skipped_ports: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_init::flags;

    fn opts(args: &[&str]) -> Options {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        flags::parse(&args).unwrap()
    }

    fn firewall(args: &[&str]) -> Firewall {
        Firewall::new(&opts(args), false).unwrap()
    }

    fn lines(c: &Commands) -> Vec<String> {
        c.commands.iter().map(|argv| argv.join(" ")).collect()
    }

    const BASE: &[&str] = &["-p", "4143", "-o", "4140"];

    fn with(extra: &[&str]) -> Firewall {
        let mut args = BASE.to_vec();
        args.extend_from_slice(extra);
        firewall(&args)
    }

    #[test]
    fn minimal_rules_in_legacy_mode() {
        assert_eq!(
            lines(&with(&[]).commands(b"")),
            [
                "iptables-legacy -t nat -N PROXY_INIT_REDIRECT",
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-all-incoming-to-proxy-port",
                "iptables-legacy -t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment proxy-init/install-proxy-init-prerouting",
                "iptables-legacy -t nat -N PROXY_INIT_OUTPUT",
                "iptables-legacy -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
                "iptables-legacy -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 -m comment --comment proxy-init/redirect-all-outgoing-to-proxy-port",
                "iptables-legacy -t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment proxy-init/install-proxy-init-output",
            ]
        );
    }

    #[test]
    fn redirect_listed_mode() {
        let c = lines(&with(&["--ports-to-redirect", "80,8080", "-r", "9090"]).commands(b""));
        assert_eq!(
            c[1..4],
            [
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp --destination-port 80 -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-port-80-to-proxy-port",
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp --destination-port 8080 -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-port-8080-to-proxy-port",
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp --destination-port 9090 -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-port-9090-to-proxy-port",
            ]
        );
        assert!(!c.iter().any(|l| l.contains("redirect-all-incoming")));
        // Outbound stays redirect-all.
        assert!(
            c.iter()
                .any(|l| l.contains("redirect-all-outgoing-to-proxy-port"))
        );
    }

    #[test]
    fn uid_and_gid_only_when_positive() {
        let c = lines(&with(&["-u", "2102", "-g", "2103"]).commands(b""));
        assert_eq!(
            c[4..7],
            [
                "iptables-legacy -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment proxy-init/ignore-proxy-user-id",
                "iptables-legacy -t nat -A PROXY_INIT_OUTPUT -m owner --gid-owner 2103 -j RETURN -m comment --comment proxy-init/ignore-proxy-group-id",
                "iptables-legacy -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
            ]
        );
        for (uid, gid) in [("0", "0"), ("-1", "-1")] {
            let c = lines(&with(&["-u", uid, "-g", gid]).commands(b""));
            assert!(!c.iter().any(|l| l.contains("-owner")), "{uid} {gid}");
        }
    }

    #[test]
    fn subnets_match_the_source_inbound_only() {
        let c = lines(
            &with(&[
                "--inbound-ports-to-ignore",
                "22",
                "--subnets-to-ignore",
                " 10.0.0.0/8,192.168.1.7/16",
            ])
            .commands(b""),
        );
        assert_eq!(
            c[1..4],
            [
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 22 -j RETURN -m comment --comment proxy-init/ignore-port-22",
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s 10.0.0.0/8 -m comment --comment proxy-init/ignore-subnet-10.0.0.0/8",
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s 192.168.1.7/16 -m comment --comment proxy-init/ignore-subnet-192.168.1.7/16",
            ]
        );
        assert_eq!(c.iter().filter(|l| l.contains("ignore-subnet")).count(), 2);
        assert!(!c.iter().any(|l| l.contains("PROXY_INIT_OUTPUT -p all")));
    }

    #[test]
    fn ports_split_into_batches_of_15() {
        // 14 single ports (14) + a range (2) overflows: the range starts the second batch.
        let mut items: Vec<String> = (1..=14).map(|p| p.to_string()).collect();
        items.push("100-200".into());
        items.push("300-300".into());
        let items = items.join(",");
        let c = lines(&with(&["--outbound-ports-to-ignore", &items]).commands(b""));
        let rules: Vec<&String> = c.iter().filter(|l| l.contains("multiport")).collect();
        assert_eq!(rules.len(), 2);
        assert!(rules[0].ends_with(
            "--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14 -j RETURN -m comment --comment proxy-init/ignore-port-1,2,3,4,5,6,7,8,9,10,11,12,13,14"
        ));
        assert!(rules[1].ends_with(
            "--dports 100:200,300 -j RETURN -m comment --comment proxy-init/ignore-port-100:200,300"
        ));
        assert!(rules[1].contains("-A PROXY_INIT_OUTPUT -p tcp --match multiport"));

        // Exactly 15 references fit in one rule: 7 ranges and a port.
        let items = "1-2,3-4,5-6,7-8,9-10,11-12,13-14,15";
        let (lists, errors) =
            multiport_lists(&items.split(',').map(String::from).collect::<Vec<_>>());
        assert_eq!(lists, ["1:2,3:4,5:6,7:8,9:10,11:12,13:14,15"]);
        assert!(errors.is_empty());
        let items = "1-2,3-4,5-6,7-8,9-10,11-12,13-14,15-16";
        let (lists, _) = multiport_lists(&items.split(',').map(String::from).collect::<Vec<_>>());
        assert_eq!(lists, ["1:2,3:4,5:6,7:8,9:10,11:12,13:14", "15:16"]);
    }

    #[test]
    fn invalid_port_items_are_skipped() {
        let f = with(&[
            "--inbound-ports-to-ignore",
            "0,x,70000,9-8,1-2-3,-5,4191,+80",
        ]);
        let c = f.commands(b"");
        assert_eq!(
            lines(&c)[1],
            "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 0,4191,80 -j RETURN -m comment --comment proxy-init/ignore-port-0,4191,80"
        );
        assert_eq!(
            c.skipped_ports,
            [
                "invalid port configuration of \"x\": \"x\" is not a valid lower-bound",
                "invalid port configuration of \"70000\": \"70000\" is not a valid lower-bound",
                "invalid port configuration of \"9-8\": \"9-8\": upper-bound must be greater than or equal to lower-bound",
                "invalid port configuration of \"1-2-3\": ranges expected as <lower>-<upper>",
                "invalid port configuration of \"-5\": \"\" is not a valid lower-bound",
            ]
        );
        // No trimming: " 4191" does not read.
        let (lists, errors) = multiport_lists(&[" 4191".to_string(), "4192 ".to_string()]);
        assert_eq!(lists, [""]);
        assert_eq!(
            errors,
            [
                "invalid port configuration of \" 4191\": \" 4191\" is not a valid lower-bound",
                "invalid port configuration of \"4192 \": \"4192 \" is not a valid lower-bound",
            ]
        );
        let (lists, _) = multiport_lists(&["1- 2".to_string()]);
        assert_eq!(lists, [""]);
        // proxy-init's quirk: nothing valid still yields one (empty) rule.
        let c = lines(&with(&["--outbound-ports-to-ignore", "nope"]).commands(b""));
        assert!(c.contains(&"iptables-legacy -t nat -A PROXY_INIT_OUTPUT -p tcp --match multiport --dports  -j RETURN -m comment --comment proxy-init/ignore-port-".to_string()));
        // An empty list yields none.
        let c = lines(&with(&["--outbound-ports-to-ignore", ""]).commands(b""));
        assert!(!c.iter().any(|l| l.contains("multiport")));
    }

    #[test]
    fn wait_flag_ends_modifying_commands() {
        let f = with(&["-w", "-u", "2102"]);
        let c = f.commands(b"");
        assert!(
            c.commands
                .iter()
                .all(|argv| argv.last().map(String::as_str) == Some("-w"))
        );
        assert_eq!(
            lines(&c)[1],
            "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-all-incoming-to-proxy-port -w"
        );
        assert_eq!(
            lines(&c)[0],
            "iptables-legacy -t nat -N PROXY_INIT_REDIRECT -w"
        );
        assert_eq!(f.save_command(), ["iptables-legacy-save", "-t", "nat"]);
    }

    #[test]
    fn netns_wraps_in_nsenter() {
        let f = with(&["--netns", "/var/run/netns/pod"]);
        assert_eq!(
            f.in_netns(f.save_command()).join(" "),
            "nsenter --net=/var/run/netns/pod -- iptables-legacy-save -t nat"
        );
        let f = with(&[]);
        assert_eq!(f.in_netns(f.save_command()), f.save_command());
    }

    #[test]
    fn modes_and_binaries() {
        let pick = |args: &[&str], ipv6| {
            let mut all = BASE.to_vec();
            all.extend_from_slice(args);
            let f = Firewall::new(&opts(&all), ipv6).unwrap();
            (f.bin, f.save_bin)
        };
        assert_eq!(
            pick(&[], false),
            ("iptables-legacy", "iptables-legacy-save")
        );
        assert_eq!(
            pick(&[], true),
            ("ip6tables-legacy", "ip6tables-legacy-save")
        );
        let nft = ["--firewall-bin-path", "iptables-nft"];
        assert_eq!(pick(&nft, false), ("iptables-nft", "iptables-nft-save"));
        assert_eq!(pick(&nft, true), ("ip6tables-nft", "ip6tables-nft-save"));
        let plain = ["--firewall-bin-path", "iptables"];
        assert_eq!(pick(&plain, false), ("iptables", "iptables-save"));
        assert_eq!(pick(&plain, true), ("ip6tables", "ip6tables-save"));
        // --iptables-mode wins over --firewall-bin-path, whatever that says.
        let over = [
            "--firewall-bin-path",
            "/usr/sbin/whatever",
            "--iptables-mode",
            "nft",
        ];
        assert_eq!(pick(&over, true), ("ip6tables-nft", "ip6tables-nft-save"));
        assert_eq!(
            pick(&["--iptables-mode", "plain"], false),
            ("iptables", "iptables-save")
        );
        assert_eq!(
            pick(
                &[
                    "--iptables-mode",
                    "legacy",
                    "--firewall-bin-path",
                    "iptables-nft"
                ],
                false
            ),
            ("iptables-legacy", "iptables-legacy-save")
        );
        // The save path flag is read and ignored.
        let save = ["--firewall-save-bin-path", "/nowhere/iptables-save"];
        assert_eq!(
            pick(&save, false),
            ("iptables-legacy", "iptables-legacy-save")
        );
    }

    #[test]
    fn existing_chains_are_flushed_and_jumps_kept() {
        let saved = b"# Generated by iptables-nft-save v1.8.9\n*nat\n\
            :PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
            :POSTROUTING ACCEPT [0:0]\n:PROXY_INIT_OUTPUT - [0:0]\n:PROXY_INIT_REDIRECT - [0:0]\n\
            -A PREROUTING -m comment --comment \"proxy-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT\n\
            -A OUTPUT -m comment --comment \"proxy-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT\n\
            COMMIT\n";
        let c = lines(&with(&[]).commands(saved));
        assert_eq!(
            c,
            [
                "iptables-legacy -t nat -F PROXY_INIT_REDIRECT",
                "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-all-incoming-to-proxy-port",
                "iptables-legacy -t nat -F PROXY_INIT_OUTPUT",
                "iptables-legacy -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
                "iptables-legacy -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 -m comment --comment proxy-init/redirect-all-outgoing-to-proxy-port",
            ]
        );
        // Chains present without jumps: flush, and add the jumps.
        let chains_only =
            b"*nat\n:PROXY_INIT_REDIRECT - [0:0]\n:PROXY_INIT_OUTPUT - [0:0]\nCOMMIT\n";
        let c = lines(&with(&[]).commands(chains_only));
        assert!(c[0].ends_with("-F PROXY_INIT_REDIRECT"));
        assert!(
            c.iter()
                .any(|l| l.contains("-A PREROUTING -j PROXY_INIT_REDIRECT"))
        );
        assert!(
            c.iter()
                .any(|l| l.contains("-A OUTPUT -j PROXY_INIT_OUTPUT"))
        );
        // A jump without its chain: create the chain, keep the jump.
        let jump_only = b"-A PREROUTING -j PROXY_INIT_REDIRECT\n";
        let c = lines(&with(&[]).commands(jump_only));
        assert!(c[0].ends_with("-N PROXY_INIT_REDIRECT"));
        assert!(!c.iter().any(|l| l.contains("-A PREROUTING")));
        assert!(
            c.iter()
                .any(|l| l.contains("-A OUTPUT -j PROXY_INIT_OUTPUT"))
        );
    }

    #[test]
    fn save_output_matching() {
        assert!(has_chain(b":PROXY_INIT_OUTPUT - [0:0]", OUTPUT_CHAIN));
        assert!(!has_chain(b":PROXY_INIT_OUTPUTX - [0:0]", OUTPUT_CHAIN));
        assert!(!has_chain(b" :PROXY_INIT_OUTPUT - [0:0]", OUTPUT_CHAIN));
        assert!(has_jump(
            b"x\n-A OUTPUT -j PROXY_INIT_OUTPUT",
            "OUTPUT",
            OUTPUT_CHAIN
        ));
        assert!(has_jump(
            b"-A OUTPUT -m comment --comment \"x\" -j PROXY_INIT_OUTPUT\n",
            "OUTPUT",
            OUTPUT_CHAIN
        ));
        assert!(!has_jump(
            b"-A OUTPUT  -j PROXY_INIT_OUTPUT",
            "OUTPUT",
            OUTPUT_CHAIN
        ));
        assert!(has_jump(
            b"-A OUTPUT x  -j PROXY_INIT_OUTPUT",
            "OUTPUT",
            OUTPUT_CHAIN
        ));
        assert!(!has_jump(
            b"-A OUTPUTS -j PROXY_INIT_OUTPUT",
            "OUTPUT",
            OUTPUT_CHAIN
        ));
        assert!(!has_jump(
            b"-A PREROUTING -j PROXY_INIT_OUTPUT",
            "OUTPUT",
            OUTPUT_CHAIN
        ));
        assert!(!has_jump(
            b"-I OUTPUT -j PROXY_INIT_OUTPUT",
            "OUTPUT",
            OUTPUT_CHAIN
        ));
    }

    #[test]
    fn validation_errors_in_proxy_inits_order() {
        let fail = |args: &[&str]| Firewall::new(&opts(args), false).unwrap_err();
        assert_eq!(
            fail(&["--iptables-mode", "iptables-nft"]),
            "--iptables-mode valid values are only \"legacy\", \"nft\" and \"plain\""
        );
        assert_eq!(
            fail(&["--firewall-bin-path", "/usr/sbin/iptables"]),
            "--firewall-bin-path valid values are only \"iptables-legacy\", \"iptables-nft\" and \"iptables\""
        );
        assert_eq!(
            fail(&[]),
            "--incoming-proxy-port must be a valid TCP port number"
        );
        assert_eq!(
            fail(&["-p", "65536", "-o", "1"]),
            "--incoming-proxy-port must be a valid TCP port number"
        );
        assert_eq!(
            fail(&["-p", "4143"]),
            "--outgoing-proxy-port must be a valid TCP port number"
        );
        assert_eq!(
            fail(&[
                "-p",
                "1",
                "-o",
                "1",
                "--subnets-to-ignore",
                "10.0.0.0/8, 10.0.0.0/33"
            ]),
            "10.0.0.0/33 is not a valid CIDR address"
        );
        assert_eq!(
            fail(&["-p", "1", "-o", "1", "--subnets-to-ignore", "10.0.0.0"]),
            "10.0.0.0 is not a valid CIDR address"
        );
        // Port 0 is a valid port to proxy-init.
        assert!(Firewall::new(&opts(&["-p", "0", "-o", "0"]), false).is_ok());
    }

    #[test]
    fn cidrs_like_go() {
        for ok in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "10.1.2.3/32",
            "fd00::/8",
            "::/0",
            "::ffff:10.0.0.0/104",
            "10.0.0.0/08",
        ] {
            assert!(is_valid_cidr(ok), "{ok}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0/8",
            "010.0.0.0/8",
            "fe80::1%eth0/64",
            "fd00::/129",
            "x/8",
            "10.0.0.0/8/8",
        ] {
            assert!(!is_valid_cidr(bad), "{bad}");
        }
    }
}
