//! `remora`: one binary, one subcommand per role. This file only parses the command line and
//! dispatches; each role lives in its crate.

#![forbid(unsafe_code)]

mod certs;
mod control;
mod demo;
mod init;
mod link;
mod proxy;
mod test_server;
mod top;

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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return if usage_error {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
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
