//! Distributed tracing across two meshed pods, against a real OTLP receiver (OpenTelemetry's own
//! `TraceService`, `remora_tests::otlp`): the app sends a sampled `traceparent`; the client
//! pod's outbound span is its child, the server pod's inbound span the outbound's child, and the
//! server app sees the inbound's span as its parent: one trace id throughout. Under Remora's
//! surface (a collector on each pod's loopback, plaintext) and Linkerd's (a collector pod behind
//! mTLS verifying `LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME`, resource attributes from the
//! trace variables). Unsampled parents and requests without context export nothing; a
//! collector that is down costs no request, drops and counts, and the proxy's memory stays put.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use remora_tests::apps::test_server;
use remora_tests::control::{ClusterPlane, Pki};
use remora_tests::http::{get, http1, send1};
use remora_tests::linkerd::{Endpoint, LinkerdPlane, WorkloadSpec, workload_identity};
use remora_tests::otlp::{Collector, Received};
use remora_tests::services::Service;
use remora_tests::{Net, Pod, eventually};

const PORT: u16 = 8080;
const VIP: &str = "10.96.0.40:8080";
const HOST: &str = "web.shop.svc.cluster.local:8080";
const COLLECTOR: u16 = 4317;

/// A trace id and the app's span id, distinct per test (`n`).
fn ids(n: u8) -> (String, String) {
    (
        format!("4bf92f3577b34da6a3ce929d0e0e47{n:02x}"),
        format!("00f067aa0ba902{n:02x}"),
    )
}

fn traceparent(trace: &str, parent: &str, sampled: bool) -> String {
    format!("00-{trace}-{parent}-{}", if sampled { "01" } else { "00" })
}

/// The two spans of one request, outbound then inbound, once both arrived.
async fn two_spans(c: &Collector, trace: &str) -> Vec<Received> {
    let done = eventually(Duration::from_secs(30), || async {
        c.trace(trace).len() >= 2
    })
    .await;
    let mut spans = c.trace(trace);
    assert!(done, "spans of {trace}: {spans:?}");
    spans.sort_by_key(|s| s.attr("direction") != Some("outbound".into()));
    spans
}

