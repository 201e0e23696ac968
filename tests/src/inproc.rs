//! Proxies and control planes inside the test process: each runs on a thread of its own with
//! its own Tokio runtime (as the binary runs it: a single-threaded runtime), from the same
//! configuration the binary would read, and its log lines are captured for assertion
//! messages. Killing one (dropping it) stops its runtime at once, as a killed process stops.
//!
//! Nothing here needs root or namespaces; tests that do not need interception or a second
//! network run this way (see tests/README.md), and start in milliseconds instead of spawning a
//! process per pod.
//!
//! Log capture: one global `tracing` subscriber writes each line into the buffer of the thread
//! that emitted it, so every role's log stays its own. `REMORA_TEST_LOG` sets the filter
//! (default `info`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing_subscriber::fmt::MakeWriter;

use crate::eventually;

pub type Buffer = Arc<Mutex<String>>;

/// The log buffer of each in-process role, by thread name.
fn buffers() -> &'static Mutex<HashMap<String, Buffer>> {
    static BUFFERS: OnceLock<Mutex<HashMap<String, Buffer>>> = OnceLock::new();
    BUFFERS.get_or_init(Default::default)
}

/// Installs the capturing subscriber and raises the open-file limit, once per test process.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("REMORA_TEST_LOG").unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt()
            .with_writer(ThreadLogs)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
        let _ = remora_runtime::rlimit::raise_nofile();
    });
}

/// Routes each log line to the buffer of its thread; lines of other threads are dropped.
#[derive(Clone, Copy, Debug)]
struct ThreadLogs;

#[derive(Debug)]
struct ThreadWriter(Option<Buffer>);

impl<'a> MakeWriter<'a> for ThreadLogs {
    type Writer = ThreadWriter;

    fn make_writer(&'a self) -> ThreadWriter {
        let thread = std::thread::current();
        let buffer = thread
            .name()
            .and_then(|n| buffers().lock().ok()?.get(n).cloned());
        ThreadWriter(buffer)
    }
}

impl io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(b) = &self.0
            && let Ok(mut b) = b.lock()
        {
            b.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A role running in the test process.
#[derive(Debug)]
pub struct InProcess {
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    log: Buffer,
    running: Arc<AtomicBool>,
}

impl InProcess {
    /// Starts `body` on a thread named after `name` with a single-threaded runtime of its own
    /// (anything a test serves in-process: a control plane of its own making, an app); what it
    /// logs goes to [`InProcess::log`], and dropping the handle stops it.
    pub fn run<F, Fut>(name: &str, body: F) -> Self
    where
        F: FnOnce(Buffer) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        Self::spawn(name, body)
    }

    fn spawn<F, Fut>(name: &str, body: F) -> Self
    where
        F: FnOnce(Buffer) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        install();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let thread_name = format!("{name} #{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let log = Buffer::default();
        buffers()
            .lock()
            .unwrap()
            .insert(thread_name.clone(), log.clone());
        let (kill, killed) = oneshot::channel::<()>();
        let running = Arc::new(AtomicBool::new(true));
        let still = running.clone();
        let own_log = log.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    tokio::select! {
                        _ = body(own_log) => {}
                        _ = killed => {}
                    }
                });
                // Dropping the runtime cancels whatever the role left running.
                drop(rt);
                still.store(false, Ordering::Release);
            })
            .expect("spawn a thread");
        InProcess {
            kill: Some(kill),
            thread: Some(thread),
            log,
            running,
        }
    }

    /// `remora proxy` with this environment (`REMORA_*` variables only; the process
    /// environment is not read). Panics on a configuration the binary would refuse. Its access
    /// log, if enabled, goes to its log, as a process's stdout and stderr would.
    pub fn proxy(name: &str, env: &[(String, String)]) -> Self {
        let vars: HashMap<String, String> = env.iter().cloned().collect();
        let config = remora_proxy::Config::from_lookup(|k| vars.get(k).cloned())
            .unwrap_or_else(|e| panic!("{name}: invalid configuration: {e}"));
        Self::spawn(name, move |log| async move {
            let out = remora_proxy::http::record::AccessLogOut(Box::new(ThreadWriter(Some(log))));
            match remora_proxy::Proxy::bind(config) {
                Ok(proxy) => proxy.with_access_log_to(out).run().await,
                Err(e) => tracing::error!("{e}"),
            }
        })
    }

    /// `remora control --config <path>`, following edits of the file.
    pub fn control(name: &str, path: &Path) -> Self {
        let config = remora_control::config::Config::load(path)
            .unwrap_or_else(|e| panic!("{name}: invalid configuration: {e}"));
        let path = path.to_path_buf();
        Self::spawn(name, move |_| async move {
            match remora_control::server::Control::bind(config, Some(path)) {
                Ok(control) => {
                    if let Err(e) = control.run().await {
                        tracing::error!("{e}");
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        })
    }

    /// Everything the role has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to `deadline` for a log line containing `needle`.
    pub async fn wait_log(&self, needle: &str, deadline: Duration) -> bool {
        eventually(deadline, || async { self.log().contains(needle) }).await
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
