//! Trace context propagation: W3C Trace Context (`traceparent`; `tracestate` is passed on
//! untouched and recorded on the span) and B3 (the multi-header `x-b3-*` form and the single
//! `b3` header), read from a request and rewritten with the proxy's span as the parent of the
//! next hop, in the format the request came with.
//!
//! W3C is tried first, then B3's single header, then B3's multiple headers, as
//! linkerd2-proxy does (`linkerd/trace-context/src/propagation.rs` in its tree). A malformed
//! header is no context: the request passes untouched. Nothing here allocates except the
//! rewritten header values.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The propagation format a context came in (and goes out in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// The parent's sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampled {
    Yes,
    No,
    /// B3 without a decision: the receiver decides (the proxy's own sampling applies).
    Defer,
}

/// A trace context read from a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub format: Format,
    pub trace_id: [u8; 16],
    /// The caller's span: the parent of the proxy's.
    pub parent: [u8; 8],
    /// W3C's trace flags (bit 0: sampled); other bits are passed on.
    pub flags: u8,
    pub sampled: Sampled,
}

/// The trace context of a request, if it carries a valid one.
pub fn extract(headers: &HeaderMap) -> Option<Context> {
    if let Some(v) = single(headers, &TRACEPARENT) {
        return w3c(v);
    }
    if let Some(v) = single(headers, &B3) {
        return b3_single(v);
    }
    b3_multi(headers)
}

/// The value of `name` when it appears exactly once (a repeated `traceparent` is invalid).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    Some(first.as_bytes())
}

