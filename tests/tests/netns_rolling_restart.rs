//! A rolling restart of a three-pod service under load, raced the way a Kubernetes rollout
//! races: per pod, the old pod's proxy and app get SIGTERM at the same instant (the app, a
//! `remora test-server` process without a SIGTERM handler, dies at once), the new pod starts,
//! and only then does discovery learn of the change (at least [`DISCOVERY_LAG`] after the
//! SIGTERM, as EndpointSlice propagation is late). Meanwhile a client app sends a fixed rate of
//! HTTP/1.1 and HTTP/2 requests to the service's virtual IP through its proxy; the client must
//! see only 2xx responses and no connection error.
//!
//! What makes it pass (ARCHITECTURE.md, "Draining"): the old pod's inbound sends GOAWAY /
//! `connection: close` on drain and its listener refuses new connections; the client proxy
//! retires the connection, answers what the old pod never processed by sending it to another
//! endpoint, and the old app's refusals come back as `l5d-proxy-error: request not processed`,
//! which the client proxy also sends elsewhere.
//!
//! **Serial, and it needs a quiet machine**: it runs six proxies, a control plane and a load
//! loop for about half a minute, alone in its test binary (this file has one test). The rate is
//! [`RATE`] requests per second unless `REMORA_ROLLOUT_RPS` says otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use remora_tests::apps::connect_in;
use remora_tests::control::{ControlPlane, Pki};
use remora_tests::net::Process;
use remora_tests::services::Service;
use remora_tests::{Net, Pod, eventually};
use tokio::time::Instant;

const PORT: u16 = 8080;
const VIP: &str = "10.96.0.30";
const AUTHORITY: &str = "web.shop.svc.cluster.local:8080";
/// Requests per second, half HTTP/1.1 and half HTTP/2.
const RATE: u64 = 1000;
/// HTTP/1.1 connections of the client app (each carries one request at a time).
const H1_CONNS: u64 = 16;
/// HTTP/2 connections of the client app.
const H2_CONNS: u64 = 2;
/// How late discovery hears of a replaced pod, at least (0.5–1 s in a cluster).
const DISCOVERY_LAG: Duration = Duration::from_millis(750);
/// Non-2xx answers and errors kept for the failure message.
const SAMPLES: usize = 20;

/// A tally of what the client app saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, what: String) {
        let mut s = self.samples.lock().unwrap();
        if s.len() < SAMPLES {
            s.push(what);
        }
    }

    fn status(&self, proto: &str, rsp: &http::Response<hyper::body::Incoming>) {
        if rsp.status().is_success() {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.non_2xx.fetch_add(1, Ordering::Relaxed);
            self.note(format!("{proto}: {} {:?}", rsp.status(), rsp.headers()));
        }
    }

    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.note(what);
    }
}

/// When the load stops: at `at`, or sooner once `done` is set.
#[derive(Clone, Debug)]
struct Stop {
    at: Instant,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Stop {
    fn after(d: Duration) -> Self {
        Stop {
            at: Instant::now() + d,
            done: Arc::default(),
        }
    }

    fn due(&self) -> bool {
        self.done.load(Ordering::Relaxed) || Instant::now() >= self.at
    }
}

fn request() -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{AUTHORITY}/echo"))
        .header(http::header::HOST, AUTHORITY)
        .body(Empty::new())
        .unwrap()
}

