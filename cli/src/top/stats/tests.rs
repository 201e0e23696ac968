use std::time::Duration;

use super::*;

const ALL: Grouping = Grouping {
    direction: Direction::All,
    by_caller: false,
};

fn snap(at: Instant, text: &str, grouping: Grouping) -> Snapshot {
    Snapshot::from_text(text, at, grouping)
}

/// Two scrapes of one proxy, `secs` apart.
fn rows(before: &str, after: &str, secs: u64, grouping: Grouping) -> Vec<Row> {
    let t0 = Instant::now();
    let mut agg = Aggregate::default();
    agg.add(
        &snap(t0, before, grouping),
        &snap(t0 + Duration::from_secs(secs), after, grouping),
    );
    agg.rows()
}

fn responses(authority: &str, tls: &str, class: &str, n: u64) -> String {
    format!(
        "response_total{{direction=\"outbound\",authority=\"{authority}\",target_addr=\"10.0.0.5:8080\",\
         tls=\"{tls}\",status_code=\"200\",classification=\"{class}\"}} {n}\n"
    )
}

fn assert_close(got: Option<f64>, want: f64) {
    assert!(
        got.is_some_and(|g| (g - want).abs() < 1e-9),
        "{got:?} != {want}"
    );
}

fn q(q: f64, buckets: &[(f64, f64)]) -> f64 {
    histogram_quantile(q, &mut buckets.to_vec())
}

#[test]
fn quantile_matches_prometheus() {
    let inf = f64::INFINITY;
    // All 10 in (5, 10]: interpolated from 5.
    let one = [(1.0, 0.0), (5.0, 0.0), (10.0, 10.0), (inf, 10.0)];
    assert_eq!(q(0.5, &one), 7.5);
    assert_close(Some(q(0.99, &one)), 9.95);
    // Lowest bucket interpolates from 0.
    assert_eq!(q(0.5, &[(4.0, 10.0), (inf, 10.0)]), 2.0);
    // Spread: 5 in [0,1], 4 in (1,2], 1 in (2,3]. p90: rank 9 = the top of (1,2].
    let spread = [(1.0, 5.0), (2.0, 9.0), (3.0, 10.0), (inf, 10.0)];
    assert_eq!(q(0.5, &spread), 1.0);
    assert_close(Some(q(0.9, &spread)), 2.0);
    assert_close(Some(q(0.95, &spread)), 2.5);
    assert_eq!(q(0.7, &spread), 1.5);
    // In the +Inf bucket: the highest finite bound.
    assert_eq!(q(0.99, &[(1.0, 0.0), (50.0, 1.0), (inf, 100.0)]), 50.0);
    // Order, duplicate bounds (summed) and non-monotonic counts are repaired: this is
    // (5, 3), (10, 3), (+Inf, 10).
    let messy = [(inf, 6.0), (10.0, 1.0), (5.0, 3.0), (10.0, 1.0), (inf, 4.0)];
    assert_eq!(q(0.5, &messy), 10.0);
    assert_close(Some(q(0.2, &messy)), 5.0 * 2.0 / 3.0);
    // Unknown: no observations, no +Inf, a single bucket; and out-of-range q.
    assert!(q(0.5, &[(1.0, 0.0), (inf, 0.0)]).is_nan());
    assert!(q(0.5, &[(1.0, 3.0), (2.0, 3.0)]).is_nan());
    assert!(q(0.5, &[(inf, 3.0)]).is_nan());
    assert!(q(0.5, &[]).is_nan());
    assert_eq!(q(-1.0, &one), f64::NEG_INFINITY);
    assert_eq!(q(2.0, &one), f64::INFINITY);
}

#[test]
fn rate_success_and_mtls_from_two_snapshots() {
    let before = responses("web:80", "true", "success", 100)
        + &responses("web:80", "no_identity", "success", 50)
        + &responses("web:80", "true", "failure", 10);
    // +60 mTLS successes, +30 plaintext successes, +10 mTLS failures in 2 s.
    let after = responses("web:80", "true", "success", 160)
        + &responses("web:80", "no_identity", "success", 80)
        + &responses("web:80", "true", "failure", 20);
    let rows = rows(&before, &after, 2, ALL);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.key.direction, "outbound");
    assert_eq!(r.key.authority, "web:80");
    assert_eq!(r.key.caller, None);
    assert_eq!(r.rps, 50.0);
    assert_eq!(r.success, Some(0.9));
    assert_eq!(r.mtls, Some(0.7));
    assert_eq!((r.p50, r.p95, r.p99), (None, None, None));
}

