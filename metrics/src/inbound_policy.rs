//! Linkerd's inbound policy families, in linkerd2-proxy's names and label order: HTTP requests
//! an authorization allowed or none did, requests no route matched, requests a local rate limit
//! refused, TCP connections allowed and denied, and TCP connections closed because a policy
//! change no longer admitted them.
//!
//! | Family | Labels |
//! |---|---|
//! | `inbound_http_authz_allow_total` | target, server, route, authorization, TLS |
//! | `inbound_http_authz_deny_total` | target, server, route, TLS |
//! | `inbound_http_route_not_found_total` | target, server, TLS |
//! | `inbound_http_local_ratelimit_total` | target, server, rate limit (and `ratelimit_scope`), TLS |
//! | `inbound_tcp_authz_allow_total` | target, server, authorization, TLS |
//! | `inbound_tcp_authz_deny_total` | target, server, TLS |
//! | `inbound_tcp_authz_terminate_total` | target, server, TLS |
//!
//! Target is `target_addr`, `target_ip`, `target_port` (the original destination); server is
//! `srv_group`, `srv_kind`, `srv_name`, `srv_port`; route `route_*` and authorization `authz_*`
//! the same three; TLS is `tls="true",client_id=...`, `tls="no_identity",no_tls_reason=...`,
//! `tls="opaque",sni=...` or `tls="disabled"`.
//!
//! Every family is a bounded store ([`crate::bounded`]) under the proxy-wide series cap. An
//! allowed request's counter is a [`Handle`] a connection keeps: counting the next request of
//! the same route and authorization is one atomic add. Policy objects are named by shared
//! [`Object`]s built once per policy, so building a key clones `Arc`s and allocates nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::registry::Registry;

use crate::bounded::{Slot, Store};
use crate::series::SeriesLimits;

/// A policy object's name as labels: group, kind, name (`""`, `default`, `audit`; or
/// `policy.linkerd.io`, `server`, `web-http`).
#[derive(Debug, Hash, PartialEq, Eq)]
pub struct Object {
    pub group: Box<str>,
    pub kind: Box<str>,
    pub name: Box<str>,
}

impl Object {
    pub fn new(group: &str, kind: &str, name: &str) -> Arc<Self> {
        Arc::new(Object {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
        })
    }

    fn encode(&self, prefix: Prefix, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        let [g, k, n] = prefix.names();
        (g, &*self.group).encode(encoder.encode_label())?;
        (k, &*self.kind).encode(encoder.encode_label())?;
        (n, &*self.name).encode(encoder.encode_label())
    }
}

#[derive(Clone, Copy)]
enum Prefix {
    Route,
    Authz,
    RateLimit,
}

impl Prefix {
    fn names(self) -> [&'static str; 3] {
        match self {
            Prefix::Route => ["route_group", "route_kind", "route_name"],
            Prefix::Authz => ["authz_group", "authz_kind", "authz_name"],
            Prefix::RateLimit => ["ratelimit_group", "ratelimit_kind", "ratelimit_name"],
        }
    }
}

/// How the client's connection reached the proxy, as linkerd2-proxy labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum ClientTls {
    /// Mesh TLS terminated by the proxy, and the client's identity if it presented one
    /// (`client_id=""` otherwise).
    Established(Option<Arc<str>>),
    /// TLS not addressed to the proxy, passed through, and its SNI.
    Passthru(Option<Arc<str>>),
    /// No TLS: `no_tls_from_remote`, `port_skipped`, `loopback`.
    NoTls(&'static str),
    /// The proxy has no identity.
    Disabled,
}

impl ClientTls {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        match self {
            ClientTls::Established(id) => {
                ("tls", "true").encode(encoder.encode_label())?;
                ("client_id", id.as_deref().unwrap_or("")).encode(encoder.encode_label())
            }
            ClientTls::Passthru(sni) => {
                ("tls", "opaque").encode(encoder.encode_label())?;
                ("sni", sni.as_deref().unwrap_or("")).encode(encoder.encode_label())
            }
            ClientTls::NoTls(reason) => {
                ("tls", "no_identity").encode(encoder.encode_label())?;
                ("no_tls_reason", *reason).encode(encoder.encode_label())
            }
            ClientTls::Disabled => ("tls", "disabled").encode(encoder.encode_label()),
        }
    }
}

