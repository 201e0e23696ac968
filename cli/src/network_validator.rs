//! `linkerd2-network-validator`: checks, in a pod whose traffic redirect was installed by
//! Linkerd's CNI plugin rather than by an init container, that the redirect is in place before
//! the app starts.
//!
//! Linkerd's chart runs it (when `cniEnabled`) as the pod's first init container, as uid 65534
//! with every capability dropped and a read-only root; it needs nothing more. It listens where
//! the redirect sends the pod's outbound connections (`--listen-addr`, the outbound port), then
//! connects to an address that is not in the pod (`--connect-addr`): if the redirect works, that
//! connection lands on its own listener, which answers with a random token; reading back that
//! same token proves it. The validator's uid is not the proxy's, so the redirect does not
//! exempt it.
//!
//! Flags, defaults and exit codes are those of Linkerd's validator (linkerd2-proxy-init's
//! `validator/`, v0.1.9): exit 0 once validated, 95 on any failure (cannot listen, cannot
//! connect, wrong answer, `--timeout` passed, SIGTERM or SIGINT), with the reason logged. A bad
//! command line exits 64.

use std::ffi::OsString;
use std::hash::BuildHasher;
use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use remora_runtime::duration::parse_duration;
use remora_runtime::log::{LogConfig, parse_filter, parse_format};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info};

/// The validator's failure exit code (errno 95, EOPNOTSUPP, as Linkerd's uses).
const EXIT_FAILED: u8 = 95;
/// The token: this many random alphanumerics, then a newline.
const TOKEN_CHARS: usize = 63;

#[derive(Debug, Parser)]
#[command(
    name = "linkerd2-network-validator",
    version,
    about = "Check that the pod's outbound traffic is redirected to the proxy's port",
    long_about = "Check that the pod's outbound traffic is redirected to the proxy's port.\n\n\
                  Listens on --listen-addr, connects to --connect-addr and expects its own \
                  listener to answer. Exits 0 when it does, 95 otherwise (or after --timeout)."
)]
struct ValidatorArgs {
    /// Log filter, RUST_LOG syntax [env: LINKERD_NETWORK_VALIDATOR_LOG_LEVEL] [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// plain or json [env: LINKERD_NETWORK_VALIDATOR_LOG_FORMAT] [default: plain].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Give up after DUR.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    timeout: Duration,
    /// Where the redirect should send outbound connections (the proxy's outbound port).
    #[arg(long, default_value = "0.0.0.0:4140", value_name = "ADDR")]
    listen_addr: SocketAddr,
    /// An address outside the pod to connect to.
    #[arg(long, default_value = "192.0.2.2:1404", value_name = "ADDR")]
    connect_addr: SocketAddr,
}

pub fn main(argv: Vec<OsString>) -> ExitCode {
    let args = match crate::parse::<ValidatorArgs>(argv) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let log = match log_config(&args) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("linkerd2-network-validator: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    if let Err(e) = remora_runtime::log::init(&log) {
        eprintln!("linkerd2-network-validator: cannot start logging: {e}");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let validated = rt.block_on(async {
        tokio::select! {
            biased;
            res = validate(args.listen_addr, args.connect_addr) => res,
            () = tokio::time::sleep(args.timeout) => Err(format!(
                "not validated within {:?}: connections to {} did not reach {}; the pod's \
                 traffic redirect (iptables rules) is not in place",
                args.timeout, args.connect_addr, args.listen_addr
            )),
            signal = terminated() => Err(format!("{signal} received before validation")),
        }
    });
    match validated {
        Ok(()) => {
            info!(connect_addr = %args.connect_addr, listen_addr = %args.listen_addr, "Validated");
            ExitCode::SUCCESS
        }
        Err(why) => {
            error!("{why}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The log settings: each flag, else its variable, else the default.
fn log_config(args: &ValidatorArgs) -> Result<LogConfig, String> {
    let pick = |flag: &Option<String>, var: &str, default: &str| {
        flag.clone()
            .or_else(|| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| default.to_string())
    };
    let filter = pick(
        &args.log_level,
        "LINKERD_NETWORK_VALIDATOR_LOG_LEVEL",
        "info",
    );
    let format = pick(
        &args.log_format,
        "LINKERD_NETWORK_VALIDATOR_LOG_FORMAT",
        "plain",
    );
    Ok(LogConfig {
        filter: parse_filter(&filter).map_err(|e| format!("--log-level {filter:?}: {e}"))?,
        format: parse_format(&format).map_err(|e| format!("--log-format {format:?}: {e}"))?,
    })
}

/// Listens on `listen`, connects to `connect` and checks that the answer is this run's token.
async fn validate(listen: SocketAddr, connect: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    info!("listening on {listen}");
    let token = token();
    tokio::spawn(answer(listener, token.clone()));
    info!("connecting to {connect}");
    let mut conn = TcpStream::connect(connect).await.map_err(|e| {
        format!(
            "cannot connect to {connect}: {e}; the pod's traffic redirect (iptables rules) \
             should have sent this connection to {listen}"
        )
    })?;
    debug!(local = ?conn.local_addr().ok(), "connected");
    let mut got = Vec::with_capacity(token.len());
    while got.len() < token.len() {
        let mut buf = [0u8; 128];
        let want = (token.len() - got.len()).min(buf.len());
        match conn.read(&mut buf[..want]).await {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("cannot read from {connect}: {e}")),
        }
    }
    if got != token {
        return Err(format!(
            "the connection to {connect} did not reach this validator's listener on {listen}: \
             expected {:?}, read {:?}",
            String::from_utf8_lossy(&token),
            String::from_utf8_lossy(&got),
        ));
    }
    Ok(())
}

/// Writes `token` on every connection `listener` accepts, then closes it.
async fn answer(listener: TcpListener, token: Vec<u8>) {
    loop {
        match listener.accept().await {
            Ok((mut conn, peer)) => {
                debug!(%peer, "accepted");
                let token = token.clone();
                tokio::spawn(async move {
                    if let Err(e) = conn.write_all(&token).await {
                        debug!(%peer, error = %e, "cannot write the token");
                    }
                    let _ = conn.shutdown().await;
                });
            }
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT, naming it; never if the handlers cannot be installed.
async fn terminated() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// 63 random letters and digits and a newline: what this run's listener answers.
fn token() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; TOKEN_CHARS];
    let urandom = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    if urandom.is_err() {
        // Without /dev/urandom: std's per-process random hash keys are unpredictable enough to
        // tell this run's listener from anything else.
        let keys = std::collections::hash_map::RandomState::new();
        for (i, b) in random.iter_mut().enumerate() {
            *b = keys.hash_one(i).to_le_bytes()[0];
        }
    }
    let mut token: Vec<u8> = random
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
        .collect();
    token.push(b'\n');
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_63_alphanumerics_and_a_newline_and_differ() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 64);
        assert_eq!(a.last(), Some(&b'\n'));
        assert!(a[..63].iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(a, b);
    }
}