/// The checks every surface shares: parentage, kinds, names, attributes, and what the app saw.
fn check_chain(spans: &[Received], trace: &str, app_parent: &str, app_saw: &str) {
    assert_eq!(spans.len(), 2, "one span per side: {spans:?}");
    let (out, inb) = (&spans[0], &spans[1]);
    assert_eq!(out.attr("direction").as_deref(), Some("outbound"));
    assert_eq!(inb.attr("direction").as_deref(), Some("inbound"));
    assert_eq!(out.trace_id(), trace);
    assert_eq!(inb.trace_id(), trace);
    assert_eq!(
        out.parent_id(),
        app_parent,
        "outbound: child of the app's span"
    );
    assert_eq!(
        inb.parent_id(),
        out.span_id(),
        "inbound: child of the outbound's"
    );
    assert_ne!(out.span_id(), inb.span_id());
    // SPAN_KIND_CLIENT = 3, SPAN_KIND_SERVER = 2.
    assert_eq!((out.span.kind, inb.span.kind), (3, 2));
    for s in spans {
        assert_eq!(s.span.name, "/echo");
        assert_eq!(s.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(s.attr("url.path").as_deref(), Some("/echo"));
        assert_eq!(s.attr("http.response.status_code").as_deref(), Some("200"));
        assert_eq!(s.attr("network.transport").as_deref(), Some("tcp"));
        assert!(s.span.end_time_unix_nano >= s.span.start_time_unix_nano);
        assert!(s.span.start_time_unix_nano > 0);
    }
    assert!(out.span.start_time_unix_nano <= inb.span.start_time_unix_nano);
    // The server app's parent is the inbound's span.
    assert_eq!(
        app_saw,
        format!("00-{trace}-{}-01", inb.span_id()),
        "the app's traceparent"
    );
}

// ---- Remora's surface ----

struct Mesh {
    net: Net,
    _pki: Pki,
    east: ClusterPlane,
    a: Pod,
    b: Pod,
    collector: Collector,
}

/// A (client) and B (test-server on 8080) meshed, service `web` → B; both proxies export to a
/// collector on their pod's loopback (an agent beside the proxy). `a_env` goes to A's proxy.
async fn mesh(a_env: &[(&str, &str)], collect_on_a: bool) -> Option<Mesh> {
    let net = Net::new()?;
    let pki = Pki::new();
    let mut east = ClusterPlane::east(&net, &pki).await;
    let addr = format!("127.0.0.1:{COLLECTOR}");
    let b = net
        .pod("b")
        .app(test_server(PORT, "b"))
        .control_plane(&east.cp, "echo", "shop")
        .env("REMORA_TRACE_COLLECTOR_ADDR", &addr)
        .env("REMORA_TRACE_SERVICE_NAME", "b-proxy")
        .meshed()
        .start()
        .await;
    let mut a = net
        .pod("a")
        .control_plane(&east.cp, "web", "shop")
        .env("REMORA_TRACE_SERVICE_NAME", "a-proxy");
    if !a_env
        .iter()
        .any(|(k, _)| *k == "REMORA_TRACE_COLLECTOR_ADDR")
    {
        a = a.env("REMORA_TRACE_COLLECTOR_ADDR", &addr);
    }
    for (k, v) in a_env {
        a = a.env(k, v);
    }
    let a = a.meshed().start().await;
    east.cp
        .apply(&[Service::new("web", "shop")
            .vip("10.96.0.40")
            .port(PORT)
            .endpoint(&b, "echo")])
        .await;
    let mut collector = Collector::default();
    collector.serve_in(&b.ns, COLLECTOR);
    if collect_on_a {
        collector.serve_in(&a.ns, COLLECTOR);
    }
    Some(Mesh {
        net,
        _pki: pki,
        east,
        a,
        b,
        collector,
    })
}

/// GET /echo from A's app with `headers`; the headers B's app saw.
async fn echo(m: &Mesh, headers: &[(&str, &str)]) -> serde_json::Value {
    let mut h1 = http1(&m.a.ns, VIP.parse().unwrap()).await;
    let mut req = get(HOST, "/echo");
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let r = send1(&mut h1, req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["headers"].clone()
}

#[tokio::test]
async fn netns_trace_parent_and_child_spans_cross_two_pods() {
    let Some(m) = mesh(&[], true).await else {
        return;
    };
    let (trace, parent) = ids(1);
    let tp = traceparent(&trace, &parent, true);
    let seen = echo(&m, &[("traceparent", &tp), ("tracestate", "vendor=x")]).await;
    assert_eq!(
        seen["tracestate"], "vendor=x",
        "tracestate passes untouched"
    );
    let spans = two_spans(&m.collector, &trace).await;
    check_chain(
        &spans,
        &trace,
        &parent,
        seen["traceparent"].as_str().unwrap(),
    );
    let (out, inb) = (&spans[0], &spans[1]);
    assert_eq!(out.span.trace_state, "vendor=x");
    // Peer identities, verified by mTLS.
    assert_eq!(
        out.attr("l5d.server_id"),
        Some(m.east.cp.identity("echo", "shop"))
    );
    assert_eq!(
        inb.attr("l5d.client_id"),
        Some(m.east.cp.identity("web", "shop"))
    );
    assert_eq!(out.resource["service.name"], "a-proxy");
    assert_eq!(inb.resource["service.name"], "b-proxy");
    assert!(out.resource.contains_key("process.pid"));

    // B3 (multi-header) is honoured too, and rewritten in B3.
    let (trace, parent) = ids(2);
    let seen = echo(
        &m,
        &[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", &parent),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let spans = two_spans(&m.collector, &trace).await;
    assert_eq!(spans[0].parent_id(), parent);
    assert_eq!(spans[1].parent_id(), spans[0].span_id());
    assert_eq!(seen["x-b3-spanid"], spans[1].span_id().as_str());
    assert_eq!(seen["x-b3-parentspanid"], spans[0].span_id().as_str());
    assert!(seen.get("traceparent").is_none());

    // Unsampled, and no context at all: nothing exported, and no trace started. A sampled
    // request after them, once exported, shows the queue got past them.
    let (unsampled, p3) = ids(3);
    let seen = echo(&m, &[("traceparent", &traceparent(&unsampled, &p3, false))]).await;
    let next = seen["traceparent"].as_str().unwrap().to_string();
    assert!(next.ends_with("-00"), "still unsampled: {next}");
    assert!(!next.contains(&p3), "re-parented: {next}");
    let seen = echo(&m, &[]).await;
    assert!(seen.get("traceparent").is_none(), "no trace started");
    let (marker, p4) = ids(4);
    echo(&m, &[("traceparent", &traceparent(&marker, &p4, true))]).await;
    two_spans(&m.collector, &marker).await;
    assert!(m.collector.trace(&unsampled).is_empty());
    let traces: std::collections::BTreeSet<String> =
        m.collector.spans().iter().map(|s| s.trace_id()).collect();
    assert_eq!(traces.len(), 3, "only the sampled requests: {traces:?}");
    // Exported and counted.
    let metrics = m.a.metrics().await;
    assert!(metrics.get("opentelemetry_span_exports_total", &[]) >= 3.0);
    assert_eq!(metrics.get("opentelemetry_span_drops_total", &[]), 0.0);
    drop(m.b);
    drop(m.net);
}

#[tokio::test]
async fn netns_trace_sampling_ratio_starts_traces() {
    let Some(m) = mesh(&[("REMORA_TRACE_SAMPLE_RATIO", "1")], true).await else {
        return;
    };
    let seen = echo(&m, &[]).await;
    let tp = seen["traceparent"].as_str().expect("a trace was started");
    let trace = tp.split('-').nth(1).unwrap().to_string();
    let spans = two_spans(&m.collector, &trace).await;
    assert_eq!(spans[0].parent_id(), "", "the outbound's span is the root");
    assert_eq!(spans[1].parent_id(), spans[0].span_id());
    drop(m.net);
}

#[tokio::test]
async fn netns_trace_a_collector_that_is_down_costs_no_request() {
    // A's collector address has nothing listening; a small queue.
    let Some(m) = mesh(
        &[
            ("REMORA_TRACE_COLLECTOR_ADDR", "127.0.0.1:4318"),
            ("REMORA_TRACE_QUEUE", "16"),
        ],
        false,
    )
    .await
    else {
        return;
    };
    let rss =
        |metrics: &remora_tests::admin::Metrics| metrics.get("process_resident_memory_bytes", &[]);
    let mut h1 = http1(&m.a.ns, VIP.parse().unwrap()).await;
    let mut send = async |n: u32| {
        for i in 0..n {
            let (trace, parent) = ids((i % 200) as u8 + 10);
            let mut req = get(HOST, "/echo");
            req.headers_mut().insert(
                "traceparent",
                traceparent(&trace, &parent, true).parse().unwrap(),
            );
            let r = tokio::time::timeout(Duration::from_secs(10), send1(&mut h1, req))
                .await
                .expect("no request waits for the collector")
                .unwrap();
            assert_eq!(r.status, 200);
        }
    };
    send(300).await;
    let before = rss(&m.a.metrics().await);
    send(2000).await;
    let metrics = m.a.metrics().await;
    let after = rss(&metrics);
    let dropped = metrics.get("opentelemetry_span_drops_total", &[]);
    assert!(dropped >= 2000.0 - 16.0 - 512.0, "{}", metrics.text);
    assert!(
        metrics.get(
            "opentelemetry_span_drops_total",
            &[("reason", "queue_full")]
        ) > 0.0,
        "{}",
        metrics.text
    );
    assert_eq!(metrics.get("opentelemetry_span_exports_total", &[]), 0.0);
    assert!(before > 0.0);
    assert!(
        after - before < 8.0 * 1024.0 * 1024.0,
        "memory grew from {before} to {after} bytes"
    );
    // B's spans (its collector is up) still arrive.
    assert!(
        eventually(Duration::from_secs(30), || async {
            m.collector.spans().len() >= 2300
        })
        .await,
        "{}",
        m.collector.spans().len()
    );
    drop(m.net);
}

// ---- Linkerd's surface ----

#[tokio::test]
async fn netns_trace_linkerd_env_exports_with_mtls_to_the_collector() {
    let Some(net) = Net::new() else { return };
    let plane = LinkerdPlane::start(&net, 1).await;
    let collector_id = workload_identity("collector", "linkerd-jaeger");
    let (collector, _collector_pod, addr) = plane.collector(&net, &collector_id, 55678).await;
    let labels = std::env::temp_dir().join(remora_tests::netns::unique("trace-labels"));
    std::fs::write(&labels, "app=\"web\"\npod-template-hash=\"66bdd4d96d\"\n").unwrap();
    let trace_env = |spec: WorkloadSpec| {
        spec.env("LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR", &addr.to_string())
            .env("LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME", &collector_id)
            .env("LINKERD2_PROXY_TRACE_SERVICE_NAME", "linkerd-proxy")
            .env(
                "LINKERD2_PROXY_TRACE_ATTRIBUTES_PATH",
                &labels.display().to_string(),
            )
            .env(
                "LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES",
                "k8s.container.name=\"linkerd-proxy\"\nk8s.pod.uid=\"0000\"",
            )
            .env("LINKERD2_PROXY_TRACE_PROTOCOL", "opencensus")
    };
    let server = plane
        .workload(
            &net,
            trace_env(WorkloadSpec::new("web-0", "web").app(test_server(PORT, "web-0"), PORT)),
        )
        .await;
    plane.add_service(
        &server.pod.addr4(PORT).to_string(),
        vec![Endpoint {
            addr: server.pod.addr4(PORT),
            sa: "web".into(),
            ns: "shop".into(),
            pod: server.pod.name.clone(),
            opaque: false,
        }],
    );
    let client = plane
        .workload(&net, trace_env(WorkloadSpec::new("client-0", "client")))
        .await;
    let target = server.pod.addr4(PORT);
    let (trace, parent) = ids(5);
    let mut h1 = http1(&client.pod.ns, target).await;
    let mut req = get(&target.to_string(), "/echo");
    req.headers_mut().insert(
        "traceparent",
        traceparent(&trace, &parent, true).parse().unwrap(),
    );
    let r = send1(&mut h1, req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json()["headers"].clone();
    let spans = two_spans(&collector, &trace).await;
    check_chain(
        &spans,
        &trace,
        &parent,
        seen["traceparent"].as_str().unwrap(),
    );
    let (out, inb) = (&spans[0], &spans[1]);
    assert_eq!(
        out.attr("l5d.server_id"),
        Some(workload_identity("web", "shop"))
    );
    assert_eq!(
        inb.attr("l5d.client_id"),
        Some(workload_identity("client", "shop"))
    );
    for s in &spans {
        assert_eq!(s.resource["service.name"], "linkerd-proxy");
        assert_eq!(s.resource["app"], "web");
        assert_eq!(s.resource["pod-template-hash"], "66bdd4d96d");
        assert_eq!(s.resource["k8s.container.name"], "linkerd-proxy");
        assert_eq!(s.resource["k8s.pod.uid"], "0000");
    }
    // An unsampled parent: nothing; then a sampled marker shows the queue moved past it.
    let (unsampled, p6) = ids(6);
    let mut req = get(&target.to_string(), "/echo");
    req.headers_mut().insert(
        "traceparent",
        traceparent(&unsampled, &p6, false).parse().unwrap(),
    );
    assert_eq!(send1(&mut h1, req).await.unwrap().status, 200);
    let (marker, p7) = ids(7);
    let mut req = get(&target.to_string(), "/echo");
    req.headers_mut().insert(
        "traceparent",
        traceparent(&marker, &p7, true).parse().unwrap(),
    );
    assert_eq!(send1(&mut h1, req).await.unwrap().status, 200);
    two_spans(&collector, &marker).await;
    assert!(collector.trace(&unsampled).is_empty());

    // A proxy expecting another identity of the collector exports nothing: its TLS check
    // fails, the batch is dropped and counted. (The server's inbound span still arrives.)
    let wrong = workload_identity("impostor", "linkerd-jaeger");
    let other = plane
        .workload(
            &net,
            trace_env(WorkloadSpec::new("other-0", "other"))
                .env("LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME", &wrong),
        )
        .await;
    let (trace, parent) = ids(8);
    let mut h1 = http1(&other.pod.ns, target).await;
    let mut req = get(&target.to_string(), "/echo");
    req.headers_mut().insert(
        "traceparent",
        traceparent(&trace, &parent, true).parse().unwrap(),
    );
    assert_eq!(send1(&mut h1, req).await.unwrap().status, 200);
    let failed = [("result", "error")];
    assert!(
        eventually(Duration::from_secs(30), || async {
            other
                .pod
                .metrics()
                .await
                .get("opentelemetry_span_export_requests_total", &failed)
                >= 1.0
        })
        .await,
        "{}",
        other.pod.metrics().await.text
    );
    let spans = collector.trace(&trace);
    assert!(
        spans
            .iter()
            .all(|s| s.attr("direction").as_deref() == Some("inbound")),
        "{spans:?}"
    );
    assert!(
        other.pod.metrics().await.get(
            "opentelemetry_span_drops_total",
            &[("reason", "export_failed")]
        ) >= 1.0
    );
    let _ = std::fs::remove_file(&labels);
    drop(net);
}
