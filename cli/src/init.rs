//! `remora init`: installs (or removes) the iptables rules that redirect a pod's traffic
//! through its proxy. Run once per pod, as root with NET_ADMIN, before the proxy and the app.

use std::process::ExitCode;

use clap::Args;
use remora_init::{InitConfig, PortRange, Subnet, run};

#[derive(Debug, Args)]
#[command(
    about = "Redirect the pod's TCP traffic through the proxy (iptables, as root)",
    long_about = "Redirect the pod's TCP traffic through the proxy.\n\nIn the current network \
                  namespace, for IPv4 (iptables) and IPv6 (ip6tables): inbound TCP (nat \
                  PREROUTING) goes to the inbound port, except the admin port and the skipped \
                  inbound ports; outbound TCP (nat OUTPUT) goes to the outbound port, except \
                  the proxy's own packets (by uid), loopback, and the skipped ports and subnets. \
                  The rules live in the chains REMORA_INBOUND and REMORA_OUTBOUND: running init \
                  again replaces them, and --remove deletes exactly them."
)]
pub struct InitArgs {
    /// Port of the proxy's inbound listener.
    #[arg(long, default_value_t = 4143, value_name = "PORT")]
    inbound_port: u16,
    /// Port of the proxy's outbound listener.
    #[arg(long, default_value_t = 4140, value_name = "PORT")]
    outbound_port: u16,
    /// Port of the proxy's admin listener (never redirected).
    #[arg(long, default_value_t = 4191, value_name = "PORT")]
    admin_port: u16,
    /// The uid the proxy runs as; its own connections are not redirected.
    #[arg(long, default_value_t = 2102, value_name = "UID")]
    proxy_uid: u32,
    /// Inbound ports not to redirect (e.g. 22,8000-8100).
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    skip_inbound_ports: Vec<PortRange>,
    /// Outbound ports not to redirect.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    skip_outbound_ports: Vec<PortRange>,
    /// Outbound destinations not to redirect, in CIDR form (e.g. 10.96.0.0/12,fd00::/8).
    #[arg(long, value_delimiter = ',', value_name = "CIDRS")]
    skip_subnets: Vec<Subnet>,
    /// Leave IPv6 alone (only iptables, no ip6tables).
    #[arg(long)]
    no_ipv6: bool,
    /// Remove the rules instead of installing them.
    #[arg(long)]
    remove: bool,
    /// Print the commands instead of running them.
    #[arg(long)]
    dry_run: bool,
}

pub fn main(args: InitArgs) -> ExitCode {
    let config = InitConfig {
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        admin_port: args.admin_port,
        proxy_uid: args.proxy_uid,
        skip_inbound_ports: args.skip_inbound_ports,
        skip_outbound_ports: args.skip_outbound_ports,
        skip_subnets: args.skip_subnets,
        ipv6: !args.no_ipv6,
    };
    let removal = config.removal();
    let installation = if args.remove {
        Vec::new()
    } else {
        config.installation()
    };
    if args.dry_run {
        println!("# remora init --dry-run: these commands would run, in this order.");
        println!("# Remove the rules of an earlier run (a failure here means nothing to remove):");
        for c in &removal {
            println!("{c}");
        }
        if !args.remove {
            println!("# Install:");
            for c in &installation {
                println!("{c}");
            }
        }
        return ExitCode::SUCCESS;
    }
    let res = run(&removal).and_then(|()| run(&installation));
    match res {
        Ok(()) if args.remove => {
            println!("remora init: removed the REMORA_INBOUND and REMORA_OUTBOUND rules");
            ExitCode::SUCCESS
        }
        Ok(()) => {
            println!(
                "remora init: inbound TCP -> port {}, outbound TCP -> port {} (proxy uid {} \
                 exempt), {} rules for {}",
                config.inbound_port,
                config.outbound_port,
                config.proxy_uid,
                installation.len(),
                if config.ipv6 { "IPv4 and IPv6" } else { "IPv4" },
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora init: {e}");
            // Leave nothing half-installed.
            let _ = run(&removal);
            ExitCode::FAILURE
        }
    }
}
