//! Enforcing a port's policy on one connection, as linkerd2-proxy does:
//!
//! - **HTTP**, per request, against the port's current policy (an edit applies to the next
//!   request): the best route (none: 404), the first of its authorizations that admits the
//!   client (none: 403), the rule's filters (headers, a redirect, an injected failure), then
//!   the server's rate limit (429). Each outcome is counted in Linkerd's families and refusals
//!   are logged at INFO with the server, the route, the client's identity and address.
//! - **TCP**, when the connection is accepted: the first of the server's authorizations that
//!   admits the client (none: closed without a byte), and again at every change of the port's
//!   policy while the connection is open; no longer admitted, it is closed.
//!
//! A request that is allowed costs a route lookup over compiled routes, an authorization scan
//! and, for the counter, one comparison with the connection's last permit: no allocation.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::Request;
use remora_metrics::inbound_policy::{
    ClientTls as TlsLabel, Handle, InboundPolicyMetrics, Object, ServerLabels,
};
use tracing::{debug, info};

use super::PolicyRx;
use super::filter::{GrpcFilter, HttpFilter, MatchedPath};
use super::server::{Authz, Client, Denied, GrpcRoute, RouteInfo, Routes, ServerPolicy, authorize};
use crate::error::PolicyRefusal;
use crate::policy::route::{self, HttpMatch, Match, PathMatch};

/// The policy side of one inbound connection.
#[derive(Debug)]
pub struct ConnPolicy {
    /// The port's policy, as it changes.
    pub policy: PolicyRx,
    pub client: Client,
    /// The connection's original destination.
    pub target: SocketAddr,
    /// The client's TLS as the policy families label it.
    pub tls: TlsLabel,
    pub metrics: InboundPolicyMetrics,
    /// The last allowed request's policy, route, authorization and counter: most requests of
    /// a connection take the same route, so most count with one atomic add.
    last: Mutex<Option<LastAllow>>,
}

/// What admitted a request: the port's server, the route it took and the authorization that
/// allowed it, as the golden metrics label it.
#[derive(Clone, Debug)]
pub struct Permit {
    pub server: Arc<Object>,
    pub route: Arc<Object>,
    pub authz: Arc<Object>,
}

#[derive(Debug)]
struct LastAllow {
    /// Held, so the addresses below cannot be reused by another policy.
    server: Arc<ServerPolicy>,
    route: usize,
    authz: usize,
    counter: Handle,
}

impl ConnPolicy {
    pub fn new(
        policy: PolicyRx,
        client: Client,
        target: SocketAddr,
        tls: TlsLabel,
        metrics: InboundPolicyMetrics,
    ) -> Self {
        ConnPolicy {
            policy,
            client,
            target,
            tls,
            metrics,
            last: Mutex::new(None),
        }
    }

    fn labels(&self, server: &ServerPolicy) -> ServerLabels {
        ServerLabels {
            target: self.target,
            server: server.labels.clone(),
            tls: self.tls.clone(),
        }
    }

    fn client_id(&self) -> &str {
        self.client.id().map_or("", |id| id.as_str())
    }

    // ---- TCP ----

    /// Whether the port's current policy would admit the connection as TCP, counting and
    /// logging nothing (the early dial asks before [`Self::authorize_tcp`] decides).
    pub fn admits_tcp(&self) -> bool {
        let server = self.policy.borrow().clone();
        server.authorize_tcp(&self.client).is_ok()
    }

    /// Whether the connection may be forwarded under the port's current policy: counted, and
    /// logged when denied or allowed by an audit authorization.
    pub fn authorize_tcp(&self) -> Result<(), Denied> {
        let server = self.policy.borrow().clone();
        let labels = self.labels(&server);
        match server.authorize_tcp(&self.client) {
            Ok(authz) => {
                self.metrics.tcp_allow(&labels, &authz.labels);
                if authz.is_audit() {
                    info!(
                        server = %server.meta,
                        authz = %authz.meta,
                        client.id = %self.client_id(),
                        client.addr = %self.client.addr,
                        "connection allowed by the audit policy"
                    );
                }
                debug!(server = %server.meta, authz = %authz.meta, "connection authorized");
                Ok(())
            }
            Err(denied) => {
                self.metrics.tcp_deny(&labels);
                info!(
                    server = %server.meta,
                    protocol = server.protocol.name(),
                    client.id = %self.client_id(),
                    client.addr = %self.client.addr,
                    reason = %denied,
                    "connection refused by policy"
                );
                Err(denied)
            }
        }
    }

