//! The demo's traffic, live view and summary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::netns::Dialer;
use super::{Demo, DemoArgs};
use crate::top::Direction;
use crate::top::stats::{Aggregate, Grouping, Row, Snapshot};

impl Demo {
    /// Drives traffic until the duration passes or Ctrl-C, with a live view on a terminal;
    /// returns the summary.
    pub(super) async fn watch(
        &mut self,
        args: &DemoArgs,
        admins: &[(String, SocketAddr)],
    ) -> Result<String, String> {
        let pids: Vec<String> = self
            .procs
            .iter()
            .filter_map(|p| p.child.id().map(|id| id.to_string()))
            .collect();
        eprintln!(
            "remora demo: {} processes up (pids {}); traffic starts",
            self.procs.len(),
            pids.join(" ")
        );
        let east_web = SocketAddr::new(self.ip(1, 10), 8080);
        let west_web = SocketAddr::new(self.ip(2, 10), 8080);
        let load = [east_web, west_web]
            .map(|addr| tokio::spawn(drive(self.dialer.clone(), addr, args.rate)));
        // The mirrors and the first certificates settle; then measure.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let web_proxies = [
            ("east", SocketAddr::new(self.ip(1, 10), 4191)),
            ("west", SocketAddr::new(self.ip(2, 10), 4191)),
        ];
        let start = self.scrape_all(&web_proxies).await;
        let counters = |texts: Vec<Result<String, String>>| {
            texts.iter().flatten().fold((0.0, 0.0), |(r, t), text| {
                (
                    r + sum(text, "retries_total"),
                    t + sum(text, "request_timeouts_total"),
                )
            })
        };
        let mut texts = Vec::new();
        for (_, addr) in &web_proxies {
            texts.push(self.dialer.get(*addr, "/metrics").await);
        }
        let before = counters(texts);
        let started = Instant::now();
        let deadline = args
            .duration
            .map(|d| started + d.saturating_sub(Duration::from_secs(3)));
        let live = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut prev = self.scrape_all(admins).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    eprintln!("remora demo: stopping");
                    break;
                }
                _ = tick.tick() => {}
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                break;
            }
            let cur = self.scrape_all(admins).await;
            if live {
                let mut agg = Aggregate::default();
                for ((_, a), (_, b)) in prev.iter().zip(&cur) {
                    if let (Some(a), Some(b)) = (a, b) {
                        agg.add(a, b);
                    }
                }
                let rows: Vec<Row> = agg.rows();
                print!(
                    "\x1b[H\x1b[2Jremora demo: {} processes, {:.0}s; Ctrl-C to stop\n\n{}",
                    self.procs.len(),
                    started.elapsed().as_secs_f64(),
                    crate::top::table::render(&rows, false)
                );
            }
            prev = cur;
        }
        for l in load {
            l.abort();
        }
        let end = self.scrape_all(&web_proxies).await;
        let mut texts = Vec::new();
        for (_, addr) in &web_proxies {
            texts.push(self.dialer.get(*addr, "/metrics").await);
        }
        let after = counters(texts);
        let mut out = summary(&start, &end, after.0 - before.0, after.1 - before.1);
        if let Some(c) = &self.collector {
            out.push_str(&c.trace_one(east_web).await);
        }
        if self.linkerd2.is_some() {
            out.push_str(&proxies_section(&self.proxies()));
        }
        Ok(out)
    }

    async fn scrape_all(
        &self,
        admins: &[(impl AsRef<str>, SocketAddr)],
    ) -> Vec<(String, Option<Snapshot>)> {
        let grouping = Grouping {
            direction: Direction::Outbound,
            by_caller: false,
        };
        let mut out = Vec::new();
        for (name, addr) in admins {
            let snap = self
                .dialer
                .get(*addr, "/metrics")
                .await
                .ok()
                .map(|t| Snapshot::from_text(&t, Instant::now(), grouping));
            out.push((name.as_ref().to_string(), snap));
        }
        out
    }
}

/// The sum of every sample of `name`.
fn sum(text: &str, name: &str) -> f64 {
    crate::top::parse::parse(text)
        .flatten()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// Drives `GET /fanout` at `rate` per second, each request on a fresh connection.
async fn drive(dialer: Dialer, front_end: SocketAddr, rate: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dialer = dialer.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), dialer.get(front_end, "/fanout"))
                .await;
        });
    }
}

/// Which path a front end's upstream takes.
fn path_of(cluster: &str, authority: &str) -> &'static str {
    match (cluster, authority.split('.').next().unwrap_or("")) {
        ("east", "api-west") => "via gateway",
        ("east", "catalog-west") | ("west", "api-east") => "direct (flat)",
        _ => "local",
    }
}

fn summary(
    start: &[(String, Option<Snapshot>)],
    end: &[(String, Option<Snapshot>)],
    retries: f64,
    timeouts: f64,
) -> String {
    let mut out = String::from(
        "\nremora demo summary (each front end's outbound calls)\n\
         FROM  PATH           TO                                          REQUESTS  SUCCESS    P50    P99   MTLS\n",
    );
    for ((cluster, a), (_, b)) in start.iter().zip(end) {
        let (Some(a), Some(b)) = (a, b) else {
            out.push_str(&format!("{cluster}: no metrics\n"));
            continue;
        };
        let mut agg = Aggregate::default();
        agg.add(a, b);
        let mut rows = agg.rows();
        rows.sort_by(|x, y| x.key.authority.cmp(&y.key.authority));
        for r in rows {
            let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
            out.push_str(&format!(
                "{cluster:<5} {:<14} {:<43} {:>8} {:>8} {:>6} {:>6} {:>6}\n",
                path_of(cluster, &r.key.authority),
                r.key.authority,
                r.responses as u64,
                pct(r.success),
                ms(r.p50),
                ms(r.p99),
                pct(r.mtls),
            ));
        }
    }
    out.push_str(&format!(
        "retries made: {retries}\ntimeouts fired: {timeouts}\n"
    ));
    out
}

/// The pod a front end's call to `authority` ends at (`<cluster>-<name>`).
fn server_pod(cluster: &str, authority: &str) -> String {
    let name = authority.split('.').next().unwrap_or("");
    match name.rsplit_once('-') {
        Some((svc, remote @ ("east" | "west"))) => format!("{remote}-{svc}"),
        _ => format!("{cluster}-{name}"),
    }
}

/// With `--linkerd2-proxy`: the proxy each pod runs, and the calls it serves.
fn proxies_section(proxies: &[(String, &'static str)]) -> String {
    let calls: [(&str, &str); 6] = [
        ("east", "api"),
        ("east", "api-west"),
        ("east", "catalog-west"),
        ("east", "flaky"),
        ("east", "slow"),
        ("west", "api-east"),
    ];
    let mut out =
        String::from("\npods and their proxies\nPOD            PROXY            SERVES\n");
    for (pod, proxy) in proxies {
        let serves: Vec<String> = calls
            .iter()
            .filter(|(from, to)| server_pod(from, to) == *pod)
            .map(|(from, to)| format!("{from} -> {to} ({})", path_of(from, to)))
            .collect();
        let serves = if pod.ends_with("-web") {
            "front end (client)".to_string()
        } else {
            serves.join(", ")
        };
        out.push_str(&format!("{pod:<14} {proxy:<16} {serves}\n"));
    }
    out
}
