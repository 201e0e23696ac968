//! Routing one HTTP or gRPC request by its target's outbound policy.
//!
//! A connection knows where its requests' policy comes from ([`ConnPolicies`]): a redirected
//! connection's original destination (watched once, at its start), or, for explicit and
//! ingress requests that name their target, the named target (looked up per request, the
//! connection remembering the last one). A target without a policy costs its requests nothing.
//!
//! A request with a policy takes the best route of the policy's protocol (host, then its
//! matches, `crate::policy::route`); none matches: 404 (gRPC `NOT_FOUND`). The route's rule
//! then runs its attempts (`super::attempts`).

use std::sync::{Arc, Mutex};

use http::{Request, Response, Version, header};

use super::attempts::RuleCtx;
use super::client::{ConnPolicy, PolicyClient};
use super::{HttpOrGrpc, OutboundPolicy, PolicyTarget};
use crate::error::{self, RouteError};
use crate::http::Body;
use crate::outbound::http::{Dispatched, HttpOutbound};
use crate::policy::route::{self, HttpMatch, Match, PathMatch, Rule};

/// Where a connection's requests find their policy.
#[derive(Debug, Clone)]
pub enum ConnPolicies {
    /// No policy service, or the connection's target has no policy.
    None,
    /// A redirected connection to a target with a policy.
    Fixed(Arc<ConnPolicy>),
    /// Explicit (or ingress) requests: the policy of the target each names.
    ByTarget(Arc<LastTarget>),
}

/// The last target a connection's requests named, and its policy (`None`: it has none).
#[derive(Debug, Default)]
pub struct LastTarget(Mutex<Option<(PolicyTarget, Option<Arc<ConnPolicy>>)>>);

impl ConnPolicies {
    /// The policy of a request for `named` (explicit and ingress requests), else of the
    /// connection's target.
    pub async fn policy(
        &self,
        client: Option<&PolicyClient>,
        named: Option<PolicyTarget>,
    ) -> Option<Arc<OutboundPolicy>> {
        let client = client?;
        match self {
            ConnPolicies::None => None,
            ConnPolicies::Fixed(p) => p.current(client),
            ConnPolicies::ByTarget(last) => {
                let key = named?;
                let cached = last.0.lock().ok().and_then(|l| match &*l {
                    Some((k, p)) if *k == key => Some(p.clone()),
                    _ => None,
                });
                let conn = match cached {
                    Some(p) => p,
                    None => {
                        let p = client
                            .get(&key)
                            .await
                            .map(|rx| Arc::new(ConnPolicy::new(key.clone(), rx)));
                        if let Ok(mut l) = last.0.lock() {
                            *l = Some((key, p.clone()));
                        }
                        p
                    }
                };
                conn?.current(client)
            }
        }
    }
}

/// Whether a request is gRPC: HTTP/2 with an `application/grpc` content type.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The length of the path prefix the best of `rule`'s matches matched (a rule without
/// matches, or a match without a path, matches the prefix `/`); `None` when the best match is
/// not a prefix match.
fn matched_prefix<P, B>(rule: &Rule<HttpMatch, P>, req: &Request<B>) -> Option<usize> {
    if rule.matches.is_empty() {
        return Some(1);
    }
    let mut best: Option<(<HttpMatch as Match>::Score, &HttpMatch)> = None;
    for m in &rule.matches {
        if let Some(s) = Match::score(m, req)
            && best.as_ref().is_none_or(|(b, _)| s > *b)
        {
            best = Some((s, m));
        }
    }
    match &best?.1.path {
        None => Some(1),
        Some(PathMatch::Prefix(p)) => Some(p.len().max(1)),
        Some(_) => None,
    }
}

impl HttpOutbound {
    /// Routes `req` by `policy` when the policy has routes for its protocol (a connection's
    /// protocol is settled when it opens; a later policy of another protocol is not applied to
    /// it); hands `req` back otherwise.
    pub(in crate::outbound) async fn route_by_policy<B>(
        &self,
        policy: &Arc<OutboundPolicy>,
        req: Request<B>,
        done: &mut Dispatched<'_>,
    ) -> Result<Response<Body>, Request<B>>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<crate::http::BoxError>,
    {
        let Some(routes) = policy.http(req.version() == Version::HTTP_2) else {
            return Err(req);
        };
        let grpc_request = is_grpc(&req);
        let host = route::request_host(&req).unwrap_or("");
        let no_route = || {
            error::respond_route(
                RouteError::NoRoute,
                &self.ctx.inputs.http_metrics,
                grpc_request,
                true,
            )
        };
        Ok(match routes {
            HttpOrGrpc::Http(r) => {
                let Some((route, rule)) = route::find(&r.routes, host, &req) else {
                    return Ok(no_route());
                };
                if done.traced {
                    done.route = Some(route.route.clone());
                }
                let cx = RuleCtx {
                    parent: &policy.parent,
                    route: &route.route,
                    rule: &rule.policy,
                    accrual: r.accrual,
                    prefix: matched_prefix(rule, &req),
                    grpc_request,
                };
                self.run_rule(cx, req, done).await
            }
            HttpOrGrpc::Grpc(r) => {
                let Some((route, rule)) = route::find(&r.routes, host, &req) else {
                    return Ok(no_route());
                };
                if done.traced {
                    done.route = Some(route.route.clone());
                }
                let cx = RuleCtx {
                    parent: &policy.parent,
                    route: &route.route,
                    rule: &rule.policy,
                    accrual: r.accrual,
                    prefix: None,
                    grpc_request,
                };
                self.run_rule(cx, req, done).await
            }
        })
    }
}
