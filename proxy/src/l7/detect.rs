//! Protocol detection: an HTTP/1.x request line or the HTTP/2 connection preface at the start
//! of a connection, decided on buffered bytes that are replayed afterwards.

/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A request line longer than this is not taken for HTTP (hyper would refuse it anyway).
const MAX_REQUEST_LINE: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    NeedMore,
    Http(Protocol),
    NotHttp,
}

/// Classifies the first bytes of a connection.
pub fn detect(buf: &[u8]) -> Detected {
    if buf.is_empty() {
        return Detected::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detected::Http(Protocol::Http2)
        } else {
            Detected::NeedMore
        };
    }
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_REQUEST_LINE || !plausible_prefix(buf) {
            Detected::NotHttp
        } else {
            Detected::NeedMore
        };
    };
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if is_request_line(line) {
        Detected::Http(Protocol::Http1)
    } else {
        Detected::NotHttp
    }
}

/// Whether `buf` (no newline yet) can still become a request line: a method, then maybe more.
fn plausible_prefix(buf: &[u8]) -> bool {
    let method_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    method_end > 0
        && method_end <= 20
        && is_method(&buf[..method_end])
        && buf[method_end..].iter().all(|&b| b >= 0x20 && b != 0x7f)
}

/// Methods are tokens; every registered one is upper case, and requiring that lets lower-case
/// protocols ("ping", "+OK", ...) be told from HTTP at their first byte instead of waiting for
/// the detection timeout.
fn is_method(m: &[u8]) -> bool {
    m.iter()
        .all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// `METHOD SP request-target SP HTTP/1.x`.
fn is_request_line(line: &[u8]) -> bool {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && is_method(method)
        && !target.is_empty()
        && target.iter().all(|&b| b > 0x20 && b != 0x7f)
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// The most of a first HTTP/1 request head read ahead to check it.
const MAX_HEAD: usize = 64 * 1024;

/// Whether detection is done with `buf`: the protocol is decided and, for HTTP/1, the first
/// request head is complete (so it can be checked before hyper sees it).
fn settled(buf: &[u8]) -> bool {
    match detect(buf) {
        Detected::NeedMore => false,
        Detected::Http(Protocol::Http1) => buf.windows(4).any(|w| w == b"\r\n\r\n"),
        _ => true,
    }
}

/// Reads the first bytes of `io` (within `timeout`) and decides whether they are HTTP; for
/// HTTP/1 the first request head is read whole (up to 64 KiB). Returns the protocol, if any,
/// and the bytes read, to be replayed.
pub async fn read<T: tokio::io::AsyncRead + Unpin>(
    io: &mut T,
    timeout: std::time::Duration,
) -> std::io::Result<(Option<Protocol>, bytes::Bytes)> {
    let prefix = crate::io::read_prefix(io, MAX_HEAD, timeout, settled).await?;
    let protocol = match detect(&prefix) {
        Detected::Http(p) => Some(p),
        _ => None,
    };
    Ok((protocol, prefix))
}

/// Whether the first request head in `buf` carries both `Content-Length` and
/// `Transfer-Encoding`: a request-smuggling attempt, refused with 400 rather than re-framed.
pub fn ambiguous_length(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(buf), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let has = |name: &str| {
        req.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    has("content-length") && has("transfer-encoding")
}

/// The raw 400 answer to an ambiguous request, before closing.
pub const AMBIGUOUS_LENGTH_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nl5d-proxy-error: both content-length and transfer-encoding\r\ncontent-length: 54\r\nconnection: close\r\n\r\nrequest has both content-length and transfer-encoding\n";

/// The raw 400 answer to a connection to the outbound listener itself (explicit mode) that does
/// not open with an HTTP request.
pub const EXPLICIT_NOT_HTTP_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nl5d-proxy-error: explicit proxy connections must speak HTTP\r\ncontent-length: 87\r\nconnection: close\r\n\r\nthis is an HTTP proxy: send an absolute-form request or CONNECT host:port (see README)\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http1_and_http2() {
        assert_eq!(
            detect(b"GET / HTTP/1.1\r\nhost: x\r\n"),
            Detected::Http(Protocol::Http1)
        );
        assert_eq!(
            detect(b"POST http://a.b:80/x HTTP/1.0\r\n"),
            Detected::Http(Protocol::Http1)
        );
        assert_eq!(
            detect(b"CONNECT a.b:443 HTTP/1.1\r\n"),
            Detected::Http(Protocol::Http1)
        );
        assert_eq!(detect(H2_PREFACE), Detected::Http(Protocol::Http2));
        for cut in 1..H2_PREFACE.len() {
            assert_eq!(detect(&H2_PREFACE[..cut]), Detected::NeedMore, "{cut}");
        }
        assert_eq!(detect(b"GET / HT"), Detected::NeedMore);
    }

    #[test]
    fn other_protocols() {
        for p in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"SSH-2.0-OpenSSH_9.0\r\n",
            b"+OK POP3 ready\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET  HTTP/1.1\r\n",
            b"\x00\x00\x00\x08",
            b"PRI * HTTP/2.0\r\n\r\nXX",
            b"ping",
            b"get / HTTP/1.1\r\n",
        ] {
            assert_eq!(detect(p), Detected::NotHttp, "{p:?}");
        }
        assert_eq!(detect(&[b'A'; MAX_REQUEST_LINE]), Detected::NotHttp);
    }

    #[test]
    fn smuggling_is_spotted() {
        assert!(ambiguous_length(
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
        assert!(!ambiguous_length(
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n"
        ));
        assert!(!ambiguous_length(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
        assert!(!ambiguous_length(
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\n"
        ));
        let body = &AMBIGUOUS_LENGTH_RESPONSE[AMBIGUOUS_LENGTH_RESPONSE
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4..];
        assert_eq!(body.len(), 54);
    }

    #[test]
    fn explicit_not_http_response_is_well_framed() {
        let r = EXPLICIT_NOT_HTTP_RESPONSE;
        let end = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(r.len() - end, 87);
        assert!(r.starts_with(b"HTTP/1.1 400 "));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = detect(&bytes);
        }
    }
}
