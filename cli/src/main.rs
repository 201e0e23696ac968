//! `remora`: one binary, one subcommand per role. This file only parses the command line and
//! dispatches; each role lives in its crate.
//!
//! The binary also answers to the names of the programs Linkerd's chart runs from the proxy
//! image, so the image can provide them as symlinks to it (see `deploy/image/assemble.sh`): it
//! looks at the file name it was started as (argv[0]) before parsing anything.
//!
//! - `linkerd2-proxy`: the proxy, as `remora proxy`. The chart gives the proxy container no
//!   command and no arguments, so the image's ENTRYPOINT runs bare. Given a subcommand, it runs
//!   that instead (`linkerd2-proxy control --config ...`), for manifests that keep the image's
//!   ENTRYPOINT and pass `args:` (`deploy/kubernetes/`). Linkerd's own entrypoint
//!   (`linkerd2-proxy-identity`) execs the proxy with an empty argv, which Linux (since 5.18)
//!   turns into a single empty argv[0]: an empty argv, or an empty argv[0], is the proxy too.
//! - `linkerd-await`: wait for the proxy's readiness, then run a program ([`linkerd_await`]).
//! - `linkerd2-network-validator`: check the CNI plugin's redirect ([`network_validator`]).
//!
//! Any other name (`remora`) is the usual command line, where no subcommand prints the help and
//! exits 64.

#![forbid(unsafe_code)]

mod certs;
mod check_config;
mod control;
mod demo;
mod init;
mod link;
mod linkerd_await;
mod network_validator;
mod proxy;
mod test_server;
mod top;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use remora_runtime::bootstrap::EXIT_USAGE;

#[derive(Debug, Parser)]
#[command(
    name = "remora",
    version,
    about = "Remora: a sidecar L4/L7 micro-proxy with mutual TLS, wire-compatible with Linkerd",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Proxy(proxy::ProxyArgs),
    Gateway(proxy::GatewayArgs),
    Init(init::InitArgs),
    Certs(certs::CertsArgs),
    Control(control::ControlArgs),
    Demo(demo::DemoArgs),
    Link(link::LinkArgs),
    TestServer(test_server::TestServerArgs),
    Top(top::TopArgs),
}

/// `linkerd2-proxy`: with no arguments (or only `--check-config`), `remora proxy`, under the name
/// Linkerd's image gives it; with a subcommand, that subcommand, so an image whose ENTRYPOINT is
/// this name also runs `args: ["control", ...]` and the like.
#[derive(Debug, Parser)]
#[command(
    name = "linkerd2-proxy",
    version,
    about = "Run the sidecar proxy, as `remora proxy` (or, given one, a remora subcommand)",
    long_about = "Run the sidecar proxy, as `remora proxy`: Remora under the name Linkerd's \
                  proxy image gives its proxy, configured by LINKERD2_PROXY_* or REMORA_* \
                  environment variables. Given a subcommand, runs that instead, as \
                  `remora SUBCOMMAND` would.",
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "SUBCOMMAND",
    subcommand_help_heading = "Subcommands (as `remora SUBCOMMAND`)"
)]
struct Linkerd2Proxy {
    #[command(flatten)]
    proxy: proxy::ProxyArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The programs this binary can be started as, by the file name of argv[0].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    Remora,
    Linkerd2Proxy,
    LinkerdAwait,
    NetworkValidator,
}

impl Program {
    fn of(arg0: &OsString) -> Program {
        if arg0.is_empty() {
            return Program::Linkerd2Proxy;
        }
        match Path::new(arg0).file_name().and_then(|n| n.to_str()) {
            Some("linkerd2-proxy") => Program::Linkerd2Proxy,
            Some("linkerd-await") => Program::LinkerdAwait,
            Some("linkerd2-network-validator") => Program::NetworkValidator,
            _ => Program::Remora,
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let Some(arg0) = argv.first() else {
        // An empty argv (where the kernel lets it through): the proxy, as for an empty argv[0].
        return proxy::main(proxy::ProxyArgs::default());
    };
    match Program::of(arg0) {
        Program::Linkerd2Proxy => match parse::<Linkerd2Proxy>(argv) {
            Ok(Linkerd2Proxy {
                command: Some(command),
                ..
            }) => run(command),
            Ok(Linkerd2Proxy { proxy, .. }) => proxy::main(proxy),
            Err(code) => code,
        },
        Program::LinkerdAwait => linkerd_await::main(argv),
        Program::NetworkValidator => network_validator::main(argv),
        Program::Remora => match parse::<Cli>(argv) {
            Ok(cli) => run(cli.command),
            Err(code) => code,
        },
    }
}

fn run(command: Command) -> ExitCode {
    match command {
        Command::Proxy(args) => proxy::main(args),
        Command::Gateway(args) => proxy::gateway(args),
        Command::Init(args) => init::main(args),
        Command::Certs(args) => certs::main(args),
        Command::Control(args) => control::main(args),
        Command::Demo(args) => demo::main(args),
        Command::Link(args) => link::main(args),
        Command::TestServer(args) => test_server::main(args),
        Command::Top(args) => top::main(args),
    }
}

/// Parses a command line; on `--help` or `--version` prints it and gives exit 0, on a usage
/// error prints it and gives exit 64 (EX_USAGE).
pub fn parse<P: Parser>(argv: Vec<OsString>) -> Result<P, ExitCode> {
    P::try_parse_from(argv).map_err(|e| {
        let usage_error = e.use_stderr();
        let _ = e.print();
        if usage_error {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}
