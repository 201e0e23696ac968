//! Error signalling between two Remora pods under a Linkerd-shaped control plane, as
//! linkerd2-proxy signals it: when the server's app refuses connections, the server proxy
//! answers its meshed peer 502 with an empty body, `l5d-proxy-error` and
//! `l5d-proxy-connection: close`; the client proxy strips both headers and, because the app
//! addressed that pod itself, closes the app's connection (HTTP/1 `connection: close`, HTTP/2
//! GOAWAY) so the app reconnects and may pick another replica. A request the client proxy
//! balanced over a service's endpoints keeps its connection (linkerd2-proxy's balancer does
//! not close it either).
//!
//! Each check prints one `proxy-errors: ...` line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use remora_tests::Net;
use remora_tests::apps::test_server;
use remora_tests::http::answer_and_close;
use remora_tests::linkerd::{Endpoint, LinkerdPlane, WorkloadSpec};

const HTTP: u16 = 8080;
/// A port of the server pod no app listens on.
const DOWN: u16 = 8081;
const NAME: &str = "web.shop.svc.cluster.local";
/// An address no pod has: the app dials it for `NAME` and the proxy routes by the name.
const VIP: &str = "10.96.0.81";

#[tokio::test]
async fn netns_proxy_errors_app_down_closes_the_callers_connection_with_linkerds_headers() {
    let Some(net) = Net::new() else { return };
    let plane = LinkerdPlane::start(&net, 1).await;
    let mut spec = WorkloadSpec::new("web-0", "web").app(test_server(HTTP, "web-0"), HTTP);
    spec.ports = format!("{HTTP},{DOWN}");
    let server = plane.workload(&net, spec).await;
    let down = server.pod.addr4(DOWN);
    let endpoint = Endpoint {
        addr: down,
        sa: "web".into(),
        ns: "shop".into(),
        pod: server.pod.name.clone(),
        opaque: false,
    };
    plane.add_service(&down.to_string(), vec![endpoint.clone()]);
    plane.add_service(&format!("{NAME}:{DOWN}"), vec![endpoint]);
    let client = plane
        .workload(&net, WorkloadSpec::new("client-0", "client"))
        .await;
    let ns = client.pod.ns.clone();
    let logs = || {
        format!(
            "--- client proxy ---\n{}\n--- server proxy ---\n{}",
            client.pod.proxy().log(),
            server.pod.proxy().log()
        )
    };
    let wait = Duration::from_secs(10);

    // The app dials the pod itself: 502, nothing of the mesh's headers, no body, closed.
    for h2 in [false, true] {
        let proto = if h2 { "HTTP/2" } else { "HTTP/1.1" };
        let a = tokio::time::timeout(
            Duration::from_secs(30),
            answer_and_close(&ns, down, &down.to_string(), h2, wait),
        )
        .await
        .unwrap_or_else(|_| panic!("{proto} to the pod took over 30 s\n{}", logs()))
        .unwrap_or_else(|e| panic!("{proto}: {e}\n{}", logs()));
        println!("proxy-errors: remora -> remora (app down), {proto} to the pod: {a}");
        assert_eq!(a.status, 502, "{proto}: {a}\n{}", logs());
        assert!(a.l5d_headers.is_empty(), "{proto}: {a}");
        assert_eq!(a.body_len, 0, "{proto}: the peer's answer has no body: {a}");
        if !h2 {
            assert_eq!(a.connection.as_deref(), Some("close"), "{proto}: {a}");
        }
        assert!(
            a.closed,
            "{proto}: the app's connection was closed: {a}\n{}",
            logs()
        );
    }

    // Balanced over the service's endpoints (the app dialled a service address): the proxy
    // picks again itself, so the app's connection stays.
    let vip = format!("{VIP}:{DOWN}").parse().unwrap();
    for h2 in [false, true] {
        let proto = if h2 { "HTTP/2" } else { "HTTP/1.1" };
        let a = answer_and_close(
            &ns,
            vip,
            &format!("{NAME}:{DOWN}"),
            h2,
            Duration::from_secs(2),
        )
        .await
        .unwrap_or_else(|e| panic!("{proto} to the service: {e}\n{}", logs()));
        println!("proxy-errors: remora -> remora (app down), {proto} to the service: {a}");
        assert_eq!(a.status, 502, "{proto}: {a}\n{}", logs());
        assert!(a.l5d_headers.is_empty(), "{proto}: {a}");
        assert_eq!(a.connection, None, "{proto}: {a}");
        assert!(
            !a.closed,
            "{proto}: a balanced request keeps the connection: {a}"
        );
    }
}
