//! The few pieces of Go's standard library whose exact behaviour shows through proxy-init's
//! command line and logs, redone here so that our binary reads arguments and prints values the
//! way the Go program does:
//!
//! - integer flags are read like `strconv.ParseInt(s, 0, 64)`: an optional sign, then a `0x`,
//!   `0o`, `0b` or bare `0` (octal) prefix, and `_` between digits;
//! - integer list items and port items are read like `strconv.Atoi`: base 10, optional sign,
//!   nothing else (no spaces);
//! - booleans accept exactly `1 t T TRUE true True 0 f F FALSE false False`;
//! - string-list flags split their value as one CSV record (quotes allowed, as in Go's
//!   `encoding/csv` with its default settings);
//! - [`quote`] is Go's `%q` (used in error messages and in logfmt values), [`json_string`] is
//!   Go's JSON string encoding (which escapes `<`, `>` and `&`).

use std::fmt::Write as _;

/// `%q` of a byte string: double-quoted, with Go's escapes. Bytes that are not UTF-8 become
/// `\xNN`.
pub fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if is_print(c) => out.push(c),
                c if (c as u32) < 0x10000 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// Close to Go's `unicode.IsPrint`: no control characters, no spaces but U+0020, and none of
/// the common invisible format characters.
fn is_print(c: char) -> bool {
    !(c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'))
}

/// A JSON string literal as Go's `encoding/json` writes it (HTML characters escaped, invalid
/// UTF-8 replaced by U+FFFD).
pub fn json_string(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                c if (c as u32) < 0x20
                    || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') =>
                {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            out.push_str("\\ufffd");
        }
    }
    out.push('"');
    out
}

fn num_error(func: &str, s: &str, range: bool) -> String {
    let what = if range {
        "value out of range"
    } else {
        "invalid syntax"
    };
    format!("strconv.{func}: parsing {}: {what}", quote(s.as_bytes()))
}

/// `strconv.ParseInt(s, 0, 64)`.
pub fn parse_int(s0: &str) -> Result<i64, String> {
    let syntax = || num_error("ParseInt", s0, false);
    let (negative, s) = match s0.as_bytes().first() {
        Some(b'-') => (true, &s0[1..]),
        Some(b'+') => (false, &s0[1..]),
        _ => (false, s0),
    };
    if s.is_empty() {
        return Err(syntax());
    }
    let b = s.as_bytes();
    let (base, digits) = if b[0] == b'0' && b.len() >= 3 && b[1].eq_ignore_ascii_case(&b'x') {
        (16, &s[2..])
    } else if b[0] == b'0' && b.len() >= 3 && b[1].eq_ignore_ascii_case(&b'o') {
        (8, &s[2..])
    } else if b[0] == b'0' && b.len() >= 3 && b[1].eq_ignore_ascii_case(&b'b') {
        (2, &s[2..])
    } else if b[0] == b'0' {
        (8, &s[1..])
    } else {
        (10, s)
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    let mut overflow = false;
    for c in digits.bytes() {
        if c == b'_' {
            underscores = true;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            b'A'..=b'Z' => c - b'A' + 10,
            _ => return Err(syntax()),
        };
        if u32::from(d) >= base {
            return Err(syntax());
        }
        match n
            .checked_mul(u64::from(base))
            .and_then(|n| n.checked_add(u64::from(d)))
        {
            Some(v) => n = v,
            None => overflow = true,
        }
    }
    if underscores && !underscore_ok(s0) {
        return Err(syntax());
    }
    let limit = if negative {
        1u64 << 63
    } else {
        (1u64 << 63) - 1
    };
    if overflow || n > limit {
        return Err(num_error("ParseInt", s0, true));
    }
    Ok(if negative {
        0i64.wrapping_sub_unsigned(n)
    } else {
        n as i64
    })
}

/// Go's rule for `_` in a base-0 number: only between digits, or between the base prefix and
/// a digit.
fn underscore_ok(s: &str) -> bool {
    let mut b = s.as_bytes();
    if let Some(b'-' | b'+') = b.first() {
        b = &b[1..];
    }
    // What was seen last: b'^' the start, b'0' a digit or prefix, b'_' an underscore, b'!'
    // anything else.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// `strconv.Atoi`: base 10 with an optional sign; Rust's `i64` parser accepts the same.
pub fn atoi(s: &str) -> Result<i64, String> {
    s.parse::<i64>().map_err(|e| {
        let range = matches!(
            e.kind(),
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
        );
        num_error("Atoi", s, range)
    })
}

/// `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(num_error("ParseBool", s, false)),
    }
}

