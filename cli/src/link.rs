//! `remora link`: prints the `[[links]]` stanza that links the local cluster to a remote one,
//! from the remote cluster's own config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use remora_control::config::{Config, RawLink};

use crate::EXIT_USAGE;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// One network: pods of both clusters route to each other; calls keep the caller's identity.
    Flat,
    /// Separate networks: calls go through the remote cluster's gateway.
    Gateway,
}

#[derive(Debug, Args)]
#[command(
    about = "Print the [[links]] stanza that links this cluster to another",
    long_about = "Reads the REMOTE cluster's config file and prints the [[links]] stanza to add \
                  to the LOCAL cluster's config: the remote cluster's name, trust domain, \
                  control-plane address (its multicluster.advertised_addr) and identity, the \
                  mode, and its gateway's address and identity when it names one. The remote \
                  control plane must list the local one among its own links before it answers."
)]
pub struct LinkArgs {
    /// The remote cluster's config file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// How the remote cluster's pods are reached.
    #[arg(long, value_enum)]
    mode: Mode,
}

pub fn main(args: LinkArgs) -> ExitCode {
    match stanza(&args) {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora link: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn stanza(args: &LinkArgs) -> Result<String, String> {
    let remote = Config::load(&args.config).map_err(|e| e.to_string())?;
    let control_addr = match remote.multicluster.advertised_addr {
        Some(a) => a,
        None if !remote.addr.ip().is_unspecified() && !remote.addr.ip().is_loopback() => {
            remote.addr
        }
        None => {
            return Err(format!(
                "{}: set multicluster.advertised_addr (the address other clusters reach this \
                 control plane at; server.addr is {})",
                args.config.display(),
                remote.addr
            ));
        }
    };
    let mode = match args.mode {
        Mode::Flat => "flat",
        Mode::Gateway => "gateway",
    };
    let gateway = match (&remote.multicluster.gateway, args.mode) {
        (Some((addr, id)), _) => Some((addr.to_string(), id.to_string())),
        (None, Mode::Gateway) => {
            return Err(format!(
                "{}: a gateway link needs the remote cluster's multicluster.gateway_addr and \
                 gateway_identity",
                args.config.display()
            ));
        }
        (None, Mode::Flat) => None,
    };
    let (gateway_addr, gateway_identity) = gateway.unzip();
    let link = RawLink {
        cluster: remote.cluster.clone(),
        trust_domain: remote.trust_domain.clone(),
        control_addr: control_addr.to_string(),
        control_identity: remote.control_identity().to_string(),
        mode: mode.to_string(),
        gateway_addr,
        gateway_identity,
    };
    /// The stanza is `[[links]]`: an array of one table.
    #[derive(serde::Serialize)]
    struct Links {
        links: [RawLink; 1],
    }
    toml::to_string(&Links { links: [link] }).map_err(|e| e.to_string())
}
