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

use remora_runtime::bootstrap::{Bootstrap, EXIT_USAGE, drain_on_signal};
use remora_runtime::log::{LogConfig, LogFormat, parse_filter, parse_format};

#[derive(Debug, Args)]
#[command(
    about = "Run one cluster's control plane (identity issuer) from a config file",
    long_about = "Run one cluster's control plane: Linkerd's Identity API (Certify) from a TOML \
                  config file naming the cluster, its trust domain, its issuer and how \
                  workloads authenticate (Remora's tokens, signed with its token key, and/or \
                  Kubernetes service-account tokens, verified offline against the cluster's \
                  service-account keys), and Destination (Get, GetProfile) for its [[services]], \
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
        #[arg(long, default_value = "8760h", value_parser = remora_runtime::duration::parse_duration)]
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
    let Some(path) = &config.token_key else {
        eprintln!(
            "remora control token: this control plane accepts no Remora tokens \
             (identity.token_auth does not include \"remora\")"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let key = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| TokenKey::from_hex(&t).map_err(|e| e.to_string()));
    match key {
        Ok(key) => {
            println!("{}", key.mint(&name, ttl));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora control token: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log = match log_config(|name| std::env::var(name).ok()) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("remora control: invalid configuration: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bootstrap = Bootstrap {
        name: "remora control",
        log,
        worker_threads: 2,
    };
    bootstrap.run(|log_level| async move {
        info!(config = ?config, "effective configuration");
        let control = match Control::bind(config, Some(path)) {
            Ok(c) => c.with_log_level(log_level),
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(drain_on_signal(control.drain()));
        match control.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `remora control` logs as the proxy does: `REMORA_LOG` (a filter, default `info`) and
/// `REMORA_LOG_FORMAT` (`plain` or `json`); a bad value is refused, naming the variable.
fn log_config(lookup: impl Fn(&str) -> Option<String>) -> Result<LogConfig, String> {
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let filter = match var(remora_proxy::config::LOG) {
        Some(v) => {
            parse_filter(&v).map_err(|e| format!("{}={v:?}: {e}", remora_proxy::config::LOG))?
        }
        None => "info".to_string(),
    };
    let format = match var(remora_proxy::config::LOG_FORMAT) {
        Some(v) => parse_format(&v)
            .map_err(|e| format!("{}={v:?}: {e}", remora_proxy::config::LOG_FORMAT))?,
        None => LogFormat::Plain,
    };
    Ok(LogConfig { filter, format })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_variables_are_parsed_strictly() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = log_config(env(&[])).unwrap();
        assert_eq!((c.filter.as_str(), c.format), ("info", LogFormat::Plain));
        let c = log_config(env(&[
            ("REMORA_LOG", "debug"),
            ("REMORA_LOG_FORMAT", "JSON"),
        ]))
        .unwrap();
        assert_eq!((c.filter.as_str(), c.format), ("debug", LogFormat::Json));
        let e = log_config(env(&[("REMORA_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(e.starts_with("REMORA_LOG_FORMAT=\"xml\""), "{e}");
        let e = log_config(env(&[("REMORA_LOG", "info,[=")])).unwrap_err();
        assert!(e.starts_with("REMORA_LOG="), "{e}");
    }
}
