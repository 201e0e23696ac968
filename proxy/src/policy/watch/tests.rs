use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// What a fake control plane does for one stream it is asked to open.
#[derive(Clone, Debug)]
enum Script {
    /// Sends these messages (each `Err` is a status), then stays open.
    Send(Vec<Result<u32, tonic::Code>>),
    /// Sends these, then ends the stream.
    SendAndEnd(Vec<u32>),
    /// Refuses to open the stream.
    Refuse(tonic::Code),
    /// Never answers the call (no response headers).
    Hang,
}

#[derive(Default)]
struct Fake {
    scripts: Mutex<VecDeque<Script>>,
    opened: AtomicUsize,
    refused: AtomicUsize,
    compiled: AtomicUsize,
}

struct Scripted {
    items: VecDeque<Result<u32, tonic::Code>>,
    end: bool,
}

impl Stream<u32> for Scripted {
    fn next(&mut self) -> MessageFuture<'_, u32> {
        Box::pin(async move {
            match self.items.pop_front() {
                Some(Ok(m)) => Ok(Some(m)),
                Some(Err(code)) => Err(tonic::Status::new(code, "scripted")),
                None if self.end => Ok(None),
                None => std::future::pending().await,
            }
        })
    }
}

#[derive(Clone)]
struct Src(Arc<Fake>);

impl Source for Src {
    type Key = u16;
    type Message = u32;
    type Policy = String;

    fn what(&self) -> &'static str {
        "test policy"
    }

    fn open(&self, _key: &u16) -> OpenFuture<u32> {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
        let script = self
            .0
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Script::Send(vec![]));
        Box::pin(async move {
            match script {
                Script::Refuse(code) => Err(tonic::Status::new(code, "refused")),
                Script::Hang => std::future::pending().await,
                Script::Send(items) => Ok(Box::new(Scripted {
                    items: items.into(),
                    end: false,
                }) as Box<dyn Stream<u32>>),
                Script::SendAndEnd(items) => Ok(Box::new(Scripted {
                    items: items.into_iter().map(Ok).collect(),
                    end: true,
                }) as Box<dyn Stream<u32>>),
            }
        })
    }

    /// Odd numbers do not compile.
    fn compile(&self, _key: &u16, &msg: &u32) -> Result<String, String> {
        self.0.compiled.fetch_add(1, Ordering::SeqCst);
        if msg % 2 == 1 {
            Err(format!("{msg} is odd"))
        } else {
            Ok(format!("policy {msg}"))
        }
    }

    fn refused(&self, _key: &u16) {
        self.0.refused.fetch_add(1, Ordering::SeqCst);
    }
}

fn source(scripts: Vec<Script>) -> (Src, Arc<Fake>) {
    let fake = Arc::new(Fake {
        scripts: Mutex::new(scripts.into()),
        ..Default::default()
    });
    (Src(fake.clone()), fake)
}

async fn settled(rx: &mut watch::Receiver<Arc<String>>, want: &str) {
    let ok = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|p| **p == want))
        .await
        .is_ok();
    assert!(ok, "never became {want:?}: {:?}", rx.borrow());
}

