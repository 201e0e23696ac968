//! Explicit mode: the app uses the outbound listener as its HTTP proxy (`HTTP_PROXY`), so no
//! iptables redirect is needed.
//!
//! - An absolute-form request (`GET http://web.shop.svc.cluster.local:8080/ HTTP/1.1`) is turned
//!   into the origin-form request the target expects (`Host` set from the URI) and routed by its
//!   authority exactly like an intercepted request ([`HttpOutbound::handle`]).
//! - An HTTP/2 request (always absolute) is routed by its `:authority` the same way.
//! - `CONNECT host:port` resolves and dials the target through the same discovery, balancer and
//!   mTLS dial as an intercepted opaque connection, answers 200 once connected, and then
//!   forwards bytes both ways.
//! - Anything else (origin-form HTTP/1, `https://` absolute-form) is answered 400.

use crate::http::RequestBody;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method, Request, Response, Version, header};
use tracing::{Instrument, debug, info, info_span};

use super::http::{ConnMemo, HttpOutbound};
use super::policy::http::ConnPolicies;
use crate::error::ProxyError;
use crate::http::Body;
use crate::http::memo::Memo;
use crate::http::record::Recorded;
use crate::transport::forward::{Activity, Ended, forward};

/// `Proxy-Authorization` is for the proxy the client thinks it talks to; never forwarded.
const PROXY_AUTHORIZATION: header::HeaderName = header::PROXY_AUTHORIZATION;

impl HttpOutbound {
    /// Handles one request of an explicit connection.
    pub async fn handle_explicit(&self, req: Request<RequestBody>) -> Response<Recorded> {
        self.handle_explicit_with(&ConnPolicies::None, &ConnMemo::default(), req)
            .await
    }

    /// As [`handle_explicit`](Self::handle_explicit), routing by the outbound policy of the
    /// target each request names, when it has one; `memo` is the connection's.
    pub async fn handle_explicit_with(
        &self,
        policies: &ConnPolicies,
        memo: &ConnMemo,
        mut req: Request<RequestBody>,
    ) -> Response<Recorded> {
        req.headers_mut().remove(PROXY_AUTHORIZATION);
        if req.method() == Method::CONNECT {
            // Boxed: the tunnel's dial is rare, and its state would otherwise enlarge every
            // request's future.
            return Box::pin(self.connect(req)).await.map(Recorded::from);
        }
        if req.version() < Version::HTTP_2
            && let Err(why) = to_origin_form_with(&mut req, &memo.host)
        {
            return self.fail(ProxyError::BadRequest(why)).map(Recorded::from);
        }
        self.handle_with(None, policies, memo, req).await
    }

    /// `CONNECT host:port`: an opaque tunnel to the target through the normal outbound dial.
    async fn connect(&self, mut req: Request<RequestBody>) -> Response<Body> {
        let authority = match req.uri().authority() {
            Some(a) if a.port_u16().is_some() && req.uri().path_and_query().is_none() => {
                a.as_str().to_string()
            }
            _ => return self.fail(ProxyError::BadRequest("CONNECT needs a host:port target")),
        };
        let mut dest = match self.route(None, Some(&authority)).await {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        let ctx = &self.ctx;
        // As for an intercepted opaque connection, the connect is the balancer's outcome.
        let conn = match ctx.connector.connect(&mut dest, None).await {
            Ok(c) => c,
            Err(e) => {
                return self.fail(ProxyError::Connect {
                    addr: dest.addr,
                    failure: e.into(),
                });
            }
        };
        info!(target = %authority, endpoint = %conn.addr, tls = ?conn.labels.target.tls, "CONNECT tunnel");
        let addr = dest.addr;
        let activity = ctx.tcp.idle_timeout.map(|_| Activity::new());
        // Every byte of the tunnel crosses the upstream side, so its activity is the tunnel's.
        let mut upstream = conn.counted(&ctx.inputs, activity.clone());
        let idle_timeout = ctx.tcp.idle_timeout;
        let upgrade = crate::http::h1server::on_upgrade(&mut req).wait();
        let span = info_span!("tunnel", target = %authority, endpoint = %addr);
        tokio::spawn(
            async move {
                let mut client = match upgrade.await {
                    Ok(u) => u,
                    Err(e) => return debug!(error = %e, "the client left before the tunnel opened"),
                };
                let idle = idle_timeout.zip(activity.as_deref());
                match forward(&mut client, &mut upstream, idle).await {
                    Ended::Closed(sent, received) => debug!(sent, received, "tunnel closed"),
                    Ended::Idle | Ended::Silent => {
                        info!(timeout = ?idle_timeout, "closing idle tunnel")
                    }
                    Ended::Error(e) => {
                        upstream.record_error(&e);
                        debug!(error = %e, "tunnel ended with an error");
                    }
                }
            }
            .instrument(span),
        );
        Response::new(Body::Empty)
    }
}

/// Turns an HTTP/1 absolute-form proxy request into the origin-form request its target expects,
/// with `Host` set from the URI (RFC 9112 §3.2.2: the URI's authority wins over `Host`).
pub fn to_origin_form<B>(req: &mut Request<B>) -> Result<(), &'static str> {
    to_origin_form_with(req, &Memo::default())
}

