//! Policy as the proxy holds it: one `watch` per key (an inbound port, an outbound target),
//! fed by a background task following the control plane's stream for that key.
//!
//! - Until the first answer a key holds its default (the configured local policy); after it,
//!   the last good answer, through outages and restarts of the control plane.
//! - A message that does not compile (an unknown protocol, a regex that does not build) is
//!   refused: logged with the key and the reason, counted, and the previous policy kept.
//! - The task reconnects with backoff when the stream fails or ends (an empty stream, ended
//!   with `OK` before any message, keeps the last good policy and is asked again), and
//!   restarts a call that gets no answer, or a stream that stays silent or lives too long
//!   ([`StreamLimits`], Linkerd's `CONTROL_STREAM_*`).
//!   `NotFound`, `Unimplemented`, `InvalidArgument` and `FailedPrecondition` end it: the key
//!   keeps what it has (its default: for the outbound, "no policy: use profiles").
//! - The cache is bounded: at most `max` keys, and a key no connection used for `idle` is
//!   dropped (eagerly watched keys, such as the pod's declared ports, are kept).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora_runtime::Backoff;
use remora_runtime::channel::Moved;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Watchdogs of one control-plane stream (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// The first message must arrive within this.
    pub initial: Option<Duration>,
    /// Later messages: at most this apart.
    pub idle: Option<Duration>,
    /// A stream older than this is replaced.
    pub lifetime: Option<Duration>,
}

impl StreamLimits {
    /// When a stream opened at `opened` must next have said something: `initial` from now
    /// until its first message (`heard` false), `idle` from now after one, never past its
    /// `lifetime`; `None` without limits.
    pub fn deadline(&self, opened: Instant, heard: bool) -> Option<Instant> {
        let wait = if heard { self.idle } else { self.initial };
        [
            wait.map(|w| Instant::now() + w),
            self.lifetime.map(|l| opened + l),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a stream opened at `opened` has reached its lifetime (else a missed deadline
    /// means the control plane went silent).
    pub fn outlived(&self, opened: Instant) -> bool {
        self.lifetime.is_some_and(|l| opened.elapsed() >= l)
    }
}

/// `fut` within `deadline` (`None`: without one); `None` when the deadline passed.
pub async fn within<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// What the key's stream yields, one message at a time.
pub type MessageFuture<'a, M> =
    Pin<Box<dyn Future<Output = Result<Option<M>, tonic::Status>> + Send + 'a>>;

/// An open stream: a way to read its next message.
pub trait Stream<M>: Send {
    fn next(&mut self) -> MessageFuture<'_, M>;
}

impl<M: Send + 'static> Stream<M> for tonic::Streaming<M> {
    fn next(&mut self) -> MessageFuture<'_, M> {
        Box::pin(self.message())
    }
}

/// Opens a key's stream.
pub type OpenFuture<M> =
    Pin<Box<dyn Future<Output = Result<Box<dyn Stream<M>>, tonic::Status>> + Send + 'static>>;

/// How one kind of policy is watched: opening a key's stream and compiling its messages.
pub trait Source: Send + Sync + 'static {
    type Key: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static;
    /// Compared with the last message compiled: a control plane re-sends unchanged policies
    /// (on any change elsewhere, on every new stream), and recompiling one would reset state
    /// that must live across them, such as a rate limiter's buckets.
    type Message: PartialEq + Send + 'static;
    type Policy: Send + Sync + 'static;

