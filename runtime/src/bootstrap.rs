//! The common start of every long-running role (`remora proxy`, `remora gateway`,
//! `remora control`): logging, the open-file limit, the allocator's trimming thread, the Tokio
//! runtime, and the signals that start the drain. Each role's `main` parses its own
//! configuration first (exiting with [`EXIT_USAGE`] when it is wrong), then hands its async
//! body to [`run`].

use std::future::Future;
use std::process::ExitCode;

use tracing::{error, info, warn};

use crate::drain::Drain;
use crate::log::{LogConfig, LogLevel};

/// EX_USAGE from sysexits.h: the command line or the configuration is wrong.
pub const EXIT_USAGE: u8 = 64;

/// How a role's process is set up.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    /// The role, as it names itself in error messages (`remora proxy`).
    pub name: &'static str,
    pub log: LogConfig,
    /// 1 runs a single-threaded runtime.
    pub worker_threads: usize,
}

impl Bootstrap {
    /// Installs logging, raises the open-file limit, builds the runtime and runs `body` on it
    /// with the handle on the log filter. Exits 64 when logging cannot be set up, 1 when the
    /// runtime cannot start; otherwise with what `body` returns.
    pub fn run<F, Fut>(self, body: F) -> ExitCode
    where
        F: FnOnce(LogLevel) -> Fut,
        Fut: Future<Output = ExitCode>,
    {
        let level = match crate::log::init(&self.log) {
            Ok(level) => level,
            Err(e) => {
                eprintln!("{}: cannot start logging: {e}", self.name);
                return ExitCode::from(EXIT_USAGE);
            }
        };
        match crate::rlimit::raise_nofile() {
            Ok(limit) => info!(limit, "raised the open-file soft limit to the hard limit"),
            Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
        }
        // Memory freed after a burst goes back to the system (`alloc/src/lib.rs`).
        remora_alloc::start();
        let runtime = match self.worker_threads {
            0 | 1 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build(),
        };
        match runtime {
            Ok(rt) => rt.block_on(body(level)),
            Err(e) => {
                error!(error = %e, "cannot start the runtime");
                ExitCode::FAILURE
            }
        }
    }
}

/// Signals `drain` on the first SIGTERM or SIGINT.
pub async fn drain_on_signal(drain: Drain) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; use POST /shutdown to stop");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received; shutting down gracefully"),
        _ = int.recv() => info!("SIGINT received; shutting down gracefully"),
    }
    drain.signal();
}