#[test]
fn latency_from_bucket_deltas_summed_over_series() {
    let bucket = |addr: &str, le: &str, n: u64| {
        format!(
            "response_latency_ms_bucket{{le=\"{le}\",authority=\"web:80\",direction=\"outbound\",target_addr=\"{addr}\"}} {n}\n"
        )
    };
    let series = |a: u64, b: u64| {
        ["1", "5", "10", "+Inf"]
            .iter()
            .zip([0, 0, a, a])
            .map(|(le, n)| bucket("10.0.0.1:80", le, n + 100))
            .chain(
                ["1", "5", "10", "+Inf"]
                    .iter()
                    .zip([0, b, b, b])
                    .map(|(le, n)| bucket("10.0.0.2:80", le, n)),
            )
            .collect::<String>()
    };
    let before = responses("web:80", "true", "success", 1) + &series(0, 0);
    // 10 in (5, 10] on one endpoint, 10 in (1, 5] on the other: p50 is the top of (1, 5].
    let after = responses("web:80", "true", "success", 21) + &series(10, 10);
    let r = &rows(&before, &after, 1, ALL)[0];
    assert_close(r.p50, 5.0);
    assert_close(r.p95, 9.5);
    assert_close(r.p99, 9.9);
}

#[test]
fn a_counter_that_went_down_is_a_restart() {
    let before = responses("web:80", "true", "success", 1_000);
    let after = responses("web:80", "true", "success", 30);
    let r = &rows(&before, &after, 3, ALL)[0];
    assert_eq!(r.rps, 10.0);
    // A series absent before started from zero.
    let after = before.clone() + &responses("new:80", "true", "failure", 6);
    let rows = rows(&before, &after, 2, ALL);
    assert_eq!(rows[0].key.authority, "new:80");
    assert_eq!((rows[0].rps, rows[0].success), (3.0, Some(0.0)));
    // A row with past traffic and none now stays, at rate 0 with unknown shares.
    assert_eq!(rows[1].key.authority, "web:80");
    assert_eq!(
        (rows[1].rps, rows[1].success, rows[1].mtls),
        (0.0, None, None)
    );
}

#[test]
fn by_caller_and_direction() {
    let inbound = |client: Option<&str>, n: u64| {
        let client = client.map_or(String::new(), |c| format!(",client_id=\"{c}\""));
        format!(
            "response_total{{direction=\"inbound\",authority=\"web:80\"{client},tls=\"true\",classification=\"success\"}} {n}\n"
        )
    };
    let before = inbound(Some("a.ns"), 0)
        + &inbound(Some("b.ns"), 0)
        + &inbound(None, 0)
        + &responses("db:5432", "true", "success", 0);
    let after = inbound(Some("a.ns"), 4)
        + &inbound(Some("b.ns"), 8)
        + &inbound(None, 2)
        + &responses("db:5432", "true", "success", 6);
    let keys = |g: Grouping| -> Vec<(String, Option<String>, f64)> {
        rows(&before, &after, 1, g)
            .into_iter()
            .map(|r| (r.key.direction, r.key.caller, r.rps))
            .collect()
    };
    let by_caller = Grouping {
        direction: Direction::All,
        by_caller: true,
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        keys(by_caller),
        vec![
            ("inbound".into(), s("b.ns"), 8.0),
            ("outbound".into(), s("-"), 6.0),
            ("inbound".into(), s("a.ns"), 4.0),
            ("inbound".into(), s("-"), 2.0),
        ]
    );
    assert_eq!(
        keys(ALL),
        vec![
            ("inbound".into(), None, 14.0),
            ("outbound".into(), None, 6.0)
        ]
    );
    let inbound_only = Grouping {
        direction: Direction::Inbound,
        by_caller: false,
    };
    assert_eq!(keys(inbound_only), vec![("inbound".into(), None, 14.0)]);
    let outbound_only = Grouping {
        direction: Direction::Outbound,
        by_caller: false,
    };
    assert_eq!(keys(outbound_only), vec![("outbound".into(), None, 6.0)]);
}

#[test]
fn sorted_by_rate_then_name_and_summed_over_proxies() {
    let t0 = Instant::now();
    let mut agg = Aggregate::default();
    let pair = |a: u64, b: u64, c: u64| {
        responses("b:80", "true", "success", a)
            + &responses("a:80", "true", "success", b)
            + &responses("c:80", "true", "success", c)
    };
    // Proxy 1 over 1 s, proxy 2 over 2 s: rates add up, each over its own interval.
    agg.add(
        &snap(t0, &pair(1, 1, 1), ALL),
        &snap(t0 + Duration::from_secs(1), &pair(3, 3, 11), ALL),
    );
    agg.add(
        &snap(t0, &pair(1, 1, 1), ALL),
        &snap(t0 + Duration::from_secs(2), &pair(5, 5, 1), ALL),
    );
    let order: Vec<(String, f64)> = agg
        .rows()
        .into_iter()
        .map(|r| (r.key.authority, r.rps))
        .collect();
    assert_eq!(
        order,
        vec![
            ("c:80".into(), 10.0),
            ("a:80".into(), 4.0),
            ("b:80".into(), 4.0)
        ]
    );
}