    /// What the policy of `key` is called in logs (`inbound port 8080`).
    fn what(&self) -> &'static str;
    fn open(&self, key: &Self::Key) -> OpenFuture<Self::Message>;
    fn compile(&self, key: &Self::Key, msg: &Self::Message) -> Result<Self::Policy, String>;
    /// A refused message (counted by the source's metrics, if any).
    fn refused(&self, _key: &Self::Key) {}
    /// What to publish instead when a message is refused, given the key's current policy:
    /// `None` (the default) keeps the current one. (The outbound marks a target whose first
    /// answer was refused, so its connections stop waiting for one.)
    fn on_refused(&self, _key: &Self::Key, _current: &Self::Policy) -> Option<Self::Policy> {
        None
    }
    /// Whether a stream failing with `code` ends the key's watch for good (the key keeps what
    /// it has) rather than being retried with backoff. By default `NotFound`, `Unimplemented`,
    /// `InvalidArgument` and `FailedPrecondition` are final; linkerd2-proxy's inbound retries
    /// `NotFound` and `Unimplemented`.
    /// Fires when the control plane's addresses change: a stream waiting out a backoff retries
    /// at once (by default, never).
    fn moved(&self) -> Moved {
        Moved::never()
    }
    fn is_final(&self, code: tonic::Code) -> bool {
        matches!(
            code,
            tonic::Code::NotFound
                | tonic::Code::Unimplemented
                | tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
        )
    }
}

struct Entry<P> {
    rx: watch::Receiver<Arc<P>>,
    /// Counts the receivers connections still hold (`rx` is one).
    tx: watch::Sender<Arc<P>>,
    last_used: Instant,
    /// Never dropped for idleness.
    pinned: bool,
    task: JoinHandle<()>,
}

impl<P> Drop for Entry<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watched policies of one source.
pub struct Watches<S: Source> {
    source: Arc<S>,
    entries: Mutex<HashMap<S::Key, Entry<S::Policy>>>,
    max: usize,
    idle: Duration,
    limits: StreamLimits,
}

impl<S: Source> fmt::Debug for Watches<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("Watches")
            .field("what", &self.source.what())
            .field("keys", &n)
            .field("max", &self.max)
            .finish()
    }
}

impl<S: Source> Watches<S> {
    /// A cache of at most `max` keys, dropping keys unused for `idle`. Call within a runtime.
    pub fn new(source: S, max: usize, idle: Duration, limits: StreamLimits) -> Arc<Self> {
        let w = Arc::new(Watches {
            source: Arc::new(source),
            entries: Mutex::new(HashMap::new()),
            max: max.max(1),
            idle,
            limits,
        });
        tokio::spawn(sweep(Arc::downgrade(&w)));
        w
    }

    /// The policy of `key`, starting to watch it (with `default` until an answer) if needed.
    pub fn get(
        &self,
        key: &S::Key,
        default: impl FnOnce() -> S::Policy,
    ) -> watch::Receiver<Arc<S::Policy>> {
        self.get_with(key, default, false)
    }

    /// As [`get`](Self::get), and never dropped for idleness (a port the pod declares).
    pub fn pin(
        &self,
        key: &S::Key,
        default: impl FnOnce() -> S::Policy,
    ) -> watch::Receiver<Arc<S::Policy>> {
        self.get_with(key, default, true)
    }

    fn get_with(
        &self,
        key: &S::Key,
        default: impl FnOnce() -> S::Policy,
        pinned: bool,
    ) -> watch::Receiver<Arc<S::Policy>> {
        let Ok(mut entries) = self.entries.lock() else {
            let (_, rx) = watch::channel(Arc::new(default()));
            return rx;
        };
        if let Some(e) = entries.get_mut(key) {
            e.pinned |= pinned;
            if e.task.is_finished() {
                // The control plane has nothing for this key (the watch ended for good): a
                // closed receiver says so, so that a caller waiting for a first answer does not
                // wait for one that never comes. Left unused, the entry is swept, and the key
                // is asked again.
                let (_, rx) = watch::channel(e.rx.borrow().clone());
                return rx;
            }
            e.last_used = Instant::now();
            return e.rx.clone();
        }
        if entries.len() >= self.max {
            // The least recently used unpinned key makes room; with every key pinned, the
            // new key is served its default without a watch.
            let oldest = entries
                .iter()
                .filter(|(_, e)| !e.pinned)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    entries.remove(&k);
                }
                None => {
                    let (_, rx) = watch::channel(Arc::new(default()));
                    return rx;
                }
            }
        }
        let (tx, rx) = watch::channel(Arc::new(default()));
        let task = tokio::spawn(follow(
            self.source.clone(),
            key.clone(),
            tx.clone(),
            self.limits,
        ));
        entries.insert(
            key.clone(),
            Entry {
                rx: rx.clone(),
                tx,
                last_used: Instant::now(),
                pinned,
                task,
            },
        );
        rx
    }

    /// The number of keys watched.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn sweep<S: Source>(w: std::sync::Weak<Watches<S>>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let Some(w) = w.upgrade() else { return };
        if let Ok(mut entries) = w.entries.lock() {
            let idle = w.idle;
            // A key is idle when no connection used it for `idle` and none holds it still
            // (a long-lived connection keeps following its policy). A dropped key's
            // connections keep the last policy they got.
            entries.retain(|_, e| {
                e.pinned || e.last_used.elapsed() < idle || e.tx.receiver_count() > 1
            });
        }
    }
}

