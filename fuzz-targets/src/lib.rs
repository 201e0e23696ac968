//! The fuzz targets of every parser of untrusted or operator input, as plain functions: the
//! cargo-fuzz binaries in `fuzz/` call them with libFuzzer's inputs (nightly), and
//! `tests/corpora.rs` replays every committed corpus entry through them (stable, in
//! `cargo test --workspace`), so a fixed crash stays fixed.
//!
//! Each target must not panic on any input; where a parser has an invariant (a decoded header
//! re-encodes to itself, a decided detection stays decided), the target asserts it. `TARGETS`
//! names them for the replay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use prost::Message;

/// A target's body: one input, no panic.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("transport_header", transport_header),
    ("client_hello", client_hello),
    ("http_detect", http_detect),
    ("env_remora", env_remora),
    ("env_linkerd", env_linkerd),
    ("control_toml", control_toml),
    ("profile", profile),
    ("csr", csr),
    ("trust_anchors", trust_anchors),
    ("sa_token", sa_token),
    ("explicit_request", explicit_request),
    ("policy_strings", policy_strings),
    ("inbound_policy", inbound_policy),
    ("outbound_policy", outbound_policy),
    ("h1_response", h1_response),
    ("h1_request", h1_request),
    ("connection_memos", connection_memos),
];

/// Transport-header decoding (the direct path's first bytes after mTLS): never panics; what
/// decodes re-encodes to a header that decodes the same.
pub fn transport_header(data: &[u8]) {
    use remora_proxy::transport::header::{PREFACE, TransportHeader};
    let mut wire = PREFACE.to_vec();
    wire.extend_from_slice(data);
    for input in [data, &wire[..]] {
        if let Ok(Some((header, used))) = TransportHeader::decode(input) {
            assert!(used <= input.len());
            let again = TransportHeader::decode(&header.encode())
                .expect("a re-encoded header decodes")
                .expect("a re-encoded header is whole")
                .0;
            assert_eq!(again, header);
        }
    }
}

/// ClientHello detection (the inbound's first bytes): never panics, and once a prefix is
/// decided, longer inputs decide the same.
pub fn client_hello(data: &[u8]) {
    use remora_proxy::tls::detect::{Detected, detect};
    let full = detect(data);
    // Every prefix would be quadratic on big inputs; a spread of cuts finds the same bugs.
    let step = (data.len() / 64).max(1);
    for cut in (0..data.len()).step_by(step) {
        let partial = detect(&data[..cut]);
        if partial != Detected::NeedMore {
            assert_eq!(partial, full, "decided at {cut}, changed later");
        }
    }
}

/// HTTP detection (both directions' first bytes): never panics; a decided prefix stays
/// decided.
pub fn http_detect(data: &[u8]) {
    use remora_proxy::http::detect::{Detected, detect};
    let full = detect(data);
    let step = (data.len() / 64).max(1);
    for cut in (0..data.len()).step_by(step) {
        let partial = detect(&data[..cut]);
        if partial != Detected::NeedMore && full != Detected::NeedMore {
            assert_eq!(partial, full, "decided at {cut}, changed later");
        }
    }
}

/// Splits an input into `NAME=VALUE` lines, each name picked by its first byte from `names`
/// (so mutations reach real variables), the value the rest of the line.
fn env_lines(data: &[u8], names: &[String]) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        let name = &names[pick as usize % names.len()];
        env.insert(name.clone(), String::from_utf8_lossy(value).into_owned());
    }
    env
}

/// The `REMORA_*` surface, policy strings and every value syntax included: a bad value is an
/// error naming a variable, never a panic.
pub fn env_remora(data: &[u8]) {
    let names: Vec<String> = remora_proxy::config::VARS
        .iter()
        .map(|v| v.name.to_string())
        .collect();
    let env = env_lines(data, &names);
    if let Err(e) = remora_proxy::Config::from_lookup(|k| env.get(k).cloned()) {
        assert!(!e.var.is_empty());
    }
}

