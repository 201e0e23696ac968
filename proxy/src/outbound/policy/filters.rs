//! Route and backend filters on a request and its response, as linkerd2-proxy applies them:
//! header modifiers (add, then set, then remove), a redirect (answered instead of the request
//! unless it would redirect to the same URI), a failure injector (for a share of requests).
//! Filters apply in order; the first that answers ends the request.

use std::num::NonZeroU16;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Response, StatusCode};

use super::{GrpcFilter, HttpFilter, Ratio};
use crate::error::RouteError;

/// A `RequestRedirect` filter, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<Scheme>,
    pub authority: Option<AuthorityOverride>,
    pub path: Option<ModifyPath>,
    /// 301 when unset.
    pub status: Option<StatusCode>,
}

/// What a redirect does to the authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorityOverride {
    /// `host:port`.
    Exact(Authority),
    /// The host, keeping the request's port unless it is the scheme's default.
    Host(Authority),
    /// The port, keeping the request's host.
    Port(NonZeroU16),
}

/// What a redirect does to the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModifyPath {
    Full(String),
    /// Replaces the part of the path the rule's prefix match matched.
    Prefix(String),
}

fn port_if_not_default(scheme: &Scheme, port: u16) -> Option<u16> {
    if (*scheme == Scheme::HTTP && port == 80) || (*scheme == Scheme::HTTPS && port == 443) {
        return None;
    }
    Some(port)
}

impl Redirect {
    /// Where `uri` (absolute) is redirected, given the length of the prefix the rule's match
    /// matched (`None`: it was not a prefix match); `Ok(None)` when the location would be `uri`
    /// itself.
    pub fn apply(
        &self,
        uri: &Uri,
        prefix: Option<usize>,
    ) -> Result<Option<(StatusCode, Uri)>, &'static str> {
        let scheme = self
            .scheme
            .clone()
            .or_else(|| uri.scheme().cloned())
            .unwrap_or(Scheme::HTTP);
        let authority = self.authority(uri, &scheme)?;
        let path = self.path_and_query(uri, prefix)?;
        let location = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| "the redirect's location is not a valid URI")?;
        if &location == uri {
            return Ok(None);
        }
        Ok(Some((
            self.status.unwrap_or(StatusCode::MOVED_PERMANENTLY),
            location,
        )))
    }

    fn authority(&self, uri: &Uri, scheme: &Scheme) -> Result<Authority, &'static str> {
        const NONE: &str = "no authority to redirect to";
        const BAD: &str = "the redirect's authority is invalid";
        match &self.authority {
            None => uri.authority().cloned().ok_or(NONE),
            Some(AuthorityOverride::Exact(a)) => Ok(a.clone()),
            Some(AuthorityOverride::Host(h)) => {
                match uri.port_u16().and_then(|p| port_if_not_default(scheme, p)) {
                    Some(p) => format!("{h}:{p}").parse().map_err(|_| BAD),
                    None => Ok(h.clone()),
                }
            }
            Some(AuthorityOverride::Port(p)) => match port_if_not_default(scheme, p.get()) {
                Some(p) if Some(p) != uri.port_u16() => {
                    let h = uri.host().ok_or(NONE)?;
                    format!("{h}:{p}").parse().map_err(|_| BAD)
                }
                None if uri.port().is_some() => uri.host().ok_or(NONE)?.parse().map_err(|_| BAD),
                _ => uri.authority().cloned().ok_or(NONE),
            },
        }
    }

    fn path_and_query(
        &self,
        uri: &Uri,
        prefix: Option<usize>,
    ) -> Result<PathAndQuery, &'static str> {
        const BAD: &str = "the redirect's path is invalid";
        match &self.path {
            None => Ok(uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))),
            Some(ModifyPath::Full(p)) => p.parse().map_err(|_| BAD),
            Some(ModifyPath::Prefix(new)) => match prefix {
                Some(len) if len <= uri.path().len() => {
                    let mut path = new.clone();
                    let rest = &uri.path()[len..];
                    if !rest.is_empty() && !rest.starts_with('/') {
                        path.push('/');
                    }
                    path.push_str(rest);
                    if let Some(q) = uri.query() {
                        path.push('?');
                        path.push_str(q);
                    }
                    path.parse().map_err(|_| BAD)
                }
                _ => Err(
                    "redirects may only replace the path prefix when a path prefix match applied",
                ),
            },
        }
    }
}

/// Whether a draw `r` (uniform over `u64`) falls within `ratio`.
pub fn sample(ratio: Ratio, r: u64) -> bool {
    if ratio.numerator >= ratio.denominator {
        return true;
    }
    super::attempts::below(r, u64::from(ratio.denominator)) < u64::from(ratio.numerator)
}

/// The request's URI as an absolute one (redirects are built from it): its own when absolute,
/// else with the `Host` header's authority.
pub fn absolute_uri<B>(req: &Request<B>) -> Option<Uri> {
    let uri = req.uri();
    if uri.authority().is_some() {
        if uri.scheme().is_some() {
            return Some(uri.clone());
        }
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        return Uri::from_parts(parts).ok();
    }
    let host = req.headers().get(http::header::HOST)?.to_str().ok()?;
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(host.parse().ok()?);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).ok()
}

/// Applies HTTP filters to a request: modifies its headers, or answers instead (a redirect,
/// an injected failure). `prefix` is the length of the matched prefix, for redirects; `draw`
/// gives random numbers for failure injection.
pub fn apply_http_request<B>(
    filters: &[HttpFilter],
    req: &mut Request<B>,
    prefix: Option<usize>,
    mut draw: impl FnMut() -> u64,
) -> Result<(), RouteError> {
    for f in filters {
        match f {
            HttpFilter::RequestHeaders(m) => m.apply(req.headers_mut()),
            HttpFilter::ResponseHeaders(_) => {}
            HttpFilter::Inject {
                status,
                message,
                ratio,
            } => {
                if sample(*ratio, draw()) {
                    return Err(RouteError::Injected {
                        status: *status,
                        message: message.clone(),
                    });
                }
            }
            HttpFilter::Redirect(r) => {
                let Some(uri) = absolute_uri(req) else {
                    return Err(RouteError::InvalidRedirect("no authority to redirect to"));
                };
                match r.apply(&uri, prefix) {
                    Ok(Some((status, location))) => {
                        let location = HeaderValue::try_from(location.to_string())
                            .map_err(|_| RouteError::InvalidRedirect("an invalid location"))?;
                        return Err(RouteError::Redirect { status, location });
                    }
                    Ok(None) => tracing::debug!("ignoring a redirect to the same URI"),
                    Err(why) => return Err(RouteError::InvalidRedirect(why)),
                }
            }
        }
    }
    Ok(())
}

/// Applies HTTP filters to a response (response header modifiers).
pub fn apply_http_response<B>(filters: &[HttpFilter], rsp: &mut Response<B>) {
    for f in filters {
        if let HttpFilter::ResponseHeaders(m) = f {
            m.apply(rsp.headers_mut());
        }
    }
}

/// Applies gRPC filters to a request.
pub fn apply_grpc_request<B>(
    filters: &[GrpcFilter],
    req: &mut Request<B>,
    mut draw: impl FnMut() -> u64,
) -> Result<(), RouteError> {
    for f in filters {
        match f {
            GrpcFilter::RequestHeaders(m) => m.apply(req.headers_mut()),
            GrpcFilter::Inject {
                code,
                message,
                ratio,
            } => {
                if sample(*ratio, draw()) {
                    return Err(RouteError::GrpcInjected {
                        code: *code,
                        message: Arc::clone(message),
                    });
                }
            }
        }
    }
    Ok(())
}
