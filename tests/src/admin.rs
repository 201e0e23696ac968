//! A tiny HTTP/1.1 client for the proxies' admin endpoints, and a reader of Prometheus text.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request (`Connection: close`) and returns the status and the body.
pub async fn request(stream: TcpStream, method: &str, path: &str) -> io::Result<(u16, String)> {
    request_with_body(stream, method, path, b"").await
}

/// Sends one request with `body` (`Connection: close`) and returns the status and the body.
pub async fn request_with_body(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    body: &[u8],
) -> io::Result<(u16, String)> {
    let len = body.len();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(&[head.as_bytes(), body].concat()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "admin response timed out"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// A scrape of `/metrics`.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub text: String,
}

impl Metrics {
    /// Sum of the values of every series of `name` whose labels include all of `labels`
    /// (0 when there is none).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name)
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Every series of `name`: its labels and value.
    pub fn series<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
        self.text.lines().filter_map(move |line| {
            if line.starts_with('#') {
                return None;
            }
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
                None => (series, Vec::new()),
            };
            (n == name).then_some((labels, value))
        })
    }
}

impl Metrics {
    /// Checks the exposition: every line parses with `prometheus-parse` (a parser not our own),
    /// and the OpenMetrics structure holds: each sample belongs to a family declared by a
    /// `# TYPE` line, counters' samples end in `_total`, no series appears twice, each
    /// histogram's buckets are cumulative with `le="+Inf"` equal to its `_count`, and the text
    /// ends with `# EOF`.
    pub fn validate(&self) -> Result<(), String> {
        if self.text.lines().last() != Some("# EOF") {
            return Err("no # EOF at the end".into());
        }
        let mut types = std::collections::HashMap::new();
        for line in self.text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("bad line {line:?}"))?;
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(format!("family {name} declared twice"));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        // Per histogram series: its (le, cumulative count) buckets and its _count.
        type Buckets = (Vec<(f64, f64)>, Option<f64>);
        let mut histograms: std::collections::BTreeMap<String, Buckets> = Default::default();
        for line in self.text.lines().filter(|l| !l.starts_with('#')) {
            // Each sample line on its own through the independent parser.
            let one = prometheus_parse::Scrape::parse(std::iter::once(Ok(line.to_string())))
                .map_err(|e| format!("{line:?}: {e}"))?;
            let [sample] = one.samples.as_slice() else {
                return Err(format!("{line:?} is not one sample"));
            };
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return Err(format!("{line:?}: unexpected value")),
            };
            let (series, _) = line.rsplit_once(' ').ok_or(format!("bad line {line:?}"))?;
            if let Some((_, labels)) = series.split_once('{')
                && labels
                    .strip_suffix('}')
                    .and_then(parse_labels)
                    .is_none_or(|l| l.len() != sample.labels.len())
            {
                return Err(format!("{line:?}: malformed labels"));
            }
            if !seen.insert(series.to_string()) {
                return Err(format!("series twice: {series}"));
            }
            let name = sample.metric.as_str();
            let family = types
                .keys()
                .find(|f| {
                    name == f.as_str()
                        || ["_total", "_bucket", "_sum", "_count", "_created"]
                            .iter()
                            .any(|suffix| name.strip_suffix(suffix) == Some(f.as_str()))
                })
                .ok_or(format!("{name} has no # TYPE"))?;
            match types[family].as_str() {
                "counter" if !name.ends_with("_total") => {
                    return Err(format!("counter sample {name} lacks _total"));
                }
                "histogram" => {
                    let mut labels: Vec<(String, String)> = sample
                        .labels
                        .iter()
                        .filter(|(k, _)| k.as_str() != "le")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    labels.sort();
                    let h = histograms.entry(format!("{family}{labels:?}")).or_default();
                    if name.ends_with("_bucket") {
                        let le = sample.labels.get("le").ok_or("a bucket without le")?;
                        let le: f64 = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().map_err(|_| format!("bad le {le}"))?
                        };
                        h.0.push((le, value));
                    } else if name.ends_with("_count") {
                        h.1 = Some(value);
                    }
                }
                _ => {}
            }
        }
        for (key, (buckets, count)) in histograms {
            let cumulative = buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            if !cumulative || inf.is_none() || inf != count {
                return Err(format!(
                    "histogram {key}: buckets {buckets:?}, count {count:?}"
                ));
            }
        }
        Ok(())
    }
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series() {
        let m = Metrics {
            text: "# HELP x\ntcp_open_total{direction=\"inbound\",peer=\"src\"} 3\n\
                   tcp_open_total{direction=\"outbound\",peer=\"src\"} 4\nup 1\n"
                .into(),
        };
        assert_eq!(m.get("tcp_open_total", &[]), 7.0);
        assert_eq!(m.get("tcp_open_total", &[("direction", "inbound")]), 3.0);
        assert_eq!(m.get("up", &[]), 1.0);
        assert_eq!(m.get("missing", &[]), 0.0);
    }

    #[test]
    fn validation_catches_broken_expositions() {
        let good = "# TYPE a counter\na_total{x=\"1\"} 1\n# TYPE h histogram\n\
                    h_sum 3.0\nh_count 2\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\n# EOF";
        let v = |t: &str| Metrics { text: t.into() }.validate();
        assert_eq!(v(good), Ok(()));
        for (what, bad) in [
            ("no EOF", good.trim_end_matches("# EOF")),
            ("counter without _total", &*good.replace("a_total", "a")),
            (
                "duplicate",
                &*good.replace("a_total{x=\"1\"} 1", "a_total 1\na_total 2"),
            ),
            ("count mismatch", &*good.replace("h_count 2", "h_count 3")),
            (
                "not cumulative",
                &*good.replace("h_bucket{le=\"1.0\"} 1", "h_bucket{le=\"1.0\"} 5"),
            ),
            ("untyped family", &*good.replace("# TYPE a counter\n", "")),
            (
                "garbage",
                &*good.replace("a_total{x=\"1\"} 1", "a_total{x=\"1} 1"),
            ),
        ] {
            assert!(v(bad).is_err(), "{what} passed:\n{bad}");
        }
    }
}