/// Linkerd's `LINKERD2_PROXY_*` surface: as for [`env_remora`].
pub fn env_linkerd(data: &[u8]) {
    use remora_proxy::config::linkerd::{LINKERD_VARS, PREFIX};
    let names: Vec<String> = LINKERD_VARS
        .iter()
        .map(|v| format!("{PREFIX}{}", v.name))
        .collect();
    let env = env_lines(data, &names);
    if let Err(e) = remora_proxy::Config::from_vars(env) {
        assert!(!e.var.is_empty());
    }
}

/// `remora control`'s TOML (its services, links, and policies): never panics.
pub fn control_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = remora_control::config::Config::parse(text, std::path::Path::new("/nonexistent"));
}

/// A destination profile from the control plane, compiled for the data path: never panics.
pub fn profile(data: &[u8]) {
    if let Ok(p) = linkerd2_proxy_api::destination::DestinationProfile::decode(data) {
        let _ = remora_proxy::discovery::profile::Profile::compile(p);
    }
}

/// The issuer's CSR checks (`Identity/Certify`): a CSR is refused or signed, never a panic;
/// what is signed chains to the root and names exactly the requested identity.
pub fn csr(data: &[u8]) {
    use remora_identity::certs::Ca;
    use remora_identity::{Name, TrustAnchors};
    static PKI: OnceLock<(Ca, TrustAnchors)> = OnceLock::new();
    let (issuer, anchors) = PKI.get_or_init(|| {
        let root = Ca::new_root("fuzz root", Duration::from_secs(86_400)).unwrap();
        let issuer = root
            .new_intermediate("fuzz issuer", Duration::from_secs(86_400))
            .unwrap();
        let anchors = TrustAnchors::from_pem(root.cert_pem().as_bytes()).unwrap();
        (issuer, anchors)
    });
    let name: Name = "web.shop.serviceaccount.identity.linkerd.cluster.local"
        .parse()
        .unwrap();
    if let Ok(issued) = issuer.issue(data, &name, Duration::from_secs(3600)) {
        anchors
            .verify(
                &issued.leaf,
                &issued.intermediates,
                &name,
                std::time::SystemTime::now(),
            )
            .expect("a signed leaf verifies for the identity it was asked for");
    }
}

/// Trust anchors as PEM (a file, or inline as Linkerd's injector gives them): never panics;
/// what parses holds at least one certificate.
pub fn trust_anchors(data: &[u8]) {
    if let Ok(a) = remora_identity::TrustAnchors::from_pem(data) {
        assert!(!a.certs().is_empty());
    }
}

/// The fixed issuer keys, rules and clock of [`sa_token`]: RFC 7515's example keys (A.2, RSA,
/// kid `rfc7515-a2`; A.3, P-256, kid `rfc7515-a3`), so the seeds (`examples/seed_corpora.rs`)
/// are tokens that verify.
pub mod sa_token_fixture {
    use remora_control::sa_token::Rules;
    use remora_control::sa_token::jwks::Jwks;
    use remora_control::sa_token::mint::Minter;

    /// The clock of every check, and the identity asked for.
    pub const NOW_SECS: u64 = 1_800_000_000;
    pub const IDENTITY: &str = "web.shop.serviceaccount.identity.linkerd.cluster.local";

    pub fn minters() -> (Minter, Minter) {
        (
            Minter::rfc7515_rs256("rfc7515-a2").expect("RFC 7515 A.2's key"),
            Minter::rfc7515_es256("rfc7515-a3").expect("RFC 7515 A.3's key"),
        )
    }

    pub fn jwks() -> Jwks {
        let (rsa, ec) = minters();
        Jwks::parse(Minter::jwks(&[&rsa, &ec]).as_bytes()).expect("the fixture's JWKS")
    }

