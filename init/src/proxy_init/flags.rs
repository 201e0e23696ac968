//! proxy-init's command line, read the way Go's `pflag` (under cobra) reads it.
//!
//! The chart renders arguments for pflag, so the corner cases must match:
//!
//! - `--flag=value` and `--flag value` (the next argument is taken even if it starts with
//!   `-`); a boolean flag alone means true and takes a value only as `--flag=false`, so
//!   `--ipv6 false` is "ipv6 on" plus a stray `false`;
//! - shorthands: `-p 4143`, `-p4143`, `-p=4143`, and clusters such as `-wp 4143` (a boolean
//!   shorthand consumes only its letter); an argument starting `-test.` is skipped, as pflag
//!   does for Go's test flags;
//! - `--` ends the flags; arguments that are not flags (and `-` alone) are collected and
//!   ignored, since proxy-init's root command has no subcommands and no argument check;
//! - list flags accumulate when repeated; `--ports-to-redirect` splits on commas and reads
//!   each item with `Atoi`, the string lists split their value as one CSV record;
//! - integers are read as Go's `ParseInt(s, 0, 64)` (so `0x102F` and `010` are numbers);
//! - unknown flags, missing values and unreadable values are errors with pflag's messages;
//!   `-h`/`--help` asks for the help text.
//!
//! Nothing is validated here beyond reading the values: the port, mode and CIDR checks are
//! proxy-init's own and run later, in [`super::firewall`].

use super::gostr;

/// Every flag of proxy-init v2.4.9, with its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub incoming_proxy_port: i64,
    pub outgoing_proxy_port: i64,
    pub proxy_uid: i64,
    pub proxy_gid: i64,
    pub ports_to_redirect: Vec<i64>,
    pub inbound_ports_to_ignore: Vec<String>,
    pub outbound_ports_to_ignore: Vec<String>,
    pub subnets_to_ignore: Vec<String>,
    pub simulate: bool,
    pub netns: String,
    pub use_wait_flag: bool,
    pub timeout_close_wait_secs: i64,
    pub log_format: String,
    pub log_level: String,
    pub iptables_mode: String,
    pub ipv6: bool,
    /// Kept by proxy-init for compatibility: not a path but a mode name (see
    /// [`super::firewall::Mode::from_options`]).
    pub firewall_bin_path: String,
    /// Read and never used, as in proxy-init: the save binary follows from the mode.
    pub firewall_save_bin_path: String,
    pub help: bool,
    /// Arguments that are not flags: accepted and ignored.
    pub positionals: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            incoming_proxy_port: -1,
            outgoing_proxy_port: -1,
            proxy_uid: -1,
            proxy_gid: -1,
            ports_to_redirect: Vec::new(),
            inbound_ports_to_ignore: Vec::new(),
            outbound_ports_to_ignore: Vec::new(),
            subnets_to_ignore: Vec::new(),
            simulate: false,
            netns: String::new(),
            use_wait_flag: false,
            timeout_close_wait_secs: 0,
            log_format: "plain".to_string(),
            log_level: "info".to_string(),
            iptables_mode: String::new(),
            ipv6: true,
            firewall_bin_path: String::new(),
            firewall_save_bin_path: String::new(),
            help: false,
            positionals: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Bool,
    Str,
    IntList,
    StrList,
}

#[derive(Debug)]
struct Flag {
    name: &'static str,
    short: Option<u8>,
    kind: Kind,
}

const fn flag(name: &'static str, short: Option<u8>, kind: Kind) -> Flag {
    Flag { name, short, kind }
}

const FLAGS: &[Flag] = &[
    flag("incoming-proxy-port", Some(b'p'), Kind::Int),
    flag("outgoing-proxy-port", Some(b'o'), Kind::Int),
    flag("proxy-uid", Some(b'u'), Kind::Int),
    flag("proxy-gid", Some(b'g'), Kind::Int),
    flag("ports-to-redirect", Some(b'r'), Kind::IntList),
    flag("inbound-ports-to-ignore", None, Kind::StrList),
    flag("outbound-ports-to-ignore", None, Kind::StrList),
    flag("subnets-to-ignore", None, Kind::StrList),
    flag("simulate", None, Kind::Bool),
    flag("netns", None, Kind::Str),
    flag("use-wait-flag", Some(b'w'), Kind::Bool),
    flag("timeout-close-wait-secs", None, Kind::Int),
    flag("log-format", None, Kind::Str),
    flag("log-level", None, Kind::Str),
    flag("iptables-mode", None, Kind::Str),
    flag("ipv6", None, Kind::Bool),
    flag("firewall-bin-path", None, Kind::Str),
    flag("firewall-save-bin-path", None, Kind::Str),
    flag("help", Some(b'h'), Kind::Bool),
];

