//! `remora proxy`: the sidecar. Configured by `REMORA_*` variables, or by Linkerd's
//! `LINKERD2_PROXY_*` environment as Linkerd's injector renders it (an explicit `REMORA_*`
//! variable wins). `--check-config` parses and checks that configuration without running
//! anything ([`crate::check_config`]).

use std::process::ExitCode;

use clap::Args;
use remora_proxy::Proxy;
use remora_proxy::config::{Config, VARS};
use remora_runtime::bootstrap::{Bootstrap, EXIT_USAGE, drain_on_signal};
use tracing::{debug, error, info, warn};

#[derive(Debug, Default, Args)]
#[command(
    about = "Run the sidecar proxy (configured by REMORA_* or LINKERD2_PROXY_* environment variables)",
    long_about = "Run the sidecar proxy.\n\nThe proxy takes the pod's traffic that `remora init` \
                  redirects: the app's outbound connections arrive on the outbound listener and \
                  are forwarded to their original destination; other pods' connections arrive \
                  on the inbound listener and are forwarded to the app on the pod's own \
                  address. It is configured by the environment variables below, or by \
                  Linkerd's LINKERD2_PROXY_* variables as Linkerd's injector sets them (an \
                  explicit REMORA_* variable wins); CONFIG.md documents both.",
    after_long_help = env_help(),
    after_help = "Run `remora proxy --help` for the environment variables and their defaults."
)]
pub struct ProxyArgs {
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Debug, Args)]
#[command(
    about = "Run the cluster's gateway: the proxy in gateway mode (REMORA_* variables as for proxy)",
    long_about = "Run the cluster's multicluster gateway: the proxy in gateway mode.\n\nOther \
                  clusters' proxies reach this cluster's exported services through it: it \
                  accepts mTLS connections on the inbound listener (4143) whose transport \
                  header names a service, forwards only to services this cluster exports (never \
                  an IP address or another name: it is not an open relay), balances across the \
                  service's pods and connects to each with mTLS, per request for HTTP (with \
                  `forwarded`, retries and golden metrics) and as bytes otherwise. It needs an \
                  identity (REMORA_IDENTITY_*) and discovery with the control plane's identity \
                  (REMORA_DESTINATION_ADDR, REMORA_DESTINATION_SVC_NAME); its identity must be \
                  the control plane's multicluster.gateway_identity. See CONFIG.md.",
    after_long_help = env_help(),
)]
pub struct GatewayArgs {
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Debug, Default, Args)]
struct CheckArgs {
    /// Check the configuration and the files it names, print it and exit (0: usable, 64: not).
    ///
    /// Parses the environment as the proxy would, checks the files it names (trust anchors,
    /// token file, identity directory), prints the effective configuration and exits 0, or
    /// exits 64 naming the variable at fault. Binds no listener, resolves no name, writes
    /// nothing.
    #[arg(long)]
    check_config: bool,
}

fn env_help() -> String {
    let mut out = String::from("Environment (default in brackets):\n");
    for var in VARS {
        out.push_str(&format!(
            "  {}  [{}]\n      {}\n",
            var.name, var.default, var.help
        ));
    }
    out
}

pub fn main(args: ProxyArgs) -> ExitCode {
    if args.check.check_config {
        return crate::check_config::main("remora proxy", false);
    }
    run(false)
}

/// `remora gateway`: the same proxy, in gateway mode.
pub fn gateway(args: GatewayArgs) -> ExitCode {
    if args.check.check_config {
        return crate::check_config::main("remora gateway", true);
    }
    run(true)
}

fn run(gateway: bool) -> ExitCode {
    let name = if gateway {
        "remora gateway"
    } else {
        "remora proxy"
    };
    let config = match Config::from_env().and_then(|c| if gateway { c.gateway() } else { Ok(c) }) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: invalid configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bootstrap = Bootstrap {
        name,
        log: config.log.clone(),
        worker_threads: config.worker_threads,
    };
    bootstrap.run(|log_level| async move {
        log_config(&config);
        let proxy = match Proxy::bind(config) {
            Ok(proxy) => proxy.with_log_level(log_level),
            Err(e) => {
                error!("{e}");
                return ExitCode::from(e.exit_code());
            }
        };
        info!(
            outbound = ?proxy.outbound_addrs(),
            inbound = ?proxy.inbound_addrs(),
            admin = ?proxy.admin_addr(),
            "listening"
        );
        tokio::spawn(drain_on_signal(proxy.drain()));
        proxy.run().await;
        info!("exiting");
        ExitCode::SUCCESS
    })
}

fn log_config(c: &Config) {
    info!(
        outbound = ?c.outbound_addrs,
        inbound = ?c.inbound_addrs,
        admin = %c.admin_addr,
        worker_threads = c.worker_threads,
        surface = if c.linkerd.is_some() { "LINKERD2_PROXY_*" } else { "REMORA_*" },
        "effective configuration"
    );
    // Each setting not at Remora's default, with the variable it came from.
    for line in c.describe() {
        info!("config: {line}");
    }
    match &c.identity {
        Some(id) => info!(
            identity = %id.name,
            identity_addr = %id.addr,
            identity_svc = ?id.svc_name.as_ref().map(|n| n.to_string()),
            identity_dir = ?id.dir.as_ref().map(|d| d.display().to_string()),
            token_file = %id.token_file.display(),
            trust_anchors = id.trust_anchors.certs().len(),
            "workload identity"
        ),
        None => info!(
            "no workload identity configured ({} unset)",
            remora_proxy::config::IDENTITY_NAME
        ),
    }
    if let Some(notes) = &c.linkerd {
        for (var, why) in &notes.unhonoured {
            warn!("{var} is set but has no effect in Remora: {why}");
        }
        for var in &notes.unknown {
            debug!("{var} is not a variable Remora knows; ignored");
        }
    }
}