    pub fn rules() -> Rules {
        Rules {
            audience: remora_control::sa_token::DEFAULT_AUDIENCE.into(),
            issuer: Some(remora_control::sa_token::DEFAULT_ISSUER.into()),
            trust_domain: "cluster.local".into(),
            control_plane_ns: "linkerd".into(),
        }
    }
}

/// A Certify token checked as a Kubernetes service-account token (`remora control`'s
/// `token_auth = ["kubernetes"]`), against fixed keys at a fixed time: never panics; what
/// verifies is exactly the identity asked for, and only a token that is not a JWT is
/// malformed.
pub fn sa_token(data: &[u8]) {
    use remora_control::sa_token::{SaTokenError, jwks::Jwks, verify};
    static FIXTURE: OnceLock<(Jwks, remora_identity::Name)> = OnceLock::new();
    let (jwks, identity) = FIXTURE.get_or_init(|| {
        (
            sa_token_fixture::jwks(),
            sa_token_fixture::IDENTITY.parse().unwrap(),
        )
    });
    let now = std::time::UNIX_EPOCH + Duration::from_secs(sa_token_fixture::NOW_SECS);
    match verify(&sa_token_fixture::rules(), jwks, data, identity, now) {
        Ok(v) => {
            assert_eq!(&v.identity, identity);
            assert!(v.expires + remora_control::sa_token::CLOCK_SKEW > now);
        }
        Err(e @ (SaTokenError::TooLarge(_) | SaTokenError::Malformed(_))) => {
            assert!(e.is_malformed());
        }
        Err(e) => assert!(!e.is_malformed()),
    }
}

/// Explicit (HTTP proxy) mode's request head: parsed as HTTP/1 (hyper's parser, `httparse`),
/// then turned from absolute form into origin form. Never panics; what is accepted is an
/// origin-form request whose `Host` carries no userinfo.
pub fn explicit_request(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = head.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (head.method, head.path) else {
        return;
    };
    let mut req = http::Request::builder().method(method).uri(path);
    for h in head.headers.iter() {
        req = req.header(h.name, h.value);
    }
    let Ok(mut req) = req.body(()) else {
        return;
    };
    if remora_proxy::outbound::explicit::to_origin_form(&mut req).is_ok() {
        assert!(req.uri().scheme().is_none() && req.uri().authority().is_none());
        assert!(req.uri().path().starts_with('/'));
        let host = req
            .headers()
            .get(http::header::HOST)
            .expect("a Host header");
        assert!(!host.as_bytes().contains(&b'@'), "{host:?}");
    }
}

/// The inbound policy strings of `REMORA_INBOUND_DEFAULT_POLICY` and
/// `REMORA_INBOUND_PORT_POLICIES`: an error or a policy, never a panic.
pub fn policy_strings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    use remora_proxy::inbound::policy::{parse_policy, parse_port_policies};
    let _ = parse_policy(text);
    if let Ok(ports) = parse_port_policies(text) {
        assert!(ports.len() <= text.split(';').count());
    }
}

/// An inbound `Server` from the policy service (W2.5), compiled for the data path: refused
/// with an error or compiled, never a panic. Protobuf decoding is forgiving, so mutated
/// messages from the seeds reach every field.
pub fn inbound_policy(data: &[u8]) {
    if let Ok(s) = linkerd2_proxy_api::inbound::Server::decode(data) {
        let _ = remora_proxy::inbound::policy::proto::server(&s);
    }
}

/// An `OutboundPolicy` from the policy service (W2.6), compiled for the data path: as for
/// [`inbound_policy`].
pub fn outbound_policy(data: &[u8]) {
    if let Ok(p) = linkerd2_proxy_api::outbound::OutboundPolicy::decode(data) {
        let _ = remora_proxy::outbound::policy::compile(p);
    }
}