/// Where a connection went and what served it: the original destination, the port's server,
/// and the client's TLS.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ServerLabels {
    pub target: SocketAddr,
    pub server: Arc<Object>,
    pub tls: ClientTls,
}

impl ServerLabels {
    fn encode_target_and_server(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        ("target_addr", self.target.to_string()).encode(encoder.encode_label())?;
        ("target_ip", self.target.ip().to_string()).encode(encoder.encode_label())?;
        ("target_port", self.target.port()).encode(encoder.encode_label())?;
        ("srv_group", &*self.server.group).encode(encoder.encode_label())?;
        ("srv_kind", &*self.server.kind).encode(encoder.encode_label())?;
        ("srv_name", &*self.server.name).encode(encoder.encode_label())?;
        ("srv_port", self.target.port()).encode(encoder.encode_label())
    }
}

/// The scope of a rate limit that refused a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RateLimitScope {
    Total,
    /// Per identity, or an override's shared limit (linkerd2-proxy reports both so).
    Identity,
}

impl RateLimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitScope::Total => "total",
            RateLimitScope::Identity => "identity",
        }
    }
}

/// The key of every family: the server labels and what else the family names.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    srv: ServerLabels,
    route: Option<Arc<Object>>,
    authz: Option<Arc<Object>>,
    /// The rate limit's name (if it has one) and scope.
    limit: Option<(Option<Arc<Object>>, RateLimitScope)>,
}

impl EncodeLabelSet for Key {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.srv.encode_target_and_server(encoder)?;
        if let Some(r) = &self.route {
            r.encode(Prefix::Route, encoder)?;
        }
        if let Some(a) = &self.authz {
            a.encode(Prefix::Authz, encoder)?;
        }
        if let Some((meta, scope)) = &self.limit {
            if let Some(m) = meta {
                m.encode(Prefix::RateLimit, encoder)?;
            }
            ("ratelimit_scope", scope.as_str()).encode(encoder.encode_label())?;
        }
        self.srv.tls.encode(encoder)
    }
}

/// A key, or the store's overflow label set.
struct Set<'a>(Option<&'a Key>);

impl EncodeLabelSet for Set<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        match self.0 {
            Some(k) => k.encode(encoder),
            None => ("overflow", "true").encode(encoder.encode_label()),
        }
    }
}

type Family = Store<Key, AtomicU64>;

/// One label set's counter, kept by whoever counts it often (a connection's last route and
/// authorization). Holding it keeps the label set from expiring.
#[derive(Clone, Debug)]
pub struct Handle(Arc<Slot<AtomicU64>>);

