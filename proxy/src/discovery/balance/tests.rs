use super::*;

#[derive(Clone)]
struct Ep(SocketAddr, u32);

impl Weighted for Ep {
    fn addr(&self) -> SocketAddr {
        self.0
    }
    fn weight(&self) -> u32 {
        self.1
    }
}

fn eps(n: u8) -> Arc<Vec<Ep>> {
    Arc::new(
        (1..=n)
            .map(|i| Ep(SocketAddr::from(([10, 0, 0, i], 80)), 10_000))
            .collect(),
    )
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_takes_peaks_at_once_and_decays() {
    let now = Instant::now();
    let l = EndpointLoad::new(now);
    l.observe(Duration::from_millis(500), now);
    assert_eq!(l.latency(now), 500e6);
    // A faster observation pulls it down only gradually.
    tokio::time::advance(Duration::from_millis(100)).await;
    let later = Instant::now();
    l.observe(Duration::from_millis(1), later);
    let v = l.latency(later);
    assert!(v > 480e6 && v < 500e6, "{v}");
    // Without observations it decays toward zero.
    tokio::time::advance(DECAY * 3).await;
    assert!(l.latency(Instant::now()) < v * 0.06);
}

#[tokio::test(start_paused = true)]
async fn the_faster_endpoint_gets_most_picks() {
    let b = Balancer::new(7, 42);
    let e = eps(2);
    let mut counts = [0usize; 2];
    for _ in 0..1000 {
        let p = b.pick(&e).unwrap();
        counts[p.index] += 1;
        // Endpoint 1 takes 50 ms longer.
        tokio::time::advance(Duration::from_millis(if p.index == 1 { 60 } else { 10 })).await;
        p.finish(true);
    }
    assert!(counts[0] > 700, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn weights_are_honoured() {
    let b = Balancer::new(7, 7);
    let mut e = eps(2).as_ref().clone();
    e[0].1 = 9_000;
    e[1].1 = 1_000;
    let e = Arc::new(e);
    let mut counts = [0usize; 2];
    for _ in 0..2000 {
        let p = b.pick(&e).unwrap();
        counts[p.index] += 1;
        p.finish(true);
    }
    assert!(counts[0] > 1500, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn breaker_ejects_probes_and_restores() {
    let b = Balancer::new(3, 1);
    let e = eps(2);
    let bad = |b: &Balancer| loop {
        let p = b.pick(&e).unwrap();
        if p.index == 1 {
            return p;
        }
        p.finish(true);
    };
    assert_eq!(bad(&b).finish(false), None);
    assert_eq!(bad(&b).finish(false), None);
    assert_eq!(
        bad(&b).finish(false),
        Some(Transition::Ejected {
            backoff: BASE_BACKOFF
        })
    );
    // While ejected, every pick is the healthy endpoint.
    for _ in 0..50 {
        let p = b.pick(&e).unwrap();
        assert_eq!(p.index, 0);
        p.finish(true);
    }
    // After the backoff one probe goes through; a failure doubles the backoff.
    tokio::time::advance(BASE_BACKOFF).await;
    assert_eq!(
        bad(&b).finish(false),
        Some(Transition::Ejected {
            backoff: BASE_BACKOFF * 2
        })
    );
    tokio::time::advance(BASE_BACKOFF * 2).await;
    assert_eq!(bad(&b).finish(true), Some(Transition::Restored));
    // Restored: it takes traffic again.
    let mut seen = false;
    for _ in 0..50 {
        let p = b.pick(&e).unwrap();
        seen |= p.index == 1;
        p.finish(true);
    }
    assert!(seen);
}

#[tokio::test(start_paused = true)]
async fn all_ejected_means_no_pick() {
    let b = Balancer::new(1, 3);
    let e = eps(1);
    assert_eq!(
        b.pick(&e).unwrap().finish(false),
        Some(Transition::Ejected {
            backoff: BASE_BACKOFF
        })
    );
    assert!(b.pick(&e).is_none());
    assert!(!b.any_available(&e));
    tokio::time::advance(BASE_BACKOFF).await;
    assert!(b.any_available(&e));
    let probe = b.pick(&e).unwrap();
    // Only one probe at a time.
    assert!(b.pick(&e).is_none());
    assert_eq!(probe.finish(true), Some(Transition::Restored));
}

#[tokio::test(start_paused = true)]
async fn in_flight_requests_count_against_an_endpoint() {
    let b = Balancer::new(7, 9);
    let e = eps(2);
    let held: Vec<Picked> = (0..10).map(|_| b.pick(&e).unwrap()).collect();
    let on0 = held.iter().filter(|p| p.index == 0).count();
    assert!((3..=7).contains(&on0), "pending load spreads picks: {on0}");
    drop(held);
    let state = b.state.lock().unwrap();
    assert!(state.loads.iter().all(|l| l.pending() == 0));
}

#[tokio::test(start_paused = true)]
async fn similar_endpoints_share_and_new_ones_get_traffic() {
    let b = Balancer::new(7, 11);
    let e = eps(4);
    let mut counts = [0usize; 5];
    for i in 0..400 {
        let p = b.pick(&e).unwrap();
        counts[p.index] += 1;
        // Latencies within a few percent of each other.
        tokio::time::advance(Duration::from_micros(200 + (i % 7) as u64)).await;
        p.finish(true);
    }
    assert!(counts[..4].iter().all(|&c| c > 40), "{counts:?}");
    let mut grown = e.as_ref().clone();
    grown.push(Ep(SocketAddr::from(([10, 0, 0, 9], 80)), 10_000));
    let e = Arc::new(grown);
    let mut new = 0;
    for _ in 0..100 {
        let p = b.pick(&e).unwrap();
        new += usize::from(p.index == 4);
        tokio::time::advance(Duration::from_micros(200)).await;
        p.finish(true);
    }
    assert!(new > 5, "the new endpoint got {new} of 100");
}

#[test]
fn a_retry_avoids_the_endpoint_that_refused_while_another_is_available() {
    let b = Balancer::new(1000, 7);
    let endpoints = eps(2);
    let refused = endpoints[0].addr();
    for _ in 0..200 {
        let p = b
            .pick_avoiding(&endpoints, Accrual::consecutive(1000), Some(refused))
            .unwrap();
        assert_ne!(endpoints[p.index].addr(), refused);
        p.finish(true);
    }
    // The only endpoint is still chosen when it is the only one.
    let one = eps(1);
    let p = b.pick_avoiding(&one, Accrual::consecutive(1000), Some(one[0].addr()));
    assert!(p.is_some());
}