/// `version-traceid-parentid-flags`, version `00` exactly 55 bytes; a later version may append
/// fields after a `-` (W3C Trace Context, "Versioning of traceparent").
fn w3c(v: &[u8]) -> Option<Context> {
    let v = trim(v);
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_u8(&v[0..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = hex_array::<16>(&v[3..35])?;
    let parent = hex_array::<8>(&v[36..52])?;
    let flags = hex_u8(&v[53..55])?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some(Context {
        format: Format::W3c,
        trace_id,
        parent,
        flags,
        sampled: if flags & 1 == 1 {
            Sampled::Yes
        } else {
            Sampled::No
        },
    })
}

/// `b3: traceid-spanid[-sampled[-parentspanid]]`. A decision alone (`b3: 0`) names no trace to
/// join and is treated as no context.
fn b3_single(v: &[u8]) -> Option<Context> {
    let v = trim(v);
    let mut parts = v.split(|b| *b == b'-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let parent = hex_array::<8>(parts.next()?)?;
    let sampled = match parts.next() {
        None => Sampled::Defer,
        Some(s) => b3_decision(s)?,
    };
    if parent == [0; 8] {
        return None;
    }
    Some(b3_context(Format::B3Single, trace_id, parent, sampled))
}

fn b3_multi(headers: &HeaderMap) -> Option<Context> {
    let trace_id = b3_trace_id(trim(headers.get(&B3_TRACE_ID)?.as_bytes()))?;
    let parent = hex_array::<8>(trim(headers.get(&B3_SPAN_ID)?.as_bytes()))?;
    if parent == [0; 8] {
        return None;
    }
    let debug = headers
        .get(&B3_FLAGS)
        .is_some_and(|f| trim(f.as_bytes()) == b"1");
    let sampled = match headers.get(&B3_SAMPLED) {
        _ if debug => Sampled::Yes,
        None => Sampled::Defer,
        Some(s) => b3_decision(trim(s.as_bytes()))?,
    };
    Some(b3_context(Format::B3Multi, trace_id, parent, sampled))
}

fn b3_context(format: Format, trace_id: [u8; 16], parent: [u8; 8], sampled: Sampled) -> Context {
    Context {
        format,
        trace_id,
        parent,
        flags: u8::from(sampled == Sampled::Yes),
        sampled,
    }
}

/// B3's trace id: 64 or 128 bits (a 64-bit id is the low half of a 128-bit one).
fn b3_trace_id(v: &[u8]) -> Option<[u8; 16]> {
    let id = match v.len() {
        32 => hex_array::<16>(v)?,
        16 => {
            let low = hex_array::<8>(v)?;
            let mut id = [0; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn b3_decision(v: &[u8]) -> Option<Sampled> {
    match v {
        b"1" | b"d" | b"true" => Some(Sampled::Yes),
        b"0" | b"false" => Some(Sampled::No),
        _ => None,
    }
}

/// Rewrites the request's context with `span` as the next hop's parent and `sampled` as the
/// decision, in the context's own format.
pub fn inject(headers: &mut HeaderMap, ctx: &Context, span: [u8; 8], sampled: bool) {
    match ctx.format {
        Format::W3c => {
            let flags = (ctx.flags & !1) | u8::from(sampled);
            headers.insert(&TRACEPARENT, traceparent(&ctx.trace_id, &span, flags));
        }
        Format::B3Single => {
            let mut buf = [0u8; 32 + 1 + 16 + 2 + 1 + 16];
            let mut n = put_hex(&mut buf, 0, &ctx.trace_id);
            buf[n] = b'-';
            n = put_hex(&mut buf, n + 1, &span);
            buf[n] = b'-';
            buf[n + 1] = if sampled { b'1' } else { b'0' };
            buf[n + 2] = b'-';
            n = put_hex(&mut buf, n + 3, &ctx.parent);
            if let Ok(v) = HeaderValue::from_bytes(&buf[..n]) {
                headers.insert(&B3, v);
            }
        }
        Format::B3Multi => {
            let mut buf = [0u8; 16];
            put_hex(&mut buf, 0, &span);
            if let Ok(v) = HeaderValue::from_bytes(&buf) {
                headers.insert(&B3_SPAN_ID, v);
            }
            put_hex(&mut buf, 0, &ctx.parent);
            if let Ok(v) = HeaderValue::from_bytes(&buf) {
                headers.insert(&B3_PARENT_SPAN_ID, v);
            }
            if !headers.contains_key(&B3_FLAGS) {
                headers.insert(
                    &B3_SAMPLED,
                    HeaderValue::from_static(if sampled { "1" } else { "0" }),
                );
            }
        }
    }
}

/// Starts a trace on a request that had none: a W3C `traceparent`, sampled.
pub fn inject_new(headers: &mut HeaderMap, trace_id: &[u8; 16], span: &[u8; 8]) {
    headers.insert(&TRACEPARENT, traceparent(trace_id, span, 1));
}

fn traceparent(trace_id: &[u8; 16], span: &[u8; 8], flags: u8) -> HeaderValue {
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    let mut n = put_hex(&mut buf, 3, trace_id);
    buf[n] = b'-';
    n = put_hex(&mut buf, n + 1, span);
    buf[n] = b'-';
    put_hex(&mut buf, n + 1, &[flags]);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Writes `bytes` as lowercase hex into `buf` from `at`; returns the end.
pub fn put_hex(buf: &mut [u8], at: usize, bytes: &[u8]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = at;
    for b in bytes {
        if let Some(pair) = buf.get_mut(i..i + 2) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        i += 2;
    }
    i.min(buf.len())
}

/// Lowercase hex of `bytes` (for logs and the demo).
pub fn hex(bytes: &[u8]) -> String {
    let mut buf = vec![0u8; bytes.len() * 2];
    put_hex(&mut buf, 0, bytes);
    String::from_utf8(buf).unwrap_or_default()
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_u8(v: &[u8]) -> Option<u8> {
    match v {
        [h, l] => Some(nibble(*h)? << 4 | nibble(*l)?),
        _ => None,
    }
}

fn hex_array<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(v.chunks_exact(2)) {
        *o = hex_u8(pair)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn w3c_is_read_and_rewritten_as_a_child() {
        let mut h = headers(&[("traceparent", TP), ("tracestate", "a=b")]);
        let ctx = extract(&h).unwrap();
        assert_eq!(ctx.format, Format::W3c);
        assert_eq!(hex(&ctx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&ctx.parent), "00f067aa0ba902b7");
        assert_eq!(ctx.sampled, Sampled::Yes);
        inject(&mut h, &ctx, [1, 2, 3, 4, 5, 6, 7, 8], true);
        assert_eq!(
            h.get(&TRACEPARENT).unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
        assert_eq!(
            h.get(&TRACESTATE).unwrap(),
            "a=b",
            "tracestate passes untouched"
        );
    }

    #[test]
    fn unsampled_w3c_keeps_its_decision() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let ctx = extract(&headers(&[("traceparent", tp)])).unwrap();
        assert_eq!(ctx.sampled, Sampled::No);
    }

    #[test]
    fn bad_w3c_is_no_context() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(extract(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
        // A later version may carry more fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(extract(&headers(&[("traceparent", v1)])).is_some());
        // Two traceparent headers are invalid.
        assert_eq!(
            extract(&headers(&[("traceparent", TP), ("traceparent", TP)])),
            None
        );
    }

    #[test]
    fn b3_multi_and_single() {
        let mut h = headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ]);
        let ctx = extract(&h).unwrap();
        assert_eq!(ctx.format, Format::B3Multi);
        assert_eq!(ctx.sampled, Sampled::Yes);
        inject(&mut h, &ctx, [0xaa; 8], true);
        assert_eq!(h.get(&B3_SPAN_ID).unwrap(), "aaaaaaaaaaaaaaaa");
        assert_eq!(h.get(&B3_PARENT_SPAN_ID).unwrap(), "00f067aa0ba902b7");
        assert_eq!(
            h.get(&B3_TRACE_ID).unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        let short = headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]);
        let ctx = extract(&short).unwrap();
        assert_eq!(hex(&ctx.trace_id), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(ctx.sampled, Sampled::Defer);

        let mut single = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0")]);
        let ctx = extract(&single).unwrap();
        assert_eq!((ctx.format, ctx.sampled), (Format::B3Single, Sampled::No));
        inject(&mut single, &ctx, [0xbb; 8], false);
        assert_eq!(
            single.get(&B3).unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736-bbbbbbbbbbbbbbbb-0-00f067aa0ba902b7"
        );
        assert_eq!(extract(&headers(&[("b3", "0")])), None);
        assert_eq!(extract(&headers(&[("b3", "x-y")])), None);
    }

    #[test]
    fn w3c_wins_over_b3() {
        let h = headers(&[
            ("traceparent", TP),
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]);
        assert_eq!(extract(&h).unwrap().format, Format::W3c);
    }

    #[test]
    fn new_traces_are_w3c_and_sampled() {
        let mut h = HeaderMap::new();
        inject_new(&mut h, &[0x11; 16], &[0x22; 8]);
        let ctx = extract(&h).unwrap();
        assert_eq!(ctx.trace_id, [0x11; 16]);
        assert_eq!(ctx.parent, [0x22; 8]);
        assert_eq!(ctx.sampled, Sampled::Yes);
    }
}