/// A string-list flag's value: the empty string is the empty list, anything else is read as
/// the first record of a CSV document (Go's `encoding/csv` with its defaults: comma separator,
/// `"` quoting with `""` for a quote, no trimming, blank lines skipped, reading stops at the
/// end of the first record).
pub fn csv_record(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut lines = CsvLines::new(s);
    // Skip blank lines; none left means Go's io.EOF.
    let (mut line, mut line_no) = loop {
        match lines.next() {
            None => return Err("EOF".to_string()),
            Some((l, _)) if l == "\n" => continue,
            Some(l) => break l,
        }
    };
    let record_line = line_no;
    let err = |line: usize, col: usize, what: &str| {
        if line == record_line {
            format!("parse error on line {line}, column {col}: {what}")
        } else {
            format!(
                "record on line {record_line}; parse error on line {line}, column {col}: {what}"
            )
        }
    };
    const BARE: &str = "bare \" in non-quoted-field";
    const QUOTE: &str = "extraneous or missing \" in quoted-field";
    let mut fields = Vec::new();
    let mut col = 1;
    loop {
        if !line.starts_with('"') {
            let (field, rest) = match line.find(',') {
                Some(i) => (&line[..i], Some(&line[i + 1..])),
                None => (line.strip_suffix('\n').unwrap_or(&line), None),
            };
            if let Some(j) = field.find('"') {
                return Err(err(line_no, col + j, BARE));
            }
            fields.push(field.to_string());
            match rest {
                Some(rest) => {
                    col += field.len() + 1;
                    line = rest.to_string();
                }
                None => return Ok(fields),
            }
        } else {
            let mut field = String::new();
            line = line[1..].to_string();
            col += 1;
            loop {
                if let Some(i) = line.find('"') {
                    field.push_str(&line[..i]);
                    line = line[i + 1..].to_string();
                    col += i + 1;
                    if line.starts_with('"') {
                        field.push('"');
                        line = line[1..].to_string();
                        col += 1;
                    } else if line.starts_with(',') {
                        line = line[1..].to_string();
                        col += 1;
                        fields.push(field);
                        break;
                    } else if line.is_empty() || line == "\n" {
                        fields.push(field);
                        return Ok(fields);
                    } else {
                        return Err(err(line_no, col - 1, QUOTE));
                    }
                } else if !line.is_empty() {
                    // The quoted field goes on past the end of this line.
                    field.push_str(&line);
                    col += line.len();
                    match lines.next() {
                        Some((next, n)) => {
                            line = next;
                            line_no = n;
                            col = 1;
                        }
                        None => line = String::new(),
                    }
                } else {
                    return Err(err(line_no, col, QUOTE));
                }
            }
        }
    }
}

/// Lines of a CSV document as Go's reader sees them: each keeps its `\n`, `\r\n` becomes
/// `\n`, and a last line without a newline loses a trailing `\r`.
struct CsvLines<'a> {
    rest: &'a str,
    number: usize,
}

impl<'a> CsvLines<'a> {
    fn new(s: &'a str) -> Self {
        CsvLines { rest: s, number: 0 }
    }

