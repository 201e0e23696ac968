//! `remora test-server`: the HTTP / HTTP/2 / gRPC / WebSocket app of tests, demo and benchmarks.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use remora_test_server::TestServer;

#[derive(Debug, Args)]
#[command(
    about = "Run a test app: HTTP/1.1, HTTP/2, gRPC and WebSocket, behaviour chosen by path",
    long_about = "Run a test app serving HTTP/1.1 and HTTP/2 (detected per connection), a tiny \
                  gRPC service and a WebSocket echo. Each request's path picks the behaviour: \
                  /echo, /status/CODE, /fail-first/N/KEY, /fail-share/PERCENT, /delay/MS, /reset, \
                  /stream/BYTES, /upload, /trailers, /ws, /fanout (with --fanout and \
                  --http-proxy: calls each upstream once); gRPC remora.test.Test/Echo and /Count. \
                  Every response carries x-server: NAME."
)]
pub struct TestServerArgs {
    /// Address to listen on (repeatable).
    #[arg(long, value_name = "ADDR", required = true)]
    listen: Vec<SocketAddr>,
    /// The name it reports (x-server, /echo).
    #[arg(long, default_value = "test-server")]
    name: String,
    /// A front end: `/fanout` calls each of these absolute URLs once (repeatable) ...
    #[arg(long, value_name = "URL")]
    fanout: Vec<String>,
    /// ... through this HTTP proxy (the pod's outbound listener in explicit mode).
    #[arg(long, value_name = "ADDR", requires = "fanout")]
    http_proxy: Option<SocketAddr>,
    /// ... or, without --http-proxy, connect to upstream HOST at IP (repeatable `HOST=IP`): in
    /// a pod with interception, the proxy routes by `Host`.
    #[arg(
        long,
        value_name = "HOST=IP",
        requires = "fanout",
        conflicts_with = "http_proxy"
    )]
    resolve: Vec<String>,
}

pub fn main(args: TestServerArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("remora test-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut resolve = std::collections::HashMap::new();
        for r in &args.resolve {
            match r
                .split_once('=')
                .and_then(|(h, ip)| Some((h, ip.parse().ok()?)))
            {
                Some((host, ip)) => {
                    resolve.insert(host.to_string(), ip);
                }
                None => {
                    eprintln!("remora test-server: --resolve {r:?} is not HOST=IP");
                    return ExitCode::from(remora_runtime::bootstrap::EXIT_USAGE);
                }
            }
        }
        let server = match args.http_proxy {
            Some(proxy) => TestServer::front_end(&args.name, args.fanout, proxy),
            None if !args.fanout.is_empty() => {
                TestServer::front_end_direct(&args.name, args.fanout, resolve)
            }
            None => TestServer::new(&args.name),
        };
        let mut tasks = Vec::new();
        for addr in args.listen {
            match remora_runtime::listen::bind(addr) {
                Ok(listener) => {
                    eprintln!("remora test-server {} listening on {addr}", args.name);
                    tasks.push(tokio::spawn(server.clone().run(listener)));
                }
                Err(e) => {
                    eprintln!("remora test-server: cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}