/// An HTTP/1 response as the proxy's own client reads it (`remora_proxy::http::h1client`:
/// from the app, and from unmeshed servers on the outbound). The first byte picks the request
/// (`GET`, `HEAD`, a `POST` with a body, an HTTP/1.0 `GET`) and how many bytes at a time the
/// peer writes; the rest is what the peer answers, after which it closes its side.
///
/// Never panics or hangs. The response (head, body, trailers, or the error) is the same
/// whether its bytes arrive a few at a time or at once, and the same with more bytes after
/// it when its framing (not the peer's close) ends it; a body never delivers more bytes than
/// the peer sent, and a `content-length` body that ends cleanly delivers exactly its length.
pub fn h1_response(data: &[u8]) {
    let Some((&pick, answer)) = data.split_first() else {
        return;
    };
    let step = 1 + usize::from(pick >> 2);
    let whole = h1_read(pick & 3, answer, answer.len().max(1));
    let split = h1_read(pick & 3, answer, step);
    assert_eq!(
        whole, split,
        "read {step} bytes at a time, the response differs"
    );
    let Ok(read) = &whole else {
        return;
    };
    assert!(
        read.msg.body.len() <= answer.len(),
        "a body longer than the answer"
    );
    let bodiless = read.method == "HEAD" || matches!(read.status, 204 | 304);
    if read.msg.ended_cleanly
        && !bodiless
        && let Some(len) = read.msg.content_length
    {
        assert_eq!(
            read.msg.body.len() as u64,
            len,
            "a body not its content-length"
        );
    }
    // A response whose end its framing says (not the peer's close) does not depend on what
    // follows it.
    // Chunked when the last transfer coding is (RFC 9112 §6.3; any other reads to the close).
    let chunked = read
        .msg
        .headers
        .iter()
        .rfind(|(k, _)| k == "transfer-encoding")
        .and_then(|(_, v)| v.rsplit(|&b| b == b',').next())
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if read.msg.ended_cleanly && (bodiless || chunked || read.msg.content_length.is_some()) {
        let mut more = answer.to_vec();
        more.extend_from_slice(b"HTTP/1.1 500 Next\r\ncontent-length: 4\r\n\r\nnext");
        let followed = h1_read(pick & 3, &more, step);
        assert_eq!(
            followed.as_ref(),
            Ok(read),
            "bytes after the response changed it"
        );
    }
}

/// What [`h1_response`] compares.
#[derive(Debug, PartialEq)]
struct H1Read {
    method: &'static str,
    status: u16,
    version: http::Version,
    msg: H1Message,
}

/// A message's fields and body as a handler or a client reads them ([`h1_response`],
/// [`h1_request`]).
#[derive(Debug, PartialEq)]
struct H1Message {
    headers: Vec<(String, Vec<u8>)>,
    content_length: Option<u64>,
    body: Vec<u8>,
    trailers: Option<Vec<(String, Vec<u8>)>>,
    /// The body's error, if it failed.
    error: Option<String>,
    ended_cleanly: bool,
}

fn field_list(h: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// Reads a message's body to its end, its error, or `max_frames` frames (then panics: every
/// frame but the last carries a byte the peer sent, or is its trailers, so more means a body
/// that never ends).
async fn read_message<B>(headers: &http::HeaderMap, mut body: B, max_frames: usize) -> H1Message
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let mut msg = H1Message {
        headers: field_list(headers),
        content_length: headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        body: Vec::new(),
        trailers: None,
        error: None,
        ended_cleanly: false,
    };
    for _ in 0..max_frames {
        match body.frame().await {
            None => {
                msg.ended_cleanly = true;
                return msg;
            }
            Some(Err(e)) => {
                msg.error = Some(e.to_string());
                return msg;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    assert!(!data.is_empty(), "an empty data frame");
                    msg.body.extend_from_slice(&data);
                }
                Err(frame) => {
                    assert!(msg.trailers.is_none(), "trailers twice");
                    let trailers = frame.into_trailers().expect("data or trailers");
                    msg.trailers = Some(field_list(&trailers));
                }
            },
        }
    }
    panic!("a body that never ends");
}

