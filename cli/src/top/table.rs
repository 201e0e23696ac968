//! The table `top` prints: a header line, then one row per line, columns separated by spaces.
//! Every cell is one word (label values have their whitespace and control characters replaced),
//! so scripts can split lines on whitespace.

use std::time::Duration;

use super::stats::Row;

/// Renders `rows` with a header line; the CALLER column only `by_caller`.
pub fn render(rows: &[Row], by_caller: bool) -> String {
    let mut header = vec!["DIRECTION", "AUTHORITY"];
    if by_caller {
        header.push("CALLER");
    }
    header.extend(["RPS", "SUCCESS", "P50", "P95", "P99", "MTLS"]);
    // Text columns are left-aligned, numbers right-aligned.
    let text_columns = header.len() - 6;
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let mut line = vec![cell(&row.key.direction), cell(&row.key.authority)];
        if let Some(caller) = row.key.caller.as_deref().filter(|_| by_caller) {
            line.push(cell(caller));
        }
        line.extend([
            format!("{:.1}", row.rps),
            percent(row.success),
            millis(row.p50),
            millis(row.p95),
            millis(row.p99),
            percent(row.mtls),
        ]);
        lines.push(line);
    }
    let mut widths = vec![0; header.len()];
    for line in &lines {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| match i < text_columns {
                true => format!("{c:<w$}"),
                false => format!("{c:>w$}"),
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The line under the table for a proxy that did not answer.
pub fn stale_line(url: &str, error: &str, last_seen: Option<Duration>) -> String {
    let seen = match last_seen {
        Some(ago) => format!("last seen {}s ago", ago.as_secs()),
        None => "never seen".to_string(),
    };
    format!("stale: {url} ({}, {seen})", one_line(error))
}

/// A label value as one printable word: `-` when empty.
fn cell(s: &str) -> String {
    if s.is_empty() {
        return "-".to_string();
    }
    s.chars()
        .map(|c| match c.is_whitespace() || c.is_control() {
            true => '_',
            false => c,
        })
        .collect()
}

/// Text on one line without control characters (an error message may quote a peer's bytes).
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_string(), |s| format!("{:.1}%", s * 100.0))
}

fn millis(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::stats::RowKey;

    fn row(authority: &str, caller: Option<&str>, rps: f64) -> Row {
        Row {
            key: RowKey {
                direction: "inbound".into(),
                authority: authority.into(),
                caller: caller.map(Into::into),
            },
            rps,
            responses: rps,
            success: Some(0.9),
            mtls: None,
            p50: Some(7.5),
            p95: None,
            p99: Some(190.0),
        }
    }

    #[test]
    fn one_word_per_cell_and_a_header() {
        let rows = [
            row("web.shop:8080", Some("a.b"), 1234.56),
            row("we ird\x1b[2J", Some(""), 0.0),
        ];
        let out = render(&rows, true);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            vec![
                vec![
                    "DIRECTION",
                    "AUTHORITY",
                    "CALLER",
                    "RPS",
                    "SUCCESS",
                    "P50",
                    "P95",
                    "P99",
                    "MTLS"
                ],
                vec![
                    "inbound",
                    "web.shop:8080",
                    "a.b",
                    "1234.6",
                    "90.0%",
                    "7.5",
                    "-",
                    "190.0",
                    "-"
                ],
                vec![
                    "inbound",
                    "we_ird_[2J",
                    "-",
                    "0.0",
                    "90.0%",
                    "7.5",
                    "-",
                    "190.0",
                    "-"
                ],
            ]
        );
        let plain = render(&rows[..1], false);
        let header: Vec<&str> = plain.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "DIRECTION",
                "AUTHORITY",
                "RPS",
                "SUCCESS",
                "P50",
                "P95",
                "P99",
                "MTLS"
            ]
        );
        assert!(!plain.contains("a.b"));
    }

    #[test]
    fn stale_lines() {
        assert_eq!(
            stale_line("http://h:1/metrics", "refused\nagain", None),
            "stale: http://h:1/metrics (refused again, never seen)"
        );
        assert_eq!(
            stale_line("u", "timed out", Some(Duration::from_millis(3_900))),
            "stale: u (timed out, last seen 3s ago)"
        );
    }
}
