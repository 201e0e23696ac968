//! What an inbound route's rule does to a request before it goes on: modify its headers,
//! answer a redirect, or inject a failure (linkerd2-proxy's inbound filters). A filter the
//! proxy does not know makes the rule answer 500.
//!
//! Filters are compiled once, when a policy arrives; applying one touches only the request.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use linkerd2_proxy_api::{grpc_route as grpc_pb, http_route as pb, http_types};

/// An HTTP route rule's filter.
#[derive(Debug)]
pub enum HttpFilter {
    RequestHeaders(ModifyHeaders),
    Redirect(Redirect),
    Fail(Failure<StatusCode>),
    /// A filter of a kind this proxy does not know: the request is answered 500.
    Internal(&'static str),
}

/// A gRPC route rule's filter.
#[derive(Debug)]
pub enum GrpcFilter {
    RequestHeaders(ModifyHeaders),
    /// The gRPC status code to answer with.
    Fail(Failure<u16>),
    Internal(&'static str),
}

/// The message of a filter of unknown kind (linkerd2-proxy's).
pub const UNKNOWN_FILTER: &str = "server policy configured with unknown filter";

/// Adds, then sets, then removes request headers.
#[derive(Debug, Default)]
pub struct ModifyHeaders {
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl ModifyHeaders {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// Answers with a failure for a ratio of requests.
#[derive(Debug)]
pub struct Failure<C> {
    pub response: C,
    pub message: Arc<str>,
    numerator: u32,
    denominator: u32,
    rng: AtomicU64,
}

impl<C: Copy> Failure<C> {
    /// The failure to answer with, if this request is among the ratio.
    pub fn sample(&self) -> Option<(C, Arc<str>)> {
        let fail = self.numerator >= self.denominator
            || (crate::discovery::balance::xorshift(&self.rng) % u64::from(self.denominator))
                < u64::from(self.numerator);
        fail.then(|| (self.response, self.message.clone()))
    }
}

/// A redirect: the parts of the location that replace the request's.
#[derive(Debug, Default)]
pub struct Redirect {
    pub scheme: Option<Scheme>,
    pub authority: Option<AuthorityOverride>,
    pub path: Option<ModifyPath>,
    /// Unset: 301.
    pub status: Option<StatusCode>,
}

/// How a redirect changes the authority.
#[derive(Debug)]
pub enum AuthorityOverride {
    /// Host and port.
    Exact(Authority),
    /// The host, keeping the request's port unless it is the scheme's default.
    Host(Authority),
    /// The port, keeping the request's host.
    Port(NonZeroU16),
}

/// How a redirect changes the path.
#[derive(Debug)]
pub enum ModifyPath {
    Full(String),
    /// Replaces the prefix the rule's path match matched (only with a prefix match).
    Prefix(String),
}

/// Why a redirect cannot be built for a request (answered 500).
#[derive(Debug, thiserror::Error)]
pub enum InvalidRedirect {
    #[error("redirects may only replace the path prefix when a path prefix match applied")]
    ReplacePrefix,
    #[error("redirect produced an invalid location: {0}")]
    Location(#[from] http::Error),
    #[error("redirect produced an invalid authority: {0}")]
    Authority(#[from] http::uri::InvalidUri),
    #[error("no authority to redirect to")]
    MissingAuthority,
}

/// What the rule's path match matched: its prefix length, when it was a prefix match (a rule
/// or match without a path match counts as the prefix `/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedPath {
    Prefix(usize),
    Other,
}

impl Redirect {
    /// The redirect's status and location for a request to `orig` (its URI made absolute), or
    /// `None` when the location is the request's own URI (the filter does not apply).
    pub fn apply(
        &self,
        orig: &Uri,
        matched: MatchedPath,
    ) -> Result<Option<(StatusCode, Uri)>, InvalidRedirect> {
        let scheme = self
            .scheme
            .clone()
            .or_else(|| orig.scheme().cloned())
            .unwrap_or(Scheme::HTTP);
        let authority = self.authority(orig, &scheme)?;
        let location = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(self.path_and_query(orig, matched)?)
            .build()?;
        if &location == orig {
            return Ok(None);
        }
        Ok(Some((
            self.status.unwrap_or(StatusCode::MOVED_PERMANENTLY),
            location,
        )))
    }

    fn authority(&self, orig: &Uri, scheme: &Scheme) -> Result<Authority, InvalidRedirect> {
        let not_default = |port: u16| {
            let default = (*scheme == Scheme::HTTP && port == 80)
                || (*scheme == Scheme::HTTPS && port == 443);
            (!default).then_some(port)
        };
        match &self.authority {
            None => orig
                .authority()
                .cloned()
                .ok_or(InvalidRedirect::MissingAuthority),
            Some(AuthorityOverride::Exact(a)) => Ok(a.clone()),
            Some(AuthorityOverride::Host(h)) => match orig.port_u16().and_then(not_default) {
                Some(p) => Ok(format!("{h}:{p}").parse()?),
                None => Ok(h.clone()),
            },
            Some(AuthorityOverride::Port(p)) => {
                let host = || orig.host().ok_or(InvalidRedirect::MissingAuthority);
                match not_default(p.get()) {
                    Some(p) if Some(p) != orig.port_u16() => {
                        Ok(format!("{}:{p}", host()?).parse()?)
                    }
                    None if orig.port().is_some() => Ok(host()?.parse()?),
                    _ => orig
                        .authority()
                        .cloned()
                        .ok_or(InvalidRedirect::MissingAuthority),
                }
            }
        }
    }

    fn path_and_query(
        &self,
        orig: &Uri,
        matched: MatchedPath,
    ) -> Result<PathAndQuery, InvalidRedirect> {
        match &self.path {
            None => Ok(orig
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))),
            Some(ModifyPath::Full(p)) => Ok(p.parse()?),
            Some(ModifyPath::Prefix(new)) => match matched {
                MatchedPath::Prefix(len) if len <= orig.path().len() => {
                    let mut path = new.clone();
                    let rest = &orig.path()[len..];
                    if !rest.is_empty() && !rest.starts_with('/') {
                        path.push('/');
                    }
                    path.push_str(rest);
                    if let Some(q) = orig.query() {
                        path.push('?');
                        path.push_str(q);
                    }
                    Ok(path.parse()?)
                }
                _ => Err(InvalidRedirect::ReplacePrefix),
            },
        }
    }
}

/// Why a filter could not be compiled: the whole `Server` is refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidFilter {
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid value of header {0:?}")]
    HeaderValue(String),
    #[error("invalid redirect scheme: {0}")]
    Scheme(String),
    #[error("redirect port {0} is not a port")]
    Port(u32),
    #[error("invalid redirect host {0:?}")]
    Host(String),
    #[error("redirect paths must be absolute: {0:?}")]
    RelativePath(String),
    #[error("invalid status {0}")]
    Status(u32),
    #[error("invalid gRPC status code {0}")]
    Code(u32),
    #[error("invalid failure ratio {0}/{1}")]
    Ratio(u32, u32),
}

/// Compiling the protobuf forms (`io.linkerd.proxy.http_route`, `grpc_route`).
pub mod proto {
    use super::*;