fn h1_read(kind: u8, answer: &[u8], step: usize) -> Result<H1Read, String> {
    use remora_proxy::http::Body;
    use remora_proxy::http::h1client::{Conn, Idle};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (method, version, body): (_, _, &[u8]) = match kind {
        0 => (http::Method::GET, http::Version::HTTP_11, b""),
        1 => (http::Method::HEAD, http::Version::HTTP_11, b""),
        2 => (http::Method::POST, http::Version::HTTP_11, b"hello"),
        _ => (http::Method::GET, http::Version::HTTP_10, b""),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let answer = answer.to_vec();
    let max_frames = answer.len() + 2;
    rt.block_on(async move {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        // The peer: reads the request (head and body), answers `step` bytes at a time, then
        // closes its side; it keeps reading what the client writes until the client is gone.
        let want = body.len();
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
                    && got.len() >= end + 4 + want
                {
                    break;
                }
                match server.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            for part in answer.chunks(step) {
                if server.write_all(part).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = server.shutdown().await;
            while matches!(server.read(&mut chunk).await, Ok(n) if n > 0) {}
        });
        let mut req = http::Request::new(if body.is_empty() {
            Body::Empty
        } else {
            remora_proxy::http::boxed(http_body_util::Full::new(bytes::Bytes::from_static(body)))
        });
        *req.method_mut() = method.clone();
        *req.uri_mut() = http::Uri::from_static("/");
        *req.version_mut() = version;
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("app"));
        let conn = Conn::new("10.0.0.1:80".parse().expect("an address"), Box::new(client));
        let idle = std::sync::Arc::new(Idle::new(4));
        let rsp = conn.send(req, idle).await.map_err(|e| e.to_string())?;
        let (parts, body) = rsp.into_parts();
        Ok(H1Read {
            method: if method == http::Method::HEAD {
                "HEAD"
            } else {
                "other"
            },
            status: parts.status.as_u16(),
            version: parts.version,
            msg: read_message(&parts.headers, body, max_frames).await,
        })
    })
}

/// A client connection as the proxy's own HTTP/1 server reads it
/// (`remora_proxy::http::h1server`: the app's outbound requests, and unmeshed clients'
/// inbound ones). The first byte picks how the handler answers (low two bits: a `content-length`
/// body, a streamed body with trailers, a 204, a body short of its length) and how many bytes
/// at a time the client writes (the rest, plus one); the rest is what the client sends, after
/// which it closes its side. The handler reads each request's body whole, then answers.
///
/// Never panics or hangs. What the handler sees (each request's head, body, trailers or
/// error) and what the client reads back (but the `date`) are the same whether the client's
/// bytes arrive a few at a time or at once; a request's body never holds more bytes than the
/// client sent, and one with a `content-length` that ends cleanly holds exactly its length;
/// and a request served whole is served the same when more bytes follow it.
pub fn h1_request(data: &[u8]) {
    let Some((&pick, sent)) = data.split_first() else {
        return;
    };
    let step = 1 + usize::from(pick >> 2);
    let answer = pick & 3;
    let whole = h1_serve(answer, sent, sent.len().max(1));
    let split = h1_serve(answer, sent, step);
    assert_eq!(
        whole, split,
        "written {step} bytes at a time, served differently"
    );
    for req in &whole.requests {
        assert!(
            req.msg.body.len() <= sent.len(),
            "a body longer than the input"
        );
        if req.msg.error.is_none()
            && let Some(len) = req.msg.content_length
        {
            assert_eq!(
                req.msg.body.len() as u64,
                len,
                "a body not its content-length"
            );
        }
    }
    // The requests served whole (their bodies ended) are served the same, in the same order,
    // when another request follows.
    let mut more = sent.to_vec();
    more.extend_from_slice(b"GET /next HTTP/1.1\r\nhost: next\r\n\r\n");
    let followed = h1_serve(answer, &more, step);
    let done: Vec<_> = whole
        .requests
        .iter()
        .take_while(|r| r.msg.error.is_none())
        .collect();
    assert!(
        followed.requests.len() >= done.len()
            && followed.requests.iter().zip(&done).all(|(a, b)| a == *b),
        "bytes after a request changed it:\n{done:?}\n{:?}",
        followed.requests
    );
}

