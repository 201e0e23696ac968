//! Which route of a policy a request takes: the Gateway API's matching rules, as Linkerd
//! applies them on both sides of the mesh (`docs/policy.md`, "Route matching").
//!
//! A route has `hosts` (none: any host) and rules; a rule has matches (none: it matches every
//! request) and a payload (what the inbound or the outbound does with a request it takes). Of
//! every (route, rule) a request matches, the best wins: the better host match first (no hosts <
//! a suffix < an exact host, longer beating shorter), then the better request match (HTTP: the
//! longer path match, then more header matches, then more query matches, then a method
//! match; gRPC: the longer service, then the longer method, then more header matches). On a
//! tie the earlier route, then the earlier rule, wins.
//!
//! Patterns are compiled once, when a policy arrives ([`proto`]); matching a request allocates
//! nothing but the query-string decoding of routes that match on query parameters.

use std::cmp::Ordering;

use http::header::HeaderName;
use http::{HeaderMap, Method, Request};
use regex::Regex;

/// A host pattern.
#[derive(Clone, Debug)]
pub enum HostMatch {
    /// Compared case-insensitively; one trailing dot on the request's host is ignored.
    Exact(String),
    /// `*.example.com`, held as `.example.com`: matches names under it, not the name itself.
    Suffix(String),
}

/// How well a host matched: none (the route names no hosts) < a suffix < an exact host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostScore {
    Any,
    Suffix(usize),
    Exact(usize),
}

impl HostMatch {
    fn score(&self, host: &str) -> Option<HostScore> {
        // An IP address never matches a name.
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return None;
        }
        match self {
            HostMatch::Exact(h) => {
                let host = if h.ends_with('.') {
                    host
                } else {
                    host.strip_suffix('.').unwrap_or(host)
                };
                host.eq_ignore_ascii_case(h)
                    .then_some(HostScore::Exact(h.len()))
            }
            HostMatch::Suffix(s) => {
                let host = host.strip_suffix('.').unwrap_or(host);
                (host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes()))
                .then_some(HostScore::Suffix(s.len()))
            }
        }
    }
}

impl HostMatch {
    /// How well `host` matches this pattern (`None`: not at all); for SNI matching.
    pub fn matches_host(&self, host: &str) -> Option<HostScore> {
        self.score(host)
    }
}

/// A path pattern.
#[derive(Clone, Debug)]
pub enum PathMatch {
    Exact(String),
    /// Without its trailing slashes; matches on segment boundaries (`/foo` matches `/foo`,
    /// `/foo/`, `/foo/bar`, not `/foobar`). `/` (held as `""`) matches every path.
    Prefix(String),
    /// Must match the whole path.
    Regex(Regex),
}

impl PathMatch {
    /// The match's length when `path` matches (Linkerd compares path matches by length
    /// alone, whatever their kind).
    fn score(&self, path: &str) -> Option<usize> {
        match self {
            PathMatch::Exact(p) => (path == p).then_some(p.len()),
            PathMatch::Prefix(p) if p.is_empty() => Some(1),
            PathMatch::Prefix(p) => {
                let trimmed = path.trim_end_matches('/');
                let ok = trimmed == p
                    || (trimmed.starts_with(p.as_str()) && trimmed.as_bytes()[p.len()] == b'/');
                ok.then_some(p.len())
            }
            PathMatch::Regex(r) => whole(r, path).then_some(path.len()),
        }
    }
}

fn whole(r: &Regex, s: &str) -> bool {
    r.find(s)
        .is_some_and(|m| m.start() == 0 && m.end() == s.len())
}

/// A value pattern: exact bytes, or a regex matching a whole value.
#[derive(Clone, Debug)]
pub enum ValueMatch {
    Exact(Vec<u8>),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, v: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(e) => e == v,
            ValueMatch::Regex(r) => std::str::from_utf8(v).is_ok_and(|s| whole(r, s)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

impl HeaderMatch {
    fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| self.value.matches(v.as_bytes()))
    }
}

#[derive(Clone, Debug)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// One way an HTTP request may match a rule: all of its parts must hold.
#[derive(Clone, Debug, Default)]
pub struct HttpMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub method: Option<Method>,
}

/// How well an HTTP request matched a rule, in Linkerd's order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HttpScore {
    path: usize,
    headers: usize,
    query: usize,
    method: bool,
}

/// A rule without matches matches everything, as a `/` prefix would.
const IMPLICIT_HTTP: HttpScore = HttpScore {
    path: 1,
    headers: 0,
    query: 0,
    method: false,
};