/// One HTTP/1.1 connection's worth of load: a request every `period` until `stop`, waiting for
/// each answer; reconnects after an error or `connection: close`.
async fn h1_load(ns: String, period: Duration, stop: Stop, tally: Arc<Tally>) {
    let vip = format!("{VIP}:{PORT}").parse().unwrap();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    while !stop.due() {
        tick.tick().await;
        let mut sender = match conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let io = match connect_in(&ns, vip).await {
                    Ok(io) => io,
                    Err(e) => {
                        tally.error(format!("HTTP/1.1 connect: {e}"));
                        continue;
                    }
                };
                match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
                    Ok((s, c)) => {
                        tokio::spawn(c);
                        s
                    }
                    Err(e) => {
                        tally.error(format!("HTTP/1.1 handshake: {e}"));
                        continue;
                    }
                }
            }
        };
        if sender.ready().await.is_err() {
            tally.error("HTTP/1.1: the connection closed before the request".into());
            continue;
        }
        match sender.send_request(request()).await {
            Ok(rsp) => {
                tally.status("HTTP/1.1", &rsp);
                let close = rsp
                    .headers()
                    .get(http::header::CONNECTION)
                    .is_some_and(|v| v == "close");
                if let Err(e) = rsp.into_body().collect().await {
                    tally.error(format!("HTTP/1.1 body: {e}"));
                    continue;
                }
                if !close {
                    conn = Some(sender);
                }
            }
            Err(e) => tally.error(format!("HTTP/1.1: {e}")),
        }
    }
}

/// One HTTP/2 connection's worth of load: a request every `period` until `stop`, each on its
/// own stream (not waiting for the last); reconnects when the connection closes.
async fn h2_load(ns: String, period: Duration, stop: Stop, tally: Arc<Tally>) {
    let vip = format!("{VIP}:{PORT}").parse().unwrap();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>> = None;
    let mut inflight = tokio::task::JoinSet::new();
    while !stop.due() {
        tick.tick().await;
        while inflight.try_join_next().is_some() {}
        let sender = match conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let io = match connect_in(&ns, vip).await {
                    Ok(io) => io,
                    Err(e) => {
                        tally.error(format!("HTTP/2 connect: {e}"));
                        continue;
                    }
                };
                match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await
                {
                    Ok((s, c)) => {
                        tokio::spawn(c);
                        s
                    }
                    Err(e) => {
                        tally.error(format!("HTTP/2 handshake: {e}"));
                        continue;
                    }
                }
            }
        };
        let mut s = sender.clone();
        conn = Some(sender);
        let tally = tally.clone();
        inflight.spawn(async move {
            if s.ready().await.is_err() {
                tally.error("HTTP/2: the connection closed before the request".into());
                return;
            }
            match s.send_request(request()).await {
                Ok(rsp) => {
                    tally.status("HTTP/2", &rsp);
                    if let Err(e) = rsp.into_body().collect().await {
                        tally.error(format!("HTTP/2 body: {e}"));
                    }
                }
                Err(e) => tally.error(format!("HTTP/2: {e}")),
            }
        });
    }
    // Every request sent is answered or failed within this.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
}

/// A pod of the service: a meshed pod whose app is a `remora test-server` process.
struct Replica {
    pod: Pod,
    app: Process,
}

async fn replica(net: &Net, cp: &ControlPlane, name: &str) -> Replica {
    let pod = net
        .pod(name)
        .control_plane(cp, "web", "shop")
        .meshed()
        .start()
        .await;
    let remora = remora_tests::bin::remora();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pod.ns])
        .arg(remora)
        .args(["test-server", "--listen", &format!("0.0.0.0:{PORT}")])
        .args(["--name", name]);
    let app = Process::spawn(name, cmd);
    let ns = pod.ns.clone();
    let listening = eventually(Duration::from_secs(15), || {
        let ns = ns.clone();
        async move {
            connect_in(&ns, format!("127.0.0.1:{PORT}").parse().unwrap())
                .await
                .is_ok()
        }
    })
    .await;
    assert!(listening, "{name}'s app never listened: {}", app.log());
    Replica { pod, app }
}

fn service(replicas: &[Replica]) -> [Service; 1] {
    let mut s = Service::new("web", "shop").vip(VIP).port(PORT);
    for r in replicas {
        s = s.endpoint(&r.pod, "web");
    }
    [s]
}