/// What [`h1_request`] compares: the requests the handler saw, and the bytes the client read
/// back without their `date` fields.
#[derive(Debug, PartialEq)]
struct H1Served {
    requests: Vec<H1Seen>,
    answered: Vec<u8>,
}

#[derive(Debug, PartialEq)]
struct H1Seen {
    method: String,
    uri: String,
    version: http::Version,
    msg: H1Message,
}

fn h1_serve(answer: u8, sent: &[u8], step: usize) -> H1Served {
    use remora_proxy::http::h1server::{Limits, serve};
    use remora_proxy::http::{Body, RequestBody, boxed};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Small limits, so inputs reach them.
    const LIMITS: Limits = Limits {
        max_head: 1024,
        max_headers: 8,
        header_timeout: Duration::from_secs(60),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let sent = sent.to_vec();
    let max_frames = sent.len() + 2;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handle = move |req: http::Request<RequestBody>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let seen = H1Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                version: parts.version,
                msg: read_message(&parts.headers, body, max_frames).await,
            };
            log.lock().unwrap().push(seen);
            let mut rsp = match answer {
                0 => http::Response::new(boxed(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                ))),
                1 => {
                    let mut rsp = http::Response::new(boxed(Streamed(2)));
                    rsp.headers_mut()
                        .insert("trailer", http::HeaderValue::from_static("x-t"));
                    rsp
                }
                2 => {
                    let mut rsp = http::Response::new(Body::Empty);
                    *rsp.status_mut() = http::StatusCode::NO_CONTENT;
                    rsp
                }
                _ => {
                    let mut rsp = http::Response::new(boxed(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )));
                    rsp.headers_mut().insert(
                        http::header::CONTENT_LENGTH,
                        http::HeaderValue::from_static("5"),
                    );
                    rsp
                }
            };
            rsp.headers_mut()
                .insert("x-served", http::HeaderValue::from_static("yes"));
            Ok::<_, std::convert::Infallible>(rsp)
        }
    };
    let answered = rt.block_on(async move {
        // Large enough that no response waits for the client to read: the server's writes
        // never wait, so when it notices the client's close does not depend on the split.
        let (client, server) = tokio::io::duplex(4 << 20);
        let served = tokio::spawn(serve(
            Box::new(server),
            LIMITS,
            std::future::pending(),
            handle,
        ));
        let (mut rx, mut tx) = tokio::io::split(client);
        tokio::spawn(async move {
            for part in sent.chunks(step) {
                if tx.write_all(part).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = tx.shutdown().await;
        });
        let mut answered = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), rx.read_to_end(&mut answered))
            .await
            .expect("the server closes the connection")
            .expect("a pipe does not fail");
        let _ = served.await;
        answered
    });
    let requests = std::mem::take(&mut *seen.lock().unwrap());
    H1Served {
        requests,
        answered: without_dates(&answered),
    }
}

/// A response body of unknown length: `a`, `bc`, then the trailer `x-t: 1`.
struct Streamed(u8);

impl hyper::body::Body for Streamed {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let frame = match self.0 {
            2 => hyper::body::Frame::data(bytes::Bytes::from_static(b"a")),
            1 => hyper::body::Frame::data(bytes::Bytes::from_static(b"bc")),
            0 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("x-t", http::HeaderValue::from_static("1"));
                hyper::body::Frame::trailers(trailers)
            }
            _ => return std::task::Poll::Ready(None),
        };
        self.0 = self.0.wrapping_sub(1);
        std::task::Poll::Ready(Some(Ok(frame)))
    }
}

