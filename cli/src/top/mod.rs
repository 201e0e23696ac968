//! `remora top`: a live terminal view of the golden metrics of one or more proxies.
//!
//! Every interval each target's `/metrics` is scraped ([`scrape`]) and parsed ([`parse`]) into
//! a [`stats::Snapshot`]; the deltas from each target's previous snapshot are summed into rows
//! ([`stats::Aggregate`]) and drawn as a table ([`table`]). A target that does not answer is
//! listed as stale under the table and the others keep being shown. With `--routes` the rows
//! are the outbound policy's routes (`route  web:8080/HTTPRoute/web-canary`), from Linkerd's
//! route families: rate and success from `outbound_{http,grpc}_route_request_statuses_total`
//! (a 5xx, a gRPC status other than `OK`, or an `error` is a failure), latency from
//! `..._request_duration_seconds` (coarse: Linkerd's buckets 50 ms, 500 ms, 1 s, 10 s), no
//! mTLS share.
//!
//! # Layout
//! - [`parse`]: the Prometheus text format, line by line.
//! - [`scrape`]: one HTTP/1.1 `GET` with a deadline and a body cap.
//! - [`stats`]: snapshots, deltas, rates, shares and `histogram_quantile`.
//! - [`table`]: the rendering.

pub(crate) mod parse;
pub(crate) mod scrape;
pub(crate) mod stats;
pub(crate) mod table;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use hyper::Uri;
use tokio::task::JoinSet;

use stats::{Aggregate, Grouping, Row, Snapshot};

#[derive(Debug, Args)]
#[command(
    about = "Live per-authority request rate, success rate, latency and mTLS share of proxies",
    long_about = "Show, refreshed every interval like top, the request rate, success rate, \
                  p50/p95/p99 latency and mTLS share per direction and authority (and caller, \
                  with --by-caller; or per outbound policy route, with --routes), from the \
                  deltas of the proxies' /metrics between scrapes, sorted by rate. A proxy \
                  that does not answer is listed as stale."
)]
pub struct TopArgs {
    /// Metrics endpoints: `http://HOST:PORT/PATH`, or `HOST:PORT` for `http://HOST:PORT/metrics`.
    #[arg(required = true, value_name = "TARGET", value_parser = parse_target)]
    targets: Vec<Uri>,
    /// Print one table (two scrapes one interval apart) without terminal control codes, and exit.
    #[arg(long)]
    once: bool,
    /// Time between scrapes, e.g. 250ms, 1s, 2s.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// One row per caller identity (the inbound `client_id`) as well.
    #[arg(long)]
    by_caller: bool,
    /// Which traffic to show.
    #[arg(long, value_enum, default_value_t = Direction::All)]
    direction: Direction,
    /// One row per outbound policy route (`parent:port/kind/route`, from the
    /// `outbound_{http,grpc}_route_*` families) instead of per authority.
    #[arg(long, conflicts_with = "by_caller")]
    routes: bool,
}

/// What the rows are.
#[derive(Debug, Clone, Copy)]
enum View {
    Authorities(Grouping),
    Routes,
}

/// The `--direction` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    Inbound,
    Outbound,
    All,
}

fn parse_target(s: &str) -> Result<Uri, String> {
    let url = match s.contains("://") {
        true => s.to_string(),
        false if s.contains('/') => format!("http://{s}"),
        false => format!("http://{s}/metrics"),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("expected http://HOST:PORT/PATH or HOST:PORT, got {s:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("only http:// targets are supported, got {s:?}"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("no host in {s:?}"));
    }
    Ok(uri)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match remora_runtime::duration::parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_string()),
        d => Ok(d),
    }
}

/// One proxy being watched.
#[derive(Debug)]
struct Target {
    url: String,
    uri: Uri,
    last: Option<Snapshot>,
    last_ok: Option<Instant>,
    error: Option<String>,
}

impl Target {
    /// Takes in one scrape's result: a snapshot whose deltas from the last good one go into
    /// `aggregate`, or the error that makes the target stale. Lines about it go to `notes`.
    fn record(
        &mut self,
        result: Result<String, scrape::ScrapeError>,
        at: Instant,
        view: View,
        aggregate: &mut Aggregate,
        notes: &mut Vec<String>,
    ) {
        let text = match result {
            Ok(text) => text,
            Err(e) => {
                self.error = Some(e.to_string());
                return;
            }
        };
        let snap = match view {
            View::Authorities(grouping) => Snapshot::from_text(&text, at, grouping),
            View::Routes => Snapshot::from_routes_text(&text, at),
        };
        if let Some(e) = &snap.first_error {
            notes.push(format!(
                "note: {}: {} lines not understood (first: {e})",
                self.url, snap.bad_lines
            ));
        }
        if snap.dropped > 0 {
            notes.push(format!(
                "note: {}: {} series over the limit of {} ignored",
                self.url,
                snap.dropped,
                stats::MAX_SERIES
            ));
        }
        if let Some(prev) = &self.last {
            aggregate.add(prev, &snap);
        }
        self.last = Some(snap);
        self.last_ok = Some(at);
        self.error = None;
    }
}

