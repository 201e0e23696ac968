//! [`OnWake`]: a future polled only when it asked to be.
//!
//! `tokio::select!` polls every branch each time its task wakes. A connection's task races its
//! connection against watchers (the drain signal, a close request, a header deadline) that
//! almost never fire, and it wakes several times per request: each wake polled every watcher
//! again, about 200 instructions each (a lock on the cancellation token's tree, a `Notify`'s
//! waiter list). Wrapped in [`OnWake`], a watcher is polled once at first and then only after
//! its own waker fired; the task's other wakeups cost it a flag check.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// `fut`, polled on the first poll and afterwards only once its waker was woken.
pub struct OnWake<F> {
    fut: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// A waker for `flag`, made once.
    waker: Waker,
}

#[derive(Debug)]
struct Flag {
    woken: AtomicBool,
    /// The task to wake when `fut` is woken.
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(w) = task {
            w.wake();
        }
    }
}

impl<F: Future> OnWake<F> {
    pub fn new(fut: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        OnWake {
            fut: Box::pin(fut),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            // The task's waker first, then the flag: a wake between the two is not lost.
            let mut task = self
                .flag
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.fut
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

impl<F> std::fmt::Debug for OnWake<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnWake").field("flag", &self.flag).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready once `notify` fired.
    struct Counted<'a> {
        polls: &'a AtomicUsize,
        notified: Pin<Box<tokio::sync::futures::Notified<'a>>>,
    }

    impl Future for Counted<'_> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.notified.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn polled_first_and_then_only_when_its_own_waker_fired() {
        let notify = tokio::sync::Notify::new();
        let polls = AtomicUsize::new(0);
        let watched = OnWake::new(Counted {
            polls: &polls,
            notified: Box::pin(notify.notified()),
        });
        tokio::pin!(watched);
        let mut ticks = 0;
        // The task wakes 50 times for another reason (a timer); the watcher is polled once.
        loop {
            tokio::select! {
                () = watched.as_mut() => break,
                () = tokio::time::sleep(Duration::from_millis(1)) => {
                    ticks += 1;
                    if ticks == 50 {
                        notify.notify_waiters();
                    }
                    assert!(ticks < 500, "never woke");
                }
            }
        }
        assert_eq!(ticks, 50);
        assert_eq!(
            polls.load(Ordering::Relaxed),
            2,
            "polled at first and once after its wake"
        );
    }

    #[tokio::test]
    async fn a_wake_from_another_thread_reaches_the_task() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let n = notify.clone();
        let watched = OnWake::new(async move { n.notified().await });
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            notify.notify_one();
        });
        tokio::time::timeout(Duration::from_secs(10), watched)
            .await
            .expect("the watcher completed");
        waker.join().unwrap();
    }
}
