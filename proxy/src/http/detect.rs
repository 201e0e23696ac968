//! Protocol detection: an HTTP/1.x request line or the HTTP/2 connection preface at the start
//! of a connection, decided on buffered bytes that are replayed afterwards. A first HTTP/1 head
//! that would let a request be smuggled (both `Content-Length` and `Transfer-Encoding`) is
//! answered 400 here and the connection refused, so no caller can forget the check.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

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
    // As long as a line without its newline would have been judged (below): a decided prefix
    // stays decided.
    if end >= MAX_REQUEST_LINE {
        return Detected::NotHttp;
    }
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if is_request_line(line) {
        Detected::Http(Protocol::Http1)
    } else {
        Detected::NotHttp
    }
}

/// Whether `buf` (no newline yet) can still become a request line: a method, then maybe more,
/// possibly ending with the line's `\r` (its `\n` in the next segment).
fn plausible_prefix(buf: &[u8]) -> bool {
    let buf = buf.strip_suffix(b"\r").unwrap_or(buf);
    let method_end = buf.iter().position(|&b| b == b' ').unwrap_or(buf.len());
    method_end > 0
        && method_end <= MAX_METHOD
        && is_method(&buf[..method_end])
        && buf[method_end..].iter().all(|&b| b >= 0x20 && b != 0x7f)
}

/// The longest method taken for HTTP (the longest registered one has 17 characters).
const MAX_METHOD: usize = 20;

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
        && method.len() <= MAX_METHOD
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

/// Why detection ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("connection failed during detection: {0}")]
    Io(#[from] std::io::Error),
    /// The first request head has both `Content-Length` and `Transfer-Encoding`: it was
    /// answered 400; close the connection.
    #[error("request with both content-length and transfer-encoding; answered 400")]
    AmbiguousLength,
}

/// Reads the first bytes of `io` (within `timeout`) and decides whether they are HTTP; for
/// HTTP/1 the first request head is read whole (up to 64 KiB) and refused with 400 when its
/// framing is ambiguous. Returns the protocol, if any, and the bytes read, to be replayed.
pub async fn read<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    timeout: std::time::Duration,
) -> Result<(Option<Protocol>, bytes::Bytes), DetectError> {
    let prefix = crate::transport::io::read_prefix(io, MAX_HEAD, timeout, settled).await?;
    let protocol = match detect(&prefix) {
        Detected::Http(p) => Some(p),
        _ => None,
    };
    if protocol == Some(Protocol::Http1) && ambiguous_length(&prefix) {
        let _ = io.write_all(AMBIGUOUS_LENGTH_RESPONSE).await;
        let _ = io.shutdown().await;
        return Err(DetectError::AmbiguousLength);
    }
    Ok((protocol, prefix))
}

/// Whether the first request head in `buf` carries both `Content-Length` and
/// `Transfer-Encoding`: a request-smuggling attempt, refused with 400 rather than re-framed.
fn ambiguous_length(buf: &[u8]) -> bool {
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
const AMBIGUOUS_LENGTH_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nl5d-proxy-error: both content-length and transfer-encoding\r\ncontent-length: 54\r\nconnection: close\r\n\r\nrequest has both content-length and transfer-encoding\n";

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
    fn every_prefix_of_a_request_line_needs_more() {
        // Found by the http_detect fuzz target: a segment ending between the request line's
        // `\r` and `\n` was taken for "not HTTP".
        let head = b"GET /echo HTTP/1.1\r\nhost: web\r\n\r\n";
        let line_end = head.iter().position(|&b| b == b'\n').unwrap();
        for cut in 1..=line_end {
            assert_eq!(detect(&head[..cut]), Detected::NeedMore, "cut at {cut}");
        }
        assert_eq!(detect(head), Detected::Http(Protocol::Http1));
        // A `\r` anywhere else is still not HTTP.
        assert_eq!(detect(b"GET /\r"), Detected::NeedMore);
        assert_eq!(detect(b"GET /\rx"), Detected::NotHttp);
    }

    #[test]
    fn what_a_prefix_refuses_the_whole_line_refuses_too() {
        // Found by the http_detect fuzz target: a method too long for a prefix, and a request
        // line too long for a prefix, were HTTP once their newline arrived.
        let long_method = format!("{} / HTTP/1.1\r\n", "O".repeat(MAX_METHOD + 1));
        assert_eq!(detect(long_method.as_bytes()), Detected::NotHttp);
        assert_eq!(
            detect(&long_method.as_bytes()[..MAX_METHOD + 1]),
            Detected::NotHttp
        );
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(detect(long_line.as_bytes()), Detected::NotHttp);
        assert_eq!(
            detect(&long_line.as_bytes()[..MAX_REQUEST_LINE]),
            Detected::NotHttp
        );
        let just_fits = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE - 20));
        assert_eq!(
            detect(just_fits.as_bytes()),
            Detected::Http(Protocol::Http1)
        );
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

    #[tokio::test]
    async fn an_ambiguous_first_head_is_answered_400_and_refused() {
        use tokio::io::AsyncReadExt;
        let (mut client, mut server) = tokio::io::duplex(4096);
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let res = read(&mut server, std::time::Duration::from_secs(5)).await;
        assert!(matches!(res, Err(DetectError::AmbiguousLength)), "{res:?}");
        drop(server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");
    }

    #[tokio::test]
    async fn a_clean_head_is_detected_and_kept_for_replay() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let head = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n";
        client.write_all(head).await.unwrap();
        let (p, prefix) = read(&mut server, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p, Some(Protocol::Http1));
        assert_eq!(&prefix[..], head);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = detect(&bytes);
        }
    }
}