    fn next(&mut self) -> Option<(String, usize)> {
        while !self.rest.is_empty() {
            self.number += 1;
            let (line, rest) = match self.rest.find('\n') {
                Some(i) => (&self.rest[..=i], &self.rest[i + 1..]),
                None => (self.rest, ""),
            };
            self.rest = rest;
            let line = if let Some(l) = line.strip_suffix("\r\n") {
                format!("{l}\n")
            } else if !line.ends_with('\n') {
                line.strip_suffix('\r').unwrap_or(line).to_string()
            } else {
                line.to_string()
            };
            if !line.is_empty() {
                return Some((line, self.number));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote(b"a b"), r#""a b""#);
        assert_eq!(quote(b"x\"y\\z\n\t\x01"), r#""x\"y\\z\n\t\x01""#);
        assert_eq!(quote("é".as_bytes()), "\"é\"");
        assert_eq!(quote(b"\xff"), r#""\xff""#);
        assert_eq!(quote("\u{a0}".as_bytes()), r#""\u00a0""#);
    }

    #[test]
    fn json_like_go() {
        assert_eq!(
            json_string(b"<a&b>\n\"\\"),
            r#""\u003ca\u0026b\u003e\n\"\\""#
        );
        assert_eq!(json_string(b"\x01\x08"), r#""\u0001\b""#);
        assert_eq!(json_string(b"ok\xff"), r#""ok\ufffd""#);
    }

    #[test]
    fn parse_int_is_base_zero() {
        assert_eq!(parse_int("4143"), Ok(4143));
        assert_eq!(parse_int("-1"), Ok(-1));
        assert_eq!(parse_int("+7"), Ok(7));
        assert_eq!(parse_int("0x102F"), Ok(4143));
        assert_eq!(parse_int("010"), Ok(8));
        assert_eq!(parse_int("0o17"), Ok(15));
        assert_eq!(parse_int("0b101"), Ok(5));
        assert_eq!(parse_int("0"), Ok(0));
        assert_eq!(parse_int("4_143"), Ok(4143));
        assert_eq!(parse_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(
            parse_int("abc"),
            Err(r#"strconv.ParseInt: parsing "abc": invalid syntax"#.to_string())
        );
        assert!(parse_int("").is_err());
        assert!(parse_int("08").is_err());
        assert!(parse_int("0x").is_err());
        assert!(parse_int(" 1").is_err());
        assert!(parse_int("_1").is_err());
        assert!(parse_int("1__2").is_err());
        assert!(parse_int("1_").is_err());
        assert_eq!(
            parse_int("9223372036854775808"),
            Err(r#"strconv.ParseInt: parsing "9223372036854775808": value out of range"#.into())
        );
    }

    #[test]
    fn atoi_and_bool() {
        assert_eq!(atoi("80"), Ok(80));
        assert_eq!(atoi("+80"), Ok(80));
        assert!(atoi(" 80").is_err());
        assert!(atoi("0x10").is_err());
        assert!(atoi("").is_err());
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert_eq!(
            parse_bool("no"),
            Err(r#"strconv.ParseBool: parsing "no": invalid syntax"#.to_string())
        );
    }

    #[test]
    fn csv_records() {
        let ok = |s: &str| csv_record(s).unwrap();
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok("4190,4191"), ["4190", "4191"]);
        assert_eq!(ok("a,,b"), ["a", "", "b"]);
        assert_eq!(ok(" a , b"), [" a ", " b"]);
        assert_eq!(ok("\"a,b\",c"), ["a,b", "c"]);
        assert_eq!(ok("\"a\"\"b\""), ["a\"b"]);
        assert_eq!(ok("a,b\nc,d"), ["a", "b"]);
        assert_eq!(ok("\n\na\r\n"), ["a"]);
        assert_eq!(ok("a,"), ["a", ""]);
        assert_eq!(ok("\"x\ny\",z"), ["x\ny", "z"]);
        assert_eq!(csv_record("\n"), Err("EOF".to_string()));
        assert_eq!(
            csv_record("ab\"c"),
            Err("parse error on line 1, column 3: bare \" in non-quoted-field".to_string())
        );
        assert_eq!(
            csv_record("a,\"b\"c"),
            Err("parse error on line 1, column 5: extraneous or missing \" in quoted-field".into())
        );
        assert!(csv_record("\"open").is_err());
    }
}
