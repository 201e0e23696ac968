//! `remora control`: one cluster's control plane, and `remora control token`, which mints a
//! workload's token.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use remora_control::config::Config;
use remora_control::server::Control;
use remora_control::token::TokenKey;
use remora_identity::Name;
use tracing::{error, info};

use crate::EXIT_USAGE;

#[derive(Debug, Args)]
#[command(
    about = "Run one cluster's control plane (identity issuer) from a config file",
    long_about = "Run one cluster's control plane: Linkerd's Identity API (Certify) from a TOML \
                  config file naming the cluster, its trust domain, its issuer and its \
                  token-signing key, and Destination (Get, GetProfile) for its [[services]], \
                  followed live. With [[links]] it mirrors linked clusters' exported services \
                  and serves its own exports to them (remora.multicluster.v1.Exports). The gRPC \
                  server uses TLS with the control plane's own identity whenever it listens on \
                  a non-loopback address or takes part in multicluster. Issuer files changed \
                  on disk are reloaded without a restart. See CONFIG.md and \
                  examples/control.toml.",
    args_conflicts_with_subcommands = true
)]
pub struct ControlArgs {
    /// The cluster's config file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<ControlCommand>,
}

#[derive(Debug, Subcommand)]
enum ControlCommand {
    /// Print a token that lets one workload obtain its own identity's certificate.
    Token {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The workload identity, e.g.
        /// web.shop.serviceaccount.identity.linkerd.east.example.
        #[arg(long, value_name = "NAME")]
        identity: String,
        /// How long the token is valid.
        #[arg(long, default_value = "8760h", value_parser = remora_proxy::config::parse_duration)]
        ttl: Duration,
    },
}

pub fn main(args: ControlArgs) -> ExitCode {
    match (args.command, args.config) {
        (
            Some(ControlCommand::Token {
                config,
                identity,
                ttl,
            }),
            _,
        ) => token(config, &identity, ttl),
        (None, Some(config)) => serve(config),
        (None, None) => {
            eprintln!("remora control: --config FILE is required (see --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("remora control: invalid configuration: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn token(config: PathBuf, identity: &str, ttl: Duration) -> ExitCode {
    let config = match load(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let name: Name = match identity.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("remora control token: --identity: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !config.owns(&name) {
        eprintln!(
            "remora control token: {name} is not an identity of cluster {} (trust domain {}, \
             control plane namespace {})",
            config.cluster, config.trust_domain, config.control_plane_ns
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let key = std::fs::read_to_string(&config.token_key)
        .map_err(|e| e.to_string())
        .and_then(|t| TokenKey::from_hex(&t).map_err(|e| e.to_string()));
    match key {
        Ok(key) => {
            println!("{}", key.mint(&name, ttl));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora control token: {}: {e}", config.token_key.display());
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log_level = match remora_proxy::log::init(&log_config()) {
        Ok(level) => level,
        Err(e) => {
            eprintln!("remora control: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    info!(config = ?config, "effective configuration");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let control = match Control::bind(config, Some(path)) {
            Ok(c) => c.with_log_level(log_level),
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(crate::proxy::drain_on_signal(control.drain()));
        match control.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn log_config() -> remora_proxy::config::LogConfig {
    let filter = std::env::var(remora_proxy::config::LOG).unwrap_or_else(|_| "info".into());
    let format = match std::env::var(remora_proxy::config::LOG_FORMAT).as_deref() {
        Ok("json") => remora_proxy::config::LogFormat::Json,
        _ => remora_proxy::config::LogFormat::Plain,
    };
    remora_proxy::config::LogConfig { filter, format }
}