/// `bytes` without its `date` field lines (they name the second they were written in).
fn without_dates(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let (line, tail) = rest.split_at(end);
        if !line.starts_with(b"date: ") {
            out.extend_from_slice(line);
        }
        rest = tail;
    }
    out
}

/// One client connection's requests, one per line of the input: a line starting with `u`
/// names its authority in an absolute URI (`u<authority>[ <Host>]`: `http://<authority>/p`,
/// with a `Host` beside it when one follows a space), any other in `Host` (the whole line).
/// What the proxy derives from a request's authority through the connection's memos
/// (`remora_proxy::http::memo`: the routing `host:port`, an explicit request's `Host`, an
/// upgraded request's authority and the inbound's `Host`) is what it derives without them:
/// a request never takes another's authority.
pub fn connection_memos(data: &[u8]) {
    use remora_proxy::http::memo::Memo;
    use remora_proxy::http::orig_proto;
    use remora_proxy::outbound::explicit::{to_origin_form, to_origin_form_with};
    use remora_proxy::outbound::http::{authority, authority_with};

    let (routes, hosts, upgraded, downgraded) = (
        Memo::default(),
        Memo::default(),
        Memo::default(),
        Memo::default(),
    );
    let same = |a: &http::Request<()>, b: &http::Request<()>| {
        assert_eq!(
            (a.uri(), a.version(), a.headers()),
            (b.uri(), b.version(), b.headers())
        );
    };
    let copy = |r: &http::Request<()>| {
        let mut c = http::Request::new(());
        *c.uri_mut() = r.uri().clone();
        *c.version_mut() = r.version();
        *c.headers_mut() = r.headers().clone();
        c
    };
    for line in data.split(|&b| b == b'\n').take(64) {
        let req = match line.split_first() {
            Some((b'u', rest)) => {
                // `u<authority>[ <Host>]`: a URI's authority, and a `Host` beside it if given.
                let (authority, host) = match rest.iter().position(|&b| b == b' ') {
                    Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                    None => (rest, None),
                };
                let mut uri = b"http://".to_vec();
                uri.extend_from_slice(authority);
                uri.extend_from_slice(b"/p");
                let Ok(uri) = http::Uri::try_from(uri) else {
                    continue;
                };
                let mut r = http::Request::new(());
                *r.uri_mut() = uri;
                if let Some(host) = host.and_then(|h| http::HeaderValue::from_bytes(h).ok()) {
                    r.headers_mut().insert(http::header::HOST, host);
                }
                r
            }
            _ => {
                let Ok(host) = http::HeaderValue::from_bytes(line) else {
                    continue;
                };
                let mut r = http::Request::new(());
                *r.uri_mut() = http::Uri::from_static("/p");
                r.headers_mut().insert(http::header::HOST, host);
                r
            }
        };
        assert_eq!(authority_with(&req, &routes), authority(&req));

        let (mut a, mut b) = (copy(&req), copy(&req));
        assert_eq!(to_origin_form_with(&mut a, &hosts), to_origin_form(&mut b));
        same(&a, &b);

        let (mut a, mut b) = (copy(&req), copy(&req));
        orig_proto::upgrade_with(&mut a, &upgraded);
        orig_proto::upgrade(&mut b);
        same(&a, &b);

        let (mut c, mut d) = (copy(&a), copy(&a));
        assert_eq!(
            orig_proto::downgrade_with(&mut c, &downgraded),
            orig_proto::downgrade(&mut d)
        );
        same(&c, &d);
    }
}

