//! A request the server's app never took is sent elsewhere: of a service's two meshed pods, one
//! has no app listening. Its inbound answers `502` with `l5d-proxy-error: request not processed:
//! ...`; the client's proxy reads that and sends the request to the other pod, whatever the
//! route says, so the client app sees only 200s, and `retries_total{reason="refused"}` counts
//! the retries. (Before the change the client got the 502 whenever the balancer chose the pod
//! without an app.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use remora_tests::apps::{connect_in, test_server};
use remora_tests::control::Pki;
use remora_tests::services::Service;
use remora_tests::{Net, eventually};

const PORT: u16 = 8080;
const VIP: &str = "10.96.0.31";
const AUTHORITY: &str = "web.shop.svc.cluster.local:8080";
const REQUESTS: usize = 40;

#[tokio::test]
async fn netns_a_request_the_app_never_took_goes_to_another_endpoint() {
    let Some(net) = Net::new() else { return };
    let pki = Pki::new();
    let cp_pod = net.pod("control").start().await;
    let mut cp = pki
        .control(
            "east",
            "east.example",
            cp_pod.addr4(8086),
            "127.0.0.1:9990".parse().unwrap(),
        )
        .in_netns(&cp_pod.ns);
    cp.start().await;
    let up = net
        .pod("web-up")
        .app(test_server(PORT, "web-up"))
        .control_plane(&cp, "web", "shop")
        .meshed()
        .start()
        .await;
    // No app on PORT: its inbound's dial is refused.
    let down = net
        .pod("web-down")
        .control_plane(&cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let service = Service::new("web", "shop")
        .vip(VIP)
        .port(PORT)
        .endpoint(&up, "web")
        .endpoint(&down, "web");
    cp.apply(&[service]).await;
    // The breaker never ejects the broken pod here: every request may meet it.
    let client = net
        .pod("client")
        .control_plane(&cp, "client", "shop")
        .env("REMORA_BREAKER_MAX_FAILURES", "100000")
        .meshed()
        .start()
        .await;
    let vip = format!("{VIP}:{PORT}").parse().unwrap();
    let get = || async {
        let io = connect_in(&client.ns, vip).await.ok()?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://{AUTHORITY}/echo"))
            .header(http::header::HOST, AUTHORITY)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = tx.send_request(req).await.ok()?;
        let status = rsp.status().as_u16();
        rsp.into_body().collect().await.ok()?;
        Some(status)
    };
    // The client proxy learns both endpoints.
    let mut want = vec![up.addr4(PORT).to_string(), down.addr4(PORT).to_string()];
    want.sort();
    let known = eventually(Duration::from_secs(30), || async {
        let _ = get().await;
        client.known_endpoints(&vip.to_string()).await.as_ref() == Some(&want)
    })
    .await;
    assert!(known, "{:#}", client.destinations().await);
    let retried =
        |m: remora_tests::admin::Metrics| m.get("retries_total", &[("reason", "refused")]);
    let before = retried(client.metrics().await).max(0.0);
    let mut statuses = Vec::new();
    for _ in 0..REQUESTS {
        statuses.push(get().await);
    }
    let after = retried(client.metrics().await).max(0.0);
    println!(
        "not-processed: {REQUESTS} requests: {} answered 200; {} retried as never processed",
        statuses.iter().filter(|s| **s == Some(200)).count(),
        after - before
    );
    assert!(
        after > before,
        "no request met the pod without an app: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == Some(200)),
        "{statuses:?}\n--- client proxy ---\n{}\n--- web-down proxy ---\n{}",
        client.proxy().log(),
        down.proxy().log()
    );
}
