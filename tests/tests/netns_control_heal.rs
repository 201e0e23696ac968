//! A control-plane client that heals itself, end to end, under Linkerd's environment (the
//! controllers named by DNS, [`remora_tests::linkerd::LinkerdPlane`]): a client pod calls a
//! service's virtual IP that only its outbound policy knows (`OutboundPolicies/Watch`), whose
//! backend is a service found by `Destination/Get`. The plane's only replica then
//!
//! 1. accepts every Destination and policy call and never answers it (its open streams go
//!    silent),
//! 2. answers every call with a stream that ends at once with `OK` and no message,
//! 3. is replaced by a healthy replica at a new address, which the cluster DNS then returns
//!    (the pods find the plane by DNS alone here: no hosts file entries).
//!
//! Throughout, the client's requests are answered by the last good policy and endpoints; in
//! phases 1 and 2 the proxy keeps asking (the replica counts its `Get` and `Watch` calls); after
//! phase 3 a policy route and an endpoint change made on the healthy plane reach the proxy
//! without a restart. Short `LINKERD2_PROXY_CONTROL_STREAM_*` timeouts keep it quick.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use remora_tests::Net;
use remora_tests::apps::test_server;
use remora_tests::eventually;
use remora_tests::linkerd::{Endpoint, LinkerdPlane, Mode, Workload, WorkloadSpec};
use remora_tests::outbound_policies::*;

const CANARY: [(&str, &str); 1] = [("x-canary", "1")];

fn endpoint(w: &Workload, sa: &str) -> Endpoint {
    Endpoint {
        addr: w.pod.addr4(PORT),
        sa: sa.into(),
        ns: "shop".into(),
        pod: w.pod.name.clone(),
        opaque: false,
    }
}