impl Handle {
    #[inline]
    pub fn inc(&self) {
        self.0.value.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Families {
    http_allow: Family,
    http_deny: Family,
    route_not_found: Family,
    ratelimit: Family,
    tcp_allow: Family,
    tcp_deny: Family,
    tcp_terminate: Family,
}

/// The inbound policy families of one proxy, and a count of refused policy messages.
#[derive(Clone, Debug)]
pub struct InboundPolicyMetrics {
    families: Arc<Families>,
    refused: Counter,
}

fn zero() -> AtomicU64 {
    AtomicU64::new(0)
}

fn count(family: &Family, key: Key) -> Handle {
    let slot = family.get(&key);
    slot.value.fetch_add(1, Ordering::Relaxed);
    Handle(slot)
}

impl InboundPolicyMetrics {
    pub fn register(registry: &mut Registry, series: &SeriesLimits) -> Self {
        let families = Arc::new(Families {
            http_allow: series.store("inbound_http_authz_allow", zero),
            http_deny: series.store("inbound_http_authz_deny", zero),
            route_not_found: series.store("inbound_http_route_not_found", zero),
            ratelimit: series.store("inbound_http_local_ratelimit", zero),
            tcp_allow: series.store("inbound_tcp_authz_allow", zero),
            tcp_deny: series.store("inbound_tcp_authz_deny", zero),
            tcp_terminate: series.store("inbound_tcp_authz_terminate", zero),
        });
        registry.register_collector(Box::new(Encoder(families.clone())));
        let refused = Counter::default();
        registry.register(
            "inbound_policy_refused",
            "Inbound policy messages from the control plane refused as invalid (the port kept \
             its previous policy)",
            refused.clone(),
        );
        InboundPolicyMetrics { families, refused }
    }

    /// Counts a request `authz` allowed on `route`; returns the counter for the next ones.
    pub fn http_allow(
        &self,
        srv: &ServerLabels,
        route: &Arc<Object>,
        authz: &Arc<Object>,
    ) -> Handle {
        count(
            &self.families.http_allow,
            Key {
                srv: srv.clone(),
                route: Some(route.clone()),
                authz: Some(authz.clone()),
                limit: None,
            },
        )
    }

    /// Counts a request no authorization of `route` allowed.
    pub fn http_deny(&self, srv: &ServerLabels, route: &Arc<Object>) {
        count(
            &self.families.http_deny,
            Key {
                srv: srv.clone(),
                route: Some(route.clone()),
                authz: None,
                limit: None,
            },
        );
    }

    /// Counts a request no route matched.
    pub fn route_not_found(&self, srv: &ServerLabels) {
        count(&self.families.route_not_found, Key::server(srv));
    }

    /// Counts a request the server's rate limit (`limit`, when it is named) refused.
    pub fn ratelimited(
        &self,
        srv: &ServerLabels,
        limit: Option<&Arc<Object>>,
        scope: RateLimitScope,
    ) {
        count(
            &self.families.ratelimit,
            Key {
                limit: Some((limit.cloned(), scope)),
                ..Key::server(srv)
            },
        );
    }

    /// Counts a connection `authz` allowed.
    pub fn tcp_allow(&self, srv: &ServerLabels, authz: &Arc<Object>) {
        count(
            &self.families.tcp_allow,
            Key {
                authz: Some(authz.clone()),
                ..Key::server(srv)
            },
        );
    }

    /// Counts a connection no authorization allowed.
    pub fn tcp_deny(&self, srv: &ServerLabels) {
        count(&self.families.tcp_deny, Key::server(srv));
    }

    /// Counts an open connection closed because the port's new policy no longer allows it.
    pub fn tcp_terminate(&self, srv: &ServerLabels) {
        count(&self.families.tcp_terminate, Key::server(srv));
    }

    /// Counts a policy message refused as invalid.
    pub fn refused(&self) {
        self.refused.inc();
    }
}

impl Key {
    fn server(srv: &ServerLabels) -> Self {
        Key {
            srv: srv.clone(),
            route: None,
            authz: None,
            limit: None,
        }
    }
}

#[derive(Debug)]
struct Encoder(Arc<Families>);

fn encode_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    family: &Family,
) -> std::fmt::Result {
    let mut out = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    family.for_each(|key, n| {
        ConstCounter::new(n.load(Ordering::Relaxed)).encode(out.encode_family(&Set(key))?)
    })
}

impl Collector for Encoder {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let f = &self.0;
        for (name, help, family) in [
            (
                "inbound_http_authz_allow",
                "The total number of inbound HTTP requests that were authorized",
                &f.http_allow,
            ),
            (
                "inbound_http_authz_deny",
                "The total number of inbound HTTP requests that could not be processed due to \
                 a proxy error.",
                &f.http_deny,
            ),
            (
                "inbound_http_route_not_found",
                "The total number of inbound HTTP requests that could not be associated with a \
                 route",
                &f.route_not_found,
            ),
            (
                "inbound_http_local_ratelimit",
                "The total number of inbound HTTP requests that were rate-limited",
                &f.ratelimit,
            ),
            (
                "inbound_tcp_authz_allow",
                "The total number of inbound TCP connections that were authorized",
                &f.tcp_allow,
            ),
            (
                "inbound_tcp_authz_deny",
                "The total number of inbound TCP connections that were denied",
                &f.tcp_deny,
            ),
            (
                "inbound_tcp_authz_terminate",
                "The total number of inbound TCP connections that were terminated due to an \
                 authorization change",
                &f.tcp_terminate,
            ),
        ] {
            encode_family(&mut encoder, name, help, family)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::Limits;

    fn srv(tls: ClientTls) -> ServerLabels {
        ServerLabels {
            target: "192.0.2.4:8080".parse().unwrap(),
            server: Object::new("policy.linkerd.io", "server", "web-http"),
            tls,
        }
    }

    const TARGET: &str = r#"target_addr="192.0.2.4:8080",target_ip="192.0.2.4",target_port="8080",srv_group="policy.linkerd.io",srv_kind="server",srv_name="web-http",srv_port="8080""#;

    #[test]
    fn families_carry_linkerds_labels_in_linkerds_order() {
        let mut reg = Registry::default();
        let series = SeriesLimits::register(&mut reg, Limits::default());
        let m = InboundPolicyMetrics::register(&mut reg, &series);
        let client: Arc<str> = Arc::from("web.shop.serviceaccount.identity.linkerd.cluster.local");
        let mtls = srv(ClientTls::Established(Some(client)));
        let route = Object::new("policy.linkerd.io", "HTTPRoute", "web");
        let authz = Object::new("", "default", "localhost");
        let h = m.http_allow(&mtls, &route, &authz);
        h.inc();
        m.http_deny(&mtls, &route);
        m.route_not_found(&srv(ClientTls::NoTls("no_tls_from_remote")));
        m.ratelimited(
            &mtls,
            Some(&Object::new(
                "policy.linkerd.io",
                "HTTPLocalRateLimitPolicy",
                "rl",
            )),
            RateLimitScope::Identity,
        );
        m.ratelimited(&srv(ClientTls::Disabled), None, RateLimitScope::Total);
        m.tcp_allow(
            &srv(ClientTls::Passthru(Some(Arc::from("app.example")))),
            &authz,
        );
        m.tcp_deny(&srv(ClientTls::Established(None)));
        m.tcp_terminate(&srv(ClientTls::NoTls("port_skipped")));
        m.refused();
        let text = crate::encode(&reg).unwrap();
        let id = r#"tls="true",client_id="web.shop.serviceaccount.identity.linkerd.cluster.local""#;
        let route = r#"route_group="policy.linkerd.io",route_kind="HTTPRoute",route_name="web""#;
        let authz = r#"authz_group="",authz_kind="default",authz_name="localhost""#;
        for want in [
            format!("inbound_http_authz_allow_total{{{TARGET},{route},{authz},{id}}} 2"),
            format!("inbound_http_authz_deny_total{{{TARGET},{route},{id}}} 1"),
            format!(
                "inbound_http_route_not_found_total{{{TARGET},tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\"}} 1"
            ),
            format!(
                "inbound_http_local_ratelimit_total{{{TARGET},ratelimit_group=\"policy.linkerd.io\",ratelimit_kind=\"HTTPLocalRateLimitPolicy\",ratelimit_name=\"rl\",ratelimit_scope=\"identity\",{id}}} 1"
            ),
            format!(
                "inbound_http_local_ratelimit_total{{{TARGET},ratelimit_scope=\"total\",tls=\"disabled\"}} 1"
            ),
            format!(
                "inbound_tcp_authz_allow_total{{{TARGET},{authz},tls=\"opaque\",sni=\"app.example\"}} 1"
            ),
            format!("inbound_tcp_authz_deny_total{{{TARGET},tls=\"true\",client_id=\"\"}} 1"),
            format!(
                "inbound_tcp_authz_terminate_total{{{TARGET},tls=\"no_identity\",no_tls_reason=\"port_skipped\"}} 1"
            ),
            "inbound_policy_refused_total 1".to_string(),
        ] {
            assert!(text.contains(&want), "no {want} in\n{text}");
        }
    }

    #[test]
    fn label_sets_are_capped() {
        let mut reg = Registry::default();
        let series = SeriesLimits::register(
            &mut reg,
            Limits {
                max_series: 2,
                idle: std::time::Duration::from_secs(60),
            },
        );
        let m = InboundPolicyMetrics::register(&mut reg, &series);
        for i in 0..5u16 {
            let mut s = srv(ClientTls::NoTls("no_tls_from_remote"));
            s.target.set_port(8000 + i);
            m.tcp_deny(&s);
        }
        let text = crate::encode(&reg).unwrap();
        assert!(
            text.contains(r#"inbound_tcp_authz_deny_total{overflow="true"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"metrics_series_overflow_total{family="inbound_tcp_authz_deny"} 3"#),
            "{text}"
        );
    }
}