/// Why a stream stopped.
enum Ended {
    /// The control plane has nothing for this key: keep the default, stop watching.
    Final,
    /// Reconnect after a backoff.
    Retry,
}

async fn follow<S: Source>(
    source: Arc<S>,
    key: S::Key,
    tx: watch::Sender<Arc<S::Policy>>,
    limits: StreamLimits,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX).with_jitter(0.1);
    let mut moved = source.moved();
    let mut last = None;
    loop {
        match one_stream(&*source, &key, &tx, limits, &mut backoff, &mut last).await {
            Ended::Final => {
                // Wakes whoever waits for a first answer: there will be none.
                tx.send_modify(|_| {});
                return;
            }
            Ended::Retry => moved.or_backoff(&mut backoff).await,
        }
        if tx.is_closed() {
            return;
        }
    }
}

async fn one_stream<S: Source>(
    source: &S,
    key: &S::Key,
    tx: &watch::Sender<Arc<S::Policy>>,
    limits: StreamLimits,
    backoff: &mut Backoff,
    last: &mut Option<S::Message>,
) -> Ended {
    let what = source.what();
    // The call itself is watched too: a control plane that accepts it and never answers
    // (no response headers) must not wedge the key (its first message is due by then).
    let opened = Instant::now();
    let Some(called) = within(limits.deadline(opened, false), source.open(key)).await else {
        warn!(%key, "{what}: the control plane never answered the call; replacing it");
        return Ended::Retry;
    };
    let mut stream = match called {
        Ok(s) => s,
        Err(status) => return ended_with(source, key, &status, backoff),
    };
    let mut first = true;
    loop {
        let Some(next) = within(limits.deadline(opened, !first), stream.next()).await else {
            if limits.outlived(opened) {
                let lived = opened.elapsed();
                debug!(%key, ?lived, "{what}: replacing the stream at the end of its lifetime");
            } else {
                warn!(%key, first, "{what}: the control plane went silent; replacing the stream");
            }
            return Ended::Retry;
        };
        match next {
            Ok(Some(msg)) => {
                first = false;
                if last.as_ref() == Some(&msg) {
                    backoff.reset();
                    continue;
                }
                match source.compile(key, &msg) {
                    Ok(policy) => {
                        backoff.reset();
                        tx.send_replace(Arc::new(policy));
                        *last = Some(msg);
                    }
                    Err(why) => {
                        source.refused(key);
                        let instead = source.on_refused(key, &tx.borrow());
                        if let Some(p) = instead {
                            tx.send_replace(Arc::new(p));
                        }
                        warn!(%key, error = %why, "{what}: refusing an invalid policy; keeping the previous one");
                    }
                }
            }
            Ok(None) => {
                debug!(%key, "{what}: the control plane ended the stream");
                return Ended::Retry;
            }
            Err(status) => return ended_with(source, key, &status, backoff),
        }
    }
}

fn ended_with<S: Source>(
    source: &S,
    key: &S::Key,
    status: &tonic::Status,
    backoff: &Backoff,
) -> Ended {
    let what = source.what();
    match status.code() {
        code if source.is_final(code) => {
            info!(%key, code = ?status.code(), "{what}: the control plane has no policy for it; using the default");
            Ended::Final
        }
        _ => {
            warn!(%key, error = %status, retry_in = ?backoff.peek(), "{what}: policy unavailable; keeping the last known");
            Ended::Retry
        }
    }
}

#[cfg(test)]
mod tests;