    /// Resolves when a change of the port's policy no longer admits the connection (counted
    /// and logged); never while it does.
    pub async fn revoked(&self) {
        let mut rx = self.policy.clone();
        rx.mark_unchanged();
        loop {
            if rx.changed().await.is_err() {
                // The watch ended: the policy stays what it is.
                return std::future::pending().await;
            }
            let server = rx.borrow_and_update().clone();
            if let Err(denied) = server.authorize_tcp(&self.client) {
                self.metrics.tcp_terminate(&self.labels(&server));
                info!(
                    server = %server.meta,
                    client.id = %self.client_id(),
                    client.addr = %self.client.addr,
                    reason = %denied,
                    "connection terminated due to policy change"
                );
                return;
            }
        }
    }

    // ---- HTTP ----

    /// Checks one request against the port's current policy and applies its route's filters;
    /// `Ok` names what admitted it, `Err` is what to answer instead of the app.
    pub fn check<B>(&self, req: &mut Request<B>) -> Result<Permit, PolicyRefusal> {
        let server = self.policy.borrow().clone();
        // An IP address (or no host) matches only routes without hosts.
        let host = route::request_host(req).unwrap_or("");
        let (route_info, authz) = match server.routes() {
            None => return Err(self.not_found(&server)),
            Some(Routes::Http(routes)) => {
                let (route, rule) =
                    route::find(routes, host, req).ok_or_else(|| self.not_found(&server))?;
                let authz = self.authorize(&server, &route.route)?;
                http_filters(rule, req)?;
                (&route.route, authz)
            }
            Some(Routes::Grpc(routes)) => {
                let (route, rule): (&GrpcRoute, _) =
                    route::find(routes, host, req).ok_or_else(|| self.not_found(&server))?;
                let authz = self.authorize(&server, &route.route)?;
                grpc_filters(&rule.policy, req)?;
                (&route.route, authz)
            }
        };
        if let Some(limit) = &server.rate_limit
            && let Err(limited) = limit.check(self.client.id().map(|id| id.as_str()))
        {
            self.metrics.ratelimited(
                &self.labels(&server),
                limit.labels.as_ref(),
                limited.scope(),
            );
            info!(
                server = %server.meta,
                route = %route_info.meta,
                client.id = %self.client_id(),
                client.addr = %self.client.addr,
                "{limited}"
            );
            return Err(PolicyRefusal::RateLimited(limited));
        }
        Ok(Permit {
            server: server.labels.clone(),
            route: route_info.labels.clone(),
            authz,
        })
    }

    /// [`check`](Self::check) without the permit, for tests.
    #[cfg(test)]
    pub(crate) fn admits<B>(&self, req: &mut Request<B>) -> Result<(), PolicyRefusal> {
        self.check(req).map(|_| ())
    }

    fn not_found(&self, server: &ServerPolicy) -> PolicyRefusal {
        self.metrics.route_not_found(&self.labels(server));
        debug!(server = %server.meta, "no route found for request");
        PolicyRefusal::RouteNotFound
    }

    /// The first of the route's authorizations that admits the client, counted (its labels
    /// returned); or the 403.
    fn authorize(
        &self,
        server: &Arc<ServerPolicy>,
        route: &RouteInfo,
    ) -> Result<Arc<Object>, PolicyRefusal> {
        let Some(authz) = authorize(&route.authzs, &self.client) else {
            let denied = super::server::explain(&route.authzs, &self.client);
            self.metrics.http_deny(&self.labels(server), &route.labels);
            info!(
                server = %server.meta,
                route = %route.meta,
                client.id = %self.client_id(),
                client.addr = %self.client.addr,
                reason = %denied,
                "request refused by policy"
            );
            return Err(PolicyRefusal::Unauthorized(denied));
        };
        self.count_allow(server, route, authz);
        if authz.is_audit() {
            info!(
                server = %server.meta,
                route = %route.meta,
                authz = %authz.meta,
                client.id = %self.client_id(),
                client.addr = %self.client.addr,
                "request allowed by the audit policy"
            );
        }
        Ok(authz.labels.clone())
    }