impl HttpMatch {
    fn score<B>(&self, req: &Request<B>) -> Option<HttpScore> {
        let path = match &self.path {
            Some(p) => p.score(req.uri().path())?,
            None => 1,
        };
        if !self.headers.iter().all(|h| h.matches(req.headers())) {
            return None;
        }
        if !self.query.is_empty() {
            let pairs = query_pairs(req.uri().query().unwrap_or(""));
            let ok = self.query.iter().all(|q| {
                pairs
                    .iter()
                    .any(|(k, v)| *k == q.name && q.value.matches(v.as_bytes()))
            });
            if !ok {
                return None;
            }
        }
        if let Some(m) = &self.method
            && m != req.method()
        {
            return None;
        }
        Some(HttpScore {
            path,
            headers: self.headers.len(),
            query: self.query.len(),
            method: self.method.is_some(),
        })
    }
}

/// `a=1&b=%20x` as decoded pairs (`application/x-www-form-urlencoded`).
fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One way a gRPC request may match a rule. `None` service or method: any.
#[derive(Clone, Debug, Default)]
pub struct GrpcMatch {
    pub service: Option<String>,
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
}

/// How well a gRPC request matched a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrpcScore {
    service: usize,
    method: usize,
    headers: usize,
}

const IMPLICIT_GRPC: GrpcScore = GrpcScore {
    service: 0,
    method: 0,
    headers: 0,
};

impl GrpcMatch {
    fn score<B>(&self, req: &Request<B>) -> Option<GrpcScore> {
        // A gRPC call is a POST of `/service/method`.
        if req.method() != Method::POST {
            return None;
        }
        let (service, method) = req.uri().path().strip_prefix('/')?.split_once('/')?;
        let service_len = match &self.service {
            Some(s) if s == service => s.len(),
            Some(_) => return None,
            None => 0,
        };
        let method_len = match &self.method {
            Some(m) if m == method => m.len(),
            Some(_) => return None,
            None => 0,
        };
        if !self.headers.iter().all(|h| h.matches(req.headers())) {
            return None;
        }
        Some(GrpcScore {
            service: service_len,
            method: method_len,
            headers: self.headers.len(),
        })
    }
}

/// A kind of request match (HTTP or gRPC).
pub trait Match: Clone + std::fmt::Debug {
    type Score: Ord + Copy + std::fmt::Debug;
    /// The score of a rule that lists no matches.
    const IMPLICIT: Self::Score;
    fn score<B>(&self, req: &Request<B>) -> Option<Self::Score>;
}

impl Match for HttpMatch {
    type Score = HttpScore;
    const IMPLICIT: HttpScore = IMPLICIT_HTTP;
    fn score<B>(&self, req: &Request<B>) -> Option<HttpScore> {
        HttpMatch::score(self, req)
    }
}

impl Match for GrpcMatch {
    type Score = GrpcScore;
    const IMPLICIT: GrpcScore = IMPLICIT_GRPC;
    fn score<B>(&self, req: &Request<B>) -> Option<GrpcScore> {
        GrpcMatch::score(self, req)
    }
}

/// A rule: its matches (any one suffices; none matches everything) and what to do.
#[derive(Clone, Debug)]
pub struct Rule<M, P> {
    pub matches: Vec<M>,
    pub policy: P,
}

/// A route: the hosts it is for (none: any) and its rules. `R` is what the route itself
/// carries (its name, its authorizations...).
#[derive(Clone, Debug)]
pub struct Route<M, R, P> {
    pub hosts: Vec<HostMatch>,
    pub rules: Vec<Rule<M, P>>,
    pub route: R,
}

/// A route and the rule of it a request takes.
pub type Found<'a, M, R, P> = (&'a Route<M, R, P>, &'a Rule<M, P>);

/// The best route and rule of `routes` for `req`, whose host is `host` (the request's
/// authority without its port, or the connection's target when it has none).
pub fn find<'a, M: Match, R, P, B>(
    routes: &'a [Route<M, R, P>],
    host: &str,
    req: &Request<B>,
) -> Option<Found<'a, M, R, P>> {
    type Best<'a, M, R, P> = Option<((HostScore, <M as Match>::Score), Found<'a, M, R, P>)>;
    let mut best: Best<'a, M, R, P> = None;
    for route in routes {
        let host_score = if route.hosts.is_empty() {
            HostScore::Any
        } else {
            match route.hosts.iter().filter_map(|h| h.score(host)).max() {
                Some(s) => s,
                None => continue,
            }
        };
        for rule in &route.rules {
            let score = if rule.matches.is_empty() {
                Some(M::IMPLICIT)
            } else {
                rule.matches.iter().filter_map(|m| m.score(req)).max()
            };
            let Some(score) = score else { continue };
            let key = (host_score, score);
            // Strictly better only: on a tie the earlier route or rule stays.
            if best
                .as_ref()
                .is_none_or(|(b, _)| key.cmp(b) == Ordering::Greater)
            {
                best = Some((key, (route, rule)));
            }
        }
    }
    best.map(|(_, found)| found)
}

