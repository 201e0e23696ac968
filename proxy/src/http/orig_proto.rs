//! HTTP/1 requests carried over HTTP/2 between proxies (docs/wire-protocol.md#http-between-proxies): the outbound marks the request
//! `l5d-orig-proto: HTTP/1.1` (or `HTTP/1.0`, with `; absolute-form` when the URI was
//! absolute-form) and sends it as HTTP/2; the inbound restores HTTP/1 for its app and marks the
//! response, which the outbound unmarks.

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, Version};

use super::L5D_ORIG_PROTO;
use super::memo::Memo;

const ABSOLUTE: &str = "; absolute-form";

/// Outbound: turns an HTTP/1 request into HTTP/2 for a meshed peer.
pub fn upgrade<B>(req: &mut Request<B>) {
    upgrade_with(req, &Memo::default());
}

/// As [`upgrade`], through the client connection's memo of the authority its last `Host`
/// made.
pub fn upgrade_with<B>(req: &mut Request<B>, hosts: &Memo<Authority>) {
    let absolute = req.uri().scheme().is_some();
    let value = match (req.version(), absolute) {
        (Version::HTTP_10, false) => "HTTP/1.0",
        (Version::HTTP_10, true) => "HTTP/1.0; absolute-form",
        (_, false) => "HTTP/1.1",
        (_, true) => "HTTP/1.1; absolute-form",
    };
    req.headers_mut()
        .insert(L5D_ORIG_PROTO, HeaderValue::from_static(value));
    // HTTP/2 needs a scheme and authority: take the authority from Host.
    if req.uri().authority().is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| hosts.get(h, |h| h.parse::<Authority>().ok()));
        if let Some(authority) = host {
            // Taken, not cloned: with a scheme, an authority and a path the parts always make
            // a URI.
            let mut parts = std::mem::take(req.uri_mut()).into_parts();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority);
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req.headers_mut().remove(header::HOST);
    *req.version_mut() = Version::HTTP_2;
}

/// Inbound: if the request came upgraded, restores it to HTTP/1 for the app. Returns whether it
/// did (the response must then be marked).
pub fn downgrade<B>(req: &mut Request<B>) -> bool {
    downgrade_with(req, &Memo::default())
}

/// As [`downgrade`], through the connection's memo of its last `Host` value.
pub fn downgrade_with<B>(req: &mut Request<B>, hosts: &Memo<HeaderValue>) -> bool {
    let Some(orig) = req.headers_mut().remove(L5D_ORIG_PROTO) else {
        return false;
    };
    let orig = orig.to_str().unwrap_or("HTTP/1.1");
    let absolute = orig.ends_with(ABSOLUTE);
    *req.version_mut() = if orig.starts_with("HTTP/1.0") {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if let Some(authority) = req.uri().authority()
        && let Some(v) = hosts.get(authority.as_str(), |a| HeaderValue::from_str(a).ok())
        && let header::Entry::Vacant(host) = req.headers_mut().entry(header::HOST)
    {
        host.insert(v);
    }
    if !absolute {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
    true
}

/// Inbound: marks a response to a downgraded request.
pub fn mark<B>(rsp: &mut Response<B>) {
    rsp.headers_mut()
        .insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
}

/// Outbound: removes the mark from a peer's response; true if it was there.
pub fn unmark<B>(rsp: &mut Response<B>) -> bool {
    let marked = rsp.headers_mut().remove(L5D_ORIG_PROTO).is_some();
    if marked {
        *rsp.version_mut() = Version::HTTP_11;
    }
    marked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_origin_form() {
        let mut req = Request::builder()
            .uri("/items?x=1")
            .header("host", "web.shop.svc.cluster.local:8080")
            .version(Version::HTTP_11)
            .body(())
            .unwrap();
        upgrade(&mut req);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.headers()[L5D_ORIG_PROTO], "HTTP/1.1");
        assert_eq!(
            req.uri(),
            "http://web.shop.svc.cluster.local:8080/items?x=1"
        );
        assert!(downgrade(&mut req));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/items?x=1");
        assert_eq!(req.headers()["host"], "web.shop.svc.cluster.local:8080");
        assert!(req.headers().get(L5D_ORIG_PROTO).is_none());
    }

    #[test]
    fn one_connections_upgrades_share_the_authority_its_host_made() {
        let memo = Memo::default();
        let upgraded = |host: &str| {
            let mut req = Request::builder()
                .uri("/p")
                .header("host", host)
                .body(())
                .unwrap();
            upgrade_with(&mut req, &memo);
            assert!(!req.headers().contains_key(header::HOST));
            req.uri().clone()
        };
        assert_eq!(upgraded("a.ns.svc:8080"), "http://a.ns.svc:8080/p");
        assert_eq!(upgraded("a.ns.svc:8080"), "http://a.ns.svc:8080/p");
        // Another host is parsed afresh, not given the kept one.
        assert_eq!(upgraded("b.ns.svc"), "http://b.ns.svc/p");
        // A host that is no authority gives none, and the URI stays as it was.
        assert_eq!(upgraded("bad host"), "/p");
    }

    #[test]
    fn absolute_form_and_http10() {
        let mut req = Request::builder()
            .uri("http://a.example/x")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        upgrade(&mut req);
        assert_eq!(req.headers()[L5D_ORIG_PROTO], "HTTP/1.0; absolute-form");
        assert!(downgrade(&mut req));
        assert_eq!(req.version(), Version::HTTP_10);
        assert_eq!(req.uri(), "http://a.example/x");
        let mut plain = Request::builder()
            .uri("/")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert!(!downgrade(&mut plain));
        assert_eq!(plain.version(), Version::HTTP_2);
    }
}