    fn count_allow(&self, server: &Arc<ServerPolicy>, route: &RouteInfo, authz: &Authz) {
        let (r, a) = (
            route as *const RouteInfo as usize,
            authz as *const Authz as usize,
        );
        let Ok(mut last) = self.last.lock() else {
            self.metrics
                .http_allow(&self.labels(server), &route.labels, &authz.labels);
            return;
        };
        if let Some(l) = last.as_ref()
            && Arc::ptr_eq(&l.server, server)
            && l.route == r
            && l.authz == a
        {
            l.counter.inc();
            return;
        }
        let counter = self
            .metrics
            .http_allow(&self.labels(server), &route.labels, &authz.labels);
        *last = Some(LastAllow {
            server: server.clone(),
            route: r,
            authz: a,
            counter,
        });
    }
}

/// What the rule's winning match matched of the path, for a prefix redirect: the match of
/// the rule that scores best (the last of equals, as the route lookup counts them).
fn matched_path<B>(matches: &[HttpMatch], req: &Request<B>) -> MatchedPath {
    let best = matches
        .iter()
        .filter_map(|m| Match::score(m, req).map(|s| (s, m)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, m)| m);
    match best.map(|m| &m.path) {
        None | Some(None) => MatchedPath::Prefix(1),
        Some(Some(PathMatch::Prefix(p))) => MatchedPath::Prefix(p.len().max(1)),
        Some(Some(_)) => MatchedPath::Other,
    }
}

/// Applies an HTTP rule's filters in order; the first that answers ends it.
fn http_filters<B>(
    rule: &route::Rule<HttpMatch, Vec<HttpFilter>>,
    req: &mut Request<B>,
) -> Result<(), PolicyRefusal> {
    let redirects = rule
        .policy
        .iter()
        .any(|f| matches!(f, HttpFilter::Redirect(_)));
    let matched = if redirects {
        matched_path(&rule.matches, req)
    } else {
        MatchedPath::Other
    };
    for filter in &rule.policy {
        match filter {
            HttpFilter::RequestHeaders(m) => m.apply(req.headers_mut()),
            HttpFilter::Fail(f) => {
                if let Some((status, message)) = f.sample() {
                    return Err(PolicyRefusal::Injected(status, message));
                }
            }
            HttpFilter::Redirect(r) => match r.apply(&absolute_uri(req), matched) {
                Ok(Some((status, location))) => {
                    return Err(PolicyRefusal::Redirect { status, location });
                }
                Ok(None) => debug!("ignoring a redirect to the request's own URI"),
                Err(e) => return Err(PolicyRefusal::InvalidRedirect(e.to_string())),
            },
            HttpFilter::Internal(msg) => return Err(PolicyRefusal::InvalidPolicy(msg)),
        }
    }
    Ok(())
}

fn grpc_filters<B>(filters: &[GrpcFilter], req: &mut Request<B>) -> Result<(), PolicyRefusal> {
    for filter in filters {
        match filter {
            GrpcFilter::RequestHeaders(m) => m.apply(req.headers_mut()),
            GrpcFilter::Fail(f) => {
                if let Some((code, message)) = f.sample() {
                    return Err(PolicyRefusal::GrpcInjected(code, message));
                }
            }
            GrpcFilter::Internal(msg) => return Err(PolicyRefusal::InvalidPolicy(msg)),
        }
    }
    Ok(())
}

/// The request's URI as linkerd2-proxy's inbound normalizes it before a redirect: a scheme
/// (`http`) and an authority (the URI's, else `Host`'s).
fn absolute_uri<B>(req: &Request<B>) -> http::Uri {
    let uri = req.uri();
    if uri.scheme().is_some() && uri.authority().is_some() {
        return uri.clone();
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    if parts.authority.is_none() {
        parts.authority = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok());
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}
