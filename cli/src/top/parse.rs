//! A small parser of the Prometheus text exposition format (and the OpenMetrics subset proxies
//! write): one sample per line, `name{label="value",...} value [timestamp]`. Comments (`# HELP`,
//! `# TYPE`, `# EOF`) and blank lines are skipped; a line that is not a sample yields an error
//! for that line alone, so one bad line never hides the others.

use std::fmt;

/// One sample: a metric name, its labels in the order written, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why line `line` (1-based) is not a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses `text` line by line: a sample or an error per line that is neither blank nor a
/// comment. Never panics, whatever the input.
pub fn parse(text: &str) -> impl Iterator<Item = Result<Sample, LineError>> + '_ {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        Some(parse_line(line).map_err(|reason| LineError {
            line: i + 1,
            reason,
        }))
    })
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let mut cur = Cursor { s: line, pos: 0 };
    let name = cur.name(true).ok_or("expected a metric name")?;
    cur.skip_spaces();
    let labels = if cur.eat(b'{') {
        cur.labels()?
    } else {
        Vec::new()
    };
    let mut rest = cur.rest().split_ascii_whitespace();
    let value = rest.next().ok_or("expected a value")?;
    let value = parse_value(value).ok_or("the value is not a number")?;
    if let Some(ts) = rest.next()
        && ts.parse::<f64>().is_err()
    {
        return Err("the timestamp is not a number");
    }
    if rest.next().is_some() {
        return Err("unexpected text after the value");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A sample value: a float, `+Inf`, `-Inf` or `NaN` (Rust's float syntax accepts all of them,
/// case-insensitively).
fn parse_value(s: &str) -> Option<f64> {
    s.parse().ok()
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    /// A metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or, without `colons`, a label name.
    fn name(&mut self, colons: bool) -> Option<&'a str> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || (colons && b == b':')
                || (self.pos > start && b.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start)
            .then(|| self.s.get(start..self.pos))
            .flatten()
    }

    /// The labels after `{`, through the closing `}` (a trailing comma is allowed).
    fn labels(&mut self) -> Result<Vec<(String, String)>, &'static str> {
        let mut labels = Vec::new();
        loop {
            self.skip_spaces();
            if self.eat(b'}') {
                return Ok(labels);
            }
            let name = self.name(false).ok_or("expected a label name")?;
            self.skip_spaces();
            if !self.eat(b'=') {
                return Err("expected = after a label name");
            }
            self.skip_spaces();
            if !self.eat(b'"') {
                return Err("expected a quoted label value");
            }
            labels.push((name.to_string(), self.quoted()?));
            self.skip_spaces();
            if !self.eat(b',') {
                self.skip_spaces();
                return if self.eat(b'}') {
                    Ok(labels)
                } else {
                    Err("expected , or } after a label")
                };
            }
        }
    }

    /// A label value after its opening quote, through the closing one, unescaping `\\`, `\"`
    /// and `\n`; any other escaped character is kept as written.
    fn quoted(&mut self) -> Result<String, &'static str> {
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err("unterminated label value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str) -> (Vec<Sample>, Vec<LineError>) {
        let (mut ok, mut err) = (Vec::new(), Vec::new());
        for r in parse(text) {
            match r {
                Ok(s) => ok.push(s),
                Err(e) => err.push(e),
            }
        }
        (ok, err)
    }

    #[test]
    fn samples_with_escapes_comments_and_special_values() {
        let text = "# HELP request_total Total requests.\n\
                    # TYPE request_total counter\n\
                    \n\
                    request_total{direction=\"outbound\",authority=\"a\\\"b\\\\c\\nd\"} 10\n\
                    response_latency_ms_bucket{le=\"+Inf\", x = \"y\" ,} 3.5e2 1700000000000\n\
                    plain 7\r\n\
                    nan_value{} NaN\n\
                    neg -Inf\n\
                    brace{v=\"}{,=\"} 1\n\
                    utf8{v=\"héllo ✓\"} 2\n\
                    # EOF\n";
        let (ok, err) = samples(text);
        assert_eq!(err, vec![]);
        assert_eq!(ok.len(), 7);
        assert_eq!(ok[0].name, "request_total");
        assert_eq!(ok[0].label("authority"), Some("a\"b\\c\nd"));
        assert_eq!(ok[0].label("direction"), Some("outbound"));
        assert_eq!(ok[0].value, 10.0);
        assert_eq!(ok[1].label("le"), Some("+Inf"));
        assert_eq!(ok[1].label("x"), Some("y"));
        assert_eq!(ok[1].value, 350.0);
        assert_eq!((ok[2].name.as_str(), ok[2].value), ("plain", 7.0));
        assert!(ok[3].value.is_nan());
        assert_eq!(ok[4].value, f64::NEG_INFINITY);
        assert_eq!(ok[5].label("v"), Some("}{,="));
        assert_eq!(ok[6].label("v"), Some("héllo ✓"));
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
    }

    #[test]
    fn garbage_lines_are_reported_and_skipped() {
        let text = "good 1\n\
                    {nolabel=\"x\"} 1\n\
                    bad{x=\"unterminated} 1\n\
                    bad{x=1} 1\n\
                    bad{=\"x\"} 1\n\
                    bad{x=\"y\" 1\n\
                    bad{x=\"y\"}\n\
                    bad twelve\n\
                    bad 1 2 3\n\
                    bad 1 soon\n\
                    bad{x=\"\\\n\
                    \u{0}\u{ff}\\\"{}\n\
                    also_good{a=\"b\"} 2\n";
        let (ok, err) = samples(text);
        assert_eq!(ok.len(), 2, "{ok:?}");
        assert_eq!(
            (ok[0].name.as_str(), ok[1].name.as_str()),
            ("good", "also_good")
        );
        let lines: Vec<usize> = err.iter().map(|e| e.line).collect();
        assert_eq!(lines, (2..=12).collect::<Vec<_>>(), "{err:?}");
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let alphabet = b"ab_:{}=\",\\ n\t#+-.0123456789eInfNa\n";
        for _ in 0..2_000 {
            let text: String = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(alphabet[(seed % alphabet.len() as u64) as usize])
                })
                .collect();
            let _ = parse(&text).count();
        }
    }
}