#[tokio::test]
async fn netns_rolling_restart_under_load_answers_every_request() {
    let Some(net) = Net::new() else { return };
    let rate: u64 = std::env::var("REMORA_ROLLOUT_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RATE)
        .max(10);
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
    let mut live = Vec::new();
    for i in 0..3 {
        live.push(replica(&net, &cp, &format!("web-{i}")).await);
    }
    cp.apply(&service(&live)).await;
    let client = net
        .pod("client")
        .control_plane(&cp, "client", "shop")
        .meshed()
        .start()
        .await;
    // Warm up: the client proxy resolves the service and reaches every replica.
    let want: Vec<String> = {
        let mut v: Vec<String> = live.iter().map(|r| r.pod.addr4(PORT).to_string()).collect();
        v.sort();
        v
    };
    let warm = Arc::new(Tally::default());
    let converged = eventually(Duration::from_secs(30), || {
        let (ns, warm, want) = (client.ns.clone(), warm.clone(), want.clone());
        let client = &client;
        async move {
            h1_load(
                ns,
                Duration::from_millis(10),
                Stop::after(Duration::from_millis(50)),
                warm,
            )
            .await;
            let target = format!("{VIP}:{PORT}");
            client.known_endpoints(&target).await.as_ref() == Some(&want)
        }
    })
    .await;
    assert!(
        converged,
        "the client proxy never learnt {want:?}: {:#}",
        client.destinations().await
    );

    // The load: half the rate over HTTP/1.1 connections, half over HTTP/2 ones, for as long as
    // the rollout takes (bounded: it stops at `stop`, or when the rollout is done).
    let tally = Arc::new(Tally::default());
    let stop = Stop::after(Duration::from_secs(120));
    let mut load = tokio::task::JoinSet::new();
    let per_h1 = Duration::from_micros(1_000_000 * H1_CONNS * 2 / rate);
    let per_h2 = Duration::from_micros(1_000_000 * H2_CONNS * 2 / rate);
    for i in 0..H1_CONNS + H2_CONNS {
        let (ns, tally, stop) = (client.ns.clone(), tally.clone(), stop.clone());
        load.spawn(async move {
            if i < H1_CONNS {
                h1_load(ns, per_h1, stop, tally).await
            } else {
                h2_load(ns, per_h2, stop, tally).await
            }
        });
    }
    // Steady state first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_rollout = tally.ok.load(Ordering::Relaxed);
    let mut old = Vec::new();
    for i in 0..3 {
        let name = format!("web-{i}-v2");
        let gone = live.remove(0);
        let sigterm = Instant::now();
        gone.pod.proxy().signal(nix::sys::signal::Signal::SIGTERM);
        gone.app.signal(nix::sys::signal::Signal::SIGTERM);
        let fresh = replica(&net, &cp, &name).await;
        live.push(fresh);
        // Discovery hears of it late, and only after the new pod runs.
        tokio::time::sleep_until(sigterm + DISCOVERY_LAG).await;
        cp.set_services(&service(&live));
        old.push(gone);
        // Let the new pod take traffic before the next one goes.
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "rolling-restart: replaced pod {i} ({:?} after its SIGTERM)",
            sigterm.elapsed()
        );
    }
    let during = tally.ok.load(Ordering::Relaxed) - before_rollout;
    stop.done.store(true, Ordering::Relaxed);
    // The workers stop now; wait for them (bounded: their requests in flight end).
    let _ = tokio::time::timeout(Duration::from_secs(150), async {
        while load.join_next().await.is_some() {}
    })
    .await;
    let (ok, non_2xx, errors) = (
        tally.ok.load(Ordering::Relaxed),
        tally.non_2xx.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    let samples = tally.samples.lock().unwrap().clone();
    println!(
        "rolling-restart: {rate} rps offered; {ok} answered 2xx ({during} during the rollout), \
         {non_2xx} non-2xx, {errors} connection errors"
    );
    for s in &samples {
        println!("rolling-restart:   {s}");
    }
    let m = client.metrics().await;
    let retried = |reason| m.get("retries_total", &[("reason", reason)]);
    println!(
        "rolling-restart: the client proxy retried {} never sent, {} never processed",
        retried("connect"),
        retried("refused")
    );
    assert!(ok > 0, "no request was answered");
    assert_eq!(
        (non_2xx, errors),
        (0, 0),
        "the client saw failures while the pods rolled: {samples:#?}\n--- client proxy ---\n{}",
        client.proxy().log()
    );
    drop(old);
}