#[cfg(test)]
mod tests {
    /// The seeds named valid are tokens the fixture accepts (so the fuzzer starts from inside
    /// the accepting path), and the near misses are refused.
    #[test]
    fn the_sa_token_seeds_are_what_they_say() {
        use super::sa_token_fixture::*;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sa_token");
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW_SECS);
        let identity = IDENTITY.parse().unwrap();
        for (seed, valid) in [
            ("seed-rs256", true),
            ("seed-es256", true),
            ("seed-no-kid", true),
            ("seed-audience", false),
            ("seed-expired", false),
            ("seed-other-identity", false),
            ("seed-alg-none", false),
        ] {
            let token = std::fs::read(dir.join(seed)).unwrap();
            let r = remora_control::sa_token::verify(&rules(), &jwks(), &token, &identity, now);
            assert_eq!(r.is_ok(), valid, "{seed}: {r:?}");
        }
    }

    /// The server target serves what a real client sends: it is not vacuous.
    #[test]
    fn h1_request_serves_valid_requests_whole_and_split() {
        let sent = b"POST /up HTTP/1.1\r\nhost: web\r\nte: trailers\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\nGET /b HTTP/1.1\r\nhost: web\r\n\r\n";
        for step in [1, 3, 1000] {
            let served = super::h1_serve(1, sent, step);
            let paths: Vec<_> = served.requests.iter().map(|r| r.uri.as_str()).collect();
            assert_eq!(paths, ["/up", "/b"]);
            assert_eq!(&served.requests[0].msg.body[..], b"hello");
            assert_eq!(
                served.requests[0].msg.trailers,
                Some(vec![("x-t".into(), b"1".to_vec())])
            );
            let answered = String::from_utf8(served.answered).unwrap();
            // The first asked for trailers and gets them; the second does not.
            assert_eq!(
                answered.matches("HTTP/1.1 200 OK\r\n").count(),
                2,
                "{answered}"
            );
            assert_eq!(answered.matches("x-t: 1\r\n").count(), 1, "{answered}");
            assert!(!answered.contains("date: "), "{answered}");
            // A malformed head is refused and nothing after it is served.
            let refused = super::h1_serve(0, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nbad field\r\n\r\nGET /c HTTP/1.1\r\n\r\n", step);
            assert_eq!(refused.requests.len(), 1);
            assert!(
                String::from_utf8_lossy(&refused.answered).contains("HTTP/1.1 400 Bad Request\r\n")
            );
            // A malformed body fails, and is answered; a client that leaves within its
            // body is gone, its handler dropped.
            let bad = super::h1_serve(
                0,
                b"POST /d HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                step,
            );
            assert!(bad.requests[0].msg.error.is_some(), "{bad:?}");
            let cut = super::h1_serve(
                0,
                b"POST /d HTTP/1.1\r\ncontent-length: 9\r\n\r\nshort",
                step,
            );
            assert!(
                cut.requests.is_empty() && cut.answered.is_empty(),
                "{cut:?}"
            );
        }
    }

    /// The target reads what a real server sends: it is not vacuous.
    #[test]
    fn h1_response_reads_valid_answers_whole_and_split() {
        for step in [1, 3, 1000] {
            let chunked = super::h1_read(
                0,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: y\r\n\r\n",
                step,
            )
            .unwrap();
            assert_eq!(
                (chunked.status, &chunked.msg.body[..]),
                (200, &b"hello"[..])
            );
            assert_eq!(
                chunked.msg.trailers,
                Some(vec![("x-t".into(), b"y".to_vec())])
            );
            assert!(chunked.msg.ended_cleanly);
            let posted = super::h1_read(
                2,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
                step,
            )
            .unwrap();
            assert_eq!((posted.status, &posted.msg.body[..]), (201, &b"ok"[..]));
            let head = super::h1_read(1, b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", step)
                .unwrap();
            assert!(head.msg.body.is_empty() && head.msg.ended_cleanly);
            let old = super::h1_read(3, b"HTTP/1.0 200 OK\r\n\r\nuntil the end", step).unwrap();
            assert_eq!(&old.msg.body[..], b"until the end");
            let cut = super::h1_read(
                0,
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
                step,
            )
            .unwrap();
            assert!(cut.msg.error.is_some() && !cut.msg.ended_cleanly);
            assert!(super::h1_read(0, b"HTTP/1.1 2x0 OK\r\n\r\n", step).is_err());
        }
    }
}