/// What one refresh shows.
#[derive(Debug)]
struct Frame {
    rows: Vec<Row>,
    /// Lines under the table: stale targets, unparseable lines, dropped rows.
    notes: Vec<String>,
    up: usize,
}

pub fn main(args: TopArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("remora top: {e}");
            return ExitCode::FAILURE;
        }
    };
    let view = match args.routes {
        true => View::Routes,
        false => View::Authorities(Grouping {
            direction: args.direction,
            by_caller: args.by_caller,
        }),
    };
    let mut targets: Vec<Target> = args
        .targets
        .into_iter()
        .map(|uri| Target {
            url: uri.to_string(),
            uri,
            last: None,
            last_ok: None,
            error: None,
        })
        .collect();
    runtime.block_on(async move {
        if args.once {
            return once(&mut targets, view, args.interval, args.by_caller).await;
        }
        tokio::select! {
            code = live(&mut targets, view, args.interval, args.by_caller) => code,
            () = ctrl_c() => ExitCode::SUCCESS,
        }
    })
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn once(targets: &mut [Target], view: View, interval: Duration, by_caller: bool) -> ExitCode {
    refresh(targets, view).await;
    tokio::time::sleep(interval).await;
    let frame = refresh(targets, view).await;
    if targets.iter().all(|t| t.last_ok.is_none()) {
        for note in &frame.notes {
            eprintln!("{note}");
        }
        eprintln!("remora top: no target answered");
        return ExitCode::FAILURE;
    }
    let mut out = table::render(&frame.rows, by_caller);
    for note in &frame.notes {
        out.push_str(note);
        out.push('\n');
    }
    // A closed stdout (`| head`) is not an error worth a message.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

async fn live(targets: &mut [Target], view: View, interval: Duration, by_caller: bool) -> ExitCode {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        ticks.tick().await;
        let frame = refresh(targets, view).await;
        let total: f64 = frame.rows.iter().map(|r| r.rps).sum();
        let mut out = format!(
            "\x1b[H\x1b[2Jremora top  {}  {}/{} proxies up  {total:.1} rps  (every {:?}, Ctrl-C quits)\n\n",
            utc_now(),
            frame.up,
            targets.len(),
            interval,
        );
        if first {
            out.push_str("collecting: the first rates come at the next refresh\n");
            first = false;
        } else {
            out.push_str(&table::render(&frame.rows, by_caller));
        }
        for note in &frame.notes {
            out.push_str(note);
            out.push('\n');
        }
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
    }
}

/// Scrapes every target at once, updates their state and sums the deltas.
async fn refresh(targets: &mut [Target], view: View) -> Frame {
    let mut scrapes = JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let uri = target.uri.clone();
        scrapes.spawn(async move { (i, scrape::fetch(&uri).await, Instant::now()) });
    }
    let mut results = Vec::with_capacity(targets.len());
    while let Some(joined) = scrapes.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    let mut aggregate = Aggregate::default();
    let mut notes = Vec::new();
    for (i, result, at) in results {
        if let Some(target) = targets.get_mut(i) {
            target.record(result, at, view, &mut aggregate, &mut notes);
        }
    }
    let mut up = 0;
    for target in targets.iter() {
        match &target.error {
            Some(e) => notes.push(table::stale_line(
                &target.url,
                e,
                target.last_ok.map(|t| t.elapsed()),
            )),
            None => up += usize::from(target.last_ok.is_some()),
        }
    }
    if aggregate.dropped > 0 {
        notes.push(format!(
            "note: {} series of rows over the limit of {} ignored",
            aggregate.dropped,
            stats::MAX_ROWS
        ));
    }
    notes.sort();
    Frame {
        rows: aggregate.rows(),
        notes,
        up,
    }
}

/// The time of day in UTC, `HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_intervals() {
        let t = parse_target("127.0.0.1:4191").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:4191/metrics");
        let t = parse_target("http://[::1]:4191/other").unwrap();
        assert_eq!(t.path(), "/other");
        assert_eq!(parse_target("h:1/m").unwrap().to_string(), "http://h:1/m");
        assert!(parse_target("https://h:1/metrics").is_err());
        assert!(parse_target("not a url").is_err());
        assert!(parse_target("").is_err());
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("1").is_err());
    }
}
