//! Recording one request's golden metrics for a label set that already exists: the label-set
//! lookup (a hash of the target labels under a read lock), `request_total`,
//! `response_latency_ms` and `response_total`. Also one TCP connection side opened, counted and
//! closed. With 1 and 1 000 other label sets in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use remora_metrics::bounded::Limits;
use remora_metrics::golden::{HttpGolden, ResponseKey};
use remora_metrics::labels::{DstLabels, TargetLabels};
use remora_metrics::tcp::{Direction, Peer, TcpLabels, TcpMetrics, Tls};

fn labels(i: u32) -> TargetLabels {
    TargetLabels {
        authority: Some(Arc::from(format!("web-{i}.shop.svc.cluster.local:8080"))),
        target_addr: Some(([10, 0, (i >> 8) as u8, i as u8], 8080).into()),
        tls: Tls::Established,
        peer_id: Some(Arc::from(
            "web.shop.serviceaccount.identity.linkerd.east.example",
        )),
        dst: Some(Arc::new(DstLabels::new([
            ("service", "web"),
            ("namespace", "shop"),
            ("pod", "web-0"),
            ("serviceaccount", "web"),
        ]))),
        ..TargetLabels::new(Direction::Outbound)
    }
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    for others in [1u32, 1000] {
        let golden = HttpGolden::standalone(Limits::default());
        for i in 0..others {
            golden.route(&labels(i)).request();
        }
        let l = labels(0);
        let ok = ResponseKey {
            status: 200,
            grpc_status: None,
            error: "",
        };
        group.bench_function(format!("record_request/{others}_label_sets"), |b| {
            b.iter(|| {
                let route = golden.route(black_box(&l));
                route.request();
                route.latency(200, Duration::from_micros(1_500));
                route.response(ok);
            })
        });
    }
    let mut registry = remora_metrics::Registry::default();
    let tcp = TcpMetrics::register(&mut registry);
    let side = TcpLabels::new(Direction::Outbound, Peer::Src)
        .with_tls(Tls::Established, labels(0).peer_id)
        .with_target(([10, 0, 0, 1], 8080).into(), None, labels(0).dst);
    drop(tcp.open(side.clone()));
    group.bench_function("tcp_side_open_count_close", |b| {
        b.iter(|| {
            let conn = tcp.open(black_box(side.clone()));
            conn.read(1024);
            conn.wrote(1024);
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
