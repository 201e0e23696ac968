//! The balancer's pick (power of two choices over peak-EWMA, with the breaker check) and the
//! report of its outcome, among 10 and 1 000 endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use remora_proxy::discovery::balance::{Balancer, Weighted};

struct Ep(SocketAddr, u32);

impl Weighted for Ep {
    fn addr(&self) -> SocketAddr {
        self.0
    }
    fn weight(&self) -> u32 {
        self.1
    }
}

fn pick(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("balance");
    for n in [10u32, 1000] {
        let eps: std::sync::Arc<Vec<Ep>> = (0..n)
            .map(|i| {
                Ep(
                    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 80)),
                    10_000,
                )
            })
            .collect::<Vec<_>>()
            .into();
        let b = Balancer::new(7, 42);
        // Warm: every endpoint has a load entry.
        for _ in 0..(n * 4) {
            b.pick(&eps).unwrap().finish(true);
        }
        group.bench_function(format!("pick_and_finish_{n}"), |bench| {
            bench.iter(|| b.pick(&eps).unwrap().finish(true))
        });
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