#[test]
fn bad_values_and_other_families_are_ignored() {
    let text = "request_total{direction=\"outbound\",authority=\"x\"} 5\n\
                response_total{direction=\"outbound\",authority=\"x\"} NaN\n\
                response_total{direction=\"outbound\",authority=\"x\"} -3\n\
                response_total{direction=\"outbound\",authority=\"x\"} +Inf\n\
                response_latency_ms_bucket{direction=\"outbound\",authority=\"x\",le=\"soon\"} 1\n\
                not a sample\n";
    let s = snap(Instant::now(), text, ALL);
    assert!(s.series.is_empty());
    assert_eq!(s.bad_lines, 1);
    assert_eq!(s.first_error.map(|e| e.line), Some(6));
    assert!(rows(text, text, 1, ALL).is_empty());
}

#[test]
fn the_route_view_has_a_row_per_outbound_policy_route() {
    let route = |route: &str, status: &str, error: &str, n: u64| {
        format!(
            "outbound_http_route_request_statuses_total{{parent_group=\"core\",parent_kind=\"Service\",\
             parent_namespace=\"shop\",parent_name=\"web\",parent_port=\"8080\",parent_section_name=\"\",\
             route_group=\"gateway.networking.k8s.io\",route_kind=\"HTTPRoute\",route_namespace=\"shop\",\
             route_name=\"{route}\",hostname=\"\",http_status=\"{status}\",error=\"{error}\"}} {n}\n"
        )
    };
    let grpc = |code: &str, n: u64| {
        format!(
            "outbound_grpc_route_request_statuses_total{{parent_name=\"api\",parent_port=\"9090\",\
             route_kind=\"default\",route_name=\"grpc\",grpc_status=\"{code}\",error=\"\"}} {n}\n"
        )
    };
    let bucket = |le: &str, n: u64| {
        format!(
            "outbound_http_route_request_duration_seconds_bucket{{le=\"{le}\",parent_name=\"web\",\
             parent_port=\"8080\",route_kind=\"HTTPRoute\",route_name=\"canary\",hostname=\"\"}} {n}\n"
        )
    };
    let before = [
        route("canary", "200", "", 0),
        route("canary", "503", "", 0),
        route("canary", "", "REQUEST_TIMEOUT", 0),
        grpc("OK", 0),
        grpc("UNAVAILABLE", 0),
        bucket("0.05", 0),
        bucket("0.5", 0),
        bucket("1.0", 0),
        bucket("10.0", 0),
        bucket("+Inf", 0),
        responses("web:8080", "true", "success", 5),
    ]
    .concat();
    let after = [
        route("canary", "200", "", 80),
        route("canary", "503", "", 10),
        route("canary", "", "REQUEST_TIMEOUT", 10),
        grpc("OK", 30),
        grpc("UNAVAILABLE", 10),
        bucket("0.05", 50),
        bucket("0.5", 100),
        bucket("1.0", 100),
        bucket("10.0", 100),
        bucket("+Inf", 100),
        responses("web:8080", "true", "success", 500),
    ]
    .concat();
    let t0 = Instant::now();
    let mut agg = Aggregate::default();
    agg.add(
        &Snapshot::from_routes_text(&before, t0),
        &Snapshot::from_routes_text(&after, t0 + Duration::from_secs(10)),
    );
    let rows = agg.rows();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let web = &rows[0];
    assert_eq!(
        (web.key.direction.as_str(), web.key.authority.as_str()),
        ("route", "web:8080/HTTPRoute/canary")
    );
    assert_close(Some(web.rps), 10.0);
    assert_close(web.success, 0.8);
    assert_eq!(web.mtls, None, "route rows have no mTLS share");
    // Half of the requests within 50 ms: p50 at the first bucket's bound.
    assert_close(web.p50, 50.0);
    let api = &rows[1];
    assert_eq!(api.key.authority, "api:9090/default/grpc");
    assert_close(api.success, 0.75);
}

#[test]
fn inbound_rows_without_an_authority_are_keyed_by_the_port_served() {
    // As linkerd2-proxy's (and now Remora's) inbound writes them: no `authority`.
    let inbound = |addr: &str, route: &str, n: u64| {
        format!(
            "response_total{{direction=\"inbound\",target_addr=\"{addr}\",target_ip=\"10.0.0.5\",\
             target_port=\"8080\",tls=\"true\",client_id=\"a.ns\",srv_name=\"web-http\",\
             route_name=\"{route}\",status_code=\"200\",classification=\"success\"}} {n}\n"
        )
    };
    let before = inbound("10.0.0.5:8080", "default", 0)
        + &inbound("10.0.0.5:8080", "admin", 0)
        + &inbound("10.0.0.5:9090", "default", 0);
    let after = inbound("10.0.0.5:8080", "default", 6)
        + &inbound("10.0.0.5:8080", "admin", 2)
        + &inbound("10.0.0.5:9090", "default", 4);
    let got: Vec<(String, f64)> = rows(&before, &after, 2, ALL)
        .into_iter()
        .map(|r| (r.key.authority, r.rps))
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.5:8080".to_string(), 4.0),
            ("10.0.0.5:9090".to_string(), 2.0)
        ]
    );
}