/// The host a request is for: its authority's (or `Host` header's) host, without the port.
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.starts_with('[') {
        return authority.split_once(']').map(|(h, _)| &h[1..]);
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

/// Compiling the protobuf forms (`io.linkerd.proxy.http_route`, `grpc_route`).
pub mod proto {
    use linkerd2_proxy_api::grpc_route as grpc;
    use linkerd2_proxy_api::http_route as pb;

    use super::*;

    /// Why a match could not be compiled.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum InvalidMatch {
        #[error("a host match names nothing")]
        NoHost,
        #[error("a path match has no kind")]
        NoPath,
        #[error("invalid regex {0:?}: {1}")]
        Regex(String, String),
        #[error("invalid header name {0:?}")]
        HeaderName(String),
        #[error("a header or query match has no value")]
        NoValue,
        #[error("invalid method: {0}")]
        Method(String),
    }

    fn regex(s: &str) -> Result<Regex, InvalidMatch> {
        // Bounded: a policy's regex must not cost unbounded memory to compile.
        regex::RegexBuilder::new(s)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| InvalidMatch::Regex(s.to_string(), e.to_string()))
    }

    pub fn host(h: &pb::HostMatch) -> Result<HostMatch, InvalidMatch> {
        match h.r#match.as_ref().ok_or(InvalidMatch::NoHost)? {
            pb::host_match::Match::Exact(e) => Ok(HostMatch::Exact(e.to_ascii_lowercase())),
            pb::host_match::Match::Suffix(s) => {
                let mut out = String::new();
                for label in s.reverse_labels.iter().rev() {
                    out.push('.');
                    out.push_str(&label.to_ascii_lowercase());
                }
                Ok(HostMatch::Suffix(out))
            }
        }
    }

    fn header(h: &pb::HeaderMatch) -> Result<HeaderMatch, InvalidMatch> {
        let name = HeaderName::try_from(h.name.as_str())
            .map_err(|_| InvalidMatch::HeaderName(h.name.clone()))?;
        let value = match h.value.as_ref().ok_or(InvalidMatch::NoValue)? {
            pb::header_match::Value::Exact(b) => ValueMatch::Exact(b.clone()),
            pb::header_match::Value::Regex(r) => ValueMatch::Regex(regex(r)?),
        };
        Ok(HeaderMatch { name, value })
    }

    pub fn http(m: &pb::HttpRouteMatch) -> Result<HttpMatch, InvalidMatch> {
        let path = match &m.path {
            None => None,
            Some(p) => Some(match p.kind.as_ref().ok_or(InvalidMatch::NoPath)? {
                pb::path_match::Kind::Exact(e) => PathMatch::Exact(e.clone()),
                pb::path_match::Kind::Prefix(p) => {
                    PathMatch::Prefix(p.trim_end_matches('/').to_string())
                }
                pb::path_match::Kind::Regex(r) => PathMatch::Regex(regex(r)?),
            }),
        };
        let headers = m.headers.iter().map(header).collect::<Result<_, _>>()?;
        let query = m
            .query_params
            .iter()
            .map(|q| {
                let value = match q.value.as_ref().ok_or(InvalidMatch::NoValue)? {
                    pb::query_param_match::Value::Exact(e) => {
                        ValueMatch::Exact(e.clone().into_bytes())
                    }
                    pb::query_param_match::Value::Regex(r) => ValueMatch::Regex(regex(r)?),
                };
                Ok(QueryMatch {
                    name: q.name.clone(),
                    value,
                })
            })
            .collect::<Result<_, InvalidMatch>>()?;
        let method = match &m.method {
            None => None,
            Some(mm) => Some(
                Method::try_from(mm.clone()).map_err(|e| InvalidMatch::Method(e.to_string()))?,
            ),
        };
        Ok(HttpMatch {
            path,
            headers,
            query,
            method,
        })
    }

    pub fn grpc(m: &grpc::GrpcRouteMatch) -> Result<GrpcMatch, InvalidMatch> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(GrpcMatch {
            service: m.rpc.as_ref().and_then(|r| non_empty(&r.service)),
            method: m.rpc.as_ref().and_then(|r| non_empty(&r.method)),
            headers: m.headers.iter().map(header).collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests;