    fn pairs(
        h: &Option<http_types::Headers>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, InvalidFilter> {
        h.iter()
            .flat_map(|h| h.headers.iter())
            .map(|h| {
                let name = HeaderName::try_from(h.name.as_str())
                    .map_err(|_| InvalidFilter::HeaderName(h.name.clone()))?;
                let value = HeaderValue::from_bytes(&h.value)
                    .map_err(|_| InvalidFilter::HeaderValue(h.name.clone()))?;
                Ok((name, value))
            })
            .collect()
    }

    pub fn modify_headers(m: &pb::RequestHeaderModifier) -> Result<ModifyHeaders, InvalidFilter> {
        Ok(ModifyHeaders {
            add: pairs(&m.add)?,
            set: pairs(&m.set)?,
            remove: m
                .remove
                .iter()
                .map(|n| {
                    HeaderName::try_from(n.as_str())
                        .map_err(|_| InvalidFilter::HeaderName(n.clone()))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    fn status(s: u32) -> Result<StatusCode, InvalidFilter> {
        u16::try_from(s)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or(InvalidFilter::Status(s))
    }

    pub fn redirect(r: &pb::RequestRedirect) -> Result<Redirect, InvalidFilter> {
        let scheme = match &r.scheme {
            None => None,
            Some(s) => Some(
                Scheme::try_from(s.clone()).map_err(|e| InvalidFilter::Scheme(e.to_string()))?,
            ),
        };
        let port = u16::try_from(r.port).map_err(|_| InvalidFilter::Port(r.port))?;
        let host = |a: String| a.parse::<Authority>().map_err(|_| InvalidFilter::Host(a));
        let authority = match (r.host.as_str(), NonZeroU16::new(port)) {
            ("", p) => p.map(AuthorityOverride::Port),
            (h, Some(p)) => Some(AuthorityOverride::Exact(host(format!("{h}:{p}"))?)),
            (h, None) => Some(AuthorityOverride::Host(host(h.to_string())?)),
        };
        let path = match r.path.as_ref().and_then(|p| p.replace.as_ref()) {
            None => None,
            Some(pb::path_modifier::Replace::Full(p)) if p.starts_with('/') => {
                Some(ModifyPath::Full(p.clone()))
            }
            Some(pb::path_modifier::Replace::Prefix(p)) if p.starts_with('/') => {
                Some(ModifyPath::Prefix(p.clone()))
            }
            Some(pb::path_modifier::Replace::Full(p) | pb::path_modifier::Replace::Prefix(p)) => {
                return Err(InvalidFilter::RelativePath(p.clone()));
            }
        };
        Ok(Redirect {
            scheme,
            authority,
            path,
            status: match r.status {
                0 => None,
                s => Some(status(s)?),
            },
        })
    }

    fn failure<C>(
        response: C,
        message: &str,
        ratio: Option<&pb::Ratio>,
    ) -> Result<Failure<C>, InvalidFilter> {
        let (numerator, denominator) = ratio.map_or((1, 1), |r| (r.numerator, r.denominator));
        if denominator == 0 || numerator > denominator {
            return Err(InvalidFilter::Ratio(numerator, denominator));
        }
        Ok(Failure {
            response,
            message: Arc::from(message),
            numerator,
            denominator,
            rng: AtomicU64::new(seed()),
        })
    }

    /// A seed for a filter's draws: the clock's low bits (any odd value will do).
    fn seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        nanos | 1
    }

    pub fn http(
        f: &linkerd2_proxy_api::inbound::http_route::Filter,
    ) -> Result<HttpFilter, InvalidFilter> {
        use linkerd2_proxy_api::inbound::http_route::filter::Kind;
        Ok(match &f.kind {
            Some(Kind::RequestHeaderModifier(m)) => HttpFilter::RequestHeaders(modify_headers(m)?),
            Some(Kind::Redirect(r)) => HttpFilter::Redirect(redirect(r)?),
            Some(Kind::FailureInjector(fi)) => {
                HttpFilter::Fail(failure(status(fi.status)?, &fi.message, fi.ratio.as_ref())?)
            }
            None => HttpFilter::Internal(UNKNOWN_FILTER),
        })
    }

    pub fn grpc(
        f: &linkerd2_proxy_api::inbound::grpc_route::Filter,
    ) -> Result<GrpcFilter, InvalidFilter> {
        use linkerd2_proxy_api::inbound::grpc_route::filter::Kind;
        Ok(match &f.kind {
            Some(Kind::RequestHeaderModifier(m)) => GrpcFilter::RequestHeaders(modify_headers(m)?),
            Some(Kind::FailureInjector(fi)) => {
                let fi: &grpc_pb::GrpcFailureInjector = fi;
                let code = u16::try_from(fi.code).map_err(|_| InvalidFilter::Code(fi.code))?;
                GrpcFilter::Fail(failure(code, &fi.message, fi.ratio.as_ref())?)
            }
            None => GrpcFilter::Internal(UNKNOWN_FILTER),
        })
    }
}
