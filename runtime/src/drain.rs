//! One drain signal for the whole process, in two phases: [`Drain::signal`] stops the listeners
//! accepting while connections already accepted run on; [`Drain::wait`] gives them a grace
//! period to finish. Whatever is still running after it is force-closed when the runtime drops.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Drain {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: listeners stop accepting. Idempotent.
    pub fn signal(&self) {
        self.token.cancel();
        self.tracker.close();
    }

    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once draining has started.
    pub async fn signaled(&self) {
        self.token.cancelled().await
    }

    /// Runs `fut` as work the drain waits for (an accepted connection).
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Number of tracked tasks still running.
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Waits up to `grace` for tracked work to finish; true if it all did.
    pub async fn wait(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_work_within_grace() {
        let drain = Drain::new();
        drain.spawn(tokio::time::sleep(Duration::from_secs(5)));
        drain.signal();
        assert!(drain.is_draining());
        assert!(!drain.wait(Duration::from_secs(1)).await);
        assert!(drain.wait(Duration::from_secs(10)).await);
        assert_eq!(drain.in_flight(), 0);
    }
}