/// Cobra's usage text (printed after an error, on stderr), flags sorted by name.
pub const USAGE: &str = "\
Usage:
  proxy-init [flags]

Flags:
      --firewall-bin-path string          Which iptables to use: \"iptables-legacy\" (the default), \"iptables-nft\" or \"iptables\"
      --firewall-save-bin-path string     Accepted for compatibility; the save command follows from the mode
  -h, --help                              help for proxy-init
      --inbound-ports-to-ignore strings   Inbound ports or ranges (lo-hi) never redirected to the proxy; these rules come first
  -p, --incoming-proxy-port int           Port inbound traffic is redirected to (default -1)
      --iptables-mode string              \"legacy\", \"nft\" or \"plain\"; takes precedence over --firewall-bin-path
      --ipv6                              Also install the rules with ip6tables (default true)
      --log-format string                 Log format, \"plain\" or \"json\" (default \"plain\")
      --log-level string                  Log level: panic, fatal, error, warn, info, debug or trace (default \"info\")
      --netns string                      Network namespace to run the iptables commands in (through nsenter)
  -o, --outgoing-proxy-port int           Port outbound traffic is redirected to (default -1)
      --outbound-ports-to-ignore strings  Outbound ports or ranges (lo-hi) never redirected to the proxy
  -r, --ports-to-redirect ints            Redirect only these inbound ports (default: all of them)
  -g, --proxy-gid int                     Group id of the proxy, whose outbound traffic is not redirected (default -1)
  -u, --proxy-uid int                     User id of the proxy, whose outbound traffic is not redirected (default -1)
      --simulate                          Log the iptables commands instead of running them
      --subnets-to-ignore strings         Source subnets (CIDR) whose inbound traffic is not redirected
      --timeout-close-wait-secs int       If set, sysctl net.netfilter.nf_conntrack_tcp_timeout_close_wait to this
  -w, --use-wait-flag                     Pass -w (wait for the xtables lock) to the iptables commands
";

/// Cobra's help text (printed for `--help`, on stdout).
pub fn help() -> String {
    format!(
        "proxy-init adds a Kubernetes pod to the Linkerd service mesh: it installs the iptables \
         rules that redirect the pod's TCP traffic to the proxy.\n\n{USAGE}"
    )
}

fn lookup_long(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

fn lookup_short(c: u8) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.short == Some(c))
}

/// Reads the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut rest = args;
    while let Some((arg, tail)) = rest.split_first() {
        rest = tail;
        if arg.len() < 2 || !arg.starts_with('-') {
            opts.positionals.push(arg.clone());
        } else if arg == "--" {
            opts.positionals.extend(rest.iter().cloned());
            break;
        } else if let Some(body) = arg.strip_prefix("--") {
            if body.starts_with(['-', '=']) {
                return Err(format!("bad flag syntax: {arg}"));
            }
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let flag = lookup_long(name).ok_or_else(|| format!("unknown flag: --{name}"))?;
            let value = match inline {
                Some(value) => value.to_string(),
                None if flag.kind == Kind::Bool => "true".to_string(),
                None => match rest.split_first() {
                    Some((value, tail)) => {
                        rest = tail;
                        value.clone()
                    }
                    None => return Err(format!("flag needs an argument: --{name}")),
                },
            };
            opts.set(flag, &value)?;
        } else {
            let mut shorts = &arg[1..];
            while !shorts.is_empty() && !shorts.starts_with("test.") {
                let b = shorts.as_bytes();
                let c = b[0];
                let Some(flag) = lookup_short(c) else {
                    return Err(format!(
                        "unknown shorthand flag: '{}' in -{shorts}",
                        char::from(c)
                    ));
                };
                // Every shorthand is ASCII, so byte 1 starts a character.
                let after = &shorts[1..];
                let value = if b.len() > 2 && b[1] == b'=' {
                    let v = &shorts[2..];
                    shorts = "";
                    v.to_string()
                } else if flag.kind == Kind::Bool {
                    shorts = after;
                    "true".to_string()
                } else if !after.is_empty() {
                    shorts = "";
                    after.to_string()
                } else if let Some((value, tail)) = rest.split_first() {
                    rest = tail;
                    shorts = "";
                    value.clone()
                } else {
                    return Err(format!(
                        "flag needs an argument: '{}' in -{shorts}",
                        char::from(c)
                    ));
                };
                opts.set(flag, &value)?;
            }
        }
    }
    Ok(opts)
}