/// As [`to_origin_form`], through the connection's memo of its last `Host` value.
pub fn to_origin_form_with<B>(
    req: &mut Request<B>,
    hosts: &Memo<HeaderValue>,
) -> Result<(), &'static str> {
    let uri = req.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => {
            return Err("only http:// URIs can be proxied; use CONNECT for anything else");
        }
        None => {
            return Err(
                "an HTTP proxy needs an absolute-form request (GET http://host:port/path); \
                 origin-form requests are for servers",
            );
        }
    }
    let Some(authority) = uri.authority() else {
        return Err("the request URI has no authority");
    };
    // Userinfo is never sent on (RFC 9110 §4.2.4).
    let host = hosts
        .get(authority.as_str(), |a| {
            let host = a.rsplit_once('@').map_or(a, |(_, h)| h);
            HeaderValue::from_str(host).ok()
        })
        .ok_or("the request URI's host is invalid")?;
    // An absolute URI's path may be empty (`http://h:80`, `http://h:80?q`, `http://h:80#f`):
    // origin form needs `/` there (RFC 9112 §3.2.1). An empty `PathAndQuery` shows as "/"
    // but becomes an empty request target once alone in a `Uri`, so "/" is rebuilt.
    let pq = match uri.path_and_query().map(PathAndQuery::as_str) {
        Some(s) if s.starts_with('/') && s != "/" => uri.path_and_query().cloned(),
        Some(s) if s.starts_with('?') => format!("/{s}").parse().ok(),
        _ => Some(PathAndQuery::from_static("/")),
    }
    .ok_or("the request URI's path is invalid")?;
    *req.uri_mut() = Uri::from(pq);
    req.headers_mut().insert(header::HOST, host);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let mut r = req(
            "http://web.shop.svc.cluster.local:8080/a?b=1",
            Some("other"),
        );
        to_origin_form(&mut r).unwrap();
        assert_eq!(r.uri(), "/a?b=1");
        assert_eq!(r.headers()["host"], "web.shop.svc.cluster.local:8080");
        let mut r = req("http://user:pw@web/", None);
        to_origin_form(&mut r).unwrap();
        assert_eq!(r.uri(), "/");
        assert_eq!(r.headers()["host"], "web");
    }

    #[test]
    fn a_connections_requests_get_the_host_each_names() {
        // One memo, as on one client connection: a repeated authority reuses its value, a
        // new one replaces it, userinfo never reaches `Host`.
        let hosts = Memo::default();
        for (uri, want) in [
            ("http://web:8080/a", "web:8080"),
            ("http://web:8080/b", "web:8080"),
            ("http://user:pw@web:8080/", "web:8080"),
            ("http://api/", "api"),
            ("http://web:8080/c", "web:8080"),
        ] {
            let mut r = req(uri, Some("stale"));
            to_origin_form_with(&mut r, &hosts).unwrap();
            assert_eq!(r.headers()["host"], want, "{uri}");
            assert_eq!(r.headers().get_all("host").iter().count(), 1, "{uri}");
        }
    }

    #[test]
    fn an_empty_path_becomes_slash() {
        // Found by fuzzing (fuzz/corpus/explicit_request/crash-empty-path): the fragment
        // left an empty path, and the request went upstream with an empty target.
        for (uri, want) in [
            ("http://web:80#frag", "/"),
            ("http://web:80", "/"),
            ("http://web:80?a=b", "/?a=b"),
            ("http://web:80/x?a=b#f", "/x?a=b"),
        ] {
            let mut r = req(uri, None);
            to_origin_form(&mut r).unwrap();
            assert_eq!(r.uri().to_string(), want, "{uri}");
            assert_eq!(r.headers()[header::HOST], "web:80");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(to_origin_form(&mut req("/a", Some("web"))).is_err());
        assert!(to_origin_form(&mut req("https://web/", None)).is_err());
    }
}