/// Who answered `GET /echo` (with `headers`) on a new connection to the virtual IP: the
/// server's name, or what went wrong.
async fn who(client: &Workload, headers: &[(&'static str, &str)]) -> String {
    who_from(client, "/echo", headers).await
}

/// Requests for `phase` (at least `min`, then until `cond` holds, within `limit`), each with
/// and without the canary header; every answer must be `want` (canary: `want_canary`).
/// Returns how many were sent and whether `cond` came to hold.
/// Puts replica 0 in `mode` and serves through the client while it does: every answer is still
/// the last good state, and the proxy must ask the replica again (at least two more `Get` and
/// two more `Watch` calls). Returns the requests served and the calls the proxy made.
async fn keeps_asking(
    plane: &LinkerdPlane,
    client: &Workload,
    mode: Mode,
    what: &str,
) -> (usize, (usize, usize)) {
    let calls = || (plane.calls(0, "Get"), plane.calls(0, "Watch"));
    plane.set_mode(0, mode);
    let before = calls();
    let (sent, asked) = serve_through(
        client,
        what,
        Duration::from_secs(6),
        Duration::from_secs(40),
        ("web-a", "web-a"),
        || async {
            let now = calls();
            now.0 >= before.0 + 2 && now.1 >= before.1 + 2
        },
    )
    .await;
    let made = (calls().0 - before.0, calls().1 - before.1);
    assert!(
        asked,
        "the proxy stopped asking the {what}: Get, Watch calls {made:?}\n{}",
        client.pod.proxy().log()
    );
    (sent, made)
}

async fn serve_through<F, Fut>(
    client: &Workload,
    phase: &str,
    min: Duration,
    limit: Duration,
    (want, want_canary): (&str, &str),
    mut cond: F,
) -> (usize, bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let mut sent = 0;
    // Bounded: `limit` and a request count.
    for _ in 0..10_000 {
        let plain = who(client, &[]).await;
        let canary = who(client, &CANARY).await;
        sent += 2;
        assert_eq!(
            (plain.as_str(), canary.as_str()),
            (want, want_canary),
            "{phase}: after {sent} requests\n--- client ---\n{}",
            client.pod.proxy().log()
        );
        if start.elapsed() >= min && cond().await {
            return (sent, true);
        }
        if start.elapsed() >= limit {
            return (sent, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (sent, false)
}

#[tokio::test]
async fn netns_control_heal_silent_then_empty_then_moved_plane_keeps_serving_and_converges() {
    heal(None).await;
}

/// The same sequence, with the same assertions, with linkerd2-proxy as the client's proxy
/// (`REMORA_LINKERD2_PROXY`, as tests/tests/interop.rs): both proxies must heal alike. Skips with
/// a message when no binary is given.
#[tokio::test]
async fn netns_control_heal_linkerd2_proxy_for_comparison() {
    let Some(program) = std::env::var_os("REMORA_LINKERD2_PROXY") else {
        println!("control heal: REMORA_LINKERD2_PROXY is not set; skipping");
        return;
    };
    heal(Some(program.into())).await;
}

/// Runs the sequence with the client's proxy `program` (`None`: Remora).
async fn heal(program: Option<std::path::PathBuf>) {
    let Some(net) = Net::new() else { return };
    let mut plane = LinkerdPlane::start(&net, 1).await;
    // Every pod finds the plane by the cluster DNS alone (no hosts file entries): DNS follows
    // the replicas.
    let server = |name: &str| {
        let mut spec =
            WorkloadSpec::new(&format!("{name}-0"), name).app(test_server(PORT, name), PORT);
        spec.plane_in_hosts = false;
        spec
    };
    let web_a = plane.workload(&net, server("web-a")).await;
    let web_b = plane.workload(&net, server("web-b")).await;
    plane.add_service(WEB_A, vec![endpoint(&web_a, "web-a")]);
    plane.add_service(WEB_B, vec![endpoint(&web_b, "web-b")]);
    let default_only = web_policy(vec![http_route(
        "web-default",
        vec![rule(vec![], first_available(&[WEB_A]))],
    )]);
    plane.set_outbound(&vip().to_string(), Some(default_only));
    let mut spec = WorkloadSpec::new("client-0", "client");
    let who_runs = match program {
        Some(p) => {
            spec.program = Some(p);
            "linkerd2-proxy"
        }
        None => {
            spec = spec.env("REMORA_LOG", "info");
            "remora"
        }
    };
    let mut spec = spec
        .env("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", "2s")
        .env("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", "5s")
        .env("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME", "8s");
    spec.plane_in_hosts = false;
    let client = plane.workload(&net, spec).await;
    let pid = client.pod.proxy().pid();
    // The last good state: the policy's one route, to web-a.
    let good = eventually(Duration::from_secs(30), || async {
        who(&client, &[]).await == "web-a"
    })
    .await;
    assert!(good, "{}", client.pod.proxy().log());
    let started = Instant::now();

    // 1. The replica accepts every call and never answers: the proxy keeps asking (its
    // watchdogs replace the calls), and serves what it knew.
    let (silent_sent, silent) = keeps_asking(&plane, &client, Mode::Silent, "silent plane").await;
    // 2. It answers every call with an empty stream (OK, no message): nothing is wiped, and
    // the proxy keeps asking.
    let (empty_sent, empty) = keeps_asking(&plane, &client, Mode::Empty, "empty plane").await;

    // 3. A healthy replica at a new address replaces it; DNS names only the new one.
    let fresh = plane.add_replica(&net).await;
    plane.kill(0);
    let moved = Instant::now();
    // The proxy finds the new replica by itself (its streams' watchdogs, the name's refresh),
    // serving what it knew meanwhile.
    let (moved_sent, found) = serve_through(
        &client,
        "moved plane",
        Duration::ZERO,
        Duration::from_secs(60),
        ("web-a", "web-a"),
        || async { plane.calls(fresh, "Get") > 0 && plane.calls(fresh, "Watch") > 0 },
    )
    .await;
    assert!(
        found,
        "the proxy never asked the new replica\n{}",
        client.pod.proxy().log()
    );
    let found_after = moved.elapsed();
    // A policy change on the healthy plane: a canary route to web-b.
    let canary = web_policy(vec![
        http_route("web-default", vec![rule(vec![], first_available(&[WEB_A]))]),
        http_route(
            "web-canary",
            vec![rule(
                vec![header("x-canary", "1")],
                first_available(&[WEB_B]),
            )],
        ),
    ]);
    plane.set_outbound(&vip().to_string(), Some(canary));
    // Until it arrives, the last good policy answers.
    let answers = RefCell::new(Vec::new());
    let routed = eventually(Duration::from_secs(60), || async {
        let plain = who(&client, &[]).await;
        let canary = who(&client, &CANARY).await;
        let done = canary == "web-b";
        answers.borrow_mut().push((plain, canary));
        done
    })
    .await;
    let answers = answers.into_inner();
    assert!(
        routed,
        "the policy change never arrived: {answers:?}\n{}",
        client.pod.proxy().log()
    );
    assert!(
        answers
            .iter()
            .all(|(p, c)| p == "web-a" && (c == "web-a" || c == "web-b")),
        "{answers:?}\n{}",
        client.pod.proxy().log()
    );
    let policy_after = moved.elapsed();
    // An endpoint change on the healthy plane: web-a's service now has web-b's pod.
    plane.add_service(WEB_A, vec![endpoint(&web_b, "web-b")]);
    let seen = RefCell::new(Vec::new());
    let converged = eventually(Duration::from_secs(60), || async {
        let plain = who(&client, &[]).await;
        let done = plain == "web-b";
        seen.borrow_mut().push(plain);
        done
    })
    .await;
    let seen = seen.into_inner();
    assert!(
        converged,
        "{seen:?}
{}",
        client.pod.proxy().log()
    );
    assert!(
        seen.iter().all(|w| w == "web-a" || w == "web-b"),
        "{seen:?}
{}",
        client.pod.proxy().log()
    );
    let endpoints_after = moved.elapsed();
    assert_eq!(client.pod.proxy().pid(), pid, "the proxy restarted");
    assert!(client.pod.proxy().is_running());
    println!(
        "control heal ({who_runs}): silent plane {silent_sent} requests served, Get/Watch re-asked {silent:?}; \
         empty plane {empty_sent} served, re-asked {empty:?}; moved plane: found in \
         {found_after:?} ({moved_sent} served meanwhile), policy change in {policy_after:?}, \
         endpoint change in {endpoints_after:?} (total {:?}); no restart",
        started.elapsed()
    );
    drop(net);
}