impl Options {
    fn set(&mut self, flag: &Flag, value: &str) -> Result<(), String> {
        let invalid = |cause: String| {
            let name = match flag.short {
                Some(c) => format!("-{}, --{}", char::from(c), flag.name),
                None => format!("--{}", flag.name),
            };
            format!(
                "invalid argument {} for {} flag: {cause}",
                gostr::quote(value.as_bytes()),
                gostr::quote(name.as_bytes())
            )
        };
        match flag.kind {
            Kind::Int => {
                let n = gostr::parse_int(value).map_err(invalid)?;
                *match flag.name {
                    "incoming-proxy-port" => &mut self.incoming_proxy_port,
                    "outgoing-proxy-port" => &mut self.outgoing_proxy_port,
                    "proxy-uid" => &mut self.proxy_uid,
                    "proxy-gid" => &mut self.proxy_gid,
                    _ => &mut self.timeout_close_wait_secs,
                } = n;
            }
            Kind::Bool => {
                let b = gostr::parse_bool(value).map_err(invalid)?;
                *match flag.name {
                    "simulate" => &mut self.simulate,
                    "use-wait-flag" => &mut self.use_wait_flag,
                    "ipv6" => &mut self.ipv6,
                    _ => &mut self.help,
                } = b;
            }
            Kind::Str => {
                *match flag.name {
                    "netns" => &mut self.netns,
                    "log-format" => &mut self.log_format,
                    "log-level" => &mut self.log_level,
                    "iptables-mode" => &mut self.iptables_mode,
                    "firewall-bin-path" => &mut self.firewall_bin_path,
                    _ => &mut self.firewall_save_bin_path,
                } = value.to_string();
            }
            Kind::IntList => {
                let ports = value
                    .split(',')
                    .map(gostr::atoi)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                self.ports_to_redirect.extend(ports);
            }
            Kind::StrList => {
                let items = gostr::csv_record(value).map_err(invalid)?;
                match flag.name {
                    "inbound-ports-to-ignore" => &mut self.inbound_ports_to_ignore,
                    "outbound-ports-to-ignore" => &mut self.outbound_ports_to_ignore,
                    _ => &mut self.subnets_to_ignore,
                }
                .extend(items);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn ok(s: &[&str]) -> Options {
        parse(&args(s)).unwrap()
    }

    fn err(s: &[&str]) -> String {
        parse(&args(s)).unwrap_err()
    }

    #[test]
    fn defaults() {
        let o = ok(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(o.incoming_proxy_port, -1);
        assert!(o.ipv6);
        assert_eq!(o.log_level, "info");
        assert_eq!(o.log_format, "plain");
    }

    #[test]
    fn the_charts_default_args() {
        let o = ok(&[
            "--firewall-bin-path",
            "iptables-nft",
            "--firewall-save-bin-path",
            "iptables-nft-save",
            "--ipv6=false",
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--inbound-ports-to-ignore",
            "4190,4191,4567,4568",
            "--outbound-ports-to-ignore",
            "4567,4568",
        ]);
        assert_eq!(o.firewall_bin_path, "iptables-nft");
        assert_eq!(o.firewall_save_bin_path, "iptables-nft-save");
        assert!(!o.ipv6);
        assert_eq!(
            (o.incoming_proxy_port, o.outgoing_proxy_port, o.proxy_uid),
            (4143, 4140, 2102)
        );
        assert_eq!(o.proxy_gid, -1);
        assert_eq!(o.inbound_ports_to_ignore, ["4190", "4191", "4567", "4568"]);
        assert_eq!(o.outbound_ports_to_ignore, ["4567", "4568"]);
        assert!(o.positionals.is_empty());
    }

    #[test]
    fn value_forms() {
        for form in [
            &["--incoming-proxy-port=4143"][..],
            &["--incoming-proxy-port", "4143"],
            &["-p", "4143"],
            &["-p4143"],
            &["-p=4143"],
            &["-p", "0x102F"],
        ] {
            assert_eq!(ok(form).incoming_proxy_port, 4143, "{form:?}");
        }
        // The next argument is the value even when it looks like a flag.
        assert_eq!(ok(&["-u", "-5"]).proxy_uid, -5);
        assert_eq!(ok(&["--proxy-gid", "-1"]).proxy_gid, -1);
        let o = ok(&["-o", "4140", "-u", "2102", "-g", "2103"]);
        assert_eq!(
            (o.outgoing_proxy_port, o.proxy_uid, o.proxy_gid),
            (4140, 2102, 2103)
        );
        assert_eq!(
            ok(&["--timeout-close-wait-secs", "60"]).timeout_close_wait_secs,
            60
        );
    }

    #[test]
    fn booleans() {
        assert!(ok(&["--ipv6"]).ipv6);
        assert!(!ok(&["--ipv6=false"]).ipv6);
        assert!(!ok(&["--ipv6=0"]).ipv6);
        // `--ipv6 false`: ipv6 stays on, `false` is a stray positional.
        let o = ok(&["--ipv6", "false"]);
        assert!(o.ipv6);
        assert_eq!(o.positionals, ["false"]);
        assert!(ok(&["--simulate"]).simulate);
        assert!(ok(&["-w"]).use_wait_flag);
        assert!(!ok(&["-w=false"]).use_wait_flag);
        let o = ok(&["-wp", "4143"]);
        assert!(o.use_wait_flag);
        assert_eq!(o.incoming_proxy_port, 4143);
        let o = ok(&["-wp4143"]);
        assert!(o.use_wait_flag);
        assert_eq!(o.incoming_proxy_port, 4143);
        assert!(ok(&["-h"]).help);
        assert!(ok(&["--help"]).help);
        assert!(!ok(&["--help=false"]).help);
    }

    #[test]
    fn lists_accumulate() {
        let o = ok(&["--ports-to-redirect", "80,81", "-r", "82", "-r=83,84"]);
        assert_eq!(o.ports_to_redirect, [80, 81, 82, 83, 84]);
        let o = ok(&[
            "--inbound-ports-to-ignore",
            "1,2",
            "--inbound-ports-to-ignore=3-4",
            "--inbound-ports-to-ignore",
            "",
        ]);
        assert_eq!(o.inbound_ports_to_ignore, ["1", "2", "3-4"]);
        // No trimming: items are kept as given.
        let o = ok(&["--subnets-to-ignore", "10.0.0.0/8, 192.168.0.0/16"]);
        assert_eq!(o.subnets_to_ignore, ["10.0.0.0/8", " 192.168.0.0/16"]);
        let o = ok(&["--outbound-ports-to-ignore", "\"443,6443\",80"]);
        assert_eq!(o.outbound_ports_to_ignore, ["443,6443", "80"]);
    }

    #[test]
    fn positionals_are_ignored() {
        let o = ok(&["stray", "-", "-p", "1", "--", "--not-a-flag", "-x"]);
        assert_eq!(o.positionals, ["stray", "-", "--not-a-flag", "-x"]);
        assert_eq!(o.incoming_proxy_port, 1);
        let o = ok(&["-test.v", "-p", "2"]);
        assert_eq!(o.incoming_proxy_port, 2);
    }

    #[test]
    fn errors() {
        assert_eq!(err(&["--bogus"]), "unknown flag: --bogus");
        assert_eq!(err(&["--bogus=1"]), "unknown flag: --bogus");
        assert_eq!(err(&["-x"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(err(&["-wx"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(err(&["---p"]), "bad flag syntax: ---p");
        assert_eq!(err(&["--=p"]), "bad flag syntax: --=p");
        assert_eq!(
            err(&["--incoming-proxy-port"]),
            "flag needs an argument: --incoming-proxy-port"
        );
        assert_eq!(err(&["-p"]), "flag needs an argument: 'p' in -p");
        assert_eq!(
            err(&["-p", "abc"]),
            "invalid argument \"abc\" for \"-p, --incoming-proxy-port\" flag: \
             strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            err(&["--timeout-close-wait-secs", "1s"]),
            "invalid argument \"1s\" for \"--timeout-close-wait-secs\" flag: \
             strconv.ParseInt: parsing \"1s\": invalid syntax"
        );
        assert_eq!(
            err(&["--ipv6=no"]),
            "invalid argument \"no\" for \"--ipv6\" flag: \
             strconv.ParseBool: parsing \"no\": invalid syntax"
        );
        assert_eq!(
            err(&["-r", "80, 81"]),
            "invalid argument \"80, 81\" for \"-r, --ports-to-redirect\" flag: \
             strconv.Atoi: parsing \" 81\": invalid syntax"
        );
        assert!(
            err(&["--inbound-ports-to-ignore", "a\"b"]).contains("bare \" in non-quoted-field")
        );
    }
}