#[tokio::test(start_paused = true)]
async fn the_default_serves_until_the_first_answer_then_the_last_good_one() {
    let (src, fake) = source(vec![Script::Send(vec![Ok(2), Ok(3), Ok(4)])]);
    let w = Watches::new(src, 10, Duration::from_secs(60), StreamLimits::default());
    let mut rx = w.get(&8080, || "default".to_string());
    assert_eq!(**rx.borrow(), "default");
    settled(&mut rx, "policy 4").await;
    // 3 was refused and counted; 4 replaced 2.
    assert_eq!(fake.refused.load(Ordering::SeqCst), 1);
    // The same key shares one watch.
    let again = w.get(&8080, || "unused".to_string());
    assert_eq!(**again.borrow(), "policy 4");
    assert_eq!(fake.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_outage_keeps_the_last_good_policy_and_reconnects() {
    let (src, fake) = source(vec![
        Script::SendAndEnd(vec![2]),
        Script::Refuse(tonic::Code::Unavailable),
        Script::Send(vec![Ok(6)]),
    ]);
    let w = Watches::new(src, 10, Duration::from_secs(60), StreamLimits::default());
    let mut rx = w.get(&1, || "default".to_string());
    settled(&mut rx, "policy 2").await;
    settled(&mut rx, "policy 6").await;
    assert_eq!(fake.opened.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn not_found_keeps_the_default_and_stops_watching() {
    let (src, fake) = source(vec![Script::Refuse(tonic::Code::NotFound)]);
    let w = Watches::new(src, 10, Duration::from_secs(60), StreamLimits::default());
    let rx = w.get(&1, || "default".to_string());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(**rx.borrow(), "default");
    assert_eq!(fake.opened.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_is_replaced() {
    let (src, fake) = source(vec![Script::Send(vec![]), Script::Send(vec![Ok(8)])]);
    let limits = StreamLimits {
        initial: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let w = Watches::new(src, 10, Duration::from_secs(60), limits);
    let mut rx = w.get(&1, || "default".to_string());
    settled(&mut rx, "policy 8").await;
    assert_eq!(fake.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_is_never_answered_is_replaced() {
    let (src, fake) = source(vec![Script::Hang, Script::Hang, Script::Send(vec![Ok(10)])]);
    let limits = StreamLimits {
        initial: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let w = Watches::new(src, 10, Duration::from_secs(60), limits);
    let mut rx = w.get(&1, || "default".to_string());
    settled(&mut rx, "policy 10").await;
    assert_eq!(fake.opened.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_then_empty_streams_keep_the_last_good_policy_until_a_healthy_answer() {
    // The control plane's phases: a good answer; a stream gone silent; calls it never
    // answers; streams that end at once with OK and no message; a healthy answer.
    let (src, fake) = source(vec![
        Script::Send(vec![Ok(2)]),
        Script::Hang,
        Script::SendAndEnd(vec![]),
        Script::SendAndEnd(vec![]),
        Script::SendAndEnd(vec![]),
        Script::Send(vec![Ok(12)]),
    ]);
    let limits = StreamLimits {
        initial: Some(Duration::from_secs(3)),
        idle: Some(Duration::from_secs(5)),
        lifetime: None,
    };
    let w = Watches::new(src, 10, Duration::from_secs(600), limits);
    let mut rx = w.get(&1, || "default".to_string());
    settled(&mut rx, "policy 2").await;
    // Until the healthy answer, only the last good policy is seen.
    let mut seen = Vec::new();
    let healed = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let p = rx.borrow_and_update().to_string();
            seen.push(p.clone());
            if p == "policy 12" {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(healed.is_ok(), "never healed: {seen:?}");
    assert!(
        seen.iter().all(|p| p == "policy 2" || p == "policy 12"),
        "{seen:?}"
    );
    assert_eq!(fake.opened.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded_and_idle_keys_go() {
    let (src, fake) = source(vec![]);
    let w = Watches::new(src, 2, Duration::from_secs(30), StreamLimits::default());
    let _pinned = w.pin(&1, String::new);
    let _a = w.get(&2, String::new);
    let b = w.get(&3, String::new);
    assert_eq!(w.len(), 2, "the oldest unpinned key made room");
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Key 2's watch was dropped with its entry; 1 and 3 hold theirs.
    assert!(fake.opened.load(Ordering::SeqCst) >= 2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(w.len(), 2, "a key a connection still holds is not idle");
    drop(b);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(w.len(), 1, "only the pinned key outlives the idle timeout");
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_policy_resent_is_not_recompiled_even_on_a_new_stream() {
    // 2 twice, then (after the stream ends and is reopened) 2 again, then 4: two compiles.
    let (src, fake) = source(vec![
        Script::SendAndEnd(vec![2, 2]),
        Script::Send(vec![Ok(2), Ok(4)]),
    ]);
    let w = Watches::new(src, 10, Duration::from_secs(60), StreamLimits::default());
    let mut rx = w.get(&8080, || "default".to_string());
    settled(&mut rx, "policy 4").await;
    assert_eq!(fake.opened.load(Ordering::SeqCst), 2);
    assert_eq!(fake.compiled.load(Ordering::SeqCst), 2);
}
